# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The threads: they read, ask vxtun/fastpath/decide.pyx what to do, and do it.

* TX (role ROLE_TX, TAP -> underlay): read a frame (or a 64 KB TSO super-frame) from each
  ready TAP, ``fp_tx_decide`` it, and carry out the action: send (vxtun/fastpath/send.pyx),
  punt the frame to Python through the queue, or nothing (a counted drop).
* RX (role ROLE_RX, underlay -> TAP): read datagrams (recvmmsg; UDP GRO trains are split)
  with their outer TOS / traffic class (a control message), ``fp_rx_decide`` each, punt a
  learn notification when the FDB changed, and write a delivered frame to its TAP behind its
  virtio-net header; in-order TCP segments of one flow are first merged into one GSO
  super-frame (vxtun/fastpath/coalesce.pyx).
* A multi-queue TAP (vxtun/io/tap.py ``open_tap_queues``): queue 0 is read by the TX thread
  as above, each queue q >= 1 by a TX thread of its own (``fp_thread.q``), each under the
  queue's lock (qlock[q]); a thread takes the VTEP's txlock only around sending, whose state
  (the GSO sockets, the source cache) is per VTEP, so a storm of proxied requests on one
  queue, which never sends, never holds up the sending of another.  Each thread has its own counter block (``fp_thread.ctr``).
* Steering: a steering program (vxtun/io/tapsteer.py) puts ARP and Neighbour Solicitations
  from behind the TAP on queue 0 and the host's own traffic on queues 1..nq-1, its IP flows by
  the hash of ``fp_flow_queue``, the queue the RX thread writes a delivered frame on (and then
  polls for the answer).  Without the program (refused by the kernel) tun's automq steers: a
  flow goes to the queue its frames were last written on, so proxy replies are written on
  queue 0, which keeps ARP (one flow to tun: the flow dissector takes no address from it)
  there, and delivered IP frames on their flow's queue.  Either way an ARP storm that
  overflows queue 0's ring does not take the host's pings with it.
* After its own work each thread tries the other direction once (the answer to what it just
  delivered or sent is often already there), under per-TAP / per-socket locks that keep every
  flow in order.

Every thread runs ``fp_thread_main`` with its role; none ever takes the GIL.  Rare things
reach Python through a bounded queue and an eventfd (``Dataplane.fileno``).

