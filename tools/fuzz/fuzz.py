"""Coverage-guided fuzzing of the fast path's per-packet decisions (fp_rx_decide, fp_tx_decide,
and the proxy's fp_proxy_decide against the pure core) under AddressSanitizer and
UndefinedBehaviorSanitizer, with atheris (libFuzzer for Python).

Run through tools/fuzz/run.sh, which builds vxtun's fastpath extensions and the target module
(fuzz_decide.pyx) with clang ``-fsanitize=address,undefined,fuzzer-no-link`` in a separate
directory and preloads the sanitizer runtime::

    tools/fuzz/run.sh rx -max_total_time=3600      # an hour on received datagrams
    tools/fuzz/run.sh tx -max_total_time=3600      # an hour on frames read from the TAP
    tools/fuzz/run.sh neigh -max_total_time=3600   # an hour of ARP/NS and neighbour tables

Each input begins with the state: the VTEPs (VNI, MAC, MTU, source-port range, proxy) and
their FDBs (learning, ``maxaddress``, entries of each state with one or several remotes, IPv4
and IPv6, the all-zeros default), then the clock.  The rest is what the thread reads: for
``rx`` the source address, the outer TOS, a UDP GRO segment size and the datagram(s); for
``tx`` which VTEP and the virtio-net header + frame (a TSO super-frame when the header's
gso_type says so).  Structure-aware seeds (a VXLAN datagram, an ARP request, a TSO frame)
start the corpus so that the fuzzer gets past the header checks at once.

A sanitizer report, an AssertionError from the target's checks (fuzz_decide.pyx) or any
other exception is a crash: libFuzzer stops and writes the input to ``crash-*``.
"""
from __future__ import annotations

import struct
import sys

import atheris

from vxtun.fdb import FdbEntry, Remote

# the sanitized modules, imported by main() once the sanitizer runtime is in (run.sh)
CFdb = Target = fp = proxy_exact = None

STATES = ("permanent", "static", "dynamic")
# the remotes an entry may get: IPv4 and IPv6, other port, VNI and device
REMOTES = [Remote("192.0.2.1"), Remote("192.0.2.2", port=8472), Remote("2001:db8::1"),
           Remote("198.51.100.7", vni=43), Remote("2001:db8::2", via="eth0"),
           Remote("192.0.2.3", port=4790, vni=7, via="veth1")]
# MACs the state and the packets share, so lookups and learning hit as often as they miss
MACS = [b"\x00" * 6, bytes.fromhex("021122334401"), bytes.fromhex("021122334402"),
        bytes.fromhex("01005e000001"), b"\xff" * 6, bytes.fromhex("02aabbccdd2a")]


def _mac(fdp: atheris.FuzzedDataProvider) -> bytes:
    i = fdp.ConsumeIntInRange(0, len(MACS))
    return MACS[i] if i < len(MACS) else fdp.ConsumeBytes(6).ljust(6, b"\x00")


def build_state(fdp: atheris.FuzzedDataProvider):
    t = Target()
    vnis: set[int] = set()
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        vni = fdp.ConsumeIntInRange(0, (1 << 24) - 1) if fdp.ConsumeBool() else 42 + len(vnis)
        if vni in vnis:
            continue
        vnis.add(vni)
        fdb = CFdb(ageing=fdp.ConsumeIntInRange(0, 600), maxaddress=fdp.ConsumeIntInRange(0, 4),
                   learning=fdp.ConsumeBool())
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            remotes = [REMOTES[fdp.ConsumeIntInRange(0, len(REMOTES) - 1)]
                       for _ in range(fdp.ConsumeIntInRange(1, 4))]
            fdb.put(FdbEntry(_mac(fdp), remotes, STATES[fdp.ConsumeIntInRange(0, 2)],
                             updated=fdp.ConsumeIntInRange(0, 1000),
                             used=fdp.ConsumeIntInRange(0, 1000)))
        lo = fdp.ConsumeIntInRange(1, 65535)
        hi = fdp.ConsumeIntInRange(lo + 1, 65536)
        t.add_vtep(vni, _mac(fdp), fdp.ConsumeIntInRange(68, 65535), fdb, lo, hi,
                   fdp.ConsumeBool())
    return t


def one_rx(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    t = build_state(fdp)
    now = float(fdp.ConsumeIntInRange(0, 2000))
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        v6 = fdp.ConsumeBool()
        addr = fdp.ConsumeBytes(16 if v6 else 4).ljust(16 if v6 else 4, b"\x00")
        tos = fdp.ConsumeIntInRange(0, 255)
        gso = fdp.ConsumeIntInRange(0, 1600) if fdp.ConsumeBool() else 0
        dgram = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 9000))
        t.rx(dgram, 6 if v6 else 4, addr, tos, now, gso)
        now += fdp.ConsumeIntInRange(0, 400)


