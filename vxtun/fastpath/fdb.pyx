# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One VTEP's FDB in C: the raw table the threads read and learn into, and ``CFdb``, the
store vxtun.fdb.table.Fdb applies its rules over when the fast path runs.

The rules of learning, lookup and ageing are those of vxtun/fdb/table.py (vxlan_snoop(),
vxlan_find_mac(), vxlan_cleanup()); the administrative rules (add/append/replace/del, their
errors, ``maxaddress``) live only there, and reach this table through ``CFdb.put`` and
``CFdb.remove``.  tests/unit/test_fastpath_differential.py holds the two stores equal.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from vxtun.fastpath.libc cimport (
    MADV_HUGEPAGE, madvise, posix_memalign, pthread_mutex_destroy, pthread_mutex_init,
    pthread_mutex_lock, pthread_mutex_unlock)

import socket as _socket

from vxtun.errors import FdbError
from vxtun.fdb.table import STATES, FdbEntry, Remote

if tuple(STATES) != ("permanent", "static", "dynamic"):
    raise ImportError("vxtun.fastpath was built for other FDB STATES; rebuild it")

#
# An open-addressing hash table (linear probing, backward-shift deletion: no tombstones, so a
# lookup never walks more than a cluster) whose slots hold positions in a dense entry array.
# The index is kept at most half full, so a lookup is O(1) however large the table; the dense
# array makes expire() and entries() linear scans with no holes.  One mutex per table: the TX
# thread looks up, the RX thread learns, the Python thread runs the control operations.

cdef enum:
    HUGE = 2 << 20

cdef void* _big_alloc(size_t size) noexcept nogil:
    """malloc, but a large table gets 2 MB pages (THP "madvise" mode): at a million entries a
    random lookup otherwise pays TLB misses on top of its cache misses."""
    cdef void* p = NULL
    if size < HUGE:
        return malloc(size)
    if posix_memalign(&p, HUGE, size) != 0:
        return NULL
    madvise(p, (size + HUGE - 1) & ~(<size_t>HUGE - 1), MADV_HUGEPAGE)
    return p

cdef inline uint32_t _mac_hash(uint64_t mac, uint32_t mask) noexcept nogil:
    return <uint32_t>((mac * <uint64_t>0x9E3779B97F4A7C15) >> 32) & mask

cdef inline fp_remote* _rem(fp_entry* e, uint32_t i) noexcept nogil:
    if i == 0:
        return &e.r0
    return &e.ext[i - 1]

cdef inline bint _expired(fp_fdb* t, fp_entry* e, double now) noexcept nogil:
    return e.state == ST_DYNAMIC and now - e.updated >= t.ageing

cdef fp_fdb* fdb_new() noexcept nogil:
    cdef fp_fdb* t = <fp_fdb*>calloc(1, sizeof(fp_fdb))
    if t == NULL:
        return NULL
    t.mask = 15
    t.index = <int32_t*>malloc(16 * sizeof(int32_t))
    t.cap = 8
    t.entries = <fp_entry*>malloc(8 * sizeof(fp_entry))
    if t.index == NULL or t.entries == NULL:
        free(t.index)
        free(t.entries)
        free(t)
        return NULL
    memset(t.index, 0xFF, 16 * sizeof(int32_t))
    pthread_mutex_init(&t.lock, NULL)
    t.ageing = 300.0
    t.learning = 1
    return t

cdef void _fdb_clear(fp_fdb* t) noexcept nogil:
    cdef uint32_t i
    for i in range(t.count):
        free(t.entries[i].ext)
    t.count = 0
    memset(t.index, 0xFF, (t.mask + 1) * sizeof(int32_t))

cdef void _gone_clear(fp_fdb* t) noexcept nogil:
    cdef uint32_t i
    for i in range(t.ngone):
        free(t.gone[i].rem)
    t.ngone = 0

cdef void fdb_free(fp_fdb* t) noexcept nogil:
    if t == NULL:
        return
    _fdb_clear(t)
    _gone_clear(t)
    free(t.gone)
    free(t.index)
    free(t.entries)
    pthread_mutex_destroy(&t.lock)
    free(t)

cdef int64_t fdb_find(fp_fdb* t, uint64_t mac, uint32_t* slot) noexcept nogil:
    """Position of ``mac`` in entries (and its index slot), or -1 (and the empty slot)."""
    cdef uint32_t i = _mac_hash(mac, t.mask)
    cdef int32_t p
    while True:
        p = t.index[i]
        if p < 0:
            slot[0] = i
            return -1
        if t.entries[p].mac == mac:
            slot[0] = i
            return p
        i = (i + 1) & t.mask

