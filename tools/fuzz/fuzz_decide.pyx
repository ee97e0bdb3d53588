# cython: language_level=3, boundscheck=False, wraparound=False
"""The fuzz targets' C side: fp_rx_decide / fp_tx_decide (vxtun/fastpath/decide.pyx), and
fp_proxy_decide (vxtun/fastpath/neigh.pyx, ``proxy_exact``), called on buffers of exactly the
input's size, so that AddressSanitizer sees a read one byte past a datagram or a frame
(``Decisions`` in decide.pyx copies into a bytearray, which keeps a spare byte, and pymalloc
hides small overruns).

After every decision the action is checked against what the threads (threads.pyx) will do
with it: a delivered frame lies inside the datagram, segments lie inside the frame or the
segment-header buffer and are all read (so a wild pointer is a report, not a silent pass),
and at most ``remcap`` remotes were copied.  A broken rule raises AssertionError, which
atheris reports as a crash with the input.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from vxtun.fastpath.decide cimport (
    A_DELIVER, A_DROP, A_PUNT, A_SEND, fp_demux, fp_demux_build, fp_rx_action, fp_rx_decide,
    fp_stats, fp_tx_action, fp_tx_action_free, fp_tx_action_init, fp_tx_decide, fp_vstate)
from vxtun.fastpath.fdb cimport CFdb
from vxtun.fastpath.neigh cimport (
    N_STALE, N_UNASKED, P_DROP, P_MISS, P_REPLY, REPLY_MAX, CNeigh, fp_proxy_decide)
from vxtun.fastpath.wire cimport MAXSEG, NDROPS, SEGH_MAX, VXLAN_HLEN


cdef uint64_t _touch(const uint8_t* p, size_t n) noexcept nogil:
    """Read every byte, so that ASan checks the whole range (the sum is kept in
    Target.checksum, so that the reads cannot be optimised away)."""
    cdef size_t i
    cdef uint64_t s = 0
    for i in range(n):
        s += p[i]
    return s


cdef class Target:
    """Up to 8 VTEPs on one socket (held in the object itself), each over a CFdb the Python
    side filled."""
    cdef fp_demux d
    cdef fp_vstate vs[8]
    cdef fp_vstate* vp[8]     # what fp_demux_build takes
    cdef int n
    cdef fp_tx_action ta
    cdef list fdbs
    cdef public uint64_t checksum

    def __cinit__(self):
        # Cython zeroes a new object's C fields: the demux and the VTEPs start empty
        self.fdbs = []
        if fp_tx_action_init(&self.ta) < 0:
            raise MemoryError()

    def __dealloc__(self):
        free(self.d.vnis)
        fp_tx_action_free(&self.ta)

    def add_vtep(self, uint32_t vni, bytes mac, int mtu, CFdb fdb not None, uint32_t sport_lo,
                 uint32_t sport_hi, bint proxy) -> int:
        cdef fp_vstate* v
        if self.n == 8 or len(mac) != 6:
            raise ValueError("at most 8 VTEPs, 6-byte MACs")
        v = &self.vs[self.n]
        self.vp[self.n] = v
        v.id = self.n + 1
        v.vni = vni
        v.mtu = mtu
        memcpy(v.mac, <const char*>mac, 6)
        v.sport_lo = sport_lo
        v.sport_hi = sport_hi
        v.dstport = 4789
        v.proxy = proxy
        v.fdb = fdb.t
        self.n += 1
        self.fdbs.append(fdb)
        if fp_demux_build(&self.d, self.vp, self.n) < 0:
            raise MemoryError()
        return self.n - 1

    def rx(self, bytes data, int family, bytes addr, int tos, double now, uint32_t gso) -> int:
        """One read of the RX thread: a datagram, or a UDP GRO train cut every ``gso`` bytes
        as _rx_drain cuts it.  Returns how many segments were delivered."""
        cdef size_t n = len(data), off = 0, seg
        cdef int delivered = 0
        cdef uint8_t a16[16]
        memset(a16, 0, 16)
        memcpy(a16, <const char*>addr, min(len(addr), 16))
        if gso == 0 or n <= gso:
            gso = <uint32_t>n
        while True:
            seg = n - off if n - off < gso else gso
            delivered += self._rx_one(<const uint8_t*>(<const char*>data) + off, seg, family,
                                      a16, <uint8_t>tos, now)
            off += seg
            if off >= n:
                break
        return delivered

    cdef int _rx_one(self, const uint8_t* src, size_t n, int family, const uint8_t* addr,
                     uint8_t tos, double now) except -1:
        cdef uint8_t* buf = <uint8_t*>malloc(n if n else 1)
        cdef fp_rx_action a
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, src, n)
        memset(&a, 0, sizeof(a))
        try:
            fp_rx_decide(&self.d, buf, n, family, addr, tos, now, 1, &a)
            assert a.kind == A_DROP or a.kind == A_DELIVER, a.kind
            if a.kind == A_DROP:
                assert 0 <= a.reason < NDROPS, a.reason
                return 0
            assert a.v != NULL
            assert a.frame == buf + VXLAN_HLEN and a.len == n - VXLAN_HLEN, (a.len, n)
            self.checksum += _touch(a.frame, a.len)
            return 1
        finally:
            free(buf)

    def tx(self, int vid, bytes data, double now) -> int:
        """One read of VTEP ``vid``'s TAP (vnet header + frame or TSO super-frame): the kind of
        action taken."""
        cdef size_t n = len(data)
        cdef uint8_t* buf
        cdef fp_tx_action* a = &self.ta
        cdef int i
        cdef const uint8_t* h
        if vid < 0 or vid >= self.n:
            raise ValueError("no such VTEP")
        buf = <uint8_t*>malloc(n if n else 1)
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, <const char*>data, n)
        try:
            fp_tx_decide(&self.vs[vid], buf, n, now, 0, a)
            assert a.kind in (A_DROP, A_SEND, A_PUNT), a.kind
            if a.kind == A_DROP:
                assert 0 <= a.reason < NDROPS, a.reason
                return a.kind
            assert 1 <= a.nseg <= MAXSEG, a.nseg
            for i in range(a.nseg):
                h = a.segs[i].h
                if not (buf <= h and h + a.segs[i].hlen <= buf + n):
                    assert (a.segh <= h and
                            h + a.segs[i].hlen <= a.segh + <size_t>MAXSEG * SEGH_MAX), i
                self.checksum += _touch(h, a.segs[i].hlen)
                if a.segs[i].plen:
                    assert (buf <= a.segs[i].p and
                            a.segs[i].p + a.segs[i].plen <= buf + n), i
                    self.checksum += _touch(a.segs[i].p, a.segs[i].plen)
            if a.kind == A_SEND:
                assert 0 <= a.nr <= <int>a.remcap, (a.nr, a.remcap)
                self.checksum += _touch(<const uint8_t*>a.rem, a.nr * sizeof(a.rem[0]))
                assert self.vs[vid].sport_lo <= a.sport < self.vs[vid].sport_hi, a.sport
            return a.kind
        finally:
            free(buf)


# --- the proxy (vxtun/fastpath/neigh.pyx) --------------------------------------------------------

def proxy_exact(CNeigh neigh not None, CFdb fdb not None, bint l3miss, bytes frame, int mtu,
                double now) -> tuple:
    """fp_proxy_decide on a copy of ``frame`` of exactly its size (Decisions.tx copies into a
    bytearray, whose spare byte would hide a read one past the frame): ``(P_*, answer,
    nstate, nmac)``.  The miss limiter is put back as it was, so that this look leaves the
    table exactly as the TX thread's decision that follows will find it.

    Checked: the result is one of P_DROP / P_REPLY / P_MISS, an answer fits REPLY_MAX and
    every byte of it was written (it is compared with the answer Decisions.tx builds)."""
    cdef size_t n = len(frame), rlen = 0
    cdef uint8_t* buf = <uint8_t*>malloc(n if n else 1)
    cdef uint8_t* saved = <uint8_t*>malloc(sizeof(neigh.t.miss))
    cdef uint8_t out[REPLY_MAX]
    cdef uint8_t nmac[6]
    cdef int r, nstate = 0
    if buf == NULL or saved == NULL:
        free(buf)
        free(saved)
        raise MemoryError()
    memcpy(buf, <const char*>frame, n)
    memcpy(saved, neigh.t.miss, sizeof(neigh.t.miss))
    memset(nmac, 0, 6)
    try:
        r = fp_proxy_decide(neigh.t, fdb.t, l3miss, buf, n, mtu, now, out, &rlen, &nstate, nmac)
        assert r in (P_DROP, P_REPLY, P_MISS), r
        assert N_UNASKED <= nstate <= N_STALE, nstate
        if r != P_REPLY:
            return r, b"", nstate, nmac[:6]
        assert 0 < rlen <= REPLY_MAX, rlen
        return r, out[:rlen], nstate, nmac[:6]
    finally:
        memcpy(neigh.t.miss, saved, sizeof(neigh.t.miss))
        free(saved)
        free(buf)
