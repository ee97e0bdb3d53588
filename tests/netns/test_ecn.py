"""ECN and the outer TOS / traffic class, compared with the kernel's vxlan device (tos 0).

* Encapsulation: inner packets marked Not-ECT, ECT(1), ECT(0) and CE (with a DSCP), IPv4 and
  IPv6, sent through the kernel's vxlan0 and then through vxtun on the same host, leave with
  the same outer TOS / traffic class on the underlay: the inner ECN bits, CE as ECT(0), DSCP 0.
  So do VLAN-tagged frames bridged onto the VTEP (the ECN is read behind the tag).  An
  ECN-capable TCP stream (net.ipv4.tcp_ecn=1) checks the fast path's TSO / UDP GSO sends.
* Decapsulation: the same crafted datagrams, every outer ECN over every inner ECN (IPv4, IPv6,
  VLAN-tagged), sent to a kernel VTEP and to vxtun, are delivered as the kernel delivers them
  (CE or ECT(1) carried into the inner header, a Not-ECT packet under CE dropped, counted and
  its source MAC learned, an inner IP header cut short dropped), and as vxtun.wire.ecn says.

Every test runs once per dataplane and once per underlay family.
"""
from __future__ import annotations

import json
import time

import pytest
from helpers import (
    RxFrames,
    Tcpdump,
    assert_tcp_transfer,
    inject,
    kernel_vtep,
    send_udp_tos,
    vxtun_json,
)
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from vxtun.wire import ecn
from vxtun.wire.vxlan import encode_header

UNDERLAY = {"ipv4": ("192.0.2.1", "192.0.2.2", "192.0.2.3"),
            "ipv6": ("2001:db8::1", "2001:db8::2", "2001:db8::3")}
NOT_ECT, ECT_1, ECT_0, CE = 0, 1, 2, 3
ENCAP = {NOT_ECT: NOT_ECT, ECT_1: ECT_1, ECT_0: ECT_0, CE: ECT_0}   # RFC 6040 section 4.1
DSCP = 0xB8                       # EF: the inner DSCP, never copied out with tos 0
PROBE = b"ecn-probe"


def hosts(topo, n: int):
    return [topo.host(f"h{i}", f"192.0.2.{i}/24", f"2001:db8::{i}/64") for i in range(1, n + 1)]


def outer_tos(pkt) -> int:
    outer = pkt[Ether].payload          # not pkt[IP]: scapy decodes the inner packet as well
    return outer.tc if isinstance(outer, IPv6) else outer.tos


def inner_of(pkt) -> Ether:
    return Ether(bytes(pkt[UDP].payload)[8:])


def probes_and_rule(pkts) -> dict:
    """{(ipv4/ipv6/vlan, inner TOS): outer TOS} of the probes, after checking on every datagram
    that the outer TOS is the inner ECN as INET_ECN_encapsulate(0, inner) makes it."""
    seen = {}
    for p in pkts:
        inner = inner_of(p)
        ip = inner[IP] if IP in inner else inner[IPv6] if IPv6 in inner else None
        ds = 0 if ip is None else (ip.tos if IP in inner else ip.tc)
        assert outer_tos(p) == ENCAP[ds & 3], (hex(outer_tos(p)), inner.summary())
        if UDP in inner and bytes(inner[UDP].payload).startswith(PROBE):
            kind = "vlan" if Dot1Q in inner else "ipv4" if IP in inner else "ipv6"
            seen[(kind, ds)] = outer_tos(p)
    return seen


def send_probes(h) -> None:
    """UDP from the host's stack through the VTEP, IPv4 and IPv6."""
    for dst in ("10.20.1.2", "fd00::2"):
        send_udp_tos(h, dst, 9000, [(DSCP | e, PROBE + bytes([e])) for e in range(4)])


def vtep_tx_packets(h, dev: str) -> int:
    """Frames the VTEP ``dev`` has encapsulated: the kernel device's tx counter, or vxtun's."""
    if dev == "vxlan0":
        (link,) = json.loads(h.sh(f"ip -s -j link show dev {dev}"))
        return link["stats64"]["tx"]["packets"]
    (stats,) = json.loads(h.cmd("stats", "dev", dev, "-j"))
    return stats["tx"]["packets"]


