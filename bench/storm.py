"""An ARP storm against a proxying VTEP, with ping across the overlay meanwhile.

    python3 -m bench.storm [--rate 200000] [--seconds 10] [--only fast,pure,kernel] [--queues N]

For each kind of VTEP (``fast``: vxtun's fast path, ``pure``: ``VXTUN_PUREPYTHON=1``,
``kernel``: a kernel vxlan device with ``proxy``), a fresh topology (vxtun.lab.netns):

    h1: the VTEP under test, proxy on, 10.20.1.1/24      h2: a kernel VTEP, 10.20.1.2/24

The VTEP under test knows 10.20.1.2 and the storm's 100 targets (10.20.1.100-199) in its
neighbour table (``nud permanent``); h2 knows 10.20.1.1 (a proxying VTEP consumes every ARP
frame, replies included: arp_reduce).  Then, on h1:

1. ``ping -i 0.01`` to 10.20.1.2 for ``--seconds``: the unloaded loss and RTTs;
2. the same while a generator (``--generate``, a child process in h1's namespace) writes ARP
   requests for the storm's targets into the VTEP's device at ``--rate`` frames/s (an
   AF_PACKET socket, sendmmsg() batches through the device's qdisc, as frames from containers
   behind a bridge would come); with vxtun the host's own neighbour cache for the device is
   flushed every half second, so the host keeps resolving 10.20.1.2 through the proxy
   during the storm.

The storm lasts ``--seconds`` + 2 s (it starts 1 s before the pings and ends after them); the
generator paces itself in chunks of CHUNK frames against the clock and reports what it offered
over the time it ran, so the rates below are per second of storm, not per second of ping.  A
generator that could not keep up (a loaded machine) says so: ``generator-limited``.

It reports, per kind: the rate the generator offered (frames it handed to the kernel, those
the kernel took, and the largest burst it had to send at once to catch up), ping loss and
p50 / p99 RTT unloaded and under the storm, and for vxtun the counters that say where the
storm went (``proxy_replies``, drops by reason, the TAP queue's drops, the frames read per
TAP queue, lost punts), and the frames the VTEP accounted for per second of storm (replies +
drops + TAP queue drops: the offered rate, when the generator is honest).  Target (issue 10,
fast path): loss <= 1% and p50 within 2x of the unloaded p50.  Figures from a loaded machine
mean little; the exit status is 0 when every kind ran, 1 otherwise.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

VNI = 42
UNDERLAY = ("192.0.2.1", "192.0.2.2")
OVERLAY = ("10.20.1.1", "10.20.1.2")
TARGETS = [f"10.20.1.{i}" for i in range(100, 200)]
KINDS = ("fast", "pure", "kernel")
ENV = {"fast": {"VXTUN_PUREPYTHON": "0"}, "pure": {"VXTUN_PUREPYTHON": "1"}}
BATCH = 256
CHUNK = 32          # frames per sendmmsg(): 0.16 ms of storm at 200k/s
CATCHUP_S = 0.005   # the most time a late generator catches up on (1000 frames at 200k/s)


# --- the generator (runs inside h1's namespace) -----------------------------------------------

class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


def arp_request(sha: bytes, sip: str, tip: str) -> bytes:
    """who-has ``tip`` tell ``sip``, broadcast, from ``sha``."""
    return (b"\xff" * 6 + sha + b"\x08\x06" + bytes.fromhex("0001080006040001") + sha
            + socket.inet_aton(sip) + bytes(6) + socket.inet_aton(tip))


def storm_frames(n: int = BATCH, miss: str | None = None) -> list[bytes]:
    """``n`` requests from as many senders for the storm's targets (the last one for
    ``miss``, an IP with no entry, when given)."""
    tips = [TARGETS[i % len(TARGETS)] for i in range(n)]
    if miss:
        tips[-1] = miss
    return [arp_request(bytes((0x02, 0x5C, 0, 0, i >> 8, i & 0xFF)), f"10.20.2.{i % 250 + 1}",
                        tips[i]) for i in range(n)]


def generate(dev: str, rate: float, seconds: float, miss: str | None = None) -> dict:
    """Send ARP requests into ``dev`` at ``rate`` frames/s for ``seconds``; what was offered.

    Paced against the clock: each sendmmsg() sends at most CHUNK frames that are due, and
    when none is due the generator sleeps until the next CHUNK is.  Behind time (a sleep that
    overslept, a machine too busy), it catches up by at most CATCHUP_S of frames (4 CHUNKs
    at low rates), back to back (``max_burst``: the most frames due at once); what was due
    before that is forgotten (``skipped``), so a late generator offers less, and says so,
    rather than a burst the real storm never had."""
    import gc
    gc.disable()                # a collection is a pause, and a burst after it
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((dev, 0))
    frames = storm_frames(miss=miss)
    bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
    iovs = (_Iovec * BATCH)()
    msgs = (_Mmsghdr * BATCH)()
    for i, b in enumerate(bufs):
        iovs[i].base = ctypes.addressof(b)
        iovs[i].len = len(frames[i])
        msgs[i].hdr.iov = ctypes.pointer(iovs[i])
        msgs[i].hdr.iovlen = 1
    tried = taken = max_burst = skipped = 0
    catchup = max(4 * CHUNK, int(rate * CATCHUP_S))
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int(rate * (now - start)) - tried - skipped
        if due > catchup:
            skipped += due - catchup
            due = catchup
        if due <= 0:
            time.sleep(min((tried + skipped + CHUNK) / rate - (now - start), end - now))
            continue
        max_burst = max(max_burst, due)
        # round the ring of frames, so that every target (and the miss) is asked in turn
        off = tried % BATCH
        n = min(due, CHUNK, BATCH - off)
        r = libc.sendmmsg(s.fileno(), ctypes.byref(msgs, off * ctypes.sizeof(_Mmsghdr)), n, 0)
        tried += n
        if r > 0:
            taken += r
    took = time.monotonic() - start
    s.close()
    return {"offered": tried, "taken": taken, "seconds": took, "rate": rate,
            "offered_rate": tried / took, "taken_rate": taken / took, "max_burst": max_burst,
            "skipped": skipped,
            "generator_limited": skipped > 0.02 * (tried + skipped)}


# --- one kind ---------------------------------------------------------------------------------

PING_RE = re.compile(r"time=([\d.]+) ms")
SUMMARY_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def ping(host, seconds: float, interval: float = 0.01) -> dict:
    count = int(seconds / interval)
    r = host.run(f"ping -n -i {interval} -c {count} -W 1 {OVERLAY[1]}", timeout=seconds * 3 + 30)
    rtts = sorted(float(m) for m in PING_RE.findall(r.stdout))
    m = SUMMARY_RE.search(r.stdout)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (count, len(rtts))
    return {"sent": sent, "received": got, "loss": 1 - got / sent if sent else 1.0,
            "p50_ms": statistics.median(rtts) if rtts else None,
            "p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] if rtts else None}


def _flusher(host, dev: str, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        host.run(f"ip neigh flush dev {dev}", timeout=10)


def _mac(host, dev: str) -> str:
    return json.loads(host.sh(f"ip -j link show dev {dev}"))[0]["address"]


def setup(topo, kind: str, extra: tuple = ()):
    """h1 with the VTEP under test (proxy on, the neighbour table filled; ``extra``: more
    ``vxtun up`` options), h2 with a kernel VTEP; returns (h1, h2, the device under test)."""
    h1 = topo.host("h1", f"{UNDERLAY[0]}/24")
    h2 = topo.host("h2", f"{UNDERLAY[1]}/24")
    h2.sh(f"ip link add vxlan0 type vxlan id {VNI} dstport 4789 remote {UNDERLAY[0]} "
          f"local {UNDERLAY[1]} dev eth0 && ip addr add {OVERLAY[1]}/24 dev vxlan0 && "
          "ip link set vxlan0 up")
    peer = _mac(h2, "vxlan0")
    if kind == "kernel":
        dev = "vxlan0"
        h1.sh(f"ip link add {dev} type vxlan id {VNI} dstport 4789 remote {UNDERLAY[1]} "
              f"local {UNDERLAY[0]} dev eth0 proxy && ip addr add {OVERLAY[0]}/24 dev {dev} && "
              f"ip link set {dev} up")
        add = [f"ip neigh replace {ip} lladdr {mac} dev {dev} nud permanent"
               for ip, mac in _table(peer)]
        h1.sh(" && ".join(add))
    else:
        dev = "vxtun0"
        h1.vxtun("--vni", str(VNI), "--remote", UNDERLAY[1], "--local", UNDERLAY[0], "--dev",
                 "eth0", "--address", f"{OVERLAY[0]}/24", "--name", dev, "--proxy", *extra,
                 env=ENV[kind], wait_dev=dev)
        for ip, mac in _table(peer):
            h1.cmd("neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent")
    h2.sh(f"ip neigh replace {OVERLAY[0]} lladdr {_mac(h1, dev)} dev vxlan0 nud permanent")
    return h1, h2, dev


def _table(peer: str) -> list[tuple[str, str]]:
    return [(OVERLAY[1], peer)] + [(ip, f"02:5d:00:00:00:{i:02x}") for i, ip in enumerate(TARGETS)]


def vxtun_counters(h1, dev: str) -> dict:
    r = h1.run_vxtun("stats", "dev", dev, "-j", timeout=20)
    try:
        st = json.loads(r.stdout)[0]
    except (ValueError, IndexError):
        return {}
    drops = {k: v for k, v in st.get("drops", {}).items() if v}
    out = {"proxy_replies": st.get("proxy_replies"), "drops": drops, "queues": None}
    for k in ("tap", "punts_lost"):
        if k in st:
            out[k] = st[k]
    return out


def accounted(counters: dict) -> int | None:
    """The storm's frames the VTEP saw or the kernel dropped before it: replies, drops by
    reason and the TAP queue's drops (None for the kernel VTEP: it counts no replies)."""
    if counters.get("proxy_replies") is None:
        return None
    tap = counters.get("tap") or {}
    return (counters["proxy_replies"] + sum(counters.get("drops", {}).values())
            + (tap.get("tx_dropped") or 0))


