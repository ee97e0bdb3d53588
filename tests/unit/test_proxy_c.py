"""The ARP/ND proxy in C (vxtun/fastpath/neigh.pyx) against the pure core, on generated tables
and requests.

Two things are held equal, as tests/unit/test_fastpath_differential.py and
test_fastpath_decide.py do for the FDB and the other decisions:

* the *store*: ``NeighTable`` over ``DictNeighStore`` and over the C ``CNeigh`` give the same
  answers, errors, changes and entries for the same ``ip neigh`` operations and ticks;
* the *decision*: a proxied ARP request or NS decided by the C decisions (``Decisions.tx``,
  what the TX thread runs) over a CNeigh, with what they punt handed to the core as FastBackend
  does, gives the same answer byte for byte (virtio-net header included), the same events
  (an entry's ageing reported by the next tick rather than by the lookup that saw it) and the
  same counters as ``Vtep.handle_frame`` over the pure tables; and only an L3 miss to report
  is ever punted.
"""
from __future__ import annotations

import ipaddress
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_proxy import events as _events

from vxtun import _fastpath as fp
from vxtun.core import Vtep, VtepConfig
from vxtun.core.stats import Stats
from vxtun.core.vtep import Deliver
from vxtun.dataplane.fast import PUNT_FRAME, handle_punt
from vxtun.errors import NeighError
from vxtun.fdb import Fdb, Remote
from vxtun.proxy import NeighTable
from vxtun.proxy.neigh import NUD_STATES, DictNeighStore, normalize
from vxtun.wire.offload import csum_add

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

OWN = bytes.fromhex("02aabbccdd2a")
HOST = bytes.fromhex("525e55589aab")
MACS = [bytes.fromhex(h) for h in ("b2eeaa428b0b", "b2eeaa428b0c", "0200000000aa", "02000000bb01")]
LOCAL_MAC = MACS[3]         # behind this host: the FDB sends it to the any address
IP4 = ["10.20.1.1", "10.20.1.2", "10.20.1.3", "10.20.7.200", "0.0.0.0"]
IP6 = ["2001:db8:1020::1", "2001:db8:1020::3", "fe80::1", "::ffff:10.20.1.3", "::"]
ODD4 = ["127.0.0.1", "224.0.0.1", "239.1.2.3", "255.255.255.255"]
ODD6 = ["ff02::1", "ff02::1:ff00:3"]


# --- requests ---------------------------------------------------------------------------------

def _arp(sha: bytes, sip: str, tip: str, hrd: int = 1, pro: int = 0x0800, hln: int = 6,
         pln: int = 4, op: int = 1, tail: bytes = b"") -> bytes:
    eth = b"\xff" * 6 + sha + b"\x08\x06"
    body = struct.pack("!HHBBH", hrd, pro, hln, pln, op) + sha
    body += ipaddress.IPv4Address(sip).packed + b"\0" * 6 + ipaddress.IPv4Address(tip).packed
    return eth + body + tail


def _ns(src_mac: bytes, saddr: str, daddr: str, target: str, tc: int, opts: bytes) -> bytes:
    tgt = ipaddress.IPv6Address(target).packed
    s, d = ipaddress.IPv6Address(saddr).packed, ipaddress.IPv6Address(daddr).packed
    body = bytearray(struct.pack("!BBHI", 135, 0, 0, 0) + tgt + opts)
    c = (~csum_add(bytes(body), csum_add(s + d, len(body) + 58))) & 0xFFFF
    body[2:4] = struct.pack("!H", c)
    ip6 = struct.pack("!IHBB", 0x60000000 | (tc << 20), len(body), 58, 255) + s + d
    return b"\x33\x33\xff\x00\x00\x03" + src_mac + b"\x86\xdd" + ip6 + bytes(body)


def _opt(kind: int, data: bytes, units: int | None = None) -> bytes:
    n = units if units is not None else (len(data) + 2 + 7) // 8
    return bytes((kind, n)) + data.ljust(max(n * 8 - 2, 0), b"\0")


options = st.sampled_from([
    b"",
    _opt(1, HOST),                                  # Source Link-Layer Address
    _opt(1, bytes.fromhex("0a0b0c0d0e0f")),
    _opt(14, b"\1" * 6) + _opt(1, HOST),            # a nonce first (RFC 7527), then the SLLA
    _opt(1, HOST, 0),                               # length 0: no NA at all
    bytes((1, 1, 0xAA, 0xBB)),                      # cut short: the rest of the MAC is 0
    bytes((1,)),                                    # one stray byte
    _opt(2, HOST),                                  # a TLLA: the Ethernet source is used
])


