"""The forwarding database: which VTEP (underlay IP) each overlay MAC lives behind."""
from .table import (LEARN_FULL, LEARN_MOVED, LEARN_NEW, LEARN_OFF, LEARN_PINNED, LEARN_REFRESH,
                    DictStore, Fdb, FdbEntry, Remote)

__all__ = ["Fdb", "DictStore", "FdbEntry", "Remote", "LEARN_NEW", "LEARN_MOVED", "LEARN_REFRESH",
           "LEARN_PINNED", "LEARN_FULL", "LEARN_OFF"]
