"""``python -m vxtun.lab``: the same as ``vxtun-lab``."""
import sys

from .p2p import main

sys.exit(main())