cdef int _fdb_grow_index(fp_fdb* t) noexcept nogil:
    cdef uint32_t size = (t.mask + 1) * 2
    cdef uint32_t mask = size - 1
    cdef int32_t* idx = <int32_t*>_big_alloc(size * sizeof(int32_t))
    cdef uint32_t p, i
    if idx == NULL:
        return -1
    memset(idx, 0xFF, size * sizeof(int32_t))
    for p in range(t.count):
        i = _mac_hash(t.entries[p].mac, mask)
        while idx[i] >= 0:
            i = (i + 1) & mask
        idx[i] = <int32_t>p
    free(t.index)
    t.index = idx
    t.mask = mask
    return 0

cdef int64_t _fdb_insert(fp_fdb* t, uint64_t mac) noexcept nogil:
    """Add an empty entry for ``mac`` (not present); its position, or -1 when out of memory."""
    cdef uint32_t slot, p
    cdef fp_entry* ne
    if (<uint64_t>t.count + 1) * 2 > <uint64_t>t.mask + 1:
        if _fdb_grow_index(t) < 0:
            return -1
    if t.count == t.cap:
        ne = <fp_entry*>_big_alloc(<size_t>t.cap * 2 * sizeof(fp_entry))
        if ne == NULL:
            return -1
        memcpy(ne, t.entries, <size_t>t.count * sizeof(fp_entry))
        free(t.entries)
        t.entries = ne
        t.cap *= 2
    fdb_find(t, mac, &slot)
    p = t.count
    memset(&t.entries[p], 0, sizeof(fp_entry))
    t.entries[p].mac = mac
    t.index[slot] = <int32_t>p
    t.count += 1
    return p

cdef void _fdb_remove(fp_fdb* t, uint32_t slot, uint32_t p) noexcept nogil:
    """Delete the entry at position ``p`` (index slot ``slot``)."""
    cdef uint32_t mask = t.mask, j = slot, k, ideal, last
    cdef int32_t q
    cdef int32_t* idx = t.index
    cdef bint stay
    free(t.entries[p].ext)
    # backward-shift deletion: pull later members of the cluster into the hole unless their
    # home slot lies cyclically in (hole, their slot]
    while True:
        idx[j] = -1
        k = j
        while True:
            k = (k + 1) & mask
            q = idx[k]
            if q < 0:
                break
            ideal = _mac_hash(t.entries[q].mac, mask)
            if j <= k:
                stay = j < ideal and ideal <= k
            else:
                stay = j < ideal or ideal <= k
            if not stay:
                break
        if q < 0:
            break
        idx[j] = q
        j = k
    last = t.count - 1
    if p != last:
        t.entries[p] = t.entries[last]
        k = _mac_hash(t.entries[p].mac, mask)
        while idx[k] != <int32_t>last:
            k = (k + 1) & mask
        idx[k] = <int32_t>p
    t.count -= 1

cdef int _snap(fp_entry* e, fp_snap* s) noexcept nogil:
    cdef uint32_t i
    s.e = e[0]
    s.e.ext = NULL
    s.rem = <fp_remote*>malloc((e.nr if e.nr else 1) * sizeof(fp_remote))
    if s.rem == NULL:
        return -1
    for i in range(e.nr):
        s.rem[i] = _rem(e, i)[0]
    return 0

cdef void _fdb_reap(fp_fdb* t, uint32_t slot, uint32_t p) noexcept nogil:
    """Remove the expired entry at ``p`` and keep a copy for CFdb.reaped, so that the core
    reports it deleted (vxlan_cleanup notifies every entry it removes).  Out of memory, the
    entry still goes: a report is lost, never the table's consistency."""
    cdef uint32_t ncap
    cdef fp_snap* ng
    if t.ngone == t.capgone:
        ncap = t.capgone * 2 if t.capgone else 16
        ng = <fp_snap*>realloc(t.gone, ncap * sizeof(fp_snap))
        if ng != NULL:
            t.gone = ng
            t.capgone = ncap
    if t.ngone < t.capgone and _snap(&t.entries[p], &t.gone[t.ngone]) == 0:
        t.ngone += 1
    _fdb_remove(t, slot, p)

cdef void _entry_set_one(fp_entry* e, const fp_remote* r) noexcept nogil:
    free(e.ext)
    e.ext = NULL
    e.cap = 0
    e.nr = 1
    e.r0 = r[0]

