"""``vxtun trace`` on the pure core: the records of each kind of decision, their text, the
server-side filters, the lost count of a reader that never reads, the request and the CLI."""
from __future__ import annotations

import json
import socket

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether
from stubs import read_lines

from vxtun.cli.requests import parse_trace
from vxtun.core import Demux, VtepConfig
from vxtun.core.requests import TraceRequest, request_from_json
from vxtun.core.vtep import Vtep
from vxtun.dataplane import commands
from vxtun.errors import LocalError
from vxtun.fdb import Remote
from vxtun.io.jsonlines import Channel
from vxtun.trace.hub import TraceHub
from vxtun.trace.records import TraceFilter, format_record
from vxtun.trace.reference import trace_datagram, trace_frame
from vxtun.wire.ether import ZERO_MAC, mac_from_str
from vxtun.wire.vxlan import encode_header

OWN = "02:00:00:00:00:01"
HOST = "52:5e:55:58:9a:ab"          # behind our TAP
PEER = "b2:ee:aa:42:8b:0b"          # behind 192.0.2.1
WALL = 1764590400.25


def vtep(**kw) -> Vtep:
    cfg = dict(vni=42, name="vxtun0", mac=mac_from_str(OWN), local="192.0.2.2")
    cfg.update(kw)
    return Vtep(VtepConfig(**cfg))


def arp_who_has() -> bytes:
    return bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST) /
                 ARP(op=1, hwsrc=HOST, psrc="10.20.1.2", pdst="10.20.1.3"))


def ping(src=HOST, dst=PEER, s="10.20.1.2", d="10.20.1.3") -> bytes:
    return bytes(Ether(src=src, dst=dst) / IP(src=s, dst=d) / ICMP(id=7, seq=1) / (b"x" * 56))


def test_flood_through_the_default_entry():
    v = vtep(group="239.1.1.1", dev="eth0")
    v.fdb_update("append", ZERO_MAC, Remote("192.0.2.3"), "permanent", 0.0)
    actions, r = trace_frame(v, arp_who_has(), 1.0, WALL)
    assert len(actions) == 2
    assert r["summary"] == "ARP who-has 10.20.1.3 tell 10.20.1.2"
    assert r["lookup"] == "fdb miss, default 00:00:00:00:00:00 with 2 remotes"
    assert r["fdb"] == {"mac": "ff:ff:ff:ff:ff:ff", "hit": False, "default": True,
                        "remotes": ["239.1.1.1", "192.0.2.3"]}
    assert r["action"] == "sent" and r["remotes"] == ["239.1.1.1", "192.0.2.3"]
    o = r["outer"]
    assert (o["src"], o["dst"], o["dport"], o["vni"], o["ttl"], o["tos"]) == \
        ("192.0.2.2", "239.1.1.1", 4789, 42, 1, 0)
    assert o["len"] == 42 + 8 + 8 + 20 and r["inner"]["len"] == 42
    assert r["inner"] == {"src": HOST, "dst": "ff:ff:ff:ff:ff:ff", "ethertype": 0x0806,
                          "len": 42}
    assert r["segments"] == 1 and "reason" not in r and "neigh" not in r
    assert r["time"] == WALL and r["dev"] == "vxtun0" and r["dir"] == "tx"
    line = format_record(r, with_dev=False)
    assert line.endswith(" tx ARP who-has 10.20.1.3 tell 10.20.1.2; fdb miss, default "
                         "00:00:00:00:00:00 with 2 remotes; sent to 239.1.1.1, 192.0.2.3 "
                         f"(VNI 42, sport {o['sport']}, ttl 1)")
    json.dumps(r)


def test_unicast_through_a_learned_entry():
    v = vtep(remote="192.0.2.9")
    v.fdb.learn(mac_from_str(PEER), "192.0.2.1", 0.0)
    _, r = trace_frame(v, ping(), 1.0, WALL)
    assert r["summary"] == "ICMP echo request id 7 seq 1"
    assert r["lookup"] == f"fdb {PEER} dst 192.0.2.1"
    assert r["fdb"]["hit"] and not r["fdb"]["default"]
    assert r["outer"]["ttl"] == 64 and r["remotes"] == ["192.0.2.1"]


