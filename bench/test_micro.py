"""Microbenchmarks of the per-packet functions, pure Python and (when built) the Cython fast path.

    python -m pytest bench/test_micro.py --benchmark-only -n 0 --dist no  # all of them, ~2 minutes
    python -m pytest bench/test_micro.py --benchmark-only -n 0 --dist no -k fdb  # one family

``--benchmark-only`` is needed because pyproject's addopts skip benchmarks in the normal test
run, and ``-n 0 --dist no`` because they spread tests over xdist workers, which turns
pytest-benchmark off (and ``tests/`` is the only test path, so plain ``pytest`` never
collects this file).

* encapsulate: ``Vtep.handle_frame`` for a known unicast MAC (FDB hit, source-port hash,
  VXLAN header), frames of 64 B, 1514 B and a 64 KB TCP super-frame (what a TAP with TSO hands
  over);
* decapsulate: ``Demux.handle_datagram`` -> ``Vtep.handle_datagram`` (header checks, learning
  refresh, virtio-net header with the partial-checksum/GSO rule), the same frame sizes;
* wire steps: each per-packet function that ``vxtun._fastpath`` mirrors under the same name
  (``decode_header``, ``reserved_bits_set``, ``source_port``, ``rx_vnet_header``,
  ``csum_add``), pure and C on the same input.  Called from Python, so a C figure includes the
  call overhead the fast path's threads do not pay;
* FDB lookup at 1, 1k, 100k and 1M entries: 1024 lookups of random present MACs per round, so
  a large table pays its cache misses; the cost should stay flat, and the summary prints the
  memory per entry (tracemalloc for the Python heap, RSS growth for everything, and
  ``CFdb.memory_bytes()`` for the C table);
* flood replication: a broadcast frame with the default entry listing N remotes.

Encapsulate and flood run the pure core only: the fast path does that work inside its threads,
without a Python entry point per packet; its pieces are the wire steps and ``CFdb``.  For
decapsulation it exports ``Decisions`` (the RX thread's decision, learning refresh included:
the C function the thread runs, called from Python) and ``coalesce`` (its TCP coalescing),
benchmarked as ``fast``.  The pytest header says which C
variants ran.  Absolute figures only compare on one machine in one run.
"""
from __future__ import annotations

import gc
import os
import random
import struct
import tracemalloc

import pytest

from vxtun.core import Demux, Vtep, VtepConfig
from vxtun.dataplane import use_pure
from vxtun.fdb import Fdb, Remote
from vxtun.wire.ether import BROADCAST_MAC, ETH_P_ARP, ETH_P_IP, ZERO_MAC
from vxtun.wire.offload import csum_add, fold_complement
from vxtun.wire.vxlan import encode_header

from .conftest import note

VNI = 42
LOCAL, PEER = "192.0.2.1", "192.0.2.2"
MY_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
NOW = 1000.0


# --- implementations ------------------------------------------------------------------------

def fastpath():
    """vxtun._fastpath, or None when it is not built (or VXTUN_PUREPYTHON asks for pure)."""
    if use_pure():
        return None
    try:
        from vxtun import _fastpath
    except ImportError:
        return None
    return _fastpath


def fdb_classes() -> dict:
    impls = {"pure": Fdb}
    fp = fastpath()
    if fp is not None and hasattr(fp, "CFdb"):
        impls["fast"] = fp.CFdb
    return impls


FDB_IMPLS = fdb_classes()


def wire_impls() -> dict:
    """name -> {"pure": f, "fast": f} for the wire functions the fast path mirrors."""
    from vxtun.wire import offload, vxlan
    pure = {"decode_header": vxlan.decode_header, "reserved_bits_set": vxlan.reserved_bits_set,
            "source_port": vxlan.source_port, "rx_vnet_header": offload.rx_vnet_header,
            "csum_add": offload.csum_add}
    fp = fastpath()
    out = {}
    for name, f in pure.items():
        out[name] = {"pure": f}
        if fp is not None and hasattr(fp, name):
            out[name]["fast"] = getattr(fp, name)
    return out


WIRE_IMPLS = wire_impls()


def implementations_line() -> str:
    fp = fastpath()
    if fp is None:
        why = "VXTUN_PUREPYTHON set" if use_pure() else "vxtun._fastpath not built"
        return f"vxtun microbenchmarks: pure only ({why})"
    names = ("CFdb", "Decisions", "coalesce", *WIRE_IMPLS)
    has = [n for n in names if hasattr(fp, n)]
    lacks = [n for n in names if not hasattr(fp, n)]
    return (f"vxtun microbenchmarks: pure, and C from vxtun._fastpath for "
            f"{', '.join(has) or 'nothing'}" + (f" (not exported: {', '.join(lacks)})"
                                                if lacks else ""))


def make_vtep(remote: str | None = PEER) -> Vtep:
    cfg = VtepConfig(vni=VNI, local=LOCAL, remote=remote, dev="eth0", mac=MY_MAC, mtu=1450)
    cfg.validate()
    return Vtep(cfg)


