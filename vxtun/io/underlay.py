"""The underlay sockets.

* Receive: one UDP socket bound to the VXLAN port (on ``local``, or on the any address when a
  multicast group must be received).  It is never connect()ed: peers send from many source
  ports, one per inner flow.  Each datagram comes with its outer TOS / traffic class as a
  control message (IP_RECVTOS / IPV6_RECVTCLASS): the core needs the outer ECN field.
* Send: a raw socket for the UDP protocol, so that each datagram can carry the source port
  chosen from its inner flow (RFC 7348 section 5), as the kernel's vxlan does.  vxtun writes
  the UDP header, and its checksum as a kernel VTEP does (vxtun/wire/vxlan.py): on IPv4 vxtun
  computes it over the pseudo-header, whose source address is ``local`` or the one the route
  to the remote chooses (``SourceCache``), unless ``noudpcsum``; on IPv6 the kernel fills it
  in (IPV6_CHECKSUM) unless ``udp6zerocsumtx``.  A one-instruction BPF filter makes the raw
  socket receive nothing.  The outer TOS / traffic class, which carries the inner ECN bits,
  and a TTL / hop limit other than the socket's (``ttl inherit``) go with each datagram as
  control messages (``tos_cmsg``); the socket's own TOS stays 0, so a datagram with TOS 0
  needs none.  The socket carries the VTEP's ``ttl`` (IP_TTL), multicast TTL 1 (the kernel's
  "if (!ttl && vxlan_addr_multicast(dst)) ttl = 1") and ``df`` (IP_MTU_DISCOVER).
* The fast path's UDP GSO sockets (vxtun/fastpath/send.pyx) copy these options from the raw
  socket, and the kernel checksums what they send; a zero checksum rules them out, as
  udp_send_skb() refuses GSO on a socket with sk_no_check_tx.
"""
from __future__ import annotations

import ctypes
import errno
import socket
import struct
import time

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
IPV6_HOPLIMIT = 52
IPV6_FLOWLABEL_MGR = 32
IPV6_FLOWINFO_SEND = 33
IPV6_FL_A_GET = 0
IPV6_FL_S_ANY = 255
IPV6_FL_F_CREATE = 1
IP_PMTUDISC_DO = 2
IPV6_PMTUDISC_DO = 2
SO_NO_CHECK = 11
SOL_UDP = 17
UDP_NO_CHECK6_TX = 101
UDP_NO_CHECK6_RX = 102
PORT_RANGE_SYSCTL = "/proc/sys/net/ipv4/ip_local_port_range"
SOURCE_TTL = 1.0        # seconds a source address chosen by the routes is reused
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


def open_rx(family: int, local: str | None, port: int,
            zero_csum6_rx: bool = False) -> socket.socket:
    """The receive socket, bound to the any address as the kernel binds a vxlan_sock shared by
    all VTEPs of the port (``local`` only names the port in messages).  Groups are joined per
    VTEP with ``set_membership``.  On IPv6, a datagram with a zero UDP checksum is dropped by
    the kernel's UDP layer (Udp6InCsumErrors) unless ``zero_csum6_rx`` (``udp6zerocsumrx``:
    UDP_NO_CHECK6_RX, as vxlan_socket_create() sets it)."""
    s = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Only the groups joined on this socket, not every group some other socket of the
            # namespace joined (IP_MULTICAST_ALL defaults to 1, which would deliver them all).
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
            if zero_csum6_rx:
                s.setsockopt(SOL_UDP, UDP_NO_CHECK6_RX, 1)
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


class TxSocket(socket.socket):
    """The raw send socket of a VTEP, with what ``send_datagram`` needs to write the UDP
    header as the kernel would: whether vxtun computes the checksum (IPv4 with ``udpcsum``),
    and the source address of the pseudo-header (``sources``)."""

    udp_csum = False
    flowinfo = 0            # the outer IPv6 flow label (``flowlabel``), leased on this socket
    sources: "SourceCache"


