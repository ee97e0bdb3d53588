"""layers_of() against scapy as the oracle: sizes, field values and explanations said once."""
from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw, raw

from vxtun.lab.layers import EXPLAIN, layers_of

H1_MAC, H2_MAC = "5e:10:00:00:00:02", "b2:20:00:00:00:03"


def arp_request() -> Ether:
    return Ether(src=H1_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=H1_MAC, psrc="10.20.1.2", pdst="10.20.1.3")


def arp_reply() -> Ether:
    return Ether(src=H2_MAC, dst=H1_MAC) / ARP(
        op=2, hwsrc=H2_MAC, psrc="10.20.1.3", hwdst=H1_MAC, pdst="10.20.1.2")


def over_v4(inner, dst="239.1.1.1", ttl=1, tos=0, flags=0, sport=51234, dport=4789,
            chksum=0, vxflags=0x08, vni=42) -> bytes:
    udp = UDP(sport=sport, dport=dport) if chksum is None else UDP(sport=sport, dport=dport,
                                                                     chksum=chksum)
    return raw(Ether(src="02:00:c0:00:02:01", dst="01:00:5e:01:01:01")
               / IP(src="192.0.2.1", dst=dst, ttl=ttl, tos=tos, flags=flags)
               / udp / VXLAN(flags=vxflags, vni=vni) / inner)


def over_v6(inner, dst="ff05::42", hlim=1, tc=0, fl=0, sport=40000, vni=4242) -> bytes:
    return raw(Ether(src="02:00:c0:00:02:01", dst="33:33:00:00:00:42")
               / IPv6(src="2001:db8::1", dst=dst, hlim=hlim, tc=tc, fl=fl)
               / UDP(sport=sport, dport=4789) / VXLAN(flags=0x08, vni=vni) / inner)


def fields(layers) -> dict[tuple[str, str], str]:
    return {(la.name, f.name): f.value for la in layers for f in la.fields}


def explained(layers) -> dict[tuple[str, str], str]:
    return {(la.name, f.name): f.explain for la in layers for f in la.fields if f.explain}


def assert_fields(layers, expected: dict[tuple[str, str], str]) -> None:
    f = fields(layers)
    assert {k: f.get(k) for k in expected} == expected


def assert_explained(layers, expected: dict[tuple[str, str], str]) -> None:
    """Each named field carries an explanation that says the given words."""
    why = explained(layers)
    missing = {k: words for k, words in expected.items() if words not in why.get(k, "")}
    assert not missing, missing


def test_ipv4_multicast_arp_request_layers_sizes_and_fields_match_scapy():
    data = over_v4(arp_request())
    pkt = Ether(data)
    layers = layers_of(data)
    assert [(la.name, la.size) for la in layers] == [
        ("outer Ethernet", 14), ("outer IPv4", 20), ("UDP", 8), ("VXLAN", 8),
        ("inner frame", len(raw(arp_request())))]
    assert sum(la.size for la in layers) == len(data)
    f = fields(layers)
    assert f["outer Ethernet", "destination MAC"] == pkt[Ether].dst
    assert f["outer Ethernet", "source MAC"] == pkt[Ether].src
    assert f["outer IPv4", "source"] == pkt[IP].src
    assert f["outer IPv4", "destination"] == pkt[IP].dst
    assert f["outer IPv4", "TTL"] == str(pkt[IP].ttl) == "1"
    assert f["outer IPv4", "DF"] == "not set"
    assert f["outer IPv4", "total length"] == str(pkt[IP].len)
    assert f["UDP", "source port"] == str(pkt[UDP].sport)
    assert f["UDP", "destination port"] == str(pkt[UDP].dport)
    assert f["UDP", "length"] == str(pkt[UDP].len)
    assert f["UDP", "checksum"] == "0x0000 (none)"
    assert f["VXLAN", "flags"] == "0x08 (I)"
    assert f["VXLAN", "VNI"] == str(pkt[VXLAN].vni) == "42"
    assert f["VXLAN", "reserved"] == "0"
    inner = pkt[VXLAN].payload
    assert f["inner frame", "destination MAC"] == inner[Ether].dst
    assert f["inner frame", "source MAC"] == inner[Ether].src
    assert_fields(layers, {("inner frame", "EtherType"): "0x0806 (ARP)",
                           ("inner frame", "packet"): "ARP who-has 10.20.1.3 tell 10.20.1.2",
                           ("inner frame", "tunnel overhead"): "50 bytes"})
    assert_explained(layers, {("outer IPv4", "TTL"): "multicast group with TTL 1",
                              ("UDP", "checksum"): "RFC 768", ("VXLAN", "flags"): "I flag",
                              ("VXLAN", "VNI"): "24-bit", ("outer IPv4", "ECN"): "RFC 6040",
                              ("outer IPv4", "DF"): "unset",
                              ("UDP", "source port"): "ip_local_port_range",
                              ("UDP", "destination port"): "IANA"})


