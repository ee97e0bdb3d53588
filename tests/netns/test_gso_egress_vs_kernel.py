"""UDP-tunnel GSO egress (vxtun/io/gso.py): TCP super-frames leave as the kernel's own would.

h1 sends a TCP stream to a kernel VTEP on h2, first through a kernel VTEP of its own, then
through vxtun configured the same way; tcpdump on the underlay bridge records what h1 sends.
h1's eth0 has checksum and tunnel segmentation offloads off (ethtool), so that the kernel
cuts and checksums every GSO packet in software as a NIC without them would, and the capture
holds the datagrams a real wire would carry.  vxtun must have used its egress TAP (``vxtun
show`` counts the super-frames it wrote), and its datagrams must be the kernel VTEP's:
every outer and inner checksum right, the same outer TTL, TOS and DF, full-sized segments of
the same length, one source port per flow, consecutive outer IDs within a super-frame; the
stream arrives intact (sha256).  When the probe fails (here: ``all.rp_filter`` on, which
fib_validate_source() would hold against a packet from our own address) vxtun says so and
sends as before.

The same over an IPv6 underlay (2001:db8::/64): the egress writes an IPv6 outer header
(VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6) and the kernel forwards it by the egress device's own
``force_forwarding``; the datagrams must carry the kernel VTEP's hop limit, traffic class
and flow label, a UDP checksum that verifies (IPv6 requires one), and the same segment
sizes.  ``udp6zerocsumtx`` keeps today's path (a probe that says no), and says so.  A write
of the namespace's ``all.forwarding`` resets every device's own switch (the kernel's
inet_forward_change() and addrconf_forward_change()); the egress then goes away within a
tick and the stream goes on by today's path.

Each test runs once per dataplane.
"""
from __future__ import annotations

import json
import time

import pytest
from helpers import Tcpdump, assert_tcp_transfer, kernel_vtep, stop
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from vxtun.wire.offload import csum_add

U1, U2 = "192.0.2.1", "192.0.2.2"
V1, V2 = "2001:db8::1", "2001:db8::2"
OFFLOADS_OFF = ("ethtool -K eth0 tx off tx-udp_tnl-segmentation off "
                "tx-udp_tnl-csum-segmentation off")


def hosts(topo):
    h1, h2 = (topo.host(f"h{i}", f"192.0.2.{i}/24") for i in (1, 2))
    for h in (h1, h2):          # only the stream: no IPv6 chatter in the captures
        h.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    return h1, h2


def datagrams(topo, h1, h2, port: int, src: str = U1) -> list:
    """The outer IP packets h1 (``src``) sends while 2 MB cross from h1 to h2 over TCP."""
    with Tcpdump(topo, f"udp port 4789 and src host {src}") as cap:
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=2_000_000, port=port)
    return [p[Ether].payload for p in cap.packets()]


def problems(pkts, zero6: bool = False) -> list[str]:
    """What is wrong with any of the datagrams, as a receiver would check them (``zero6``:
    as one with udp6zerocsumrx, which takes a zero IPv6 UDP checksum)."""
    bad = []
    for n, ip in enumerate(pkts):
        raw = bytes(ip)
        if ip.version == 6:
            # RFC 8200 section 8.1: the checksum is not optional, over the pseudo-header
            udp = raw[40:40 + ip.plen]
            if (udp[6:8] != b"\0\0" or not zero6) \
                    and csum_add(udp, csum_add(raw[8:40], 17 + len(udp))) != 0xFFFF:
                bad.append(f"packet {n}: outer UDP checksum")
            bad += _inner_problems(f"packet {n}", udp[16:])
            continue
        udp = raw[20:ip.len]
        if csum_add(raw[:20]) != 0xFFFF:
            bad.append(f"id {ip.id}: outer IPv4 checksum")
        if udp[6:8] != b"\0\0" and csum_add(udp, csum_add(raw[12:20], 17 + len(udp))) != 0xFFFF:
            bad.append(f"id {ip.id}: outer UDP checksum")
        bad += _inner_problems(f"id {ip.id}", udp[16:])
    return bad


def _inner_problems(which: str, inner: bytes) -> list[str]:
    bad = []
    if inner[12:14] != b"\x08\x00":
        return bad
    if csum_add(inner[14:34]) != 0xFFFF:
        bad.append(f"{which}: inner IPv4 checksum")
    ilen = int.from_bytes(inner[16:18], "big")
    if inner[23] == 6:
        seg = inner[34:14 + ilen]
        if csum_add(seg, csum_add(inner[26:34], 6 + len(seg))) != 0xFFFF:
            bad.append(f"{which}: inner TCP checksum")
    return bad


