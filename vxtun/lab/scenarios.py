"""The tutorial's seven VXLAN scenarios and multi-VNI isolation, built with kernel and vxtun VTEPs
mixed (``vxtun lab up N --vteps kernel,vxtun,vxtun``).

The scenarios are those of /work/shared/SCENARIOS.md (the tutorial "Building VXLAN networks on
Linux"): three hosts (two for point to point) on one underlay bridge, VNI 42, UDP port 4789,
overlay 10.20.1.0/24.  Every host runs one kind of VTEP, ``kernel`` (``ip link add vxlan0
type vxlan ...``) or ``vxtun`` (``vxtun up ... &``, left running in the background), and every
configuration command is printed as a user would type it, so that the lab doubles as a
cheat-sheet.  Scenarios 3, 6 and 7 put "containers" (namespaces with a veth into ``br0``)
behind a bridge on each host, as the tutorial does: a kernel VTEP answers ARP (``proxy``) and
raises L3 misses only for requests that *pass through* it, which a container's are and the
host's own (whose ARP cache is the very table the VTEP consults) are not (``arp_reduce`` in
drivers/net/vxlan/vxlan_core.c).

``Lab.build()`` makes everything and records it in the lab's state file (``state.py``);
``Lab.check()`` proves the scenario works (pings, and the table contents it promises).
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

from . import state as labstate
from . import traffic
from .netns import Host, Topology, python, run

VNI = 42
PORT = 4789
ZERO = "00:00:00:00:00:00"
QUIET = "sysctl -qw net.ipv6.conf.default.disable_ipv6=1"
KINDS = ("kernel", "vxtun")


@dataclass(frozen=True)
class Scenario:
    """One of ``vxtun lab list``: its key on the command line, what it shows, how many
    hosts it needs, and the mix of VTEPs it gets without ``--vteps``."""
    key: str                       # "1".."7", "vni"
    title: str
    hosts: int
    what: str
    vteps: str                     # the default mix


SCENARIOS = {s.key: s for s in (
    Scenario("1", "point to point", 2,
             "two VTEPs, each the other's remote; the default FDB entry sends everything there",
             "kernel,vxtun"),
    Scenario("2", "multicast", 3,
             "every VTEP joins group 239.1.1.1: floods go to the group, replies come back "
             "unicast through learned entries", "kernel,vxtun,vxtun"),
    Scenario("3", "bridge + containers", 3,
             "the VTEP is a port of br0; two containers per host behind it", "kernel,vxtun,vxtun"),
    Scenario("4", "head-end replication", 3,
             "no group: one all-zeros FDB entry per other VTEP, floods are copied to each",
             "kernel,vxtun,vxtun"),
    Scenario("5", "static FDB, nolearning", 3,
             "as 4, with nolearning and each peer's MAC written by hand", "kernel,vxtun,vxtun"),
    Scenario("6", "ARP proxy", 3,
             "as 5 with proxy: the VTEP answers ARP from its neighbour table",
             "kernel,vxtun,vxtun"),
    Scenario("7", "miss events and a resolver", 3,
             "proxy, l2miss, l3miss and empty tables: a resolver answers each miss",
             "kernel,vxtun,vxtun"),
    Scenario("vni", "multi-VNI isolation", 3,
             "VNI 42 (group 239.1.1.42) and VNI 43 (group 239.1.1.43) side by side on every host",
             "kernel,vxtun,vxtun"),
)}
ALIASES = {"8": "vni", "multi-vni": "vni"}


def scenario(key: str) -> Scenario:
    s = SCENARIOS.get(ALIASES.get(key, key))
    if s is None:
        raise ValueError(f"no scenario {key!r}: choose one of {', '.join(SCENARIOS)}")
    return s


def parse_vteps(text: str | None, sc: Scenario) -> list[str]:
    """``kernel,vxtun,vxtun`` (one kind per host), or one kind for every host."""
    kinds = [k.strip() for k in (text or sc.vteps).split(",")]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"--vteps: unknown VTEP kind {bad[0]!r} (use kernel or vxtun)")
    if len(kinds) == 1:
        kinds *= sc.hosts
    if len(kinds) != sc.hosts:
        raise ValueError(f"--vteps: scenario {sc.key} has {sc.hosts} hosts, "
                         f"got {len(kinds)} kinds")
    return kinds


@dataclass
class Vtep:
    dev: str
    kind: str                      # "kernel" | "vxtun"
    vni: int
    address: str = ""              # overlay address on the VTEP itself, if any
    group: str = ""
    mac: str = ""
    pid: int = 0                   # the vxtun up process
    flags: list[str] = field(default_factory=list)     # nolearning, proxy, l2miss, l3miss


@dataclass
class Container:
    name: str                      # "host1-c1"
    ns: str
    address: str
    mac: str = ""


@dataclass
class LabHost:
    name: str
    ns: str
    underlay: str                  # "192.0.2.1/24"
    kind: str
    vteps: list[Vtep] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.underlay.split("/")[0]


class LabTopology(Topology):
    """A Topology named after the lab that writes each namespace into the state file before
    making it (a lab killed half-way is still found by ``vxtun lab down``)."""

    def __init__(self, st: labstate.State) -> None:
        self.state = st
        super().__init__(prefix=st.data["prefix"])

    def _add_ns(self, ns: str) -> None:
        self.state.add_namespace(ns)
        super()._add_ns(ns)


class Lab:
    def __init__(self, sc: Scenario, kinds: list[str], pure: bool = False, ipv6: bool = False,
                 name: str = labstate.DEFAULT_NAME, out=sys.stdout) -> None:
        self.sc = sc
        self.kinds = kinds
        self.pure = pure
        self.ipv6 = ipv6
        self.name = name
        self.out = out
        self.state = labstate.State(name)
        self.topo: LabTopology | None = None
        self.hosts: list[LabHost] = []
        self.nethosts: dict[str, Host] = {}      # host and container name -> netns.Host

    # --- output ------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def sh(self, h: str, cmd: str) -> str:
        """Run ``cmd`` in host ``h`` and print it as typed there."""
        self.say(f"{h}$ {cmd}")
        return self.nethosts[h].sh(cmd)

    def vxtun_cmd(self, h: str, *args: str) -> str:
        self.say(f"{h}$ vxtun {shlex.join(args)}")
        return self.nethosts[h].cmd(*args)

    # --- addresses ---------------------------------------------------------------------

    def underlay(self, i: int) -> str:
        return f"2001:db8::{i}/64" if self.ipv6 else f"192.0.2.{i}/24"

    def group(self, vni: int = VNI) -> str:
        if self.sc.key == "vni":
            return f"ff05::{vni}" if self.ipv6 else f"239.1.1.{vni}"
        return "ff05::239:1:1:1" if self.ipv6 else "239.1.1.1"

    @property
    def env(self) -> dict:
        return {"VXTUN_PUREPYTHON": "1" if self.pure else "0"}

    # --- building ----------------------------------------------------------------------

    def build(self) -> None:
        if labstate.lab_namespaces(self.name) or os.path.exists(labstate.path_of(self.name)):
            raise RuntimeError(f"lab {self.name!r} exists: vxtun lab down"
                               + ("" if self.name == labstate.DEFAULT_NAME
                                  else f" --name {self.name}") + " first")
        sc = self.sc
        self.state.data.update(scenario=sc.key, title=sc.title, kinds=self.kinds,
                               pure=self.pure, ipv6=self.ipv6)
        self.state.save()
        os.makedirs(labstate.log_dir(self.name), exist_ok=True)
        self.topo = LabTopology(self.state)
        self.say(f"# underlay: bridge br0 in namespace {self.topo.ul}; each host is a namespace "
                 f"with eth0 on it")
        for i, kind in enumerate(self.kinds, 1):
            name = f"host{i}"
            h = self.topo.host(name, self.underlay(i))
            self.nethosts[name] = h
            self.hosts.append(LabHost(name, h.ns, self.underlay(i), kind))
            self.say(f"#   {name}: namespace {h.ns}, eth0 {self.underlay(i)}, {kind} VTEP")
        self.say("\n# every device made from here on has no IPv6: the overlay is IPv4, and "
                 "IPv6's router solicitations would fill the tables before the first ping")
        for h in self.hosts:
            self.sh(h.name, QUIET)
        self.save_hosts()
        getattr(self, f"build_{sc.key}")()
        self.save_hosts()

    def save_hosts(self) -> None:
        self.state.data["hosts"] = [
            {"name": h.name, "ns": h.ns, "underlay": h.underlay, "kind": h.kind,
             "vteps": [vars(v) for v in h.vteps], "containers": [vars(c) for c in h.containers]}
            for h in self.hosts]
        self.state.data["pids"] = [v.pid for h in self.hosts for v in h.vteps if v.pid]
        self.state.save()

    def others(self, h: LabHost) -> list[LabHost]:
        return [o for o in self.hosts if o is not h]

    def add_vtep(self, h: LabHost, vni: int = VNI, *, dev: str = "", remote: str = "",
                 group: str = "", address: str = "", master: str = "", flags: tuple = ()) -> Vtep:
        """One VTEP, the host's kind, as the tutorial makes it (``flags``: nolearning, proxy,
        l2miss, l3miss)."""
        dev = dev or ("vxlan0" if h.kind == "kernel" else "vxtun0")
        v = Vtep(dev, h.kind, vni, address=address, group=group, flags=list(flags))
        if h.kind == "kernel":
            peer = f" remote {remote}" if remote else (f" group {group}" if group else "")
            self.sh(h.name, f"ip link add {dev} type vxlan id {vni} dstport {PORT}{peer} "
                            f"local {h.ip} dev eth0" + "".join(f" {f}" for f in flags))
            if master:
                self.sh(h.name, f"ip link set {dev} master {master}")
            if address:
                self.sh(h.name, f"ip addr add {address} dev {dev}")
            self.sh(h.name, f"ip link set {dev} up")
        else:
            args = ["--name", dev, "--vni", str(vni)]
            args += ["--remote", remote] if remote else (["--group", group] if group else [])
            args += ["--local", h.ip, "--dev", "eth0", "--dstport", str(PORT)]
            args += [f"--{f}" for f in flags]
            args += ["--address", address] if address else []
            args += ["--master", master] if master else []
            pure = "VXTUN_PUREPYTHON=1 " if self.pure else ""
            self.say(f"{h.name}$ {pure}vxtun up {shlex.join(args)} &")
            v.pid = self.start_vxtun(h, dev, args)
        v.mac = json.loads(self.nethosts[h.name].sh(f"ip -j link show {dev}"))[0]["address"]
        h.vteps.append(v)
        self.save_hosts()
        return v

    def start_vxtun(self, h: LabHost, dev: str, args: list[str], timeout: float = 30) -> int:
        """``vxtun up ARGS`` in the background of host ``h``, its output in the lab's log
        directory; returns its pid once its control socket answers."""
        host = self.nethosts[h.name]
        log = os.path.join(labstate.log_dir(self.name), f"{h.name}-{dev}.log")
        with open(log, "w") as f:
            p = host.popen(python("-m", "vxtun", "up", *args), env=self.env,
                           stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        self.state.data["pids"].append(p.pid)
        self.state.save()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if p.poll() is not None:
                with open(log) as f:
                    raise RuntimeError(f"vxtun up on {h.name} exited {p.returncode}:\n{f.read()}")
            if host.run_vxtun("show", "dev", dev).returncode == 0:
                return p.pid
            time.sleep(0.1)
        raise RuntimeError(f"vxtun {dev} on {h.name} did not come up in {timeout}s")

    def fdb_append(self, h: LabHost, v: Vtep, mac: str, dst: str) -> None:
        if v.kind == "kernel":
            self.sh(h.name, f"bridge fdb append {mac} dev {v.dev} dst {dst}")
        else:
            self.vxtun_cmd(h.name, "fdb", "append", mac, "dst", dst, "dev", v.dev)

    def neigh_add(self, h: LabHost, v: Vtep, ip: str, mac: str) -> None:
        if v.kind == "kernel":
            self.sh(h.name, f"ip neigh add {ip} lladdr {mac} dev {v.dev}")
        else:
            self.vxtun_cmd(h.name, "neigh", "add", ip, "lladdr", mac, "dev", v.dev)

    def bridge(self, h: LabHost) -> None:
        self.sh(h.name, "ip link add br0 type bridge")
        self.sh(h.name, "ip link set br0 up")

    def container(self, h: LabHost, k: int, address: str) -> Container:
        """The tutorial's ``set_container br0 NAME ADDRESS``, spelled out."""
        name = f"{h.name}-c{k}"
        ns = self.topo.namespace(name)
        self.say(f"{h.name}$ ip netns add {ns}")
        for q in (QUIET, QUIET.replace("default", "all")):
            self.say(f"{h.name}$ ip netns exec {ns} {q}")
            run(f"ip netns exec {ns} {q}")
        run(f"ip -n {h.ns} link add ve{k} type veth peer name eth0 netns {ns}")
        self.say(f"{h.name}$ ip link add ve{k} type veth peer name eth0 netns {ns}")
        self.sh(h.name, f"ip link set ve{k} master br0 up")
        for cmd in ("ip link set lo up", f"ip addr add {address} dev eth0", "ip link set eth0 up"):
            self.say(f"{h.name}$ ip -n {ns} {cmd[3:]}")
            run(f"ip -n {ns} {cmd[3:]}")
        c = Container(name, ns, address)
        c.mac = json.loads(run(f"ip -n {ns} -j link show eth0").stdout)[0]["address"]
        self.nethosts[name] = Host(self.topo, name, ns)
        h.containers.append(c)
        self.save_hosts()
        return c

    def build_1(self) -> None:
        a, b = self.hosts
        for h, o in ((a, b), (b, a)):
            self.say(f"\n# {h.name}: point to point to {o.name}")
            self.add_vtep(h, remote=o.ip, address=f"10.20.1.{self.hosts.index(h) + 2}/24")

    def build_2(self) -> None:
        for i, h in enumerate(self.hosts):
            self.say(f"\n# {h.name}: joins {self.group()}")
            self.add_vtep(h, group=self.group(), address=f"10.20.1.{i + 2}/24")

    def build_3(self) -> None:
        for i, h in enumerate(self.hosts, 1):
            self.say(f"\n# {h.name}: br0 with the VTEP and two containers")
            self.bridge(h)
            self.add_vtep(h, group=self.group(), master="br0")
            for k in (1, 2):
                self.container(h, k, f"10.20.1.{10 * i + k}/24")

    def build_her(self, flags: tuple = (), containers: bool = False,
                  defaults: bool = True) -> None:
        """Scenarios 4-7: no group, no remote; the FDB (and, with proxy, the neighbour
        table) written by hand or, for 7, by the resolver."""
        for i, h in enumerate(self.hosts):
            self.say(f"\n# {h.name}: a VTEP with no remote and no group")
            if containers:
                self.bridge(h)
                self.add_vtep(h, master="br0", flags=flags)
                self.container(h, 1, f"10.20.1.{i + 2}/24")
            else:
                self.add_vtep(h, address=f"10.20.1.{i + 2}/24", flags=flags)
        if not defaults:
            return
        for h in self.hosts:
            self.say(f"\n# {h.name}: head-end replication, one all-zeros entry per other VTEP")
            for o in self.others(h):
                self.fdb_append(h, h.vteps[0], ZERO, o.ip)
        if "nolearning" not in flags:
            return
        for h in self.hosts:
            self.say(f"\n# {h.name}: every other overlay MAC, by hand (nolearning)")
            for o in self.others(h):
                self.fdb_append(h, h.vteps[0], self.peer_mac(o), o.ip)
        if "proxy" not in flags:
            return
        for h in self.hosts:
            self.say(f"\n# {h.name}: the neighbour table the proxy answers from")
            for o in self.others(h):
                ip = (o.containers[0].address if containers else o.vteps[0].address)
                self.neigh_add(h, h.vteps[0], ip.split("/")[0], self.peer_mac(o))

    @staticmethod
    def peer_mac(o: LabHost) -> str:
        return o.containers[0].mac if o.containers else o.vteps[0].mac

    def build_4(self) -> None:
        self.build_her()

    def build_5(self) -> None:
        self.build_her(("nolearning",))

    def build_6(self) -> None:
        self.build_her(("nolearning", "proxy"), containers=True)

    def build_7(self) -> None:
        self.build_her(("nolearning", "proxy", "l2miss", "l3miss"), containers=True,
                       defaults=False)
        table = os.path.join(labstate.log_dir(self.name), "hosts.txt")
        with open(table, "w") as f:
            f.write("# IP MAC VTEP-IP: what the central controller knows\n")
            for o in self.hosts:
                c = o.containers[0]
                f.write(f"{c.address.split('/')[0]} {c.mac} {o.ip}\n")
        for h in self.hosts:
            self.say(f"\n# {h.name}: a resolver answers the VTEP's misses from {table}")
            self.start_resolver(h, h.vteps[0], table)

    def start_resolver(self, h: LabHost, v: Vtep, table: str) -> None:
        args = ["dev", v.dev, "--kind", v.kind, "--table", table]
        self.say(f"{h.name}$ python3 -m vxtun.lab.resolver {shlex.join(args)} &")
        log = os.path.join(labstate.log_dir(self.name), f"{h.name}-resolver.log")
        with open(log, "w") as f:
            p = self.nethosts[h.name].popen(python("-m", "vxtun.lab.resolver", *args),
                                            stdin=subprocess.DEVNULL, stdout=f,
                                            stderr=subprocess.STDOUT)
        self.state.data["pids"].append(p.pid)
        self.state.save()
        deadline = time.time() + 20
        while time.time() < deadline:          # its first line says it listens
            with open(log) as f:
                if '"ready"' in f.read():
                    return
            if p.poll() is not None:
                break
            time.sleep(0.1)
        with open(log) as f:
            raise RuntimeError(f"the resolver on {h.name} did not start:\n{f.read()}")

    def build_vni(self) -> None:
        for i, h in enumerate(self.hosts):
            self.say(f"\n# {h.name}: two overlays, each with its own VNI and group")
            for vni in (42, 43):
                dev = f"vxlan{vni}" if h.kind == "kernel" else f"vxtun{vni}"
                self.add_vtep(h, vni, dev=dev, group=self.group(vni),
                              address=f"10.20.{vni}.{i + 2}/24")

    # --- checks ------------------------------------------------------------------------

    def ping(self, src: str, ip: str, count: int = 2) -> tuple[bool, str]:
        r = traffic.run_in(self.nethosts[src], "ping", ip, count, 56)
        return r["received"] == count, f"{src} -> {ip}: {r['received']}/{count} echo replies"

    def pairs(self) -> list[tuple[str, str]]:
        """(from, to overlay IP) for every ordered pair of overlay endpoints on different
        hosts (the first container or the VTEP's address)."""
        ends = []
        for h in self.hosts:
            if h.containers:
                ends += [(h.name, c.name, c.address.split("/")[0]) for c in h.containers]
            else:
                ends += [(h.name, h.name, v.address.split("/")[0]) for v in h.vteps
                         if v.vni == VNI and v.address]
        return [(a[1], b[2]) for a in ends for b in ends if a[0] != b[0]]

    def fdb_rows(self, h: LabHost, v: Vtep) -> list[dict]:
        """The VTEP's FDB as ``bridge -j fdb show`` gives it, one row per destination."""
        if v.kind == "kernel":
            return json.loads(self.nethosts[h.name].sh(f"bridge -j fdb show dev {v.dev}") or "[]")
        return json.loads(self.nethosts[h.name].cmd("fdb", "show", "dev", v.dev, "-j") or "[]")

    @staticmethod
    def learned(rows: list[dict]) -> dict[str, str]:
        """MAC -> VTEP IP of the entries the VTEP learned (no permanent or static state)."""
        return {r["mac"]: r.get("dst", "") for r in rows
                if r.get("dst") and r.get("state", "") not in ("permanent", "static")
                and r["mac"] != ZERO}

    def check(self) -> list[tuple[bool, str]]:
        """The scenario's own check: what SCENARIOS.md says must hold."""
        key = self.sc.key
        results: list[tuple[bool, str]] = []
        if key == "7":
            # The first packets raise the misses; the resolvers answer; then it works.
            for src, ip in self.pairs():
                ok = False
                deadline = time.time() + 15
                while not ok and time.time() < deadline:
                    ok, text = self.ping(src, ip, 1)
                results.append((ok, f"{text} once the resolvers answered the misses"))
            return results
        pairs = self.pairs()
        if key in ("3",):
            pairs += [(f"{h.name}-c2", f"10.20.1.{10 * j + 2}") for h in self.hosts
                      for j in range(1, len(self.hosts) + 1) if f"host{j}" != h.name]
        for src, ip in pairs:
            results.append(self.ping(src, ip))
        if key == "vni":
            for h in self.hosts:
                for o in self.others(h):
                    results.append(self.ping(h.name, f"10.20.43.{self.hosts.index(o) + 2}"))
            macs = {vni: {v.mac for h in self.hosts for v in h.vteps if v.vni == vni}
                    for vni in (42, 43)}
            for h in self.hosts:
                for v in h.vteps:
                    other = macs[85 - v.vni]
                    leaked = set(self.learned(self.fdb_rows(h, v))) & other
                    results.append((not leaked, f"{h.name} {v.dev} (VNI {v.vni}) learned no MAC "
                                                f"of VNI {85 - v.vni}" +
                                    (f": {sorted(leaked)}" if leaked else "")))
        if key in ("2", "3", "4"):
            for h in self.hosts:
                v = h.vteps[0]
                got = self.learned(self.fdb_rows(h, v))
                want = {}
                for o in self.others(h):
                    for mac in ([c.mac for c in o.containers] or [o.vteps[0].mac]):
                        want[mac] = o.ip
                wrong = {m: d for m, d in want.items() if got.get(m) != d}
                results.append((not wrong, f"{h.name} {v.dev} learned every peer MAC against "
                                           "its VTEP IP" + (f"; missing or wrong: {wrong}"
                                                            if wrong else "")))
        if key in ("5", "6"):
            for h in self.hosts:
                v = h.vteps[0]
                got = self.learned(self.fdb_rows(h, v))
                results.append((not got, f"{h.name} {v.dev} (nolearning) learned nothing"
                                + (f": {got}" if got else "")))
        if key == "1":
            h = self.hosts[0]
            rows = self.fdb_rows(h, h.vteps[0])
            o = self.hosts[1]
            results.append((any(r["mac"] == ZERO and r.get("dst") == o.ip for r in rows),
                            f"{h.name}'s default entry {ZERO} dst {o.ip}"))
        return results

    # --- status ------------------------------------------------------------------------


