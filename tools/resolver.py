#!/usr/bin/env python3
"""A small controller: answer a VTEP's L3 and L2 misses from a table, as a program instead of a
person typing ``ip neigh replace`` and ``bridge fdb add`` (README.md's section on the ARP/ND
proxy, misses and a controller in Python).

    python3 tools/resolver.py [dev vxtun0] --table hosts.txt [--nud reachable]

The table has one overlay host per line, ``IP MAC VTEP-IP`` (``#`` starts a comment)::

    10.20.1.3   b2:ee:aa:42:8b:0b   192.0.2.2
    2001:db8:1020::3 b2:ee:aa:42:8b:0b 192.0.2.2

An L3 miss for a listed IP is answered with ``neigh replace IP lladdr MAC nud NUD``; an L2 miss
for a listed MAC with ``fdb replace MAC dst VTEP-IP`` (replace, so a repeated miss after the
entry was added elsewhere is harmless).  A miss for something not in the table is reported and
left unanswered, as a real controller would leave it to its central database.  Each answer is
printed as one JSON line on stdout (``{"answered": "l3miss", ...}``); the first line,
``{"ready": DEV}``, says the subscription is active.

It uses only the documented Python API (``vxtun.api``).  With ``--nud reachable`` (the
default) the VTEP forgets the answer after its reachable time and, once the stale
entry is collected, raises the miss again, which this program answers again.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

if __package__ in (None, ""):       # run as a script from a checkout: find the vxtun package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vxtun.api import Controller, L2Miss, L3Miss  # noqa: E402
from vxtun.errors import VxtunError  # noqa: E402
from vxtun.wire.addr import canonical_ip  # noqa: E402
from vxtun.wire.ether import mac_from_str, mac_to_str  # noqa: E402


class Table:
    """IP -> (MAC, VTEP) and MAC -> VTEP, from ``IP MAC VTEP-IP`` lines."""

    def __init__(self) -> None:
        self.by_ip: dict[str, str] = {}
        self.by_mac: dict[str, str] = {}

    @classmethod
    def parse(cls, text: str) -> Table:
        t = cls()
        for n, line in enumerate(text.splitlines(), 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 3:
                raise VxtunError(f"table line {n}: expected 'IP MAC VTEP-IP', got {line!r}")
            ip, mac, vtep = canonical_ip(words[0]), mac_to_str(mac_from_str(words[1])), \
                canonical_ip(words[2])
            t.by_ip[ip] = mac
            t.by_mac[mac] = vtep
        return t


def answer(ctl: Controller, table: Table, ev, nud: str) -> dict | None:
    """Answer one event; the record of what was done (None for events that are not misses)."""
    if isinstance(ev, L3Miss):
        mac = table.by_ip.get(ev.ip)
        if mac is None:
            return {"unknown": "l3miss", "dst": ev.ip}
        ctl.neigh_replace(ev.ip, mac, nud=nud)
        return {"answered": "l3miss", "dst": ev.ip, "lladdr": mac, "nud": nud}
    if isinstance(ev, L2Miss):
        vtep = table.by_mac.get(ev.lladdr)
        if vtep is None:
            return {"unknown": "l2miss", "lladdr": ev.lladdr}
        ctl.fdb_replace(ev.lladdr, dst=vtep)
        return {"answered": "l2miss", "lladdr": ev.lladdr, "dst": vtep}
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    dev = "vxtun0"
    if len(argv) >= 2 and argv[0] == "dev":
        dev = argv[1]
        argv = argv[2:]
    p = argparse.ArgumentParser(prog="resolver.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True, help="file of 'IP MAC VTEP-IP' lines")
    p.add_argument("--nud", default="reachable", choices=("reachable", "permanent", "noarp"),
                   help="state of the neighbour entries it adds (default reachable)")
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with open(a.table) as f:
            table = Table.parse(f.read())
        ctl = Controller(dev)
        with ctl.subscribe() as events:
            print(json.dumps({"ready": dev}), flush=True)
            for ev in events:
                try:
                    done = answer(ctl, table, ev, a.nud)
                except VxtunError as e:            # refused: report and keep listening
                    done = {"error": str(e)}
                if done is not None:
                    print(json.dumps(done), flush=True)
    except (VxtunError, OSError) as e:
        print(f"resolver: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
