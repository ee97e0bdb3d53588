"""The FDB's corner cases, on a kernel VTEP and on vxtun configured with the same words.

Host h1 runs ``ip link add vxlan0 type vxlan WORDS``, host h2 ``vxtun up vxtun0 WORDS`` (the
same words: vxtun/cli/requests.py ``up_words``), host h3 and h4 are other VTEPs' addresses
that send crafted VXLAN datagrams and receive what the two send.  Each test compares what an
observer sees of the two: frames on the overlay device, datagrams on the underlay bridge,
``bridge fdb show`` against ``vxtun fdb show``, ``ip -s link`` against ``vxtun stats``,
``bridge monitor fdb`` against ``vxtun monitor``.

* ``nolearning``: a zero or multicast inner source MAC is delivered (vxlan_snoop checks
  is_valid_ether_addr and runs only with learning).
* The own-MAC check follows ``ip link set DEV address`` (vxlan_set_mac reads dev_addr).
* ``ageing 0`` is the default 300 s (vxlan_config_validate), not "forget at once".
* Remotes: ``port`` and ``vni`` are used, and a ``dst 0.0.0.0`` copy is dropped and counted
  (vxlan_xmit_one).  ``vni 0`` is VNI 0 on the wire: vxlan_xmit_one's ``rdst->remote_vni ? :
  default_vni`` falls back to a default_vni that vxlan_xmit leaves 0 on a device that is not
  ``external`` (seen on Linux 6.18), so it is not "the device's VNI".
* A learned MAC that moves keeps its port and VNI (vxlan_snoop rewrites remote_ip only);
  ``fdb show -s`` has its timers as ``bridge -s fdb show``.
* An entry that expires while traffic is sent to it is reported deleted (vxlan_cleanup).

Observed on Linux 6.18 with iproute2 6.1.  Every test runs once per dataplane.
"""
from __future__ import annotations

import json
import re
import subprocess
import threading
import time

from helpers import RxFrames, Tcpdump, inject, send_udp, vxtun_json, vxtun_up
from scapy.layers.inet import UDP

from vxtun.lab.netns import python
from vxtun.wire.ether import mac_from_str
from vxtun.wire.vxlan import encode_header

U1, U2, U3, U4 = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"
MAC = "02:11:22:33:44:01"
MARKER = b"parity-fdb-end"
ZERO_SRC = "00:00:00:00:00:00"
MCAST_SRC = "01:00:5e:00:00:07"


def setup(topo, dataplane, words: str, kernel_words: str | None = None):
    """h1 with a kernel VTEP and h2 with vxtun, both from ``words``; h3 and h4 as peers.
    IPv6 is off everywhere, so no DAD or router solicitation crosses the tunnel."""
    hs = [topo.host(f"h{i}", f"192.0.2.{i}/24") for i in range(1, 5)]
    for h in hs:
        h.sh("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")
    h1, h2, h3, h4 = hs
    h1.sh(f"ip link add vxlan0 type vxlan {kernel_words or words} local {U1} dev eth0")
    h1.sh("ip link set vxlan0 up")
    vxtun_up(h2, dataplane, "vxtun0", *words.split(), "local", U2, "dev", "eth0")
    return h1, h2, h3, h4


def fdb(host, kind: str, *words: str, stats: bool = False) -> str:
    """``bridge [-s] fdb WORDS dev vxlan0`` on the kernel, ``vxtun fdb WORDS [-s] dev
    vxtun0`` on vxtun."""
    if kind == "kernel":
        return host.sh(f"bridge {'-s ' if stats else ''}fdb {' '.join(words)} dev vxlan0")
    return host.cmd("fdb", *words, *(["-s"] if stats else []), "dev", "vxtun0")


def fdb_lines(host, kind: str, stats: bool = False) -> set[str]:
    """``fdb show`` as a set of lines (the kernel lists in hash order), with the trailing
    blank the kernel prints after a dynamic entry's empty state removed."""
    return {ln.strip() for ln in fdb(host, kind, "show", stats=stats).splitlines()
            if ln.strip()}


def vni_of(pkt) -> int:
    """The VNI of a captured datagram (scapy decodes VXLAN on port 4789 only)."""
    return int.from_bytes(bytes(pkt[UDP].payload)[4:7], "big")


def datagram(src: str, dst: str = "ff:ff:ff:ff:ff:ff", payload: bytes = b"probe") -> bytes:
    inner = mac_from_str(dst) + mac_from_str(src) + b"\x88\xb5" + payload.ljust(46, b".")
    return encode_header(42) + inner


# --- receive --------------------------------------------------------------------------------

