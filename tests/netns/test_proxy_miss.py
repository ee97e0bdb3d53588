"""The ARP/ND proxy, the neighbour table and the L2/L3 miss events, against the kernel's vxlan
driver (vxlan_xmit's arp_reduce/neigh_reduce and vxlan_fdb_miss), in namespaces.

* ``ip neigh`` on a VTEP: ``vxtun neigh`` accepts, refuses and prints what ``ip neigh`` does
  on a kernel vxlan device beside it.
* The proxy's answers are the kernel's byte for byte (ARP replies as arp_create builds them,
  NAs as vxlan_na_create does), and both raise the same misses for the same frames.
* The proxy scenario: with the tables filled by hand, ARP (and for an IPv6 overlay, ND) is
  answered on the host; nothing of it crosses the underlay (counted on the underlay bridge);
  ping works.
* The miss scenario, a bridge with the VTEP and a container on each host, once with a kernel
  VTEP and once with vxtun in the same place: the same misses in the same order (L3 miss,
  then L2 miss once the neighbour is added, then, after a ``reachable`` answer expired and the
  entry is gone, the L3 miss again), and ping works once they are answered.
* tools/resolver.py answers the misses of two vxtun VTEPs by itself, again after expiry.
* A listener that never reads loses events; the VTEP forwards and answers as before.

Every test runs once per dataplane (``fast``, ``pure``).
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from helpers import Tcpdump, exchange, flood_unicast, mac_of, poll, vxtun_up
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import (ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
                                ICMPv6NDOptSrcLLAddr, IPv6)
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vxlan import VXLAN  # noqa: F401  (binds VXLAN to UDP 4789 for parsing)

from vxtun.lab.netns import Host, python, run, set_container

ROOT = Path(__file__).resolve().parents[2]
RESOLVER = ROOT / "tools" / "resolver.py"
ASKER = "52:5e:55:58:9a:ab"         # a host behind the VTEP that sends requests
PEER = "b2:ee:aa:42:8b:0b"          # the neighbour the tables know
C1, C2 = "10.20.1.2", "10.20.1.3"

def no_ipv6(ns: str) -> None:
    """Keep IPv6 chatter (DAD, router solicitations) out of an IPv4 scenario's events."""
    run(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
        "net.ipv6.conf.default.disable_ipv6=1")


def cping(ns: str, dst: str, wait: int = 1) -> bool:
    """One ping from a container namespace; True if it came back."""
    return run(f"ip netns exec {ns} ping -c1 -W{wait} {dst}", check=False).returncode == 0


def cping_until(ns: str, dst: str, tries: int = 10) -> bool:
    return any(cping(ns, dst) for _ in range(tries))


# --- the same command on a kernel VTEP or on vxtun -----------------------------------------

def table(host: Host, kind: str, what: str, *words: str, check: bool = True):
    """``ip neigh ...`` / ``bridge fdb ...`` on a kernel device, ``vxtun neigh|fdb ...`` on
    vxtun: the same words."""
    if kind == "kernel":
        tool = "ip neigh" if what == "neigh" else "bridge fdb"
        return host.run(f"{tool} {' '.join(words)}", check=check)
    return host.run_vxtun(what, *" ".join(words).split(), check=check)


def neigh_json(host: Host, kind: str, dev: str, *filters: str) -> list[dict]:
    out = table(host, kind, "neigh", "show", *filters, "dev", dev, "-j").stdout \
        if kind != "kernel" else host.sh(f"ip -j neigh show {' '.join(filters)} dev {dev}")
    return json.loads(out or "[]")


