"""ECN and the outer TOS / traffic class, as a kernel vxlan device with default settings does it.

A vxlan device's ``tos`` defaults to 0, so the outer DSCP is 0 whatever the inner one is; only
the two ECN bits cross the tunnel, both ways (RFC 6040, include/net/inet_ecn.h):

* Encapsulation (vxlan_xmit_one -> ip_tunnel_ecn_encap -> INET_ECN_encapsulate): the outer ECN
  field copies the inner one, except that an inner CE leaves as ECT(0) (RFC 6040 section 4.1:
  a congestion mark is not a reason to mark the outer header again).  The inner DS field is
  read by ip_tunnel_get_dsfield(), which looks past VLAN tags (skb_protocol(skb, true)): a
  tagged frame bridged onto the device carries the ECN of the IP header behind its tags.
  Anything that is not IPv4/IPv6 leaves as Not-ECT.

* Decapsulation (vxlan_rcv, after vxlan_set_mac() has learned the source MAC):
  1. pskb_inet_may_pull(): an inner frame whose Ethernet type says IPv4 (IPv6) but which is
     too short for a 20-byte (40-byte) header is dropped (rx_length_errors; here
     ``inner_truncated``).
  2. vxlan_ecn_decapsulate -> IP_ECN_decapsulate / IP6_ECN_decapsulate -> INET_ECN_decapsulate,
     on the inner header named by skb->protocol, the Ethernet type as eth_type_trans() set it:
     a VLAN-tagged inner frame is left alone.  The rules (RFC 6040 section 4.2, figure 4):

       outer CE,     inner Not-ECT          drop (SKB_DROP_REASON_IP_TUNNEL_ECN; ``ecn``)
       outer CE,     inner ECT(0)/ECT(1)    inner becomes CE (IP_ECN_set_ce / IP6_ECN_set_ce)
       outer ECT(1), inner ECT(0)           inner becomes ECT(1) (INET_ECN_set_ect1)
       anything else                        unchanged (outer ECT with inner Not-ECT is only
                                            logged by the kernel, with log_ecn_error)

     An IPv4 header checksum is updated incrementally, with the kernel's arithmetic (so a
     header that was wrong stays exactly as wrong); IPv6 has no header checksum.

Checked against the running kernel in tests/netns/test_ecn.py.
"""
from __future__ import annotations

from .ether import ETH_HLEN, ETH_P_IP, ETH_P_IPV6

INET_ECN_NOT_ECT = 0
INET_ECN_ECT_1 = 1
INET_ECN_ECT_0 = 2
INET_ECN_CE = 3
INET_ECN_MASK = 3

ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
# __vlan_get_protocol() gives up on the fourth tag (it spends two of VLAN_MAX_DEPTH = 8 per tag)
VLAN_TAGS_MAX = 3

IPV4_HLEN = 20
IPV6_HLEN = 40


def inner_l3(frame: bytes) -> tuple[int, int]:
    """skb_protocol(skb, true) and where its header starts: ``(ETH_P_IP or ETH_P_IPV6,
    offset)`` for the IPv4/IPv6 header behind the Ethernet header and up to three VLAN tags,
    with at least its first two bytes present (the DS field is there); ``(0, -1)`` for anything
    else or a frame cut before it."""
    off = 12
    etype = 0
    for _ in range(VLAN_TAGS_MAX + 1):
        if len(frame) < off + 2:
            return 0, -1
        etype = (frame[off] << 8) | frame[off + 1]
        if etype != ETH_P_8021Q and etype != ETH_P_8021AD:
            break
        off += 4
    else:
        return 0, -1
    l3 = off + 2
    if (etype != ETH_P_IP and etype != ETH_P_IPV6) or len(frame) < l3 + 2:
        return 0, -1
    return etype, l3


def inner_dsfield(frame: bytes) -> int:
    """ip_tunnel_get_dsfield(): the DS field (DSCP << 2 | ECN) of the IPv4/IPv6 header behind the
    Ethernet header and up to three VLAN tags; 0 for anything else or a frame cut before it."""
    etype, l3 = inner_l3(frame)
    if etype == ETH_P_IP:
        return frame[l3 + 1]
    if etype == ETH_P_IPV6:
        return ((frame[l3] & 0x0F) << 4) | (frame[l3 + 1] >> 4)
    return 0


