"""L2 switching like the kernel: the four multi-host scenarios (three hosts in multicast group
239.1.1.1, or ff0e::42; a bridge with two containers on each host; head-end replication to a
flood list; no learning, every MAC configured by hand), the FDB rules, flood exactness, the
``vxtun fdb`` commands, and several VTEPs sharing one UDP port.

Every scenario runs on three hosts with the mixes (kernel, vxtun, vxtun) and (vxtun x3); after
the pings, each VTEP's FDB must equal what a kernel VTEP in the same position holds.  The
kernel reference is the same scenario run once with three kernel VTEPs (in the same
topology, before the mix; cached per scenario for the rest of the session).  Every device has a
fixed MAC and the hosts' new devices have IPv6 off, so the FDBs hold only what the pings put in.

Counting in the underlay: ``Capture`` (tests/netns/helpers.py) reads every VXLAN datagram the
underlay bridge sends out of each host's port, i.e. exactly what arrives at each VTEP.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import (
    Capture,
    RxFrames,
    inject,
    links,
    poll,
    send_udp,
    send_vxlan_flood,
    vxtun_up,
    wait_until,
    wait_up,
)

from vxtun.lab.netns import Host, Topology, run, set_container

PORT = 4789
VNI = 42
GROUP4 = "239.1.1.1"
GROUP6 = "ff0e::42"
ZERO = "00:00:00:00:00:00"
MIXES = {"kkv": ("kernel", "vxtun", "vxtun"), "vvv": ("vxtun", "vxtun", "vxtun")}


def vtep_mac(i: int) -> str:
    return f"02:00:00:00:01:{i:02x}"


def ul4(i: int) -> str:
    return f"192.0.2.{i + 1}"


def ul6(i: int) -> str:
    return f"2001:db8::{i + 1}"


def frame(dst: str, src: str, tag: str, ethertype: int = 0x88B5) -> str:
    """An Ethernet frame (hex) with a local-experimental EtherType and ``tag`` as payload."""
    body = tag.encode().ljust(46, b"\0")
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
            + ethertype.to_bytes(2, "big") + body).hex()


def vxlan(vni: int, inner_hex: str) -> str:
    return (bytes([8, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0").hex() + inner_hex


# --- VTEPs of either kind ---------------------------------------------------------------------


class V:
    """One VTEP: a kernel vxlan device or a vxtun TAP, driven with the same words."""

    def __init__(self, host: Host, kind: str, name: str, proc=None, master_later=None) -> None:
        self.host, self.kind, self.name, self.proc = host, kind, name, proc
        self.master_later = master_later

    def ready(self) -> V:
        """Wait for ``NAME: up`` (printed once the owner runs the VTEP)."""
        if self.proc is not None:
            wait_up(self.proc, [self.name])
        if self.master_later:
            # enslaved after it is up, as "ip link set vxlan0 master br0" does it
            self.host.sh(f"ip link set {self.name} master {self.master_later}")
            self.master_later = None
        return self

    def fdb(self, *words: str, check: bool = True) -> subprocess.CompletedProcess:
        """``bridge fdb WORDS dev NAME`` or ``vxtun fdb WORDS dev NAME``."""
        if self.kind == "kernel":
            p = self.host.run("bridge fdb " + " ".join(words) + f" dev {self.name}")
        else:
            p = self.host.run_vxtun("fdb", *words, "dev", self.name)
        if check:
            assert p.returncode == 0, (self.kind, words, p.stderr)
        return p

    def fdb_rows(self) -> list[dict]:
        if self.kind == "kernel":
            return json.loads(self.host.sh(f"bridge -j fdb show dev {self.name}"))
        return json.loads(self.host.cmd("fdb", "show", "dev", self.name, "-j"))

    def fdb_set(self) -> set[tuple]:
        """(mac, dst, state, viaIf, port, vni) per destination: what must match the kernel.
        Only the VTEP's own ("self") entries: in a bridge, ``bridge fdb show dev`` also lists
        the bridge's entries for the port ("master br0"), which are not the VTEP's."""
        return {(r["mac"], r.get("dst"), r.get("state", ""), r.get("viaIf"), r.get("port"),
                 r.get("vni")) for r in self.fdb_rows() if "self" in r.get("flags", ())}

    def rx_packets(self) -> int:
        if self.kind == "kernel":
            return json.loads(self.host.sh(f"ip -j -s link show {self.name}"))[0]["stats64"][
                "rx"]["packets"]
        return self.stats()["rx"]["packets"]

    def stats(self) -> dict:
        assert self.kind == "vxtun"
        (s,) = json.loads(self.host.cmd("stats", "dev", self.name, "-j"))
        return s

    def remove(self) -> None:
        if self.kind == "kernel":
            self.host.sh(f"ip link del {self.name}")
        else:
            self.proc.send_signal(signal.SIGTERM)
            out, err = self.proc.communicate(timeout=15)
            assert self.proc.returncode == 0, err


def start(host: Host, kind: str, env: dict, i: int, *, name: str | None = None,
          vni: int = VNI, mac: str | None = None, remote: str | None = None,
          group: str | None = None, local: str | None = None, dev: str | None = "eth0",
          nolearning: bool = False, ageing: float | None = None, maxaddress: int | None = None,
          ttl: int | None = None, address: str | None = None, master: str | None = None,
          master_later: bool = False, wait: bool = True) -> V:
    """A VTEP, kernel (``ip link add ... type vxlan``) or vxtun, with the same settings.  With
    ``wait=False`` a vxtun VTEP is still starting: call ``ready()`` (to start several at once)."""
    mac = mac or vtep_mac(i)
    if kind == "kernel":
        name = name or "vxlan0"
        opts = [f"id {vni} dstport {PORT}"]
        for key, val in (("remote", remote), ("group", group), ("local", local), ("dev", dev),
                         ("ageing", ageing), ("maxaddress", maxaddress), ("ttl", ttl)):
            if val is not None:
                opts.append(f"{key} {val:g}" if isinstance(val, float) else f"{key} {val}")
        if nolearning:
            opts.append("nolearning")
        host.sh(f"ip link add {name} address {mac} type vxlan " + " ".join(opts))
        if address:
            host.sh(f"ip addr add {address} dev {name}")
        host.sh(f"ip link set {name} {f'master {master} ' if master else ''}up")
        return V(host, kind, name)
    name = name or "vxtun0"
    args = ["--vni", str(vni), "--name", name, "--mac", mac, "--dstport", str(PORT)]
    for key, val in (("--remote", remote), ("--group", group), ("--local", local),
                     ("--dev", dev), ("--ageing", ageing), ("--maxaddress", maxaddress),
                     ("--ttl", ttl), ("--address", address)):
        if val is not None:
            args += [key, str(val)]
    if nolearning:
        args.append("--nolearning")
    if master and not master_later:
        args += ["--master", master]
    v = V(host, kind, name, vxtun_up(host, env, *args, name=None),
          master if master_later else None)
    return v.ready() if wait else v


def make_hosts(topo: Topology, n: int) -> list[Host]:
    hosts = []
    for i in range(n):
        h = topo.host(f"h{i}", f"{ul4(i)}/24", f"{ul6(i)}/64")
        # New devices (TAPs, vxlan, bridges) get no IPv6 and no IGMP reports for 224.0.0.x
        # (a bridge joins 224.0.0.106): no chatter the pings did not cause in the FDBs.
        h.sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1 "
             "net.ipv4.igmp_link_local_mcast_reports=0")
        hosts.append(h)
    return hosts


def ping_all(endpoints: list[tuple[str, str]]) -> None:
    """Every pair pings once (with a retry for the first ARP through a multicast flood)."""
    for i, (ns, _) in enumerate(endpoints):
        targets = [ip for _, ip in endpoints[i + 1:]]
        if not targets:
            continue
        script = "; ".join(f"(ping -c1 -W2 {ip} >/dev/null || ping -c1 -W2 {ip} >/dev/null "
                           f"|| echo FAIL {ip})" for ip in targets)
        out = run(f"ip netns exec {ns} sh -c '{script}'").stdout
        assert "FAIL" not in out, f"from {ns}: {out}"


def flush_neigh(namespaces: list[str]) -> None:
    for ns in namespaces:
        run(f"ip -n {ns} neigh flush all", check=False)


# --- the four multi-host scenarios against a kernel reference ----------------------------------

_REFERENCE: dict = {}


class Scenario:
    """Hosts and containers built once; ``run(kinds)`` adds the VTEPs, pings every pair and
    returns each position's FDB; ``clear()`` removes the VTEPs for the next run."""

    def __init__(self, topo: Topology, name: str, family: int = 4) -> None:
        self.topo, self.name, self.family = topo, name, family
        self.hosts = make_hosts(topo, 3)
        self.ul = [ul6(i) if family == 6 else ul4(i) for i in range(3)]
        self.vteps: list[V] = []
        self.containers: list[tuple[str, str]] = []
        if name == "bridge":
            for i, h in enumerate(self.hosts):
                h.sh(f"ip link add br0 address 02:00:00:00:0b:{i:02x} type bridge; "
                     "ip link set br0 up")
                for j in (1, 2):
                    ns = set_container(h, "br0", f"c{j}", f"10.20.1.{10 * (i + 1) + j}/24")
                    run(f"ip -n {ns} link set eth0 address 02:00:00:00:{i + 2:02x}:{j:02x}")
                    run(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 "
                        "net.ipv4.igmp_link_local_mcast_reports=0")
                    self.containers.append((ns, f"10.20.1.{10 * (i + 1) + j}"))

    def endpoints(self) -> list[tuple[str, str]]:
        if self.containers:
            return self.containers
        return [(h.ns, f"10.20.1.{i + 1}") for i, h in enumerate(self.hosts)]

    def run(self, kinds: tuple, env: dict) -> list[set]:
        for i, (h, kind) in enumerate(zip(self.hosts, kinds, strict=True)):
            self.vteps.append(self._vtep(i, h, kind, env))
        for v in self.vteps:            # started all at once, waited for together
            v.ready()
        for i, v in enumerate(self.vteps):
            self._configure(i, v)
        ping_all(self.endpoints())
        return [v.fdb_set() for v in self.vteps]

    def _vtep(self, i: int, h: Host, kind: str, env: dict) -> V:
        addr = None if self.containers else f"10.20.1.{i + 1}/24"
        if self.name == "multicast":
            return start(h, kind, env, i, group=GROUP6 if self.family == 6 else GROUP4,
                         address=addr, wait=False)
        if self.name == "bridge":
            # vxtun: --master on one host, "ip link set ... master br0" on the other
            return start(h, kind, env, i, group=GROUP4, local=self.ul[i], master="br0",
                         master_later=(i == 2), wait=False)
        return start(h, kind, env, i, address=addr, nolearning=(self.name == "manual"),
                     wait=False)

    def _configure(self, i: int, v: V) -> None:
        if self.name not in ("headend", "manual"):
            return
        others = [j for j in range(3) if j != i]
        for j in others:                 # "bridge fdb append 00:00:00:00:00:00 dst H"
            v.fdb("append", ZERO, "dst", self.ul[j])
        if self.name == "manual":
            for j in others:             # ... and "bridge fdb append MAC dst H"
                v.fdb("append", vtep_mac(j), "dst", self.ul[j])

    def clear(self) -> None:
        for v in self.vteps:
            v.remove()
        self.vteps = []
        flush_neigh([h.ns for h in self.hosts] + [ns for ns, _ in self.containers])


