"""``vxtun up --config FILE``: several VTEPs (and their static FDB entries) from one TOML file.

    # Two overlays side by side on one UDP port, each with its own multicast group.
    [defaults]                  # optional; every key of a [[vtep]] may be given here
    dev = "eth0"
    local = "192.0.2.1"
    dstport = 4789

    [[vtep]]
    name = "vx42"
    vni = 42
    group = "239.1.1.42"
    address = ["10.20.42.1/24"]

    [[vtep]]
    name = "vx43"
    vni = 43
    nolearning = true
    address = "10.20.43.1/24"
    fdb = [                     # each line as after "vxtun fdb append" (or add/replace ...)
        "00:00:00:00:00:00 dst 192.0.2.2",
        "00:00:00:00:00:00 dst 192.0.2.3",
        "52:5e:55:58:9a:ab dst 192.0.2.2 static",
    ]

The keys are the long options of ``vxtun up`` (``vni`` or ``id``, ``name``, ``remote``,
``group``, ``local``, ``dev``, ``dstport``, ``srcport = [MIN, MAX]``, ``ttl`` (a number,
"auto" or "inherit"), ``tos`` (a number or "inherit"), ``df`` ("unset" or "set"), ``flowlabel``,
``udpcsum`` (or ``noudpcsum``), ``udp6zerocsumtx``, ``udp6zerocsumrx``, ``localbypass`` (or
``nolocalbypass``), ``mtu``,
``address`` (a string or a list), ``mac``, ``master``, ``nolearning`` (or ``learning``),
``ageing``, ``maxaddress``, ``proxy``, ``l2miss``, ``l3miss``, ``reachable_time``,
``gc_stale_time``); a dash may
stand for the underscore.  ``dstport`` defaults to 4789 (IANA) and ``name`` to ``vxtun0``.
``neigh = ["10.20.1.4 lladdr 52:5e:55:58:9a:ab nud permanent", ...]`` lists neighbour
entries, each as after ``vxtun neigh add`` (or replace/change).
Every mistake is reported with the file and the VTEP it is in, before anything is started.

``dump()`` writes such a file from what running VTEPs answer (``vxtun save``): their
configuration, the FDB entries an administrator or a controller added (permanent and static
ones, every destination of a flood list; not what was learned) and the neighbour table, so
that ``vxtun up --config`` of it after a restart gives the same VTEPs and tables.
"""
from __future__ import annotations

import json
import shlex
import tomllib

from ..core import VtepConfig
from ..core.requests import FdbUpdate, NeighUpdate
from ..errors import LocalError
from ..wire.addr import ip_version
from ..wire.ether import mac_from_str
from ..wire.vxlan import DEFAULT_SRCPORT, IANA_PORT
from .requests import parse_fdb, parse_neigh

ZERO_MAC_TEXT = "00:00:00:00:00:00"

_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_BOOL = (bool,)
_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true or false",
          list: "a list"}

# key -> (accepted types, VtepConfig field)
_KEYS = {
    "vni": (_INT, "vni"), "id": (_INT, "vni"), "name": (_STR, "name"),
    "remote": (_STR, "remote"), "group": (_STR, "group"), "local": (_STR, "local"),
    "dev": (_STR, "dev"), "dstport": (_INT, "dstport"), "srcport": ((list,), "srcport"),
    "ttl": ((int, str), "ttl"), "tos": ((int, str), "tos"), "df": (_STR, "df"),
    "flowlabel": (_INT, "flowlabel"),
    "udpcsum": (_BOOL, "udpcsum"), "noudpcsum": (_BOOL, "udpcsum"),
    "udp6zerocsumtx": (_BOOL, "udp6zerocsumtx"), "udp6zerocsumrx": (_BOOL, "udp6zerocsumrx"),
    "localbypass": (_BOOL, "localbypass"), "nolocalbypass": (_BOOL, "localbypass"),
    "mtu": (_INT, "mtu"),
    "address": ((str, list), "address"), "mac": (_STR, "mac"), "master": (_STR, "master"),
    "learning": (_BOOL, "learning"), "nolearning": (_BOOL, "learning"),
    "ageing": (_NUM, "ageing"), "maxaddress": (_INT, "maxaddress"), "proxy": (_BOOL, "proxy"),
    "l2miss": (_BOOL, "l2miss"), "l3miss": (_BOOL, "l3miss"),
    "reachable_time": (_NUM, "reachable_time"), "gc_stale_time": (_NUM, "gc_stale_time"),
}

