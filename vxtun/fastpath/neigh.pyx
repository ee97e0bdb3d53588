# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One VTEP's neighbour table in C, and the ARP/ND proxy decided and answered in C.

``fp_proxy_decide`` is arp_reduce() / neigh_reduce() (drivers/net/vxlan/vxlan_core.c) as the
pure core states them (vxtun/core/vtep.py ``Vtep._proxy``, vxtun/proxy/reply.py), step for
step, so that a storm of requests is answered by the TX thread without ever reaching Python:

* ARP: only an Ethernet/IPv4 request (ar_hrd ARPHRD_ETHER or ARPHRD_IEEE802, ar_pro
  ETH_P_IP, ar_hln 6, ar_pln 4, ar_op ARPOP_REQUEST) for a target that is neither loopback nor
  multicast is considered; anything else is consumed without an answer.
* NS (vxlan_xmit has checked IPv6 + ICMPv6 type 135 code 0, no extension header): one sent to
  ::1 or for a multicast target is consumed; the answer goes to the Source Link-Layer Address
  option if there is one, else to the Ethernet source, and an option of length 0 makes the
  solicitation unanswerable (vxlan_na_create).
* The target is looked up in the neighbour table (neigh_lookup): an entry in NUD_CONNECTED
  (``permanent``, ``noarp``, ``reachable`` whose reachable time has not run out) is answered
  from, unless its MAC sits behind this host (an FDB entry whose first remote is the any
  address: the "bridge-local neighbor" check); an entry in any other state is consumed
  silently; no entry at all is the only case of an L3 miss.
* A miss goes to Python (which raises the L3 miss, rate-limited per IP, vxtun/core/vtep.py
  ``Vtep._miss``) only with ``l3miss`` on, and only once per MISS_HOLD per IP: the limiter
  here (a direct-mapped table of the last punted miss per slot) keeps a storm of misses off the
  punt queue.  MISS_HOLD is half the core's MISS_INTERVAL, so that the core, whose clock reads a
  little later than the thread's, always gets a punt inside each of its intervals.

The table itself: entries keyed by (family, address) in an open-addressing hash table. The
ageing rules (``reachable`` turns ``stale`` after ``reachable_time``, ``stale`` is collected
``gc_stale_time`` after its last confirmation) are those of vxtun/proxy/neigh.py: the lookup
here applies them *as if* they had run, without changing the table; the Python tick
(NeighTable.expire) makes the change and reports it, through ``CNeigh``.
tests/unit/test_proxy_c.py holds the two stores and the two deciders equal.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

from vxtun.fastpath.fdb cimport fdb_find, fp_entry, fp_fdb, fp_parse_ip
from vxtun.fastpath.libc cimport (
    pthread_mutex_destroy, pthread_mutex_init, pthread_mutex_lock, pthread_mutex_unlock)
from vxtun.fastpath.wire cimport (
    ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, VNET_HDR_LEN, be16, fp_csum_add, fp_pack_vnet,
    fp_rx_vnet_header, fp_vnet, mac48, put16)

import ipaddress as _ipaddress

from vxtun.core.vtep import MISS_INTERVAL
from vxtun.errors import NeighError
from vxtun.proxy.neigh import NUD_STATES, NeighEntry

if tuple(NUD_STATES) != ("permanent", "noarp", "reachable", "stale"):
    raise ImportError("vxtun.fastpath was built for other NUD_STATES; rebuild it")

cdef double MISS_HOLD = MISS_INTERVAL / 2

cdef enum:
    ARPOP_REQUEST = 1
    ARPOP_REPLY = 2
    ARP_LEN = ETH_HLEN + 28
    NA_LEN = ETH_HLEN + 40 + 32
    NS_MIN = ETH_HLEN + 40 + 24
    ND_OPT_SOURCE_LL_ADDR = 1
    ND_OPT_TARGET_LL_ADDR = 2


# --- the table ---------------------------------------------------------------------------------

