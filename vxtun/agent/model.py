"""What the agents keep in the store, and how a key and its value are read back.

Keys, under one prefix (``/vxtun/`` by default)::

    members/<vni>/<underlay-ip>           {"vni": 42, "ip": "192.0.2.1", "port": 4789,
                                           "host": "h1", "vtep": "vxlan0", "kind": "kernel"}
    endpoints/<vni>/<mac>/<underlay-ip>   {"vni": 42, "mac": "52:54:...", "ips": ["10.20.0.1"],
                                           "vtep": "192.0.2.1"}

Both are written under the agent's lease, so a host that stops keeping it alive (a crash, a
partition) disappears from the store, and from every other host, within the TTL.

An endpoint key ends with the VTEP that publishes it: during a move the old and the new host
each write (and later delete) only their own key, so the old host's late delete can never
remove the new location.  When both exist the one written last (the higher mod revision)
wins, a function of the store's state alone.

Anything else under the prefix, or a value of the wrong shape, is *bad data*: ``parse`` skips
it and says why, it never raises.
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field

from .store import KeyValue

PREFIX = "/vxtun/"
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Member:
    """One VTEP of a VNI: where the others send that VNI's floods."""
    vni: int
    ip: str
    port: int = 4789
    host: str = ""
    vtep: str = ""
    kind: str = ""


@dataclass(frozen=True)
class Endpoint:
    """A MAC (and its IPs) behind the VTEP at ``vtep`` (an underlay address)."""
    vni: int
    mac: str
    vtep: str
    ips: tuple[str, ...] = ()
    revision: int = 0


@dataclass
class Desired:
    """The store's state, read: members and endpoints by VNI, and what was skipped."""
    revision: int = 0
    members: dict[int, dict[str, Member]] = field(default_factory=dict)
    endpoints: dict[int, dict[str, Endpoint]] = field(default_factory=dict)   # by MAC
    bad: list[str] = field(default_factory=list)


def member_key(vni: int, ip: str, prefix: str = PREFIX) -> str:
    return f"{prefix}members/{vni}/{ip}"


def endpoint_key(vni: int, mac: str, vtep: str, prefix: str = PREFIX) -> str:
    return f"{prefix}endpoints/{vni}/{mac}/{vtep}"


def member_value(m: Member) -> str:
    return json.dumps({"vni": m.vni, "ip": m.ip, "port": m.port, "host": m.host,
                       "vtep": m.vtep, "kind": m.kind}, sort_keys=True)


def endpoint_value(e: Endpoint) -> str:
    return json.dumps({"vni": e.vni, "mac": e.mac, "ips": list(e.ips), "vtep": e.vtep},
                      sort_keys=True)


def _ip(s) -> str:
    if not isinstance(s, str):
        raise ValueError(f"not an address: {s!r}")
    return str(ipaddress.ip_address(s))


def _vni(s) -> int:
    v = int(s) if isinstance(s, str) and s.isdigit() else s
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 24:
        raise ValueError(f"not a VNI: {s!r}")
    return v


def _split(kv: KeyValue, prefix: str, kind: str, n: int) -> tuple[list[str], dict]:
    """The key's parts after the prefix (``n`` of them, the first ``kind``) and the value, a
    JSON object."""
    parts = kv.key[len(prefix):].split("/")
    if len(parts) != n or parts[0] != kind:
        raise ValueError(f"not a {kind} key")
    d = json.loads(kv.value)
    if not isinstance(d, dict):
        raise ValueError("the value is not an object")
    return parts, d


def read_member(kv: KeyValue, prefix: str = PREFIX) -> Member:
    parts, d = _split(kv, prefix, "members", 3)
    vni, ip = _vni(parts[1]), _ip(parts[2])
    if _vni(d.get("vni")) != vni or _ip(d.get("ip")) != ip:
        raise ValueError("the value does not match its key")
    port = d.get("port", 4789)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"bad port {port!r}")
    return Member(vni, ip, port, str(d.get("host", "")), str(d.get("vtep", "")),
                  str(d.get("kind", "")))


def read_endpoint(kv: KeyValue, prefix: str = PREFIX) -> Endpoint:
    parts, d = _split(kv, prefix, "endpoints", 4)
    vni, mac, vtep = _vni(parts[1]), parts[2], _ip(parts[3])
    if not _MAC.match(mac) or mac == "00:00:00:00:00:00" or int(mac[:2], 16) & 1:
        raise ValueError(f"not a unicast MAC: {mac!r}")
    if _vni(d.get("vni")) != vni or d.get("mac") != mac or _ip(d.get("vtep")) != vtep:
        raise ValueError("the value does not match its key")
    ips = d.get("ips", [])
    if not isinstance(ips, list):
        raise ValueError("ips is not a list")
    return Endpoint(vni, mac, vtep, tuple(sorted({_ip(i) for i in ips})), kv.mod_revision)


def parse(revision: int, kvs, prefix: str = PREFIX) -> Desired:
    """The store's keys (any order) as members and endpoints; bad keys skipped, with why."""
    out = Desired(revision)
    for kv in sorted(kvs, key=lambda kv: kv.key):
        rest = kv.key[len(prefix):]
        try:
            if rest.startswith("members/"):
                m = read_member(kv, prefix)
                out.members.setdefault(m.vni, {})[m.ip] = m
            elif rest.startswith("endpoints/"):
                e = read_endpoint(kv, prefix)
                have = out.endpoints.setdefault(e.vni, {}).get(e.mac)
                if have is None or (e.revision, e.vtep) > (have.revision, have.vtep):
                    out.endpoints[e.vni][e.mac] = e
            elif not rest.startswith("status/"):
                raise ValueError("unknown key")
        except (ValueError, TypeError) as err:
            out.bad.append(f"{kv.key}: {err}")
    return out
