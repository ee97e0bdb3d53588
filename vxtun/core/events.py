"""Events the core raises for a controller (``vxtun monitor``, or a Python program).

Named as ``ip monitor`` shows them: an L3 miss (``miss 10.20.1.3 STALE``) when the ARP/ND proxy
has no neighbour entry for an IP, an L2 miss (``miss lladdr b2:ee:aa:42:8b:0b STALE``) when a
unicast MAC has no FDB entry and there is no default destination, and FDB/neighbour changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..wire.ether import mac_to_str


@dataclass(frozen=True)
class L2Miss:
    dev: str
    mac: bytes
    vni: int
    time: float = 0.0

    def to_json(self) -> dict:
        return {"event": "l2miss", "dev": self.dev, "lladdr": mac_to_str(self.mac),
                "vni": self.vni, "state": "STALE"}

    def __str__(self) -> str:
        return f"miss lladdr {mac_to_str(self.mac)} dev {self.dev} STALE"


@dataclass(frozen=True)
class L3Miss:
    dev: str
    ip: str
    vni: int
    time: float = 0.0

    def to_json(self) -> dict:
        return {"event": "l3miss", "dev": self.dev, "dst": self.ip, "vni": self.vni,
                "state": "STALE"}

    def __str__(self) -> str:
        return f"miss {self.ip} dev {self.dev} STALE"


@dataclass(frozen=True)
class FdbChange:
    """``new`` or ``del`` of an FDB entry (learned, moved, aged out, or added by a user)."""
    action: str
    dev: str
    entry: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"event": "fdb", "action": self.action, "dev": self.dev, **self.entry}

    def __str__(self) -> str:
        from ..cli.output import format_fdb_line  # local: output formatting is the CLI's job
        prefix = "Deleted " if self.action == "del" else ""
        return prefix + format_fdb_line(self.entry, with_dev=True)


@dataclass(frozen=True)
class NeighChange:
    action: str
    dev: str
    entry: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"event": "neigh", "action": self.action, "dev": self.dev, **self.entry}

    def __str__(self) -> str:
        from ..cli.output import format_neigh_line
        prefix = "Deleted " if self.action == "del" else ""
        return prefix + format_neigh_line(self.entry, with_dev=True)
