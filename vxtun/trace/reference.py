"""Trace records of the pure core's decisions, read off what the decision produced.

The ``Vtep`` is not changed for tracing: ``trace_frame`` and ``trace_datagram`` call it as the
dataplane would, and build the record from its returned actions (``Transmit``, ``Deliver``),
from the counters the call moved (the drop reason, a raised miss, a learned or moved MAC) and
from the tables it consulted, read right after, before anything else can run:

* ``Fdb.lookup`` drops an expired entry, so ``fdb.get(dst)`` afterwards is exactly the hit;
* ``NeighTable.lookup`` ages the entry it returns, so ``neigh.get(ip)`` afterwards is the
  state the proxy saw (or None: the miss).

The fast path's punted frames (proxy, L2 miss, no default) come here too, through
``vxtun/dataplane/fast.py``; what the C threads decide themselves is traced in C
(vxtun/fastpath/trace.pyx) from the same facts.
"""
from __future__ import annotations

import time

from ..core.stats import DROP_REASONS
from ..core.vtep import Deliver, Transmit, _is_ns
from ..wire.ether import ETH_HLEN, ETH_P_ARP, ETH_P_IPV6, ZERO_MAC, mac_to_str
from ..wire.vxlan import VXLAN_HLEN, decode_header
from .records import IP_HLEN, UDP_HLEN, outer_ttl, record
from .summary import HEAD


def _reason(before: list[int], after: list[int]) -> str | None:
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if b != a:
            return DROP_REASONS[i]
    return None


def _remotes(entry) -> list[str]:
    return [r.ip for r in entry.remotes] if entry is not None else []


def _asked(frame: bytes, etype: int) -> str | None:
    """The IP an ARP request or a Neighbour Solicitation asks for, as the proxy reads it."""
    from ..proxy import parse_arp_request, parse_ns
    if etype == ETH_P_ARP:
        req = parse_arp_request(frame)
        return req[2] if req is not None else None
    req = parse_ns(frame)
    return req.target if req is not None else None


def trace_frame(vtep, frame: bytes, now: float, wall: float | None = None) -> tuple[list, dict]:
    """``vtep.handle_frame(frame, now)``, and the record of what it decided."""
    st, cfg = vtep.stats, vtep.config
    drops, l2, l3 = list(st.drops), st.l2miss, st.l3miss
    actions = vtep.handle_frame(frame, now)
    when = time.time() if wall is None else wall
    reason = _reason(drops, st.drops)
    sent = [a for a in actions if type(a) is Transmit]
    kw: dict = {"reason": reason}
    etype = (frame[12] << 8) | frame[13] if len(frame) >= ETH_HLEN else 0
    # the frames Vtep.handle_frame gives to its ARP/ND proxy (arp_reduce, neigh_reduce)
    proxied = cfg.proxy and (etype == ETH_P_ARP or (etype == ETH_P_IPV6 and _is_ns(frame)))
    if proxied:
        ip = _asked(frame, etype)
        if ip is not None:
            n = vtep.neigh.get(ip)
            kw["neigh"] = ({"ip": ip, "state": n.state, "lladdr": mac_to_str(n.lladdr)}
                           if n is not None else {"ip": ip, "state": "miss"})
        if any(type(a) is Deliver for a in actions):
            action = "proxy_reply"
        else:
            action = "l3miss" if st.l3miss != l3 else "dropped"
    elif reason == "bad_frame":
        action = "dropped"
    else:
        dst = frame[0:6]
        e = vtep.fdb.get(dst)
        d = None if e is not None else vtep.fdb.get(ZERO_MAC)
        kw["fdb"] = {"mac": mac_to_str(dst), "hit": e is not None, "default": d is not None,
                     "remotes": _remotes(e if e is not None else d)}
        if sent:
            action = "sent"
            a = sent[0]
            outer = {"src": cfg.local} if cfg.local else {}
            outer.update({"dst": a.ip, "sport": a.sport, "dport": a.port,
                          "vni": int.from_bytes(a.payload[4:7], "big"),
                          "ttl": outer_ttl(cfg, a.ip), "tos": a.tos,
                          "len": len(a.payload) + UDP_HLEN + IP_HLEN[cfg.family]})
            kw["outer"] = outer
            kw["remotes"] = [t.ip for t in sent]
        else:
            action = "l2miss" if st.l2miss != l2 else "dropped"
    return actions, record(cfg.name, when, "tx", frame[:HEAD], len(frame), action, **kw)


def trace_datagram(demux, data: bytes, src: str, sport: int, now: float, tos: int = 0,
                   family: int = 4, wall: float | None = None) -> tuple[list, dict, object]:
    """``demux.handle_datagram(...)``, the record of what it decided and the VTEP that decided
    it (None: dropped before a VTEP was known; the record's ``dev`` is then empty)."""
    vni, bad = decode_header(data)
    vtep = demux.vteps.get(vni) if bad is None else None
    dst_before = list(demux.stats.drops)
    if vtep is not None:
        st = vtep.stats
        drops, learned, moved = list(st.drops), st.learned, st.moved
    actions = demux.handle_datagram(data, src, now, tos)
    when = time.time() if wall is None else wall
    outer: dict = {"src": src, "sport": sport}
    if vtep is not None:
        outer["dport"] = vtep.config.dstport
    if len(data) >= VXLAN_HLEN:
        outer["vni"] = (data[4] << 16) | (data[5] << 8) | data[6]
    outer.update({"tos": tos, "len": len(data) + UDP_HLEN + IP_HLEN[family]})
    kw: dict = {"outer": outer}
    if vtep is None:
        kw["reason"] = _reason(dst_before, demux.stats.drops)
        action, dev = "dropped", ""
    else:
        dev = vtep.config.name
        kw["reason"] = _reason(drops, vtep.stats.drops)
        mac = mac_to_str(data[VXLAN_HLEN + 6:VXLAN_HLEN + 12])
        if vtep.stats.learned != learned:
            kw["changes"] = [{"change": "learned", "mac": mac, "dst": src}]
        elif vtep.stats.moved != moved:
            kw["changes"] = [{"change": "moved", "mac": mac, "dst": src}]
        elif kw["reason"] == "static_mac_moved":
            kw["changes"] = [{"change": "refused", "mac": mac, "dst": src,
                              "why": "static entry"}]
        action = "delivered" if actions else "dropped"
    inner = data[VXLAN_HLEN:VXLAN_HLEN + HEAD]
    rec = record(dev, when, "rx", inner, max(len(data) - VXLAN_HLEN, 0), action, **kw)
    return actions, rec, vtep