@st.composite
def requests(draw) -> bytes:
    if draw(st.booleans()):
        tip = draw(st.sampled_from(IP4 + ODD4))
        sip = draw(st.sampled_from(["10.20.1.9", "0.0.0.0"]))
        hrd = draw(st.sampled_from([1, 1, 1, 6, 2]))
        op = draw(st.sampled_from([1, 1, 1, 2]))
        pro = draw(st.sampled_from([0x0800, 0x0800, 0x0800, 0x86DD]))
        hln, pln = draw(st.sampled_from([(6, 4)] * 6 + [(8, 4), (6, 16)]))
        tail = draw(st.sampled_from([b"", b"\0" * 18]))
        f = _arp(draw(st.sampled_from([HOST, MACS[1]])), sip, tip, hrd, pro, hln, pln, op, tail)
        return f[:draw(st.sampled_from([len(f)] * 8 + [41, 30]))]
    target = draw(st.sampled_from(IP6 + ODD6))
    saddr = draw(st.sampled_from(["2001:db8:1020::9", "::", "fe80::9"]))
    daddr = draw(st.sampled_from(["ff02::1:ff00:3", "2001:db8:1020::3", "::1"]))
    return _ns(draw(st.sampled_from([HOST, MACS[1]])), saddr, daddr, target,
               draw(st.integers(0, 255)), draw(options))


neigh_rows = st.lists(st.tuples(st.sampled_from(IP4 + IP6), st.sampled_from(MACS),
                                st.sampled_from(NUD_STATES), st.floats(0, 120)), max_size=8)
setups = st.fixed_dictionaries({"l3miss": st.booleans(), "local": st.booleans(),
                                "reachable": st.sampled_from([5.0, 30.0]),
                                "gc": st.sampled_from([1.0, 60.0])})
steps = st.one_of(
    st.tuples(st.just("req"), requests()),
    st.tuples(st.just("tick"), st.sampled_from([0.1, 0.4, 1.0, 7.0, 40.0])),
    st.tuples(st.just("expire")),
    st.tuples(st.just("neigh"), st.sampled_from(IP4 + IP6), st.sampled_from(MACS),
              st.sampled_from(NUD_STATES), st.sampled_from(["add", "replace", "change", "del"])),
)


# --- the two sides ----------------------------------------------------------------------------

def _config(s: dict) -> VtepConfig:
    return VtepConfig(vni=42, name="vx42", mac=OWN, proxy=True, l3miss=s["l3miss"],
                      learning=False, reachable_time=s["reachable"], gc_stale_time=s["gc"])


def _prepare(v: Vtep, s: dict, rows: list) -> None:
    for ip, mac, state, t in rows:
        v.neigh.add(ip, mac, state, 100.0 - t, "replace")
    v.neigh.changes()
    if s["local"]:
        v.fdb.add(LOCAL_MAC, Remote("0.0.0.0"), "permanent", 100.0)


class Pure:
    def __init__(self, s: dict, rows: list) -> None:
        self.vtep = Vtep(_config(s))
        _prepare(self.vtep, s, rows)

    def tx(self, frame: bytes, now: float) -> list:
        return self.vtep.handle_frame(frame, now)

    def stats(self) -> dict:
        return self.vtep.stats.to_json()


class Fast:
    """The C decisions over CFdb + CNeigh, their punts to a Vtep over the same stores."""

    def __init__(self, s: dict, rows: list) -> None:
        cfg = _config(s)
        fdb = fp.CFdb(cfg.ageing, cfg.maxaddress, cfg.learning)
        neigh = NeighTable(cfg.reachable_time, cfg.gc_stale_time, store=fp.CNeigh())
        self.vtep = Vtep(cfg, fdb=Fdb(store=fdb), neigh=neigh)
        _prepare(self.vtep, s, rows)
        self.dec = fp.Decisions()
        self.vid = self.dec.add_vtep(42, OWN, self.vtep.mtu, fdb, proxy=True, neigh=neigh.store,
                                     l3miss=cfg.l3miss)
        self.punted = 0

    def tx(self, frame: bytes, now: float) -> list:
        actions, punts = self.dec.tx(self.vid, bytes(10) + frame, now)
        for kind, _vid, data in punts:
            assert kind == PUNT_FRAME and not actions
            self.punted += 1
            actions = actions + handle_punt(self.vtep, kind, data, now)
        return actions

    def stats(self) -> dict:
        return Stats.merge(self.dec.stats(self.vid), self.vtep.stats.to_json())


def _step(side, op, now: float):
    if op[0] == "req":
        return side.tx(op[1], now)
    if op[0] == "expire":
        side.vtep.expire(now)
        return None
    _, ip, mac, state, verb = op
    try:
        if verb == "del":
            side.vtep.neigh_delete(ip)
        else:
            side.vtep.neigh_update(verb, ip, mac, state, now)
    except NeighError as e:
        return ("NeighError", str(e))
    return None