# the table keys of a [[vtep]], each a list of lines such as this one
_TABLE_EXAMPLES = {"fdb": "00:00:00:00:00:00 dst 192.0.2.2",
                   "neigh": "10.20.1.4 lladdr 52:5e:55:58:9a:ab nud permanent"}


def load(path: str) -> list[VtepConfig]:
    """The VTEPs described in ``path`` (validated)."""
    return load_with_fdb(path)[0]


def load_with_fdb(path: str) -> tuple[list[VtepConfig], dict]:
    """The VTEPs in ``path`` and, by device name, their FDB entries as ``FdbUpdate``
    requests (``fdb append`` unless the line says add or replace) for ``Node.add``."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise LocalError(f"cannot read config file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise LocalError(f"{path}: not valid TOML: {e}") from None
    return parse(doc, path)


def parse(doc: dict, where: str = "config") -> tuple[list[VtepConfig], dict]:
    unknown = set(doc) - {"defaults", "vtep"}
    if unknown:
        raise LocalError(f"{where}: unknown section(s) {', '.join(sorted(unknown))} "
                         "(expected [defaults] and [[vtep]])")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise LocalError(f"{where}: [defaults] must be a table")
    vteps = doc.get("vtep")
    if not isinstance(vteps, list) or not vteps:
        raise LocalError(f"{where}: no VTEP: add at least one [[vtep]] table")
    configs: list[VtepConfig] = []
    fdb: dict = {}
    names: dict = {}
    for i, table in enumerate(vteps, 1):
        merged = {**defaults, **table}
        label = f"{where}: vtep #{i}" + (f" ({merged['name']})" if "name" in merged else "")
        try:
            cfg, entries = _vtep(merged)
        except LocalError as e:
            raise LocalError(f"{label}: {e}") from None
        if cfg.name in names:
            raise LocalError(f"{label}: device name {cfg.name} is already used by vtep "
                             f"#{names[cfg.name]}")
        names[cfg.name] = i
        configs.append(cfg)
        fdb[cfg.name] = entries
    return configs, fdb


def _vtep(table: dict) -> tuple[VtepConfig, list]:
    kw: dict = {"dstport": IANA_PORT, "srcport": DEFAULT_SRCPORT}
    lines: dict[str, list[str]] = {"fdb": [], "neigh": []}
    for key, value in table.items():
        k = key.replace("-", "_")
        if k in _TABLE_EXAMPLES:
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise LocalError(f"{k} must be a list of strings such as "
                                 f"\"{_TABLE_EXAMPLES[k]}\"")
            lines[k] = value
            continue
        if k not in _KEYS:
            raise LocalError(f"unknown key {key!r} (the keys are vxtun up's long options: "
                             f"{', '.join(sorted(_KEYS))}, fdb, neigh)")
        types, field = _KEYS[k]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            want = " or ".join(dict.fromkeys(_NAMES[t] for t in types))
            got = str(value).lower() if isinstance(value, bool) else repr(value)
            raise LocalError(f"{key} must be {want}, not {got}")
        if k in ("nolearning", "noudpcsum", "nolocalbypass"):
            value = not value
        elif k == "address":
            value = [value] if isinstance(value, str) else value
            if not all(isinstance(a, str) for a in value):
                raise LocalError("address must be a string or a list of strings")
        elif k == "srcport":
            if len(value) != 2 or not all(isinstance(x, int) for x in value):
                raise LocalError("srcport must be [MIN, MAX]")
            value = tuple(value)
        elif k == "mac":
            value = mac_from_str(value)
        kw[field] = value
    if "vni" not in kw:
        raise LocalError("vni is required")
    cfg = VtepConfig(**kw)
    cfg.validate()
    entries = [_fdb_line(line, cfg) for line in lines["fdb"]]
    entries += [_neigh_line(line, cfg) for line in lines["neigh"]]
    return cfg, entries


def _neigh_line(line: str, cfg: VtepConfig) -> NeighUpdate:
    return _command(line, cfg, "neigh", ("add", "replace", "change"), parse_neigh).request


def _command(line: str, cfg: VtepConfig, kind: str, ops: tuple[str, ...], parse):
    """One ``fdb``/``neigh`` line of a VTEP's table: the words after ``vxtun KIND`` (the
    operation may be left out: ``ops[0]``), for this VTEP only."""
    words = shlex.split(line)
    if not words or words[0] not in ops:
        words = [ops[0]] + words
    try:
        cmd = parse(words)
    except LocalError as e:
        raise LocalError(f"{kind} {line!r}: {e}") from None
    if cmd.dev not in (None, cfg.name):
        raise LocalError(f"{kind} {line!r}: dev {cmd.dev} is not this VTEP ({cfg.name})")
    return cmd


# --- writing: vxtun save ------------------------------------------------------------------


def _toml(value) -> str:
    """One TOML value (strings as JSON writes them: a TOML basic string, for the ASCII that
    names, addresses and entries are)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else \
            ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def _fdb_lines(cfg: dict, rows: list[dict]) -> list[str]:
    """What ``fdb show`` lists that someone added: permanent and static entries, each
    destination a line; the default entry's ``remote``/``group`` destination comes back with
    the key of that name."""
    own = cfg.get("remote") or cfg.get("group")
    lines = []
    for e in rows:
        if e.get("state") not in ("permanent", "static"):
            continue
        for r in e.get("remotes") or []:
            if e["mac"] == ZERO_MAC_TEXT and r.get("dst") == own and not (
                    set(r) - {"dst"}):
                continue
            words = [e["mac"], "dst", r["dst"]]
            for key in ("port", "vni", "via"):
                if r.get(key) is not None:
                    words += [key, str(r[key])]
            lines.append(" ".join(words + [e["state"]]))
    return lines


