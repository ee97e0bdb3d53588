"""The outer headers on the wire, kernel VTEP against vxtun configured the same way.

For each setting, h1 runs the kernel's vxlan0 and then vxtun in its place, with the words of
``ip link add ... type vxlan`` and their ``vxtun up --WORD`` twins, while tcpdump on the
underlay bridge records what h1 sends; h2 is a kernel VTEP that answers.

* The outer UDP checksum: non-zero by default over IPv4 and IPv6 (the kernel's ``udpcsum``),
  zero with ``noudpcsum`` / ``udp6zerocsumtx``; vxtun's non-zero ones are also correct (the
  kernel's, on veth, are left partial for the NIC that is not there: not comparable).
* A zero IPv6 checksum is received only with ``udp6zerocsumrx``.
* The source ports come from the namespace's ip_local_port_range, its high end left out.
* ``ttl N|auto|inherit``, ``tos N|inherit`` and ``df set|unset|inherit`` give the outer IPv4
  header the kernel gives it.
* ``mtu`` above what ``dev`` carries is clamped, as the kernel clamps it at creation.

Each test runs once per dataplane.
"""
from __future__ import annotations

import json
import socket
import struct

import pytest
from helpers import (
    Tcpdump,
    assert_tcp_transfer,
    inject,
    kernel_vtep,
    kernel_vxlan_nl,
    mtu_of,
    ping,
    send_udp,
    stop,
)
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from vxtun.wire.vxlan import udp_checksum

UNDERLAY = {"ipv4": ("192.0.2.1", "192.0.2.2"), "ipv6": ("2001:db8::1", "2001:db8::2")}


def hosts(topo):
    return [topo.host(f"h{i}", f"192.0.2.{i}/24", f"2001:db8::{i}/64") for i in (1, 2)]


def outer(pkt):
    """The outer IP header of a captured datagram (not pkt[IP]: scapy decodes inner ones)."""
    return pkt[Ether].payload


def inner(pkt) -> Ether:
    return Ether(bytes(outer(pkt).payload.payload)[8:])


def checksum_ok(pkt) -> bool:
    ip = outer(pkt)
    fam = socket.AF_INET6 if isinstance(ip, IPv6) else socket.AF_INET
    udp = bytearray(bytes(ip.payload))
    got = (udp[6] << 8) | udp[7]
    udp[6:8] = b"\0\0"
    return got == udp_checksum(socket.inet_pton(fam, ip.src), socket.inet_pton(fam, ip.dst),
                               bytes(udp))


def sent_by(topo, h, src: str, run, dev: str) -> list:
    """The VXLAN datagrams from ``src`` while ``run(dev)`` runs."""
    with Tcpdump(topo, f"udp port 4789 and src host {src}") as cap:
        run(dev)
    pkts = cap.packets()
    assert pkts, f"{dev} sent nothing"
    return pkts


def kernel_then_vxtun(topo, h1, u1, u2, words: str, options: list[str], dataplane, run,
                      address="10.20.1.1/24"):
    """Captures of what h1 sends with the kernel's vxlan0 ``words``, then with vxtun
    ``options``."""
    kernel_vtep(h1, remote=u2, local=u1, address=address, extra=words)
    k = sent_by(topo, h1, u1, run, "vxlan0")
    h1.sh("ip link del vxlan0")
    p = h1.vxtun("--vni", "42", "--remote", u2, "--local", u1, "--dev", "eth0", "--dstport",
                 "4789", "--address", address, *options, env=dataplane)
    try:
        v = sent_by(topo, h1, u1, run, "vxtun0")
    finally:
        stop(p)
    return k, v


# --- the UDP checksum -------------------------------------------------------------------------

