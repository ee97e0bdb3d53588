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
    watch IFACE[,IFACE...] PORT      one line per VXLAN datagram to PORT the interfaces send
                                     out (outer addresses and TTL, VNI, inner MACs), until stdin
                                     closes
    frames IFACE[,IFACE...]          every frame the interfaces send or receive, as it goes (time,
                                     interface, direction, bytes), until stdin closes
    rx IFACE MARKER SECS             the frames IFACE receives, until one containing MARKER
    xchg IFACE SECS HEX...           write each frame on IFACE, then print the ARP replies and
                                     Neighbour Advertisements it receives in the next SECS
    inject IFACE HEX...              write Ethernet frames on IFACE (a packet socket)
    flood-unicast IFACE N SRC [FIRST]
                                     write N IPv4 frames from MAC SRC to N different unicast MACs
    udp HOST PORT HEX...             send each HEX as one UDP datagram to HOST:PORT
    udp-tos HOST PORT TOS:HEX...     the same, each under its own IPv4 TOS / IPv6 traffic class
    vxlan-flood HOST PORT VNI N      N VXLAN broadcast frames in VNI, each from a random MAC

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

from ..wire.addr import ip_version, socket_family
from .netns import child_env, python

TIMEOUT = 60.0       # a stalled TCP stream is a failure, not a hang
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4      # sll_pkttype of a frame this host sent


def _say(**kw) -> None:
    print(json.dumps(kw), flush=True)


def _family(host: str) -> int:
    return socket_family(host)


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
    v6 = ip_version(host) == 6
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
        if _udp_offset(f, port) is not None:
            frames.append(f.hex())
    _say(frames=frames)


def _udp_offset(f: bytes, port: int) -> int | None:
    """Where the UDP header starts if the Ethernet frame ``f`` carries a UDP datagram to
    ``port`` over IPv4 or IPv6 (no extension headers), else None."""
    etype = struct.unpack("!H", f[12:14])[0]
    if etype == 0x0800 and f[23] == 17:
        u = 14 + (f[14] & 0x0F) * 4
    elif etype == 0x86DD and f[20] == 17:
        u = 14 + 40
    else:
        return None
    if len(f) < u + 8 or struct.unpack("!H", f[u + 2:u + 4])[0] != port:
        return None
    return u


def _vxlan_record(f: bytes, port: int) -> dict | None:
    """What ``watch`` reports of a frame: None unless it is a UDP datagram to ``port``."""
    u = _udp_offset(f, port)
    if u is None:
        return None
    if f[12:14] == b"\x08\x00":
        ttl = f[22]
        src, dst = (socket.inet_ntop(socket.AF_INET, f[a:a + 4]) for a in (26, 30))
    else:
        ttl = f[21]
        src, dst = (socket.inet_ntop(socket.AF_INET6, f[a:a + 16]) for a in (22, 38))
    v = f[u + 8:]
    inner = v[8:]
    return {"src": src, "dst": dst, "ttl": ttl, "vni": int.from_bytes(v[4:7], "big"),
            "idst": inner[0:6].hex(":"), "isrc": inner[6:12].hex(":"),
            "type": inner[12:14].hex(), "data": inner[14:46].hex()}


SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 0x8     # the checksum is left to offload (CHECKSUM_PARTIAL)


def _packets(ifaces: str, rcvbuf: int = 0):
    """(interface, frame, outgoing, time, partial) for every frame the interfaces send or
    receive, after printing ``{"ready": true}``, until stdin closes.  The time is the
    kernel's, from when the frame was queued to the socket (SO_TIMESTAMPNS), so that frames
    seen by several of these programs, in several namespaces, sort into the order they
    happened; ``partial``: its L4 checksum is not filled in yet (PACKET_AUXDATA's
    TP_STATUS_CSUMNOTREADY: a veth carries a CHECKSUM_PARTIAL skb as it is)."""
    so_timestampns = getattr(socket, "SO_TIMESTAMPNS", 35)
    socks = {}
    for name in ifaces.split(","):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.SOL_SOCKET, so_timestampns, 1)
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        s.bind((name, 0))
        socks[s.fileno()] = (name, s)
    _say(ready=True)
    while True:
        for fd in select.select([*socks, 0], [], [])[0]:
            if fd == 0:
                if not sys.stdin.buffer.read1(4096):
                    return
                continue
            name, s = socks[fd]
            f, anc, _flags, addr = s.recvmsg(65535, 64)
            t, partial = time.time(), False
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == so_timestampns and len(data) >= 16:
                    sec, nsec = struct.unpack("qq", data[:16])
                    t = sec + nsec / 1e9
                elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 4:
                    partial = bool(struct.unpack("I", data[:4])[0] & TP_STATUS_CSUMNOTREADY)
            yield name, f, addr[2] == PACKET_OUTGOING, t, partial


def watch(ifaces: str, port: int) -> None:
    """Every datagram to ``port`` the interfaces send out, as it goes (``port`` in each record
    names the interface).  On an underlay bridge's ports that is exactly what each host gets."""
    for name, f, outgoing, _t, _partial in _packets(ifaces):
        rec = _vxlan_record(f, port) if outgoing else None
        if rec:
            _say(port=name, **rec)


