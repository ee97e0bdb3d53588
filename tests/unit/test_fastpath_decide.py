"""The fast path's per-packet decisions against the pure core, on generated sequences.

The *fast side* is what FastBackend runs: the C decisions (vxtun/fastpath/decide.pyx, driven
through ``_fastpath.Decisions``) over a CFdb, with what they punt handed to a Python ``Vtep``
over ``Fdb(store=that CFdb)`` by ``vxtun.dataplane.fast.handle_punt``.  The *pure side* is
``Demux`` + ``Vtep`` over the pure Fdb, fed as PureBackend feeds it.  Hypothesis drives both
with the same sequences of datagrams, frames, clock ticks and administrative changes (several
VTEP IPs, MACs that repeat, move and are pinned, a small ``maxaddress``, every ECN codepoint,
ARP/NS with the proxy on, unknown unicast with ``l2miss``, TX with and without a partial
checksum, TSO super-frames), and checks after every step that both took the same actions,
counted the same and emitted the same events, and at the end that their FDBs are equal.
"""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether
from test_fastpath_differential import _entry, ds_frames, l4_frames
from test_proxy import events as _events

from vxtun import _fastpath as fp
from vxtun.core import Demux, Vtep, VtepConfig
from vxtun.core.stats import Stats
from vxtun.dataplane.fast import handle_punt
from vxtun.errors import FdbError
from vxtun.fdb import Fdb, Remote
from vxtun.wire.ether import ZERO_MAC
from vxtun.wire.offload import complete_checksum, csum_add
from vxtun.wire.vxlan import encode_header

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VNIS = [42, 43]
OWN = {42: bytes.fromhex("02aabbccdd2a"), 43: bytes.fromhex("02aabbccdd2b")}
PEER1 = bytes.fromhex("021122334401")
PEER2 = bytes.fromhex("021122334402")
PEER3 = bytes.fromhex("0a1122334403")
PINNED = bytes.fromhex("02ee00000001")
MCAST = bytes.fromhex("01005e000001")
BCAST = b"\xff" * 6
HOST = bytes.fromhex("02aaaaaaaa01")          # behind our TAP
VTEP_IPS = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::1"]
NEIGH_IP, NEIGH_MAC = "10.20.1.3", PEER1
NEIGH_IP6 = "2001:db8:1020::3"


# --- frames -----------------------------------------------------------------------------------

def _ip4_tcp(src: bytes, dst: bytes, tos: int, payload: bytes, partial: bool,
             seq: int = 1000) -> bytes:
    saddr, daddr = bytes([10, 20, 1, 2]), bytes([10, 20, 1, 3])
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, 5 << 4, 0x18, 512, 0, 0))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + len(tcp) + len(payload), 7,
                               0x4000, 64, 6, 0, saddr, daddr))
    ip[10:12] = struct.pack("!H", (~csum_add(bytes(ip))) & 0xFFFF)
    pseudo = csum_add(saddr + daddr, 6 + len(tcp) + len(payload))
    tcp[16:18] = struct.pack("!H", pseudo if partial else 0)
    return dst + src + b"\x08\x00" + bytes(ip) + bytes(tcp) + payload


def _ip6_udp(src: bytes, dst: bytes, tclass: int, payload: bytes, partial: bool) -> bytes:
    saddr = bytes.fromhex("20010db8102000000000000000000002")
    daddr = bytes.fromhex("20010db8102000000000000000000003")
    ulen = 8 + len(payload)
    pseudo = csum_add(saddr + daddr, 17 + ulen)
    udp = struct.pack("!HHHH", 5353, 53, ulen, pseudo if partial else 0)
    ip = struct.pack("!IHBB16s16s", 0x60000000 | (tclass << 20), ulen, 17, 64, saddr, daddr)
    return dst + src + b"\x86\xdd" + ip + udp + payload


def _arp(tip: str) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST) /
                 ARP(hwtype=1, op=1, hwsrc=HOST, psrc="10.20.1.2", pdst=tip))


