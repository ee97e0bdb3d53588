"""``vxtun agent``: run the agent, ask it for its status, publish endpoints through it.

    vxtun agent [--store URL] --vtep NAME [--vtep NAME...] [--mode preprogram|on-miss]
                [--ttl SECONDS] [--no-flood] [--cacert FILE --cert FILE --key FILE]
                [--config FILE]
    vxtun agent status [-j]
    vxtun agent endpoint add|del MAC [IP...] [dev NAME]
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time

from ..errors import LocalError, VxtunError
from .reconcile import MODES

PROG = "vxtun agent"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Keep this host's VTEPs in step with the others through a "
        "store: membership (flood lists) and endpoints (FDB and neighbour entries).")
    p.add_argument("--store", help="etcd://HOST:PORT[,HOST:PORT...] (etcds:// for TLS) or "
                   "sqlite:PATH (default: the embedded file store, "
                   "sqlite:/run/vxtun/agent-store.sqlite)")
    p.add_argument("--vtep", action="append", default=[], metavar="NAME",
                   help="a local VTEP to program: a kernel vxlan device or a vxtun VTEP")
    p.add_argument("--config", help="start the VTEPs of this TOML file (as vxtun up --config) "
                   "and program them")
    p.add_argument("--mode", choices=MODES, default="preprogram",
                   help="preprogram: install every endpoint (nolearning, proxy); on-miss: "
                   "answer the VTEPs' L2/L3 misses (default preprogram)")
    p.add_argument("--no-flood", dest="flood", action="store_false",
                   help="install no flood lists (as bridge link set ... flood off): unknown "
                   "unicast raises an L2 miss instead of being flooded, which on-miss "
                   "answers; broadcast is not carried (ARP/ND: the proxy)")
    p.add_argument("--learn", action="store_true",
                   help="publish the endpoints the local tables hold: what the VTEP's bridge "
                   "learned (with the bridge's neighbours), or the VTEP device's own MAC and "
                   "addresses")
    p.add_argument("--ttl", type=int, default=10,
                   help="lease TTL in seconds: a host that stops is gone after it (default 10)")
    p.add_argument("--prefix", default="/vxtun/", help="key prefix in the store (/vxtun/)")
    p.add_argument("--host", default="", help="this host's name in the store (hostname)")
    p.add_argument("--cacert", help="CA certificate of the etcd servers (TLS)")
    p.add_argument("--cert", help="client certificate for etcd (TLS client auth)")
    p.add_argument("--key", help="the client certificate's key")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command run")
    return p


def main(argv: list[str], js: bool = False) -> int:
    try:
        if argv and argv[0] == "status":
            return cmd_status(argv[1:], js)
        if argv and argv[0] in ("endpoint", "endpoints"):
            return cmd_endpoint(argv[1:])
        return cmd_run(argv)
    except VxtunError as e:
        print(f"vxtun: {e}", file=sys.stderr)
        return 1


def cmd_run(argv: list[str]) -> int:
    from .agent import Agent, Server
    from .store import open_store
    from .vteps import open_vtep
    a = parser().parse_args(argv)
    names = list(a.vtep)
    procs = []
    if a.config:
        names += start_config(a.config, procs)
    if not names:
        raise LocalError("name at least one --vtep (or --config FILE)")
    if a.ttl < 2:
        raise LocalError("--ttl must be at least 2 seconds")
    if (a.cert is None) != (a.key is None):
        raise LocalError("--cert and --key go together")
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="vxtun agent: %(message)s", stream=sys.stderr)
    store = open_store(a.store, a.cacert, a.cert, a.key)
    agent = Agent(store, [open_vtep(n) for n in names], a.mode, a.ttl, a.prefix, a.host,
                  a.learn, a.flood)
    server = Server(agent)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.stop())
    try:
        agent.run()
    finally:
        server.close()
        for p in procs:
            p.terminate()
        store.close()
    return 0


def start_config(path: str, procs: list) -> list[str]:
    """``vxtun up --config FILE`` in a child process; the names of its VTEPs once they run."""
    import subprocess

    from ..api import running
    from ..cli.configfile import load
    from ..lab.netns import child_env, python
    names = [c.name for c in load(path)]
    procs.append(subprocess.Popen(python("-m", "vxtun", "up", "--config", path),
                                  env=child_env()))
    deadline = time.monotonic() + 20
    while not set(names) <= set(running()):
        if procs[0].poll() is not None or time.monotonic() > deadline:
            raise LocalError(f"vxtun up --config {path} did not start its VTEPs")
        time.sleep(0.1)
    return names


def cmd_status(argv: list[str], js: bool) -> int:
    from .agent import request
    for w in argv:
        if w in ("-j", "--json", "-json"):
            js = True
        else:
            raise LocalError(f"unknown argument {w!r}: vxtun agent status [-j]")
    st = request({"cmd": "status"})
    if js:
        print(json.dumps(st, sort_keys=True))
    else:
        print(format_status(st))
    return 0


def format_status(st: dict) -> str:
    lines = [f"store {st['store']} revision {st['revision']} mode {st['mode']}",
             f"host {st['host']} lease {st['lease']} ttl {st['ttl']}"]
    for v in st["vteps"]:
        head = f"vtep {v['name']} {v['kind']}"
        if "vni" in v:
            head += f" vni {v['vni']} local {v['local']} dstport {v['port']}"
        else:
            head += " not found"
        lines.append(head)
        p = v.get("programmed")
        if p:
            at = time.strftime("%H:%M:%S", time.localtime(p["time"]))
            lines.append(f"    programmed at {at} (revision {p['revision']}): "
                         + "; ".join(p["commands"]))
    for vni, ms in st["members"].items():
        lines.append(f"vni {vni} members " + " ".join(
            f"{m['ip']}({m['host']} {m['vtep']})" for m in ms))
    for e in st["endpoints"]:
        lines.append(f"endpoint {e['mac']} {' '.join(e['ips']) or '-'} vni {e['vni']} "
                     f"vtep {e['vtep']}")
    for b in st["bad"]:
        lines.append(f"skipped: {b}")
    if st["last_error"]:
        lines.append(f"last error: {st['last_error']}")
    return "\n".join(lines)


def cmd_endpoint(argv: list[str]) -> int:
    from .agent import request
    if not argv or argv[0] not in ("add", "del"):
        raise LocalError("usage: vxtun agent endpoint add|del MAC [IP...] [dev NAME]")
    op, rest = argv[0], list(argv[1:])
    dev = None
    if "dev" in rest:
        i = rest.index("dev")
        if i + 1 >= len(rest):
            raise LocalError("dev needs a name")
        dev = rest[i + 1]
        del rest[i:i + 2]
    if not rest:
        raise LocalError(f"endpoint {op}: which MAC?")
    mac, ips = rest[0].lower(), rest[1:]
    import ipaddress

    from ..wire.ether import mac_from_str
    try:
        mac_from_str(mac)
    except (ValueError, VxtunError):
        raise LocalError(f"bad MAC {mac!r}") from None
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise LocalError(f"bad IP address {ip!r}") from None
    req = {"cmd": "endpoint", "op": op, "mac": mac, "ips": ips}
    if dev:
        req["dev"] = dev
    request(req)
    return 0

