# cython: language_level=3
"""The C-level interface of vxtun.fastpath.fdb: one VTEP's FDB as raw C operations.

The threads look up and learn (``fdb_lookup_copy``, ``fdb_learn``); Python reaches the same
table through ``CFdb``, the *store* that vxtun.fdb.table.Fdb applies its administrative rules
over.  No rule of ``bridge fdb add/append/replace/del`` lives here.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from vxtun.fastpath.libc cimport pthread_mutex_t

# vxtun/fdb/table.py LEARN_* codes
cdef enum:
    LEARN_OFF = 0
    LEARN_REFRESH = 1
    LEARN_NEW = 2
    LEARN_MOVED = 3
    LEARN_PINNED = 4
    LEARN_FULL = 5

# FdbEntry.state, indexed as vxtun.fdb.table.STATES (checked at import)
cdef enum:
    ST_PERMANENT = 0
    ST_STATIC = 1
    ST_DYNAMIC = 2

cdef struct fp_remote:
    uint8_t addr[16]      # IPv4 in the first 4 bytes
    uint8_t family        # 4 or 6
    uint16_t port         # 0: the VTEP's dstport
    int32_t vni           # -1: the VTEP's own VNI
    int32_t via           # -1: none; else an index into CFdb's interned device names

cdef struct fp_entry:
    uint64_t mac          # the 6 octets, big-endian, in the low 48 bits
    double updated
    double used
    fp_remote* ext        # remotes 1..nr-1 (flood lists only)
    uint32_t nr
    uint32_t cap          # capacity of ext
    uint8_t state         # ST_PERMANENT, ST_STATIC, ST_DYNAMIC
    fp_remote r0

cdef struct fp_snap:
    # a copy of one entry taken under the lock, turned into Python objects after unlocking
    fp_entry e
    fp_remote* rem

cdef struct fp_fdb:
    pthread_mutex_t lock
    int32_t* index        # open addressing, linear probing: -1 or a position in entries
    uint32_t mask         # index size - 1 (a power of two, at least twice the entry count)
    fp_entry* entries     # dense: deletion moves the last entry into the hole
    uint32_t count
    uint32_t cap
    double ageing
    uint32_t maxaddress
    int learning
    fp_snap* gone         # expired entries a lookup or a learn removed, not yet reported
    uint32_t ngone        # (CFdb.reaped: the core reports each one deleted)
    uint32_t capgone

cdef fp_fdb* fdb_new() noexcept nogil
cdef void fdb_free(fp_fdb* t) noexcept nogil
cdef int64_t fdb_find(fp_fdb* t, uint64_t mac, uint32_t* slot) noexcept nogil
cdef int fdb_learn(fp_fdb* t, uint64_t mac, int family, const uint8_t* addr,
                   double now) noexcept nogil
cdef int fdb_lookup_copy(fp_fdb* t, uint64_t mac, double now, fp_remote** buf,
                         uint32_t* cap) noexcept nogil

cdef int fp_parse_ip(object ip, uint8_t* addr) except -1
cdef object fp_ip_str(int family, const uint8_t* addr)


cdef class CFdb:
    cdef fp_fdb* t
    cdef list _vias
    cdef dict _via_index
    cdef int _remote_in(self, object remote, fp_remote* r) except -1
    cdef object _remote_out(self, const fp_remote* r)
    cdef object _snap_out(self, fp_snap* s)
    cdef object _take(self, object mac, bint remove)
