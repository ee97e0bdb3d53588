"""The ARP/ND proxy, the neighbour table and the miss rules, each against the kernel's.

Kernel behaviour quoted here comes from drivers/net/vxlan/vxlan_core.c (arp_reduce,
neigh_reduce, vxlan_na_create, vxlan_xmit, vxlan_ip_miss, vxlan_fdb_miss) and
net/core/neighbour.c, and was observed on a vxlan device (Linux 6.18, iproute2 6.1);
``tests/netns/test_proxy_miss.py`` compares the same behaviour byte for byte with a kernel VTEP.
Scapy is the oracle for the frames.
"""
from __future__ import annotations

import pytest
from scapy.layers.inet6 import (ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr,
                                ICMPv6NDOptSrcLLAddr, IPv6)
from scapy.layers.l2 import ARP, Ether

from vxtun.cli.output import format_event
from vxtun.core import VtepConfig
from vxtun.core.events import L2Miss, L3Miss, NeighChange
from vxtun.core.vtep import EVENTS_MAX, MISS_INTERVAL, Deliver, Transmit, Vtep
from vxtun.errors import NeighError
from vxtun.fdb import Remote
from vxtun.proxy import NeighTable, arp_reply, na_reply, parse_arp_request, parse_ns
from vxtun.wire.ether import ZERO_MAC, mac_from_str, mac_to_str

HOST = "52:5e:55:58:9a:ab"          # the container asking
PEER = "b2:ee:aa:42:8b:0b"          # the neighbour the table knows
OWN = "02:00:00:00:00:01"           # the VTEP's TAP
M_PEER = mac_from_str(PEER)


def arp_request(tip: str = "10.20.1.3", sip: str = "10.20.1.2", src: str = HOST,
                hwtype: int = 1, op: int = 1) -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=src) /
                 ARP(hwtype=hwtype, hwlen=6, plen=4, op=op, hwsrc=src, psrc=sip, pdst=tip))


def ns_request(target: str = "2001:db8:1020::3", src: str = "2001:db8:1020::2",
               sllao: str | None = HOST, eth_src: str = HOST, tc: int = 0,
               dst: str | None = None) -> bytes:
    dst = dst or "ff02::1:ff00:3"
    pkt = Ether(dst="33:33:ff:00:00:03", src=eth_src) / IPv6(src=src, dst=dst, hlim=255, tc=tc) \
        / ICMPv6ND_NS(tgt=target)
    if sllao:
        pkt = pkt / ICMPv6NDOptSrcLLAddr(lladdr=sllao)
    return bytes(pkt)


def vtep(**kw) -> Vtep:
    cfg = dict(vni=42, name="vxtun0", proxy=True, l3miss=True, l2miss=True, learning=False,
               mac=mac_from_str(OWN), reachable_time=30.0, gc_stale_time=60.0)
    cfg.update(kw)
    return Vtep(VtepConfig(**cfg))


def events(v: Vtep) -> list:
    out = []
    ev = v.next_event()
    while ev is not None:
        out.append(ev)
        ev = v.next_event()
    return out


def delivered(actions) -> list[bytes]:
    return [a.frame for a in actions if type(a) is Deliver]


# --- the neighbour table ------------------------------------------------------------------

def test_add_refuses_an_existing_entry_and_change_a_missing_one():
    t = NeighTable()
    t.add("10.20.1.3", M_PEER)
    with pytest.raises(NeighError, match="already exists"):
        t.add("10.20.1.3", M_PEER)
    with pytest.raises(NeighError, match="does not exist"):
        t.add("10.20.1.4", M_PEER, op="change")
    with pytest.raises(NeighError, match="does not exist"):
        t.delete("10.20.1.4")
    with pytest.raises(NeighError, match="unknown nud"):
        t.add("10.20.1.5", M_PEER, "failed")


