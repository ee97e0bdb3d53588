"""What a client may ask a running VTEP: one typed, frozen request per command.

Any local program may speak the control protocol (JSON lines on ``@vxtun/<dev>``), so the
request is validated whole where it enters, before anything changes: a typed request cannot be
built with a wrong type, an out-of-range number, a bad address or an unknown state in it.  The
constructors canonicalise what they are given (a MAC, as text or bytes, becomes 6 bytes; an IP
its canonical text), ``to_json()`` gives the form that travels, and ``request_from_json()``
turns any decoded JSON back into a request or raises LocalError with a message fit to print.

The CLI (``vxtun/cli/requests.py``) builds these from iproute2's words, ``vxtun.api`` from a
program's arguments, and ``vxtun/dataplane/commands.py`` carries them out with the core's
``Vtep`` methods.  The commands and their fields, named as ``bridge fdb`` and ``ip neigh``
name them:

    show | stats | down | monitor
    trace [mac MAC] [ip IP] [drops]
    fdb add|append|replace MAC dst IP [port P] [vni V] [via DEV] [permanent|static|dynamic]
    fdb del MAC [dst IP [port P] [vni V]]      fdb show [count]      fdb flush [dynamic]
    neigh add|replace|change IP lladdr MAC [nud STATE]      neigh del IP
    neigh show [to IP] [nud STATE|all] [count]              neigh flush [to IP] [nud all]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import LocalError
from ..fdb import Remote
from ..fdb.table import STATES as FDB_STATES
from ..wire.addr import canonical_ip
from ..wire.ether import mac_from_str, mac_to_str
from ..wire.vxlan import VNI_MAX

FDB_UPDATE_OPS = ("add", "append", "replace")
NEIGH_UPDATE_OPS = ("add", "replace", "change")
# vxtun/proxy/neigh.py's NUD_STATES, in the order the CLI has always listed them.
NUD_WORDS = ("permanent", "reachable", "stale", "noarp")


# --- checks: each returns the canonical value or raises LocalError ---------------------------


def _kind(value) -> str:
    """A short, flat description of a JSON value for a message (never a deep repr)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and not -10**18 < value < 10**18:
        return "a number out of range"      # str() of a huge int is slow, or refused
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 64 else value[:64] + "...")
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _text(value, what: str) -> str:
    if not isinstance(value, str):
        raise LocalError(f"{what} must be a string, not {_kind(value)}")
    return value


def _number(value, what: str, lo: int, hi: int) -> int:
    # bool is an int in Python and true/false in JSON: neither is a port or a VNI.
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalError(f"{what} must be a number, not {_kind(value)}")
    if not lo <= value <= hi:
        raise LocalError(f"invalid {what} {_kind(value)}: must be {lo}..{hi}")
    return value


def _flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise LocalError(f"{what} must be true or false, not {_kind(value)}")
    return value


