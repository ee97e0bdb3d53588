/* The cost of waking a sleeping thread on this machine: the floor under vxtun's round trips.
 *
 * The kernel's vxlan answers a ping without waking anybody: everything runs in the softirq
 * of the packet, in the context of whoever sent it.  Every hop of vxtun's dataplane is a
 * thread that reads a file descriptor, and one that was asleep must be woken (on a VM an
 * inter-processor interrupt to a halted vCPU).  Two threads pass a byte over pipes, one
 * round trip every GAP microseconds (as bench.run's pings come every 2 ms):
 *
 *   asleep:   both block in read(): two wake-ups per round trip;
 *   spinning: the peer polls its pipe without sleeping: one wake-up (the caller's).
 *
 * Output, one line: "asleep_p50 asleep_p99 spinning_p50 spinning_p99" in microseconds.
 * Usage: wakeup [ROUNDS [GAP_US]]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int to_peer[2], to_main[2];
static volatile int spinning;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *peer(void *arg)
{
    char c;
    ssize_t r;
    (void)arg;
    for (;;) {
        r = read(to_peer[0], &c, 1);
        if (r < 0 && errno == EAGAIN)
            continue;                   /* the spinning mode: the pipe is non-blocking */
        if (r != 1 || c == 'q')
            return NULL;
        if (write(to_main[1], &c, 1) != 1)
            return NULL;
    }
}

static int cmp(const void *a, const void *b)
{
    double d = *(const double *)a - *(const double *)b;
    return d < 0 ? -1 : d > 0;
}

static void rounds(int n, int gap_us, double *p50, double *p99)
{
    double *r = malloc(n * sizeof(double)), t0;
    char c = 'x';
    int i;
    if (r == NULL)
        exit(1);
    for (i = 0; i < n; i++) {
        usleep(gap_us);
        t0 = now();
        if (write(to_peer[1], &c, 1) != 1 || read(to_main[0], &c, 1) != 1)
            exit(1);
        r[i] = (now() - t0) * 1e6;
    }
    qsort(r, n, sizeof(double), cmp);
    *p50 = r[n / 2];
    *p99 = r[(n * 99) / 100];
    free(r);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 500, gap = argc > 2 ? atoi(argv[2]) : 2000;
    double a50, a99, s50, s99;
    pthread_t t;
    char q = 'q';
    if (n < 10 || gap < 0 || pipe(to_peer) || pipe(to_main))
        return 2;
    if (pthread_create(&t, NULL, peer, NULL))
        return 1;
    rounds(n, gap, &a50, &a99);
    fcntl(to_peer[0], F_SETFL, O_NONBLOCK);        /* from now on the peer spins */
    rounds(n, gap, &s50, &s99);
    if (write(to_peer[1], &q, 1) != 1)
        return 1;
    pthread_join(t, NULL);
    printf("%.1f %.1f %.1f %.1f\n", a50, a99, s50, s99);
    return 0;
}
