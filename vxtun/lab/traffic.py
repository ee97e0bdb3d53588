"""Traffic for labs and tests: small programs run inside a namespace, and their drivers.

Each program is a subcommand of ``python -m vxtun.lab.traffic`` and prints one JSON object per
line on stdout, so the side that started it (``Host.popen``/``Host.run``) can read the result.
They need nothing but the standard library: a lab runs on a machine with Python and iproute2
only (no ping, no tcpdump, no iperf3).

    sink PORT [FAMILY]               accept one TCP connection, read to EOF, print length + sha256
    source HOST PORT NBYTES SEED     send NBYTES pseudo-random bytes (seeded), print length + sha256
    ping HOST COUNT SIZE             ICMP/ICMPv6 echo, print sent/received
    capture IFACE PORT COUNT SECS [in|out]
                                     AF_PACKET capture of UDP datagrams to PORT, print them in hex
    inject IFACE HEX                 write one Ethernet frame on IFACE (a packet socket)
    udp HOST PORT HEX...             send each HEX as one UDP datagram to HOST:PORT

The byte-compared TCP transfer is what proves a dataplane handles checksum offload and GSO:
ping works with broken TCP checksums, a sha256 over megabytes does not.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from typing import NamedTuple

TIMEOUT = 60.0       # a stalled TCP stream is a failure, not a hang
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4      # sll_pkttype of a frame this host sent


def _say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def payload(nbytes: int, seed: int) -> bytes:
    """The bytes a ``source`` sends: reproducible, incompressible, never periodic."""
    return random.Random(seed).randbytes(nbytes)


# --- programs (run inside a namespace) --------------------------------------------------------


def sink(port: int, family: str = "4") -> None:
    fam = socket.AF_INET6 if family == "6" else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("", port))
    ls.listen(1)
    ls.settimeout(TIMEOUT)
    _say(listening=port)
    conn, peer = ls.accept()
    conn.settimeout(TIMEOUT)
    h = hashlib.sha256()
    n = 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    conn.close()
    _say(bytes=n, sha256=h.hexdigest(), peer=peer[0])


def source(host: str, port: int, nbytes: int, seed: int) -> None:
    data = payload(nbytes, seed)
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    t0 = time.monotonic()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    # Wait for the sink to close: then every byte was read, not merely queued.
    while s.recv(1 << 16):
        pass
    s.close()
    _say(bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
         seconds=round(time.monotonic() - t0, 3))


def _csum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ping(host: str, count: int, size: int) -> None:
    """Echo requests of ``size`` payload bytes; larger than the MTU they leave as IP fragments."""
    v6 = ":" in host
    if v6:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        req_type, rep_type = 128, 129      # the kernel fills in ICMPv6 checksums
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        req_type, rep_type = 8, 0
    ident = os.getpid() & 0xFFFF
    body = bytes(i & 0xFF for i in range(size))
    received = 0
    for seq in range(1, count + 1):
        hdr = struct.pack("!BBHHH", req_type, 0, 0, ident, seq)
        if not v6:
            hdr = struct.pack("!BBHHH", req_type, 0, _csum(hdr + body), ident, seq)
        s.sendto(hdr + body, (host, 0))
        deadline = time.monotonic() + 2.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                break
            pkt = s.recv(65535)
            icmp = pkt if v6 else pkt[(pkt[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == rep_type and \
                    struct.unpack("!HH", icmp[4:8]) == (ident, seq) and icmp[8:] == body:
                received += 1
                break
    _say(sent=count, received=received)


def capture(iface: str, port: int, count: int, seconds: float, direction: str = "") -> None:
    """Frames on ``iface`` carrying UDP to ``port`` over IPv4 or IPv6 (no extension headers);
    ``direction`` "out" keeps only frames this host sent, "in" only those it received."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    _say(ready=True)
    frames = []
    deadline = time.monotonic() + seconds
    while len(frames) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        f, addr = s.recvfrom(65535)
        outgoing = addr[2] == PACKET_OUTGOING
        if (direction == "out" and not outgoing) or (direction == "in" and outgoing):
            continue
        etype = struct.unpack("!H", f[12:14])[0]
        if etype == 0x0800 and f[23] == 17:
            udp = 14 + (f[14] & 0x0F) * 4
        elif etype == 0x86DD and f[20] == 17:
            udp = 14 + 40
        else:
            continue
        if len(f) >= udp + 8 and struct.unpack("!H", f[udp + 2:udp + 4])[0] == port:
            frames.append(f.hex())
    _say(frames=frames)


def inject(iface: str, frame_hex: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    s.send(bytes.fromhex(frame_hex))
    _say(sent=1)


def udp(host: str, port: int, *hexes: str) -> None:
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    for h in hexes:
        s.sendto(bytes.fromhex(h), (host, port))
    _say(sent=len(hexes))


# --- drivers (run by the lab or a test, outside the namespaces) --------------------------------


def _cmd(*args: object) -> list[str]:
    return [sys.executable, "-m", "vxtun.lab.traffic", *map(str, args)]


def _json(text: str, what: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what}: no result in {text!r}")


def run_in(host, *args: object, timeout: float = TIMEOUT + 10) -> dict:
    """Run one traffic program in ``host`` (a ``vxtun.lab.netns.Host``), return its result."""
    p = subprocess.run(["ip", "netns", "exec", host.ns, *_cmd(*args)], capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} in {host.name} failed:\n{p.stderr}")
    return _json(p.stdout, str(args[0]))


class Transfer(NamedTuple):
    sent: int
    received: int
    sent_sha256: str
    received_sha256: str
    seconds: float

    @property
    def identical(self) -> bool:
        return self.sent == self.received and self.sent_sha256 == self.received_sha256


def tcp_transfer(src, dst, dst_ip: str, nbytes: int, port: int = 5201, seed: int = 1) -> Transfer:
    """Send ``nbytes`` over TCP from host ``src`` to ``dst_ip`` (an address of host ``dst``)."""
    sink_p = dst.popen(_cmd("sink", port, "6" if ":" in dst_ip else "4"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = sink_p.stdout.readline()
        if not line:
            raise RuntimeError(f"TCP sink in {dst.name} did not start: {sink_p.stderr.read()}")
        sent = run_in(src, "source", dst_ip, port, nbytes, seed, timeout=TIMEOUT * 2)
        out, err = sink_p.communicate(timeout=TIMEOUT)
        if sink_p.returncode != 0:
            raise RuntimeError(f"TCP sink in {dst.name} failed:\n{err}")
        got = _json(out, "sink")
    finally:
        if sink_p.poll() is None:
            sink_p.kill()
            sink_p.wait()
    return Transfer(sent["bytes"], got["bytes"], sent["sha256"], got["sha256"], sent["seconds"])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd, args = argv[0], argv[1:]
    if cmd == "sink":
        sink(int(args[0]), *args[1:2])
    elif cmd == "source":
        source(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "ping":
        ping(args[0], int(args[1]), int(args[2]))
    elif cmd == "capture":
        capture(args[0], int(args[1]), int(args[2]), float(args[3]), *args[4:5])
    elif cmd == "inject":
        inject(args[0], args[1])
    elif cmd == "udp":
        udp(args[0], int(args[1]), *args[2:])
    else:
        print(f"unknown traffic command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
