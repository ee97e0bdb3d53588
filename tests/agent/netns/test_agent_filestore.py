"""``vxtun agent --store sqlite:PATH --learn``: the embedded store shared by the namespaces of
one machine, with endpoints learned from the local tables instead of typed in.

h1: a kernel VTEP on a bridge with a container behind it (its MAC learned by the bridge, its IP
from the bridge's neighbour table); h2: a vxtun VTEP on its own (its TAP's MAC and address).
"""
from __future__ import annotations

import json

from vxtun.agent.lab import kernel_vtep, start_agent, tables, vxtun_vtep, wait_for
from vxtun.lab.netns import python, run, set_container


def test_file_store_and_learned_endpoints(topo, dataplane, tmp_path):
    store = f"sqlite:{tmp_path}/agents.sqlite"
    h1, h2 = topo.host("h1", "192.0.2.1/24"), topo.host("h2", "192.0.2.2/24")
    dev1 = kernel_vtep(h1, 42, "10.20.0.101/24")
    h1.sh(f"ip addr flush dev {dev1} && ip link add br0 type bridge && ip link set br0 up && "
          f"ip link set {dev1} master br0 && ip addr add 10.20.0.101/24 dev br0")
    c1 = set_container(h1, "br0", "c1", "10.20.0.1/24")
    cmac = json.loads(run(f"ip -n {c1} -j link show eth0").stdout)[0]["address"]
    vxtun_vtep(h2, 42, "10.20.0.2/24", env=dataplane)
    mac2 = h2.sh("cat /sys/class/net/vxtun0/address").strip()
    for h, dev in ((h1, dev1), (h2, "vxtun0")):
        start_agent(h, store, dev, extra=("--learn",))
    h1.sh("ping -c 1 -W 2 10.20.0.1")       # the bridge learns c1's MAC, br0 its IP
    wait_for(lambda: tables(h2, "vxtun0")["neigh"].get("10.20.0.1") == cmac, 20,
             "c1 learned on h1 and programmed on h2")
    t2 = tables(h2, "vxtun0")
    assert t2["flood"] == ["192.0.2.1"] and t2["fdb"][cmac] == ["192.0.2.1"], t2
    wait_for(lambda: tables(h1, dev1)["neigh"].get("10.20.0.2") == mac2, 20,
             "h2's TAP published and programmed on h1")
    p = run(f"ip netns exec {c1} ping -c 2 -i 0.2 -W 2 10.20.0.2", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    # The container leaves: the bridge forgets its MAC, the agent withdraws it, h2 drops it.
    h1.sh("ip link del ve1")
    wait_for(lambda: cmac not in tables(h2, "vxtun0")["fdb"], 20, "c1 withdrawn")
    assert "10.20.0.1" not in tables(h2, "vxtun0")["neigh"]


def test_agent_starts_the_vteps_of_a_config_file(topo, dataplane, tmp_path):
    """``vxtun agent --config FILE`` runs ``vxtun up --config FILE`` and programs its VTEPs;
    stopping the agent stops them."""
    store = f"sqlite:{tmp_path}/agents.sqlite"
    h1, h2 = topo.host("h1", "192.0.2.1/24"), topo.host("h2", "192.0.2.2/24")
    conf = tmp_path / "h1.toml"
    conf.write_text('[defaults]\ndev = "eth0"\nlocal = "192.0.2.1"\nnolearning = true\n'
                    'proxy = true\n\n[[vtep]]\nname = "vx42"\nvni = 42\n'
                    'address = "10.20.0.1/24"\n\n[[vtep]]\nname = "vx43"\nvni = 43\n')
    agent1 = h1.popen(python("-m", "vxtun", "agent", "--store", store, "--ttl", "3",
                             "--config", str(conf)), env=dataplane)
    dev2 = kernel_vtep(h2, 42, "10.20.0.2/24")
    start_agent(h2, store, dev2)
    wait_for(lambda: tables(h2, dev2)["flood"] == ["192.0.2.1"], 30, "vx42 joined VNI 42")
    wait_for(lambda: tables(h1, "vx42")["flood"] == ["192.0.2.2"], 10, "h2 in vx42's list")
    assert tables(h1, "vx43")["flood"] == []           # alone in VNI 43
    agent1.terminate()
    assert agent1.wait(15) == 0
    wait_for(lambda: h1.run("test -e /sys/class/net/vx42").returncode != 0, 15,
             "the config's VTEPs stopped with the agent")
    wait_for(lambda: tables(h2, dev2)["flood"] == [], 10, "h1 left VNI 42")