class Monitor:
    """``ip monitor neigh dev vxlan0`` or ``vxtun monitor dev vxtun0``, read in a thread."""

    def __init__(self, host: Host, kind: str, dev: str, env: dict | None = None) -> None:
        self.host, self.kind, self.dev = host, kind, dev
        args = ["ip", "monitor", "neigh", "dev", dev] if kind == "kernel" else \
            python("-m", "vxtun", "monitor", "dev", dev)
        self.p = host.popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self._n = 0
        self.sync()

    def _read(self) -> None:
        for line in self.p.stdout:
            with self._cv:
                self.lines.append(line.strip())
                self._cv.notify_all()

    def wait_for(self, pred, start: int = 0, timeout: float = 15.0) -> str:
        deadline = time.time() + timeout
        with self._cv:
            while True:
                for ln in self.lines[start:]:
                    if pred(ln):
                        return ln
                left = deadline - time.time()
                if left <= 0:
                    raise AssertionError(f"{self.kind} monitor never showed it; saw "
                                         f"{self.lines[start:]}")
                self._cv.wait(left)

    def sync(self) -> None:
        """Return once every event raised before this call has been printed: make a change
        and wait for it (events of one device are delivered in order).  The first call also
        waits for the monitor to have subscribed, so it repeats the change until seen."""
        for _ in range(50):
            self._n += 1
            ip = f"10.20.255.{self._n % 250 + 1}"
            start = len(self.lines)
            table(self.host, self.kind, "neigh", "add", ip, "lladdr", "02:00:00:00:00:fe",
                  "dev", self.dev)
            try:
                self.wait_for(lambda ln, ip=ip: ln.startswith(ip + " "), start, timeout=1.0)
            except AssertionError:
                table(self.host, self.kind, "neigh", "del", ip, "dev", self.dev)
                continue
            table(self.host, self.kind, "neigh", "del", ip, "dev", self.dev)
            self.wait_for(lambda ln, ip=ip: ln.startswith(f"Deleted {ip} "), start)
            return
        raise AssertionError(f"{self.kind} monitor never started: {self.lines}")

    def misses(self, start: int = 0) -> list[str]:
        """The miss lines since ``start``, consecutive repeats folded (the kernel reports
        every retry, vxtun at most one per second)."""
        out: list[str] = []
        for ln in self.lines[start:]:
            if ln.startswith("miss") and "fe80:" not in ln and (not out or out[-1] != ln):
                out.append(ln)
        return out

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
        self.p.wait(10)


# --- ip neigh on a VTEP ---------------------------------------------------------------------

def side_by_side(topo, dataplane, *flags: str) -> Host:
    """One host with a kernel vxlan0 (port 4789) and a vxtun0 (port 4790), same flags."""
    h = topo.host("h1", "192.0.2.1/24")
    kflags = " ".join(f.lstrip("-") for f in flags)
    h.sh(f"ip link add vxlan0 type vxlan id 42 dstport 4789 local 192.0.2.1 dev eth0 "
         f"nolearning {kflags}")
    h.sh("ip link set vxlan0 up")
    vxtun_up(h, dataplane, "--vni", "42", "--local", "192.0.2.1", "--dev", "eth0",
             "--dstport", "4790", "--nolearning", *flags)
    return h


