"""The VXLAN header, RFC 7348 section 5, and the UDP source-port choice of the kernel.

    0                   1                   2                   3
    0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |R|R|R|R|I|R|R|R|            Reserved                           |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
   |                VXLAN Network Identifier (VNI) |   Reserved    |
   +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

The sender sets flags to exactly 0x08 (the I bit) and every reserved bit to zero.  Linux's
receiver (vxlan_rcv) is strict: it drops a header without the I bit, and, since no extension
(GBP, GPE, RCO) is enabled on a plain device, any header with a reserved bit set.  vxtun does the
same, so a VTEP never accepts a frame the kernel would refuse.  The functions here are the pure
reference; ``vxtun/_fastpath.pyx`` implements the same rules in C and the tests hold them equal.
"""
from __future__ import annotations

import struct

from .ether import ETH_HLEN, ETH_P_IP, ETH_P_IPV6
from .offload import csum_add, fold_complement

VXLAN_HLEN = 8
VXLAN_FLAGS = 0x08          # the I flag: "the VNI is valid"
VNI_MAX = (1 << 24) - 1
IANA_PORT = 4789            # RFC 7348 section 5
LINUX_PORT = 8472           # the port Linux used before IANA assigned 4789
# ``srcport MIN MAX``: udp_flow_src_port() picks a port in [MIN, MAX), the high end exclusive.
# With MIN >= MAX (iproute2 shows the default as "srcport 0 0") it takes the namespace's
# net.ipv4.ip_local_port_range instead, [low, high) again; vxtun reads that sysctl when the
# VTEP is created (vxtun.io.underlay.local_port_range), LOCAL_PORT_RANGE if it cannot.
DEFAULT_SRCPORT = (0, 0)
LOCAL_PORT_RANGE = (32768, 60999)       # the sysctl's stock value (inet_init_net)

# Overhead added in front of the inner Ethernet frame: IP + UDP + VXLAN + inner Ethernet.
# This is why the kernel gives vxlan devices an MTU 50 (IPv4) or 70 (IPv6) below the underlay's.
OVERHEAD_V4 = 20 + 8 + VXLAN_HLEN + ETH_HLEN
OVERHEAD_V6 = 40 + 8 + VXLAN_HLEN + ETH_HLEN

_HDR = struct.Struct("!BxxxI")


def encode_header(vni: int) -> bytes:
    """The 8 bytes in front of every inner frame: flags 0x08, reserved 0, VNI, reserved 0."""
    return _HDR.pack(VXLAN_FLAGS, vni << 8)


def decode_header(data: bytes) -> tuple[int, str | None]:
    """Return ``(vni, None)`` for a header Linux accepts, else ``(vni_or_-1, drop_reason)``.

    The order of the checks follows vxlan_rcv(): length, I flag, then (in the caller) the VNI
    lookup, then the reserved bits.  The reserved-bit check is reported separately with
    ``reserved_bits_set`` so the caller can keep the kernel's order.
    """
    if len(data) < VXLAN_HLEN:
        return -1, "truncated"
    if not data[0] & VXLAN_FLAGS:
        return -1, "not_vxlan"
    return (data[4] << 16) | (data[5] << 8) | data[6], None


def reserved_bits_set(data: bytes) -> bool:
    """True when any bit besides the I flag and the VNI is set (flags byte, bytes 1-3, byte 7)."""
    return data[0] != VXLAN_FLAGS or data[1] or data[2] or data[3] or data[7]


# --- UDP source port ---------------------------------------------------------------------
#
# RFC 7348 section 5 recommends a source port computed from a hash of the inner headers, so
# that one inner flow keeps one outer 5-tuple (no reordering under ECMP) while flows spread.
# The kernel (udp_flow_src_port) takes the skb's flow hash, folds it (hash ^= hash << 16) and
# scales it into [min, max) with ((u64)hash * (max - min)) >> 32.  The flow hash itself is the
# kernel's private siphash, so vxtun uses a stable FNV-1a over the same flow keys (addresses,
# protocol and, for TCP/UDP, ports; else the two MAC addresses and the EtherType, as the
# kernel's jhash fallback does) and then the kernel's folding and scaling exactly.

RX_BULK = 2048      # bytes: a TCP datagram (or GRO train) longer than this is bulk


def rx_order(datagrams: list) -> list:
    """The order both dataplanes deliver one read of the underlay socket in: arrival order,
    unless the read holds bulk (a TCP datagram over RX_BULK bytes: a super-frame or a GRO
    train), then the datagrams that carry no TCP first (``rx_express``), each kind in arrival
    order.  ``datagrams``: (payload, ...) tuples."""
    late = [not rx_express(d[0]) for d in datagrams]
    if not any(t and len(d[0]) > RX_BULK for t, d in zip(late, datagrams, strict=True)):
        return datagrams
    return ([d for t, d in zip(late, datagrams, strict=True) if not t]
            + [d for t, d in zip(late, datagrams, strict=True) if t])


