"""A short ARP storm against ``vxtun --proxy`` (bench/storm.py's topology and generator): what
must stay true under it, never how fast anything is (that is the benchmark's job).

While the generator writes requests for the storm's targets into vxtun0, the host's own
neighbour cache for vxtun0 is flushed and it pings the peer across the overlay: it resolves
the peer through the proxy and the answers arrive; a request for a storm target written
meanwhile is answered; afterwards vxtun still runs and counted the storm's answers.

Runs once per dataplane (``fast``, ``pure``).  The pure dataplane gets a tenth of the fast
path's storm: it answers a few thousand requests a second, and past that the TAP's queue drops
frames at random (shown as ``tap queue drops``), ours among them; bench/storm.py measures both
at the full rate.
"""
from __future__ import annotations

import json
import subprocess

from helpers import exchange
from test_proxy_miss import ASKER, arp

from bench import storm
from vxtun.lab.netns import python

RATE = {"fast": 20000, "pure": 2000}        # ARP requests per second


def test_the_host_resolves_and_pings_through_a_storm(topo, dataplane):
    kind = "pure" if dataplane.get("VXTUN_PUREPYTHON") == "1" else "fast"
    h1, h2, dev = storm.setup(topo, kind)
    peer = json.loads(h2.sh("ip -j link show dev vxlan0"))[0]["address"]
    rate = RATE[kind]
    gen = h1.popen(python("-m", "bench.storm", "--generate", dev, "--rate", str(rate),
                          "--seconds", "6"), stdout=subprocess.PIPE, text=True)
    try:
        h1.sh(f"ip neigh flush dev {dev}")
        out = h1.run(f"ping -n -c 5 -i 0.2 -W 2 {storm.OVERLAY[1]}", timeout=60)
        cache = json.loads(h1.sh(f"ip -j neigh show {storm.OVERLAY[1]} dev {dev}"))
        answered = exchange(h1, dev, [arp(storm.TARGETS[7], sip="10.20.1.1")], wait=1.0)
    finally:
        offered, _ = gen.communicate(timeout=60)
    assert " 0 received" not in out.stdout and out.returncode in (0, 1), out.stdout
    assert cache and cache[0]["lladdr"] == peer, cache
    # the storm's own answers go to its senders; ours to the asker
    assert len([r for r in answered if r.startswith(ASKER.replace(":", ""))]) == 1
    assert json.loads(offered.strip().splitlines()[-1])["taken"] > 0
    st = json.loads(h1.cmd("stats", "dev", dev, "-j"))[0]
    assert st["proxy_replies"] > 0
    assert h1.run(f"ping -n -c 1 -W 2 {storm.OVERLAY[1]}", timeout=30).returncode == 0