def _ns(target: str) -> bytes:
    return bytes(Ether(dst="33:33:ff:00:00:03", src=HOST)
                 / IPv6(src="2001:db8:1020::2", dst="ff02::1:ff00:3", hlim=255)
                 / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=HOST))


PROXY_FRAMES = [_arp(NEIGH_IP), _arp("10.20.1.99"), _ns(NEIGH_IP6), _ns("2001:db8:1020::99")]


def _vnet(flags: int = 0, gso: int = 0, hdr_len: int = 0, gso_size: int = 0, start: int = 0,
          off: int = 0) -> bytes:
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, start, off)


dst_macs = st.sampled_from([PEER1, PEER2, PEER3, PINNED, MCAST, BCAST, OWN[42]])
src_macs = st.sampled_from([PEER1, PEER1, PEER2, PEER3, PINNED, OWN[42], OWN[43], ZERO_MAC,
                            MCAST])
ecn_ds = st.sampled_from([0, 1, 2, 3, 0xB8, 0xBB, 0x41])


@st.composite
def tx_reads(draw) -> tuple[bytes, bool]:
    """One read from a TAP: (virtio-net header + frame, is it a TSO super-frame)."""
    kind = draw(st.sampled_from(["tcp", "tcp", "udp6", "proxy", "raw", "tso", "badcsum"]))
    dst = draw(dst_macs)
    ds = draw(ecn_ds)
    payload = draw(st.binary(max_size=64))
    if kind == "tcp":
        partial = draw(st.booleans())
        f = _ip4_tcp(HOST, dst, ds, payload, partial)
        return (_vnet(1, 0, 0, 0, 34, 16) if partial else _vnet()) + f, False
    if kind == "udp6":
        partial = draw(st.booleans())
        f = _ip6_udp(HOST, dst, ds, payload, partial)
        return (_vnet(1, 0, 0, 0, 54, 6) if partial else _vnet()) + f, False
    if kind == "proxy":
        return _vnet() + draw(st.sampled_from(PROXY_FRAMES)), False
    if kind == "raw":
        return _vnet() + draw(st.binary(max_size=40)), False
    if kind == "badcsum":
        # a partial checksum the frame cannot hold: what a NIC cannot finish is a bad frame
        f = _ip4_tcp(HOST, dst, ds, payload, True)
        return _vnet(1, 0, 0, 0, len(f) + draw(st.integers(-1, 8)), 16) + f, False
    mss = draw(st.sampled_from([100, 536, 1400]))
    big = _ip4_tcp(HOST, dst, ds, draw(st.binary(min_size=1, max_size=3000)), True)
    return _vnet(1, draw(st.sampled_from([1, 1, 0x81, 3])), 54, mss, 34, 16) + big, True


@st.composite
def datagrams(draw) -> tuple[bytes, str, int]:
    """(VXLAN datagram, outer source IP, outer TOS / traffic class)."""
    vni = draw(st.sampled_from(VNIS + VNIS + VNIS + [99]))
    hdr = encode_header(vni)
    if draw(st.integers(0, 4)) == 0:
        flags = draw(st.sampled_from([0x00, 0x0C, 0x88]))
        res = draw(st.sampled_from([b"\0\0\0", b"\0\1\0"]))
        last = draw(st.sampled_from([0, 1]))
        hdr = bytes([flags]) + res + vni.to_bytes(3, "big") + bytes([last])
    dst, src = draw(st.sampled_from([OWN[vni] if vni in OWN else PEER2, BCAST])), draw(src_macs)
    ds = draw(ecn_ds)
    body = draw(st.sampled_from(["tcp", "tcp", "udp6", "ds", "l4", "raw"]))
    payload = draw(st.binary(max_size=48))
    if body == "tcp":
        inner = _ip4_tcp(src, dst, ds, payload, draw(st.booleans()))
    elif body == "udp6":
        inner = _ip6_udp(src, dst, ds, payload, draw(st.booleans()))
    elif body == "ds":          # every DS value, VLAN tags, inner headers cut short
        inner = dst + src + draw(ds_frames())[12:]
    elif body == "l4":          # checksums random, partial or zero; lengths that lie
        inner = dst + src + draw(l4_frames())[12:]
    else:
        inner = dst + src + payload
    data = hdr + inner
    if draw(st.integers(0, 5)) == 0:
        data = data[:draw(st.integers(0, len(data)))]
    return data, draw(st.sampled_from(VTEP_IPS)), draw(st.sampled_from([0, 1, 2, 3, 0xB8, 0xBB]))