def reference(sc: Scenario, key: str) -> list[set]:
    """The FDBs three kernel VTEPs hold after the same pings (once per session)."""
    if key not in _REFERENCE:
        _REFERENCE[key] = sc.run(("kernel",) * 3, {})
        sc.clear()
    return _REFERENCE[key]


def check_against_kernel(sc: Scenario, key: str, mix: str, env: dict) -> list[set]:
    ref = reference(sc, key)
    got = sc.run(MIXES[mix], env)
    for i, (kind, want, have) in enumerate(zip(MIXES[mix], ref, got, strict=True)):
        assert have == want, (f"position {i} ({kind}) FDB differs from the kernel's:\n"
                              f"  only vxtun/this run: {sorted(have - want, key=str)}\n"
                              f"  only kernel reference: {sorted(want - have, key=str)}")
    return got


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_multicast_group(topo, dataplane, mix):
    sc = Scenario(topo, "multicast")
    cap = Capture(topo, sc.hosts)
    try:
        fdbs = check_against_kernel(sc, "multicast4", mix, dataplane)
    finally:
        cap.close()
    for i, fdb in enumerate(fdbs):
        # "00:00:00:00:00:00 dst 239.1.1.1 via eth0 self permanent" (the group) ...
        assert (ZERO, GROUP4, "permanent", "eth0", None, None) in fdb
        # ... and "02:00:00:00:01:01 dst 192.0.2.2 self": learned, unicast destinations
        for j in range(3):
            if j != i:
                assert (vtep_mac(j), ul4(j), "", None, None, None) in fdb
        # and the ARP cache holds each peer, at its VTEP's MAC
        v = sc.vteps[i]
        neigh = {n["dst"]: n.get("lladdr") for n in
                 json.loads(v.host.sh(f"ip -j neigh show dev {v.name}"))}
        assert {f"10.20.1.{j + 1}": vtep_mac(j) for j in range(3) if j != i}.items() \
            <= neigh.items()
    # Floods went to the group with TTL 1 (no --ttl); ARP replies and pings came back unicast.
    flooded = [r for r in cap.records if r["dst"] == GROUP4]
    assert flooded and all(r["ttl"] == 1 for r in flooded)
    assert any(r["idst"] == "ff:ff:ff:ff:ff:ff" for r in flooded)
    assert all(r["idst"] == "ff:ff:ff:ff:ff:ff" for r in flooded), "a known MAC was flooded"
    assert any(r["dst"] in map(ul4, range(3)) and r["type"] == "0806" for r in cap.records)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_multicast_ipv6_group(topo, dataplane, mix):
    sc = Scenario(topo, "multicast", family=6)
    cap = Capture(topo, sc.hosts)
    try:
        fdbs = check_against_kernel(sc, "multicast6", mix, dataplane)
    finally:
        cap.close()
    for i, fdb in enumerate(fdbs):
        assert (ZERO, GROUP6, "permanent", "eth0", None, None) in fdb
        assert {(vtep_mac(j), ul6(j)) for j in range(3) if j != i} <= {m[:2] for m in fdb}
    flooded = [r for r in cap.records if r["dst"] == GROUP6]
    assert flooded and all(r["ttl"] == 1 for r in flooded)      # hop limit 1


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_bridge_with_containers(topo, dataplane, mix):
    sc = Scenario(topo, "bridge")
    fdbs = check_against_kernel(sc, "bridge", mix, dataplane)
    for i, fdb in enumerate(fdbs):
        learned = {m[:2] for m in fdb if m[0] != ZERO}
        # every container of the other hosts, behind its host's VTEP; none of this host's
        assert learned == {(f"02:00:00:00:{j + 2:02x}:{k:02x}", ul4(j))
                           for j in range(3) if j != i for k in (1, 2)}


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_head_end_replication_flood_list(topo, dataplane, mix):
    sc = Scenario(topo, "headend")
    fdbs = check_against_kernel(sc, "headend", mix, dataplane)
    for i, fdb in enumerate(fdbs):
        assert {m[1] for m in fdb if m[0] == ZERO} == {ul4(j) for j in range(3) if j != i}
        assert {m[2] for m in fdb if m[0] != ZERO} == {""}          # the rest was learned


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_nolearning_static_macs(topo, dataplane, mix):
    sc = Scenario(topo, "manual")
    fdbs = check_against_kernel(sc, "manual", mix, dataplane)
    for i, fdb in enumerate(fdbs):
        others = [j for j in range(3) if j != i]
        assert fdb == ({(ZERO, ul4(j), "permanent", None, None, None) for j in others}
                       | {(vtep_mac(j), ul4(j), "permanent", None, None, None) for j in others})