def _neigh_lines(rows: list[dict]) -> list[str]:
    lines = []
    for e in rows:
        if not e.get("lladdr"):
            continue                        # failed/incomplete: nothing to restore
        state = e["state"][0] if isinstance(e["state"], list) else e["state"]
        lines.append(f"{e['dst']} lladdr {e['lladdr']} nud {state.lower()}")
    return lines


def dump(vteps: list[dict]) -> str:
    """The TOML of ``vxtun up --config`` for running VTEPs, each given as ``{"show": the
    answer to show, "fdb": fdb show's rows, "neigh": neigh show nud all's rows}``."""
    out = ["# vxtun save: restart with  vxtun up --config FILE"]
    for v in vteps:
        show = v["show"]
        keys = {"name": show["ifname"], "vni": show["vni"]}
        for k in ("remote", "group", "local", "dev"):
            if show.get(k):
                keys[k] = show[k]
        keys["dstport"] = show["dstport"]
        keys["srcport"] = list(show["srcport"])
        for k in ("ttl", "tos", "mtu", "flowlabel"):
            if show.get(k):
                keys[k] = show[k]
        if show.get("df", "unset") != "unset":
            keys["df"] = show["df"]
        if show.get("udpcsum") is False:
            keys["udpcsum"] = False
        for k in ("udp6zerocsumtx", "udp6zerocsumrx"):
            if show.get(k):
                keys[k] = True
        if show.get("address"):
            keys["mac"] = show["address"]   # the TAP's MAC: the neighbours' caches stay right
        if show.get("addresses"):
            keys["address"] = list(show["addresses"])
        if show.get("master"):
            keys["master"] = show["master"]
        keys["nolearning"] = not show.get("learning", True)
        keys["ageing"] = float(show["ageing"])
        keys["maxaddress"] = show.get("maxaddress", 0)
        for k in ("proxy", "l2miss", "l3miss"):
            keys[k] = bool(show.get(k))
        for k in ("reachable_time", "gc_stale_time"):
            if show.get(k) is not None:
                keys[k] = float(show[k])
        out += ["", "[[vtep]]"] + [f"{k} = {_toml(x)}" for k, x in keys.items()]
        for name, lines in (("fdb", _fdb_lines(show, v["fdb"])), ("neigh",
                                                                  _neigh_lines(v["neigh"]))):
            if lines:
                out.append(f"{name} = [")
                out += [f"    {_toml(line)}," for line in lines]
                out.append("]")
    return "\n".join(out) + "\n"


def _fdb_line(line: str, cfg: VtepConfig) -> FdbUpdate:
    update = _command(line, cfg, "fdb", ("append", "add", "replace"), parse_fdb).request
    dst = update.remote.ip
    if ip_version(dst) != cfg.family:
        raise LocalError(f"fdb {line!r}: dst {dst} is IPv{ip_version(dst)} but the underlay is "
                         f"IPv{cfg.family}")
    return update