steps = st.one_of(
    st.tuples(st.just("rx"), datagrams()),
    st.tuples(st.just("rx"), datagrams()),
    st.tuples(st.just("tx"), st.sampled_from(VNIS), tx_reads()),
    st.tuples(st.just("tx"), st.sampled_from(VNIS), tx_reads()),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    st.tuples(st.just("expire")),
    st.tuples(st.just("admin"), st.sampled_from(VNIS),
              st.sampled_from([PEER1, PEER2, PINNED, ZERO_MAC]), st.sampled_from(VTEP_IPS[:3]),
              st.sampled_from(["static", "permanent", "dynamic"]),
              st.sampled_from(["add", "replace", "append", "del"])),
)

setups = st.fixed_dictionaries({
    "learning": st.sampled_from([True, True, True, False]),
    "maxaddress": st.sampled_from([0, 0, 2, 3]),
    "ageing": st.sampled_from([2.0, 300.0]),
    "proxy": st.booleans(),
    "l2miss": st.booleans(),
    "l3miss": st.booleans(),
    "remote": st.sampled_from([None, "192.0.2.1"]),
    "flood": st.booleans(),
    "pinned": st.sampled_from(["static", "permanent"]),
    "mtu": st.sampled_from([100, 1450]),
})


# --- the two sides ----------------------------------------------------------------------------

def _config(vni: int, s: dict) -> VtepConfig:
    return VtepConfig(vni=vni, name=f"vx{vni}", mac=OWN[vni], mtu=s["mtu"], remote=s["remote"],
                      learning=s["learning"], maxaddress=s["maxaddress"], ageing=s["ageing"],
                      proxy=s["proxy"], l2miss=s["l2miss"], l3miss=s["l3miss"])


def _prepare(v: Vtep, s: dict) -> None:
    """The same administrative state on both sides (through the same Fdb rules)."""
    v.fdb.add(PINNED, Remote("192.0.2.1"), s["pinned"], 100.0)
    if s["flood"]:
        v.fdb.add(ZERO_MAC, Remote("198.51.100.7"), "permanent", 100.0, "append")
    v.neigh.add(NEIGH_IP, NEIGH_MAC, "permanent", 100.0)
    v.neigh.add(NEIGH_IP6, NEIGH_MAC, "permanent", 100.0)


class PureSide:
    """Demux + Vtep over the pure Fdb, fed as PureBackend feeds them."""

    def __init__(self, s: dict) -> None:
        self.demux = Demux()
        self.vteps = {}
        for vni in VNIS:
            v = Vtep(_config(vni, s))
            _prepare(v, s)
            self.demux.add(v)
            self.vteps[vni] = v

    def rx(self, data: bytes, ip: str, now: float, tos: int) -> list:
        return self.demux.handle_datagram(data, ip, now, tos)

    def tx(self, vni: int, data: bytes, now: float) -> list:
        """What a NIC does for the TAP's offloads (finish the checksum, cut TSO segments),
        then Vtep.handle_frame for each frame."""
        v = self.vteps[vni]
        vnet, frame = data[:10], data[10:]
        gso = vnet[1] & 0x7F
        if gso in (1, 4):
            try:
                frames = fp.tso_segment(frame, vnet[4] | vnet[5] << 8)
            except ValueError:
                v.stats.drop("bad_frame")
                return []
        elif gso:
            v.stats.drop("bad_frame")
            return []
        else:
            frames = [frame]
            if vnet[0] & 1 and len(frame) >= 14:
                f = bytearray(frame)
                try:
                    complete_checksum(f, vnet[6] | vnet[7] << 8, vnet[8] | vnet[9] << 8)
                except IndexError:
                    v.stats.drop("bad_frame")
                    return []
                frames = [bytes(f)]
        out = []
        for f in frames:
            out += v.handle_frame(f, now)
        return out

    def stats(self, vni: int) -> dict:
        return self.vteps[vni].stats.to_json()

    def demux_stats(self) -> dict:
        return self.demux.stats.to_json()