def test_no_default_raises_l2miss():
    v = vtep(l2miss=True)
    _, r = trace_frame(v, ping(), 1.0, WALL)
    assert (r["action"], r["reason"], r["lookup"]) == ("l2miss", "no_remote",
                                                       "fdb miss, no default")
    assert format_record(r).endswith("fdb miss, no default; l2miss raised, dropped: no_remote")
    # the second miss within MISS_INTERVAL is not reported again: a plain drop
    _, r = trace_frame(v, ping(), 1.1, WALL)
    assert (r["action"], r["reason"]) == ("dropped", "no_remote")


def test_proxy_answers_and_misses():
    v = vtep(proxy=True, l3miss=True)
    _, r = trace_frame(v, arp_who_has(), 1.0, WALL)
    assert r["neigh"] == {"ip": "10.20.1.3", "state": "miss"}
    assert (r["action"], r["reason"], r["lookup"]) == ("l3miss", "proxy", "neigh 10.20.1.3 miss")
    v.neigh_update("add", "10.20.1.3", mac_from_str(PEER), "reachable", 2.0)
    actions, r = trace_frame(v, arp_who_has(), 3.0, WALL)
    assert len(actions) == 1 and r["action"] == "proxy_reply"
    assert r["neigh"] == {"ip": "10.20.1.3", "state": "reachable", "lladdr": PEER}
    assert format_record(r).endswith("; neigh 10.20.1.3 reachable; proxy reply")
    # aged to stale by the lookup itself: no answer, no miss
    _, r = trace_frame(v, arp_who_has(), 40.0, WALL)
    assert (r["action"], r["neigh"]["state"]) == ("dropped", "stale")


def datagram(frame: bytes, vni: int = 42) -> bytes:
    return encode_header(vni) + frame


def test_receive_learns_moves_and_refuses():
    v = vtep()
    d = Demux()
    d.add(v)
    reply = ping(src=PEER, dst=HOST, s="10.20.1.3", d="10.20.1.2")
    actions, r, who = trace_datagram(d, datagram(reply), "192.0.2.1", 51234, 1.0, 0, 4, WALL)
    assert who is v and len(actions) == 1
    assert r["action"] == "delivered" and r["dir"] == "rx"
    assert r["changes"] == [{"change": "learned", "mac": PEER, "dst": "192.0.2.1"}]
    assert r["outer"] == {"src": "192.0.2.1", "sport": 51234, "dport": 4789, "vni": 42,
                          "tos": 0, "len": len(reply) + 8 + 8 + 20}
    assert "lookup" not in r
    assert format_record(r, False).endswith(
        f"rx ICMP echo request id 7 seq 1 from 192.0.2.1:51234 vni 42; learned {PEER} dst "
        "192.0.2.1; delivered to vxtun0")
    _, r, _ = trace_datagram(d, datagram(reply), "192.0.2.5", 51234, 2.0, 0, 4, WALL)
    assert r["changes"] == [{"change": "moved", "mac": PEER, "dst": "192.0.2.5"}]
    _, r, _ = trace_datagram(d, datagram(reply), "192.0.2.5", 51234, 3.0, 0, 4, WALL)
    assert "changes" not in r
    v.fdb_update("replace", mac_from_str(PEER), Remote("192.0.2.1"), "static", 4.0)
    actions, r, _ = trace_datagram(d, datagram(reply), "192.0.2.5", 51234, 5.0, 0, 4, WALL)
    assert not actions and (r["action"], r["reason"]) == ("dropped", "static_mac_moved")
    assert r["changes"] == [{"change": "refused", "mac": PEER, "dst": "192.0.2.5",
                             "why": "static entry"}]
    assert f"refused {PEER} dst 192.0.2.5: static entry; dropped: static_mac_moved" in \
        format_record(r)


