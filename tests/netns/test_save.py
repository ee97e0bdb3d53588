"""``vxtun save`` and a restart: what an operator told a running VTEP survives a kill -9.

Entries are added with ``vxtun fdb`` and ``vxtun neigh``, one MAC is learned from traffic,
the VTEP is saved, its processes are killed with SIGKILL (the TAP goes with them), and
``vxtun up --config`` of the saved file brings back the same device (MAC, MTU, address) with
the same FDB, less the learned entry, and the same neighbour table.
"""
from __future__ import annotations

import os
import signal
import tomllib

from helpers import kernel_vtep, links, mac_of, ping, stop, vxtun_json, vxtun_up, wait_until

A, B = "192.0.2.1", "192.0.2.2"


def test_save_kill_and_up_from_the_file_restores_what_was_told(topo, dataplane, tmp_path):
    a = topo.host("h0", f"{A}/24")
    b = topo.host("h1", f"{B}/24")
    kernel_vtep(b, remote=A, local=B, address="10.20.1.2/24")
    up = vxtun_up(a, dataplane, "--vni", "42", "--remote", B, "--local", A, "--dev", "eth0",
                  "--dstport", "4789", "--address", "10.20.1.1/24", "--proxy",
                  "--ageing", "600", "--maxaddress", "1000")
    a.cmd("fdb", "append", "00:00:00:00:00:00", "dst", "192.0.2.3", "dev", "vxtun0")
    a.cmd("fdb", "append", "00:00:00:00:00:00", "dst", "192.0.2.4", "port", "8472", "vni", "7",
          "dev", "vxtun0")
    a.cmd("fdb", "add", "52:5e:55:58:9a:ab", "dst", "192.0.2.5", "static", "dev", "vxtun0")
    a.cmd("fdb", "replace", "52:5e:55:58:9a:ac", "dst", "192.0.2.6", "dev", "vxtun0")
    a.cmd("neigh", "add", "10.20.1.2", "lladdr", mac_of(b, "vxlan0"), "dev", "vxtun0")
    a.cmd("neigh", "add", "10.20.1.9", "lladdr", "52:5e:55:58:9a:ad", "nud", "noarp",
          "dev", "vxtun0")
    # with --proxy no ARP leaves vxtun (arp_reduce): the kernel side gets a static neighbour,
    # which stays right after the restart only if the TAP keeps its MAC
    b.sh(f"ip neigh add 10.20.1.1 lladdr {mac_of(a, 'vxtun0')} dev vxlan0 nud permanent")
    ping(a, "10.20.1.2")                 # the kernel VTEP's MAC is learned (dynamic)
    learned = mac_of(b, "vxlan0")
    fdb = vxtun_json(a, "fdb", "show", "dev", "vxtun0")
    assert learned in {r["mac"] for r in fdb}
    neigh = vxtun_json(a, "neigh", "show", "dev", "vxtun0", "nud", "all")
    dev = vxtun_json(a, "show", "dev", "vxtun0")[0]

    saved = tmp_path / "saved.toml"
    p = a.run_vxtun("save", "dev", "vxtun0")
    assert p.returncode == 0, p.stderr
    saved.write_text(p.stdout)
    (table,) = tomllib.loads(p.stdout)["vtep"]
    assert not [line for line in table["fdb"] if learned in line]

    # kill -9: the owner (which holds the TAP) and the up; the TAP and the sockets go
    os.kill(dev["pid"], signal.SIGKILL)
    up.kill()
    up.communicate(timeout=10)
    wait_until(lambda: "vxtun0" not in links(a), what="the TAP to go with its process")

    again = vxtun_up(a, dataplane, "--config", str(saved))
    try:
        # what was added is back; what was learned is not (traffic may teach it again:
        # a learned entry shows no state, as bridge fdb shows NUD_REACHABLE)
        def added(rows):
            return [r for r in rows if r["state"]]
        assert added(vxtun_json(a, "fdb", "show", "dev", "vxtun0")) == added(fdb)
        assert learned not in {r["mac"] for r in added(fdb)}
        assert vxtun_json(a, "neigh", "show", "dev", "vxtun0", "nud", "all") == neigh
        now = vxtun_json(a, "show", "dev", "vxtun0")[0]
        for key in ("vni", "remote", "local", "dev", "dstport", "srcport", "mtu", "address",
                    "addresses", "ageing", "maxaddress", "proxy", "learning", "l2miss",
                    "l3miss", "reachable_time", "gc_stale_time"):
            assert now[key] == dev[key], key
        ping(a, "10.20.1.2")
    finally:
        assert stop(again)[0] == 0