def test_neigh_commands_and_output_are_ip_neighs(topo, dataplane):
    h = side_by_side(topo, dataplane, "--proxy")
    script = [
        "add 10.20.1.3 lladdr b2:ee:aa:42:8b:0b",
        "add 10.20.1.4 lladdr 52:5e:55:58:9a:ab nud reachable",
        "add 10.20.1.5 lladdr 52:5e:55:58:9a:ac nud stale",
        "add 10.20.1.6 lladdr 52:5e:55:58:9a:ad nud noarp",
        "add 2001:db8:1020::3 lladdr b2:ee:aa:42:8b:0b",
        "add 10.20.1.3 lladdr b2:ee:aa:42:8b:0b",          # exists
        "change 10.20.1.9 lladdr b2:ee:aa:42:8b:0b",       # does not exist
        "del 10.20.1.9",                                   # does not exist
        "replace 10.20.1.7 lladdr 02:00:00:00:00:07 nud reachable",
        "replace 10.20.1.3 lladdr b2:ee:aa:42:8b:0c",
        "change 10.20.1.7 lladdr 02:00:00:00:00:77 nud permanent",
        "add 10.20.1.8 lladdr 02:00:00:00:00:08",
        "del 10.20.1.8",
    ]
    for cmd in script:
        k = table(h, "kernel", "neigh", cmd, "dev", "vxlan0", check=False)
        v = table(h, "vxtun", "neigh", cmd, "dev", "vxtun0", check=False)
        assert (k.returncode == 0) == (v.returncode == 0), (cmd, k.stderr, v.stderr)

    def ours(line: str) -> bool:
        # The kernel's own stack adds entries of its own (ff02::16 NOARP for MLD): not ours.
        return line.strip().startswith(("10.20.", "2001:db8:1020:"))

    def same(kernel_cmd: str, vxtun_args: list[str]) -> None:
        k = sorted(ln.strip() for ln in h.sh(kernel_cmd).splitlines() if ours(ln))
        v = sorted(ln.strip().replace("vxtun0", "vxlan0")
                   for ln in h.cmd(*vxtun_args).splitlines() if ln.strip())
        assert v == k, (kernel_cmd, k, v)

    same("ip neigh show dev vxlan0", ["neigh", "show", "dev", "vxtun0"])
    same("ip neigh show nud all dev vxlan0", ["neigh", "show", "nud", "all", "dev", "vxtun0"])
    same("ip neigh show nud stale dev vxlan0", ["neigh", "show", "nud", "stale", "dev", "vxtun0"])
    # Without a device each line names it; the root namespace's devices are not ours.
    k_all = sorted(ln.strip() for ln in h.sh("ip neigh show").splitlines()
                   if "vxlan0" in ln and ours(ln))
    v_all = sorted(ln.strip().replace("vxtun0", "vxlan0")
                   for ln in h.cmd("neigh", "show").splitlines())
    assert v_all == k_all
    def by_dst(rows: list[dict]) -> list[dict]:
        return sorted((r for r in rows if ours(r["dst"])), key=lambda r: r["dst"])
    assert by_dst(neigh_json(h, "vxtun", "vxtun0")) == by_dst(neigh_json(h, "kernel", "vxlan0"))
    # ip neigh flush keeps permanent and noarp entries.
    h.sh("ip neigh flush dev vxlan0")
    h.cmd("neigh", "flush", "dev", "vxtun0")
    same("ip neigh show nud all dev vxlan0", ["neigh", "show", "nud", "all", "dev", "vxtun0"])


# --- the proxy's answers and the misses, frame by frame ---------------------------------------

def arp(tip: str, sip: str = C1, hwtype: int = 1) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=ASKER) /
                 ARP(hwtype=hwtype, hwlen=6, plen=4, op=1, hwsrc=ASKER, psrc=sip, pdst=tip))


def ns(target: str, src: str = "2001:db8:1020::2", sllao: str | None = "0a:00:00:00:00:99",
       tc: int = 0) -> bytes:
    pkt = Ether(dst="33:33:ff:00:00:03", src=ASKER) / \
        IPv6(src=src, dst="ff02::1:ff00:3", hlim=255, tc=tc) / ICMPv6ND_NS(tgt=target)
    if sllao:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=sllao)
    return bytes(pkt)


def unicast(dst: str) -> bytes:
    return bytes(Ether(dst=dst, src=ASKER) / IP(src=C1, dst=C2) / ICMP())