def test_keys_are_canonical_addresses():
    t = NeighTable()
    t.add("2001:db8:1020:0::0003", M_PEER)
    assert t.lookup("2001:db8:1020::3", 0.0) is not None
    with pytest.raises(NeighError, match="invalid IP"):
        t.add("10.20.1.300", M_PEER)


def test_replace_with_the_same_values_is_not_a_change_but_restarts_the_timer():
    t = NeighTable(reachable_time=10)
    _, changed = t.add("10.20.1.3", M_PEER, "reachable", now=0.0, op="replace")
    assert changed
    _, changed = t.add("10.20.1.3", M_PEER, "reachable", now=8.0, op="replace")
    assert not changed
    assert t.lookup("10.20.1.3", 17.0).state == "reachable"     # 9 s after the refresh
    _, changed = t.add("10.20.1.3", mac_from_str(HOST), "reachable", now=17.0, op="replace")
    assert changed


def test_reachable_turns_stale_then_is_collected():
    """neigh_timer_handler: REACHABLE -> STALE after reachable_time; neigh_periodic_work:
    a STALE entry goes gc_stale_time after it was last confirmed."""
    t = NeighTable(reachable_time=30, gc_stale_time=60)
    t.add("10.20.1.3", M_PEER, "reachable", now=100.0)
    assert t.lookup("10.20.1.3", 129.9).connected
    e = t.lookup("10.20.1.3", 130.0)
    assert e.state == "stale" and not e.connected
    assert [(a, x.ip, x.state) for a, x in t.changes()] == [("new", "10.20.1.3", "stale")]
    assert t.lookup("10.20.1.3", 159.9) is not None
    assert t.lookup("10.20.1.3", 160.0) is None
    assert [(a, x.ip) for a, x in t.changes()] == [("del", "10.20.1.3")]
    assert len(t) == 0


def test_a_gc_time_shorter_than_the_reachable_time_collects_at_expiry():
    t = NeighTable(reachable_time=5, gc_stale_time=1)
    t.add("10.20.1.3", M_PEER, "reachable", now=0.0)
    t.expire(4.9)
    assert len(t) == 1 and not t.changes()
    t.expire(5.0)
    assert len(t) == 0
    assert [a for a, _ in t.changes()] == ["new", "del"]


@pytest.mark.parametrize("state", ["permanent", "noarp"])
def test_permanent_and_noarp_never_expire(state):
    t = NeighTable(reachable_time=1, gc_stale_time=1)
    t.add("10.20.1.3", M_PEER, state, now=0.0)
    t.expire(1e9)
    assert t.lookup("10.20.1.3", 1e9).connected
    assert not t.changes()


def test_a_stale_entry_added_by_hand_is_collected_too():
    t = NeighTable(gc_stale_time=60)
    t.add("10.20.1.3", M_PEER, "stale", now=0.0)
    assert not t.lookup("10.20.1.3", 1.0).connected
    t.expire(60.0)
    assert len(t) == 0


def test_flush_keeps_permanent_and_noarp_unless_nud_all():
    t = NeighTable()
    for i, state in enumerate(("permanent", "noarp", "reachable", "stale")):
        t.add(f"10.20.1.{i + 1}", M_PEER, state)
    assert sorted(e.state for e in t.flush()) == ["reachable", "stale"]
    assert sorted(e.state for e in t.entries()) == ["noarp", "permanent"]
    t.flush(all_states=True)
    assert len(t) == 0


def test_entries_as_ip_j_neigh_show():
    t = NeighTable()
    t.add("2001:db8:1020::3", M_PEER)
    t.add("10.20.1.10", M_PEER, "reachable")
    t.add("10.20.1.9", M_PEER, "stale")
    assert [e.to_json() for e in t.entries(0.0)] == [
        {"dst": "10.20.1.9", "lladdr": PEER, "state": ["STALE"]},
        {"dst": "10.20.1.10", "lladdr": PEER, "state": ["REACHABLE"]},
        {"dst": "2001:db8:1020::3", "lladdr": PEER, "state": ["PERMANENT"]},
    ]


