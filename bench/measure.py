"""The measurements: iperf3 TCP and UDP, ping round trips.  Each takes the hosts it runs on.

* TCP: ``iperf3 -c SERVER -t T -P N -J``; the figure is the receiver's goodput
  (``end.sum_received.bits_per_second``).
* UDP: iperf3 without ``-b`` sends as fast as *it* can and so measures the sender, not the VTEP.
  With ``-w 4M`` (see UDP_WINDOW) so the receiving iperf3's socket is not what drops.
  The figure is the highest rate the sender really offered (``end.sum_sent``; it can fall short
  of ``-b``) with at most 1 % loss at the receiver (``end.sum.lost_percent``, which the client
  gets back from the server), found by doubling from a low rate and then bisecting.  A rate the
  sender itself could not reach is marked ``sender_limited``: then the limit is iperf3 on the
  sending host and not the VTEP, which is common at 64 bytes, where one core writes one small
  datagram per system call.
* ping: per-packet times from ``ping -i 0.002`` (root may go below 0.2 s), percentiles by numpy.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field

import numpy as np

from vxtun.lab.netns import Host

IPERF_PORT = 5201


class MeasureError(RuntimeError):
    pass


@dataclass
class IperfServer:
    """``iperf3 -s`` bound to the overlay address of the receiving host."""
    host: Host
    bind: str
    port: int = IPERF_PORT
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        # The Topology records the process and kills it at close(), whatever happens here.
        self.proc = self.host.popen(["iperf3", "-s", "-B", self.bind, "-p", str(self.port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            out = self.host.run(f"ss -Hltn 'sport = :{self.port}'", timeout=5).stdout
            if out.strip():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise MeasureError(f"iperf3 server on {self.host.name} did not start")

    def restart(self) -> None:
        """iperf3 3.x serves one test at a time and can stay busy after a failed one."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                pass
            self.proc.wait()
        self.start()


def _iperf(client: Host, server: IperfServer, args: str, duration: float) -> dict:
    """Run one iperf3 client test; restart the server and retry once if it fails."""
    cmd = (f"iperf3 -c {server.bind} -p {server.port} -J --connect-timeout 3000 "
           f"-t {duration:g} {args}")
    err = ""
    for _attempt in range(2):
        try:
            r = client.run(cmd, timeout=duration + 30)
        except subprocess.TimeoutExpired:
            err = f"timed out: {cmd}"
            server.restart()
            continue
        try:
            j = json.loads(r.stdout)
        except ValueError:
            j = {"error": (r.stdout + r.stderr).strip()[-300:]}
        if r.returncode == 0 and "error" not in j:
            return j
        err = j.get("error", f"exit {r.returncode}")
        server.restart()
    raise MeasureError(f"iperf3 failed twice: {err}")


def _tcp_result(j: dict) -> dict:
    end = j["end"]
    return {
        "bps": end["sum_received"]["bits_per_second"],
        "bytes": end["sum_received"]["bytes"],
        "seconds": end["sum_received"]["seconds"],
        "retransmits": end["sum_sent"].get("retransmits"),
    }


def tcp_run(client: Host, server: IperfServer, streams: int, duration: float) -> dict:
    return _tcp_result(_iperf(client, server, f"-P {streams}", duration))