def shape(pkts) -> dict:
    """What must be the kernel VTEP's: header fields, segment sizes, ports per flow, IDs
    (IPv4); hop limit, traffic class, flow label, segment sizes, ports per flow (IPv6)."""
    data = [ip for ip in pkts if TCP in ip and len(ip[TCP].payload) > 0]
    flows: dict = {}
    for ip in data:
        inner = ip[TCP]
        flows.setdefault((inner.sport, inner.dport), set()).add(ip.payload.sport)
    ports = {len(v) for v in flows.values()}
    if pkts and pkts[0].version == 6:
        return {"fields": {(ip.hlim, ip.tc, ip.fl, ip.payload.chksum == 0) for ip in pkts},
                "largest": max(ip.plen for ip in pkts), "ports_per_flow": ports,
                "segmented": all(40 + ip.plen <= 1500 for ip in pkts)}
    steps = {(b.id - a.id) & 0xFFFF for a, b in zip(data, data[1:], strict=False)}
    return {"fields": {(ip.ttl, ip.tos, bool(ip.flags.DF), ip.payload.chksum == 0)
                       for ip in pkts},
            "largest": max(ip.len for ip in pkts),
            "ports_per_flow": ports,
            "consecutive_ids": 1 in steps,
            "segmented": all(ip.len <= 1500 for ip in pkts)}


def egress(h1) -> str:
    return json.loads(h1.cmd("show", "dev", "vxtun0", "-j"))[0].get("egress") or ""


def test_tcp_super_frames_leave_as_the_kernels_datagrams(topo, dataplane):
    h1, h2 = hosts(topo)
    kernel_vtep(h2, remote=U1, local=U2, address="10.20.1.2/24")
    h1.sh(OFFLOADS_OFF)
    kernel_vtep(h1, remote=U2, local=U1, address="10.20.1.1/24")
    k = datagrams(topo, h1, h2, 5201)
    h1.sh("ip link del vxlan0")
    h2.sh("ip neigh flush dev vxlan0")
    p = h1.vxtun("--vni", "42", "--remote", U2, "--local", U1, "--dev", "eth0", "--dstport",
                 "4789", "--address", "10.20.1.1/24", env=dataplane)
    try:
        v = datagrams(topo, h1, h2, 5202)
        said = egress(h1)
    finally:
        stop(p)
    assert said.startswith("vxtun0-gso super-frames") and " super-frames 0 " not in said, said
    assert not problems(k), problems(k)[:5]
    assert not problems(v), problems(v)[:5]
    assert shape(k)["segmented"] and shape(v) == shape(k), (shape(k), shape(v))


# Why the probe says no: (h1's underlay address, h2's, h2's kernel VTEP options, what h1
# does first, vxtun's options, what ``vxtun show`` must name, zero UDP checksums expected)
FALLBACKS = {
    # fib_validate_source() would hold all.rp_filter against a packet from our own address
    "ipv4-rp_filter": (U1, U2, "", "sysctl -qw net.ipv4.conf.all.rp_filter=1", (),
                       "rp_filter", False),
    # IPv6 requires the UDP checksum: a zero one stays on today's path
    "ipv6-udp6zerocsumtx": (V1, V2, "udp6zerocsumrx", "true", ("--udp6zerocsumtx",),
                            "udp6zerocsumtx", True),
}


@pytest.mark.parametrize("case", sorted(FALLBACKS))
def test_falls_back_when_the_probe_fails(topo, dataplane, case):
    local, remote, kextra, first, args, why, zero = FALLBACKS[case]
    h1, h2 = hosts6(topo) if ":" in local else hosts(topo)
    kernel_vtep(h2, remote=local, local=remote, address="10.20.1.2/24", extra=kextra)
    h1.sh(first)
    h1.sh(OFFLOADS_OFF)
    p = h1.vxtun("--vni", "42", "--remote", remote, "--local", local, "--dev", "eth0",
                 "--dstport", "4789", *args, "--address", "10.20.1.1/24", env=dataplane)
    try:
        v = datagrams(topo, h1, h2, 5203, src=local)
        said = egress(h1)
        names = h1.sh("ip -o link show")
    finally:
        stop(p)
    assert said.startswith("off (") and why in said, said
    assert "vxtun0-gso" not in names
    assert v and not problems(v, zero6=zero), problems(v, zero6=zero)[:5]
    assert all((ip.payload.chksum == 0) == zero for ip in v if ip.version == 6)


def hosts6(topo):
    return tuple(topo.host(f"h{i}", f"2001:db8::{i}/64") for i in (1, 2))


