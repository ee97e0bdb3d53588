"""Which received datagrams go first out of one read of the underlay socket: those whose inner
frame carries no TCP (``rx_express``, vxtun/wire/vxlan.py), and its C twin in the fast path
(``_rx_express`` in vxtun/fastpath/threads.pyx) must agree on every input."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vxtun import _fastpath
from vxtun.wire.vxlan import RX_BULK, encode_header, rx_express, rx_order

ETH = bytes(6) + bytes.fromhex("020000000001")


def dgram(ethertype: int, l3: bytes) -> bytes:
    return encode_header(42) + ETH + ethertype.to_bytes(2, "big") + l3


def ipv4(proto: int) -> bytes:
    return dgram(0x0800, bytes([0x45, 0, 0, 60, 0, 0, 0x40, 0, 64, proto]) + bytes(50))


def ipv6(nh: int) -> bytes:
    return dgram(0x86DD, bytes([0x60, 0, 0, 0, 0, 20, nh, 64]) + bytes(52))


def test_tcp_waits_everything_else_goes_first():
    assert not rx_express(ipv4(6)) and not rx_express(ipv6(6))
    for proto in (1, 17, 47):
        assert rx_express(ipv4(proto))
    for nh in (58, 17, 0):
        assert rx_express(ipv6(nh))
    assert rx_express(dgram(0x0806, bytes(28)))                  # ARP
    assert not rx_express(dgram(0x8100, bytes(60)))              # VLAN: keeps its place
    assert rx_express(b"") and rx_express(encode_header(42))     # too short to say


@given(st.binary(max_size=120), st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8]),
       st.integers(0, 255))
def test_c_and_python_agree(tail, ethertype, proto):
    for d in (tail, dgram(ethertype, tail), dgram(ethertype, bytes(6) + bytes([proto]) * 4
                                                      + tail)):
        assert _fastpath.rx_express(d) == rx_express(d), d.hex()


def test_the_order_changes_only_behind_bulk():
    small = [(ipv4(6), "t0"), (ipv4(1), "i0"), (ipv4(6), "t1"), (ipv4(17), "u0")]
    assert rx_order(small) == small                      # arrival order, as the kernel
    big = (ipv4(6) + bytes(RX_BULK), "big")
    got = rx_order(small[:1] + [big] + small[1:])
    assert [g[1] for g in got] == ["i0", "u0", "t0", "big", "t1"]
    assert rx_order([(ipv4(1) + bytes(RX_BULK), "big-icmp")] + small) == \
        [(ipv4(1) + bytes(RX_BULK), "big-icmp")] + small  # bulk means TCP
