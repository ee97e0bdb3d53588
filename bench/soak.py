"""A soak: every kind of traffic at once for N minutes, and whether vxtun stays whole.

    python3 -m bench.soak --minutes N [--only fast,pure] [--storm-rate 20000] [--json]

For each kind of vxtun (``fast``: the fast path, ``pure``: ``VXTUN_PUREPYTHON=1``), a fresh
topology (bench/storm.py's): h1 runs vxtun (``--proxy --l3miss --maxaddress 512
--ageing 20``), h2 a kernel vxlan device, overlay 10.20.1.1 / 10.20.1.2.  For N minutes, at
once:

* TCP both ways: transfers of 4 MB, h1 -> h2 and h2 -> h1, one after the other in each
  direction, each compared by length and sha256 (vxtun.lab.traffic.tcp_transfer);
* a MAC flood within ``maxaddress``: VXLAN broadcasts from h2's underlay address, 200 new
  random source MACs a second (learned, refused past 512, aged out after 20 s);
* an ARP storm on h1's vxtun0 (bench/storm.py's generator, ``--storm-rate`` frames/s) for
  the proxied targets, with a miss among them (10.20.1.250, no entry: an L3 miss);
* control commands in a loop: ``show``, ``stats``, ``fdb show``, ``neigh show``, a
  ``neigh add`` and ``del``, ``fdb add`` and ``del``;
* a ``vxtun monitor`` that never reads its pipe (events must be lost, not memory).

Every 5 s it samples the RSS of vxtun's dataplane process (``vxtun show``'s pid).  It reports
the RSS over time, the slope after warm-up (the first quarter, at least 20 s) by least
squares (numpy), whether RSS is flat (it grows by less than 5% of its mean or 4 MB over the
measured span), ``vxtun stats``'s drops by reason, the kernel VTEP's drop counters, the
transfers and their byte errors (must be 0).  Exit status 0 when every kind ran with no byte
error and a flat RSS, 1 otherwise.  On a loaded machine the rates mean little; the byte errors
and the RSS slope still do.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np

from bench import storm

KINDS = ("fast", "pure")
MAXADDRESS = 512
SAMPLE = 5.0
TRANSFER = 4 << 20
MISS_IP = "10.20.1.250"


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def flatness(samples: list[tuple[float, int]], seconds: float) -> dict:
    """Least-squares slope of RSS after warm-up, and whether it is flat."""
    warm = max(20.0, seconds / 4)
    pts = np.array([(t, kb) for t, kb in samples if t >= warm], dtype=float)
    if len(pts) < 3:
        return {"flat": None, "why": "too few samples after warm-up (run longer)",
                "warmup_s": warm}
    t, kb = pts[:, 0], pts[:, 1]
    slope, _ = np.polyfit(t, kb, 1)                 # KB per second
    span = t[-1] - t[0]
    growth = slope * span
    mean = float(kb.mean())
    return {"warmup_s": warm, "mean_kb": round(mean), "min_kb": int(kb.min()),
            "max_kb": int(kb.max()), "std_kb": round(float(kb.std()), 1),
            "slope_kb_per_min": round(float(slope) * 60, 1),
            "growth_kb": round(float(growth)),
            "flat": bool(growth < max(0.05 * mean, 4096))}


class Loop(threading.Thread):
    """Run ``step()`` until stopped; count what it returns and the errors it raises."""

    def __init__(self, name: str, step, pause: float = 0.0) -> None:
        super().__init__(name=name, daemon=True)
        self.step, self.pause = step, pause
        self.stop = threading.Event()
        self.results: list = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.results.append(self.step())
            except Exception as e:          # noqa: BLE001 - every failure is reported
                self.errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
            if self.stop.wait(self.pause):
                break


def soak(kind: str, minutes: float, storm_rate: float) -> dict:
    from vxtun.lab import traffic
    from vxtun.lab.netns import Topology, python
    seconds = minutes * 60
    with Topology("soak") as topo:
        h1, h2, dev = storm.setup(topo, kind, ("--l3miss", "--maxaddress", str(MAXADDRESS),
                                               "--ageing", "20"))
        pid = int(json.loads(h1.cmd("show", "dev", dev, "-j"))[0]["pid"])
        deadline = time.monotonic() + 15
        while h1.run(f"ping -n -c1 -W1 {storm.OVERLAY[1]}", timeout=5).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: the overlay does not answer")
        monitor = h1.popen(python("-m", "vxtun", "monitor", "dev", dev),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)   # never read
        gen = h1.popen(python("-m", "bench.storm", "--generate", dev, "--rate", str(storm_rate),
                              "--seconds", str(seconds), "--with-miss", MISS_IP),
                       stdout=subprocess.PIPE, text=True)
        seed = iter(range(1, 1 << 30))

        def there():
            t = traffic.tcp_transfer(h1, h2, storm.OVERLAY[1], TRANSFER, 5301, next(seed))
            return (t.sent, t.received, t.identical)

        def back():
            t = traffic.tcp_transfer(h2, h1, storm.OVERLAY[0], TRANSFER, 5302, next(seed))
            return (t.sent, t.received, t.identical)

        def flood():
            return traffic.run_in(h2, "vxlan-flood", storm.UNDERLAY[0], 4789, storm.VNI, 200)

        def control():
            for words in (["show"], ["stats", "-j"], ["fdb", "show"], ["neigh", "show"],
                          ["neigh", "add", "10.20.3.1", "lladdr", "02:00:00:00:03:01", "dev",
                           dev],
                          ["neigh", "del", "10.20.3.1", "dev", dev],
                          ["fdb", "add", "02:00:00:00:03:02", "dst", storm.UNDERLAY[1], "dev",
                           dev],
                          ["fdb", "del", "02:00:00:00:03:02", "dev", dev]):
                r = h1.run_vxtun(*words, timeout=30)
                if r.returncode != 0:
                    raise RuntimeError(f"vxtun {' '.join(words)}: {r.stderr.strip()}")
            return True

        loops = [Loop("tcp-there", there), Loop("tcp-back", back), Loop("flood", flood, 1.0),
                 Loop("control", control, 0.2)]
        start = time.monotonic()
        for lp in loops:
            lp.start()
        samples = []
        while (now := time.monotonic() - start) < seconds:
            kb = rss_kb(pid)
            if kb is None:
                break                       # the dataplane died: reported below
            samples.append((round(now, 1), kb))
            time.sleep(min(SAMPLE, max(0.0, seconds - now)))
        for lp in loops:
            lp.stop.set()
        for lp in loops:
            lp.join(timeout=120)
        out, _ = gen.communicate(timeout=60)
        alive = rss_kb(pid) is not None
        st = json.loads(h1.cmd("stats", "dev", dev, "-j", check=False) or "[{}]")[0] \
            if alive else {}
        link = json.loads(h2.sh("ip -j -s link show dev vxlan0"))[0].get("stats64", {})
        monitor.kill()
    transfers = loops[0].results + loops[1].results
    return {
        "kind": kind, "seconds": seconds, "alive": alive,
        "rss": {"samples": samples, **flatness(samples, seconds)},
        "transfers": len(transfers),
        "bytes": sum(t[0] for t in transfers),
        "byte_errors": sum(1 for t in transfers if not t[2]),
        "storm": json.loads(out.strip().splitlines()[-1]) if out.strip() else {},
        "drops": {k: v for k, v in st.get("drops", {}).items() if v},
        "counters": {k: st.get(k) for k in ("proxy_replies", "l3miss", "punted", "punts_lost",
                                            "tap", "events", "fdb") if k in st},
        "kernel_vtep": {d: link.get(d, {}) for d in ("rx", "tx")},
        "loop_errors": {lp.name: lp.errors[:5] + ([f"... {len(lp.errors)} in all"]
                                                  if len(lp.errors) > 5 else [])
                        for lp in loops if lp.errors},
    }


def report(results: list[dict]) -> str:
    lines = ["| vxtun | ran s | alive | transfers | MB | byte errors | RSS mean MB | "
             "RSS slope KB/min | flat | storm taken/s |", "|---" * 10 + "|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['kind']} | error: {r['error']} ||||||||")
            continue
        rs = r["rss"]
        mean = rs.get("mean_kb")
        lines.append(
            f"| {r['kind']} | {r['seconds']:.0f} | {r['alive']} | {r['transfers']} | "
            f"{r['bytes'] / 1e6:.0f} | {r['byte_errors']} | "
            f"{'-' if mean is None else f'{mean / 1024:.1f}'} | "
            f"{rs.get('slope_kb_per_min', '-')} | {rs.get('flat')} | "
            f"{r['storm'].get('taken_rate', 0):.0f} |")
    for r in results:
        if "error" in r:
            continue
        lines.append(f"\n{r['kind']}: drops {json.dumps(r['drops'])}; "
                     f"counters {json.dumps(r['counters'])}")
        lines.append(f"{r['kind']}: RSS (s, KB) {r['rss']['samples']}")
        if r["loop_errors"]:
            lines.append(f"{r['kind']}: errors {json.dumps(r['loop_errors'])}")
    return "\n".join(lines)


def ok(r: dict) -> bool:
    return ("error" not in r and r["alive"] and r["byte_errors"] == 0 and r["transfers"] > 0
            and r["rss"].get("flat") is not False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, required=True, help="how long each kind runs")
    p.add_argument("--only", default=",".join(KINDS), help="kinds: fast,pure")
    p.add_argument("--storm-rate", type=float, default=20000.0, help="ARP frames/s (20000)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.only.split(",") if k.strip()]
    if any(k not in KINDS for k in kinds) or a.minutes <= 0:
        p.error(f"--only takes {', '.join(KINDS)}; --minutes must be positive")
    results = storm.run_kinds(f"soak ({a.minutes:g} min)", kinds,
                              lambda kind: soak(kind, a.minutes, a.storm_rate))
    print(report(results))
    if a.json:
        print(json.dumps(results, indent=1))
    return 0 if all(ok(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
