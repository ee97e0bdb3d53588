"""A multi-queue TAP (``vxtun up --queues N``, IFF_MULTI_QUEUE), in namespaces, on both
dataplanes: bench/storm.py's topology (h1: vxtun0 with ``--proxy``, h2: a kernel VTEP).

* The fast dataplane makes the TAP with N queues and reads each with a thread of its own; the
  pure dataplane's one loop reads two (queue 0 for ARP/NS from behind the TAP, queue 1 for
  the host's own frames: more would bring one thread nothing).
* The host's own IP traffic (pings, TCP both ways) crosses, and with the fast path it is read
  from queues 1..N-1: the RX thread writes what it delivers on the flow's queue and tun's
  automq sends the flow's answers back on it (vxtun/fastpath/threads.pyx).
* The steering program (vxtun/io/tapsteer.py, run with BPF_PROG_TEST_RUN) puts ARP and
  Neighbour Solicitations from behind the TAP on queue 0, the host's own on another, and every
  IP flow on the queue the RX thread writes it on (``flow_queue``): the two hashes agree.
* Under an ARP storm every frame the generator got into the device is accounted for
  (answered, dropped by reason, or dropped at the TAP's queue: bench/storm.py's
  ``accounted``), and with the fast path the storm is read from queue 0 (the proxy writes its
  answers there, and tun hashes all of ARP as one flow) while the pings are not.

Nothing here is timed: the rates are low enough for a loaded machine.
"""
from __future__ import annotations

import json
import subprocess

import os
import socket
import struct

from helpers import assert_tcp_transfer, ping

from bench import storm
from vxtun import _fastpath
from vxtun.io import tapsteer
from vxtun.lab.netns import python

QUEUES = 3


def _fast(dataplane: dict) -> bool:
    return dataplane.get("VXTUN_PUREPYTHON") != "1"


def _kind(dataplane: dict) -> str:
    return "fast" if _fast(dataplane) else "pure"


def _queues(h, dev: str) -> int:
    """The TAP's queues now (tun sets real_num_tx_queues to the queues attached)."""
    out = h.sh(f"ls /sys/class/net/{dev}/queues")
    return len([q for q in out.split() if q.startswith("tx-")])


def _features(h, dev: str) -> list:
    return json.loads(h.cmd("show", "dev", dev, "-j"))[0].get("features", [])


def _stats(h, dev: str) -> dict:
    return json.loads(h.cmd("stats", "dev", dev, "-j"))[0]


def _eth(src: bytes, ethertype: int, payload: bytes) -> bytes:
    return b"\xff" * 6 + src + struct.pack("!H", ethertype) + payload


def _ip4(proto: int, sport: int, dport: int, frag: int = 0, rev: bool = False) -> bytes:
    a, b = socket.inet_aton("10.20.1.1"), socket.inet_aton(f"10.20.{sport % 7}.{sport % 250}")
    a, b = (b, a) if rev else (a, b)
    sp, dp = (dport, sport) if rev else (sport, dport)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, frag, 64, proto, 0, a, b) \
        + struct.pack("!HH", sp, dp) + bytes(16)


def _ip6(proto: int, sport: int, dport: int, icmp_type: int = 0) -> bytes:
    a = socket.inet_pton(socket.AF_INET6, f"2001:db8::{sport:x}")
    b = socket.inet_pton(socket.AF_INET6, "2001:db8:1::1")
    l4 = bytes((icmp_type, 0)) + bytes(22) if proto == 58 else \
        struct.pack("!HH", sport, dport) + bytes(16)
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 255, a, b) + l4


