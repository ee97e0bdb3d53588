"""Packet-rate capacity: how many frames per second a VTEP encapsulates and decapsulates.

    sudo python3 -m bench.pps                      # kernel and vxtun, both directions, 64/1400 B
    sudo python3 -m bench.pps --quick --kind vxtun --direction decap --size 64

iperf3 cannot measure this: one iperf3 process offers about 120 kpps of 64-byte datagrams,
which every VTEP here keeps up with.  The generator is ``bench/pktgen.c``, compiled at run time
with gcc, which sendmmsg()s one pre-built packet 64 at a time:

* **decap**: VXLAN datagrams (VNI 42, an inner Ethernet/IPv4/UDP frame of SIZE bytes) from h1's
  namespace straight at the VTEP on h2 (192.0.2.2:4789).  *Delivered* is what the VTEP's device
  received (``rx_packets`` of vxtun's TAP, which tun_get_user() counts for every frame vxtun
  writes, or of the kernel's vxlan device, counted in vxlan_rcv()).
* **encap**: SIZE-byte Ethernet frames sent on the VTEP's own device on h1 with an AF_PACKET
  socket (PACKET_QDISC_BYPASS: straight to tun_net_xmit() or vxlan_xmit()), to a MAC no one
  knows, so they go to the default remote h2.  *Delivered* is ``rx_packets`` of h2's underlay
  veth: the datagrams that left the VTEP (nothing listens on h2, so they cost h2 little).

Each figure is *offered* (what the generator sent, per second) and *delivered* (per second).
When delivered is at least 95 % of offered and no send was refused (a TAP whose queue is full
makes AF_PACKET's send fail with ENOBUFS: vxtun did not read fast enough) the VTEP kept up and
the generator is the limit: the figure is then a lower bound of the VTEP's capacity and marked
so.  The same generator runs
against the kernel's vxlan device in the same run, which gives the ratio.

CPU: for vxtun, utime + stime of its dataplane process (all threads, /proc/<pid>/stat), so
*Mpps per CPU-second* = delivered packets / that time.  The kernel's VTEP has no process: its
work runs in the generator's system calls (veth delivers in the sender's context: veth_xmit ->
netif_rx, and the softirq runs when the call returns) and in softirq.  So for both kinds the
JSON also holds the generator's own CPU time (getrusage: its system calls and, unless the kernel
accounts IRQ time apart, the softirq work done on the way out of them) and the machine-wide
softirq seconds from /proc/stat, which on a shared machine include everybody else's.  The
per-CPU-second figure compared across kinds is delivered / (generator + VTEP process + softirq).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from vxtun.lab.netns import Topology, prerequisites

from .topology import DSTPORT, UNDERLAY, VNI, cpu_seconds, link_counters, make_vtep

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "pktgen.c"
KINDS = ("kernel", "vxtun")
DIRECTIONS = ("decap", "encap")
SIZES = (64, 1400)
KEPT_UP = 0.95          # delivered / offered at or above this: the generator is the limit


class PpsError(RuntimeError):
    pass


def build_c(source: Path, *flags: str) -> str:
    """Compile a helper of bench/ (once per source version) and return the binary's path."""
    src = source.read_bytes()
    d = Path(tempfile.gettempdir()) / f"vxtun-bench-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    exe = d / f"{source.stem}-{hashlib.sha256(src).hexdigest()[:16]}"
    if not exe.exists():
        tmp = exe.with_suffix(f".{os.getpid()}")
        p = subprocess.run(["gcc", "-O2", "-Wall", *flags, "-o", str(tmp), str(source)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise PpsError(f"gcc could not build {source}: {p.stderr.strip()[-400:]}")
        tmp.replace(exe)         # atomic: a concurrent run never executes half a file
    return str(exe)


def build_pktgen() -> str:
    """Compile bench/pktgen.c and return the binary's path."""
    return build_c(SOURCE)


def softirq_seconds() -> float:
    """Machine-wide softirq time so far (/proc/stat's ``cpu`` line, 7th value), in seconds."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[7]) / os.sysconf("SC_CLK_TCK")


def trial(exe: str, direction: str, vtep, gen_host, sink, sink_dev: str, size: int,
          seconds: float) -> dict:
    """One generator run on ``gen_host``: offered and delivered packets per second (delivered:
    ``rx_packets`` of ``sink_dev`` in ``sink``), and the CPU time spent."""
    if direction == "decap":
        cmd = f"{exe} udp {UNDERLAY[1]} {DSTPORT} {size} {seconds:g} {VNI}"
    else:
        cmd = f"{exe} packet {vtep.dev} {size} {seconds:g}"
    before = link_counters(sink, sink_dev)
    cpu0 = cpu_seconds(vtep.pid) if vtep.pid else None
    si0 = softirq_seconds()
    r = gen_host.run(cmd, timeout=seconds + 30)
    si1 = softirq_seconds()
    cpu1 = cpu_seconds(vtep.pid) if vtep.pid else None
    after = link_counters(sink, sink_dev)
    try:
        g = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        why = (r.stdout + r.stderr).strip()[-300:]
        raise PpsError(f"pktgen failed ({r.returncode}): {why}") from None
    secs = g["seconds"] or seconds
    delivered = after["rx_packets"] - before["rx_packets"]
    out = {
        "size": size, "seconds": secs, "sent": g["sent"], "send_errors": g["errors"],
        "offered_pps": g["sent"] / secs, "delivered": delivered,
        "delivered_pps": delivered / secs,
        "generator_cpu": g["cpu"], "softirq_cpu": si1 - si0,
        "vtep_cpu": (cpu1 - cpu0) if cpu0 is not None else None,
        "sink_drops": {k: after[k] - before[k] for k in after if "dropped" in k or "errors" in k},
    }
    # A refused send (ENOBUFS: the TAP's queue was full, tun_net_xmit dropped) means the VTEP
    # could not keep up, however much of what was accepted got through.
    out["generator_limited"] = delivered >= KEPT_UP * g["sent"] and not g["errors"]
    total = g["cpu"] + out["softirq_cpu"] + (out["vtep_cpu"] or 0.0)
    out["mpps_per_cpu_s"] = delivered / 1e6 / total if total > 0 else None
    if out["vtep_cpu"]:
        out["mpps_per_vtep_cpu_s"] = delivered / 1e6 / out["vtep_cpu"]
    return out


def measure(exe: str, kind: str, direction: str, sizes, seconds: float, trials: int,
            log) -> dict:
    """Every size of one (kind, direction) in one fresh topology: the median of ``trials``."""
    res: dict = {"kind": kind, "direction": direction}
    with Topology("pps") as topo:
        h1 = topo.host("h1", f"{UNDERLAY[0]}/24")
        h2 = topo.host("h2", f"{UNDERLAY[1]}/24")
        res["netns_prefix"] = topo.prefix
        if direction == "decap":
            # the generator on h1 sends at the VTEP on h2, whose device counts what it delivers
            vtep = make_vtep(kind, h2, 1)
            gen, sink, sink_dev = h1, h2, vtep.dev
        else:
            # frames injected into the VTEP on h1 leave as datagrams counted by h2's underlay
            vtep = make_vtep(kind, h1, 0)
            gen, sink, sink_dev = h1, h2, "eth0"
        res["dataplane"] = vtep.show.get("dataplane") if vtep.is_vxtun else "kernel"
        for size in sizes:
            runs = []
            for i in range(trials):
                t = trial(exe, direction, vtep, gen, sink, sink_dev, size, seconds)
                if not vtep.alive():
                    raise PpsError(vtep.why_dead())
                runs.append(t)
                log(f"pps {kind} {direction} {size} B run {i + 1}/{trials}: offered "
                    f"{t['offered_pps'] / 1e6:.3f} Mpps, delivered {t['delivered_pps'] / 1e6:.3f}"
                    f" Mpps{' (generator-limited)' if t['generator_limited'] else ''}")
            best = sorted(runs, key=lambda t: t["delivered_pps"])[len(runs) // 2]
            res[str(size)] = dict(best, runs=runs,
                                  delivered_pps=statistics.median(
                                      t["delivered_pps"] for t in runs))
        if vtep.is_vxtun:
            res["stats"] = vtep.stats()
    return res


def run_all(kinds, directions, sizes, seconds: float, trials: int, log) -> dict:
    """Every (direction, kind): ``{"decap": {"kernel": {...}, "vxtun": {...}}, ...}``; a
    failure is recorded under ``error`` and the others still run."""
    exe = build_pktgen()
    out: dict = {"seconds": seconds, "trials": trials, "sizes": list(sizes)}
    for direction in directions:
        for kind in kinds:
            try:
                r = measure(exe, kind, direction, sizes, seconds, trials, log)
            except Exception as e:      # one broken measurement must not cost the others
                log(f"pps {kind} {direction}: FAILED: {e}")
                r = {"kind": kind, "direction": direction, "error": str(e)}
            out.setdefault(direction, {})[kind] = r
    return out


def rows(pps: dict) -> list[dict]:
    """One row per (direction, size, kind): Mpps delivered and its ratio to the kernel's."""
    out = []
    for direction in DIRECTIONS:
        per = pps.get(direction) or {}
        for size in pps.get("sizes", SIZES):
            ref = (per.get("kernel") or {}).get(str(size), {}).get("delivered_pps")
            for kind, r in per.items():
                t = r.get(str(size))
                row = {"direction": direction, "size": size, "kind": kind,
                       "mpps": None, "offered": None, "ratio": None, "per_cpu": None,
                       "per_vtep_cpu": None, "note": ""}
                if t is None:
                    row["note"] = "error: " + " ".join(str(r.get("error", "?")).split())[:120]
                    out.append(row)
                    continue
                row["mpps"] = t["delivered_pps"] / 1e6
                row["offered"] = t["offered_pps"] / 1e6
                row["per_cpu"] = t.get("mpps_per_cpu_s")
                row["per_vtep_cpu"] = t.get("mpps_per_vtep_cpu_s")
                if ref:
                    row["ratio"] = t["delivered_pps"] / ref
                if t["generator_limited"]:
                    row["note"] = "generator-limited: the VTEP kept up, a lower bound"
                elif t.get("send_errors"):
                    row["note"] = (f"{t['send_errors']} sends refused (the VTEP's queue was "
                                   "full)")
                out.append(row)
    return out


def markdown(pps: dict) -> str:
    lines = ["| packet rate | size | VTEP | offered (Mpps) | delivered (Mpps) | ratio to kernel "
             "| target | result | Mpps per CPU-s (all) | Mpps per vxtun CPU-s | note |",
             "|---|---:|---|---:|---:|---:|---|---|---:|---:|---|"]
    for r in rows(pps):
        def f(x, fmt="{:.3f}"):
            return fmt.format(x) if x is not None else "—"
        tgt = "ratio >= 0.5" if r["size"] == 64 and r["kind"] != "kernel" else ""
        res = ""
        if tgt:
            res = "—" if r["ratio"] is None else ("PASS" if r["ratio"] >= 0.5 else "FAIL")
        lines.append(f"| {r['direction']} | {r['size']} B | {r['kind']} | {f(r['offered'])} | "
                     f"{f(r['mpps'])} | {f(r['ratio'], '{:.2f}')} | {tgt} | {res} | "
                     f"{f(r['per_cpu'])} | {f(r['per_vtep_cpu'])} | {r['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.pps", description=__doc__.split("\n")[0])
    ap.add_argument("--kind", action="append", choices=KINDS,
                    help="VTEP kinds to measure (repeat; default: kernel and vxtun)")
    ap.add_argument("--direction", action="append", choices=DIRECTIONS,
                    help="decap, encap (repeat; default: both)")
    ap.add_argument("--size", action="append", type=int, choices=SIZES,
                    help="inner frame size in bytes (repeat; default: 64 and 1400)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per trial (default 3)")
    ap.add_argument("--trials", type=int, default=3, help="median of this many (default 3)")
    ap.add_argument("--quick", action="store_true", help="1 trial of 1 s: a smoke run")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args(argv)
    missing = prerequisites()
    if missing:
        print(f"bench.pps: this machine lacks: {', '.join(missing)}", file=sys.stderr)
        return 2
    secs, trials = (1.0, 1) if a.quick else (a.seconds, a.trials)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        res = run_all(a.kind or KINDS, a.direction or DIRECTIONS, a.size or SIZES, secs,
                      trials, log)
    except PpsError as e:
        print(f"bench.pps: {e}", file=sys.stderr)
        return 2
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res))
    failed = any("error" in r for d in DIRECTIONS for r in (res.get(d) or {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
