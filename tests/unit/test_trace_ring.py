"""The fast path's trace ring against the pure core's tracer.

The *fast side* records as the threads do: ``_fastpath.TraceRing`` runs the C decisions (over
``_fastpath.Decisions`` and a CFdb) and copies each decision into the ring; a punted frame is
traced by the Python core over that same CFdb (as vxtun/dataplane/fast.py does); the ring's
entries become records through vxtun/trace/records.py ``from_ring``.  The *pure side* is
vxtun/trace/reference.py over Demux + Vtep.  Hypothesis drives both with the same sequences,
and every record must be equal, key for key.  Then: one record for a TSO super-frame with its
segment count, and a ring nobody drains loses records, counted, without blocking.
"""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.inet6 import ICMPv6ND_NS, IPv6
from scapy.layers.l2 import ARP, Ether
from test_fastpath_decide import BCAST, HOST, PEER1, PEER2, PINNED
from test_fastpath_decide import OWN as OWN_BY_VNI

from vxtun import _fastpath as fp
from vxtun.core import Demux, Vtep, VtepConfig
from vxtun.fdb import Fdb, Remote
from vxtun.trace.records import from_ring
from vxtun.trace.reference import trace_datagram, trace_frame
from vxtun.wire.ether import ZERO_MAC, mac_to_str
from vxtun.wire.vxlan import encode_header

