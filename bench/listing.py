"""How long ``vxtun fdb show`` of a large FDB takes, and how much it holds up the dataplane.

    python3 -m bench.listing                          # 10k, 100k and 1M entries, both dataplanes
    python3 -m bench.listing --sizes 1000000 --only fast

For each size, a fresh topology: a kernel VTEP on h1 and vxtun on h2 (learning, ageing long
enough to outlast the run).  h1 sends VXLAN datagrams from random source MACs until vxtun's
FDB holds the size (``vxtun fdb show count``), then ``ping -i 0.01`` runs from h1 to vxtun's
overlay address while ``vxtun fdb show dev vxtun0 > /dev/null`` lists the table.  Reported:
the listing's wall time and line count, and ping's worst and median RTT during the listing
next to the same figures without it (the stall a listing causes; before paging, 100k entries
gave one ping of 1.4 s on the pure dataplane and failed above 2,240 entries).  Figures on a
loaded machine mean little: compare them run against run on the same machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

from vxtun.lab import traffic
from vxtun.lab.netns import Topology, child_env, python

A, B = "192.0.2.1", "192.0.2.2"
OVERLAY_A, OVERLAY_B = "10.20.1.1", "10.20.1.2"
DATAPLANES = {"fast": {}, "pure": {"VXTUN_PUREPYTHON": "1"}}


def setup(topo: Topology, env: dict):
    """h1 with a kernel VTEP, h2 with vxtun (learning, no ageing within a run)."""
    h1 = topo.host("h1", f"{A}/24")
    h2 = topo.host("h2", f"{B}/24")
    h1.sh(f"ip link add vxlan0 type vxlan id 42 dstport 4789 remote {B} local {A} dev eth0")
    h1.sh(f"ip addr add {OVERLAY_A}/24 dev vxlan0")
    h1.sh("ip link set vxlan0 up")
    up = h2.vxtun("--vni", "42", "--remote", A, "--local", B, "--dev", "eth0", "--dstport",
                  "4789", "--address", f"{OVERLAY_B}/24", "--ageing", "100000", env=env)
    topo.procs.append(up)
    return h1, h2, up


def fdb_count(host) -> int:
    return json.loads(host.cmd("fdb", "show", "dev", "vxtun0", "count", "-j"))[0]["count"]


def fill(src, dst, n: int, timeout: float = 900) -> int:
    """Learn at least ``n`` entries into ``dst``'s vxtun0 from VXLAN datagrams ``src`` sends
    (random source MACs), in rounds, since a busy receiver drops some; the count reached."""
    deadline = time.monotonic() + timeout
    have = fdb_count(dst)
    while have < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the FDB reached {have} entries, not {n}, in {timeout} s")
        traffic.run_in(src, "vxlan-flood", B, 4789, 42, min(n - have + 100, 50_000),
                       timeout=600)
        time.sleep(0.2)
        have = fdb_count(dst)
    # a busy VTEP may still be learning what its socket holds: wait until the count stays put
    while True:
        time.sleep(1.0)
        now = fdb_count(dst)
        if now == have:
            return have
        have = now


def _rtts(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"time=([\d.]+) ms", text)]


def ping_during(src, fn, interval: float = 0.01) -> tuple[list[float], int, int, object]:
    """RTTs (ms) of ``ping -i interval`` from ``src`` to vxtun's overlay address while
    ``fn()`` runs; also how many were sent and received, and ``fn``'s result."""
    p = src.popen(["ping", "-i", str(interval), "-W", "5", OVERLAY_B],
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)             # ARP resolved, pings flowing
    try:
        result = fn()
        time.sleep(0.2)
    finally:
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    sent, got = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return _rtts(out), sent, got, result


def list_table(host) -> tuple[float, int]:
    """``vxtun fdb show dev vxtun0 > /dev/null``-like: wall time and lines printed."""
    t0 = time.monotonic()
    p = subprocess.run(["ip", "netns", "exec", host.ns,
                        *python("-m", "vxtun", "fdb", "show", "dev", "vxtun0")],
                       capture_output=True, text=True, env=child_env(), timeout=1800)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"vxtun fdb show failed ({p.returncode}): {p.stderr.strip()}")
    return dt, p.stdout.count("\n")


def measure(size: int, dataplane: str) -> dict:
    topo = Topology("lst")
    try:
        h1, h2, _up = setup(topo, DATAPLANES[dataplane])
        t0 = time.monotonic()
        entries = fill(h1, h2, size)
        fill_s = time.monotonic() - t0
        idle, _, _, _ = ping_during(h1, lambda: time.sleep(2))
        rtts, sent, got, (secs, lines) = ping_during(h1, lambda: list_table(h2))
        return {"dataplane": dataplane, "entries": entries, "lines": lines,
                "list_s": round(secs, 2), "fill_s": round(fill_s, 1),
                "ping_sent": sent, "ping_received": got,
                "rtt_max_ms": max(rtts, default=None),
                "rtt_p50_ms": sorted(rtts)[len(rtts) // 2] if rtts else None,
                "idle_rtt_max_ms": max(idle, default=None),
                "idle_rtt_p50_ms": sorted(idle)[len(idle) // 2] if idle else None}
    finally:
        topo.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.listing", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--only", choices=sorted(DATAPLANES), help="one dataplane")
    ap.add_argument("--out", default="bench/results", help="where the JSON goes")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench.listing: run me as root (it creates namespaces)")
    rows = []
    print(f"{'dataplane':9} {'entries':>9} {'lines':>9} {'list s':>8} {'ping max ms':>12} "
          f"{'p50 ms':>7} {'idle max':>9} {'idle p50':>9} {'lost':>5}", flush=True)
    for dp in [a.only] if a.only else sorted(DATAPLANES):
        for size in a.sizes:
            r = measure(size, dp)
            rows.append(r)
            print(f"{dp:9} {r['entries']:>9} {r['lines']:>9} {r['list_s']:>8} "
                  f"{r['rtt_max_ms']!s:>12} {r['rtt_p50_ms']!s:>7} "
                  f"{r['idle_rtt_max_ms']!s:>9} {r['idle_rtt_p50_ms']!s:>9} "
                  f"{r['ping_sent'] - r['ping_received']:>5}", flush=True)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"listing-{time.strftime('%Y%m%d-%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
