"""Which queue of a multi-queue TAP the host's frames go to: a steering program
(TUNSETSTEERINGEBPF), so that an ARP/ND storm from behind the TAP never shares a queue, and
so a ring, with the host's own traffic and its own neighbour resolution.

Without a program tun picks a queue with tun_automq_select_queue(): by a hash of the frame's
flow, pinned to the queue the flow was last written on.  All of ARP is one flow to it (the
flow dissector takes no address from ARP), so the host's own ARP requests would share the
storm's queue, and be dropped with it when its ring overflows.  With a program,
tun_ebpf_select_queue() runs it on every frame and takes its return value modulo the queue
count.  The program here (a socket filter, as the ioctl asks) returns:

* 0 for ARP, and for an IPv6 Neighbour Solicitation, whose source MAC is not the TAP's own:
  requests from behind the TAP (containers on a bridge), where a storm comes from;
* 1 + a hash of the IP flow mod (queues - 1) for IPv4 and IPv6: the same hash as
  ``flow_queue`` in vxtun/fastpath/threads.pyx (the queue the RX thread writes a delivered
  frame on, which it then polls for the answer): the xor of the source and destination
  addresses (32-bit words), the protocol, and for TCP/UDP (not a fragment) the xor of the
  ports, times 0x9E3779B1, the top 16 bits;
* 1 for the host's own ARP and anything else.

The program reads the frame with LD_ABS/LD_IND (offsets from the Ethernet header, which is
where skb->data points in ndo_select_queue); a frame too short for a load ends the program
with 0.  It needs CAP_BPF (root); where the kernel refuses it, ``steer`` says why and tun's
automq stays in charge (vxtun/fastpath/threads.pyx still writes proxy answers on queue 0).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
import sys

# bpf()'s number (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h), on the
# little-endian machines whose instruction encoding this module writes; elsewhere None, and
# ``load`` fails (ENOSYS): tun's automq steers then, as where the kernel refuses the program.
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
            "ppc64le": 361, "i386": 357, "i686": 357, "armv7l": 386, "armv6l": 386}
SYS_BPF = _SYS_BPF.get(platform.machine()) if sys.byteorder == "little" else None
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_SOCKET_FILTER = 1
TUNSETSTEERINGEBPF = 0x800454E0    # _IOR('T', 224, int)

# eBPF opcodes (include/uapi/linux/bpf.h, bpf_common.h)
_LD, _ALU, _JMP, _ALU64 = 0x00, 0x04, 0x05, 0x07
_W, _H, _B = 0x00, 0x08, 0x10
_ABS, _IND = 0x20, 0x40
_K, _X = 0x00, 0x08
_ADD, _MUL, _AND, _LSH, _RSH, _MOD, _XOR, _MOV = 0x00, 0x20, 0x50, 0x60, 0x70, 0x90, 0xA0, 0xB0
_JA, _JEQ, _JNE, _EXIT = 0x00, 0x10, 0x50, 0x90
R0, R1, R6, R7, R8, R9 = 0, 1, 6, 7, 8, 9
GOLDEN = 0x9E3779B1


class _Asm:
    """A few eBPF instructions with forward jumps to labels."""

    def __init__(self) -> None:
        self.ins: list = []          # [code, dst, src, off or label, imm]
        self.labels: dict = {}

    def emit(self, code: int, dst: int = 0, src: int = 0, off=0, imm: int = 0) -> None:
        self.ins.append([code, dst, src, off, imm])

    def label(self, name: str) -> None:
        self.labels[name] = len(self.ins)

    def ld(self, size: int, off: int) -> None:           # r0 = frame[off] (network order)
        self.emit(_LD | _ABS | size, imm=off)

    def ldind(self, size: int, reg: int, off: int) -> None:
        self.emit(_LD | _IND | size, src=reg, imm=off)

    def alu(self, op: int, dst: int, imm: int | None = None, src: int | None = None,
            wide: bool = False) -> None:
        cls = _ALU64 if wide else _ALU
        if src is None:
            self.emit(cls | op | _K, dst, 0, 0, imm)
        else:
            self.emit(cls | op | _X, dst, src, 0, 0)

    def jmp(self, op: int, reg: int, imm: int, to: str) -> None:
        self.emit(_JMP | op | _K, reg, 0, to, imm)

    def ja(self, to: str) -> None:
        self.emit(_JMP | _JA, 0, 0, to, 0)

    def ret(self, value: int) -> None:
        self.alu(_MOV, R0, value, wide=True)
        self.emit(_JMP | _EXIT)

    def code(self) -> bytes:
        out = b""
        for i, (code, dst, src, off, imm) in enumerate(self.ins):
            if isinstance(off, str):
                off = self.labels[off] - i - 1
            if imm >= 1 << 31:
                imm -= 1 << 32
            out += struct.pack("<BBhi", code, dst | (src << 4), off, imm)
        return out


def program(mac: bytes, queues: int) -> bytes:
    """The steering program for a TAP of ``queues`` queues (>= 2) whose own MAC is ``mac``."""
    if len(mac) != 6 or queues < 2:
        raise ValueError("a 6-byte MAC and at least 2 queues")
    hi, lo = struct.unpack("!IH", mac)
    a = _Asm()
    a.alu(_MOV, R6, src=R1, wide=True)                 # LD_ABS reads the skb in r6
    a.ld(_H, 12)
    a.jmp(_JNE, R0, 0x0806, "ip4")
    # ARP: the host's own (its source MAC is the TAP's) on queue 1, the rest on queue 0
    a.ld(_W, 6)
    a.jmp(_JNE, R0, hi, "q0")
    a.ld(_H, 10)
    a.jmp(_JNE, R0, lo, "q0")
    a.ret(1)
    a.label("ip4")
    a.jmp(_JNE, R0, 0x0800, "ip6")
    a.ld(_W, 26)
    a.alu(_MOV, R7, src=R0, wide=True)
    a.ld(_W, 30)
    a.alu(_XOR, R7, src=R0)
    a.ld(_B, 23)
    a.alu(_MOV, R8, src=R0, wide=True)
    a.alu(_XOR, R7, src=R8)
    a.ld(_H, 20)
    a.alu(_AND, R0, 0x3FFF)
    a.jmp(_JNE, R0, 0, "hash")                       # a fragment: no ports
    a.jmp(_JEQ, R8, 6, "ports4")
    a.jmp(_JNE, R8, 17, "hash")
    a.label("ports4")
    a.ld(_B, 14)
    a.alu(_AND, R0, 0x0F)
    a.alu(_LSH, R0, 2)
    a.alu(_MOV, R9, src=R0, wide=True)
    a.ldind(_W, R9, 14)
    a.ja("ports")
    a.label("ip6")
    a.jmp(_JNE, R0, 0x86DD, "other")
    a.alu(_MOV, R7, 0, wide=True)
    for off in range(22, 54, 4):
        a.ld(_W, off)
        a.alu(_XOR, R7, src=R0)
    a.ld(_B, 20)
    a.alu(_MOV, R8, src=R0, wide=True)
    a.alu(_XOR, R7, src=R8)
    a.jmp(_JEQ, R8, 6, "ports6")
    a.jmp(_JEQ, R8, 17, "ports6")
    a.jmp(_JNE, R8, 58, "hash")
    a.ld(_B, 54)                                     # ICMPv6: a Neighbour Solicitation
    a.jmp(_JNE, R0, 135, "hash")
    a.ld(_W, 6)                                      # ... not from the host itself: queue 0
    a.jmp(_JNE, R0, hi, "q0")
    a.ld(_H, 10)
    a.jmp(_JNE, R0, lo, "q0")
    a.ja("hash")
    a.label("ports6")
    a.ld(_W, 54)
    a.label("ports")                                 # r0 = sport << 16 | dport
    a.alu(_MOV, R1, src=R0)
    a.alu(_RSH, R1, 16)
    a.alu(_XOR, R0, src=R1)
    a.alu(_AND, R0, 0xFFFF)
    a.alu(_XOR, R7, src=R0)
    a.label("hash")
    a.alu(_MUL, R7, GOLDEN)
    a.alu(_RSH, R7, 16)
    a.alu(_MOD, R7, queues - 1)
    a.alu(_ADD, R7, 1)
    a.alu(_MOV, R0, src=R7, wide=True)
    a.emit(_JMP | _EXIT)
    a.label("other")
    a.ret(1)
    a.label("q0")
    a.ret(0)
    return a.code()


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: bytes) -> int:
    if SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"bpf() on {platform.machine()} ({sys.byteorder}-endian) "
                                    "is not known to vxtun")
    buf = ctypes.create_string_buffer(attr, 128)
    r = _libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    if cmd == BPF_PROG_TEST_RUN:
        return struct.unpack_from("<I", buf.raw, 4)[0]       # retval
    return r


def load(code: bytes) -> int:
    """Load a socket-filter program; its fd."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    attr = struct.pack("<IIQQIIQ", BPF_PROG_TYPE_SOCKET_FILTER, len(code) // 8,
                       ctypes.addressof(insns), ctypes.addressof(lic), 0, 0, 0)
    return _bpf(BPF_PROG_LOAD, attr)


