"""The neighbour table that the ARP/ND proxy answers from (the kernel's arp_tbl/nd_tbl for
the vxlan device, as ``ip neigh ... dev vxlan0`` fills it).

States, as ``ip neigh`` names them.  The proxy answers only from a state in NUD_CONNECTED
(``permanent``, ``noarp``, ``reachable``), as arp_reduce() and neigh_reduce() do.  A
``reachable`` entry becomes ``stale`` once ``reachable_time`` has passed since it was confirmed
(added or replaced): it stays in the table but is not used, so the next request for it raises
an L3 miss again and a controller can refresh it with ``neigh replace``.

Default reachable time: 30 s, the kernel's ``base_reachable_time_ms`` default (30000).  The
kernel draws the actual time at random from 0.5x..1.5x of it; vxtun does not, so that
expiry is predictable for users and tests.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import NeighError
from ..wire.ether import mac_to_str

NUD_STATES = ("permanent", "noarp", "reachable", "stale")
USABLE = ("permanent", "noarp", "reachable")


@dataclass
class NeighEntry:
    ip: str
    lladdr: bytes
    state: str
    updated: float

    def to_json(self) -> dict:
        return {"dst": self.ip, "lladdr": mac_to_str(self.lladdr), "state": self.state.upper()}


class NeighTable:
    def __init__(self, reachable_time: float = 30.0) -> None:
        self.reachable_time = float(reachable_time)
        self._entries: dict[str, NeighEntry] = {}

    @staticmethod
    def _key(ip: str) -> str:
        try:
            return str(ipaddress.ip_address(ip))
        except ValueError:
            raise NeighError(f"invalid IP address {ip!r}") from None

    def _age(self, e: NeighEntry, now: float) -> None:
        if e.state == "reachable" and now - e.updated >= self.reachable_time:
            e.state = "stale"

    def lookup(self, ip: str, now: float) -> NeighEntry | None:
        """The entry for ``ip`` if the proxy may answer from it (NUD_CONNECTED), else None."""
        e = self._entries.get(ip)
        if e is None:
            return None
        self._age(e, now)
        return e if e.state in USABLE else None

    def add(self, ip: str, lladdr: bytes, state: str = "permanent", now: float = 0.0,
            op: str = "add") -> NeighEntry:
        if state not in NUD_STATES:
            raise NeighError(f"unknown nud state {state!r} (expected one of "
                             f"{', '.join(NUD_STATES)})")
        if op not in ("add", "replace", "change"):
            raise NeighError(f"unknown neigh operation {op!r}")
        key = self._key(ip)
        e = self._entries.get(key)
        if op == "add" and e is not None:
            raise NeighError(f"neighbour {key} already exists (use replace)")
        if op == "change" and e is None:
            raise NeighError(f"neighbour {key} does not exist")
        e = NeighEntry(key, lladdr, state, now)
        self._entries[key] = e
        return e

    def delete(self, ip: str) -> NeighEntry:
        key = self._key(ip)
        e = self._entries.pop(key, None)
        if e is None:
            raise NeighError(f"neighbour {key} does not exist")
        return e

    def expire(self, now: float) -> list[NeighEntry]:
        """Entries that turned stale since the last call (for change events)."""
        changed = []
        for e in self._entries.values():
            if e.state == "reachable" and now - e.updated >= self.reachable_time:
                e.state = "stale"
                changed.append(e)
        return changed

    def entries(self, now: float | None = None) -> list[NeighEntry]:
        if now is not None:
            for e in self._entries.values():
                self._age(e, now)
        return sorted(self._entries.values(),
                      key=lambda e: (":" in e.ip, ipaddress.ip_address(e.ip)))

    def __len__(self) -> int:
        return len(self._entries)
