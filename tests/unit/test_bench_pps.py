"""The packet-rate generator (bench/pktgen.c, built by bench/pps.py) and its report rows.

The generator is run against a UDP socket on loopback, which needs no root: what it sends must
be a valid VXLAN datagram (RFC 7348 section 5: I flag, the VNI, reserved bits zero) around an
Ethernet/IPv4/UDP frame of exactly the size asked for, with a correct IPv4 header checksum.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess

import pytest

from bench import pps
from vxtun.wire.vxlan import decode_header, reserved_bits_set


def test_pktgen_builds_and_caches():
    exe = pps.build_pktgen()
    assert os.access(exe, os.X_OK)
    assert pps.build_pktgen() == exe            # same source: the same binary, not rebuilt


def _ipv4_checksum_ok(h: bytes) -> bool:
    s = sum(struct.unpack("!10H", h))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@pytest.mark.parametrize("size", [64, 1400])
def test_pktgen_sends_vxlan_datagrams_of_the_asked_size(size):
    exe = pps.build_pktgen()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    try:
        p = subprocess.run([exe, "udp", "127.0.0.1", str(port), str(size), "0.05", "4242"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["sent"] > 0 and out["seconds"] > 0 and out["cpu"] >= 0
        d = rx.recv(65536)
    finally:
        rx.close()
    assert len(d) == 8 + size
    assert decode_header(d[:8]) == (4242, None) and not reserved_bits_set(d[:8])
    frame = d[8:]
    assert frame[:6] == bytes.fromhex("020000000002") and frame[6:12] == bytes.fromhex(
        "020000000001")
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45 and ip[9] == 17 and struct.unpack("!H", ip[2:4])[0] == size - 14
    assert _ipv4_checksum_ok(ip)
    assert socket.inet_ntoa(ip[12:16]) == "10.20.1.1" and socket.inet_ntoa(ip[16:20]) == \
        "10.20.1.2"
    udp = frame[34:42]
    assert struct.unpack("!HHH", udp[:6]) == (9, 9, size - 34)


def test_pktgen_refuses_bad_arguments():
    exe = pps.build_pktgen()
    for args in (["udp", "127.0.0.1", "9", "10", "1", "42"],      # smaller than Ethernet+IP+UDP
                 ["udp", "not-an-ip", "9", "64", "1", "42"],
                 ["packet", "no-such-device0", "64", "1"],
                 ["nonsense"]):
        p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "usage" in p.stderr, args


def _result(offered, delivered, vtep_cpu=None, refused=0):
    t = {"delivered_pps": delivered, "offered_pps": offered, "send_errors": refused,
         "generator_limited": delivered >= pps.KEPT_UP * offered and not refused,
         "mpps_per_cpu_s": 1.0, "runs": []}
    if vtep_cpu:
        t["mpps_per_vtep_cpu_s"] = delivered / 1e6 / vtep_cpu
    return t


def test_rows_ratio_to_kernel_and_generator_limit():
    res = {"sizes": [64], "seconds": 1, "trials": 1,
           "decap": {"kernel": {"64": _result(1e6, 1e6)},
                     "vxtun": {"64": _result(1e6, 4e5, vtep_cpu=0.5)}},
           "encap": {"kernel": {"64": _result(1e6, 1e6, refused=7)},
                     "vxtun": {"error": "vxtun on h1 exited 1: boom"}}}
    rows = {(r["direction"], r["kind"]): r for r in pps.rows(res)}
    assert rows["decap", "kernel"]["ratio"] == 1.0
    assert "generator-limited" in rows["decap", "kernel"]["note"]
    assert rows["decap", "vxtun"]["ratio"] == pytest.approx(0.4)
    assert rows["decap", "vxtun"]["note"] == ""
    assert rows["decap", "vxtun"]["per_vtep_cpu"] == pytest.approx(0.8)
    assert "7 sends refused" in rows["encap", "kernel"]["note"]
    assert rows["encap", "vxtun"]["mpps"] is None and "boom" in rows["encap", "vxtun"]["note"]
    md = pps.markdown(res)
    # 64 B carries issue 12's target: at least half the kernel's rate
    assert "| decap | 64 B | vxtun | 1.000 | 0.400 | 0.40 | ratio >= 0.5 | FAIL |" in md