def rx_express(datagram: bytes) -> bool:
    """A received VXLAN datagram whose inner frame carries no TCP (ICMP, UDP, ARP, ND, or too
    short to say): when one read of the underlay socket holds bulk TCP, both dataplanes
    deliver these first (``rx_order``; vxtun/fastpath/threads.pyx ``_rx_drain``).  A frame
    behind a VLAN tag counts as TCP: it keeps its place."""
    if len(datagram) < VXLAN_HLEN + 14 + 40:
        return True
    et = int.from_bytes(datagram[VXLAN_HLEN + 12:VXLAN_HLEN + 14], "big")
    if et == 0x0800:
        return datagram[VXLAN_HLEN + 14 + 9] != 6
    if et == 0x86DD:
        return datagram[VXLAN_HLEN + 14 + 6] != 6
    return et not in (0x8100, 0x88A8)


_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def flow_key(frame: bytes) -> bytes:
    """The bytes that identify the inner flow of an Ethernet frame."""
    n = len(frame)
    if n >= ETH_HLEN:
        etype = (frame[12] << 8) | frame[13]
        if etype == ETH_P_IP and n >= ETH_HLEN + 20:
            ihl = (frame[ETH_HLEN] & 0x0F) * 4
            proto = frame[ETH_HLEN + 9]
            key = frame[ETH_HLEN + 12:ETH_HLEN + 20] + bytes((proto,))
            frag = ((frame[ETH_HLEN + 6] & 0x3F) << 8) | frame[ETH_HLEN + 7]
            l4 = ETH_HLEN + ihl
            if proto in (6, 17) and frag == 0 and ihl >= 20 and n >= l4 + 4:
                key += frame[l4:l4 + 4]
            return key
        if etype == ETH_P_IPV6 and n >= ETH_HLEN + 40:
            proto = frame[ETH_HLEN + 6]
            key = frame[ETH_HLEN + 8:ETH_HLEN + 40] + bytes((proto,))
            l4 = ETH_HLEN + 40
            if proto in (6, 17) and n >= l4 + 4:
                key += frame[l4:l4 + 4]
            return key
        return frame[0:14]
    return bytes(frame)


def port_range(srcport: tuple[int, int], local_range: tuple[int, int]) -> tuple[int, int]:
    """The ``[min, max)`` udp_flow_src_port() draws from: ``srcport``, or ``local_range`` (the
    namespace's ip_local_port_range) when ``srcport`` is empty (MIN >= MAX)."""
    lo, hi = srcport
    return (lo, hi) if lo < hi else tuple(local_range)


def source_port(frame: bytes, port_min: int, port_max: int) -> int:
    """The outer UDP source port for ``frame``: in [port_min, port_max), stable per flow."""
    h = fnv1a32(flow_key(frame))
    h ^= (h << 16) & 0xFFFFFFFF
    return ((h * (port_max - port_min)) >> 32) + port_min


# --- the outer UDP checksum ----------------------------------------------------------------
#
# A kernel VTEP checksums its outer UDP header by default, on IPv4 as on IPv6
# (udp_tunnel_xmit_skb / udp_tunnel6_xmit_skb get udp_sum = !VXLAN_F_UDP_ZERO_CSUM_TX, resp.
# !VXLAN_F_UDP_ZERO_CSUM6_TX); ``noudpcsum`` and ``udp6zerocsumtx`` send 0, "no checksum"
# (RFC 768; RFC 6935 / 6936 allow it for a tunnel over IPv6).  On receive, a zero checksum
# over IPv6 is refused by the UDP layer unless the socket has UDP_NO_CHECK6_RX
# (``udp6zerocsumrx``; __udp6_lib_rcv -> udp6_csum_zero_error), counted as Udp6InCsumErrors.

def udp_checksum(src: bytes, dst: bytes, udp: bytes) -> int:
    """The checksum field of the UDP datagram ``udp`` (header with a zero checksum field, and
    payload) from ``src`` to ``dst`` (4 or 16 bytes each): the pseudo-header of RFC 768 /
    RFC 8200 section 8.1 and the datagram, one's complement; a result of 0 goes as 0xffff."""
    s = csum_add(src + dst, 17 + len(udp))
    c = fold_complement(csum_add(udp, s))
    return c or 0xFFFF