# --- frames -----------------------------------------------------------------------------------

def tcp_frame(payload_len: int, partial: bool, src=PEER_MAC, dst=MY_MAC, seq: int = 1,
              ip_id: int = 1) -> bytes:
    """Ethernet/IPv4/TCP with ``payload_len`` bytes of payload.  ``partial``: the TCP checksum
    field holds only the pseudo-header sum, as a kernel peer sends it over veth (and as a TAP
    with TUN_F_CSUM hands it over); else a complete checksum."""
    saddr, daddr = bytes([10, 20, 1, 2]), bytes([10, 20, 1, 1])
    tcp_len = 20 + payload_len
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + tcp_len, ip_id, 0x4000, 64, 6,
                               0, saddr, daddr))
    ip[10:12] = struct.pack("!H", fold_complement(csum_add(bytes(ip))))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 1, 5 << 4, 0x10, 512, 0, 0))
    payload = bytes(random.Random(payload_len).getrandbits(8) for _ in range(payload_len))
    pseudo = csum_add(saddr + daddr, 6 + tcp_len)
    if partial:
        tcp[16:18] = struct.pack("!H", pseudo)
    else:
        tcp[16:18] = struct.pack("!H", fold_complement(csum_add(bytes(tcp) + payload, pseudo)))
    return dst + src + struct.pack("!H", ETH_P_IP) + bytes(ip) + bytes(tcp) + payload


def arp_request(src=MY_MAC) -> bytes:
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, bytes([10, 20, 1, 1]),
                       ZERO_MAC, bytes([10, 20, 1, 9]))
    return BROADCAST_MAC + src + struct.pack("!H", ETH_P_ARP) + body + bytes(18)


# Frame lengths: a small TCP segment (ACK-sized), a full 1500-MTU segment, a TSO super-frame.
SIZES = {"64B": 10, "1514B": 1460, "64KB": 65000}


# --- encapsulate / decapsulate -------------------------------------------------------------------

@pytest.mark.parametrize("size", list(SIZES))
def test_encapsulate(benchmark, size):
    """TAP -> underlay: FDB hit for the destination, source port, VXLAN header."""
    v = make_vtep()
    v.fdb.add(PEER_MAC, Remote(PEER), "permanent")
    frame = tcp_frame(SIZES[size], partial=True, src=MY_MAC, dst=PEER_MAC)
    out = benchmark(v.handle_frame, frame, NOW)
    assert len(out) == 1 and out[0].payload[8:] == frame


DECAP_IMPLS = ["pure"] + (["fast"] if hasattr(fastpath(), "Decisions") else [])


@pytest.mark.parametrize("impl", DECAP_IMPLS)
@pytest.mark.parametrize("size", list(SIZES))
def test_decapsulate(benchmark, size, impl):
    """Underlay -> TAP: header checks, learning refresh, virtio-net header.  ``fast`` is
    ``_fastpath.Decisions.rx``: the RX thread's decision function (plus building the action's
    Python objects, which the thread does not do)."""
    frame = tcp_frame(SIZES[size], partial=True)
    data = encode_header(VNI) + frame
    if impl == "fast":
        dec = fastpath().Decisions()
        dec.add_vtep(VNI, MY_MAC, 1450, fastpath().CFdb())
        dec.rx(data, PEER, NOW)                 # the first one learns; measure the refreshes
        out, _punts = benchmark(dec.rx, data, PEER, NOW)
        assert len(out) == 1 and out[0].frame == frame
        return
    v = make_vtep()
    d = Demux()
    d.add(v)
    d.handle_datagram(data, PEER, NOW)          # the first one learns; measure the refreshes
    out = benchmark(d.handle_datagram, data, PEER, NOW)
    assert len(out) == 1 and out[0].frame == frame


if hasattr(fastpath(), "coalesce"):
    @pytest.mark.parametrize("segments", [2, 16, 44])
    def test_coalesce(benchmark, segments):
        """The RX thread's TCP coalescing (C only): ``segments`` back-to-back full-MSS segments
        of one flow (1410 bytes: MTU 1450) become one super-frame for the TAP (GRO's job, done
        before the write, so the kernel pays per super-frame, not per segment)."""
        mss = 1410
        frames = [tcp_frame(mss, partial=True, seq=1 + i * mss, ip_id=1 + i)
                  for i in range(segments)]
        out = benchmark(fastpath().coalesce, frames, 1450)
        assert len(out) == 1
        stats = getattr(benchmark, "stats", None)
        if stats is not None and getattr(stats, "stats", None) is not None:
            note("TCP coalescing (C), median cost per segment",
                 f"{segments:3} segments: {stats.stats.median / segments * 1e9:7.1f} ns/segment")


# --- the wire steps, pure and C ------------------------------------------------------------------

