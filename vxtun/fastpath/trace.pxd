# cython: language_level=3
"""The C-level interface of vxtun.fastpath.trace: the bounded ring of trace records.

While a VTEP is traced (``vxtun trace``) the threads copy the facts of each decision into a
fixed-size ``fp_trec`` and push it here; Python drains the ring off the hot path (its eventfd
says when) and formats (vxtun/trace/records.py ``from_ring``).  A full ring drops the record
and counts it: packets are never held back.  With no tracer, the threads test ``on`` and
nothing else.
"""
from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t

from vxtun.fastpath.decide cimport fp_rx_action, fp_tx_action, fp_vstate
from vxtun.fastpath.libc cimport pthread_mutex_t

cdef enum:
    TR_HEAD = 96          # bytes of the inner frame kept: enough for every summary
    TR_REMOTES = 8        # remotes kept per record (the count is kept whole)
    TR_CAP = 4096         # records the ring holds
    TR_TX = 0
    TR_RX = 1
    TR_SENT = 0           # the actions a record of the threads can carry (a punted frame is
    TR_DELIVERED = 1      # traced by the Python core that decides it)
    TR_DROPPED = 2
    TR_PROXY_REPLY = 3    # tx: answered by the proxy in C (vxtun/fastpath/neigh.pyx)

cdef struct fp_trec:
    double now            # the decision's clock (CLOCK_MONOTONIC)
    uint32_t vid          # the VTEP; 0 when dropped before a VTEP was known
    uint32_t uid          # rx: the underlay socket
    uint8_t dir           # TR_TX or TR_RX
    uint8_t action        # TR_SENT, TR_DELIVERED or TR_DROPPED
    uint8_t reason        # a drop's index in DROP_REASONS
    uint8_t learn         # rx: vxlan_snoop's LEARN_* code
    uint8_t hit           # tx: the destination MAC had an entry (else the default answered)
    uint8_t family        # of the outer addresses, 4 or 6
    uint8_t tos           # outer TOS / traffic class
    uint8_t hdr           # rx: the datagram held a VXLAN header (``vni`` is valid)
    int8_t nstate         # tx, proxied: the neighbour entry's state (fp_tx_action.nstate)
    uint8_t nmac[6]       # ... and its lladdr
    uint16_t sport
    uint16_t dport        # tx: the first copy's (0: the VTEP's dstport)
    int32_t vni           # rx: the header's; tx: the first copy's (-1: the VTEP's)
    uint32_t nrem         # tx: remotes sent to (only the first TR_REMOTES are in ``rem``)
    uint32_t segments     # TSO super-frame / GRO train: how many segments it held
    uint32_t olen         # UDP payload of the datagram (rx) or of the first copy (tx)
    uint32_t ilen         # the inner frame (the whole super-frame)
    uint32_t hlen         # bytes in ``head``
    uint8_t addr[16]      # rx: the outer source
    uint8_t rem[TR_REMOTES][16]
    uint8_t head[TR_HEAD]

cdef struct fp_tring:
    pthread_mutex_t lock
    fp_trec* recs         # TR_CAP, allocated when tracing first starts
    uint32_t head
    uint32_t count
    uint64_t lost         # records dropped because the ring was full
    int on                # the one thing the threads test when nobody traces
    int efd               # written when the ring turns non-empty

cdef int tr_init(fp_tring* t) noexcept nogil
cdef void tr_free(fp_tring* t) noexcept nogil
cdef int tr_enable(fp_tring* t, bint on) noexcept nogil
cdef void tr_rx(fp_tring* t, uint32_t uid, const uint8_t* d, size_t n, int family,
                const uint8_t* addr, uint16_t sport, uint8_t tos, double now, uint32_t segments,
                const fp_rx_action* a) noexcept nogil
cdef void tr_tx(fp_tring* t, const fp_vstate* v, const uint8_t* frame, size_t n, double now,
                const fp_tx_action* a) noexcept nogil
cdef list tr_pop(fp_tring* t, int max_records)
