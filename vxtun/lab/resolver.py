"""The lab's controller for scenario 7: answer a VTEP's L3 and L2 misses from a table.

    python3 -m vxtun.lab.resolver dev DEV --kind kernel|vxtun --table FILE [--nud reachable]

The table has one overlay host per line, ``IP MAC VTEP-IP`` (as tools/resolver.py's).  For a
vxtun VTEP the misses come through ``vxtun.api`` and are answered there (what
tools/resolver.py does); for a kernel VTEP they are the lines ``ip monitor neigh`` prints
(``miss 10.20.1.3 dev vxlan0 STALE``, ``miss lladdr b2:..:0b dev vxlan0 STALE``: the
RTM_GETNEIGH notifications of ``vxlan_ip_miss`` and ``vxlan_fdb_miss`` in
drivers/net/vxlan/vxlan_core.c) and are answered with ``ip neigh replace ... nud reachable``
and ``bridge fdb replace ...``, the tutorial's commands.  Each answer is one JSON line on
stdout; the first line, ``{"ready": DEV}``, says it listens.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


def load(path: str) -> tuple[dict[str, str], dict[str, str]]:
    by_ip, by_mac = {}, {}
    with open(path) as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if len(words) == 3:
                by_ip[words[0]] = words[1].lower()
                by_mac[words[1].lower()] = words[2]
    return by_ip, by_mac


def _say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def parse_miss(line: str, dev: str) -> tuple[str, str] | None:
    """("l3", IP) or ("l2", MAC) for an ``ip monitor neigh`` miss line of ``dev``:
    ``miss 10.20.1.3 dev vxlan0 STALE`` or ``miss dev vxlan0 lladdr b2:..:0b STALE``."""
    words = [w for w in line.split() if not w.startswith("[")]
    if not words or words[0] != "miss":
        return None
    if "dev" in words:
        i = words.index("dev")
        if words[i + 1:i + 2] != [dev]:
            return None
        del words[i:i + 2]
    if len(words) > 2 and words[1] == "lladdr":
        return "l2", words[2].lower()
    return ("l3", words[1]) if len(words) > 1 else None


def kernel(dev: str, by_ip: dict, by_mac: dict, nud: str) -> None:
    mon = subprocess.Popen(["ip", "monitor", "neigh"], stdout=subprocess.PIPE, text=True)
    _say(ready=dev)
    for line in mon.stdout:
        miss = parse_miss(line, dev)
        if miss is None:
            continue
        kind, key = miss
        if kind == "l3" and key in by_ip:
            cmd = f"ip neigh replace {key} lladdr {by_ip[key]} dev {dev} nud {nud}"
        elif kind == "l2" and key in by_mac:
            cmd = f"bridge fdb replace {key} dev {dev} dst {by_mac[key]}"
        else:
            _say(unknown=f"{kind}miss", key=key)
            continue
        r = subprocess.run(cmd.split(), capture_output=True, text=True)
        _say(answered=f"{kind}miss", key=key, command=cmd, status=r.returncode,
             error=r.stderr.strip())


def vxtun(dev: str, by_ip: dict, by_mac: dict, nud: str) -> None:
    from ..api import Controller, L2Miss, L3Miss
    ctl = Controller(dev)
    with ctl.subscribe() as events:
        _say(ready=dev)
        for ev in events:
            if isinstance(ev, L3Miss) and ev.ip in by_ip:
                ctl.neigh_replace(ev.ip, by_ip[ev.ip], nud=nud)
                _say(answered="l3miss", key=ev.ip,
                     command=f"vxtun neigh replace {ev.ip} lladdr {by_ip[ev.ip]} dev {dev} "
                             f"nud {nud}")
            elif isinstance(ev, L2Miss) and ev.lladdr in by_mac:
                ctl.fdb_replace(ev.lladdr, dst=by_mac[ev.lladdr])
                _say(answered="l2miss", key=ev.lladdr,
                     command=f"vxtun fdb replace {ev.lladdr} dst {by_mac[ev.lladdr]} dev {dev}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vxtun.lab.resolver")
    ap.add_argument("dev_word", choices=["dev"])
    ap.add_argument("dev")
    ap.add_argument("--kind", choices=["kernel", "vxtun"], required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--nud", default="reachable")
    a = ap.parse_args(argv)
    by_ip, by_mac = load(a.table)
    (kernel if a.kind == "kernel" else vxtun)(a.dev, by_ip, by_mac, a.nud)
    return 0


if __name__ == "__main__":
    sys.exit(main())
