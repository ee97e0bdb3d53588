"""Counters of one VTEP: frames and bytes each way, and drops by reason.

The reasons are named after the kernel's (SKB_DROP_REASON_VXLAN_*, and the checks in
vxlan_rcv/vxlan_xmit).  Their order is fixed: the fast path keeps a C array indexed the same way,
so a new reason goes at the end.
"""
from __future__ import annotations

from ..wire.ether import ETH_HLEN

DROP_REASONS = (
    "truncated",         # datagram shorter than the 8-byte VXLAN header
    "not_vxlan",         # I flag clear (vxlan_rcv: "invalid vxlan flags")
    "vni_not_found",     # no VTEP here serves this VNI (VXLAN_VNI_NOT_FOUND)
    "reserved_bits",     # a reserved bit set (VXLAN_INVALID_HDR)
    "inner_truncated",   # inner frame shorter than an Ethernet header, or cut inside the IPv4/IPv6
                         # header its Ethernet type announces (pskb_inet_may_pull)
    "own_mac",           # inner source MAC is our own: a loop or our multicast echo (LOCAL_MAC)
    "invalid_src_mac",   # inner source MAC multicast or zero (MAC_INVALID_SOURCE)
    "static_mac_moved",  # a static/permanent MAC claimed by another VTEP (vxlan_snoop)
    "no_remote",         # transmit: no FDB entry and no default destination (VXLAN_NO_REMOTE)
    "proxy",             # transmit: an ARP/NS consumed by the proxy with no answer to give
    "bad_frame",         # transmit: a frame from the TAP too short to be Ethernet
    "tx_error",          # the underlay refused a send (no route, buffer full)
    "tap_error",         # the TAP refused a write
    "ecn",               # outer CE over a Not-ECT inner packet (RFC 6040; IP_TUNNEL_ECN)
)
DROP_INDEX = {name: i for i, name in enumerate(DROP_REASONS)}


# What rx and tx count, as ``ip -s link show`` of a kernel vxlan device counts them (the
# vxtun/fastpath decisions count the same way):
#   tx: one packet per remote copy (head-end replication counts every copy, as vxlan_xmit_one
#       runs once per rdst), and the bytes without the inner Ethernet header (iptunnel_xmit():
#       skb->len - skb_inner_network_offset()).  One difference: the fast path counts each
#       segment it cuts from a TSO super-frame (the datagrams it sends, as the reference core
#       counts the frames it is given), where the kernel counts its GSO skb once;
#   rx: one packet per frame delivered, bytes without the inner Ethernet header (vxlan_rcv()
#       counts skb->len after eth_type_trans() pulled it).
# ``ip -s link show vxtun0`` shows the TAP's own counters instead (tun counts whole frames,
# one per frame written or read), so it agrees on packets, not on bytes or flood copies.
COUNTS = {
    "rx": "frames delivered, bytes without their Ethernet header",
    "tx": "datagrams, one per remote copy and TSO segment, bytes without the inner "
          "Ethernet header",
}


class Stats:
    """rx = underlay -> TAP (decapsulated), tx = TAP -> underlay (encapsulated)."""

    __slots__ = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops",
                 "learned", "moved", "proxy_replies", "l2miss", "l3miss")

    def __init__(self) -> None:
        self.rx_packets = 0
        self.rx_bytes = 0
        self.tx_packets = 0
        self.tx_bytes = 0
        self.drops = [0] * len(DROP_REASONS)
        self.learned = 0
        self.moved = 0
        self.proxy_replies = 0
        self.l2miss = 0
        self.l3miss = 0

    def count_tx(self, copies: int, frame_len: int) -> None:
        """A frame of ``frame_len`` bytes sent to ``copies`` remotes (see COUNTS)."""
        self.tx_packets += copies
        self.tx_bytes += copies * (frame_len - ETH_HLEN)

    def count_rx(self, frame_len: int) -> None:
        """A frame of ``frame_len`` bytes delivered (see COUNTS)."""
        self.rx_packets += 1
        self.rx_bytes += frame_len - ETH_HLEN

    def drop(self, reason: str) -> None:
        self.drops[DROP_INDEX[reason]] += 1

    def to_json(self) -> dict:
        return {
            "rx": {"packets": self.rx_packets, "bytes": self.rx_bytes},
            "tx": {"packets": self.tx_packets, "bytes": self.tx_bytes},
            "drops": {n: self.drops[i] for i, n in enumerate(DROP_REASONS)},
            "fdb": {"learned": self.learned, "moved": self.moved},
            "proxy_replies": self.proxy_replies,
            "l2miss": self.l2miss,
            "l3miss": self.l3miss,
        }

    @staticmethod
    def merge(a: dict, b: dict) -> dict:
        """Sum two to_json() dicts (the fast path's counters and the Python core's)."""
        out: dict = {}
        for k, v in a.items():
            if isinstance(v, dict):
                out[k] = Stats.merge(v, b.get(k, {}))
            else:
                out[k] = v + b.get(k, 0)
        for k, v in b.items():
            out.setdefault(k, v)
        return out
