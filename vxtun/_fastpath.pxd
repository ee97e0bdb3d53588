# cython: language_level=3
"""The C-level interface of vxtun._fastpath (see _fastpath.pyx for the rules and why)."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t

# --- wire rules (vxtun/wire/vxlan.py, vxtun/wire/offload.py) -------------------------------

cdef int fp_decode_header(const uint8_t* p, size_t n, uint32_t* vni) noexcept nogil
cdef bint fp_reserved_bits_set(const uint8_t* p) noexcept nogil