@pytest.mark.parametrize("family, words, options, zero", [
    ("ipv4", "", [], False),
    ("ipv4", "noudpcsum", ["--noudpcsum"], True),
    ("ipv6", "", [], False),
    ("ipv6", "udp6zerocsumtx", ["--udp6zerocsumtx"], True),
])
def test_outer_udp_checksum_is_the_kernels(topo, dataplane, family, words, options, zero):
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY[family]
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24",
                extra="udp6zerocsumrx" if zero and family == "ipv6" else "")

    def run(dev):
        ping(h1, "10.20.1.2", count=2)
        ping(h1, "10.20.1.2", count=2, size=1371)          # odd lengths too
        # TSO segments (and, on the fast path, UDP GSO trains): h2 checks every checksum
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=300_000, port=5201 + len(dev))

    k, v = kernel_then_vxtun(topo, h1, u1, u2, words, options, dataplane, run)
    for who, pkts in (("kernel", k), ("vxtun", v)):
        zeros = {outer(p).payload.chksum == 0 for p in pkts}
        assert zeros == {zero}, f"{who} with {words or 'defaults'}: zero checksums {zeros}"
    if not zero:
        # a GSO train is captured whole, its checksum left partial for the segmentation
        assert all(checksum_ok(p) for p in v if len(outer(p)) <= 1500)


@pytest.mark.parametrize("rx", [False, True])
def test_zero_ipv6_checksum_is_received_only_with_udp6zerocsumrx(topo, dataplane, rx):
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv6"]
    kernel_vtep(h1, remote=u2, local=u1, address="10.20.1.1/24", extra="udp6zerocsumtx")
    got = {}
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24",
                extra="udp6zerocsumrx" if rx else "")
    got["kernel"] = h1.run("ping -c 3 -i 0.3 -W 2 10.20.1.2").returncode == 0
    h2.sh("ip link del vxlan0")
    p = h2.vxtun("--vni", "42", "--remote", u1, "--local", u2, "--dev", "eth0", "--dstport",
                 "4789", "--address", "10.20.1.2/24",
                 *(["--udp6zerocsumrx"] if rx else []), env=dataplane)
    try:
        h1.sh("ip neigh flush dev vxlan0")         # vxtun0 has a MAC of its own
        got["vxtun"] = h1.run("ping -c 3 -i 0.3 -W 2 10.20.1.2").returncode == 0
    finally:
        stop(p)
    assert got == {"kernel": rx, "vxtun": rx}


# --- the source port range --------------------------------------------------------------------

def test_source_ports_come_from_ip_local_port_range(topo, dataplane):
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv4"]
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24")
    h1.sh("sysctl -qw net.ipv4.ip_local_port_range='40000 40003'")

    def run(dev):
        for port in range(9000, 9040):                      # 40 inner flows
            send_udp(h1, "10.20.1.2", port, [b"flow"])

    k, v = kernel_then_vxtun(topo, h1, u1, u2, "", [], dataplane, run)
    for who, pkts in (("kernel", k), ("vxtun", v)):
        sports = {outer(p).payload.sport for p in pkts if UDP in inner(p)}
        assert sports == {40000, 40001, 40002}, f"{who}: {sorted(sports)}"


# --- TTL, TOS, DF ---------------------------------------------------------------------------------

@pytest.mark.parametrize("words, options", [
    ("", []),
    ("ttl 5 tos 0x28 df set", ["--ttl", "5", "--tos", "0x28", "--df", "set"]),
    ("ttl inherit tos inherit", ["--ttl", "inherit", "--tos", "inherit"]),
    ("ttl auto tos 28 df unset", ["--ttl", "auto", "--tos", "28", "--df", "unset"]),
])
def test_outer_ttl_tos_df_are_the_kernels(topo, dataplane, words, options):
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv4"]
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24")

    def run(dev):
        # inner TTL 33 and TOS 0xb9 (EF, ECT(1)): what inherit has to copy
        h1.sh("ping -c 2 -i 0.2 -W 2 -t 33 -Q 0xb9 10.20.1.2")

    k, v = kernel_then_vxtun(topo, h1, u1, u2, words, options, dataplane, run)

    def fields(pkts):
        return {(outer(p).ttl, outer(p).tos, outer(p).flags.DF) for p in pkts
                if ICMP in inner(p) and inner(p)[IP].ttl == 33}

    assert fields(k) and fields(v) == fields(k), (words, fields(k), fields(v))


