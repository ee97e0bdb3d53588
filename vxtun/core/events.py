"""Events the core raises for a controller (``vxtun monitor``, or a Python program).

They are data: what the kernel puts in its netlink notification (RTM_GETNEIGH for a miss,
RTM_NEWNEIGH / RTM_DELNEIGH for a change), with the addresses as the core holds them:

* ``L3Miss``: the ARP/ND proxy has no neighbour entry for an IP (vxlan_ip_miss).
* ``L2Miss``: a unicast MAC has no FDB entry and there is no default destination
  (vxlan_fdb_miss).
* ``NeighChange``: a neighbour entry was added, changed, aged or deleted.
* ``FdbChange``: an FDB entry was added, learned, moved or deleted; ``remotes`` are the
  destinations the change touched, with ``port`` 0 and ``vni`` None where they are the
  device's own, because vxlan_fdb_info() leaves NDA_PORT and NDA_VNI out of the message then.

``to_json()`` uses iproute2's JSON keys (``miss``, ``deleted``, ``dst``, ``dev``, ``lladdr``,
``state`` as a list, and for an FDB entry those of ``bridge -j fdb``) plus ``event``
(``l2miss``, ``l3miss``, ``neigh``, ``fdb``) and, for misses, ``vni``; ``event_from_json()``
turns that back into the same event.  The text ``ip monitor`` prints is the CLI's business
(``vxtun/cli/output.py``, ``format_event``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..fdb import Remote
from ..wire.ether import mac_from_str, mac_to_str


@dataclass(frozen=True)
class L2Miss:
    """A frame for ``mac`` found no FDB entry and no default destination (vxlan_fdb_miss);
    a controller answers it with ``bridge fdb add``."""
    dev: str
    mac: bytes
    vni: int
    time: float = 0.0

    @property
    def lladdr(self) -> str:
        return mac_to_str(self.mac)

    def to_json(self) -> dict:
        d = {"event": "l2miss", "miss": None, "dev": self.dev}
        # vxlan_fdb_info() leaves NDA_LLADDR out of a miss for the all-zeros MAC (a frame sent
        # to 00:00:00:00:00:00 is unicast, so it can miss).
        if any(self.mac):
            d["lladdr"] = self.lladdr
        d.update({"state": ["STALE"], "vni": self.vni})
        return d


@dataclass(frozen=True)
class L3Miss:
    """An ARP request or Neighbour Solicitation for ``ip`` found no neighbour entry
    (vxlan_ip_miss, from arp_reduce/neigh_reduce); answered with ``ip neigh replace``."""
    dev: str
    ip: str
    vni: int
    time: float = 0.0

    def to_json(self) -> dict:
        return {"event": "l3miss", "miss": None, "dst": self.ip, "dev": self.dev,
                "state": ["STALE"], "vni": self.vni}


@dataclass(frozen=True)
class FdbChange:
    """``new`` or ``del`` of an FDB entry (learned, moved, aged out, or changed by a user);
    ``state`` is the FDB's (``permanent``, ``static``, ``dynamic``)."""
    action: str
    dev: str
    mac: bytes
    remotes: tuple[Remote, ...]
    state: str

    @property
    def entry(self) -> dict:
        """The entry as ``bridge -j fdb show`` has it (before one row per destination)."""
        return fdb_entry_json(self.mac, self.remotes, self.state, self.dev)

    def to_json(self) -> dict:
        d: dict = {"event": "fdb", "action": self.action}
        if self.action == "del":
            d["deleted"] = True
        d.update(self.entry)
        return d


@dataclass(frozen=True)
class NeighChange:
    """``new`` (added, changed, or aged to ``stale``) or ``del`` of a neighbour entry.
    ``state`` is the NUD state in ``ip neigh``'s words, lower case; ``lladdr`` is None where
    the notification carries none (an entry deleted by a user is reported ``failed``)."""
    action: str
    dev: str
    ip: str
    lladdr: bytes | None
    state: str

    @property
    def entry(self) -> dict:
        """The entry as ``ip -j neigh show`` prints one (``dst``, ``lladdr``, ``state``)."""
        d: dict = {"dst": self.ip}
        if self.lladdr:
            d["lladdr"] = mac_to_str(self.lladdr)
        d["state"] = [self.state.upper()]
        return d

    def to_json(self) -> dict:
        d: dict = {"event": "neigh", "action": self.action}
        if self.action == "del":
            d["deleted"] = True
        entry = self.entry
        d["dst"] = entry.pop("dst")
        d["dev"] = self.dev
        d.update(entry)
        return d


def fdb_entry_json(mac: bytes, remotes, state: str, dev: str) -> dict:
    """One FDB entry as ``bridge -j fdb`` shows it, with its destinations as a list
    (``remotes``); a dynamic entry has no state word, as iproute2 prints NUD_REACHABLE."""
    return {"mac": mac_to_str(mac), "ifname": dev, "flags": ["self"],
            "state": "" if state == "dynamic" else state,
            "remotes": [r.to_json() for r in remotes]}


def event_from_json(d: dict):
    """The event a ``to_json()`` dict describes (what ``vxtun monitor -j`` prints)."""
    kind = d.get("event")
    if kind == "l2miss":
        mac = mac_from_str(d["lladdr"]) if d.get("lladdr") else bytes(6)
        return L2Miss(d["dev"], mac, int(d.get("vni", 0)))
    if kind == "l3miss":
        return L3Miss(d["dev"], d["dst"], int(d.get("vni", 0)))
    if kind == "neigh":
        lladdr = mac_from_str(d["lladdr"]) if d.get("lladdr") else None
        (state,) = d.get("state") or [""]
        return NeighChange(d.get("action", "new"), d["dev"], d["dst"], lladdr, state.lower())
    if kind == "fdb":
        remotes = tuple(Remote(r["dst"], int(r.get("port") or 0), r.get("vni"), r.get("via"))
                        for r in d.get("remotes", ()))
        return FdbChange(d.get("action", "new"), d.get("ifname", ""), mac_from_str(d["mac"]),
                         remotes, d.get("state") or "dynamic")
    raise ValueError(f"unknown event {kind!r}")
