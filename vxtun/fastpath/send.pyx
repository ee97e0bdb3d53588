# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Carrying out an A_SEND: the datagrams of one frame (or of its TSO segments) to each remote.

Small frames of a burst share one sendmmsg() on the VTEP's raw UDP socket (we write the UDP
header, so the source port can follow the inner flow).  The segments of a TCP super-frame for
one unicast remote leave as UDP GSO trains (UDP_SEGMENT) from a UDP socket bound to the
flow's source port (a small LRU per VTEP), so the kernel handles one packet instead of ~45.
The outer TOS / traffic class of each send, and its TTL with ``ttl inherit``, are control
messages when they are not 0.  The UDP checksum follows vxtun/io/underlay.py: on IPv4 it is
computed here (``_udp4_check``) unless the VTEP has ``noudpcsum``; on IPv6 the kernel fills it
in on tx_fd (IPV6_CHECKSUM) unless ``udp6zerocsumtx``; the GSO sockets are UDP sockets, whose
checksum the kernel computes, and are not used when the checksum is to be zero.
"""
from libc.errno cimport EAGAIN, EINTR, EINVAL, ENOBUFS, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset
from posix.uio cimport iovec, writev
from posix.unistd cimport close

from vxtun.fastpath.decide cimport fp_tx_action_free, fp_tx_action_init, fp_tx_segments
from vxtun.fastpath.fdb cimport fp_remote
from vxtun.fastpath.libc cimport (
    AF_INET, AF_INET6, CMSG_DATA, CMSG_LEN, CMSG_SPACE, IP_MULTICAST_IF, IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_TOS,
    IP_TTL, IPPROTO_IP, IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DONT, IPV6_TCLASS,
    IPV6_UNICAST_HOPS, IPV6_V6ONLY, POLLOUT, SO_ATTACH_FILTER, SO_SNDBUF, SO_SNDBUFFORCE,
    SOCK_CLOEXEC, SOCK_DGRAM, SOCK_NONBLOCK, SOL_SOCKET, bind, cmsghdr, fp_now, getsockname,
    getsockopt, msghdr, poll, pollfd, sendmmsg, sendmsg, setsockopt, sock_filter, sock_fprog,
    sockaddr, sockaddr_in, socket, socklen_t)
from vxtun.fastpath.state cimport GSO_SOCKS, SRC_CACHE, fp_gsosock
from vxtun.fastpath.wire cimport (
    D_TX_ERROR, VNET_HDR_LEN, VXLAN_HLEN, fp_csum_add, fp_encode_header, fp_seg, put16,
    put32)


cdef extern from "<sys/socket.h>" nogil:
    int connect(int fd, const sockaddr* addr, socklen_t len)


cdef void fp_txctx_free(fp_txctx* c) noexcept nogil:
    free(c.buf)
    fp_tx_action_free(&c.act)
    free(c.msgs)
    free(c.iov)
    free(c.uh)
    free(c.addrs)
    free(c.small)
    free(c.ctl)

cdef int fp_txctx_init(fp_txctx* c, int tid) noexcept nogil:
    memset(c, 0, sizeof(fp_txctx))
    c.tid = tid
    if fp_tx_action_init(&c.act) < 0:
        return -1
    c.buf = <uint8_t*>malloc(TAPBUF)
    c.msgs = <mmsghdr*>calloc(TXBATCH, sizeof(mmsghdr))
    c.iov = <iovec*>calloc(TXBATCH * 3, sizeof(iovec))
    c.uh = <uint8_t*>malloc(TXBATCH * 16)
    c.addrs = <sockaddr_in6*>calloc(TXBATCH, sizeof(sockaddr_in6))
    c.small = <uint8_t*>malloc(TXBATCH * SMALLBUF)
    c.ctl = <uint64_t*>calloc(TXBATCH * 4, sizeof(uint64_t))
    if (c.small == NULL or c.ctl == NULL or c.buf == NULL or c.msgs == NULL or c.iov == NULL
            or c.uh == NULL or c.addrs == NULL):
        fp_txctx_free(c)
        return -1
    return 0

cdef bint _retry(int fd, int* waits) noexcept nogil:
    """After a failed send: True to try again.  A full socket buffer (EAGAIN, ENOBUFS) is
    waited out, up to 50 times 2 ms, rather than dropped; EINTR is retried at once."""
    cdef pollfd pfd
    if (errno == EAGAIN or errno == ENOBUFS) and waits[0] < 50:
        pfd.fd = fd
        pfd.events = POLLOUT
        pfd.revents = 0
        poll(&pfd, 1, 2)
        waits[0] += 1
        return True
    return errno == EINTR

cdef void _tx_flush(fp_txctx* c, fp_vtep* v, int m) noexcept nogil:
    """sendmmsg() the batch; wait for room when the socket is full rather than drop."""
    cdef int i = 0, r, waits = 0
    while i < m:
        r = sendmmsg(v.tx_fd, c.msgs + i, m - i, 0)
        if r > 0:
            i += r
            continue
        if _retry(v.tx_fd, &waits):
            continue
        v.s.st[c.tid].drops[D_TX_ERROR] += 1      # no route, message too long, ...: skip this one
        i += 1

cdef void fp_tx_pend_flush(fp_txctx* c, fp_vtep* v) noexcept nogil:
    """Send the small frames' datagrams still waiting (see fp_txctx.pend)."""
    if c.pend:
        _tx_flush(c, v, c.pend)
    c.pend = 0
    c.npend_frames = 0