cdef inline uint32_t _hash(int family, const uint8_t* ip, uint32_t mask) noexcept nogil:
    cdef uint64_t a, b
    memcpy(&a, ip, 8)
    memcpy(&b, ip + 8, 8)
    a = (a ^ (b * <uint64_t>0xC2B2AE3D27D4EB4F) ^ <uint64_t>family) * <uint64_t>0x9E3779B97F4A7C15
    return <uint32_t>(a >> 32) & mask

cdef inline bint _is(const fp_nentry* e, int family, const uint8_t* ip) noexcept nogil:
    return e.family == family and memcmp(e.ip, ip, 16) == 0

cdef fp_nentry* _find(fp_neigh* t, int family, const uint8_t* ip) noexcept nogil:
    cdef uint32_t i = _hash(family, ip, t.mask)
    while t.slots[i].family:
        if _is(&t.slots[i], family, ip):
            return &t.slots[i]
        i = (i + 1) & t.mask
    return NULL

cdef int _grow(fp_neigh* t) noexcept nogil:
    cdef uint32_t size = (t.mask + 1) * 2, i, j
    cdef fp_nentry* s = <fp_nentry*>calloc(size, sizeof(fp_nentry))
    if s == NULL:
        return -1
    for i in range(t.mask + 1):
        if t.slots[i].family:
            j = _hash(t.slots[i].family, t.slots[i].ip, size - 1)
            while s[j].family:
                j = (j + 1) & (size - 1)
            s[j] = t.slots[i]
    free(t.slots)
    t.slots = s
    t.mask = size - 1
    return 0

cdef int _put(fp_neigh* t, const fp_nentry* src) noexcept nogil:
    """Insert or overwrite (under the lock); -1 when out of memory."""
    cdef fp_nentry* e = _find(t, src.family, src.ip)
    cdef uint32_t i
    if e != NULL:
        e[0] = src[0]
        return 0
    if 2 * (t.count + 1) > t.mask + 1 and _grow(t) < 0:
        return -1
    i = _hash(src.family, src.ip, t.mask)
    while t.slots[i].family:
        i = (i + 1) & t.mask
    t.slots[i] = src[0]
    t.count += 1
    return 0

cdef void _remove(fp_neigh* t, fp_nentry* e) noexcept nogil:
    """Backward-shift deletion: no tombstones, so a lookup stops at the first free slot."""
    cdef uint32_t i = <uint32_t>(e - t.slots), j = i, k
    while True:
        j = (j + 1) & t.mask
        if not t.slots[j].family:
            break
        k = _hash(t.slots[j].family, t.slots[j].ip, t.mask)
        # an entry whose ideal slot lies cyclically in (i, j] stays where it is
        if (i < k <= j) if i <= j else (i < k or k <= j):
            continue
        t.slots[i] = t.slots[j]
        i = j
    t.slots[i].family = 0
    t.count -= 1

cdef inline int _aged(fp_neigh* t, const fp_nentry* e, double now) noexcept nogil:
    """NeighTable._age as if it had run: the entry's state at ``now``, or N_MISS when it has
    been collected by then."""
    cdef int st = e.state
    if st == N_REACHABLE and now - e.updated >= t.reachable_time:
        st = N_STALE
    if st == N_STALE and now - e.updated >= t.gc_stale_time:
        return N_MISS
    return st

cdef int fp_neigh_lookup(fp_neigh* t, int family, const uint8_t* ip, double now,
                         uint8_t* lladdr) noexcept nogil:
    """neigh_lookup(): the state of the entry for ``ip`` (its MAC in ``lladdr``), or N_MISS."""
    cdef fp_nentry* e
    cdef int st = N_MISS
    pthread_mutex_lock(&t.lock)
    e = _find(t, family, ip)
    if e != NULL:
        st = _aged(t, e, now)
        memcpy(lladdr, e.lladdr, 6)
    pthread_mutex_unlock(&t.lock)
    return st


# --- the proxy (arp_reduce, neigh_reduce) ------------------------------------------------------