def test_df_inherit_copies_the_inner_df_as_the_kernel(topo, dataplane):
    """``df inherit``: the outer DF is the inner IPv4 packet's, datagram by datagram (vxtun
    sends through one of two sockets; IP_MTU_DISCOVER is per socket)."""
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv4"]
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24")

    def run(dev):
        for ttl, pmtu in ((33, "do"), (34, "dont")):
            h1.sh(f"ping -c 2 -i 0.2 -W 2 -t {ttl} -M {pmtu} 10.20.1.2")

    k, v = kernel_then_vxtun(topo, h1, u1, u2, "df inherit", ["--df", "inherit"], dataplane,
                             run)

    def fields(pkts):
        return {(inner(p)[IP].ttl, inner(p)[IP].flags.DF, outer(p).flags.DF) for p in pkts
                if ICMP in inner(p) and inner(p)[IP].ttl in (33, 34)}

    assert fields(k) == {(33, 1, 1), (34, 0, 0)}, fields(k)
    assert fields(v) == fields(k)


# --- MTU ------------------------------------------------------------------------------------

def test_mtu_above_the_dev_is_clamped_as_the_kernel_clamps_it(topo, dataplane):
    h1, _ = hosts(topo)
    u1, u2 = UNDERLAY["ipv4"]
    h1.sh("ip link add vx9 mtu 9000 type vxlan id 9 dstport 4790 remote 192.0.2.2 dev eth0")
    p = h1.vxtun("--vni", "42", "--remote", u2, "--local", u1, "--dev", "eth0", "--dstport",
                 "4789", "--name", "vxtun9", "--mtu", "9000", env=dataplane, wait_dev="vxtun9")
    try:
        assert mtu_of(h1, "vxtun9") == mtu_of(h1, "vx9") == 1450
    finally:
        stop(p)


# --- counters -------------------------------------------------------------------------------

def test_counters_are_a_kernel_vteps(topo, dataplane):
    """The same pings through the kernel's vxlan0 and through vxtun (same MAC, flood list of
    two remotes) move ``ip -s link show vxlan0`` and ``vxtun stats`` alike: a flooded frame
    counts once per copy, bytes leave the inner Ethernet header out."""
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv4"]
    mac = "02:00:00:00:00:01"
    for h in (h1, h2):          # nothing but the pings: no IPv6 router or listener reports
        h.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24")
    h2.sh(f"ip neigh replace 10.20.1.1 lladdr {mac} dev vxlan0")
    peer = json.loads(h2.sh("ip -j link show vxlan0"))[0]["address"]

    def traffic(dev: str) -> None:
        h1.sh(f"ip neigh replace 10.20.1.2 lladdr {peer} dev {dev}")
        h1.sh("ping -c 5 -i 0.2 -s 100 10.20.1.2")             # the first one flooded
        h1.sh("ping -c 3 -i 0.2 -b -s 100 10.20.1.255 || true")   # flooded, unanswered

    def kernel_counts() -> list[int]:
        s = json.loads(h1.sh("ip -s -j link show vxlan0"))[0]["stats64"]
        return [s["tx"]["packets"], s["tx"]["bytes"], s["rx"]["packets"], s["rx"]["bytes"]]

    def vxtun_counts() -> list[int]:
        (s,) = json.loads(h1.cmd("stats", "dev", "vxtun0", "-j"))
        return [s["tx"]["packets"], s["tx"]["bytes"], s["rx"]["packets"], s["rx"]["bytes"]]

    h1.sh(f"ip link add vxlan0 address {mac} type vxlan id 42 dstport 4789 local {u1} dev eth0")
    for dst in (u2, "192.0.2.3"):
        h1.sh(f"bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst {dst}")
    h1.sh("ip addr add 10.20.1.1/24 dev vxlan0 && ip link set vxlan0 up")
    before = kernel_counts()
    traffic("vxlan0")
    kernel = [b - a for a, b in zip(before, kernel_counts(), strict=True)]
    h1.sh("ip link del vxlan0")

    p = h1.vxtun("--vni", "42", "--local", u1, "--dev", "eth0", "--dstport", "4789", "--mac",
                 mac, "--address", "10.20.1.1/24", env=dataplane)
    try:
        for dst in (u2, "192.0.2.3"):
            h1.cmd("fdb", "append", "00:00:00:00:00:00", "dev", "vxtun0", "dst", dst)
        before = vxtun_counts()
        traffic("vxtun0")
        ours = [b - a for a, b in zip(before, vxtun_counts(), strict=True)]
    finally:
        stop(p)
    # 5 + 3 frames of 128 bytes past their Ethernet header: 1 + 3 of them flooded to two
    assert kernel == [12, 12 * 128, 5, 5 * 128]
    assert ours == kernel