cdef inline uint16_t _htons(uint32_t v) noexcept nogil:
    cdef uint8_t b[2]
    cdef uint16_t r
    b[0] = (v >> 8) & 0xFF
    b[1] = v & 0xFF
    memcpy(&r, b, 2)
    return r

cdef sock_filter _DROP_ALL[1]
_DROP_ALL[0].code = 0x06        # BPF_RET | BPF_K 0: the socket receives nothing
_DROP_ALL[0].jt = 0
_DROP_ALL[0].jf = 0
_DROP_ALL[0].k = 0

cdef inline void _copy_opt(int src, int dst, int level, int name) noexcept nogil:
    """Give socket ``dst`` the value ``src`` has for the int option ``level``/``name``."""
    cdef int val
    cdef socklen_t len = sizeof(int)
    if getsockopt(src, level, name, &val, &len) == 0:
        setsockopt(dst, level, name, &val, sizeof(int))

cdef int _open_gso_sock(fp_vtep* v, uint32_t sport) noexcept nogil:
    """A UDP socket that sends like tx_fd: its options (no DF, TTL / hop limit, flow label 0:
    vxtun.io.underlay.open_tx states them) are copied from tx_fd, and it is bound to tx_fd's
    address and ``sport``; it receives nothing.  -1 if the port is taken (the caller falls
    back to tx_fd)."""
    cdef int fd, one = 1, size = 4 << 20
    cdef sockaddr_in6 sa = v.local
    cdef sock_fprog prog
    fd = socket(sa.sin6_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        return -1
    prog.len = 1
    prog.filter = _DROP_ALL
    setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog))
    if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(int)) < 0:
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(int))
    if sa.sin6_family == AF_INET:
        _copy_opt(v.tx_fd, fd, IPPROTO_IP, IP_MTU_DISCOVER)
        _copy_opt(v.tx_fd, fd, IPPROTO_IP, IP_TTL)
    else:
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(int))
        _copy_opt(v.tx_fd, fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER)
        _copy_opt(v.tx_fd, fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS)
        _copy_opt(v.tx_fd, fd, IPPROTO_IPV6, IPV6_AUTOFLOWLABEL)
    sa.sin6_port = _htons(sport)        # where sockaddr_in has sin_port too
    if bind(fd, <sockaddr*>&sa, v.local_len) < 0:
        close(fd)
        return -1
    return fd

cdef int _gso_fd(fp_vtep* v, uint32_t sport, double now) noexcept nogil:
    """The GSO socket of ``sport`` (opened on first use; the least recently used idle one is
    closed when all slots are taken), or -1 to send through tx_fd."""
    cdef int k = v.gso_slot[sport], i, best = -1, fd
    if k == 255:
        return -1
    if k:
        v.gso[k - 1].used = now
        return v.gso[k - 1].fd
    for i in range(GSO_SOCKS):
        if v.gso[i].fd < 0:
            best = i
            break
        if now - v.gso[i].used > 1.0 and (best < 0 or v.gso[i].used < v.gso[best].used):
            best = i
    if best < 0:
        return -1
    fd = _open_gso_sock(v, sport)
    if fd < 0:
        v.gso_slot[sport] = 255
        return -1
    if v.gso[best].fd >= 0:
        close(v.gso[best].fd)
        v.gso_slot[v.gso[best].sport] = 0
    v.gso[best].fd = fd
    v.gso[best].sport = sport
    v.gso[best].used = now
    v.gso_slot[sport] = <uint8_t>(best + 1)
    return fd

