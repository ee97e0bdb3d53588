"""The ``vxtun`` command: run a VTEP and talk to running ones, in the words of ``ip``,
``bridge`` and ``ip monitor`` (USAGE below is what ``vxtun help`` prints)."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from ..core.requests import FdbShow
from ..errors import ControlError, LocalError, VxtunError
from . import output
from .requests import (STATS_WORDS, Command, parse_dev_only, parse_fdb, parse_neigh,
                       parse_trace, up_words)

PROG = "vxtun"

USAGE = """\
Usage: vxtun [ OPTIONS ] OBJECT { COMMAND | help }
where  OBJECT := { up | down | show | stats | fdb | neigh | monitor | trace | agent | lab |
                   save }
       OPTIONS := { -V[ersion] | -j[son] | -s[tatistics] }

vxtun: run a VTEP and talk to running ones, in the words of ip, bridge and ip monitor.

    vxtun up NAME id 42 remote 192.0.2.1 local 192.0.2.2 dev eth0 dstport 4789 ...
                                       (the words of ip link add NAME type vxlan ...)
    vxtun up --vni 42 --remote 192.0.2.1 --local 192.0.2.2 --dev eth0 [--dstport 4789] ...
    vxtun down [NAME]
    vxtun show [dev NAME] [-j]          vxtun stats [dev NAME] [-j]
    vxtun fdb add|append|replace|del|show|flush ...   (as bridge fdb; vxtun fdb help)
    vxtun neigh add|replace|change|del|show|flush ... (as ip neigh; vxtun neigh help)
    vxtun monitor [dev NAME] [-j]                     (as ip monitor)
    vxtun trace [dev NAME] [-j] [mac MAC] [ip IP] [drops]   (every decision, live)
    vxtun agent --vtep NAME... [--store URL]   (VTEPs kept in step through etcd; agent --help)
    vxtun agent status [-j] | agent endpoint add|del MAC [IP...]
    vxtun lab list|up|status|exec|down|walk ...  (the tutorial's scenarios; vxtun lab -h)
    vxtun save [dev NAME] > FILE                      (then: vxtun up --config FILE)"""

# As ``bridge fdb help`` and ``ip neigh help`` print them, with the words vxtun takes.
FDB_USAGE = """\
Usage: vxtun fdb { add | append | del | replace } ADDR dev DEV
              [ self ] [ local | static | dynamic ]
              [ dst IPADDR ] [ port PORT] [ vni VNI ]
              [ via DEV ] [ src_vni VNI ]
       vxtun fdb [ show [ dev DEV ] [ -s[tatistics] ] [ -j[son] ] [ count ] ]
       vxtun fdb flush [ dev DEV ] [ dynamic ]"""

NEIGH_USAGE = """\
Usage: vxtun neigh { add | del | change | replace }
                { ADDR [ lladdr LLADDR ] [ nud STATE ] }
                [ dev DEV ]

       vxtun neigh { show | flush } [ to ADDR ] [ dev DEV ] [ nud STATE ]
       vxtun neigh show [ dev DEV ] count

STATE := { noarp | permanent | reachable | stale | all (show and flush) }"""


def _err(msg: str) -> int:
    print(f"{PROG}: {msg}", file=sys.stderr)
    return 1


def up_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} up", description="Run a userspace VXLAN VTEP in "
                                "the foreground until SIGINT or SIGTERM.")
    p.add_argument("--vni", "--id", type=int, dest="vni",
                   help="VXLAN network identifier, 0..16777215")
    p.add_argument("--name", default="vxtun0", help="TAP device name (default vxtun0)")
    p.add_argument("--remote", help="unicast underlay address of the peer VTEP")
    p.add_argument("--group", help="multicast group to flood to (needs --dev)")
    p.add_argument("--local", help="underlay source address")
    p.add_argument("--dev", help="underlay device")
    p.add_argument("--dstport", type=int, default=None,
                   help="UDP destination port (default 4789, IANA; the Linux default is 8472)")
    p.add_argument("--srcport", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="UDP source ports MIN..MAX-1 (default, or MIN = MAX: the namespace's "
                   "net.ipv4.ip_local_port_range, its high end left out, as the kernel)")
    p.add_argument("--ttl", type=_int_or_word, metavar="N|auto|inherit",
                   help="outer TTL (default auto: the route's, 1 to a multicast group; "
                   "inherit: the inner packet's)")
    p.add_argument("--tos", type=_hex_or_word, default=0, metavar="TOS|inherit",
                   help="outer TOS in hexadecimal as iproute2 reads it, e.g. 0x28 or 28 "
                   "(default 0; the inner ECN bits are always carried out)")
    p.add_argument("--df", default="unset",
                   help="the outer IPv4 DF bit: unset (default), set, or inherit (the inner "
                   "packet's: set for IPv6, and for IPv4 with DF)")
    p.add_argument("--flowlabel", type=_int_or_word, default=0, metavar="LABEL",
                   help="the outer IPv6 flow label (default 0)")
    for word, on, what in (("udpcsum", True, "checksum the outer UDP header over IPv4"),
                           ("udp6zerocsumtx", False, "send a zero UDP checksum over IPv6"),
                           ("udp6zerocsumrx", False, "accept a zero UDP checksum over IPv6"),
                           ("localbypass", True, "hand frames for a local address straight to "
                            "the VTEP of that VNI and port")):
        # iproute2's [no]WORD pairs
        p.add_argument(f"--{word}", dest=word, action="store_true", default=on,
                       help=f"{what} (default: {'on' if on else 'off'}, as the kernel)")
        p.add_argument(f"--no{word}", dest=word, action="store_false", help=argparse.SUPPRESS)
    p.add_argument("--mtu", type=int, help="TAP MTU (default: underlay MTU - 50, or - 70 for IPv6)")
    p.add_argument("--address", action="append", default=[],
                   help="overlay address, e.g. 10.20.1.3/24")
    p.add_argument("--mac", help="the TAP's MAC address (default: random)")
    p.add_argument("--master", help="bridge to enslave the TAP to")
    p.add_argument("--nolearning", action="store_true", help="do not learn from received frames")
    p.add_argument("--ageing", type=float, default=300.0, help="FDB ageing time in seconds (300)")
    p.add_argument("--maxaddress", type=int, default=0, help="cap on FDB entries (0: none)")
    p.add_argument("--proxy", action="store_true", help="answer ARP/ND from the neighbour table")
    p.add_argument("--l2miss", action="store_true", help="report unknown destination MACs")
    p.add_argument("--l3miss", action="store_true", help="report unknown IPs (with --proxy)")
    p.add_argument("--reachable-time", type=float, default=30.0,
                   help="seconds a 'nud reachable' neighbour stays usable (default 30, the "
                   "kernel's base_reachable_time_ms)")
    p.add_argument("--gc-stale-time", type=float, default=60.0,
                   help="seconds after its last update a stale neighbour is removed, so that "
                   "the next request for it raises an L3 miss again (default 60, the kernel's "
                   "gc_stale_time)")
    p.add_argument("--queues", type=int, default=0,
                   help="TAP queues, each read by a thread of its own (fast dataplane; default: "
                   "one per CPU, and one for ARP)")
    p.add_argument("--config", help="start the VTEPs described in FILE (see the README)")
    return p


def _int_or_word(text: str):
    """A number, or a word such as ``auto`` / ``inherit`` (VtepConfig.validate judges it)."""
    return int(text) if text.isdigit() else text


def _hex_or_word(text: str):
    """A TOS as iproute2's rtnl_dsfield_a2n() reads it (hexadecimal, 0x optional), or a word."""
    try:
        return int(text, 16)
    except ValueError:
        return text


def config_from_args(a) -> list:
    from ..core import VtepConfig
    from ..wire.ether import mac_from_str
    from ..wire.vxlan import DEFAULT_SRCPORT, IANA_PORT
    if a.config:
        from .configfile import load
        return load(a.config)
    if a.vni is None:
        raise LocalError("--vni is required (or --config FILE)")
    cfg = VtepConfig(
        vni=a.vni, name=a.name, local=a.local, remote=a.remote, group=a.group, dev=a.dev,
        dstport=a.dstport if a.dstport is not None else IANA_PORT,
        srcport=tuple(a.srcport) if a.srcport else DEFAULT_SRCPORT, ttl=a.ttl, mtu=a.mtu,
        tos=a.tos, df=a.df, flowlabel=a.flowlabel, udpcsum=a.udpcsum,
        udp6zerocsumtx=a.udp6zerocsumtx, udp6zerocsumrx=a.udp6zerocsumrx,
        localbypass=a.localbypass, mac=mac_from_str(a.mac) if a.mac else b"",
        address=list(a.address), master=a.master,
        learning=not a.nolearning, ageing=a.ageing, maxaddress=a.maxaddress, proxy=a.proxy,
        l2miss=a.l2miss, l3miss=a.l3miss, reachable_time=a.reachable_time,
        gc_stale_time=a.gc_stale_time, queues=a.queues)
    return [cfg]


def dstport_note(a) -> str | None:
    """What ``vxtun up`` says when it chose the UDP port itself."""
    if a.config or a.dstport is not None:
        return None
    from ..wire.vxlan import IANA_PORT
    return (f"no --dstport given: using {IANA_PORT}, the IANA port "
            "(the Linux kernel's default is 8472: --dstport 8472)")


def up_options(p: argparse.ArgumentParser) -> dict[str, int]:
    """Each long option of ``vxtun up`` and how many values it takes (for ``up_words``)."""
    opts = {}
    for action in p._actions:
        n = action.nargs if isinstance(action.nargs, int) else (0 if action.nargs == 0 else 1)
        for o in action.option_strings:
            if o.startswith("--"):
                opts[o] = n
    return opts


def parse_up(argv: list[str]) -> argparse.Namespace:
    """``vxtun up``'s arguments: the long options, or a device name followed by the words of
    ``ip link add NAME type vxlan`` (turned into the same long options)."""
    p = up_parser()
    if argv and not argv[0].startswith("-"):
        argv = up_words(argv, up_options(p))
    return p.parse_args(argv)


def cmd_up(argv: list[str]) -> int:
    """Hand the VTEPs to this namespace's port owner and hold the lease in the foreground
    (see vxtun/dataplane/owner.py: VTEPs of several ``up`` share one UDP port)."""
    a = parse_up(argv)
    from ..dataplane.owner import Lease
    fdb: dict = {}
    if a.config:
        from .configfile import load_with_fdb
        defaults = vars(up_parser().parse_args([]))
        extra = sorted(f"--{k.replace('_', '-')}" for k, v in vars(a).items()
                       if k != "config" and v != defaults[k])
        if extra:
            raise LocalError(f"--config FILE describes every VTEP: put {', '.join(extra)} in "
                             "the file instead")
        configs, fdb = load_with_fdb(a.config)
    else:
        configs = config_from_args(a)
    for c in configs:
        c.validate()
    notes = [dstport_note(a)]
    for c in configs:
        lower = underlay_mtu(c.dev) if c.dev and c.mtu else None
        if lower:
            notes.append(c.fit_mtu(lower))
    for note in notes:      # said once, and only for an invocation that is otherwise valid
        if note:
            print(f"{PROG}: {note}", file=sys.stderr)
    lease = Lease.acquire(configs, fdb)
    mtus = {v["name"]: v["mtu"] for v in lease.vteps}
    for c in configs:
        peer = f"remote {c.remote}" if c.remote else (f"group {c.group}" if c.group else
                                                      "no default destination")
        print(f"{c.name}: up, vni {c.vni}, {peer}, dstport {c.dstport}, mtu {mtus[c.name]}, "
              f"dataplane {lease.result['dataplane']}", flush=True)
    return lease.wait()


def underlay_mtu(dev: str) -> int | None:
    """The MTU of device ``dev`` in this network namespace (SIOCGIFMTU on a socket, which
    belongs to the caller's namespace, unlike /sys); None if there is no such device: the
    port owner then says so."""
    import fcntl
    import socket
    import struct
    SIOCGIFMTU = 0x8921
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            ifreq = struct.pack("16si20x", dev.encode()[:15], 0)      # struct ifreq, 40 bytes
            return struct.unpack_from("16si", fcntl.ioctl(s, SIOCGIFMTU, ifreq))[1]
    except (OSError, UnicodeError):
        return None


def _targets(req: Command, all_ok: bool) -> list[str]:
    from ..io import control
    if req.dev:
        return [req.dev]
    names = control.running()
    if not names:
        raise ControlError("no vxtun VTEP is running in this network namespace")
    if len(names) > 1 and not all_ok:
        raise LocalError(f"several VTEPs run here ({', '.join(names)}): say dev NAME")
    return names


def cmd_query(req: Command, kind: str) -> int:
    from ..io import control
    results = []
    for dev in _targets(req, all_ok=True):
        results.append(control.call(dev, req.body))
    if req.json:
        print(json.dumps(results, indent=None))
    else:
        fmt = output.format_show if kind == "show" else output.format_stats
        print("\n".join(fmt(r) for r in results))
    return 0


def cmd_down(req: Command) -> int:
    from ..io import control
    for dev in _targets(req, all_ok=False):
        control.call(dev, {"cmd": "down"})
    return 0


def cmd_table(req: Command, kind: str) -> int:
    from ..io import control
    if req.request.op == "show":
        if req.request.count:
            counts = [{"ifname": dev, "count": control.call(dev, req.body)["count"]}
                      for dev in _targets(req, all_ok=True)]
            print(json.dumps(counts) if req.json else
                  "\n".join(output.format_count(c, kind) for c in counts))
            return 0
        # Printed page by page as the VTEP sends them (a large table comes in pages, see
        # vxtun/dataplane/server.py): memory stays at one page, and output starts at once.
        with_dev = req.dev is None
        sep = "["
        for dev in _targets(req, all_ok=True):
            c = control.Client(dev)
            try:
                for page in c.pages(req.body):
                    lines = []
                    for e in page:
                        e.setdefault("ifname", dev)
                        if req.json and kind == "fdb":
                            lines += [json.dumps(r) for r in output.fdb_bridge_json(
                                e, with_dev=with_dev, stats=req.stats)]
                        elif req.json:
                            lines.append(json.dumps(output.neigh_show_json(e, with_dev)))
                        elif kind == "fdb":
                            lines.append(output.format_fdb_line(e, with_dev=with_dev,
                                                                stats=req.stats))
                        else:
                            lines.append(output.format_neigh_line(e, with_dev=with_dev,
                                                                  dev=e["ifname"]))
                    if req.json and lines:
                        # one JSON array, as json.dumps(list) writes it
                        sys.stdout.write(sep + ", ".join(lines))
                        sep = ", "
                    elif lines:
                        sys.stdout.write("\n".join(lines) + "\n")
            finally:
                c.close()
        if req.json:
            print("[]" if sep == "[" else "]")
        return 0
    (dev,) = _targets(req, all_ok=False)
    control.call(dev, req.body)
    return 0


def cmd_save(req: Command) -> int:
    """``vxtun save [dev NAME]``: what the VTEPs have been told, as ``vxtun up --config``
    reads it (vxtun/cli/configfile.py ``dump``)."""
    from ..core.requests import FdbShow, NeighShow
    from ..io import control
    from .configfile import dump
    vteps = [{"show": control.call(dev, {"cmd": "show"}),
              "fdb": control.call(dev, FdbShow().to_json()),
              "neigh": control.call(dev, NeighShow(nud="all").to_json())}
             for dev in _targets(req, all_ok=True)]
    sys.stdout.write(dump(vteps))
    return 0


def _stream(req: Command, show) -> int:
    """Send ``req`` to its one VTEP and hand every line that follows the answer to
    ``show(dev, msg)`` until the VTEP goes or the user presses ^C (monitor, trace)."""
    from ..io import control
    devs = _targets(req, all_ok=True)
    if len(devs) > 1:
        raise LocalError(f"several VTEPs run here ({', '.join(devs)}): say dev NAME")
    c = control.Client(devs[0], timeout=None)
    try:
        c.call(req.body)
        while True:
            msg = c.read()
            if msg is None:
                return 0
            show(devs[0], msg)
    except KeyboardInterrupt:
        return 0
    finally:
        c.close()


def cmd_monitor(req: Command) -> int:
    from ..core.events import event_from_json

    def show(dev: str, msg: dict) -> None:
        if msg.get("lost"):
            # Like ip monitor's "No buffer space available": the VTEP dropped events
            # because this listener did not keep up; packets were not held back.
            print(f"{PROG}: {msg['lost']} events lost (the listener was too slow)",
                  file=sys.stderr, flush=True)
        if "event" not in msg:
            return
        if req.json:
            print(json.dumps(msg["event"]), flush=True)
        else:
            # As ip monitor: "dev NAME" only when no device was named.
            ev = event_from_json(msg["event"])
            print(output.format_event(ev, with_dev=req.dev is None), flush=True)
    return _stream(req, show)


def cmd_trace(req: Command) -> int:
    """``vxtun trace``: one record per frame or datagram the VTEP handles, as they come."""
    def show(dev: str, msg: dict) -> None:
        rec = msg.get("trace")
        if msg.get("lost"):
            # records the VTEP dropped because this reader did not keep up
            rec = {"type": "lost", "dev": dev, "count": msg["lost"]}
        if rec is None:
            return
        if req.json:
            print(json.dumps(rec), flush=True)
        else:
            print(output.format_trace(rec, with_dev=req.dev is None), flush=True)
    return _stream(req, show)


def main(argv: list[str] | None = None) -> int:
    try:
        status = _main(argv)
        sys.stdout.flush()          # here, where a reader that has gone can be told apart
        return status
    except BrokenPipeError:
        # Whoever read our output has gone (vxtun show | head -1): end quietly, as ip does
        # (it dies of SIGPIPE; Python ignores SIGPIPE, so the write raised instead).  What
        # is still buffered goes to /dev/null, else the flush at exit would fail again.
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass
        return 128 + signal.SIGPIPE


def _main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    js = stats = False
    while argv and argv[0] in ("-j", "-json", "--json", *STATS_WORDS):
        js = js or argv[0] in ("-j", "-json", "--json")
        stats = stats or argv[0] in STATS_WORDS
        argv.pop(0)
    if argv and argv[0] in ("-V", "-Version", "--version"):
        from .. import __version__
        print(f"{PROG} utility, {PROG}-{__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "lab":
        from ..lab.cli import main as lab_main
        return lab_main(rest)
    if rest[:1] == ["help"] and cmd in ("fdb", "neigh", "neighbour", "neighbor"):
        print(FDB_USAGE if cmd == "fdb" else NEIGH_USAGE)
        return 0
    try:
        if cmd == "up":
            return cmd_up(rest)
        if cmd == "down":
            return cmd_down(parse_dev_only(rest, "down"))
        if cmd in ("show", "stats"):
            req = parse_dev_only(rest, cmd)
            req.json = req.json or js
            return cmd_query(req, cmd)
        if cmd == "fdb":
            req = parse_fdb(rest)
            req.json = req.json or js
            req.stats = req.stats or (stats and isinstance(req.request, FdbShow))
            return cmd_table(req, "fdb")
        if cmd in ("neigh", "neighbour", "neighbor"):
            req = parse_neigh(rest)
            req.json = req.json or js
            return cmd_table(req, "neigh")
        if cmd == "save":
            return cmd_save(parse_dev_only(rest, "show"))
        if cmd == "agent":
            from ..agent.cli import main as agent_main     # the etcd/file-store control plane
            return agent_main(rest, js)
        if cmd == "monitor":
            req = parse_dev_only(rest, "monitor")
            req.json = req.json or js
            return cmd_monitor(req)
        if cmd == "trace":
            req = parse_trace(rest)
            req.json = req.json or js
            return cmd_trace(req)
        return _err(f"unknown command {cmd!r}; try '{PROG} help'")
    except VxtunError as e:
        return _err(str(e))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
