"""``vxtun lab walk N``: build a scenario, run its first exchange from empty tables, and narrate
every step as it happens, from real events.

What is watched (all started before the exchange, all in the lab's namespaces):

* the underlay: every frame on every port of the underlay bridge (``traffic frames``): a frame
  entering port ``vI`` is what host I sent, a frame leaving it is what host I received, so a
  flood's copies are counted where they land;
* the overlay: every frame on each VTEP device (``traffic frames`` in the host): what the host
  (or a container behind ``br0``) hands its VTEP, and what the VTEP delivers;
* the tables: kernel VTEPs through ``bridge monitor fdb`` and ``ip monitor neigh`` (which also
  prints the kernel's ``miss`` notifications); vxtun VTEPs through ``vxtun monitor -j`` and,
  when this vxtun has it, ``vxtun trace -j`` (its decision records: the lookup and the action);
  every host's and container's ARP cache through ``ip monitor neigh``.

Events are stamped when read; a table change is stamped a little late (it crossed a pipe after
its cause), so before it is narrated it is moved back to just after the frame that caused it
(the delivery of a frame from that MAC, for a learned entry).  They are narrated in time order
after a short window (``WINDOW``), filling a :class:`vxtun.lab.walkmodel.Walk`; then the
scenario's checks are judged on what was seen, and the walk exits non-zero if one failed.
"""
from __future__ import annotations

import json
import os
import queue
import shlex
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from ..wire.addr import ip_version
from ..wire.offload import csum_add, fold_complement
from . import state as labstate
from . import traffic
from .netns import child_env, python
from .scenarios import PORT, ZERO, Lab, LabHost, parse_vteps, scenario
from .layers import layers_of
from .walkmodel import Layer, Step, TableChange, Walk
from .walkmodel import Host as WHost
from .walkmodel import Vtep as WVtep

WINDOW = 0.4            # seconds an event waits for earlier ones that are still in a pipe


@dataclass
class Event:
    t: float
    kind: str            # "ul" | "ol" | "fdb" | "neigh" | "miss" | "trace"
    host: str            # the host (or container) it was seen in
    data: dict = field(default_factory=dict)
    rank: int = 0        # 1: a table change placed right after its cause (sorts after it)

    def order(self) -> tuple:
        """Time order; at equal times (veth hands one skb, with one timestamp, from the
        sender's capture to the receiver's) cause before effect: a frame entering a VTEP, then
        its datagram on the underlay, then the frame a VTEP delivers, then the rest."""
        if self.kind == "ol":
            tie = 0 if self.data.get("out") else 2
        else:
            tie = 1 if self.kind == "ul" else 3
        return (self.t, self.rank, tie)


# --- what a frame is, in one line ----------------------------------------------------------

def mac(b: bytes) -> str:
    return b.hex(":")


def _ip4(b: bytes) -> str:
    return ".".join(map(str, b))


def summary(f: bytes) -> str:
    """``ARP who-has 10.20.1.3 tell 10.20.1.2``, ``ICMP echo request id 7 seq 1``, ..."""
    if len(f) < 14:
        return f"{len(f)} bytes (truncated)"
    etype = struct.unpack("!H", f[12:14])[0]
    p = f[14:]
    if etype == 0x0806 and len(p) >= 28:
        op = struct.unpack("!H", p[6:8])[0]
        if op == 1:
            return f"ARP who-has {_ip4(p[24:28])} tell {_ip4(p[14:18])}"
        return f"ARP reply {_ip4(p[14:18])} is-at {mac(p[8:14])}"
    if etype == 0x0800 and len(p) >= 20:
        ihl = (p[0] & 0x0F) * 4
        src, dst, proto = _ip4(p[12:16]), _ip4(p[16:20]), p[9]
        if proto == 1 and len(p) >= ihl + 8:
            t = p[ihl]
            ident, seq = struct.unpack("!HH", p[ihl + 4:ihl + 8])
            name = {8: "echo request", 0: "echo reply"}.get(t, f"type {t}")
            return f"ICMP {src} > {dst} {name} id {ident} seq {seq}"
        return f"IPv4 {src} > {dst} proto {proto}"
    if etype == 0x86DD and len(p) >= 40:
        nh = p[6]
        if nh == 58 and len(p) > 40:
            t = p[40]
            name = {135: "ND neighbour solicitation", 136: "ND neighbour advertisement",
                    128: "ICMPv6 echo request", 129: "ICMPv6 echo reply",
                    133: "ND router solicitation", 143: "MLDv2 report"}.get(t, f"ICMPv6 {t}")
            return name
        return f"IPv6 next header {nh}"
    return f"ethertype 0x{etype:04x}"