cdef bint _bridge_local(fp_fdb* fdb, const uint8_t* lladdr) noexcept nogil:
    """An FDB entry for ``lladdr`` whose first remote is the any address (vxlan_addr_any)."""
    cdef uint32_t slot
    cdef long long p
    cdef fp_entry* e
    cdef bint local = False
    cdef uint8_t zero[16]
    if fdb == NULL:
        return False
    memset(zero, 0, 16)
    pthread_mutex_lock(&fdb.lock)
    p = fdb_find(fdb, mac48(lladdr), &slot)
    if p >= 0:
        e = &fdb.entries[p]
        local = e.nr > 0 and memcmp(e.r0.addr, zero, 4 if e.r0.family == 4 else 16) == 0
    pthread_mutex_unlock(&fdb.lock)
    return local

cdef bint _miss_punt(fp_neigh* t, int family, const uint8_t* ip, double now) noexcept nogil:
    """True when this miss should go to Python: not punted for the same IP within MISS_HOLD."""
    cdef fp_miss* m = &t.miss[_hash(family, ip, MISS_SLOTS - 1)]
    if m.family == family and memcmp(m.ip, ip, 16) == 0 and now - m.t < MISS_HOLD:
        return False
    m.family = <uint8_t>family
    memcpy(m.ip, ip, 16)
    m.t = now
    return True

cdef void _arp_reply(const uint8_t* f, const uint8_t* lladdr, uint8_t* r) noexcept nogil:
    """reply.arp_reply: from ``lladdr`` (the target's owner) back to the requester."""
    memcpy(r, f + 22, 6)                # Ethernet destination: the sender hardware address
    memcpy(r + 6, lladdr, 6)
    put16(r + 12, ETH_P_ARP)
    put16(r + 14, 1)                    # ARPHRD_ETHER
    put16(r + 16, ETH_P_IP)
    r[18] = 6
    r[19] = 4
    put16(r + 20, ARPOP_REPLY)
    memcpy(r + 22, lladdr, 6)           # sender: the target's owner ...
    memcpy(r + 28, f + 38, 4)           # ... at the target IP
    memcpy(r + 32, f + 22, 10)          # target: the requester's MAC and IP

cdef int _ns_reply_mac(const uint8_t* f, size_t n, uint8_t* mac) noexcept nogil:
    """reply._reply_mac: the NA's Ethernet destination in ``mac``; -1 when an option has
    length 0 (no NA).  The options run to the end of the frame."""
    cdef long opts = NS_MIN, nopt = <long>n - NS_MIN, i = 0, avail
    cdef uint8_t olen
    while i < nopt - 1:
        olen = f[opts + i + 1]
        if olen == 0:
            return -1
        if f[opts + i] == ND_OPT_SOURCE_LL_ADDR:
            avail = <long>n - (opts + i + 2)
            if avail > 6:
                avail = 6
            memset(mac, 0, 6)
            memcpy(mac, f + opts + i + 2, avail)
            return 0
        i += <long>olen << 3
    memcpy(mac, f + 6, 6)
    return 0

cdef void _na_reply(const uint8_t* f, const uint8_t* dmac, const uint8_t* lladdr,
                    uint8_t* r) noexcept nogil:
    """reply.na_reply (vxlan_na_create): solicited + override, hop limit 255, the NS's
    priority bits, a Target Link-Layer Address option, from the target to the NS's source."""
    cdef uint8_t* ip6 = r + ETH_HLEN
    cdef uint8_t* body = ip6 + 40
    cdef uint32_t s
    memcpy(r, dmac, 6)
    memcpy(r + 6, lladdr, 6)
    put16(r + 12, ETH_P_IPV6)
    memset(ip6, 0, 8)
    ip6[0] = 0x60 | (f[ETH_HLEN] & 0x0F)
    ip6[5] = 32                         # payload length: the NA with its one option
    ip6[6] = 58                         # next header ICMPv6
    ip6[7] = 255                        # hop limit (RFC 4861 7.1.2)
    memcpy(ip6 + 8, f + ETH_HLEN + 40 + 8, 16)      # source: the target address
    memcpy(ip6 + 24, f + ETH_HLEN + 8, 16)          # destination: the NS's source
    memset(body, 0, 8)
    body[0] = 136
    body[4] = 0x60                      # solicited, override (router: never, no NTF_ROUTER)
    memcpy(body + 8, ip6 + 8, 16)
    body[24] = ND_OPT_TARGET_LL_ADDR
    body[25] = 1
    memcpy(body + 26, lladdr, 6)
    s = fp_csum_add(ip6 + 8, 32, 32 + 58)          # the pseudo-header (RFC 8200 8.1)
    s = fp_csum_add(body, 32, s)
    put16(body + 2, (~s) & 0xFFFF)

