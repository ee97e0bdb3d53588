"""localbypass (the kernel's default since 6.1): two VTEPs of one namespace, each the other's
remote through the namespace's own address, kernel against vxtun.

h1 runs two kernel vxlan devices, h2 two vxtun VTEPs of one owner process, configured alike:
vxa (VNI 42) floods to 192.0.2.x VNI 43, vxb (VNI 43) floods to 192.0.2.x VNI 42, and vxa
sends MAC 02:cc:.. to VNI 99, which no VTEP serves.  A frame written on vxa and one for the
unserved VNI must show what vxlan_encap_bypass / encap_bypass_if_local show on the kernel:

* nothing on lo (no datagram at all);
* vxa counts one tx packet and vxb one rx packet, each of the whole frame;
* vxb learns the frame's source MAC against 127.0.0.1, not the address it was sent to;
* the frame for VNI 99 is a tx error on vxa (``tx_error`` in ``vxtun stats``), nothing else;
* with ``nolocalbypass``, the frame goes out as a datagram on lo again.

Each test runs once per dataplane.
"""
from __future__ import annotations

import json
import socket
import struct

from helpers import Tcpdump, inject, kernel_vxlan_nl, stop, wait_until

A, B, X = "02:aa:00:00:00:01", "02:bb:00:00:00:02", "02:cc:00:00:00:03"
LEN = 100


def _frame(dst: str, src: str = A) -> bytes:
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + b"\x08\x00" + bytes(LEN - 14))


def _host(topo, i: int):
    h = topo.host(f"h{i}", f"192.0.2.{i}/24", f"2001:db8::{i}/64")
    # nothing on the VTEPs but the frames written here: no IPv6 router or listener reports
    h.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    return h


def _kernel_nolocalbypass(h, dev: str, vni: int, local: str) -> None:
    # IFLA_VXLAN_ID, _LOCAL, _PORT and _LOCALBYPASS 0 (iproute2 6.1 has no word for it)
    kernel_vxlan_nl(h, dev, {1: struct.pack("=I", vni), 4: socket.inet_aton(local),
                             15: struct.pack("!H", 4789), 31: b"\0"})


def _kernel_counts(h) -> dict:
    out = {}
    for dev in ("vxa", "vxb"):
        s = json.loads(h.sh(f"ip -s -j link show {dev}"))[0]["stats64"]
        out[dev] = (s["tx"]["packets"], s["tx"]["bytes"], s["tx"]["errors"],
                    s["rx"]["packets"], s["rx"]["bytes"])
    return out


def _vxtun_counts(h) -> dict:
    out = {}
    for dev in ("vxa", "vxb"):
        (s,) = json.loads(h.cmd("stats", "dev", dev, "-j"))
        out[dev] = (s["tx"]["packets"], s["tx"]["bytes"], s["drops"]["tx_error"],
                    s["rx"]["packets"], s["rx"]["bytes"])
    return out


def _learned(rows: list[dict], mac: str) -> list[str]:
    return [r.get("dst") for r in rows if r.get("mac") == mac]


def _run(topo, h, counts, fdb, send) -> tuple[dict, list, int]:
    """What ``send`` changes: counters, vxb's FDB rows for A, datagrams on lo."""
    before = counts(h)
    with Tcpdump(topo, "udp", iface="lo", netns=h.ns) as cap:
        send()
        wait_until(lambda: _learned(fdb(h), A) or counts(h)["vxb"][3] > before["vxb"][3],
                   what="the frame reached vxb")
    after = counts(h)
    delta = {d: tuple(b - a for a, b in zip(before[d], after[d], strict=True)) for d in after}
    return delta, _learned(fdb(h), A), cap.count()


