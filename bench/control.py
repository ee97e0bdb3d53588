"""The control plane at scale: ``vxtun agent`` on many namespace hosts against one etcd.

    python3 -m bench.control --hosts 50 [--churn 60] [--vxtun-every 2] [--out DIR]

Builds ``--hosts`` namespace hosts on one underlay (192.0.2.N), each with one VTEP of VNI 42 (a
kernel vxlan device, or vxtun on every ``--vxtun-every``-th host) and an agent, all against one
etcd (192.0.2.250, data in a temporary directory).  Each VTEP has ``nolearning proxy l2miss
l3miss``, so both modes run on the same fleet.  It reports, for ``preprogram`` and ``on-miss``:

* join: the time from starting a host's agent (a new Python process: its start-up is part of
  the figure) until every earlier host floods to it (p50, p99, max), hosts joining one after
  the other;
* endpoint -> first ping answered (p50, p99): ``vxtun agent endpoint add`` on one host, then
  ping from another until it is answered (on-miss: between vxtun hosts only, since a kernel
  VTEP misses only for ARP that crosses it from a bridge, not for its host's own);
* on-miss: miss -> answer: from the ARP that misses until the neighbour entry is installed;
* entries programmed per second: every host publishes its endpoint at once, until every
  VTEP holds every other host's FDB and neighbour entries (preprogram); and one agent of each
  kind restarted on an emptied VTEP: the commands of its first reconcile over their time;
* etcd puts, deletes and watch events per second over the whole run (its /metrics);
* RSS and CPU per agent at rest (5 s) and during the churn;
* churn: ``--churn`` seconds of one host leaving (kill -9, or a clean stop) and one joining
  every second; then every running host's flood list, FDB and neighbours are compared with the
  store's truth (read again each time) until they match, for at most 3 TTLs + 30 s: the time
  that took, and the number of wrong entries left, which must be 0.  If some are left, each
  wrong host is printed: missing, extra or stale entries per table, a host not registered or
  whose agent exited, and what its agent says of itself (revision, lease, last error).

The VTEPs' tables are read by one small reader process per host (``vteps.read()``: netlink or
the vxtun control socket), so a poll of the whole fleet costs milliseconds.  On a loaded or
small machine the absolute figures mean little; the table says what was measured.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time

from vxtun.agent.lab import EtcdCluster, kernel_vtep, start_agent, vxtun_vtep
from vxtun.lab.netns import Topology, python

TTL = 3
READER = """
import json, sys
from vxtun.agent.reconcile import VtepState, plan
from vxtun.agent.vteps import open_vtep
v = open_vtep(sys.argv[1])
for line in sys.stdin:
    try:
        if line.strip() == "clear":
            v.run(plan(VtepState(), v.read()))
        print(json.dumps(v.read().to_json()), flush=True)
    except Exception as e:
        print(json.dumps({"error": str(e)}), flush=True)
"""


class Node:
    def __init__(self, topo: Topology, i: int, kind: str, mode_flags: str) -> None:
        self.i = i
        self.kind = kind
        self.host = topo.host(f"h{i}", f"192.0.2.{i}/24")
        self.overlay = f"10.20.0.{i}"
        if kind == "kernel":
            self.dev = kernel_vtep(self.host, 42, f"{self.overlay}/16", extra=mode_flags)
        else:
            self.dev = "vxtun0"
            vxtun_vtep(self.host, 42, f"{self.overlay}/16",
                       extra=("--nolearning", "--proxy", "--l2miss", "--l3miss"))
        self.mac = self.host.sh(f"cat /sys/class/net/{self.dev}/address").strip()
        self.reader = self.host.popen(python("-c", READER, self.dev), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        self.agent: subprocess.Popen | None = None

    def tables(self, clear: bool = False) -> dict:
        """The VTEP's flood list, FDB and neighbours (the agent's part); ``clear``: empty them
        first."""
        assert self.reader.stdin and self.reader.stdout
        self.reader.stdin.write("clear\n" if clear else "\n")
        self.reader.stdin.flush()
        return json.loads(self.reader.stdout.readline())

    def start(self, url: str, mode: str) -> None:
        self.agent = start_agent(self.host, url, self.dev, ttl=TTL, mode=mode)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.agent is not None and self.agent.poll() is None:
            os.killpg(self.agent.pid, sig)
            self.agent.wait()
        self.agent = None


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def wait(cond, timeout: float, poll: float = 0.02) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(poll)
    return None


def cpu_rss(pids: list[int]) -> dict[int, tuple[float, int]]:
    """pid -> (CPU seconds so far, RSS bytes)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            out[pid] = ((int(st[11]) + int(st[12])) / tick, rss)
        except OSError:
            pass
    return out


