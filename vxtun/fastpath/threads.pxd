# cython: language_level=3
"""The C-level interface of vxtun.fastpath.threads: starting and stopping the two threads."""
from vxtun.fastpath.state cimport fp_dp

cdef int dp_start(fp_dp* dp) noexcept nogil
cdef void dp_stop(fp_dp* dp) noexcept nogil
