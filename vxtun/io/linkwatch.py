"""Which links of the namespace are deleted: RTM_DELLINK from the kernel's RTNLGRP_LINK group.

A VTEP learns that its TAP was deleted (``ip link del vxtun0``) from the first failed read of
the TAP (vxtun/io/tap.py), and also from this notification (rtnl_notify() of the link's
unregistration, rtmsg_ifinfo(RTM_DELLINK, ...)), whichever comes first: a TAP nobody
writes to is never read, but its deletion is always announced.

A plain non-blocking netlink socket, parsed by hand (a struct nlmsghdr, a struct ifinfomsg
and the IFLA_IFNAME attribute are all that is needed), so that the loop's select() sees every
message: a library that reads ahead and buffers would leave one unseen until the next.
"""
from __future__ import annotations

import socket
import struct

RTMGRP_LINK = 1
RTM_DELLINK = 17
IFLA_IFNAME = 3
_NLMSG = struct.Struct("=IHHII")        # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg: family, type, index, flags, change
_RTA = struct.Struct("=HH")             # rtattr: len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def deleted_links(data: bytes) -> list[tuple[int, str]]:
    """The (ifindex, ifname) of every RTM_DELLINK in ``data`` (one recv of netlink
    messages); anything else, or anything malformed, is skipped."""
    out = []
    off = 0
    while off + _NLMSG.size <= len(data):
        length, kind = _NLMSG.unpack_from(data, off)[:2]
        if length < _NLMSG.size or off + length > len(data):
            break
        body = off + _NLMSG.size
        if kind == RTM_DELLINK and length >= _NLMSG.size + _IFINFO.size:
            index = _IFINFO.unpack_from(data, body)[2]
            a = body + _IFINFO.size
            while a + _RTA.size <= off + length:
                alen, atype = _RTA.unpack_from(data, a)
                if alen < _RTA.size or a + alen > off + length:
                    break
                if atype == IFLA_IFNAME:
                    name = data[a + _RTA.size:a + alen].split(b"\0", 1)[0]
                    out.append((index, name.decode(errors="replace")))
                    break
                a += _align(alen)
        off += _align(length)
    return out


class LinkWatch:
    """A non-blocking netlink socket subscribed to link notifications of this namespace."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK
                                  | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            self.sock.bind((0, RTMGRP_LINK))
        except OSError:
            self.sock.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def deleted(self) -> list[tuple[int, str]]:
        """The links deleted since the last call (the socket is readable, or may be)."""
        out = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError:
                # ENOBUFS: notifications were lost while we were busy; the TAP's own read
                # error still reports a deleted TAP, so nothing is missed for good
                return out
            out += deleted_links(data)

    def close(self) -> None:
        self.sock.close()
