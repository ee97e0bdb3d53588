"""The forwarding database: which VTEP (underlay IP) each overlay MAC lives behind."""
from .table import Fdb, FdbEntry, Remote, LEARN_NEW, LEARN_MOVED, LEARN_REFRESH, LEARN_PINNED, LEARN_FULL, LEARN_OFF

__all__ = ["Fdb", "FdbEntry", "Remote", "LEARN_NEW", "LEARN_MOVED", "LEARN_REFRESH",
           "LEARN_PINNED", "LEARN_FULL", "LEARN_OFF"]
