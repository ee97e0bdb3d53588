"""The node's once-a-tick address dump (vxtun/io/netlink.py ``local_addresses``): the same
addresses pyroute2 reports, and nothing kept from one call to the next."""
from __future__ import annotations

import struct
import tracemalloc

import pytest
from pyroute2 import IPRoute

from vxtun.io import netlink


def test_the_dump_lists_what_pyroute2_lists():
    with IPRoute() as ipr:
        want = {m.get_attr("IFA_ADDRESS") for m in ipr.get_addr()} - {None}
    assert netlink.local_addresses() == want
    assert "127.0.0.1" in want


def test_asking_every_second_for_hours_keeps_nothing():
    netlink.local_addresses()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(500):
            netlink.local_addresses()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert grown < 20_000, grown


def _msg(kind: int, body: bytes) -> bytes:
    n = 16 + len(body)
    return struct.pack("=IHHII", n, kind, 0, 1, 0) + body + b"\0" * (-n % 4)


def test_malformed_or_foreign_messages_are_skipped_and_errors_raise():
    addr = struct.pack("=BBBBI", 2, 24, 0, 0, 7) + struct.pack("=HH", 8, 1) + bytes([192, 0, 2, 1])
    short = struct.pack("=BBBBI", 2, 24, 0, 0, 7) + struct.pack("=HH", 7, 1) + bytes([1, 2, 3, 0])
    out: set[str] = set()
    assert not netlink.addresses_of(_msg(20, addr) + _msg(20, short) + _msg(99, b"x"), out)
    assert out == {"192.0.2.1"}
    assert netlink.addresses_of(_msg(3, b"\0" * 4), out)
    with pytest.raises(OSError):
        netlink.addresses_of(_msg(2, struct.pack("=i", -1) + b"\0" * 16), out)
    assert not netlink.addresses_of(b"\xff" * 7, out)