def vxlan_of(f: bytes) -> dict | None:
    """Outer addresses, ports, TTL, VNI and the inner frame of a VXLAN datagram to PORT."""
    u = traffic._udp_offset(f, PORT) if len(f) >= 42 else None
    if u is None or len(f) < u + 16:
        return None
    if f[12:14] == b"\x08\x00":
        src, dst, ttl = _ip4(f[26:30]), _ip4(f[30:34]), f[22]
    else:
        import socket
        src, dst = (socket.inet_ntop(socket.AF_INET6, f[a:a + 16]) for a in (22, 38))
        ttl = f[21]
    sport = struct.unpack("!H", f[u:u + 2])[0]
    return {"src": src, "dst": dst, "ttl": ttl, "sport": sport,
            "vni": int.from_bytes(f[u + 12:u + 15], "big"), "inner": f[u + 16:]}


def layers(frame: bytes, first: set[str], partial: bool = False) -> list[Layer]:
    """The datagram as layers with their sizes, the fields that matter explained once
    (``vxtun.lab.layers``).  ``partial``: the capture saw it before checksum offload filled in
    its UDP checksum; it is filled in here as the NIC would have, and said so."""
    if partial:
        frame = with_udp_checksum(frame)
    out = layers_of(frame, first)
    if partial:
        for la in out:
            for f in la.fields:
                if la.name == "UDP" and f.name == "checksum":
                    f.value += (", filled in by the walk: the capture saw the datagram "
                                "before checksum offload (CHECKSUM_PARTIAL) computed it")
    return out


def with_udp_checksum(f: bytes) -> bytes:
    """The frame with its outer UDP checksum computed (RFC 768: over the pseudo-header and
    the datagram; a result of 0 is sent as 0xffff)."""
    u = traffic._udp_offset(f, PORT)
    if u is None:
        return f
    length = struct.unpack("!H", f[u + 4:u + 6])[0]
    if f[12:14] == b"\x08\x00":
        pseudo = f[26:34] + struct.pack("!xBH", 17, length)
    else:
        pseudo = f[22:54] + struct.pack("!IxxxB", length, 17)
    udp = f[u:u + 4] + f[u + 4:u + 6] + b"\0\0" + f[u + 8:u + length]
    c = fold_complement(csum_add(pseudo + udp)) or 0xFFFF
    return f[:u + 6] + struct.pack("!H", c) + f[u + 8:]


# --- watching ------------------------------------------------------------------------------

