# cython: language_level=3
"""The libc and Linux declarations the fast path uses (Cython's own libc/posix .pxd files
lack these): threads, signals, clocks, poll/epoll/eventfd, sockets and their control messages,
socket filters, and the page-size hint for large FDB tables.  Every module of vxtun.fastpath
that needs one of them cimports it from here."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.uio cimport iovec


cdef extern from *:
    """
    #define FP_LE (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    """
    int FP_LE     # 1 on a little-endian host: the checksum loops swap once at the end


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
    int EPOLL_CTL_DEL
    uint32_t EPOLLIN
    uint32_t EPOLLERR
    uint32_t EPOLLHUP


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
    int IP_MULTICAST_IF
    int IP_TOS
    int IP_MTU_DISCOVER
    int IP_PMTUDISC_DONT
    int IPV6_V6ONLY
    int IPV6_UNICAST_HOPS
    int IPV6_TCLASS
    int IPV6_MTU_DISCOVER
    int IPV6_PMTUDISC_DONT


cdef extern from "<sys/mman.h>" nogil:
    int madvise(void* addr, size_t len, int advice)
    int MADV_HUGEPAGE


cdef extern from "<stdlib.h>" nogil:
    int posix_memalign(void** p, size_t align, size_t size)


cdef inline double fp_now() noexcept nogil:
    """time.monotonic(): both read CLOCK_MONOTONIC, so C and Python timestamps compare."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9
