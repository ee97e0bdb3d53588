"""The reconciler: the store's state and a VTEP's tables in, the commands to run out.

Sans-IO, like ``vxtun/core``: no store, no netlink, no clock.  The agent reads the store
(``model.parse``) and the VTEP (an adapter's ``read()``), calls ``plan``, and runs the commands
through the same adapter.  Because it compares the *whole* wanted state with the *whole*
current state, the result never depends on the order events arrived in, on events missed while
the store was unreachable, or on what a killed agent had done before: a restarted agent reads
the VTEP, finds its entries already there and runs nothing (nothing flushed, nothing doubled).

What an agent owns on a VTEP, and so compares (everything else it leaves alone):

* the flood list: the destinations of the all-zeros entry (``bridge fdb append 00:00:00:00:00:00
  dst IP``, head-end replication, one per other member of the VNI; vxlan_xmit sends a frame
  with no FDB entry to every destination of the all-zeros entry);
* permanent unicast FDB entries with a destination (``bridge fdb replace MAC dst IP``): the
  endpoints behind other VTEPs;
* permanent neighbour entries (``ip neigh replace IP lladdr MAC nud permanent``), answered by
  the VTEP's ARP/ND proxy (arp_reduce, neigh_reduce).

Learned (dynamic) entries and the VTEP's own (``self`` local) entries are never touched.  In
``preprogram`` mode every endpoint of the VNI is installed; in ``on-miss`` mode only those a
miss asked for (``wanted``), and then kept in step with the store like the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .model import Desired

ZERO_MAC = "00:00:00:00:00:00"
MODES = ("preprogram", "on-miss")


@dataclass(frozen=True)
class LocalVtep:
    """A VTEP of this host: its device name, VNI and underlay address."""
    name: str
    vni: int
    ip: str
    port: int = 4789
    kind: str = "kernel"          # "kernel" (a vxlan device) or "vxtun"


@dataclass
class VtepState:
    """The part of a VTEP's tables an agent owns."""
    flood: set[str] = field(default_factory=set)
    fdb: dict[str, tuple[str, ...]] = field(default_factory=dict)   # MAC -> destinations
    neigh: dict[str, str] = field(default_factory=dict)             # IP -> MAC

    def copy(self) -> VtepState:
        return VtepState(set(self.flood), dict(self.fdb), dict(self.neigh))

    def to_json(self) -> dict:
        return {"flood": sorted(self.flood),
                "fdb": {m: list(d) for m, d in sorted(self.fdb.items())},
                "neigh": dict(sorted(self.neigh.items()))}


@dataclass(frozen=True)
class Fdb:
    """``bridge fdb OP MAC [dst DST] dev VTEP self permanent``; ``del`` without dst removes
    the whole entry."""
    op: str                    # append | replace | del
    mac: str
    dst: str | None = None

    def __str__(self) -> str:
        return f"fdb {self.op} {self.mac}" + (f" dst {self.dst}" if self.dst else "")


@dataclass(frozen=True)
class Neigh:
    """``ip neigh OP IP [lladdr MAC nud permanent] dev VTEP``."""
    op: str                    # replace | del
    ip: str
    lladdr: str | None = None

    def __str__(self) -> str:
        return f"neigh {self.op} {self.ip}" + (f" lladdr {self.lladdr}" if self.lladdr else "")


Command = Fdb | Neigh


@dataclass
class Wanted:
    """What misses asked for, in on-miss mode: MACs (L2 misses, and the MAC of each IP an L3
    miss was answered with) and IPs (L3 misses)."""
    macs: set[str] = field(default_factory=set)
    ips: set[str] = field(default_factory=set)


def want(vtep: LocalVtep, desired: Desired, mode: str = "preprogram",
         wanted: Wanted | None = None, flood: bool = True) -> VtepState:
    """The tables ``vtep`` should have, from the store's state alone (and, on-miss, ``wanted``).

    ``flood=False`` (``--no-flood``) leaves the flood list empty: vxlan_xmit then drops what
    has no FDB entry, and for a unicast MAC raises an L2 miss (vxlan_fdb_miss is called only
    when there is no all-zeros entry either), which on-miss answers from the store.  Broadcast
    and multicast are not carried at all; ARP and ND are answered by the VTEP's proxy."""
    out = VtepState()
    for m in desired.members.get(vtep.vni, {}).values() if flood else ():
        if m.ip != vtep.ip:
            out.flood.add(m.ip)
    owner: dict[str, tuple[int, str]] = {}        # IP -> (revision, MAC): the newest claim wins
    for e in desired.endpoints.get(vtep.vni, {}).values():
        if e.vtep == vtep.ip:
            continue                               # behind this VTEP: reached locally
        if mode == "preprogram" or (wanted is not None and e.mac in wanted.macs):
            out.fdb[e.mac] = (e.vtep,)
        for ip in e.ips:
            if mode == "on-miss" and (wanted is None or ip not in wanted.ips):
                continue
            if ip not in owner or (e.revision, e.mac) > owner[ip]:
                owner[ip] = (e.revision, e.mac)
    for ip, (_, mac) in owner.items():
        out.neigh[ip] = mac
        if mode == "on-miss":
            # An answered L3 miss needs the MAC's FDB entry too, or the first unicast frame
            # to it would miss again (or flood).
            e = desired.endpoints[vtep.vni][mac]
            out.fdb[mac] = (e.vtep,)
    return out


def plan(wanted: VtepState, have: VtepState) -> list[Command]:
    """The commands that turn ``have`` into ``wanted``: removals first, then additions, each
    in sorted order, so a plan is a function of its two arguments."""
    cmds: list[Command] = []
    for dst in sorted(have.flood - wanted.flood):
        cmds.append(Fdb("del", ZERO_MAC, dst))
    for mac in sorted(set(have.fdb) - set(wanted.fdb)):
        cmds.append(Fdb("del", mac))
    for ip in sorted(set(have.neigh) - set(wanted.neigh)):
        cmds.append(Neigh("del", ip))
    for dst in sorted(wanted.flood - have.flood):
        cmds.append(Fdb("append", ZERO_MAC, dst))
    for mac, dsts in sorted(wanted.fdb.items()):
        now = have.fdb.get(mac)
        if now == dsts:
            continue
        if now is not None and len(now) > 1:
            # vxlan_fdb_replace re-points only the first destination: drop the others.
            cmds.append(Fdb("del", mac))
        cmds.append(Fdb("replace", mac, dsts[0]))
    for ip, mac in sorted(wanted.neigh.items()):
        if have.neigh.get(ip) != mac:
            cmds.append(Neigh("replace", ip, mac))
    return cmds


def apply(state: VtepState, cmds: list[Command]) -> VtepState:
    """``state`` after ``cmds``, as the kernel would leave it (for tests and the agent's cache)."""
    s = state.copy()
    for c in cmds:
        if isinstance(c, Fdb) and c.mac == ZERO_MAC:
            if c.op == "append":
                s.flood.add(c.dst or "")
            elif c.op == "del":
                s.flood.discard(c.dst or "")
        elif isinstance(c, Fdb):
            if c.op == "del":
                s.fdb.pop(c.mac, None)
            elif c.op == "replace":
                s.fdb[c.mac] = (c.dst or "",) + s.fdb.get(c.mac, ("",))[1:]
            elif c.op == "append":
                s.fdb[c.mac] = s.fdb.get(c.mac, ()) + (c.dst or "",)
        elif c.op == "del":
            s.neigh.pop(c.ip, None)
        else:
            s.neigh[c.ip] = c.lladdr or ""
    return s