def test_nolearning_delivers_invalid_source_macs(topo, dataplane):
    h1, h2, h3, _ = setup(topo, dataplane, f"id 42 dstport 4789 remote {U3} nolearning")
    got = {}
    for kind, host, dev, ip in (("kernel", h1, "vxlan0", U1), ("vxtun", h2, "vxtun0", U2)):
        with RxFrames(host, dev, MARKER) as rx:
            send_udp(h3, ip, 4789, [datagram(ZERO_SRC, payload=b"zero-src"),
                                    datagram(MCAST_SRC, payload=b"mcast-src"),
                                    datagram("02:00:00:00:00:01", payload=MARKER)])
        got[kind] = sorted(f[14:23] for f in rx.frames if MARKER not in f)
        assert fdb_lines(host, kind) == {f"00:00:00:00:00:00 dst {U3} via eth0 self permanent"}
    assert got["kernel"] == sorted([b"zero-src.", b"mcast-src"])
    assert got["vxtun"] == got["kernel"]


def test_own_mac_is_the_live_address(topo, dataplane):
    """``ip link set DEV address NEW``: a datagram whose inner source is NEW is ours, dropped
    and not learned; the old address is now a stranger's, learned."""
    h1, h2, h3, _ = setup(topo, dataplane, f"id 42 dstport 4789 remote {U3}")
    new = "02:aa:bb:cc:dd:99"
    old = {}
    for kind, host, dev in (("kernel", h1, "vxlan0"), ("vxtun", h2, "vxtun0")):
        old[kind] = json.loads(host.sh(f"ip -j link show {dev}"))[0]["address"]
        host.sh(f"ip link set {dev} address {new}")
    time.sleep(1.5)             # vxtun reads the TAP's address once a second
    for kind, host, dev, ip in (("kernel", h1, "vxlan0", U1), ("vxtun", h2, "vxtun0", U2)):
        with RxFrames(host, dev, MARKER) as rx:
            send_udp(h3, ip, 4789, [datagram(new, payload=b"from-new"),
                                    datagram(old[kind], payload=b"from-old"),
                                    datagram("02:00:00:00:00:01", payload=MARKER)])
        assert sorted(f[14:22] for f in rx.frames if MARKER not in f) == [b"from-old"], kind
        macs = {ln.split()[0] for ln in fdb_lines(host, kind)}
        assert new not in macs and old[kind] in macs, (kind, macs)
    assert vxtun_json(h2, "show", "dev", "vxtun0")[0]["address"] == new


# --- ageing 0 ------------------------------------------------------------------------------

def test_ageing_zero_is_the_default(topo, dataplane):
    h1, h2, h3, _ = setup(topo, dataplane, f"id 42 dstport 4789 remote {U3} ageing 0")
    info = json.loads(h1.sh("ip -d -j link show vxlan0"))[0]["linkinfo"]["info_data"]
    assert info["ageing"] == 300
    assert vxtun_json(h2, "show", "dev", "vxtun0")[0]["ageing"] == 300
    for ip in (U1, U2):
        send_udp(h3, ip, 4789, [datagram(MAC)])
    time.sleep(1.5)             # "ageing 0" read as 0 s would have forgotten it by now
    for host, kind in ((h1, "kernel"), (h2, "vxtun")):
        assert f"{MAC} dst {U3} self" in fdb_lines(host, kind), kind


# --- remotes: port, vni, vni 0, dst 0.0.0.0 --------------------------------------------------

REMOTES = [("append", "00:00:00:00:00:00", "dst", "0.0.0.0"),
           ("append", "00:00:00:00:00:00", "dst", U3, "port", "5000", "vni", "0"),
           ("append", "00:00:00:00:00:00", "dst", U3, "vni", "77"),
           ("append", "00:00:00:00:00:00", "dst", U4),
           ("add", MAC, "dst", "0.0.0.0")]


def tx_dropped(host, kind: str) -> int:
    if kind == "kernel":
        return json.loads(host.sh("ip -s -j link show vxlan0"))[0]["stats64"]["tx"]["dropped"]
    return vxtun_json(host, "stats", "dev", "vxtun0")[0]["drops"]["no_remote"]