# --- flood exactness -------------------------------------------------------------------------

SRC = "02:00:00:00:aa:01"      # a MAC "behind" the sending host (as a container would be)
BCAST = "ff:ff:ff:ff:ff:ff"


def tags(recs: list[dict]) -> list[str]:
    return sorted(bytes.fromhex(r["data"]).rstrip(b"\0").decode() for r in recs)


def test_head_end_replication_sends_each_flood_once_to_each_destination(topo, dataplane):
    # h0 floods to h1 (kernel), h2, h3 (vxtun); h4 runs a VTEP that is not in the list
    hosts = make_hosts(topo, 5)
    v0 = start(hosts[0], "vxtun", dataplane, 0)
    for j in (1, 2, 3):
        v0.fdb("append", ZERO, "dst", ul4(j))
    peers = [start(h, "kernel" if j == 1 else "vxtun", dataplane, j, remote=ul4(0), wait=False)
             for j, h in enumerate(hosts) if j]
    for p in peers:
        p.ready()
    cap = Capture(topo, hosts)
    try:
        floods = ([frame(BCAST, SRC, f"bcast-{k}") for k in range(10)]
                  + [frame("33:33:00:00:00:01", SRC, f"mcast-{k}") for k in range(5)]
                  + [frame("02:00:00:00:ee:ee", SRC, f"unknown-{k}") for k in range(5)])
        inject(hosts[0], v0.name, *floods)
        cap.wait(60, isrc=SRC)
    finally:
        cap.close()
    want = sorted([f"bcast-{k}" for k in range(10)] + [f"mcast-{k}" for k in range(5)]
                  + [f"unknown-{k}" for k in range(5)])
    for j in (1, 2, 3):
        recs = cap.where(host=f"h{j}", isrc=SRC)
        assert tags(recs) == want, f"h{j} got {tags(recs)}"      # each once, none twice
        assert {(r["dst"], r["vni"]) for r in recs} == {(ul4(j), VNI)}
        assert peers[j - 1].rx_packets() == 20                     # and each delivered once
    assert cap.where(host="h4") == [] and peers[3].rx_packets() == 0
    assert cap.where(host="h0") == [] and v0.rx_packets() == 0


