"""Events the core raises for a controller (``vxtun monitor``, or a Python program).

Named and printed as ``ip monitor`` shows the kernel's (RTM_GETNEIGH for a miss, RTM_NEWNEIGH /
RTM_DELNEIGH for a change):

* ``L3Miss``: the ARP/ND proxy has no neighbour entry for an IP (vxlan_ip_miss):
  ``miss 10.20.1.3 STALE``.
* ``L2Miss``: a unicast MAC has no FDB entry and there is no default destination
  (vxlan_fdb_miss): ``miss lladdr b2:ee:aa:42:8b:0b STALE``.
* ``NeighChange``: a neighbour entry was added, changed, aged or deleted:
  ``10.20.1.3 lladdr b2:ee:aa:42:8b:0b REACHABLE``, ``Deleted 10.20.1.3 FAILED``.
* ``FdbChange``: an FDB entry was added, learned, moved or deleted, printed as
  ``bridge monitor fdb`` does: ``b2:ee:aa:42:8b:0b dev vxtun0 dst 192.0.2.2 self permanent``.

``format(with_dev)`` leaves out ``dev NAME`` as ``ip monitor ... dev NAME`` does.  ``to_json()``
uses iproute2's JSON keys (``miss``, ``deleted``, ``dst``, ``dev``, ``lladdr``, ``state`` as a
list) plus ``event`` (``l2miss``, ``l3miss``, ``neigh``, ``fdb``) and, for misses, ``vni``;
``event_from_json()`` turns that back into an event.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..wire.ether import mac_from_str, mac_to_str


@dataclass(frozen=True)
class L2Miss:
    dev: str
    mac: bytes
    vni: int
    time: float = 0.0

    @property
    def lladdr(self) -> str:
        return mac_to_str(self.mac)

    # vxlan_fdb_info() leaves NDA_LLADDR out of a miss for the all-zeros MAC (a frame sent to
    # 00:00:00:00:00:00 is unicast, so it can miss): ip monitor then prints "miss STALE".

    def to_json(self) -> dict:
        d = {"event": "l2miss", "miss": None, "dev": self.dev}
        if any(self.mac):
            d["lladdr"] = self.lladdr
        d.update({"state": ["STALE"], "vni": self.vni})
        return d

    def format(self, with_dev: bool = True) -> str:
        dev = f"dev {self.dev} " if with_dev else ""
        lladdr = f"lladdr {self.lladdr} " if any(self.mac) else ""
        return f"miss {dev}{lladdr}STALE"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class L3Miss:
    dev: str
    ip: str
    vni: int
    time: float = 0.0

    def to_json(self) -> dict:
        return {"event": "l3miss", "miss": None, "dst": self.ip, "dev": self.dev,
                "state": ["STALE"], "vni": self.vni}

    def format(self, with_dev: bool = True) -> str:
        dev = f" dev {self.dev}" if with_dev else ""
        return f"miss {self.ip}{dev} STALE"

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class FdbChange:
    """``new`` or ``del`` of an FDB entry (learned, moved, aged out, or added by a user)."""
    action: str
    dev: str
    entry: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"event": "fdb", "action": self.action}
        if self.action == "del":
            d["deleted"] = True
        d.update(self.entry)
        d.setdefault("ifname", self.dev)
        return d

    def format(self, with_dev: bool = True) -> str:
        # bridge monitor fdb has no device filter: its lines always name the device.
        from ..cli.output import format_fdb_line  # local: output formatting is the CLI's job
        prefix = "Deleted " if self.action == "del" else ""
        entry = dict(self.entry)
        entry.setdefault("ifname", self.dev)
        return "\n".join(prefix + ln for ln in format_fdb_line(entry, with_dev=True).split("\n"))

    def __str__(self) -> str:
        return self.format()


@dataclass(frozen=True)
class NeighChange:
    """``new`` (added, changed, or aged to ``stale``) or ``del`` of a neighbour entry; ``entry``
    as ``ip -j neigh show`` prints one (``dst``, ``lladdr``, ``state`` list)."""
    action: str
    dev: str
    entry: dict = field(default_factory=dict)

    @property
    def ip(self) -> str:
        return self.entry.get("dst", "")

    def to_json(self) -> dict:
        d: dict = {"event": "neigh", "action": self.action}
        if self.action == "del":
            d["deleted"] = True
        d["dst"] = self.entry.get("dst")
        d["dev"] = self.dev
        if self.entry.get("lladdr"):
            d["lladdr"] = self.entry["lladdr"]
        d["state"] = _states(self.entry.get("state"))
        return d

    def format(self, with_dev: bool = True) -> str:
        parts = ["Deleted"] if self.action == "del" else []
        parts.append(self.entry.get("dst", ""))
        if with_dev:
            parts += ["dev", self.dev]
        if self.entry.get("lladdr"):
            parts += ["lladdr", self.entry["lladdr"]]
        parts += _states(self.entry.get("state"))
        return " ".join(parts)

    def __str__(self) -> str:
        return self.format()


def _states(state) -> list[str]:
    if state is None:
        return []
    if isinstance(state, str):
        return [state.upper()]
    return [str(s).upper() for s in state]


def event_from_json(d: dict):
    """The event a ``to_json()`` dict describes (what ``vxtun monitor -j`` prints)."""
    kind = d.get("event")
    if kind == "l2miss":
        mac = mac_from_str(d["lladdr"]) if d.get("lladdr") else bytes(6)
        return L2Miss(d["dev"], mac, int(d.get("vni", 0)))
    if kind == "l3miss":
        return L3Miss(d["dev"], d["dst"], int(d.get("vni", 0)))
    if kind == "neigh":
        entry = {k: d[k] for k in ("dst", "lladdr", "state") if k in d}
        return NeighChange(d.get("action", "new"), d["dev"], entry)
    if kind == "fdb":
        entry = {k: v for k, v in d.items() if k not in ("event", "action", "deleted")}
        return FdbChange(d.get("action", "new"), d.get("ifname", ""), entry)
    raise ValueError(f"unknown event {kind!r}")
