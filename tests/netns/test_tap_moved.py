"""A TAP moved to another namespace under a running vxtun (``ip link set vx42 netns X``), on
both dataplanes.

The kernel lets a vxlan device move: it keeps working from the new namespace through the UDP
socket of the namespace it was made in (vxlan->net; Docker's overlay makes its devices so:
``ip link add vxlan1 type vxlan ...; ip link set vxlan1 netns overns``).  A TAP moves as well,
and keeps its file, which reads on: vxtun serves it where it went, as the kernel serves its
device, with the underlay of the namespace it runs in.  Only the netlink watch
(vxtun/io/linkwatch.py, wired in vxtun/dataplane/node.py) can tell a move from a deletion here
(RTM_DELLINK with IFLA_NEW_NETNSID, dev_change_net_namespace()); a VTEP must not be ended for a
name it no longer sees (tests/netns/test_hardening_tap.py is the deleted TAP, which ends it).
"""
from __future__ import annotations

import os
import signal

from helpers import TwoVteps, ping, poll, stop, vxtun_json

from vxtun.lab.netns import run

SAID = ("vxtun: vx42: the TAP was moved to another network namespace (ip link set netns); "
        "serving it there, as the kernel serves a moved vxlan device")


def said(log) -> list[str]:
    return [ln for ln in log.read_text().splitlines() if "vx42" in ln]


def served_in(ns: str, dev: str, address: str, peer: str) -> None:
    """Give ``dev`` (moved into ``ns``, which flushed its addresses) an address and ping the
    peer through it: every echo must come back."""
    run(f"ip -n {ns} link set lo up")
    run(f"ip -n {ns} addr add {address} dev {dev}")
    run(f"ip -n {ns} link set {dev} up")
    out = run(f"ip netns exec {ns} ping -n -c 3 -i 0.2 -W 2 {peer}", check=False, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_moved_tap_is_served_where_it_went_as_the_kernel_serves_a_moved_vxlan(
        topo, dataplane, tmp_path):
    log = tmp_path / "owner.log"
    t = TwoVteps(topo, dataplane, log)
    # the kernel first: h1's vxlan43 moved into a namespace of its own still carries vx43's
    # traffic, through h1's underlay
    kernel_ns = topo.namespace("k")
    t.b.sh(f"ip link set vxlan43 netns {kernel_ns}")
    served_in(kernel_ns, "vxlan43", "10.20.43.2/24", "10.20.43.1")

    elsewhere = topo.namespace("x")
    run(f"ip -n {t.a.ns} link set vx42 netns {elsewhere}")
    # vxtun: vx42 keeps running, served in the namespace it went to, through h0's underlay
    served_in(elsewhere, "vx42", "10.20.42.1/24", "10.20.42.2")
    assert t.x42.poll() is None
    assert sorted(d["ifname"] for d in vxtun_json(t.a, "show")) == ["vx42", "vx43"]
    assert poll(lambda: said(log), timeout=5) == [SAID]
    ping(t.a, "10.20.43.2")                 # the other VTEP is untouched
    # vxtun down here ends it, and its TAP goes from where it is
    rc, _, err = stop(t.x42)
    assert rc == 0, err
    assert poll(lambda: "vx42" not in run(f"ip -n {elsewhere} -br link").stdout, timeout=5)
    assert said(log) == [SAID]
    t.vx42_comes_back()


def test_a_move_whose_notice_was_lost_is_still_told_from_a_deletion(topo, dataplane, tmp_path):
    """The owner is stopped (SIGSTOP) while link notifications overflow its netlink socket
    (lo's MTU changed to and fro), and only then is vx42 moved: its RTM_DELLINK is dropped
    with the overflow (netlink_overrun()), and the owner, continued, is told ENOBUFS.  It
    looks at its TAPs itself then: vx42's file still has its device (TUNGETIFF), so it was
    moved, and is served where it went."""
    log = tmp_path / "owner.log"
    t = TwoVteps(topo, dataplane, log)
    elsewhere = topo.namespace("x")
    flood = tmp_path / "flood"
    flood.write_text("".join(f"link set dev lo mtu {65535 - i % 2}\n" for i in range(3000)))
    os.kill(t.owner, signal.SIGSTOP)
    try:
        run(f"ip -n {t.a.ns} -batch {flood}")
        run(f"ip -n {t.a.ns} link set vx42 netns {elsewhere}")
    finally:
        os.kill(t.owner, signal.SIGCONT)
    assert poll(lambda: said(log), timeout=10) == [SAID]
    served_in(elsewhere, "vx42", "10.20.42.1/24", "10.20.42.2")
    assert t.x42.poll() is None
    ping(t.a, "10.20.43.2")
    assert stop(t.x42)[0] == 0
    t.vx42_comes_back()
