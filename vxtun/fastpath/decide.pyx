# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The per-packet decisions in C: what a datagram or a frame becomes, and nothing else.

These mirror the pure core, step for step:

* ``fp_rx_decide``: Demux.handle_datagram (vxtun/core/demux.py) and Vtep.handle_datagram
  (vxtun/core/vtep.py), vxlan_rcv()'s order: header and VNI, reserved bits, inner length,
  own and invalid source MAC, learning (vxlan_snoop, which may refuse a pinned MAC), the inner
  IP header and ECN (RFC 6040), and the virtio-net header to deliver with.
* ``fp_tx_decide``: Vtep.handle_frame (vxlan_xmit), with what a NIC does first for a TAP with
  offloads: finish a partial checksum or cut a TSO super-frame into segments.  Then the proxy
  (arp_reduce / neigh_reduce, decided and answered in vxtun/fastpath/neigh.pyx; only an L3
  miss to report goes to Python), the FDB lookup with the all-zeros default,
  the punt of a miss (the core counts ``no_remote`` and raises the L2 miss), and the source
  port and outer TOS of the datagrams.

Both fill an action struct (decide.pxd) and count; neither touches a file descriptor or makes a
system call, so ``Decisions`` below can drive them from Python, and
tests/unit/test_fastpath_decide.py compares them with the pure core on generated sequences.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memcpy, memset

from vxtun.fastpath.fdb cimport (
    LEARN_MOVED, LEARN_NEW, LEARN_PINNED, CFdb, fdb_learn, fdb_lookup_copy, fp_ip_str, fp_parse_ip,
    fp_remote)
from vxtun.fastpath.neigh cimport (
    N_UNASKED, P_MISS, P_REPLY, REPLY_MAX, CNeigh, fp_proxy_decide)
from vxtun.fastpath.wire cimport (
    D_BAD_FRAME, D_INNER_TRUNCATED, D_INVALID_SRC_MAC, D_NO_REMOTE, D_OWN_MAC, D_PROXY,
    D_RESERVED_BITS, D_STATIC_MAC_MOVED, D_TX_ERROR, D_VNI_NOT_FOUND, ETH_HLEN, ETH_P_ARP, ETH_P_IP,
    ETH_P_IPV6,
    F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, MAXSEG, SEGH_MAX, VNET_HDR_LEN,
    VXLAN_HLEN, be16, fp_complete_checksum, fp_decode_header, fp_ecn_decap, fp_encap_tos,
    fp_encode_header, fp_inner_ttl, fp_pack_vnet, fp_reserved_bits_set, fp_rx_vnet_header, fp_source_port,
    fp_tso_segment, le16, mac48)

from vxtun.core.stats import DROP_REASONS
from vxtun.core.vtep import Deliver, Transmit

PUNT_KINDS = {"frame": PUNT_FRAME, "learn": PUNT_LEARN, "tap_gone": PUNT_TAP_GONE}


# --- demux (vxlan_vs_find_vni) -------------------------------------------------------------

cdef inline uint32_t _vni_hash(uint32_t vni, uint32_t mask) noexcept nogil:
    return (vni * <uint32_t>2654435761) & mask

cdef fp_vstate* fp_demux_find(fp_demux* d, uint32_t vni) noexcept nogil:
    """The VTEP serving ``vni`` on this socket, or NULL."""
    cdef uint32_t i
    cdef fp_vstate* v
    if d.vnis == NULL:
        return NULL
    i = _vni_hash(vni, d.vmask)
    while True:
        v = <fp_vstate*>d.vnis[i]
        if v == NULL or v.vni == vni:
            return v
        i = (i + 1) & d.vmask

cdef int fp_demux_build(fp_demux* d, fp_vstate** vs, int n) noexcept nogil:
    """Serve exactly the ``n`` VTEPs ``vs`` (distinct VNIs); -1 when out of memory."""
    cdef uint32_t size = 4, j
    cdef int i
    cdef void** t
    while size < 2 * <uint32_t>n + 2:
        size *= 2
    t = <void**>calloc(size, sizeof(void*))
    if t == NULL:
        return -1
    for i in range(n):
        j = _vni_hash(vs[i].vni, size - 1)
        while t[j] != NULL:
            j = (j + 1) & (size - 1)
        t[j] = vs[i]
    free(d.vnis)
    d.vnis = t
    d.vmask = size - 1
    return 0


