"""Text and JSON forms of what vxtun shows, modelled on iproute2's output."""
from __future__ import annotations

from ..core.events import FdbChange, L2Miss, L3Miss, NeighChange
from ..trace.records import format_record


def format_trace(record: dict, with_dev: bool = True) -> str:
    """A ``vxtun trace`` record as one line (vxtun/trace/records.py ``format_record``):
    ``12:00:01.000001 tx ARP who-has 10.20.1.3 tell 10.20.1.2; fdb miss, default
    00:00:00:00:00:00 with 2 remotes; sent to 192.0.2.1, 192.0.2.3 (VNI 42, sport 51234,
    ttl 1)``."""
    return format_record(record, with_dev)


def fdb_bridge_json(entry: dict, with_dev: bool = True, stats: bool = False) -> list[dict]:
    """``bridge -j fdb show``'s rows for one entry: one object per destination, keys in
    iproute2's order (``mac``, ``ifname``, ``dst``, ``port``, ``vni``, ``viaIf``, ``used``,
    ``updated``, ``flags``, ``state``); ``ifname`` is left out when the listing was asked
    with ``dev NAME``, the timers unless asked with ``-s`` (``bridge -s -j fdb show``)."""
    rows = []
    for r in entry.get("remotes") or [{}]:
        row: dict = {"mac": entry["mac"]}
        if with_dev:
            row["ifname"] = entry["ifname"]
        if "dst" in r:
            row["dst"] = r["dst"]
        if r.get("port"):
            row["port"] = r["port"]
        if r.get("vni") is not None:
            row["vni"] = r["vni"]
        if r.get("via"):
            row["viaIf"] = r["via"]
        if stats and "used" in entry:
            row["used"] = entry["used"]
            row["updated"] = entry["updated"]
        row["flags"] = list(entry.get("flags", []))
        row["state"] = entry.get("state", "")
        rows.append(row)
    return rows


def format_fdb_line(entry: dict, with_dev: bool = True, stats: bool = False) -> str:
    """``bridge fdb show`` prints one line per destination of an entry; with ``stats``
    (``bridge -s fdb show``) the seconds since it was used and updated: ``used 3/10``."""
    lines = []
    for r in entry.get("remotes") or [{}]:
        parts = [entry["mac"]]
        if with_dev:
            parts += ["dev", entry["ifname"]]
        if "dst" in r:
            parts += ["dst", r["dst"]]
        if r.get("port"):
            parts += ["port", str(r["port"])]
        if r.get("vni") is not None:
            parts += ["vni", str(r["vni"])]
        if r.get("via"):
            parts += ["via", r["via"]]
        if stats and "used" in entry:
            parts += ["used", f"{entry['used']}/{entry['updated']}"]
        parts += entry.get("flags", [])
        if entry.get("state"):
            parts.append(entry["state"])
        lines.append(" ".join(parts))
    return "\n".join(lines)


def format_neigh_line(entry: dict, with_dev: bool = True, dev: str = "") -> str:
    """``ip neigh show`` prints ``10.20.1.3 [dev vxlan0] lladdr b2:ee:aa:42:8b:0b REACHABLE``
    (``dev`` only when the listing was not asked for one device)."""
    parts = [entry["dst"]]
    if with_dev:
        parts += ["dev", entry.get("dev") or entry.get("ifname") or dev]
    if entry.get("lladdr"):
        parts += ["lladdr", entry["lladdr"]]
    state = entry.get("state") or []
    parts += [state.upper()] if isinstance(state, str) else list(state)
    return " ".join(parts)


def neigh_show_json(entry: dict, with_dev: bool = True, dev: str = "") -> dict:
    """``ip -j neigh show``'s object for one entry: ``dst``, ``dev`` (only without ``dev
    NAME``), ``lladdr``, ``state`` (a list), in that order."""
    row: dict = {"dst": entry["dst"]}
    if with_dev:
        row["dev"] = entry.get("dev") or entry.get("ifname") or dev
    if entry.get("lladdr"):
        row["lladdr"] = entry["lladdr"]
    state = entry.get("state") or []
    row["state"] = [state.upper()] if isinstance(state, str) else list(state)
    return row


def format_event(ev, with_dev: bool = True) -> str:
    """An event as ``ip monitor`` prints it: ``miss 10.20.1.3 STALE``, ``miss lladdr MAC
    STALE``, ``10.20.1.3 lladdr MAC REACHABLE``, ``Deleted 10.20.1.3 FAILED``, and an FDB
    change as ``bridge monitor fdb`` does.  ``with_dev=False`` leaves ``dev NAME`` out, as
    ``ip monitor ... dev NAME`` does; ``bridge monitor fdb`` has no device filter, so its
    lines always name the device."""
    deleted = "Deleted " if getattr(ev, "action", "") == "del" else ""
    dev = f"dev {ev.dev}" if with_dev else ""
    if isinstance(ev, L2Miss):
        # vxlan_fdb_info() leaves the all-zeros MAC out of a miss: "miss STALE".
        lladdr = f"lladdr {ev.lladdr}" if any(ev.mac) else ""
        return " ".join(w for w in ("miss", dev, lladdr, "STALE") if w)
    if isinstance(ev, L3Miss):
        return " ".join(w for w in ("miss", ev.ip, dev, "STALE") if w)
    if isinstance(ev, NeighChange):
        return deleted + format_neigh_line(ev.entry, with_dev=with_dev, dev=ev.dev)
    if isinstance(ev, FdbChange):
        return "\n".join(deleted + line
                         for line in format_fdb_line(ev.entry, with_dev=True).split("\n"))
    raise TypeError(f"not an event: {ev!r}")


