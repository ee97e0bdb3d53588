# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The trace ring: fixed-size records of the threads' decisions, for ``vxtun trace``.

Each record (``fp_trec``, trace.pxd) holds what the decision already produced (the action
struct of vxtun/fastpath/decide.pyx: the action, the drop reason, the learn outcome, the
remotes, the source port and TOS, the TSO segments) plus what the record needs besides: the
time, the outer addresses, the first ``TR_HEAD`` bytes of the inner frame (for the summary) and
its length.  Formatting is Python's, off the hot path: ``tr_pop`` hands the raw facts to
vxtun/trace/records.py ``from_ring``, which builds the very record the pure core's tracer
builds (tests/unit/test_trace_ring.py holds the two equal).

One record per read: a TSO super-frame or a UDP GRO train is one record whose ``segments``
says how many segments it held.  Two writers (the threads) and one reader share one mutex,
taken only while tracing; a full ring drops the record and counts it in ``lost``.
"""
from libc.stdint cimport int8_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset
from posix.unistd cimport close, read, write

from vxtun.fastpath.decide cimport (
    A_DELIVER, A_PUNT, A_REPLY, A_SEND, Decisions, fp_rx_action, fp_rx_decide, fp_tx_action,
    fp_tx_decide, fp_vstate)
from vxtun.fastpath.fdb cimport fp_ip_str, fp_parse_ip
from vxtun.fastpath.libc cimport (
    EFD_CLOEXEC, EFD_NONBLOCK, eventfd, pthread_mutex_destroy, pthread_mutex_init,
    pthread_mutex_lock, pthread_mutex_unlock)
from vxtun.fastpath.wire cimport VNET_HDR_LEN, VXLAN_HLEN

TRACE_HEAD = TR_HEAD
TRACE_CAP = TR_CAP


cdef int tr_init(fp_tring* t) noexcept nogil:
    memset(t, 0, sizeof(fp_tring))
    pthread_mutex_init(&t.lock, NULL)
    t.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
    return -1 if t.efd < 0 else 0

cdef void tr_free(fp_tring* t) noexcept nogil:
    if t.efd >= 0:
        close(t.efd)
    t.efd = -1
    free(t.recs)
    t.recs = NULL
    pthread_mutex_destroy(&t.lock)

cdef int tr_enable(fp_tring* t, bint on) noexcept nogil:
    """Start or stop recording; records already in the ring stay for the reader."""
    pthread_mutex_lock(&t.lock)
    if on and t.recs == NULL:
        t.recs = <fp_trec*>calloc(TR_CAP, sizeof(fp_trec))
    if t.recs == NULL:
        pthread_mutex_unlock(&t.lock)
        return -1
    t.on = on
    pthread_mutex_unlock(&t.lock)
    return 0

cdef inline fp_trec* _claim(fp_tring* t) noexcept nogil:
    """A slot to fill, with t.lock held; NULL (lock released, loss counted) when full."""
    pthread_mutex_lock(&t.lock)
    if t.recs == NULL or t.count == TR_CAP:
        t.lost += 1
        pthread_mutex_unlock(&t.lock)
        return NULL
    return &t.recs[(t.head + t.count) % TR_CAP]

cdef inline void _commit(fp_tring* t) noexcept nogil:
    cdef uint64_t one = 1
    cdef bint wake
    t.count += 1
    wake = t.count == 1
    pthread_mutex_unlock(&t.lock)
    if wake:        # the reader drains until empty: one wake-up per non-empty period
        write(t.efd, &one, 8)

cdef inline void _head(fp_trec* r, const uint8_t* f, size_t n) noexcept nogil:
    r.ilen = <uint32_t>n
    r.hlen = <uint32_t>(n if n < TR_HEAD else TR_HEAD)
    memcpy(r.head, f, r.hlen)

cdef void tr_rx(fp_tring* t, uint32_t uid, const uint8_t* d, size_t n, int family,
                const uint8_t* addr, uint16_t sport, uint8_t tos, double now, uint32_t segments,
                const fp_rx_action* a) noexcept nogil:
    """The record of fp_rx_decide's ``a`` for the datagram ``d`` (``n`` bytes, the first of
    ``segments`` in a GRO train) from ``addr``:``sport``; called before ``a`` is carried out."""
    cdef fp_trec* r = _claim(t)
    if r == NULL:
        return
    memset(r, 0, sizeof(fp_trec) - TR_HEAD)
    r.now = now
    r.uid = uid
    r.vid = a.v.id if a.v != NULL else 0
    r.dir = TR_RX
    r.action = TR_DELIVERED if a.kind == A_DELIVER else TR_DROPPED
    r.reason = <uint8_t>a.reason if a.kind != A_DELIVER else 0
    r.learn = <uint8_t>a.learn
    r.family = <uint8_t>family
    r.tos = tos
    r.sport = sport
    r.segments = segments
    r.olen = <uint32_t>n
    memcpy(r.addr, addr, 4 if family == 4 else 16)
    if n >= VXLAN_HLEN:
        r.hdr = 1
        r.vni = (d[4] << 16) | (d[5] << 8) | d[6]
        _head(r, d + VXLAN_HLEN, n - VXLAN_HLEN)
    _commit(t)

cdef void tr_tx(fp_tring* t, const fp_vstate* v, const uint8_t* frame, size_t n, double now,
                const fp_tx_action* a) noexcept nogil:
    """The record of fp_tx_decide's ``a`` (A_SEND or A_DROP) for the frame or TSO super-frame
    ``frame`` (``n`` bytes, after the virtio-net header)."""
    cdef fp_trec* r = _claim(t)
    cdef uint32_t i
    if r == NULL:
        return
    memset(r, 0, sizeof(fp_trec) - TR_HEAD)
    r.now = now
    r.vid = v.id
    r.dir = TR_TX
    r.segments = <uint32_t>(a.nseg if a.nseg > 0 else 1)
    _head(r, frame, n)
    r.nstate = <int8_t>a.nstate
    memcpy(r.nmac, a.nmac, 6)
    if a.kind == A_REPLY:
        r.action = TR_PROXY_REPLY
    elif a.kind != A_SEND:
        r.action = TR_DROPPED
        r.reason = <uint8_t>a.reason
    else:
        r.action = TR_SENT
        r.hit = <uint8_t>a.hit
        r.sport = a.sport
        r.tos = a.tos
        r.nrem = <uint32_t>a.nr
        r.olen = VXLAN_HLEN + a.segs[0].hlen + a.segs[0].plen
        if a.nr > 0:
            r.family = a.rem[0].family
            r.dport = a.rem[0].port
            r.vni = a.rem[0].vni
        for i in range(<uint32_t>a.nr if a.nr < TR_REMOTES else TR_REMOTES):
            memcpy(r.rem[i], a.rem[i].addr, 16)
    _commit(t)

cdef list tr_pop(fp_tring* t, int max_records):
    """Up to ``max_records`` records, oldest first, as dicts of their raw facts (addresses
    as text), for vxtun/trace/records.py ``from_ring``."""
    cdef list out = []
    cdef fp_trec r
    cdef uint64_t v, one = 1
    cdef uint32_t i
    read(t.efd, &v, 8)
    while True:
        if len(out) == max_records:
            if t.count:                 # come back for the rest
                write(t.efd, &one, 8)
            break
        with nogil:
            pthread_mutex_lock(&t.lock)
            if t.count == 0:
                pthread_mutex_unlock(&t.lock)
                break
            memcpy(&r, &t.recs[t.head], sizeof(fp_trec))
            t.head = (t.head + 1) % TR_CAP
            t.count -= 1
            pthread_mutex_unlock(&t.lock)
        fam = r.family or 4
        out.append({
            "now": r.now, "vid": r.vid, "uid": r.uid,
            "dir": "rx" if r.dir == TR_RX else "tx",
            "action": ("sent", "delivered", "dropped", "proxy_reply")[r.action],
            "reason": r.reason, "nstate": r.nstate, "nmac": r.nmac[:6],
            "learn": r.learn, "hit": bool(r.hit), "family": fam, "tos": r.tos,
            "hdr": bool(r.hdr), "sport": r.sport, "dport": r.dport, "vni": r.vni,
            "nrem": r.nrem, "segments": r.segments, "olen": r.olen, "ilen": r.ilen,
            "head": r.head[:r.hlen],
            "addr": fp_ip_str(fam, r.addr) if r.dir == TR_RX else None,
            "remotes": [fp_ip_str(fam, r.rem[i])
                        for i in range(r.nrem if r.nrem < TR_REMOTES else TR_REMOTES)],
        })
    return out


cdef class TraceRing:
    """A ring driven from Python, over the threads' decisions run by ``Decisions`` (as
    tests/unit/test_fastpath_decide.py drives them): ``rx``/``tx`` decide and record as the
    threads do, ``pop`` drains as the Dataplane does.  For the tests."""
    cdef fp_tring t

    def __cinit__(self):
        if tr_init(&self.t) < 0 or tr_enable(&self.t, True) < 0:
            raise MemoryError()

    def __dealloc__(self):
        tr_free(&self.t)

    def rx(self, Decisions dec not None, data, src_ip, int sport, double now, int outer_tos=0,
           uint32_t segments=1) -> None:
        """A datagram as the RX thread decides and records it."""
        cdef bytearray buf = bytearray(data)
        cdef uint8_t addr[16]
        cdef fp_rx_action a
        cdef int fam = fp_parse_ip(src_ip, addr)
        if fam == 0:
            raise ValueError(f"invalid address {src_ip!r}")
        fp_rx_decide(&dec.d, <uint8_t*>(<char*>buf), len(buf), fam, addr, <uint8_t>outer_tos,
                     now, 1, &a)
        tr_rx(&self.t, 0, <uint8_t*>(<char*>buf), len(buf), fam, addr, <uint16_t>sport,
              <uint8_t>outer_tos, now, segments, &a)

    def tx(self, Decisions dec not None, uint32_t vid, data, double now) -> bool:
        """A read from a TAP (virtio-net header + frame) as the TX thread decides and records
        it; True when it was punted (the Python core decides and records it then)."""
        cdef fp_vstate* v = dec._v(vid)
        cdef bytearray buf = bytearray(data)
        cdef size_t n = len(buf)
        fp_tx_decide(v, <uint8_t*>(<char*>buf), n, now, 0, &dec.ta)
        if dec.ta.kind == A_PUNT:
            return True
        tr_tx(&self.t, v, <uint8_t*>(<char*>buf) + VNET_HDR_LEN,
              n - VNET_HDR_LEN if n > VNET_HDR_LEN else 0, now, &dec.ta)
        return False

    def pop(self, int max_records=TR_CAP) -> list:
        return tr_pop(&self.t, max_records)

    @property
    def lost(self) -> int:
        return self.t.lost
