"""Known-answer tests for the bytes vxtun puts on the wire (RFC 7348 section 5).

Oracles: scapy's VXLAN layer (always built with ``flags=0x08``: scapy's default VXLAN()/Ether()
sets GPE bits the kernel drops), and the VXLAN headers Open vSwitch's own test suite expects
(``tests/tunnel-push-pop.at``, the ``t2`` port with ``options:key=123``).
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN

from ovs_vectors import (
    OVS_GENEVE_FRAME,
    OVS_GPE_PUSH,
    OVS_INNER_ECHO_REPLY,
    OVS_VXLAN_PUSH,
)
from vxtun.io.underlay import udp_header
from vxtun.wire.vxlan import (
    DEFAULT_SRCPORT,
    LOCAL_PORT_RANGE,
    IANA_PORT,
    LINUX_PORT,
    OVERHEAD_V4,
    OVERHEAD_V6,
    VNI_MAX,
    VXLAN_FLAGS,
    VXLAN_HLEN,
    decode_header,
    encode_header,
    flow_key,
    reserved_bits_set,
    source_port,
)


def scapy_vxlan(vni: int) -> bytes:
    return bytes(VXLAN(flags=0x08, vni=vni))


# --- the header ----------------------------------------------------------------------------


def test_header_vni42_equals_scapy():
    assert encode_header(42) == scapy_vxlan(42) == bytes.fromhex("0800000000002a00")


def test_udp_datagram_vni42_equals_scapy():
    # scapy leaves the UDP checksum 0 when there is no IP layer under it; vxtun's IPv4 sends
    # also carry 0 (the kernel's default without udpcsum, RFC 7348 section 5).
    ours = udp_header(1024, 4789, VXLAN_HLEN) + encode_header(42)
    theirs = bytes(UDP(sport=1024, dport=4789) / VXLAN(flags=0x08, vni=42))
    assert ours == theirs
    assert len(ours) == 16


@pytest.mark.parametrize("vni", [0, 1, 42, 123, 0x7FFFFF, 0x800000, VNI_MAX])
def test_header_equals_scapy_across_the_vni_range(vni):
    hdr = encode_header(vni)
    assert hdr == scapy_vxlan(vni)
    assert decode_header(hdr) == (vni, None)
    assert not reserved_bits_set(hdr)


@given(st.integers(0, VNI_MAX), st.binary(max_size=64))
def test_header_round_trips_through_scapy(vni, inner):
    data = encode_header(vni) + inner
    parsed = VXLAN(data)
    assert parsed.flags == VXLAN_FLAGS
    assert parsed.vni == vni
    assert parsed.reserved1 == 0 and parsed.reserved2 == 0
    assert decode_header(data) == (vni, None)


def test_udp_header_length_and_zero_checksum():
    hdr = udp_header(40000, 4789, 1000)
    sport, dport, length, csum = struct.unpack("!HHHH", hdr)
    assert (sport, dport, length, csum) == (40000, 4789, 1008, 0)


def test_constants_match_the_kernel_and_iana():
    assert IANA_PORT == 4789 and LINUX_PORT == 8472
    assert VNI_MAX == 16777215
    # ip link add type vxlan sets MTU = lower MTU - 50 (IPv4) or - 70 (IPv6): VXLAN_HEADROOM
    # and VXLAN6_HEADROOM in include/net/vxlan.h.
    assert OVERHEAD_V4 == 50 and OVERHEAD_V6 == 70
    # iproute2 shows a VTEP without srcport as "srcport 0 0": the namespace's
    # ip_local_port_range, whose stock value is 32768 60999, taken as [min, max).
    assert DEFAULT_SRCPORT == (0, 0) and LOCAL_PORT_RANGE == (32768, 60999)


# --- Open vSwitch's tunnel-push-pop.at (vectors in ovs_vectors.py) -------------------------

def test_ovs_vxlan_push_header_for_key_123():
    assert encode_header(123) == OVS_VXLAN_PUSH
    assert decode_header(OVS_VXLAN_PUSH) == (123, None)
    assert not reserved_bits_set(OVS_VXLAN_PUSH)


def test_ovs_gpe_header_is_refused_by_a_plain_vtep():
    # The I flag is set, so the VNI (345) is read; but the P bit (0x04) and the next-protocol
    # byte are reserved bits for plain VXLAN: vxlan_rcv() drops it without the gpe extension.
    vni, reason = decode_header(OVS_GPE_PUSH)
    assert (vni, reason) == (0x159, None)
    assert reserved_bits_set(OVS_GPE_PUSH)


def test_ovs_frames_parse_as_ovs_says():
    inner = Ether(OVS_INNER_ECHO_REPLY)
    assert len(OVS_INNER_ECHO_REPLY) == 98
    assert inner[Ether].src == "be:b6:f4:e1:49:4a" and inner[Ether].dst == "fe:71:d8:83:72:4f"
    assert (inner[IP].src, inner[IP].dst) == ("30.0.0.1", "30.0.0.2")
    assert inner[ICMP].type == 0 and inner[ICMP].chksum == 0x4227
    outer = Ether(OVS_GENEVE_FRAME)
    assert (outer[IP].src, outer[IP].dst) == ("1.1.2.92", "1.1.2.88")
    assert outer[UDP].dport == 6081
    geneve = bytes(outer[UDP].payload)
    assert geneve[4:7] == (123).to_bytes(3, "big")
    # The Geneve datagram's inner frame is the same echo reply.
    assert geneve.endswith(OVS_INNER_ECHO_REPLY)


def test_ovs_geneve_datagram_is_not_vxlan():
    """Geneve's first byte (version/option length) has no I flag: a VTEP must not read a VNI."""
    geneve = bytes(Ether(OVS_GENEVE_FRAME)[UDP].payload)
    assert decode_header(geneve) == (-1, "not_vxlan")