cdef void fp_gso_close_all(fp_vtep* v) noexcept nogil:
    cdef int i
    if v.gso != NULL:
        for i in range(GSO_SOCKS):
            if v.gso[i].fd >= 0:
                close(v.gso[i].fd)
    free(v.gso)
    free(v.gso_slot)
    v.gso = NULL
    v.gso_slot = NULL
    v.gso_on = 0

cdef inline size_t _put_int_cmsg(void* buf, int level, int kind, int val) noexcept nogil:
    """Write one control message holding the int ``val`` at ``buf`` (aligned); its
    CMSG_SPACE."""
    cdef cmsghdr* cm = <cmsghdr*>buf
    memset(buf, 0, CMSG_SPACE(sizeof(int)))
    cm.cmsg_level = level
    cm.cmsg_type = kind
    cm.cmsg_len = CMSG_LEN(sizeof(int))
    memcpy(CMSG_DATA(cm), &val, sizeof(int))
    return CMSG_SPACE(sizeof(int))

cdef inline size_t _put_tos_cmsg(void* buf, int fam, uint8_t tos, uint8_t ttl) noexcept nogil:
    """Write the control messages that give one send the outer TOS / traffic class ``tos``
    (IP_TOS / IPV6_TCLASS) and TTL / hop limit ``ttl`` (IP_TTL / IPV6_HOPLIMIT) at ``buf``
    (aligned, room for two); their CMSG_SPACE.  The sockets' own TOS is 0 and their own TTL
    the VTEP's ``ttl`` (or the route's), so a 0 needs none (vxtun.io.underlay.tos_cmsg)."""
    cdef size_t n = 0
    if tos:
        n += _put_int_cmsg(buf, IPPROTO_IP if fam == 4 else IPPROTO_IPV6,
                           IP_TOS if fam == 4 else IPV6_TCLASS, tos)
    if ttl:
        n += _put_int_cmsg(<uint8_t*>buf + n, IPPROTO_IP if fam == 4 else IPPROTO_IPV6,
                           IP_TTL if fam == 4 else IPV6_HOPLIMIT, ttl)
    return n

cdef const uint8_t* _source(fp_vtep* v, const fp_remote* r, double now) noexcept nogil:
    """The source address of datagrams to ``r``: tx_fd's own, or the one a UDP socket
    connect()ed to it is given, remembered for a second (vxtun.io.underlay.SourceCache);
    NULL when there is no route."""
    cdef int i, slot = 0, fd
    cdef size_t alen = 4 if r.family == 4 else 16
    cdef sockaddr_in6 sa
    cdef socklen_t sl
    if v.has_local:
        return <const uint8_t*>&(<sockaddr_in*>&v.local).sin_addr if r.family == 4 \
            else v.local.sin6_addr.s6_addr
    for i in range(SRC_CACHE):
        if v.srcs[i].at > 0 and memcmp(v.srcs[i].dst, r.addr, alen) == 0:
            if now - v.srcs[i].at < 1.0:
                return v.srcs[i].src
            slot = i
            break
        if v.srcs[i].at < v.srcs[slot].at:
            slot = i
    memset(&sa, 0, sizeof(sa))
    if r.family == 4:
        (<sockaddr_in*>&sa).sin_family = AF_INET
        (<sockaddr_in*>&sa).sin_port = _htons(9)
        memcpy(&(<sockaddr_in*>&sa).sin_addr, r.addr, 4)
        sl = sizeof(sockaddr_in)
    else:
        sa.sin6_family = AF_INET6
        sa.sin6_port = _htons(9)
        memcpy(sa.sin6_addr.s6_addr, r.addr, 16)
        sl = sizeof(sockaddr_in6)
    fd = socket(sa.sin6_family, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    if fd < 0:
        return NULL
    if r.family == 4 and v.has_mcast_if and (r.addr[0] & 0xF0) == 0xE0:
        # a group leaves by the device tx_fd names (vxtun.io.underlay.SourceCache does the same)
        setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, v.mcast_if, 12)
    if connect(fd, <sockaddr*>&sa, sl) < 0 or getsockname(fd, <sockaddr*>&sa, &sl) < 0:
        close(fd)
        return NULL
    close(fd)
    memcpy(v.srcs[slot].dst, r.addr, alen)
    if r.family == 4:
        memcpy(v.srcs[slot].src, &(<sockaddr_in*>&sa).sin_addr, 4)
    else:
        memcpy(v.srcs[slot].src, sa.sin6_addr.s6_addr, 16)
    v.srcs[slot].at = now
    return v.srcs[slot].src