# --- underlay -> TAP (Demux.handle_datagram + Vtep.handle_datagram) --------------------------

cdef inline void _rx_drop(fp_rx_action* a, fp_stats* st, int reason) noexcept nogil:
    a.kind = A_DROP
    a.reason = reason
    st.drops[reason] += 1

cdef void fp_rx_decide(fp_demux* d, uint8_t* data, size_t n, int family, const uint8_t* addr,
                       uint8_t outer_tos, double now, int tid, fp_rx_action* a) noexcept nogil:
    """One datagram from ``addr`` (family 4 or 6) received under the outer TOS / traffic
    class ``outer_tos``.  On A_DELIVER the inner frame starts at ``data + 8`` and has been
    changed in place (the ECN mark); a.vnet is the header the TAP gets with it."""
    cdef uint32_t vni = 0
    cdef int r = fp_decode_header(data, n, &vni)
    cdef fp_vstate* v
    cdef const uint8_t* src
    cdef uint8_t* f
    a.v = NULL
    a.learn = 0
    if r >= 0:
        _rx_drop(a, &d.st[tid], r)
        return
    v = fp_demux_find(d, vni)
    if v == NULL:
        _rx_drop(a, &d.st[tid], D_VNI_NOT_FOUND)
        return
    a.v = v
    if fp_reserved_bits_set(data):
        _rx_drop(a, &v.st[tid], D_RESERVED_BITS)
        return
    if n < VXLAN_HLEN + ETH_HLEN:
        _rx_drop(a, &v.st[tid], D_INNER_TRUNCATED)
        return
    f = data + VXLAN_HLEN
    n -= VXLAN_HLEN
    src = f + 6
    if memcmp(src, v.mac, 6) == 0:
        _rx_drop(a, &v.st[tid], D_OWN_MAC)
        return
    # vxlan_snoop() checks is_valid_ether_addr, and runs only with learning on
    if v.fdb.learning and ((src[0] & 1) or mac48(src) == 0):
        _rx_drop(a, &v.st[tid], D_INVALID_SRC_MAC)
        return
    a.learn = fdb_learn(v.fdb, mac48(src), family, addr, now)
    if a.learn == LEARN_PINNED:
        _rx_drop(a, &v.st[tid], D_STATIC_MAC_MOVED)
        return
    if a.learn == LEARN_NEW:
        v.st[tid].learned += 1
    elif a.learn == LEARN_MOVED:
        v.st[tid].moved += 1
    # after learning, as vxlan_rcv(): the inner IP header must be whole, and the outer ECN
    # field is carried over (before coalescing: segments with other ECN bits never merge)
    r = fp_ecn_decap(f, n, outer_tos)
    if r >= 0:
        _rx_drop(a, &v.st[tid], r)
        return
    v.st[tid].rx_packets += 1
    v.st[tid].rx_bytes += n - ETH_HLEN          # as Stats counts: without the inner Ethernet
    fp_rx_vnet_header(f, n, v.mtu, &a.vnet)
    a.kind = A_DELIVER
    a.frame = f
    a.len = n


# --- TAP -> underlay (Vtep.handle_frame) ----------------------------------------------------

cdef inline bint _is_ns(const uint8_t* f, size_t n) noexcept nogil:
    """vtep._is_ns: IPv6 + ICMPv6 Neighbour Solicitation, no extension headers."""
    return n >= ETH_HLEN + 40 + 24 and f[20] == 58 and f[54] == 135 and f[55] == 0

cdef inline bint _addr_any(const fp_remote* r) noexcept nogil:
    cdef int i
    for i in range(4 if r.family == 4 else 16):
        if r.addr[i]:
            return False
    return True

cdef inline bint _is_local(const fp_vstate* v, const fp_remote* r) noexcept nogil:
    """Vtep.is_local: 127.0.0.0/8, ::1, or one of the namespace's addresses."""
    cdef int i
    if r.family == 4 and r.addr[0] == 127:
        return True
    if r.family == 6 and r.addr[15] == 1:
        for i in range(15):
            if r.addr[i]:
                break
        else:
            return True
    for i in range(v.nlocal):
        if v.local[i].family == r.family and \
                memcmp(v.local[i].addr, r.addr, 4 if r.family == 4 else 16) == 0:
            return True
    return False