cdef int fp_proxy_decide(fp_neigh* t, fp_fdb* fdb, int l3miss, const uint8_t* f, size_t n,
                         int mtu, double now, uint8_t* out, size_t* outlen, int* nstate,
                         uint8_t* nmac) noexcept nogil:
    """Vtep._proxy for an ARP frame or an NS (vtep._is_ns holds): P_REPLY with the vnet header
    and the answer in ``out`` (REPLY_MAX bytes; ``outlen`` set), P_DROP, or P_MISS.  What the
    lookup found goes to ``nstate`` (N_UNASKED when there was no lookup) and ``nmac``."""
    cdef int family, st
    cdef uint8_t ip[16]
    cdef uint8_t lladdr[6]
    cdef uint8_t dmac[6]
    cdef bint arp = be16(f + 12) == ETH_P_ARP
    cdef bint ns_ok = True
    cdef uint32_t hrd
    cdef fp_vnet vnet
    memset(ip, 0, 16)
    nstate[0] = N_UNASKED
    if arp:
        if n < ARP_LEN:
            return P_DROP
        hrd = be16(f + 14)
        if (be16(f + 16) != ETH_P_IP or f[18] != 6 or f[19] != 4
                or be16(f + 20) != ARPOP_REQUEST or (hrd != 1 and hrd != 6)):
            return P_DROP
        if f[38] == 127 or (f[38] & 0xF0) == 0xE0:      # loopback or multicast target
            return P_DROP
        family = 4
        memcpy(ip, f + 38, 4)
    else:
        if n < NS_MIN or f[54] != 135 or f[55] != 0:
            return P_DROP
        # sent to ::1, or for a multicast target
        if f[ETH_HLEN + 39] == 1 and _all_zero(f + ETH_HLEN + 24, 15):
            return P_DROP
        if f[ETH_HLEN + 48] == 0xFF:
            return P_DROP
        family = 6
        memcpy(ip, f + ETH_HLEN + 48, 16)
        ns_ok = _ns_reply_mac(f, n, dmac) == 0
    st = fp_neigh_lookup(t, family, ip, now, lladdr)
    nstate[0] = st
    memcpy(nmac, lladdr, 6)
    if st == N_MISS:
        return P_MISS if l3miss and _miss_punt(t, family, ip, now) else P_DROP
    if st == N_STALE or _bridge_local(fdb, lladdr) or not ns_ok:
        return P_DROP
    if arp:
        _arp_reply(f, lladdr, out + VNET_HDR_LEN)
        outlen[0] = ARP_LEN
    else:
        _na_reply(f, dmac, lladdr, out + VNET_HDR_LEN)
        outlen[0] = NA_LEN
    fp_rx_vnet_header(out + VNET_HDR_LEN, outlen[0], mtu, &vnet)
    fp_pack_vnet(&vnet, out)
    outlen[0] += VNET_HDR_LEN
    return P_REPLY

cdef inline bint _all_zero(const uint8_t* p, size_t n) noexcept nogil:
    cdef size_t i
    for i in range(n):
        if p[i]:
            return False
    return True


# --- the store, for vxtun.proxy.neigh.NeighTable ------------------------------------------------

cdef object _ip_text(const fp_nentry* e):
    return str(_ipaddress.ip_address(e.ip[:4] if e.family == 4 else e.ip[:16]))

cdef object _entry_out(const fp_nentry* e):
    return NeighEntry(_ip_text(e), e.lladdr[:6], NUD_STATES[e.state], e.updated)


