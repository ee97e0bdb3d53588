"""``vxtun agent`` with a real etcd, kernel and vxtun VTEPs mixed in one overlay.

Each test builds hosts on one underlay, starts etcd on its own namespace host (data in a
temporary directory, always stopped), a VTEP and an agent per host, and checks the VTEPs'
tables (``bridge fdb`` / ``ip neigh``, ``vxtun fdb|neigh show``) against what the store says.
"""
from __future__ import annotations

import json
import os
import time
import signal

import pytest

from vxtun.lab.netns import run, set_container
from vxtun.agent.lab import (Certs, EtcdCluster, agent_status, kernel_vtep, start_agent, store_call,
                             tables,
                             vxtun_vtep, wait_for)

TTL = 3


def mac_of(host, dev: str) -> str:
    return host.sh(f"cat /sys/class/net/{dev}/address").strip()


@pytest.fixture
def etcd(topo):
    cluster = EtcdCluster([topo.host("e1", "192.0.2.100/24")])
    try:
        yield cluster.start_all()
    finally:
        cluster.stop()


def fleet(topo, dataplane, kinds: str):
    """Hosts h1.. with a kernel (k) or vxtun (x) VTEP of VNI 42; overlay 10.20.0.N."""
    out = []
    for i, kind in enumerate(kinds, 1):
        h = topo.host(f"h{i}", f"192.0.2.{i}/24")
        if kind == "k":
            dev = kernel_vtep(h, 42, f"10.20.0.{i}/24")
        else:
            dev = "vxtun0"
            vxtun_vtep(h, 42, f"10.20.0.{i}/24", env=dataplane)
        out.append((h, dev))
    return out


def flood_of(fleet_, me):
    return sorted(h.ip for h, _ in fleet_ if h is not me)


def converged(fleet_, endpoints=None):
    """Every VTEP floods to every other member and holds every other host's endpoint."""
    def check():
        for h, dev in fleet_:
            t = tables(h, dev)
            if t["flood"] != flood_of(fleet_, h):
                return False
            if endpoints is not None:
                want_fdb = {m: [ip] for m, (ip, _) in endpoints.items() if ip != h.ip}
                want_neigh = {o: m for m, (ip, o) in endpoints.items() if ip != h.ip}
                if t["fdb"] != want_fdb or t["neigh"] != want_neigh:
                    return False
        return True
    return check


def publish(hosts) -> dict:
    """``vxtun agent endpoint add`` of each host's overlay device; MAC -> (VTEP, IP)."""
    endpoints = {}
    for h, dev in hosts:
        mac, ip = mac_of(h, dev), f"10.20.0.{h.ip.rsplit('.', 1)[1]}"
        h.cmd("agent", "endpoint", "add", mac, ip)
        endpoints[mac] = (h.ip, ip)
    return endpoints


def ping(src, dst_ip: str) -> None:
    p = src.run(f"ping -c 2 -i 0.2 -W 2 {dst_ip}", timeout=20)
    assert p.returncode == 0, f"ping {dst_ip} from {src.name}:\n{p.stdout}{p.stderr}"


def test_membership_endpoints_expiry_and_restart(topo, dataplane, etcd):
    hosts = fleet(topo, dataplane, "kxk")
    agents = {h.name: start_agent(h, etcd.url, dev, ttl=TTL) for h, dev in hosts}
    # Membership: every VTEP's flood list is every other member.
    wait_for(converged(hosts), 20, "flood lists")
    # Endpoints: each host publishes its overlay device; every other host gets its FDB and
    # neighbour entries, and ARP is answered locally by the proxy.
    endpoints = publish(hosts)
    wait_for(converged(hosts, endpoints), 20, "endpoints programmed")
    ping(hosts[0][0], "10.20.0.2")      # kernel -> vxtun
    ping(hosts[1][0], "10.20.0.3")      # vxtun -> kernel
    st = agent_status(hosts[0][0])
    assert st["members"]["42"] and len(st["members"]["42"]) == 3
    assert st["store"] == etcd.url and st["revision"] > 0 and not st["bad"]

    # kill -9 and restart within the TTL: the agent reconciles, runs no command (nothing
    # flushed, nothing duplicated), and the tables are what they were.
    h1, dev1 = hosts[0]
    before = tables(h1, dev1)
    os.killpg(agents["h1"].pid, signal.SIGKILL)
    agents["h1"].wait()
    agents["h1"] = start_agent(h1, etcd.url, dev1, ttl=TTL)
    st = wait_for(lambda: _status_or_none(h1), 15, "restarted agent answers")
    wait_for(lambda: (_status_or_none(h1) or {}).get("revision", 0) > 0, 15, "resynced")
    st = agent_status(h1)
    assert "programmed" not in st["vteps"][0], st["vteps"][0]
    assert tables(h1, dev1) == before
    # The restart kept the others as they were too (its member key was rewritten under a
    # new lease, with the same value).
    wait_for(converged(hosts, endpoints), 10, "still converged after the restart")

    # Lease expiry: h3's agent dies and stays dead; within the TTL (plus etcd's lease check
    # and one poll) it and its endpoint are gone from every other VTEP.
    h3, _ = hosts[2]
    os.killpg(agents["h3"].pid, signal.SIGKILL)
    agents["h3"].wait()
    rest = hosts[:2]
    left = {m: v for m, v in endpoints.items() if v[0] != h3.ip}
    wait_for(converged(rest, left), TTL + 5, "h3 removed everywhere after its lease expired")


