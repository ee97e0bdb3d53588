# cython: language_level=3
"""The C-level interface of vxtun._fastpath.

_fastpath.pyx states the rules and why; this file states what other Cython code may call and the
data structures the two per-direction threads share:

* wire rules (mirrors of vxtun/wire/vxlan.py and vxtun/wire/offload.py),
* ``fp_fdb``: one VTEP's FDB, an open-addressing hash table keyed by the MAC, under a mutex,
* ``fp_vtep`` / ``fp_underlay`` / ``fp_dp``: the dataplane the TX thread (TAP -> underlay) and
  the RX thread (underlay -> TAP) run over, and ``fp_queue``, the bounded queue of the rare
  things handed to Python.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from posix.uio cimport iovec


# --- libc / Linux declarations the threads need --------------------------------------------

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef unsigned long pthread_t
    int pthread_mutex_init(pthread_mutex_t* m, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* m)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_mutex_trylock(pthread_mutex_t* m)
    int pthread_create(pthread_t* t, const void* attr, void* (*start)(void*) noexcept nogil,
                       void* arg)
    int pthread_join(pthread_t t, void** ret)


cdef extern from "<signal.h>" nogil:
    ctypedef struct sigset_t:
        pass
    int sigfillset(sigset_t* s)
    int pthread_sigmask(int how, const sigset_t* s, sigset_t* old)
    int SIG_BLOCK


cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC


cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    short POLLOUT
    short POLLIN


cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC


cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
        uint32_t u32
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* ev)
    int epoll_wait(int epfd, epoll_event* evs, int maxevents, int timeout)
    int EPOLL_CLOEXEC
    int EPOLL_CTL_ADD
    uint32_t EPOLLIN


cdef extern from "<sys/socket.h>" nogil:
    ctypedef uint32_t socklen_t
    cdef struct sockaddr:
        uint16_t sa_family
    cdef struct sockaddr_storage:
        uint16_t ss_family
    cdef struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr* CMSG_FIRSTHDR(msghdr* m)
    cmsghdr* CMSG_NXTHDR(msghdr* m, cmsghdr* c)
    unsigned char* CMSG_DATA(cmsghdr* c)
    size_t CMSG_SPACE(size_t n)
    size_t CMSG_LEN(size_t n)
    ssize_t sendmsg(int fd, const msghdr* m, int flags)
    ssize_t recvmsg(int fd, msghdr* m, int flags)
    int sendmmsg(int fd, mmsghdr* v, unsigned int n, int flags)
    int recvmmsg(int fd, mmsghdr* v, unsigned int n, int flags, timespec* t)
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr* addr, socklen_t len)
    int getsockname(int fd, sockaddr* addr, socklen_t* len)
    int setsockopt(int fd, int level, int name, const void* val, socklen_t len)
    int getsockopt(int fd, int level, int name, void* val, socklen_t* len)
    int AF_INET
    int AF_INET6
    int SOL_SOCKET
    int SOCK_DGRAM
    int SOCK_NONBLOCK
    int SOCK_CLOEXEC
    int SO_SNDBUF
    int SO_SNDBUFFORCE
    int SO_ATTACH_FILTER
    int MSG_DONTWAIT


cdef extern from "<linux/filter.h>" nogil:
    cdef struct sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    cdef struct sock_fprog:
        unsigned short len
        sock_filter* filter


cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        uint32_t s_addr
    cdef struct sockaddr_in:
        uint16_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    cdef struct in6_addr:
        uint8_t s6_addr[16]
    cdef struct sockaddr_in6:
        uint16_t sin6_family
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    int IPPROTO_UDP
    int IPPROTO_IP
    int IPPROTO_IPV6
    int IP_TTL
    int IP_TOS
    int IP_MTU_DISCOVER
    int IP_PMTUDISC_DONT
    int IPV6_V6ONLY
    int IPV6_UNICAST_HOPS
    int IPV6_TCLASS
    int IPV6_MTU_DISCOVER
    int IPV6_PMTUDISC_DONT


# --- wire rules (vxtun/wire/vxlan.py, vxtun/wire/offload.py) -------------------------------

cdef struct fp_vnet:
    # struct virtio_net_hdr, in host order (tun uses the host's byte order)
    uint8_t flags
    uint8_t gso_type
    uint16_t hdr_len
    uint16_t gso_size
    uint16_t csum_start
    uint16_t csum_offset

cdef int fp_decode_header(const uint8_t* p, size_t n, uint32_t* vni) noexcept nogil
cdef bint fp_reserved_bits_set(const uint8_t* p) noexcept nogil
cdef uint32_t fp_csum_add(const uint8_t* p, size_t n, uint32_t initial) noexcept nogil
cdef uint16_t fp_source_port(const uint8_t* f, size_t n, uint32_t lo, uint32_t hi) noexcept nogil
cdef void fp_rx_vnet_header(const uint8_t* f, size_t n, int mtu, fp_vnet* h) noexcept nogil
cdef int fp_complete_checksum(uint8_t* f, size_t n, size_t start, size_t off) noexcept nogil
cdef uint8_t fp_encap_tos(const uint8_t* f, size_t n) noexcept nogil
cdef int fp_ecn_decap(uint8_t* f, size_t n, uint8_t outer) noexcept nogil


# --- the FDB -------------------------------------------------------------------------------

cdef struct fp_remote:
    uint8_t addr[16]      # IPv4 in the first 4 bytes
    uint8_t family        # 4 or 6
    uint16_t port         # 0: the VTEP's dstport
    int32_t vni           # -1: the VTEP's own VNI
    int32_t via           # -1: none; else an index into CFdb's interned device names

cdef struct fp_entry:
    uint64_t mac          # the 6 octets, big-endian, in the low 48 bits
    double updated
    double used
    fp_remote* ext        # remotes 1..nr-1 (flood lists only)
    uint32_t nr
    uint32_t cap          # capacity of ext
    uint8_t state         # ST_PERMANENT, ST_STATIC, ST_DYNAMIC
    fp_remote r0

cdef struct fp_fdb:
    pthread_mutex_t lock
    int32_t* index        # open addressing, linear probing: -1 or a position in entries
    uint32_t mask         # index size - 1 (a power of two, at least twice the entry count)
    fp_entry* entries     # dense: deletion moves the last entry into the hole
    uint32_t count
    uint32_t cap
    double ageing
    uint32_t maxaddress
    int learning

cdef struct fp_snap:
    # a copy of one entry taken under the lock, turned into Python objects after unlocking
    fp_entry e
    fp_remote* rem

cdef fp_fdb* fdb_new() noexcept nogil
cdef void fdb_free(fp_fdb* t) noexcept nogil
cdef int64_t fdb_find(fp_fdb* t, uint64_t mac, uint32_t* slot) noexcept nogil
cdef int fdb_learn(fp_fdb* t, uint64_t mac, int family, const uint8_t* addr,
                   double now) noexcept nogil
cdef int fdb_lookup_copy(fp_fdb* t, uint64_t mac, double now, fp_remote** buf,
                         uint32_t* cap) noexcept nogil


# --- the dataplane -------------------------------------------------------------------------

cdef enum:
    NDROPS = 14           # len(vxtun.core.stats.DROP_REASONS), checked at import
    QLEN = 1024           # punt queue length

cdef struct fp_stats:
    uint64_t rx_packets
    uint64_t rx_bytes
    uint64_t tx_packets
    uint64_t tx_bytes
    uint64_t learned
    uint64_t moved
    uint64_t drops[NDROPS]

cdef struct fp_underlay:
    uint32_t id
    int rx_fd
    int tx_fd
    int family            # 4 or 6
    int gro               # UDP_GRO is on: a read may hold several datagrams
    fp_stats st[2]        # drops before the VNI is known (Demux.stats); [thread]
    pthread_mutex_t rxlock    # held by the thread reading this socket (in-order delivery)
    void** vnis           # fp_vtep*, open addressing by VNI
    uint32_t vmask

cdef enum:
    GSO_SOCKS = 128       # UDP GSO sockets per VTEP (one per active source port)

cdef struct fp_gsosock:
    int fd
    uint32_t sport
    double used

cdef struct fp_vtep:
    uint32_t id
    uint32_t vni
    int tap_fd
    int tx_fd             # this VTEP's send socket (raw UDP: we write the UDP header)
    int mtu
    uint8_t mac[6]
    uint32_t sport_lo
    uint32_t sport_hi
    uint16_t dstport
    int proxy
    int tap_tso           # the TAP hands us TSO super-frames / partial checksums
    int tap_coalesce      # we may write TCP super-frames (GSO) to the TAP
    fp_fdb* fdb
    fp_underlay* us
    # UDP GSO (UDP_SEGMENT) needs a UDP socket bound to each source port: a small LRU of them
    int gso_on            # probed at attach; 0: every datagram goes through tx_fd
    int ttl               # copied from tx_fd (0: the default)
    uint8_t local[16]     # tx_fd's bound address (all zeros: any)
    fp_gsosock* gso       # GSO_SOCKS slots
    uint8_t* gso_slot     # source port -> slot + 1 (0: none, 255: bind failed)
    pthread_mutex_t txlock    # held by the thread reading this TAP (in-order sending)
    fp_stats st[2]        # st[0] written by the TX thread only, st[1] by the RX thread only

cdef struct fp_punt:
    uint32_t kind
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

cdef struct fp_dp:
    fp_vtep** vteps
    int nvteps
    fp_underlay** uls
    int nuls
    int running
    int poll_other        # after its own work, each thread tries the other direction once
    int stop_fd
    pthread_t tx_thread
    pthread_t rx_thread
    fp_queue q


cdef class CFdb:
    cdef fp_fdb* t
    cdef list _vias
    cdef dict _via_index
    cdef int _remote_in(self, object remote, fp_remote* r) except -1
    cdef object _remote_out(self, const fp_remote* r)
    cdef object _snap_out(self, fp_snap* s)
