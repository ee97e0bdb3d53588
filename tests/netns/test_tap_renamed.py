"""A TAP renamed under a running vxtun (``ip link set vx42 name ov42``), on both dataplanes.

The kernel's vxlan device knows itself by its ifindex: renamed, it forwards on, and
``bridge fdb show dev NEW`` lists its entries.  vxtun knows its VTEPs by name (``dev NAME`` in
every command, ``@vxtun/NAME`` for the control socket), so the port owner follows the
RTM_NEWLINK that announces the new name (vxtun/io/linkwatch.py, vxtun/dataplane/node.py
``Node._renamed``): the VTEP answers to its new name, no longer to the old one, forwards
throughout, and ``vxtun down`` under the new name ends it.
"""
from __future__ import annotations

from helpers import TwoVteps, ping, poll, stop, vxtun_json

from vxtun.lab.netns import run


def names(host) -> list[str]:
    return sorted(d["ifname"] for d in vxtun_json(host, "show"))


def rename(host, old: str, new: str) -> None:
    # a TAP may be renamed only while down (dev_change_name(): EBUSY for a running device
    # without IFF_LIVE_RENAME_OK), as a vxlan device
    run(f"ip -n {host.ns} link set {old} down")
    run(f"ip -n {host.ns} link set {old} name {new}")
    run(f"ip -n {host.ns} link set {new} up")


def test_a_renamed_tap_is_the_same_vtep_under_its_new_name(topo, dataplane, tmp_path):
    log = tmp_path / "owner.log"
    t = TwoVteps(topo, dataplane, log)
    # the kernel first: a renamed vxlan device keeps its FDB and forwards on
    rename(t.b, "vxlan43", "kv43")
    assert "dst 192.0.2.1" in t.b.sh("bridge fdb show dev kv43")
    ping(t.a, "10.20.43.2")

    t.a.cmd("fdb", "add", "02:00:00:00:42:99", "dev", "vx42", "dst", "192.0.2.2", "self",
            "permanent")
    rename(t.a, "vx42", "ov42")
    assert poll(lambda: names(t.a) == ["ov42", "vx43"], timeout=10), names(t.a)
    ping(t.a, "10.20.42.2")
    # the new name works in every command, the entries are the VTEP's as before
    shown = t.a.cmd("fdb", "show", "dev", "ov42").splitlines()
    assert "02:00:00:00:42:99 dst 192.0.2.2 self permanent" in shown, shown
    shown = t.a.cmd("fdb", "show").splitlines()
    assert "02:00:00:00:42:99 dev ov42 dst 192.0.2.2 self permanent" in shown, shown
    (show,) = vxtun_json(t.a, "show", "dev", "ov42")
    assert show["ifname"] == "ov42" and show["vni"] == 42
    t.a.cmd("fdb", "del", "02:00:00:00:42:99", "dev", "ov42")
    assert "02:00:00:00:42:99" not in t.a.cmd("fdb", "show", "dev", "ov42")
    # the old name is free: nothing answers to it
    r = t.a.run_vxtun("show", "dev", "vx42")
    assert r.returncode != 0 and "vx42" in r.stderr, r.stdout + r.stderr
    said = [ln for ln in log.read_text().splitlines() if "vx42" in ln]
    assert said == ["vxtun: vx42: the TAP was renamed ov42 (ip link set name); so is the VTEP"]
    # and back again, then vxtun down under the name it has ends it
    rename(t.a, "ov42", "vx42")
    assert poll(lambda: names(t.a) == ["vx42", "vx43"], timeout=10), names(t.a)
    ping(t.a, "10.20.42.2")
    assert t.x42.poll() is None
    ping(t.a, "10.20.43.2")                 # the other VTEP is untouched
    assert stop(t.x42)[0] == 0
    t.vx42_comes_back()