A TAP deleted under us (``ip link del``): tun_detach_all() detaches it from our fd, after which
tun_chr_poll() reports EPOLLERR forever and tun_chr_read_iter() fails with EBADFD.  The TX thread
would spin on that level-triggered event; instead the first failed read (or an EPOLLERR/EPOLLHUP
on the TAP) sets ``fp_vtep.tap_gone``, punts one PUNT_TAP_GONE record (its errno), and the TX
thread stops watching the fd.  Python then removes the VTEP as ``vxtun down`` would
(vxtun/dataplane/fast.py).  The common path pays nothing: the errno is looked at only when a
burst ends on a failed read, and the event flags once per epoll event.
"""
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport atoi, calloc, free, getenv, malloc
from libc.string cimport memcpy, memset
from posix.uio cimport iovec
from posix.unistd cimport close, read, write

from vxtun.fastpath.coalesce cimport COALBUF, coal_add, coal_finish, coal_start, fp_coal
from vxtun.fastpath.decide cimport (
    A_DELIVER, A_PUNT, A_REPLY, A_SEND, PUNT_FRAME, PUNT_LEARN, PUNT_TAP_GONE, fp_rx_action, fp_rx_decide,
    fp_tx_action, fp_tx_decide, fp_tx_segments)
from vxtun.fastpath.fdb cimport LEARN_MOVED, LEARN_NEW
from vxtun.fastpath.libc cimport (
    AF_INET, CMSG_DATA, CMSG_FIRSTHDR, CMSG_NXTHDR, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
    EPOLLERR, EPOLLHUP, EPOLLIN, IP_TOS, IPPROTO_IP, IPPROTO_IPV6, IPV6_TCLASS, MSG_DONTWAIT,
    SIG_BLOCK, cmsghdr, epoll_create1, epoll_ctl, epoll_event, epoll_wait, fp_now, mmsghdr,
    msghdr, pthread_create, pthread_join, pthread_mutex_lock, pthread_mutex_trylock,
    pthread_mutex_t, pthread_mutex_unlock, pthread_sigmask, recvmmsg, sigfillset, sigset_t,
    sockaddr_in, sockaddr_in6)
from vxtun.fastpath.send cimport (
    BURST, SOL_UDP, TAPBUF, UDP_GRO, fp_tx_pend_flush, fp_tx_send, fp_txctx, fp_txctx_free,
    fp_txctx_init)
from vxtun.fastpath.state cimport (
    QLEN, ROLE_RX, ROLE_TX, fp_dp, fp_queue, fp_thread, fp_underlay, fp_vtep)
from vxtun.fastpath.trace cimport tr_rx, tr_tx
from vxtun.fastpath.wire cimport D_TAP_ERROR, ETH_HLEN, VNET_HDR_LEN, VXLAN_HLEN, fp_pack_vnet

cdef enum:
    RXBATCH = 32          # datagrams per recvmmsg()
    RXHEAD = 16           # room before each datagram: the vnet header overwrites the VXLAN one
    RXBUF = 65536 + RXHEAD + 64
    RX_BULK = 2048        # a TCP datagram longer than this in a batch: non-TCP goes first
                          # (vxtun.wire.vxlan.RX_BULK)
    CTRLWORDS = 8         # control-message room per datagram, in 8-byte words
    CTRLLEN = CTRLWORDS * 8
    TOUCHED_MAX = 8


# --- the punt queue: rare frames and notifications for the Python loop ----------------------

cdef int q_push(fp_queue* q, uint32_t kind, uint32_t vid, const uint8_t* a, uint32_t na,
                const uint8_t* b, uint32_t nb, bint count_lost) noexcept nogil:
    """Queue a copy of a+b for Python; -1 when the queue is full (the caller counts a drop;
    ``count_lost``: the queue counts it in ``lost`` too, i.e. the record is not tried again)."""
    cdef uint8_t* data = <uint8_t*>malloc(na + nb + 1)
    cdef uint32_t i
    cdef bint wake
    cdef uint64_t one = 1
    if data == NULL:
        return -1
    memcpy(data, a, na)
    if nb:
        memcpy(data + na, b, nb)
    pthread_mutex_lock(&q.lock)
    if q.count == QLEN:
        if count_lost:
            q.lost += 1
        pthread_mutex_unlock(&q.lock)
        free(data)
        return -1
    i = (q.head + q.count) % QLEN
    q.slots[i].kind = kind
    q.slots[i].vid = vid
    q.slots[i].len = na + nb
    q.slots[i].data = data
    q.count += 1
    wake = q.count == 1
    pthread_mutex_unlock(&q.lock)
    if wake:        # Python drains until empty, so one wake-up per non-empty period is enough
        write(q.efd, &one, 8)
    return 0


# --- TAP -> underlay ------------------------------------------------------------------------

cdef void _tap_gone(fp_queue* q, fp_vtep* v, int err) noexcept nogil:
    """A read of ``v``'s TAP failed with ``err`` (0: EPOLLHUP and nothing to read): tell Python
    once.  Called with v.qlock[0] held.  While the queue is full the flag stays clear, the TX
    thread keeps watching the fd, and the next event tries again."""
    cdef int32_t e = err
    if v.tap_gone:
        return
    if q_push(q, PUNT_TAP_GONE, v.s.id, <const uint8_t*>&e, sizeof(int32_t), NULL, 0,
              False) == 0:
        v.tap_gone = 1


cdef void _tx_carry_out(fp_queue* q, fp_vtep* v, fp_txctx* c) noexcept nogil:
    """Do what fp_tx_decide decided for the frame in c.buf (an A_SEND with v.txlock held)."""
    cdef fp_tx_action* a = &c.act
    cdef int i
    if a.kind == A_SEND:
        fp_tx_send(c, v)
    elif a.kind == A_REPLY:             # a proxy answer (arp_reduce/neigh_reduce): back up,
        # on queue 0 whichever queue asked: ARP's answers, and so its storms, stay there
        if write(v.tap_fd, a.reply, a.rlen) < 0:
            v.s.st[c.tid].drops[D_TAP_ERROR] += 1
    elif a.kind == A_PUNT:
        fp_tx_segments(a)
        for i in range(a.nseg):
            if q_push(q, PUNT_FRAME, v.s.id, a.segs[i].h, a.segs[i].hlen, a.segs[i].p,
                      a.segs[i].plen, True) < 0:
                v.s.st[c.tid].drops[a.reason] += 1  # queue full: the drop the core would count

cdef int _tx_burst(fp_dp* dp, fp_vtep* v, fp_txctx* c, bint wait, int q) noexcept nogil:
    """Read and send up to BURST frames of queue ``q`` of one TAP, holding the queue's lock
    (qlock[q]) so that no two threads interleave one queue's frames (a flow, on one queue,
    stays in order); the txlock is taken at the first frame to send and kept to the end of the
    burst (fp_tx_pend_flush).  ``wait`` False:
    give up at once if another thread holds the queue.  Returns how many frames were read."""
    cdef int k, n = 0
    cdef ssize_t r
    cdef double now
    cdef pthread_mutex_t* lock = &v.qlock[q]
    cdef int fd = v.qfd[q]
    cdef bint sending = False
    if wait:
        pthread_mutex_lock(lock)
    elif pthread_mutex_trylock(lock) != 0:
        return 0
    for k in range(BURST):
        r = read(fd, c.buf, TAPBUF)
        if r <= 0:
            if r < 0 and errno != EAGAIN and errno != EINTR:
                if q == 0:
                    _tap_gone(&dp.q, v, errno)
                else:
                    v.qgone[q] = 1      # queue 0 fails too, and says it to Python
            break
        n += 1
        now = fp_now()
        fp_tx_decide(&v.s, c.buf, <size_t>r, now, c.tid, &c.act)
        if dp.tr.on and c.act.kind != A_PUNT:   # a punted frame is traced by the core
            tr_tx(&dp.tr, &v.s, c.buf + VNET_HDR_LEN,
                  <size_t>r - VNET_HDR_LEN if r > VNET_HDR_LEN else 0, now, &c.act)
        if c.act.kind == A_SEND and not sending:
            pthread_mutex_lock(&v.txlock)
            sending = True
        _tx_carry_out(&dp.q, v, c)
    v.qread[q] += <uint64_t>n
    if sending:
        fp_tx_pend_flush(c, v)
        pthread_mutex_unlock(&v.txlock)
    pthread_mutex_unlock(lock)
    return n


# --- underlay -> TAP ------------------------------------------------------------------------

cdef struct fp_rxslot:
    # what recvmmsg() fills for one datagram besides its bytes
    iovec iov
    sockaddr_in6 addr
    uint64_t ctrl[CTRLWORDS]          # control messages (aligned for cmsghdr)

cdef struct fp_rxctx:
    int tid
    fp_vtep* touched[TOUCHED_MAX]     # VTEPs whose TAP this drain wrote to (replies may wait)
    uint32_t tqmask[TOUCHED_MAX]      # ... and on which of their queues (a bit per queue)
    int ntouched
    fp_coal co
    uint8_t* bufs                     # RXBATCH datagrams of RXBUF bytes
    mmsghdr* msgs
    fp_rxslot* slots

cdef void _rxctx_free(fp_rxctx* c) noexcept nogil:
    free(c.co.buf)
    free(c.bufs)
    free(c.msgs)
    free(c.slots)

cdef int _rxctx_init(fp_rxctx* c, int tid) noexcept nogil:
    memset(c, 0, sizeof(fp_rxctx))
    c.bufs = <uint8_t*>malloc(<size_t>RXBATCH * RXBUF)
    c.msgs = <mmsghdr*>calloc(RXBATCH, sizeof(mmsghdr))
    c.slots = <fp_rxslot*>calloc(RXBATCH, sizeof(fp_rxslot))
    c.co.buf = <uint8_t*>malloc(COALBUF)
    c.tid = tid
    if c.bufs == NULL or c.msgs == NULL or c.slots == NULL or c.co.buf == NULL:
        _rxctx_free(c)
        return -1
    return 0

cdef inline void _touch(fp_rxctx* c, fp_vtep* v, int q) noexcept nogil:
    cdef int i
    for i in range(c.ntouched):
        if c.touched[i] == v:
            c.tqmask[i] |= 1u << q
            return
    if c.ntouched < TOUCHED_MAX:
        c.touched[c.ntouched] = v
        c.tqmask[c.ntouched] = 1u << q
        c.ntouched += 1

cdef int fp_flow_queue(const uint8_t* f, size_t n, int nq) noexcept nogil:
    """The TAP queue a delivered frame ``f`` (Ethernet) is written on, out of ``nq``: 0 for
    anything but IPv4/IPv6 (ARP and the like, where proxy replies go), else 1 + a hash of
    the IP flow mod (nq - 1); one queue: 0.  The hash does not depend on the direction: the
    xor of the addresses (big-endian 32-bit words), the protocol and, for TCP/UDP that is not
    a fragment, the xor of the ports, times 0x9E3779B1, the top 16 bits.  The host's answers
    come back on that queue: tun's automq pins the flow to the queue it was written on
    (vxtun/io/tap.py), and the steering program computes the same hash
    (vxtun/io/tapsteer.py), so the RX thread polls the right queue after a delivery."""
    cdef uint32_t h = 0, a, b
    cdef size_t l4 = 0, i
    cdef uint8_t proto = 0
    cdef uint16_t et
    if nq <= 1 or n < 14:
        return 0
    et = (<uint16_t>f[12] << 8) | f[13]
    if et == 0x0800 and n >= 34 and (f[14] >> 4) == 4:
        for i in range(4):                          # source xor destination: symmetric
            h ^= (<uint32_t>f[26 + i] ^ f[30 + i]) << ((3 - i) * 8)
        proto = f[23]
        if (f[20] & 0x3F) == 0 and f[21] == 0:      # not a fragment: the ports are there
            l4 = 14 + <size_t>(f[14] & 0x0F) * 4
    elif et == 0x86DD and n >= 54:
        for i in range(16):
            h ^= (<uint32_t>f[22 + i] ^ f[38 + i]) << ((3 - (i & 3)) * 8)
        proto = f[20]
        l4 = 54
    else:
        return 0
    if (proto == 6 or proto == 17) and l4 and n >= l4 + 4:
        a = (<uint32_t>f[l4] << 8) | f[l4 + 1]
        b = (<uint32_t>f[l4 + 2] << 8) | f[l4 + 3]
        h ^= a ^ b
    h ^= proto
    h *= 0x9E3779B1u                                # Fibonacci hashing: mix the bits down
    return 1 + <int>((h >> 16) % <uint32_t>(nq - 1))

def flow_queue(frame, int nq) -> int:
    """fp_flow_queue for the tests: the queue (of ``nq``) a delivered ``frame`` is written on."""
    cdef const uint8_t[:] f = bytes(frame)
    if len(frame) == 0:
        return fp_flow_queue(NULL, 0, nq)
    return fp_flow_queue(&f[0], len(frame), nq)

cdef void _coal_write(fp_rxctx* c) noexcept nogil:
    cdef fp_coal* co = &c.co
    cdef fp_vtep* v = <fp_vtep*>co.owner
    cdef size_t k = coal_finish(co)
    cdef int q
    if not k:
        return
    q = fp_flow_queue(co.buf + VNET_HDR_LEN, k - VNET_HDR_LEN, v.nq)
    _touch(c, v, q)
    if write(v.qfd[q], co.buf, k) < 0:
        v.s.st[c.tid].drops[D_TAP_ERROR] += 1

cdef void _rx_datagram(fp_rxctx* c, fp_dp* dp, fp_underlay* us, uint8_t* d, size_t n, int fam,
                       const uint8_t* addr, uint16_t sport, uint8_t tos, double now,
                       uint32_t tsegs) noexcept nogil:
    """Decide one datagram received under the outer TOS / traffic class ``tos`` and do it;
    ``d`` has RXHEAD bytes of room before it (for the virtio-net header).  While tracing, the
    first datagram of a GRO train is recorded for the ``tsegs`` it held (0: not recorded)."""
    cdef fp_rx_action a
    cdef fp_vtep* v
    cdef int k
    fp_rx_decide(&us.dm, d, n, fam, addr, tos, now, c.tid, &a)
    if tsegs and dp.tr.on:
        tr_rx(&dp.tr, us.id, d, n, fam, addr, sport, tos, now, tsegs, &a)
    if a.learn == LEARN_NEW or a.learn == LEARN_MOVED:
        q_push(&dp.q, PUNT_LEARN, a.v.id, d + VXLAN_HLEN + 6, 6, NULL, 0, True)
    if a.kind != A_DELIVER:
        return
    v = <fp_vtep*>a.v
    if v.tap_coalesce:
        k = coal_add(&c.co, v, v.s.mtu, a.frame, a.len)
        if k == 1:
            return
        _coal_write(c)          # what is pending goes first: order is kept
        if k == 2:
            coal_start(&c.co, v, v.s.mtu, a.frame, a.len)
            return
    fp_pack_vnet(&a.vnet, a.frame - VNET_HDR_LEN)    # over the VXLAN header and 2 bytes of room
    k = fp_flow_queue(a.frame, a.len, v.nq)
    _touch(c, v, k)
    if write(v.qfd[k], a.frame - VNET_HDR_LEN, a.len + VNET_HDR_LEN) < 0:
        v.s.st[c.tid].drops[D_TAP_ERROR] += 1
cdef inline bint _rx_express(const uint8_t* d, size_t n) noexcept nogil:
    """A received VXLAN datagram ``d`` whose inner frame is not TCP (ICMP, UDP, ARP, ND...):
    the RX thread delivers these first out of a recvmmsg() batch that holds bulk TCP (see
    _rx_drain)."""
    cdef uint16_t et
    if n < VXLAN_HLEN + ETH_HLEN + 40:
        return True
    et = (<uint16_t>d[VXLAN_HLEN + 12] << 8) | d[VXLAN_HLEN + 13]
    if et == 0x0800:
        return d[VXLAN_HLEN + ETH_HLEN + 9] != 6
    if et == 0x86DD:
        return d[VXLAN_HLEN + ETH_HLEN + 6] != 6
    return et != 0x8100 and et != 0x88A8     # a VLAN tag: keep it with whatever it carries

def rx_express(datagram) -> bool:
    """_rx_express for the tests (vxtun.wire.vxlan.rx_express is its Python twin)."""
    cdef const uint8_t[:] d = bytes(datagram) + b"\0"      # never empty
    return _rx_express(&d[0], len(datagram))

cdef void _rx_one(fp_dp* dp, fp_underlay* us, fp_rxctx* c, int i, double now) noexcept nogil:
    """Decide and carry out datagram ``i`` of the last recvmmsg(), or the datagrams UDP GRO
    glued into it."""
    cdef int gso = 0, fam, tclass
    cdef uint8_t tos = 0
    cdef uint16_t sport
    cdef uint32_t tsegs
    cdef size_t n = c.msgs[i].msg_len, off, seg
    cdef uint8_t* d = c.bufs + <size_t>i * RXBUF + RXHEAD
    cdef const uint8_t* addr
    cdef msghdr* mh = &c.msgs[i].msg_hdr
    cdef cmsghdr* cm
    if c.slots[i].addr.sin6_family == AF_INET:
        fam = 4
        addr = <const uint8_t*>&(<sockaddr_in*>&c.slots[i].addr).sin_addr
    else:
        fam = 6
        addr = c.slots[i].addr.sin6_addr.s6_addr
    # sin_port and sin6_port sit at the same offset, in network order
    sport = c.slots[i].addr.sin6_port
    sport = <uint16_t>((sport >> 8) | (sport << 8))
    if mh.msg_controllen:
        cm = CMSG_FIRSTHDR(mh)
        while cm != NULL:
            if cm.cmsg_level == SOL_UDP and cm.cmsg_type == UDP_GRO:
                memcpy(&gso, CMSG_DATA(cm), sizeof(int))
            elif cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_TOS:
                tos = CMSG_DATA(cm)[0]          # one byte (ip_cmsg_recv_tos)
            elif cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_TCLASS:
                memcpy(&tclass, CMSG_DATA(cm), sizeof(int))
                tos = <uint8_t>tclass
            cm = CMSG_NXTHDR(mh, cm)
    if gso > 0 and n > <size_t>gso:
        # UDP GRO glued datagrams of one 4-tuple together: every one but the last is
        # exactly gso bytes; GRO merges only datagrams with the same outer TOS / traffic
        # class (inet_gro_receive, ipv6_gro_receive), so one ``tos`` holds for all
        off = 0
        tsegs = <uint32_t>((n + <size_t>gso - 1) / <size_t>gso)     # one record
        while off < n:
            seg = n - off if n - off < <size_t>gso else <size_t>gso
            _rx_datagram(c, dp, us, d + off, seg, fam, addr, sport, tos, now, tsegs)
            tsegs = 0
            off += seg
    else:
        _rx_datagram(c, dp, us, d, n, fam, addr, sport, tos, now, 1)

cdef void _rx_drain(fp_dp* dp, fp_underlay* us, fp_rxctx* c) noexcept nogil:
    """Read the socket dry, RXBATCH datagrams per recvmmsg(), and deliver each batch in
    arrival order, as the kernel does, unless it holds bulk (a TCP datagram or GRO train
    over RX_BULK bytes): then the datagrams that carry no TCP go first, then the TCP ones,
    each kind in arrival order (vxtun.wire.vxlan.rx_order is the rule).  Under a bulk TCP
    flow the socket holds a standing queue of its 64 KB super-frames (~1 MB measured), and
    a ping's echo or a DNS answer in the same batch would otherwise wait until every one of
    them had been written to the TAP (each costs the stack's TCP receive, run in our
    write()).  Flows never overtake themselves: a multi-queue NIC with RSS reorders across
    flows the same way."""
    cdef int i, r, rounds, nexp
    cdef bint bulk
    cdef msghdr* mh
    cdef double now
    cdef uint8_t late[RXBATCH]
    for rounds in range(16):
        for i in range(RXBATCH):
            c.slots[i].iov.iov_base = c.bufs + <size_t>i * RXBUF + RXHEAD
            c.slots[i].iov.iov_len = RXBUF - RXHEAD
            mh = &c.msgs[i].msg_hdr
            mh.msg_name = &c.slots[i].addr
            mh.msg_namelen = sizeof(sockaddr_in6)
            mh.msg_iov = &c.slots[i].iov
            mh.msg_iovlen = 1
            # always: the outer TOS / traffic class comes as a control message (IP_RECVTOS /
            # IPV6_RECVTCLASS on the socket), with the GRO segment size when UDP_GRO is on
            mh.msg_control = c.slots[i].ctrl
            mh.msg_controllen = CTRLLEN
            mh.msg_flags = 0
        r = recvmmsg(us.rx_fd, c.msgs, RXBATCH, MSG_DONTWAIT, NULL)
        if r <= 0:
            break
        now = fp_now()
        bulk = False
        for i in range(r):
            late[i] = not _rx_express(c.bufs + <size_t>i * RXBUF + RXHEAD, c.msgs[i].msg_len)
            bulk = bulk or (late[i] and c.msgs[i].msg_len > RX_BULK)
        nexp = 0
        for i in range(r):
            if not bulk or not late[i]:
                _rx_one(dp, us, c, i, now)
                nexp += 1
        if nexp < r:
            for i in range(r):
                if late[i]:
                    _rx_one(dp, us, c, i, now)
        if r < RXBATCH:
            break
    _coal_write(c)      # the socket is empty: nothing more will join the pending frame


cdef int _rx_poll(fp_dp* dp, fp_underlay* us, fp_rxctx* c, bint wait) noexcept nogil:
    """Drain one socket holding its rxlock (so delivery stays in order); as _tx_burst."""
    if wait:
        pthread_mutex_lock(&us.rxlock)
    elif pthread_mutex_trylock(&us.rxlock) != 0:
        return 0
    c.ntouched = 0
    _rx_drain(dp, us, c)
    pthread_mutex_unlock(&us.rxlock)
    return c.ntouched


# --- one thread main for both roles ---------------------------------------------------------
#
# Latency: a frame written to a TAP is usually answered within the write() itself (the stack
# runs in our context), and a datagram sent over veth to a kernel peer is answered within the
# sendmsg().  So after delivering, the RX thread tries the TAPs it wrote to once, and after
# sending, the TX thread tries the socket once, instead of waking the other thread for it
# (each wake-up costs several microseconds of round trip).  The locks keep each TAP and each
# socket to one reader at a time; a try never waits.

cdef inline void _epoll_watch(int ep, int fd, void* ptr) noexcept nogil:
    cdef epoll_event ev
    ev.events = EPOLLIN
    ev.data.ptr = ptr
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)

cdef void _on_ready(fp_dp* dp, fp_thread* th, void* ptr, fp_txctx* tc,
                    fp_rxctx* rc) noexcept nogil:
    """One ready fd: a TAP queue (ROLE_TX, queue th.q) or a socket (ROLE_RX); then the other
    direction once."""
    cdef fp_vtep* touched[TOUCHED_MAX]
    cdef uint32_t masks[TOUCHED_MAX]
    cdef fp_vtep* v
    cdef int k, m, q
    if th.role == ROLE_TX:
        v = <fp_vtep*>ptr
        if _tx_burst(dp, v, tc, True, th.q) and dp.poll_other:
            _rx_poll(dp, v.us, rc, False)
        return
    m = _rx_poll(dp, <fp_underlay*>ptr, rc, True)
    if dp.poll_other:
        for k in range(m):          # _tx_burst may drain (and reset) rc: copy the list first
            touched[k] = rc.touched[k]
            masks[k] = rc.tqmask[k]
        for k in range(m):          # the queues written on: where the answers come back
            for q in range(touched[k].nq):
                if masks[k] & (1u << q):
                    _tx_burst(dp, touched[k], tc, False, q)

cdef inline void _tap_check(int ep, fp_dp* dp, fp_vtep* v, uint32_t events, int q) noexcept nogil:
    """After a TX thread served an event of queue ``q`` of ``v``'s TAP: stop watching a queue
    that failed.  EPOLLERR/EPOLLHUP whose read did not fail (EOF) counts as failed too, or
    epoll would report it again at once, forever.  Queue 0 tells Python (_tap_gone); the TAP
    is then going as a whole (tun_detach_all() detaches every queue)."""
    cdef bint gone
    cdef pthread_mutex_t* lock = &v.qlock[q]
    if not (events & (EPOLLERR | EPOLLHUP)) and not (v.tap_gone if q == 0 else v.qgone[q]):
        return
    pthread_mutex_lock(lock)
    if events & (EPOLLERR | EPOLLHUP):
        if q == 0:
            _tap_gone(&dp.q, v, 0)
        else:
            v.qgone[q] = 1
    gone = v.tap_gone if q == 0 else v.qgone[q]
    pthread_mutex_unlock(lock)
    if gone:
        epoll_ctl(ep, EPOLL_CTL_DEL, v.qfd[q], NULL)

# Busy polling (VXTUN_BUSY_POLL_US, microseconds; unset or 0: off).  Most of the round trip
# vxtun adds over the kernel's vxlan is waking a thread asleep in epoll_wait() on an idle CPU;
# the kernel's path never sleeps (vxlan_rcv runs in the softirq that received the datagram).
# With a budget, a thread that has just served traffic polls its fds (epoll_wait with timeout
# 0) for up to the budget before it sleeps.  The budget adapts:
#
# * a spin that catches traffic keeps the full budget (the flow is dense: stay awake);
# * a spin that catches nothing halves it, down to nothing (the flow went quiet);
# * after a sleep, traffic that came within the full budget of the last work restores it
#   (a spin would have caught it).
#
# So a thread at rest never spins (CPU at rest stays zero), and one burst costs at most twice
# the budget.  The spin yields the CPU between polls: measured on 2 cores shared with other
# work, a spin that did not yield raised the p50 ping from ~0.1 ms to 1.6-2.9 ms.  It costs CPU when traffic comes steadily at gaps just under the budget, hence a
# knob and not a default: the CPU during and after ping is in the benchmark (bench/run.py).
# SO_BUSY_POLL would not help here: it polls a NAPI context, and neither a TAP nor a veth
# without GRO/XDP has one (sk_busy_loop needs a napi_id on the socket).

cdef extern from "<sched.h>" nogil:
    int sched_yield()


cdef double _busy_poll_budget() noexcept nogil:
    """VXTUN_BUSY_POLL_US in seconds, bounded to 10 ms; 0 when unset, empty or not positive."""
    cdef const char* s = getenv("VXTUN_BUSY_POLL_US")
    cdef int us
    if s == NULL or s[0] == 0:
        return 0.0
    us = atoi(s)
    if us <= 0:
        return 0.0
    return (us if us < 10000 else 10000) * 1e-6

cdef int _spin_wait(int ep, epoll_event* evs, double* budget, double full) noexcept nogil:
    """Poll ``ep`` for up to ``budget`` seconds; adapt the budget (see above).  Returns what
    epoll_wait(0) returned last: > 0 events, 0 nothing came in time, < 0 an error."""
    cdef double until = fp_now() + budget[0]
    cdef int n
    while True:
        n = epoll_wait(ep, evs, 16, 0)
        if n != 0:
            break
        if fp_now() >= until:
            break
        # Let whatever else wants this CPU run first (yield_task_fair): on an idle CPU this
        # returns at once, on a busy one the spin must not delay the very work (the peer, the
        # stack's softirq, the application) that the next packet comes from.
        sched_yield()
    if n > 0:
        budget[0] = full
    elif n == 0:
        budget[0] = budget[0] * 0.5 if budget[0] * 0.5 >= 1e-6 else 0.0
    return n

cdef void* fp_thread_main(void* arg) noexcept nogil:
    """A TX thread (its queue of every TAP) or the RX thread (th.role): the TAP queues or the
    sockets in one epoll set, with the stop eventfd (reported with a NULL pointer);
    busy-polls after traffic when asked to."""
    cdef fp_thread* th = <fp_thread*>arg
    cdef fp_dp* dp = <fp_dp*>th.dp
    cdef fp_txctx tc
    cdef fp_rxctx rc
    cdef sigset_t all
    cdef epoll_event evs[16]
    cdef int ep, i, n
    cdef bint stop = False
    cdef double full = _busy_poll_budget(), budget = 0.0, last = 0.0
    sigfillset(&all)
    pthread_sigmask(SIG_BLOCK, &all, NULL)      # signals are for the Python thread
    if fp_txctx_init(&tc, th.ctr) < 0:
        return NULL
    if _rxctx_init(&rc, th.ctr) < 0:
        fp_txctx_free(&tc)
        return NULL
    ep = epoll_create1(EPOLL_CLOEXEC)
    _epoll_watch(ep, dp.stop_fd, NULL)
    if th.role == ROLE_TX:
        for i in range(dp.nvteps):
            if th.q >= dp.vteps[i].nq or dp.vteps[i].tap_gone or dp.vteps[i].qgone[th.q]:
                continue                        # none, or failed (Python is removing it)
            _epoll_watch(ep, dp.vteps[i].qfd[th.q], dp.vteps[i])
    else:
        for i in range(dp.nuls):
            _epoll_watch(ep, dp.uls[i].rx_fd, dp.uls[i])
    while not stop:
        n = _spin_wait(ep, evs, &budget, full) if budget > 0.0 else 0
        if n == 0:
            n = epoll_wait(ep, evs, 16, -1)
            if full > 0.0 and n > 0 and fp_now() - last <= full:
                budget = full
        if n < 0:
            if errno == EINTR:
                continue
            break
        for i in range(n):
            if evs[i].data.ptr == NULL:
                stop = True
                break
            _on_ready(dp, th, evs[i].data.ptr, &tc, &rc)
            if th.role == ROLE_TX:
                _tap_check(ep, dp, <fp_vtep*>evs[i].data.ptr, evs[i].events, th.q)
        if full > 0.0:
            last = fp_now()
    close(ep)
    _rxctx_free(&rc)
    fp_txctx_free(&tc)
    return NULL


# --- start and stop -------------------------------------------------------------------------

cdef inline void _dp_signal_stop(fp_dp* dp) noexcept nogil:
    cdef uint64_t one = 1
    write(dp.stop_fd, &one, 8)

cdef inline void _dp_clear_stop(fp_dp* dp) noexcept nogil:
    cdef uint64_t v
    read(dp.stop_fd, &v, 8)

cdef int dp_start(fp_dp* dp) noexcept nogil:
    """Start the RX thread and a TX thread per TAP queue (as many as the VTEP with the most
    queues has; th[0] reads queue 0, th[1] is the RX thread, th[1 + q] reads queue q)."""
    cdef int i, k, nq = 1
    if dp.running:
        return 0
    for i in range(dp.nvteps):
        if dp.vteps[i].nq > nq:
            nq = dp.vteps[i].nq
    for i in range(nq + 1):
        dp.th[i].dp = dp
        dp.th[i].role = ROLE_RX if i == ROLE_RX else ROLE_TX
        dp.th[i].q = 0 if i <= ROLE_RX else i - 1
        dp.th[i].ctr = i
    for i in range(nq + 1):
        if pthread_create(&dp.th[i].tid, NULL, fp_thread_main, &dp.th[i]) != 0:
            _dp_signal_stop(dp)
            for k in range(i):
                pthread_join(dp.th[k].tid, NULL)
            _dp_clear_stop(dp)
            return -1
    dp.nthreads = nq + 1
    dp.running = 1
    return 0

cdef void dp_stop(fp_dp* dp) noexcept nogil:
    cdef int i
    if not dp.running:
        return
    _dp_signal_stop(dp)         # level-triggered: every thread sees it
    for i in range(dp.nthreads):
        pthread_join(dp.th[i].tid, NULL)
    _dp_clear_stop(dp)
    dp.running = 0
