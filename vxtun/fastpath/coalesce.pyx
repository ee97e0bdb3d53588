# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""TCP coalescing of delivered frames (LRO in software) for the RX thread; see below."""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memset

from vxtun.fastpath.wire cimport (
    ETH_HLEN, ETH_P_IP, ETH_P_IPV6, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, TCP_PSH, VNET_HDR_LEN, be16,
    be32, fp_csum_add, fp_csum_be, fp_pack_vnet, fp_rx_vnet_header, fp_vnet, put16)


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
        if be16(f + 16) != n - ETH_HLEN or fp_csum_be(f + 14, 20) != 0xFFFF:
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

cdef int coal_add(fp_coal* c, void* owner, int mtu, const uint8_t* f,
                  size_t n) noexcept nogil:
    """Offer a delivered frame: 1 taken (appended or started after ``coal_finish`` of the
    pending one by the caller: see ``2``), 0 not a candidate (the caller finishes the pending
    frame, then writes this one as is), 2 a candidate that cannot extend the pending frame
    (the caller finishes the pending frame, then calls ``coal_start``)."""
    cdef uint32_t l4, thl, pay
    cdef uint8_t* b
    if not _tcp_data_segment(f, n, mtu, &l4, &thl):
        return 0
    if c.owner != owner or c.nseg == 0 or not _coal_can_append(c, f, n, l4, thl):
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

cdef void coal_start(fp_coal* c, void* owner, int mtu, const uint8_t* f,
                     size_t n) noexcept nogil:
    cdef uint32_t l4 = 0, thl = 0
    _tcp_data_segment(f, n, mtu, &l4, &thl)
    memcpy(c.buf + VNET_HDR_LEN, f, n)
    c.owner = owner
    c.mtu = mtu
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
    if c.owner == NULL or c.nseg == 0:
        return 0
    if c.nseg == 1:
        fp_rx_vnet_header(b, c.len, c.mtu, &h)
    else:
        if c.v6:
            put16(b + 18, c.len - ETH_HLEN - 40)
            pseudo = fp_csum_add(b + 22, 32, 6 + c.len - c.l4)
        else:
            put16(b + 16, c.len - ETH_HLEN)
            b[24] = 0
            b[25] = 0
            put16(b + 24, (~fp_csum_be(b + 14, 20)) & 0xFFFF)
            pseudo = fp_csum_add(b + 26, 8, 6 + c.len - c.l4)
        put16(b + c.l4 + 16, pseudo)        # partial: the pseudo-header sum, as a peer's
        h.flags = F_NEEDS_CSUM               # kernel sends it over veth
        h.gso_type = GSO_TCPV6 if c.v6 else GSO_TCPV4
        h.hdr_len = <uint16_t>(c.l4 + c.thl)
        h.gso_size = <uint16_t>c.mss
        h.csum_start = <uint16_t>c.l4
        h.csum_offset = 16
    fp_pack_vnet(&h, c.buf)
    c.nseg = 0
    return c.len + VNET_HDR_LEN


def coalesce(frames, int mtu) -> list:
    """What the RX thread writes to a TAP for ``frames`` delivered back to back: a list of
    virtio-net header + frame (exported for the tests)."""
    cdef fp_coal c
    cdef int owner = 0
    cdef size_t k
    cdef int r
    cdef const uint8_t[::1] fv
    cdef fp_vnet h
    cdef uint8_t vh[VNET_HDR_LEN]
    memset(&c, 0, sizeof(c))
    c.buf = <uint8_t*>malloc(COALBUF)
    if c.buf == NULL:
        raise MemoryError()
    out = []
    try:
        for fr in frames:
            fv = fr
            r = coal_add(&c, &owner, mtu, &fv[0], fv.shape[0])
            if r == 1:
                continue
            k = coal_finish(&c)
            if k:
                out.append(c.buf[:k])
            if r == 2:
                coal_start(&c, &owner, mtu, &fv[0], fv.shape[0])
            else:
                fp_rx_vnet_header(&fv[0], fv.shape[0], mtu, &h)
                fp_pack_vnet(&h, vh)
                out.append(vh[:VNET_HDR_LEN] + bytes(fr))
        k = coal_finish(&c)
        if k:
            out.append(c.buf[:k])
        return out
    finally:
        free(c.buf)
