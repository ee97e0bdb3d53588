"""The fast path's offload work, against what a real receiver accepts (scapy as the oracle).

* TX: a TSO super-frame from the TAP is cut into segments that are each a valid TCP/IP packet
  (header and TCP checksums complete, lengths, sequence numbers, IDs and flags as the kernel's
  tcp_gso_segment sets them), whose payloads put back together are the super-frame's.
* RX: coalescing segments into one GSO write to the TAP is lossless: cutting the written
  super-frames again gives back exactly the segments that arrived, in order; a segment with a
  bad checksum is never folded into another.
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from vxtun import _fastpath as fp
from vxtun.wire.offload import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    complete_checksum,
    rx_vnet_header,
    unpack_vnet,
)

SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
MAC1, MAC2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
TS = [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]


def tcp_frame(v6: bool, seq: int, payload: bytes, flags: str = "A", ip_id: int = 1,
              options=TS, sport: int = 40000) -> bytes:
    l3 = (IPv6(src="2001:db8::a", dst="2001:db8::b") if v6
          else IP(src="10.20.1.2", dst="10.20.1.3", id=ip_id, flags="DF"))
    return bytes(Ether(src=MAC1, dst=MAC2) / l3 /
                 TCP(sport=sport, dport=5201, seq=seq, ack=77, flags=flags, window=500,
                     options=options) / Raw(payload))


def valid(frame: bytes) -> bool:
    """scapy recomputes both checksums; a valid packet keeps its own."""
    p = Ether(frame)
    l3 = p[IPv6] if IPv6 in p else p[IP]
    want = p.copy()
    del want[TCP].chksum
    if IP in want:
        del want[IP].chksum
    want = Ether(bytes(want))
    return want[TCP].chksum == p[TCP].chksum and (IPv6 in p or want[IP].chksum == l3.chksum)


def superframe(v6: bool, seq: int, payload: bytes, flags: str) -> bytes:
    """What the TAP hands over with TSO: one TCP frame longer than the MTU."""
    return tcp_frame(v6, seq, payload, flags)


@SETTINGS
@given(st.booleans(), st.integers(0, 2**32 - 1), st.binary(min_size=1, max_size=9000),
       st.sampled_from(["A", "PA", "FA", "FPA", "CA", "EA"]), st.integers(64, 1460))
def test_tso_segments_are_valid_packets(v6, seq, payload, flags, mss):
    big = superframe(v6, seq, payload, flags)
    segs = fp.tso_segment(big, mss)
    assert len(segs) == -(-len(payload) // mss)
    got = b""
    for i, s in enumerate(segs):
        assert valid(s), i
        p = Ether(s)
        t = p[TCP]
        assert t.seq == (seq + i * mss) % 2**32
        last, first = i == len(segs) - 1, i == 0
        want = set(flags)
        if not last:
            want -= {"F", "P"}
        if not first:
            want -= {"C"}
        assert set(str(t.flags)) == want
        if not v6:
            assert p[IP].id == 1 + i and p[IP].len == len(s) - 14
        else:
            assert p[IPv6].plen == len(s) - 54
        got += bytes(t.payload)
    assert got == payload


def test_tso_segments_a_vlan_tagged_superframe():
    """A VLAN device on the TAP inherits its TSO: one 802.1Q tag is cut around, not refused."""
    from scapy.layers.l2 import Dot1Q
    big = bytes(Ether(src=MAC1, dst=MAC2) / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2")
                / TCP(seq=9, flags="PA") / Raw(b"q" * 3000))
    segs = fp.tso_segment(big, 1400)
    assert [len(s) for s in segs] == [18 + 40 + 1400] * 2 + [18 + 40 + 200]
    assert all(valid(s) for s in segs)
    assert b"".join(bytes(Ether(s)[TCP].payload) for s in segs) == b"q" * 3000


def test_tso_refuses_what_it_cannot_cut():
    import pytest
    udp = bytes(Ether() / IP() / Raw(b"x" * 3000))
    with pytest.raises(ValueError):
        fp.tso_segment(udp, 1400)
    with pytest.raises(ValueError):
        fp.tso_segment(tcp_frame(False, 1, b"x" * 3000), 0)


def resegment(written: list[bytes]) -> list[bytes]:
    """Cut every GSO write back into segments (what the kernel does when it forwards)."""
    out = []
    for w in written:
        flags, gso, hdr_len, gso_size, start, off = unpack_vnet(w)
        frame = w[10:]
        if gso in (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6):
            assert flags == VIRTIO_NET_HDR_F_NEEDS_CSUM and start + off < len(frame)
            assert hdr_len == start + (frame[start + 12] >> 4) * 4
            out += fp.tso_segment(frame, gso_size)
        else:
            assert w[:10] == rx_vnet_header(frame, 1450)
            out.append(frame)
    return out


@st.composite
def arrivals(draw):
    """Segments of one or two flows, mostly in order, sometimes lost, reordered or corrupt."""
    v6 = draw(st.booleans())
    mss = draw(st.sampled_from([1398, 1378, 500]))
    n = draw(st.integers(1, 60))
    seq = draw(st.integers(0, 2**32 - 1))
    frames, ip_id = [], 1
    for _ in range(n):
        size = mss if draw(st.integers(0, 5)) else draw(st.integers(1, mss))
        flags = draw(st.sampled_from(["A"] * 8 + ["PA", "FA", "SA"]))
        other = draw(st.integers(0, 9)) == 0
        f = tcp_frame(v6, seq, bytes([seq & 0xFF]) * size, flags, ip_id,
                      sport=40001 if other else 40000)
        if draw(st.integers(0, 19)) == 0:       # a corrupted byte in the payload
            f = f[:-1] + bytes([f[-1] ^ 0x5A])
        if draw(st.integers(0, 14)) == 0:       # a lost segment: a gap in the sequence
            seq += size
        seq = (seq + size) % 2**32
        ip_id += 1
        frames.append(f)
    if n > 3 and draw(st.booleans()):
        i = draw(st.integers(0, n - 2))
        frames[i], frames[i + 1] = frames[i + 1], frames[i]
    return frames


@SETTINGS
@given(arrivals())
def test_coalescing_is_lossless(frames):
    written = fp.coalesce(frames, 1450)
    assert len(written) <= len(frames)
    assert resegment(written) == frames


def test_coalescing_merges_a_run_and_keeps_partial_checksums_partial():
    frames = [tcp_frame(False, 1000 + i * 1398, bytes([i]) * 1398, ip_id=5 + i)
              for i in range(40)]
    (w,) = fp.coalesce(frames, 1450)
    flags, gso, hdr_len, gso_size, start, off = unpack_vnet(w)
    assert (flags, gso, gso_size, start, off) == (1, VIRTIO_NET_HDR_GSO_TCPV4, 1398, 34, 16)
    big = bytearray(w[10:])
    assert len(big) == 66 + 40 * 1398
    # the checksum is partial (pseudo header only); finished as a NIC would, it is valid
    complete_checksum(big, start, off)
    p = Ether(bytes(big))
    assert p[IP].len == len(big) - 14 and p[IP].id == 5
    assert valid(bytes(big))


def test_bad_checksum_segment_is_written_alone():
    frames = [tcp_frame(True, 10 + i * 1000, b"z" * 1000) for i in range(3)]
    frames[1] = frames[1][:-1] + b"y"
    written = fp.coalesce(frames, 1450)
    assert [w[10:] for w in written] == frames
