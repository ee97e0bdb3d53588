"""One root exception for the package, split like h11 into local and remote errors.

* ``LocalError``: the caller (a user at the CLI, or a program using the API) asked for
  something invalid.  It carries a message fit to print, and nothing was changed.
* Remote garbage (a malformed datagram, a runt frame) is *never* an exception: the core
  drops it and counts it by reason (see ``vxtun.core.stats.DROP_REASONS``).
"""


class VxtunError(Exception):
    """Root of every exception vxtun raises on purpose."""


class LocalError(VxtunError):
    """A bad request from the local user or program; nothing was changed."""


class FdbError(LocalError):
    """An FDB operation that iproute2 would refuse (exists, not found, not supported)."""


class NeighError(LocalError):
    """A neighbour-table operation that iproute2 would refuse."""


class ControlError(VxtunError):
    """The control socket of a running VTEP could not be reached or answered badly."""
