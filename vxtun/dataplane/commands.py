"""What a running VTEP does with each control request (the server side of ``vxtun ...``).

Any local program may speak the protocol, so ``handle`` first turns the decoded JSON into a
typed request (``vxtun/core/requests.py``), which refuses anything malformed with LocalError
before anything changes.  The FDB and neighbour requests then map onto the core's ``Vtep``
methods, which own the rules for what each change reports; every change either happens whole
or raises LocalError and changes nothing.
"""
from __future__ import annotations

import os
import time

from ..core.requests import (Down, FdbDelete, FdbFlush, FdbShow, FdbUpdate, Monitor,
                             NeighDelete, NeighFlush, NeighShow, NeighUpdate, Show, Stats,
                             TraceRequest, request_from_json)
from ..wire.ether import mac_to_str
from . import counters


# Rows per page of a listing: a page is made and encoded in a few milliseconds, and the
# loop serves packets between two pages (vxtun/dataplane/server.py).
PAGE = 256


class Pages:
    """An answer too long for one line: its rows in batches, each read from the table when
    the server asks for it (once the client has taken the one before)."""

    def __init__(self, batches) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def handle(node, port, conn, req: dict):
    """Carry out one decoded request for ``port``'s VTEP; its answer, or LocalError."""
    request = request_from_json(req)
    result = _HANDLERS[type(request)](node, port, conn, request)
    node.after_core(port)
    return result


def _show(node, port, conn, req):
    cfg = port.config
    d = cfg.to_json()
    d.update({"mtu": cfg.mtu, "address": mac_to_str(cfg.mac), "addresses": cfg.address,
              "master": cfg.master, "tos": cfg.tos, "reachable_time": cfg.reachable_time,
              "gc_stale_time": cfg.gc_stale_time, "dataplane": node.backend.name,
              "features": node.backend.features(), "pid": os.getpid()})
    egress = getattr(node.backend, "egress", None)      # UDP-tunnel GSO (vxtun/io/gso.py)
    if egress is not None:
        d["egress"] = egress(port)
    return d


def _stats(node, port, conn, req):
    return counters.report(node, port)


def _down(node, port, conn, req):
    node.down(port, conn)
    return {"ifname": port.config.name}


def _fdb_update(node, port, conn, req: FdbUpdate):
    port.vtep.fdb_update(req.op, req.mac, req.remote, req.state, time.monotonic())


def _fdb_delete(node, port, conn, req: FdbDelete):
    port.vtep.fdb_delete(req.mac, req.dst, req.port, req.vni)


def _paged(node, port, batches):
    for batch in batches:
        node.after_core(port)           # what reading the table reported (ageing)
        yield batch


def _fdb_show(node, port, conn, req: FdbShow):
    if req.count:
        return {"count": len(port.vtep.fdb)}
    now = time.monotonic()
    if len(port.vtep.fdb) <= PAGE:
        return port.vtep.fdb_show(now)  # one line, as any other answer
    return Pages(_paged(node, port, port.vtep.fdb_show_pages(PAGE, now)))


def _fdb_flush(node, port, conn, req: FdbFlush):
    port.vtep.fdb_flush(dynamic_only=req.dynamic)


def _neigh_update(node, port, conn, req: NeighUpdate):
    port.vtep.neigh_update(req.op, req.ip, req.lladdr, req.nud, time.monotonic())


def _neigh_delete(node, port, conn, req: NeighDelete):
    port.vtep.neigh_delete(req.ip)


def _neigh_show(node, port, conn, req: NeighShow):
    if req.count:
        return {"count": len(port.vtep.neigh)}
    if len(port.vtep.neigh) <= PAGE or req.to:
        return port.vtep.neigh_show(time.monotonic(), req.to, req.nud)
    return Pages(_paged(node, port, port.vtep.neigh_show_pages(time.monotonic(), PAGE, req.to,
                                                               req.nud)))


def _neigh_flush(node, port, conn, req: NeighFlush):
    port.vtep.neigh_flush(time.monotonic(), req.all_states, req.to)


def _monitor(node, port, conn, req):
    # Hand out what happened before this subscription first, so the answer to "monitor" is
    # the first line this connection reads and every event after it is new.
    node.after_core(port)
    node.subscribe(port, conn)
    return {"ifname": port.config.name}


def _trace(node, port, conn, req: TraceRequest):
    # vxtun/trace/hub.py: records after this answer, filtered here, in the VTEP
    from ..trace.records import TraceFilter
    node.traces.subscribe(port, conn, TraceFilter(req.mac, req.ip, req.drops))
    return {"ifname": port.config.name, "dataplane": node.backend.name}


_HANDLERS = {Show: _show, Stats: _stats, Down: _down, Monitor: _monitor, TraceRequest: _trace,
             FdbUpdate: _fdb_update, FdbDelete: _fdb_delete, FdbShow: _fdb_show,
             FdbFlush: _fdb_flush, NeighUpdate: _neigh_update, NeighDelete: _neigh_delete,
             NeighShow: _neigh_show, NeighFlush: _neigh_flush}
