"""The Cython fast path against the pure-Python reference, on arbitrary input (hypothesis).

The pure modules state the rules (vxtun/wire, vxtun/fdb, vxtun/core); vxtun._fastpath repeats
them in C for the threads that run without the GIL.  These properties hold the two equal: same
result on every input, and neither ever raises on network input.  Here: the wire rules and the
FDB stores; the per-packet decisions are in tests/unit/test_fastpath_decide.py.
"""
from __future__ import annotations

import struct

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vxtun import _fastpath as fp
from vxtun.errors import FdbError
from vxtun.fdb import DictStore, Fdb, FdbEntry, Remote
from vxtun.wire import ecn, offload, vxlan

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- frames that reach the deep branches, not only random bytes ---------------------------

def _ip4(proto: int, payload: bytes, frag: int, ihl_words: int, src: bytes, dst: bytes,
         tot_delta: int) -> bytes:
    opts = bytes(4 * (ihl_words - 5))
    tot = 4 * ihl_words + len(payload) + tot_delta
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl_words, 0, tot & 0xFFFF, 7, frag, 64, proto, 0,
                      src, dst) + opts
    return hdr + payload


@st.composite
def l4_frames(draw) -> bytes:
    """Ethernet + IPv4/IPv6 + TCP/UDP/other, with the checksum field random, partial or 0."""
    v6 = draw(st.booleans())
    proto = draw(st.sampled_from([6, 17, 1, 58]))
    l4len = draw(st.integers(0, 120))
    l4 = bytearray(draw(st.binary(min_size=l4len, max_size=l4len)))
    if proto == 6 and l4len >= 20:
        l4[12] = draw(st.sampled_from([0x50, 0x80, 0x40, 0xF0]))
    src = draw(st.binary(min_size=16, max_size=16))
    dst = draw(st.binary(min_size=16, max_size=16))
    eth = draw(st.binary(min_size=12, max_size=12))
    if v6:
        plen = l4len + draw(st.sampled_from([0, 0, 1, -1, 40]))
        ip = struct.pack("!IHBB16s16s", 0x60000000, plen & 0xFFFF, proto, 64, src, dst)
        pseudo = offload.csum_add(src + dst, proto + l4len)
        frame = eth + b"\x86\xdd" + ip
    else:
        ihl = draw(st.sampled_from([5, 5, 6, 4]))
        frag = draw(st.sampled_from([0, 0, 0x4000, 0x2000, 1]))
        delta = draw(st.sampled_from([0, 0, 0, 3, -2]))
        pseudo = offload.csum_add(src[:4] + dst[:4], proto + (l4len + delta if ihl >= 5 else 0))
        frame = eth + b"\x08\x00" + _ip4(proto, b"", frag, max(ihl, 5), src[:4], dst[:4],
                                         l4len + delta)
        if ihl == 4:
            frame = frame[:14] + bytes([0x44]) + frame[15:]
    coff = {6: 16, 17: 6}.get(proto)
    how = draw(st.sampled_from(["random", "partial", "zero"]))
    if coff is not None and coff + 2 <= l4len and how != "random":
        v = pseudo if how == "partial" else 0
        l4[coff:coff + 2] = v.to_bytes(2, "big")
    pad = draw(st.binary(max_size=8))
    return frame + bytes(l4) + pad


@st.composite
def ds_frames(draw) -> bytes:
    """l4_frames with an arbitrary DS field (so every ECN codepoint), behind 0 to 4 VLAN tags
    (802.1Q or 802.1ad) and cut anywhere: the ECN rules' branches."""
    f = bytearray(draw(l4_frames()))
    ds = draw(st.integers(0, 255))
    if f[12:14] == b"\x08\x00":
        f[15] = ds
    else:
        f[14] = (f[14] & 0xF0) | (ds >> 4)
        f[15] = ((ds & 0x0F) << 4) | (f[15] & 0x0F)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3, 4]))):
        tpid = draw(st.sampled_from([b"\x81\x00", b"\x88\xa8"]))
        f[12:12] = tpid + draw(st.binary(min_size=2, max_size=2))
    if draw(st.integers(0, 4)) == 0:
        f = f[:draw(st.integers(0, len(f)))]
    return bytes(f)