# --- ARP (arp_reduce + arp_create) -------------------------------------------------------

def test_arp_reply_is_what_arp_create_builds():
    req = arp_request()
    want = Ether(dst=HOST, src=PEER, type=0x0806) / \
        ARP(hwtype=1, ptype=0x0800, hwlen=6, plen=4, op=2, hwsrc=PEER, psrc="10.20.1.3",
            hwdst=HOST, pdst="10.20.1.2")
    got = arp_reply(req, M_PEER)
    assert got == bytes(want)
    assert len(got) == 42            # arp_create does not pad to the Ethernet minimum


def test_arp_probe_from_the_unspecified_address_is_answered_to_it():
    got = Ether(arp_reply(arp_request(sip="0.0.0.0"), M_PEER))
    assert got[ARP].pdst == "0.0.0.0" and got[ARP].hwdst == HOST


@pytest.mark.parametrize("frame, ok", [
    (arp_request(), True),
    (arp_request(hwtype=6), True),               # ARPHRD_IEEE802 is accepted too
    (arp_request(hwtype=7), False),
    (arp_request(op=2), False),                  # replies are consumed, never answered
    (arp_request(tip="127.0.0.1"), False),
    (arp_request(tip="224.0.0.1"), False),
    (arp_request()[:40], False),
], ids=["request", "ieee802", "other-hw", "reply", "loopback", "multicast", "short"])
def test_which_arp_frames_arp_reduce_considers(frame, ok):
    assert (parse_arp_request(frame) is not None) == ok


# --- ND (neigh_reduce + vxlan_na_create) -------------------------------------------------

def check_na(frame: bytes, eth_dst: str, ip_dst: str, target: str = "2001:db8:1020::3",
             tc: int = 0) -> None:
    p = Ether(frame)
    assert p.dst == eth_dst and p.src == PEER and p.type == 0x86DD
    assert p[IPv6].hlim == 255 and p[IPv6].tc == tc and p[IPv6].fl == 0
    assert p[IPv6].src == target and p[IPv6].dst == ip_dst and p[IPv6].plen == 32
    na = p[ICMPv6ND_NA]
    assert (na.R, na.S, na.O) == (0, 1, 1) and na.tgt == target
    assert na[ICMPv6NDOptDstLLAddr].lladdr == PEER and na[ICMPv6NDOptDstLLAddr].len == 1
    # The checksum scapy computes from scratch is the one we sent.
    cks = na.cksum
    del na.cksum
    assert Ether(bytes(p))[ICMPv6ND_NA].cksum == cks


def test_na_goes_to_the_source_link_layer_address_option():
    req = ns_request(sllao="0a:00:00:00:00:99")
    ns = parse_ns(req)
    check_na(na_reply(req, ns, M_PEER), "0a:00:00:00:00:99", "2001:db8:1020::2")


def test_na_without_the_option_goes_to_the_ethernet_source():
    req = ns_request(sllao=None)
    check_na(na_reply(req, parse_ns(req), M_PEER), HOST, "2001:db8:1020::2")


def test_na_copies_the_priority_bits_of_the_traffic_class_only():
    # ipv6hdr->priority is the top 4 bits of the traffic class.
    req = ns_request(tc=0xB8)
    check_na(na_reply(req, parse_ns(req), M_PEER), HOST, "2001:db8:1020::2", tc=0xB0)


def test_na_for_a_dad_probe_goes_to_the_unspecified_address_as_the_kernel_sends_it():
    req = ns_request(src="::", sllao=None)
    check_na(na_reply(req, parse_ns(req), M_PEER), HOST, "::")


def test_an_option_of_length_zero_makes_the_ns_unanswerable():
    req = bytearray(ns_request())
    req[-7] = 0                                  # the SLLAO's length field
    assert na_reply(bytes(req), parse_ns(bytes(req)), M_PEER) is None


