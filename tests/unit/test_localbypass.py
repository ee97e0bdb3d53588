"""localbypass: a frame for a remote that is a local address goes straight to the local VTEP
of that VNI and port (vxlan_xmit_one -> encap_bypass_if_local -> vxlan_encap_bypass), decided
in the core and carried out by the node.  No root: the node's part runs over pipes."""
from __future__ import annotations

import os
import socket
from types import SimpleNamespace

from vxtun.core import VtepConfig
from vxtun.core.vtep import Bypass, Deliver, Transmit, Vtep
from vxtun.dataplane.lifecycle import Port, Vteps
from vxtun.dataplane.node import Node
from vxtun.fdb import Remote

A = bytes.fromhex("02aa00000001")
B = bytes.fromhex("02bb00000002")
LOCAL = "192.0.2.1"


def frame(dst: bytes = B, src: bytes = A, n: int = 60) -> bytes:
    return dst + src + b"\x08\x00" + bytes(n - 14)


def vtep(vni: int = 42, **kw) -> Vtep:
    v = Vtep(VtepConfig(vni=vni, mac=bytes.fromhex("02ee00000000") + bytes([vni & 0xFF]), **kw))
    v.local_ips = frozenset({LOCAL, "2001:db8::1"})
    return v


def test_a_local_remote_is_bypassed_and_not_counted_as_sent():
    v = vtep(remote=LOCAL)
    f = frame()
    out = v.handle_frame(f, 0.0)
    assert [type(a) for a in out] == [Bypass]
    b = out[0]
    assert (b.family, b.port, b.vni, b.frame) == (4, 4789, 42, f)
    # what to send if the port is no VTEP of this process's
    assert b.datagram.ip == LOCAL and b.datagram.payload[8:] == f
    assert v.stats.tx_packets == 0 and v.stats.tx_bytes == 0


def test_loopback_and_ipv6_remotes_are_local_other_remotes_are_sent():
    v4, v6 = vtep(local="192.0.2.9"), vtep(local="2001:db8::9")
    for v, ips in ((v4, ("127.0.0.5", LOCAL, "198.51.100.7")),
                   (v6, ("::1", "2001:db8::1", "2001:db8::7"))):
        for ip in ips:
            v.fdb_update("append", bytes(6), Remote(ip), "permanent", 0.0)
        out = v.handle_frame(frame(), 0.0)
        fam = v.config.family
        assert [(type(a).__name__, getattr(a, "family", fam)) for a in out] == [
            ("Bypass", fam), ("Bypass", fam), ("Transmit", fam)]
        assert v.stats.tx_packets == 1


def test_the_remote_port_and_vni_choose_the_local_vtep():
    v = vtep()
    v.fdb_update("append", bytes(6), Remote(LOCAL, port=4790, vni=7), "permanent", 0.0)
    (b,) = v.handle_frame(frame(), 0.0)
    assert (b.port, b.vni) == (4790, 7)


def test_nolocalbypass_sends_through_the_underlay():
    v = vtep(remote=LOCAL, localbypass=False)
    out = v.handle_frame(frame(), 0.0)
    assert [type(a) for a in out] == [Transmit]
    assert v.stats.tx_packets == 1


def test_the_receiving_vtep_learns_against_loopback_and_counts_the_whole_frame():
    v4, v6 = vtep(remote=LOCAL), vtep(remote="2001:db8::1")
    f = frame(n=100)
    for v, lo in ((v4, "127.0.0.1"), (v6, "::1")):
        out = v.handle_bypass(f, 1.0)
        assert out == [Deliver(out[0].vnet, f)]
        assert [r.ip for r in v.fdb.lookup(A, 1.0)] == [lo]
        assert (v.stats.rx_packets, v.stats.rx_bytes, v.stats.learned) == (1, 100, 1)
        assert [e.action for e in iter(v.next_event, None)] == ["new"]


def test_bypass_checks_nothing_an_underlay_datagram_is_checked_for():
    v = vtep()
    own = frame(src=v.mac)
    bad = frame(src=bytes.fromhex("010000000001"))
    for f in (own, bad):
        assert [type(a) for a in v.handle_bypass(f, 0.0)] == [Deliver]
    assert v.fdb.lookup(bad[6:12], 0.0) is None          # delivered, not learned
    assert v.stats.rx_packets == 2 and not any(v.stats.drops)
    quiet = vtep(learning=False)
    quiet.handle_bypass(frame(), 0.0)
    assert quiet.fdb.lookup(A, 0.0) is None


class _Node:
    """What Node.bypass needs: the open VTEPs and after_core."""

    def __init__(self) -> None:
        self.vteps = Vteps(None, None)
        self.published: list = []

    def after_core(self, port) -> None:
        self.published.append(port.config.name)