class FastSide:
    """The C decisions over CFdb; their punts to a Vtep over Fdb(store=that CFdb)."""

    def __init__(self, s: dict) -> None:
        self.dec = fp.Decisions()
        self.vteps = {}
        self.vids = {}
        self.by_vid = {}
        for vni in VNIS:
            cfg = _config(vni, s)
            store = fp.CFdb(cfg.ageing, cfg.maxaddress, cfg.learning)
            v = Vtep(cfg, fdb=Fdb(store=store))
            _prepare(v, s)
            vid = self.dec.add_vtep(vni, cfg.mac, v.mtu, store, *v.sport_range,
                                    cfg.dstport, cfg.proxy)
            self.vteps[vni] = v
            self.vids[vni] = vid
            self.by_vid[vid] = v

    def _punted(self, actions: list, punts: list, now: float) -> list:
        for kind, vid, data in punts:
            actions = actions + handle_punt(self.by_vid[vid], kind, data, now)
        return actions

    def rx(self, data: bytes, ip: str, now: float, tos: int) -> list:
        actions, punts = self.dec.rx(data, ip, now, tos)
        return self._punted(actions, punts, now)

    def tx(self, vni: int, data: bytes, now: float) -> list:
        actions, punts = self.dec.tx(self.vids[vni], data, now)
        return self._punted(actions, punts, now)

    def stats(self, vni: int) -> dict:
        return Stats.merge(self.dec.stats(self.vids[vni]), self.vteps[vni].stats.to_json())

    def demux_stats(self) -> dict:
        return self.dec.demux_stats()


def _admin(side, op, now: float):
    _, vni, mac, ip, state, verb = op
    fdb = side.vteps[vni].fdb
    try:
        if verb == "del":
            e = fdb.delete(mac)
        else:
            e = fdb.add(mac, Remote(ip), state, now, verb)
    except FdbError as err:
        return ("FdbError", str(err))
    return _entry(e)


def _step(side, op, now: float):
    if op[0] == "rx":
        data, ip, tos = op[1]
        return side.rx(data, ip, now, tos)
    if op[0] == "tx":
        data, tso = op[2]
        out = side.tx(op[1], data, now)
        # the TX thread sends a super-frame's segments remote by remote, the core frame by
        # frame: the same datagrams, in another order
        return sorted(out, key=repr) if tso else out
    if op[0] == "expire":
        for v in side.vteps.values():
            v.expire(now)
        return None
    return _admin(side, op, now)


def _compare(pure: PureSide, fast: FastSide, op, now: float) -> None:
    """One step on both sides: the same actions, events and counters."""
    assert _step(fast, op, now) == _step(pure, op, now), op
    for vni in VNIS:
        assert _events(fast.vteps[vni]) == _events(pure.vteps[vni]), op
        assert fast.stats(vni) == pure.stats(vni), op
    assert fast.demux_stats() == pure.demux_stats(), op


def _run(setup: dict, seq: list) -> None:
    pure, fast = PureSide(setup), FastSide(setup)
    now = 100.0
    for op in seq:
        if op[0] == "tick":
            now += op[1]
        else:
            _compare(pure, fast, op, now)
    for vni in VNIS:
        assert ([_entry(e) for e in fast.vteps[vni].fdb.entries()]
                == [_entry(e) for e in pure.vteps[vni].fdb.entries()])


# --- the properties -----------------------------------------------------------------------------

