"""The sans-IO core: given a frame or a datagram and the time, decide what it becomes."""
from .config import VtepConfig
from .demux import Demux
from .stats import DROP_REASONS, Stats
from .vtep import Deliver, Transmit, Vtep

__all__ = ["VtepConfig", "Demux", "Stats", "DROP_REASONS", "Vtep", "Deliver", "Transmit"]