def _timed(seq: list, now: float):
    """(op, now) for each op of ``seq`` but the ticks, which move ``now`` on."""
    for op in seq:
        if op[0] == "tick":
            now += op[1]
        else:
            yield op, now


def _rows(v: Vtep) -> list:
    return [(e.ip, e.lladdr, e.state, e.updated) for e in v.neigh.entries()]


def _run(setup: dict, rows: list, seq: list) -> Fast:
    pure, fast = Pure(setup, rows), Fast(setup, rows)
    for op, now in _timed(seq, 100.0):
        assert _step(fast, op, now) == _step(pure, op, now), op
        # The TX thread reads an entry as ageing would leave it but does not change it: the
        # change (turned stale, collected) is made and reported by the next tick, where the
        # core's lookup reports it at once.  So both sides tick before their events compare.
        for side in (fast, pure):
            side.vtep.expire(now)
        assert sorted(map(repr, _events(fast.vtep))) == sorted(map(repr, _events(pure.vtep))), op
        assert fast.stats() == pure.stats(), op
    assert _rows(fast.vtep) == _rows(pure.vtep)
    return fast


# --- the properties -----------------------------------------------------------------------------

@SETTINGS
@given(setups, neigh_rows, st.lists(steps, min_size=1, max_size=30))
def test_the_c_proxy_answers_as_the_core_does(setup, rows, seq):
    fast = _run(setup, rows, seq)
    # every answer came from C: what was punted was a miss, which the core only reports
    assert fast.vtep.stats.proxy_replies == 0
    assert fast.punted == 0 or setup["l3miss"]


@SETTINGS
@given(setups, neigh_rows, st.lists(st.tuples(st.just("req"), requests()), min_size=1,
                                    max_size=40))
def test_requests_against_a_fixed_table(setup, rows, seq):
    _run(setup, rows, seq)


store_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.sampled_from(IP4 + IP6 + ["2001:DB8:1020:0::1", "bogus"]),
              st.sampled_from(MACS + [b"\1\2"]), st.sampled_from(NUD_STATES + ("failed",)),
              st.sampled_from(["add", "replace", "change"])),
    st.tuples(st.just("del"), st.sampled_from(IP4 + IP6)),
    st.tuples(st.just("lookup"), st.sampled_from(IP4 + IP6)),
    st.tuples(st.just("flush"), st.booleans()),
    st.tuples(st.just("expire")),
    st.tuples(st.just("tick"), st.sampled_from([1.0, 20.0, 45.0])),
), max_size=40)


def _store_step(t: NeighTable, op, now: float):
    try:
        if op[0] == "add":
            e, changed = t.add(op[1], op[2], op[3], now, op[4])
            return (e, changed)
        if op[0] == "del":
            return t.delete(op[1])
        if op[0] == "lookup":            # the data path asks in canonical form
            return t.lookup(normalize(op[1]), now)
        if op[0] == "flush":
            return sorted((e.ip, e.state) for e in t.flush(all_states=op[1]))
        t.expire(now)
        return None
    except NeighError as e:
        return ("NeighError", str(e))


@SETTINGS
@given(store_ops)
def test_the_c_store_holds_what_the_dict_store_holds(ops):
    a = NeighTable(30.0, 60.0, store=DictNeighStore())
    b = NeighTable(30.0, 60.0, store=fp.CNeigh())
    for op, now in _timed(ops, 0.0):
        assert _store_step(b, op, now) == _store_step(a, op, now), op
        assert b.changes() == a.changes(), op
        assert b.entries() == a.entries() and len(a) == len(b), op
        for e in a.entries():
            # what the TX thread sees is what the rules would make of the entry at ``now``
            seen = b.store.lookup(e.ip, now + 31.0)
            aged = NeighTable(30.0, 60.0)
            aged.add(e.ip, e.lladdr, e.state, e.updated, "replace")
            want = aged.lookup(e.ip, now + 31.0)
            assert seen == (None if want is None else (want.state, want.lladdr)), e


# --- examples that must be in every run ----------------------------------------------------------

BASE = {"l3miss": True, "local": True, "reachable": 30.0, "gc": 60.0}
ROWS = [("10.20.1.3", MACS[0], "permanent", 0.0), ("2001:db8:1020::3", MACS[0], "reachable", 0.0),
        ("10.20.1.2", MACS[1], "stale", 0.0), ("10.20.1.1", LOCAL_MAC, "noarp", 0.0)]