@SETTINGS
@given(setups, st.lists(steps, min_size=1, max_size=30))
def test_sequences_agree(setup, seq):
    _run(setup, seq)


@SETTINGS
@given(setups, st.lists(st.tuples(st.just("rx"), datagrams()), min_size=1, max_size=30))
def test_receive_sequences_agree(setup, seq):
    """Receive only: learning, moves, pinned MACs and maxaddress get the whole sequence."""
    _run(setup, seq)


@SETTINGS
@given(setups, st.lists(st.tuples(st.just("tx"), st.sampled_from(VNIS), tx_reads()),
                        min_size=1, max_size=20))
def test_transmit_sequences_agree(setup, seq):
    _run(setup, seq)


# --- examples that must be in every run ----------------------------------------------------------

BASE = {"learning": True, "maxaddress": 0, "ageing": 300.0, "proxy": True, "l2miss": True,
        "l3miss": True, "remote": None, "flood": False, "pinned": "static", "mtu": 1450}


def _rx_op(src: bytes, ip: str, tos: int = 0, inner_ds: int = 0, vni: int = 42) -> tuple:
    inner = _ip4_tcp(src, OWN[vni], inner_ds, b"data", False)
    return ("rx", (encode_header(vni) + inner, ip, tos))


def test_learn_move_pin_and_maxaddress():
    seq = [_rx_op(PEER1, "192.0.2.1"), _rx_op(PEER1, "192.0.2.1"), ("tick", 1.0),
           _rx_op(PEER1, "192.0.2.2"), _rx_op(PINNED, "192.0.2.2"),
           _rx_op(PEER2, "198.51.100.7"), _rx_op(PEER3, "2001:db8::1")]
    _run(BASE, seq)
    _run(dict(BASE, maxaddress=2), seq)
    _run(dict(BASE, learning=False), seq)


def test_ecn_decap_and_encap():
    seq = [_rx_op(PEER1, "192.0.2.1", tos, ds) for tos in (0, 1, 2, 3) for ds in (0, 1, 2, 3)]
    seq += [("tx", 42, (_vnet() + _ip4_tcp(HOST, PEER1, ds, b"x", False), False))
            for ds in (0, 1, 2, 3, 0xB8)]
    _run(BASE, seq)


def test_proxy_and_miss_punts():
    seq = [("tx", 42, (_vnet() + f, False)) for f in PROXY_FRAMES]
    seq += [("tx", 42, (_vnet() + _ip4_tcp(HOST, PEER2, 0, b"x", False), False)),
            ("tx", 42, (_vnet() + _ip4_tcp(HOST, MCAST, 0, b"x", False), False))]
    _run(BASE, seq)
    _run(dict(BASE, proxy=False, remote="192.0.2.1", flood=True), seq)


def test_partial_checksum_and_tso():
    f = _ip4_tcp(HOST, PINNED, 2, bytes(range(256)) * 10, True)
    seq = [("tx", 42, (_vnet(1, 0, 0, 0, 34, 16) + f, False)),
           ("tx", 42, (_vnet(1, 1, 54, 536, 34, 16) + f, True)),
           ("tx", 42, (_vnet(1, 1, 54, 536, 34, 16) + f, True))]
    _run(dict(BASE, flood=True), seq)
    fast = FastSide(BASE)
    actions, punts = fast.dec.tx(fast.vids[42], _vnet(1, 1, 54, 536, 34, 16) + f, 100.0)
    assert len(actions) == 5 and not punts          # 2560 bytes in 536-byte segments


def test_decisions_refuse_what_they_cannot_do():
    fast = FastSide(BASE)
    store = fp.CFdb()
    try:
        fast.dec.add_vtep(42, OWN[42], 1450, store)
    except ValueError as e:
        assert "twice" in str(e)
    else:
        raise AssertionError("a VNI served twice")
    try:
        fast.dec.rx(b"", "not an ip", 0.0)
    except ValueError:
        pass
    else:
        raise AssertionError("a source that is not an IP address")