def test_localbypass_is_the_kernels(topo, dataplane):
    h1, h2 = _host(topo, 1), _host(topo, 2)
    k_ip, v_ip = "192.0.2.1", "192.0.2.2"

    # the kernel's
    for dev, vni, peer in (("vxa", 42, 43), ("vxb", 43, 42)):
        # localbypass is the default (iproute2 6.1 here does not know the word)
        h1.sh(f"ip link add {dev} type vxlan id {vni} dstport 4789 local {k_ip}")
        h1.sh(f"bridge fdb append 00:00:00:00:00:00 dev {dev} dst {k_ip} vni {peer}")
        h1.sh(f"ip link set {dev} up")
    h1.sh(f"bridge fdb add {X} dev vxa dst {k_ip} vni 99")

    def kernel_fdb(h):
        return json.loads(h.sh("bridge -j fdb show dev vxb"))

    def kernel_send():
        inject(h1, "vxa", _frame(B), _frame(X))

    kernel = _run(topo, h1, _kernel_counts, kernel_fdb, kernel_send)

    # vxtun's: two `vxtun up`, one owner process
    procs = []
    try:
        for dev, vni in (("vxa", 42), ("vxb", 43)):
            procs.append(h2.vxtun("--name", dev, "--vni", str(vni), "--local", v_ip,
                                  "--dstport", "4789", env=dataplane, wait_dev=dev))
        for dev, peer in (("vxa", 43), ("vxb", 42)):
            h2.cmd("fdb", "append", "00:00:00:00:00:00", "dev", dev, "dst", v_ip, "vni",
                   str(peer))
        h2.cmd("fdb", "add", X, "dev", "vxa", "dst", v_ip, "vni", "99")
        wait_until(lambda: v_ip in h2.sh("ip -o addr show"), what="h2's address")

        def vxtun_fdb(h):
            return json.loads(h.cmd("fdb", "show", "dev", "vxb", "-j"))

        def vxtun_send():
            inject(h2, "vxa", _frame(B), _frame(X))

        ours = _run(topo, h2, _vxtun_counts, vxtun_fdb, vxtun_send)
    finally:
        for p in procs:
            stop(p)

    # one frame of LEN bytes bypassed whole, one a tx error; vxb learned A at loopback
    assert kernel == ({"vxa": (1, LEN, 1, 0, 0), "vxb": (0, 0, 0, 1, LEN)}, ["127.0.0.1"], 0)
    assert ours == kernel


def test_nolocalbypass_sends_through_lo_as_the_kernel(topo, dataplane):
    h1, h2 = _host(topo, 1), _host(topo, 2)
    k_ip, v_ip = "192.0.2.1", "192.0.2.2"
    for dev, vni, peer in (("vxa", 42, 43), ("vxb", 43, 42)):
        _kernel_nolocalbypass(h1, dev, vni, k_ip)
        h1.sh(f"bridge fdb append 00:00:00:00:00:00 dev {dev} dst {k_ip} vni {peer}")
        h1.sh(f"ip link set {dev} up")

    kernel = _run(topo, h1, _kernel_counts, lambda h: json.loads(
        h.sh("bridge -j fdb show dev vxb")), lambda: inject(h1, "vxa", _frame(B)))
    procs = []
    try:
        for dev, vni in (("vxa", 42), ("vxb", 43)):
            procs.append(h2.vxtun("--name", dev, "--vni", str(vni), "--local", v_ip,
                                  "--dstport", "4789", "--nolocalbypass", env=dataplane,
                                  wait_dev=dev))
        for dev, peer in (("vxa", 43), ("vxb", 42)):
            h2.cmd("fdb", "append", "00:00:00:00:00:00", "dev", dev, "dst", v_ip, "vni",
                   str(peer))
        ours = _run(topo, h2, _vxtun_counts, lambda h: json.loads(
            h.cmd("fdb", "show", "dev", "vxb", "-j")), lambda: inject(h2, "vxa", _frame(B)))
    finally:
        for p in procs:
            stop(p)
    # one datagram on lo, learned against the namespace's address; bytes without Ethernet
    assert kernel == ({"vxa": (1, LEN - 14, 0, 0, 0), "vxb": (0, 0, 0, 1, LEN - 14)},
                      [k_ip], 1)
    assert ours == ({"vxa": (1, LEN - 14, 0, 0, 0), "vxb": (0, 0, 0, 1, LEN - 14)},
                    [v_ip], 1)