def measure(kind: str, rate: float, seconds: float, queues: int = 0) -> dict:
    from vxtun.lab.netns import Topology, python
    with Topology("storm") as topo:
        h1, h2, dev = setup(topo, kind, ("--queues", str(queues)) if queues else ())
        deadline = time.monotonic() + 15
        while h1.run(f"ping -n -c1 -W1 {OVERLAY[1]}", timeout=5).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: {OVERLAY[1]} does not answer before the storm")
        calm = ping(h1, seconds)
        gen = h1.popen(python("-m", "bench.storm", "--generate", dev, "--rate", str(rate),
                              "--seconds", str(seconds + 2)),
                       stdout=subprocess.PIPE, text=True)
        stop = threading.Event()
        flusher = None
        if kind != "kernel":
            flusher = threading.Thread(target=_flusher, args=(h1, dev, stop), daemon=True)
            flusher.start()
        time.sleep(1.0)                 # the storm is up to speed before the pings start
        loaded = ping(h1, seconds)
        stop.set()
        out, _ = gen.communicate(timeout=seconds + 60)
        if flusher:
            flusher.join()
        offered = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        counters = vxtun_counters(h1, dev) if kind != "kernel" else {}
        if counters.get("tap", {}).get("queue_reads") is not None:
            counters["queues"] = len(counters["tap"]["queue_reads"])
        if kind == "kernel":
            link = json.loads(h1.sh(f"ip -j -s link show dev {dev}"))[0]
            counters = {"tx_dropped": link.get("stats64", {}).get("tx", {}).get("dropped")}
    ratio = (loaded["p50_ms"] / calm["p50_ms"]
             if loaded["p50_ms"] and calm["p50_ms"] else None)
    seen = accounted(counters)
    if seen is not None and offered.get("seconds"):
        offered["accounted_rate"] = seen / offered["seconds"]
    return {"kind": kind, "storm": offered, "unloaded": calm, "storm_ping": loaded,
            "p50_ratio": ratio, "counters": counters,
            "target_met": loaded["loss"] <= 0.01 and ratio is not None and ratio <= 2.0}


