"""What a running VTEP does with each control request (the server side of ``vxtun ...``).

Requests arrive already parsed and validated by the CLI (``vxtun/cli/requests.py``); they are
validated again here because any local program may speak the protocol.  Every change either
happens whole or raises LocalError and changes nothing.
"""
from __future__ import annotations

import ipaddress
import time

from ..errors import LocalError
from ..fdb import Remote
from ..fdb.table import fdb_entry_json
from ..wire.ether import mac_from_str, mac_to_str
from . import counters


def handle(node, port, conn, req: dict):
    cmd = req.get("cmd")
    fn = _HANDLERS.get(cmd)
    if fn is None:
        raise LocalError(f"unknown command {cmd!r}")
    result = fn(node, port, conn, req)
    node.after_core(port)
    return result


def _show(node, port, conn, req):
    cfg = port.config
    d = cfg.to_json()
    d.update({"mtu": cfg.mtu, "address": mac_to_str(cfg.mac), "addresses": cfg.address,
              "master": cfg.master, "dataplane": node.backend.name,
              "features": node.backend.features(), "pid": __import__("os").getpid()})
    return d


def _stats(node, port, conn, req):
    return counters.report(node, port)


def _down(node, port, conn, req):
    node.down(port, conn)
    return {"ifname": port.config.name}


def _remote(req) -> Remote:
    dst = req.get("dst")
    if dst is None:
        raise LocalError("fdb entries of a VTEP need a destination: dst IP")
    try:
        dst = str(ipaddress.ip_address(dst))
    except ValueError:
        raise LocalError(f"invalid dst address {dst!r}") from None
    portn = int(req.get("port") or 0)
    if not 0 <= portn <= 65535:
        raise LocalError(f"invalid port {portn}")
    vni = req.get("vni")
    if vni is not None:
        vni = int(vni)
        if not 0 <= vni < (1 << 24):
            raise LocalError(f"invalid vni {vni}")
    return Remote(dst, portn, vni, req.get("via"))


def _fdb(node, port, conn, req):
    op = req.get("op")
    vtep = port.vtep
    now = time.monotonic()
    if op == "show":
        return [fdb_entry_json(e, port.config) for e in vtep.fdb.entries()]
    if op == "flush":
        vtep.fdb.flush(dynamic_only=bool(req.get("dynamic")))
        return None
    mac = mac_from_str(req.get("mac", ""))
    if op in ("add", "append", "replace"):
        r = _remote(req)
        fam = 6 if ":" in r.ip else 4
        if fam != port.config.family:
            raise LocalError(f"dst {r.ip} is IPv{fam} but {port.config.name} has an "
                             f"IPv{port.config.family} underlay")
        e = vtep.fdb.add(mac, r, req.get("state") or "permanent", now, op)
        # Report the destination this request added, as the kernel notifies one rdst.
        vtep.fdb_changed("new", _only(e, [r]))
        return None
    if op == "del":
        dst = req.get("dst")
        if dst is not None:
            try:
                dst = str(ipaddress.ip_address(dst))
            except ValueError:
                raise LocalError(f"invalid dst address {dst!r}") from None
        old = vtep.fdb.get(mac)
        before = list(old.remotes) if old is not None else []
        e = vtep.fdb.delete(mac, dst, int(req.get("port") or 0), req.get("vni"))
        after = list(e.remotes) if vtep.fdb.get(mac) is not None else []
        vtep.fdb_changed("del", _only(e, [r for r in before if r not in after] or before))
        return None
    raise LocalError(f"unknown fdb operation {op!r}")


class _Entry:
    """An FDB entry as one change shows it: the touched destinations only."""

    def __init__(self, e, remotes) -> None:
        self.mac = e.mac
        self.state = e.state
        self.remotes = remotes


def _only(e, remotes) -> _Entry:
    return _Entry(e, remotes)


def _neigh(node, port, conn, req):
    """``ip neigh`` on the VTEP.  Changes are reported as the kernel notifies them: an add or a
    change of state/lladdr as ``new``; a refresh with the same values silently; a delete as
    ``Deleted IP FAILED``; ``flush`` removes all but permanent and noarp entries (``nud all``:
    every entry)."""
    op = req.get("op")
    vtep = port.vtep
    now = time.monotonic()
    if op == "show":
        rows = [e.to_json() for e in vtep.neigh.entries(now)]
        vtep.neigh_aged()
        if req.get("to"):
            rows = [r for r in rows if r["dst"] == req["to"]]
        nud = req.get("nud")
        if nud == "all":
            return rows
        if nud:
            return [r for r in rows if r["state"] == [nud.upper()]]
        # iproute2 lists every state but NOARP unless asked for ("nud all" / "nud noarp").
        return [r for r in rows if r["state"] != ["NOARP"]]
    if op == "flush":
        vtep.neigh.expire(now)
        vtep.neigh_aged()
        for e in vtep.neigh.flush(all_states=req.get("nud") == "all", ip=req.get("to")):
            vtep.neigh_changed("del", e, admin=True)
        return None
    ip = req.get("dst", "")
    if op in ("add", "replace", "change"):
        mac = mac_from_str(req.get("lladdr", ""))
        e, changed = vtep.neigh.add(ip, mac, req.get("nud") or "permanent", now, op)
        vtep.neigh_aged()
        if changed:
            vtep.neigh_changed("new", e)
        return None
    if op == "del":
        e = vtep.neigh.delete(ip)
        vtep.neigh_changed("del", e, admin=True)
        return None
    raise LocalError(f"unknown neigh operation {op!r}")


def _monitor(node, port, conn, req):
    # Hand out what happened before this subscription first, so the answer to "monitor" is
    # the first line this connection reads and every event after it is new.
    node.after_core(port)
    node.subscribe(port, conn)
    return {"ifname": port.config.name}


_HANDLERS = {"show": _show, "stats": _stats, "down": _down, "fdb": _fdb, "neigh": _neigh,
             "monitor": _monitor}