cdef class CNeigh:
    """The neighbour store over a C table, for vxtun.proxy.neigh.NeighTable (the API of its
    DictNeighStore): raw ``get``/``put``/``remove``/``entries`` of whole entries, copied in
    and out under the table's lock.  The ageing times are the table's, so that the thread's
    lookup ages entries as the Python rules do."""

    def __cinit__(self, *args, **kwargs):
        self.t = <fp_neigh*>calloc(1, sizeof(fp_neigh))
        if self.t == NULL:
            raise MemoryError()
        self.t.mask = 15
        self.t.slots = <fp_nentry*>calloc(16, sizeof(fp_nentry))
        if self.t.slots == NULL:
            free(self.t)
            self.t = NULL
            raise MemoryError()
        pthread_mutex_init(&self.t.lock, NULL)

    def __init__(self, reachable_time: float = 30.0, gc_stale_time: float = 60.0):
        self.reachable_time = reachable_time
        self.gc_stale_time = gc_stale_time

    def __dealloc__(self):
        if self.t != NULL:
            pthread_mutex_destroy(&self.t.lock)
            free(self.t.slots)
            free(self.t)

    @property
    def reachable_time(self) -> float:
        return self.t.reachable_time

    @reachable_time.setter
    def reachable_time(self, double value) -> None:
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            self.t.reachable_time = value
            pthread_mutex_unlock(&self.t.lock)

    @property
    def gc_stale_time(self) -> float:
        return self.t.gc_stale_time

    @gc_stale_time.setter
    def gc_stale_time(self, double value) -> None:
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            self.t.gc_stale_time = value
            pthread_mutex_unlock(&self.t.lock)

    def get(self, ip: str) -> NeighEntry | None:
        """A copy of the entry for ``ip`` (canonical text), or None."""
        return self._take(ip, False)

    def put(self, entry) -> None:
        """Store a copy of ``entry`` (a NeighEntry), replacing the one for its IP."""
        cdef fp_nentry e
        cdef int r
        memset(&e, 0, sizeof(fp_nentry))
        fam = fp_parse_ip(entry.ip, e.ip)
        if fam == 0:
            raise NeighError(f"invalid address {entry.ip!r}")
        if len(entry.lladdr) != 6:
            raise NeighError("lladdr must be a 6-byte MAC address")
        e.family = <uint8_t>fam
        e.state = <uint8_t>NUD_STATES.index(entry.state)
        mb = bytes(entry.lladdr)
        memcpy(e.lladdr, <const char*>mb, 6)
        e.updated = entry.updated
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            r = _put(self.t, &e)
            pthread_mutex_unlock(&self.t.lock)
        if r < 0:
            raise MemoryError()

    def remove(self, ip: str) -> NeighEntry | None:
        """Take the entry for ``ip`` out; it, or None."""
        return self._take(ip, True)

    cdef object _take(self, object ip, bint remove):
        cdef uint8_t addr[16]
        cdef int fam = fp_parse_ip(ip, addr)
        cdef fp_nentry e
        cdef fp_nentry* p
        if fam == 0:
            return None
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            p = _find(self.t, fam, addr)
            if p != NULL:
                e = p[0]
                if remove:
                    _remove(self.t, p)
            pthread_mutex_unlock(&self.t.lock)
        return _entry_out(&e) if p != NULL else None

    def entries(self) -> list:
        """Copies of every entry, in no particular order."""
        cdef fp_nentry* snap
        cdef uint32_t i, k = 0, size
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            size = self.t.mask + 1
            snap = <fp_nentry*>calloc(self.t.count + 1, sizeof(fp_nentry))
            if snap != NULL:
                for i in range(size):
                    if self.t.slots[i].family:
                        snap[k] = self.t.slots[i]
                        k += 1
            pthread_mutex_unlock(&self.t.lock)
        if snap == NULL:
            raise MemoryError()
        try:
            return [_entry_out(&snap[i]) for i in range(k)]
        finally:
            free(snap)

    def __len__(self) -> int:
        return self.t.count

    def lookup(self, ip: str, double now):
        """fp_neigh_lookup from Python: (state name, lladdr) as the thread sees them at
        ``now``, or None for a miss (for the differential tests)."""
        cdef uint8_t addr[16]
        cdef uint8_t mac[6]
        cdef int fam = fp_parse_ip(ip, addr)
        cdef int st
        if fam == 0:
            return None
        st = fp_neigh_lookup(self.t, fam, addr, now, mac)
        return None if st == N_MISS else (NUD_STATES[st], mac[:6])