def test_remote_port_vni_and_any_address(topo, dataplane):
    h1, h2, _, _ = setup(topo, dataplane, "id 42 dstport 4789")
    sent = {}
    for kind, host, dev in (("kernel", h1, "vxlan0"), ("vxtun", h2, "vxtun0")):
        for words in REMOTES:
            fdb(host, kind, *words)
        before = tx_dropped(host, kind)
        bcast = "ffffffffffff" + "02aaaaaaaa01" + "88b5" + b"bcast".hex().ljust(92, "0")
        ucast = MAC.replace(":", "") + "02aaaaaaaa01" + "88b5" + b"ucast".hex().ljust(92, "0")
        with Tcpdump(topo, "udp") as cap:
            inject(host, dev, bcast, ucast)
            time.sleep(1.0)
        sent[kind] = sorted((p["IP"].dst, p[UDP].dport, vni_of(p)) for p in cap.packets()
                            if p.haslayer(UDP) and p[UDP].dport in (4789, 5000))
        assert tx_dropped(host, kind) - before == 2, kind      # the two copies to 0.0.0.0
    assert sent["kernel"] == sorted([(U3, 5000, 0), (U3, 4789, 77), (U4, 4789, 42)])
    assert sent["vxtun"] == sent["kernel"]
    # bridge fdb show lists them the same way (vni 0 shown as such, 0.0.0.0 kept)
    strip = re.compile(r" dev vx\w+")
    assert fdb_lines(h2, "vxtun") == {strip.sub("", ln) for ln in fdb_lines(h1, "kernel")}


# --- a learned MAC that moves keeps port and VNI ---------------------------------------------

def test_moved_mac_keeps_port_and_vni(topo, dataplane):
    h1, h2, h3, h4 = setup(topo, dataplane, "id 42 dstport 4789")
    for kind, host, ip in (("kernel", h1, U1), ("vxtun", h2, U2)):
        fdb(host, kind, "add", MAC, "dst", U3, "port", "5000", "vni", "77", "dynamic")
        send_udp(h4, ip, 4789, [datagram(MAC)])
    want = f"{MAC} dst {U4} port 5000 vni 77 self"
    for kind, host in (("kernel", h1), ("vxtun", h2)):
        deadline = time.time() + 10
        while want not in fdb_lines(host, kind) and time.time() < deadline:
            time.sleep(0.1)
        assert want in fdb_lines(host, kind), (kind, fdb_lines(host, kind))
        stats = [ln for ln in fdb_lines(host, kind, stats=True) if ln.startswith(MAC)]
        assert len(stats) == 1 and re.fullmatch(
            rf"{MAC} dst {U4} port 5000 vni 77 used \d+/\d+ self", stats[0]), (kind, stats)


# --- expiry is always reported ----------------------------------------------------------------

class Monitor:
    """``bridge monitor fdb`` or ``vxtun monitor dev vxtun0``, read in a thread."""

    def __init__(self, host, kind: str, env: dict) -> None:
        args = ["bridge", "monitor", "fdb"] if kind == "kernel" else \
            python("-m", "vxtun", "monitor", "dev", "vxtun0")
        self.kind = kind
        self.p = host.popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.append(line.strip())

    def wait_for(self, pred, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for ln in list(self.lines):
                if pred(ln):
                    return ln
            time.sleep(0.1)
        raise AssertionError(f"{self.kind} monitor never showed it; saw {self.lines}")


def test_expiry_under_traffic_is_reported(topo, dataplane):
    """Frames sent to a learned MAC every few milliseconds while it ages out: the kernel's
    vxlan_cleanup deletes it within its 10 s pass and notifies; vxtun removes it at the first
    lookup after its time (or its own 1 s pass) and must notify too."""
    h1, h2, h3, _ = setup(topo, dataplane, f"id 42 dstport 4789 remote {U3} ageing 3")
    mons = {}
    pings = []
    for kind, host, dev, ip in (("kernel", h1, "vxlan0", U1), ("vxtun", h2, "vxtun0", U2)):
        host.sh(f"ip addr add 10.20.1.{ip[-1]}/24 dev {dev}")
        host.sh(f"ip neigh replace 10.20.1.9 lladdr {MAC} dev {dev} nud permanent")
        mons[kind] = Monitor(host, kind, dataplane)
    time.sleep(1.0)             # the monitors subscribe
    for kind, host, ip in (("kernel", h1, U1), ("vxtun", h2, U2)):
        send_udp(h3, ip, 4789, [datagram(MAC)])
        mons[kind].wait_for(lambda ln: ln.startswith(MAC) and U3 in ln, 10)
        pings.append(host.popen(["ping", "-q", "-i", "0.01", "-w", "20", "10.20.1.9"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for kind in ("kernel", "vxtun"):
            ln = mons[kind].wait_for(lambda ln: ln.startswith(f"Deleted {MAC}"), 20)
            assert f"dst {U3} self" in ln, (kind, ln)
    finally:
        for p in pings:
            p.kill()
            p.wait()
        for m in mons.values():
            m.p.kill()
            m.p.wait()