def send_tagged_probes(h, dev: str) -> None:
    """VLAN-tagged frames that a bridge floods to the VTEP ``dev`` (made a port of br1 now: a
    bridge port's own addresses no longer receive) from the veth vA, injected on its peer.
    Returns once the VTEP has sent all four, so a capture stopped next cannot miss one."""
    h.sh(f"ip link set {dev} master br1")
    before = vtep_tx_packets(h, dev)
    for e in range(4):
        inject(h, "vB", bytes(Ether(src="02:00:00:00:00:0b", dst="02:00:00:00:00:0c") /
                              Dot1Q(vlan=12) / IP(src="10.20.12.1", dst="10.20.12.2",
                                                  tos=DSCP | e) /
                              UDP(sport=7, dport=9000) / (PROBE + bytes([e]))))
    deadline = time.time() + 10
    while vtep_tx_packets(h, dev) < before + 4:
        assert time.time() < deadline, f"{dev} did not send the 4 tagged probes"
        time.sleep(0.05)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_encap_outer_ecn_is_the_kernels(topo, dataplane, family):
    h1, h2 = hosts(topo, 2)
    u1, u2, _ = UNDERLAY[family]
    kernel_vtep(h2, remote=u1, local=u2, address="10.20.1.2/24")
    h2.sh("ip addr add fd00::2/64 dev vxlan0 nodad")
    h2.sh("sysctl -qw net.ipv4.tcp_ecn=1")
    h1.sh("sysctl -qw net.ipv4.tcp_ecn=1")     # the stream below is ECT(0) both ways
    h1.sh("ip link add br1 type bridge && ip link add vA type veth peer name vB && "
          "ip link set vA master br1 && ip link set br1 up && ip link set vA up && "
          "ip link set vB up")
    want = {(kind, DSCP | e): ENCAP[e] for kind in ("ipv4", "ipv6", "vlan") for e in range(4)}

    # the kernel's vxlan0 on h1 ...
    with Tcpdump(topo, f"udp and src host {u1}") as cap:
        kernel_vtep(h1, remote=u2, local=u1, address="10.20.1.1/24")
        h1.sh("ip addr add fd00::1/64 dev vxlan0 nodad")
        send_probes(h1)
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=300_000, port=5201)
        send_tagged_probes(h1, "vxlan0")
        h1.sh("ip link del vxlan0")
    assert probes_and_rule(cap.packets()) == want

    # ... and vxtun in its place
    with Tcpdump(topo, f"udp and src host {u1}") as cap:
        h1.vxtun("--vni", "42", "--remote", u2, "--local", u1, "--dev", "eth0",
                 "--dstport", "4789", "--address", "10.20.1.1/24", env=dataplane)
        h1.sh("ip addr add fd00::1/64 dev vxtun0 nodad")
        send_probes(h1)
        assert_tcp_transfer(h1, h2, "10.20.1.2", nbytes=2_000_000, port=5202)
        send_tagged_probes(h1, "vxtun0")
    pkts = cap.packets()
    assert probes_and_rule(pkts) == want
    # the stream's data went out ECT(0), as segments vxtun cut from TSO super-frames (in the
    # fast path as UDP GSO trains, which the capture on the bridge sees whole)
    # New data goes ECT(0); a retransmission goes Not-ECT (RFC 3168 section 6.1.5, as Linux's
    # tcp_ecn_send does), and the outer copies that too: under load some segments are resent.
    data = [p for p in pkts if TCP in inner_of(p) and len(inner_of(p)[TCP].payload) > 0]
    assert data and outer_tos(data[0]) == ECT_0
    isn = inner_of(data[0])[TCP].seq
    sent = 0                               # highest sequence sent as new data, from isn
    for p in data:
        tcp = inner_of(p)[TCP]
        seq = (tcp.seq - isn) % (1 << 32)
        if outer_tos(p) == ECT_0:
            sent = max(sent, seq + len(tcp.payload))
        else:
            assert outer_tos(p) == NOT_ECT and seq < sent, "new data left Not-ECT"


# --- decapsulation ------------------------------------------------------------------------

SRC = "02:00:00:00:00:01"
SRC_DROPPED = "02:00:00:00:0e:cd"     # the source of the frames ECN drops: learned all the same
DST = "02:00:00:00:00:02"