def _wire_args(name: str, size: str) -> tuple:
    frame = tcp_frame(SIZES[size], partial=True)
    data = encode_header(VNI) + frame
    return {"decode_header": (data,), "reserved_bits_set": (data,),
            "source_port": (frame, 32768, 61000), "rx_vnet_header": (frame, 1450),
            "csum_add": (frame[14:],)}[name]


WIRE_CASES = [(name, size, impl) for name, impls in WIRE_IMPLS.items() for impl in impls
              for size in (SIZES if name in ("rx_vnet_header", "csum_add") else ["64B"])]


@pytest.mark.parametrize("name,size,impl", WIRE_CASES,
                         ids=[f"{n}-{s}-{i}" for n, s, i in WIRE_CASES])
def test_wire(benchmark, name, size, impl):
    """One per-packet function on one frame; the C and pure results must agree."""
    args = _wire_args(name, size)
    out = benchmark(WIRE_IMPLS[name][impl], *args)
    assert out == WIRE_IMPLS[name]["pure"](*args)


# --- FDB lookup at 1 .. 1M entries -------------------------------------------------------------

FDB_SIZES = [1, 1_000, 100_000, 1_000_000]
BATCH = 1024
_per_lookup: dict = {}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mac(i: int) -> bytes:
    return b"\x02" + i.to_bytes(5, "big")


@pytest.fixture(scope="module", params=[(impl, n) for impl in FDB_IMPLS for n in FDB_SIZES],
                ids=lambda p: f"{p[0]}-{p[1]}")
def filled_fdb(request):
    """A table of n learned entries (as vxlan_snoop creates them), 256 VTEPs behind them."""
    impl, n = request.param
    cls = FDB_IMPLS[impl]
    vteps = [f"198.51.100.{i}" for i in range(1, 255)]
    gc.collect()
    rss0 = _rss()
    tracemalloc.start()
    t0 = tracemalloc.get_traced_memory()[0]
    f = cls(300.0, 0, True)
    for i in range(n):
        f.learn(_mac(i), vteps[i % len(vteps)], NOW)
    heap = tracemalloc.get_traced_memory()[0] - t0
    tracemalloc.stop()
    rss = _rss() - rss0
    own = None
    for attr in ("memory_bytes", "bytes_used", "memory"):
        if hasattr(f, attr):
            own = getattr(f, attr)
            own = own() if callable(own) else own
            break
    # RSS moves in pages and arenas: only a large table makes it mean something per entry.
    rss_s = f"{rss / n:7.1f} B/entry" if n >= 100_000 else "      —"
    line = f"{impl:4} {n:>9,} entries: Python heap {heap / n:7.1f} B/entry, RSS growth {rss_s}"
    if own is not None:
        line += f", table's own accounting {own / n:7.1f} B/entry"
    note("FDB memory per entry (tracemalloc sees only Python allocations, RSS everything)", line)
    rng = random.Random(n)
    keys = [_mac(rng.randrange(n)) for _ in range(BATCH)]
    yield impl, n, f, keys
    del f
    gc.collect()


def test_fdb_lookup(benchmark, filled_fdb):
    impl, n, f, keys = filled_fdb
    lookup = f.lookup

    def batch():
        for k in keys:
            lookup(k, NOW)

    benchmark.extra_info.update(entries=n, lookups_per_round=BATCH)
    benchmark(batch)
    assert lookup(keys[0], NOW) is not None
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        ns = stats.stats.median / BATCH * 1e9
        benchmark.extra_info["ns_per_lookup"] = ns
        base = _per_lookup.setdefault(impl, ns)
        note("FDB lookup, median cost per lookup of a random present MAC, called from Python "
             "(flat is the goal; CFdb.lookup builds Remote objects for Python, the threads' "
             "C lookup does not)",
             f"{impl:4} {n:>9,} entries: {ns:7.1f} ns  ({ns / base:.2f}x the 1-entry table)")


# --- flood replication ---------------------------------------------------------------------------

_flood_one: dict = {}


@pytest.mark.parametrize("remotes", [1, 4, 16, 64])
def test_flood(benchmark, remotes):
    """A broadcast (an ARP request) to the all-zeros entry's flood list of N VTEPs
    (head-end replication, vxlan_xmit() over the default entry): one Transmit per remote."""
    impl = "pure"
    v = make_vtep(remote=None)
    for i in range(remotes):
        v.fdb.add(ZERO_MAC, Remote(f"198.51.100.{i + 1}"), "permanent", op="append")
    frame = arp_request()
    out = benchmark(v.handle_frame, frame, NOW)
    assert len(out) == remotes
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        us = stats.stats.median * 1e6
        one = _flood_one.setdefault(impl, us)
        extra = f", {(us - one) / (remotes - 1) * 1e3:6.1f} ns per extra copy" \
            if remotes > 1 else ""
        note("Flood replication, median cost per broadcast frame",
             f"{impl:4} {remotes:3} remotes: {us:7.2f} µs{extra}")