cdef int _entry_append(fp_entry* e, const fp_remote* r) noexcept nogil:
    cdef uint32_t ncap
    cdef fp_remote* ne
    if e.nr == 0:
        e.r0 = r[0]
        e.nr = 1
        return 0
    if e.nr - 1 >= e.cap:
        ncap = e.cap * 2 if e.cap else 4
        ne = <fp_remote*>realloc(e.ext, ncap * sizeof(fp_remote))
        if ne == NULL:
            return -1
        e.ext = ne
        e.cap = ncap
    e.ext[e.nr - 1] = r[0]
    e.nr += 1
    return 0

cdef int fdb_learn(fp_fdb* t, uint64_t mac, int family, const uint8_t* addr,
                   double now) noexcept nogil:
    """Fdb.learn (vxlan_snoop) over a binary address (family 4: 4 bytes, 6: 16 bytes)."""
    cdef uint32_t slot
    cdef int64_t p
    cdef fp_entry* e
    cdef fp_remote r
    cdef int res
    if not t.learning:
        return LEARN_OFF
    memset(&r, 0, sizeof(fp_remote))
    memcpy(r.addr, addr, 4 if family == 4 else 16)
    r.family = <uint8_t>family
    r.vni = -1
    r.via = -1
    pthread_mutex_lock(&t.lock)
    p = fdb_find(t, mac, &slot)
    if p >= 0 and _expired(t, &t.entries[p], now):
        _fdb_reap(t, slot, <uint32_t>p)
        p = -1
    if p >= 0:
        e = &t.entries[p]
        if e.nr and e.r0.family == family and memcmp(e.r0.addr, r.addr, 16) == 0:
            if e.state == ST_DYNAMIC:
                e.updated = now
            res = LEARN_REFRESH
        elif e.state != ST_DYNAMIC:
            res = LEARN_PINNED
        else:
            # moved: only the first remote's IP changes; its port, VNI and device stay
            # (vxlan_snoop: rdst->remote_ip = *src_ip)
            if e.nr:
                memcpy(e.r0.addr, r.addr, 16)
                e.r0.family = r.family
            else:
                _entry_set_one(e, &r)
            e.updated = now
            res = LEARN_MOVED
    elif t.maxaddress and t.count >= t.maxaddress:
        res = LEARN_FULL
    else:
        p = _fdb_insert(t, mac)
        if p < 0:
            res = LEARN_FULL
        else:
            e = &t.entries[p]
            _entry_set_one(e, &r)
            e.state = ST_DYNAMIC
            e.updated = now
            e.used = now
            res = LEARN_NEW
    pthread_mutex_unlock(&t.lock)
    return res

cdef int fdb_lookup_copy(fp_fdb* t, uint64_t mac, double now, fp_remote** buf,
                         uint32_t* cap) noexcept nogil:
    """Fdb.lookup: copy the remotes of ``mac`` into ``*buf`` (grown as needed); count or -1."""
    cdef uint32_t slot, i
    cdef int64_t p
    cdef fp_entry* e
    cdef fp_remote* nb
    cdef int nr
    pthread_mutex_lock(&t.lock)
    p = fdb_find(t, mac, &slot)
    if p < 0:
        pthread_mutex_unlock(&t.lock)
        return -1
    e = &t.entries[p]
    if _expired(t, e, now):
        _fdb_reap(t, slot, <uint32_t>p)
        pthread_mutex_unlock(&t.lock)
        return -1
    e.used = now
    if e.nr > cap[0]:
        nb = <fp_remote*>realloc(buf[0], e.nr * sizeof(fp_remote))
        if nb == NULL:
            pthread_mutex_unlock(&t.lock)
            return -1
        buf[0] = nb
        cap[0] = e.nr
    for i in range(e.nr):
        buf[0][i] = _rem(e, i)[0]
    nr = <int>e.nr
    pthread_mutex_unlock(&t.lock)
    return nr


cdef int _fdb_drain(fp_fdb* t, int mode, double now, fp_snap** out, uint32_t* nout) noexcept nogil:
    """Remove expired (mode 0) or dynamic (mode 1) entries; snapshots of expired ones."""
    cdef uint32_t p = 0, slot, n = 0, cap = 0
    cdef fp_entry* e
    cdef fp_snap* arr = NULL
    cdef fp_snap* na
    while p < t.count:
        e = &t.entries[p]
        if (mode == 0 and _expired(t, e, now)) or (mode == 1 and e.state == ST_DYNAMIC):
            if mode == 0:
                if n == cap:
                    cap = cap * 2 if cap else 16
                    na = <fp_snap*>realloc(arr, cap * sizeof(fp_snap))
                    if na == NULL:
                        break
                    arr = na
                if _snap(e, &arr[n]) < 0:
                    break
                n += 1
            fdb_find(t, e.mac, &slot)
            _fdb_remove(t, slot, p)     # moves the last entry into p: look at p again
        else:
            p += 1
    out[0] = arr
    nout[0] = n
    return 0