def test_multicast_flood_once_per_member_ttl_1_and_no_echo(topo, dataplane):
    # h0 floods to GROUP4; h1 (kernel) and h2 are members; h3 is in another group; h4 is a
    # member that says --ttl 3
    hosts = make_hosts(topo, 5)
    v = [start(hosts[0], "vxtun", dataplane, 0, group=GROUP4, wait=False),
         start(hosts[1], "kernel", dataplane, 1, group=GROUP4),
         start(hosts[2], "vxtun", dataplane, 2, group=GROUP4, wait=False),
         start(hosts[3], "vxtun", dataplane, 3, group="239.1.1.2", wait=False),
         start(hosts[4], "vxtun", dataplane, 4, group=GROUP4, ttl=3, wait=False)]
    for x in v:
        x.ready()
    cap = Capture(topo, hosts)
    try:
        inject(hosts[0], v[0].name, *[frame(BCAST, SRC, f"bcast-{k}") for k in range(10)])
        cap.wait(40, isrc=SRC)
        rx = [x.rx_packets() for x in v]
        echo = (v[0].fdb_set(), v[0].stats()["drops"]["own_mac"])
        inject(hosts[4], v[4].name, frame(BCAST, "02:00:00:00:aa:04", "from-h4"))
        cap.wait(4, isrc="02:00:00:00:aa:04")
    finally:
        cap.close()
    for j in (1, 2, 3, 4):
        # the underlay bridge floods the group to every port (no snooping): 10 each, once
        recs = cap.where(host=f"h{j}", isrc=SRC)
        assert tags(recs) == sorted(f"bcast-{k}" for k in range(10)), f"h{j}"
        assert {(r["dst"], r["ttl"]) for r in recs} == {(GROUP4, 1)}    # TTL 1 by default
    assert rx == [0, 10, 10, 0, 10]                   # members only, once each
    # the sender never gets its own floods back: nothing delivered, nothing learned
    assert cap.where(host="h0", isrc=SRC) == []
    assert SRC not in {m[0] for m in echo[0]} and echo[1] == 0
    # --ttl 3 applies to the group too
    assert {r["ttl"] for r in cap.where(isrc="02:00:00:00:aa:04")} == {3}


def test_nolearning_static_mac_reaches_only_its_vtep(topo, dataplane):
    hosts = make_hosts(topo, 4)
    X = "02:00:00:00:cc:02"                   # lives behind h2
    v0 = start(hosts[0], "vxtun", dataplane, 0, nolearning=True)
    for j in (1, 2, 3):
        v0.fdb("append", ZERO, "dst", ul4(j))
    v0.fdb("append", X, "dst", ul4(2))
    peers = [start(h, "kernel" if j == 1 else "vxtun", dataplane, j, remote=ul4(0), wait=False)
             for j, h in enumerate(hosts) if j]
    for p in peers:
        p.ready()
    before = v0.fdb_set()
    cap = Capture(topo, hosts)
    try:
        inject(hosts[0], v0.name, *[frame(X, SRC, f"to-x-{k}") for k in range(10)])
        cap.wait(10, idst=X)
        # frames from elsewhere teach nothing: not a new MAC, not X claimed from h3
        send_udp(hosts[1], ul4(0), PORT, [vxlan(VNI, frame(vtep_mac(0), "02:00:00:00:dd:01", "y"))])
        send_udp(hosts[3], ul4(0), PORT, [vxlan(VNI, frame(vtep_mac(0), X, "x-from-h3"))])
        deadline = time.time() + 10
        while v0.rx_packets() < 2 and time.time() < deadline:
            time.sleep(0.05)
    finally:
        cap.close()
    assert tags(cap.where(host="h2", idst=X)) == sorted(f"to-x-{k}" for k in range(10))
    assert cap.where(host="h1", idst=X) == [] and cap.where(host="h3", idst=X) == []
    assert peers[1].rx_packets() == 10
    # without learning there is no snooping at all (vxlan_rcv): both delivered, nothing changed
    assert v0.rx_packets() == 2
    assert v0.fdb_set() == before
    assert v0.stats()["drops"]["static_mac_moved"] == 0


# --- the FDB rules, next to a kernel VTEP fed the same datagrams -------------------------------


def test_learning_move_and_static_pinning_like_the_kernel(topo, dataplane):
    hosts = make_hosts(topo, 4)
    k = start(hosts[0], "kernel", dataplane, 0)
    x = start(hosts[1], "vxtun", dataplane, 1)
    M, P, Q = "02:00:00:00:dd:01", "02:00:00:00:dd:02", "02:00:00:00:dd:03"
    s2, s3 = hosts[2], hosts[3]

    def both(sender: Host, *frames: str) -> None:
        for dst in (ul4(0), ul4(1)):
            send_udp(sender, dst, PORT, [vxlan(VNI, f) for f in frames])

    def settle(n: int) -> None:
        deadline = time.time() + 10
        while x.stats()["rx"]["packets"] + sum(x.stats()["drops"].values()) < n \
                and time.time() < deadline:
            time.sleep(0.05)

    both(s2, frame(BCAST, M, "m-at-h2"))                   # learned: M dst h2
    settle(1)
    assert (M, ul4(2), "", None, None, None) in x.fdb_set()
    both(s3, frame(BCAST, M, "m-at-h3"))                   # moved: M dst h3
    settle(2)
    for v in (k, x):
        v.fdb("add", P, "dst", ul4(2), "static")
        v.fdb("add", Q, "dst", ul4(2))                     # permanent
    both(s3, frame(BCAST, P, "p-from-h3"), frame(BCAST, Q, "q-from-h3"))   # pinned: dropped
    both(s2, frame(BCAST, P, "p-from-h2"))                 # its own VTEP: delivered
    settle(5)
    assert x.fdb_set() == k.fdb_set() == {
        (M, ul4(3), "", None, None, None),
        (P, ul4(2), "static", None, None, None),
        (Q, ul4(2), "permanent", None, None, None)}
    s = x.stats()
    assert s["fdb"] == {"learned": 1, "moved": 1, "entries": 3}     # the three rows above
    assert s["drops"]["static_mac_moved"] == 2
    assert k.rx_packets() == x.rx_packets() == 3