def one_tx(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    t = build_state(fdp)
    now = float(fdp.ConsumeIntInRange(0, 2000))
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        vid = fdp.ConsumeIntInRange(0, 2)
        frame = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70000))
        try:
            t.tx(vid, frame, now)
        except ValueError as e:          # a VTEP index past the ones built: not a finding
            if "no such VTEP" not in str(e):
                raise
        now += fdp.ConsumeIntInRange(0, 400)


# --- neigh: the proxy in C (fp_proxy_decide over CNeigh) against the pure core ----------------
#
# Each input: a setup (l3miss, an FDB entry for a MAC behind this host, the ageing times),
# neighbour rows, then up to 12 steps: an ARP request or NS (fields drawn, option bytes and
# truncation free), a table operation (``ip neigh add/replace/change/del``, ``flush``), a tick
# of the clock, an expire.  Two sides take the same steps: the pure Vtep (vxtun/core/vtep.py
# ``_proxy`` over vxtun/proxy) and the C decisions (``Decisions.tx`` over CFdb + CNeigh, what
# they punt handed to a Vtep over the same stores, as FastBackend does).  After each step the
# actions, the events, the counters and the tables must be equal; before each request,
# fp_proxy_decide also runs on an exact-size copy of the frame (``proxy_exact``) and must give
# the answer Decisions.tx gives.  Any difference is an AssertionError: a crash with the input.

N_OWN = bytes.fromhex("02aabbccdd2a")
N_MACS = [bytes.fromhex(h) for h in ("b2eeaa428b0b", "b2eeaa428b0c", "0200000000aa",
                                     "02000000bb01")]
N_LOCAL = N_MACS[3]                  # behind this host: its FDB entry's remote is the any address
N_IP4 = ["10.20.1.1", "10.20.1.2", "10.20.1.3", "0.0.0.0", "127.0.0.1", "224.0.0.1",
         "255.255.255.255"]
N_IP6 = ["2001:db8:1020::1", "2001:db8:1020::3", "fe80::1", "::ffff:10.20.1.3", "::", "::1",
         "ff02::1"]
N_STATES = ("permanent", "noarp", "reachable", "stale")
N_VERBS = ("add", "replace", "change")


def _n_ip4(fdp: atheris.FuzzedDataProvider) -> bytes:
    i = fdp.ConsumeIntInRange(0, len(N_IP4))
    if i < len(N_IP4):
        return bytes(int(x) for x in N_IP4[i].split("."))
    return fdp.ConsumeBytes(4).ljust(4, b"\x00")


def _n_ip6(fdp: atheris.FuzzedDataProvider) -> bytes:
    import ipaddress
    i = fdp.ConsumeIntInRange(0, len(N_IP6))
    if i < len(N_IP6):
        return ipaddress.IPv6Address(N_IP6[i]).packed
    return fdp.ConsumeBytes(16).ljust(16, b"\x00")


def _n_text(fdp: atheris.FuzzedDataProvider) -> str:
    import ipaddress
    return str(ipaddress.ip_address(_n_ip6(fdp) if fdp.ConsumeBool() else _n_ip4(fdp)))


def _n_request(fdp: atheris.FuzzedDataProvider) -> bytes:
    """An ARP frame or an IPv6/ICMPv6 type-135 frame, every field drawn."""
    sha = N_MACS[fdp.ConsumeIntInRange(0, len(N_MACS) - 1)] if fdp.ConsumeBool() else \
        fdp.ConsumeBytes(6).ljust(6, b"\x00")
    if fdp.ConsumeBool():
        hrd = (1, 6, 2)[fdp.ConsumeIntInRange(0, 2)]
        pro = 0x0800 if fdp.ConsumeProbability() < 0.8 else fdp.ConsumeIntInRange(0, 0xFFFF)
        hln = 6 if fdp.ConsumeProbability() < 0.8 else fdp.ConsumeIntInRange(0, 255)
        pln = 4 if fdp.ConsumeProbability() < 0.8 else fdp.ConsumeIntInRange(0, 255)
        op = 1 if fdp.ConsumeProbability() < 0.8 else fdp.ConsumeIntInRange(0, 0xFFFF)
        f = (b"\xff" * 6 + sha + b"\x08\x06" + struct.pack("!HHBBH", hrd, pro, hln, pln, op)
             + sha + _n_ip4(fdp) + b"\x00" * 6 + _n_ip4(fdp))
    else:
        code = 0 if fdp.ConsumeProbability() < 0.9 else fdp.ConsumeIntInRange(0, 255)
        opts = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 48))
        body = struct.pack("!BBHI", 135, code, fdp.ConsumeIntInRange(0, 0xFFFF), 0) \
            + _n_ip6(fdp) + opts
        ip6 = (struct.pack("!IHBB", 0x60000000 | (fdp.ConsumeIntInRange(0, 255) << 20),
                           len(body), 58, 255) + _n_ip6(fdp) + _n_ip6(fdp))
        f = b"\x33\x33\xff\x00\x00\x03" + sha + b"\x86\xdd" + ip6 + body
    f += fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 24)) if fdp.ConsumeBool() else b""
    if fdp.ConsumeProbability() < 0.15:         # cut short anywhere past the Ethernet header
        f = f[:fdp.ConsumeIntInRange(14, len(f))]
    return f


