# cython: language_level=3
"""The C-level interface of vxtun.fastpath.neigh: one VTEP's neighbour table and the proxy.

The TX thread decides a proxied ARP request or Neighbour Solicitation here, whole
(``fp_proxy_decide``: arp_reduce / neigh_reduce), and builds the answer byte for byte as
vxtun/proxy/reply.py does; Python reaches the same table through ``CNeigh``, the *store* that
vxtun.proxy.neigh.NeighTable applies its rules (``ip neigh add/replace/change/del/flush``,
ageing and its notifications) over.
"""
from libc.stdint cimport uint8_t, uint32_t

from vxtun.fastpath.fdb cimport fp_fdb
from vxtun.fastpath.libc cimport pthread_mutex_t

# NeighEntry.state, indexed as vxtun.proxy.neigh.NUD_STATES (checked at import)
cdef enum:
    N_PERMANENT = 0
    N_NOARP = 1
    N_REACHABLE = 2
    N_STALE = 3
    N_MISS = -1           # fp_neigh_lookup: no entry at all (the only case of an L3 miss)
    N_UNASKED = -2        # fp_proxy_decide: not a request the proxy looks up

# what fp_proxy_decide made of a frame
cdef enum:
    P_DROP = 0            # consumed, no answer: count ``proxy``
    P_REPLY = 1           # the answer is in the caller's buffer
    P_MISS = 2            # no entry, ``l3miss`` on, not reported lately: punt to Python
    REPLY_MAX = 128       # room for vnet header + the largest answer (an NA: 86 bytes)
    MISS_SLOTS = 1024     # the miss limiter's slots (direct-mapped)

cdef struct fp_nentry:
    uint8_t family        # 0: free slot; 4 or 6
    uint8_t state         # N_PERMANENT .. N_STALE
    uint8_t lladdr[6]
    uint8_t ip[16]        # IPv4 in the first 4 bytes, the rest 0
    double updated

cdef struct fp_miss:
    uint8_t family
    uint8_t ip[16]
    double t

cdef struct fp_neigh:
    pthread_mutex_t lock
    fp_nentry* slots      # open addressing, linear probing, backward-shift deletion
    uint32_t mask         # slots - 1; at most half full
    uint32_t count
    double reachable_time
    double gc_stale_time
    fp_miss miss[MISS_SLOTS]   # last punted miss per slot (only the TX thread touches it)

cdef int fp_neigh_lookup(fp_neigh* t, int family, const uint8_t* ip, double now,
                         uint8_t* lladdr) noexcept nogil
cdef int fp_proxy_decide(fp_neigh* t, fp_fdb* fdb, int l3miss, const uint8_t* f, size_t n,
                         int mtu, double now, uint8_t* out, size_t* outlen, int* nstate,
                         uint8_t* nmac) noexcept nogil


cdef class CNeigh:
    cdef fp_neigh* t
    cdef object _take(self, object ip, bint remove)
