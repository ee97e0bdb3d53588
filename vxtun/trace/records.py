"""Trace records: what one VTEP decided about one frame or datagram, as data and as text.

A record is built once, by ``record()``, from the facts of one decision, whichever dataplane
made it: the pure core's (vxtun/trace/reference.py reads them off the actions and counters the
``Vtep`` returns) or the C fast path's (vxtun/fastpath/trace.pyx copies them into its ring and
``from_ring()`` reads them back).  The JSON form is what ``vxtun trace -j`` prints, one object a
line (the keys that do not apply are left out)::

    {"type": "trace", "dev": "vxtun0", "time": 1764600000.123, "dir": "tx",
     "summary": "ARP who-has 10.20.1.3 tell 10.20.1.2",
     "inner": {"src": MAC, "dst": MAC, "ethertype": 2054, "len": 42},
     "outer": {"src": IP, "dst": IP, "sport": 51234, "dport": 4789, "vni": 42, "ttl": 1,
               "tos": 0, "len": 92},
     "lookup": "fdb miss, default 00:00:00:00:00:00 with 2 remotes",
     "fdb": {"mac": MAC, "hit": false, "default": true, "remotes": [IP, ...]},
     "neigh": {"ip": IP, "state": "reachable", "lladdr": MAC},
     "action": "sent", "remotes": [IP, ...], "reason": "no_remote",
     "changes": [{"change": "learned", "mac": MAC, "dst": IP, "why": "static entry"}],
     "segments": 1}

``outer`` is the datagram received (rx) or the first copy sent (tx); ``len`` is its IP
length.  The fast path keeps the first 8 remotes of a flood list; ``fdb`` then also has
``count``, the whole number.  Actions: ``sent``, ``delivered``, ``proxy_reply``, ``l2miss``
/ ``l3miss`` (a miss was raised; the frame was dropped, ``reason`` says as what),
``dropped``.  Records a slow reader
did not get are counted: ``{"type": "lost", "dev": ..., "count": N}``.
"""
from __future__ import annotations

import ipaddress

import time as _time
from dataclasses import dataclass

from ..core.stats import DROP_REASONS
from ..wire.addr import ip_to_bytes
from ..wire.ether import ETH_HLEN, ZERO_MAC, mac_from_str, mac_to_str
from .summary import HEAD, addresses, summarize

ACTIONS = ("sent", "delivered", "proxy_reply", "l2miss", "l3miss", "dropped")
DEFAULT_MAC = mac_to_str(ZERO_MAC)
IP_HLEN = {4: 20, 6: 40}
UDP_HLEN = 8


def outer_ttl(config, dst: str) -> int:
    """The outer TTL / hop limit a VTEP's datagram to ``dst`` leaves with: the device's
    ``ttl``, else 1 to a multicast group and the system default (64) to a unicast address,
    as vxtun/io/underlay.py ``open_tx`` sets the socket (vxlan_xmit_one: ttl 1 for multicast
    when none is set, ip4_dst_hoplimit otherwise)."""
    if config.ttl:
        return config.ttl
    return 1 if _multicast(dst) else 64


def _multicast(ip: str) -> bool:
    raw = ip_to_bytes(ip)
    return raw[0] == 0xff if len(raw) == 16 else 224 <= raw[0] <= 239


def record(dev: str, when: float, direction: str, head: bytes, length: int, action: str, *,
           outer: dict | None = None, fdb: dict | None = None, neigh: dict | None = None,
           remotes: list[str] | None = None, reason: str | None = None,
           changes: list[dict] | None = None, segments: int = 1) -> dict:
    """One record, keys in the documented order; ``head`` is the start of the inner frame
    (at most ``HEAD`` bytes are looked at), ``length`` its whole length."""
    head = bytes(head[:HEAD])
    r: dict = {"type": "trace", "dev": dev, "time": when, "dir": direction,
               "summary": summarize(head, length)}
    if len(head) >= ETH_HLEN:
        r["inner"] = {"src": mac_to_str(head[6:12]), "dst": mac_to_str(head[0:6]),
                      "ethertype": (head[12] << 8) | head[13], "len": length}
    if outer:
        r["outer"] = outer
    look = lookup_text(fdb, neigh)
    if look:
        r["lookup"] = look
    if fdb is not None:
        r["fdb"] = fdb
    if neigh is not None:
        r["neigh"] = neigh
    r["action"] = action
    if remotes:
        r["remotes"] = list(remotes)
    if reason:
        r["reason"] = reason
    if changes:
        r["changes"] = list(changes)
    r["segments"] = segments
    return r