def encap_tos(frame: bytes, tos: int = 0) -> int:
    """INET_ECN_encapsulate(tos, inner): the outer TOS / traffic class for ``frame`` under the
    device's ``tos``; ``tos`` 1 is ``tos inherit`` (vxlan_xmit_one: "if (tos == 1) tos =
    ip_tunnel_get_dsfield(old_iph, skb)"), the inner DS field whole."""
    ds = inner_dsfield(frame)
    if tos == 1:
        tos = ds
    ecn = ds & INET_ECN_MASK
    return (tos & ~INET_ECN_MASK) | (INET_ECN_ECT_0 if ecn == INET_ECN_CE else ecn)


def inner_ttl(frame: bytes) -> int:
    """ip_tunnel_get_ttl(): the TTL / hop limit of the IPv4/IPv6 header behind the Ethernet
    header and up to three VLAN tags (``ttl inherit``); 0, "the route's", for anything else."""
    etype, l3 = inner_l3(frame)
    if etype == ETH_P_IP and len(frame) > l3 + 8:
        return frame[l3 + 8]
    if etype == ETH_P_IPV6 and len(frame) > l3 + 7:
        return frame[l3 + 7]
    return 0


def inner_flowlabel(frame: bytes) -> int:
    """ip_tunnel_get_flowlabel(): the flow label of the IPv6 header behind the Ethernet header
    and up to three VLAN tags (``flowlabel inherit``); 0 for anything else."""
    etype, l3 = inner_l3(frame)
    if etype == ETH_P_IPV6 and len(frame) > l3 + 3:
        return ((frame[l3 + 1] & 0x0F) << 16) | (frame[l3 + 2] << 8) | frame[l3 + 3]
    return 0


def _ipv4_set(frame: bytearray, add: int, tos: int) -> None:
    """Write ``tos`` and add ``add`` to the header checksum, as IP_ECN_set_ce/set_ect1 do:
    a one's complement add whose end-around carry also turns 0xffff into 0."""
    check = ((frame[ETH_HLEN + 10] << 8) | frame[ETH_HLEN + 11]) + add
    check = (check + (check >= 0xFFFF)) & 0xFFFF
    frame[ETH_HLEN + 10] = check >> 8
    frame[ETH_HLEN + 11] = check & 0xFF
    frame[ETH_HLEN + 1] = tos


def decapsulate(frame: bytes, outer_tos: int) -> tuple[str | None, bytes]:
    """pskb_inet_may_pull() and INET_ECN_decapsulate() on an inner frame of at least ETH_HLEN
    bytes received under an outer TOS / traffic class ``outer_tos``.

    Returns ``(drop reason, frame)``: the reason is None when the frame is delivered, and the
    frame is the input or, when an ECN mark was carried over, a changed copy."""
    etype = (frame[12] << 8) | frame[13]
    if etype == ETH_P_IP:
        if len(frame) < ETH_HLEN + IPV4_HLEN:
            return "inner_truncated", frame
        inner = frame[ETH_HLEN + 1]
    elif etype == ETH_P_IPV6:
        if len(frame) < ETH_HLEN + IPV6_HLEN:
            return "inner_truncated", frame
        inner = ((frame[ETH_HLEN] & 0x0F) << 4) | (frame[ETH_HLEN + 1] >> 4)
    else:
        return None, frame
    outer = outer_tos & INET_ECN_MASK
    ecn = inner & INET_ECN_MASK
    if ecn == INET_ECN_NOT_ECT:
        return ("ecn" if outer == INET_ECN_CE else None), frame
    if outer == INET_ECN_CE and ecn != INET_ECN_CE:
        out = bytearray(frame)
        if etype == ETH_P_IP:
            # IP_ECN_set_ce: the 16-bit word holding the TOS grows by 3 - ecn, so the checksum
            # gains its complement: 0xfffb + ((tos + 1) & 3) is 0xfffe for ECT(0), 0xfffd ECT(1)
            _ipv4_set(out, 0xFFFB + ((inner + 1) & INET_ECN_MASK), inner | INET_ECN_CE)
        else:
            out[ETH_HLEN + 1] |= INET_ECN_CE << 4
        return None, bytes(out)
    if outer == INET_ECN_ECT_1 and ecn == INET_ECN_ECT_0:
        out = bytearray(frame)
        if etype == ETH_P_IP:
            # IP_ECN_set_ect1: ECT(0) -> ECT(1) lowers the word by one, the checksum gains one
            _ipv4_set(out, 1, inner ^ INET_ECN_MASK)
        else:
            out[ETH_HLEN + 1] ^= INET_ECN_MASK << 4
        return None, bytes(out)
    return None, frame
