# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""``Dataplane``: the Python face of the two threads (vxtun/fastpath/threads.pyx).

Python adds underlay sockets and VTEPs, reads counters and drains the punt queue.  Attaching or
detaching a VTEP or a socket stops both threads, changes the tables and restarts them, so the
threads never see a table change under them.
"""
from libc.errno cimport errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.unistd cimport close, read, write

from vxtun.fastpath.decide cimport (
    NSTATS, TAPQ_MAX, fp_demux_build, fp_set_local, fp_stats, fp_stats_json, fp_vstate)
from vxtun.fastpath.fdb cimport CFdb
from vxtun.fastpath.neigh cimport CNeigh
from vxtun.fastpath.libc cimport (
    EFD_CLOEXEC, EFD_NONBLOCK, IP_MTU_DISCOVER, IP_PMTUDISC_DONT, IP_TTL, IPPROTO_IP,
    IPPROTO_IPV6, IPV6_UNICAST_HOPS, SOL_SOCKET, eventfd, getsockopt, pthread_mutex_destroy, pthread_mutex_init, pthread_mutex_lock,
    pthread_mutex_unlock, socklen_t)
from vxtun.fastpath.send cimport SO_NO_CHECK, fp_gso_close_all, fp_probe_gso
from vxtun.fastpath.state cimport QLEN, fp_dp, fp_punt, fp_underlay, fp_vtep
from vxtun.fastpath.threads cimport dp_start, dp_stop
from vxtun.fastpath.trace cimport tr_enable, tr_free, tr_init, tr_pop


cdef extern from "<arpa/inet.h>" nogil:
    uint32_t htonl(uint32_t v)


cdef void* _new_member(void*** arr, int n, size_t size) except NULL:
    """A zeroed struct of ``size`` bytes, and room for a pointer to it after the ``n`` of
    ``arr[0]`` (grown in place); the caller stores it there once the threads are paused."""
    cdef void* p = calloc(1, size)
    cdef void** grown
    if p == NULL:
        raise MemoryError()
    grown = <void**>realloc(arr[0], (n + 1) * sizeof(void*))
    if grown == NULL:
        free(p)
        raise MemoryError()
    arr[0] = grown
    return p


cdef int _drop_member(void** arr, int n, void* p) noexcept nogil:
    """Take ``p`` out of the ``n`` pointers of ``arr``, keeping the order; the new count."""
    cdef int i, k = 0
    for i in range(n):
        if arr[i] != p:
            arr[k] = arr[i]
            k += 1
    return k


cdef object _stats_json(const fp_stats* st):
    """The NSTATS counter blocks of a VTEP or a socket (one per thread), added up."""
    cdef fp_stats rest = st[1]
    cdef const uint64_t* a
    cdef uint64_t* into = <uint64_t*>&rest
    cdef size_t i, w = sizeof(fp_stats) // sizeof(uint64_t)
    cdef int k
    for k in range(2, NSTATS):
        a = <const uint64_t*>&st[k]
        for i in range(w):
            into[i] += a[i]
    return fp_stats_json(&st[0], &rest)


cdef class Dataplane:
    """The two per-direction threads and the tables they run over.

    Python adds underlay sockets and VTEPs (each change stops the threads, edits the tables and
    restarts them), reads counters, and drains the punt queue when ``fileno()`` is readable.
    The file descriptors stay owned by the caller; they must outlive their registration.
    """
    cdef fp_dp dp
    cdef dict _fdbs
    cdef uint32_t _next_id

    def __cinit__(self, bint poll_other=True):
        memset(&self.dp, 0, sizeof(fp_dp))
        pthread_mutex_init(&self.dp.q.lock, NULL)
        self.dp.q.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.dp.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.dp.q.efd < 0 or self.dp.stop_fd < 0 or tr_init(&self.dp.tr) < 0:
            raise OSError(errno, "eventfd")
        self._fdbs = {}
        self._next_id = 1
        self.dp.poll_other = poll_other

    def __dealloc__(self):
        cdef int i
        cdef uint32_t k
        with nogil:
            dp_stop(&self.dp)
        for i in range(self.dp.nvteps):
            fp_gso_close_all(self.dp.vteps[i])
            free(self.dp.vteps[i])
        free(self.dp.vteps)
        for i in range(self.dp.nuls):
            free(self.dp.uls[i].dm.vnis)
            free(self.dp.uls[i])
        free(self.dp.uls)
        for k in range(self.dp.q.count):
            free(self.dp.q.slots[(self.dp.q.head + k) % QLEN].data)
        if self.dp.q.efd >= 0:
            close(self.dp.q.efd)
        if self.dp.stop_fd >= 0:
            close(self.dp.stop_fd)
        pthread_mutex_destroy(&self.dp.q.lock)
        tr_free(&self.dp.tr)

    def fileno(self) -> int:
        """Readable when punted records wait (an eventfd)."""
        return self.dp.q.efd

    @property
    def poll_other(self) -> bool:
        """Each thread tries the other direction once after its own work (lower latency)."""
        return bool(self.dp.poll_other)

    @property
    def running(self) -> bool:
        return bool(self.dp.running)

    def start(self) -> None:
        cdef int r
        with nogil:
            r = dp_start(&self.dp)
        if r < 0:
            raise OSError(errno, "cannot start the fast-path threads")

    def stop(self) -> None:
        with nogil:
            dp_stop(&self.dp)

    cdef bint _pause(self):
        cdef bint was = self.dp.running
        with nogil:
            dp_stop(&self.dp)
        return was

    cdef void _resume(self, bint was) except *:
        if was:
            self.start()

    cdef fp_underlay* _underlay(self, uint32_t uid) except NULL:
        cdef int i
        for i in range(self.dp.nuls):
            if self.dp.uls[i].id == uid:
                return self.dp.uls[i]
        raise KeyError(f"no underlay {uid}")

    cdef fp_vtep* _vtep(self, uint32_t vid) except NULL:
        cdef int i
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].s.id == vid:
                return self.dp.vteps[i]
        raise KeyError(f"no VTEP {vid}")

    cdef int _rebuild_vnis(self, fp_underlay* us) except -1:
        """The VNI table of one socket (fp_demux_build over its VTEPs)."""
        cdef fp_vstate** vs = <fp_vstate**>malloc((self.dp.nvteps + 1) * sizeof(void*))
        cdef int i, n = 0, r
        if vs == NULL:
            raise MemoryError()
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us:
                vs[n] = &self.dp.vteps[i].s
                n += 1
        r = fp_demux_build(&us.dm, vs, n)
        free(vs)
        if r < 0:
            raise MemoryError()
        return 0

    def add_underlay(self, int rx_fd, int tx_fd, int family, bint gro=False) -> int:
        """Serve a receive socket (and its default send socket); returns its id."""
        cdef fp_underlay* us = <fp_underlay*>_new_member(<void***>&self.dp.uls, self.dp.nuls,
                                                         sizeof(fp_underlay))
        us.id = self._next_id
        self._next_id += 1
        pthread_mutex_init(&us.rxlock, NULL)
        us.rx_fd = rx_fd
        us.tx_fd = tx_fd
        us.family = family
        us.gro = gro
        was = self._pause()
        self.dp.uls[self.dp.nuls] = us
        self.dp.nuls += 1
        self._rebuild_vnis(us)
        self._resume(was)
        return us.id

    def remove_underlay(self, uint32_t uid) -> None:
        cdef fp_underlay* us = self._underlay(uid)
        cdef int i
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us:
                raise ValueError("detach the VTEPs of an underlay before the underlay")
        was = self._pause()
        self.dp.nuls = _drop_member(<void**>self.dp.uls, self.dp.nuls, us)
        free(us.dm.vnis)
        pthread_mutex_destroy(&us.rxlock)
        free(us)
        self._resume(was)

    def add_vtep(self, uint32_t uid, uint32_t vni, int tap_fd, int tx_fd, mac, int mtu,
                 uint32_t sport_lo, uint32_t sport_hi, uint32_t dstport, bint proxy,
                 CFdb fdb not None, bint tap_tso=False, bint udp_gso=True,
                 bint coalesce=True, int tos=0, bint ttl_inherit=False,
                 uint32_t flowlabel=0, CNeigh neigh=None, bint l3miss=False,
                 bint df_inherit=False, bint label_inherit=False) -> int:
        """Serve one VTEP on underlay ``uid``; returns its id (used in punted records).
        With ``proxy``, the TX thread answers from ``neigh`` (vxtun/fastpath/neigh.pyx)."""
        cdef fp_underlay* us = self._underlay(uid)
        cdef fp_vtep* v
        cdef int i
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        if not sport_lo < sport_hi <= 65536:
            raise ValueError("bad source port range")
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us and self.dp.vteps[i].s.vni == vni:
                raise ValueError(f"VNI {vni} is served twice on this socket")
        v = <fp_vtep*>_new_member(<void***>&self.dp.vteps, self.dp.nvteps, sizeof(fp_vtep))
        v.s.id = self._next_id
        self._next_id += 1
        pthread_mutex_init(&v.txlock, NULL)
        v.s.vni = vni
        v.s.mtu = mtu
        mb = bytes(mac)
        memcpy(v.s.mac, <const char*>mb, 6)
        v.s.sport_lo = sport_lo
        v.s.sport_hi = sport_hi
        v.s.dstport = <uint16_t>dstport
        v.s.tos = tos & 0xFF
        v.s.ttl_inherit = ttl_inherit
        v.s.df_inherit = df_inherit
        v.s.label_inherit = label_inherit
        v.flowinfo = htonl(flowlabel)
        v.s.proxy = proxy
        v.s.fdb = fdb.t
        v.s.neigh = neigh.t if neigh is not None else NULL
        v.s.l3miss = l3miss
        v.tap_fd = tap_fd
        v.nq = 1
        v.qfd[0] = tap_fd
        pthread_mutex_init(&v.qlock[0], NULL)
        v.tx_fd = tx_fd
        v.tnl_fd = -1
        v.tap_tso = tap_tso
        v.tap_coalesce = coalesce
        v.us = us
        fp_probe_gso(v, udp_gso)
        was = self._pause()
        self.dp.vteps[self.dp.nvteps] = v
        self.dp.nvteps += 1
        try:
            self._rebuild_vnis(us)
        finally:
            self._resume(was)
        self._fdbs[v.s.id] = (fdb, neigh)    # kept alive while the threads point at them
        return v.s.id

    def add_tap_queue(self, uint32_t vid, int fd) -> int:
        """Serve one more queue of the VTEP's multi-queue TAP (vxtun/io/tap.py
        ``open_tap_queues``; queue 0 is add_vtep's ``tap_fd``) with a TX thread of its own;
        returns the queue's number."""
        cdef fp_vtep* v = self._vtep(vid)
        cdef int q = v.nq
        if q >= TAPQ_MAX:
            raise ValueError(f"a TAP has at most {TAPQ_MAX} queues here")
        was = self._pause()
        pthread_mutex_init(&v.qlock[q], NULL)
        v.qfd[q] = fd
        v.qgone[q] = 0
        v.qread[q] = 0
        v.nq = q + 1
        self._resume(was)
        return q

    def tap_queue_reads(self, uint32_t vid) -> list:
        """Frames read from each queue of the VTEP's TAP so far, queue 0 first."""
        cdef fp_vtep* v = self._vtep(vid)
        return [v.qread[q] for q in range(v.nq)]

    def set_mac(self, uint32_t vid, mac) -> None:
        """The VTEP's own MAC changed (``ip link set NAME address ...``): the own_mac check of
        the RX thread follows it, as vxlan_set_mac compares with the live dev_addr."""
        cdef fp_vtep* v = self._vtep(vid)
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        mb = bytes(mac)
        was = self._pause()
        memcpy(v.s.mac, <const char*>mb, 6)
        self._resume(was)

    def set_local(self, uint32_t vid, bint localbypass, addrs) -> None:
        """``localbypass`` and the namespace's addresses (packed, 4 or 16 bytes): the TX thread
        punts a frame for any of them, or for 127.0.0.0/8 or ::1 (vxtun.core.vtep.Bypass)."""
        cdef fp_vtep* v = self._vtep(vid)
        was = self._pause()
        try:
            fp_set_local(&v.s, localbypass, addrs)
        finally:
            self._resume(was)

    def remove_vtep(self, uint32_t vid) -> dict:
        """Stop serving a VTEP; returns its final counters."""
        cdef fp_vtep* v = self._vtep(vid)
        cdef int q
        was = self._pause()
        self.dp.nvteps = _drop_member(<void**>self.dp.vteps, self.dp.nvteps, v)
        try:
            self._rebuild_vnis(v.us)
        finally:
            self._resume(was)
        out = _stats_json(v.s.st)
        fp_gso_close_all(v)
        pthread_mutex_destroy(&v.txlock)
        for q in range(v.nq):
            pthread_mutex_destroy(&v.qlock[q])
        free(v.s.local)
        free(v)
        self._fdbs.pop(vid, None)
        return out

    def set_mcast_if(self, uint32_t vid, bytes mreqn not None) -> None:
        """The struct ip_mreqn tx_fd has as IP_MULTICAST_IF: the source of a datagram to the
        group (for its UDP checksum) is then the one the kernel picks on that device."""
        cdef fp_vtep* v = self._vtep(vid)
        if len(mreqn) != 12:
            raise ValueError("an ip_mreqn is 12 bytes")
        memcpy(v.mcast_if, <const char*>mreqn, 12)
        v.has_mcast_if = 1

    def set_tnl_egress(self, uint32_t vid, int fd, mac) -> bool:
        """Send this VTEP's TSO super-frames for one unicast remote as UDP-tunnel GSO
        packets written to ``fd``, the egress TAP of vxtun/io/gso.py whose MAC is ``mac``
        (fd -1: stop).  Only with TAP TSO; the outer TTL and DF follow tx_fd's IP_TTL and
        IP_MTU_DISCOVER (IPv6: the hop limit its IPV6_UNICAST_HOPS, and only with the UDP
        checksum on).  False when this VTEP cannot use it."""
        cdef fp_vtep* v = self._vtep(vid)
        cdef int val = 0
        cdef socklen_t ln = sizeof(int)
        if fd < 0:
            was = self._pause()
            v.tnl_fd = -1
            self._resume(was)
            return True
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        if not v.tap_tso:
            return False
        if v.us.family == 6:
            # IPv6 wants the UDP checksum: udp6zerocsumtx (SO_NO_CHECK on tx_fd) stays on
            # today's path; no DF (tx_fd says IPV6_PMTUDISC_DONT)
            if getsockopt(v.tx_fd, SOL_SOCKET, SO_NO_CHECK, &val, &ln) != 0 or val:
                return False
            ln = sizeof(int)
            if getsockopt(v.tx_fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &val, &ln) != 0 \
                    or not 0 < val < 255:
                return False
        elif getsockopt(v.tx_fd, IPPROTO_IP, IP_TTL, &val, &ln) != 0 or not 0 < val < 255:
            return False
        mb = bytes(mac)
        was = self._pause()
        v.tnl_ttl = <uint8_t>val
        ln = sizeof(int)
        v.tnl_df = v.us.family == 4 \
            and getsockopt(v.tx_fd, IPPROTO_IP, IP_MTU_DISCOVER, &val, &ln) == 0 \
            and val != IP_PMTUDISC_DONT
        memcpy(v.tnl_mac, <const char*>mb, 6)
        v.tnl_fd = fd
        self._resume(was)
        return True

    def tnl_egress_stats(self, uint32_t vid) -> tuple:
        """(super-frames written to the egress TAP, writes it refused)."""
        cdef fp_vtep* v = self._vtep(vid)
        return v.tnl_sent, v.tnl_errors

    def vtep_features(self, uint32_t vid) -> list:
        cdef fp_vtep* v = self._vtep(vid)
        return ((["udp_gso"] if v.gso_on else []) + (["tap_coalesce"] if v.tap_coalesce else [])
                + (["udp_tunnel_gso"] if v.tnl_fd >= 0 else []))

    def vtep_stats(self, uint32_t vid) -> dict:
        cdef fp_vtep* v = self._vtep(vid)
        return _stats_json(v.s.st)

    def underlay_stats(self, uint32_t uid) -> dict:
        cdef fp_underlay* us = self._underlay(uid)
        return _stats_json(us.dm.st)

    @property
    def punts_lost(self) -> int:
        return self.dp.q.lost

    # --- vxtun trace (vxtun/fastpath/trace.pyx) ---------------------------------------------

    def trace(self, bint on) -> None:
        """Record every decision of the threads in the trace ring, or stop."""
        if tr_enable(&self.dp.tr, on) < 0:
            raise MemoryError()

    def trace_fileno(self) -> int:
        """Readable when trace records wait (an eventfd)."""
        return self.dp.tr.efd

    def trace_pop(self, int maximum=256) -> list:
        """Trace records, oldest first, as vxtun/trace/records.py ``from_ring`` takes them."""
        return tr_pop(&self.dp.tr, maximum)

    @property
    def trace_lost(self) -> int:
        """Records dropped because the ring was full (the reader was too slow)."""
        return self.dp.tr.lost

    def pop(self, int maximum=256) -> list:
        """Punted records, oldest first: ``(kind, vtep_id, bytes)``; kind in PUNT_KINDS (for
        ``tap_gone`` the bytes are the read's errno, an int32 in native order, 0 for EPOLLHUP)."""
        cdef uint64_t v
        cdef fp_punt* got = <fp_punt*>malloc(maximum * sizeof(fp_punt))
        cdef int k = 0, i
        cdef bint more
        cdef uint64_t one = 1
        if got == NULL:
            raise MemoryError()
        read(self.dp.q.efd, &v, 8)
        with nogil:
            pthread_mutex_lock(&self.dp.q.lock)
            while k < maximum and self.dp.q.count:
                got[k] = self.dp.q.slots[self.dp.q.head]
                self.dp.q.head = (self.dp.q.head + 1) % QLEN
                self.dp.q.count -= 1
                k += 1
            more = self.dp.q.count > 0
            pthread_mutex_unlock(&self.dp.q.lock)
        if more:
            write(self.dp.q.efd, &one, 8)     # come back for the rest
        try:
            return [(got[i].kind, got[i].vid, got[i].data[:got[i].len]) for i in range(k)]
        finally:
            for i in range(k):
                free(got[i].data)
            free(got)
