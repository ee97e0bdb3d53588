"""The point-to-point scenario: a vxtun VTEP against the real kernel's, in namespaces.

Two hosts on one underlay bridge, VNI 42, overlay 10.20.1.0/24.  Every test runs once per
dataplane (``fast``, ``pure``) and the interop tests once per underlay family: what a user of
a point-to-point VTEP does, read top to bottom.  Checks share a topology inside a test where that
keeps the test readable, so the file stays fast.
"""
from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest
from helpers import (
    Tcpdump,
    assert_tcp_transfer,
    inject,
    kernel_vtep,
    links,
    mac_of,
    mtu_of,
    neigh_lladdr,
    ping,
    send_udp,
    stop,
    vxtun_json,
    wait_exit,
)
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from vxtun.lab.netns import python
from vxtun.wire.vxlan import encode_header

UNDERLAY = {"ipv4": ("192.0.2.1", "192.0.2.2"), "ipv6": ("2001:db8::1", "2001:db8::2")}
MTU = {"ipv4": 1450, "ipv6": 1430}      # 1500 - 50 / - 70 (VXLAN_HEADROOM, VXLAN6_HEADROOM)
IP1, IP2 = "10.20.1.2", "10.20.1.3"
DSTPORT_NOTE = "no --dstport given: using 4789"
# ip_local_port_range 32768 60999, its high end left out (udp_flow_src_port): inclusive
SRCPORT_MIN, SRCPORT_MAX = 32768, 60998


def two_hosts(topo):
    h1 = topo.host("h1", "192.0.2.1/24", "2001:db8::1/64")
    h2 = topo.host("h2", "192.0.2.2/24", "2001:db8::2/64")
    return h1, h2


def outer_ip(pkt):
    return pkt[IP] if IP in pkt else pkt[IPv6]


def vxlan_bytes(pkt) -> bytes:
    """The 8-byte VXLAN header and the inner frame, straight from the UDP payload."""
    return bytes(pkt[UDP].payload)


def check_vxtun_datagrams(pkts, vni: int, dstport: int) -> None:
    """RFC 7348 section 5 on every datagram vxtun sent, and one source port per inner flow."""
    assert pkts, "no VXLAN datagram captured"
    flows: dict = {}
    for p in pkts:
        udp = p[UDP]
        data = vxlan_bytes(p)
        assert data[:8] == encode_header(vni), data[:8].hex()   # flags 0x08, reserved zero
        assert udp.dport == dstport
        assert SRCPORT_MIN <= udp.sport <= SRCPORT_MAX, udp.sport
        assert udp.len == len(data) + 8
        inner = Ether(data[8:])
        if TCP in inner:
            key = ("tcp", inner[IP].src, inner[IP].dst, inner[TCP].sport, inner[TCP].dport)
        elif ICMP in inner:
            key = ("icmp", inner[IP].src, inner[IP].dst)
        else:
            continue
        flows.setdefault(key, set()).add(udp.sport)
    assert flows, "no ICMP or TCP inside the captured datagrams"
    for key, ports in flows.items():
        assert len(ports) == 1, f"flow {key} used source ports {sorted(ports)}"


def check_show(h, dataplane_name: str, name: str, vni: int, remote: str, local: str,
               dstport: int, mtu: int) -> dict:
    (d,) = vxtun_json(h, "show", "dev", name)
    assert (d["ifname"], d["vni"], d["remote"], d["local"], d["dev"], d["dstport"]) == \
        (name, vni, remote, local, "eth0", dstport)
    assert d["mtu"] == mtu == mtu_of(h, name)
    assert d["address"] == mac_of(h, name)
    assert d["dataplane"] == dataplane_name
    text = h.cmd("show", "dev", name)
    assert f"{name}: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu {mtu}" in text
    assert f"link/ether {d['address']} brd ff:ff:ff:ff:ff:ff" in text
    assert (f"vxlan id {vni} remote {remote} local {local} dev eth0 "
            f"srcport 0 0 dstport {dstport}") in text      # as ip -d link show: the default
    return d


def check_default_fdb(h, name: str, remote: str) -> None:
    lines = h.cmd("fdb", "show", "dev", name).splitlines()
    assert lines[0] == f"00:00:00:00:00:00 dst {remote} via eth0 self permanent", lines