cdef inline bint _has_label(const uint8_t* f, size_t n) noexcept nogil:
    """ecn.inner_flowlabel(frame) != 0: an IPv6 header, behind up to three VLAN tags, whose
    flow label is not 0."""
    cdef size_t off = 12
    cdef uint32_t etype = 0
    cdef int i
    for i in range(4):
        if n < off + 2:
            return False
        etype = be16(f + off)
        if etype != 0x8100 and etype != 0x88A8:
            break
        off += 4
    off += 2
    return etype == ETH_P_IPV6 and n > off + 3 and (
        (f[off + 1] & 0x0F) or f[off + 2] or f[off + 3])

cdef int fp_set_local(fp_vstate* v, bint bypass, addrs) except -1:
    """Set ``localbypass`` and the namespace's addresses (``addrs``: packed 4- or 16-byte
    IPs).  The caller keeps the threads off ``v`` meanwhile (Dataplane._pause)."""
    cdef fp_remote* arr = NULL
    cdef int i, n = len(addrs)
    if n:
        arr = <fp_remote*>calloc(n, sizeof(fp_remote))
        if arr == NULL:
            raise MemoryError()
    for i, a in enumerate(addrs):
        b = bytes(a)
        if len(b) not in (4, 16):
            free(arr)
            raise ValueError("an address is 4 or 16 bytes")
        arr[i].family = 4 if len(b) == 4 else 6
        memcpy(arr[i].addr, <const char*>b, len(b))
    free(v.local)
    v.local = arr
    v.nlocal = n
    v.localbypass = bypass
    return 0

cdef inline void _tx_drop(fp_tx_action* a, fp_stats* st, int reason) noexcept nogil:
    a.kind = A_DROP
    a.reason = reason
    st.drops[reason] += 1

cdef void _tx_proxy(fp_vstate* v, const uint8_t* f, size_t n, double now, int tid,
                    fp_tx_action* a) noexcept nogil:
    """Vtep._proxy (arp_reduce / neigh_reduce), decided and answered in C: an answer goes
    back to the TAP, a consumed request is counted ``proxy``, and only a miss to report (with
    ``l3miss``, rate-limited per IP in vxtun/fastpath/neigh.pyx) goes to Python, which counts
    it and raises the L3 miss."""
    cdef int r
    if v.neigh == NULL:                    # no table in C: the core decides
        a.kind = A_PUNT
        a.reason = D_PROXY
        return
    r = fp_proxy_decide(v.neigh, v.fdb, v.l3miss, f, n, v.mtu, now, a.reply, &a.rlen,
                        &a.nstate, a.nmac)
    if r == P_REPLY:
        a.kind = A_REPLY
        v.st[tid].proxy_replies += 1
    elif r == P_MISS:
        a.kind = A_PUNT
        a.reason = D_PROXY
    else:
        _tx_drop(a, &v.st[tid], D_PROXY)