def tcp_parallel(client: Host, servers: list[IperfServer], duration: float) -> dict:
    """One iperf3 client per server, all at once (one stream each): the summed goodput."""
    procs = [client.popen(["iperf3", "-c", srv.bind, "-p", str(srv.port), "-J",
                           "--connect-timeout", "3000", "-t", f"{duration:g}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for srv in servers]
    results, errors = [], []
    for p, srv in zip(procs, servers, strict=True):
        try:
            out, err = p.communicate(timeout=duration + 30)
            j = json.loads(out)
            if p.returncode != 0 or "error" in j:
                raise ValueError(j.get("error", f"exit {p.returncode}"))
            results.append(_tcp_result(j))
        except (ValueError, subprocess.TimeoutExpired) as e:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            errors.append(f"{srv.bind}: {e}")
            srv.restart()
    if errors:
        raise MeasureError(f"{len(errors)} of {len(servers)} iperf3 clients failed: {errors[0]}")
    return {"bps": sum(r["bps"] for r in results), "bytes": sum(r["bytes"] for r in results),
            "streams": [r["bps"] for r in results],
            "retransmits": sum(r["retransmits"] or 0 for r in results)}


def ping_under_load(client: Host, server: IperfServer, count: int, interval: float,
                    streams: int = 1) -> dict:
    """ping_rtt() from ``client`` while a TCP stream runs the other way: ``iperf3 -R``, so the
    server's host sends the bulk and the echo requests travel against it, their replies with
    it.  The stream starts first and outlasts the pings; its goodput is returned too."""
    ping_secs = count * interval + 1.0
    duration = ping_secs + 2.0
    cmd = (f"iperf3 -c {server.bind} -p {server.port} -J --connect-timeout 3000 -R "
           f"-P {streams} -t {duration:g}")
    bulk = client.popen(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
    try:
        time.sleep(1.0)                 # the stream is up to speed before the first ping
        if bulk.poll() is not None:
            out, err = bulk.communicate()
            server.restart()
            raise MeasureError(f"iperf3 -R did not run: {(out + err).strip()[-300:]}")
        rtt = ping_rtt(client, server.bind, count, interval)
        out, err = bulk.communicate(timeout=duration + 30)
    except BaseException:
        if bulk.poll() is None:
            os.killpg(bulk.pid, signal.SIGKILL)     # Host.popen: a session of its own
            bulk.wait()
        raise
    try:
        j = json.loads(out)
    except ValueError:
        j = {"error": (out + err).strip()[-300:]}
    if bulk.returncode != 0 or "error" in j:
        server.restart()
        raise MeasureError(f"iperf3 -R failed: {j.get('error', bulk.returncode)}")
    rtt["load"] = _tcp_result(j)
    return rtt


# The UDP sink is one single-threaded iperf3 on a shared machine: with the default 208 KB
# receive buffer, a few milliseconds off the CPU overflow it (RcvbufErrors) and the loss
# measured is iperf3's, not the VTEP's (20-40% at rates the VTEP carries without a drop, seen on
# 2 loaded cores).  A 4 MB buffer, within net.core.rmem_max, keeps the sink out of the figure.
UDP_WINDOW = 4 << 20


def udp_window(sender: Host, receiver: Host) -> int:
    """UDP_WINDOW, or less where the namespaces' rmem_max/wmem_max would clamp it."""
    def sysctl(h: Host, name: str) -> int:
        try:
            return int(h.sh(f"cat /proc/sys/net/core/{name}", timeout=5).strip())
        except (RuntimeError, ValueError):
            return UDP_WINDOW
    return min(UDP_WINDOW, sysctl(receiver, "rmem_max"), sysctl(sender, "wmem_max"))


def udp_trial(client: Host, server: IperfServer, rate_bps: float, size: int,
              duration: float, window: int = 0) -> dict:
    w = f" -w {window}" if window else ""
    j = _iperf(client, server, f"-u -b {int(rate_bps)} -l {size}{w}", duration)
    end = j["end"]
    sent, total = end["sum_sent"], end["sum"]
    packets = total.get("packets") or sent.get("packets") or 0
    secs = sent.get("seconds") or duration
    return {
        "offered_bps": float(int(rate_bps)),
        "sent_bps": sent["bits_per_second"],
        "sent_pps": packets / secs if secs else 0.0,
        "received_bps": end.get("sum_received", {}).get("bits_per_second"),
        "lost_percent": total.get("lost_percent", 100.0),
        "packets": packets,
    }


@dataclass
class UdpSearch:
    """The highest offered rate with at most ``max_loss`` percent loss."""
    size: int
    duration: float
    start_bps: float
    max_trials: int
    max_loss: float = 1.0
    window: int = 0          # iperf3 -w: socket buffers (the server's SO_RCVBUF), 0 = default
    trials: list = field(default_factory=list)

    def run(self, client: Host, server: IperfServer, log) -> dict:
        def trial(rate: float) -> dict:
            t = udp_trial(client, server, rate, self.size, self.duration, self.window)
            t["pass"] = t["lost_percent"] <= self.max_loss
            # The sender did not manage to offer what -b asked: iperf3 is the bottleneck.
            t["sender_limited"] = t["sent_bps"] < 0.95 * rate
            self.trials.append(t)
            log(f"udp {self.size} B: -b {rate / 1e6:.1f}M sent {t['sent_bps'] / 1e6:.1f} "
                f"Mbit/s {t['sent_pps'] / 1e3:.0f} kpps loss {t['lost_percent']:.2f}% "
                f"{'ok' if t['pass'] else 'too much loss'}"
                f"{' (sender-limited)' if t['sender_limited'] else ''}")
            return t

        lo: float = 0.0             # highest -b that passed
        hi: float | None = None     # lowest -b that failed
        rate = self.start_bps
        # Grow: double until loss shows up or the sender cannot offer more.
        while len(self.trials) < self.max_trials:
            t = trial(rate)
            if not t["pass"]:
                hi = rate
                break
            lo = rate
            if t["sender_limited"]:
                break
            rate *= 2
        # The start rate already lost too much: halve until something passes.
        while lo == 0.0 and hi is not None and len(self.trials) < self.max_trials \
                and hi > 0.5e6:
            rate = hi / 2
            t = trial(rate)
            if t["pass"]:
                lo = rate
            else:
                hi = rate
        # Bisect (geometrically) between the last pass and the first failure.
        while lo and hi and len(self.trials) < self.max_trials and hi / lo > 1.06:
            rate = math.sqrt(lo * hi)
            t = trial(rate)
            if t["pass"]:
                lo = rate
            else:
                hi = rate
        passed = [t for t in self.trials if t["pass"]]
        best = max(passed, key=lambda t: t["sent_bps"]) if passed else None
        return {
            "size": self.size,
            "bps": best["sent_bps"] if best else 0.0,
            "pps": best["sent_pps"] if best else 0.0,
            "lost_percent": best["lost_percent"] if best else None,
            "sender_limited": bool(best and best["sender_limited"]),
            # No loss seen and the sender was not the limit: the trials ran out first, so the
            # figure is only a lower bound (typical of --quick).
            "lower_bound": bool(best and hi is None and not best["sender_limited"]),
            "first_failure_bps": hi,
            "window": self.window,
            "trials": self.trials,
        }


_TIME = re.compile(r"time[=<]([0-9.]+) ms")


def ping_rtt(client: Host, dst: str, count: int, interval: float) -> dict:
    """Round trips of ``count`` pings, one every ``interval`` seconds: p50/p99/mean in µs."""
    r = client.run(f"ping -n -q -c 1 -W 1 {dst} >/dev/null; "
                   f"ping -n -i {interval:g} -W 1 -c {count} {dst}",
                   timeout=count * max(interval, 0.001) + 60)
    times = [float(m.group(1)) * 1000.0 for m in _TIME.finditer(r.stdout)]
    if not times:
        raise MeasureError(f"no ping replies from {dst}: {(r.stdout + r.stderr)[-300:]}")
    a = np.asarray(times)
    p50, p99 = np.percentile(a, [50, 99])
    return {"count": count, "received": len(times), "p50_us": float(p50),
            "p99_us": float(p99), "mean_us": float(a.mean()), "min_us": float(a.min()),
            "max_us": float(a.max())}