# --- the IPv6 flow label ------------------------------------------------------------------------

def test_outer_flow_label_is_the_kernels(topo, dataplane):
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv6"]
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24")

    def run(dev):
        ping(h1, "10.20.1.2", count=2)
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=200_000, port=5301 + len(dev))

    for words, options, label in (("", [], 0), ("flowlabel 12345", ["--flowlabel", "12345"],
                                                 12345)):
        k, v = kernel_then_vxtun(topo, h1, u1, u2, words, options, dataplane, run)
        assert {outer(p).fl for p in k} == {outer(p).fl for p in v} == {label}, words


def test_flowlabel_inherit_copies_the_inner_label_as_the_kernel(topo, dataplane):
    """``flowlabel inherit`` (IFLA_VXLAN_LABEL_POLICY, Linux 6.5; iproute2 6.1 has no word for
    it): the outer IPv6 flow label is the inner IPv6 packet's, 0 for anything else."""
    h1, h2 = hosts(topo)
    u1, u2 = UNDERLAY["ipv6"]
    mac = bytes.fromhex("02aa00000001")

    def frame(label: int | None) -> bytes:
        dst = bytes.fromhex("02bb00000002")
        if label is None:                     # IPv4: no label to inherit
            return dst + mac + b"\x08\x00" + bytes([0x45]) + bytes(39)
        return (dst + mac + b"\x86\xdd" + struct.pack("!I", 6 << 28 | label)
                + struct.pack("!HBB", 0, 59, 64) + bytes(32))
    frames = [frame(0x12345), frame(0x9abcd), frame(0), frame(None)]

    def sent(dev: str) -> list[int]:
        with Tcpdump(topo, f"udp port 4789 and src host {u1}") as cap:
            inject(h1, dev, *frames)
        # the frames written here, not the device's own (router solicitations, MLD)
        return [outer(p).fl for p in cap.packets() if inner(p).src == "02:aa:00:00:00:01"]

    # IFLA_VXLAN_ID 42, _GROUP6 (the remote), _LOCAL6, _LINK, _PORT, _LABEL_POLICY inherit
    kernel_vxlan_nl(h1, "vxlan0", {
        1: struct.pack("=I", 42), 16: socket.inet_pton(socket.AF_INET6, u2),
        17: socket.inet_pton(socket.AF_INET6, u1),
        3: struct.pack("=I", int(h1.sh("cat /sys/class/net/eth0/ifindex"))),
        15: struct.pack("!H", 4789), 32: struct.pack("=I", 1)})
    h1.sh("ip link set vxlan0 up")
    k = sent("vxlan0")
    h1.sh("ip link del vxlan0")
    p = h1.vxtun("--vni", "42", "--remote", u2, "--local", u1, "--dev", "eth0", "--dstport",
                 "4789", "--flowlabel", "inherit", env=dataplane)
    try:
        v = sent("vxtun0")
    finally:
        stop(p)
    assert k == [0x12345, 0x9abcd, 0, 0], [hex(x) for x in k]
    # the fast path hands labelled frames to Python: they may leave after unlabelled ones
    # written later (other flows: one flow keeps its label, and its order)
    assert sorted(v) == sorted(k)
