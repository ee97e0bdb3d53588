"""A captured VXLAN datagram taken apart into the layers a learner reads, with their sizes.

``layers_of(frame)`` takes one whole underlay Ethernet frame, as tcpdump captures it on a
host's underlay interface, and returns :class:`vxtun.lab.walkmodel.Layer` objects::

    outer Ethernet 14 | outer IPv4 20 (IPv6 40) | UDP 8 | VXLAN 8 | inner frame (the rest)

Each layer carries only the fields that teach something, and a field's explanation is given
once per walk: the caller passes the same ``first`` set to every call, and a topic named in it
is not explained again (the set is updated).  A topic is a short key such as ``"TTL multicast"``
or ``"UDP checksum IPv4 zero"``: a TTL of 1 towards a group and a TTL of 64 towards one VTEP
are different lessons, so each is told the first time it shows.

The explanations state what a kernel vxlan device with default settings does (and vxtun with
it), citing drivers/net/vxlan/vxlan_core.c and the RFCs.  Parsing the VXLAN header, the MAC and
IP text forms and the checksum arithmetic come from ``vxtun/wire``, and the inner packet's one
line from ``vxtun/trace/summary.py`` (the words ``vxtun trace`` uses); the datagram is treated as
VXLAN whatever its UDP port, since the caller only hands over VXLAN traffic.  A frame cut short
ends with a ``truncated`` layer instead of an exception: a capture is network input.
"""
from __future__ import annotations

import struct

from ..trace.summary import summarize
from ..wire import ecn
from ..wire.addr import ip_from_bytes
from ..wire.ether import (
    BROADCAST_MAC, ETH_HLEN, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, is_multicast_mac,
    mac_to_str,
)
from ..wire.offload import csum_add, fold_complement
from ..wire.vxlan import (
    IANA_PORT, LINUX_PORT, LOCAL_PORT_RANGE, VXLAN_FLAGS, VXLAN_HLEN, decode_header,
    reserved_bits_set,
)
from .walkmodel import Field, Layer

IPPROTO_UDP = 17
UDP_HLEN = 8

ECN_NAMES = {ecn.INET_ECN_NOT_ECT: "Not-ECT", ecn.INET_ECN_ECT_1: "ECT(1)",
             ecn.INET_ECN_ECT_0: "ECT(0)", ecn.INET_ECN_CE: "CE"}
ETHERTYPE_NAMES = {ETH_P_IP: "IPv4", ETH_P_ARP: "ARP", ETH_P_IPV6: "IPv6", ETH_P_8021Q: "802.1Q"}

_PORT_LO, _PORT_HI = LOCAL_PORT_RANGE       # as sysctl shows it

