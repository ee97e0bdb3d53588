"""Cutting a TCP super-frame (TSO) into segments, in Python: the reference of the fast path's
fp_tso_segment (vxtun/fastpath/wire.pyx), held to it by tests/unit/test_gso_egress.py.

The pure dataplane takes super-frames from its TAP only while it has a UDP-tunnel GSO egress
(vxtun/io/gso.py).  A super-frame the egress cannot carry (a flood list, a bypassed remote,
an IPv6 remote) is cut here, as a NIC without TSO would, and each segment goes through the
core like any frame.  Each segment gets, as the kernel's tcp_gso_segment() and
inet_gso_segment() set them: IPv4 total length, ID + i and header checksum; IPv6 payload
length; TCP sequence number + i*mss; FIN and PSH only on the last segment, CWR only on the
first; and a complete TCP checksum.  One 802.1Q tag is allowed.
"""
from __future__ import annotations

from .offload import csum_add, fold_complement

ETH_HLEN = 14
MAXSEG = 1024           # as the fast path's (64 KB / 64-byte MSS)
TCP_FIN, TCP_PSH, TCP_CWR = 0x01, 0x08, 0x80


def headers(frame: bytes) -> tuple[int, int, int, bool] | None:
    """(l3 offset, l4 offset, header length, IPv6) of a TCP frame we can cut, or None."""
    n = len(frame)
    if n < ETH_HLEN + 4 + 40:
        return None
    l3 = ETH_HLEN
    etype = frame[12:14]
    if etype == b"\x81\x00":
        l3 += 4
        etype = frame[16:18]
    if etype == b"\x08\x00":
        if frame[l3] >> 4 != 4 or frame[l3 + 9] != 6 or (frame[l3] & 0x0F) < 5:
            return None
        l4, v6 = l3 + (frame[l3] & 0x0F) * 4, False
    elif etype == b"\x86\xdd":
        if frame[l3] >> 4 != 6 or frame[l3 + 6] != 6:
            return None
        l4, v6 = l3 + 40, True
    else:
        return None
    if n < l4 + 20:
        return None
    thl = (frame[l4 + 12] >> 4) * 4
    if thl < 20 or n < l4 + thl:
        return None
    return l3, l4, l4 + thl, v6


def count(frame: bytes, mss: int) -> int:
    """How many segments ``frame`` makes at ``mss`` (0: not one we can cut)."""
    h = headers(frame)
    if h is None or mss <= 0:
        return 0
    plen = len(frame) - h[2]
    nseg = -(-plen // mss) if plen else 1
    return nseg if nseg <= MAXSEG else 0


def segments(frame: bytes, mss: int, limit: int | None = None) -> list[bytes] | None:
    """The segments of the TSO super-frame ``frame`` at ``mss`` (the first ``limit`` of
    them), or None (see ``count``)."""
    nseg = count(frame, mss)
    if not nseg:
        return None
    l3, l4, hlen, v6 = headers(frame)
    plen = len(frame) - hlen
    seq0 = int.from_bytes(frame[l4 + 4:l4 + 8], "big")
    id0 = int.from_bytes(frame[l3 + 4:l3 + 6], "big")
    out = []
    for i in range(nseg if limit is None else min(limit, nseg)):
        chunk = min(mss, plen - i * mss)
        payload = frame[hlen + i * mss:hlen + i * mss + chunk]
        h = bytearray(frame[:hlen])
        if v6:
            h[l3 + 4:l3 + 6] = (hlen - (l3 + 40) + chunk).to_bytes(2, "big")
            pseudo = csum_add(bytes(h[l3 + 8:l3 + 40]))
        else:
            h[l3 + 2:l3 + 4] = (hlen - l3 + chunk).to_bytes(2, "big")
            h[l3 + 4:l3 + 6] = ((id0 + i) & 0xFFFF).to_bytes(2, "big")
            h[l3 + 10:l3 + 12] = b"\0\0"
            h[l3 + 10:l3 + 12] = fold_complement(csum_add(bytes(h[l3:l4]))).to_bytes(2, "big")
            pseudo = csum_add(bytes(h[l3 + 12:l3 + 20]))
        h[l4 + 4:l4 + 8] = ((seq0 + i * mss) & 0xFFFFFFFF).to_bytes(4, "big")
        flags = h[l4 + 13]
        if i + 1 < nseg:
            flags &= ~(TCP_FIN | TCP_PSH)
        if i > 0:
            flags &= ~TCP_CWR
        h[l4 + 13] = flags
        h[l4 + 16:l4 + 18] = b"\0\0"
        s = csum_add(bytes(h[l4:]) + payload, pseudo + 6 + hlen - l4 + chunk)
        h[l4 + 16:l4 + 18] = fold_complement(s).to_bytes(2, "big")
        out.append(bytes(h) + payload)
    return out
