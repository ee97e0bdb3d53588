# cython: language_level=3
"""The C-level interface of vxtun.fastpath.wire: the wire rules of vxtun/wire/*.py in C.

The drop reasons are here because the wire rules are the first to return one; every other
module of the fast path counts drops with these indices (vxtun.core.stats.DROP_REASONS order,
checked when wire is imported).
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

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
    NDROPS = 14

cdef enum:
    ETH_HLEN = 14
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806
    ETH_P_IPV6 = 0x86DD
    VXLAN_HLEN = 8
    VNET_HDR_LEN = 10
    F_NEEDS_CSUM = 1
    GSO_NONE = 0
    GSO_TCPV4 = 1
    GSO_TCPV6 = 4
    GSO_ECN = 0x80
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_CWR = 0x80

cdef struct fp_vnet:
    # struct virtio_net_hdr, in host order (tun uses the host's byte order)
    uint8_t flags
    uint8_t gso_type
    uint16_t hdr_len
    uint16_t gso_size
    uint16_t csum_start
    uint16_t csum_offset

cdef struct fp_seg:
    const uint8_t* h      # the segment's headers (Ethernet .. TCP), or a whole frame
    uint32_t hlen
    const uint8_t* p      # payload (points into the super-frame), or NULL
    uint32_t plen

cdef enum:
    MAXSEG = 1024         # segments per super-frame (64 KB / 64-byte MSS)
    SEGH_MAX = 144        # Ethernet 14 + 802.1Q 4 + IPv4 60 (or IPv6 40) + TCP 60, rounded up


# --- byte helpers (network order unless named le) -------------------------------------------

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
    """The 6 octets of a MAC as one integer (the FDB's key)."""
    return ((<uint64_t>p[0] << 40) | (<uint64_t>p[1] << 32) | (<uint64_t>p[2] << 24)
            | (<uint64_t>p[3] << 16) | (<uint64_t>p[4] << 8) | p[5])

cdef inline void fp_pack_vnet(const fp_vnet* h, uint8_t* out) noexcept nogil:
    """struct virtio_net_hdr as the TAP reads it (little-endian on every host we run on)."""
    out[0] = h.flags
    out[1] = h.gso_type
    putle16(out + 2, h.hdr_len)
    putle16(out + 4, h.gso_size)
    putle16(out + 6, h.csum_start)
    putle16(out + 8, h.csum_offset)


# --- the VXLAN header (vxtun/wire/vxlan.py; RFC 7348 section 5 as vxlan_rcv() checks it) ----

cdef inline int fp_decode_header(const uint8_t* p, size_t n, uint32_t* vni) noexcept nogil:
    """vxlan.decode_header: -1 when Linux accepts the header, else a drop-reason index."""
    if n < 8:
        return D_TRUNCATED
    if not (p[0] & 0x08):
        return D_NOT_VXLAN
    vni[0] = (<uint32_t>p[4] << 16) | (<uint32_t>p[5] << 8) | p[6]
    return -1

cdef inline bint fp_reserved_bits_set(const uint8_t* p) noexcept nogil:
    """vxlan.reserved_bits_set: any bit but the I flag and the VNI."""
    return p[0] != 0x08 or p[1] != 0 or p[2] != 0 or p[3] != 0 or p[7] != 0

cdef inline void fp_encode_header(uint8_t* p, uint32_t vni) noexcept nogil:
    """vxlan.encode_header: the I flag, the VNI, every reserved bit 0."""
    p[0] = 0x08
    p[1] = 0
    p[2] = 0
    p[3] = 0
    p[4] = (vni >> 16) & 0xFF
    p[5] = (vni >> 8) & 0xFF
    p[6] = vni & 0xFF
    p[7] = 0


# --- the rules -------------------------------------------------------------------------------

cdef uint32_t fp_fold(uint64_t s) noexcept nogil
cdef uint32_t fp_csum_be(const uint8_t* p, size_t n) noexcept nogil
cdef uint32_t fp_csum_add(const uint8_t* p, size_t n, uint32_t initial) noexcept nogil
cdef int fp_complete_checksum(uint8_t* f, size_t n, size_t start, size_t off) noexcept nogil
cdef uint16_t fp_source_port(const uint8_t* f, size_t n, uint32_t lo, uint32_t hi) noexcept nogil
cdef void fp_rx_vnet_header(const uint8_t* f, size_t n, int mtu, fp_vnet* h) noexcept nogil
cdef uint8_t fp_encap_tos(const uint8_t* f, size_t n, uint8_t tos) noexcept nogil
cdef uint8_t fp_inner_ttl(const uint8_t* f, size_t n) noexcept nogil
cdef int fp_ecn_decap(uint8_t* f, size_t n, uint8_t outer) noexcept nogil
cdef int fp_tso_segment(const uint8_t* f, size_t n, uint32_t mss, uint8_t* hbuf,
                        fp_seg* segs, bint fill) noexcept nogil