def test_answers_and_misses_are_the_kernels_byte_for_byte(topo, dataplane):
    h = side_by_side(topo, dataplane, "--proxy", "--l2miss", "--l3miss")
    mons = {"kernel": Monitor(h, "kernel", "vxlan0"), "vxtun": Monitor(h, "vxtun", "vxtun0")}
    for kind, dev in (("kernel", "vxlan0"), ("vxtun", "vxtun0")):
        for words in (f"add 10.20.1.3 lladdr {PEER}", f"add 2001:db8:1020::3 lladdr {PEER}",
                      f"add 10.20.1.5 lladdr {PEER} nud stale"):
            table(h, kind, "neigh", words, "dev", dev)
        table(h, kind, "fdb", f"add {PEER} dst 192.0.2.2 dev {dev}")
    answered = [
        arp("10.20.1.3"),
        arp("10.20.1.3", sip="0.0.0.0"),                  # an ARP probe (RFC 5227)
        arp("10.20.1.3", sip="10.20.1.4", hwtype=6),      # ARPHRD_IEEE802
        ns("2001:db8:1020::3"),                           # NA to the SLLAO's address
        ns("2001:db8:1020::3", sllao=None, src="2001:db8:1020::4"),   # to the Ethernet source
        ns("2001:db8:1020::3", tc=0xB8, src="2001:db8:1020::5"),      # priority bits copied
        ns("2001:db8:1020::3", src="::", sllao=None),     # DAD: the NA goes to ::
    ]
    bad_option = bytearray(ns("2001:db8:1020::3", src="2001:db8:1020::6"))
    bad_option[-7] = 0                                     # an option of length 0
    silent = [
        arp("10.20.1.5"),                                 # stale: no answer, no miss
        arp("224.0.0.5"),                                 # multicast target
        bytes(bad_option),                                # malformed NS: no NA
        arp("10.20.1.9"),                                 # unknown: L3 miss
        ns("2001:db8:1020::9"),                           # unknown: L3 miss
        unicast("02:aa:00:00:00:01"),                     # unknown unicast: L2 miss
        unicast("00:00:00:00:00:00"),                     # the zero MAC is unicast too
        unicast("ff:ff:ff:ff:ff:ff"),                     # broadcast: never an L2 miss
        unicast("01:00:5e:00:00:05"),                     # multicast: never an L2 miss
        unicast("33:33:00:00:00:01"),
        unicast(PEER),                                    # known: sent, no miss
    ]
    replies, misses = {}, {}
    for kind, dev in (("kernel", "vxlan0"), ("vxtun", "vxtun0")):
        start = len(mons[kind].lines)
        replies[kind] = exchange(h, dev, answered + silent, wait=1.0)
        mons[kind].sync()
        misses[kind] = mons[kind].misses(start)
    for m in mons.values():
        m.close()
    assert len(replies["kernel"]) == len(answered), replies["kernel"]
    assert sorted(replies["vxtun"]) == sorted(replies["kernel"])
    assert misses["kernel"] == ["miss 10.20.1.9 STALE", "miss 2001:db8:1020::9 STALE",
                                "miss lladdr 02:aa:00:00:00:01 STALE",
                                "miss STALE"]    # the zero MAC: no NDA_LLADDR
    assert misses["vxtun"] == misses["kernel"]


# --- the proxy scenario: the ARP proxy keeps ARP off the underlay ---------------------------

def proxy_pair(topo, dataplane, family: int):
    """h1: vxtun --proxy, h2: a kernel vxlan0 with proxy; flood lists, FDB and neighbour
    tables filled by hand."""
    h1 = topo.host("h1", "192.0.2.1/24")
    h2 = topo.host("h2", "192.0.2.2/24")
    a1, a2, plen = (C1, C2, 24) if family == 4 else ("2001:db8:1020::2", "2001:db8:1020::3", 64)
    for h in (h1, h2):       # no duplicate address detection delay on the overlay address
        h.sh("sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0")
    vxtun_up(h1, dataplane, "--vni", "42", "--local", "192.0.2.1", "--dev", "eth0",
             "--dstport", "4789", "--nolearning", "--proxy", "--address", f"{a1}/{plen}")
    h2.sh("ip link add vxlan0 type vxlan id 42 dstport 4789 local 192.0.2.2 dev eth0 "
          "nolearning proxy")
    h2.sh(f"ip addr add {a2}/{plen} dev vxlan0 nodad; ip link set vxlan0 up")
    m1, m2 = mac_of(h1, "vxtun0"), mac_of(h2, "vxlan0")
    h1.cmd("fdb", "append", "00:00:00:00:00:00", "dst", "192.0.2.2", "dev", "vxtun0")
    h1.cmd("fdb", "append", m2, "dst", "192.0.2.2", "dev", "vxtun0")
    h1.cmd("neigh", "add", a2, "lladdr", m2, "dev", "vxtun0")
    h2.sh(f"bridge fdb append 00:00:00:00:00:00 dst 192.0.2.1 dev vxlan0; "
          f"bridge fdb append {m1} dst 192.0.2.1 dev vxlan0; "
          f"ip neigh add {a1} lladdr {m1} dev vxlan0")
    return h1, h2, a2, m2


def test_proxy_arp_is_answered_on_the_host(topo, dataplane):
    h1, h2, a2, m2 = proxy_pair(topo, dataplane, 4)
    with Tcpdump(topo, "udp port 4789") as cap:
        out = h1.run(f"ping -c 3 -i 0.2 -W 2 {a2}")
    assert out.returncode == 0, out.stdout
    # The host resolved the peer through the proxy (its own ARP cache on vxtun0) ...
    assert json.loads(h1.sh(f"ip -j neigh show {a2} dev vxtun0"))[0]["lladdr"] == m2
    stats = json.loads(h1.cmd("stats", "-j"))[0]
    assert stats["proxy_replies"] >= 1
    # ... and nothing ARP crossed the underlay, while the pings did.
    pkts = cap.packets()
    assert [p for p in pkts if ARP in p] == []
    assert sum(1 for p in pkts if ICMP in p and p[ICMP].type == 8) >= 3
    assert sum(1 for p in pkts if ICMP in p and p[ICMP].type == 0) >= 3