# One explanation per topic.  The kernel behaviour each states is cited where it comes from.
EXPLAIN = {
    "outer dst MAC multicast":
        "A multicast MAC: an IPv4 group maps onto 01:00:5e and the low 23 bits of the group "
        "(RFC 1112 section 6.4), an IPv6 group onto 33:33 and its low 32 bits (RFC 2464 "
        "section 7). The underlay switch hands it to every port that joined.",
    "outer dst MAC unicast":
        "The next hop on the underlay: the other VTEP's host itself on a shared link.",
    "outer dst IP multicast":
        "The multicast group: one datagram sent, and the underlay gives a copy to every host "
        "that joined the group (IGMP / MLD). This is how a VTEP floods without a list of peers.",
    "outer dst IP unicast":
        "One VTEP's underlay address, taken from the FDB entry of the inner destination MAC "
        "(or from one remote of the all-zeros entry).",
    "outer src IP":
        "The sending VTEP's underlay address. The receiver learns the inner source MAC "
        "against it (vxlan_snoop), so replies can come back unicast.",
    "TTL multicast":
        "A vxlan device's ttl defaults to 0 ('auto'), and vxlan_xmit_one() then sends to a "
        "multicast group with TTL 1, so the flood never crosses a router.",
    "TTL unicast":
        "With ttl 0 ('auto') a unicast datagram gets the route's hop limit: 64 by default "
        "(net.ipv4.ip_default_ttl, net.ipv6.conf.*.hop_limit).",
    "DSCP":
        "The device's tos is 0: the outer DSCP is 0 whatever the inner packet's, so overlay "
        "traffic classes do not leak into the underlay unless configured (tos inherit).",
    "ECN":
        "The outer ECN bits copy the inner packet's (RFC 6040 section 4.1, "
        "ip_tunnel_ecn_encap): a congested underlay router can mark CE, and the receiving "
        "VTEP carries the mark into the inner header (section 4.2). An inner CE leaves as "
        "ECT(0); a frame that is not IP leaves as Not-ECT.",
    "DF clear":
        "DF is clear: a vxlan device's df defaults to 'unset', so a datagram bigger than the "
        "underlay MTU is fragmented by IP rather than dropped (vxtun: IP_PMTUDISC_DONT).",
    "DF set":
        "DF is set (df set, or df inherit from an inner DF): a datagram bigger than the "
        "underlay MTU is dropped and answered with ICMP 'fragmentation needed'.",
    "fragment":
        "An IP fragment of a datagram bigger than the underlay MTU: the receiving host "
        "reassembles it before the VTEP sees it.",
    "flow label":
        "The device's flowlabel defaults to 0; 'flowlabel inherit' copies the inner one, a "
        "fixed value sets it (RFC 6438 asks tunnels to use it for ECMP).",
    "source port":
        "A hash of the inner flow (udp_flow_src_port; RFC 7348 section 5) scaled into "
        f"net.ipv4.ip_local_port_range ({_PORT_LO}-{_PORT_HI}) unless srcport is set: one "
        "inner flow keeps one outer 5-tuple, so it is never reordered, and different flows "
        "spread over the underlay's ECMP paths.",
    "destination port 4789":
        "The port IANA assigned to VXLAN (RFC 7348 section 5). A Linux vxlan device "
        "still defaults to 8472, the port it used before that, so 'dstport 4789' is set "
        "explicitly to talk to other implementations.",
    "destination port 8472":
        "The Linux vxlan driver's default dstport (8472), chosen before IANA assigned 4789.",
    "destination port other":
        "Neither 4789 (IANA) nor 8472 (the Linux default): both ends set this dstport.",
    "UDP checksum IPv4 zero":
        "0 means 'no checksum' on IPv4 (RFC 768). A vxlan device sends it only with "
        "noudpcsum (VXLAN_F_UDP_ZERO_CSUM_TX; 'ip -d link show' says udpcsum by default): "
        "the inner frame carries its own checksums, and the outer IP header checksum still "
        "protects the addresses.",
    "UDP checksum IPv4 set":
        "Computed (udpcsum): over the pseudo-header, the VXLAN header and the whole inner "
        "frame.",
    "UDP checksum IPv6":
        "IPv6 has no header checksum, so UDP over IPv6 carries one (RFC 8200 section 8.1): "
        "the kernel computes it unless udp6zerocsumtx is set.",
    "UDP checksum IPv6 zero":
        "0 over IPv6 is allowed only for tunnels that opted in (RFC 6935): the receiver "
        "drops it unless udp6zerocsumrx is set.",
    "flags I":
        "0x08 is the I flag alone: 'the VNI is valid' (RFC 7348 section 5). vxlan_rcv() drops "
        "a header without it (not_vxlan).",
    "flags other":
        "Bits besides the I flag belong to extensions (GBP, GPE) a plain vxlan device does "
        "not enable: it drops the datagram (not_vxlan without I, else reserved_bits).",
    "VNI":
        "The 24-bit VXLAN Network Identifier names the overlay segment (16 million of them, "
        "against 4094 VLANs). The receiving host hands the frame to its VTEP of this VNI, or "
        "drops it (vni_not_found).",
    "reserved":
        "The reserved bits must be zero: a plain vxlan device drops a datagram with any of "
        "them set (reserved_bits), and vxtun does too.",
    "inner dst broadcast":
        "Broadcast: no FDB entry can name it, so the VTEP sends it through the all-zeros "
        "default entry, to every remote listed there (or the group).",
    "inner src MAC":
        "The receiving VTEP learns this MAC against the outer source IP (vxlan_snoop), "
        "unless the device has nolearning.",
    "overhead":
        "Outer IP + UDP 8 + VXLAN 8 + the inner Ethernet header 14: this is why a vxlan "
        "device's MTU is the underlay's minus 50 over IPv4 (minus 70 over IPv6).",
}


class _Explainer:
    """Hands out each topic's explanation once per ``first`` set."""

    def __init__(self, first: set[str] | None):
        self.first = first if first is not None else set()

    def field(self, name: str, value: str, topic: str | None = None) -> Field:
        if topic is None or topic in self.first:
            return Field(name, value)
        self.first.add(topic)
        return Field(name, value, EXPLAIN[topic])