any_frame = st.one_of(st.binary(max_size=200), l4_frames())
mtus = st.sampled_from([68, 100, 576, 1450, 1500, 9000, 65000])


# --- wire rules ---------------------------------------------------------------------------

@SETTINGS
@given(st.binary(max_size=40))
def test_decode_header_agrees(data):
    assert fp.decode_header(data) == vxlan.decode_header(data)
    if len(data) >= 8:
        assert fp.reserved_bits_set(data) == bool(vxlan.reserved_bits_set(data))


@SETTINGS
@given(any_frame, st.integers(1, 65535), st.integers(1, 65535))
def test_source_port_agrees(frame, a, b):
    lo, hi = min(a, b), max(a, b) + 1
    assert fp.source_port(frame, lo, hi) == vxlan.source_port(frame, lo, hi)
    assert lo <= fp.source_port(frame, lo, hi) < hi


@SETTINGS
@given(any_frame, mtus)
def test_rx_vnet_header_agrees(frame, mtu):
    assert fp.rx_vnet_header(frame, mtu) == offload.rx_vnet_header(frame, mtu)


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 0x1FFFF))
def test_csum_add_agrees(data, initial):
    assert fp.csum_add(data, initial) == offload.csum_add(data, initial)


@SETTINGS
@given(l4_frames())
def test_complete_checksum_agrees(frame):
    if len(frame) < 40:
        return
    for start, off in ((34, 16), (34, 6), (54, 6), (20, 2)):
        if start + off + 2 > len(frame):
            continue
        a, b = bytearray(frame), bytearray(frame)
        fp.complete_checksum(a, start, off)
        offload.complete_checksum(b, start, off)
        assert a == b


@SETTINGS
@given(st.one_of(ds_frames(), st.binary(max_size=80)), st.integers(0, 255))
def test_ecn_agrees(frame, outer_tos):
    assert fp.encap_tos(frame) == ecn.encap_tos(frame)
    if len(frame) >= 14:
        assert fp.ecn_decapsulate(frame, outer_tos) == ecn.decapsulate(frame, outer_tos)


# The receive and transmit decisions (vxlan_rcv(), vxlan_xmit()) are compared with Demux + Vtep
# on whole sequences in tests/unit/test_fastpath_decide.py.


# --- the FDB: random operation sequences on Fdb over DictStore and over CFdb ---------------

MACS = [bytes(6), bytes.fromhex("ffffffffffff"), bytes.fromhex("01005e000001"),
        bytes.fromhex("020000000001"), bytes.fromhex("020000000002"),
        bytes.fromhex("0a0000000003"), bytes.fromhex("3333ff000001")]
IPS = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "2001:db8::1", "2001:db8::2"]
remotes = st.builds(Remote, st.sampled_from(IPS), st.sampled_from([0, 0, 4789, 8472]),
                    st.sampled_from([None, None, 42, 7]), st.sampled_from([None, None, "eth0"]))
macs = st.sampled_from(MACS)

ops = st.one_of(
    st.tuples(st.just("add"), macs, remotes, st.sampled_from(["permanent", "static", "dynamic",
                                                              "bogus"]),
              st.sampled_from(["add", "append", "replace", "append", "nope"])),
    st.tuples(st.just("del"), macs, st.sampled_from([None] + IPS), st.sampled_from([0, 4789]),
              st.sampled_from([None, 42])),
    st.tuples(st.just("learn"), macs, st.sampled_from(IPS)),
    st.tuples(st.just("learn"), macs, st.sampled_from(IPS)),
    st.tuples(st.just("lookup"), macs),
    st.tuples(st.just("expire")),
    st.tuples(st.just("get"), macs),
    st.tuples(st.just("flush"), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0])),
    st.tuples(st.just("put"), macs, st.lists(remotes, max_size=3),
              st.sampled_from(["permanent", "static", "dynamic"])),
    st.tuples(st.just("remove"), macs),
)


