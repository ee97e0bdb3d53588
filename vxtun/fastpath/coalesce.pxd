# cython: language_level=3
"""The C-level interface of vxtun.fastpath.coalesce: TCP segments delivered back to back
become one GSO super-frame for the TAP (see coalesce.pyx)."""
from libc.stdint cimport uint8_t, uint32_t

from vxtun.fastpath.wire cimport VNET_HDR_LEN

cdef enum:
    COALBUF = VNET_HDR_LEN + 65536 + 64

cdef struct fp_coal:
    void* owner           # whose TAP the pending frame goes to (the caller's); NULL: none yet
    int mtu               # that TAP's MTU
    uint8_t* buf          # virtio-net header + the frame being built (COALBUF bytes)
    uint32_t len          # frame length so far
    uint32_t l4
    uint32_t thl
    uint32_t mss          # payload of the first segment: every one but the last has it
    uint32_t next_seq
    uint32_t nseg
    int v6
    int closed            # a short or PSH segment ended the run: the next one starts anew

cdef int coal_add(fp_coal* c, void* owner, int mtu, const uint8_t* f, size_t n) noexcept nogil
cdef void coal_start(fp_coal* c, void* owner, int mtu, const uint8_t* f,
                     size_t n) noexcept nogil
cdef size_t coal_finish(fp_coal* c) noexcept nogil