def test_ipv4_unicast_reply_with_checksum_df_and_ecn():
    data = over_v4(arp_reply(), dst="192.0.2.3", ttl=64, tos=0x02, flags="DF", chksum=None,
                   dport=8472, sport=33000)
    pkt = Ether(data)
    f = fields(layers_of(data))
    assert f["outer IPv4", "TTL"] == "64"
    assert f["outer IPv4", "DF"] == "set"
    assert f["outer IPv4", "ECN"] == "ECT(0)"
    assert f["outer IPv4", "DSCP"] == "0"
    assert f["UDP", "checksum"] == f"0x{pkt[UDP].chksum:04x} (correct)"
    assert f["UDP", "destination port"] == "8472"
    assert f["inner frame", "packet"] == f"ARP reply 10.20.1.3 is-at {H2_MAC}"
    why = explained(layers_of(data))
    assert "8472" in why["UDP", "destination port"]
    assert "64" in why["outer IPv4", "TTL"]


def test_a_wrong_udp_checksum_is_called_wrong():
    data = over_v4(arp_reply(), dst="192.0.2.3", chksum=0x1234)
    assert fields(layers_of(data))["UDP", "checksum"] == "0x1234 (wrong)"


def test_ipv6_outer_with_flow_label_traffic_class_and_checksum():
    inner = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.20.1.2", dst="10.20.1.3", tos=0x03) \
        / ICMP(type=8, id=7, seq=1) / Raw(b"x" * 56)
    data = over_v6(inner, tc=0x01, fl=0x12345, hlim=1)
    pkt = Ether(data)
    layers = layers_of(data)
    assert [(la.name, la.size) for la in layers] == [
        ("outer Ethernet", 14), ("outer IPv6", 40), ("UDP", 8), ("VXLAN", 8),
        ("inner frame", len(raw(inner)))]
    f = fields(layers)
    assert f["outer IPv6", "source"] == pkt[IPv6].src
    assert f["outer IPv6", "destination"] == pkt[IPv6].dst
    assert_fields(layers, {
        ("outer IPv6", "hop limit"): "1", ("outer IPv6", "flow label"): "0x12345",
        ("outer IPv6", "ECN"): "ECT(1)", ("outer IPv6", "payload length"): str(pkt[IPv6].plen),
        ("UDP", "checksum"): f"0x{pkt[UDP].chksum:04x} (correct)", ("VXLAN", "VNI"): "4242",
        ("inner frame", "packet"): "ICMP echo request id 7 seq 1",
        ("inner frame", "tunnel overhead"): "70 bytes"})
    assert_explained(layers, {("UDP", "checksum"): "RFC 8200",
                              ("outer IPv6", "hop limit"): "multicast group",
                              ("outer IPv6", "flow label"): "flowlabel"})


def test_every_topic_is_explained_once_per_walk():
    first: set[str] = set()
    one = layers_of(over_v4(arp_request()), first)
    again = layers_of(over_v4(arp_request()), first)
    assert explained(one)
    assert explained(again) == {}
    # A new lesson still comes: a unicast datagram's TTL, and a destination IP that is a VTEP.
    third = explained(layers_of(over_v4(arp_reply(), dst="192.0.2.3", ttl=64), first))
    # (The outer destination MAC of over_v4 stays a multicast one, already explained.)
    assert set(third) == {("outer IPv4", "TTL"), ("outer IPv4", "destination")}
    assert first <= set(EXPLAIN)


def test_without_a_first_set_everything_is_explained_every_time():
    assert explained(layers_of(over_v4(arp_request())))
    assert explained(layers_of(over_v4(arp_request())))


def test_inner_tcp_and_udp_one_liners_and_a_vlan_tagged_underlay():
    tcp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.20.1.2", dst="10.20.1.3") \
        / TCP(sport=41234, dport=5201, flags="PA") / Raw(b"a" * 100)
    udp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.20.1.2", dst="10.20.1.3") \
        / UDP(sport=5353, dport=53) / Raw(b"q" * 10)
    f = fields(layers_of(over_v4(tcp, dst="192.0.2.3")))
    assert f["inner frame", "packet"] == "TCP 10.20.1.2:41234 > 10.20.1.3:5201 [P.] len 100"
    f = fields(layers_of(over_v4(udp, dst="192.0.2.3")))
    assert f["inner frame", "packet"] == "UDP 10.20.1.2:5353 > 10.20.1.3:53 len 10"
    tagged = raw(Ether(src="02:00:c0:00:02:01", dst="02:00:c0:00:02:03") / Dot1Q(vlan=7)
                 / IP(src="192.0.2.1", dst="192.0.2.3") / UDP(sport=1, dport=4789, chksum=0)
                 / VXLAN(flags=0x08, vni=9) / arp_request())
    layers = layers_of(tagged)
    assert (layers[0].name, layers[0].size) == ("outer Ethernet", 18)
    assert fields(layers)["outer Ethernet", "VLAN"] == "7"
    assert fields(layers)["VXLAN", "VNI"] == "9"


