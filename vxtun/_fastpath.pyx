# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The fast path: vxtun's per-packet rules in C, run by two threads that never take the GIL.

Every rule here mirrors a pure-Python reference named in its docstring (vxtun/wire/*.py,
vxtun/fdb/table.py, vxtun/core/vtep.py); tests/unit/test_fastpath_*.py hold the two equal on
arbitrary input.  The pure core stays the specification: when they disagree, this file is wrong.

Threads (see ``Dataplane``):

* TX (TAP -> underlay): read a frame (or a 64 KB TSO super-frame) from each TAP, finish its
  checksum / cut it into MTU-sized TCP segments like a NIC would, look the destination MAC up in
  the VTEP's FDB (else the all-zeros default entry), and send one VXLAN datagram per segment to
  each remote (sendmmsg on the raw UDP socket, so the source port can follow the inner flow),
  or, for one unicast remote, the segments as UDP GSO trains from a UDP socket bound to the
  flow's source port (the kernel then handles one packet instead of ~45).  The inner ECN bits
  ride in the outer TOS / traffic class, given per send as a control message when not 0.
* RX (underlay -> TAP): read datagrams (recvmmsg; UDP GRO trains are split) with their outer
  TOS / traffic class (a control message), check them in vxlan_rcv()'s order, demux by VNI,
  learn the inner source MAC, carry the outer ECN mark inward (RFC 6040), and write the frame
  to the TAP behind a virtio-net header; in-order TCP segments of one flow are first merged into
  one GSO super-frame (LRO in software), so the stack above handles one packet.
* After its own work each thread tries the other direction once (the answer to what it just
  delivered or sent is often already there), under per-TAP / per-socket locks that keep every
  flow in order.

Anything rare goes to Python through a bounded queue and an eventfd (``Dataplane.fileno``):
ARP/NS frames when the proxy is on, frames with no FDB entry and no default entry (the core then
counts ``no_remote`` and raises an L2 miss), and FDB learn/move notifications (FdbChange events).
Attaching or detaching a VTEP or a socket stops both threads, changes the tables and restarts
them, so the threads never see a table change under them.
"""
from libc.errno cimport EAGAIN, EINTR, ENOBUFS, errno
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset
from posix.uio cimport iovec, writev
from posix.unistd cimport close, read, write

import socket as _socket

from vxtun.core.stats import DROP_REASONS
from vxtun.errors import FdbError
from vxtun.fdb.table import STATES, FdbEntry, Remote
from vxtun.wire.ether import mac_to_str

cdef extern from *:
    """
    #define FP_LE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    """
    int FP_LE

# Drop reasons, indexed as vxtun.core.stats.DROP_REASONS: the C counters use the same order.
cdef enum:
    D_TRUNCATED = 0
    D_NOT_VXLAN = 1
    D_VNI_NOT_FOUND = 2
    D_RESERVED_BITS = 3
    D_INNER_TRUNCATED = 4
    D_OWN_MAC = 5
    D_INVALID_SRC_MAC = 6
    D_STATIC_MAC_MOVED = 7
    D_NO_REMOTE = 8
    D_PROXY = 9
    D_BAD_FRAME = 10
    D_TX_ERROR = 11
    D_TAP_ERROR = 12
    D_ECN = 13

_C_REASONS = ("truncated", "not_vxlan", "vni_not_found", "reserved_bits", "inner_truncated",
              "own_mac", "invalid_src_mac", "static_mac_moved", "no_remote", "proxy",
              "bad_frame", "tx_error", "tap_error", "ecn")
if tuple(DROP_REASONS) != _C_REASONS or len(_C_REASONS) != NDROPS:
    raise ImportError("vxtun._fastpath was built for other DROP_REASONS; rebuild it")

# vxtun/fdb/table.py LEARN_* codes
cdef enum:
    LEARN_OFF = 0
    LEARN_REFRESH = 1
    LEARN_NEW = 2
    LEARN_MOVED = 3
    LEARN_PINNED = 4
    LEARN_FULL = 5

# FdbEntry.state, indexed as vxtun.fdb.table.STATES
cdef enum:
    ST_PERMANENT = 0
    ST_STATIC = 1
    ST_DYNAMIC = 2

if tuple(STATES) != ("permanent", "static", "dynamic"):
    raise ImportError("vxtun._fastpath was built for other FDB STATES; rebuild it")

cdef enum:
    ETH_HLEN = 14
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806
    ETH_P_IPV6 = 0x86DD
    VNET_HDR_LEN = 10
    F_NEEDS_CSUM = 1
    GSO_NONE = 0
    GSO_TCPV4 = 1
    GSO_TCPV6 = 4
    GSO_ECN = 0x80
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_CWR = 0x80

# Punted records (fp_punt.kind)
cdef enum:
    PUNT_FRAME = 1        # a frame from the TAP for Vtep.handle_frame
    PUNT_LEARN = 2        # data = the MAC just learned or moved: emit FdbChange

PUNT_KINDS = {"frame": PUNT_FRAME, "learn": PUNT_LEARN}


# --- byte helpers ------------------------------------------------------------------------

cdef inline uint32_t be16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]

cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline uint32_t le16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[1] << 8) | p[0]

cdef inline void put16(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF

cdef inline void put32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF

cdef inline void putle16(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = (v >> 8) & 0xFF

cdef inline uint64_t mac48(const uint8_t* p) noexcept nogil:
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24)
            | (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | p[5])

cdef inline double fp_now() noexcept nogil:
    """time.monotonic(): both read CLOCK_MONOTONIC, so C and Python timestamps compare."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9


# --- checksums (RFC 1071) ----------------------------------------------------------------

cdef inline uint32_t _fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s

cdef uint32_t _csum_native(const uint8_t* p, size_t n) noexcept nogil:
    """One's-complement sum of native-order 16-bit words, folded.

    The sum is byte-order independent up to a final byte swap (RFC 1071 section 2(B)), so the
    loop adds 32-bit native loads into a 64-bit accumulator and never looks at byte order.
    """
    cdef uint64_t s = 0
    cdef uint32_t w
    cdef uint16_t h
    cdef size_t i = 0
    while i + 4 <= n:
        memcpy(&w, p + i, 4)
        s += w
        i += 4
    if i + 2 <= n:
        memcpy(&h, p + i, 2)
        s += h
        i += 2
    if i < n:
        # the odd last byte is the high byte of a big-endian word padded with zero
        if FP_LE:
            s += p[i]
        else:
            s += <uint32_t>p[i] << 8
    return _fold(s)

cdef inline uint32_t _csum_be(const uint8_t* p, size_t n) noexcept nogil:
    cdef uint32_t s = _csum_native(p, n)
    if FP_LE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s

cdef uint32_t fp_csum_add(const uint8_t* p, size_t n, uint32_t initial) noexcept nogil:
    """offload.csum_add: big-endian word sum of ``p`` folded to 16 bits, plus ``initial``.

    A non-zero buffer never folds to 0 (one's complement has two zeros; the sum of non-zero
    data is 0xffff), exactly as the Python reference does.
    """
    cdef uint64_t s = _csum_be(p, n)
    s += initial
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s

cdef int fp_complete_checksum(uint8_t* f, size_t n, size_t start, size_t off) noexcept nogil:
    """offload.complete_checksum: what a NIC does for VIRTIO_NET_HDR_F_NEEDS_CSUM.

    The field holds the pseudo-header sum already (CHECKSUM_PARTIAL), so the sum from
    ``start`` to the end, complemented, is the final checksum.  -1 when out of bounds.
    """
    cdef size_t pos = start + off
    if start > n or pos + 2 > n or pos < start:
        return -1
    cdef uint32_t c = (~fp_csum_add(f + start, n - start, 0)) & 0xFFFF
    if c == 0 and off == 6:     # UDP: an all-zero result is sent as 0xffff (RFC 768)
        c = 0xFFFF
    put16(f + pos, c)
    return 0


# --- VXLAN header (vxtun/wire/vxlan.py) --------------------------------------------------

cdef int fp_decode_header(const uint8_t* p, size_t n, uint32_t* vni) noexcept nogil:
    """vxlan.decode_header: -1 when Linux accepts the header, else a drop-reason index."""
    if n < 8:
        return D_TRUNCATED
    if not (p[0] & 0x08):
        return D_NOT_VXLAN
    vni[0] = (<uint32_t>p[4] << 16) | (<uint32_t>p[5] << 8) | p[6]
    return -1

cdef bint fp_reserved_bits_set(const uint8_t* p) noexcept nogil:
    """vxlan.reserved_bits_set: any bit but the I flag and the VNI."""
    return p[0] != 0x08 or p[1] != 0 or p[2] != 0 or p[3] != 0 or p[7] != 0


# --- source port (vxlan.source_port: FNV-1a over the flow key, the kernel's fold and scale) --

cdef inline uint32_t _fnv(uint32_t h, const uint8_t* p, size_t n) noexcept nogil:
    cdef size_t i
    for i in range(n):
        h = (h ^ p[i]) * <uint32_t>0x01000193
    return h

cdef uint16_t fp_source_port(const uint8_t* f, size_t n, uint32_t lo, uint32_t hi) noexcept nogil:
    cdef uint32_t h = 0x811C9DC5
    cdef uint32_t etype, ihl, frag, l4
    cdef uint8_t proto
    if n >= ETH_HLEN:
        etype = be16(f + 12)
        if etype == ETH_P_IP and n >= ETH_HLEN + 20:
            ihl = (f[14] & 0x0F) * 4
            proto = f[23]
            h = _fnv(h, f + 26, 8)
            h = _fnv(h, &proto, 1)
            frag = ((f[20] & 0x3F) << 8) | f[21]
            l4 = ETH_HLEN + ihl
            if (proto == 6 or proto == 17) and frag == 0 and ihl >= 20 and n >= l4 + 4:
                h = _fnv(h, f + l4, 4)
        elif etype == ETH_P_IPV6 and n >= ETH_HLEN + 40:
            proto = f[20]
            h = _fnv(h, f + 22, 32)
            h = _fnv(h, &proto, 1)
            if (proto == 6 or proto == 17) and n >= ETH_HLEN + 44:
                h = _fnv(h, f + 54, 4)
        else:
            h = _fnv(h, f, 14)
    else:
        h = _fnv(h, f, n)
    # udp_flow_src_port(): hash ^= hash << 16, then scale into [lo, hi)
    h ^= h << 16
    return <uint16_t>(((<uint64_t>h * (hi - lo)) >> 32) + lo)


# --- virtio-net header for decapsulated frames (offload.rx_vnet_header) ------------------

cdef int _l4_info(const uint8_t* f, size_t n, size_t* l4off, int64_t* l4len, uint32_t* proto,
                  uint32_t* pseudo, uint32_t* iphl, int* v6) noexcept nogil:
    """offload._l4_info: 1 and the L4 facts for unfragmented IPv4 / plain IPv6, else 0."""
    cdef uint32_t etype, ihl, frag, tot, plen
    cdef int64_t ll
    if n < ETH_HLEN + 20:
        return 0
    etype = be16(f + 12)
    if etype == ETH_P_IP:
        if f[14] >> 4 != 4:
            return 0
        ihl = (f[14] & 0x0F) * 4
        if ihl < 20 or n < ETH_HLEN + ihl:
            return 0
        frag = ((f[20] & 0x3F) << 8) | f[21]
        if frag:
            return 0
        tot = be16(f + 16)
        ll = <int64_t>tot - ihl
        if ll <= 0 or ETH_HLEN + tot > n:
            return 0
        proto[0] = f[23]
        pseudo[0] = fp_csum_add(f + 26, 8, f[23] + <uint32_t>ll)
        l4off[0] = ETH_HLEN + ihl
        l4len[0] = ll
        iphl[0] = ihl
        v6[0] = 0
        return 1
    if etype == ETH_P_IPV6:
        if n < ETH_HLEN + 40 or f[14] >> 4 != 6:
            return 0
        plen = be16(f + 18)
        if plen == 0 or ETH_HLEN + 40 + plen > n:
            return 0
        proto[0] = f[20]
        pseudo[0] = fp_csum_add(f + 22, 32, f[20] + plen)
        l4off[0] = ETH_HLEN + 40
        l4len[0] = plen
        iphl[0] = 40
        v6[0] = 1
        return 1
    return 0

cdef void fp_rx_vnet_header(const uint8_t* f, size_t n, int mtu, fp_vnet* h) noexcept nogil:
    """offload.rx_vnet_header: keep a peer's partial checksum partial; mark TCP > MTU as GSO."""
    cdef size_t l4off
    cdef int64_t l4len
    cdef uint32_t proto, pseudo, iphl, coff, field, thl
    cdef int v6, gso_size
    cdef bint partial
    memset(h, 0, sizeof(fp_vnet))
    if not _l4_info(f, n, &l4off, &l4len, &proto, &pseudo, &iphl, &v6):
        return
    if proto == 6:
        if l4len < 20:
            return
        coff = 16
    elif proto == 17:
        if l4len < 8:
            return
        coff = 6
    else:
        return
    field = be16(f + l4off + coff)
    partial = field == pseudo and field != 0
    if proto == 6 and <int64_t>n - ETH_HLEN > mtu:
        thl = (f[l4off + 12] >> 4) * 4
        gso_size = mtu - <int>iphl - <int>thl
        if not partial or thl < 20 or gso_size <= 0:
            return
        h.flags = F_NEEDS_CSUM
        h.gso_type = GSO_TCPV6 if v6 else GSO_TCPV4
        h.hdr_len = <uint16_t>(l4off + thl)
        h.gso_size = <uint16_t>gso_size
        h.csum_start = <uint16_t>l4off
        h.csum_offset = <uint16_t>coff
        return
    if partial:
        h.flags = F_NEEDS_CSUM
        h.csum_start = <uint16_t>l4off
        h.csum_offset = <uint16_t>coff

cdef inline void _pack_vnet(const fp_vnet* h, uint8_t* out) noexcept nogil:
    out[0] = h.flags
    out[1] = h.gso_type
    putle16(out + 2, h.hdr_len)
    putle16(out + 4, h.gso_size)
    putle16(out + 6, h.csum_start)
    putle16(out + 8, h.csum_offset)


# --- ECN and the outer TOS (vxtun/wire/ecn.py: RFC 6040 as include/net/inet_ecn.h has it) --

cdef enum:
    ECN_MASK = 3
    ECN_NOT_ECT = 0
    ECN_ECT_1 = 1
    ECN_ECT_0 = 2
    ECN_CE = 3
    VLAN_TAGS_MAX = 3     # __vlan_get_protocol() gives up on the fourth tag
    IPV4_HLEN = 20
    IPV6_HLEN = 40

cdef uint8_t fp_encap_tos(const uint8_t* f, size_t n) noexcept nogil:
    """ecn.encap_tos(frame): INET_ECN_encapsulate(0, ip_tunnel_get_dsfield()): the inner ECN
    bits (CE leaves as ECT(0)) of the IPv4/IPv6 header behind Ethernet and up to 3 VLAN tags."""
    cdef size_t off = 12
    cdef uint32_t etype = 0
    cdef uint8_t ds
    cdef int i
    cdef bint found = False
    for i in range(VLAN_TAGS_MAX + 1):
        if n < off + 2:
            return 0
        etype = be16(f + off)
        if etype != 0x8100 and etype != 0x88A8:
            found = True
            break
        off += 4
    if not found or n < off + 4:
        return 0
    if etype == ETH_P_IP:
        ds = f[off + 3]
    elif etype == ETH_P_IPV6:
        ds = <uint8_t>(((f[off + 2] & 0x0F) << 4) | (f[off + 3] >> 4))
    else:
        return 0
    ds &= ECN_MASK
    return ECN_ECT_0 if ds == ECN_CE else ds

cdef inline void _ipv4_ecn_set(uint8_t* f, uint32_t add, uint8_t tos) noexcept nogil:
    """IP_ECN_set_ce / IP_ECN_set_ect1: new TOS, checksum + ``add`` with the kernel's carry."""
    cdef uint32_t check = be16(f + ETH_HLEN + 10) + add
    check = (check + (check >= 0xFFFF)) & 0xFFFF
    put16(f + ETH_HLEN + 10, check)
    f[ETH_HLEN + 1] = tos

cdef int fp_ecn_decap(uint8_t* f, size_t n, uint8_t outer) noexcept nogil:
    """ecn.decapsulate in place on an inner frame of at least ETH_HLEN bytes: -1 to deliver
    (the ECN mark carried over), else a drop reason (inner_truncated, ecn)."""
    cdef uint32_t etype = be16(f + 12)
    cdef uint8_t inner, e, o
    if etype == ETH_P_IP:
        if n < ETH_HLEN + IPV4_HLEN:
            return D_INNER_TRUNCATED
        inner = f[ETH_HLEN + 1]
    elif etype == ETH_P_IPV6:
        if n < ETH_HLEN + IPV6_HLEN:
            return D_INNER_TRUNCATED
        inner = <uint8_t>(((f[ETH_HLEN] & 0x0F) << 4) | (f[ETH_HLEN + 1] >> 4))
    else:
        return -1
    o = outer & ECN_MASK
    e = inner & ECN_MASK
    if e == ECN_NOT_ECT:
        return D_ECN if o == ECN_CE else -1
    if o == ECN_CE and e != ECN_CE:
        if etype == ETH_P_IP:
            _ipv4_ecn_set(f, 0xFFFB + ((inner + 1) & ECN_MASK), inner | ECN_CE)
        else:
            f[ETH_HLEN + 1] |= ECN_CE << 4
    elif o == ECN_ECT_1 and e == ECN_ECT_0:
        if etype == ETH_P_IP:
            _ipv4_ecn_set(f, 1, inner ^ ECN_MASK)
        else:
            f[ETH_HLEN + 1] ^= ECN_MASK << 4
    return -1


# --- TSO: cut a TCP super-frame from the TAP into MTU-sized segments (what a NIC does) ----

cdef struct fp_seg:
    const uint8_t* h      # the segment's headers (Ethernet .. TCP), or a whole frame
    uint32_t hlen
    const uint8_t* p      # payload (points into the super-frame), or NULL
    uint32_t plen

cdef enum:
    MAXSEG = 1024         # segments per super-frame (64 KB / 64-byte MSS)
    SEGH_MAX = 144        # Ethernet 14 + 802.1Q 4 + IPv4 60 (or IPv6 40) + TCP 60, rounded up

cdef int fp_tso_segment(const uint8_t* f, size_t n, uint32_t mss, uint8_t* hbuf,
                        fp_seg* segs) noexcept nogil:
    """Segment a VIRTIO_NET_HDR_GSO_TCPV4/6 frame; -1 if it is not one we can cut.

    Each segment gets a copy of the headers with, as the kernel's tcp_gso_segment() and
    inet_gso_segment() set them: IPv4 total length, ID + i and header checksum; IPv6 payload
    length; TCP sequence number + i*mss; FIN and PSH only on the last segment, CWR only on the
    first; and a complete TCP checksum (a real receiver drops a partial one).  One 802.1Q tag
    is allowed (a VLAN device on the TAP inherits its TSO).
    """
    cdef uint32_t etype, ihl, l3, l4, thl, hlen, plen, nseg, i, chunk, seq0, id0, tl, flags
    cdef uint32_t ps
    cdef int v6
    cdef uint8_t* h
    if n < ETH_HLEN + 4 + 40 or mss == 0:
        return -1
    l3 = ETH_HLEN
    etype = be16(f + 12)
    if etype == 0x8100:
        l3 = ETH_HLEN + 4
        etype = be16(f + 16)
    if etype == ETH_P_IP:
        if f[l3] >> 4 != 4 or f[l3 + 9] != 6:
            return -1
        ihl = (f[l3] & 0x0F) * 4
        if ihl < 20:
            return -1
        v6 = 0
    elif etype == ETH_P_IPV6:
        if f[l3] >> 4 != 6 or f[l3 + 6] != 6:
            return -1
        ihl = 40
        v6 = 1
    else:
        return -1
    l4 = l3 + ihl
    if n < l4 + 20:
        return -1
    thl = (f[l4 + 12] >> 4) * 4
    if thl < 20 or n < l4 + thl:
        return -1
    hlen = l4 + thl
    if hlen > SEGH_MAX:
        return -1
    plen = <uint32_t>(n - hlen)
    nseg = (plen + mss - 1) // mss if plen else 1
    if nseg > MAXSEG:
        return -1
    seq0 = be32(f + l4 + 4)
    id0 = be16(f + l3 + 4)
    for i in range(nseg):
        chunk = plen - i * mss
        if chunk > mss:
            chunk = mss
        h = hbuf + i * SEGH_MAX
        memcpy(h, f, hlen)
        if v6:
            put16(h + l3 + 4, hlen - (l3 + 40) + chunk)
            ps = _csum_be(h + l3 + 8, 32)
        else:
            put16(h + l3 + 2, hlen - l3 + chunk)
            put16(h + l3 + 4, id0 + i)
            h[l3 + 10] = 0
            h[l3 + 11] = 0
            put16(h + l3 + 10, (~_csum_be(h + l3, ihl)) & 0xFFFF)
            ps = _csum_be(h + l3 + 12, 8)
        put32(h + l4 + 4, seq0 + i * mss)
        flags = h[l4 + 13]
        if i + 1 < nseg:
            flags &= ~(TCP_FIN | TCP_PSH)
        if i > 0:
            flags &= ~TCP_CWR
        h[l4 + 13] = <uint8_t>flags
        h[l4 + 16] = 0
        h[l4 + 17] = 0
        tl = thl + chunk
        # pseudo header + TCP header + payload; thl is a multiple of 4, so the payload's
        # words line up and its sum can be added on its own
        ps = _fold(<uint64_t>ps + 6 + tl + _csum_be(h + l4, thl)
                   + _csum_be(f + hlen + i * mss, chunk))
        put16(h + l4 + 16, (~ps) & 0xFFFF)
        segs[i].h = h
        segs[i].hlen = hlen
        segs[i].p = f + hlen + i * mss
        segs[i].plen = chunk
    return <int>nseg


# --- Python wrappers of the wire rules (for the differential tests and the pure core's users)

def decode_header(const uint8_t[::1] data not None):
    """Same contract as vxtun.wire.vxlan.decode_header."""
    cdef uint32_t vni = 0
    cdef size_t n = data.shape[0]
    cdef int r = fp_decode_header(&data[0] if n else NULL, n, &vni)
    if r >= 0:
        return -1, DROP_REASONS[r]
    return vni, None


def reserved_bits_set(const uint8_t[::1] data not None) -> bool:
    """Same contract as vxtun.wire.vxlan.reserved_bits_set (the data must hold 8 bytes)."""
    if data.shape[0] < 8:
        raise IndexError("a VXLAN header is 8 bytes")
    return bool(fp_reserved_bits_set(&data[0]))


def source_port(const uint8_t[::1] frame not None, port_min, port_max) -> int:
    """Same contract as vxtun.wire.vxlan.source_port."""
    cdef size_t n = frame.shape[0]
    cdef uint32_t lo = port_min, hi = port_max
    if hi < lo:
        raise ValueError("port_max < port_min")
    return fp_source_port(&frame[0] if n else NULL, n, lo, hi)


def rx_vnet_header(const uint8_t[::1] frame not None, int mtu) -> bytes:
    """Same contract as vxtun.wire.offload.rx_vnet_header."""
    cdef fp_vnet h
    cdef uint8_t out[VNET_HDR_LEN]
    cdef size_t n = frame.shape[0]
    fp_rx_vnet_header(&frame[0] if n else NULL, n, mtu, &h)
    _pack_vnet(&h, out)
    return out[:VNET_HDR_LEN]


def csum_add(const uint8_t[::1] data not None, uint32_t initial=0) -> int:
    """Same contract as vxtun.wire.offload.csum_add."""
    cdef size_t n = data.shape[0]
    return fp_csum_add(&data[0] if n else NULL, n, initial)


def complete_checksum(uint8_t[::1] frame not None, size_t csum_start, size_t csum_offset):
    """Same contract as vxtun.wire.offload.complete_checksum (in place)."""
    cdef size_t n = frame.shape[0]
    if fp_complete_checksum(&frame[0] if n else NULL, n, csum_start, csum_offset) < 0:
        raise IndexError("checksum position outside the frame")


def encap_tos(const uint8_t[::1] frame not None) -> int:
    """Same contract as vxtun.wire.ecn.encap_tos(frame) (the device's tos is 0)."""
    cdef size_t n = frame.shape[0]
    return fp_encap_tos(&frame[0] if n else NULL, n)


def ecn_decapsulate(const uint8_t[::1] frame not None, int outer_tos):
    """Same contract as vxtun.wire.ecn.decapsulate (the frame must hold an Ethernet header)."""
    cdef size_t n = frame.shape[0]
    cdef bytearray out = bytearray(frame)
    cdef int r
    if n < ETH_HLEN:
        raise IndexError("an Ethernet header is 14 bytes")
    r = fp_ecn_decap(<uint8_t*>(<char*>out), n, <uint8_t>outer_tos)
    return (DROP_REASONS[r], bytes(frame)) if r >= 0 else (None, bytes(out))


def tso_segment(const uint8_t[::1] frame not None, uint32_t gso_size) -> list:
    """The segments a TCPV4/TCPV6 GSO ``frame`` becomes on the wire (what the TX thread sends)."""
    cdef size_t n = frame.shape[0]
    cdef uint8_t* hbuf = <uint8_t*>malloc(MAXSEG * SEGH_MAX)
    cdef fp_seg* segs = <fp_seg*>malloc(MAXSEG * sizeof(fp_seg))
    cdef int k, i
    try:
        if hbuf == NULL or segs == NULL:
            raise MemoryError()
        k = fp_tso_segment(&frame[0] if n else NULL, n, gso_size, hbuf, segs)
        if k < 0:
            raise ValueError("not a TCP super-frame this path can segment")
        return [segs[i].h[:segs[i].hlen] + segs[i].p[:segs[i].plen] for i in range(k)]
    finally:
        free(hbuf)
        free(segs)


# --- the FDB (vxtun/fdb/table.py) ---------------------------------------------------------
#
# An open-addressing hash table (linear probing, backward-shift deletion: no tombstones, so a
# lookup never walks more than a cluster) whose slots hold positions in a dense entry array.
# The index is kept at most half full, so a lookup is O(1) however large the table; the dense
# array makes expire() and entries() linear scans with no holes.  One mutex per table: the TX
# thread looks up, the RX thread learns, the Python thread runs the control operations.

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void* addr, size_t len, int advice)
    int MADV_HUGEPAGE

cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** p, size_t align, size_t size)

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

cdef inline bint _remote_eq(const fp_remote* a, const fp_remote* b) noexcept nogil:
    return (a.family == b.family and memcmp(a.addr, b.addr, 16) == 0 and a.port == b.port
            and a.vni == b.vni and a.via == b.via)

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

cdef void fdb_free(fp_fdb* t) noexcept nogil:
    if t == NULL:
        return
    _fdb_clear(t)
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
        _fdb_remove(t, slot, <uint32_t>p)
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
        _fdb_remove(t, slot, <uint32_t>p)
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

# return codes of the control operations (turned into FdbError messages by CFdb)
cdef enum:
    E_OK = 0
    E_REPLACE_GROUP = 1
    E_EXISTS = 2
    E_APPEND_UNICAST = 3
    E_NOMEM = 5
    E_NOT_FOUND = 6
    E_NO_DST = 7

cdef int _fdb_add(fp_fdb* t, uint64_t mac, const fp_remote* r, int state, double now, int op,
                  bint group, fp_snap* out) noexcept nogil:
    """Fdb.add under the lock; op 0 add, 1 append, 2 replace."""
    cdef uint32_t slot, i
    cdef int64_t p
    cdef fp_entry* e
    p = fdb_find(t, mac, &slot)
    if p >= 0 and _expired(t, &t.entries[p], now):
        _fdb_remove(t, slot, <uint32_t>p)
        p = -1
    if p < 0:
        if op == 2 and group:
            return E_REPLACE_GROUP
        p = _fdb_insert(t, mac)
        if p < 0:
            return E_NOMEM
        e = &t.entries[p]
        _entry_set_one(e, r)
        e.state = <uint8_t>state
        e.updated = now
        e.used = now
        return E_NOMEM if _snap(e, out) < 0 else E_OK
    e = &t.entries[p]
    if op == 0:
        return E_EXISTS
    if op == 2:
        if group:
            return E_REPLACE_GROUP
        _entry_set_one(e, r)
        e.state = <uint8_t>state
        e.updated = now
        return E_NOMEM if _snap(e, out) < 0 else E_OK
    if not group:
        if e.nr == 1 and _remote_eq(&e.r0, r):
            e.state = <uint8_t>state
            return E_NOMEM if _snap(e, out) < 0 else E_OK
        return E_APPEND_UNICAST
    # vxlan_fdb_update_existing() sets the state first; vxlan_fdb_append() treats a listed
    # destination as success: append is idempotent
    e.state = <uint8_t>state
    for i in range(e.nr):
        if _remote_eq(_rem(e, i), r):
            return E_NOMEM if _snap(e, out) < 0 else E_OK
    if _entry_append(e, r) < 0:
        return E_NOMEM
    return E_NOMEM if _snap(e, out) < 0 else E_OK

cdef int _fdb_delete(fp_fdb* t, uint64_t mac, int has_dst, int family, const uint8_t* addr,
                     uint32_t port, int32_t vni, fp_snap* out) noexcept nogil:
    """Fdb.delete under the lock (vni -1: any)."""
    cdef uint32_t slot, i, k
    cdef int64_t p
    cdef fp_entry* e
    cdef fp_remote* r
    cdef uint32_t nkeep = 0
    p = fdb_find(t, mac, &slot)
    if p < 0:
        return E_NOT_FOUND
    e = &t.entries[p]
    if not has_dst:
        if _snap(e, out) < 0:
            return E_NOMEM
        _fdb_remove(t, slot, <uint32_t>p)
        return E_OK
    for i in range(e.nr):
        r = _rem(e, i)
        if not (family != 0 and r.family == family and memcmp(r.addr, addr, 16) == 0
                and (port == 0 or r.port == port) and (vni < 0 or r.vni == vni)):
            nkeep += 1
    if nkeep == e.nr:
        return E_NO_DST
    if nkeep == 0:
        if _snap(e, out) < 0:
            return E_NOMEM
        _fdb_remove(t, slot, <uint32_t>p)
        return E_OK
    k = 0
    for i in range(e.nr):
        r = _rem(e, i)
        if not (r.family == family and memcmp(r.addr, addr, 16) == 0
                and (port == 0 or r.port == port) and (vni < 0 or r.vni == vni)):
            if k != i:
                _rem(e, k)[0] = r[0]
            k += 1
    e.nr = nkeep
    return E_NOMEM if _snap(e, out) < 0 else E_OK

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


cdef int _parse_ip(object ip, uint8_t* addr) except -1:
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


cdef object _ip_str(const fp_remote* r):
    if r.family == 4:
        return _socket.inet_ntop(_socket.AF_INET, r.addr[:4])
    return _socket.inet_ntop(_socket.AF_INET6, r.addr[:16])


cdef class CFdb:
    """vxtun.fdb.Fdb over C tables: same methods, same results, same FdbError messages.

    One difference by construction: addresses are stored in binary, so they come back in their
    canonical text form (``2001:db8::1``, never ``2001:DB8:0::1``), and a ``Remote.ip`` that is
    not an IP address is refused with FdbError.
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
        return self.t.ageing

    @ageing.setter
    def ageing(self, value) -> None:
        self.t.ageing = float(value)

    @property
    def maxaddress(self) -> int:
        return self.t.maxaddress

    @maxaddress.setter
    def maxaddress(self, value) -> None:
        self.t.maxaddress = int(value)

    @property
    def learning(self) -> bool:
        return bool(self.t.learning)

    @learning.setter
    def learning(self, value) -> None:
        self.t.learning = 1 if value else 0

    # --- conversions ---------------------------------------------------------------------

    cdef int _remote_in(self, object remote, fp_remote* r) except -1:
        memset(r, 0, sizeof(fp_remote))
        fam = _parse_ip(remote.ip, r.addr)
        if fam == 0:
            raise FdbError(f"invalid dst address {remote.ip!r}")
        r.family = fam
        port = remote.port or 0
        if not 0 <= port <= 65535:
            raise FdbError(f"invalid port {port}")
        r.port = port
        if remote.vni is None:
            r.vni = -1
        else:
            if not 0 <= remote.vni < (1 << 24):
                raise FdbError(f"invalid vni {remote.vni}")
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
        return Remote(_ip_str(r), r.port, None if r.vni < 0 else r.vni,
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
        fam = _parse_ip(ip, addr)
        if fam == 0:
            raise FdbError(f"invalid address {ip!r}")
        return fdb_learn(self.t, key, fam, addr, now)

    def expire(self, double now) -> list:
        """Fdb.expire (vxlan_cleanup): remove and return the dynamic entries gone stale."""
        cdef fp_snap* arr = NULL
        cdef uint32_t n = 0, i
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            _fdb_drain(self.t, 0, now, &arr, &n)
            pthread_mutex_unlock(&self.t.lock)
        try:
            return [self._snap_out(&arr[i]) for i in range(n)]
        finally:
            free(arr)

    # --- the control path ----------------------------------------------------------------

    def add(self, mac, remote, state: str = "permanent", double now=0.0, op: str = "add"):
        """Fdb.add: ``bridge fdb {add,append,replace}``; FdbError and no change if refused."""
        cdef fp_remote r
        cdef fp_snap s
        cdef int code, opc, st
        cdef bint group
        if state not in STATES:
            raise FdbError(f"unknown fdb state {state!r}")
        if op not in ("add", "append", "replace"):
            raise FdbError(f"unknown fdb operation {op!r}")
        opc = ("add", "append", "replace").index(op)
        st = STATES.index(state)
        cdef uint64_t key = _mac_key(mac)
        group = key == 0 or (key >> 40) & 1
        self._remote_in(remote, &r)
        s.rem = NULL
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            code = _fdb_add(self.t, key, &r, st, now, opc, group, &s)
            pthread_mutex_unlock(&self.t.lock)
        if code == E_OK:
            return self._snap_out(&s)
        m = mac_to_str(bytes(mac))
        if code == E_REPLACE_GROUP:
            raise FdbError(f"cannot replace {m}: the all-zeros and multicast "
                           "entries are flood lists; use append and del")
        if code == E_EXISTS:
            raise FdbError(f"fdb entry {m} already exists (use replace, or append "
                           "for the all-zeros or a multicast MAC)")
        if code == E_APPEND_UNICAST:
            raise FdbError(f"cannot append to {m}: only the all-zeros or a "
                           "multicast MAC can have several destinations; use replace")
        raise MemoryError()

    def delete(self, mac, dst=None, port: int = 0, vni=None):
        """Fdb.delete: ``bridge fdb del``, one remote when ``dst`` is given, else the entry."""
        cdef uint8_t addr[16]
        cdef fp_snap s
        cdef int code, fam = 0, has_dst = dst is not None
        cdef uint32_t cport = port or 0
        cdef int32_t cvni = -1 if vni is None else vni
        cdef uint64_t key = _mac_key(mac)
        memset(addr, 0, 16)
        if has_dst:
            fam = _parse_ip(dst, addr)
        s.rem = NULL
        with nogil:
            pthread_mutex_lock(&self.t.lock)
            code = _fdb_delete(self.t, key, has_dst, fam, addr, cport, cvni, &s)
            pthread_mutex_unlock(&self.t.lock)
        if code == E_OK:
            return self._snap_out(&s)
        m = mac_to_str(bytes(mac))
        if code == E_NOT_FOUND:
            raise FdbError(f"fdb entry {m} does not exist")
        if code == E_NO_DST:
            raise FdbError(f"fdb entry {m} has no destination {dst}")
        raise MemoryError()

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

    # --- inspection ----------------------------------------------------------------------

    def get(self, mac):
        """Fdb.get: the entry (no expiry check), or None."""
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
            pthread_mutex_unlock(&self.t.lock)
        if p < 0:
            return None
        if rc < 0:
            raise MemoryError()
        return self._snap_out(&s)

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

    def time_lookups(self, keys, int rounds=1, double now=0.0) -> float:
        """Nanoseconds per lookup as the TX thread does it (C, no Python objects), over
        ``keys`` (6-byte MACs) repeated ``rounds`` times: for the FDB-scaling benchmark."""
        cdef uint32_t n = len(keys), i, cap = 16
        cdef int r, hits = 0
        cdef uint64_t* k = <uint64_t*>malloc((n if n else 1) * sizeof(uint64_t))
        cdef fp_remote* buf = <fp_remote*>malloc(16 * sizeof(fp_remote))
        cdef double t0, t1
        if k == NULL or buf == NULL:
            free(k)
            free(buf)
            raise MemoryError()
        try:
            for i in range(n):
                k[i] = _mac_key(keys[i])
            with nogil:
                t0 = fp_now()
                for r in range(rounds):
                    for i in range(n):
                        if fdb_lookup_copy(self.t, k[i], now, &buf, &cap) >= 0:
                            hits += 1
                t1 = fp_now()
        finally:
            free(k)
            free(buf)
        return (t1 - t0) * 1e9 / max(1, n * rounds)

    @staticmethod
    def entry_size() -> int:
        """sizeof(fp_entry): the bytes of one entry in the dense array."""
        return sizeof(fp_entry)


# --- the dataplane ------------------------------------------------------------------------

cdef enum:
    TXBATCH = 64          # datagrams per sendmmsg()
    RXBATCH = 32          # datagrams per recvmmsg()
    BURST = 64            # frames read from one TAP before looking at the others
    SMALLBUF = 2048       # a frame up to this size can wait for the next ones' sendmmsg()
    TAPBUF = 65536 + VNET_HDR_LEN + 64
    RXHEAD = 16           # room before each datagram: the vnet header overwrites the VXLAN one
    RXBUF = 65536 + RXHEAD + 64
    CTRLLEN = 64
    SOL_UDP = 17
    UDP_SEGMENT = 103
    UDP_GRO = 104
    IPV6_AUTOFLOWLABEL = 70
    GSO_MAXSEG = 64       # UDP_MAX_SEGMENTS
    GSO_MAXBYTES = 65000  # a UDP GSO send is still one IP datagram: under 64 KB in all


# --- the punt queue: rare frames and notifications for the Python loop ----------------------

cdef int q_push(fp_queue* q, uint32_t kind, uint32_t vid, const uint8_t* a, uint32_t na,
                const uint8_t* b, uint32_t nb) noexcept nogil:
    """Queue a copy of a+b for Python; -1 when the queue is full (the caller counts a drop)."""
    cdef uint8_t* data = <uint8_t*>malloc(na + nb + 1)
    cdef uint32_t i
    cdef bint wake
    cdef uint64_t one = 1
    if data == NULL:
        return -1
    memcpy(data, a, na)
    if nb:
        memcpy(data + na, b, nb)
    pthread_mutex_lock(&q.lock)
    if q.count == QLEN:
        q.lost += 1
        pthread_mutex_unlock(&q.lock)
        free(data)
        return -1
    i = (q.head + q.count) % QLEN
    q.slots[i].kind = kind
    q.slots[i].vid = vid
    q.slots[i].len = na + nb
    q.slots[i].data = data
    q.count += 1
    wake = q.count == 1
    pthread_mutex_unlock(&q.lock)
    if wake:        # Python drains until empty, so one wake-up per non-empty period is enough
        write(q.efd, &one, 8)
    return 0


# --- demux and the receive checks (Demux.handle_datagram + Vtep.handle_datagram) -----------

cdef inline fp_vtep* _demux(fp_underlay* us, uint32_t vni) noexcept nogil:
    """vxlan_vs_find_vni(): the VTEP serving ``vni`` on this socket, or NULL."""
    cdef uint32_t i
    cdef fp_vtep* v
    if us.vnis == NULL:
        return NULL
    i = (vni * <uint32_t>2654435761) & us.vmask
    while True:
        v = <fp_vtep*>us.vnis[i]
        if v == NULL or v.vni == vni:
            return v
        i = (i + 1) & us.vmask

cdef int fp_rx_check(fp_underlay* us, const uint8_t* d, size_t n, fp_vtep** out) noexcept nogil:
    """vxlan_rcv()'s checks, in its order: -1 to deliver, else a drop reason (``*out`` is the
    VTEP once the VNI is known, so the caller counts the drop on the socket or on the VTEP)."""
    cdef uint32_t vni = 0
    cdef int r = fp_decode_header(d, n, &vni)
    cdef fp_vtep* v
    cdef const uint8_t* src
    out[0] = NULL
    if r >= 0:
        return r
    v = _demux(us, vni)
    if v == NULL:
        return D_VNI_NOT_FOUND
    out[0] = v
    if fp_reserved_bits_set(d):
        return D_RESERVED_BITS
    if n < 8 + ETH_HLEN:
        return D_INNER_TRUNCATED
    src = d + 8 + 6
    if memcmp(src, v.mac, 6) == 0:
        return D_OWN_MAC
    if (src[0] & 1) or mac48(src) == 0:
        return D_INVALID_SRC_MAC
    return -1


def decap(const uint8_t[::1] data not None, uint32_t vni, mac, int mtu, int outer_tos=0):
    """The fast path's receive checks on one datagram for a socket serving only ``vni`` with
    own MAC ``mac`` (learning aside), received under the outer TOS / traffic class
    ``outer_tos``: ``(None, vnet, frame)`` or ``(reason, None, None)``."""
    cdef fp_underlay us
    cdef fp_vtep v
    cdef void* table[2]
    cdef fp_vtep* out
    cdef fp_vnet h
    cdef uint8_t vh[VNET_HDR_LEN]
    cdef size_t n = data.shape[0]
    cdef int r
    memset(&us, 0, sizeof(us))
    memset(&v, 0, sizeof(v))
    if len(mac) != 6:
        raise ValueError("a MAC address is 6 bytes")
    cdef bytes mb = bytes(mac)
    memcpy(v.mac, <const char*>mb, 6)
    v.vni = vni
    v.mtu = mtu
    table[0] = NULL
    table[1] = NULL
    table[(vni * <uint32_t>2654435761) & 1] = &v
    us.vnis = table
    us.vmask = 1
    r = fp_rx_check(&us, &data[0] if n else NULL, n, &out)
    if r >= 0:
        return DROP_REASONS[r], None, None
    cdef bytearray f = bytearray(data[8:])
    cdef uint8_t* fp = <uint8_t*>(<char*>f)
    r = fp_ecn_decap(fp, n - 8, <uint8_t>outer_tos)
    if r >= 0:
        return DROP_REASONS[r], None, None
    fp_rx_vnet_header(fp, n - 8, mtu, &h)
    _pack_vnet(&h, vh)
    return None, vh[:VNET_HDR_LEN], bytes(f)


# --- the TX thread: TAP -> underlay ---------------------------------------------------------

cdef struct fp_txctx:
    int tid               # which counter block this thread writes (0 TX, 1 RX thread)
    uint8_t* buf          # one read from a TAP: virtio-net header + frame
    uint8_t* segh         # segment headers (MAXSEG * SEGH_MAX)
    fp_seg* segs
    fp_remote* rem        # the remotes of the current frame, copied under the FDB lock
    uint32_t remcap
    mmsghdr* msgs
    iovec* iov
    uint8_t* uh           # UDP + VXLAN header of each datagram (16 bytes each)
    sockaddr_in6* addrs
    uint64_t tosctl[4]    # the IP_TOS / IPV6_TCLASS control message of the current frame
    # Small frames of one burst share one sendmmsg(): each is copied out of ``buf`` (the next
    # read reuses it) into a slot of ``small``; ``pend`` datagrams wait in msgs[0:pend], their
    # control messages in ``ctl`` (4 words a datagram).  Flushed at the end of the burst and
    # before any send that cannot wait, so a flow stays in order.
    uint8_t* small
    uint64_t* ctl
    int pend
    int npend_frames

cdef void _txctx_free(fp_txctx* c) noexcept nogil:
    free(c.buf)
    free(c.segh)
    free(c.segs)
    free(c.rem)
    free(c.msgs)
    free(c.iov)
    free(c.uh)
    free(c.addrs)
    free(c.small)
    free(c.ctl)

cdef int _txctx_init(fp_txctx* c) noexcept nogil:
    memset(c, 0, sizeof(fp_txctx))
    c.buf = <uint8_t*>malloc(TAPBUF)
    c.segh = <uint8_t*>malloc(MAXSEG * SEGH_MAX)
    c.segs = <fp_seg*>malloc(MAXSEG * sizeof(fp_seg))
    c.remcap = 16
    c.rem = <fp_remote*>malloc(16 * sizeof(fp_remote))
    c.msgs = <mmsghdr*>calloc(TXBATCH, sizeof(mmsghdr))
    c.iov = <iovec*>calloc(TXBATCH * 3, sizeof(iovec))
    c.uh = <uint8_t*>malloc(TXBATCH * 16)
    c.addrs = <sockaddr_in6*>calloc(TXBATCH, sizeof(sockaddr_in6))
    c.small = <uint8_t*>malloc(TXBATCH * SMALLBUF)
    c.ctl = <uint64_t*>calloc(TXBATCH * 4, sizeof(uint64_t))
    if (c.small == NULL or c.ctl == NULL or c.buf == NULL or c.segh == NULL or c.segs == NULL or c.rem == NULL or c.msgs == NULL
            or c.iov == NULL or c.uh == NULL or c.addrs == NULL):
        _txctx_free(c)
        return -1
    return 0

cdef void _tx_flush(fp_txctx* c, fp_vtep* v, int m) noexcept nogil:
    """sendmmsg() the batch; wait for room when the socket is full rather than drop."""
    cdef int i = 0, r, waits = 0
    cdef pollfd pfd
    while i < m:
        r = sendmmsg(v.tx_fd, c.msgs + i, m - i, 0)
        if r > 0:
            i += r
            continue
        if (errno == EAGAIN or errno == ENOBUFS) and waits < 50:
            pfd.fd = v.tx_fd
            pfd.events = POLLOUT
            pfd.revents = 0
            poll(&pfd, 1, 2)
            waits += 1
            continue
        if errno == EINTR:
            continue
        v.st[c.tid].drops[D_TX_ERROR] += 1      # no route, message too long, ...: skip this one
        i += 1

cdef inline void _tx_pend_flush(fp_txctx* c, fp_vtep* v) noexcept nogil:
    """Send the small frames' datagrams still waiting (see fp_txctx.pend)."""
    if c.pend:
        _tx_flush(c, v, c.pend)
    c.pend = 0
    c.npend_frames = 0

cdef inline uint16_t _htons(uint32_t v) noexcept nogil:
    cdef uint8_t b[2]
    cdef uint16_t r
    b[0] = (v >> 8) & 0xFF
    b[1] = v & 0xFF
    memcpy(&r, b, 2)
    return r

cdef sock_filter _DROP_ALL[1]
_DROP_ALL[0].code = 0x06        # BPF_RET | BPF_K 0: the socket receives nothing
_DROP_ALL[0].jt = 0
_DROP_ALL[0].jf = 0
_DROP_ALL[0].k = 0

cdef int _open_gso_sock(fp_vtep* v, uint32_t sport) noexcept nogil:
    """A UDP socket bound to (local, sport) that sends like tx_fd does: same TTL, no DF, flow
    label 0, receives nothing.  -1 if the port is taken (the caller falls back to tx_fd)."""
    cdef int fam = v.us.family
    cdef int fd, one = 1, zero = 0, dont, size = 4 << 20
    cdef sockaddr_in a4
    cdef sockaddr_in6 a6
    cdef sock_fprog prog
    fd = socket(AF_INET if fam == 4 else AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd < 0:
        return -1
    prog.len = 1
    prog.filter = _DROP_ALL
    setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog))
    if setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(int)) < 0:
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(int))
    if fam == 4:
        dont = IP_PMTUDISC_DONT
        setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &dont, sizeof(int))
        if v.ttl:
            setsockopt(fd, IPPROTO_IP, IP_TTL, &v.ttl, sizeof(int))
        memset(&a4, 0, sizeof(a4))
        a4.sin_family = AF_INET
        a4.sin_port = _htons(sport)
        memcpy(&a4.sin_addr, v.local, 4)
        if bind(fd, <sockaddr*>&a4, sizeof(a4)) < 0:
            close(fd)
            return -1
    else:
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(int))
        setsockopt(fd, IPPROTO_IPV6, IPV6_AUTOFLOWLABEL, &zero, sizeof(int))
        dont = IPV6_PMTUDISC_DONT
        setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &dont, sizeof(int))
        if v.ttl:
            setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &v.ttl, sizeof(int))
        memset(&a6, 0, sizeof(a6))
        a6.sin6_family = AF_INET6
        a6.sin6_port = _htons(sport)
        memcpy(a6.sin6_addr.s6_addr, v.local, 16)
        if bind(fd, <sockaddr*>&a6, sizeof(a6)) < 0:
            close(fd)
            return -1
    return fd

cdef int _gso_fd(fp_vtep* v, uint32_t sport, double now) noexcept nogil:
    """The GSO socket of ``sport`` (opened on first use; the least recently used idle one is
    closed when all slots are taken), or -1 to send through tx_fd."""
    cdef int k = v.gso_slot[sport], i, best = -1, fd
    if k == 255:
        return -1
    if k:
        v.gso[k - 1].used = now
        return v.gso[k - 1].fd
    for i in range(GSO_SOCKS):
        if v.gso[i].fd < 0:
            best = i
            break
        if now - v.gso[i].used > 1.0 and (best < 0 or v.gso[i].used < v.gso[best].used):
            best = i
    if best < 0:
        return -1
    fd = _open_gso_sock(v, sport)
    if fd < 0:
        v.gso_slot[sport] = 255
        return -1
    if v.gso[best].fd >= 0:
        close(v.gso[best].fd)
        v.gso_slot[v.gso[best].sport] = 0
    v.gso[best].fd = fd
    v.gso[best].sport = sport
    v.gso[best].used = now
    v.gso_slot[sport] = <uint8_t>(best + 1)
    return fd

cdef void _gso_close_all(fp_vtep* v) noexcept nogil:
    cdef int i
    if v.gso != NULL:
        for i in range(GSO_SOCKS):
            if v.gso[i].fd >= 0:
                close(v.gso[i].fd)
    free(v.gso)
    free(v.gso_slot)
    v.gso = NULL
    v.gso_slot = NULL
    v.gso_on = 0

cdef inline size_t _put_tos_cmsg(void* buf, int fam, uint8_t tos) noexcept nogil:
    """Write the control message that gives one send the outer TOS / traffic class ``tos``
    (IP_TOS / IPV6_TCLASS, an int) at ``buf`` (aligned); its CMSG_SPACE.  The sockets' own
    value is 0, so a datagram with TOS 0 goes without one."""
    cdef cmsghdr* cm = <cmsghdr*>buf
    cdef int val = tos
    memset(buf, 0, CMSG_SPACE(sizeof(int)))
    cm.cmsg_level = IPPROTO_IP if fam == 4 else IPPROTO_IPV6
    cm.cmsg_type = IP_TOS if fam == 4 else IPV6_TCLASS
    cm.cmsg_len = CMSG_LEN(sizeof(int))
    memcpy(CMSG_DATA(cm), &val, sizeof(int))
    return CMSG_SPACE(sizeof(int))

cdef int _tx_gso(fp_txctx* c, fp_vtep* v, fp_remote* r, int nseg, int fd,
                 uint8_t tos) noexcept nogil:
    """Send the segments as UDP GSO trains (UDP_SEGMENT): the kernel, not us, cuts them into
    datagrams, and a peer with UDP_GRO can take the train whole.  Every segment but the last
    has the same size (headers + MSS), as UDP GSO requires.  Every datagram of the train gets
    the outer TOS ``tos``.  -1: send through tx_fd instead."""
    cdef uint32_t dport = r.port if r.port else v.dstport
    cdef uint32_t vni = <uint32_t>r.vni if r.vni >= 0 else v.vni
    cdef uint8_t* vx = c.uh
    cdef uint32_t gso_size = 8 + c.segs[0].hlen + c.segs[0].plen
    cdef int per = GSO_MAXBYTES // gso_size
    cdef int i = 0, k, j, waits = 0
    cdef ssize_t sent
    cdef msghdr mh
    cdef sockaddr_in a4
    cdef sockaddr_in6 a6
    cdef uint64_t ctrl[8]          # 64 bytes, aligned for cmsghdr
    cdef size_t clen
    cdef cmsghdr* cm
    cdef uint16_t gs = <uint16_t>gso_size
    cdef pollfd pfd
    if per > GSO_MAXSEG:
        per = GSO_MAXSEG
    if per < 2:
        return -1
    vx[0] = 0x08
    vx[1] = 0
    vx[2] = 0
    vx[3] = 0
    vx[4] = (vni >> 16) & 0xFF
    vx[5] = (vni >> 8) & 0xFF
    vx[6] = vni & 0xFF
    vx[7] = 0
    memset(&mh, 0, sizeof(mh))
    if v.us.family == 4:
        memset(&a4, 0, sizeof(a4))
        a4.sin_family = AF_INET
        a4.sin_port = _htons(dport)
        memcpy(&a4.sin_addr, r.addr, 4)
        mh.msg_name = &a4
        mh.msg_namelen = sizeof(a4)
    else:
        memset(&a6, 0, sizeof(a6))
        a6.sin6_family = AF_INET6
        a6.sin6_port = _htons(dport)
        memcpy(a6.sin6_addr.s6_addr, r.addr, 16)
        mh.msg_name = &a6
        mh.msg_namelen = sizeof(a6)
    while i < nseg:
        k = nseg - i if nseg - i < per else per
        for j in range(k):
            c.iov[3 * j].iov_base = vx
            c.iov[3 * j].iov_len = 8
            c.iov[3 * j + 1].iov_base = <void*>c.segs[i + j].h
            c.iov[3 * j + 1].iov_len = c.segs[i + j].hlen
            c.iov[3 * j + 2].iov_base = <void*>c.segs[i + j].p
            c.iov[3 * j + 2].iov_len = c.segs[i + j].plen
        mh.msg_iov = c.iov
        mh.msg_iovlen = 3 * k
        clen = 0
        if k > 1:
            memset(ctrl, 0, sizeof(ctrl))
            cm = <cmsghdr*>ctrl
            cm.cmsg_level = SOL_UDP
            cm.cmsg_type = UDP_SEGMENT
            cm.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            memcpy(CMSG_DATA(cm), &gs, sizeof(uint16_t))
            clen = CMSG_SPACE(sizeof(uint16_t))
        if tos:
            clen += _put_tos_cmsg(<uint8_t*>ctrl + clen, v.us.family, tos)
        mh.msg_control = ctrl if clen else NULL
        mh.msg_controllen = clen
        sent = sendmsg(fd, &mh, 0)
        if sent < 0:
            if (errno == EAGAIN or errno == ENOBUFS) and waits < 50:
                pfd.fd = fd
                pfd.events = POLLOUT
                pfd.revents = 0
                poll(&pfd, 1, 2)
                waits += 1
                continue
            if errno == EINTR:
                continue
            if i == 0:
                return -1           # this kernel or route refuses GSO: the caller uses tx_fd
            v.st[c.tid].drops[D_TX_ERROR] += k
        i += k
    return 0

cdef inline bint _is_multicast(const fp_remote* r) noexcept nogil:
    if r.family == 4:
        return (r.addr[0] & 0xF0) == 0xE0
    return r.addr[0] == 0xFF

cdef void _tx_send(fp_txctx* c, fp_vtep* v, int nr, int nseg, uint16_t sport,
                   uint8_t tos) noexcept nogil:
    """One VXLAN datagram per segment per remote (head-end replication for flood lists), each
    with the outer TOS / traffic class ``tos`` (a control message, when it is not 0)."""
    cdef int ri, si, m = 0
    cdef fp_remote* r
    cdef fp_seg* s
    cdef uint8_t* uh
    cdef uint32_t dport, vni, ulen
    cdef sockaddr_in* a4
    cdef sockaddr_in6* a6
    cdef msghdr* mh
    cdef int fam = v.us.family, gfd
    cdef size_t tlen = 0
    cdef bint defer = nseg == 1 and nr <= TXBATCH and c.segs[0].hlen <= SMALLBUF
    cdef void* ctl
    cdef uint8_t* slot
    if nseg > 1 and nr == 1 and v.gso_on and c.rem[0].family == fam \
            and not _is_multicast(&c.rem[0]):
        gfd = _gso_fd(v, sport, fp_now())
        if gfd >= 0:
            _tx_pend_flush(c, v)                # the frames read before go first
            if _tx_gso(c, v, &c.rem[0], nseg, gfd, tos) == 0:
                return
    if not defer or c.pend + nr > TXBATCH:
        _tx_pend_flush(c, v)
    m = c.pend
    if defer:
        # the next read reuses c.buf: the frame waits in a slot of its own
        slot = c.small + c.npend_frames * SMALLBUF
        memcpy(slot, c.segs[0].h, c.segs[0].hlen)
        c.segs[0].h = slot
        c.npend_frames += 1
    ctl = &c.ctl[4 * m] if defer else <void*>c.tosctl
    if tos:
        # one control message for all datagrams of the frame: they have the same TOS
        tlen = _put_tos_cmsg(ctl, fam, tos)
    for ri in range(nr):
        r = &c.rem[ri]
        if r.family != fam:
            v.st[c.tid].drops[D_TX_ERROR] += nseg
            continue
        dport = r.port if r.port else v.dstport
        vni = <uint32_t>r.vni if r.vni >= 0 else v.vni
        for si in range(nseg):
            s = &c.segs[si]
            uh = c.uh + m * 16
            ulen = 16 + s.hlen + s.plen
            put16(uh, sport)
            put16(uh + 2, dport)
            put16(uh + 4, ulen if ulen <= 0xFFFF else 0)
            uh[6] = 0       # IPv4: no UDP checksum, like the kernel's default (noudpcsum);
            uh[7] = 0       # IPv6: the kernel fills it in (IPV6_CHECKSUM on the raw socket)
            uh[8] = 0x08
            uh[9] = 0
            uh[10] = 0
            uh[11] = 0
            uh[12] = (vni >> 16) & 0xFF
            uh[13] = (vni >> 8) & 0xFF
            uh[14] = vni & 0xFF
            uh[15] = 0
            mh = &c.msgs[m].msg_hdr
            if fam == 4:
                a4 = <sockaddr_in*>&c.addrs[m]
                memset(a4, 0, sizeof(sockaddr_in))
                a4.sin_family = AF_INET
                memcpy(&a4.sin_addr, r.addr, 4)
                mh.msg_namelen = sizeof(sockaddr_in)
            else:
                a6 = &c.addrs[m]
                memset(a6, 0, sizeof(sockaddr_in6))
                a6.sin6_family = AF_INET6
                memcpy(a6.sin6_addr.s6_addr, r.addr, 16)
                mh.msg_namelen = sizeof(sockaddr_in6)
            mh.msg_name = &c.addrs[m]
            c.iov[3 * m].iov_base = uh
            c.iov[3 * m].iov_len = 16
            c.iov[3 * m + 1].iov_base = <void*>s.h
            c.iov[3 * m + 1].iov_len = s.hlen
            c.iov[3 * m + 2].iov_base = <void*>s.p
            c.iov[3 * m + 2].iov_len = s.plen
            mh.msg_iov = &c.iov[3 * m]
            mh.msg_iovlen = 3 if s.plen else 2
            mh.msg_control = ctl if tlen else NULL
            mh.msg_controllen = tlen
            mh.msg_flags = 0
            m += 1
            if m == TXBATCH:            # never when defer: the frame's datagrams fit
                _tx_flush(c, v, m)
                m = 0
    if defer:
        c.pend = m
        if c.pend == TXBATCH or c.npend_frames == TXBATCH:
            _tx_pend_flush(c, v)
        return
    if m:
        _tx_flush(c, v, m)

cdef inline bint _is_ns(const uint8_t* f, size_t n) noexcept nogil:
    """vtep._is_ns: IPv6 + ICMPv6 Neighbour Solicitation, no extension headers."""
    return n >= ETH_HLEN + 40 + 24 and f[20] == 58 and f[54] == 135 and f[55] == 0

cdef void _tx_punt(fp_dp* dp, fp_vtep* v, fp_txctx* c, int nseg, int reason) noexcept nogil:
    cdef int i
    for i in range(nseg):
        if q_push(&dp.q, PUNT_FRAME, v.id, c.segs[i].h, c.segs[i].hlen, c.segs[i].p,
                  c.segs[i].plen) < 0:
            v.st[c.tid].drops[reason] += 1     # queue full: the drop the core would have counted

cdef void _tx_frame(fp_dp* dp, fp_vtep* v, fp_txctx* c, size_t len, double now) noexcept nogil:
    """Vtep.handle_frame for one read from the TAP (a frame, or a TSO super-frame)."""
    cdef uint8_t* f = c.buf + VNET_HDR_LEN
    cdef size_t n
    cdef uint8_t flags, gso
    cdef uint32_t etype, i
    cdef int nseg, nr
    cdef uint16_t sport
    cdef uint64_t nbytes = 0
    if len < VNET_HDR_LEN + ETH_HLEN:
        v.st[c.tid].drops[D_BAD_FRAME] += 1
        return
    n = len - VNET_HDR_LEN
    flags = c.buf[0]
    gso = c.buf[1] & ~GSO_ECN
    if gso == GSO_NONE:
        # the TAP left the checksum to "the hardware" (TUN_F_CSUM): finish it like a NIC;
        # csum_start counts from the Ethernet header, as it does on a TAP
        if flags & F_NEEDS_CSUM:
            if fp_complete_checksum(f, n, le16(c.buf + 6), le16(c.buf + 8)) < 0:
                v.st[c.tid].drops[D_BAD_FRAME] += 1
                return
        nseg = 1
        c.segs[0].h = f
        c.segs[0].hlen = <uint32_t>n
        c.segs[0].p = NULL
        c.segs[0].plen = 0
    elif gso == GSO_TCPV4 or gso == GSO_TCPV6:
        nseg = fp_tso_segment(f, n, le16(c.buf + 4), c.segh, c.segs)
        if nseg < 0:
            v.st[c.tid].drops[D_BAD_FRAME] += 1
            return
    else:
        v.st[c.tid].drops[D_BAD_FRAME] += 1     # UFO/USO: never enabled with TUNSETOFFLOAD
        return
    etype = be16(f + 12)
    if v.proxy and (etype == ETH_P_ARP or (etype == ETH_P_IPV6 and _is_ns(f, n))):
        _tx_punt(dp, v, c, nseg, D_PROXY)       # arp_reduce / neigh_reduce: in Python
        return
    nr = fdb_lookup_copy(v.fdb, mac48(f), now, &c.rem, &c.remcap)
    if nr < 0:
        nr = fdb_lookup_copy(v.fdb, 0, now, &c.rem, &c.remcap)
    if nr < 0:
        _tx_punt(dp, v, c, nseg, D_NO_REMOTE)   # L2 miss and no_remote: the core decides
        return
    # one flow, one source port: the flow key of a super-frame is that of its segments
    sport = fp_source_port(f, n, v.sport_lo, v.sport_hi)
    for i in range(<uint32_t>nseg):
        nbytes += c.segs[i].hlen + c.segs[i].plen
    v.st[c.tid].tx_packets += nseg
    v.st[c.tid].tx_bytes += nbytes
    # ip_tunnel_ecn_encap() with the device's tos 0: the outer ECN of every segment is that of
    # the (super-)frame's IP header, which TSO copies into each segment
    _tx_send(c, v, nr, nseg, sport, fp_encap_tos(f, n))

cdef int _tx_burst(fp_dp* dp, fp_vtep* v, fp_txctx* c, bint wait) noexcept nogil:
    """Read and send up to BURST frames of one TAP, holding its txlock so the two threads never
    interleave one TAP's frames (a flow stays in order).  ``wait`` False: give up at once if
    the other thread holds it.  Returns how many frames were read."""
    cdef int k, n = 0
    cdef ssize_t r
    if wait:
        pthread_mutex_lock(&v.txlock)
    elif pthread_mutex_trylock(&v.txlock) != 0:
        return 0
    for k in range(BURST):
        r = read(v.tap_fd, c.buf, TAPBUF)
        if r <= 0:
            break
        n += 1
        _tx_frame(dp, v, c, <size_t>r, fp_now())
    _tx_pend_flush(c, v)
    pthread_mutex_unlock(&v.txlock)
    return n

cdef int _rx_poll(fp_dp* dp, fp_underlay* us, fp_rxctx* c, bint wait) noexcept nogil:
    """Drain one socket holding its rxlock (so delivery stays in order); as _tx_burst."""
    if wait:
        pthread_mutex_lock(&us.rxlock)
    elif pthread_mutex_trylock(&us.rxlock) != 0:
        return 0
    c.ntouched = 0
    _rx_drain(dp, us, c)
    pthread_mutex_unlock(&us.rxlock)
    return c.ntouched

# Latency: a frame written to a TAP is usually answered within the write() itself (the stack
# runs in our context), and a datagram sent over veth to a kernel peer is answered within the
# sendmsg().  So after delivering, the RX thread tries the TAPs it wrote to once, and after
# sending, the TX thread tries the socket once, instead of waking the other thread for it
# (each wake-up costs several microseconds of round trip).  The locks keep each TAP and each
# socket to one reader at a time; a try never waits.

cdef inline void _epoll_watch(int ep, int fd, void* ptr) noexcept nogil:
    cdef epoll_event ev
    ev.events = EPOLLIN
    ev.data.ptr = ptr
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)

cdef int _epoll_open(int stop_fd) noexcept nogil:
    """An epoll set for one dataplane thread, watching ``stop_fd`` (reported with a NULL ptr)."""
    cdef int ep = epoll_create1(EPOLL_CLOEXEC)
    _epoll_watch(ep, stop_fd, NULL)
    return ep

cdef void* tx_main(void* arg) noexcept nogil:
    cdef fp_dp* dp = <fp_dp*>arg
    cdef fp_txctx c
    cdef fp_rxctx rc
    cdef sigset_t all
    cdef epoll_event evs[16]
    cdef int ep, i, n
    cdef fp_vtep* v
    cdef bint stop = False
    sigfillset(&all)
    pthread_sigmask(SIG_BLOCK, &all, NULL)      # signals are for the Python thread
    if _txctx_init(&c) < 0:
        return NULL
    if _rxctx_init(&rc) < 0:
        _txctx_free(&c)
        return NULL
    c.tid = 0
    rc.tid = 0
    ep = _epoll_open(dp.stop_fd)
    for i in range(dp.nvteps):
        _epoll_watch(ep, dp.vteps[i].tap_fd, dp.vteps[i])
    while not stop:
        n = epoll_wait(ep, evs, 16, -1)
        if n < 0:
            if errno == EINTR:
                continue
            break
        for i in range(n):
            v = <fp_vtep*>evs[i].data.ptr
            if v == NULL:
                stop = True
                break
            if _tx_burst(dp, v, &c, True) and dp.poll_other:
                _rx_poll(dp, v.us, &rc, False)
    close(ep)
    _rxctx_free(&rc)
    _txctx_free(&c)
    return NULL


# --- RX coalescing: consecutive TCP segments of one flow become one GSO write to the TAP ----
#
# A TAP takes one frame per write(), and the stack above it then handles every segment on its
# own (tun does no GRO unless IFF_NAPI).  Like a NIC doing LRO (and the kernel's
# tcp_gro_receive), the RX thread merges in-order data segments of one TCP flow, received back
# to back, into one super-frame written with VIRTIO_NET_HDR_GSO_TCPV4/6: the receiving stack
# sees one large packet, and if it forwards it, segments it back into the same segments.
# Only segments that GRO would merge qualify: no IP options or fragments, identical headers
# but for length, ID, sequence and checksum, ACK (and PSH on the last) as the only flags, and
# a checksum that is valid or partial (a corrupt segment is never folded into a good frame).

cdef enum:
    COALBUF = VNET_HDR_LEN + 65536 + 64

cdef struct fp_coal:
    fp_vtep* v            # the VTEP of the pending frame; NULL: nothing pending
    uint8_t* buf          # virtio-net header + the frame being built
    uint32_t len          # frame length so far
    uint32_t l4
    uint32_t thl
    uint32_t mss          # payload of the first segment: every one but the last has it
    uint32_t next_seq
    uint32_t nseg
    int v6
    int closed            # a short or PSH segment ended the run: the next one starts anew

cdef int _tcp_data_segment(const uint8_t* f, size_t n, int mtu, uint32_t* l4,
                           uint32_t* thl) noexcept nogil:
    """1 if ``f`` is a TCP data segment the coalescer may take (see above), else 0."""
    cdef uint32_t et, th, flags, field, pseudo, tl
    if n < ETH_HLEN + 40 + 20 or <int64_t>n - ETH_HLEN > mtu:
        return 0
    et = be16(f + 12)
    if et == ETH_P_IP:
        if f[14] != 0x45 or f[23] != 6 or (be16(f + 20) & 0xBFFF) != 0:
            return 0
        if be16(f + 16) != n - ETH_HLEN or _csum_be(f + 14, 20) != 0xFFFF:
            return 0
        l4[0] = ETH_HLEN + 20
    elif et == ETH_P_IPV6:
        if f[14] >> 4 != 6 or f[20] != 6 or be16(f + 18) != n - ETH_HLEN - 40:
            return 0
        l4[0] = ETH_HLEN + 40
    else:
        return 0
    th = (f[l4[0] + 12] >> 4) * 4
    if th < 20 or l4[0] + th >= n:
        return 0
    flags = f[l4[0] + 13]
    if flags != 0x10 and flags != (0x10 | TCP_PSH):
        return 0
    tl = <uint32_t>(n - l4[0])
    if et == ETH_P_IP:
        pseudo = fp_csum_add(f + 26, 8, 6 + tl)
    else:
        pseudo = fp_csum_add(f + 22, 32, 6 + tl)
    field = be16(f + l4[0] + 16)
    if not (field == pseudo and field != 0):
        if fp_csum_add(f + l4[0], tl, pseudo) != 0xFFFF:
            return 0
    thl[0] = th
    return 1

cdef int _coal_can_append(fp_coal* c, const uint8_t* f, size_t n, uint32_t l4,
                          uint32_t thl) noexcept nogil:
    cdef const uint8_t* b = c.buf + VNET_HDR_LEN
    cdef uint32_t pay
    if c.closed or l4 != c.l4 or thl != c.thl:
        return 0
    pay = <uint32_t>(n - l4 - thl)
    if pay > c.mss or c.len - ETH_HLEN - (40 if c.v6 else 0) + pay > 65535 - 64:
        return 0
    if memcmp(f, b, ETH_HLEN) != 0:
        return 0
    if c.v6:
        if memcmp(f + 14, b + 14, 4) != 0 or memcmp(f + 20, b + 20, 34) != 0:
            return 0
    else:
        if f[15] != b[15] or memcmp(f + 20, b + 20, 4) != 0 or memcmp(f + 26, b + 26, 8) != 0:
            return 0
    if (memcmp(f + l4, b + l4, 4) != 0 or be32(f + l4 + 4) != c.next_seq
            or memcmp(f + l4 + 8, b + l4 + 8, 5) != 0
            or (f[l4 + 13] & ~TCP_PSH) != (b[l4 + 13] & ~TCP_PSH)
            or memcmp(f + l4 + 14, b + l4 + 14, 2) != 0
            or memcmp(f + l4 + 18, b + l4 + 18, thl - 18) != 0):
        return 0
    return 1

cdef int coal_add(fp_coal* c, fp_vtep* v, const uint8_t* f, size_t n) noexcept nogil:
    """Offer a delivered frame: 1 taken (appended or started after ``coal_finish`` of the
    pending one by the caller: see ``2``), 0 not a candidate (the caller finishes the pending
    frame, then writes this one as is), 2 a candidate that cannot extend the pending frame
    (the caller finishes the pending frame, then calls ``coal_start``)."""
    cdef uint32_t l4, thl, pay
    cdef uint8_t* b
    if not _tcp_data_segment(f, n, v.mtu, &l4, &thl):
        return 0
    if c.v != v or c.nseg == 0 or not _coal_can_append(c, f, n, l4, thl):
        return 2
    b = c.buf + VNET_HDR_LEN
    pay = <uint32_t>(n - l4 - thl)
    memcpy(b + c.len, f + l4 + thl, pay)
    c.len += pay
    c.next_seq += pay
    c.nseg += 1
    if f[l4 + 13] & TCP_PSH:
        b[l4 + 13] |= TCP_PSH
        c.closed = 1
    if pay < c.mss:
        c.closed = 1
    return 1

cdef void coal_start(fp_coal* c, fp_vtep* v, const uint8_t* f, size_t n) noexcept nogil:
    cdef uint32_t l4 = 0, thl = 0
    _tcp_data_segment(f, n, v.mtu, &l4, &thl)
    memcpy(c.buf + VNET_HDR_LEN, f, n)
    c.v = v
    c.len = <uint32_t>n
    c.l4 = l4
    c.thl = thl
    c.mss = <uint32_t>(n - l4 - thl)
    c.next_seq = be32(f + l4 + 4) + c.mss
    c.nseg = 1
    c.v6 = be16(f + 12) == ETH_P_IPV6
    c.closed = (f[l4 + 13] & TCP_PSH) != 0

cdef size_t coal_finish(fp_coal* c) noexcept nogil:
    """Put the virtio-net header in front of the pending frame; its length with the header
    (0: nothing pending).  One segment goes out exactly as the uncoalesced path writes it."""
    cdef uint8_t* b = c.buf + VNET_HDR_LEN
    cdef fp_vnet h
    cdef uint32_t pseudo
    if c.v == NULL or c.nseg == 0:
        return 0
    if c.nseg == 1:
        fp_rx_vnet_header(b, c.len, c.v.mtu, &h)
    else:
        if c.v6:
            put16(b + 18, c.len - ETH_HLEN - 40)
            pseudo = fp_csum_add(b + 22, 32, 6 + c.len - c.l4)
        else:
            put16(b + 16, c.len - ETH_HLEN)
            b[24] = 0
            b[25] = 0
            put16(b + 24, (~_csum_be(b + 14, 20)) & 0xFFFF)
            pseudo = fp_csum_add(b + 26, 8, 6 + c.len - c.l4)
        put16(b + c.l4 + 16, pseudo)        # partial: the pseudo-header sum, as a peer's
        h.flags = F_NEEDS_CSUM               # kernel sends it over veth
        h.gso_type = GSO_TCPV6 if c.v6 else GSO_TCPV4
        h.hdr_len = <uint16_t>(c.l4 + c.thl)
        h.gso_size = <uint16_t>c.mss
        h.csum_start = <uint16_t>c.l4
        h.csum_offset = 16
    _pack_vnet(&h, c.buf)
    c.nseg = 0
    return c.len + VNET_HDR_LEN


def coalesce(frames, int mtu) -> list:
    """What the RX thread writes to a TAP for ``frames`` delivered back to back: a list of
    virtio-net header + frame (exported for the tests)."""
    cdef fp_coal c
    cdef fp_vtep v
    cdef size_t k
    cdef int r
    cdef const uint8_t[::1] fv
    memset(&c, 0, sizeof(c))
    memset(&v, 0, sizeof(v))
    v.mtu = mtu
    c.buf = <uint8_t*>malloc(COALBUF)
    if c.buf == NULL:
        raise MemoryError()
    out = []
    try:
        for fr in frames:
            fv = fr
            r = coal_add(&c, &v, &fv[0], fv.shape[0])
            if r == 1:
                continue
            k = coal_finish(&c)
            if k:
                out.append(c.buf[:k])
            if r == 2:
                coal_start(&c, &v, &fv[0], fv.shape[0])
            else:
                out.append(rx_vnet_header(fr, mtu) + bytes(fr))
        k = coal_finish(&c)
        if k:
            out.append(c.buf[:k])
        return out
    finally:
        free(c.buf)

# --- the RX thread: underlay -> TAP ---------------------------------------------------------

cdef struct fp_rxctx:
    int tid
    fp_vtep* touched[8]   # VTEPs whose TAP this drain wrote to (their replies may be waiting)
    int ntouched
    fp_coal co
    uint8_t* bufs
    mmsghdr* msgs
    iovec* iov
    sockaddr_in6* addrs
    uint8_t* ctrl

cdef void _rxctx_free(fp_rxctx* c) noexcept nogil:
    free(c.co.buf)
    free(c.bufs)
    free(c.msgs)
    free(c.iov)
    free(c.addrs)
    free(c.ctrl)

cdef int _rxctx_init(fp_rxctx* c) noexcept nogil:
    memset(c, 0, sizeof(fp_rxctx))
    c.bufs = <uint8_t*>malloc(<size_t>RXBATCH * RXBUF)
    c.msgs = <mmsghdr*>calloc(RXBATCH, sizeof(mmsghdr))
    c.iov = <iovec*>calloc(RXBATCH, sizeof(iovec))
    c.addrs = <sockaddr_in6*>calloc(RXBATCH, sizeof(sockaddr_in6))
    c.ctrl = <uint8_t*>calloc(RXBATCH, CTRLLEN)
    c.co.buf = <uint8_t*>malloc(COALBUF)
    if (c.bufs == NULL or c.msgs == NULL or c.iov == NULL or c.addrs == NULL or c.ctrl == NULL
            or c.co.buf == NULL):
        _rxctx_free(c)
        return -1
    return 0

cdef inline void _touch(fp_rxctx* c, fp_vtep* v) noexcept nogil:
    cdef int i
    for i in range(c.ntouched):
        if c.touched[i] == v:
            return
    if c.ntouched < 8:
        c.touched[c.ntouched] = v
        c.ntouched += 1

cdef void _coal_write(fp_rxctx* c) noexcept nogil:
    cdef fp_coal* co = &c.co
    cdef size_t k = coal_finish(co)
    if k and write(co.v.tap_fd, co.buf, k) < 0:
        co.v.st[c.tid].drops[D_TAP_ERROR] += 1

cdef void _rx_datagram(fp_rxctx* c, fp_dp* dp, fp_underlay* us, uint8_t* d, size_t n, int fam,
                       const uint8_t* addr, uint8_t tos, double now) noexcept nogil:
    """Demux + Vtep.handle_datagram for one datagram received under the outer TOS / traffic
    class ``tos``; ``d`` has RXHEAD bytes of room before it."""
    cdef fp_vtep* v
    cdef int r = fp_rx_check(us, d, n, &v)
    cdef int res, k
    cdef uint8_t* f
    cdef size_t fn
    cdef fp_vnet h
    if r >= 0:
        if v == NULL:
            us.st[c.tid].drops[r] += 1
        else:
            v.st[c.tid].drops[r] += 1
        return
    f = d + 8
    fn = n - 8
    res = fdb_learn(v.fdb, mac48(f + 6), fam, addr, now)
    if res == LEARN_PINNED:
        v.st[c.tid].drops[D_STATIC_MAC_MOVED] += 1
        return
    if res == LEARN_NEW or res == LEARN_MOVED:
        if res == LEARN_NEW:
            v.st[c.tid].learned += 1
        else:
            v.st[c.tid].moved += 1
        q_push(&dp.q, PUNT_LEARN, v.id, f + 6, 6, NULL, 0)
    # after learning, as vxlan_rcv(): the inner IP header must be whole, and the outer ECN
    # field is carried over (before coalescing: segments with other ECN bits never merge)
    r = fp_ecn_decap(f, fn, tos)
    if r >= 0:
        v.st[c.tid].drops[r] += 1
        return
    v.st[c.tid].rx_packets += 1
    v.st[c.tid].rx_bytes += fn
    _touch(c, v)
    if v.tap_coalesce:
        k = coal_add(&c.co, v, f, fn)
        if k == 1:
            return
        _coal_write(c)          # what is pending goes first: order is kept
        if k == 2:
            coal_start(&c.co, v, f, fn)
            return
    fp_rx_vnet_header(f, fn, v.mtu, &h)
    _pack_vnet(&h, f - VNET_HDR_LEN)        # over the VXLAN header and 2 bytes of room
    if write(v.tap_fd, f - VNET_HDR_LEN, fn + VNET_HDR_LEN) < 0:
        v.st[c.tid].drops[D_TAP_ERROR] += 1

cdef void _rx_drain(fp_dp* dp, fp_underlay* us, fp_rxctx* c) noexcept nogil:
    cdef int i, r, rounds, gso, fam, tclass
    cdef uint8_t tos
    cdef size_t n, off, seg
    cdef uint8_t* d
    cdef const uint8_t* addr
    cdef msghdr* mh
    cdef cmsghdr* cm
    cdef double now
    for rounds in range(16):
        for i in range(RXBATCH):
            c.iov[i].iov_base = c.bufs + <size_t>i * RXBUF + RXHEAD
            c.iov[i].iov_len = RXBUF - RXHEAD
            mh = &c.msgs[i].msg_hdr
            mh.msg_name = &c.addrs[i]
            mh.msg_namelen = sizeof(sockaddr_in6)
            mh.msg_iov = &c.iov[i]
            mh.msg_iovlen = 1
            # always: the outer TOS / traffic class comes as a control message (IP_RECVTOS /
            # IPV6_RECVTCLASS on the socket), with the GRO segment size when UDP_GRO is on
            mh.msg_control = c.ctrl + i * CTRLLEN
            mh.msg_controllen = CTRLLEN
            mh.msg_flags = 0
        r = recvmmsg(us.rx_fd, c.msgs, RXBATCH, MSG_DONTWAIT, NULL)
        if r <= 0:
            break
        now = fp_now()
        for i in range(r):
            n = c.msgs[i].msg_len
            d = c.bufs + <size_t>i * RXBUF + RXHEAD
            mh = &c.msgs[i].msg_hdr
            if c.addrs[i].sin6_family == AF_INET:
                fam = 4
                addr = <const uint8_t*>&(<sockaddr_in*>&c.addrs[i]).sin_addr
            else:
                fam = 6
                addr = c.addrs[i].sin6_addr.s6_addr
            gso = 0
            tos = 0
            if mh.msg_controllen:
                cm = CMSG_FIRSTHDR(mh)
                while cm != NULL:
                    if cm.cmsg_level == SOL_UDP and cm.cmsg_type == UDP_GRO:
                        memcpy(&gso, CMSG_DATA(cm), sizeof(int))
                    elif cm.cmsg_level == IPPROTO_IP and cm.cmsg_type == IP_TOS:
                        tos = CMSG_DATA(cm)[0]          # one byte (ip_cmsg_recv_tos)
                    elif cm.cmsg_level == IPPROTO_IPV6 and cm.cmsg_type == IPV6_TCLASS:
                        memcpy(&tclass, CMSG_DATA(cm), sizeof(int))
                        tos = <uint8_t>tclass
                    cm = CMSG_NXTHDR(mh, cm)
            if gso > 0 and n > <size_t>gso:
                # UDP GRO glued datagrams of one 4-tuple together: every one but the last is
                # exactly gso bytes; GRO merges only datagrams with the same outer TOS / traffic
                # class (inet_gro_receive, ipv6_gro_receive), so one ``tos`` holds for all
                off = 0
                while off < n:
                    seg = n - off if n - off < <size_t>gso else <size_t>gso
                    _rx_datagram(c, dp, us, d + off, seg, fam, addr, tos, now)
                    off += seg
            else:
                _rx_datagram(c, dp, us, d, n, fam, addr, tos, now)
        if r < RXBATCH:
            break
    _coal_write(c)      # the socket is empty: nothing more will join the pending frame

cdef void* rx_main(void* arg) noexcept nogil:
    cdef fp_dp* dp = <fp_dp*>arg
    cdef fp_rxctx c
    cdef fp_txctx tc
    cdef sigset_t all
    cdef epoll_event evs[16]
    cdef int ep, i, n, k, m
    cdef fp_underlay* us
    cdef fp_vtep* touched[8]
    cdef bint stop = False
    sigfillset(&all)
    pthread_sigmask(SIG_BLOCK, &all, NULL)
    if _rxctx_init(&c) < 0:
        return NULL
    if _txctx_init(&tc) < 0:
        _rxctx_free(&c)
        return NULL
    c.tid = 1
    tc.tid = 1
    ep = _epoll_open(dp.stop_fd)
    for i in range(dp.nuls):
        _epoll_watch(ep, dp.uls[i].rx_fd, dp.uls[i])
    while not stop:
        n = epoll_wait(ep, evs, 16, -1)
        if n < 0:
            if errno == EINTR:
                continue
            break
        for i in range(n):
            us = <fp_underlay*>evs[i].data.ptr
            if us == NULL:
                stop = True
                break
            m = _rx_poll(dp, us, &c, True)
            if dp.poll_other:
                for k in range(m):
                    touched[k] = c.touched[k]
                for k in range(m):
                    _tx_burst(dp, touched[k], &tc, False)
    close(ep)
    _txctx_free(&tc)
    _rxctx_free(&c)
    return NULL


cdef int dp_start(fp_dp* dp) noexcept nogil:
    if dp.running:
        return 0
    if pthread_create(&dp.tx_thread, NULL, tx_main, dp) != 0:
        return -1
    if pthread_create(&dp.rx_thread, NULL, rx_main, dp) != 0:
        _dp_signal_stop(dp)
        pthread_join(dp.tx_thread, NULL)
        _dp_clear_stop(dp)
        return -1
    dp.running = 1
    return 0

cdef inline void _dp_signal_stop(fp_dp* dp) noexcept nogil:
    cdef uint64_t one = 1
    write(dp.stop_fd, &one, 8)

cdef inline void _dp_clear_stop(fp_dp* dp) noexcept nogil:
    cdef uint64_t v
    read(dp.stop_fd, &v, 8)

cdef void dp_stop(fp_dp* dp) noexcept nogil:
    if not dp.running:
        return
    _dp_signal_stop(dp)         # level-triggered: both threads see it
    pthread_join(dp.tx_thread, NULL)
    pthread_join(dp.rx_thread, NULL)
    _dp_clear_stop(dp)
    dp.running = 0


cdef object _stats_json(fp_stats* a, fp_stats* b):
    """Sum of two counter blocks in the shape of vxtun.core.stats.Stats.to_json."""
    cdef int i
    return {
        "rx": {"packets": a.rx_packets + b.rx_packets, "bytes": a.rx_bytes + b.rx_bytes},
        "tx": {"packets": a.tx_packets + b.tx_packets, "bytes": a.tx_bytes + b.tx_bytes},
        "drops": {DROP_REASONS[i]: a.drops[i] + b.drops[i] for i in range(NDROPS)},
        "fdb": {"learned": a.learned + b.learned, "moved": a.moved + b.moved},
        "proxy_replies": 0,
        "l2miss": 0,
        "l3miss": 0,
    }


cdef void _probe_gso(fp_vtep* v) noexcept nogil:
    """Turn UDP GSO on for ``v`` if this kernel has UDP_SEGMENT; learn tx_fd's TTL and address."""
    cdef int fd, gs = 1400, ttl = 0
    cdef socklen_t len = sizeof(int)
    cdef sockaddr_in6 sa
    cdef socklen_t salen = sizeof(sa)
    memset(v.local, 0, 16)
    memset(&sa, 0, sizeof(sa))
    if getsockname(v.tx_fd, <sockaddr*>&sa, &salen) == 0:
        if v.us.family == 4 and sa.sin6_family == AF_INET:
            memcpy(v.local, &(<sockaddr_in*>&sa).sin_addr, 4)
        elif v.us.family == 6 and sa.sin6_family == AF_INET6:
            memcpy(v.local, sa.sin6_addr.s6_addr, 16)
    if v.us.family == 4:
        getsockopt(v.tx_fd, IPPROTO_IP, IP_TTL, &ttl, &len)
    else:
        getsockopt(v.tx_fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, &len)
    v.ttl = ttl if ttl > 0 else 0
    fd = socket(AF_INET if v.us.family == 4 else AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)
    if fd < 0:
        return
    if setsockopt(fd, SOL_UDP, UDP_SEGMENT, &gs, sizeof(int)) == 0:
        v.gso = <fp_gsosock*>malloc(GSO_SOCKS * sizeof(fp_gsosock))
        v.gso_slot = <uint8_t*>calloc(65536, 1)
        if v.gso != NULL and v.gso_slot != NULL:
            for fd2 in range(GSO_SOCKS):
                v.gso[fd2].fd = -1
            v.gso_on = 1
        else:
            free(v.gso)
            free(v.gso_slot)
            v.gso = NULL
            v.gso_slot = NULL
    close(fd)


cdef class Dataplane:
    """The two per-direction threads and the tables they run over.

    Python adds underlay sockets and VTEPs (each change stops the threads, edits the tables and
    restarts them), reads counters, and drains the punt queue when ``fileno()`` is readable.
    The file descriptors stay owned by the caller; they must outlive their registration.
    """
    cdef fp_dp dp
    cdef dict _fdbs
    cdef uint32_t _next_id

    def __cinit__(self):
        memset(&self.dp, 0, sizeof(fp_dp))
        pthread_mutex_init(&self.dp.q.lock, NULL)
        self.dp.q.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        self.dp.stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.dp.q.efd < 0 or self.dp.stop_fd < 0:
            raise OSError(errno, "eventfd")
        self._fdbs = {}
        self._next_id = 1
        self.dp.poll_other = 1

    def __dealloc__(self):
        cdef int i
        cdef uint32_t k
        with nogil:
            dp_stop(&self.dp)
        for i in range(self.dp.nvteps):
            _gso_close_all(self.dp.vteps[i])
            free(self.dp.vteps[i])
        free(self.dp.vteps)
        for i in range(self.dp.nuls):
            free(self.dp.uls[i].vnis)
            free(self.dp.uls[i])
        free(self.dp.uls)
        for k in range(self.dp.q.count):
            free(self.dp.q.slots[(self.dp.q.head + k) % QLEN].data)
        if self.dp.q.efd >= 0:
            close(self.dp.q.efd)
        if self.dp.stop_fd >= 0:
            close(self.dp.stop_fd)
        pthread_mutex_destroy(&self.dp.q.lock)

    def fileno(self) -> int:
        """Readable when punted records wait (an eventfd)."""
        return self.dp.q.efd

    @property
    def poll_other(self) -> bool:
        """Each thread tries the other direction once after its own work (lower latency)."""
        return bool(self.dp.poll_other)

    @poll_other.setter
    def poll_other(self, on) -> None:
        self.dp.poll_other = 1 if on else 0

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
            if self.dp.vteps[i].id == vid:
                return self.dp.vteps[i]
        raise KeyError(f"no VTEP {vid}")

    cdef int _rebuild_vnis(self, fp_underlay* us) except -1:
        """The VNI table of one socket: open addressing, at most half full."""
        cdef uint32_t size = 4, n = 0, j
        cdef int i
        cdef void** t
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us:
                n += 1
        while size < 2 * n + 2:
            size *= 2
        t = <void**>calloc(size, sizeof(void*))
        if t == NULL:
            raise MemoryError()
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us:
                j = (self.dp.vteps[i].vni * <uint32_t>2654435761) & (size - 1)
                while t[j] != NULL:
                    j = (j + 1) & (size - 1)
                t[j] = self.dp.vteps[i]
        free(us.vnis)
        us.vnis = t
        us.vmask = size - 1
        return 0

    def add_underlay(self, int rx_fd, int tx_fd, int family, bint gro=False) -> int:
        """Serve a receive socket (and its default send socket); returns its id."""
        cdef fp_underlay* us = <fp_underlay*>calloc(1, sizeof(fp_underlay))
        cdef fp_underlay** arr
        if us == NULL:
            raise MemoryError()
        arr = <fp_underlay**>realloc(self.dp.uls, (self.dp.nuls + 1) * sizeof(void*))
        if arr == NULL:
            free(us)
            raise MemoryError()
        self.dp.uls = arr
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
        cdef int i, k = 0
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us:
                raise ValueError("detach the VTEPs of an underlay before the underlay")
        was = self._pause()
        for i in range(self.dp.nuls):
            if self.dp.uls[i] != us:
                self.dp.uls[k] = self.dp.uls[i]
                k += 1
        self.dp.nuls = k
        free(us.vnis)
        pthread_mutex_destroy(&us.rxlock)
        free(us)
        self._resume(was)

    def add_vtep(self, uint32_t uid, uint32_t vni, int tap_fd, int tx_fd, mac, int mtu,
                 uint32_t sport_lo, uint32_t sport_hi, uint32_t dstport, bint proxy,
                 CFdb fdb not None, bint tap_tso=False, bint udp_gso=True,
                 bint coalesce=True) -> int:
        """Serve one VTEP on underlay ``uid``; returns its id (used in punted records)."""
        cdef fp_underlay* us = self._underlay(uid)
        cdef fp_vtep* v
        cdef fp_vtep** arr
        cdef int i
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        if not sport_lo < sport_hi <= 65536:
            raise ValueError("bad source port range")
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i].us == us and self.dp.vteps[i].vni == vni:
                raise ValueError(f"VNI {vni} is served twice on this socket")
        v = <fp_vtep*>calloc(1, sizeof(fp_vtep))
        if v == NULL:
            raise MemoryError()
        arr = <fp_vtep**>realloc(self.dp.vteps, (self.dp.nvteps + 1) * sizeof(void*))
        if arr == NULL:
            free(v)
            raise MemoryError()
        self.dp.vteps = arr
        v.id = self._next_id
        self._next_id += 1
        pthread_mutex_init(&v.txlock, NULL)
        v.vni = vni
        v.tap_fd = tap_fd
        v.tx_fd = tx_fd
        v.mtu = mtu
        mb = bytes(mac)
        memcpy(v.mac, <const char*>mb, 6)
        v.sport_lo = sport_lo
        v.sport_hi = sport_hi
        v.dstport = <uint16_t>dstport
        v.proxy = proxy
        v.tap_tso = tap_tso
        v.tap_coalesce = coalesce
        v.fdb = fdb.t
        v.us = us
        if udp_gso:
            _probe_gso(v)
        was = self._pause()
        self.dp.vteps[self.dp.nvteps] = v
        self.dp.nvteps += 1
        try:
            self._rebuild_vnis(us)
        finally:
            self._resume(was)
        self._fdbs[v.id] = fdb
        return v.id

    def remove_vtep(self, uint32_t vid) -> dict:
        """Stop serving a VTEP; returns its final counters."""
        cdef fp_vtep* v = self._vtep(vid)
        cdef int i, k = 0
        was = self._pause()
        for i in range(self.dp.nvteps):
            if self.dp.vteps[i] != v:
                self.dp.vteps[k] = self.dp.vteps[i]
                k += 1
        self.dp.nvteps = k
        try:
            self._rebuild_vnis(v.us)
        finally:
            self._resume(was)
        out = _stats_json(&v.st[0], &v.st[1])
        _gso_close_all(v)
        pthread_mutex_destroy(&v.txlock)
        free(v)
        self._fdbs.pop(vid, None)
        return out

    def set_vtep(self, uint32_t vid, proxy=None, mtu=None) -> None:
        """Change a running VTEP's proxy flag or MTU (plain int stores: no restart needed)."""
        cdef fp_vtep* v = self._vtep(vid)
        if proxy is not None:
            v.proxy = 1 if proxy else 0
        if mtu is not None:
            v.mtu = int(mtu)

    def vtep_features(self, uint32_t vid) -> list:
        cdef fp_vtep* v = self._vtep(vid)
        return (["udp_gso"] if v.gso_on else []) + (["tap_coalesce"] if v.tap_coalesce else [])

    def vtep_stats(self, uint32_t vid) -> dict:
        cdef fp_vtep* v = self._vtep(vid)
        return _stats_json(&v.st[0], &v.st[1])

    def underlay_stats(self, uint32_t uid) -> dict:
        cdef fp_underlay* us = self._underlay(uid)
        return _stats_json(&us.st[0], &us.st[1])

    @property
    def punts_lost(self) -> int:
        return self.dp.q.lost

    def pop(self, int maximum=256) -> list:
        """Punted records, oldest first: ``(kind, vtep_id, bytes)``; kind in PUNT_KINDS."""
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