def lost(dev: str, count: int) -> dict:
    return {"type": "lost", "dev": dev, "count": count}


def lookup_text(fdb: dict | None, neigh: dict | None) -> str:
    """``fdb b2:..:0b dst 192.0.2.3``, ``fdb miss, default 00:00:00:00:00:00 with 2
    remotes``, ``fdb miss, no default``, ``neigh 10.20.1.3 reachable``."""
    if neigh is not None:
        return f"neigh {neigh['ip']} {neigh['state']}"
    if fdb is None:
        return ""
    rem = fdb.get("remotes") or []
    n = fdb.get("count", len(rem))
    where = f"dst {rem[0]}" if n == 1 else f"with {n} remotes"
    if fdb["hit"]:
        return f"fdb {fdb['mac']} {where}"
    if fdb["default"]:
        return f"fdb miss, default {DEFAULT_MAC} {where}"
    return "fdb miss, no default"


def action_text(r: dict) -> str:
    """``sent to 192.0.2.1, 192.0.2.3 (VNI 42, sport 51234, ttl 1)``, ``delivered to
    vxtun0``, ``proxy reply``, ``l3miss raised``, ``dropped: reserved_bits``."""
    a = r["action"]
    if a == "sent":
        o = r.get("outer", {})
        return (f"sent to {', '.join(r.get('remotes', []))} (VNI {o.get('vni')}, "
                f"sport {o.get('sport')}, ttl {o.get('ttl')})")
    if a == "delivered":
        return f"delivered to {r['dev']}"
    if a == "proxy_reply":
        return "proxy reply"
    if a in ("l2miss", "l3miss"):
        return f"{a} raised, dropped: {r['reason']}" if r.get("reason") else f"{a} raised"
    return f"dropped: {r.get('reason', '')}"


def change_text(c: dict) -> str:
    """``learned b2:ee:aa:42:8b:0b dst 192.0.2.1``, ``moved ...``, ``refused ...: static
    entry``."""
    text = f"{c['change']} {c['mac']} dst {c['dst']}"
    return f"{text}: {c['why']}" if c.get("why") else text


def format_record(r: dict, with_dev: bool = True) -> str:
    """One line, in ``ip monitor``'s manner: time, direction, what, the lookup, the changes,
    the action.  ``dev NAME`` only when no device was named, as ``ip monitor`` does."""
    if r.get("type") == "lost":
        return f"lost {r['count']} trace records (the reader was too slow)"
    stamp = _time.strftime("%H:%M:%S", _time.localtime(r["time"])) + \
        f".{int(r['time'] * 1e6) % 1000000:06d}"
    parts = [stamp, r["dir"]]
    if with_dev:
        parts += ["dev", r["dev"]]
    what = r["summary"]
    if r.get("segments", 1) > 1:
        what += f" ({r['segments']} segments)"
    o = r.get("outer")
    if r["dir"] == "rx" and o:
        what += f" from {o.get('src')}:{o.get('sport')} vni {o.get('vni')}"
    fields = [what]
    if r.get("lookup"):
        fields.append(r["lookup"])
    fields += [change_text(c) for c in r.get("changes", ())]
    fields.append(action_text(r))
    return " ".join(parts) + " " + "; ".join(fields)


# vxlan_snoop's outcomes (vxtun/fdb/table.py LEARN_*) that change or refuse an entry
_LEARN_CHANGES = {2: ("learned", None), 3: ("moved", None), 4: ("refused", "static entry")}