def check_stats(h, name: str) -> dict:
    (s,) = vxtun_json(h, "stats", "dev", name)
    assert s["ifname"] == name
    assert s["rx"]["packets"] > 0 and s["rx"]["bytes"] > 0
    assert s["tx"]["packets"] > 0 and s["tx"]["bytes"] > 0
    assert sum(s["drops"].values()) == 0, s["drops"]
    text = h.cmd("stats", "dev", name)
    # the text is read a moment later: the counters can only have grown (link-local chatter)
    rx = re.search(rf"RX \(underlay -> {name}\): (\d+) packets (\d+) bytes", text)
    tx = re.search(rf"TX \({name} -> underlay\): (\d+) packets (\d+) bytes", text)
    assert rx and tx, text
    assert int(rx[1]) >= s["rx"]["packets"] and int(tx[1]) >= s["tx"]["packets"], text
    assert "dropped 0" in text, text
    # losses before vxtun's own counters: the fast path's punt queue, the TAP's queue
    assert s["punts_lost"] >= 0 and s["tap"]["tx_dropped"] >= 0, s
    assert re.search(r"punts lost \d+  tap queue drops \d+", text), text
    return s


def talk(a, a_ip: str, b, b_ip: str) -> None:
    """ARP, pings of 56, 1600 and 3200 bytes both ways, and a byte-compared TCP stream each
    way (the 1600/3200-byte echoes are fragmented inside the overlay)."""
    for size in (56, 1600, 3200):
        ping(a, b_ip, count=2, size=size)
        ping(b, a_ip, count=2, size=size)
    assert_tcp_transfer(a, b, b_ip, port=5201, seed=1)
    assert_tcp_transfer(b, a, a_ip, port=5202, seed=2)


# --- kernel <-> vxtun ----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_kernel_and_vxtun_talk(topo, dataplane, family):
    h1, h2 = two_hosts(topo)
    u1, u2 = UNDERLAY[family]
    kernel_vtep(h1, remote=u2, local=u1, address=f"{IP1}/24")
    # no --dstport: vxtun uses the IANA port and says so
    p = h2.vxtun("--vni", "42", "--remote", u1, "--local", u2, "--dev", "eth0",
                 "--address", f"{IP2}/24", env=dataplane)
    plane = "pure" if dataplane["VXTUN_PUREPYTHON"] == "1" else "fast"

    # the TAP: default name, MTU = underlay - 50/70; show and the default FDB entry
    show = check_show(h2, plane, "vxtun0", 42, u1, u2, 4789, MTU[family])
    check_default_fdb(h2, "vxtun0", u1)

    # what vxtun puts on the wire: header, ports, one source port per flow
    with Tcpdump(topo, f"udp and src host {u2}") as cap:
        ping(h2, IP1, count=3)
        assert_tcp_transfer(h2, h1, IP1, nbytes=200_000, port=5200)
    check_vxtun_datagrams(cap.packets(), vni=42, dstport=4789)

    # ARP resolved both ways, to the right MACs; the kernel learned vxtun's MAC
    assert neigh_lladdr(h1, IP2, "vxlan0") == show["address"]
    assert neigh_lladdr(h2, IP1, "vxtun0") == mac_of(h1, "vxlan0")
    assert f"{show['address']} dst {u2} self" in h1.sh("bridge fdb show dev vxlan0")
    assert f"{mac_of(h1, 'vxlan0')} dst {u1} self" in h2.cmd("fdb", "show", "dev", "vxtun0")

    talk(h1, IP1, h2, IP2)
    check_stats(h2, "vxtun0")

    # vxtun down: exit 0, the TAP is gone, the dstport note was printed exactly once
    h2.cmd("down")
    rc, out, err = wait_exit(p)
    assert rc == 0, err
    assert "vxtun0" not in links(h2)
    assert err.count(DSTPORT_NOTE) == 1, err


# --- vxtun <-> vxtun -----------------------------------------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_vxtun_and_vxtun_talk(topo, dataplane, family):
    h1, h2 = two_hosts(topo)
    u1, u2 = UNDERLAY[family]
    # one side with --name and --mtu, the other with the defaults
    p1 = h1.vxtun("--vni", "42", "--remote", u2, "--local", u1, "--dev", "eth0",
                  "--dstport", "4789", "--name", "vxa", "--mtu", "1400",
                  "--address", f"{IP1}/24", env=dataplane, wait_dev="vxa")
    p2 = h2.vxtun("--vni", "42", "--remote", u1, "--local", u2, "--dev", "eth0",
                  "--dstport", "4789", "--address", f"{IP2}/24", env=dataplane)
    assert mtu_of(h1, "vxa") == 1400 and "vxtun0" not in links(h1)
    assert mtu_of(h2, "vxtun0") == MTU[family]
    check_default_fdb(h1, "vxa", u2)
    check_default_fdb(h2, "vxtun0", u1)

    talk(h1, IP1, h2, IP2)
    assert neigh_lladdr(h1, IP2, "vxa") == mac_of(h2, "vxtun0")
    assert neigh_lladdr(h2, IP1, "vxtun0") == mac_of(h1, "vxa")
    check_stats(h1, "vxa")
    check_stats(h2, "vxtun0")

    # SIGINT and SIGTERM: exit 0, TAP gone, and an explicit --dstport prints no note
    for h, p, sig, dev in ((h1, p1, signal.SIGINT, "vxa"), (h2, p2, signal.SIGTERM, "vxtun0")):
        rc, out, err = stop(p, sig)
        assert rc == 0, err
        assert dev not in links(h)
        assert DSTPORT_NOTE not in err