def _port(node: _Node, name: str, vni: int, family: int = socket.AF_INET) -> tuple[Port, int]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    cfg = VtepConfig(vni=vni, name=name, remote=LOCAL)
    us = node.vteps.underlays.setdefault((family, 4789), SimpleNamespace(by_vni={}))
    port = Port(cfg, vtep(vni, name=name, remote=LOCAL), w, us, None)
    port.bypass = lambda p, a: Node.bypass(node, p, a)
    us.by_vni[vni] = port
    return port, r


def test_the_node_hands_the_frame_to_the_local_vtep_of_that_vni():
    node = _Node()
    a, _ = _port(node, "vx-a", 42)
    b, b_tap = _port(node, "vx-b", 43)
    a.vtep.fdb_update("add", B, Remote(LOCAL, vni=43), "permanent", 0.0)
    f = frame(n=80)
    a.execute(a.vtep.handle_frame(f, 0.0))
    assert os.read(b_tap, 4096)[10:] == f                 # after its virtio-net header
    assert (a.vtep.stats.tx_packets, a.vtep.stats.tx_bytes) == (1, 80)
    assert (b.vtep.stats.rx_packets, b.vtep.stats.rx_bytes) == (1, 80)
    assert [r.ip for r in b.vtep.fdb.lookup(A, 0.0)] == ["127.0.0.1"]
    assert node.published == ["vx-b"]


def test_no_local_vtep_for_the_vni_is_a_tx_error():
    node = _Node()
    a, _ = _port(node, "vx-a", 42)
    a.vtep.fdb_update("add", B, Remote(LOCAL, vni=99), "permanent", 0.0)
    a.execute(a.vtep.handle_frame(frame(), 0.0))
    st = a.vtep.stats.to_json()
    assert st["drops"]["tx_error"] == 1 and st["tx"]["packets"] == 0


def test_a_port_of_no_vtep_here_is_sent_through_the_underlay():
    node = _Node()
    a, _ = _port(node, "vx-a", 42)
    a.vtep.fdb_update("add", B, Remote(LOCAL, port=4790), "permanent", 0.0)
    sent = []
    a.execute = sent.extend
    Node.bypass(node, a, a.vtep.handle_frame(frame(), 0.0)[0])
    assert [(type(t), t.port) for t in sent] == [(Transmit, 4790)]
    assert a.vtep.stats.tx_packets == 1 and a.vtep.stats.tx_bytes == 60 - 14


def test_the_tx_thread_punts_a_frame_for_a_local_remote_and_the_core_bypasses_it():
    """The C decision (vxtun/fastpath/decide.pyx) never sends to a local address and never
    learns: it hands the frame back, and the core over the same C FDB makes it a Bypass."""
    from vxtun import _fastpath as fp
    from vxtun.dataplane.fast import handle_punt
    from vxtun.fdb import Fdb
    from vxtun.wire.addr import ip_to_bytes

    store = fp.CFdb()
    core = Vtep(VtepConfig(vni=42, remote="198.51.100.7"), fdb=Fdb(store=store))
    core.local_ips = frozenset({LOCAL})
    dec = fp.Decisions()
    vid = dec.add_vtep(42, bytes.fromhex("02ee00000042"), 1450, store)
    vnet = bytes(10)
    f = frame()
    acts, punts = dec.tx(vid, vnet + f, 0.0)                 # no local address known: sent
    assert [type(a) for a in acts] == [Transmit] and punts == []
    core.fdb_update("add", B, Remote(LOCAL), "permanent", 0.0)
    for known, want in (([], 0), ([ip_to_bytes(LOCAL)], 1)):
        dec.set_local(vid, True, known)
        acts, punts = dec.tx(vid, vnet + f, 0.0)
        assert (len(acts), len(punts)) == (1 - want, want)
    (kind, _, data), = punts
    (b,) = handle_punt(core, kind, data, 0.0)
    assert type(b) is Bypass and b.frame == f
    for lo in ("127.0.0.9",):
        core.fdb_update("replace", B, Remote(lo), "permanent", 0.0)
        dec.set_local(vid, True, [])
        assert dec.tx(vid, vnet + f, 0.0)[1]                 # loopback is always local
        dec.set_local(vid, False, [ip_to_bytes(LOCAL)])
        assert not dec.tx(vid, vnet + f, 0.0)[1]             # nolocalbypass: sent


def test_a_traced_bypass_is_sent_with_no_outer_header():
    from vxtun.trace.reference import trace_frame

    v = vtep(remote=LOCAL)
    actions, rec = trace_frame(v, frame(), 0.0, wall=1.0)
    assert [type(a) for a in actions] == [Bypass]
    assert rec["action"] == "sent" and rec["remotes"] == [LOCAL] and "outer" not in rec