cdef inline uint32_t _udp4_check(const uint8_t* src, const uint8_t* dst, const uint8_t* uh,
                                 const fp_seg* s, uint32_t ulen) noexcept nogil:
    """vxlan.udp_checksum: the UDP checksum of the datagram of UDP + VXLAN header ``uh`` (16
    bytes, checksum field 0) and segment ``s``, from ``src`` to ``dst``: the pseudo-header
    (RFC 768) and the datagram, one's complement, 0 sent as 0xffff.  A segment's headers are
    an even number of bytes when a payload follows them (fp_tso_segment), so the pieces can
    be summed one after the other."""
    cdef uint32_t c = fp_csum_add(dst, 4, fp_csum_add(src, 4, 17 + ulen))
    c = fp_csum_add(uh, 16, c)
    c = fp_csum_add(s.h, s.hlen, c)
    if s.plen:
        c = fp_csum_add(s.p, s.plen, c)
    c = (~c) & 0xFFFF
    return c if c else 0xFFFF

cdef int _tx_gso(fp_txctx* c, fp_vtep* v, fp_remote* r, int nseg, int fd,
                 uint8_t tos, uint8_t ttl) noexcept nogil:
    """Send the segments as UDP GSO trains (UDP_SEGMENT): the kernel, not us, cuts them into
    datagrams, and a peer with UDP_GRO can take the train whole.  Every segment but the last
    has the same size (headers + MSS), as UDP GSO requires.  Every datagram of the train gets
    the outer TOS ``tos`` and TTL ``ttl``.  -1: send through tx_fd instead."""
    cdef uint32_t dport = r.port if r.port else v.s.dstport
    cdef uint8_t* vx = c.uh
    cdef fp_seg* segs = c.act.segs
    cdef uint32_t gso_size = VXLAN_HLEN + segs[0].hlen + segs[0].plen
    cdef int per = GSO_MAXBYTES // gso_size
    cdef int i = 0, k, j, waits = 0
    cdef ssize_t sent
    cdef msghdr mh
    cdef sockaddr_in a4
    cdef sockaddr_in6 a6
    cdef uint64_t ctrl[8]          # 64 bytes, aligned for cmsghdr
    cdef size_t clen
    cdef cmsghdr* cm
    cdef uint16_t gs = <uint16_t>gso_size
    if per > GSO_MAXSEG:
        per = GSO_MAXSEG
    if per < 2:
        return -1
    fp_encode_header(vx, <uint32_t>r.vni if r.vni >= 0 else v.s.vni)
    memset(&mh, 0, sizeof(mh))
    if v.us.family == 4:
        memset(&a4, 0, sizeof(a4))
        a4.sin_family = AF_INET
        a4.sin_port = _htons(dport)
        memcpy(&a4.sin_addr, r.addr, 4)
        mh.msg_name = &a4
        mh.msg_namelen = sizeof(a4)
    else:
        memset(&a6, 0, sizeof(a6))
        a6.sin6_family = AF_INET6
        a6.sin6_port = _htons(dport)
        memcpy(a6.sin6_addr.s6_addr, r.addr, 16)
        mh.msg_name = &a6
        mh.msg_namelen = sizeof(a6)
    while i < nseg:
        k = nseg - i if nseg - i < per else per
        for j in range(k):
            c.iov[3 * j].iov_base = vx
            c.iov[3 * j].iov_len = 8
            c.iov[3 * j + 1].iov_base = <void*>segs[i + j].h
            c.iov[3 * j + 1].iov_len = segs[i + j].hlen
            c.iov[3 * j + 2].iov_base = <void*>segs[i + j].p
            c.iov[3 * j + 2].iov_len = segs[i + j].plen
        mh.msg_iov = c.iov
        mh.msg_iovlen = 3 * k
        clen = 0
        if k > 1:
            memset(ctrl, 0, sizeof(ctrl))
            cm = <cmsghdr*>ctrl
            cm.cmsg_level = SOL_UDP
            cm.cmsg_type = UDP_SEGMENT
            cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            memcpy(CMSG_DATA(cm), &gs, sizeof(uint16_t))
            clen = CMSG_SPACE(sizeof(uint16_t))
        if tos or ttl:
            clen += _put_tos_cmsg(<uint8_t*>ctrl + clen, v.us.family, tos, ttl)
        mh.msg_control = ctrl if clen else NULL
        mh.msg_controllen = clen
        sent = sendmsg(fd, &mh, 0)
        if sent < 0:
            if _retry(fd, &waits):
                continue
            if i == 0:
                return -1           # this kernel or route refuses GSO: the caller uses tx_fd
            v.s.st[c.tid].drops[D_TX_ERROR] += k
        i += k
    return 0

