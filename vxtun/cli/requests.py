"""Parse iproute2-style words into the typed requests of ``vxtun/core/requests.py``.

``vxtun fdb add 00:00:00:00:00:00 dst 192.0.2.1 dev vxtun0 self permanent`` becomes
``FdbUpdate("add", ZERO_MAC, Remote("192.0.2.1"), "permanent")`` for the device ``vxtun0``.
The words are checked as they are read, so a mistake is named in the user's own words
(``invalid port 'x': not a number``); the request's constructor checks the rest.  Nothing here
does I/O, so every rule is unit-tested without root.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.requests import (NUD_WORDS, Down, FdbDelete, FdbFlush, FdbShow, FdbUpdate,
                             Monitor, NeighDelete, NeighFlush, NeighShow, NeighUpdate, Request,
                             Show, Stats, TraceRequest)
from ..errors import LocalError
from ..fdb import Remote
from ..wire.addr import canonical_ip, is_ip
from ..wire.ether import mac_from_str
from ..wire.vxlan import VNI_MAX

FDB_OPS = ("add", "append", "replace", "del", "delete", "show", "list", "flush")
NEIGH_OPS = ("add", "replace", "change", "del", "delete", "show", "list", "flush")
JSON_WORDS = ("-j", "-json", "--json")
STATS_WORDS = ("-s", "-stats", "-statistics")
_ALIASES = {"delete": "del", "list": "show"}
_DEV_ONLY = {"show": Show, "stats": Stats, "down": Down, "monitor": Monitor}


@dataclass
class Command:
    """One ``vxtun`` invocation: the request, the device it is for (None: every VTEP, or the
    only one), and whether the answer is printed as JSON."""
    dev: str | None
    request: Request
    json: bool = False
    stats: bool = False       # -s: each FDB entry's used/updated timers, as bridge -s fdb

    @property
    def body(self) -> dict:
        """The request as it travels on the control socket."""
        return self.request.to_json()


class _Words:
    """The words after the command, read left to right; ``dev NAME`` and ``-j`` may stand
    anywhere, as in iproute2."""

    def __init__(self, words: list[str], kind: str, ops: tuple[str, ...]) -> None:
        words = words or ["show"]
        if words[0] not in ops:
            raise LocalError(f"unknown {kind} command {words[0]!r} "
                             f"(expected one of {', '.join(ops)})")
        self.op = _ALIASES.get(words[0], words[0])
        self.kind = kind
        self.words = words
        self.i = 1
        self.dev: str | None = None
        self.json = False

    def __iter__(self):
        while self.i < len(self.words):
            w = self.words[self.i]
            self.i += 1
            if w == "dev":
                self.dev = self.value("dev")
            elif w in JSON_WORDS:
                self.json = True
            else:
                yield w

    def first(self, what: str) -> str:
        """The word right after the operation (the MAC or IP it is about)."""
        if len(self.words) < 2:
            raise LocalError(f"{self.kind} {self.op} needs {what}")
        self.i = 2
        return self.words[1]

    def value(self, what: str) -> str:
        if self.i >= len(self.words):
            raise LocalError(f"{what} needs a value")
        self.i += 1
        return self.words[self.i - 1]

    def unexpected(self, w: str) -> LocalError:
        return LocalError(f"unexpected word {w!r} in {self.kind} {self.op}")

    def command(self, request: Request) -> Command:
        return Command(self.dev, request, self.json)


def _int(text: str, what: str, lo: int, hi: int) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise LocalError(f"invalid {what} {text!r}: not a number") from None
    if not lo <= v <= hi:
        raise LocalError(f"invalid {what} {v}: must be {lo}..{hi}")
    return v


def parse_fdb(words: list[str]) -> Command:
    """``fdb {add|append|replace|del|show|flush} [MAC] [dst IP] [dev NAME] [port P] [vni V]
    [via DEV] [src_vni V] [self] [permanent|static|dynamic] [-j] [-s]``"""
    w = _Words(words, "fdb", FDB_OPS)
    op = w.op
    listing = op in ("show", "flush")
    mac = None if listing else mac_from_str(w.first("a MAC address"))
    dst = via = None
    port, vni, state, dynamic, stats, count = 0, None, "permanent", False, False, False
    for word in w:
        if word in STATS_WORDS and op == "show":
            stats = True
        elif word == "count" and op == "show":
            count = True                # the number of entries, not the entries
        elif word == "src_vni" and not listing:
            # NDA_SRC_VNI keys an entry only on an "external" (collect_metadata) device, and
            # vxlan_fdb_info() shows it only there: a VTEP with its own VNI, as every vxtun
            # VTEP is, accepts it and ignores it, as the kernel's does.
            _int(w.value("src_vni"), "src_vni", 0, VNI_MAX)
        elif word == "dst":
            dst = canonical_ip(w.value("dst"), "dst")
        elif word in ("port", "dst_port"):
            port = _int(w.value("port"), "port", 1, 65535)
        elif word == "vni":
            vni = _int(w.value("vni"), "vni", 0, VNI_MAX)
        elif word == "via":
            via = w.value("via")
        elif word == "self":
            pass
        elif word == "master":
            raise LocalError("'master' entries live in the bridge: use 'bridge fdb' for them")
        elif word in ("permanent", "local"):
            state = "permanent"
        elif word in ("static", "temp"):
            state = "static"
        elif word == "dynamic":
            state, dynamic = "dynamic", True
        else:
            raise w.unexpected(word)
    if op == "show":
        cmd = w.command(FdbShow(count))
        cmd.stats = stats
        return cmd
    if op == "flush":
        return w.command(FdbFlush(dynamic))
    if op == "del":
        return w.command(FdbDelete(mac, dst, port, vni))
    if dst is None:
        raise LocalError(f"fdb {op} on a VTEP needs a destination: dst IP")
    return w.command(FdbUpdate(op, mac, Remote(dst, port, vni, via), state))


def parse_neigh(words: list[str]) -> Command:
    """``neigh {add|replace|change|del|show|flush} [IP] [lladdr MAC] [dev NAME]
    [nud permanent|reachable|stale|noarp] [-j]`` (show and flush also take ``nud all`` and an
    address to list or flush only that neighbour)"""
    w = _Words(words, "neigh", NEIGH_OPS)
    op = w.op
    listing = op in ("show", "flush")
    ip = None if listing else canonical_ip(w.first("an IP address"), "neighbour")
    lladdr = to = nud = None
    count = False
    for word in w:
        if word == "count" and op == "show":
            count = True                # the number of entries (in any state) only
        elif word == "lladdr":
            lladdr = mac_from_str(w.value("lladdr"))
        elif word == "nud":
            nud = w.value("nud")
            # show and flush filter by state, and take "all" (every state, noarp included).
            if nud not in NUD_WORDS and not (nud == "all" and listing):
                raise LocalError(f"invalid nud state {nud!r} (expected "
                                 f"{', '.join(NUD_WORDS[:-1])} or {NUD_WORDS[-1]})")
        elif listing and to is None and is_ip(word):
            to = canonical_ip(word, "neighbour")        # ip neigh show [to] ADDRESS
        elif listing and word == "to" and to is None:
            to = canonical_ip(w.value("to"), "neighbour")
        else:
            raise w.unexpected(word)
    if op == "show":
        if count and (to or nud):
            raise LocalError("neigh show count counts the whole table: drop to/nud")
        return w.command(NeighShow(to, nud, count))
    if op == "flush":
        return w.command(NeighFlush(to, nud == "all"))
    if op == "del":
        return w.command(NeighDelete(ip))
    if lladdr is None:
        raise LocalError(f"neigh {op} needs lladdr MAC")
    return w.command(NeighUpdate(op, ip, lladdr, nud or "permanent"))


def parse_dev_only(words: list[str], what: str) -> Command:
    """``show|stats|monitor [dev NAME] [-j]`` (``down`` takes a bare NAME too)."""
    dev = None
    js = False
    i = 0
    while i < len(words):
        w = words[i]
        if w == "dev":
            if i + 1 >= len(words):
                raise LocalError("dev needs a value")
            dev = words[i + 1]
            i += 2
        elif w in JSON_WORDS:
            js = True
            i += 1
        elif w == "all" and what == "monitor":
            i += 1
        elif dev is None and not w.startswith("-"):
            dev = w
            i += 1
        else:
            raise LocalError(f"unexpected word {w!r} in {what}")
    return Command(dev, _DEV_ONLY[what](), js)


def parse_trace(words: list[str]) -> Command:
    """``trace [dev NAME] [-j] [mac MAC] [ip IP] [drops]``"""
    dev = mac = ip = None
    js = drops = False
    i = 0

    def value(what: str) -> str:
        if i + 1 >= len(words):
            raise LocalError(f"{what} needs a value")
        return words[i + 1]

    while i < len(words):
        w = words[i]
        if w == "dev":
            dev = value("dev")
            i += 2
        elif w == "mac":
            mac = mac_from_str(value("mac"))
            i += 2
        elif w == "ip":
            ip = canonical_ip(value("ip"), "trace")
            i += 2
        elif w in JSON_WORDS:
            js = True
            i += 1
        elif w == "drops":
            drops = True
            i += 1
        else:
            raise LocalError(f"unexpected word {w!r} in trace "
                             "(expected dev NAME, mac MAC, ip IP, drops or -j)")
    return Command(dev, TraceRequest(mac, ip, drops), js)


# --- vxtun up NAME WORDS: the words of ip link add NAME type vxlan WORDS -------------------------

# ip/iplink_vxlan.c's words whose long option has another name, and ip link's own words
# (``ip link add NAME address LLADDR mtu MTU master BR type vxlan ...``).
UP_SYNONYMS = {"id": "--vni", "vni": "--vni", "hoplimit": "--ttl", "port": "--srcport",
               "address": "--mac", "lladdr": "--mac"}
# Words that ask for what vxtun does anyway: the kernel's defaults, which vxtun shares.
UP_DEFAULT_WORDS = ("learning", "noproxy", "nol2miss", "nol3miss")
# Words of iplink_vxlan.c vxtun has no counterpart for, and why.
UP_UNSUPPORTED = {
    "rsc": "route short-circuit needs the host's neighbour table",
    "norsc": None, "external": "vxtun VTEPs serve one VNI each (no collect_metadata)",
    "noexternal": None, "gbp": "the Group Based Policy extension is not implemented",
    "gpe": "VXLAN-GPE is not implemented", "vnifilter": "vxtun VTEPs serve one VNI each",
    "novnifilter": None, "remcsumtx": "remote checksum offload is not implemented",
    "noremcsumtx": None, "remcsumrx": "remote checksum offload is not implemented",
    "noremcsumrx": None,
}


def up_words(words: list[str], options: dict[str, int]) -> list[str]:
    """``vxtun up NAME [type vxlan] WORDS`` as the long options of ``vxtun up``: each ``WORD``
    is ``--WORD`` (``id 42`` is ``--vni 42``, ``nolearning`` is ``--nolearning``), so that both
    forms make the same request.  ``options`` maps each long option of ``vxtun up`` to the
    number of values it takes.  A word no option answers to is refused by name."""
    name, rest = words[0], words[1:]
    if name.startswith("-"):
        raise LocalError(f"vxtun up NAME WORDS: {name!r} is not a device name")
    out = ["--name", name]
    i = 0
    while i < len(rest):
        w = rest[i]
        i += 1
        if w == "type":             # ip link's words (address, mtu, master) come before it
            if rest[i:i + 1] != ["vxlan"]:
                raise LocalError("vxtun up NAME ... type vxlan ...: vxtun makes vxlan devices "
                                 "only")
            i += 1
            continue
        if w.startswith("-"):           # long options may follow the words (--address ...)
            return out + rest[i - 1:]
        if w in UP_DEFAULT_WORDS:
            continue
        opt = UP_SYNONYMS.get(w, f"--{w}")
        if opt not in options or w in ("name", "config"):
            if w in UP_UNSUPPORTED:
                why = UP_UNSUPPORTED[w]
                if why is None:         # "norsc" and the like: the default, nothing to do
                    continue
                raise LocalError(f"vxtun does not support '{w}' ({why})")
            raise LocalError(f"unknown word '{w}' in vxtun up (ip link add ... type vxlan); "
                             f"'vxtun up --help' lists what vxtun supports")
        n = options[opt]
        if i + n > len(rest):
            raise LocalError(f"'{w}' needs {n} value{'s' if n > 1 else ''}")
        out += [opt, *rest[i:i + n]]
        i += n
    return out