def test_receive_drops_name_their_reason():
    v = vtep()
    d = Demux()
    d.add(v)
    bad = bytearray(datagram(ping()))
    bad[1] = 1                               # a reserved bit
    _, r, who = trace_datagram(d, bytes(bad), "192.0.2.1", 1, 1.0, wall=WALL)
    assert who is v and (r["action"], r["reason"]) == ("dropped", "reserved_bits")
    assert format_record(r).endswith("; dropped: reserved_bits")
    _, r, who = trace_datagram(d, datagram(ping(), 7), "192.0.2.1", 1, 1.0, wall=WALL)
    assert who is None and r["dev"] == "" and r["reason"] == "vni_not_found"
    assert r["outer"]["vni"] == 7
    _, r, who = trace_datagram(d, b"\x08\0", "192.0.2.1", 1, 1.0, wall=WALL)
    assert who is None and r["reason"] == "truncated"
    assert r["summary"] == "truncated frame len 0"


def test_ipv6_underlay_outer_length():
    v = vtep(local="2001:db8::2", remote="2001:db8::1")
    _, r = trace_frame(v, ping(), 1.0, WALL)
    assert r["outer"]["len"] == len(ping()) + 8 + 8 + 40
    assert r["outer"]["dst"] == "2001:db8::1"


# --- filters ------------------------------------------------------------------------------------

def _records() -> list[tuple[dict, bytes]]:
    v = vtep(remote="192.0.2.9")
    out = []
    for f in (arp_who_has(), ping(), ping(src=HOST, dst="02:99:99:99:99:99", d="10.20.9.9")):
        out.append((trace_frame(v, f, 1.0, WALL)[1], f))
    d = Demux()
    d.add(v)
    f = ping(src=PEER, dst=HOST, s="10.20.1.3", d="10.20.1.2")
    out.append((trace_datagram(d, datagram(f), "192.0.2.1", 9, 1.0, wall=WALL)[1], f))
    bad = bytearray(datagram(f))
    bad[1] = 1
    out.append((trace_datagram(d, bytes(bad), "192.0.2.7", 9, 2.0, wall=WALL)[1], f))
    return out


def _kept(flt: TraceFilter) -> list[str]:
    return [f"{r['dir']} {r['summary']} {r['action']}" for r, head in _records()
            if flt.keeps(r, head)]


def test_filter_by_mac():
    kept = _kept(TraceFilter(mac=mac_from_str(PEER)))
    assert kept == ["tx ICMP echo request id 7 seq 1 sent",
                    "rx ICMP echo request id 7 seq 1 delivered",
                    "rx ICMP echo request id 7 seq 1 dropped"]


def test_filter_by_ip_inner_and_outer():
    assert _kept(TraceFilter(ip="10.20.9.9")) == ["tx ICMP echo request id 7 seq 1 sent"]
    assert _kept(TraceFilter(ip="10.20.1.3")) == [
        "tx ARP who-has 10.20.1.3 tell 10.20.1.2 sent", "tx ICMP echo request id 7 seq 1 sent",
        "rx ICMP echo request id 7 seq 1 delivered", "rx ICMP echo request id 7 seq 1 dropped"]
    assert _kept(TraceFilter(ip="192.0.2.7")) == ["rx ICMP echo request id 7 seq 1 dropped"]


def test_filter_drops_only():
    assert _kept(TraceFilter(drops=True)) == ["rx ICMP echo request id 7 seq 1 dropped"]


# --- the hub: subscriptions, the filter applied in the VTEP, a reader that never reads ----------

class _Port:
    def __init__(self, name="vxtun0"):
        self.config = VtepConfig(vni=42, name=name)


def _lines(sock) -> list[dict]:
    return read_lines(sock)[0]


def test_hub_filters_and_turns_the_backend_on_and_off():
    hub = TraceHub()
    seen = []
    hub.on_change = lambda port, on: seen.append((port.config.name, on))
    port = _Port()
    a, b = socket.socketpair()
    chan = Channel(a)
    hub.subscribe(port, chan, TraceFilter(drops=True))
    assert hub.watching(port) and seen == [("vxtun0", True)]
    for r, head in _records():
        hub.publish(port, r, head)
    got = _lines(b)
    assert [m["trace"]["reason"] for m in got] == ["reserved_bits"]
    chan.close()
    assert not hub.watching(port) and seen[-1] == ("vxtun0", False)
    b.close()


