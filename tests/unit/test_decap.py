"""Decapsulation through the pure core (Demux -> Vtep), as the kernel's vxlan_rcv() does it.

* Full frames, as they cross the underlay, decode the way scapy decodes them.
* Every drop reason, fed as a crafted datagram, is counted once, under its name, and nothing is
  delivered to the TAP, learned, or reported.
* Arbitrary bytes never raise (hypothesis); every datagram is either delivered or counted.

The fast path's agreement with this reference is tested in tests/unit/test_fastpath_*.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from ovs_vectors import (
    OVS_ARP_REQUEST,
    OVS_GENEVE_FRAME,
    OVS_GPE_PUSH,
    OVS_INNER_ECHO_REPLY,
    OVS_VXLAN_PUSH,
)
from vxtun.core import DROP_REASONS, Demux, Deliver, Stats, Vtep, VtepConfig
from vxtun.fdb import Remote
from vxtun.wire.ether import ETH_P_IP, ETH_P_IPV6, ZERO_MAC, mac_from_str
from vxtun.wire.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_add, unpack_vnet
from vxtun.wire.vxlan import encode_header


OWN_MAC = "02:aa:00:00:00:03"
PEER_MAC = "02:aa:00:00:00:02"
PEER_IP = "192.0.2.1"
NOW = 100.0



def make(vni: int = 42, remote: str = PEER_IP, local: str = "192.0.2.2", mtu: int = 1450):
    cfg = VtepConfig(vni=vni, remote=remote, local=local, dev="eth0",
                     mac=mac_from_str(OWN_MAC), mtu=mtu)
    cfg.validate()
    vtep = Vtep(cfg)
    demux = Demux()
    demux.add(vtep)
    return demux, vtep


def counters(demux: Demux, vtep: Vtep) -> dict:
    """What ``vxtun stats -j`` shows for a socket with one VTEP (Node.stats merges the two)."""
    return Stats.merge(vtep.stats.to_json(), demux.stats.to_json())


def inner(src: str = PEER_MAC, dst: str = OWN_MAC) -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src="10.20.1.2", dst="10.20.1.3") /
                 ICMP(id=7, seq=1) / b"payload")


# --- full frames, compared with scapy ------------------------------------------------------


def strip_outer(frame: bytes) -> tuple[bytes, str, int]:
    """(UDP payload, outer source IP, UDP dport) of an Ethernet/IP/UDP frame: what the
    underlay socket hands vxtun.  Written out here so that scapy stays an independent oracle."""
    etype = (frame[12] << 8) | frame[13]
    if etype == ETH_P_IP:
        ihl = (frame[14] & 0x0F) * 4
        src = ".".join(str(b) for b in frame[26:30])
        udp = 14 + ihl
    else:
        assert etype == ETH_P_IPV6
        import ipaddress
        src = str(ipaddress.IPv6Address(frame[22:38]))
        udp = 14 + 40
    dport = (frame[udp + 2] << 8) | frame[udp + 3]
    length = (frame[udp + 4] << 8) | frame[udp + 5]
    return frame[udp + 8:udp + length], src, dport


INNER_FRAMES = {
    "icmp": Ether(src=PEER_MAC, dst=OWN_MAC) / IP(src="10.20.1.2", dst="10.20.1.3") /
    ICMP(id=1, seq=2) / (b"x" * 56),
    "arp-broadcast": Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") /
    ARP(hwsrc=PEER_MAC, psrc="10.20.1.2", pdst="10.20.1.3"),
    "tcp": Ether(src=PEER_MAC, dst=OWN_MAC) / IP(src="10.20.1.2", dst="10.20.1.3") /
    TCP(sport=40000, dport=5201, flags="PA", seq=1000) / (b"y" * 1000),
    "udp-vlan": Ether(src=PEER_MAC, dst=OWN_MAC) / Dot1Q(vlan=10) /
    IP(src="10.20.1.2", dst="10.20.1.3") / UDP(sport=1, dport=2) / b"z",
    "ipv6-echo": Ether(src=PEER_MAC, dst=OWN_MAC) / IPv6(src="fd00::2", dst="fd00::3") /
    ICMPv6EchoRequest(id=1, seq=1),
    "ipv6-ns": Ether(src=PEER_MAC, dst="33:33:ff:00:00:03") /
    IPv6(src="fd00::2", dst="ff02::1:ff00:3") / ICMPv6ND_NS(tgt="fd00::3"),
    "ovs-echo-reply": Ether(OVS_INNER_ECHO_REPLY),
    "ovs-arp-request": Ether(OVS_ARP_REQUEST),
}

OUTERS = {
    "ipv4": lambda: Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02") /
    IP(src=PEER_IP, dst="192.0.2.2") / UDP(sport=51283, dport=4789),
    "ipv6": lambda: Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02") /
    IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=51283, dport=4789),
}


@pytest.mark.parametrize("outer", sorted(OUTERS))
@pytest.mark.parametrize("name", sorted(INNER_FRAMES))
@pytest.mark.parametrize("vni", [42, 123, 0xFFFFFF])
def test_full_frame_decodes_like_scapy(outer, name, vni):
    wire = bytes(OUTERS[outer]() / VXLAN(flags=0x08, vni=vni) / INNER_FRAMES[name])
    # scapy's view of the frame on the wire
    pkt = Ether(wire)
    want_inner = bytes(pkt[VXLAN].payload)
    want_src = pkt[IP].src if outer == "ipv4" else pkt[IPv6].src
    # vxtun's view: the socket's payload through Demux and Vtep
    payload, src, dport = strip_outer(wire)
    assert dport == pkt[UDP].dport == 4789
    demux, vtep = make(vni=vni, remote=want_src,
                       local="192.0.2.2" if outer == "ipv4" else "2001:db8::2")
    actions = demux.handle_datagram(payload, src, NOW)
    assert len(actions) == 1 and isinstance(actions[0], Deliver)
    assert actions[0].frame == want_inner
    assert pkt[VXLAN].vni == vni and pkt[VXLAN].flags == 0x08
    # learning binds the inner source MAC to the outer source address (vxlan_snoop)
    entry = vtep.fdb.get(mac_from_str(pkt[VXLAN].payload.src))
    assert entry is not None and entry.remotes[0].ip == want_src and entry.state == "dynamic"
    c = counters(demux, vtep)
    # bytes without the inner Ethernet header, as a kernel VTEP counts them (core/stats.py)
    assert c["rx"] == {"packets": 1, "bytes": len(want_inner) - 14}
    assert sum(c["drops"].values()) == 0


def test_ovs_echo_reply_in_vxlan_123_counts_84_bytes():
    """OVS counts the echo reply as "rx pkts=1, bytes=98" on its tunnel port, the whole inner
    frame; a kernel vxlan device counts it without the Ethernet header (vxlan_rcv() counts
    after eth_type_trans()), 84 bytes, and so does vxtun (vxtun/core/stats.py)."""
    demux, vtep = make(vni=123, remote="1.1.2.92", local="1.1.2.88")
    out = demux.handle_datagram(OVS_VXLAN_PUSH + OVS_INNER_ECHO_REPLY, "1.1.2.92", NOW)
    assert [a.frame for a in out] == [OVS_INNER_ECHO_REPLY]
    assert counters(demux, vtep)["rx"] == {"packets": 1, "bytes": 98 - 14}
    # ICMP has no checksum offload: the frame goes to the TAP with an empty vnet header.
    assert out[0].vnet == bytes(10)


def test_ovs_gpe_and_geneve_datagrams_are_dropped_by_reason():
    demux, vtep = make(vni=0x159, remote="1.1.2.92", local="1.1.2.88")
    assert demux.handle_datagram(OVS_GPE_PUSH + OVS_INNER_ECHO_REPLY, "1.1.2.92", NOW) == []
    geneve, src, dport = strip_outer(OVS_GENEVE_FRAME)
    assert dport == 6081 and src == "1.1.2.92"
    assert demux.handle_datagram(geneve, src, NOW) == []
    drops = counters(demux, vtep)["drops"]
    assert drops["reserved_bits"] == 1 and drops["not_vxlan"] == 1
    assert sum(drops.values()) == 2


# --- every drop reason ----------------------------------------------------------------------

HDR42 = encode_header(42)


def with_byte(hdr: bytes, i: int, value: int) -> bytes:
    b = bytearray(hdr)
    b[i] = value
    return bytes(b)


# reason -> list of (label, datagram).  Each must be counted under exactly that reason.
CRAFTED = {
    "truncated": [("empty", b""), ("7 bytes", HDR42[:7])],
    "not_vxlan": [("flags 0", with_byte(HDR42, 0, 0x00) + inner()),
                  ("gpe P only", with_byte(HDR42, 0, 0x04) + inner()),
                  ("i flag clear, reserved set", with_byte(with_byte(HDR42, 0, 0x80), 7, 1))],
    "vni_not_found": [("vni 43", encode_header(43) + inner()),
                      ("vni 0", encode_header(0) + inner()),
                      # the kernel looks the VNI up before it checks reserved bits
                      ("vni 43 with reserved bits", with_byte(encode_header(43), 3, 1) + inner())],
    "reserved_bits": [("gpe flags", with_byte(HDR42, 0, 0x0C) + inner()),
                      ("gbp flag", with_byte(HDR42, 0, 0x88) + inner()),
                      ("byte 1", with_byte(HDR42, 1, 0x01) + inner()),
                      ("byte 3", with_byte(HDR42, 3, 0x80) + inner()),
                      ("byte 7", with_byte(HDR42, 7, 0x01) + inner()),
                      ("reserved and runt", with_byte(HDR42, 7, 0x01) + b"\x00" * 5)],
    "inner_truncated": [("header only", HDR42), ("13-byte frame", HDR42 + inner()[:13])],
    "own_mac": [("our MAC as source", HDR42 + inner(src=OWN_MAC, dst=PEER_MAC))],
    "invalid_src_mac": [("multicast source", HDR42 + inner(src="01:00:5e:00:00:01")),
                        ("broadcast source", HDR42 + inner(src="ff:ff:ff:ff:ff:ff")),
                        ("zero source", HDR42 + inner(src="00:00:00:00:00:00"))],
    "static_mac_moved": [("static MAC from another VTEP",
                          HDR42 + inner(src="02:aa:00:00:00:99"))],
}


def test_every_decap_drop_reason_is_crafted():
    rx_reasons = set(CRAFTED)
    # the rest are transmit-side or I/O reasons, tested with the transmit path and in netns
    assert rx_reasons <= set(DROP_REASONS)
    assert {"truncated", "not_vxlan", "vni_not_found", "reserved_bits", "inner_truncated",
            "own_mac", "invalid_src_mac"} <= rx_reasons


@pytest.mark.parametrize("reason,label,datagram",
                         [(r, lbl, d) for r, cases in CRAFTED.items() for lbl, d in cases],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_crafted_datagram_is_counted_and_not_delivered(reason, label, datagram):
    demux, vtep = make()
    pinned = mac_from_str("02:aa:00:00:00:99")
    vtep.fdb.add(pinned, Remote("192.0.2.9"), "permanent", NOW)
    before = {e.mac: list(e.remotes) for e in vtep.fdb.entries()}
    assert demux.handle_datagram(datagram, PEER_IP, NOW) == []
    c = counters(demux, vtep)
    assert c["drops"][reason] == 1, c["drops"]
    assert sum(c["drops"].values()) == 1
    assert c["rx"] == {"packets": 0, "bytes": 0}
    assert c["fdb"] == {"learned": 0, "moved": 0}
    assert {e.mac: list(e.remotes) for e in vtep.fdb.entries()} == before
    assert vtep.next_event() is None


def test_drops_accumulate_and_good_traffic_still_flows():
    demux, vtep = make()
    for _ in range(3):
        demux.handle_datagram(HDR42[:4], PEER_IP, NOW)
        demux.handle_datagram(encode_header(43) + inner(), PEER_IP, NOW)
    out = demux.handle_datagram(HDR42 + inner(), PEER_IP, NOW)
    assert len(out) == 1
    c = counters(demux, vtep)
    assert c["drops"]["truncated"] == 3 and c["drops"]["vni_not_found"] == 3
    assert c["rx"]["packets"] == 1


def test_two_vteps_on_one_socket_are_isolated_by_vni():
    demux, v42 = make(vni=42)
    cfg43 = VtepConfig(vni=43, name="vxtun1", remote=PEER_IP, mac=mac_from_str("02:bb:00:00:00:01"),
                       mtu=1450)
    v43 = Vtep(cfg43)
    demux.add(v43)
    frame = inner(dst="02:bb:00:00:00:01")
    assert demux.handle_datagram(encode_header(43) + frame, PEER_IP, NOW)[0].frame == frame
    assert v43.stats.rx_packets == 1 and v42.stats.rx_packets == 0


# --- the virtio-net header on decapsulated TCP (what makes TCP from a kernel peer work) -----


def test_partial_tcp_checksum_from_a_kernel_peer_is_marked_needs_csum():
    """Over veth the kernel peer leaves the pseudo-header sum in the TCP checksum field."""
    frame = bytearray(bytes(INNER_FRAMES["tcp"]))
    l4 = 14 + 20
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum (addresses, proto, length)
    ps = csum_add(bytes(frame[14 + 12:14 + 20]), 6 + len(frame) - l4)
    frame[l4 + 16:l4 + 18] = struct.pack("!H", ps)
    demux, vtep = make()
    (d,) = demux.handle_datagram(HDR42 + bytes(frame), PEER_IP, NOW)
    flags, gso_type, _hdr_len, _gso_size, start, off = unpack_vnet(d.vnet)
    assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM and gso_type == 0
    assert (start, off) == (l4, 16)


def test_complete_checksum_gets_no_offload_flags():
    demux, vtep = make()
    (d,) = demux.handle_datagram(HDR42 + bytes(INNER_FRAMES["tcp"]), PEER_IP, NOW)
    assert d.vnet == bytes(10)


# --- hypothesis: nothing raises, everything is accounted for ---------------------------------

macs = st.binary(min_size=6, max_size=6)


@st.composite
def ip_frames(draw):
    """Ethernet frames with an IPv4 or IPv6 header whose fields are arbitrary: they reach the
    deepest parsing (rx_vnet_header), which random bytes almost never do."""
    src = bytes([draw(st.integers(0, 255)) & 0xFE]) + draw(st.binary(min_size=5, max_size=5))
    if draw(st.booleans()):
        ver_ihl = 0x40 | draw(st.integers(0, 15))
        hdr = bytes([ver_ihl, 0]) + struct.pack("!H", draw(st.integers(0, 70000) | st.just(0))
                                                & 0xFFFF)
        hdr += draw(st.binary(min_size=5, max_size=5))
        hdr += bytes([draw(st.sampled_from([6, 17, 1, 58, 0]))])
        etype = ETH_P_IP
    else:
        hdr = bytes([0x60, 0, 0, 0]) + struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        hdr += bytes([draw(st.sampled_from([6, 17, 58, 0, 44]))])
        etype = ETH_P_IPV6
    tail = draw(st.binary(max_size=1600))
    return draw(macs) + src + struct.pack("!H", etype) + hdr + tail


headers = st.one_of(
    st.just(HDR42),
    st.builds(lambda b: b[:4] + HDR42[4:7] + b[4:], st.binary(min_size=5, max_size=5)),
    st.binary(max_size=8),
)

datagrams = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda h, t: h + t, headers, st.binary(max_size=3000)),
    st.builds(lambda h, f: h + f, headers, ip_frames()),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(datagrams, min_size=1, max_size=8), st.sampled_from([PEER_IP, "192.0.2.9"]))
def test_decap_of_arbitrary_bytes_never_raises(batch, src_ip):
    demux, vtep = make(mtu=1450)
    for n, data in enumerate(batch, 1):
        actions = demux.handle_datagram(data, src_ip, NOW + n)
        assert isinstance(actions, list)
        for a in actions:
            assert isinstance(a, Deliver)
            assert a.frame == data[8:]
            assert len(a.vnet) == 10
            flags, gso_type, hdr_len, gso_size, start, off = unpack_vnet(a.vnet)
            if flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                assert start + off + 2 <= len(a.frame)
            if gso_type:
                assert 0 < gso_size and hdr_len <= len(a.frame)
        # every datagram is either delivered or dropped with exactly one reason
        c = counters(demux, vtep)
        assert c["rx"]["packets"] + sum(c["drops"].values()) == n
    assert vtep.fdb.get(ZERO_MAC) is not None
