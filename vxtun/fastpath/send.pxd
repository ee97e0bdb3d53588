# cython: language_level=3
"""The C-level interface of vxtun.fastpath.send: how a thread carries out an A_SEND (batched
sendmmsg() on the raw socket, or UDP GSO trains from per-source-port UDP sockets)."""
from libc.stdint cimport uint8_t, uint64_t
from posix.uio cimport iovec

from vxtun.fastpath.decide cimport fp_tx_action
from vxtun.fastpath.libc cimport mmsghdr, sockaddr_in6
from vxtun.fastpath.state cimport fp_vtep
from vxtun.fastpath.wire cimport VNET_HDR_LEN

cdef enum:
    TXBATCH = 64          # datagrams per sendmmsg()
    BURST = 64            # frames read from one TAP before looking at the others
    SMALLBUF = 2048       # a frame up to this size can wait for the next ones' sendmmsg()
    TAPBUF = 65536 + VNET_HDR_LEN + 64
    SOL_UDP = 17
    UDP_SEGMENT = 103
    UDP_GRO = 104
    IPV6_AUTOFLOWLABEL = 70
    IPV6_HOPLIMIT = 52
    SO_NO_CHECK = 11      # on tx_fd: this VTEP sends a zero UDP checksum (vxtun.io.underlay)
    GSO_MAXSEG = 64       # UDP_MAX_SEGMENTS
    GSO_MAXBYTES = 65000  # a UDP GSO send is still one IP datagram: under 64 KB in all

cdef struct fp_txctx:
    int tid               # which counter block this thread writes (ROLE_TX or ROLE_RX)
    uint8_t* buf          # one read from a TAP: virtio-net header + frame
    fp_tx_action act      # what fp_tx_decide made of it, with its segment and remote buffers
    mmsghdr* msgs
    iovec* iov
    uint8_t* uh           # UDP + VXLAN header of each datagram (16 bytes each)
    sockaddr_in6* addrs
    uint64_t tosctl[4]    # the TOS and TTL control messages of the current frame
    # Small frames of one burst share one sendmmsg(): each is copied out of ``buf`` (the next
    # read reuses it) into a slot of ``small``; ``pend`` datagrams wait in msgs[0:pend], their
    # control messages in ``ctl`` (4 words a datagram).  Flushed at the end of the burst and
    # before any send that cannot wait, so a flow stays in order.
    uint8_t* small
    uint64_t* ctl
    int pend
    int npend_frames

cdef int fp_txctx_init(fp_txctx* c, int tid) noexcept nogil
cdef void fp_txctx_free(fp_txctx* c) noexcept nogil
cdef void fp_tx_send(fp_txctx* c, fp_vtep* v) noexcept nogil
cdef void fp_tx_pend_flush(fp_txctx* c, fp_vtep* v) noexcept nogil
cdef void fp_probe_gso(fp_vtep* v, bint udp_gso) noexcept nogil
cdef void fp_gso_close_all(fp_vtep* v) noexcept nogil