# --- the kernel's port 8472 ---------------------------------------------------------------


def test_dstport_8472_talks_to_a_kernel_on_8472(topo, dataplane):
    h1, h2 = two_hosts(topo)
    kernel_vtep(h1, remote="192.0.2.2", local="192.0.2.1", address=f"{IP1}/24", dstport=8472)
    p = h2.vxtun("--vni", "42", "--remote", "192.0.2.1", "--local", "192.0.2.2", "--dev",
                 "eth0", "--dstport", "8472", "--address", f"{IP2}/24", env=dataplane)
    assert vxtun_json(h2, "show")[0]["dstport"] == 8472
    with Tcpdump(topo, "udp and src host 192.0.2.2") as cap:
        ping(h2, IP1, count=2)
        ping(h1, IP2, count=2)
    check_vxtun_datagrams(cap.packets(), vni=42, dstport=8472)
    rc, _, err = stop(p)
    assert rc == 0 and DSTPORT_NOTE not in err


# --- the bytes on the wire, compared with the kernel's -------------------------------------


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_encapsulation_equals_the_kernels(topo, dataplane, family):
    """The same ICMP echo, put on the kernel's vxlan0 and then on vxtun's TAP on the same
    host with the same parameters, leaves as the same datagram, apart from the outer IP id,
    the UDP source port and the checksums."""
    h1, h2 = two_hosts(topo)
    u1, u2 = UNDERLAY[family]
    echo = Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:03") / \
        IP(src="10.20.1.9", dst=IP2, ttl=64, id=7) / ICMP(id=0x1234, seq=1) / (b"vxtun" * 10)
    captured = []
    with Tcpdump(topo, f"udp and src host {u1}") as cap:
        kernel_vtep(h1, remote=u2, local=u1)
        inject(h1, "vxlan0", bytes(echo))
        h1.sh("ip link del vxlan0")
    captured.append(cap.packets())
    with Tcpdump(topo, f"udp and src host {u1}") as cap:
        p = h1.vxtun("--vni", "42", "--remote", u2, "--local", u1, "--dev", "eth0",
                     "--dstport", "4789", env=dataplane)
        inject(h1, "vxtun0", bytes(echo))
        rc, _, err = stop(p)
        assert rc == 0, err
    captured.append(cap.packets())

    def the_echo(pkts):
        mine = [p for p in pkts if vxlan_bytes(p)[8:] == bytes(echo)]
        assert len(mine) == 1, [p.summary() for p in pkts]
        return mine[0]

    kernel, ours = (the_echo(c) for c in captured)
    assert SRCPORT_MIN <= ours[UDP].sport <= SRCPORT_MAX
    for p in (kernel, ours):
        p[UDP].sport = 0
        p[UDP].chksum = 0
        if family == "ipv4":           # the outer header (the inner echo is IPv4 too)
            p[IP].id = 0
            p[IP].chksum = 0
    assert bytes(ours) == bytes(kernel), \
        f"kernel:\n{kernel.show(dump=True)}\nvxtun:\n{ours.show(dump=True)}"


# --- crafted datagrams against a running VTEP: counted, never written to the TAP ----------


