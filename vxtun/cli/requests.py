"""Parse iproute2-style words into small request dicts, validating as we go.

``vxtun fdb add 00:00:00:00:00:00 dst 192.0.2.1 dev vxtun0 self permanent`` becomes
``{"cmd": "fdb", "op": "add", "mac": ..., "dst": ..., "state": "permanent"}`` plus the device.
Nothing here does I/O, so every rule is unit-tested without root.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import LocalError
from ..wire.ether import mac_from_str, mac_to_str

FDB_OPS = ("add", "append", "replace", "del", "delete", "show", "list", "flush")
NEIGH_OPS = ("add", "replace", "change", "del", "delete", "show", "list", "flush")


@dataclass
class Request:
    dev: str | None
    body: dict = field(default_factory=dict)
    json: bool = False


def _take(words: list[str], i: int, what: str) -> str:
    if i + 1 >= len(words):
        raise LocalError(f"{what} needs a value")
    return words[i + 1]


def _ip(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise LocalError(f"invalid {what} address {text!r}") from None


def _int(text: str, what: str, lo: int, hi: int) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise LocalError(f"invalid {what} {text!r}: not a number") from None
    if not lo <= v <= hi:
        raise LocalError(f"invalid {what} {v}: must be {lo}..{hi}")
    return v


def parse_fdb(words: list[str]) -> Request:
    """``fdb {add|append|replace|del|show|flush} [MAC] [dst IP] [dev NAME] [port P] [vni V]
    [via DEV] [self] [permanent|static|dynamic] [-j]``"""
    if not words:
        words = ["show"]
    op = words[0]
    if op not in FDB_OPS:
        raise LocalError(f"unknown fdb command {op!r} (expected one of {', '.join(FDB_OPS)})")
    op = {"delete": "del", "list": "show"}.get(op, op)
    body: dict = {"cmd": "fdb", "op": op}
    dev = None
    js = False
    i = 1
    if op in ("add", "append", "replace", "del"):
        if len(words) < 2:
            raise LocalError(f"fdb {op} needs a MAC address")
        body["mac"] = mac_to_str(mac_from_str(words[1]))
        i = 2
    while i < len(words):
        w = words[i]
        if w == "dst":
            body["dst"] = _ip(_take(words, i, "dst"), "dst")
            i += 2
        elif w == "dev":
            dev = _take(words, i, "dev")
            i += 2
        elif w in ("port", "dst_port"):
            body["port"] = _int(_take(words, i, "port"), "port", 1, 65535)
            i += 2
        elif w == "vni":
            body["vni"] = _int(_take(words, i, "vni"), "vni", 0, (1 << 24) - 1)
            i += 2
        elif w == "via":
            body["via"] = _take(words, i, "via")
            i += 2
        elif w == "self":
            i += 1
        elif w == "master":
            raise LocalError("'master' entries live in the bridge: use 'bridge fdb' for them")
        elif w in ("permanent", "local"):
            body["state"] = "permanent"
            i += 1
        elif w in ("static", "temp"):
            body["state"] = "static"
            i += 1
        elif w == "dynamic":
            if op == "flush":
                body["dynamic"] = True
            else:
                body["state"] = "dynamic"
            i += 1
        elif w in ("-j", "-json", "--json"):
            js = True
            i += 1
        else:
            raise LocalError(f"unexpected word {w!r} in fdb {op}")
    if op in ("add", "append", "replace") and "dst" not in body:
        raise LocalError(f"fdb {op} on a VTEP needs a destination: dst IP")
    return Request(dev, body, js)


def parse_neigh(words: list[str]) -> Request:
    """``neigh {add|replace|change|del|show|flush} [IP] [lladdr MAC] [dev NAME]
    [nud permanent|reachable|stale|noarp] [-j]`` (show and flush also take ``nud all`` and an
    address to list or flush only that neighbour)"""
    if not words:
        words = ["show"]
    op = words[0]
    if op not in NEIGH_OPS:
        raise LocalError(f"unknown neigh command {op!r} (expected one of {', '.join(NEIGH_OPS)})")
    op = {"delete": "del", "list": "show"}.get(op, op)
    body: dict = {"cmd": "neigh", "op": op}
    dev = None
    js = False
    i = 1
    if op in ("add", "replace", "change", "del"):
        if len(words) < 2:
            raise LocalError(f"neigh {op} needs an IP address")
        body["dst"] = _ip(words[1], "neighbour")
        i = 2
    while i < len(words):
        w = words[i]
        if w == "lladdr":
            body["lladdr"] = mac_to_str(mac_from_str(_take(words, i, "lladdr")))
            i += 2
        elif w == "dev":
            dev = _take(words, i, "dev")
            i += 2
        elif w == "nud":
            nud = _take(words, i, "nud")
            # show and flush filter by state, and take "all" (every state, noarp included).
            if nud not in ("permanent", "reachable", "stale", "noarp") and \
                    not (nud == "all" and op in ("show", "flush")):
                raise LocalError(f"invalid nud state {nud!r} (expected permanent, reachable, "
                                 "stale or noarp)")
            body["nud"] = nud
            i += 2
        elif w in ("-j", "-json", "--json"):
            js = True
            i += 1
        elif op in ("show", "flush") and "to" not in body and _is_ip(w):
            body["to"] = _ip(w, "neighbour")       # ip neigh show [to] ADDRESS
            i += 1
        elif op in ("show", "flush") and w == "to" and "to" not in body:
            body["to"] = _ip(_take(words, i, "to"), "neighbour")
            i += 2
        else:
            raise LocalError(f"unexpected word {w!r} in neigh {op}")
    if op in ("add", "replace", "change") and "lladdr" not in body:
        raise LocalError(f"neigh {op} needs lladdr MAC")
    return Request(dev, body, js)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def parse_dev_only(words: list[str], what: str) -> Request:
    """``show|stats|monitor [dev NAME] [-j]`` (``down`` takes a bare NAME too)."""
    dev = None
    js = False
    i = 0
    while i < len(words):
        w = words[i]
        if w == "dev":
            dev = _take(words, i, "dev")
            i += 2
        elif w in ("-j", "-json", "--json"):
            js = True
            i += 1
        elif w == "all" and what == "monitor":
            i += 1
        elif dev is None and not w.startswith("-"):
            dev = w
            i += 1
        else:
            raise LocalError(f"unexpected word {w!r} in {what}")
    return Request(dev, {"cmd": what}, js)
