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
from ..wire.ether import mac_from_str, mac_to_str


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
    return {"ifname": port.config.name, "vni": port.config.vni, **node.stats(port)}


def _down(node, port, conn, req):
    node.down(port)
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
        from ..cli.output import fdb_entry_json
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
        vtep.fdb_changed("new", e)
        return None
    if op == "del":
        dst = req.get("dst")
        if dst is not None:
            try:
                dst = str(ipaddress.ip_address(dst))
            except ValueError:
                raise LocalError(f"invalid dst address {dst!r}") from None
        e = vtep.fdb.delete(mac, dst, int(req.get("port") or 0), req.get("vni"))
        vtep.fdb_changed("del", e)
        return None
    raise LocalError(f"unknown fdb operation {op!r}")


def _neigh(node, port, conn, req):
    op = req.get("op")
    vtep = port.vtep
    now = time.monotonic()
    if op == "show":
        return [e.to_json() for e in vtep.neigh.entries(now)]
    if op == "flush":
        for e in list(vtep.neigh.entries()):
            vtep.neigh.delete(e.ip)
        return None
    ip = req.get("dst", "")
    if op in ("add", "replace", "change"):
        mac = mac_from_str(req.get("lladdr", ""))
        e = vtep.neigh.add(ip, mac, req.get("nud") or "permanent", now, op)
        vtep.neigh_changed("new", e)
        return None
    if op == "del":
        e = vtep.neigh.delete(ip)
        vtep.neigh_changed("del", e)
        return None
    raise LocalError(f"unknown neigh operation {op!r}")


def _monitor(node, port, conn, req):
    port.monitors.append(conn)
    return {"ifname": port.config.name}


_HANDLERS = {"show": _show, "stats": _stats, "down": _down, "fdb": _fdb, "neigh": _neigh,
             "monitor": _monitor}