def frames(ifaces: str) -> None:
    """Every frame the interfaces send (``out``) or receive, whole, with the kernel's time:
    what ``vxtun lab walk`` watches and writes to its ``--pcap`` files.  On an underlay
    bridge's port, ``out`` is what that port's host receives and the rest is what it sent."""
    for name, f, outgoing, t, partial in _packets(ifaces, rcvbuf=1 << 20):
        _say(t=t, dev=name, out=outgoing, partial=partial, hex=f.hex())


def rx(iface: str, marker_hex: str, seconds: float) -> None:
    """The frames ``iface`` receives (not those it sends) until one containing the marker,
    which is left out, or until ``seconds`` pass."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    marker, deadline = bytes.fromhex(marker_hex), time.monotonic() + seconds
    _say(ready=True)
    frames = []
    while time.monotonic() < deadline:
        if not select.select([s], [], [], 0.1)[0]:
            continue
        f, addr = s.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:
            continue
        if marker in f:
            break
        frames.append(f.hex())
    _say(frames=frames)


def xchg(iface: str, seconds: float, *hexes: str) -> None:
    """Write each frame on ``iface``, then collect the ARP replies and Neighbour
    Advertisements it receives within ``seconds``: what a proxying VTEP answers."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((iface, 0))
    for h in hexes:
        s.send(bytes.fromhex(h))
        time.sleep(0.02)
    got = []
    deadline = time.monotonic() + seconds
    while True:
        if not select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        data, addr = s.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:
            continue
        arp_reply = data[12:14] == b"\x08\x06" and data[20:22] == b"\x00\x02"
        na = data[12:14] == b"\x86\xdd" and data[20] == 58 and data[54] == 136
        if arp_reply or na:
            got.append(data.hex())
    _say(replies=got)


def inject(iface: str, *hexes: str) -> None:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for h in hexes:
        s.send(bytes.fromhex(h))
    _say(sent=len(hexes))


def flood_unicast(iface: str, n: int, src_hex: str, first: int = 0) -> None:
    """``n`` IPv4 frames from MAC ``src_hex``, to 02:aa:00:00:00:00 + first + i: n unknown
    MACs."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    body = bytes.fromhex(src_hex) + b"\x08\x00" + bytes(46)
    for i in range(first, first + n):
        s.send(b"\x02\xaa" + i.to_bytes(4, "big") + body)
    _say(sent=n)


def udp(host: str, port: int, *hexes: str) -> None:
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    for h in hexes:
        s.sendto(bytes.fromhex(h), (host, port))
    _say(sent=len(hexes))


def udp_tos(host: str, port: int, *items: str) -> None:
    """Each ``TOS:HEX`` as one datagram under that IPv4 TOS / IPv6 traffic class (ECN bits
    included: a UDP socket keeps them)."""
    v6 = _family(host) == socket.AF_INET6
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    for item in items:
        tos, data = item.split(":")
        if v6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, int(tos))
        else:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(tos))
        s.sendto(bytes.fromhex(data), (host, port))
    _say(sent=len(items))


def vxlan_flood(host: str, port: int, vni: int, n: int) -> None:
    """``n`` VXLAN datagrams, each a broadcast frame from a new random unicast MAC: what fills
    a learning VTEP's FDB up to its ``maxaddress``."""
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    hdr = bytes([8, 0, 0, 0]) + vni.to_bytes(3, "big") + b"\0"
    for _ in range(n):
        src = bytes([2]) + os.urandom(5)
        s.sendto(hdr + b"\xff" * 6 + src + b"\x88\xb5" + bytes(46), (host, port))
    _say(sent=n)


# --- drivers (run by the lab or a test, outside the namespaces) --------------------------------


def command(*args: object) -> list[str]:
    """The command line of one traffic program (to run in a namespace with ``child_env()``)."""
    return python("-m", "vxtun.lab.traffic", *map(str, args))


def _json(text: str, what: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what}: no result in {text!r}")


def run_in(host, *args: object, timeout: float = TIMEOUT + 10) -> dict:
    """Run one traffic program in ``host`` (a ``vxtun.lab.netns.Host``), return its result."""
    p = subprocess.run(["ip", "netns", "exec", host.ns, *command(*args)], capture_output=True,
                       text=True, timeout=timeout, env=child_env())
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
    sink_p = dst.popen(command("sink", port, str(ip_version(dst_ip))),
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
    elif cmd == "watch":
        watch(args[0], int(args[1]))
    elif cmd == "frames":
        frames(args[0])
    elif cmd == "rx":
        rx(args[0], args[1], float(args[2]))
    elif cmd == "xchg":
        xchg(args[0], float(args[1]), *args[2:])
    elif cmd == "inject":
        inject(args[0], *args[1:])
    elif cmd == "flood-unicast":
        flood_unicast(args[0], int(args[1]), args[2], *map(int, args[3:4]))
    elif cmd == "udp":
        udp(args[0], int(args[1]), *args[2:])
    elif cmd == "udp-tos":
        udp_tos(args[0], int(args[1]), *args[2:])
    elif cmd == "vxlan-flood":
        vxlan_flood(args[0], int(args[1]), int(args[2]), int(args[3]))
    else:
        print(f"unknown traffic command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