def test_ageing_even_while_used_as_destination(topo, dataplane):
    hosts = make_hosts(topo, 2)
    x = start(hosts[0], "vxtun", dataplane, 0, ageing=4)
    M, S = "02:00:00:00:dd:01", "02:00:00:00:dd:05"
    x.fdb("add", S, "dst", ul4(1), "static")
    # the capture is up before M is learned: on a loaded machine starting it took longer
    # than the entry lived, and nothing could be seen sent to M
    cap = Capture(topo, hosts)
    try:
        send_udp(hosts[1], ul4(0), PORT, [vxlan(VNI, frame(BCAST, M, "hello"))])
        deadline = time.time() + 10
        n = 0
        while time.time() < deadline:
            # the first frame to M goes out as soon as the entry is there (before a listing)
            inject(hosts[0], x.name, frame(M, vtep_mac(0), f"to-m-{n}"))
            n += 1
            if (M, ul4(1), "", None, None, None) in x.fdb_set():
                break
            time.sleep(0.05)
        assert n >= 1 and M in {e[0] for e in x.fdb_set()}, "M was never learned"
        # keep sending to M: being a destination does not refresh a learned entry
        deadline = time.time() + 20
        while M in {e[0] for e in x.fdb_set()} and time.time() < deadline:
            inject(hosts[0], x.name, frame(M, vtep_mac(0), f"to-m-{n}"))
            n += 1
            time.sleep(0.2)
        assert M not in {e[0] for e in x.fdb_set()}, "a learned entry never aged out"
        used = len(cap.wait(1, idst=M))
        assert used >= 1                              # it was used while it lived
        drops = x.stats()["drops"]["no_remote"]
        inject(hosts[0], x.name, frame(M, vtep_mac(0), "after"))
        deadline = time.time() + 5
        while x.stats()["drops"]["no_remote"] == drops and time.time() < deadline:
            time.sleep(0.05)
        assert x.stats()["drops"]["no_remote"] == drops + 1     # gone: no destination
        assert len(cap.where(idst=M)) == used
    finally:
        cap.close()
    assert (S, ul4(1), "static", None, None, None) in x.fdb_set()   # static never ages


def ipv4_frame(src: str, proto: int, tag: str, pad: int = 0) -> str:
    """An Ethernet/IPv4 frame (hex) of protocol ``proto`` carrying ``tag`` (not a valid TCP
    segment even with proto 6: what matters here is only which protocol the header names),
    ``pad`` bytes longer."""
    body = tag.encode().ljust(40 + pad, b"\0")
    ip = bytes([0x45, 0]) + (20 + len(body)).to_bytes(2, "big") \
        + bytes([0, 0, 0x40, 0, 64, proto, 0, 0, 10, 20, 1, 2, 10, 20, 1, 1])
    return (bytes.fromhex("ffffffffffff") + bytes.fromhex(src.replace(":", "")) + b"\x08\x00"
            + ip + body).hex()


def test_frames_without_tcp_overtake_queued_bulk_tcp(topo, dataplane):
    """What waits in the underlay socket is delivered non-TCP first, then TCP, each in arrival
    order, when bulk TCP (a datagram over RX_BULK bytes) is queued (vxtun/fastpath/threads.pyx
    _rx_drain, vxtun/dataplane/pure.py _on_rx): a ping's echo must not wait behind a bulk
    flow's super-frames.  Without bulk, arrival order, as the kernel delivers.  The VTEP is
    stopped while the datagrams queue up, so that one read finds them all."""
    hosts = make_hosts(topo, 2)
    x = start(hosts[0], "vxtun", dataplane, 0)
    (show,) = json.loads(hosts[0].cmd("show", "-j"))
    src = "02:00:00:00:ee:01"

    def delivered(sent: list, marker: str) -> list[str]:
        with RxFrames(hosts[0], x.name, marker.encode()) as rx:
            os.kill(show["pid"], signal.SIGSTOP)
            try:
                send_udp(hosts[1], ul4(0), PORT, [vxlan(VNI, ipv4_frame(src, proto, tag, pad))
                                                  for tag, proto, pad in sent])
                time.sleep(0.5)             # all of them in the socket's queue
            finally:
                os.kill(show["pid"], signal.SIGCONT)
        return [f[14 + 20:14 + 20 + 8].rstrip(b"\0").decode() for f in rx.frames
                if len(f) < 1000]

    small = [("tcp-0", 6, 0), ("udp-0", 17, 0), ("tcp-1", 6, 0), ("icmp-0", 1, 0),
             ("udp-1", 17, 0), ("tcp-end", 6, 0)]
    assert delivered(small, "tcp-end") == ["tcp-0", "udp-0", "tcp-1", "icmp-0", "udp-1"]
    bulk = small[:2] + [("tcp-big", 6, 3000)] + small[2:-1] + [("tcp-last", 6, 0)]
    assert delivered(bulk, "tcp-last") == ["udp-0", "icmp-0", "udp-1", "tcp-0", "tcp-1"]


