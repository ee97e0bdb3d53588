"""The ``vxtun`` command: iproute2-style words parsed into requests, then executed."""
