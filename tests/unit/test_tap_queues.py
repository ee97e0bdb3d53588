"""A multi-queue TAP without root: the queue count ``vxtun up`` chooses and accepts, and the
queue the fast path writes a delivered frame on (``flow_queue``, vxtun/fastpath/threads.pyx),
which tun's automq makes the queue the host's answers come back on.

The devices themselves, the threads and the steering under an ARP storm are
tests/netns/test_multiqueue.py.
"""
from __future__ import annotations

import socket
import struct

import pytest

from vxtun import _fastpath
from vxtun.cli.main import config_from_args, up_parser
from vxtun.core import VtepConfig
from vxtun.errors import LocalError
from vxtun.io import tap

UP = ["--vni", "42", "--remote", "192.0.2.1", "--local", "192.0.2.2", "--dev", "eth0"]
A, B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def ipv4(src: str, dst: str, proto: int, l4: bytes, frag: int = 0) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return B + A + b"\x08\x00" + ip + l4


def ipv6(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64,
                     socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst))
    return B + A + b"\x86\xdd" + ip + l4


def ports(sport: int, dport: int) -> bytes:
    return struct.pack("!HH", sport, dport) + bytes(16)


def arp() -> bytes:
    return (b"\xff" * 6 + A + b"\x08\x06" + bytes.fromhex("0001080006040001") + A
            + socket.inet_aton("10.20.1.1") + bytes(6) + socket.inet_aton("10.20.1.2"))


# --- how many queues ---------------------------------------------------------------------------

@pytest.mark.parametrize("cpus,queues", [(1, 2), (2, 3), (4, 5), (64, 5)])
def test_the_default_is_a_queue_per_cpu_and_one_for_arp(cpus, queues):
    assert tap.default_queues(cpus) == queues
    assert 2 <= tap.default_queues() <= tap.TAPQ_MAX


def test_up_takes_queues_and_zero_means_the_dataplanes_choice():
    (cfg,) = config_from_args(up_parser().parse_args(UP + ["--queues", "4"]))
    assert cfg.queues == 4
    (cfg,) = config_from_args(up_parser().parse_args(UP))
    assert cfg.queues == 0
    cfg.validate()


@pytest.mark.parametrize("queues", [-1, 9, True, "2"])
def test_a_queue_count_out_of_range_is_refused(queues):
    with pytest.raises(LocalError, match="invalid queues"):
        VtepConfig(vni=1, queues=queues).validate()


def test_open_tap_queues_refuses_a_count_out_of_range_before_opening_anything():
    for n in (0, tap.TAPQ_MAX + 1):
        with pytest.raises(LocalError, match="invalid queue count"):
            tap.open_tap_queues("vxtun-none", 0, n)


def test_each_backend_says_how_many_queues_it_reads():
    from vxtun.dataplane.fast import FastBackend
    from vxtun.dataplane.pure import PureBackend
    cfg = VtepConfig(vni=1, queues=4)
    assert PureBackend(None).tap_queues(cfg) == 2       # queue 0 for ARP, 1 for the host
    assert PureBackend(None).tap_queues(VtepConfig(vni=1)) == 2
    assert PureBackend(None).tap_queues(VtepConfig(vni=1, queues=1)) == 1
    assert FastBackend.tap_queues(None, cfg) == 4
    assert FastBackend.tap_queues(None, VtepConfig(vni=1)) == tap.default_queues()


# --- which queue a delivered frame is written on -------------------------------------------------

def test_arp_and_non_ip_go_to_queue_0_where_the_proxy_answers():
    assert _fastpath.flow_queue(arp(), 4) == 0
    assert _fastpath.flow_queue(B + A + b"\x88\xcc" + bytes(46), 4) == 0     # LLDP
    assert _fastpath.flow_queue(arp()[:10], 4) == 0                          # truncated


def test_one_queue_is_queue_0():
    assert _fastpath.flow_queue(ipv4("10.20.1.1", "10.20.1.2", 6, ports(1, 2)), 1) == 0


@pytest.mark.parametrize("nq", [2, 3, 5, 8])
def test_an_ip_flow_has_one_queue_other_than_0_in_both_directions(nq):
    for sport in range(100):
        there = ipv4("10.20.1.1", "10.20.1.2", 6, ports(40000 + sport, 5201))
        back = ipv4("10.20.1.2", "10.20.1.1", 6, ports(5201, 40000 + sport))
        q = _fastpath.flow_queue(there, nq)
        assert 1 <= q < nq
        assert _fastpath.flow_queue(back, nq) == q
        v6 = ipv6("2001:db8::1", "2001:db8::2", 17, ports(40000 + sport, 4789))
        v6back = ipv6("2001:db8::2", "2001:db8::1", 17, ports(4789, 40000 + sport))
        assert 1 <= _fastpath.flow_queue(v6, nq) < nq
        assert _fastpath.flow_queue(v6back, nq) == _fastpath.flow_queue(v6, nq)


def test_flows_spread_over_every_queue_but_0():
    for nq in (3, 5, 8):
        seen = {_fastpath.flow_queue(ipv4("10.20.1.1", "10.20.1.2", 6, ports(40000 + i, 5201)),
                                     nq) for i in range(200)}
        assert seen == set(range(1, nq)), (nq, seen)


def test_every_fragment_of_a_datagram_takes_one_queue():
    # a fragment carries no ports (the first one's are not looked at either): it is hashed on
    # the addresses and the protocol only, whatever its offset; DF alone is no fragment
    frags = [ipv4("10.20.1.1", "10.20.1.2", 17, bytes(24), frag=0x2000 | off)
             for off in (0, 3, 100)] + [ipv4("10.20.1.1", "10.20.1.2", 17, bytes(24), 25)]
    qs = {_fastpath.flow_queue(f, 4) for f in frags}
    assert len(qs) == 1 and qs <= {1, 2, 3}
    df = [ipv4("10.20.1.1", "10.20.1.2", 17, ports(1000 + i, 53), frag=0x4000) for i in range(50)]
    assert len({_fastpath.flow_queue(f, 4) for f in df}) == 3       # the ports count


def test_stats_show_the_frames_read_per_queue():
    from vxtun.cli import output
    from vxtun.core import Stats
    d = {"ifname": "vxtun0", "vni": 42, **Stats().to_json(), "events": {"lost": 0},
         "punts_lost": 0, "tap": {"tx_dropped": 5, "queue_reads": [1000, 20, 30]}}
    assert "    punts lost 0  tap queue drops 5  tap queue reads 1000 20 30" \
        in output.format_stats(d).splitlines()


def test_the_queue_limit_is_one_number_in_python_and_c():
    import re
    from pathlib import Path

    from vxtun.core import config
    from vxtun.io import tap
    pxd = (Path(config.__file__).parent.parent / "fastpath" / "decide.pxd").read_text()
    assert int(re.search(r"TAPQ_MAX = (\d+)", pxd).group(1)) == config.TAPQ_MAX == tap.TAPQ_MAX