def test_crafted_datagrams_are_counted_and_not_delivered(topo, dataplane):
    h1, h2 = two_hosts(topo)
    p = h2.vxtun("--vni", "42", "--remote", "192.0.2.1", "--local", "192.0.2.2", "--dev",
                 "eth0", "--dstport", "4789", env=dataplane)
    own = mac_of(h2, "vxtun0")
    h2.cmd("fdb", "add", "02:aa:00:00:00:99", "dst", "192.0.2.9", "dev", "vxtun0", "self",
           "permanent")

    def frame(src: str, dst: str = "02:00:00:00:00:03") -> bytes:
        return bytes(Ether(src=src, dst=dst) / IP(src=IP1, dst=IP2) / ICMP())

    good = "02:00:00:00:00:01"
    hdr = encode_header(42)
    crafted = {
        "truncated": hdr[:7],
        "not_vxlan": b"\x00" + hdr[1:] + frame(good),
        "vni_not_found": encode_header(43) + frame(good),
        "reserved_bits": b"\x0c" + hdr[1:] + frame(good),
        "inner_truncated": hdr + frame(good)[:13],
        "own_mac": hdr + frame(own),
        "invalid_src_mac": hdr + frame("01:00:5e:00:00:01"),
        "static_mac_moved": hdr + frame("02:aa:00:00:00:99"),
    }
    tap_rx = int(h2.sh("cat /sys/class/net/vxtun0/statistics/rx_packets"))
    send_udp(h1, "192.0.2.2", 4789, list(crafted.values()))
    # a good datagram last: once it is delivered, every crafted one before it was handled
    send_udp(h1, "192.0.2.2", 4789, [hdr + frame(good, dst="ff:ff:ff:ff:ff:ff")])
    for _ in range(50):
        (s,) = vxtun_json(h2, "stats")
        if s["rx"]["packets"]:
            break
        time.sleep(0.1)
    assert s["rx"]["packets"] == 1
    for reason in crafted:
        assert s["drops"][reason] == 1, (reason, s["drops"])
    assert sum(s["drops"].values()) == len(crafted)
    # the TAP received exactly the one good frame
    assert int(h2.sh("cat /sys/class/net/vxtun0/statistics/rx_packets")) == tap_rx + 1
    assert "02:aa:00:00:00:99 dst 192.0.2.9 self permanent" in h2.cmd("fdb", "show", "dev",
                                                                     "vxtun0")
    rc, _, err = stop(p)
    assert rc == 0, err


# --- stopping ------------------------------------------------------------------------------


def test_down_sigterm_sigint_exit_0_and_remove_the_tap(topo, dataplane):
    h = topo.host("h1", "192.0.2.1/24")
    args = ["--vni", "42", "--remote", "192.0.2.2", "--local", "192.0.2.1", "--dev", "eth0",
            "--dstport", "4789"]
    baseline = links(h)
    ways = [("down", "vxtun0"), ("down NAME", "vxt7"), ("SIGTERM", "vxtun0"),
            ("SIGINT", "vxtun0")]
    for how, name in ways:
        p = h.vxtun(*args, "--name", name, env=dataplane, wait_dev=name)
        assert name in links(h)
        if how == "down":
            h.cmd("down")
            rc, out, err = wait_exit(p)
        elif how == "down NAME":
            h.cmd("down", name)
            rc, out, err = wait_exit(p)
        else:
            rc, out, err = stop(p, getattr(signal, how))
        assert rc == 0, (how, err)
        assert links(h) == baseline, how
        assert f"{name}: up, vni 42, remote 192.0.2.2, dstport 4789" in out


# --- bad invocations ------------------------------------------------------------------------


def test_bad_invocations_fail_clearly_and_leave_no_tap(topo, dataplane):
    h = topo.host("h1", "192.0.2.1/24", "2001:db8::1/64")
    ok = ["--vni", "42", "--remote", "192.0.2.2", "--local", "192.0.2.1", "--dev", "eth0",
          "--dstport", "4789"]

    def up_fails(args: list[str], message: str) -> None:
        before = links(h)
        p = h.popen(python("-m", "vxtun", "up", *args), env=dataplane,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        rc, out, err = wait_exit(p, timeout=30)
        assert rc != 0, (args, out)
        assert message in err, (args, err)
        assert "Traceback" not in err, err
        assert links(h) == before, args

    up_fails(ok + ["--vni", "16777216"],
             "invalid VNI 16777216: a VNI is 24 bits (0..16777215)")
    up_fails(ok + ["--dev", "nosuch0"], "device 'nosuch0' does not exist")
    up_fails(ok + ["--remote", "2001:db8::2"],
             "local, remote and group addresses must all be IPv4 or all IPv6")
    up_fails(ok + ["--name", "eth0"], "device eth0 already exists")
    # fails after the TAP exists: the TAP must still go
    up_fails(ok + ["--address", "10.20.1.3/99"], "cannot add address 10.20.1.3/99")
    up_fails(ok + ["--master", "nosuch0"], "device 'nosuch0' does not exist")

    # a UDP port held by another program in the namespace: a plain socket on local:4789 ...
    holder = h.popen(python("-c", "import socket, sys, time\n"
                            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                            "s.bind(('192.0.2.1', 4789)); print('bound', flush=True)\n"
                            "time.sleep(60)"), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "bound"
    up_fails(ok, "UDP 192.0.2.1 port 4789 is already in use by another program")
    holder.kill()
    holder.wait()
    # ... and a kernel vxlan device, which binds its port on every address of the namespace
    kernel_vtep(h, remote="192.0.2.2", local="192.0.2.1")
    up_fails(ok, "port 4789 is already in use by another program")
