/* The packet-rate generator and counter of bench/pps.py, compiled at run time with gcc.
 *
 *   pktgen udp DST_IP PORT SIZE SECONDS VNI   sendmmsg() VXLAN datagrams (decap load): the
 *                                             inner frame is SIZE bytes, Ethernet to IPv4/UDP
 *   pktgen packet IFNAME SIZE SECONDS         send SIZE-byte Ethernet frames on IFNAME with an
 *                                             AF_PACKET socket, bypassing the qdisc (encap load)
 *
 * Each prints one JSON line: {"sent": N, "seconds": T, "errors": E, "cpu": C}, C being its
 * own user + system time (getrusage), which includes the kernel work done in its system calls.  Every datagram or frame
 * is the same pre-built buffer, 64 to a system call, so the per-packet cost here is the
 * kernel's and not ours: python could not offer a fraction of this.  Frames go from
 * 02:00:00:00:00:01 to 02:00:00:00:00:02, an address no VTEP knows, so an encapsulating VTEP
 * sends them to its default remote and a decapsulating one delivers them to a device whose
 * stack drops them at once (PACKET_OTHERHOST in ip_rcv_core): the receive path's cost is the
 * VTEP's, not a socket's.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint16_t csum(const uint8_t *p, size_t n)
{
    uint32_t s = 0;
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)(p[n - 1] << 8);
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)~s;
}

/* An Ethernet frame of `size` bytes: IPv4 10.20.1.1 -> 10.20.1.2, UDP 9 -> 9 (discard). */
static void inner_frame(uint8_t *f, size_t size)
{
    static const uint8_t dst[6] = {2, 0, 0, 0, 0, 2}, src[6] = {2, 0, 0, 0, 0, 1};
    uint8_t *ip = f + 14, *udp = ip + 20;
    size_t iplen = size - 14;
    memset(f, 0x5a, size);
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    memset(ip, 0, 28);
    ip[0] = 0x45;
    ip[2] = iplen >> 8;
    ip[3] = iplen & 0xff;
    ip[8] = 64;
    ip[9] = 17;
    ip[12] = 10; ip[13] = 20; ip[14] = 1; ip[15] = 1;
    ip[16] = 10; ip[17] = 20; ip[18] = 1; ip[19] = 2;
    uint16_t c = csum(ip, 20);
    ip[10] = c >> 8;
    ip[11] = c & 0xff;
    udp[1] = 9;
    udp[3] = 9;
    udp[4] = (iplen - 20) >> 8;
    udp[5] = (iplen - 20) & 0xff;      /* UDP checksum 0: none (RFC 768) */
}

static int blast(int fd, struct mmsghdr *m, double seconds, const char *what)
{
    unsigned long long sent = 0, errors = 0;
    double t0 = now(), t = t0;
    while (t - t0 < seconds) {
        int r = sendmmsg(fd, m, BATCH, 0);
        if (r > 0)
            sent += (unsigned)r;
        else if (errno == ENOBUFS || errno == EAGAIN || errno == ECONNREFUSED)
            errors++;            /* a full queue or an ICMP error: count it and go on */
        else {
            fprintf(stderr, "pktgen %s: sendmmsg: %s\n", what, strerror(errno));
            return 1;
        }
        t = now();
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"sent\": %llu, \"seconds\": %.6f, \"errors\": %llu, \"cpu\": %.6f}\n",
           sent, t - t0, errors,
           ru.ru_utime.tv_sec + ru.ru_stime.tv_sec
               + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6);
    return 0;
}

int main(int argc, char **argv)
{
    static uint8_t buf[9000];
    struct mmsghdr m[BATCH];
    struct iovec iov;
    memset(m, 0, sizeof m);
    if (argc == 7 && !strcmp(argv[1], "udp")) {
        size_t size = (size_t)atoi(argv[4]);
        unsigned vni = (unsigned)atoi(argv[6]);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[3]))};
        if (size < 64 || size > sizeof buf - 8 || inet_pton(AF_INET, argv[2], &to.sin_addr) != 1)
            goto usage;
        memset(buf, 0, 8);
        buf[0] = 0x08;                   /* I flag: the VNI is valid (RFC 7348 section 5) */
        buf[4] = vni >> 16;
        buf[5] = vni >> 8;
        buf[6] = vni;
        inner_frame(buf + 8, size);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) < 0) {
            perror("pktgen udp");
            return 1;
        }
        iov.iov_base = buf;
        iov.iov_len = size + 8;
        for (int i = 0; i < BATCH; i++) {
            m[i].msg_hdr.msg_iov = &iov;
            m[i].msg_hdr.msg_iovlen = 1;
        }
        return blast(fd, m, atof(argv[5]), "udp");
    }
    if (argc == 5 && !strcmp(argv[1], "packet")) {
        size_t size = (size_t)atoi(argv[3]);
        int one = 1;
        struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
                                 .sll_ifindex = (int)if_nametoindex(argv[2])};
        if (size < 64 || size > sizeof buf || !ll.sll_ifindex)
            goto usage;
        inner_frame(buf, size);
        int fd = socket(AF_PACKET, SOCK_RAW, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&ll, sizeof ll) < 0) {
            perror("pktgen packet");
            return 1;
        }
        /* straight to the driver's ndo_start_xmit (tun_net_xmit, vxlan_xmit): no qdisc */
        setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
        iov.iov_base = buf;
        iov.iov_len = size;
        for (int i = 0; i < BATCH; i++) {
            m[i].msg_hdr.msg_iov = &iov;
            m[i].msg_hdr.msg_iovlen = 1;
        }
        return blast(fd, m, atof(argv[4]), "packet");
    }
usage:
    fprintf(stderr, "usage: pktgen udp DST_IP PORT SIZE SECONDS VNI | "
                    "pktgen packet IFNAME SIZE SECONDS\n");
    return 2;
}
