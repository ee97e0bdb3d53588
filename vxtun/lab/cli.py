"""``vxtun lab``: build the tutorial's scenarios on this machine and watch a packet cross them.

    vxtun lab list
    vxtun lab up N [--vteps kernel,vxtun,vxtun] [--pure] [--ipv6] [--name NAME]
    vxtun lab status [--name NAME]
    vxtun lab exec HOST CMD...  [--name NAME before HOST]
    vxtun lab down [--name NAME]
    vxtun lab walk N [--vteps ...] [--pure] [--ipv6] [--step] [--pcap DIR] [--html FILE]

``up`` leaves the lab running (vxtun VTEPs as background processes in their namespaces) until
``down``; ``walk`` builds the scenario, narrates its first exchange and removes it.  All need
root.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import state as labstate
from .scenarios import SCENARIOS, Lab, parse_vteps, scenario, status_lines

PROG = "vxtun lab"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Build the tutorial's VXLAN scenarios "
                                 "with kernel and vxtun VTEPs mixed, and walk a packet through.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the scenarios")

    def lab_opts(p: argparse.ArgumentParser) -> None:
        p.add_argument("scenario", help="1..7, or vni")
        p.add_argument("--vteps", help="one kind per host, e.g. kernel,vxtun,vxtun "
                       "(or one kind for all)")
        p.add_argument("--pure", action="store_true",
                       help="vxtun VTEPs run the pure-Python dataplane")
        p.add_argument("--ipv6", action="store_true", help="IPv6 underlay (2001:db8::/64)")
        p.add_argument("--name", default=None, help=argparse.SUPPRESS)

    lab_opts(sub.add_parser("up", help="build a scenario and leave it running"))
    for cmd in ("status", "down"):
        p = sub.add_parser(cmd)
        p.add_argument("--name", default=labstate.DEFAULT_NAME)
    p = sub.add_parser("exec", help="run a command in a host or container")
    p.add_argument("--name", default=labstate.DEFAULT_NAME)
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("walk", help="build a scenario, narrate its first exchange, remove it")
    lab_opts(p)
    p.add_argument("--step", action="store_true", help="wait for Enter between steps")
    p.add_argument("--pcap", metavar="DIR", help="write the underlay and overlay captures")
    p.add_argument("--html", metavar="FILE", help="write the walk as one HTML page")
    p.add_argument("--json", metavar="FILE", help="write the walk as JSON (walkmodel.Walk)")
    return ap


def cmd_list() -> int:
    for s in SCENARIOS.values():
        print(f"{s.key:>4}  {s.title:<28} {s.hosts} hosts, default --vteps {s.vteps}")
        print(f"      {s.what}")
    return 0


def cmd_up(a) -> int:
    sc = scenario(a.scenario)
    kinds = parse_vteps(a.vteps, sc)
    name = a.name or labstate.DEFAULT_NAME
    lab = Lab(sc, kinds, pure=a.pure, ipv6=a.ipv6, name=name)
    print(f"# vxtun lab up {sc.key}: {sc.title} ({', '.join(kinds)})", flush=True)
    try:
        lab.build()
    except BaseException:
        # Half a lab is no lab: remove what was made (the state file names it).
        if labstate.State.load(name) is not None and lab.topo is not None:
            labstate.down(name)
        raise
    failed = 0
    print("\n# check", flush=True)
    for ok, text in lab.check():
        print(f"{'ok  ' if ok else 'FAIL'} {text}", flush=True)
        failed += not ok
    nm = "" if name == labstate.DEFAULT_NAME else f" --name {name}"
    print(f"\nthe lab is up: vxtun lab status{nm}; vxtun lab exec{nm} host1 ip -br addr; "
          f"vxtun lab down{nm}")
    return 1 if failed else 0


def cmd_status(a) -> int:
    st = labstate.State.load(a.name)
    if st is None:
        left = labstate.lab_namespaces(a.name)
        if left:
            print(f"lab {a.name}: no state file, but namespaces remain: {' '.join(left)} "
                  "(vxtun lab down removes them)")
            return 1
        others = labstate.labs()
        print(f"{PROG}: no lab {a.name!r} is up"
              + (f" (labs that are: {', '.join(others)}; say --name NAME)" if others else ""),
              file=sys.stderr)
        return 1
    print("\n".join(status_lines(st)))
    return 0


def cmd_exec(a) -> int:
    st = labstate.State.load(a.name)
    if st is None:
        print(f"{PROG}: no lab {a.name!r} is up", file=sys.stderr)
        return 1
    names = {}
    for h in st.data.get("hosts", []):
        names[h["name"]] = h["ns"]
        for c in h.get("containers", []):
            names[c["name"]] = c["ns"]
    if a.host not in names:
        print(f"{PROG}: no host {a.host!r} in lab {a.name} (hosts: {', '.join(names)})",
              file=sys.stderr)
        return 1
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    if not argv:
        argv = [os.environ.get("SHELL", "/bin/sh")]
    from .netns import child_env
    return subprocess.run(["ip", "netns", "exec", names[a.host], *argv],
                          env=child_env()).returncode


def cmd_down(a) -> int:
    gone = labstate.down(a.name)
    for ns in gone:
        print(f"ip netns del {ns}")
    print(f"lab {a.name}: {'removed' if gone else 'nothing to remove'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    if a.cmd == "list":
        return cmd_list()
    if os.geteuid() != 0:
        print(f"{PROG}: needs root (network namespaces)", file=sys.stderr)
        return 2
    try:
        if a.cmd == "up":
            return cmd_up(a)
        if a.cmd == "status":
            return cmd_status(a)
        if a.cmd == "exec":
            return cmd_exec(a)
        if a.cmd == "down":
            return cmd_down(a)
        if a.html:
            try:
                from . import html  # noqa: F401
            except ImportError:
                print(f"{PROG}: --html needs vxtun.lab.html, which this vxtun does not have",
                      file=sys.stderr)
                return 2
        from .walk import main as walk_main
        return walk_main(a)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"{PROG}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def alias_main(argv: list[str] | None = None) -> int:
    """``vxtun-lab``: with no arguments (or only the old options), the point-to-point lab of
    ``python3 -m vxtun.lab``; with a subcommand, ``vxtun lab``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("--") and argv[0] not in ("--help",):
        from .p2p import main as p2p_main
        return p2p_main(argv)
    return main(argv)


if __name__ == "__main__":
    sys.exit(main())