cdef void fp_tx_decide(fp_vstate* v, uint8_t* buf, size_t len, double now, int tid,
                       fp_tx_action* a) noexcept nogil:
    """One read from the TAP, ``len`` bytes at ``buf``: virtio-net header + a frame or a TSO
    super-frame.  A partial checksum is finished in place."""
    cdef uint8_t* f = buf + VNET_HDR_LEN
    cdef size_t n
    cdef uint8_t flags, gso
    cdef uint32_t etype, i
    cdef int nr, k
    cdef uint64_t nbytes = 0
    a.nseg = 0
    a.nr = 0
    a.tso_pending = False
    a.nstate = N_UNASKED
    if len < VNET_HDR_LEN + ETH_HLEN:
        _tx_drop(a, &v.st[tid], D_BAD_FRAME)
        return
    n = len - VNET_HDR_LEN
    flags = buf[0]
    gso = buf[1] & ~GSO_ECN
    if gso == GSO_NONE:
        # the TAP left the checksum to "the hardware" (TUN_F_CSUM): finish it like a NIC;
        # csum_start counts from the Ethernet header, as it does on a TAP
        if flags & F_NEEDS_CSUM:
            if fp_complete_checksum(f, n, le16(buf + 6), le16(buf + 8)) < 0:
                _tx_drop(a, &v.st[tid], D_BAD_FRAME)
                return
        a.nseg = 1
        a.segs[0].h = f
        a.segs[0].hlen = <uint32_t>n
        a.segs[0].p = NULL
        a.segs[0].plen = 0
    elif gso == GSO_TCPV4 or gso == GSO_TCPV6:
        a.tso_mss = le16(buf + 4)
        a.nseg = fp_tso_segment(f, n, a.tso_mss, a.segh, a.segs, False)
        a.tso_f = f
        a.tso_n = n
        a.tso_pending = a.nseg > 0
        if a.nseg < 0:
            a.nseg = 0
            _tx_drop(a, &v.st[tid], D_BAD_FRAME)
            return
    else:
        _tx_drop(a, &v.st[tid], D_BAD_FRAME)     # UFO/USO: never enabled with TUNSETOFFLOAD
        return
    etype = be16(f + 12)
    if v.proxy and (etype == ETH_P_ARP or (etype == ETH_P_IPV6 and _is_ns(f, n))):
        _tx_proxy(v, f, n, now, tid, a)
        return
    nr = fdb_lookup_copy(v.fdb, mac48(f), now, &a.rem, &a.remcap)
    a.hit = nr >= 0                            # for a trace record: the entry, or the default
    if nr < 0:
        nr = fdb_lookup_copy(v.fdb, 0, now, &a.rem, &a.remcap)
    if nr < 0:
        a.kind = A_PUNT                        # L2 miss and no_remote: the core decides
        a.reason = D_NO_REMOTE
        return
    # localbypass (vxlan_encap_bypass): a remote that is a local address goes to the local VTEP
    # of its VNI, which learns the frame's source MAC: that is the core's to decide
    # (Vtep._encap) and the node's to carry out, never this thread's (the RX thread alone
    # writes the C FDB), so the whole frame is punted; Python unable to take it counts
    # tx_error, as encap_bypass_if_local counts a missing VTEP
    if v.localbypass:
        for i in range(<uint32_t>nr):
            if _is_local(v, &a.rem[i]):
                a.kind = A_PUNT
                a.reason = D_TX_ERROR
                return
    # df inherit (vxtun.core.vtep.inner_df): DF is a socket's setting, and the threads send
    # through one socket without it; the core sends a frame that takes DF through the VTEP's
    # second socket, which has it.  Slow, but only for VTEPs with df inherit.
    if v.df_inherit and (etype == ETH_P_IPV6 or (
            etype == ETH_P_IP and n > ETH_HLEN + 6 and f[ETH_HLEN + 6] & 0x40)):
        a.kind = A_PUNT
        a.reason = D_TX_ERROR
        return
    # flowlabel inherit (ip_tunnel_get_flowlabel): the threads send under one label (0), the
    # core under the inner packet's
    if v.label_inherit and _has_label(f, n):
        a.kind = A_PUNT
        a.reason = D_TX_ERROR
        return
    # a remote of 0.0.0.0 or :: is "this host", never sent to: each is dropped and counted
    # (vxlan_xmit_one's vxlan_addr_any(dst)); Vtep._encap
    k = 0
    for i in range(<uint32_t>nr):
        if _addr_any(&a.rem[i]):
            v.st[tid].drops[D_NO_REMOTE] += <uint64_t>a.nseg
        else:
            if <int>i != k:
                a.rem[k] = a.rem[i]
            k += 1
    if k == 0:
        a.kind = A_DROP
        a.reason = D_NO_REMOTE
        return
    a.kind = A_SEND
    a.nr = k
    # one flow, one source port: the flow key of a super-frame is that of its segments
    a.sport = fp_source_port(f, n, v.sport_lo, v.sport_hi)
    # ip_tunnel_ecn_encap() with the device's tos: the outer ECN of every segment is that of
    # the (super-)frame's IP header, which TSO copies into each segment; so is its TTL
    a.tos = fp_encap_tos(f, n, v.tos)
    a.ttl = fp_inner_ttl(f, n) if v.ttl_inherit else 0
    # as Stats counts: one per datagram, each segment to each remote, without the inner
    # Ethernet header
    for i in range(<uint32_t>a.nseg):
        nbytes += a.segs[i].hlen + a.segs[i].plen - ETH_HLEN
    v.st[tid].tx_packets += <uint64_t>k * a.nseg
    v.st[tid].tx_bytes += <uint64_t>k * nbytes

