# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The fast path: vxtun's per-packet rules in C.

Every function here mirrors a pure-Python reference named in its docstring; the differential
tests in tests/unit/test_fastpath_*.py hold the two equal on arbitrary input.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t

from vxtun.core.stats import DROP_REASONS

# Drop reasons, indexed as vxtun.core.stats.DROP_REASONS (the C counters use the same order).
cdef enum:
    D_TRUNCATED = 0
    D_NOT_VXLAN = 1

cdef int fp_decode_header(const uint8_t* p, size_t n, uint32_t* vni) noexcept nogil:
    """vxlan.decode_header: -1 when Linux accepts the header, else a drop-reason index."""
    if n < 8:
        return D_TRUNCATED
    if not (p[0] & 0x08):
        return D_NOT_VXLAN
    vni[0] = (<uint32_t>p[4] << 16) | (<uint32_t>p[5] << 8) | p[6]
    return -1


cdef bint fp_reserved_bits_set(const uint8_t* p) noexcept nogil:
    return p[0] != 0x08 or p[1] != 0 or p[2] != 0 or p[3] != 0 or p[7] != 0


def decode_header(const uint8_t[:] data not None):
    """Same contract as vxtun.wire.vxlan.decode_header."""
    cdef uint32_t vni = 0
    cdef int r = fp_decode_header(&data[0] if data.shape[0] else NULL, data.shape[0], &vni)
    if r >= 0:
        return -1, DROP_REASONS[r]
    return vni, None
