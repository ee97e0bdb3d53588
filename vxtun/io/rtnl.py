"""Walking raw rtnetlink messages: the two loops every hand-parsed reply needs.

A recv() of a netlink socket holds struct nlmsghdr messages, each followed by its family
header and struct rtattr attributes, every one aligned to 4 bytes (NLMSG_ALIGN, RTA_ALIGN).
Anything truncated or malformed ends the walk: the caller sees only whole messages.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator

NLMSG = struct.Struct("=IHHII")        # nlmsghdr: len, type, flags, seq, pid
RTA = struct.Struct("=HH")             # rtattr: len, type


def align(n: int) -> int:
    return (n + 3) & ~3


def messages(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, offset of the body, end of the message) of each whole message in ``data``."""
    off = 0
    while off + NLMSG.size <= len(data):
        length, kind = NLMSG.unpack_from(data, off)[:2]
        if length < NLMSG.size or off + length > len(data):
            return
        yield kind, off + NLMSG.size, off + length
        off += align(length)


def attributes(data: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each whole rtattr between ``start`` and ``end``."""
    a = start
    while a + RTA.size <= end:
        alen, atype = RTA.unpack_from(data, a)
        if alen < RTA.size or a + alen > end:
            return
        yield atype, data[a + RTA.size:a + alen]
        a += align(alen)