def format_show(d: dict) -> str:
    """Like ``ip -d link show`` for a vxlan device."""
    lines = [f"{d['ifname']}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu {d['mtu']} state UP "
             f"dataplane {d['dataplane']}",
             f"    link/ether {d['address']} brd ff:ff:ff:ff:ff:ff"]
    v = [f"vxlan id {d['vni']}"]
    if d.get("remote"):
        v.append(f"remote {d['remote']}")
    if d.get("group"):
        v.append(f"group {d['group']}")
    if d.get("local"):
        v.append(f"local {d['local']}")
    if d.get("dev"):
        v.append(f"dev {d['dev']}")
    lo, hi = d["srcport"]
    v.append(f"srcport {lo} {hi} dstport {d['dstport']}")
    v.append(f"ttl {d['ttl'] if d.get('ttl') else 'auto'}")
    # vxlan_print_opt(): tos, df and flowlabel after ttl, when not the defaults
    tos = d.get("tos") or 0
    if tos:
        v.append("tos inherit" if tos == "inherit" else f"tos {tos:#x}")
    if d.get("df", "unset") != "unset":
        v.append(f"df {d['df']}")
    if d.get("flowlabel"):
        fl = d["flowlabel"]
        v.append("flowlabel inherit" if fl == "inherit" else f"flowlabel {fl:#x}")
    v.append(f"ageing {d['ageing']:g}")
    if not d.get("learning", True):
        v.append("nolearning")
    if d.get("maxaddress"):
        v.append(f"maxaddress {d['maxaddress']}")
    for flag in ("proxy", "l2miss", "l3miss"):
        if d.get(flag):
            v.append(flag)
    # iproute2 names the checksum settings either way, and localbypass only when off
    for flag, default in (("udpcsum", True), ("udp6zerocsumtx", False),
                          ("udp6zerocsumrx", False)):
        v.append(("" if d.get(flag, default) else "no") + flag)
    if not d.get("localbypass", True):
        v.append("nolocalbypass")
    lines.append("    " + " ".join(v))
    if d.get("master"):
        lines.append(f"    master {d['master']}")
    if d.get("addresses"):
        lines.append("    inet " + " ".join(d["addresses"]))
    lines.append(f"    offload {' '.join(d.get('features', [])) or 'none'}")
    if d.get("egress"):
        lines.append(f"    udp tunnel gso egress {d['egress']}")
    return "\n".join(lines)


def format_stats(d: dict) -> str:
    from ..core.stats import COUNTS       # what the numbers count, as a kernel VTEP's
    lines = [f"{d['ifname']}: vni {d['vni']}",
             f"    RX (underlay -> {d['ifname']}): {d['rx']['packets']} packets "
             f"{d['rx']['bytes']} bytes  ({COUNTS['rx']})",
             f"    TX ({d['ifname']} -> underlay): {d['tx']['packets']} packets "
             f"{d['tx']['bytes']} bytes  ({COUNTS['tx']})"]
    drops = {k: v for k, v in d["drops"].items() if v}
    total = sum(d["drops"].values())
    lines.append(f"    dropped {total}" + ("".join(f"\n        {k} {v}" for k, v in drops.items())))
    size = f"entries {d['fdb']['entries']} " if "entries" in d["fdb"] else ""
    lines.append(f"    fdb {size}learned {d['fdb']['learned']} moved {d['fdb']['moved']}  "
                 f"proxy replies {d['proxy_replies']}  l2miss {d['l2miss']}  l3miss {d['l3miss']}")
    if "neigh" in d:
        lines[-1] += f"  neighbours {d['neigh']['entries']}"
    if d.get("events"):
        # Events dropped for listeners that did not keep up (vxtun monitor, vxtun.api).
        lines[-1] += f"  events lost {d['events']['lost']}"
    if "punts_lost" in d or "tap" in d:
        # Frames lost before vxtun's counters could see them: the fast path's queue to Python
        # was full (punts), or the kernel could not queue them to the TAP (tun_net_xmit()).
        parts = []
        if "punts_lost" in d:
            parts.append(f"punts lost {d['punts_lost']}")
        if "tap" in d:
            # the TAP's tx_dropped, worded so as not to read as vxtun's own "dropped N"
            parts.append(f"tap queue drops {d['tap']['tx_dropped']}")
            if d["tap"].get("queue_reads"):
                parts.append("tap queue reads " + " ".join(map(str, d["tap"]["queue_reads"])))
        lines.append("    " + "  ".join(parts))
    if d.get("socket"):
        sk = d["socket"]
        sdrops = {k: v for k, v in sk["drops"].items() if v}
        lines.append(f"    socket (UDP port {sk['dstport']}, shared by {sk['vteps']} VTEPs): "
                     f"dropped {sum(sk['drops'].values())}"
                     + "".join(f"\n        {k} {v}" for k, v in sdrops.items()))
    return "\n".join(lines)


def format_count(d: dict, kind: str) -> str:
    """``vxtun fdb show count`` / ``vxtun neigh show count``: the size of one VTEP's table."""
    what = "fdb entries" if kind == "fdb" else "neighbours"
    return f"{d['ifname']}: {d['count']} {what}"