def layers_of(frame: bytes, first: set[str] | None = None) -> list[Layer]:
    """The layers of one captured underlay frame (see the module docstring)."""
    ex = _Explainer(first)
    frame = bytes(frame)
    out: list[Layer] = []
    if len(frame) < ETH_HLEN:
        return [_truncated(frame, 0, "outer Ethernet")]
    off, etype, eth = _outer_ethernet(frame, ex)
    out.append(eth)
    if etype == ETH_P_IP:
        ip = _outer_ipv4(frame, off, ex)
    elif etype == ETH_P_IPV6:
        ip = _outer_ipv6(frame, off, ex)
    else:
        out.append(Layer("data", len(frame) - off,
                         [Field("EtherType", f"0x{etype:04x}: not an IP datagram")]))
        return out
    if ip is None:
        out.append(_truncated(frame, off, "outer IP"))
        return out
    layer, l4, proto, pseudo, more = ip
    out.append(layer)
    if more is not None:            # a later fragment: no UDP header in it
        out.append(Layer("fragment data", len(frame) - l4,
                         [ex.field("continues", more, "fragment")]))
        return out
    if proto != IPPROTO_UDP:
        out.append(Layer("data", len(frame) - l4, [Field("protocol", str(proto))]))
        return out
    if len(frame) < l4 + UDP_HLEN:
        out.append(_truncated(frame, l4, "UDP"))
        return out
    out.append(_udp(frame, l4, pseudo, etype == ETH_P_IPV6, ex))
    vx = l4 + UDP_HLEN
    if len(frame) < vx + VXLAN_HLEN:
        out.append(_truncated(frame, vx, "VXLAN"))
        return out
    out.append(_vxlan(frame[vx:vx + VXLAN_HLEN], ex))
    out.append(_inner(frame[vx + VXLAN_HLEN:], vx + VXLAN_HLEN + ETH_HLEN - off, ex))
    return out


def _truncated(frame: bytes, off: int, what: str) -> Layer:
    return Layer("truncated", len(frame) - off,
                 [Field("cut", f"the capture ends inside the {what} header")])


def _outer_ethernet(frame: bytes, ex: _Explainer) -> tuple[int, int, Layer]:
    dst, src = frame[0:6], frame[6:12]
    off = 12
    etype = struct.unpack_from("!H", frame, off)[0]
    fields = [ex.field("destination MAC", mac_to_str(dst),
                       "outer dst MAC multicast" if is_multicast_mac(dst)
                       else "outer dst MAC unicast"),
              ex.field("source MAC", mac_to_str(src))]
    if etype == ETH_P_8021Q and len(frame) >= off + 6:
        tci = struct.unpack_from("!H", frame, off + 2)[0]
        fields.append(Field("VLAN", str(tci & 0x0FFF)))
        off += 4
        etype = struct.unpack_from("!H", frame, off)[0]
    fields.append(Field("EtherType", _ethertype(etype)))
    return off + 2, etype, Layer("outer Ethernet", off + 2, fields)


def _ethertype(etype: int) -> str:
    name = ETHERTYPE_NAMES.get(etype)
    return f"0x{etype:04x} ({name})" if name else f"0x{etype:04x}"


def _tos_fields(tos: int, ex: _Explainer) -> list[Field]:
    return [ex.field("DSCP", str(tos >> 2), "DSCP"),
            ex.field("ECN", ECN_NAMES[tos & ecn.INET_ECN_MASK], "ECN")]


def _is_multicast(ip: bytes) -> bool:
    """224.0.0.0/4 or ff00::/8, as vxlan_addr_multicast() tests it."""
    return ip[0] >> 4 == 0xE if len(ip) == 4 else ip[0] == 0xFF


def _hop_field(name: str, ttl: int, dst: bytes, ex: _Explainer) -> Field:
    return ex.field(name, str(ttl), "TTL multicast" if _is_multicast(dst) else "TTL unicast")


def _dst_field(dst: bytes, ex: _Explainer) -> Field:
    return ex.field("destination", ip_from_bytes(dst), "outer dst IP multicast"
                    if _is_multicast(dst) else "outer dst IP unicast")


def _outer_ipv4(frame: bytes, off: int, ex: _Explainer):
    """(layer, l4 offset, protocol, pseudo-header sum, later-fragment note or None)."""
    if len(frame) < off + 20:
        return None
    ihl = (frame[off] & 0x0F) * 4
    if ihl < 20 or len(frame) < off + ihl:
        return None
    tos, total, ident, frag, ttl, proto = struct.unpack_from("!xBHHHBB", frame, off)
    src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
    df, mf, frag_off = bool(frag & 0x4000), bool(frag & 0x2000), (frag & 0x1FFF) * 8
    fields = [ex.field("source", ip_from_bytes(src), "outer src IP"), _dst_field(dst, ex),
              _hop_field("TTL", ttl, dst, ex), *_tos_fields(tos, ex),
              ex.field("DF", "set" if df else "not set", "DF set" if df else "DF clear")]
    if mf or frag_off:
        fields.append(ex.field("fragment", f"offset {frag_off}, id {ident}"
                               + (", more follow" if mf else ", the last"), "fragment"))
    fields.append(Field("total length", str(total)))
    l4 = off + ihl
    pseudo = csum_add(src + dst + struct.pack("!HH", proto, max(total - ihl, 0)))
    more = f"offset {frag_off} of datagram id {ident}" if frag_off else None
    return Layer("outer IPv4", ihl, fields), l4, proto, pseudo, more