class SourceCache:
    """The source address the kernel picks for a datagram to ``dst`` from a socket bound to
    ``local`` (or to none): ``local`` itself, or what a UDP socket connect()ed to ``dst`` is
    given (the route's preferred source, as vxlan_get_route() finds it), reused for
    SOURCE_TTL seconds so that a route change is followed."""

    def __init__(self, family: int, local: str | None, mcast_if: bytes | None = None) -> None:
        self.family = family
        self.local = socket.inet_pton(family, local) if local else None
        self.mcast_if = mcast_if
        self._cache: dict[str, tuple[bytes, float]] = {}

    def __call__(self, dst: str, now: float | None = None) -> bytes | None:
        if self.local is not None:
            return self.local
        now = time.monotonic() if now is None else now
        hit = self._cache.get(dst)
        if hit is not None and now - hit[1] < SOURCE_TTL:
            return hit[0]
        try:
            with socket.socket(self.family, socket.SOCK_DGRAM) as s:
                if self.mcast_if is not None:
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, self.mcast_if)
                s.connect((dst, 9))
                src = socket.inet_pton(self.family, s.getsockname()[0])
        except OSError:
            return None             # no route: the send fails all the same (tx_error)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[dst] = (src, now)
        return src


def local_port_range(path: str = PORT_RANGE_SYSCTL) -> tuple[int, int]:
    """net.ipv4.ip_local_port_range of this namespace (inet_get_local_port_range()), what a
    VTEP without ``srcport`` draws its source ports from; LOCAL_PORT_RANGE if unreadable."""
    from ..wire.vxlan import LOCAL_PORT_RANGE
    try:
        with open(path) as f:
            lo, hi = (int(w) for w in f.read().split())
    except (OSError, ValueError):
        return LOCAL_PORT_RANGE
    return (lo, hi) if 0 < lo < hi <= 65535 else LOCAL_PORT_RANGE


def open_tx(family: int, local: str | None, ttl: int | str | None, group: str | None,
            ifindex: int = 0, config=None) -> TxSocket:
    """The raw send socket of a VTEP (``config``, a VtepConfig, gives ``df`` and the UDP
    checksum settings; without one, the kernel's defaults)."""
    df = getattr(config, "df", "unset")
    udpcsum = getattr(config, "udpcsum", True)
    zero6 = getattr(config, "udp6zerocsumtx", False)
    fixed_ttl = ttl if isinstance(ttl, int) and ttl else 0     # auto / inherit: the route's
    s = TxSocket(family, socket.SOCK_RAW, socket.IPPROTO_UDP)
    mcast_if = None
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
            # vxlan_xmit_one(): DF only with "df set" (or inherited); else the outer packet
            # may be fragmented on its way
            s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER,
                         IP_PMTUDISC_DO if df == "set" else IP_PMTUDISC_DONT)
            if fixed_ttl:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, fixed_ttl)
            s.udp_csum = udpcsum
            if not udpcsum:
                # no effect on a raw socket: it tells the fast path (send.pyx) and the GSO
                # sockets it opens that this VTEP sends a zero checksum
                s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            if group:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, fixed_ttl or 1)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
                mcast_if = struct.pack("4s4si", socket.inet_aton(group),
                                       socket.inet_aton(local) if local else b"\0" * 4,
                                       ifindex)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mcast_if)
        else:
            if zero6:
                s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)     # as above: a marker
            else:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 6)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT)
            # Outer flow label 0, as a kernel vxlan device without "flowlabel" sends it
            # (udp_tunnel6_xmit_skb gets cfg.label); a raw socket would get an automatic one.
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, 0)
            label = getattr(config, "flowlabel", 0)
            if label == "inherit":
                # each datagram names its label in its sockaddr_in6 (Transmit.label).
                # rawv6_sendmsg() asks for a lease (fl6_sock_lookup) only while some socket
                # of the host holds an exclusive one; then the send fails (tx_error)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWINFO_SEND, 1)
            elif label:
                # a label other than 0 goes in each sockaddr_in6 (IPV6_FLOWINFO_SEND), and
                # rawv6_sendmsg() takes it only if the socket holds a lease for it
                # (struct in6_flowlabel_req: dst, label, action, share, flags, expires,
                # linger).  fl_create() wants a dst other than "::", which a send that names
                # its destination never uses: the loopback address will do.
                req = (socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!I", label)
                       + struct.pack("=BBHHH4x", IPV6_FL_A_GET, IPV6_FL_S_ANY,
                                     IPV6_FL_F_CREATE, 0, 0))
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWLABEL_MGR, req)
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_FLOWINFO_SEND, 1)
                s.flowinfo = label
            if fixed_ttl:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, fixed_ttl)
            if group:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, fixed_ttl or 1)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        s.sources = SourceCache(family, local, mcast_if)
        s.setblocking(False)
    except OSError as e:
        s.close()
        raise LocalError(f"cannot open the underlay send socket: {e.strerror}") from None
    except BaseException:
        s.close()
        raise
    return s


