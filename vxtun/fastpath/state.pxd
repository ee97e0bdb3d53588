# cython: language_level=3
"""The tables the two threads run over (declarations only; vxtun/fastpath/dataplane.pyx builds
them, vxtun/fastpath/threads.pyx and send.pyx run over them).

Each struct wraps what the decisions see (vxtun/fastpath/decide.pxd) with the file
descriptors, locks and sockets only the threads use: an ``fp_vtep`` begins with its
``fp_vstate`` and an ``fp_underlay`` with its ``fp_demux``, so a decision's pointer is the
thread's pointer.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t

from vxtun.fastpath.decide cimport TAPQ_MAX, fp_demux, fp_vstate
from vxtun.fastpath.libc cimport pthread_mutex_t, pthread_t, sockaddr_in6, socklen_t
from vxtun.fastpath.trace cimport fp_tring

cdef enum:
    QLEN = 1024           # punt queue length
    GSO_SOCKS = 128       # UDP GSO sockets per VTEP (one per active source port)
    ROLE_TX = 0           # a thread's role, and the counter block (fp_stats) it writes
    ROLE_RX = 1

cdef struct fp_underlay:
    fp_demux dm           # first: the VTEPs by VNI and the drops before a VNI is known
    uint32_t id
    int rx_fd
    int tx_fd
    int family            # 4 or 6
    int gro               # UDP_GRO is on: a read may hold several datagrams
    pthread_mutex_t rxlock    # held by the thread reading this socket (in-order delivery)

cdef enum:
    SRC_CACHE = 8         # remotes whose source address a VTEP remembers (fp_srcent)

cdef struct fp_srcent:
    # the source address the routes give datagrams to ``dst`` (vxtun.io.underlay.SourceCache)
    uint8_t dst[16]
    uint8_t src[16]
    double at             # when it was looked up (0: free)

cdef struct fp_gsosock:
    int fd
    uint32_t sport
    double used

cdef struct fp_vtep:
    fp_vstate s           # first: what the decisions see (VNI, MAC, FDB, counters, ...)
    int tap_fd
    int tx_fd             # this VTEP's send socket (raw UDP: we write the UDP header)
    int tap_tso           # the TAP hands us TSO super-frames / partial checksums
    int tap_coalesce      # we may write TCP super-frames (GSO) to the TAP
    fp_underlay* us
    # UDP GSO (UDP_SEGMENT) needs a UDP socket bound to each source port: a small LRU of them
    int gso_on            # probed at attach; 0: every datagram goes through tx_fd
    sockaddr_in6 local    # tx_fd's address (a sockaddr_in on IPv4), where GSO sockets bind
    socklen_t local_len
    fp_gsosock* gso       # GSO_SOCKS slots
    uint8_t* gso_slot     # source port -> slot + 1 (0: none, 255: bind failed)
    # the outer UDP checksum (vxtun.io.underlay states the rules): IPv4 with udpcsum is ours
    # to compute, over a pseudo-header whose source is ``local`` or the route's (srcs)
    int csum4
    int has_local         # tx_fd is bound to an address: the pseudo-header's source
    uint32_t flowinfo     # IPv6: the flow label in network order, leased on tx_fd (0: none)
    fp_srcent srcs[SRC_CACHE]
    uint8_t mcast_if[12]  # tx_fd's IP_MULTICAST_IF (a struct ip_mreqn), for a group's source
    int has_mcast_if
    pthread_mutex_t txlock    # held by a thread sending for this VTEP (its send state)
    int tap_gone          # a read of the TAP failed (ip link del): said once to Python, and
                          # the TX thread no longer watches it (set under qlock[0])
    # A multi-queue TAP (IFF_MULTI_QUEUE): qfd[0] is tap_fd; queue q is read by the TX thread
    # of queue q under qlock[q] (and tried by the RX thread), which takes txlock only to send.
    int nq
    int qfd[TAPQ_MAX]
    pthread_mutex_t qlock[TAPQ_MAX]
    int qgone[TAPQ_MAX]   # queue q failed (the TAP is going): its thread stopped watching it
    uint64_t qread[TAPQ_MAX]  # frames read from each queue (by its reader, under its lock)
    # UDP-tunnel GSO egress (vxtun/io/gso.py, _tnl_send in send.pyx): a TSO super-frame for
    # one unicast remote is written whole, wrapped in IPv4 (IPv6)/UDP/VXLAN, to a TAP of our own
    # that the kernel forwards from; the kernel segments it (or a kernel peer takes it whole)
    int tnl_fd            # -1: none (every frame goes through tx_fd / the GSO sockets)
    uint8_t tnl_mac[6]    # the egress TAP's MAC: its frames must be for it (PACKET_HOST)
    uint8_t tnl_ttl       # the outer TTL when the action has none (tx_fd's IP_TTL or
                          # IPV6_UNICAST_HOPS)
    int tnl_df            # tx_fd sets DF (IP_MTU_DISCOVER other than IP_PMTUDISC_DONT)
    uint32_t tnl_ident    # the next outer IPv4 ID (each segment takes one, as inet_gso_segment)
    uint64_t tnl_sent     # super-frames written to the egress
    uint64_t tnl_errors   # writes it refused (the frame then went the usual way)

cdef struct fp_punt:
    uint32_t kind         # PUNT_FRAME, PUNT_LEARN or PUNT_TAP_GONE (decide.pxd)
    uint32_t vid
    uint32_t len
    uint8_t* data

cdef struct fp_queue:
    pthread_mutex_t lock
    fp_punt slots[QLEN]
    uint32_t head
    uint32_t count
    int efd               # eventfd the Python loop watches
    uint64_t lost

cdef struct fp_thread:
    void* dp              # the fp_dp it belongs to
    int role              # ROLE_TX: reads the TAPs; ROLE_RX: reads the sockets
    int q                 # ROLE_TX: the TAP queue it reads (of every VTEP that has it)
    int ctr               # its counter block (fp_vstate.st): 0, 1 (RX) or 1 + q
    pthread_t tid

cdef struct fp_dp:
    fp_vtep** vteps
    int nvteps
    fp_underlay** uls
    int nuls
    int running
    int poll_other        # after its own work, each thread tries the other direction once
    int stop_fd
    fp_thread th[TAPQ_MAX + 1]  # [0] TX of queue 0, [1] RX, [1 + q] TX of queue q
    int nthreads          # started by dp_start: 2 + (the most queues of any VTEP) - 1
    fp_queue q
    fp_tring tr           # vxtun trace: records of the threads' decisions (tr.on: tracing)