def _entry(e):
    if e is None:
        return None
    return (e.mac, list(e.remotes), e.state, e.updated, e.used)


def _apply(t, op, now):
    kind = op[0]
    try:
        if kind == "add":
            return _entry(t.add(op[1], op[2], op[3], now, op[4]))
        if kind == "del":
            return _entry(t.delete(op[1], op[2], op[3], op[4]))
        if kind == "learn":
            return t.learn(op[1], op[2], now)
        if kind == "lookup":
            r = t.lookup(op[1], now)
            return None if r is None else list(r)
        if kind == "expire":
            # by repr: a MAC that expired twice (reaped, learned again, expired again) has
            # two entries, and Remotes do not order
            return sorted((_entry(e) for e in t.expire(now)), key=repr)
        if kind == "get":
            return _entry(t.get(op[1]))
        if kind == "flush":
            return t.flush(op[1])
        if kind == "put":           # the raw store, under the rules
            t.store.put(FdbEntry(op[1], op[2], op[3], now, now))
            return _entry(t.store.get(op[1]))
        if kind == "remove":
            return _entry(t.store.remove(op[1]))
    except FdbError as e:
        return ("FdbError", str(e))
    raise AssertionError(kind)


@SETTINGS
@given(st.lists(ops, max_size=60), st.sampled_from([0.0, 1.0, 2.5, 300.0]),
       st.sampled_from([0, 0, 2, 4]), st.booleans())
def test_fdb_agrees(seq, ageing, maxaddress, learning):
    py = Fdb(store=DictStore(ageing, maxaddress, learning))
    c = Fdb(store=fp.CFdb(ageing, maxaddress, learning))
    assert (c.ageing, c.maxaddress, c.learning) == (py.ageing, py.maxaddress, py.learning)
    now = 100.0
    for op in seq:
        if op[0] == "tick":
            now += op[1]
            continue
        assert _apply(c, op, now) == _apply(py, op, now), op
        assert len(c) == len(py)
        assert [_entry(e) for e in c.entries()] == [_entry(e) for e in py.entries()]


def test_fdb_many_entries_lookup_and_delete():
    """Growth and backward-shift deletion keep every entry reachable (a dense random workload)."""
    import random
    rnd = random.Random(5)
    c, py = Fdb(store=fp.CFdb(ageing=1e9)), Fdb(ageing=1e9)
    keys = [rnd.getrandbits(48).to_bytes(6, "big") for _ in range(5000)]
    for i, k in enumerate(keys):
        r = Remote(f"192.0.2.{i % 250 + 1}")
        if (k[0] & 1) or k == bytes(6):
            continue
        assert _entry(c.add(k, r, "static", 1.0)) == _entry(py.add(k, r, "static", 1.0))
    for k in keys[::3]:
        if (k[0] & 1) or k == bytes(6):
            continue
        assert _entry(c.delete(k)) == _entry(py.delete(k))
    assert len(c) == len(py)
    for k in keys:
        assert c.lookup(k, 2.0) == py.lookup(k, 2.0)
    assert c.store.memory_bytes() > 0


def test_cfdb_put_refuses_what_the_c_table_cannot_hold():
    """ValueError, and nothing changed, for a remote that is not an IP address or whose port
    or VNI is out of range (the C table keeps addresses in binary, ports in 16 bits)."""
    c = fp.CFdb()
    m = bytes.fromhex("020000000001")
    c.put(FdbEntry(m, [Remote("192.0.2.1")], "static", 1.0, 1.0))
    for bad in (Remote("not-an-ip"), Remote("192.0.2.2", port=70000),
                Remote("192.0.2.2", vni=1 << 24)):
        with pytest.raises(ValueError):
            c.put(FdbEntry(m, [Remote("192.0.2.3"), bad], "permanent", 2.0, 2.0))
        assert _entry(c.get(m)) == (m, [Remote("192.0.2.1")], "static", 1.0, 1.0)
    assert _entry(c.remove(m)) == (m, [Remote("192.0.2.1")], "static", 1.0, 1.0)
    assert c.remove(m) is None and c.get(m) is None and len(c) == 0
