# cython: language_level=3
"""The C-level interface of vxtun.fastpath.decide: the per-packet decisions of the threads.

Each is a function of (the datagram or frame, the VTEP state, ``now``) that fills an action
struct and updates counters, and nothing else: no file descriptor, no system call, no lock but
the FDB's.  The threads (vxtun/fastpath/threads.pyx) carry the actions out.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

from vxtun.fastpath.fdb cimport fp_fdb, fp_remote
from vxtun.fastpath.neigh cimport fp_neigh
from vxtun.fastpath.wire cimport NDROPS, fp_seg, fp_tso_segment, fp_vnet

cdef enum:
    TAPQ_MAX = 8          # queues of a multi-queue TAP, each read by a TX thread of its own
    NSTATS = TAPQ_MAX + 1 # counter blocks: one per thread (fp_vstate.st)

cdef struct fp_stats:
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t learned
    uint64_t moved
    uint64_t proxy_replies
    uint64_t drops[NDROPS]

cdef struct fp_vstate:
    # what the decisions know of one VTEP (the first member of the threads' fp_vtep)
    uint32_t id           # in punted records
    uint32_t vni
    int mtu
    uint8_t mac[6]
    uint32_t sport_lo
    uint32_t sport_hi
    uint16_t dstport
    int proxy
    uint8_t tos           # the device's tos (1: inherit), as vxlan_xmit_one() reads cfg.tos
    int ttl_inherit       # ttl inherit: the outer TTL is the inner packet's
    int l3miss
    int localbypass       # a remote that is a local address: the frame is punted (Node.bypass)
    int df_inherit        # df inherit (IPv4): a frame whose outer header takes DF is punted
    int label_inherit     # flowlabel inherit (IPv6): a frame with an inner flow label is punted
    int nlocal
    fp_remote* local      # the namespace's addresses (family and addr), nlocal of them
    fp_fdb* fdb
    fp_neigh* neigh       # with ``proxy``: the neighbour table (vxtun/fastpath/neigh.pyx)
    fp_stats st[NSTATS]   # [tid]: each written by one thread only: st[0] the TX thread of TAP
                          # queue 0, st[1] the RX thread, st[1 + q] the TX thread of queue q

cdef struct fp_demux:
    # one UDP socket's VTEPs by VNI (vxlan_vs_find_vni), and the drops before a VNI is known
    void** vnis           # fp_vstate*, open addressing, at most half full
    uint32_t vmask
    fp_stats st[NSTATS]   # [tid], as fp_vstate.st

# what happens to a datagram or a frame
cdef enum:
    A_DROP = 0            # counted already: ``reason``
    A_DELIVER = 1         # write vnet + frame to the VTEP's TAP
    A_SEND = 2            # send each segment to each remote, from ``sport`` under ``tos``
    A_PUNT = 3            # hand each segment to Python (Vtep.handle_frame); if Python cannot
                          # take one, count ``reason`` (the drop the core would have counted)
    A_REPLY = 4           # write reply[0:rlen] (vnet header + proxy answer) to the VTEP's TAP

cdef struct fp_rx_action:
    int kind              # A_DROP or A_DELIVER
    int reason
    fp_vstate* v          # the VTEP; NULL when dropped before the VNI was known
    int learn             # vxlan_snoop's LEARN_* code: NEW or MOVED asks for an FdbChange
    uint8_t* frame        # A_DELIVER: the inner frame, its ECN field already carried over
    size_t len
    fp_vnet vnet

cdef struct fp_tx_action:
    int kind              # A_DROP, A_SEND or A_PUNT
    int reason
    int nseg              # the frame, or its TSO segments, in segs[0:nseg]
    int nr                # A_SEND: the remotes, copied under the FDB lock, in rem[0:nr]
    uint16_t sport
    uint8_t tos
    uint8_t ttl           # 0: the socket's (ttl N, or the route's); else ttl inherit's
    int hit               # A_SEND: the destination MAC had an entry (else the default's remotes)
    # the caller's buffers, reused from one frame to the next (fp_tx_action_init)
    fp_seg* segs          # MAXSEG
    uint8_t* segh         # MAXSEG * SEGH_MAX: the segments' headers
    # a TSO super-frame is only planned by fp_tx_decide (segs hold lengths and places, not
    # the headers): fp_tx_segments() writes them, when segments are what leaves
    const uint8_t* tso_f
    size_t tso_n
    uint32_t tso_mss
    bint tso_pending
    fp_remote* rem
    uint32_t remcap
    uint8_t* reply        # REPLY_MAX: A_REPLY's vnet header and answer
    size_t rlen
    int nstate            # a proxied request: the neighbour entry's state (N_MISS: none;
                          # N_UNASKED: not a request the proxy considers, or not proxied)
    uint8_t nmac[6]       # ... and its lladdr (for a trace record)

cdef class Decisions:
    # declared here so that vxtun/fastpath/trace.pyx can drive the same decisions
    cdef fp_demux d
    cdef fp_vstate** vs
    cdef int n
    cdef dict _fdbs
    cdef fp_tx_action ta
    cdef uint32_t _next_id
    cdef fp_vstate* _v(self, uint32_t vid) except NULL

cdef fp_vstate* fp_demux_find(fp_demux* d, uint32_t vni) noexcept nogil
cdef int fp_demux_build(fp_demux* d, fp_vstate** vs, int n) noexcept nogil
cdef void fp_rx_decide(fp_demux* d, uint8_t* data, size_t n, int family, const uint8_t* addr,
                       uint8_t outer_tos, double now, int tid, fp_rx_action* a) noexcept nogil
cdef void fp_tx_decide(fp_vstate* v, uint8_t* buf, size_t len, double now, int tid,
                       fp_tx_action* a) noexcept nogil
cdef int fp_tx_action_init(fp_tx_action* a) noexcept nogil
cdef void fp_tx_action_free(fp_tx_action* a) noexcept nogil
cdef object fp_stats_json(const fp_stats* a, const fp_stats* b)
cdef int fp_set_local(fp_vstate* v, bint bypass, addrs) except -1

# what the threads hand to Python (fp_punt.kind in vxtun/fastpath/state.pxd)
cdef enum:
    PUNT_FRAME = 1        # a frame from the TAP for Vtep.handle_frame
    PUNT_LEARN = 2        # data = the MAC just learned or moved: emit FdbChange
    PUNT_TAP_GONE = 3     # data = errno (int32): the TAP failed (ip link del); not read again


cdef inline void fp_tx_segments(fp_tx_action* a) noexcept nogil:
    """Write the headers of the planned TSO segments in a.segs (once; nothing to do for a
    frame that was not cut).  Whoever reads a.segs[i].h's bytes calls it first."""
    if a.tso_pending:
        fp_tso_segment(a.tso_f, a.tso_n, a.tso_mss, a.segh, a.segs, True)
        a.tso_pending = False