def test_hub_names_the_device_of_a_socket_level_drop():
    hub = TraceHub()
    port = _Port("vx7")
    a, b = socket.socketpair()
    hub.subscribe(port, Channel(a), TraceFilter())
    d = Demux()
    _, r, _ = trace_datagram(d, datagram(ping(), 9), "192.0.2.1", 1, 1.0, wall=WALL)
    hub.publish(port, r, ping())
    (m,) = _lines(b)
    assert m["trace"]["dev"] == "vx7" and m["trace"]["reason"] == "vni_not_found"


def test_reader_that_never_reads_loses_records_and_is_told():
    hub = TraceHub()
    port = _Port()
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chan = Channel(a, out_max=8192)
    hub.subscribe(port, chan, TraceFilter())
    records = _records()
    n = 2000
    for i in range(n):
        r, head = records[i % len(records)]
        hub.publish(port, r, head)      # never blocks: the loop goes on
    assert chan.lost > 0
    b.setblocking(False)
    data = b""                          # the reader wakes up: what fit, then the notice
    while chan._out or chan.lost:
        try:
            data += b.recv(1 << 20)
        except BlockingIOError:
            pass
        chan.flush()
    data += _rest(b)
    got = [json.loads(x) for x in data.splitlines()]
    traces = [m for m in got if "trace" in m]
    notices = [m["lost"] for m in got if "lost" in m]
    assert notices and len(traces) + sum(notices) == n


def _rest(sock) -> bytes:
    data = b""
    while True:
        try:
            data += sock.recv(1 << 20)
        except BlockingIOError:
            return data


def test_ring_loss_is_a_lost_record():
    hub = TraceHub()
    port = _Port()
    a, b = socket.socketpair()
    hub.subscribe(port, Channel(a), TraceFilter())
    hub.lost(port, 17)
    assert _lines(b) == [{"ok": True, "trace": {"type": "lost", "dev": "vxtun0",
                                                 "count": 17}}]
    assert format_record({"type": "lost", "dev": "vxtun0", "count": 17}) == \
        "lost 17 trace records (the reader was too slow)"


# --- the request, the CLI words, the command ----------------------------------------------------

def test_request_round_trip():
    req = TraceRequest(PEER, "10.20.1.3", True)
    assert req.mac == mac_from_str(PEER)
    assert req.to_json() == {"cmd": "trace", "mac": PEER, "ip": "10.20.1.3", "drops": True}
    assert request_from_json(req.to_json()) == req
    assert request_from_json({"cmd": "trace"}) == TraceRequest()
    with pytest.raises(LocalError, match="unknown field 'port' in trace"):
        request_from_json({"cmd": "trace", "port": 1})
    with pytest.raises(LocalError, match="drops must be true or false"):
        request_from_json({"cmd": "trace", "drops": "yes"})
    with pytest.raises(LocalError):
        request_from_json({"cmd": "trace", "ip": "10.20.1.300"})


def test_cli_words():
    c = parse_trace(["dev", "vx1", "-j", "mac", PEER, "ip", "2001:db8::0:1", "drops"])
    assert c.dev == "vx1" and c.json
    assert c.body == {"cmd": "trace", "mac": PEER, "ip": "2001:db8::1", "drops": True}
    assert parse_trace([]).body == {"cmd": "trace"}
    with pytest.raises(LocalError, match="unexpected word 'foo' in trace"):
        parse_trace(["foo"])
    with pytest.raises(LocalError, match="mac needs a value"):
        parse_trace(["mac"])
    with pytest.raises(LocalError, match="invalid MAC"):
        parse_trace(["mac", "zz"])


def test_trace_command_subscribes():
    class Node:
        traces = TraceHub()

        class backend:
            name = "pure"

        def after_core(self, port):
            pass

    node, port = Node(), _Port()
    a, b = socket.socketpair()
    chan = Channel(a)
    ans = commands.handle(node, port, chan, {"cmd": "trace", "drops": True})
    assert ans == {"ifname": "vxtun0", "dataplane": "pure"}
    assert node.traces.watching(port)