def owner_rss_kb(host: Host) -> int:
    (show,) = json.loads(host.cmd("show", "-j"))
    with open(f"/proc/{show['pid']}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_maxaddress_caps_learning_under_a_flood_of_random_macs(topo, dataplane):
    hosts = make_hosts(topo, 4)
    cap_n = 20
    k = start(hosts[0], "kernel", dataplane, 0, remote=ul4(2), maxaddress=cap_n)
    x = start(hosts[1], "vxtun", dataplane, 1, remote=ul4(2), maxaddress=cap_n,
              address="10.20.1.2/24", wait=False)
    start(hosts[2], "vxtun", dataplane, 2, remote=ul4(1), address="10.20.1.3/24")
    x.ready()
    ping_all([(hosts[1].ns, "10.20.1.2"), (hosts[2].ns, "10.20.1.3")])
    known = (vtep_mac(2), ul4(2), "", None, None, None)
    assert known in x.fdb_set()
    send_vxlan_flood(hosts[3], ul4(0), PORT, VNI, 2000)
    send_vxlan_flood(hosts[3], ul4(1), PORT, VNI, 2000)
    deadline = time.time() + 30
    while x.rx_packets() < 2000 and time.time() < deadline:
        time.sleep(0.1)
    assert len(x.fdb_set()) == len(k.fdb_set()) == cap_n       # full, like the kernel
    assert known in x.fdb_set()
    # known traffic keeps flowing at the cap
    ping_all([(hosts[1].ns, "10.20.1.2"), (hosts[2].ns, "10.20.1.3")])
    # memory stays bounded: ten times more random MACs change nothing
    rss = owner_rss_kb(hosts[1])
    rx = x.rx_packets()
    send_vxlan_flood(hosts[3], ul4(1), PORT, VNI, 20000)
    deadline = time.time() + 60
    while x.rx_packets() < rx + 20000 and time.time() < deadline:
        time.sleep(0.1)
    assert len(x.fdb_set()) == cap_n
    assert owner_rss_kb(hosts[1]) - rss < 4096, "the owner grew by more than 4 MB"
    # the administrator can still pin a MAC (the kernel says ENOSPC: see vxtun/fdb/table.py)
    x.fdb("add", "02:00:00:00:99:99", "dst", ul4(2), "static")
    assert len(x.fdb_set()) == cap_n + 1
    p = k.fdb("add", "02:00:00:00:99:99", "dst", ul4(2), "static", check=False)
    assert p.returncode != 0 and "No space left" in p.stderr


# --- vxtun fdb, in bridge fdb's words ----------------------------------------------------------

# The lines of a flood list, of MACs configured by hand and of answered L2 misses, then every
# form bridge fdb accepts on a VTEP.
FDB_LINES = [
    ["append", ZERO, "dst", "192.0.2.101"],
    ["append", ZERO, "dst", "192.0.2.102"],
    ["append", "52:5e:55:58:9a:ab", "dst", "192.0.2.101"],
    ["append", "d6:d9:cd:0a:a4:28", "dst", "192.0.2.102"],
    ["add", "b2:ee:aa:42:8b:0b", "dst", "192.0.2.101"],
    ["add", "02:00:00:00:00:01", "dst", "192.0.2.103", "static"],
    ["add", "02:00:00:00:00:02", "dst", "192.0.2.103", "dynamic"],
    ["add", "02:00:00:00:00:03", "dst", "192.0.2.103", "port", "4789", "vni", "42", "self",
     "permanent"],
    ["append", ZERO, "dst", "192.0.2.104", "port", "4790", "vni", "43", "via", "eth0"],
    ["append", ZERO, "dst", "192.0.2.105"],
    ["append", ZERO, "dst", "192.0.2.101"],                 # already listed: no change
    ["add", "01:00:5e:00:00:01", "dst", "192.0.2.105"],
    ["append", "01:00:5e:00:00:01", "dst", "192.0.2.106"],
    ["replace", "b2:ee:aa:42:8b:0b", "dst", "192.0.2.102"],
    ["append", "52:5e:55:58:9a:ab", "dst", "192.0.2.101", "static"],
    ["del", ZERO, "dst", "192.0.2.105"],
    ["del", "d6:d9:cd:0a:a4:28"],
]

# Refused by vxtun with this message, and changing nothing.  The last two the kernel accepts
# silently (see the docstring of vxtun/fdb/table.py); the others it refuses too.
FDB_BAD = [
    (["add", "zz:00:00:00:00:00", "dst", "192.0.2.9"], "invalid MAC address", True),
    (["add", "02:00:00:00:00:09", "dst", "192.0.2.300"], "invalid dst address", True),
    (["add", "02:00:00:00:00:09"], "needs a destination: dst IP", True),
    (["add", "02:00:00:00:00:09", "dst", "2001:db8::9"], "is IPv6 but", True),
    (["add", "52:5e:55:58:9a:ab", "dst", "192.0.2.9"], "already exists", True),
    (["replace", ZERO, "dst", "192.0.2.9"], "flood list", True),
    (["del", "02:00:00:00:00:99"], "does not exist", True),
    (["append", "52:5e:55:58:9a:ab", "dst", "192.0.2.9"], "only the all-zeros or a multicast",
     False),
    (["del", ZERO, "dst", "192.0.2.99"], "has no destination 192.0.2.99", False),
]


def test_fdb_commands_print_and_refuse_like_bridge_fdb(topo, dataplane):
    hosts = make_hosts(topo, 2)
    k = start(hosts[0], "kernel", dataplane, 0, nolearning=True)
    x = start(hosts[1], "vxtun", dataplane, 1, nolearning=True)
    for words in FDB_LINES:
        k.fdb(*words)
        x.fdb(*words)

    def lines(text: str) -> set[str]:
        return {ln.strip() for ln in text.splitlines() if ln.strip()}

    # bridge fdb show dev vxlan0 == vxtun fdb show dev vxtun0, line for line, and as JSON
    assert lines(x.host.cmd("fdb", "show", "dev", x.name)) == \
        lines(k.host.sh(f"bridge fdb show dev {k.name}"))
    assert sorted(map(json.dumps, x.fdb_rows())) == sorted(map(json.dumps, k.fdb_rows()))
    # ... and without dev (bridge fdb, vxtun fdb), where each line names the device
    kernel_all = {ln.replace(f"dev {k.name} ", f"dev {x.name} ")
                  for ln in lines(k.host.sh("bridge fdb")) if f"dev {k.name} " in ln}
    assert lines(x.host.cmd("fdb")) == kernel_all
    kj = [dict(r, ifname=x.name) for r in json.loads(k.host.sh("bridge -j fdb show"))
          if r.get("ifname") == k.name]
    assert sorted(map(json.dumps, json.loads(x.host.cmd("fdb", "show", "-j")))) == \
        sorted(map(json.dumps, kj))
    assert "00:00:00:00:00:00 dst 192.0.2.104 port 4790 vni 43 via eth0 self permanent" in \
        lines(x.host.cmd("fdb", "show", "dev", x.name))

    before = x.fdb_rows()
    for words, message, kernel_refuses in FDB_BAD:
        p = x.fdb(*words, check=False)
        assert p.returncode != 0 and message in p.stderr, (words, p.stderr)
        assert "Traceback" not in p.stderr
        assert x.fdb_rows() == before, words
        assert (k.fdb(*words, check=False).returncode != 0) == kernel_refuses, words
    p = x.host.run_vxtun("fdb", "add", "02:00:00:00:00:09", "dst", "192.0.2.9", "dev", "nosuch0")
    assert p.returncode != 0 and "no vxtun VTEP named nosuch0" in p.stderr
    assert x.fdb_rows() == before

    # bridge fdb command lines word for word, "bridge" -> "vxtun", "vxlan0" -> "vxtun0"
    for v in (k, x):
        v.fdb("del", "52:5e:55:58:9a:ab")
        v.fdb("del", "b2:ee:aa:42:8b:0b")
    for line in ("bridge fdb append 00:00:00:00:00:00 dev vxlan0 dst 192.168.8.101",
                 "bridge fdb append 52:5e:55:58:9a:ab dev vxlan0 dst 192.168.8.101",
                 "bridge fdb add b2:ee:aa:42:8b:0b dst 192.168.8.101 dev vxlan0",
                 "bridge fdb"):
        line = line.replace("192.168.8.", "198.51.100.")     # TEST-NET-2, never routed
        k.host.sh(line)
        x.host.cmd(*line.replace("vxlan0", x.name).split()[1:])
    assert lines(x.host.cmd("fdb", "show", "dev", x.name)) == \
        lines(k.host.sh(f"bridge fdb show dev {k.name}"))


# --- many VNIs, one port ----------------------------------------------------------------------


def udp_sockets(host: Host, port: int) -> list[str]:
    return [ln for ln in host.sh(f"ss -uanH 'sport = :{port}'").splitlines() if ln.strip()]


def test_vteps_of_separate_up_processes_share_one_port(topo, dataplane):
    a, b, c = make_hosts(topo, 3)
    M, N = "02:00:00:00:01:aa", "02:00:00:00:01:bb"     # one MAC on both sides of both VNIs
    x42 = start(a, "vxtun", dataplane, 0, name="vx42", vni=42, mac=M, remote=ul4(1),
                address="10.20.42.1/24")
    x43 = start(a, "vxtun", dataplane, 0, name="vx43", vni=43, mac=M, remote=ul4(2),
                address="10.20.43.1/24")
    k42 = start(b, "kernel", dataplane, 1, name="vxlan42", vni=42, mac=N, remote=ul4(0),
                address="10.20.42.2/24")
    start(c, "kernel", dataplane, 2, name="vxlan43", vni=43, mac=N, remote=ul4(0),
          address="10.20.43.3/24")
    assert len(udp_sockets(a, PORT)) == 1, udp_sockets(a, PORT)   # one socket, two VTEPs
    # Static neighbours: the counts below must see the test's frames only, never an ARP
    # probe that a stack sends some seconds after the pings (NUD_DELAY -> NUD_PROBE), which a
    # loaded machine lets fall between the two readings.
    for h, dev, ip, mac in ((a, "vx42", "10.20.42.2", N), (a, "vx43", "10.20.43.3", N),
                            (b, "vxlan42", "10.20.42.1", M), (c, "vxlan43", "10.20.43.1", M)):
        h.sh(f"ip neigh replace {ip} lladdr {mac} dev {dev} nud permanent")
    ping_all([(a.ns, "10.20.42.1"), (b.ns, "10.20.42.2")])
    ping_all([(a.ns, "10.20.43.1"), (c.ns, "10.20.43.3")])
    # the same MAC in two VNIs: two entries, two VTEPs, no collision
    assert (N, ul4(1), "", None, None, None) in x42.fdb_set()
    assert (N, ul4(2), "", None, None, None) in x43.fdb_set()
    assert N not in {e[0] for e in x42.fdb_set() if e[1] == ul4(2)}

    # VNI 42's floods reach vx42 only; counters are per VNI
    rx42, rx43 = x42.rx_packets(), x43.rx_packets()
    cap = Capture(topo, [a, b, c])
    try:
        inject(b, k42.name, *[frame(BCAST, SRC, f"vni42-{k}") for k in range(10)])
        send_udp(b, ul4(0), PORT, [vxlan(44, frame(BCAST, SRC, "vni44"))])    # served by nobody
        cap.wait(11, isrc=SRC)
    finally:
        cap.close()
    assert tags(cap.where(host="h0", isrc=SRC, vni=42)) == sorted(f"vni42-{k}"
                                                                 for k in range(10))
    poll(lambda: x42.rx_packets() - rx42 >= 10, 15, step=0.05)
    got = x42.rx_packets() - rx42
    assert got == 10, (got, x42.stats())
    assert x43.rx_packets() == rx43, x43.stats()
    assert cap.where(host="h2") == []                  # nothing crossed into VNI 43's peer
    s42, s43 = x42.stats(), x43.stats()
    assert (s42["vni"], s43["vni"]) == (42, 43) and s42["rx"] != s43["rx"]
    # VNI 44's datagram belongs to neither VTEP: it is the shared socket's drop, shown on both
    wait_until(lambda: x42.stats()["socket"]["drops"]["vni_not_found"] == 1,
               what="the socket to count VNI 44 as vni_not_found")
    assert x43.stats()["socket"] == x42.stats()["socket"]
    assert x42.stats()["socket"]["vteps"] == 2
    assert x42.stats()["drops"]["vni_not_found"] == 0
    assert "socket (UDP port 4789, shared by 2 VTEPs): dropped 1" in a.cmd("stats", "dev", "vx42")

    # each up ends only its own VTEP
    x42.remove()                                       # SIGTERM: exit 0, vx42 gone
    assert "vx42" not in links(a) and "vx43" in links(a)
    assert [d["ifname"] for d in json.loads(a.cmd("show", "-j"))] == ["vx43"]
    ping_all([(a.ns, "10.20.43.1"), (c.ns, "10.20.43.3")])
    x43.proc.kill()                                    # SIGKILL: the owner notices the lease
    x43.proc.wait()
    wait_until(lambda: "vx43" not in links(a), what="vx43 to go with its up")
    wait_until(lambda: not run(f"ip netns pids {a.ns}").stdout.strip(),
               what="the owner to exit after its last lease")
    assert udp_sockets(a, PORT) == []


CONFIG = """
# vx42 and vx43 from one file, one port, one group each
[defaults]
dev = "eth0"
dstport = 4789
mac = "02:00:00:00:01:aa"

[[vtep]]
name = "vx42"
vni = 42
group = "239.1.1.42"
address = "10.20.42.1/24"

[[vtep]]
name = "vx43"
id = 43
group = "239.1.1.43"
address = ["10.20.43.1/24"]
ageing = 120
fdb = ["02:00:00:00:01:cc dst 192.0.2.3 static"]
"""


def maddrs(host: Host) -> set[str]:
    return {w for ln in host.sh("ip maddr show dev eth0").split("\n")
            for w in ln.split() if w.startswith("239.")}


def test_config_file_vteps_with_their_own_groups_share_a_port(topo, dataplane, tmp_path):
    a, b, c = make_hosts(topo, 3)
    path = tmp_path / "vteps.toml"
    path.write_text(CONFIG)
    p = vxtun_up(a, dataplane, "--config", str(path), name=None)
    wait_up(p, ["vx42", "vx43"])
    x42, x43 = V(a, "vxtun", "vx42", p), V(a, "vxtun", "vx43", p)
    # a third VTEP from its own up, on the same port
    x44 = start(a, "vxtun", dataplane, 0, name="vx44", vni=44, mac="02:00:00:00:01:aa",
                remote=ul4(2), address="10.20.44.1/24")
    for vni in (42, 43):
        start(b, "kernel", dataplane, 1, name=f"vxlan{vni}", vni=vni, group=f"239.1.1.{vni}",
              address=f"10.20.{vni}.2/24", mac="02:00:00:00:01:bb")
    start(c, "kernel", dataplane, 2, name="vxlan44", vni=44, remote=ul4(0),
          address="10.20.44.3/24")
    assert len(udp_sockets(a, PORT)) == 1
    assert maddrs(a) == {"239.1.1.42", "239.1.1.43"}
    ping_all([(a.ns, "10.20.42.1"), (b.ns, "10.20.42.2")])
    ping_all([(a.ns, "10.20.43.1"), (b.ns, "10.20.43.2")])
    ping_all([(a.ns, "10.20.44.1"), (c.ns, "10.20.44.3")])
    assert (ZERO, "239.1.1.42", "permanent", "eth0", None, None) in x42.fdb_set()
    assert ("02:00:00:00:01:cc", ul4(2), "static", None, None, None) in x43.fdb_set()
    show = {d["ifname"]: d for d in json.loads(a.cmd("show", "-j"))}
    assert show["vx43"]["ageing"] == 120 and show["vx42"]["ageing"] == 300
    # each group's floods reached its own VTEP: the first ARP of each ping went to the group
    assert x42.rx_packets() > 0 and x43.rx_packets() > 0

    # down one VTEP of the file: the group is left, the others keep working
    a.cmd("down", "vx42")
    wait_until(lambda: "vx42" not in links(a), what="vx42 to go")
    assert p.poll() is None and maddrs(a) == {"239.1.1.43"}
    flush_neigh([a.ns, b.ns])
    ping_all([(a.ns, "10.20.43.1"), (b.ns, "10.20.43.2")])
    ping_all([(a.ns, "10.20.44.1"), (c.ns, "10.20.44.3")])
    # down the last one: that up exits 0; vx44's up is untouched
    a.cmd("down", "vx43")
    assert p.wait(15) == 0
    assert "vx43" not in links(a) and maddrs(a) == set()
    ping_all([(a.ns, "10.20.44.1"), (c.ns, "10.20.44.3")])
    x44.remove()
    assert not {"vx42", "vx43", "vx44"} & links(a)


def test_ups_started_together_share_one_owner_and_exit_1_if_it_dies(topo, dataplane):
    (a,) = make_hosts(topo, 1)
    procs = [a.vxtun("--vni", str(vni), "--name", f"vx{vni}", "--remote", ul4(1),
                     "--dstport", str(PORT), env=dataplane, wait_dev=None) for vni in (42, 43)]
    wait_until(lambda: {"vx42", "vx43"} <= links(a), what="both VTEPs")
    pids = {d["pid"] for d in json.loads(a.cmd("show", "-j"))}
    assert len(pids) == 1 and len(udp_sockets(a, PORT)) == 1     # one owner won the race
    os.kill(pids.pop(), signal.SIGKILL)
    for p in procs:
        out, err = p.communicate(timeout=15)
        assert p.returncode == 1 and "the port owner" in err and "exited" in err, err
    assert not {"vx42", "vx43"} & links(a)