cdef int _fdb_put(fp_fdb* t, const fp_entry* src, const fp_remote* rems) noexcept nogil:
    """Insert or overwrite the entry of ``src.mac`` with ``src`` and its ``src.nr`` remotes
    (under the lock); -1 when out of memory (the table then holds no entry for the MAC)."""
    cdef uint32_t slot, i
    cdef int64_t p = fdb_find(t, src.mac, &slot)
    cdef fp_entry* e
    if p < 0:
        p = _fdb_insert(t, src.mac)
        if p < 0:
            return -1
    e = &t.entries[p]
    free(e.ext)
    e.ext = NULL
    e.cap = 0
    e.nr = 0
    e.state = src.state
    e.updated = src.updated
    e.used = src.used
    for i in range(src.nr):
        if _entry_append(e, &rems[i]) < 0:
            fdb_find(t, src.mac, &slot)
            _fdb_remove(t, slot, <uint32_t>p)
            return -1
    return 0


cdef object _mac_bytes(uint64_t mac):
    cdef uint8_t b[6]
    cdef int i
    for i in range(6):
        b[i] = (mac >> (40 - 8 * i)) & 0xFF
    return b[:6]


cdef uint64_t _mac_key(object mac) except? 0xFFFFFFFFFFFFFFFF:
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
    return int.from_bytes(bytes(mac), "big")


cdef int fp_parse_ip(object ip, uint8_t* addr) except -1:
    """4 or 6 with the packed address in ``addr`` (16 bytes, zero-padded), or 0 if unparsable."""
    memset(addr, 0, 16)
    try:
        packed = _socket.inet_pton(_socket.AF_INET, ip)
        memcpy(addr, <const char*>packed, 4)
        return 4
    except (OSError, TypeError, ValueError):
        pass
    try:
        packed = _socket.inet_pton(_socket.AF_INET6, ip)
        memcpy(addr, <const char*>packed, 16)
        return 6
    except (OSError, TypeError, ValueError):
        return 0


cdef object fp_ip_str(int family, const uint8_t* addr):
    if family == 4:
        return _socket.inet_ntop(_socket.AF_INET, addr[:4])
    return _socket.inet_ntop(_socket.AF_INET6, addr[:16])