def crafted() -> list[tuple[int, bytes]]:
    """(outer TOS, VXLAN payload) for every inner x outer ECN codepoint, IPv4, IPv6 and
    VLAN-tagged IPv4 inside, each told apart by its UDP destination port; then inner IPv4 and
    IPv6 headers one byte short."""
    out = []
    for kind in ("ipv4", "ipv6", "vlan"):
        for inner in range(4):
            for outer in range(4):
                n = len(out)
                src = SRC_DROPPED if (inner, outer) == (NOT_ECT, CE) else SRC
                eth = Ether(src=src, dst=DST)
                if kind == "ipv6":
                    f = eth / IPv6(src="fd00::9", dst="fd00::3", tc=DSCP | inner)
                else:
                    ip = IP(src="10.20.1.9", dst="10.20.1.3", tos=DSCP | inner, id=n)
                    f = eth / Dot1Q(vlan=12) / ip if kind == "vlan" else eth / ip
                f = f / UDP(sport=7, dport=1000 + n) / (b"x" * 20)
                out.append((0x20 | outer, encode_header(42) + bytes(f)))
    v4 = bytes(Ether(src=SRC, dst=DST) / IP(src="10.20.1.9", dst="10.20.1.3", tos=ECT_0))
    v6 = bytes(Ether(src=SRC, dst=DST) / IPv6(src="fd00::9", dst="fd00::3", tc=ECT_0))
    for outer in (NOT_ECT, CE):
        out.append((outer, encode_header(42) + v4[:14 + 19]))
        out.append((outer, encode_header(42) + v6[:14 + 39]))
    return out


MARKER = b"ecn-end-marker"
END = encode_header(42) + bytes(Ether(src=SRC, dst=DST) / IP(src="10.20.1.9", dst="10.20.1.3")
                                / UDP(sport=7, dport=9) / MARKER)


def expected(datagrams) -> list[bytes]:
    """What vxtun.wire.ecn delivers, as a packet socket shows it (VLAN tag stripped)."""
    out = []
    for tos, d in datagrams:
        reason, frame = ecn.decapsulate(d[8:], tos)
        if reason is None:
            out.append(frame[:12] + frame[16:] if frame[12:14] == b"\x81\x00" else frame)
    return out


def received(sender, dst_ip: str, host, dev: str, datagrams) -> list[bytes]:
    with RxFrames(host, dev, MARKER) as rx:
        send_udp_tos(sender, dst_ip, 4789, datagrams + [(0, END)])
    return rx.frames


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_decap_ecn_is_the_kernels(topo, dataplane, family):
    h1, h2, h3 = hosts(topo, 3)
    u1, u2, u3 = UNDERLAY[family]
    kernel_vtep(h2, remote=u1, local=u2)
    h3.vxtun("--vni", "42", "--remote", u1, "--local", u3, "--dev", "eth0", "--dstport", "4789",
             env=dataplane)
    datagrams = crafted()
    kernel = received(h1, u2, h2, "vxlan0", datagrams)
    ours = received(h1, u3, h3, "vxtun0", datagrams)
    assert ours == kernel
    assert kernel == expected(datagrams)
    # 2 dropped by ECN (Not-ECT under CE, IPv4 and IPv6; the tagged one is not looked into),
    # 4 with an inner header one byte short; 4 marked CE and 2 ECT(1) per IP family
    assert len(kernel) == len(datagrams) - 2 - 4

    (link,) = json.loads(h2.sh("ip -j -s -s link show vxlan0"))
    errors = link["stats64"]["rx"]
    (s,) = vxtun_json(h3, "stats", "dev", "vxtun0")
    assert s["drops"]["ecn"] == errors["frame_errors"] == 2
    assert s["drops"]["inner_truncated"] == errors["length_errors"] == 4
    assert sum(s["drops"].values()) == 6
    assert s["rx"]["packets"] == len(ours) + 1            # and the marker
    # dropped after learning, in both
    assert f"{SRC_DROPPED} dst {u1} self" in h2.sh("bridge fdb show dev vxlan0")
    assert f"{SRC_DROPPED} dst {u1} self" in h3.cmd("fdb", "show", "dev", "vxtun0")