@pytest.mark.parametrize("frame, ok", [
    (ns_request(), True),
    (ns_request(target="ff02::1"), False),       # multicast target
    (ns_request(dst="::1"), False),              # sent to loopback
], ids=["ns", "multicast-target", "to-loopback"])
def test_which_ns_neigh_reduce_considers(frame, ok):
    assert (parse_ns(frame) is not None) == ok


# --- the proxy in the core (vxlan_xmit) ----------------------------------------------------

def test_arp_for_a_known_ip_is_answered_locally_and_nothing_is_sent():
    v = vtep()
    v.fdb.add(ZERO_MAC, Remote("192.0.2.2"), "permanent")      # a flood list exists
    v.neigh.add("10.20.1.3", M_PEER)
    acts = v.handle_frame(arp_request(), 0.0)
    assert not [a for a in acts if type(a) is Transmit]
    assert delivered(acts) == [arp_reply(arp_request(), M_PEER)]
    assert v.stats.proxy_replies == 1
    assert events(v) == []


def test_every_arp_frame_is_consumed_by_the_proxy():
    v = vtep()
    v.fdb.add(ZERO_MAC, Remote("192.0.2.2"), "permanent")
    for frame in (arp_request(op=2), arp_request(hwtype=7), arp_request(tip="224.0.0.5")):
        assert v.handle_frame(frame, 0.0) == []
    assert events(v) == []


def test_without_proxy_arp_is_flooded():
    v = vtep(proxy=False)
    v.fdb.add(ZERO_MAC, Remote("192.0.2.2"), "permanent")
    v.neigh.add("10.20.1.3", M_PEER)
    acts = v.handle_frame(arp_request(), 0.0)
    assert [a.ip for a in acts if type(a) is Transmit] == ["192.0.2.2"]


def test_unknown_ip_raises_one_l3_miss_per_interval():
    v = vtep()
    for t in (0.0, 0.1, 0.5):
        assert v.handle_frame(arp_request(), t) == []
    assert events(v) == [L3Miss("vxtun0", "10.20.1.3", 42, 0.0)]
    v.handle_frame(arp_request(tip="10.20.1.4"), 0.6)            # another key is not held back
    v.handle_frame(arp_request(), MISS_INTERVAL)
    assert [e.ip for e in events(v)] == ["10.20.1.4", "10.20.1.3"]
    assert v.stats.l3miss == 3


def test_no_l3_miss_without_l3miss():
    v = vtep(l3miss=False)
    v.handle_frame(arp_request(), 0.0)
    assert events(v) == []


def test_a_stale_entry_is_neither_answered_nor_missed_until_it_is_collected():
    """arp_reduce raises the miss only when neigh_lookup() finds nothing."""
    v = vtep(reachable_time=1.0, gc_stale_time=3.0)
    v.neigh.add("10.20.1.3", M_PEER, "reachable", now=0.0)
    assert delivered(v.handle_frame(arp_request(), 0.5))
    assert v.handle_frame(arp_request(), 1.5) == []
    evs = events(v)
    assert [(type(e), e.entry["state"]) for e in evs] == [(NeighChange, ["STALE"])]
    assert v.handle_frame(arp_request(), 3.0) == []
    evs = events(v)
    assert [type(e) for e in evs] == [NeighChange, L3Miss]
    assert evs[0].action == "del" and evs[0].entry["lladdr"] == PEER


def test_expire_reports_ageing_as_ip_monitor_does():
    v = vtep(reachable_time=1.0, gc_stale_time=2.0)
    v.neigh.add("10.20.1.3", M_PEER, "reachable", now=0.0)
    v.expire(1.0)
    v.expire(2.0)
    assert [format_event(e, with_dev=False) for e in events(v)] == [
        f"10.20.1.3 lladdr {PEER} STALE", f"Deleted 10.20.1.3 lladdr {PEER} STALE"]