def test_a_hit_is_answered_in_c_with_no_punt():
    fast = Fast(BASE, ROWS)
    arp = _arp(HOST, "10.20.1.9", "10.20.1.3")
    ns = _ns(HOST, "2001:db8:1020::9", "ff02::1:ff00:3", "2001:db8:1020::3", 0x5A,
             _opt(1, HOST))
    for frame in (arp, ns):
        actions, punts = fast.dec.tx(fast.vid, bytes(10) + frame, 100.0)
        assert punts == [] and len(actions) == 1 and type(actions[0]) is Deliver
        assert actions == Pure(BASE, ROWS).tx(frame, 100.0)
    assert fast.dec.stats(fast.vid)["proxy_replies"] == 2


def test_stale_local_and_malformed_are_consumed_in_c_and_only_a_miss_is_punted():
    fast = Fast(BASE, ROWS)
    quiet = [_arp(HOST, "10.20.1.9", "10.20.1.2"),      # stale
             _arp(HOST, "10.20.1.9", "10.20.1.1"),      # bridge-local neighbour
             _arp(HOST, "10.20.1.9", "10.20.1.3", op=2),
             _arp(HOST, "10.20.1.9", "127.0.0.1")]
    for frame in quiet:
        assert fast.dec.tx(fast.vid, bytes(10) + frame, 100.0) == ([], [])
    assert fast.dec.stats(fast.vid)["drops"]["proxy"] == len(quiet)
    miss = _arp(HOST, "10.20.1.9", "10.20.7.200")
    punts = [fast.dec.tx(fast.vid, bytes(10) + miss, 100.0 + i * 0.01)[1] for i in range(40)]
    assert sum(len(p) for p in punts) == 1         # a storm of one miss punts it once
    assert fast.dec.tx(fast.vid, bytes(10) + miss, 100.6)[1] != []      # half an interval on
    no_l3 = Fast(dict(BASE, l3miss=False), ROWS)
    assert no_l3.dec.tx(no_l3.vid, bytes(10) + miss, 100.0) == ([], [])


def test_many_entries_and_deletes_keep_the_c_table_whole():
    """The open-addressing table grows and deletes by shifting back: every entry stays found."""
    rnd = random.Random(7)
    a, b = DictNeighStore(), fp.CNeigh()
    live = {}
    for i in range(5000):
        ip = (str(ipaddress.IPv4Address(0x0A140000 + rnd.randrange(3000))) if rnd.random() < 0.5
              else str(ipaddress.IPv6Address((0x20010DB8 << 96) + rnd.randrange(3000))))
        if ip in live and rnd.random() < 0.5:
            assert a.remove(ip) == b.remove(ip)
            del live[ip]
        else:
            t = NeighTable(store=a)
            e, _ = t.add(ip, MACS[i % 4], "permanent", float(i), "replace")
            b.put(e)
            live[ip] = e
    assert len(b) == len(live)
    assert sorted((e.ip, e.lladdr) for e in b.entries()) == sorted(
        (e.ip, e.lladdr) for e in a.entries())
    for ip, e in live.items():
        assert b.lookup(ip, 0.0) == ("permanent", e.lladdr)


def test_a_store_refuses_what_it_cannot_hold():
    b = fp.CNeigh()
    e = NeighTable().add("10.20.1.1", MACS[0])[0]
    e.ip = "not an ip"
    try:
        b.put(e)
    except NeighError as err:
        assert "invalid address" in str(err)
    else:
        raise AssertionError("put took an entry with no address")
    assert len(b) == 0 and b.get("not an ip") is None and b.remove("nope") is None



# --- what ``vxtun trace`` says of a request the C proxy decided ----------------------------------

@SETTINGS
@given(setups, neigh_rows, st.lists(st.tuples(requests(), st.sampled_from([0.0, 0.3, 9.0])),
                                    min_size=1, max_size=15))
def test_trace_records_of_c_proxy_decisions_are_the_cores(setup, rows, seq):
    """The trace ring's record of an answer or a drop decided in C is the record the pure
    core's tracer makes of the same request (vxtun/trace/reference.py); a punted miss is
    traced by the core itself."""
    from vxtun.trace.records import from_ring
    from vxtun.trace.reference import trace_frame
    pure, fast = Pure(setup, rows), Fast(setup, rows)
    ring = fp.TraceRing()
    now = 100.0
    for frame, dt in seq:
        now += dt
        want = trace_frame(pure.vtep, frame, now, wall=now)[1]
        if ring.tx(fast.dec, fast.vid, bytes(10) + frame, now):
            got = trace_frame(fast.vtep, frame, now, wall=now)[1]
        else:
            (raw,) = ring.pop()
            got = from_ring(raw, fast.vtep.config, raw["now"])
        assert got == want, frame.hex()
        for side in (fast, pure):
            side.vtep.expire(now)
