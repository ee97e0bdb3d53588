"""Busy polling in the fast path's threads (VXTUN_BUSY_POLL_US, vxtun/fastpath/threads.pyx).

Two vxtun VTEPs face each other: h1's busy-polls with a 10 ms budget, h2's does not.  Pings
every 4 ms cross both, so h1's threads find traffic within every spin and stay awake: they use
far more CPU than h2's for the same packets, while every ping is still answered.  Once the
traffic stops the budget runs out and h1's process sleeps: at rest it uses no CPU.  Without busy
polling both processes would use the same little CPU and the first assertion fails.
"""
from __future__ import annotations

import time

from bench.topology import cpu_seconds, make_vtep
from vxtun.lab.netns import Topology


def test_busy_poll_spins_while_traffic_flows_and_rests_at_zero(netns_ready):
    with Topology("busy") as topo:
        h1 = topo.host("h1", "192.0.2.1/24")
        h2 = topo.host("h2", "192.0.2.2/24")
        busy = make_vtep("vxtun", h1, 0,
                         env={"VXTUN_PUREPYTHON": "0", "VXTUN_BUSY_POLL_US": "10000"})
        plain = make_vtep("vxtun", h2, 1)
        assert busy.show.get("dataplane") != "pure" and plain.show.get("dataplane") != "pure"
        deadline = time.monotonic() + 15
        while h1.run("ping -n -c 1 -W 1 10.20.1.2", timeout=5).returncode != 0:
            assert time.monotonic() < deadline, "10.20.1.2 never answered"

        b0, p0 = cpu_seconds(busy.pid), cpu_seconds(plain.pid)
        r = h1.run("ping -n -q -i 0.004 -c 500 -W 1 10.20.1.2", timeout=60)
        b1, p1 = cpu_seconds(busy.pid), cpu_seconds(plain.pid)
        assert " 0% packet loss" in r.stdout, r.stdout + r.stderr
        spun, slept = b1 - b0, p1 - p0
        assert spun >= 4 * slept + 0.05, (
            f"busy polling: {spun:.2f} CPU-s, none: {slept:.2f} CPU-s over the same pings")

        time.sleep(0.5)            # the last spin ends within twice the budget (20 ms)
        b2 = cpu_seconds(busy.pid)
        time.sleep(2.0)
        rest = cpu_seconds(busy.pid) - b2
        assert rest <= 0.03, f"busy polling at rest used {rest:.2f} CPU-s in 2 s"
        assert busy.alive() and plain.alive()