def _outer_ipv6(frame: bytes, off: int, ex: _Explainer):
    if len(frame) < off + 40:
        return None
    vtf, plen, nxt, hops = struct.unpack_from("!IHBB", frame, off)
    src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
    tclass, label = (vtf >> 20) & 0xFF, vtf & 0xFFFFF
    fields = [ex.field("source", ip_from_bytes(src), "outer src IP"), _dst_field(dst, ex),
              _hop_field("hop limit", hops, dst, ex), *_tos_fields(tclass, ex),
              ex.field("flow label", f"0x{label:05x}", "flow label"),
              Field("payload length", str(plen))]
    pseudo = csum_add(src + dst + struct.pack("!IxxxB", plen, nxt))
    return Layer("outer IPv6", 40, fields), off + 40, nxt, pseudo, None


def _udp(frame: bytes, l4: int, pseudo: int, v6: bool, ex: _Explainer) -> Layer:
    sport, dport, length, csum = struct.unpack_from("!HHHH", frame, l4)
    if dport in (IANA_PORT, LINUX_PORT):
        port_topic = f"destination port {dport}"
    else:
        port_topic = "destination port other"
    family = "IPv6" if v6 else "IPv4"
    if csum == 0:
        shown, topic = "0x0000 (none)", f"UDP checksum {family} zero"
    else:
        shown = f"0x{csum:04x} ({_checksum_state(frame, l4, length, pseudo)})"
        topic = "UDP checksum IPv6" if v6 else "UDP checksum IPv4 set"
    return Layer("UDP", UDP_HLEN, [
        ex.field("source port", str(sport), "source port"),
        ex.field("destination port", str(dport), port_topic),
        Field("length", str(length)),
        ex.field("checksum", shown, topic)])


def _checksum_state(frame: bytes, l4: int, length: int, pseudo: int) -> str:
    if length < UDP_HLEN or len(frame) < l4 + length:
        return "not checked: only part of the datagram is here"
    # A correct checksum makes the one's-complement sum over pseudo-header and datagram 0xffff.
    if fold_complement(csum_add(frame[l4:l4 + length], pseudo)) == 0:
        return "correct"
    # Checksum offload (CHECKSUM_PARTIAL): the stack leaves the pseudo-header's sum in the
    # field (udp_set_csum, udp6_set_csum) and the NIC, or the veth's peer, completes it; a
    # capture on the sending host sees the datagram before that.
    if struct.unpack_from("!H", frame, l4 + 6)[0] == pseudo:
        return "partial: the pseudo-header sum, before checksum offload completes it"
    return "wrong"


def _vxlan(hdr: bytes, ex: _Explainer) -> Layer:
    vni, reason = decode_header(hdr)
    flags = hdr[0]
    if reason is None:
        shown, vni_text = f"0x{flags:02x} (I)", str(vni)
    else:       # no I flag: vxlan_rcv() stops here, and the VNI field means nothing
        shown = f"0x{flags:02x} (no I flag: dropped, {reason})"
        vni_text = f"{int.from_bytes(hdr[4:7], 'big')} (not valid without the I flag)"
    if reason is None and reserved_bits_set(hdr):
        # The bits besides I and the VNI: flags 0xf7, bytes 1-3 and byte 7.
        rest = (flags & ~VXLAN_FLAGS & 0xFF) << 32 | int.from_bytes(hdr[1:4], "big") << 8 \
            | hdr[7]
        reserved = f"0x{rest:x} (dropped: reserved_bits)"
    else:
        reserved = "0"
    return Layer("VXLAN", VXLAN_HLEN, [
        ex.field("flags", shown, "flags I" if flags == VXLAN_FLAGS else "flags other"),
        ex.field("VNI", vni_text, "VNI"),
        ex.field("reserved", reserved, "reserved")])


def _inner(inner: bytes, overhead: int, ex: _Explainer) -> Layer:
    if len(inner) < ETH_HLEN:
        return Layer("inner frame", len(inner),
                     [Field("cut", "shorter than an Ethernet header")])
    dst, src = inner[0:6], inner[6:12]
    etype = struct.unpack_from("!H", inner, 12)[0]
    return Layer("inner frame", len(inner), [
        Field("packet", summarize(inner)),      # the words of vxtun trace
        ex.field("destination MAC", mac_to_str(dst),
                 "inner dst broadcast" if dst == BROADCAST_MAC else None),
        ex.field("source MAC", mac_to_str(src), "inner src MAC"),
        Field("EtherType", _ethertype(etype)),
        ex.field("tunnel overhead", f"{overhead} bytes", "overhead")])