def _proxy_neigh(raw: dict, head: bytes) -> dict | None:
    """The neighbour entry the C proxy looked up (vxtun/fastpath/neigh.pyx), as
    vxtun/trace/reference.py reports the core's: the asked IP (an ARP request's target IP, an
    NS's target), and the entry's state and lladdr, or ``miss``."""
    st = raw.get("nstate", -2)
    if st == -2:                        # N_UNASKED: not a request the proxy looked up
        return None
    from ..proxy.neigh import NUD_STATES
    ip = str(ipaddress.ip_address(head[38:42] if head[12:14] == b"\x08\x06" else head[62:78]))
    if st < 0:
        return {"ip": ip, "state": "miss"}
    return {"ip": ip, "state": NUD_STATES[st], "lladdr": mac_to_str(raw["nmac"])}


def from_ring(raw: dict, config, when: float) -> dict:
    """The record of one entry of the fast path's trace ring (vxtun/fastpath/trace.pyx
    ``tr_pop``): the same record the pure core's tracer builds for the same decision.
    ``config``: the deciding VTEP's VtepConfig (None: dropped before a VTEP was known);
    ``when``: the record's time as unix seconds."""
    head, dev = raw["head"], config.name if config is not None else ""
    kw: dict = {"segments": raw["segments"]}
    if raw["action"] == "dropped":
        kw["reason"] = DROP_REASONS[raw["reason"]]
    iph = IP_HLEN[raw["family"]]
    if raw["dir"] == "rx":
        outer: dict = {"src": raw["addr"], "sport": raw["sport"]}
        if config is not None:
            outer["dport"] = config.dstport
        if raw["hdr"]:
            outer["vni"] = raw["vni"]
        outer.update({"tos": raw["tos"], "len": raw["olen"] + UDP_HLEN + iph})
        kw["outer"] = outer
        change = _LEARN_CHANGES.get(raw["learn"])
        if change is not None and len(head) >= ETH_HLEN:
            c = {"change": change[0], "mac": mac_to_str(head[6:12]), "dst": raw["addr"]}
            if change[1]:
                c["why"] = change[1]
            kw["changes"] = [c]
        length = raw["ilen"]
    else:
        length = raw["ilen"]
        neigh = _proxy_neigh(raw, head)
        if neigh is not None:
            kw["neigh"] = neigh
        if raw["action"] == "sent":
            rem = raw["remotes"]
            kw["fdb"] = {"mac": mac_to_str(head[0:6]), "hit": raw["hit"],
                         "default": not raw["hit"], "remotes": rem}
            if raw["nrem"] > len(rem):      # the ring keeps the first TR_REMOTES
                kw["fdb"]["count"] = raw["nrem"]
            outer = {"src": config.local} if config.local else {}
            outer.update({"dst": rem[0], "sport": raw["sport"],
                          "dport": raw["dport"] or config.dstport,
                          "vni": raw["vni"] if raw["vni"] >= 0 else config.vni,
                          "ttl": outer_ttl(config, rem[0]), "tos": raw["tos"],
                          "len": raw["olen"] + UDP_HLEN + iph})
            kw["outer"] = outer
            kw["remotes"] = rem
    return record(dev, when, raw["dir"], head, length, raw["action"], **kw)


@dataclass(frozen=True)
class TraceFilter:
    """What ``vxtun trace [mac MAC] [ip IP] [drops]`` keeps, applied by the VTEP: records of
    frames from or to ``mac`` (or that changed its FDB entry), that name ``ip`` (inner or
    outer), or that were dropped."""
    mac: bytes | None = None
    ip: str | None = None
    drops: bool = False

    def keeps(self, r: dict, head: bytes) -> bool:
        if r.get("type") != "trace":
            return True
        if self.drops and r["action"] not in ("dropped", "l2miss", "l3miss"):
            return False
        if self.mac is not None:
            mac = mac_to_str(self.mac)
            inner = r.get("inner", {})
            if mac not in (inner.get("src"), inner.get("dst")) and \
                    all(c["mac"] != mac for c in r.get("changes", ())):
                return False
        if self.ip is not None:
            o = r.get("outer", {})
            if self.ip not in addresses(head) and self.ip not in (o.get("src"), o.get("dst")) \
                    and self.ip not in r.get("remotes", ()):
                return False
        return True


def filter_from_json(d: dict) -> TraceFilter:
    return TraceFilter(mac_from_str(d["mac"]) if d.get("mac") else None, d.get("ip"),
                       bool(d.get("drops")))