class Watch:
    """Every watcher of the walk, each a child process read by a thread into one queue."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.q: queue.Queue = queue.Queue()
        self.procs: list[subprocess.Popen] = []
        self.frames: dict[str, list[tuple[float, bytes]]] = {}     # pcap name -> frames
        self.trace = False

    def start(self, where: str, ns: str, argv: list[str], parse, ready: bool = False) -> None:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=child_env(), start_new_session=True)
        self.procs.append(p)
        self.lab.state.data["pids"].append(p.pid)
        if ready:
            line = p.stdout.readline()
            if '"ready"' not in line:
                raise RuntimeError(f"watcher {' '.join(argv)} in {where} did not start")

        def read() -> None:
            for line in p.stdout:
                t = time.time()
                try:
                    for ev in parse(where, line, t):
                        self.q.put(ev)
                except (ValueError, KeyError, IndexError):
                    pass            # a line this walk does not narrate
        threading.Thread(target=read, daemon=True).start()

    def frame_parser(self, kind: str, names: dict[str, str]):
        def parse(where: str, line: str, t: float):
            d = json.loads(line)
            f = bytes.fromhex(d["hex"])
            host = names.get(d["dev"], where)
            pcap = f"{host}-eth0" if kind == "ul" else f"{where}-{d['dev']}"
            self.frames.setdefault(pcap, []).append((d["t"], f))
            yield Event(d["t"], kind, host, {"dev": d["dev"], "out": d["out"], "frame": f,
                                             "partial": d.get("partial", False)})
        return parse

    @staticmethod
    def neigh_parser(where: str, line: str, t: float):
        w = [x for x in line.split() if not x.startswith("[")]
        if w and w[0] == "miss":
            dev = w[w.index("dev") + 1] if "dev" in w else ""
            rest = [x for i, x in enumerate(w) if x != "dev" and (i == 0 or w[i - 1] != "dev")]
            if rest[1] == "lladdr":
                yield Event(t, "miss", where, {"dev": dev, "l2": rest[2], "line": line.strip()})
            else:
                yield Event(t, "miss", where, {"dev": dev, "l3": rest[1], "line": line.strip()})
            return
        deleted = w[0] == "Deleted"
        if deleted:
            w = w[1:]
        if "lladdr" in w and "dev" in w:
            yield Event(t, "neigh", where, {"dev": w[w.index("dev") + 1], "ip": w[0],
                                            "lladdr": w[w.index("lladdr") + 1],
                                            "state": w[-1], "deleted": deleted,
                                            "line": " ".join(w)})

    @classmethod
    def l2miss_parser(cls, where: str, line: str, t: float):
        for ev in cls.neigh_parser(where, line, t):
            if ev.kind == "miss":
                yield ev

    @staticmethod
    def bridge_parser(where: str, line: str, t: float):
        w = line.split()
        deleted = w[0] == "Deleted"
        if deleted:
            w = w[1:]
        if "self" not in w or "dst" not in w:
            return                  # the bridge's own entries (master br0), not the VTEP's
        yield Event(t, "fdb", where, {"dev": w[w.index("dev") + 1], "mac": w[0],
                                      "dst": w[w.index("dst") + 1], "deleted": deleted,
                                      "permanent": "permanent" in w or "static" in w,
                                      "line": " ".join(x for x in w)})

    @staticmethod
    def vxtun_parser(where: str, line: str, t: float):
        from ..cli.output import format_fdb_line
        d = json.loads(line)
        ev = d.get("event")
        if ev == "fdb":
            for r in d.get("remotes") or [{}]:
                one = dict(d, remotes=[r])
                yield Event(t, "fdb", where, {
                    "dev": d["ifname"], "mac": d["mac"], "dst": r.get("dst", ""),
                    "deleted": d.get("action") == "del",
                    "permanent": d.get("state") in ("permanent", "static"),
                    "line": format_fdb_line(one)})
        elif ev == "l3miss":
            yield Event(t, "miss", where, {"dev": d["dev"], "l3": d["dst"],
                                           "line": f"miss {d['dst']} dev {d['dev']} STALE"})
        elif ev == "l2miss":
            yield Event(t, "miss", where, {"dev": d["dev"], "l2": d["lladdr"],
                                           "line": f"miss dev {d['dev']} lladdr {d['lladdr']} "
                                                   "STALE"})
        elif ev == "neigh":
            yield Event(t, "vneigh", where, {"dev": d["dev"], "ip": d["dst"],
                                             "lladdr": d.get("lladdr", ""),
                                             "deleted": d.get("action") == "del",
                                             "line": f"{d['dst']} dev {d['dev']} lladdr "
                                                     f"{d.get('lladdr', '')} "
                                                     f"{(d.get('state') or [''])[0]}"})

    @staticmethod
    def trace_parser(where: str, line: str, t: float):
        d = json.loads(line)
        if d.get("type") == "trace":
            yield Event(float(d.get("time", t)), "trace", where, d)

    def start_all(self) -> None:
        lab = self.lab
        ports = {f"v{i}": h.name for i, h in enumerate(lab.hosts)}
        self.start("underlay", lab.topo.ul, traffic.command("frames", ",".join(ports)),
                   self.frame_parser("ul", ports), ready=True)
        self.trace = trace_available(lab)
        for h in lab.hosts:
            devs = ",".join(v.dev for v in h.vteps)
            self.start(h.name, h.ns, traffic.command("frames", devs),
                       self.frame_parser("ol", {}), ready=True)
            # The overlay is IPv4: its ARP caches and L3 misses are AF_INET; a kernel VTEP's FDB
            # changes and L2 misses are AF_BRIDGE neighbours (vxlan_fdb_notify, vxlan_fdb_miss).
            self.start(h.name, h.ns, ["ip", "-4", "monitor", "neigh"], self.neigh_parser)
            if h.kind == "kernel":
                self.start(h.name, h.ns, ["bridge", "monitor", "fdb"], self.bridge_parser)
                self.start(h.name, h.ns, ["ip", "-f", "bridge", "monitor", "neigh"],
                           self.l2miss_parser)
            else:
                for v in h.vteps:
                    self.start(h.name, h.ns, python("-m", "vxtun", "monitor", "dev", v.dev, "-j"),
                               self.vxtun_parser)
                    if self.trace:
                        self.start(h.name, h.ns, python("-m", "vxtun", "trace", "dev", v.dev,
                                                        "-j"), self.trace_parser)
            for c in h.containers:
                self.start(c.name, c.ns, ["ip", "-4", "monitor", "neigh"], self.neigh_parser)
        time.sleep(0.5)             # the monitors have subscribed (they print no banner)

    def stop(self) -> None:
        for p in self.procs:
            try:
                p.stdin.close()
                p.terminate()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()


def trace_available(lab: Lab) -> bool:
    """Whether this vxtun has ``vxtun trace`` (the trace helper's; merged separately): asked of
    a VTEP that does not exist, a vxtun with it says so, one without it knows no such
    command."""
    if not any(h.kind == "vxtun" for h in lab.hosts):
        return False
    r = subprocess.run(python("-m", "vxtun", "trace", "dev", "vxlab-probe"), env=child_env(),
                       capture_output=True, text=True, timeout=30)
    return "unknown command" not in r.stderr


# --- narrating -----------------------------------------------------------------------------

class Narrator:
    """Turns events into Steps, printing each as it is made."""

    def __init__(self, lab: Lab, walk: Walk, t0: float, out=sys.stdout,
                 pause: bool = False) -> None:
        self.lab = lab
        self.walk = walk
        self.t0 = t0
        self.out = out
        self.pause = pause
        self.first: set[str] = set()
        self.pending: list[Event] = []
        self.history: list[Event] = []
        self.ul_seen: dict[bytes, dict] = {}     # datagram bytes -> {"from", "to": [...]}
        self.datagrams: list[dict] = []          # every VXLAN datagram: from, to, outer, inner
        self.fdb: dict[tuple[str, str], dict[str, list[str]]] = {}   # (host, dev) -> mac -> dsts
        self.changes: list[Event] = []           # table changes seen
        self.misses: list[Event] = []
        self.overlay: list[Event] = []
        self.traces: list[Event] = []
        self.owner = {v.mac: h.name for h in lab.hosts for v in h.vteps}
        self.owner.update({c.mac: c.name for h in lab.hosts for c in h.containers})

    def snapshot(self) -> None:
        for h in self.lab.hosts:
            for v in h.vteps:
                table: dict[str, list[str]] = {}
                for r in self.lab.fdb_rows(h, v):
                    if r.get("dst"):
                        table.setdefault(r["mac"], []).append(r["dst"])
                self.fdb[(h.name, v.dev)] = table

    def name_of(self, m: str) -> str:
        return f"{m} ({self.owner[m]})" if m in self.owner else m

    # ordering

    def add(self, ev: Event) -> None:
        if ev.t >= self.t0 - 0.05 or ev.kind not in ("ul", "ol"):
            self.pending.append(ev)

    def _cause(self, ev: Event) -> float | None:
        """When the frame that caused a table change was seen: the first delivery of a frame
        from that MAC (the learned MAC; the lladdr an ARP cache got) in the second before it
        was reported, if the walk saw one."""
        for e in sorted(self.history + self.pending, key=Event.order):
            if not ev.t - 1.0 <= e.t <= ev.t:
                continue
            if ev.kind == "fdb" and e.kind == "ul" and e.data["out"] and e.host == ev.host:
                v = vxlan_of(e.data["frame"])
                if v and mac(v["inner"][6:12]) == ev.data["mac"]:
                    return e.t
            elif ev.kind == "neigh" and e.kind == "ol" and not e.data["out"] \
                    and e.host == self.host_of(ev.host):
                f = e.data["frame"]         # an ARP cache is filled by ARP
                if f[12:14] == b"\x08\x06" and mac(f[6:12]) == ev.data["lladdr"]:
                    return e.t
        return None

    def host_of(self, name: str) -> str:
        """The host a container lives on (a host is its own)."""
        for h in self.lab.hosts:
            if any(c.name == name for c in h.containers):
                return h.name
        return name

    def flush(self, now: float | None) -> None:
        """Narrate every pending event older than the window (all of them if ``now`` is
        None), in time order."""
        for ev in self.pending:
            if ev.kind in ("fdb", "neigh") and not ev.data.get("moved"):
                c = self._cause(ev)
                if c is not None:
                    ev.t, ev.rank = c, 1
                ev.data["moved"] = True
        self.pending.sort(key=Event.order)
        limit = None if now is None else now - WINDOW
        while self.pending and (limit is None or self.pending[0].t <= limit):
            ev = self.pending.pop(0)
            self.history.append(ev)
            self.narrate(ev)

    # steps

    def step(self, title: str, actor: str, kind: str, text: str = "", **kw) -> Step:
        st = Step(n=len(self.walk.steps) + 1, title=title,
                  at=round(max(0.0, kw.pop("t", time.time()) - self.t0), 7), actor=actor,
                  kind=kind, text=text, **kw)
        self.walk.steps.append(st)
        p = self.out
        mark = "" if st.ok is None else ("ok   " if st.ok else "FAIL ")
        print(f"\n[{st.n}] {st.at * 1000:8.3f} ms  {mark}{title}", file=p, flush=True)
        for line in text.splitlines():
            print(f"      {line}", file=p)
        if st.layers:
            print("      " + " | ".join(f"{la.name} {la.size}" for la in st.layers), file=p)
            for la in st.layers:
                for f in la.fields:
                    if f.explain:
                        print(f"        {la.name} {f.name} {f.value}: {f.explain}", file=p)
        for tc in st.tables:
            print(f"      {tc.vtep} {tc.table} {tc.change}: {tc.line}", file=p)
        p.flush()
        if self.pause and kind != "check":
            try:
                input("      (Enter for the next step) ")
            except EOFError:
                pass
        return st

    def lookup(self, host: str, dev: str, dst_mac: str) -> str:
        """What the FDB the walk has seen answers for ``dst_mac`` (the kernel's
        ``vxlan_find_mac`` then the all-zeros default, vxlan_xmit)."""
        table = self.fdb.get((host, dev), {})
        if dst_mac in table:
            return f"fdb {dst_mac} dst {', '.join(table[dst_mac])}"
        if ZERO in table:
            dsts = table[ZERO]
            return (f"fdb miss, default {ZERO} with {len(dsts)} "
                    f"remote{'s' if len(dsts) != 1 else ''} ({', '.join(dsts)})")
        return "fdb miss and no default entry"

    def trace_for(self, host: str, direction: str, f: bytes) -> dict | None:
        """The trace record of this frame, if its VTEP is a vxtun with ``vxtun trace``."""
        # The record is stamped when vxtun decided, a little after the capture saw the
        # frame: it may still be pending.
        for e in self.traces + [e for e in self.pending if e.kind == "trace"]:
            d = e.data
            inner = d.get("inner", {})
            if (e.host == host and d.get("dir") == direction and not d.get("used")
                    and inner.get("src") == mac(f[6:12]) and inner.get("dst") == mac(f[0:6])):
                d["used"] = True
                return d
        return None

    def narrate(self, ev: Event) -> None:
        getattr(self, f"on_{ev.kind}")(ev)

    def is_proxy(self, host: str, dev: str) -> bool:
        """Whether the VTEP answers ARP itself (``proxy``: scenarios 6 and 7)."""
        h = self.vtep_host(host)
        return bool(h) and any(v.dev == dev and "proxy" in v.flags for v in h.vteps)

    def vtep_host(self, name: str) -> LabHost | None:
        return next((h for h in self.lab.hosts if h.name == name), None)

    def on_trace(self, ev: Event) -> None:
        self.traces.append(ev)

    def on_ol(self, ev: Event) -> None:
        f, dev = ev.data["frame"], ev.data["dev"]
        self.overlay.append(ev)
        h = self.vtep_host(ev.host)
        kind = next((v.kind for v in h.vteps if v.dev == dev), "") if h else ""
        src = self.name_of(mac(f[6:12]))
        if ev.data["out"]:
            tr = self.trace_for(ev.host, "tx", f)
            look = tr["lookup"] if tr and tr.get("lookup") else \
                self.lookup(ev.host, dev, mac(f[0:6]))
            if not tr and self.is_proxy(ev.host, dev) and f[12:14] == b"\x08\x06" \
                    and f[20:22] == b"\x00\x01":
                look = (f"proxy: {dev} answers it from its neighbour table if that holds "
                        f"{_ip4(f[38:42])}, else raises an L3 miss (arp_reduce); "
                        "it never goes to the underlay")
            action = f"; {tr['action']}" if tr and tr.get("action") else ""
            self.step(f"{ev.host}: {summary(f)} enters {dev} ({kind} VTEP)", ev.host, "frame",
                      f"from {src} to {self.name_of(mac(f[0:6]))}, {len(f)} bytes\n"
                      f"{dev} looks it up: {look}{action}", t=ev.t)
        else:
            self.step(f"{ev.host}: {dev} delivers {summary(f)}", ev.host, "frame",
                      f"from {src} to {self.name_of(mac(f[0:6]))}, {len(f)} bytes", t=ev.t)

    def on_ul(self, ev: Event) -> None:
        f = ev.data["frame"]
        v = vxlan_of(f)
        if v is None:
            return
        if not ev.data["out"]:           # entering the bridge: the host sent it
            rec = {"from": ev.host, "to": [], "outer": v, "t": ev.t, "frame": f,
                   "partial": ev.data.get("partial", False)}
            self.ul_seen[f] = rec
            self.datagrams.append(rec)
            return
        rec = self.ul_seen.get(f)
        if rec is None:
            return
        rec["to"].append(ev.host)
        if len(rec["to"]) > 1:
            st = rec["step"]
            st.dst = list(rec["to"])
            print(f"      (the datagram of step [{st.n}] also reached {ev.host})", file=self.out,
                  flush=True)
            st.text += f"\nalso reached {ev.host}"
            return
        ttl = v["ttl"]
        rec["step"] = self.step(
            f"{rec['from']} sends VXLAN {v['src']} > {v['dst']} VNI {v['vni']}: "
            f"{summary(v['inner'])}", rec["from"], "datagram",
            f"UDP {v['sport']} > {PORT}, TTL {ttl}, {len(f)} bytes on the wire\n"
            f"reached {ev.host}", src=rec["from"], dst=[ev.host],
            layers=layers(f, self.first, rec["partial"]), t=ev.t)

    def on_fdb(self, ev: Event) -> None:
        d = ev.data
        table = self.fdb.setdefault((ev.host, d["dev"]), {})
        if d["deleted"]:
            table.pop(d["mac"], None)
        else:
            dsts = table.setdefault(d["mac"], [])
            if d["dst"] not in dsts:
                dsts.append(d["dst"])
        self.changes.append(ev)
        what = "forgot" if d["deleted"] else ("was given" if d["permanent"] else "learned")
        self.step(f"{ev.host}: {d['dev']} {what} {self.name_of(d['mac'])} dst {d['dst']}",
                  ev.host, "table",
                  "" if d["deleted"] or d["permanent"] else
                  "the source MAC of the inner frame, against the outer source IP",
                  tables=[TableChange(f"{ev.host}/{d['dev']}", "fdb",
                                      "deleted" if d["deleted"] else "added", d["line"])],
                  t=ev.t)

    def on_neigh(self, ev: Event) -> None:
        d = ev.data
        h = self.vtep_host(ev.host)
        if h is not None and d["dev"] not in {v.dev for v in h.vteps}:
            return                  # the underlay's own ARP (eth0), not the overlay's
        self.changes.append(ev)
        if d["state"] in ("INCOMPLETE", "FAILED"):
            return
        self.step(f"{ev.host}: ARP cache {d['ip']} lladdr {d['lladdr']} {d['state']}",
                  ev.host, "table", tables=[TableChange(
                      f"{ev.host}/{d['dev']}", "arp", "deleted" if d["deleted"] else "added",
                      d["line"])], t=ev.t)

    def on_vneigh(self, ev: Event) -> None:
        d = ev.data
        self.changes.append(ev)
        self.step(f"{ev.host}: {d['dev']}'s neighbour table {d['line']}", ev.host, "table",
                  tables=[TableChange(f"{ev.host}/{d['dev']}", "neigh",
                                      "deleted" if d["deleted"] else "added", d["line"])],
                  t=ev.t)

    def on_miss(self, ev: Event) -> None:
        self.misses.append(ev)
        d = ev.data
        what = (f"L3 miss: no neighbour entry for {d['l3']}" if "l3" in d else
                f"L2 miss: no FDB entry for {d['l2']} and no default")
        self.step(f"{ev.host}: {d['line']}", ev.host, "note",
                  f"{what}; the VTEP tells its listeners (a controller) and drops the frame",
                  t=ev.t)

    def check(self, ok: bool, title: str, text: str = "") -> None:
        self.step(title, "", "check", text, ok=bool(ok))


# --- the walk ------------------------------------------------------------------------------

def endpoints(lab: Lab) -> tuple[str, str, str]:
    """(sender, target host, target overlay IP) of the scenario's first exchange."""
    a, b = lab.hosts[0], lab.hosts[1]
    if a.containers:
        return a.containers[0].name, b.name, b.containers[0].address.split("/")[0]
    return a.name, b.name, b.vteps[0].address.split("/")[0]


def model(lab: Lab) -> Walk:
    kind = {"kernel": "kernel", "vxtun": "vxtun-pure" if lab.pure else "vxtun"}
    hosts = []
    for h in lab.hosts:
        vteps = [WVtep(v.dev, kind[v.kind], v.vni, v.mac, [v.address] if v.address else
                       [c.address for c in h.containers]) for v in h.vteps]
        hosts.append(WHost(h.name, [h.underlay], vteps))
    group = lab.group() if lab.sc.key in ("2", "3", "vni") else ""
    return Walk(scenario=lab.sc.key, title=lab.sc.title, hosts=hosts, group=group)


def exchange(lab: Lab, src: str, ip: str, result: dict) -> None:
    """The first exchange: one ping (in scenario 7, one a second until the misses are
    answered)."""
    tries = 10 if lab.sc.key == "7" else 1
    for _ in range(tries):
        r = traffic.run_in(lab.nethosts[src], "ping", ip, 1, 56)
        result["received"] = result.get("received", 0) + r["received"]
        result["sent"] = result.get("sent", 0) + 1
        if r["received"]:
            break


def run_walk(lab: Lab, out=sys.stdout, pause: bool = False) -> tuple[Walk, Narrator]:
    walk = model(lab)
    w = Watch(lab)
    w.start_all()
    n = Narrator(lab, walk, time.time(), out, pause)
    n.snapshot()
    src, target, ip = endpoints(lab)
    print(f"\n# the walk: {src} pings {ip} ({target}), every table empty but what was "
          "configured", file=out, flush=True)
    result: dict = {}
    n.t0 = time.time()
    th = threading.Thread(target=exchange, args=(lab, src, ip, result), daemon=True)
    th.start()
    idle_since = None
    while True:
        try:
            ev = w.q.get(timeout=0.1)
            n.add(ev)
            idle_since = None
            continue
        except queue.Empty:
            pass
        n.flush(time.time())
        if not th.is_alive():
            idle_since = idle_since or time.time()
            if time.time() - idle_since > 1.0:
                break
    n.flush(None)
    w.stop()
    n.result = result
    n.watch = w
    judge(lab, n, src, target, ip)
    return walk, n


def judge(lab: Lab, n: Narrator, src: str, target: str, ip: str) -> None:
    """The scenario's checks, on what the walk saw."""
    key = lab.sc.key
    sender = lab.hosts[0]
    others = [h for h in lab.hosts if h is not sender]
    src_mac = sender.containers[0].mac if sender.containers else sender.vteps[0].mac
    tgt = lab.hosts[1]
    tgt_mac = tgt.containers[0].mac if tgt.containers else tgt.vteps[0].mac
    res = n.result
    n.check(res.get("received", 0) >= 1,
            f"{src} got its echo reply from {ip}",
            f"{res.get('received', 0)} of {res.get('sent', 0)} echo requests answered")
    dgs = [d for d in n.datagrams if d["outer"]["inner"][12:14] == b"\x08\x06"]
    arp_req = [d for d in dgs if d["from"] == sender.name
               and d["outer"]["inner"][20:22] == b"\x00\x01"]
    if key == "6":
        n.check(not dgs, "no ARP frame crossed the underlay: the VTEP answered it",
                f"{len(dgs)} VXLAN datagrams carried ARP")
        return
    if key in ("2", "3", "vni"):
        first = arp_req[0] if arp_req else None
        reached = sorted(first["to"]) if first else []
        want = sorted(h.name for h in others)
        n.check(bool(first) and first["outer"]["dst"] == lab.group(42) and reached == want,
                f"the first ARP request went to the group {lab.group(42)} and reached "
                f"{', '.join(want)}", f"it reached {', '.join(reached) or 'nobody'}")
    if key in ("4", "5"):
        copies = [d for d in arp_req if d["outer"]["inner"] == arp_req[0]["outer"]["inner"]] \
            if arp_req else []
        dsts = sorted(d["outer"]["dst"] for d in copies)
        want = sorted(h.ip for h in others)
        landed = sorted(t for d in copies for t in d["to"])
        n.check(dsts == want and landed == sorted(h.name for h in others),
                f"head-end replication: the ARP request was sent {len(copies)} times, once to "
                f"each listed VTEP ({', '.join(want)})",
                f"copies to {', '.join(dsts)}, landed on {', '.join(landed)}")
    if key in ("1", "2", "3", "4", "vni"):
        for h in others if key != "1" else [tgt]:
            got = [c for c in n.changes if c.kind == "fdb" and c.host == h.name
                   and c.data["mac"] == src_mac and not c.data["deleted"]]
            ok = bool(got) and got[0].data["dst"] == sender.ip
            n.check(ok, f"{h.name} learned {src_mac} dst {sender.ip}",
                    got[0].data["line"] if got else "no such FDB change was seen")
        got = [c for c in n.changes if c.kind == "fdb" and c.host == sender.name
               and c.data["mac"] == tgt_mac and not c.data["deleted"]]
        n.check(bool(got) and got[0].data["dst"] == tgt.ip,
                f"{sender.name} learned {tgt_mac} dst {tgt.ip} from the reply",
                got[0].data["line"] if got else "no such FDB change was seen")
        replies = [d for d in dgs if d["from"] == tgt.name]
        n.check(bool(replies) and replies[0]["outer"]["dst"] == sender.ip
                and replies[0]["to"] == [sender.name],
                f"the ARP reply came back unicast to {sender.ip}",
                f"to {replies[0]['outer']['dst']}, reached {replies[0]['to']}" if replies
                else "no reply datagram was seen")
    if key == "5":
        learned = [c for c in n.changes if c.kind == "fdb" and not c.data["permanent"]
                   and not c.data["deleted"]]
        n.check(not learned, "nolearning: no VTEP learned anything from the frames it got",
                "; ".join(c.data["line"] for c in learned))
    if key == "7":
        l3 = [m for m in n.misses if "l3" in m.data and m.data["l3"] == ip]
        l2 = [m for m in n.misses if "l2" in m.data and m.data["l2"] == tgt_mac]
        n.check(bool(l3) and bool(l2) and l3[0].t <= l2[0].t,
                f"{sender.name} raised miss {ip}, then miss lladdr {tgt_mac}",
                f"{len(l3)} L3 and {len(l2)} L2 misses seen")
    if key == "vni":
        leaked = [e for e in n.overlay if e.data["dev"].endswith("43")]
        n.check(not leaked, "nothing reached a VNI 43 device: the frames stayed in VNI 42",
                f"{len(leaked)} frames seen on VNI 43 devices")
    arp = [c for c in n.changes if c.kind == "neigh" and c.host == src
           and c.data["ip"] == ip and c.data["lladdr"] == tgt_mac]
    n.check(bool(arp), f"{src}'s ARP cache holds {ip} at {tgt_mac}",
            arp[0].data["line"] if arp else "no such neighbour change was seen")


def write_pcaps(w: Watch, directory: str) -> list[str]:
    """One classic pcap per capture point (LINKTYPE_ETHERNET): each host's underlay port and
    each VTEP device."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, frames in sorted(w.frames.items()):
        path = os.path.join(directory, f"{name}.pcap")
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
            for t, data in sorted(frames, key=lambda x: x[0]):
                sec = int(t)
                f.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(data), len(data)))
                f.write(data)
        written.append(path)
    return written


def main(a) -> int:
    sc = scenario(a.scenario)
    kinds = parse_vteps(a.vteps, sc)
    name = a.name or f"w{os.getpid()}"
    lab = Lab(sc, kinds, pure=a.pure, ipv6=a.ipv6, name=name)
    print(f"# vxtun lab walk {sc.key}: {sc.title} ({', '.join(kinds)}"
          f"{', pure-Python vxtun' if a.pure else ''}); the lab is named {name}, and "
          f"vxtun lab down --name {name} removes it should this walk be killed", flush=True)
    t0 = time.monotonic()
    try:
        lab.build()
        walk, n = run_walk(lab, pause=a.step)
        if a.pcap:
            for p in write_pcaps(n.watch, a.pcap):
                print(f"wrote {p}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(walk.to_json(), f, indent=1)
        if a.html:
            from .html import render
            with open(a.html, "w") as f:
                f.write(render(walk))
            print(f"wrote {a.html}")
    finally:
        if lab.topo is not None:        # never a lab this walk did not make
            labstate.down(name)
    failed = [s for s in walk.steps if s.ok is False]
    took = time.monotonic() - t0
    if failed:
        print(f"\nFAILED: {len(failed)} check(s): " + "; ".join(s.title for s in failed),
              file=sys.stderr)
        return 1
    print(f"\nPASS: {sum(1 for s in walk.steps if s.ok)} checks held "
          f"({took:.1f} s, lab removed)")
    return 0


def shell_line(args: list[str]) -> str:
    return shlex.join(args)


__all__ = ["run_walk", "main", "summary", "vxlan_of", "ip_version"]