def kernel_then_vxtun6(topo, dataplane, kernel_extra: str, vxtun_extra: tuple, port: int):
    """2 MB from h1 to a kernel VTEP on h2 over an IPv6 underlay, first through a kernel VTEP
    on h1 (with ``kernel_extra``), then through vxtun (with ``vxtun_extra``): the kernel's
    datagrams, vxtun's, what ``vxtun show`` said of its egress, and h1's
    [all.forwarding, <egress>.force_forwarding] while vxtun ran."""
    h1, h2 = hosts6(topo)
    kernel_vtep(h2, remote=V1, local=V2, address="10.20.1.2/24")
    h1.sh(OFFLOADS_OFF)
    kernel_vtep(h1, remote=V2, local=V1, address="10.20.1.1/24", extra=kernel_extra)
    k = datagrams(topo, h1, h2, port, src=V1)
    h1.sh("ip link del vxlan0")
    h2.sh("ip neigh flush dev vxlan0")
    p = h1.vxtun("--vni", "42", "--remote", V2, "--local", V1, "--dev", "eth0", "--dstport",
                 "4789", *vxtun_extra, "--address", "10.20.1.1/24", env=dataplane)
    try:
        v = datagrams(topo, h1, h2, port + 1, src=V1)
        said = egress(h1)
        forwarding = h1.sh("sysctl -n net.ipv6.conf.all.forwarding "
                           "net.ipv6.conf.vxtun0-gso.force_forwarding").split()
    finally:
        stop(p)
    return k, v, said, forwarding


def test_ipv6_super_frames_leave_as_the_kernels_datagrams(topo, dataplane):
    k, v, said, forwarding = kernel_then_vxtun6(topo, dataplane, "tos 0x28", ("--tos", "0x28"),
                                                5205)
    assert said.startswith("vxtun0-gso super-frames") and " super-frames 0 " not in said, said
    assert forwarding == ["0", "1"], forwarding     # the egress device's own switch only
    assert not problems(k), problems(k)[:5]
    assert not problems(v), problems(v)[:5]
    assert shape(k)["segmented"] and shape(v) == shape(k), (shape(k), shape(v))


def test_ipv6_fixed_flowlabel_and_hop_limit_as_the_kernel(topo, dataplane):
    k, v, said, _ = kernel_then_vxtun6(topo, dataplane, "flowlabel 0x5a5a5 ttl 9",
                                       ("--flowlabel", "370085", "--ttl", "9"), 5207)
    assert said.startswith("vxtun0-gso super-frames") and " super-frames 0 " not in said, said
    assert not problems(v), problems(v)[:5]
    assert shape(v) == shape(k), (shape(k), shape(v))
    assert shape(v)["fields"] == {(9, 0, 0x5a5a5, False)}, shape(v)


# A write of all.forwarding that reaches the egress's own switch: IPv6 clears every
# force_forwarding on a 0 (already 0, written again); IPv4 sets every device's forwarding on
# a change (inet_forward_change()), hence 1 then 0.
RESETS = {
    "ipv6": (V1, V2, "sysctl -qw net.ipv6.conf.all.forwarding=0",
             "net.ipv6.conf.vxtun0-gso.force_forwarding was reset"),
    "ipv4": (U1, U2, "sysctl -qw net.ipv4.conf.all.forwarding=1 net.ipv4.conf.all.forwarding=0",
             "net.ipv4.conf.vxtun0-gso.forwarding was reset"),
}


@pytest.mark.parametrize("family", sorted(RESETS))
def test_egress_goes_when_all_forwarding_resets_its_switch(topo, dataplane, family):
    local, remote, reset, why = RESETS[family]
    h1, h2 = hosts6(topo) if family == "ipv6" else hosts(topo)
    kernel_vtep(h2, remote=local, local=remote, address="10.20.1.2/24")
    p = h1.vxtun("--vni", "42", "--remote", remote, "--local", local, "--dev", "eth0",
                 "--dstport", "4789", "--address", "10.20.1.1/24", env=dataplane)
    try:
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=1_000_000, port=5209)
        before = egress(h1)
        h1.sh(reset)            # without the check, what the egress forwards is dropped now
        deadline = time.monotonic() + 5
        while egress(h1).startswith("vxtun0-gso") and time.monotonic() < deadline:
            time.sleep(0.2)
        after = egress(h1)
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=2_000_000, port=5210)
        names = h1.sh("ip -o link show")
    finally:
        stop(p)
    assert before.startswith("vxtun0-gso super-frames") and " super-frames 0 " not in before
    assert after.startswith("off (") and why in after, after
    assert "vxtun0-gso" not in names
