"""vxtun/trace/summary.py against scapy, the oracle: each summary is rebuilt from the fields
scapy parses out of the same bytes, for generated frames of every kind the summary names."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
                                IPv6)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from vxtun.trace.summary import HEAD, addresses, summarize, tcp_flags

ip4 = st.integers(0x0a140000, 0x0a14ffff).map(
    lambda n: ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0)))
ip6 = st.integers(1, 0xffff).map(lambda n: f"2001:db8:1020::{n:x}")
port = st.integers(1, 65535)
payload = st.binary(max_size=1400)
ETH = dict(src="02:11:22:33:44:01", dst="02:11:22:33:44:02")


def _sum(pkt) -> str:
    raw = bytes(pkt)
    return summarize(raw[:HEAD], len(raw))


def _flags(f) -> str:
    # scapy's letters (FSRPAUECN) in tcpdump's order, ACK as "."
    s = str(f)
    out = "".join(c for c in "SFPRUEW" if c in s.replace("C", "W"))
    return (out + ("." if "A" in s else "")) or "none"


@settings(max_examples=60, deadline=None)
@given(ip4, ip4, st.integers(1, 2))
def test_arp(spa, tpa, op):
    p = Ether(**ETH) / ARP(op=op, hwsrc=ETH["src"], psrc=spa, pdst=tpa)
    a = p[ARP]
    want = (f"ARP who-has {a.pdst} tell {a.psrc}" if op == 1
            else f"ARP reply {a.psrc} is-at {a.hwsrc}")
    assert _sum(p) == want
    assert addresses(bytes(p)) == {spa, tpa}


@settings(max_examples=60, deadline=None)
@given(ip4, ip4, st.sampled_from([0, 8]), st.integers(0, 65535), st.integers(0, 65535))
def test_icmp_echo(src, dst, kind, ident, seq):
    p = Ether(**ETH) / IP(src=src, dst=dst) / ICMP(type=kind, id=ident, seq=seq) / Raw(b"x" * 56)
    i = p[ICMP]
    word = "request" if i.type == 8 else "reply"
    assert _sum(p) == f"ICMP echo {word} id {i.id} seq {i.seq}"
    assert addresses(bytes(p)) == {src, dst}


@settings(max_examples=100, deadline=None)
@given(ip4, ip4, port, port, st.integers(0, 0xff), payload, st.booleans())
def test_tcp(src, dst, sport, dport, flags, data, vlan):
    p = Ether(**ETH)
    if vlan:
        p = p / Dot1Q(vlan=10)
    p = p / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / Raw(data)
    t = p[TCP]
    want = (f"TCP {p[IP].src}:{t.sport} > {p[IP].dst}:{t.dport} [{_flags(t.flags)}] "
            f"len {len(t.payload)}")
    assert _sum(p) == ("802.1Q vlan 10 " if vlan else "") + want


def test_tcp_flags_as_tcpdump():
    assert tcp_flags(0x02) == "S"
    assert tcp_flags(0x12) == "S."
    assert tcp_flags(0x18) == "P."
    assert tcp_flags(0x11) == "F."
    assert tcp_flags(0x10) == "."
    assert tcp_flags(0) == "none"


def test_tcp_padding_is_not_payload():
    # a bare ACK is padded to 60 bytes on the wire: the IP length says how much is TCP
    p = Ether(**ETH) / IP(src="10.20.1.2", dst="10.20.1.3") / TCP(sport=1, dport=2, flags="A")
    raw = bytes(p) + b"\0" * 6
    assert summarize(raw, len(raw)) == "TCP 10.20.1.2:1 > 10.20.1.3:2 [.] len 0"


def test_tso_super_frame_reports_its_whole_payload():
    # only the first HEAD bytes are kept; the IP length still says 60000 bytes of payload
    p = Ether(**ETH) / IP(src="10.20.1.2", dst="10.20.1.3") / TCP(flags="PA") / (b"x" * 60000)
    raw = bytes(p)
    assert summarize(raw[:HEAD], len(raw)).endswith("[P.] len 60000")


@settings(max_examples=60, deadline=None)
@given(ip6, ip6, port, port, payload)
def test_udp6(src, dst, sport, dport, data):
    p = Ether(**ETH) / IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / Raw(data)
    u = p[UDP]
    assert _sum(p) == (f"UDP [{p[IPv6].src}]:{u.sport} > [{p[IPv6].dst}]:{u.dport} "
                       f"len {len(u.payload)}")


@settings(max_examples=60, deadline=None)
@given(ip6, ip6, st.booleans(), st.integers(0, 65535), st.integers(0, 65535))
def test_icmp6(src, dst, request, ident, seq):
    layer = (ICMPv6EchoRequest if request else ICMPv6EchoReply)(id=ident, seq=seq)
    p = Ether(**ETH) / IPv6(src=src, dst=dst) / layer
    word = "request" if request else "reply"
    assert _sum(p) == f"ICMPv6 echo {word} id {p[layer.__class__].id} seq {seq}"


@settings(max_examples=60, deadline=None)
@given(ip6, ip6)
def test_nd(src, target):
    ns = Ether(**ETH) / IPv6(src=src, dst="ff02::1:ff00:1") / ICMPv6ND_NS(tgt=target)
    na = Ether(**ETH) / IPv6(src=target, dst=src) / ICMPv6ND_NA(tgt=target)
    assert _sum(ns) == f"ND NS for {ns[ICMPv6ND_NS].tgt}"
    assert _sum(na) == f"ND NA for {na[ICMPv6ND_NA].tgt}"
    assert target in addresses(bytes(ns))


def test_other_kinds():
    lldp = bytes(Ether(dst="01:80:c2:00:00:0e", src=ETH["src"], type=0x88cc) / (b"\0" * 46))
    assert summarize(lldp) == "ethertype 0x88cc len 60"
    gre = Ether(**ETH) / IP(src="10.20.1.2", dst="10.20.1.3", proto=47) / (b"\0" * 8)
    assert _sum(gre) == "IPv4 10.20.1.2 > 10.20.1.3 proto 47 len 28"
    assert summarize(b"\0" * 10) == "truncated frame len 10"
    assert summarize(bytes(Ether(**ETH) / ARP())[:20]) == "ARP (truncated)"
    assert _sum(Ether(**ETH) / ARP(hwtype=6)) == "ARP (not Ethernet/IPv4)"
