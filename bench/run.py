"""vxtun against the kernel's vxlan, side by side, in one run.

    sudo python -m bench.run                 # everything, about 30 minutes
    sudo python -m bench.run --vteps 0 --no-pps          # without the slowest parts: about 15
    sudo python -m bench.run --quick         # short runs, for development (a few minutes)
    sudo python -m bench.run --only kernel-kernel --only vxtun-kernel --out /tmp/b

For each pairing (sender-receiver: kernel-kernel is the reference, kernel-vxtun, vxtun-kernel,
vxtun-vxtun, pure-kernel, kernel-pure, and busy polling: kernel-busy, busy-kernel, busy-busy)
it builds a fresh two-host topology in namespaces (see ``bench/topology.py``) and measures TCP
with 1, 4 and 16 streams, the highest UDP rate with at most 1 % loss at 64 and 1400 bytes, ping
round trips idle and with a TCP stream the other way, the vxtun processes' CPU at rest, during
ping and per gigabyte; then 16 VTEPs per namespace sharing the port (``--vteps``) and the
packet-rate capacity of the kernel and vxtun (``bench/pps.py``).
It writes ``bench-<time>.json``, ``.md`` and ``.png`` into ``bench/results/`` (or ``--out``)
and prints the Markdown table: every figure, its ratio to kernel<->kernel and, where
``bench/report.py`` sets one, the target and PASS/FAIL.  Exit status: 0 when every
measurement ran (whatever the targets say), 1 when one failed, 2 for bad usage or a machine
that cannot run it, 130 when interrupted (partial results are still written).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from vxtun.lab.netns import Topology, prerequisites

from . import measure, report
from . import pps as ppsmod
from .topology import (
    BUSY_POLL_US, DEFAULT_PAIRINGS, ENV, REFERENCE, UNDERLAY, Pairing, cpu_seconds, label,
    make_vtep, overlay, parse_pairing)

HERE = Path(__file__).resolve().parent

FULL = {"tcp_runs": 3, "tcp_seconds": 5, "udp_seconds": 3, "udp_trials": 8,
        "ping_count": 1000, "ping_interval": 0.002, "rest_seconds": 3,
        "pps_seconds": 3, "pps_trials": 3}
QUICK = {"tcp_runs": 1, "tcp_seconds": 1, "udp_seconds": 1, "udp_trials": 3,
         "ping_count": 200, "ping_interval": 0.002, "rest_seconds": 1,
         "pps_seconds": 1, "pps_trials": 1}
# The pairings whose VTEPs are also measured 16 at a time in one namespace (--vteps).
VTEP_PAIRINGS = ("kernel-kernel", "kernel-vxtun", "vxtun-kernel", "vxtun-vxtun")
# Where the UDP search starts (payload bits/s); it doubles from here.
UDP_START = {64: 20e6, 1400: 200e6}


class Progress:
    """One line per step on stderr, with the time since the start."""

    def __init__(self, stream=sys.stderr) -> None:
        self.t0 = time.monotonic()
        self.stream = stream
        self.where = ""

    def __call__(self, msg: str) -> None:
        dt = time.monotonic() - self.t0
        try:
            print(f"[{int(dt // 60):2d}:{dt % 60:04.1f}] {self.where:<16} {msg}",
                  file=self.stream, flush=True)
        except OSError:
            pass        # progress is a courtesy: a closed terminal must not stop the run


def machine() -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout
    git = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "iperf3": (iperf.splitlines() or ["iperf3 ?"])[0].strip(),
        "git": git or "?",
        "loadavg_before": _loadavg(),
    }


WAKEUP = HERE / "wakeup.c"


def wakeup_cost(rounds: int = 500) -> dict:
    """bench/wakeup.c: a round trip between two threads over pipes, every 2 ms as the pings
    come, through a peer asleep in read() and through one that spins; the difference is what
    one hop through a sleeping thread costs this machine (vxtun's threads sleep when idle,
    the kernel's vxlan has no thread to wake).  {} when it cannot run."""
    try:
        exe = ppsmod.build_c(WAKEUP, "-pthread")
        out = subprocess.run([exe, str(rounds), "2000"], capture_output=True, text=True,
                             timeout=60).stdout.split()
        a50, a99, s50, s99 = (float(x) for x in out)
    except (ppsmod.PpsError, OSError, subprocess.SubprocessError, ValueError):
        return {}
    return {"asleep_p50_us": a50, "asleep_p99_us": a99, "spinning_p50_us": s50,
            "spinning_p99_us": s99}


def cpu_times() -> tuple[float, float]:
    """(all, steal) jiffies of /proc/stat's ``cpu`` line: the share of time the hypervisor
    gave this machine's vCPUs to somebody else is (steal delta) / (all delta)."""
    try:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    return sum(v[:8]), (v[7] if len(v) > 7 else 0.0)


def steal_pct(before: tuple[float, float]) -> float | None:
    after = cpu_times()
    total = after[0] - before[0]
    return 100.0 * (after[1] - before[1]) / total if total > 0 else None


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def estimate(cfg: dict, pairings: int, vteps: int = 0, pps: bool = False,
             per_host: int = 16, ipv6: int = 0) -> str:
    """A rough duration: every test plus iperf3's start-up and the topology; ``vteps``: how
    many pairings also run the many-VTEP test, with ``per_host`` VTEPs on each host (about
    6 s to start a pair); ``pps``: the packet-rate part too; ``ipv6``: how many pairings run
    again over the IPv6 underlay."""
    per = (3 * cfg["tcp_runs"] * (cfg["tcp_seconds"] + 0.6)
           + 2 * cfg["udp_trials"] * 0.8 * (cfg["udp_seconds"] + 0.6)
           + 2 * cfg["ping_count"] * cfg["ping_interval"] * 1.3 + 6 + cfg["rest_seconds"])
    secs = per * pairings + vteps * (cfg["tcp_runs"] * (cfg["tcp_seconds"] + 1) + 6 * per_host)
    secs += ipv6 * (cfg["tcp_runs"] * (cfg["tcp_seconds"] + 0.6)
                    + cfg["ping_count"] * cfg["ping_interval"] * 1.3 + 6)
    if pps:
        secs += 4 * (8 + 2 * cfg["pps_trials"] * (cfg["pps_seconds"] + 0.5))
    return f"{secs / 60:.0f} minutes" if secs >= 90 else f"{secs:.0f} s"


def fastpath_problem() -> str | None:
    """Why the fast path cannot run here, or None.  Every ``vxtun up`` the bench starts imports
    the ``vxtun`` this process imported (``vxtun/lab/netns.py``'s ``python()``): from the
    repository root, this source tree, so the module must be built in place."""
    try:
        import vxtun._fastpath  # noqa: F401
    except ImportError as e:
        return (f"the Cython fast path is not built ({e}): run `pip install -e '.[bench]'` "
                "in the repository root")
    return None


def missing_tools() -> list[str]:
    return [t for t in ("iperf3", "ping", "ss", "ip") if shutil.which(t) is None]


def bench_pairing(name: str, cfg: dict, log: Progress, res: dict, where: str = "") -> None:
    """Every measurement of one pairing, into ``res`` (so what was measured survives a crash);
    a failed measurement is recorded and the others still run."""
    res["errors"] = {}
    log.where = where or label(name)
    log("building topology")
    ct0 = cpu_times()
    try:
        _bench_pairing(name, cfg, log, res)
    finally:
        res["steal_pct"] = steal_pct(ct0)
        if res["steal_pct"] is not None:
            log(f"CPU steal during the pairing: {res['steal_pct']:.1f}% (the hypervisor ran "
                "somebody else on our vCPUs)")


def _bench_pairing(name: str, cfg: dict, log: Progress, res: dict) -> None:
    with Pairing(name) as pr:
        res["netns_prefix"] = pr.topo.prefix
        res["loadavg"] = _loadavg()
        res["vteps"] = [{"host": v.host.name, "kind": v.kind, "dev": v.dev,
                         "dataplane": v.show.get("dataplane"),
                         "features": v.show.get("features"), "pid": v.pid} for v in pr.vteps]
        pr.wait_reachable()
        server = measure.IperfServer(pr.h2, pr.server_ip)
        server.start()

        def step(key: str, fn) -> None:
            pr.check_alive()
            try:
                res[key] = fn()
            except (measure.MeasureError, KeyError, ValueError, subprocess.SubprocessError) as e:
                res["errors"][key] = str(e)
                log(f"{key}: FAILED: {e}")
                pr.check_alive()          # a crashed VTEP ends the pairing with its message

        def cpu_now() -> dict:
            return {side: cpu_seconds(v.pid) for side, v in
                    (("sender", pr.sender), ("receiver", pr.receiver)) if v.pid}

        def cpu_share(before: dict, seconds: float) -> dict:
            """Percent of one CPU each vxtun process used since ``before``."""
            after = cpu_now()
            return {side: 100.0 * (after[side] - before[side]) / seconds for side in before}

        def ping() -> dict:
            c0, t0 = cpu_now(), time.monotonic()
            r = measure.ping_rtt(pr.h1, pr.server_ip, cfg["ping_count"], cfg["ping_interval"])
            r["cpu_pct"] = cpu_share(c0, time.monotonic() - t0)
            log(f"ping: p50 {r['p50_us']:.1f} µs, p99 {r['p99_us']:.1f} µs "
                f"({r['received']}/{r['count']} replies)"
                + "".join(f"; vxtun {side} CPU {pct:.1f}%" for side, pct in r["cpu_pct"].items()))
            return r

        def rest() -> dict:
            """CPU use with no traffic at all: what busy polling must not raise."""
            c0, t0 = cpu_now(), time.monotonic()
            time.sleep(cfg["rest_seconds"])
            r = {"seconds": time.monotonic() - t0}
            r["cpu_pct"] = cpu_share(c0, r["seconds"])
            log("at rest:" + ("".join(f" vxtun {side} CPU {pct:.2f}%"
                                      for side, pct in r["cpu_pct"].items()) or " (no vxtun)"))
            return r

        def ping_load() -> dict:
            r = measure.ping_under_load(pr.h1, server, cfg["ping_count"], cfg["ping_interval"])
            log(f"ping under load: p50 {r['p50_us']:.1f} µs, p99 {r['p99_us']:.1f} µs "
                f"({r['received']}/{r['count']} replies), TCP the other way "
                f"{r['load']['bps'] / 1e9:.2f} Gbit/s")
            return r

        def tcp(streams: int) -> dict:
            runs, cpu_before, cpu_used = [], {}, {"sender": 0.0, "receiver": 0.0}
            for i in range(cfg["tcp_runs"]):
                for side, v in (("sender", pr.sender), ("receiver", pr.receiver)):
                    if v.pid:
                        cpu_before[side] = cpu_seconds(v.pid)
                r = measure.tcp_run(pr.h1, server, streams, cfg["tcp_seconds"])
                for side, v in (("sender", pr.sender), ("receiver", pr.receiver)):
                    if v.pid:
                        cpu_used[side] += cpu_seconds(v.pid) - cpu_before[side]
                runs.append(r)
                log(f"tcp {streams} stream{'s' if streams > 1 else ''} run {i + 1}/"
                    f"{cfg['tcp_runs']}: {r['bps'] / 1e9:.2f} Gbit/s, "
                    f"{r['retransmits']} retransmits")
            out = {"streams": streams, "bps": statistics.median(r["bps"] for r in runs),
                   "runs": runs}
            if streams == 1:
                moved = sum(r["bytes"] for r in runs)
                res["cpu"] = {side: {"seconds": s, "bytes": moved,
                                     "s_per_gb": s / (moved / 1e9) if moved else None}
                              for side, s in cpu_used.items()
                              if (pr.sender if side == "sender" else pr.receiver).pid}
                for side, c in res["cpu"].items():
                    log(f"vxtun CPU, {side}: {c['seconds']:.2f} s for {moved / 1e9:.2f} GB = "
                        f"{c['s_per_gb'] or 0:.2f} s/GB")
            return out

        window = measure.udp_window(pr.h1, pr.h2)

        def udp(size: int) -> dict:
            s = measure.UdpSearch(size, cfg["udp_seconds"], UDP_START[size], cfg["udp_trials"],
                                  window=window)
            r = s.run(pr.h1, server, log)
            log(f"udp {size} B: {r['bps'] / 1e6:.1f} Mbit/s, {r['pps'] / 1e3:.1f} kpps "
                f"with <= 1% loss{' (sender-limited)' if r['sender_limited'] else ''}")
            return r

        step("rest", rest)
        step("ping", ping)
        step("ping_load", ping_load)
        step("tcp1", lambda: tcp(1))
        step("tcp4", lambda: tcp(4))
        step("tcp16", lambda: tcp(16))
        step("udp64", lambda: udp(64))
        step("udp1400", lambda: udp(1400))
        for i, v in enumerate(pr.vteps):
            res["vteps"][i]["stats"] = v.stats()
        res["counters"] = pr.counters()
        log("done")
    if not res["errors"]:
        del res["errors"]


def bench_ipv6(name: str, cfg: dict, log: Progress, res: dict) -> None:
    """The pairing again over an IPv6 underlay (UNDERLAY6; MTU 1430 on every VTEP): TCP 1
    stream and idle ping, to compare with kernel<->kernel over the same IPv6 underlay.  Over
    IPv6, vxtun's super-frames leave by UDP-tunnel GSO only where the kernel lets its own
    device forward (vxtun/io/gso.py): ``egress`` records what each vxtun said."""
    log.where = f"{label(name)} IPv6"
    log("building topology (IPv6 underlay)")
    with Pairing(name, family=6) as pr:
        res["netns_prefix"] = pr.topo.prefix
        res["egress"] = {v.host.name: v.show.get("egress") for v in pr.vteps if v.is_vxtun}
        pr.wait_reachable()
        server = measure.IperfServer(pr.h2, pr.server_ip)
        server.start()
        runs = []
        for i in range(cfg["tcp_runs"]):
            r = measure.tcp_run(pr.h1, server, 1, cfg["tcp_seconds"])
            runs.append(r)
            log(f"tcp 1 stream run {i + 1}/{cfg['tcp_runs']}: {r['bps'] / 1e9:.2f} Gbit/s, "
                f"{r['retransmits']} retransmits")
            pr.check_alive()
        res["tcp1"] = {"streams": 1, "bps": statistics.median(r["bps"] for r in runs),
                       "runs": runs}
        r = res["ping"] = measure.ping_rtt(pr.h1, pr.server_ip, cfg["ping_count"],
                                           cfg["ping_interval"])
        log(f"ping: p50 {r['p50_us']:.1f} µs, p99 {r['p99_us']:.1f} µs "
            f"({r['received']}/{r['count']} replies)")
        pr.check_alive()


def bench_vteps(name: str, n: int, cfg: dict, log: Progress, res: dict) -> None:
    """``n`` VTEPs on each host, all in one namespace sharing port 4789 (VNI 42.., overlay
    10.20.<j+1>.0/24), one TCP stream over each at once: the aggregate goodput, to compare with
    one VTEP carrying ``n`` streams (tcp16 of the pairing)."""
    log.where = f"{label(name)} x{n}"
    log(f"building {n} VTEPs per host")
    a, b = parse_pairing(name)
    topo = Topology("bench")
    try:
        h1 = topo.host("h1", f"{UNDERLAY[0]}/24")
        h2 = topo.host("h2", f"{UNDERLAY[1]}/24")
        res["netns_prefix"] = topo.prefix
        vteps = []
        for j in range(n):
            vteps += [make_vtep(a, h1, 0, j), make_vtep(b, h2, 1, j)]
        servers = []
        for j in range(n):
            dst = overlay(1, j)
            r = h1.run(f"ping -n -c 3 -i 0.2 -W 1 {dst}", timeout=15)
            if r.returncode != 0 and h1.run(f"ping -n -c 3 -W 1 {dst}", timeout=15).returncode:
                raise RuntimeError(f"{dst} does not answer over VTEP {j}")
            srv = measure.IperfServer(h2, dst, measure.IPERF_PORT + j)
            srv.start()
            servers.append(srv)
        res["streams"] = n
        res["runs"] = []
        for i in range(cfg["tcp_runs"]):
            r = measure.tcp_parallel(h1, servers, cfg["tcp_seconds"])
            res["runs"].append(r)
            log(f"{n} VTEPs x 1 stream run {i + 1}/{cfg['tcp_runs']}: "
                f"{r['bps'] / 1e9:.2f} Gbit/s in all")
            for v in vteps:
                if not v.alive():
                    raise RuntimeError(v.why_dead())
        res["bps"] = statistics.median(r["bps"] for r in res["runs"])
    finally:
        topo.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="short runs (1 x 1 s TCP, 3 UDP trials of 1 s, 200 pings): for "
                         "development and smoke tests, not for numbers")
    ap.add_argument("--only", action="append", metavar="PAIRING",
                    help="measure only this SENDER-RECEIVER pairing (kinds: kernel, vxtun, pure); "
                         "repeat or separate with commas.  kernel-kernel is added when absent, "
                         "since every ratio needs it (unless --no-reference). Default: "
                         + ", ".join(DEFAULT_PAIRINGS))
    ap.add_argument("--no-reference", action="store_true",
                    help="with --only: do not add kernel-kernel (no ratios then)")
    ap.add_argument("--out", default=str(HERE / "results"), metavar="DIR",
                    help="where to write the JSON, Markdown and PNG (default bench/results/)")
    ap.add_argument("--no-pps", action="store_true",
                    help="skip the packet-rate capacity (bench/pps.py: kernel and vxtun, "
                         "decap and encap, 64 and 1400 B)")
    ap.add_argument("--vteps", type=int, default=16, metavar="N",
                    help="also measure N VTEPs per namespace sharing the port, one TCP stream "
                         f"each, for {', '.join(VTEP_PAIRINGS)} among the pairings run "
                         "(default 16; 0: skip)")
    ap.add_argument("--no-ipv6", action="store_true",
                    help=f"skip the IPv6 underlay (TCP 1 stream and ping over 2001:db8:1::/64 "
                         f"for {', '.join(VTEP_PAIRINGS)} among the pairings run)")
    ap.add_argument("--busy-poll", type=int, default=BUSY_POLL_US, metavar="US",
                    help="the busy-polling budget of the `busy` kind, in microseconds "
                         f"(VXTUN_BUSY_POLL_US; default {BUSY_POLL_US})")
    a = ap.parse_args(argv)
    ENV["busy"]["VXTUN_BUSY_POLL_US"] = str(a.busy_poll)

    names = list(DEFAULT_PAIRINGS)
    if a.only:
        names = []
        for item in a.only:
            for n in item.split(","):
                if not n.strip():
                    continue
                try:
                    k = "-".join(parse_pairing(n))
                except ValueError as e:
                    ap.error(str(e))
                if k not in names:
                    names.append(k)
        if REFERENCE not in names and not a.no_reference:
            names.insert(0, REFERENCE)
    # The reference first: a machine that cannot run it cannot run the rest either.
    names.sort(key=lambda n: n != REFERENCE)

    missing = prerequisites() + missing_tools()
    if missing:
        print(f"bench: this machine lacks: {', '.join(missing)}", file=sys.stderr)
        return 2

    cfg = dict(QUICK if a.quick else FULL, quick=a.quick, busy_poll_us=a.busy_poll)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + ("-quick" if a.quick else "")
    base = out_dir / f"bench-{stamp}"

    # SIGTERM unwinds like Ctrl-C, so every topology is torn down on the way out.
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    log = Progress()
    nv = sum(n in VTEP_PAIRINGS for n in names) if a.vteps > 0 else 0
    n6 = 0 if a.no_ipv6 else sum(n in VTEP_PAIRINGS for n in names)
    results: dict = {"meta": machine(), "config": cfg, "pairings": {}}
    meta = results["meta"]
    runs = len(names) + (not a.quick and len(names) > 1)      # the reference again at the end
    log(f"kernel {meta['kernel']}, {meta['cpu']} x{meta['cpus']}, load {meta['loadavg_before']}; "
        f"pairings: {', '.join(label(n) for n in names)}; about "
        f"{estimate(cfg, runs, nv, not a.no_pps, a.vteps, n6)}")
    failed = False
    meta["wakeup_before"] = wakeup_cost()
    if meta["wakeup_before"]:
        w = meta["wakeup_before"]
        log(f"thread wake-up (bench/wakeup.c): round trip {w['asleep_p50_us']:.1f} µs through "
            f"a sleeping thread, {w['spinning_p50_us']:.1f} µs through a spinning one (p50)")
    try:
        no_fast = fastpath_problem()
        for n in names:
            res = results["pairings"][n] = {"label": label(n), "kinds": list(parse_pairing(n))}
            if no_fast and "vxtun" in res["kinds"]:
                log.where = label(n)
                log(f"FAILED: {no_fast}")
                res["error"] = no_fast
                failed = True
                continue
            try:
                bench_pairing(n, cfg, log, res)
                failed |= bool(res.get("errors"))
            except Exception as e:     # one broken pairing must not cost the others' figures
                log(f"FAILED: {e}")
                res["error"] = str(e)
                failed = True
        # Other work on a shared machine comes and goes: measure the reference once more at
        # the end, and let ratios divide by the mean of both (report.reference).
        if not a.quick and REFERENCE in names and len(names) > 1:
            res = results["reference_end"] = {"label": label(REFERENCE),
                                              "kinds": list(parse_pairing(REFERENCE))}
            try:
                bench_pairing(REFERENCE, cfg, log, res, where="reference again")
                failed |= bool(res.get("errors"))
            except Exception as e:
                log(f"FAILED: {e}")
                res["error"] = str(e)
                failed = True
        # The parts run again for VTEP_PAIRINGS only, each into the pairing's ``key``.
        parts = [("many_vteps", lambda n, res: bench_vteps(n, a.vteps, cfg, log, res))
                 ] if a.vteps > 0 else []
        if not a.no_ipv6:
            parts.append(("ipv6", lambda n, res: bench_ipv6(n, cfg, log, res)))
        for key, part in parts:
            for n in names:
                if n not in VTEP_PAIRINGS or (no_fast and "vxtun" in n):
                    continue
                res = results["pairings"][n].setdefault(key, {})
                try:
                    part(n, res)
                except Exception as e:
                    log(f"FAILED: {e}")
                    res["error"] = str(e)
                    failed = True
        if not a.no_pps:
            log.where = "packet rate"
            kinds = ("kernel",) if no_fast else ppsmod.KINDS
            try:
                results["pps"] = ppsmod.run_all(kinds, ppsmod.DIRECTIONS, ppsmod.SIZES,
                                                cfg["pps_seconds"], cfg["pps_trials"], log)
                failed |= any("error" in r for d in ppsmod.DIRECTIONS
                              for r in (results["pps"].get(d) or {}).values())
            except ppsmod.PpsError as e:
                log(f"FAILED: {e}")
                results["pps"] = {"error": str(e)}
                failed = True
    except KeyboardInterrupt:
        results["interrupted"] = True
        log.where = ""
        log("interrupted: writing what was measured")
    meta["loadavg_after"] = _loadavg()
    meta["wakeup_after"] = wakeup_cost()

    table = report.rows(results)
    results["table"] = table
    md = report.markdown(results, table)
    base.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    base.with_suffix(".md").write_text(md)
    log.where = ""
    try:
        report.chart(results, str(base.with_suffix(".png")))
        chart = f", {base.with_suffix('.png')}"
    except Exception as e:       # the chart is a convenience: never lose the figures over it
        chart = f" (no chart: {e})"
    print(md)
    log(f"wrote {base.with_suffix('.json')}, {base.with_suffix('.md')}{chart}")
    if results.get("interrupted"):
        return 130
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
