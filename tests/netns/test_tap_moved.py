"""A TAP moved to another namespace under a running vxtun (``ip link set vx42 netns X``), on
both dataplanes.

Only the netlink watch (vxtun/io/linkwatch.py, wired in vxtun/dataplane/node.py) can see this:
the TAP keeps its file, which reads on (EAGAIN, then whatever the other namespace sends), so
no read error ever comes (tests/netns/test_hardening_tap.py is the case where one does).  The
kernel tells the old namespace RTM_DELLINK with IFLA_NEW_NETNSID (dev_change_net_namespace).

A kernel vxlan device cannot be moved (vxlan_setup() makes it netns-local): a VTEP serves the
namespace its device is in.  A moved TAP leaves vxtun's VTEP without its overlay interface, so
vxtun ends that VTEP as it ends one whose TAP was deleted: one line in the owner's log, the
``vxtun up`` that held it exits 1 saying why, the VTEP's name is free again, and closing the
TAP's file deletes the TAP in the namespace it went to (it is not persistent).  The other
VTEP of the namespace runs on.
"""
from __future__ import annotations

from helpers import TwoVteps, ping, poll, vxtun_json, wait_exit

from vxtun.lab.netns import run

WHY = "the TAP was moved to another network namespace (ip link set netns)"


def test_a_tap_moved_to_another_namespace_ends_its_vtep_and_nothing_else(topo, dataplane,
                                                                         tmp_path):
    log = tmp_path / "owner.log"
    t = TwoVteps(topo, dataplane, log)
    elsewhere = topo.namespace("x")

    run(f"ip -n {t.a.ns} link set vx42 netns {elsewhere}")
    # its up ends (the timeout only bounds a failure), non-zero, with one line saying why
    status, _, err = wait_exit(t.x42, timeout=15)
    assert status == 1 and err.splitlines() == [f"vxtun: vx42: {WHY}; the VTEP is gone"], \
        (status, err)
    assert [d["ifname"] for d in vxtun_json(t.a, "show")] == ["vx43"]
    # vxtun let go of the TAP: it is deleted where it went, not left there half-served
    assert poll(lambda: "vx42" not in run(f"ip -n {elsewhere} -br link").stdout, timeout=5), \
        run(f"ip -n {elsewhere} -br link").stdout
    # the other VTEP, from the other up, is untouched
    ping(t.a, "10.20.43.2")
    # the owner said it once
    assert [ln for ln in log.read_text().splitlines() if "vx42" in ln] == \
        [f"vxtun: vx42: {WHY}; removing the VTEP"]
    t.vx42_comes_back()


def test_a_move_whose_notice_was_lost_is_still_seen(topo, dataplane, tmp_path):
    """The owner is stopped (SIGSTOP) while link notifications overflow its netlink socket
    (lo's MTU changed to and fro), and only then is vx42 moved: its RTM_DELLINK is dropped
    with the overflow (netlink_overrun), and the owner, continued, is told ENOBUFS.  It must
    then look at its TAPs itself, and vx42, moved (its file still has the device: TUNGETIFF),
    goes as above."""
    import os
    import signal

    t = TwoVteps(topo, dataplane, tmp_path / "owner.log")
    elsewhere = topo.namespace("x")
    flood = tmp_path / "flood"
    flood.write_text("".join(f"link set dev lo mtu {65535 - i % 2}\n" for i in range(3000)))
    os.kill(t.owner, signal.SIGSTOP)
    try:
        run(f"ip -n {t.a.ns} -batch {flood}")
        run(f"ip -n {t.a.ns} link set vx42 netns {elsewhere}")
    finally:
        os.kill(t.owner, signal.SIGCONT)
    status, _, err = wait_exit(t.x42, timeout=15)
    assert status == 1 and err.splitlines() == [f"vxtun: vx42: {WHY}; the VTEP is gone"], \
        (status, err)
    assert [d["ifname"] for d in vxtun_json(t.a, "show")] == ["vx43"]
    ping(t.a, "10.20.43.2")
    t.vx42_comes_back()
