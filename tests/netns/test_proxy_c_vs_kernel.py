"""The proxy's answers from the C neighbour table (vxtun/fastpath/neigh.pyx) against a kernel
VTEP's, in namespaces, on both dataplanes.

* A batch of ARP requests and Neighbour Solicitations for known IPs, written on a kernel
  vxlan0 with ``proxy`` and on vxtun0 with ``--proxy`` side by side: the same answers byte for
  byte (tests/netns/test_proxy_miss.py checks the rest of arp_reduce/neigh_reduce the same way).
* With the fast path, a hit is answered by the TX thread: ``vxtun stats`` counts the answers
  and ``punted`` stays 0; a miss to report (``--l3miss``) is the one thing punted.

Every test runs once per dataplane (``fast``, ``pure``).
"""
from __future__ import annotations

import json

from helpers import exchange, poll
from test_proxy_miss import PEER, arp, ns, side_by_side, table

KNOWN4 = [f"10.20.1.{i}" for i in range(3, 9)]
KNOWN6 = [f"2001:db8:1020::{i}" for i in range(3, 9)]


def _fill(h, kind: str, dev: str) -> None:
    for ip in KNOWN4 + KNOWN6:
        table(h, kind, "neigh", f"add {ip} lladdr {PEER}", "dev", dev)


def _default(h) -> None:
    """A default destination for vxtun0, so the host's own chatter (IPv6 router
    solicitations, MLD) is sent, not punted as L2 misses: ``punted`` then counts the proxy."""
    h.cmd("fdb", "append", "00:00:00:00:00:00", "dst", "192.0.2.9", "dev", "vxtun0")


def _requests() -> list[bytes]:
    out = [arp(ip, sip=f"10.20.1.{40 + i}") for i, ip in enumerate(KNOWN4)]
    out += [ns(ip, src=f"2001:db8:1020::{40 + i}", tc=0x20 * i)
            for i, ip in enumerate(KNOWN6)]
    out += [ns(KNOWN6[0], src="2001:db8:1020::77", sllao=None)]
    return out


def _stats(h) -> dict:
    return json.loads(h.cmd("stats", "dev", "vxtun0", "-j"))[0]


def test_answers_from_the_table_are_the_kernels_byte_for_byte(topo, dataplane):
    h = side_by_side(topo, dataplane, "--proxy")
    _default(h)
    for kind, dev in (("kernel", "vxlan0"), ("vxtun", "vxtun0")):
        _fill(h, kind, dev)
    reqs = _requests()
    before = _stats(h)
    replies = {dev: exchange(h, dev, reqs, wait=1.0) for dev in ("vxlan0", "vxtun0")}
    assert len(replies["vxlan0"]) == len(reqs), replies["vxlan0"]
    assert sorted(replies["vxtun0"]) == sorted(replies["vxlan0"])
    st = _stats(h)
    assert st["proxy_replies"] - before["proxy_replies"] == len(reqs)
    if dataplane.get("VXTUN_PUREPYTHON") != "1":
        # every answer came from the TX thread
        assert st["punted"] == before["punted"], (before, st)


def test_only_a_miss_to_report_reaches_python(topo, dataplane):
    h = side_by_side(topo, dataplane, "--proxy", "--l3miss")
    _default(h)
    _fill(h, "vxtun", "vxtun0")
    before = _stats(h)
    # hits, a miss repeated, and a request that is consumed without an answer
    frames = _requests() + [arp("10.20.1.99")] * 20 + [arp("224.0.0.5")]
    replies = exchange(h, "vxtun0", frames, wait=1.0)
    assert len(replies) == len(_requests())
    st = poll(lambda: (s := _stats(h))["l3miss"] > before["l3miss"] and s)
    assert st and st["l3miss"] - before["l3miss"] == 1, st
    assert st["drops"]["proxy"] - before["drops"]["proxy"] == 21, st
    if dataplane.get("VXTUN_PUREPYTHON") != "1":
        # the repeated miss is held in C: it reaches Python once (the 20 requests go out
        # 20 ms apart, so they straddle the limiter's half second at most once more)
        assert 1 <= st["punted"] - before["punted"] <= 2, (before, st)
