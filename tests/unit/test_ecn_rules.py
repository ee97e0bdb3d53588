"""ECN across the tunnel (RFC 6040) as the kernel's vxlan does it: vxtun.wire.ecn and the core.

The expected tables are what the running kernel did in tests/netns/test_ecn.py (and in
include/net/inet_ecn.h): the outer ECN copies the inner one (CE leaves as ECT(0)), DSCP 0; on
receive, outer CE drops a Not-ECT inner packet and marks an ECT one CE, outer ECT(1) turns an
inner ECT(0) into ECT(1), and nothing else changes.  The fast path's agreement with these rules
is in tests/unit/test_fastpath_differential.py.
"""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from vxtun.core import Demux, Deliver, Transmit, Vtep, VtepConfig
from vxtun.core.events import FdbChange
from vxtun.fdb import Remote
from vxtun.wire import ecn
from vxtun.wire.ether import ZERO_MAC, mac_from_str
from vxtun.wire.offload import csum_add
from vxtun.wire.vxlan import encode_header

NOT_ECT, ECT_1, ECT_0, CE = 0, 1, 2, 3
OWN = mac_from_str("02:aa:00:00:00:03")
PEER = "02:aa:00:00:00:02"
NOW = 100.0
DSCP = 0x28 << 2        # AF11-ish: never copied to the outer header with tos 0


def v4(ecn_bits: int, dscp: int = DSCP, **kw) -> bytes:
    return bytes(Ether(src=PEER, dst="02:aa:00:00:00:03") /
                 IP(src="10.20.1.2", dst="10.20.1.3", tos=dscp | ecn_bits, **kw) /
                 UDP(sport=1000, dport=2000) / (b"p" * 20))


def v6(ecn_bits: int, dscp: int = DSCP) -> bytes:
    return bytes(Ether(src=PEER, dst="02:aa:00:00:00:03") /
                 IPv6(src="fd00::2", dst="fd00::3", tc=dscp | ecn_bits, fl=0x12345) /
                 UDP(sport=1000, dport=2000) / (b"p" * 20))


def tagged(ecn_bits: int, tags: int = 1) -> bytes:
    f = Ether(src=PEER, dst="02:aa:00:00:00:03")
    for i in range(tags):
        f = f / Dot1Q(vlan=10 + i)
    return bytes(f / IP(src="10.20.1.2", dst="10.20.1.3", tos=DSCP | ecn_bits) / TCP())


def ecn_of(frame: bytes) -> int:
    return ecn.inner_dsfield(frame) & 3


def ipv4_header_ok(frame: bytes) -> bool:
    ihl = (frame[14] & 0x0F) * 4
    return csum_add(frame[14:14 + ihl]) == 0xFFFF


# --- encapsulation ------------------------------------------------------------------------

ENCAP = {NOT_ECT: NOT_ECT, ECT_1: ECT_1, ECT_0: ECT_0, CE: ECT_0}


@pytest.mark.parametrize("make", [v4, v6, tagged], ids=["ipv4", "ipv6", "vlan"])
@pytest.mark.parametrize("inner", [NOT_ECT, ECT_1, ECT_0, CE])
def test_outer_tos_carries_the_inner_ecn_and_no_dscp(make, inner):
    assert ecn.encap_tos(make(inner)) == ENCAP[inner]


def test_outer_tos_looks_behind_three_tags_at_most():
    """__vlan_get_protocol() parses three tags; behind a fourth there is no IP header."""
    assert [ecn.encap_tos(tagged(ECT_0, n)) for n in range(1, 5)] == [ECT_0] * 3 + [NOT_ECT]
    qinq = bytearray(tagged(ECT_1, 2))
    qinq[12:14] = b"\x88\xa8"               # 802.1ad outer tag
    assert ecn.encap_tos(bytes(qinq)) == ECT_1


def test_outer_tos_of_non_ip_and_cut_frames_is_zero():
    arp = bytes(Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.20.1.2",
                                                                pdst="10.20.1.3"))
    assert ecn.encap_tos(arp) == 0
    assert ecn.encap_tos(v4(CE)[:15]) == 0          # the TOS byte itself is missing
    assert ecn.encap_tos(v4(CE)[:16]) == ECT_0      # the TOS byte is all it takes
    assert ecn.encap_tos(tagged(ECT_1)[:17]) == 0
    assert ecn.encap_tos(b"") == 0