def run_kinds(what: str, kinds: list[str], fn) -> list[dict]:
    """``fn(kind)`` for each kind, one after the other; a failure is that kind's result."""
    results = []
    for kind in kinds:
        print(f"{what}: {kind} ...", file=sys.stderr, flush=True)
        try:
            results.append(fn(kind))
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
            results.append({"kind": kind, "error": str(e).splitlines()[0]})
    return results


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def report(results: list[dict]) -> str:
    lines = ["| VTEP | queues | storm s | offered/s | taken/s | max burst | accounted/s "
             "| loss unloaded | loss storm | p50 unloaded ms "
             "| p50 storm ms | p50 ratio | p99 storm ms | target |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['kind']} | error: {r['error']} |||||||||||||")
            continue
        s, u, g = r["storm"], r["unloaded"], r["storm_ping"]
        q = r["counters"].get("queues")
        lines.append(
            f"| {r['kind']} | {q or '-'} | {_fmt(s.get('seconds'), '.1f')} | "
            f"{_fmt(s.get('offered_rate'), '.0f')}"
            f"{' (generator-limited)' if s.get('generator_limited') else ''} | "
            f"{_fmt(s.get('taken_rate'), '.0f')} | {s.get('max_burst', '-')} | "
            f"{_fmt(s.get('accounted_rate'), '.0f')} | {u['loss']:.1%} | {g['loss']:.1%} | "
            f"{_fmt(u['p50_ms'])} | {_fmt(g['p50_ms'])} | {_fmt(r['p50_ratio'], '.2f')} | "
            f"{_fmt(g['p99_ms'])} | {'met' if r['target_met'] else 'missed'} |")
    for r in results:
        if r.get("counters"):
            lines.append(f"\n{r['kind']} counters: {json.dumps(r['counters'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.storm", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=200000.0, help="storm frames/s (200000)")
    p.add_argument("--seconds", type=float, default=10.0, help="ping time per phase (10)")
    p.add_argument("--only", default=",".join(KINDS), help="kinds: fast,pure,kernel")
    p.add_argument("--queues", type=int, default=0,
                   help="vxtun up --queues for the vxtun kinds (default: vxtun's own choice)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--generate", metavar="DEV", help=argparse.SUPPRESS)
    p.add_argument("--with-miss", metavar="IP", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.generate:
        print(json.dumps(generate(a.generate, a.rate, a.seconds, a.with_miss)), flush=True)
        return 0
    kinds = [k.strip() for k in a.only.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        p.error(f"unknown kind {bad[0]!r} (say {', '.join(KINDS)})")
    results = run_kinds("storm", kinds,
                        lambda kind: measure(kind, a.rate, a.seconds,
                                             a.queues if kind != "kernel" else 0))
    print(report(results))
    if a.json:
        print(json.dumps(results, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
