"""Turn one run's results into rows (every figure and its ratio to kernel<->kernel, with the
targets next to them), a Markdown report and a PNG chart.

The targets (issue 12's), always as ratios to kernel<->kernel *in the same run*, because
absolute figures on a shared machine move from run to run:

* TCP single stream: kernel->vxtun and vxtun->kernel at least 0.9, vxtun<->vxtun at least 0.8;
* TCP 4 streams: at least 0.6 in every fast-path pairing;
* UDP loss-free rate at 64 and 1400 bytes: at least 0.8 (every fast-path pairing);
* ping p50: at most 10 µs above the kernel's idle, at most twice the kernel's under load;
* packet rate at 64 bytes (bench/pps.py): at least 0.5, decap and encap;
* pure-Python TCP: at least 1 Gbit/s absolute, each way.

``busy`` (the fast path with busy polling) counts as a fast-path kind.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import pps as ppsmod
from .topology import REFERENCE, label, parse_pairing


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    get: Callable[[dict], float | None]
    fmt: str = "{:.2f}"
    higher_is_better: bool = True
    has_ratio: bool = True
    side: int | None = None     # 0 sender, 1 receiver: a vxtun process's figure (not kernel's)


def _get(*path):
    def f(p: dict):
        x = p
        for k in path:
            if not isinstance(x, dict) or x.get(k) is None:
                return None
            x = x[k]
        return float(x)
    return f


def _scaled(scale, *path):
    g = _get(*path)

    def f(p: dict):
        v = g(p)
        return None if v is None else v / scale
    return f


def _sides(key: str, title: str, unit: str, fmt: str, *path: str) -> list[Metric]:
    """A figure of the vxtun process on each side: ``KEY_tx`` (sender) and ``KEY_rx``
    (receiver), read at ``path`` with SIDE standing for "sender" / "receiver"."""
    return [Metric(f"{key}_{suffix}", f"{title}, {word} VTEP", unit,
                   _get(*(side if k == "SIDE" else k for k in path)), fmt, False, False, i)
            for i, (suffix, side, word) in enumerate((("tx", "sender", "sending"),
                                                      ("rx", "receiver", "receiving")))]


METRICS = [
    Metric("tcp1", "TCP, 1 stream", "Gbit/s", _scaled(1e9, "tcp1", "bps")),
    Metric("tcp4", "TCP, 4 streams", "Gbit/s", _scaled(1e9, "tcp4", "bps")),
    Metric("tcp16", "TCP, 16 streams", "Gbit/s", _scaled(1e9, "tcp16", "bps")),
    Metric("vteps", "TCP, many VTEPs x 1 stream", "Gbit/s", _scaled(1e9, "many_vteps", "bps")),
    Metric("tcp1_v6", "TCP, 1 stream, IPv6 underlay", "Gbit/s",
           _scaled(1e9, "ipv6", "tcp1", "bps")),
    Metric("udp64", "UDP 64 B, <=1% loss", "kpps", _scaled(1e3, "udp64", "pps"), "{:.1f}"),
    Metric("udp1400", "UDP 1400 B, <=1% loss", "Mbit/s", _scaled(1e6, "udp1400", "bps"),
           "{:.0f}"),
    Metric("ping_p50", "ping RTT p50", "µs", _get("ping", "p50_us"), "{:.1f}", False),
    Metric("ping_p99", "ping RTT p99", "µs", _get("ping", "p99_us"), "{:.1f}", False),
    Metric("ping_p50_v6", "ping RTT p50, IPv6 underlay", "µs", _get("ipv6", "ping", "p50_us"),
           "{:.1f}", False),
    Metric("load_p50", "ping RTT p50, TCP the other way", "µs", _get("ping_load", "p50_us"),
           "{:.1f}", False),
    Metric("load_p99", "ping RTT p99, TCP the other way", "µs", _get("ping_load", "p99_us"),
           "{:.1f}", False),
    *_sides("cpu", "vxtun CPU per GB", "s/GB", "{:.2f}", "cpu", "SIDE", "s_per_gb"),
    *_sides("rest", "vxtun CPU at rest", "% of a CPU", "{:.2f}", "rest", "cpu_pct", "SIDE"),
    *_sides("ping_cpu", "vxtun CPU during idle ping", "% of a CPU", "{:.1f}", "ping", "cpu_pct",
            "SIDE"),
]
METRIC = {m.key: m for m in METRICS}


FAST = ("vxtun", "busy")


def target(metric: str, pairing: str):
    """(text, check(value, ratio, reference_value) -> bool) for a figure with a target (see
    the module docstring), else None."""
    a, b = parse_pairing(pairing)
    fast = any(k in FAST for k in (a, b)) and "pure" not in (a, b)
    if metric == "tcp1":
        if "pure" in (a, b):
            return ">= 1 Gbit/s", lambda v, r, ref: v >= 1.0
        if a in FAST and b in FAST:
            return "ratio >= 0.8", lambda v, r, ref: r is not None and r >= 0.8
        if fast:
            return "ratio >= 0.9", lambda v, r, ref: r is not None and r >= 0.9
    if metric == "tcp4" and fast:
        return "ratio >= 0.6", lambda v, r, ref: r is not None and r >= 0.6
    if metric in ("udp64", "udp1400") and fast:
        return "ratio >= 0.8", lambda v, r, ref: r is not None and r >= 0.8
    if metric == "ping_p50" and fast:
        return ("<= kernel + 10 µs",
                lambda v, r, ref: ref is not None and v - ref <= 10.0)
    if metric == "load_p50" and fast:
        return "ratio <= 2", lambda v, r, ref: r is not None and r <= 2.0
    return None


def reference(results: dict, m: Metric) -> float | None:
    """What ratios divide by: kernel<->kernel as measured first and, in a full run, again at
    the end (the mean of both), since the load on a shared machine drifts during a run."""
    runs = [results["pairings"].get(REFERENCE), results.get("reference_end")]
    vals = [v for v in (m.get(p) for p in runs if p) if v is not None]
    return sum(vals) / len(vals) if vals else None


def rows(results: dict) -> list[dict]:
    """One row per (metric, pairing), metric-major, so a column of ratios reads down."""
    pairings = results["pairings"]
    end = results.get("reference_end")
    out = []
    for m in METRICS:
        refv = reference(results, m)
        for name, p in pairings.items():
            kinds = parse_pairing(name)
            if m.side is not None and kinds[m.side] == "kernel":
                continue            # the kernel's VTEP runs in softirq: no process to measure
            v = m.get(p)
            row = {"metric": m.key, "title": m.title, "unit": m.unit, "pairing": name,
                   "label": label(name), "value": v, "ratio": None, "target": None,
                   "pass": None, "note": ""}
            notes = []
            if v is not None and refv and m.has_ratio:
                row["ratio"] = v / refv
            t = target(m.key, name)
            if t is not None:
                row["target"] = t[0]
                if v is not None:
                    row["pass"] = bool(t[1](v, row["ratio"], refv))
            if m.key in ("ping_p50", "load_p50", "ping_p50_v6") and v is not None \
                    and refv is not None \
                    and name != REFERENCE:
                notes.append(f"{v - refv:+.1f} µs")
            if m.key == "load_p50" and v is not None:
                notes.append(f"TCP the other way {p['ping_load']['load']['bps'] / 1e9:.2f} "
                             "Gbit/s")
            if name == REFERENCE and end and m.get(end) is not None and m.has_ratio:
                notes.append(f"again at the end: {m.fmt.format(m.get(end))}; ratios divide by "
                             f"the mean, {m.fmt.format(refv)}")
            if m.key.startswith("udp") and (p.get(m.key) or {}).get("sender_limited"):
                notes.append("sender-limited (iperf3 could not offer more)")
            if m.key.startswith("udp") and (p.get(m.key) or {}).get("lower_bound"):
                notes.append("lower bound (no loss before the trials ran out)")
            if m.key == "udp64" and v is not None:
                notes.append(f"{p['udp64']['bps'] / 1e6:.1f} Mbit/s")
            if m.key == "vteps" and v is not None and (p.get("tcp16") or {}).get("bps"):
                notes.append(f"{p['many_vteps'].get('streams')} VTEPs; one VTEP with 16 "
                             f"streams: {p['tcp16']['bps'] / 1e9:.2f} Gbit/s")
            if m.key == "tcp1_v6" and v is not None:
                egress = [f"{h} {'no UDP-tunnel GSO egress' if not e else e.split()[0]}"
                          for h, e in (p["ipv6"].get("egress") or {}).items()]
                if egress:
                    notes.append("egress: " + ", ".join(egress))
            if m.key == "vteps":
                err = (p.get("many_vteps") or {}).get("error")
            elif m.key.endswith("_v6"):
                err = (p.get("ipv6") or {}).get("error")
            else:
                err = p.get("errors", {}).get(error_key(m.key))
            if err:
                notes.append("error: " + summary(err))
            elif v is None and p.get("error"):
                notes.append("not measured: the pairing failed (see above)")
            row["note"] = "; ".join(notes)
            out.append(row)
    return out


def error_key(metric: str) -> str:
    """The measurement (bench/run.py's step) a metric comes from."""
    for prefix, step in (("load_", "ping_load"), ("ping_", "ping"), ("rest_", "rest"),
                         ("cpu_", "tcp1")):
        if metric.startswith(prefix):
            return step
    return metric


def drops(p: dict) -> str:
    """The non-zero loss counters of a pairing, over all its tests: where packets went."""
    out = []
    for host, c in (p.get("counters") or {}).items():
        for dev, st in c.items():
            keys = ("RcvbufErrors", "SndbufErrors", "InErrors", "NoPorts") if dev == "udp" \
                else ("rx_dropped", "tx_dropped", "rx_errors", "tx_errors")
            for k in keys:
                # InErrors counts RcvbufErrors again: show it only when it says more.
                if st.get(k) and not (k == "InErrors" and st[k] == st.get("RcvbufErrors")):
                    out.append(f"{host} {dev} {k} {st[k]}")
    for v in p.get("vteps", []):
        for reason, n in ((v.get("stats") or {}).get("drops") or {}).items():
            if n:
                out.append(f"{v['host']} vxtun drop {reason} {n}")
    return ", ".join(out)


def summary(err: str, n: int = 120) -> str:
    """The line of an error that says what went wrong: a traceback's last line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if len(lines) > 1:
        return _short(f"{lines[0]} ... {lines[-1]}", n)
    return _short(lines[0] if lines else "?", n)


def _short(s: str, n: int = 90) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n - 3] + "..."


def markdown_table(table: list[dict]) -> str:
    lines = ["| metric | pairing | value | ratio to kernel<->kernel | target | result | note |",
             "|---|---|---:|---:|---|---|---|"]
    last = None
    for r in table:
        m = METRIC[r["metric"]]
        title = f"{r['title']} ({r['unit']})" if r["metric"] != last else ""
        last = r["metric"]
        value = m.fmt.format(r["value"]) if r["value"] is not None else "—"
        if r["pairing"] == REFERENCE and m.has_ratio:
            ratio = f"{r['ratio']:.2f} (reference)" if r["ratio"] is not None else "—"
        else:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "—"
        result = {True: "PASS", False: "FAIL", None: "—" if r["target"] else ""}[r["pass"]]
        lines.append(f"| {title} | {r['label']} | {value} | {ratio} | {r['target'] or ''} | "
                     f"{result} | {r['note']} |")
    return "\n".join(lines)


def markdown(results: dict, table: list[dict]) -> str:
    meta, cfg = results["meta"], results["config"]
    out = [f"# vxtun benchmark, {meta['date']}", ""]
    out.append(f"- kernel {meta['kernel']}; CPU {meta['cpu']} ({meta['cpus']} CPUs); "
               f"Python {meta['python']}; {meta['iperf3']}")
    out.append(f"- load average before/after: {meta['loadavg_before']} / "
               f"{meta.get('loadavg_after', '?')} (other work on the machine distorts figures)")
    out.append(f"- vxtun {meta.get('git', '?')}; mode {'quick' if cfg['quick'] else 'full'}: "
               f"TCP median of {cfg['tcp_runs']} x {cfg['tcp_seconds']} s, UDP search "
               f"{cfg['udp_seconds']} s per trial (<= {cfg['udp_trials']} trials, <= 1% loss), "
               f"{cfg['ping_count']} pings every {cfg['ping_interval'] * 1000:g} ms")
    wb, wa = meta.get("wakeup_before") or {}, meta.get("wakeup_after") or {}
    if wb:
        out.append("- a thread's wake-up (bench/wakeup.c, round trips every 2 ms, p50/p99 µs): "
                   f"through a sleeping thread {wb['asleep_p50_us']:.1f}/"
                   f"{wb['asleep_p99_us']:.1f}, through a spinning one "
                   f"{wb['spinning_p50_us']:.1f}/{wb['spinning_p99_us']:.1f}"
                   + (f"; at the end {wa['asleep_p50_us']:.1f}/{wa['asleep_p99_us']:.1f} and "
                      f"{wa['spinning_p50_us']:.1f}/{wa['spinning_p99_us']:.1f}" if wa else "")
                   + ". Each hop of vxtun's round trip through a thread that was asleep pays "
                   "about the difference; the kernel's vxlan wakes nobody")
    every = list(results["pairings"].items())
    if results.get("reference_end"):
        every.append(("kernel-kernel", dict(results["reference_end"], again=True)))
    for name, p in every:
        feats = [f"{v['host']}: {v['kind']}"
                 + (f" ({v.get('dataplane')}: {', '.join(v.get('features') or [])})"
                    if v["kind"] != "kernel" else "")
                 for v in p.get("vteps", [])]
        line = f"- {label(name)}{' (again, at the end)' if p.get('again') else ''}: " + \
            "; ".join(feats)
        if p.get("loadavg"):
            line += f" (load average at start {p['loadavg']})"
        if p.get("steal_pct") is not None:
            line += f"; CPU steal {p['steal_pct']:.1f}%"
        losses = drops(p)
        if losses:
            line += f"; losses: {losses}"
        if p.get("error"):
            line += f" — ERROR: {summary(p['error'], 240)}"
        out.append(line)
    out += ["", "Sender on h1 (iperf3 client, ping), receiver on h2 (iperf3 server). CPU per GB is "
            "utime+stime of the vxtun process over the single-stream TCP runs, divided by the "
            "bytes received.", "", markdown_table(table), ""]
    pps = results.get("pps")
    if pps:
        out += ["## Packet rate (bench/pps.py)", ""]
        if pps.get("error"):
            out += [f"Not measured: {summary(pps['error'], 240)}", ""]
        else:
            out += [f"pktgen (bench/pktgen.c) for {pps['seconds']:g} s, median of "
                    f"{pps['trials']}; decap: VXLAN datagrams from h1 at the VTEP on h2, "
                    "counted as its device's rx_packets; encap: frames sent on h1's VTEP "
                    "device (AF_PACKET), counted as h2's underlay rx_packets. Per CPU-s (all): "
                    "delivered / (generator + vxtun process + machine-wide softirq time).", "",
                    ppsmod.markdown(pps), ""]
    if results.get("interrupted"):
        out += ["**Interrupted: the figures above are partial.**", ""]
    return "\n".join(out)


def chart(results: dict, path: str) -> None:
    """One panel per metric, one bar per pairing, each bar labelled with its ratio."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["pairings"])
    pps_rows = [r for r in ppsmod.rows(results.get("pps") or {}) if r["mpps"] is not None]
    cols_n = 5
    nrows = (len(METRICS) + (1 if pps_rows else 0) + cols_n - 1) // cols_n
    fig, axes = plt.subplots(nrows, cols_n, figsize=(4 * cols_n, 4 * nrows))
    for ax in axes.flat[len(METRICS) + (1 if pps_rows else 0):]:
        ax.set_visible(False)
    colors = {"kernel": "#777777", "vxtun": "#1f77b4", "pure": "#ff7f0e"}
    for i, m in enumerate(METRICS):
        ax = axes.flat[i]
        vals = [m.get(results["pairings"][n]) for n in names]
        refv = reference(results, m)
        xs = range(len(names))
        cols = []
        for n in names:
            a, b = parse_pairing(n)
            cols.append(colors["pure"] if "pure" in (a, b) else
                        colors["vxtun"] if any(k in FAST for k in (a, b))
                        else colors["kernel"])
        ax.bar(xs, [v or 0 for v in vals], color=cols)
        for x, v in enumerate(vals):
            if v is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8)
            elif refv and m.has_ratio:
                ax.text(x, v, f"{v / refv:.2f}x", ha="center", va="bottom", fontsize=8)
            else:
                ax.text(x, v, m.fmt.format(v), ha="center", va="bottom", fontsize=8)
        ax.set_title(f"{m.title} ({m.unit})", fontsize=10)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([label(n) for n in names], rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if pps_rows:
        ax = axes.flat[len(METRICS)]
        xs = range(len(pps_rows))
        ax.bar(xs, [r["mpps"] for r in pps_rows],
               color=[colors["kernel"] if r["kind"] == "kernel" else colors["vxtun"]
                      for r in pps_rows])
        for x, r in enumerate(pps_rows):
            txt = f"{r['ratio']:.2f}x" if r["ratio"] is not None else f"{r['mpps']:.2f}"
            ax.text(x, r["mpps"], txt + ("*" if r["note"] else ""), ha="center",
                    va="bottom", fontsize=8)
        ax.set_title("packet rate delivered (Mpps; * generator-limited)", fontsize=10)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{r['direction']} {r['size']} B {r['kind']}" for r in pps_rows],
                           rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    meta = results["meta"]
    fig.suptitle(f"vxtun vs kernel vxlan, {meta['date']}, kernel {meta['kernel']}, "
                 f"{meta['cpu']} x{meta['cpus']}  (labels: ratio to kernel<->kernel; "
                 f"lower is better for RTT and CPU)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))     # room for the title
    fig.savefig(path, dpi=100)
    plt.close(fig)
