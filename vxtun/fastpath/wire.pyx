# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The wire rules in C: mirrors of vxtun/wire/vxlan.py, vxtun/wire/offload.py and
vxtun/wire/ecn.py, each named after the reference it follows.

Checksums (RFC 1071), the VXLAN header (RFC 7348 section 5, as vxlan_rcv() checks it), the
UDP source port (udp_flow_src_port()), the virtio-net header of a decapsulated frame, ECN
across the tunnel (RFC 6040, include/net/inet_ecn.h) and TSO (tcp_gso_segment()).  Nothing
here keeps state, takes a lock or makes a system call.  The ``def`` wrappers at the end have
the pure functions' contracts, so tests/unit/test_fastpath_differential.py can hold each pair
equal on arbitrary input.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from vxtun.fastpath.libc cimport FP_LE

from vxtun.core.stats import DROP_REASONS

_C_REASONS = ("truncated", "not_vxlan", "vni_not_found", "reserved_bits", "inner_truncated",
              "own_mac", "invalid_src_mac", "static_mac_moved", "no_remote", "proxy",
              "bad_frame", "tx_error", "tap_error", "ecn")
if tuple(DROP_REASONS) != _C_REASONS or len(_C_REASONS) != NDROPS:
    raise ImportError("vxtun.fastpath was built for other DROP_REASONS; rebuild it")

# --- checksums (RFC 1071) ----------------------------------------------------------------

cdef uint32_t fp_fold(uint64_t s) noexcept nogil:
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
    return fp_fold(s)

cdef uint32_t fp_csum_be(const uint8_t* p, size_t n) noexcept nogil:
    cdef uint32_t s = _csum_native(p, n)
    if FP_LE:
        s = ((s & 0xFF) << 8) | (s >> 8)
    return s

cdef uint32_t fp_csum_add(const uint8_t* p, size_t n, uint32_t initial) noexcept nogil:
    """offload.csum_add: big-endian word sum of ``p`` folded to 16 bits, plus ``initial``.

    A non-zero buffer never folds to 0 (one's complement has two zeros; the sum of non-zero
    data is 0xffff), exactly as the Python reference does.
    """
    cdef uint64_t s = fp_csum_be(p, n)
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


# (The VXLAN header's rules, vxtun/wire/vxlan.py, are inline in wire.pxd: every datagram
# runs them.)


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

cdef inline uint32_t _inner_l3(const uint8_t* f, size_t n, size_t* l3) noexcept nogil:
    """ecn.inner_l3(frame): ETH_P_IP or ETH_P_IPV6 and, in ``l3``, where its header starts
    behind Ethernet and up to 3 VLAN tags (its first two bytes present); 0 for anything else."""
    cdef size_t off = 12
    cdef uint32_t etype = 0
    cdef int i
    for i in range(VLAN_TAGS_MAX + 1):
        if n < off + 2:
            return 0
        etype = be16(f + off)
        if etype != 0x8100 and etype != 0x88A8:
            if (etype != ETH_P_IP and etype != ETH_P_IPV6) or n < off + 4:
                return 0
            l3[0] = off + 2
            return etype
        off += 4
    return 0

cdef uint8_t fp_encap_tos(const uint8_t* f, size_t n, uint8_t tos) noexcept nogil:
    """ecn.encap_tos(frame, tos): INET_ECN_encapsulate(tos, inner), ``tos`` 1 being ``tos
    inherit`` (the inner DS field whole): the inner ECN bits (CE leaves as ECT(0)) of the
    IPv4/IPv6 header behind Ethernet and up to 3 VLAN tags, under the DSCP of ``tos``."""
    cdef size_t l3 = 0
    cdef uint8_t ds = 0
    cdef uint32_t etype = _inner_l3(f, n, &l3)
    if etype == ETH_P_IP:
        ds = f[l3 + 1]
    elif etype == ETH_P_IPV6:
        ds = <uint8_t>(((f[l3] & 0x0F) << 4) | (f[l3 + 1] >> 4))
    if tos == 1:
        tos = ds
    ds &= ECN_MASK
    return (tos & ~ECN_MASK) | (ECN_ECT_0 if ds == ECN_CE else ds)

cdef uint8_t fp_inner_ttl(const uint8_t* f, size_t n) noexcept nogil:
    """ecn.inner_ttl(frame): ip_tunnel_get_ttl(), for ``ttl inherit``; 0 for no IP header."""
    cdef size_t l3 = 0
    cdef uint32_t etype = _inner_l3(f, n, &l3)
    if etype == ETH_P_IP and n > l3 + 8:
        return f[l3 + 8]
    if etype == ETH_P_IPV6 and n > l3 + 7:
        return f[l3 + 7]
    return 0

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

cdef int fp_tso_segment(const uint8_t* f, size_t n, uint32_t mss, uint8_t* hbuf,
                        fp_seg* segs, bint fill) noexcept nogil:
    """Segment a VIRTIO_NET_HDR_GSO_TCPV4/6 frame; -1 if it is not one we can cut.

    ``fill`` False only plans the cut: segs[i] get their lengths and their places (the header
    slot in ``hbuf``, the payload in ``f``), but the headers are not written; a second call
    with ``fill`` writes them.  The TX thread decides on the plan and fills only when it
    sends segments: a frame that leaves whole (UDP-tunnel GSO, vxtun/fastpath/send.pyx) never
    pays for ~45 header copies and a checksum over its whole payload.

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
        segs[i].h = h
        segs[i].hlen = hlen
        segs[i].p = f + hlen + i * mss
        segs[i].plen = chunk
        if not fill:
            continue
        memcpy(h, f, hlen)
        if v6:
            put16(h + l3 + 4, hlen - (l3 + 40) + chunk)
            ps = fp_csum_be(h + l3 + 8, 32)
        else:
            put16(h + l3 + 2, hlen - l3 + chunk)
            put16(h + l3 + 4, id0 + i)
            h[l3 + 10] = 0
            h[l3 + 11] = 0
            put16(h + l3 + 10, (~fp_csum_be(h + l3, ihl)) & 0xFFFF)
            ps = fp_csum_be(h + l3 + 12, 8)
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
        ps = fp_fold(<uint64_t>ps + 6 + tl + fp_csum_be(h + l4, thl)
                   + fp_csum_be(f + hlen + i * mss, chunk))
        put16(h + l4 + 16, (~ps) & 0xFFFF)
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
    fp_pack_vnet(&h, out)
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


def encap_tos(const uint8_t[::1] frame not None, uint8_t tos=0) -> int:
    """Same contract as vxtun.wire.ecn.encap_tos(frame, tos)."""
    cdef size_t n = frame.shape[0]
    return fp_encap_tos(&frame[0] if n else NULL, n, tos)


def inner_ttl(const uint8_t[::1] frame not None) -> int:
    """Same contract as vxtun.wire.ecn.inner_ttl(frame)."""
    cdef size_t n = frame.shape[0]
    return fp_inner_ttl(&frame[0] if n else NULL, n)


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
        k = fp_tso_segment(&frame[0] if n else NULL, n, gso_size, hbuf, segs, True)
        if k < 0:
            raise ValueError("not a TCP super-frame this path can segment")
        return [segs[i].h[:segs[i].hlen] + segs[i].p[:segs[i].plen] for i in range(k)]
    finally:
        free(hbuf)
        free(segs)