cdef int fp_tx_action_init(fp_tx_action* a) noexcept nogil:
    memset(a, 0, sizeof(fp_tx_action))
    a.segh = <uint8_t*>malloc(MAXSEG * SEGH_MAX)
    a.segs = <fp_seg*>malloc(MAXSEG * sizeof(fp_seg))
    a.remcap = 16
    a.rem = <fp_remote*>malloc(16 * sizeof(fp_remote))
    a.reply = <uint8_t*>malloc(REPLY_MAX)
    if a.segh == NULL or a.segs == NULL or a.rem == NULL or a.reply == NULL:
        fp_tx_action_free(a)
        return -1
    return 0

cdef void fp_tx_action_free(fp_tx_action* a) noexcept nogil:
    free(a.segh)
    free(a.segs)
    free(a.rem)
    free(a.reply)
    a.reply = NULL
    a.segh = NULL
    a.segs = NULL
    a.rem = NULL


cdef object fp_stats_json(const fp_stats* a, const fp_stats* b):
    """Sum of two counter blocks in the shape of vxtun.core.stats.Stats.to_json."""
    cdef int i
    return {
        "rx": {"packets": a.rx_packets + b.rx_packets, "bytes": a.rx_bytes + b.rx_bytes},
        "tx": {"packets": a.tx_packets + b.tx_packets, "bytes": a.tx_bytes + b.tx_bytes},
        "drops": {DROP_REASONS[i]: a.drops[i] + b.drops[i] for i in range(NDROPS)},
        "fdb": {"learned": a.learned + b.learned, "moved": a.moved + b.moved},
        "proxy_replies": a.proxy_replies + b.proxy_replies,
        "l2miss": 0,
        "l3miss": 0,
    }


# --- the decisions from Python ----------------------------------------------------------------