cdef class CFdb:
    """The FDB store over C tables, for vxtun.fdb.table.Fdb (the same API as its DictStore).

    Raw operations only: ``get``/``put``/``remove`` copy whole entries in and out, and
    ``lookup``/``learn``/``expire`` are the data-path rules the threads run in C.  Addresses
    are stored in binary, so they come back in their canonical text form (``2001:db8::1``,
    never ``2001:DB8:0::1``), and ``put`` refuses a ``Remote.ip`` that is not an IP address.
    """

    def __cinit__(self, *args, **kwargs):
        self.t = fdb_new()
        if self.t == NULL:
            raise MemoryError()
        self._vias = []
        self._via_index = {}

    def __init__(self, ageing: float = 300.0, maxaddress: int = 0, learning: bool = True):
        self.ageing = ageing
        self.maxaddress = maxaddress
        self.learning = learning

    def __dealloc__(self):
        fdb_free(self.t)
        self.t = NULL

    @property
    def ageing(self) -> float:
        """Seconds a dynamic entry lives without being seen (vxlan_cleanup)."""
        return self.t.ageing

    @ageing.setter
    def ageing(self, value) -> None:
        value = float(value)
        if not value >= 0:
            raise ValueError(f"ageing must be a number of seconds, not {value}")
        self.t.ageing = value

    @property
    def maxaddress(self) -> int:
        """How many entries learning may fill the table with (0: no limit)."""
        return self.t.maxaddress

    @maxaddress.setter
    def maxaddress(self, value) -> None:
        if not 0 <= value < (1 << 32):
            raise ValueError(f"maxaddress {value} is out of range")
        self.t.maxaddress = value

    @property
    def learning(self) -> bool:
        return bool(self.t.learning)

    @learning.setter
    def learning(self, value) -> None:
        self.t.learning = 1 if value else 0

    # --- conversions ---------------------------------------------------------------------

    cdef int _remote_in(self, object remote, fp_remote* r) except -1:
        memset(r, 0, sizeof(fp_remote))
        fam = fp_parse_ip(remote.ip, r.addr)
        if fam == 0:
            raise ValueError(f"invalid dst address {remote.ip!r}")
        r.family = fam
        port = remote.port or 0
        if not 0 <= port <= 65535:
            raise ValueError(f"invalid port {port}")
        r.port = port
        if remote.vni is None:
            r.vni = -1
        else:
            if not 0 <= remote.vni < (1 << 24):
                raise ValueError(f"invalid vni {remote.vni}")
            r.vni = remote.vni
        if remote.via is None:
            r.via = -1
        else:
            i = self._via_index.get(remote.via)
            if i is None:
                i = len(self._vias)
                self._vias.append(remote.via)
                self._via_index[remote.via] = i
            r.via = i
        return 0

    cdef object _remote_out(self, const fp_remote* r):
        return Remote(fp_ip_str(r.family, r.addr), r.port, None if r.vni < 0 else r.vni,
                      None if r.via < 0 else self._vias[r.via])

    cdef object _snap_out(self, fp_snap* s):
        """The FdbEntry for a snapshot (frees it)."""
        cdef uint32_t i
        try:
            rems = [self._remote_out(&s.rem[i]) for i in range(s.e.nr)]
            return FdbEntry(_mac_bytes(s.e.mac), rems, STATES[s.e.state], s.e.updated,
                            s.e.used)
        finally:
            free(s.rem)
            s.rem = NULL

    # --- the data path -------------------------------------------------------------------

    def lookup(self, mac, double now):
        """Fdb.lookup: the remotes of ``mac`` or None (an expired dynamic entry goes)."""
        cdef fp_remote* buf = NULL
        cdef uint32_t cap = 0, i
        cdef int n
        cdef uint64_t key = _mac_key(mac)
        with nogil:
            n = fdb_lookup_copy(self.t, key, now, &buf, &cap)
        try:
            if n < 0:
                return None
            return [self._remote_out(&buf[i]) for i in range(<uint32_t>n)]
        finally:
            free(buf)

    def learn(self, mac, ip, double now) -> int:
        """Fdb.learn (vxlan_snoop): a LEARN_* code."""
        cdef uint8_t addr[16]
        cdef uint64_t key = _mac_key(mac)
        if not self.t.learning:
            return LEARN_OFF
        fam = fp_parse_ip(ip, addr)
        if fam == 0:
            raise FdbError(f"invalid address {ip!r}")
        return fdb_learn(self.t, key, fam, addr, now)

    def expire(self, double now) -> list:
        """Fdb.expire (vxlan_cleanup): remove and return the dynamic entries gone stale,
        after those ``reaped`` has not handed over yet."""
        cdef fp_snap* arr = NULL
        cdef uint32_t n = 0, i
        gone = self.reaped()
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            _fdb_drain(self.t, 0, now, &arr, &n)
            pthread_mutex_unlock(&self.t.lock)
        try:
            return gone + [self._snap_out(&arr[i]) for i in range(n)]
        finally:
            free(arr)

    def reaped(self) -> list:
        """DictStore.reaped: the expired entries lookups and learns (in C, by the threads)
        removed since the last call, oldest first."""
        cdef fp_snap* arr
        cdef uint32_t n, i
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            arr = self.t.gone
            n = self.t.ngone
            self.t.gone = NULL
            self.t.ngone = 0
            self.t.capgone = 0
            pthread_mutex_unlock(&self.t.lock)
        try:
            return [self._snap_out(&arr[i]) for i in range(n)]
        finally:
            for i in range(n):
                free(arr[i].rem)     # _snap_out set the ones it consumed to NULL
            free(arr)

    # --- raw entries (the store API) ------------------------------------------------------

    cdef object _take(self, object mac, bint remove):
        """A copy of the entry of ``mac`` (no expiry check), removed from the table if
        ``remove``; None if there is none."""
        cdef fp_snap s
        cdef uint32_t slot
        cdef int64_t p
        cdef int rc = 0
        cdef uint64_t key = _mac_key(mac)
        s.rem = NULL
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            p = fdb_find(self.t, key, &slot)
            if p >= 0:
                rc = _snap(&self.t.entries[p], &s)
                if rc == 0 and remove:
                    _fdb_remove(self.t, slot, <uint32_t>p)
            pthread_mutex_unlock(&self.t.lock)
        if p < 0:
            return None
        if rc < 0:
            raise MemoryError()
        return self._snap_out(&s)

    def get(self, mac):
        """A copy of the entry of ``mac`` (no expiry check), or None."""
        return self._take(mac, False)

    def put(self, entry) -> None:
        """Insert or overwrite the whole entry (mac, remotes, state, updated, used);
        ValueError, and no change, for a remote this table cannot hold."""
        cdef fp_entry e
        cdef fp_remote* rems
        cdef uint32_t i, n = len(entry.remotes)
        cdef int rc
        memset(&e, 0, sizeof(fp_entry))
        e.mac = _mac_key(entry.mac)
        e.state = STATES.index(entry.state)
        e.updated = entry.updated
        e.used = entry.used
        e.nr = n
        rems = <fp_remote*>malloc((n if n else 1) * sizeof(fp_remote))
        if rems == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                self._remote_in(entry.remotes[i], &rems[i])
            with nogil:
                pthread_mutex_lock(&self.t.lock)
                rc = _fdb_put(self.t, &e, rems)
                pthread_mutex_unlock(&self.t.lock)
        finally:
            free(rems)
        if rc < 0:
            raise MemoryError()

    def remove(self, mac):
        """Remove the entry of ``mac``: the entry removed, or None."""
        return self._take(mac, True)

    def flush(self, dynamic_only: bool = False) -> None:
        cdef fp_snap* arr = NULL
        cdef uint32_t n = 0
        cdef bint dyn = dynamic_only
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            if dyn:
                _fdb_drain(self.t, 1, 0.0, &arr, &n)
            else:
                _fdb_clear(self.t)
            pthread_mutex_unlock(&self.t.lock)

    def entries(self) -> list:
        """All entries, the default (all-zeros) one first, then by MAC."""
        cdef fp_snap* arr
        cdef uint32_t n, i, k = 0
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            n = self.t.count
            arr = <fp_snap*>malloc((n if n else 1) * sizeof(fp_snap))
            if arr != NULL:
                for i in range(n):
                    if _snap(&self.t.entries[i], &arr[k]) < 0:
                        break
                    k += 1
            pthread_mutex_unlock(&self.t.lock)
        if arr == NULL:
            raise MemoryError()
        try:
            out = [self._snap_out(&arr[i]) for i in range(k)]
        finally:
            for i in range(k):
                free(arr[i].rem)     # _snap_out set the ones it consumed to NULL
            free(arr)
        if k != n:
            raise MemoryError()
        out.sort(key=lambda e: (e.mac != b"\x00" * 6, e.mac))
        return out

    def page(self, uint32_t pos, uint32_t n) -> tuple:
        """A listing's next batch: up to ``n`` entries from position ``pos`` of the dense
        array, copied under the lock (held for those ``n`` only, so the threads wait
        microseconds, never a whole table's worth), and the position to go on from (None at
        the end).  Like a netlink dump (bridge fdb show), a listing that spans changes sees
        each entry that stays put exactly once: an entry moved into a hole behind the cursor
        by a deletion, or added meanwhile, may be missed."""
        cdef fp_snap* arr = <fp_snap*>malloc((n if n else 1) * sizeof(fp_snap))
        cdef uint32_t i, k = 0, end = 0, total = 0
        if arr == NULL:
            raise MemoryError()
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            total = self.t.count
            while pos + k < total and k < n:
                if _snap(&self.t.entries[pos + k], &arr[k]) < 0:
                    break
                k += 1
            end = pos + k
            pthread_mutex_unlock(&self.t.lock)
        try:
            out = [self._snap_out(&arr[i]) for i in range(k)]
        finally:
            for i in range(k):
                free(arr[i].rem)
            free(arr)
        if k < n and end < total:
            raise MemoryError()
        return out, (end if end < total else None)

    def __len__(self) -> int:
        return self.t.count

    def memory_bytes(self) -> int:
        """Bytes the C table holds (index + entries + flood lists), for the per-entry figure."""
        cdef size_t total
        cdef uint32_t i
        pthread_mutex_lock(&self.t.lock)
        total = (sizeof(fp_fdb) + (self.t.mask + 1) * sizeof(int32_t)
                 + self.t.cap * sizeof(fp_entry))
        for i in range(self.t.count):
            total += self.t.entries[i].cap * sizeof(fp_remote)
        pthread_mutex_unlock(&self.t.lock)
        return total