# --- decode_header -----------------------------------------------------------------------


@pytest.mark.parametrize("n", range(VXLAN_HLEN))
def test_decode_truncated(n):
    assert decode_header(encode_header(42)[:n]) == (-1, "truncated")


@pytest.mark.parametrize("flags", [0x00, 0x01, 0x02, 0x04, 0x10, 0x80, 0xF7])
def test_decode_without_i_flag_is_not_vxlan(flags):
    data = bytes([flags]) + encode_header(42)[1:]
    assert decode_header(data) == (-1, "not_vxlan")


@pytest.mark.parametrize("byte,bit", [(b, bit) for b in (0, 1, 2, 3, 7) for bit in range(8)
                                      if (b, bit) != (0, 3)])
def test_every_reserved_bit_is_seen(byte, bit):
    data = bytearray(encode_header(42))
    data[byte] |= 1 << bit
    assert reserved_bits_set(bytes(data))


def test_vni_bytes_are_not_reserved():
    for vni in (1, 0x100, 0x10000, VNI_MAX):
        assert not reserved_bits_set(encode_header(vni))


# --- UDP source port (RFC 7348 section 5: a hash of the inner headers) ----------------------

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def tcp_frame(sport: int, dport: int, payload: bytes = b"", src="10.20.1.2",
              dst="10.20.1.3") -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=src, dst=dst) /
                 TCP(sport=sport, dport=dport, flags="A") / payload)


def test_one_flow_keeps_one_port():
    ports = {source_port(tcp_frame(40000, 5201, bytes([i]) * i), *LOCAL_PORT_RANGE)
             for i in range(50)}
    assert len(ports) == 1


def test_reply_direction_and_other_flows_differ():
    fwd = source_port(tcp_frame(40000, 5201), *LOCAL_PORT_RANGE)
    flows = {source_port(tcp_frame(40000 + i, 5201), *LOCAL_PORT_RANGE) for i in range(200)}
    # 200 flows hashed into 28232 ports: a sound hash spreads them (collisions are rare).
    assert len(flows) > 190
    assert fwd in flows


def test_fragments_of_one_datagram_share_the_port():
    # Only the first fragment holds the ports; the kernel's flow dissector then keys on the
    # addresses alone, so every fragment of one datagram takes one path.
    pkt = Ether(src=MAC_A, dst=MAC_B) / IP(src="10.20.1.2", dst="10.20.1.3") / \
        UDP(sport=1000, dport=2000) / (b"x" * 3000)
    frags = fragment(pkt[IP], fragsize=1400)
    assert len(frags) == 3
    ports = {source_port(bytes(Ether(src=MAC_A, dst=MAC_B) / f), *LOCAL_PORT_RANGE)
             for f in frags}
    assert len(ports) == 1


def test_non_ip_frames_hash_on_the_ethernet_header():
    arp = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.20.1.2",
                                                                 pdst="10.20.1.3"))
    assert flow_key(arp) == arp[:14]
    ipv6 = bytes(Ether(src=MAC_A, dst=MAC_B) / IPv6(src="2001:db8::1", dst="2001:db8::2") /
                 TCP(sport=1, dport=2))
    assert flow_key(ipv6)[-5:] == bytes([6]) + struct.pack("!HH", 1, 2)


@given(st.binary(max_size=200), st.integers(1, 65535), st.integers(1, 65535))
def test_source_port_always_in_range(frame, a, b):
    lo, hi = min(a, b), max(a, b) + 1
    p = source_port(frame, lo, hi)
    assert lo <= p < hi


def test_source_port_formula_matches_udp_flow_src_port():
    # udp_flow_src_port(): hash ^= hash << 16; port = ((u64)hash * (max - min)) >> 32 + min.
    from vxtun.wire.vxlan import fnv1a32
    frame = tcp_frame(12345, 80)
    h = fnv1a32(flow_key(frame))
    h ^= (h << 16) & 0xFFFFFFFF
    assert source_port(frame, 32768, 61000) == ((h * (61000 - 32768)) >> 32) + 32768
    assert source_port(frame, 5000, 5001) == 5000