def test_a_header_without_the_i_flag_says_the_kernel_drops_it():
    f = fields(layers_of(over_v4(arp_request(), vxflags=0x00)))
    assert f["VXLAN", "flags"] == "0x00 (no I flag: dropped, not_vxlan)"
    assert f["VXLAN", "VNI"] == "42 (not valid without the I flag)"


@pytest.mark.parametrize("at,bit,rest", [(0, 0x80, "0x8000000000"), (2, 0x01, "0x10000"),
                                         (7, 0x01, "0x1")])
def test_reserved_bits_are_shown_with_the_kernels_drop_reason(at, bit, rest):
    data = bytearray(over_v4(arp_request()))
    data[14 + 20 + 8 + at] |= bit            # a bit of the VXLAN header besides I and the VNI
    f = fields(layers_of(bytes(data)))
    assert f["VXLAN", "flags"].startswith("0x") and "I" in f["VXLAN", "flags"]
    assert f["VXLAN", "VNI"] == "42"
    assert f["VXLAN", "reserved"] == f"{rest} (dropped: reserved_bits)"


def test_a_frame_cut_short_ends_in_a_truncated_layer_not_an_exception():
    data = over_v4(arp_request())
    for cut in (0, 10, 14, 30, 40, 45):
        layers = layers_of(data[:cut])
        assert layers[-1].name == "truncated"
        assert sum(la.size for la in layers) == cut
    layers = layers_of(data[:55])       # all four headers, then 5 bytes of the inner frame
    assert (layers[-1].name, layers[-1].size) == ("inner frame", 5)
    assert fields(layers)["inner frame", "cut"] == "shorter than an Ethernet header"


def test_a_later_ip_fragment_has_no_udp_header():
    big = over_v4(Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.20.1.2", dst="10.20.1.3")
                  / ICMP() / Raw(b"z" * 2000), dst="192.0.2.3")
    pkt = Ether(big)
    frags = [raw(Ether(src=pkt.src, dst=pkt.dst) / f) for f in fragment(pkt[IP], 1480)]
    first = layers_of(frags[0])
    assert fields(first)["outer IPv4", "fragment"].endswith("more follow")
    assert fields(first)["UDP", "checksum"] == "0x0000 (none)"
    later = layers_of(frags[1])
    assert [la.name for la in later] == ["outer Ethernet", "outer IPv4", "fragment data"]
    assert sum(la.size for la in later) == len(frags[1])


def test_inner_ipv6_neighbour_solicitation_and_echo_reply_one_liners():
    from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6ND_NS

    ns = Ether(src=H1_MAC, dst="33:33:ff:00:00:03") / IPv6(src="2001:db8:1::2",
                                                             dst="ff02::1:ff00:3") \
        / ICMPv6ND_NS(tgt="2001:db8:1::3")
    reply = Ether(src=H2_MAC, dst=H1_MAC) / IPv6(src="2001:db8:1::3", dst="2001:db8:1::2") \
        / ICMPv6EchoReply(id=9, seq=4)
    f = fields(layers_of(over_v6(ns)))
    assert f["inner frame", "packet"] == "ND NS for 2001:db8:1::3"
    assert f["inner frame", "EtherType"] == "0x86dd (IPv6)"
    f = fields(layers_of(over_v6(reply, dst="2001:db8::3", hlim=64)))
    assert f["inner frame", "packet"] == "ICMPv6 echo reply id 9 seq 4"


def test_a_checksum_left_for_offload_is_called_partial_not_wrong():
    from vxtun.wire.offload import csum_add

    data = bytearray(over_v6(arp_request(), dst="2001:db8::3", hlim=64))
    pkt = Ether(bytes(data))
    pseudo = csum_add(bytes(data[22:54]) + pkt[IPv6].plen.to_bytes(4, "big") + bytes((0, 0, 0, 17)))
    data[14 + 40 + 6:14 + 40 + 8] = pseudo.to_bytes(2, "big")   # as udp6_set_csum leaves it
    f = fields(layers_of(bytes(data)))
    assert f["UDP", "checksum"] == (f"0x{pseudo:04x} (partial: the pseudo-header sum, before "
                                    "checksum offload completes it)")