def test_proxy_nd_is_answered_on_the_host(topo, dataplane):
    h1, h2, a2, m2 = proxy_pair(topo, dataplane, 6)
    with Tcpdump(topo, "udp port 4789") as cap:
        out = h1.run(f"ping -6 -c 3 -i 0.2 -W 2 {a2}")
    assert out.returncode == 0, out.stdout
    assert json.loads(h1.sh(f"ip -j neigh show {a2} dev vxtun0"))[0]["lladdr"] == m2
    assert json.loads(h1.cmd("stats", "-j"))[0]["proxy_replies"] >= 1
    pkts = cap.packets()
    assert [p for p in pkts if ICMPv6ND_NS in p or ICMPv6ND_NA in p or ARP in p] == []
    assert sum(1 for p in pkts if ICMPv6EchoRequest in p) >= 3
    assert sum(1 for p in pkts if ICMPv6EchoReply in p) >= 3


# --- the miss scenario: misses, answered by hand, against the kernel -------------------------

REACHABLE = 3       # seconds; the kernel draws 0.5x..1.5x of base_reachable_time_ms
GC_STALE = 8        # vxtun's --gc-stale-time for the run


def bridged_host(topo, name: str, ip: str, overlay: str, kind: str, dataplane: dict):
    """A host with a bridge br0, the VTEP enslaved to it and one container.  IPv4 only."""
    h = topo.host(name, f"{ip}/24")
    no_ipv6(h.ns)
    h.sh("ip link add br0 type bridge; ip link set br0 up")
    if kind == "kernel":
        h.sh(f"ip link add vxlan0 type vxlan id 42 dstport 4789 local {ip} dev eth0 "
             "nolearning proxy l2miss l3miss")
        h.sh("ip link set vxlan0 master br0 up")
        h.sh(f"sysctl -qw net.ipv4.neigh.vxlan0.base_reachable_time_ms={REACHABLE * 1000}")
        dev = "vxlan0"
    else:
        vxtun_up(h, dataplane, "--vni", "42", "--local", ip, "--dev", "eth0", "--dstport", "4789",
                 "--nolearning", "--proxy", "--l2miss", "--l3miss", "--master", "br0",
                 "--reachable-time", str(REACHABLE), "--gc-stale-time", str(GC_STALE))
        dev = "vxtun0"
    c = set_container(h, "br0", "c", overlay)
    no_ipv6(c)
    mac = json.loads(run(f"ip -n {c} -j link show eth0").stdout)[0]["address"]
    return h, dev, c, mac


def peer_host(topo):
    """h2: a kernel VTEP that knows every container behind the VTEPs under test."""
    h2, dev, c2, m2 = bridged_host(topo, "h2", "192.0.2.2", f"{C2}/24", "kernel", {})
    return h2, c2, m2


