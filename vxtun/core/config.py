"""The configuration of one VTEP, named as ``ip link add ... type vxlan`` names it."""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from ..errors import LocalError
from ..wire.addr import parse_ip
from ..wire.ether import is_multicast_mac, mac_to_str
from ..wire.vxlan import DEFAULT_SRCPORT, IANA_PORT, OVERHEAD_V4, OVERHEAD_V6, VNI_MAX

ETH_MIN_MTU = 68
ETH_MAX_MTU = 65535
AGEING_DEFAULT = 300.0             # FDB_AGE_DEFAULT
AGEING_MAX = 0xFFFFFFFF             # IFLA_VXLAN_AGEING is a u32 of seconds
TAPQ_MAX = 8                        # TAP queues (TAPQ_MAX in vxtun/fastpath/decide.pxd)


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
    ttl: int | str | None = None      # 1..255, None or 0: auto (the route's), "inherit"
    tos: int | str = 0                # 0..255, "inherit" (the kernel's cfg.tos 1)
    df: str = "unset"                 # unset | set | inherit (IFLA_VXLAN_DF)
    flowlabel: int | str = 0          # the outer IPv6 flow label (IFLA_VXLAN_LABEL), "inherit"
                                      # (IFLA_VXLAN_LABEL_POLICY VXLAN_LABEL_INHERIT)
    udpcsum: bool = True              # IPv4: checksum the outer UDP header
    udp6zerocsumtx: bool = False      # IPv6: send a zero outer UDP checksum
    udp6zerocsumrx: bool = False      # IPv6: accept a zero outer UDP checksum
    localbypass: bool = True          # a remote that is a local address: straight to its VTEP
    mtu: int | None = None
    mac: bytes = b""
    address: list[str] = field(default_factory=list)
    master: str | None = None
    learning: bool = True
    ageing: float = AGEING_DEFAULT
    maxaddress: int = 0
    proxy: bool = False
    l2miss: bool = False
    l3miss: bool = False
    reachable_time: float = 30.0      # neigh base_reachable_time_ms / 1000
    gc_stale_time: float = 60.0       # neigh gc_stale_time: a stale neighbour is collected
    queues: int = 0                   # TAP queues (IFF_MULTI_QUEUE), one TX thread each; 0:
                                      # the dataplane's choice (vxtun/io/tap.py default_queues)

    def validate(self) -> None:
        """Refuse what ``ip link add type vxlan`` refuses, with a message fit for a user."""
        if not isinstance(self.vni, int) or not 0 <= self.vni <= VNI_MAX:
            raise LocalError(f"invalid VNI {self.vni}: a VNI is 24 bits (0..{VNI_MAX})")
        if not 1 <= self.dstport <= 65535:
            raise LocalError(f"invalid dstport {self.dstport}: must be 1..65535")
        lo, hi = self.srcport
        # vxlan_validate(): "Invalid source port range" only when MAX < MIN; MIN == MAX (as
        # iproute2's own "srcport 0 0") asks for the namespace's range (udp_flow_src_port).
        if not (0 <= lo <= 65535 and 0 <= hi <= 65535) or hi < lo:
            raise LocalError(f"invalid srcport range {lo} {hi}: need 0 <= MIN <= MAX <= 65535 "
                             "(MIN = MAX: the namespace's ip_local_port_range)")
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
        if self.remote is not None:
            remote = parse_ip(self.remote)
            if remote.is_multicast:
                raise LocalError(f"remote {self.remote} is multicast: use --group")
            # The any address is no peer: the kernel takes "remote 0.0.0.0" as no default
            # destination at all (__vxlan_dev_create() skips vxlan_addr_any()), which is
            # what leaving --remote out says plainly.  The limited broadcast address is no
            # single VTEP either, and a socket may not send to it without SO_BROADCAST.
            if remote.is_unspecified:
                raise LocalError(f"invalid remote address {self.remote}: the any address is "
                                 "no VTEP (leave --remote out for no default destination)")
            if remote == ipaddress.IPv4Address("255.255.255.255"):
                raise LocalError(f"invalid remote address {self.remote}: the broadcast "
                                 "address is no VTEP (use --group to reach several)")
        # vxlan_config_validate(): "Local address cannot be multicast".
        if self.local is not None and parse_ip(self.local).is_multicast:
            raise LocalError(f"invalid local address {self.local}: a local address cannot be "
                             "multicast (use --group for the group)")
        self._validate_outer()
        for what, value in (("ageing", self.ageing), ("reachable time", self.reachable_time),
                            ("gc stale time", self.gc_stale_time)):
            # float("nan") compares false with everything: refuse it before any comparison.
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise LocalError(f"invalid {what} {value!r}: must be a finite number of "
                                 "seconds")
        if self.ageing < 0:
            raise LocalError("ageing must not be negative")
        if self.ageing > AGEING_MAX:
            raise LocalError(f"invalid ageing {self.ageing:g}: at most {AGEING_MAX} seconds")
        if self.ageing == 0:
            # vxlan_config_validate(): "if (!conf->age_interval) conf->age_interval =
            # FDB_AGE_DEFAULT", so `ageing 0` is the default 300 s, not "age at once".
            self.ageing = AGEING_DEFAULT
        if self.reachable_time <= 0 or self.gc_stale_time <= 0:
            raise LocalError("reachable time and gc stale time must be positive")
        if self.maxaddress < 0:
            raise LocalError("maxaddress must not be negative")
        if isinstance(self.queues, bool) or not isinstance(self.queues, int) \
                or not 0 <= self.queues <= TAPQ_MAX:
            raise LocalError(f"invalid queues {self.queues!r}: must be 1..{TAPQ_MAX} (0: one "
                             "per CPU, as the dataplane chooses)")
        if self.mtu is not None and not ETH_MIN_MTU <= self.mtu <= ETH_MAX_MTU:
            raise LocalError(f"invalid mtu {self.mtu}: must be {ETH_MIN_MTU}..{ETH_MAX_MTU}")
        # eth_prepare_mac_addr_change() refuses what is_valid_ether_addr() refuses, with
        # EADDRNOTAVAIL: a device's own address is unicast and not all zeros.
        if self.mac:
            if len(self.mac) != 6:
                raise LocalError(f"invalid MAC address {self.mac!r}: six octets expected")
            if is_multicast_mac(self.mac):
                raise LocalError(f"invalid MAC address {mac_to_str(self.mac)}: a device's "
                                 "address cannot be multicast or broadcast")
            if not any(self.mac):
                raise LocalError(f"invalid MAC address {mac_to_str(self.mac)}: a device's "
                                 "address cannot be all zeros")
        for a in self.address:
            check_overlay_address(a)
        if not self.name or len(self.name) > 15 or "/" in self.name or " " in self.name:
            raise LocalError(f"invalid device name {self.name!r}: "
                             "1..15 characters, no '/' or space")

    def _validate_outer(self) -> None:
        """``ttl``, ``tos`` and ``df`` as iproute2 takes them (TTL := 1..255 | auto | inherit,
        TOS := NUMBER | inherit, DF := unset | set | inherit); normalised to ttl None
        (auto), an int or "inherit", tos an int or "inherit"."""
        ttl = self.ttl
        if ttl in ("auto", 0):
            self.ttl = None
        elif ttl is not None and ttl != "inherit" and (
                isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 255):
            raise LocalError(f"invalid ttl {ttl}: must be 1..255, auto or inherit")
        tos = self.tos
        if tos != "inherit" and (isinstance(tos, bool) or not isinstance(tos, int)
                                 or not 0 <= tos <= 255):
            raise LocalError(f"invalid tos {tos}: must be 0..255 or inherit")
        if tos == 1:
            self.tos = "inherit"        # the kernel stores inherit as 1: the same setting
        fl = self.flowlabel
        if fl == "inherit":
            return self._validate_df()
        # 0x80000 and up are the stateless labels (flowlabel_state_ranges): a socket cannot
        # lease them, so vxtun cannot send them
        if isinstance(fl, bool) or not isinstance(fl, int) or not 0 <= fl < 0x80000:
            raise LocalError(f"invalid flowlabel {fl}: vxtun sends 0..524287 (0x7ffff) or "
                             "inherit")
        self._validate_df()

    def _validate_df(self) -> None:
        if self.df not in ("unset", "set", "inherit"):
            raise LocalError(f"invalid df {self.df}: must be unset, set or inherit")

    def max_mtu(self, lower_mtu: int) -> int:
        """The largest MTU over a lower device (``--dev``) of ``lower_mtu``: its MTU less the
        VXLAN headroom, as vxlan_config_apply() computes it (never below ETH_MIN_MTU)."""
        headroom = OVERHEAD_V6 if self.family == 6 else OVERHEAD_V4
        return max(ETH_MIN_MTU, lower_mtu - headroom)

    def fit_mtu(self, lower_mtu: int) -> str | None:
        """Clamp ``mtu`` to what the lower device carries, as vxlan_config_apply() does to a
        new device's ``mtu`` ("if (dev->mtu > max_mtu) dev->mtu = max_mtu"); what changed, for
        the user, or None."""
        top = self.max_mtu(lower_mtu)
        if self.mtu is None or self.mtu <= top:
            return None
        asked, self.mtu = self.mtu, top
        return (f"{self.name}: mtu {asked} does not fit {self.dev} (mtu {lower_mtu}, less "
                f"{lower_mtu - top} for the VXLAN headers): using {top}, as the kernel does")

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
            "srcport": list(self.srcport), "ttl": self.ttl, "tos": self.tos, "df": self.df,
            "flowlabel": self.flowlabel,
            "udpcsum": self.udpcsum, "udp6zerocsumtx": self.udp6zerocsumtx,
            "udp6zerocsumrx": self.udp6zerocsumrx, "localbypass": self.localbypass,
            "learning": self.learning,
            "ageing": self.ageing, "maxaddress": self.maxaddress, "proxy": self.proxy,
            "l2miss": self.l2miss, "l3miss": self.l3miss,
        }


def check_overlay_address(text) -> None:
    """``ADDRESS[/PREFIX]`` as ``ip address add`` takes it; LocalError, in the words of the
    failure it prevents ("cannot add address ..."), for anything else."""
    if not isinstance(text, str):
        raise LocalError(f"cannot add address of type {type(text).__name__}: expected "
                         "ADDRESS/PREFIX")
    ip, slash, plen = text.partition("/")
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise LocalError(f"cannot add address {text[:64]!r}: {ip[:64]!r} is not an IP "
                         "address") from None
    if slash:
        top = addr.max_prefixlen
        if not (plen.isascii() and plen.isdigit()) or not 0 <= int(plen) <= top:
            raise LocalError(f"cannot add address {text}: the prefix length must be 0..{top} "
                             f"for IPv{addr.version}")