def make_vtep(**kw):
    cfg = VtepConfig(vni=42, remote="192.0.2.1", local="192.0.2.2", dev="eth0", mac=OWN,
                     mtu=1450, **kw)
    cfg.validate()
    vtep = Vtep(cfg)
    demux = Demux()
    demux.add(vtep)
    return demux, vtep


@pytest.mark.parametrize("inner", [NOT_ECT, ECT_1, ECT_0, CE])
def test_transmit_gets_the_outer_tos_for_every_remote(inner):
    _, vtep = make_vtep()
    vtep.fdb.add(ZERO_MAC, Remote("192.0.2.9"), "permanent", op="append")
    frame = v4(inner)
    out = vtep.handle_frame(frame, NOW)
    assert len(out) == 2 and all(type(a) is Transmit for a in out)
    assert {a.tos for a in out} == {ENCAP[inner]}
    assert all(a.payload == encode_header(42) + frame for a in out)   # the inner frame as is


def test_transmit_tos_defaults_to_zero():
    assert Transmit("192.0.2.1", 4789, 5000, b"").tos == 0


# --- decapsulation: the RFC 6040 table ------------------------------------------------------

# (inner, outer) -> "drop", or the inner ECN delivered
DECAP = {
    (NOT_ECT, NOT_ECT): NOT_ECT, (NOT_ECT, ECT_1): NOT_ECT, (NOT_ECT, ECT_0): NOT_ECT,
    (NOT_ECT, CE): "drop",
    (ECT_1, NOT_ECT): ECT_1, (ECT_1, ECT_1): ECT_1, (ECT_1, ECT_0): ECT_1, (ECT_1, CE): CE,
    (ECT_0, NOT_ECT): ECT_0, (ECT_0, ECT_1): ECT_1, (ECT_0, ECT_0): ECT_0, (ECT_0, CE): CE,
    (CE, NOT_ECT): CE, (CE, ECT_1): CE, (CE, ECT_0): CE, (CE, CE): CE,
}