def miss_sequence(topo, kind: str, dataplane: dict, h2: Host, m2: str, name: str, ip: str,
              overlay: str) -> list[str]:
    h1, dev, c1, m1 = bridged_host(topo, name, ip, f"{overlay}/24", kind, dataplane)
    h2.sh(f"ip neigh add {overlay} lladdr {m1} dev vxlan0; "
          f"bridge fdb add {m1} dst {ip} dev vxlan0")
    mon = Monitor(h1, kind, dev)
    try:
        start = len(mon.lines)
        # The first packet: c1 asks for C2's MAC, the VTEP does not know C2 -> L3 miss.
        assert not cping(c1, C2)
        mon.wait_for(lambda ln: ln == f"miss {C2} STALE", start)
        table(h1, kind, "neigh", "replace", C2, "lladdr", m2, "dev", dev, "nud", "reachable")
        # The ARP is answered now; the echo finds no FDB entry for m2 -> L2 miss.
        assert not cping(c1, C2, wait=2)
        mon.wait_for(lambda ln: ln == f"miss lladdr {m2} STALE", start)
        table(h1, kind, "fdb", "add", m2, "dst", "192.0.2.2", "dev", dev)
        assert cping_until(c1, C2), f"{kind}: ping fails once both misses are answered"

        # A reachable answer expires: not answered from, and no miss, while the entry stays.
        table(h1, kind, "neigh", "replace", C2, "lladdr", m2, "dev", dev, "nud", "reachable")
        expired = poll(lambda: [n for n in neigh_json(h1, kind, dev, C2)
                                if n["state"][0] not in ("REACHABLE", "PERMANENT", "NOARP")])
        assert expired, f"{kind}: {C2} never left REACHABLE"
        mark = len(mon.lines)
        run(f"ip -n {c1} neigh flush dev eth0")
        assert not cping(c1, C2)
        mon.sync()
        assert mon.misses(mark) == [], f"{kind}: a miss for an entry that still exists"
        # Once the entry is gone, the next use raises the miss again.  vxtun collects the
        # stale entry by itself after --gc-stale-time; the kernel collects it only when its
        # neighbour table (all namespaces) holds gc_thresh1 (128) entries, so here its
        # collection is stood in for by deleting the entry.
        if kind == "kernel":
            table(h1, kind, "neigh", "del", C2, "dev", dev)
        else:
            mon.wait_for(lambda ln: ln.startswith(f"Deleted {C2} lladdr {m2}"), mark,
                         timeout=GC_STALE + 10)
        run(f"ip -n {c1} neigh flush dev eth0")
        assert not cping(c1, C2)
        mon.wait_for(lambda ln: ln == f"miss {C2} STALE", mark)
        table(h1, kind, "neigh", "replace", C2, "lladdr", m2, "dev", dev, "nud", "permanent")
        assert cping_until(c1, C2)
        mon.sync()
        return mon.misses(start)
    finally:
        mon.close()


_kernel_sequence: list[str] = []


def test_misses_as_the_kernel_raises_them(topo, dataplane):
    h2, c2, m2 = peer_host(topo)
    if not _kernel_sequence:        # the kernel's run does not depend on the dataplane
        seq = miss_sequence(topo, "kernel", {}, h2, m2, "hk", "192.0.2.1", C1)
        _kernel_sequence.extend(ln.replace(m2, "MAC") for ln in seq)
    seq = miss_sequence(topo, "vxtun", dataplane, h2, m2, "hv", "192.0.2.3", "10.20.1.4")
    want = [f"miss {C2} STALE", "miss lladdr MAC STALE", f"miss {C2} STALE"]
    assert _kernel_sequence == want
    assert [ln.replace(m2, "MAC") for ln in seq] == want


# --- the resolver: the miss scenario done by a program ----------------------------------------