def usage(nodes: list[Node], seconds: float) -> dict:
    pids = [n.agent.pid for n in nodes if n.agent is not None]
    a = cpu_rss(pids)
    time.sleep(seconds)
    b = cpu_rss(pids)
    cpu = [(b[p][0] - a[p][0]) / seconds * 100 for p in b if p in a]
    rss = [b[p][1] / 2**20 for p in b]
    return {"cpu_pct_mean": statistics.fmean(cpu) if cpu else 0.0,
            "cpu_pct_max": max(cpu, default=0.0),
            "rss_mib_mean": statistics.fmean(rss) if rss else 0.0,
            "rss_mib_max": max(rss, default=0.0)}


METRICS = """
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())
"""


def etcd_counters(etcd: EtcdCluster) -> dict[str, float]:
    e = etcd.hosts[0]
    p = subprocess.run(["ip", "netns", "exec", e.ns, *python("-c", METRICS,
                                                             f"http://{e.ip}:2379/metrics")],
                       capture_output=True, text=True, timeout=30)
    out: dict[str, float] = {}
    for line in p.stdout.splitlines():
        for name in ("etcd_mvcc_put_total", "etcd_mvcc_delete_total",
                     "etcd_debugging_mvcc_events_total", "etcd_mvcc_txn_total"):
            if line.startswith(name + " ") or line.startswith(name + "{"):
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def flood_ok(n: Node, others: list[Node]) -> bool:
    t = n.tables()
    return set(t.get("flood", [])) == {o.host.ip for o in others}


def phase_join(nodes: list[Node], url: str, mode: str) -> list[float]:
    """Agents start one after the other; the time until every earlier host floods to the new
    one (the new one's own flood list is not waited for)."""
    times = []
    started: list[Node] = []
    for n in nodes:
        n.start(url, mode)
        t = wait(lambda n=n: all(n.host.ip in o.tables().get("flood", []) for o in started),
                 60)
        if started:
            times.append(t if t is not None else float("inf"))
        started.append(n)
    wait(lambda: all(flood_ok(n, [o for o in nodes if o is not n]) for n in nodes), 60)
    return times


def ping_until(src: Node, dst: Node, timeout: float = 30) -> float | None:
    return wait(lambda: src.host.run(f"ping -c 1 -W 0.3 {dst.overlay}",
                                     timeout=10).returncode == 0, timeout, poll=0)


def endpoint(n: Node, op: str = "add") -> None:
    args = ("agent", "endpoint", op, n.mac) + ((n.overlay,) if op == "add" else ())
    n.host.cmd(*args)