cdef enum:
    TNL_HDR = 24          # sizeof(struct virtio_net_hdr_v1_hash_tunnel)
    TNL_OUTER = 14 + 20 + 8   # Ethernet (to the egress TAP), IPv4, UDP: vxtun.io.gso.OUTER4 - 8
    TNL_OUTER6 = 14 + 40 + 8  # Ethernet, IPv6, UDP: vxtun.io.gso.OUTER6 - 8


cdef inline void _le16(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF

cdef inline void _tnl_vnet_hdr(uint8_t* h, const uint8_t* vnet, uint32_t outer, uint32_t iplen,
                               int csum) noexcept nogil:
    """vxtun.io.gso.tnl_vnet_hdr: the TAP's virtio-net header ``vnet``, every offset moved by
    the ``outer`` bytes in front of the inner frame (Ethernet, IP header of ``iplen`` bytes,
    UDP, VXLAN), gso_type | GSO_UDP_TUNNEL_IPV4 (iplen 20) or _IPV6 (iplen 40)."""
    h[0] = 1 | (8 if csum else 0)         # NEEDS_CSUM, UDP_TUNNEL_CSUM
    h[1] = vnet[1] | (0x20 if iplen == 20 else 0x40)  # GSO_TCPV4/6 (ECN kept) | UDP_TUNNEL_*
    _le16(h + 2, (vnet[2] | (vnet[3] << 8)) + outer if (vnet[2] | vnet[3]) else 0)
    h[4] = vnet[4]                        # gso_size: the MSS
    h[5] = vnet[5]
    _le16(h + 6, (vnet[6] | (vnet[7] << 8)) + outer)
    h[8] = vnet[8]
    h[9] = vnet[9]
    memset(h + 10, 0, 10)                 # num_buffers, hash
    _le16(h + 20, 14 + iplen)             # outer_th_offset
    _le16(h + 22, outer + 14)             # inner_nh_offset

cdef size_t _tnl_headers(uint8_t* h, const uint8_t* vnet, const uint8_t* mac, bint v6,
                         const uint8_t* src, const uint8_t* dst, uint16_t sport, uint16_t dport,
                         uint32_t vni, uint8_t tos, uint8_t ttl, uint16_t ident, bint df,
                         bint csum, uint32_t label, uint32_t ulen) noexcept nogil:
    """Write at ``h`` what goes in front of an inner frame of ``ulen`` - 16 bytes whose TAP
    header is ``vnet``: the tunnel virtio-net header, Ethernet to ``mac``, the outer IPv4
    (ID ``ident``, DF ``df``) or IPv6 (flow label ``label``, host order) header with TOS /
    traffic class ``tos`` and one hop more than ``ttl``, UDP (the folded pseudo-header sum
    with ``csum``, else 0; always with IPv6) and VXLAN headers.  Returns their length.
    vxtun.io.gso's tnl_vnet_hdr, outer_ipv4 and outer_ipv6 are the reference."""
    cdef uint32_t iplen = 40 if v6 else 20
    cdef uint32_t outer = (TNL_OUTER6 if v6 else TNL_OUTER) + 8
    cdef uint8_t* ip = h + TNL_HDR + 14
    cdef uint8_t* uh = ip + iplen
    _tnl_vnet_hdr(h, vnet, outer, iplen, csum or v6)
    memcpy(h + TNL_HDR, mac, 6)
    memset(h + TNL_HDR + 6, 0, 6)
    h[TNL_HDR + 6] = 2                    # a locally administered source MAC,
    h[TNL_HDR + 11] = 1                   # 02:00:00:00:00:01 as vxtun.io.gso writes it
    if v6:
        h[TNL_HDR + 12] = 0x86
        h[TNL_HDR + 13] = 0xDD
        # ip6_flow_hdr(): version, traffic class, flow label
        put32(ip, 0x60000000 | (<uint32_t>tos << 20) | (label & 0xFFFFF))
        put16(ip + 4, ulen)
        ip[6] = 17
        ip[7] = ttl + 1                   # ip6_forward() takes one
        memcpy(ip + 8, src, 16)
        memcpy(ip + 24, dst, 16)
        # the folded pseudo-header sum over the whole length (udp6_set_csum() for GSO),
        # which __skb_udp_tunnel_segment() adjusts per segment
        put16(uh + 6, fp_csum_add(ip + 8, 32, 17 + ulen))
    else:
        h[TNL_HDR + 12] = 0x08
        h[TNL_HDR + 13] = 0x00
        ip[0] = 0x45
        ip[1] = tos
        put16(ip + 2, ulen + 20)
        put16(ip + 4, ident)
        put16(ip + 6, 0x4000 if df else 0)
        ip[8] = ttl + 1                   # ip_forward() takes one
        ip[9] = 17
        put16(ip + 10, 0)
        memcpy(ip + 12, src, 4)
        memcpy(ip + 16, dst, 4)
        put16(ip + 10, (~fp_csum_add(ip, 20, 0)) & 0xFFFF)
        # with the checksum, the folded pseudo-header sum over the whole length, which
        # __skb_udp_tunnel_segment() adjusts per segment (udp_set_csum() leaves the same)
        put16(uh + 6, fp_csum_add(ip + 12, 8, 17 + ulen) if csum else 0)
    put16(uh, sport)
    put16(uh + 2, dport)
    put16(uh + 4, ulen)
    fp_encode_header(uh + 8, vni)
    return TNL_HDR + outer

def tnl_headers(const uint8_t[::1] vnet not None, bytes mac, bytes src, bytes dst,
                uint16_t sport, uint16_t dport, uint32_t vni, uint8_t tos, uint8_t ttl,
                uint16_t ident, bint df, bint csum, uint32_t label,
                uint32_t frame_len) -> bytes:
    """What the TX thread writes to the egress TAP in front of a TSO super-frame of
    ``frame_len`` bytes (IPv6 when ``src`` has 16 bytes): for tests against vxtun.io.gso."""
    cdef uint8_t h[TNL_HDR + TNL_OUTER6 + 8]
    cdef bint v6 = len(src) == 16
    if vnet.shape[0] < VNET_HDR_LEN or len(mac) != 6 or len(dst) != len(src) \
            or len(src) not in (4, 16):
        raise ValueError("a 10-byte vnet header, a MAC, and two addresses of one family")
    cdef size_t n = _tnl_headers(h, &vnet[0], mac, v6, src, dst, sport, dport, vni, tos, ttl,
                                 ident, df, csum, label, 16 + frame_len)
    return h[:n]

cdef int _tnl_send(fp_txctx* c, fp_vtep* v, fp_remote* r, int nseg, uint8_t tos,
                   uint8_t ttl) noexcept nogil:
    """Write the TSO super-frame still in c.buf, wrapped in IPv4 (IPv6)/UDP/VXLAN for ``r``,
    to the egress TAP as one UDP-tunnel GSO packet (vxtun/io/gso.py says how the kernel takes
    it; _tnl_headers writes the headers).  -1: not sent, the caller sends the segments as
    usual."""
    cdef const uint8_t* f = c.buf + VNET_HDR_LEN
    cdef const uint8_t* src
    cdef fp_seg* segs = c.act.segs
    cdef size_t n = segs[0].hlen
    cdef bint v6 = r.family == 6
    cdef uint32_t ulen
    cdef uint8_t h[TNL_HDR + TNL_OUTER6 + 8]
    cdef const uint8_t* lb = <const uint8_t*>&v.flowinfo
    cdef iovec iov[2]
    cdef int i
    cdef uint8_t out_ttl = ttl if ttl else v.tnl_ttl
    if segs[0].p != f + n or out_ttl == 255:
        return -1               # not the frame as read, or no hop left to give the forwarding
    if not ((f[12] == 0x08 and f[13] == 0x00) or (f[12] == 0x86 and f[13] == 0xDD)):
        return -1               # an 802.1Q tag: inner_nh_offset assumes a plain Ethernet header
    for i in range(nseg):
        n += segs[i].plen
    ulen = 16 + <uint32_t>n
    if ulen + (0 if v6 else 20) > 0xFFFF:
        return -1               # IPv4 total length / IPv6 payload length (no jumbograms)
    src = _source(v, r, fp_now())
    if src == NULL:
        return -1
    # IPv6: set_tnl_egress took the egress only with the checksum on (udp6zerocsumtx stays
    # on today's path); the flow label is the one tx_fd leases (network order there, 0: none)
    iov[0].iov_len = _tnl_headers(
        h, c.buf, v.tnl_mac, v6, src, r.addr, c.act.sport, r.port if r.port else v.s.dstport,
        <uint32_t>r.vni if r.vni >= 0 else v.s.vni, tos, out_ttl, v.tnl_ident & 0xFFFF,
        v.tnl_df, v.csum4, ((lb[1] & 0x0F) << 16) | (lb[2] << 8) | lb[3], ulen)
    iov[0].iov_base = h
    iov[1].iov_base = <void*>f
    iov[1].iov_len = n
    if writev(v.tnl_fd, iov, 2) < 0:
        v.tnl_errors += 1
        if errno == EINVAL:
            v.tnl_fd = -1       # this kernel will not take it: today's path from now on
        return -1
    if not v6:
        v.tnl_ident += <uint32_t>nseg
    v.tnl_sent += 1
    return 0

cdef inline bint _is_multicast(const fp_remote* r) noexcept nogil:
    if r.family == 4:
        return (r.addr[0] & 0xF0) == 0xE0
    return r.addr[0] == 0xFF

cdef void fp_tx_send(fp_txctx* c, fp_vtep* v) noexcept nogil:
    """Carry out an A_SEND (c.act): one VXLAN datagram per segment per remote (head-end
    replication for flood lists), each with the outer TOS / traffic class ``tos`` and TTL
    ``ttl`` (control messages, when not 0).  A small frame may wait for the next ones
    (fp_txctx.pend)."""
    cdef int nr = c.act.nr, nseg = c.act.nseg
    cdef uint16_t sport = c.act.sport
    cdef uint8_t tos = c.act.tos
    cdef uint8_t ttl = c.act.ttl
    cdef const uint8_t* src
    cdef double now = fp_now() if v.csum4 and not v.has_local else 0
    cdef fp_seg* segs = c.act.segs
    cdef fp_remote* rem = c.act.rem
    cdef int ri, si, m = 0
    cdef fp_remote* r
    cdef fp_seg* s
    cdef uint8_t* uh
    cdef uint32_t dport, vni, ulen
    cdef sockaddr_in* a4
    cdef sockaddr_in6* a6
    cdef msghdr* mh
    cdef int fam = v.us.family, gfd
    cdef size_t tlen = 0
    cdef bint defer = nseg == 1 and nr <= TXBATCH and segs[0].hlen <= SMALLBUF
    cdef void* ctl
    cdef uint8_t* slot
    if nseg > 1 and nr == 1 and v.tnl_fd >= 0 and rem[0].family == fam \
            and not _is_multicast(&rem[0]):
        fp_tx_pend_flush(c, v)                    # the frames read before go first
        if _tnl_send(c, v, &rem[0], nseg, tos, ttl) == 0:
            return
    fp_tx_segments(&c.act)                        # segments leave: write their headers
    if nseg > 1 and nr == 1 and v.gso_on and rem[0].family == fam \
            and not _is_multicast(&rem[0]):
        gfd = _gso_fd(v, sport, fp_now())
        if gfd >= 0:
            fp_tx_pend_flush(c, v)                # the frames read before go first
            if _tx_gso(c, v, &rem[0], nseg, gfd, tos, ttl) == 0:
                return
    if not defer or c.pend + nr > TXBATCH:
        fp_tx_pend_flush(c, v)
    m = c.pend
    if defer:
        # the next read reuses c.buf: the frame waits in a slot of its own
        slot = c.small + c.npend_frames * SMALLBUF
        memcpy(slot, segs[0].h, segs[0].hlen)
        segs[0].h = slot
        c.npend_frames += 1
    ctl = &c.ctl[4 * m] if defer else <void*>c.tosctl
    if tos or ttl:
        # one set of control messages for all datagrams of the frame: the same TOS and TTL
        tlen = _put_tos_cmsg(ctl, fam, tos, ttl)
    for ri in range(nr):
        r = &rem[ri]
        if r.family != fam:
            v.s.st[c.tid].drops[D_TX_ERROR] += nseg
            continue
        dport = r.port if r.port else v.s.dstport
        vni = <uint32_t>r.vni if r.vni >= 0 else v.s.vni
        src = NULL
        if v.csum4:
            src = _source(v, r, now)
            if src == NULL:
                v.s.st[c.tid].drops[D_TX_ERROR] += nseg      # no route to it
                continue
        for si in range(nseg):
            s = &segs[si]
            uh = c.uh + m * 16
            ulen = 16 + s.hlen + s.plen
            put16(uh, sport)
            put16(uh + 2, dport)
            put16(uh + 4, ulen if ulen <= 0xFFFF else 0)
            uh[6] = 0       # IPv4: computed below, or 0 with noudpcsum; IPv6: the kernel's
            uh[7] = 0       # (IPV6_CHECKSUM on the raw socket), or 0 with udp6zerocsumtx
            fp_encode_header(uh + 8, vni)
            if src != NULL:
                put16(uh + 6, _udp4_check(src, r.addr, uh, s, ulen))
            mh = &c.msgs[m].msg_hdr
            if fam == 4:
                a4 = <sockaddr_in*>&c.addrs[m]
                memset(a4, 0, sizeof(sockaddr_in))
                a4.sin_family = AF_INET
                memcpy(&a4.sin_addr, r.addr, 4)
                mh.msg_namelen = sizeof(sockaddr_in)
            else:
                a6 = &c.addrs[m]
                memset(a6, 0, sizeof(sockaddr_in6))
                a6.sin6_family = AF_INET6
                a6.sin6_flowinfo = v.flowinfo       # flowlabel (IPV6_FLOWINFO_SEND on tx_fd)
                memcpy(a6.sin6_addr.s6_addr, r.addr, 16)
                mh.msg_namelen = sizeof(sockaddr_in6)
            mh.msg_name = &c.addrs[m]
            c.iov[3 * m].iov_base = uh
            c.iov[3 * m].iov_len = 16
            c.iov[3 * m + 1].iov_base = <void*>s.h
            c.iov[3 * m + 1].iov_len = s.hlen
            c.iov[3 * m + 2].iov_base = <void*>s.p
            c.iov[3 * m + 2].iov_len = s.plen
            mh.msg_iov = &c.iov[3 * m]
            mh.msg_iovlen = 3 if s.plen else 2
            mh.msg_control = ctl if tlen else NULL
            mh.msg_controllen = tlen
            mh.msg_flags = 0
            m += 1
            if m == TXBATCH:            # never when defer: the frame's datagrams fit
                _tx_flush(c, v, m)
                m = 0
    if defer:
        c.pend = m
        if c.pend == TXBATCH or c.npend_frames == TXBATCH:
            fp_tx_pend_flush(c, v)
        return
    if m:
        _tx_flush(c, v, m)

cdef void fp_probe_gso(fp_vtep* v, bint udp_gso) noexcept nogil:
    """Learn tx_fd's address and checksum setting (SO_NO_CHECK: a zero checksum, set by
    vxtun.io.underlay.open_tx); turn UDP GSO on for ``v`` if ``udp_gso``, this kernel has
    UDP_SEGMENT, the checksum is not to be zero (udp_send_skb() refuses GSO then) and no
    flow label is set."""
    cdef int fd, gs = 1400, nocheck = 0
    cdef socklen_t ilen = sizeof(int)
    memset(&v.local, 0, sizeof(v.local))
    v.local_len = sizeof(v.local)
    if (getsockname(v.tx_fd, <sockaddr*>&v.local, &v.local_len) != 0
            or v.local.sin6_family != (AF_INET if v.us.family == 4 else AF_INET6)):
        memset(&v.local, 0, sizeof(v.local))          # not bound: any address
        v.local.sin6_family = AF_INET if v.us.family == 4 else AF_INET6
        v.local_len = sizeof(sockaddr_in) if v.us.family == 4 else sizeof(sockaddr_in6)
    if v.us.family == 4:
        v.has_local = (<sockaddr_in*>&v.local).sin_addr.s_addr != 0
    else:
        v.has_local = False
        for fd in range(16):
            v.has_local = v.has_local or v.local.sin6_addr.s6_addr[fd] != 0
    if getsockopt(v.tx_fd, SOL_SOCKET, SO_NO_CHECK, &nocheck, &ilen) != 0:
        nocheck = 0
    v.csum4 = v.us.family == 4 and not nocheck
    if not udp_gso or nocheck or v.flowinfo:
        return          # (a flow label needs a lease of its own on each GSO socket: none)
    fd = socket(AF_INET if v.us.family == 4 else AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    if fd < 0:
        return
    if setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gs, sizeof(int)) == 0:
        v.gso = <fp_gsosock*>malloc(GSO_SOCKS * sizeof(fp_gsosock))
        v.gso_slot = <uint8_t*>calloc(65536, 1)
        if v.gso != NULL and v.gso_slot != NULL:
            for fd2 in range(GSO_SOCKS):
                v.gso[fd2].fd = -1
            v.gso_on = 1
        else:
            free(v.gso)
            free(v.gso_slot)
            v.gso = NULL
            v.gso_slot = NULL
    close(fd)