def test_a_neighbour_behind_this_host_is_not_answered():
    """The "bridge-local neighbor" check: an FDB entry for its MAC with the any address."""
    v = vtep()
    v.neigh.add("10.20.1.3", M_PEER)
    v.fdb.add(M_PEER, Remote("0.0.0.0"), "permanent")
    assert v.handle_frame(arp_request(), 0.0) == []
    assert events(v) == []


def test_ns_for_a_known_ip_is_answered_with_an_na():
    v = vtep()
    v.neigh.add("2001:db8:1020::3", M_PEER)
    req = ns_request()
    assert delivered(v.handle_frame(req, 0.0)) == [na_reply(req, parse_ns(req), M_PEER)]


def test_ns_for_an_unknown_ip_raises_an_l3_miss_for_the_target():
    v = vtep()
    assert v.handle_frame(ns_request(target="2001:db8:1020::0009"), 0.0) == []
    assert events(v) == [L3Miss("vxtun0", "2001:db8:1020::9", 42, 0.0)]


def test_other_icmpv6_is_not_proxied():
    v = vtep()
    v.fdb.add(ZERO_MAC, Remote("192.0.2.2"), "permanent")
    na = bytes(Ether(dst="33:33:00:00:00:01", src=HOST) / IPv6(src="fe80::1", dst="ff02::1") /
               ICMPv6ND_NA(tgt="fe80::1"))
    assert [type(a) for a in v.handle_frame(na, 0.0)] == [Transmit]


# --- L2 misses (vxlan_fdb_miss) ------------------------------------------------------------

def ip_frame(dst: str) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + mac_from_str(HOST) + b"\x08\x00" + bytes(46)


def test_unknown_unicast_raises_an_l2_miss_and_is_dropped():
    v = vtep()
    assert v.handle_frame(ip_frame(PEER), 0.0) == []
    assert events(v) == [L2Miss("vxtun0", M_PEER, 42, 0.0)]
    assert v.stats.l2miss == 1
    assert v.stats.to_json()["drops"]["no_remote"] == 1


@pytest.mark.parametrize("dst", ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01"])
def test_broadcast_and_multicast_never_raise_an_l2_miss(dst):
    v = vtep()
    assert v.handle_frame(ip_frame(dst), 0.0) == []
    assert events(v) == []


def test_no_l2_miss_when_there_is_a_default_destination():
    v = vtep()
    v.fdb.add(ZERO_MAC, Remote("192.0.2.2"), "permanent")
    assert [a.ip for a in v.handle_frame(ip_frame(PEER), 0.0)] == ["192.0.2.2"]
    assert events(v) == []


def test_no_l2_miss_without_l2miss_or_for_a_known_mac():
    v = vtep(l2miss=False)
    v.handle_frame(ip_frame(PEER), 0.0)
    assert events(v) == []
    v = vtep()
    v.fdb.add(M_PEER, Remote("192.0.2.2"), "permanent")
    assert [a.ip for a in v.handle_frame(ip_frame(PEER), 0.0)] == ["192.0.2.2"]
    assert events(v) == []


def test_l2_misses_are_limited_per_mac():
    v = vtep()
    for i in range(100):
        v.handle_frame(ip_frame(PEER), i * 0.001)
    v.handle_frame(ip_frame(HOST), 0.2)
    assert [mac_to_str(e.mac) for e in events(v)] == [PEER, HOST]
    assert v.stats.to_json()["drops"]["no_remote"] == 101


def test_the_event_queue_is_bounded():
    """Nobody drains the queue: the oldest events go, the count says how many."""
    v = vtep()
    for i in range(EVENTS_MAX + 10):
        mac = mac_to_str(b"\x02\x00" + i.to_bytes(3, "big") + b"\x01")
        v.handle_frame(ip_frame(mac), 0.0)
    assert len(events(v)) == EVENTS_MAX
    assert v.events_lost == 10