def _mac(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 6:
            raise LocalError(f"a MAC address is 6 bytes, not {len(value)}")
        return bytes(value)
    return mac_from_str(_text(value, "a MAC address"))


def _ip(value, what: str) -> str:
    return canonical_ip(_text(value, f"{what} address"), what)


def _choice(value, what: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise LocalError(f"invalid {what} {_kind(value)} (expected "
                         f"{', '.join(allowed[:-1])} or {allowed[-1]})")
    return value


def _op(value, cmd: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise LocalError(f"unknown {cmd} operation {_kind(value)}")
    return value


def _port(value) -> int:
    return 0 if value is None else _number(value, "port", 0, 65535)


def _vni(value) -> int | None:
    return None if value is None else _number(value, "vni", 0, VNI_MAX)


def _nud(value, also: tuple[str, ...] = ()) -> str:
    return _choice(value, "nud state", NUD_WORDS + also)


def _remote(r: Remote) -> Remote:
    if not isinstance(r, Remote):
        raise LocalError(f"an FDB destination is a Remote, not {_kind(r)}")
    via = None if r.via is None else _text(r.via, "via")
    return Remote(_ip(r.ip, "dst"), _port(r.port), _vni(r.vni), via or None)


class _Request:
    """What every request shares: ``cmd``/``op`` and the canonicalising constructor."""
    cmd: ClassVar[str]

    def _canon(self, **values) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)      # frozen: set once, here

    def to_json(self) -> dict:
        d: dict = {"cmd": self.cmd}
        op = getattr(self, "op", None)      # show, stats, down and monitor have none
        if op is not None:
            d["op"] = op
        d.update(self._fields_json())
        return d

    def _fields_json(self) -> dict:
        return {}


class _Fdb(_Request):
    """``bridge fdb ... dev DEV self``: the VTEP's own FDB."""
    cmd: ClassVar[str] = "fdb"


class _Neigh(_Request):
    """``ip neigh ... dev DEV``: the table the ARP/ND proxy answers from."""
    cmd: ClassVar[str] = "neigh"


# --- the device --------------------------------------------------------------------------


@dataclass(frozen=True)
class Show(_Request):
    """``vxtun show``, answered with the configuration as ``ip -d link show`` names it, and
    the MTU, MAC, addresses, bridge, dataplane and its offload features."""
    cmd: ClassVar[str] = "show"


@dataclass(frozen=True)
class Stats(_Request):
    """``vxtun stats``: packets and bytes each way, drops by reason, events lost."""
    cmd: ClassVar[str] = "stats"


@dataclass(frozen=True)
class Down(_Request):
    """``vxtun down``: the VTEP goes.  The answer is sent once its TAP is gone; the
    ``vxtun up`` that started it exits 0 when it held no other VTEP."""
    cmd: ClassVar[str] = "down"


@dataclass(frozen=True)
class Monitor(_Request):
    """``vxtun monitor``: after the answer, every event of the VTEP comes on this
    connection (``vxtun/core/events.py``), as ``ip monitor`` shows the kernel's."""
    cmd: ClassVar[str] = "monitor"


@dataclass(frozen=True)
class TraceRequest(_Request):
    """``vxtun trace [mac MAC] [ip IP] [drops]``: after the answer, a record of every decision
    the VTEP makes comes on this connection (``vxtun/trace/records.py``), only those about
    ``mac`` or ``ip`` when given, only drops with ``drops``; the VTEP applies the filter."""
    cmd: ClassVar[str] = "trace"
    mac: bytes | None = None
    ip: str | None = None
    drops: bool = False

    def __post_init__(self) -> None:
        self._canon(mac=None if self.mac is None else _mac(self.mac),
                    ip=None if self.ip is None else _ip(self.ip, "trace"),
                    drops=_flag(self.drops, "drops"))

    def _fields_json(self) -> dict:
        d: dict = {}
        if self.mac is not None:
            d["mac"] = mac_to_str(self.mac)
        if self.ip is not None:
            d["ip"] = self.ip
        if self.drops:
            d["drops"] = True
        return d


# --- the FDB (bridge fdb ... self) ----------------------------------------------------------


@dataclass(frozen=True)
class FdbUpdate(_Fdb):
    """``bridge fdb add|append|replace MAC dst IP [port P] [vni V] [via DEV] [STATE]``: one
    destination for ``mac`` (``port`` 0 and ``vni`` None: the VTEP's own).  Also the form of
    the FDB entries a VTEP starts with (``vxtun up --config``)."""
    op: str
    mac: bytes
    remote: Remote
    state: str = "permanent"

    def __post_init__(self) -> None:
        remote = _remote(self.remote)       # rebuilt: the address canonical, no "" for via
        self._canon(op=_op(self.op, "fdb", FDB_UPDATE_OPS), mac=_mac(self.mac), remote=remote,
                    state=_choice(self.state, "fdb state", FDB_STATES))

    def _fields_json(self) -> dict:
        return {"mac": mac_to_str(self.mac), **self.remote.to_json(), "state": self.state}


@dataclass(frozen=True)
class FdbDelete(_Fdb):
    """``bridge fdb del MAC [dst IP [port P] [vni V]]``: one destination, or the entry."""
    op: ClassVar[str] = "del"
    mac: bytes
    dst: str | None = None
    port: int = 0
    vni: int | None = None

    def __post_init__(self) -> None:
        self._canon(mac=_mac(self.mac), dst=None if self.dst is None else _ip(self.dst, "dst"),
                    port=_port(self.port), vni=_vni(self.vni))

    def _fields_json(self) -> dict:
        d: dict = {"mac": mac_to_str(self.mac)}
        if self.dst is not None:
            d["dst"] = self.dst
        if self.port:
            d["port"] = self.port
        if self.vni is not None:
            d["vni"] = self.vni
        return d


@dataclass(frozen=True)
class FdbShow(_Fdb):
    """``bridge fdb show``: every entry, the default (all-zeros) one first, in pages when
    there are many (vxtun/dataplane/server.py); with ``count``, only how many there are."""
    op: ClassVar[str] = "show"
    count: bool = False

    def __post_init__(self) -> None:
        self._canon(count=_flag(self.count, "count"))

    def _fields_json(self) -> dict:
        return {"count": True} if self.count else {}


@dataclass(frozen=True)
class FdbFlush(_Fdb):
    """``bridge fdb flush [dynamic]``."""
    op: ClassVar[str] = "flush"
    dynamic: bool = False

    def __post_init__(self) -> None:
        self._canon(dynamic=_flag(self.dynamic, "dynamic"))

    def _fields_json(self) -> dict:
        return {"dynamic": True} if self.dynamic else {}


# --- the neighbour table (ip neigh ... dev DEV) ---------------------------------------------


@dataclass(frozen=True)
class NeighUpdate(_Neigh):
    """``ip neigh add|replace|change IP lladdr MAC [nud STATE]``."""
    op: str
    ip: str
    lladdr: bytes
    nud: str = "permanent"

    def __post_init__(self) -> None:
        self._canon(op=_op(self.op, "neigh", NEIGH_UPDATE_OPS), ip=_ip(self.ip, "neighbour"),
                    lladdr=_mac(self.lladdr), nud=_nud(self.nud))

    def _fields_json(self) -> dict:
        return {"dst": self.ip, "lladdr": mac_to_str(self.lladdr), "nud": self.nud}


@dataclass(frozen=True)
class NeighDelete(_Neigh):
    """``ip neigh del IP``."""
    op: ClassVar[str] = "del"
    ip: str

    def __post_init__(self) -> None:
        self._canon(ip=_ip(self.ip, "neighbour"))

    def _fields_json(self) -> dict:
        return {"dst": self.ip}


@dataclass(frozen=True)
class NeighShow(_Neigh):
    """``ip neigh show [to IP] [nud STATE|all]``; with ``count``, only how many entries the
    table holds (in any state)."""
    op: ClassVar[str] = "show"
    to: str | None = None
    nud: str | None = None
    count: bool = False

    def __post_init__(self) -> None:
        self._canon(to=None if self.to is None else _ip(self.to, "neighbour"),
                    nud=None if self.nud is None else _nud(self.nud, ("all",)),
                    count=_flag(self.count, "count"))

    def _fields_json(self) -> dict:
        d = {k: v for k, v in (("to", self.to), ("nud", self.nud)) if v is not None}
        if self.count:
            d["count"] = True
        return d


@dataclass(frozen=True)
class NeighFlush(_Neigh):
    """``ip neigh flush [to IP] [nud all]``: all but permanent and noarp entries, or all."""
    op: ClassVar[str] = "flush"
    to: str | None = None
    all_states: bool = False

    def __post_init__(self) -> None:
        self._canon(to=None if self.to is None else _ip(self.to, "neighbour"),
                    all_states=_flag(self.all_states, "all_states"))

    def _fields_json(self) -> dict:
        d: dict = {} if self.to is None else {"to": self.to}
        if self.all_states:
            d["nud"] = "all"
        return d


Request = (Show | Stats | Down | Monitor | TraceRequest | FdbUpdate | FdbDelete | FdbShow | FdbFlush
           | NeighUpdate | NeighDelete | NeighShow | NeighFlush)


# --- JSON -> request ------------------------------------------------------------------------


def _fdb_update(op: str, d: dict) -> FdbUpdate:
    if d.get("dst") is None:
        raise LocalError(f"fdb {op} on a VTEP needs a destination: dst IP")
    return FdbUpdate(op, _required(d, "mac", f"fdb {op} needs a MAC address"),
                     Remote(d["dst"], d.get("port"), d.get("vni"), d.get("via")),
                     _default(d.get("state"), "permanent"))


def _neigh_update(op: str, d: dict) -> NeighUpdate:
    return NeighUpdate(op, _required(d, "dst", f"neigh {op} needs an IP address: dst"),
                       _required(d, "lladdr", f"neigh {op} needs lladdr MAC"),
                       _default(d.get("nud"), "permanent"))


def _neigh_flush(d: dict) -> NeighFlush:
    # Any state word is accepted, as the CLI's grammar takes it; only "all" changes the flush.
    nud = d.get("nud")
    if nud is not None:
        _nud(nud, ("all",))
    return NeighFlush(d.get("to"), nud == "all")


# (cmd, op) -> (the fields it takes, how to build it from the decoded object)
_FROM_JSON = {
    ("show", None): ((), lambda op, d: Show()),
    ("stats", None): ((), lambda op, d: Stats()),
    ("down", None): ((), lambda op, d: Down()),
    ("monitor", None): ((), lambda op, d: Monitor()),
    ("trace", None): (("mac", "ip", "drops"), lambda op, d: TraceRequest(
        d.get("mac"), d.get("ip"), _default(d.get("drops"), False))),
    **{("fdb", op): (("mac", "dst", "port", "vni", "via", "state"), _fdb_update)
       for op in FDB_UPDATE_OPS},
    ("fdb", "del"): (("mac", "dst", "port", "vni"),
                     lambda op, d: FdbDelete(_required(d, "mac", "fdb del needs a MAC address"),
                                             d.get("dst"), d.get("port"), d.get("vni"))),
    ("fdb", "show"): (("count",), lambda op, d: FdbShow(_default(d.get("count"), False))),
    ("fdb", "flush"): (("dynamic",), lambda op, d: FdbFlush(_default(d.get("dynamic"), False))),
    **{("neigh", op): (("dst", "lladdr", "nud"), _neigh_update) for op in NEIGH_UPDATE_OPS},
    ("neigh", "del"): (("dst",), lambda op, d: NeighDelete(
        _required(d, "dst", "neigh del needs an IP address: dst"))),
    ("neigh", "show"): (("to", "nud", "count"), lambda op, d: NeighShow(
        d.get("to"), d.get("nud"), _default(d.get("count"), False))),
    ("neigh", "flush"): (("to", "nud"), lambda op, d: _neigh_flush(d)),
}
_COMMANDS = {cmd for cmd, _ in _FROM_JSON}
_WITH_OPS = {cmd for cmd, op in _FROM_JSON if op is not None}


def _required(d: dict, key: str, message: str):
    if d.get(key) is None:
        raise LocalError(message)
    return d[key]


def _default(value, default):
    return default if value is None else value


def request_from_json(obj) -> Request:
    """The request a decoded JSON value describes; LocalError, with what is wrong, if it
    describes none.  A field that is null counts as absent."""
    if not isinstance(obj, dict):
        raise LocalError(f"a request must be a JSON object, not {_kind(obj)}")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or cmd not in _COMMANDS:
        raise LocalError(f"unknown command {_kind(cmd)}")
    op = obj.get("op")
    if cmd in _WITH_OPS:
        if not isinstance(op, str) or (cmd, op) not in _FROM_JSON:
            raise LocalError(f"unknown {cmd} operation {_kind(op)}")
    elif op is not None:
        raise LocalError(f"{cmd} takes no operation, not {_kind(op)}")
    allowed, build = _FROM_JSON[cmd, op]
    for key in obj:
        if key not in ("cmd", "op") and key not in allowed:
            where = f"{cmd} {op}" if op else cmd
            raise LocalError(f"unknown field {_kind(key)} in {where}")
    return build(op, obj)



def fdb_update_from_json(obj) -> FdbUpdate | NeighUpdate:
    """An entry a VTEP starts with (``vxtun up --config``, sent to the port owner with
    ``to_json()``): only ``fdb add|append|replace`` describes one, or a neighbour's
    ``neigh add|replace|change`` (a saved file's ``neigh`` lines, vxtun/cli/configfile.py)."""
    req = request_from_json(obj)
    if not isinstance(req, (FdbUpdate, NeighUpdate)):
        raise LocalError(f"an FDB entry must be fdb add, append or replace, not {req.cmd} "
                         f"{getattr(req, 'op', '')}".rstrip())
    return req