@pytest.mark.parametrize("make", [v4, v6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("inner,outer", sorted(DECAP))
def test_decapsulate_follows_rfc6040(make, inner, outer):
    frame = make(inner)
    for dscp in (0, DSCP):               # the outer DSCP plays no part
        reason, out = ecn.decapsulate(frame, dscp | outer)
        want = DECAP[inner, outer]
        if want == "drop":
            assert reason == "ecn" and out == frame
            continue
        assert reason is None
        assert ecn_of(out) == want
        # only the ECN bits (and the IPv4 header checksum) change; the DSCP stays
        assert ecn.inner_dsfield(out) >> 2 == DSCP >> 2
        diff = [i for i in range(len(frame)) if frame[i] != out[i]]
        if want == inner:
            assert out == frame
        elif make is v4:
            assert set(diff) <= {15, 24, 25} and ipv4_header_ok(out)
        else:
            assert diff == [15]


def test_ipv4_checksum_update_is_the_kernels_arithmetic():
    """IP_ECN_set_ce adds 0xfffe (ECT(0)) or 0xfffd (ECT(1)) with an end-around carry that also
    turns 0xffff into 0; IP_ECN_set_ect1 adds 1.  A wrong checksum stays exactly as wrong."""
    frame = bytearray(v4(ECT_0))
    frame[24:26] = b"\x00\x01"
    _, out = ecn.decapsulate(bytes(frame), CE)
    assert out[24:26] == (0x0001 + 0xFFFE - 0xFFFF).to_bytes(2, "big")
    frame[24:26] = b"\x00\x01"
    _, out = ecn.decapsulate(bytes(frame), ECT_1)
    assert out[24:26] == b"\x00\x02" and out[15] == DSCP | ECT_1
    frame[24:26] = b"\xff\xfe"              # + 1 = 0xffff, which the kernel turns into 0
    _, out = ecn.decapsulate(bytes(frame), ECT_1)
    assert out[24:26] == b"\x00\x00"
    frame = bytearray(v4(ECT_1))
    frame[24:26] = b"\x00\x02"              # + 0xfffd = 0xffff -> 0
    _, out = ecn.decapsulate(bytes(frame), CE)
    assert out[24:26] == b"\x00\x00" and out[15] == DSCP | CE


def test_ipv4_with_options_and_any_version_nibble():
    """The kernel reads ip_hdr()->tos by position: options do not matter, nor the version."""
    frame = v4(ECT_0, options=b"\x01\x01\x01\x01")
    _, out = ecn.decapsulate(frame, CE)
    assert ecn_of(out) == CE and ipv4_header_ok(out)
    odd = bytearray(v4(NOT_ECT))
    odd[14] = 0x65
    assert ecn.decapsulate(bytes(odd), CE)[0] == "ecn"


@pytest.mark.parametrize("outer", [ECT_1, CE])
def test_decapsulate_leaves_vlan_tagged_and_non_ip_frames_alone(outer):
    """skb->protocol is the outer Ethernet type: a tagged inner frame is not looked into."""
    for inner in (NOT_ECT, ECT_0):
        frame = tagged(inner)
        assert ecn.decapsulate(frame, outer) == (None, frame)
    arp = bytes(Ether(src=PEER, dst="ff:ff:ff:ff:ff:ff") / ARP())
    assert ecn.decapsulate(arp, outer) == (None, arp)
    assert ecn.decapsulate(bytes(14), outer) == (None, bytes(14))


def test_inner_ip_header_cut_short_is_inner_truncated():
    """pskb_inet_may_pull(): 20 bytes of IPv4, 40 of IPv6 behind the Ethernet header."""
    for frame, need in ((v4(ECT_0), 34), (v6(ECT_0), 54)):
        assert ecn.decapsulate(frame[:need - 1], NOT_ECT) == ("inner_truncated",
                                                              frame[:need - 1])
        assert ecn.decapsulate(frame[:need], NOT_ECT) == (None, frame[:need])
        assert ecn_of(ecn.decapsulate(frame[:need], CE)[1]) == CE


# --- decapsulation through Demux -> Vtep ----------------------------------------------------

def test_demux_hands_the_outer_tos_on_and_the_frame_is_marked():
    demux, vtep = make_vtep()
    (d,) = demux.handle_datagram(encode_header(42) + v4(ECT_0), "192.0.2.1", NOW, CE)
    assert isinstance(d, Deliver) and ecn_of(d.frame) == CE and ipv4_header_ok(d.frame)
    assert vtep.stats.rx_packets == 1
    (d,) = demux.handle_datagram(encode_header(42) + v4(ECT_0), "192.0.2.1", NOW)
    assert d.frame == v4(ECT_0)              # outer_tos defaults to 0: nothing to carry


@pytest.mark.parametrize("datagram,outer,reason", [
    (v4(NOT_ECT), CE, "ecn"), (v6(NOT_ECT), CE, "ecn"),
    (v4(ECT_0)[:30], NOT_ECT, "inner_truncated"), (v6(ECT_0)[:50], NOT_ECT, "inner_truncated"),
])
def test_dropped_after_learning_as_vxlan_rcv_does(datagram, outer, reason):
    """vxlan_set_mac() learns before the inner header is pulled and ECN decapsulated: the
    frame is dropped and counted, its source MAC learned all the same (and reported)."""
    demux, vtep = make_vtep()
    assert demux.handle_datagram(encode_header(42) + datagram, "192.0.2.7", NOW, outer) == []
    s = vtep.stats.to_json()
    assert s["drops"][reason] == 1 and sum(s["drops"].values()) == 1
    assert s["rx"] == {"packets": 0, "bytes": 0}
    assert s["fdb"]["learned"] == 1
    e = vtep.fdb.get(mac_from_str(PEER))
    assert e is not None and e.remotes[0].ip == "192.0.2.7"
    ev = vtep.next_event()
    assert isinstance(ev, FdbChange) and ev.action == "new"