def phase_endpoints(nodes: list[Node], mode: str, samples: int) -> dict:
    """Per pair: the source's endpoint published first (not timed), then the destination's,
    and pings from the source until one is answered."""
    pairs = [(nodes[k], nodes[(k + 1) % len(nodes)]) for k in range(len(nodes))]
    if mode == "on-miss":
        vx = [n for n in nodes if n.kind == "vxtun"]
        pairs = [(vx[k], vx[(k + 1) % len(vx)]) for k in range(len(vx))] if len(vx) > 1 else []
    lat, miss = [], []
    for src, dst in pairs[:samples]:
        endpoint(src)
        if mode == "preprogram":
            wait(lambda s=src, d=dst: s.overlay in d.tables().get("neigh", {}), 20)
        else:
            time.sleep(0.5)
        t0 = time.monotonic()
        endpoint(dst)
        if mode == "on-miss":
            # The ARP that misses goes out with this ping; the answer is the neighbour entry.
            t1 = time.monotonic()
            p = src.host.popen(["ping", "-c", "1", "-W", "2", dst.overlay],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t = wait(lambda s=src, d=dst: d.overlay in s.tables().get("neigh", {}), 20, poll=0)
            if t is not None:
                miss.append(time.monotonic() - t1 - 0.0)
            p.wait()
        t = ping_until(src, dst)
        lat.append(time.monotonic() - t0 if t is not None else float("inf"))
    for n in nodes:
        n.host.run_vxtun("agent", "endpoint", "del", n.mac)
    res: dict = {"endpoint_ping": lat}
    if mode == "on-miss":
        res["miss_answer"] = miss
    return res


def phase_bulk(nodes: list[Node], mode: str) -> float | None:
    """Every host publishes its endpoint at once; (preprogram) the fleet's entries per second,
    from the last publication until every VTEP holds every other host's FDB and neighbour
    entry.  on-miss installs nothing until a miss asks: the endpoints are published only."""
    procs = [n.host.popen(python("-m", "vxtun", "agent", "endpoint", "add", n.mac, n.overlay))
             for n in nodes]
    for p in procs:
        p.wait()
    t0 = time.monotonic()
    if mode != "preprogram":
        return None

    def done() -> bool:
        for n in nodes:
            t = n.tables()
            if len(t.get("fdb", {})) < len(nodes) - 1 or len(t.get("neigh", {})) < len(nodes) - 1:
                return False
        return True
    # Polled gently: the readers' dumps compete for the CPU with the agents being measured.
    if wait(done, 300, poll=0.25) is None:
        return None
    return 2 * len(nodes) * (len(nodes) - 1) / (time.monotonic() - t0)


def phase_cold(nodes: list[Node], url: str, mode: str) -> dict:
    """Entries programmed per second by one agent from a cold start: with every other host's
    endpoint in the store, one agent of each kind is stopped, its VTEP emptied and the agent
    started again; its first reconcile programs the flood list and (preprogram) every FDB and
    neighbour entry.  The rate is the commands of that reconcile over the time they took
    (``programmed`` in ``vxtun agent status``); the time until the VTEP was complete, from the
    agent's start (a new Python process), is given too."""
    out = {}
    for kind in ("kernel", "vxtun"):
        n = next((n for n in nodes if n.kind == kind and n.agent is not None), None)
        if n is None:
            continue
        n.stop(signal.SIGKILL)             # not SIGTERM: its keys stay, the others keep it
        n.tables(clear=True)
        others = len(nodes) - 1
        tables = ("flood", "fdb", "neigh") if mode == "preprogram" else ("flood",)
        t0 = time.monotonic()
        n.start(url, mode)
        took = wait(lambda n=n, k=others, tables=tables: all(
            len(t[x]) >= k for t in [n.tables()] for x in tables), 120, poll=0.1)
        st = agent_state(n, full=True)
        prog = next((v.get("programmed") for v in st.get("vteps", []) if "programmed" in v),
                    None)
        rate = None
        if prog and prog.get("seconds"):
            rate = len(prog["commands"]) / prog["seconds"]
        out[kind] = {"entries_per_s": rate, "commands": len(prog["commands"]) if prog else 0,
                     "complete_after_start_s": took if took is not None else None,
                     "since": round(time.monotonic() - t0, 3)}
    return out


def phase_churn(nodes: list[Node], url: str, mode: str, seconds: int, etcd) -> dict:
    rng = random.Random(42)
    t_end = time.monotonic() + seconds
    seen: dict[int, list[tuple[float, float]]] = {}     # pid -> [(time, CPU seconds)]
    while time.monotonic() < t_end:
        now = time.monotonic()
        for pid, (cpu_s, _) in cpu_rss([n.agent.pid for n in nodes if n.agent]).items():
            seen.setdefault(pid, []).append((now, cpu_s))
        up = [n for n in nodes if n.agent is not None]
        down = [n for n in nodes if n.agent is None]
        if len(up) > 2:
            rng.choice(up).stop(rng.choice([signal.SIGKILL, signal.SIGTERM]))
        if down:
            n = rng.choice(down)
            n.start(url, mode)
            # its endpoint too, once its agent answers
            add = shlex.join(python("-m", "vxtun", "agent", "endpoint", "add", n.mac, n.overlay))
            n.host.popen(["sh", "-c", f"for i in $(seq 30); do {add} 2>/dev/null && break; "
                          "sleep 0.5; done"])
        time.sleep(1)
    # Each agent over the part of the churn it lived through (agents come and go).
    cpu = [(v[-1][1] - v[0][1]) / (v[-1][0] - v[0][0]) * 100 for v in seen.values()
           if len(v) > 1 and v[-1][0] > v[0][0]]
    # Converged when every running host's tables match the store's truth read at the same
    # time; the keys of the agents killed last live on until their lease's TTL, so the wait
    # is bounded by CONVERGE_TTLS TTLs plus CONVERGE_SLACK seconds for a loaded machine.
    timeout = CONVERGE_TTLS * TTL + CONVERGE_SLACK
    t0 = time.monotonic()
    first = None
    while True:
        check = check_fleet(nodes, etcd, mode)
        took = time.monotonic() - t0
        if first is None:               # what was still wrong when the churn stopped
            first = {}
            for w in check["wrong_by_host"].values():
                for k, v in w.items():
                    first[k] = first.get(k, 0) + len(v)
        if not check["wrong_entries"] or took > timeout:
            break
        time.sleep(0.5)
    check["converged_s"] = took if not check["wrong_entries"] else None
    check["converge_timeout_s"] = timeout
    check["wrong_when_churn_stopped"] = first
    check["cpu_pct_mean_churn"] = statistics.fmean(cpu) if cpu else 0.0
    if check["wrong_entries"]:
        check["agents"] = {h: agent_state(n) for n in nodes
                           if (h := n.host.name) in check["wrong_by_host"]}
    return check


CONVERGE_TTLS = 3
CONVERGE_SLACK = 30.0
KINDS = ("flood", "fdb", "neigh")


def store_truth(etcd) -> tuple[set[str], dict[str, tuple[str, tuple[str, ...], int]]]:
    """The members (underlay IPs) and endpoints (MAC -> VTEP, IPs, revision) of the store, read
    as model.parse reads them (the newest key of a MAC wins)."""
    from vxtun.agent import model
    from vxtun.agent.store import KeyValue
    _, kvs = json.loads(etcd.store_call(etcd.hosts[0], "snapshot", "/vxtun/").stdout)
    d = model.parse(0, [KeyValue(**kv) for kv in kvs])
    members = {ip for ms in d.members.values() for ip in ms}
    eps = {e.mac: (e.vtep, e.ips, e.revision) for es in d.endpoints.values()
           for e in es.values()}
    return members, eps


def diff(want: dict, have: dict) -> dict[str, list]:
    """missing (wanted, absent), extra (present, not wanted), stale (present, different)."""
    return {"missing": sorted(k for k in want if k not in have),
            "extra": sorted(k for k in have if k not in want),
            "stale": sorted(k for k in want if k in have and have[k] != want[k])}


def wrong_entries(n: Node, members: set[str], eps: dict, mode: str) -> dict[str, list]:
    """What is wrong on ``n``'s VTEP, by table (flood, fdb, neigh) and by kind (missing, extra,
    stale). on-miss installs only what a miss asked for: there nothing is missing, but every
    entry installed must be the store's."""
    t = n.tables()
    if "error" in t:
        return {"read": [t["error"]]}
    out: dict[str, list] = {}
    flood = diff({ip: True for ip in members - {n.host.ip}}, {ip: True for ip in t["flood"]})
    fdb_want = {m: [vtep] for m, (vtep, _, _) in eps.items() if vtep != n.host.ip}
    owner: dict[str, tuple[int, str]] = {}
    for m, (vtep, ips, rev) in eps.items():
        for ip in ips if vtep != n.host.ip else ():
            owner[ip] = max(owner.get(ip, (0, "")), (rev, m))
    neigh_want = {ip: m for ip, (_, m) in owner.items()}
    for kind, d in (("flood", flood), ("fdb", diff(fdb_want, t["fdb"])),
                    ("neigh", diff(neigh_want, t["neigh"]))):
        if mode == "on-miss" and kind != "flood":
            d["missing"] = []
        for what, keys in d.items():
            if keys:
                out[f"{kind}_{what}"] = keys
    return out


def check_fleet(nodes: list[Node], etcd, mode: str) -> dict:
    members, eps = store_truth(etcd)
    live = [n for n in nodes if n.agent is not None]
    by_host = {}
    for n in live:
        w = wrong_entries(n, members, eps, mode)
        if n.agent is not None and n.agent.poll() is not None:
            w["agent_exited"] = [n.agent.returncode]
        if n.host.ip not in members:
            w["not_a_member"] = [n.host.ip]
        if w:
            by_host[n.host.name] = w
    wrong = sum(len(v) for w in by_host.values() for k, v in w.items()
                if k.split("_")[0] in KINDS)
    return {"wrong_entries": wrong, "hosts_checked": len(live), "members": len(members),
            "endpoints": len(eps), "wrong_by_host": by_host}


def agent_state(n: Node, full: bool = False) -> dict:
    """What the agent says of itself (``vxtun agent status``), for a host found wrong."""
    p = n.host.run_vxtun("agent", "status", "-j")
    if p.returncode:
        return {"status": p.stderr.strip()}
    st = json.loads(p.stdout)
    if full:
        return st
    return {k: st.get(k) for k in ("revision", "lease", "last_error")} | {
        "programmed": [v.get("programmed", {}).get("revision") for v in st["vteps"]]}


def run(args) -> dict:
    results: dict = {"hosts": args.hosts, "modes": {}}
    with Topology("ctl") as topo:
        etcd = EtcdCluster([topo.host("etcd", "192.0.2.250/24")])
        try:
            etcd.start_all()
            nodes = [Node(topo, i, "vxtun" if i % args.vxtun_every == 0 else "kernel",
                          "nolearning proxy l2miss l3miss") for i in range(1, args.hosts + 1)]
            for mode in args.modes.split(","):
                c0, t0 = etcd_counters(etcd), time.monotonic()
                r: dict = {}
                r["join"] = phase_join(nodes, etcd.url, mode)
                r["rest"] = usage(nodes, 5)
                r.update(phase_endpoints(nodes, mode, args.samples))
                wait(lambda: all(not n.tables()["fdb"] for n in nodes), 30)
                r["entries_per_s"] = phase_bulk(nodes, mode)
                r["cold"] = phase_cold(nodes, etcd.url, mode)
                r["churn"] = phase_churn(nodes, etcd.url, mode, args.churn, etcd)
                c1, t1 = etcd_counters(etcd), time.monotonic()
                r["etcd_per_s"] = {k: (c1.get(k, 0) - c0.get(k, 0)) / (t1 - t0) for k in c1}
                results["modes"][mode] = r
                for n in nodes:         # the next mode starts from empty VTEPs and store
                    n.stop()
                time.sleep(TTL + 2)
                for n in nodes:
                    n.tables(clear=True)
        finally:
            etcd.stop()
    return results


def table(res: dict) -> str:
    def cold(r, kind):
        c = r.get("cold", {}).get(kind)
        if not c or not c["entries_per_s"]:
            return "-"
        done = c["complete_after_start_s"]
        return (f"{c['entries_per_s']:.0f} ({c['commands']} in "
                + (f"{done:.1f} s from start)" if done is not None else "not complete)"))

    def ms(xs, p):
        return f"{pct(xs, p) * 1000:.0f}" if xs else "-"
    rows = [("join p50 / p99 / max (ms)", lambda r: f"{ms(r['join'], 50)} / {ms(r['join'], 99)}"
             f" / {ms(r['join'], 100)}"),
            ("endpoint -> first ping p50 / p99 (ms)",
             lambda r: f"{ms(r['endpoint_ping'], 50)} / {ms(r['endpoint_ping'], 99)}"),
            ("miss -> answer p50 / p99 (ms)",
             lambda r: f"{ms(r['miss_answer'], 50)} / {ms(r['miss_answer'], 99)}"
             if "miss_answer" in r else "-"),
            ("entries programmed / s (fleet, all endpoints published at once)",
             lambda r: f"{r['entries_per_s']:.0f}" if r.get("entries_per_s") else
             ("n/a (nothing until a miss)" if "miss_answer" in r else "not complete")),
            ("entries programmed / s, one agent from cold (kernel / vxtun)",
             lambda r: " / ".join(cold(r, k) for k in ("kernel", "vxtun"))),
            ("etcd puts / deletes / watch events per s",
             lambda r: " / ".join(f"{r['etcd_per_s'].get(k, 0):.1f}" for k in (
                 "etcd_mvcc_put_total", "etcd_mvcc_delete_total",
                 "etcd_debugging_mvcc_events_total"))),
            ("agent CPU % at rest (mean / max)",
             lambda r: f"{r['rest']['cpu_pct_mean']:.1f} / {r['rest']['cpu_pct_max']:.1f}"),
            ("agent RSS MiB (mean / max)",
             lambda r: f"{r['rest']['rss_mib_mean']:.1f} / {r['rest']['rss_mib_max']:.1f}"),
            ("agent CPU % during churn (mean)",
             lambda r: f"{r['churn']['cpu_pct_mean_churn']:.1f}"),
            ("churn: converged after (s; bound)",
             lambda r: (f"{r['churn']['converged_s']:.1f}" if r['churn']['converged_s']
                        is not None else "not") + f"; {r['churn']['converge_timeout_s']:.0f}"),
            ("churn: wrong entries at the end (hosts checked)",
             lambda r: f"{r['churn']['wrong_entries']} ({r['churn']['hosts_checked']})")]
    modes = list(res["modes"])
    out = [f"| {res['hosts']} hosts | " + " | ".join(modes) + " |",
           "|---|" + "---|" * len(modes)]
    for name, f in rows:
        out.append(f"| {name} | " + " | ".join(f(res["modes"][m]) for m in modes) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    global TTL
    p = argparse.ArgumentParser(prog="python3 -m bench.control", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--vxtun-every", type=int, default=2,
                   help="every N-th host runs vxtun, the others a kernel VTEP (default 2)")
    p.add_argument("--churn", type=int, default=60, help="seconds of churn (default 60)")
    p.add_argument("--samples", type=int, default=20, help="endpoint -> ping samples per mode")
    p.add_argument("--modes", default="preprogram,on-miss",
                   help="the modes to measure, in order (default preprogram,on-miss)")
    p.add_argument("--out", default="bench/results", help="where the JSON goes")
    p.add_argument("--ttl", type=int, default=TTL, help=f"the agents' lease TTL (default {TTL})")
    a = p.parse_args(argv)
    TTL = a.ttl
    if os.geteuid() != 0:
        print("bench.control: run me as root (namespaces)", file=sys.stderr)
        return 1
    if not 2 <= a.hosts <= 240:
        print("bench.control: --hosts must be 2..240", file=sys.stderr)
        return 1
    res = run(a)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"control-{a.hosts}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    print(table(res))
    for mode, r in res["modes"].items():
        for host, w in sorted(r["churn"].get("wrong_by_host", {}).items()):
            print(f"{mode} {host}: " + "; ".join(f"{k} {' '.join(map(str, v))}"
                                                 for k, v in sorted(w.items())))
            if host in r["churn"].get("agents", {}):
                print(f"    agent: {json.dumps(r['churn']['agents'][host])}")
    bad = sum(r["churn"]["wrong_entries"] for r in res["modes"].values())
    print(f"\n{path}; churn wrong entries: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