def tos_cmsg(family: int, tos: int, ttl: int = 0) -> list:
    """The control messages that send one datagram with outer TOS / traffic class ``tos``
    (IP_TOS / IPV6_TCLASS, an int) and TTL / hop limit ``ttl`` (IP_TTL / IPV6_HOPLIMIT);
    none for 0, the socket's own values."""
    out = []
    if tos:
        if family == socket.AF_INET6:
            out.append((socket.IPPROTO_IPV6, IPV6_TCLASS, struct.pack("i", tos)))
        else:
            out.append((socket.IPPROTO_IP, socket.IP_TOS, struct.pack("i", tos)))
    if ttl:
        if family == socket.AF_INET6:
            out.append((socket.IPPROTO_IPV6, IPV6_HOPLIMIT, struct.pack("i", ttl)))
        else:
            out.append((socket.IPPROTO_IP, socket.IP_TTL, struct.pack("i", ttl)))
    return out


def received_tos(ancdata: list) -> int:
    """The outer TOS / traffic class in the control messages of a received datagram (IP_TOS
    is one byte, IPV6_TCLASS an int); 0 when there is none."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS and data:
            return data[0]
        if level == socket.IPPROTO_IPV6 and kind == IPV6_TCLASS and len(data) >= 4:
            return struct.unpack("i", data[:4])[0] & 0xFF
    return 0


def udp_header(sport: int, dport: int, payload_len: int, check: int = 0) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + payload_len, check)


def send_datagram(sock: socket.socket, family: int, ip: str, sport: int, dport: int,
                  payload: bytes, tos: int = 0, ttl: int = 0, label: int = 0) -> bool:
    """Send one VXLAN datagram from the raw send socket: vxtun writes the UDP header (the
    source port comes from the inner flow; the checksum as the module docstring says), the
    outer TOS / traffic class and TTL go as control messages.  False if the kernel refused
    it (counted as ``tx_error`` by the caller)."""
    from ..wire.vxlan import udp_checksum
    pkt = udp_header(sport, dport, len(payload)) + payload
    if getattr(sock, "udp_csum", False) and family == socket.AF_INET:
        src = sock.sources(ip)
        if src is None:
            return False
        check = udp_checksum(src, socket.inet_aton(ip), pkt)
        pkt = udp_header(sport, dport, len(payload), check) + payload
    addr = ((ip, 0, label or getattr(sock, "flowinfo", 0), 0) if family == socket.AF_INET6
            else (ip, 0))
    try:
        if tos or ttl:
            sock.sendmsg([pkt], tos_cmsg(family, tos, ttl), 0, addr)
        else:
            sock.sendto(pkt, addr)
        return True
    except OSError:
        return False
