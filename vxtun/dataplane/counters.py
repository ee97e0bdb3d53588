"""What ``vxtun stats`` reports for one VTEP, merged from where each count lives.

* The per-packet counters: the core's ``Stats`` (vxtun/core/stats.py) and, for the fast
  dataplane, the C threads' own, added together by the backend.  Both count rx and tx as
  ``ip -s link show`` of a kernel VTEP does (stats.COUNTS), not as the TAP's own counters.
* Drops before the VNI is known (too short, I flag clear, no such VNI) belong to the UDP
  socket's ``Demux``: shown on the VTEP when it is the socket's only one (as the kernel counts
  them on its single device), as the socket's when several share it.
* ``events.lost``: events dropped from the core's bounded queue or for a monitor that fell
  behind (vxtun/dataplane/fanout.py).
* ``punts_lost``: frames and learn notifications the fast path's C threads could not hand to
  Python because the punt queue was full (always 0 for the pure dataplane).
* ``tap.tx_dropped``: the TAP's own counter (IFLA_STATS64), frames the kernel could not queue
  to vxtun because it did not read them fast enough (tun_net_xmit() drops them when the
  queue is full).
"""
from __future__ import annotations

from ..core import Stats


def merged(backend, port) -> dict:
    """The per-packet counters of ``port`` (rx, tx, drops by reason, fdb, proxy, misses)."""
    s = backend.stats(port)
    if len(port.underlay.by_vni) == 1:
        s = Stats.merge(s, backend.demux_stats(port.underlay))
    return s


def report(node, port) -> dict:
    """The answer to ``vxtun stats``."""
    cfg = port.config
    out = {"ifname": cfg.name, "vni": cfg.vni, **merged(node.backend, port),
           # the table sizes, without listing them (vxtun fdb show count does the same)
           "neigh": {"entries": len(port.vtep.neigh)},
           "events": {"lost": port.vtep.events_lost + node.events_lost},
           "punts_lost": node.backend.punts_lost}
    out["fdb"] = {**out["fdb"], "entries": len(port.vtep.fdb)}
    dropped = node.nl.tx_dropped(cfg.name)
    if dropped is not None:
        out["tap"] = {"tx_dropped": dropped}
        reads = getattr(node.backend, "tap_queue_reads", lambda p: None)(port)
        if reads is not None:
            out["tap"]["queue_reads"] = reads       # frames read per queue (fast dataplane)
    us = port.underlay
    if len(us.by_vni) > 1:
        sock = node.backend.demux_stats(us)
        out["socket"] = {"dstport": cfg.dstport, "vteps": len(us.by_vni), "drops": sock["drops"]}
    return out
