"""Open the overlay TAP device with a virtio-net header (IFF_VNET_HDR).

The TAP is not persistent: it disappears when the last file descriptor closes, so a VTEP that
exits for any reason leaves no device behind.

With several queues (``open_tap_queues``, IFF_MULTI_QUEUE) each fd is one of the device's
queues: tun_select_queue() picks the queue of each frame the host sends, and its "automq"
steers a flow to the queue that frames of the same flow were last *written* on
(tun_flow_update() in tun_get_user(), looked up by tun_automq_select_queue(); a flow never
seen is spread by its hash).  So the fd a reply is written on chooses the queue its answers
come back on: vxtun/fastpath/threads.pyx uses that to keep the host's own traffic away from
a queue that an ARP storm fills.

The other way round, ``ip link del`` can delete the TAP while we hold its fd: tun_detach_all()
detaches the fd, which then polls EPOLLERR (tun_chr_poll) and fails every read with EBADFD
(tun_chr_read_iter).  ``failure`` words that for the operator.
"""
from __future__ import annotations

import errno
import fcntl
import os
import struct

from ..core.config import TAPQ_MAX
from ..errors import LocalError

TUNSETIFF = 0x400454CA
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
IFF_MULTI_QUEUE = 0x0100
IFF_TUN_EXCL = 0x8000       # tun_set_iff(): EBUSY if the device exists (never attach to it)
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08


def default_queues(cpus: int | None = None) -> int:
    """The queue count ``vxtun up`` gives a TAP of the fast dataplane when not told: one per
    CPU (up to 4) for the host's flows, and queue 0, where ARP goes (threads.pyx); so at least
    2, and never more than TAPQ_MAX."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(2, min(1 + n, 5, TAPQ_MAX))


def open_tap(name: str, offload: int = 0) -> int:
    """Create TAP ``name`` and return its non-blocking fd (frames carry a 10-byte vnet header).

    ``offload`` is passed to TUNSETOFFLOAD: 0 asks the kernel to hand us complete checksums and
    MTU-sized frames; TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6 lets it hand us partial checksums and
    64 KB TCP super-frames (the fast path's choice).
    """
    return _open_queue(name, offload, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)


def open_tap_queues(name: str, offload: int = 0, queues: int = 1) -> list[int]:
    """Create TAP ``name`` with ``queues`` queues and return their fds (queue 0 first); one
    queue is ``open_tap`` (no IFF_MULTI_QUEUE).  The first fd creates the device, refusing
    one that exists (IFF_TUN_EXCL: without it, IFF_MULTI_QUEUE would attach us to another
    program's multi-queue TAP of that name); the others attach to it."""
    if not 1 <= queues <= TAPQ_MAX:
        raise LocalError(f"invalid queue count {queues}: a TAP has 1..{TAPQ_MAX} queues here")
    if queues == 1:
        return [open_tap(name, offload)]
    flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE
    fds = [_open_queue(name, offload, flags | IFF_TUN_EXCL)]
    try:
        while len(fds) < queues:
            fds.append(_open_queue(name, offload, flags))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _open_queue(name: str, offload: int, flags: int) -> int:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise LocalError(f"cannot open /dev/net/tun: {e.strerror} (is the tun module loaded, "
                         "and are you root?)") from None
    try:
        ifr = struct.pack("16sH22x", name.encode(), flags)
        try:
            fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as e:
            if e.errno == 16:  # EBUSY
                raise LocalError(f"device {name} already exists") from None
            raise LocalError(f"cannot create TAP {name}: {e.strerror}") from None
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", 10))
        fcntl.ioctl(fd, TUNSETOFFLOAD, offload)
        os.set_blocking(fd, False)
    except BaseException:
        os.close(fd)
        raise
    return fd


def failure(err: int) -> str:
    """What a failed read of a TAP (``err``: its errno; 0 for EPOLLHUP without an error) means,
    in words for a log line."""
    if err == errno.EBADFD:
        return "the TAP was deleted (ip link del)"
    if err == 0:
        return "the TAP was closed under us (EPOLLHUP)"
    return f"the TAP failed ({errno.errorcode.get(err, err)}: {os.strerror(err)})"


SIOCGIFHWADDR = 0x8927


def hwaddr(name: str) -> bytes | None:
    """The device's MAC address now (SIOCGIFHWADDR, in the caller's network namespace), or
    None if there is no such device."""
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            ifreq = fcntl.ioctl(s, SIOCGIFHWADDR, struct.pack("16s16x", name.encode()[:15]))
    except (OSError, UnicodeError):
        return None
    return ifreq[18:24]          # struct ifreq: name[16], then sockaddr: family (2), data