class _NeighSide:
    """One side of the neigh target: the pure core (``c`` False) or the C decisions."""

    def __init__(self, setup: dict, rows: list, c: bool) -> None:
        from vxtun.core import Vtep, VtepConfig
        from vxtun.fdb import Fdb, Remote
        from vxtun.proxy import NeighTable
        cfg = VtepConfig(vni=42, name="vx42", mac=N_OWN, proxy=True, l3miss=setup["l3miss"],
                         learning=False, reachable_time=setup["reachable"],
                         gc_stale_time=setup["gc"])
        self.c = c
        if c:
            self.cfdb = fp.CFdb(cfg.ageing, cfg.maxaddress, cfg.learning)
            self.neigh = NeighTable(cfg.reachable_time, cfg.gc_stale_time, store=fp.CNeigh())
            self.vtep = Vtep(cfg, fdb=Fdb(store=self.cfdb), neigh=self.neigh)
        else:
            self.vtep = Vtep(cfg)
        for ip, mac, state, t in rows:
            try:
                self.vtep.neigh.add(ip, mac, state, 100.0 - t, "replace")
            except Exception as e:      # noqa: BLE001 - both sides must refuse alike
                self.refused = getattr(self, "refused", []) + [repr(e)]
        self.vtep.neigh.changes()
        if setup["local"]:
            self.vtep.fdb.add(N_LOCAL, Remote("0.0.0.0"), "permanent", 100.0)
        if c:
            self.dec = fp.Decisions()
            self.vid = self.dec.add_vtep(42, N_OWN, self.vtep.mtu, self.cfdb, proxy=True,
                                         neigh=self.neigh.store, l3miss=cfg.l3miss)

    def request(self, frame: bytes, now: float) -> list:
        if not self.c:
            return self.vtep.handle_frame(frame, now)
        from vxtun.core.vtep import Deliver
        from vxtun.dataplane.fast import PUNT_FRAME, handle_punt
        r, answer, _, _ = proxy_exact(self.neigh.store, self.cfdb, self.vtep.config.l3miss,
                                      frame, self.vtep.mtu, now)
        actions, punts = self.dec.tx(self.vid, bytes(10) + frame, now)
        if answer:
            assert [type(a) for a in actions] == [Deliver], (actions, punts)
            assert actions[0].vnet + actions[0].frame == answer, "exact-size copy differs"
        for kind, _vid, data in punts:
            assert kind == PUNT_FRAME and not actions, (kind, actions)
            actions = actions + handle_punt(self.vtep, kind, data, now)
        return actions

    def step(self, op, now: float):
        from vxtun.errors import NeighError
        try:
            if op[0] == "req":
                return self.request(op[1], now)
            if op[0] == "expire":
                self.vtep.expire(now)
            elif op[0] == "del":
                self.vtep.neigh_delete(op[1])
            elif op[0] == "flush":
                self.vtep.neigh_flush(now, all_states=op[1])
            else:
                self.vtep.neigh_update(op[4], op[1], op[2], op[3], now)
        except NeighError as e:
            return ("NeighError", str(e))
        return None

    def stats(self) -> dict:
        if not self.c:
            return self.vtep.stats.to_json()
        from vxtun.core.stats import Stats
        return Stats.merge(self.dec.stats(self.vid), self.vtep.stats.to_json())

    def events(self) -> list:
        out = []
        while (ev := self.vtep.next_event()) is not None:
            out.append(repr(ev))
        return sorted(out)

    def rows(self) -> list:
        return [(e.ip, e.lladdr, e.state, e.updated) for e in self.vtep.neigh.entries()]