def _status_or_none(host):
    try:
        return agent_status(host)
    except RuntimeError:
        return None


def test_endpoint_move_and_bad_data(topo, dataplane, etcd):
    hosts = fleet(topo, dataplane, "kxk")
    agents = [start_agent(h, etcd.url, dev, ttl=TTL) for h, dev in hosts]
    wait_for(converged(hosts), 20, "flood lists")
    # Bad data under our prefix: skipped and reported, never a crash.
    e1 = etcd.hosts[0]
    etcd.store_call(e1, "put", "/vxtun/members/42/192.0.2.9", "{not json")
    etcd.store_call(e1, "put", "/vxtun/endpoints/42/zz/192.0.2.9", '{"vni": "x"}')
    etcd.store_call(e1, "put", "/vxtun/elsewhere", "1")
    # An endpoint appears behind h2, then moves to h3.
    mac = "52:54:00:aa:bb:01"
    hosts[1][0].cmd("agent", "endpoint", "add", mac, "10.20.0.50")
    h1, dev1 = hosts[0]
    wait_for(lambda: tables(h1, dev1)["fdb"].get(mac) == ["192.0.2.2"], 15, "endpoint at h2")
    hosts[2][0].cmd("agent", "endpoint", "add", mac, "10.20.0.50")
    hosts[1][0].cmd("agent", "endpoint", "del", mac)
    wait_for(lambda: tables(h1, dev1)["fdb"].get(mac) == ["192.0.2.3"], 15, "endpoint moved")
    t2 = tables(*hosts[1])
    assert t2["fdb"].get(mac) == ["192.0.2.3"] and t2["neigh"].get("10.20.0.50") == mac
    t3 = tables(*hosts[2])
    assert mac not in t3["fdb"]          # behind h3 itself: nothing to program there
    st = agent_status(h1)
    assert len(st["bad"]) == 3, st["bad"]
    assert all(p.poll() is None for p in agents), "an agent died"
    assert converged(hosts)()


def test_etcd_unreachable_then_back(topo, dataplane, etcd):
    hosts = fleet(topo, dataplane, "kx")
    for h, dev in hosts:
        start_agent(h, etcd.url, dev, ttl=TTL)
    wait_for(converged(hosts), 20, "flood lists")
    endpoints = publish(hosts)
    wait_for(converged(hosts, endpoints), 20, "endpoints programmed")
    h1, dev1 = hosts[0]
    before = tables(h1, dev1)
    e1 = etcd.hosts[0]
    etcd.kill(e1)
    # The store is gone: the VTEPs keep their last state and the agents say why.
    wait_for(lambda: "store" in agent_status(h1)["last_error"], 15, "the agent noticed")
    assert tables(h1, dev1) == before
    ping(h1, "10.20.0.2")
    # Back (same data): the agents resync, and a host that joins now is seen by all.
    etcd.start(e1)
    etcd.wait_healthy([e1])
    h3 = topo.host("h3", "192.0.2.3/24")
    dev3 = kernel_vtep(h3, 42, "10.20.0.3/24")
    start_agent(h3, etcd.url, dev3, ttl=TTL)
    wait_for(converged(hosts + [(h3, dev3)], endpoints), 30, "resynced after etcd came back")
    ping(h1, "10.20.0.2")


def test_three_member_cluster_loses_one(topo, dataplane):
    cluster = EtcdCluster([topo.host(f"e{i}", f"192.0.2.{100 + i}/24") for i in (1, 2, 3)])
    try:
        cluster.start_all()
        hosts = fleet(topo, dataplane, "kx")
        agents = [start_agent(h, cluster.url, dev, ttl=TTL) for h, dev in hosts]
        wait_for(converged(hosts), 20, "flood lists")
        cluster.kill(cluster.hosts[0])       # the first endpoint every agent tries
        h3 = topo.host("h3", "192.0.2.3/24")
        dev3 = kernel_vtep(h3, 42, "10.20.0.3/24")
        agents.append(start_agent(h3, cluster.url, dev3, ttl=TTL))
        every = hosts + [(h3, dev3)]
        wait_for(converged(every), 20, "a new host joins with one etcd member down")
        # A host's lease expires: it is gone from the others within the TTL.
        os.killpg(agents[1].pid, signal.SIGKILL)
        wait_for(converged([every[0], every[2]]), TTL + 5, "h2 gone after its lease expired")
    finally:
        cluster.stop()


