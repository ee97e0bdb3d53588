"""Which links of the namespace are deleted or renamed: RTM_DELLINK and RTM_NEWLINK from the
kernel's RTNLGRP_LINK group.

A VTEP learns that its TAP was deleted (``ip link del vxtun0``) from the first failed read of
the TAP (vxtun/io/tap.py), and also from this notification (rtnl_notify() of the link's
unregistration, rtmsg_ifinfo(RTM_DELLINK, ...)), whichever comes first: a TAP nobody
writes to is never read, but its deletion is always announced.

A TAP moved to another namespace (``ip link set vxtun0 netns X``) is announced only here: the
TAP keeps its file, which reads on (EAGAIN, then the frames of the other namespace), while
dev_change_net_namespace() tells the old namespace RTM_DELLINK with IFLA_NEW_NETNSID (the new
namespace's id as this one knows it, peernet2id_alloc()) and IFLA_NEW_IFINDEX.  A kernel
vxlan device can be moved too, and keeps working from there through the UDP socket of the
namespace it was made in (vxlan->net: the x-netns use of ``ip link add vxlan0 ...; ip link
set vxlan0 netns X``); vxtun does the same (vxtun/dataplane/node.py ``Node._links_deleted``),
and only needs to know that the name it no longer sees was moved, not deleted.

A TAP renamed (``ip link set vxtun0 name ov0``) is announced here too: every RTM_NEWLINK
carries the link's name (rtnl_fill_ifinfo), and dev_change_name() sends one (netdev_state_change
via NETDEV_CHANGENAME).  The kernel's vxlan device knows itself by ifindex and does not care;
vxtun knows its VTEPs by name (``dev NAME`` in every command, the control socket
``@vxtun/NAME``), so the owner follows the rename (vxtun/dataplane/node.py ``Node._renamed``).

A plain non-blocking netlink socket, parsed by hand (a struct nlmsghdr, a struct ifinfomsg
and the IFLA_IFNAME attribute are all that is needed), so that the loop's select() sees every
message: a library that reads ahead and buffers would leave one unseen until the next.
"""
from __future__ import annotations

import errno
import fcntl
import socket
import struct
from typing import NamedTuple

from .rtnl import attributes, messages

RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
IFLA_IFNAME = 3
IFLA_NEW_NETNSID = 45
_IFINFO = struct.Struct("=BxHiII")      # ifinfomsg: family, type, index, flags, change


class DelLink(NamedTuple):
    """One RTM_DELLINK: the link's index and name, and ``netnsid``, the id of the namespace it
    moved to (IFLA_NEW_NETNSID), or None when it was deleted."""
    index: int
    name: str
    netnsid: int | None = None

    @property
    def moved(self) -> bool:
        return self.netnsid is not None


class NewLink(NamedTuple):
    """One RTM_NEWLINK: a link's index and its name now (a new link, a changed one, or a
    renamed one)."""
    index: int
    name: str


def link_changes(data: bytes) -> list[DelLink | NewLink]:
    """Every RTM_DELLINK and RTM_NEWLINK with a name in ``data`` (one recv of netlink
    messages), in the kernel's order; anything else, or anything malformed, is skipped."""
    out: list[DelLink | NewLink] = []
    for kind, body, end in messages(data):
        if kind not in (RTM_DELLINK, RTM_NEWLINK) or end - body < _IFINFO.size:
            continue
        index = _IFINFO.unpack_from(data, body)[2]
        name = netnsid = None
        for atype, value in attributes(data, body + _IFINFO.size, end):
            if atype == IFLA_IFNAME:
                name = value.split(b"\0", 1)[0]
            elif atype == IFLA_NEW_NETNSID and len(value) >= 4:
                netnsid = struct.unpack_from("=i", value)[0]
        if name is None:
            continue
        name = name.decode(errors="replace")
        out.append(DelLink(index, name, netnsid) if kind == RTM_DELLINK else NewLink(index, name))
    return out


def deleted_links(data: bytes) -> list[DelLink]:
    """Every RTM_DELLINK with a name in ``data``."""
    return [c for c in link_changes(data) if isinstance(c, DelLink)]


def new_links(data: bytes) -> list[NewLink]:
    """Every RTM_NEWLINK with a name in ``data``."""
    return [c for c in link_changes(data) if isinstance(c, NewLink)]


TUNGETIFF = 0x800454D2


def tap_attached(fd: int) -> bool:
    """Whether the TAP file ``fd`` still has its device (TUNGETIFF: tun_get() finds none, and
    the call fails with EBADFD, once the device was deleted; a TAP moved to another namespace
    keeps it)."""
    try:
        fcntl.ioctl(fd, TUNGETIFF, bytes(40))
    except OSError:
        return False
    return True


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
        self._lost = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def changes(self) -> list[DelLink | NewLink]:
        """The links deleted, and the RTM_NEWLINKs (names now), since the last call (the
        socket is readable, or may be), in the kernel's order.  When notifications were lost
        meanwhile, ``lost()`` says so once."""
        out: list[DelLink | NewLink] = []
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    return out
                # the socket's buffer overflowed while we were busy (netlink_overrun()): an
                # RTM_DELLINK may be among what was dropped; what follows still arrives
                self._lost = True
                continue
            out += link_changes(data)

    def deleted(self) -> list[DelLink]:
        """The links deleted since the last call (``changes`` without the new links)."""
        return [c for c in self.changes() if isinstance(c, DelLink)]

    def lost(self) -> bool:
        """Whether notifications were lost since the last call: the caller must look at its
        links itself (a moved TAP has no read error to tell it)."""
        lost, self._lost = self._lost, False
        return lost

    def close(self) -> None:
        self.sock.close()