cdef class Decisions:
    """The threads' decisions, driven from Python: the VTEPs of one UDP socket, each over its
    CFdb, and what ``fp_rx_decide`` / ``fp_tx_decide`` make of one datagram or frame, in the
    core's vocabulary (``Deliver``, ``Transmit``) plus the records the threads would punt to
    Python, shaped as ``Dataplane.pop()`` returns them: ``(kind, vtep_id, bytes)``.

    ``rx`` counts as the RX thread does and ``tx`` as the TX thread does; ``stats`` and
    ``demux_stats`` return the counters as the Dataplane does.  (Its fields: decide.pxd.)
    """

    def __cinit__(self):
        memset(&self.d, 0, sizeof(fp_demux))
        self.vs = NULL
        self.n = 0
        self._fdbs = {}
        self._next_id = 1
        if fp_tx_action_init(&self.ta) < 0:
            raise MemoryError()

    def __dealloc__(self):
        cdef int i
        for i in range(self.n):
            free(self.vs[i].local)
            free(self.vs[i])
        free(self.vs)
        free(self.d.vnis)
        fp_tx_action_free(&self.ta)

    def set_local(self, uint32_t vid, bint localbypass, addrs) -> None:
        """As Dataplane.set_local: ``localbypass`` and the namespace's packed addresses."""
        cdef int i
        for i in range(self.n):
            if self.vs[i].id == vid:
                fp_set_local(self.vs[i], localbypass, addrs)
                return
        raise KeyError(vid)

    def add_vtep(self, uint32_t vni, mac, int mtu, CFdb fdb not None, uint32_t sport_lo=32768,
                 uint32_t sport_hi=61000, uint32_t dstport=4789, bint proxy=False,
                 uint8_t tos=0, bint ttl_inherit=False, CNeigh neigh=None,
                 bint l3miss=False, bint df_inherit=False, bint label_inherit=False) -> int:
        """Serve ``vni``; returns the VTEP's id (as in punted records).  With ``proxy``,
        ``neigh`` is the table the proxy answers from (None: every request is punted)."""
        cdef fp_vstate* v
        cdef fp_vstate** arr
        cdef int i
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        for i in range(self.n):
            if self.vs[i].vni == vni:
                raise ValueError(f"VNI {vni} is served twice")
        v = <fp_vstate*>calloc(1, sizeof(fp_vstate))
        arr = <fp_vstate**>malloc((self.n + 1) * sizeof(void*))
        if v == NULL or arr == NULL:
            free(v)
            free(arr)
            raise MemoryError()
        for i in range(self.n):
            arr[i] = self.vs[i]
        arr[self.n] = v
        mb = bytes(mac)
        memcpy(v.mac, <const char*>mb, 6)
        v.id = self._next_id
        v.vni = vni
        v.mtu = mtu
        v.sport_lo = sport_lo
        v.sport_hi = sport_hi
        v.dstport = <uint16_t>dstport
        v.proxy = proxy
        v.tos = tos
        v.ttl_inherit = ttl_inherit
        v.df_inherit = df_inherit
        v.label_inherit = label_inherit
        v.fdb = fdb.t
        v.l3miss = l3miss
        v.neigh = neigh.t if neigh is not None else NULL
        if fp_demux_build(&self.d, arr, self.n + 1) < 0:
            free(v)
            free(arr)
            raise MemoryError()
        free(self.vs)
        self.vs = arr
        self.n += 1
        self._next_id += 1
        self._fdbs[v.id] = (fdb, neigh)      # kept alive while the C side points at them
        return v.id

    def set_mac(self, uint32_t vid, mac) -> None:
        """Dataplane.set_mac: the VTEP's own MAC, as the own_mac check sees it."""
        cdef fp_vstate* v = self._v(vid)
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        mb = bytes(mac)
        memcpy(v.mac, <const char*>mb, 6)

    cdef fp_vstate* _v(self, uint32_t vid) except NULL:
        cdef int i
        for i in range(self.n):
            if self.vs[i].id == vid:
                return self.vs[i]
        raise KeyError(f"no VTEP {vid}")

    def rx(self, data, src_ip, double now, int outer_tos=0) -> tuple:
        """A datagram from ``src_ip`` as the RX thread decides it: ``(actions, punts)``."""
        cdef bytearray buf = bytearray(data)
        cdef uint8_t addr[16]
        cdef uint8_t vh[VNET_HDR_LEN]
        cdef fp_rx_action a
        cdef int fam = fp_parse_ip(src_ip, addr)
        if fam == 0:
            raise ValueError(f"invalid address {src_ip!r}")
        fp_rx_decide(&self.d, <uint8_t*>(<char*>buf), len(buf), fam, addr,
                     <uint8_t>outer_tos, now, 1, &a)
        punts = []
        if a.learn == LEARN_NEW or a.learn == LEARN_MOVED:
            punts.append((PUNT_LEARN, a.v.id, bytes(buf[VXLAN_HLEN + 6:VXLAN_HLEN + 12])))
        if a.kind != A_DELIVER:
            return [], punts
        fp_pack_vnet(&a.vnet, vh)
        return [Deliver(vh[:VNET_HDR_LEN], a.frame[:a.len])], punts

    def tx(self, uint32_t vid, data, double now) -> tuple:
        """A read from VTEP ``vid``'s TAP (virtio-net header + frame) as the TX thread decides
        it: ``(actions, punts)``; a TSO super-frame gives its segments' Transmits, remote by
        remote."""
        cdef fp_vstate* v = self._v(vid)
        cdef bytearray buf = bytearray(data)
        cdef fp_tx_action* a = &self.ta
        cdef int ri, si
        cdef fp_remote* r
        cdef uint8_t hdr[VXLAN_HLEN]
        fp_tx_decide(v, <uint8_t*>(<char*>buf), len(buf), now, 0, a)
        fp_tx_segments(a)
        segs = [a.segs[si].h[:a.segs[si].hlen]
                + (a.segs[si].p[:a.segs[si].plen] if a.segs[si].plen else b"")
                for si in range(a.nseg)]
        if a.kind == A_PUNT:
            return [], [(PUNT_FRAME, vid, s) for s in segs]
        if a.kind == A_REPLY:
            return [Deliver(a.reply[:VNET_HDR_LEN], a.reply[VNET_HDR_LEN:a.rlen])], []
        if a.kind != A_SEND:
            return [], []
        out = []
        for ri in range(a.nr):
            r = &a.rem[ri]
            fp_encode_header(hdr, <uint32_t>r.vni if r.vni >= 0 else v.vni)
            ip = fp_ip_str(r.family, r.addr)
            port = r.port if r.port else v.dstport
            for s in segs:
                out.append(Transmit(ip, port, a.sport, hdr[:VXLAN_HLEN] + s, a.tos, a.ttl))
        return out, []

    def stats(self, uint32_t vid) -> dict:
        cdef fp_vstate* v = self._v(vid)
        return fp_stats_json(&v.st[0], &v.st[1])

    def demux_stats(self) -> dict:
        return fp_stats_json(&self.d.st[0], &self.d.st[1])