def test_tls_with_client_certificates(topo, dataplane):
    e1 = topo.host("e1", "192.0.2.100/24")
    cluster = EtcdCluster([e1], certs=Certs([e1.ip]))
    try:
        cluster.start_all()
        # Without a client certificate the server refuses the handshake (--client-cert-auth).
        plain = store_call(e1, f"etcds://{e1.ip}:2379", "snapshot", "/",
                           tls=["--cacert", cluster.certs.ca, "--cert", "", "--key", ""],
                           check=False)
        assert plain.returncode != 0 and "etcd unreachable" in plain.stderr, plain.stderr
        hosts = fleet(topo, dataplane, "kx")
        for h, dev in hosts:
            start_agent(h, cluster.url, dev, ttl=TTL, extra=tuple(cluster.certs.args()))
        wait_for(converged(hosts), 20, "flood lists over TLS")
        assert agent_status(hosts[0][0])["store"].startswith("etcds://")
    finally:
        cluster.stop()


def test_on_miss_mode_answers_kernel_and_vxtun_misses(topo, dataplane, etcd):
    """h1: a kernel VTEP on a bridge with a container behind it (the kernel's arp_reduce
    misses only for ARP that crosses the device from a bridge: the host's own ARP makes an
    INCOMPLETE entry first, and an entry that exists never misses); h2: vxtun; h3: kernel."""
    h1, h2, h3 = (topo.host(f"h{i}", f"192.0.2.{i}/24") for i in (1, 2, 3))
    dev1 = kernel_vtep(h1, 42, "10.20.0.101/24", extra="nolearning proxy l2miss l3miss")
    h1.sh("ip link add br0 type bridge && ip link set br0 up && "
          f"ip link set {dev1} master br0")
    c1 = set_container(h1, "br0", "c1", "10.20.0.1/24")
    vxtun_vtep(h2, 42, "10.20.0.2/24", env=dataplane,
               extra=("--nolearning", "--proxy", "--l2miss", "--l3miss"))
    dev3 = kernel_vtep(h3, 42, "10.20.0.3/24", extra="nolearning proxy l2miss l3miss")
    hosts = [(h1, dev1), (h2, "vxtun0"), (h3, dev3)]
    for h, dev in hosts:
        start_agent(h, etcd.url, dev, ttl=TTL, mode="on-miss")
    wait_for(converged(hosts), 20, "flood lists")
    cmac = run(f"ip -n {c1} -j link show eth0", check=True).stdout
    cmac = json.loads(cmac)[0]["address"]
    h1.cmd("agent", "endpoint", "add", cmac, "10.20.0.1")
    mac2 = mac_of(h2, "vxtun0")
    h2.cmd("agent", "endpoint", "add", mac2, "10.20.0.2")
    h3.cmd("agent", "endpoint", "add", mac_of(h3, dev3), "10.20.0.3")
    time.sleep(1)
    # Published, but installed nowhere until a miss asks for it.
    for h, dev in hosts:
        t = tables(h, dev)
        assert t["fdb"] == {} and t["neigh"] == {}, (h.name, t)
    # c1 pings h2: its ARP request misses on h1's kernel VTEP (RTM_GETNEIGH), h2's ARP for
    # the reply misses on vxtun (an L3 miss event); each agent answers from the store.
    wait_for(lambda: run(f"ip netns exec {c1} ping -c 1 -W 1 10.20.0.2",
                         check=False).returncode == 0, 20, "ping answered through misses")
    t1 = tables(h1, dev1)
    assert t1["neigh"] == {"10.20.0.2": mac2} and t1["fdb"] == {mac2: ["192.0.2.2"]}, t1
    t2 = tables(h2, "vxtun0")
    assert t2["neigh"] == {"10.20.0.1": cmac} and t2["fdb"] == {cmac: ["192.0.2.1"]}, t2
    assert tables(h3, dev3)["neigh"] == {}          # nobody asked h3 for anything
    st = agent_status(h1)
    assert st["mode"] == "on-miss" and "10.20.0.2" in " ".join(
        st["vteps"][0]["programmed"]["commands"])
    # An endpoint that leaves takes its installed entries with it.
    h2.cmd("agent", "endpoint", "del", mac2)
    wait_for(lambda: tables(h1, dev1)["neigh"] == {}, 15, "entries of a gone endpoint removed")


