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

Each test runs once per dataplane.
"""
from __future__ import annotations

import json

from helpers import Tcpdump, assert_tcp_transfer, kernel_vtep, stop
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from vxtun.wire.offload import csum_add

U1, U2 = "192.0.2.1", "192.0.2.2"
OFFLOADS_OFF = ("ethtool -K eth0 tx off tx-udp_tnl-segmentation off "
                "tx-udp_tnl-csum-segmentation off")


def hosts(topo):
    h1, h2 = (topo.host(f"h{i}", f"192.0.2.{i}/24") for i in (1, 2))
    for h in (h1, h2):          # only the stream: no IPv6 chatter in the captures
        h.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    return h1, h2


def datagrams(topo, h1, h2, port: int) -> list:
    """The outer IPv4 packets h1 sends while 2 MB cross from h1 to h2 over TCP."""
    with Tcpdump(topo, f"udp port 4789 and src host {U1}") as cap:
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=2_000_000, port=port)
    return [p[Ether].payload for p in cap.packets()]


def problems(pkts) -> list[str]:
    """What is wrong with any of the datagrams, as a receiver would check them."""
    bad = []
    for ip in pkts:
        raw = bytes(ip)
        udp = raw[20:ip.len]
        inner = udp[16:]
        if csum_add(raw[:20]) != 0xFFFF:
            bad.append(f"id {ip.id}: outer IPv4 checksum")
        if udp[6:8] != b"\0\0" and csum_add(udp, csum_add(raw[12:20], 17 + len(udp))) != 0xFFFF:
            bad.append(f"id {ip.id}: outer UDP checksum")
        if inner[12:14] != b"\x08\x00":
            continue
        if csum_add(inner[14:34]) != 0xFFFF:
            bad.append(f"id {ip.id}: inner IPv4 checksum")
        ilen = int.from_bytes(inner[16:18], "big")
        if inner[23] == 6:
            seg = inner[34:14 + ilen]
            if csum_add(seg, csum_add(inner[26:34], 6 + len(seg))) != 0xFFFF:
                bad.append(f"id {ip.id}: inner TCP checksum")
    return bad


def shape(pkts) -> dict:
    """What must be the kernel VTEP's: header fields, segment sizes, ports per flow, IDs."""
    data = [ip for ip in pkts if TCP in ip and len(ip[TCP].payload) > 0]
    flows: dict = {}
    for ip in data:
        inner = ip[TCP]
        flows.setdefault((inner.sport, inner.dport), set()).add(ip.payload.sport)
    steps = {(b.id - a.id) & 0xFFFF for a, b in zip(data, data[1:], strict=False)}
    return {"fields": {(ip.ttl, ip.tos, bool(ip.flags.DF), ip.payload.chksum == 0)
                       for ip in pkts},
            "largest": max(ip.len for ip in pkts),
            "ports_per_flow": {len(v) for v in flows.values()},
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


def test_falls_back_when_the_probe_fails(topo, dataplane):
    h1, h2 = hosts(topo)
    kernel_vtep(h2, remote=U1, local=U2, address="10.20.1.2/24")
    h1.sh("sysctl -qw net.ipv4.conf.all.rp_filter=1")
    h1.sh(OFFLOADS_OFF)
    p = h1.vxtun("--vni", "42", "--remote", U2, "--local", U1, "--dev", "eth0", "--dstport",
                 "4789", "--address", "10.20.1.1/24", env=dataplane)
    try:
        v = datagrams(topo, h1, h2, 5203)
        said = egress(h1)
        names = h1.sh("ip -o link show")
    finally:
        stop(p)
    assert said.startswith("off (") and "rp_filter" in said, said
    assert "vxtun0-gso" not in names
    assert v and not problems(v), problems(v)[:5]


def test_ipv6_underlay_keeps_todays_path(topo, dataplane):
    h1, h2 = (topo.host(f"h{i}", f"2001:db8::{i}/64") for i in (1, 2))
    kernel_vtep(h2, remote="2001:db8::1", local="2001:db8::2", address="10.20.1.2/24")
    p = h1.vxtun("--vni", "42", "--remote", "2001:db8::2", "--local", "2001:db8::1", "--dev",
                 "eth0", "--dstport", "4789", "--address", "10.20.1.1/24", env=dataplane)
    try:
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=1_000_000, port=5204)
        said = egress(h1)
    finally:
        stop(p)
    assert said.startswith("off (") and "IPv4" in said, said