def test_the_steering_program_and_the_rx_thread_agree_on_every_flow():
    if os.geteuid() != 0:
        raise AssertionError("loading a BPF program needs root (CAP_BPF)")
    own, other = bytes.fromhex("020000000001"), bytes.fromhex("025c00000007")
    arp = bytes.fromhex("0001080006040001") + bytes(20)
    for nq in (2, 3, 5, 8):
        fd = tapsteer.load(tapsteer.program(own, nq))
        try:
            assert tapsteer.run(fd, _eth(other, 0x0806, arp)) == 0     # a storm's
            assert tapsteer.run(fd, _eth(own, 0x0806, arp)) == 1       # the host's own
            ns_other = _eth(other, 0x86DD, _ip6(58, 1, 0, icmp_type=135))
            ns_own = _eth(own, 0x86DD, _ip6(58, 1, 0, icmp_type=135))
            assert tapsteer.run(fd, ns_other) == 0
            assert tapsteer.run(fd, ns_own) == _fastpath.flow_queue(ns_own, nq) >= 1
            seen = set()
            for port in range(1, 120):
                for frame in (_ip4(6, port, 5201), _ip4(6, port, 5201, rev=True),
                              _ip4(17, port, 53, frag=0x2000), _ip4(1, port, 0),
                              _ip6(6, port, 80), _ip6(17, port, 4789)):
                    ethertype = 0x86DD if frame[0] >> 4 == 6 else 0x0800
                    f = _eth(own, ethertype, frame)
                    q = tapsteer.run(fd, f)
                    assert q == _fastpath.flow_queue(f, nq), (nq, f.hex())
                    seen.add(q)
            assert seen == set(range(1, nq))
        finally:
            os.close(fd)


def test_the_tap_has_its_queues_and_the_hosts_flows_use_them(topo, dataplane):
    h1, h2, dev = storm.setup(topo, _kind(dataplane), ("--queues", str(QUEUES)))
    assert _queues(h1, dev) == (QUEUES if _fast(dataplane) else 2)
    ping(h1, storm.OVERLAY[1], count=10)
    assert_tcp_transfer(h1, h2, storm.OVERLAY[1])
    assert_tcp_transfer(h2, h1, storm.OVERLAY[0])
    reads = _stats(h1, dev)["tap"].get("queue_reads")
    if not _fast(dataplane):
        assert reads is None                # the pure loop does not count its reads
        return
    assert len(reads) == QUEUES
    assert sum(reads[1:]) > 0, reads        # the host's IP flows came back on queues 1..N-1
    assert "tap_steering" in _features(h1, dev)


def test_a_storm_is_accounted_for_and_read_from_queue_0_only(topo, dataplane):
    fast = _fast(dataplane)
    h1, h2, dev = storm.setup(topo, _kind(dataplane), ("--queues", str(QUEUES)))
    ping(h1, storm.OVERLAY[1], count=3)     # the host knows its peer: no ARP of its own now
    before = _stats(h1, dev)
    rate, seconds = (5000, 2) if fast else (500, 2)
    gen = h1.popen(python("-m", "bench.storm", "--generate", dev, "--rate", str(rate),
                          "--seconds", str(seconds)), stdout=subprocess.PIPE, text=True)
    try:
        out = h1.run(f"ping -n -c 20 -i 0.05 -W 2 {storm.OVERLAY[1]}", timeout=60)
    finally:
        offered, _ = gen.communicate(timeout=60)
    assert out.returncode == 0 or " 0 received" not in out.stdout, out.stdout
    gen_said = json.loads(offered.strip().splitlines()[-1])
    assert gen_said["taken"] >= rate * seconds * 0.5, gen_said
    after = _stats(h1, dev)
    seen = storm.accounted(after) - storm.accounted(before)
    # every frame the device took is answered or counted (the host's own few on top)
    assert gen_said["taken"] <= seen <= gen_said["taken"] + 200, (gen_said, before, after)
    if not fast:
        return
    reads = [b - a for a, b in zip(before["tap"]["queue_reads"], after["tap"]["queue_reads"],
                                   strict=True)]
    answered = after["proxy_replies"] - before["proxy_replies"]
    # the storm on queue 0 (but for its first frames, before a reply pinned ARP there) ...
    assert reads[0] >= answered - 50, (reads, answered)
    # ... and on queues 1..N-1 only the pings (and the host's IPv6 chatter)
    assert 15 <= sum(reads[1:]) <= 200, reads