def test_on_miss_without_flooding_answers_kernel_and_vxtun_l2_misses(topo, dataplane, etcd):
    """``--no-flood``: no all-zeros entry, so a frame to a MAC with no FDB entry is not
    flooded but raises an L2 miss (vxlan_xmit calls vxlan_fdb_miss only then; vxtun's
    handle_frame mirrors it), which the agent answers with the MAC's FDB entry from the store.
    The senders know the MACs already (static neighbours), so no ARP and no L3 miss is
    involved: h1 is a kernel VTEP on a bridge with a container c1 behind it (its frame to
    h2's MAC misses on the kernel VTEP: RTM_GETNEIGH with NDA_LLADDR only), h2 is vxtun (the
    echo reply to c1's MAC misses: an l2miss event)."""
    h1, h2 = (topo.host(f"h{i}", f"192.0.2.{i}/24") for i in (1, 2))
    dev1 = kernel_vtep(h1, 42, "10.20.0.101/24", extra="nolearning proxy l2miss l3miss")
    h1.sh(f"ip link add br0 type bridge && ip link set br0 up && ip link set {dev1} master br0")
    c1 = set_container(h1, "br0", "c1", "10.20.0.1/24")
    vxtun_vtep(h2, 42, "10.20.0.2/24", env=dataplane,
               extra=("--nolearning", "--proxy", "--l2miss", "--l3miss"))
    hosts = [(h1, dev1), (h2, "vxtun0")]
    for h, dev in hosts:
        start_agent(h, etcd.url, dev, ttl=TTL, mode="on-miss", extra=("--no-flood",))
    wait_for(lambda: all(len((_status_or_none(h) or {"members": {}})["members"].get("42", []))
                         == 2 for h, _ in hosts), 20, "both VTEPs registered")
    cmac = json.loads(run(f"ip -n {c1} -j link show eth0", check=True).stdout)[0]["address"]
    mac2 = mac_of(h2, "vxtun0")
    h1.cmd("agent", "endpoint", "add", cmac, "10.20.0.1")
    h2.cmd("agent", "endpoint", "add", mac2, "10.20.0.2")
    run(f"ip -n {c1} neigh replace 10.20.0.2 lladdr {mac2} dev eth0 nud permanent", check=True)
    h2.sh(f"ip neigh replace 10.20.0.1 lladdr {cmac} dev vxtun0 nud permanent")
    time.sleep(1)
    for h, dev in hosts:                 # published; nothing installed, not even a flood list
        assert tables(h, dev) == {"flood": [], "fdb": {}, "neigh": {}}, h.name
    wait_for(lambda: run(f"ip netns exec {c1} ping -c 1 -W 1 10.20.0.2",
                         check=False).returncode == 0, 30, "ping answered through L2 misses")
    assert tables(h1, dev1) == {"flood": [], "fdb": {mac2: ["192.0.2.2"]}, "neigh": {}}
    assert tables(h2, "vxtun0") == {"flood": [], "fdb": {cmac: ["192.0.2.1"]}, "neigh": {}}
    st = agent_status(h2)
    assert st["flood"] is False and f"fdb replace {cmac} dst 192.0.2.1" in \
        st["vteps"][0]["programmed"]["commands"]


def test_an_agent_paused_past_its_ttl_registers_again(topo, dataplane, etcd):
    """SIGSTOP past the TTL (a host frozen, a VM paused): etcd expires the lease, and every
    other host drops the member and its endpoint.  SIGCONT: the agent finds its lease gone
    (the keep-alive answers TTL 0, its watch delivers the deletions of its own keys), takes a
    new lease and writes its keys again, and every other host adds it back."""
    hosts = fleet(topo, dataplane, "kxk")
    agents = {h.name: start_agent(h, etcd.url, dev, ttl=TTL) for h, dev in hosts}
    wait_for(converged(hosts), 20, "flood lists")
    endpoints = publish(hosts)
    wait_for(converged(hosts, endpoints), 20, "endpoints programmed")
    h2, _ = hosts[1]
    lease = agent_status(h2)["lease"]
    os.killpg(agents["h2"].pid, signal.SIGSTOP)
    try:
        rest = [hosts[0], hosts[2]]
        left = {m: v for m, v in endpoints.items() if v[0] != h2.ip}
        wait_for(converged(rest, left), TTL + 10, "h2 dropped while paused")
    finally:
        os.killpg(agents["h2"].pid, signal.SIGCONT)
    wait_for(converged(hosts, endpoints), TTL + 15, "h2 back everywhere")
    st = agent_status(h2)
    assert st["lease"] != lease and "expired" in st["last_error"], st