def run(prog_fd: int, frame: bytes) -> int:
    """What the program returns for ``frame`` (BPF_PROG_TEST_RUN).  The test run takes its
    input as a received frame and pulls an Ethernet header first (eth_type_trans), so a dummy
    one goes in front: the program then sees ``frame`` from its first byte, as tun's
    ndo_select_queue does."""
    data = bytes(12) + b"\x08\x00" + frame
    buf = ctypes.create_string_buffer(data, len(data))
    attr = struct.pack("<IIIIQQII", prog_fd, 0, len(data), 0, ctypes.addressof(buf), 0, 1, 0)
    return _bpf(BPF_PROG_TEST_RUN, attr)


def steer(tap_fd: int, mac: bytes, queues: int) -> str | None:
    """Attach the steering program for ``mac`` and ``queues`` to the TAP of ``tap_fd`` (any of
    its queues), replacing one attached before; None when done, else why not (the TAP keeps
    tun's automq)."""
    try:
        fd = load(program(mac, queues))
    except OSError as e:
        if SYS_BPF is None:
            return f"no steering program: {e.strerror}"
        return f"the kernel refused the steering program ({e.strerror})"
    try:
        fcntl.ioctl(tap_fd, TUNSETSTEERINGEBPF, struct.pack("i", fd))
    except OSError as e:
        return f"TUNSETSTEERINGEBPF failed ({e.strerror})"
    finally:
        os.close(fd)                  # tun holds its own reference (__tun_set_ebpf)
    return None