SETTINGS = settings(max_examples=80, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OWN = OWN_BY_VNI[42]
VTEP_IPS = ["192.0.2.1", "192.0.2.2", "198.51.100.7"]


def _vnet(gso: int = 0, hdr_len: int = 0, gso_size: int = 0) -> bytes:
    return struct.pack("<BBHHHH", 0, gso, hdr_len, gso_size, 0, 0)


def _ping(src: bytes, dst: bytes, seq: int = 1) -> bytes:
    return bytes(Ether(src=mac_to_str(src), dst=mac_to_str(dst)) /
                 IP(src="10.20.1.2", dst="10.20.1.3") / ICMP(id=7, seq=seq) / (b"x" * 20))


def _arp(src: bytes) -> bytes:
    return bytes(Ether(src=mac_to_str(src), dst="ff:ff:ff:ff:ff:ff") /
                 ARP(op=1, hwsrc=mac_to_str(src), psrc="10.20.1.2", pdst="10.20.1.3"))


def _ns() -> bytes:
    return bytes(Ether(src=mac_to_str(HOST), dst="33:33:ff:00:00:03") /
                 IPv6(src="2001:db8:1020::2", dst="ff02::1:ff00:3") /
                 ICMPv6ND_NS(tgt="2001:db8:1020::3"))


def _config(proxy: bool, group: bool) -> VtepConfig:
    kw = dict(group="239.1.1.1", dev="eth0") if group else {}
    return VtepConfig(vni=42, name="vxtun0", mac=OWN, local="192.0.2.9", proxy=proxy,
                      l2miss=True, l3miss=True, maxaddress=8, **kw)


def _prepare(v: Vtep) -> None:
    v.fdb_update("add", PINNED, Remote("192.0.2.1"), "static", 0.0)
    v.neigh_update("add", "10.20.1.3", PEER1, "reachable", 0.0)


class Sides:
    def __init__(self, proxy: bool, group: bool) -> None:
        cfg = _config(proxy, group)
        self.cfg = cfg
        self.pure = Vtep(cfg)
        self.demux = Demux()
        self.demux.add(self.pure)
        cfdb = fp.CFdb(cfg.ageing, cfg.maxaddress, cfg.learning)
        self.fast = Vtep(cfg, fdb=Fdb(store=cfdb))
        self.dec = fp.Decisions()
        self.vid = self.dec.add_vtep(cfg.vni, cfg.mac, 1450, cfdb, *self.pure.sport_range,
                                     cfg.dstport, cfg.proxy)
        self.ring = fp.TraceRing()
        for v in (self.pure, self.fast):
            _prepare(v)

    def _popped(self) -> dict:
        (raw,) = self.ring.pop()
        return from_ring(raw, self.cfg if raw["vid"] else None, raw["now"])

    def rx(self, data: bytes, ip: str, sport: int, now: float, tos: int) -> tuple[dict, dict]:
        pure = trace_datagram(self.demux, data, ip, sport, now, tos, 4, wall=now)[1]
        self.ring.rx(self.dec, data, ip, sport, now, tos)
        return pure, self._popped()

    def tx(self, frame: bytes, now: float) -> tuple[dict, dict]:
        pure = trace_frame(self.pure, frame, now, wall=now)[1]
        if self.ring.tx(self.dec, self.vid, _vnet() + frame, now):
            fast = trace_frame(self.fast, frame, now, wall=now)[1]
            assert not self.ring.pop()
        else:
            fast = self._popped()
        return pure, fast


def _datagram(vni: int, frame: bytes, reserved: bool) -> bytes:
    hdr = bytearray(encode_header(vni))
    if reserved:
        hdr[1] = 1
    return bytes(hdr) + frame


rx_ops = st.tuples(st.just("rx"), st.sampled_from([42, 42, 42, 43]),
                   st.sampled_from([PEER1, PEER2, PINNED, OWN, ZERO_MAC, BCAST]),
                   st.sampled_from(VTEP_IPS), st.integers(1, 65535),
                   st.sampled_from([0, 1, 2, 3]), st.integers(0, 5))
tx_ops = st.tuples(st.just("tx"), st.sampled_from(["ping", "arp", "ns", "short"]),
                   st.sampled_from([PEER1, PEER2, PINNED, BCAST, bytes.fromhex("02999999990a")]))
tick = st.tuples(st.just("tick"), st.floats(0.0, 400.0))
special = st.sampled_from([("rx_raw", b"\x08\0"), ("rx_raw", b"\0" * 16),
                           ("rx_reserved", None)])


@SETTINGS
@given(st.booleans(), st.booleans(), st.lists(st.one_of(rx_ops, tx_ops, tick, special),
                                              max_size=25))
def test_ring_records_equal_the_pure_records(proxy, group, ops):
    s = Sides(proxy, group)
    now = 1.0
    for op in ops:
        if op[0] == "tick":
            now += op[1]
            continue
        now += 0.01
        if op[0] == "rx":
            _, vni, src, ip, sport, tos, seq = op
            frame = _ping(src, HOST, seq) if seq else _arp(src)
            pure, fast = s.rx(_datagram(vni, frame, False), ip, sport, now, tos)
        elif op[0] == "rx_raw":
            pure, fast = s.rx(op[1], "192.0.2.1", 4789, now, 0)
        elif op[0] == "rx_reserved":
            pure, fast = s.rx(_datagram(42, _ping(PEER1, HOST), True), "192.0.2.1", 9, now, 0)
        else:
            _, kind, dst = op
            if kind == "ping":
                frame = _ping(HOST, dst)
            elif kind == "arp":
                frame = _arp(HOST)
            else:
                frame = _ns() if kind == "ns" else b"\x01" * 10
            pure, fast = s.tx(frame, now)
        assert fast == pure


def test_the_kinds_the_ring_records():
    """A fixed walk through what the threads decide themselves, so that each kind is seen."""
    s = Sides(proxy=False, group=True)
    s.pure.fdb_update("append", ZERO_MAC, Remote("192.0.2.3"), "permanent", 0.0)
    s.fast.fdb_update("append", ZERO_MAC, Remote("192.0.2.3"), "permanent", 0.0)
    pure, fast = s.tx(_arp(HOST), 1.0)
    assert fast == pure and fast["action"] == "sent" and fast["remotes"] == ["239.1.1.1",
                                                                             "192.0.2.3"]
    assert fast["lookup"] == "fdb miss, default 00:00:00:00:00:00 with 2 remotes"
    pure, fast = s.rx(_datagram(42, _ping(PEER1, HOST), False), "192.0.2.1", 5000, 1.1, 0)
    assert fast == pure and fast["changes"][0]["change"] == "learned"
    pure, fast = s.tx(_ping(HOST, PEER1), 1.2)
    assert fast == pure and fast["lookup"] == f"fdb {mac_to_str(PEER1)} dst 192.0.2.1"
    pure, fast = s.rx(_datagram(42, _ping(PINNED, HOST), False), "192.0.2.7", 5000, 1.3, 0)
    assert fast == pure and fast["changes"][0]["change"] == "refused"
    pure, fast = s.rx(_datagram(42, _ping(PEER1, HOST), True), "192.0.2.1", 5000, 1.4, 0)
    assert fast == pure and fast["reason"] == "reserved_bits"
    pure, fast = s.rx(_datagram(77, _ping(PEER1, HOST), False), "192.0.2.1", 5000, 1.5, 0)
    assert fast == pure and (fast["dev"], fast["reason"]) == ("", "vni_not_found")


def _super_frame(payload: int, mss: int) -> bytes:
    f = bytes(Ether(src=mac_to_str(HOST), dst=mac_to_str(PEER1)) /
              IP(src="10.20.1.2", dst="10.20.1.3") /
              TCP(sport=41234, dport=5201, flags="PA") / (b"x" * payload))
    return _vnet(gso=1, hdr_len=54, gso_size=mss) + f


def test_tso_super_frame_is_one_record_with_its_segments():
    s = Sides(proxy=False, group=False)
    s.fast.fdb_update("add", PEER1, Remote("192.0.2.1"), "permanent", 0.0)
    assert not s.ring.tx(s.dec, s.vid, _super_frame(14000, 1400), 1.0)
    (raw,) = s.ring.pop()
    r = from_ring(raw, s.cfg, 1.0)
    assert r["segments"] == 10
    assert r["summary"] == "TCP 10.20.1.2:41234 > 10.20.1.3:5201 [P.] len 14000"
    assert r["inner"]["len"] == 14054
    # the first copy sent: one segment of 1400 bytes behind its headers
    assert r["outer"]["len"] == 20 + 8 + 8 + 54 + 1400


def test_gro_train_is_one_record_with_its_segments():
    s = Sides(proxy=False, group=False)
    s.ring.rx(s.dec, _datagram(42, _ping(PEER1, HOST), False), "192.0.2.1", 9, 1.0, 0, 5)
    (raw,) = s.ring.pop()
    assert from_ring(raw, s.cfg, 1.0)["segments"] == 5


def test_a_ring_nobody_drains_counts_what_it_loses():
    s = Sides(proxy=False, group=False)
    s.fast.fdb_update("add", PEER1, Remote("192.0.2.1"), "permanent", 0.0)
    n = fp.TRACE_CAP + 100
    for i in range(n):
        assert not s.ring.tx(s.dec, s.vid, _vnet() + _ping(HOST, PEER1, i), 1.0)
    assert s.ring.lost == 100
    got = s.ring.pop(n)
    assert len(got) == fp.TRACE_CAP
    # the oldest kept, the newest lost: the first record is the first frame
    assert from_ring(got[0], s.cfg, 1.0)["summary"] == "ICMP echo request id 7 seq 0"


def test_a_long_flood_list_keeps_its_count():
    s = Sides(proxy=False, group=False)
    for i in range(10):
        s.fast.fdb_update("append", ZERO_MAC, Remote(f"198.51.100.{i + 1}"), "permanent", 0.0)
    assert not s.ring.tx(s.dec, s.vid, _vnet() + _arp(HOST), 1.0)
    (raw,) = s.ring.pop()
    r = from_ring(raw, s.cfg, 1.0)
    assert r["lookup"] == "fdb miss, default 00:00:00:00:00:00 with 10 remotes"
    assert r["fdb"]["count"] == 10 and len(r["remotes"]) == 8
    assert r["remotes"][0] == "198.51.100.1"
