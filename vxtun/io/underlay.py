"""The underlay sockets.

* Receive: one UDP socket bound to the VXLAN port (on ``local``, or on the any address when a
  multicast group must be received).  It is never connect()ed: peers send from many source
  ports, one per inner flow.  Each datagram comes with its outer TOS / traffic class as a
  control message (IP_RECVTOS / IPV6_RECVTCLASS): the core needs the outer ECN field.
* Send: a raw socket for the UDP protocol, so that each datagram can carry the source port
  chosen from its inner flow (RFC 7348 section 5), as the kernel's vxlan does.  vxtun writes
  the UDP header; for IPv4 it leaves the UDP checksum zero like the kernel's default
  (``noudpcsum``), for IPv6 the kernel fills it in (IPV6_CHECKSUM), as RFC 8200 requires.  A
  one-instruction BPF filter makes the raw socket receive nothing.  The outer TOS / traffic
  class, which carries the inner ECN bits, goes with each datagram as a control message
  (``tos_cmsg``); the socket's own stays 0, so a datagram with TOS 0 needs none.
"""
from __future__ import annotations

import ctypes
import errno
import socket
import struct

from ..errors import LocalError

IPV6_CHECKSUM = 7
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DONT = 0
IPV6_AUTOFLOWLABEL = 70
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
IP_RECVTOS = 13
IPV6_RECVTCLASS = 66
IPV6_TCLASS = 67
# room for the TOS / traffic class control message of one received datagram (an int at most)
TOS_CMSG_SPACE = socket.CMSG_SPACE(4)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_DROP_ALL = (_SockFilter * 1)(_SockFilter(0x06, 0, 0, 0))   # BPF_RET|BPF_K 0
_DROP_PROG = _SockFprog(1, _DROP_ALL)


def _bigger_buffers(s: socket.socket, size: int) -> None:
    for opt, force in ((socket.SO_RCVBUF, SO_RCVBUFFORCE), (socket.SO_SNDBUF, SO_SNDBUFFORCE)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, opt, size)


def open_rx(family: int, local: str | None, port: int) -> socket.socket:
    """The receive socket, bound to the any address as the kernel binds a vxlan_sock shared by
    all VTEPs of the port (``local`` only names the port in messages).  Groups are joined per
    VTEP with ``set_membership``."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Only the groups joined on this socket, not every group some other socket of the
            # namespace joined (IP_MULTICAST_ALL defaults to 1, which would deliver them all).
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
        _bigger_buffers(s, 8 << 20)
        try:
            s.bind(("", port))
        except OSError as e:
            where = f"{local or 'any address'} port {port}"
            if e.errno == errno.EADDRINUSE:
                raise LocalError(f"UDP {where} is already in use by another program (a kernel "
                                 "vxlan device binds its port on every address of its "
                                 "namespace: run vxtun in a namespace of its own)") from None
            raise LocalError(f"cannot bind UDP {where}: {e.strerror}") from None
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def set_membership(sock: socket.socket, family: int, group: str, ifindex: int,
                   join: bool) -> None:
    """Join (or leave) multicast ``group`` on interface ``ifindex`` for ``sock``."""
    if family == socket.AF_INET:
        mreq = struct.pack("4s4si", socket.inet_aton(group), b"\0" * 4, ifindex)
        opt = socket.IP_ADD_MEMBERSHIP if join else socket.IP_DROP_MEMBERSHIP
        sock.setsockopt(socket.IPPROTO_IP, opt, mreq)
    else:
        mreq = struct.pack("16sI", socket.inet_pton(socket.AF_INET6, group), ifindex)
        opt = socket.IPV6_JOIN_GROUP if join else socket.IPV6_LEAVE_GROUP
        sock.setsockopt(socket.IPPROTO_IPV6, opt, mreq)


def open_tx(family: int, local: str | None, ttl: int | None, group: str | None,
            ifindex: int = 0) -> socket.socket:
    s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        prog = struct.pack("HL", _DROP_PROG.len, ctypes.addressof(_DROP_ALL))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        _bigger_buffers(s, 8 << 20)
        if local:
            try:
                s.bind((local, 0))
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    raise LocalError(f"cannot use local {local}: it is not an address of this "
                                     "host") from None
                raise
        if family == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            if ttl:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
            if group:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl or 1)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                mreqn = struct.pack("4s4si", socket.inet_aton(group),
                                    socket.inet_aton(local) if local else b"\0" * 4, ifindex)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        else:
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 6)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT)
            # Outer flow label 0, as a kernel vxlan device without "flowlabel" sends it
            # (udp_tunnel6_xmit_skb gets cfg.label); a raw socket would get an automatic one.
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, 0)
            if ttl:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
            if group:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl or 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise LocalError(f"cannot open the underlay send socket: {e.strerror}") from None
    except BaseException:
        s.close()
        raise
    return s


def tos_cmsg(family: int, tos: int) -> list:
    """The control message that sends one datagram with outer TOS / traffic class ``tos``
    (IP_TOS / IPV6_TCLASS, an int); none for 0, the socket's own value."""
    if not tos:
        return []
    if family == socket.AF_INET6:
        return [(socket.IPPROTO_IPV6, IPV6_TCLASS, struct.pack("i", tos))]
    return [(socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", tos))]


def received_tos(ancdata: list) -> int:
    """The outer TOS / traffic class in the control messages of a received datagram (IP_TOS
    is one byte, IPV6_TCLASS an int); 0 when there is none."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS and data:
            return data[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_TCLASS and len(data) >= 4:
            return struct.unpack("i", data[:4])[0] & 0xFF
    return 0


def udp_header(sport: int, dport: int, payload_len: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + payload_len, 0)


def send_datagram(sock: socket.socket, family: int, ip: str, sport: int, dport: int,
                  payload: bytes, tos: int = 0) -> bool:
    """Send one VXLAN datagram from the raw send socket: vxtun writes the UDP header (the
    source port comes from the inner flow), the outer TOS / traffic class goes as a control
    message.  False if the kernel refused it (counted as ``tx_error`` by the caller)."""
    pkt = udp_header(sport, dport, len(payload)) + payload
    addr = (ip, 0, 0, 0) if family == socket.AF_INET6 else (ip, 0)
    try:
        if tos:
            sock.sendmsg([pkt], tos_cmsg(family, tos), 0, addr)
        else:
            sock.sendto(pkt, addr)
        return True
    except OSError:
        return False