def _shower(out: list[str], host: str, ns: str):
    """A function that runs one show command in ``ns`` and adds it, as typed, and its output
    to ``out``."""
    def show(cmd: str, vxtun: bool = False) -> None:
        full = (f"ip netns exec {ns} {shlex.join(python('-m', 'vxtun'))} {cmd}" if vxtun
                else f"ip netns exec {ns} {cmd}")
        r = run(full, check=False)
        out.append(f"  {host}$ {'vxtun ' if vxtun else ''}{cmd}")
        text = (r.stdout + (r.stderr if r.returncode else "")).rstrip()
        out.extend(f"    {ln}" for ln in (text.splitlines() or ["(empty)"]))
    return show


def status_lines(st: labstate.State) -> list[str]:
    """``vxtun lab status``: hosts, VTEPs, addresses and every VTEP's tables, each table with
    the command that shows it."""
    d = st.data
    out = [f"lab {st.name}: scenario {d.get('scenario', '?')} ({d.get('title', '?')}), "
           f"{'pure-Python' if d.get('pure') else 'default'} dataplane for vxtun VTEPs"]
    for h in d.get("hosts", []):
        ns = h["ns"]
        out.append(f"\n{h['name']} (namespace {ns}): eth0 {h['underlay']}, {h['kind']} VTEP")
        show = _shower(out, h["name"], ns)
        for v in h["vteps"]:
            alive = ""
            if v["kind"] == "vxtun" and v.get("pid"):
                alive = "" if os.path.exists(f"/proc/{v['pid']}") else " (process gone!)"
            out.append(f"  {v['dev']}: {v['kind']} VTEP, VNI {v['vni']}, MAC {v['mac']}"
                       + (f", overlay {v['address']}" if v.get("address") else "")
                       + (f", group {v['group']}" if v.get("group") else "") + alive)
        for v in h["vteps"]:
            if v["kind"] == "kernel":
                show(f"bridge fdb show dev {v['dev']}")
            else:
                show(f"fdb show dev {v['dev']}", vxtun=True)
                show(f"neigh show dev {v['dev']}", vxtun=True)
            show(f"ip neigh show dev {v['dev']}")
        for c in h.get("containers", []):
            out.append(f"  container {c['name']} (namespace {c['ns']}): eth0 {c['address']} "
                       f"{c['mac']}")
            r = run(f"ip -n {c['ns']} neigh show dev eth0", check=False)
            out.append(f"    {c['name']}$ ip neigh show dev eth0")
            out.extend(f"      {ln}" for ln in (r.stdout.rstrip().splitlines() or ["(empty)"]))
    return out