def test_resolver_answers_misses_end_to_end(topo, dataplane, tmp_path):
    hosts = []
    macs = {"h1": "02:00:00:00:01:02", "h2": "02:00:00:00:01:03"}
    ips = {"h1": ("192.0.2.1", C1), "h2": ("192.0.2.2", C2)}
    tab = tmp_path / "hosts.txt"
    tab.write_text("".join(f"{ov} {macs[n]} {ul}  # {n}\n" for n, (ul, ov) in ips.items()))
    for name, (ul, ov) in ips.items():
        h = topo.host(name, f"{ul}/24")
        no_ipv6(h.ns)
        vxtun_up(h, dataplane, "--vni", "42", "--local", ul, "--dev", "eth0", "--dstport", "4789",
                 "--nolearning", "--proxy", "--l2miss", "--l3miss", "--mac", macs[name],
                 "--address", f"{ov}/24", "--reachable-time", "2", "--gc-stale-time", "3")
        p = h.popen(python(str(RESOLVER), "dev", "vxtun0", "--table", str(tab)),
                    env=dataplane, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert json.loads(p.stdout.readline()) == {"ready": "vxtun0"}
        hosts.append((h, p))
    (h1, r1), (h2, r2) = hosts

    def ping_ok() -> bool:
        return h1.run(f"ping -c1 -W1 {C2}").returncode == 0

    assert poll(ping_ok, timeout=20), "the resolvers never made the overlay work"
    # Expired and collected, the answer is asked for again and given again.
    assert poll(lambda: not json.loads(h1.cmd("neigh", "show", "-j")), timeout=20)
    h1.sh("ip neigh flush dev vxtun0")          # the host's own ARP cache on the TAP
    assert poll(ping_ok, timeout=20)
    for _h, p in hosts:
        p.terminate()
    out1, _ = r1.communicate(timeout=10)
    out2, _ = r2.communicate(timeout=10)
    done1 = [json.loads(ln) for ln in out1.splitlines()]
    done2 = [json.loads(ln) for ln in out2.splitlines()]
    l3 = [d for d in done1 if d.get("answered") == "l3miss" and d["dst"] == C2]
    assert len(l3) >= 2, done1                   # the first time, and after the expiry
    assert {"answered": "l2miss", "lladdr": macs["h2"], "dst": "192.0.2.2"} in done1
    assert {"answered": "l3miss", "dst": C1, "lladdr": macs["h1"], "nud": "reachable"} in done2
    assert {"answered": "l2miss", "lladdr": macs["h1"], "dst": "192.0.2.1"} in done2


# --- a listener that does not read ------------------------------------------------------------

def test_a_slow_listener_loses_events_not_packets(topo, dataplane):
    h1 = topo.host("h1", "192.0.2.1/24")
    h2 = topo.host("h2", "192.0.2.2/24")
    vxtun_up(h1, dataplane, "--vni", "42", "--local", "192.0.2.1", "--dev", "eth0",
             "--dstport", "4789", "--nolearning", "--l2miss", "--address", f"{C1}/24")
    h2.sh("ip link add vxlan0 type vxlan id 42 dstport 4789 remote 192.0.2.1 local 192.0.2.2 "
          f"dev eth0; ip addr add {C2}/24 dev vxlan0; ip link set vxlan0 up")
    m1, m2 = mac_of(h1, "vxtun0"), mac_of(h2, "vxlan0")
    h1.cmd("fdb", "add", m2, "dst", "192.0.2.2", "dev", "vxtun0")
    h1.sh(f"ip neigh replace {C2} lladdr {m2} dev vxtun0")
    # A subscriber that never reads, and one that does.
    stuck = h1.popen(python("-c",
                            "import sys, time; from vxtun.api import Controller; "
                            "s = Controller('vxtun0').subscribe(); print('ready', flush=True); "
                            "time.sleep(600)"), stdout=subprocess.PIPE, text=True)
    assert stuck.stdout.readline().strip() == "ready"
    reader = Monitor(h1, "vxtun", "vxtun0")
    # A TAP queue long enough for the whole burst: frames wait for the VTEP, not dropped.
    h1.sh("ip link set vxtun0 txqueuelen 100000")

    def counters() -> tuple[int, int, int, int]:
        s = json.loads(h1.cmd("stats", "-j"))[0]
        tap = json.loads(h1.sh("ip -j -s link show vxtun0"))[0]["stats64"]["tx"]["dropped"]
        return s["drops"]["no_remote"], tap, s["l2miss"], s["events"]["lost"]

    n = 20000
    # Bursts of at most one punt queue's worth (QLEN in vxtun/fastpath/state.pxd): on the fast
    # path every frame then reaches the core and raises its miss, so the misses are many more
    # than the stuck listener's buffers hold, however fast the loop drains the queue.
    burst = 1000
    before = counters()
    for first in range(0, n, burst):
        assert flood_unicast(h1, "vxtun0", burst, m1, first) == {"sent": burst}
        # Every frame is decided by the VTEP (dropped for want of a destination) or, had the
        # TAP queue overflowed, counted there; the loop never waited for the listener.
        assert poll(lambda k=first + burst: (counters()[0] - before[0])
                    + (counters()[1] - before[1]) >= k, timeout=60), (before, counters())
    after = counters()
    assert after[2] > before[2]           # misses were raised ...
    assert after[3] > before[3]           # ... and the stuck listener lost some
    # The reading listener got events, the VTEP answers and forwards as before.
    reader.wait_for(lambda ln: ln.startswith("miss lladdr 02:aa:"))
    reader.sync()
    reader.close()
    out = h1.run(f"ping -c 3 -i 0.2 -W 2 {C2}")
    assert out.returncode == 0, out.stdout
    stuck.kill()
