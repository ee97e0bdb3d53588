"""ARP/ND proxy: the neighbour table (``ip neigh`` on the VTEP) and the replies built from it."""
from .neigh import NUD_STATES, NeighEntry, NeighTable
from .reply import NsRequest, arp_reply, na_reply, parse_arp_request, parse_ns

__all__ = ["NeighTable", "NeighEntry", "NUD_STATES", "arp_reply", "na_reply",
           "parse_arp_request", "parse_ns", "NsRequest"]