def one_neigh(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    setup = {"l3miss": fdp.ConsumeBool(), "local": fdp.ConsumeBool(),
             "reachable": (5.0, 30.0, 0.5)[fdp.ConsumeIntInRange(0, 2)],
             "gc": (1.0, 60.0, 7.0)[fdp.ConsumeIntInRange(0, 2)]}
    rows = [(_n_text(fdp), N_MACS[fdp.ConsumeIntInRange(0, len(N_MACS) - 1)],
             N_STATES[fdp.ConsumeIntInRange(0, 3)], float(fdp.ConsumeIntInRange(0, 120)))
            for _ in range(fdp.ConsumeIntInRange(0, 8))]
    pure, fast = _NeighSide(setup, rows, False), _NeighSide(setup, rows, True)
    assert getattr(pure, "refused", None) == getattr(fast, "refused", None)
    now = 100.0
    for _ in range(fdp.ConsumeIntInRange(1, 12)):
        k = fdp.ConsumeIntInRange(0, 9)
        if k <= 4:
            op = ("req", _n_request(fdp))
        elif k == 5:
            now += (0.1, 0.4, 1.0, 7.0, 40.0)[fdp.ConsumeIntInRange(0, 4)]
            continue
        elif k == 6:
            op = ("expire",)
        elif k == 7:
            op = ("del", _n_text(fdp))
        elif k == 8 and fdp.ConsumeProbability() < 0.3:
            op = ("flush", fdp.ConsumeBool())
        else:
            op = ("neigh", _n_text(fdp), N_MACS[fdp.ConsumeIntInRange(0, len(N_MACS) - 1)],
                  N_STATES[fdp.ConsumeIntInRange(0, 3)], N_VERBS[fdp.ConsumeIntInRange(0, 2)])
        assert fast.step(op, now) == pure.step(op, now), op
        # the TX thread reads an entry as ageing would leave it without changing it; the next
        # tick makes and reports the change (tests/unit/test_proxy_c.py): both sides tick
        for side in (fast, pure):
            side.vtep.expire(now)
        assert fast.events() == pure.events(), op
    # counters only add up and the tables keep a difference until an operation writes over
    # it: compared once, at the end (each step's compare cost two thirds of the time)
    assert fast.stats() == pure.stats()
    assert fast.rows() == pure.rows()


# --- seeds: valid packets, so the fuzzer starts past the header checks ----------------------

def _ip4_tcp(payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1000, 1, 5 << 4, 0x18, 512, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 2, 20 + len(tcp) + len(payload), 7, 0x4000, 64, 6,
                     0, bytes([10, 20, 1, 2]), bytes([10, 20, 1, 3]))
    return ip + tcp + payload


def seeds() -> list[bytes]:
    eth = bytes.fromhex("021122334401") + bytes.fromhex("021122334402")
    arp = (b"\xff" * 6 + bytes.fromhex("021122334402") + b"\x08\x06"
           + bytes.fromhex("0001080006040001") + bytes.fromhex("021122334402")
           + bytes([10, 20, 1, 2]) + b"\x00" * 6 + bytes([10, 20, 1, 3]))
    ip4 = eth + b"\x08\x00" + _ip4_tcp(b"x" * 3000)
    vx = b"\x08\x00\x00\x00\x00\x00\x2a\x00"
    vnet_tso = struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)
    vnet_none = b"\x00" * 10
    # FuzzedDataProvider takes integers from the end of the input and bytes from the front:
    # a zero tail is a state of one VTEP with VNI 42 and an empty FDB
    tail = b"\x00" * 64
    return [s + tail for s in (vx + ip4[:1514], vx + arp, vnet_tso + ip4, vnet_none + arp,
                               vnet_none + ip4[:1514])]


def main() -> None:
    target = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if target == "seeds":                # seeds DIR: write the seed corpus
        for i, s in enumerate(seeds()):
            with open(f"{sys.argv[1]}/seed-{i}", "wb") as f:
                f.write(s)
        return
    one = {"rx": one_rx, "tx": one_tx, "neigh": one_neigh}.get(target)
    if one is None:
        sys.exit("usage: fuzz.py rx|tx|neigh [libFuzzer options] [CORPUS_DIR ...]")
    global CFdb, Target, fp, proxy_exact
    with atheris.instrument_imports():
        from fuzz_decide import Target, proxy_exact
        from vxtun import _fastpath as fp
        from vxtun.fastpath.fdb import CFdb
        import vxtun.core.vtep
        import vxtun.proxy.neigh
        import vxtun.proxy.reply  # noqa: F401 - instrumented: the pure side's coverage counts
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
