"""The configuration of one VTEP, named as ``ip link add ... type vxlan`` names it."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LocalError
from ..wire.addr import parse_ip
from ..wire.vxlan import DEFAULT_SRCPORT, IANA_PORT, VNI_MAX


@dataclass
class VtepConfig:
    vni: int
    name: str = "vxtun0"
    local: str | None = None
    remote: str | None = None
    group: str | None = None
    dev: str | None = None
    dstport: int = IANA_PORT
    srcport: tuple[int, int] = DEFAULT_SRCPORT
    ttl: int | None = None
    tos: int = 0
    mtu: int | None = None
    mac: bytes = b""
    address: list[str] = field(default_factory=list)
    master: str | None = None
    learning: bool = True
    ageing: float = 300.0
    maxaddress: int = 0
    proxy: bool = False
    l2miss: bool = False
    l3miss: bool = False
    reachable_time: float = 30.0      # neigh base_reachable_time_ms / 1000
    gc_stale_time: float = 60.0       # neigh gc_stale_time: a stale neighbour is collected

    def validate(self) -> None:
        """Refuse what ``ip link add type vxlan`` refuses, with a message fit for a user."""
        if not isinstance(self.vni, int) or not 0 <= self.vni <= VNI_MAX:
            raise LocalError(f"invalid VNI {self.vni}: a VNI is 24 bits (0..{VNI_MAX})")
        if not 1 <= self.dstport <= 65535:
            raise LocalError(f"invalid dstport {self.dstport}: must be 1..65535")
        lo, hi = self.srcport
        if not (0 < lo < hi <= 65536):
            raise LocalError(f"invalid srcport range {lo} {hi}: need 0 < MIN < MAX <= 65536")
        if self.remote and self.group:
            raise LocalError("remote and group are mutually exclusive "
                             "(as in ip link add type vxlan)")
        fams = {}
        for key in ("local", "remote", "group"):
            v = getattr(self, key)
            if v is None:
                continue
            a = parse_ip(v, key)
            fams[key] = a.version
            setattr(self, key, str(a))
        if len(set(fams.values())) > 1:
            raise LocalError("local, remote and group addresses must all be IPv4 or all IPv6 "
                             f"(got {', '.join(f'{k} IPv{v}' for k, v in fams.items())})")
        if self.group is not None:
            if not parse_ip(self.group).is_multicast:
                raise LocalError(f"group {self.group} is not a multicast address")
            if self.dev is None:
                raise LocalError("a multicast group needs the underlay device: add --dev IFACE")
        if self.remote is not None and parse_ip(self.remote).is_multicast:
            raise LocalError(f"remote {self.remote} is multicast: use --group")
        if self.ttl is not None and not 0 <= self.ttl <= 255:
            raise LocalError(f"invalid ttl {self.ttl}: must be 0..255")
        if self.ageing < 0:
            raise LocalError("ageing must not be negative")
        if self.reachable_time <= 0 or self.gc_stale_time <= 0:
            raise LocalError("reachable time and gc stale time must be positive")
        if self.maxaddress < 0:
            raise LocalError("maxaddress must not be negative")
        if self.mtu is not None and not 68 <= self.mtu <= 65535:
            raise LocalError(f"invalid mtu {self.mtu}: must be 68..65535")
        if not self.name or len(self.name) > 15 or "/" in self.name or " " in self.name:
            raise LocalError(f"invalid device name {self.name!r}: "
                             "1..15 characters, no '/' or space")

    @property
    def family(self) -> int:
        """4 or 6: the underlay's IP version."""
        for v in (self.local, self.remote, self.group):
            if v:
                return parse_ip(v).version
        return 4

    def to_json(self) -> dict:
        return {
            "ifname": self.name, "vni": self.vni, "local": self.local, "remote": self.remote,
            "group": self.group, "dev": self.dev, "dstport": self.dstport,
            "srcport": list(self.srcport), "ttl": self.ttl, "learning": self.learning,
            "ageing": self.ageing, "maxaddress": self.maxaddress, "proxy": self.proxy,
            "l2miss": self.l2miss, "l3miss": self.l3miss,
        }
