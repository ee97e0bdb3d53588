"""The pure-Python per-packet loop: the reference dataplane, readable top to bottom.

Every frame read from a TAP goes through ``Vtep.handle_frame`` and every datagram through
``Demux.handle_datagram``; the returned actions are carried out here.  The TAP is opened with
offloads off, so the kernel hands us complete checksums and frames no larger than the MTU.

Unless the VTEP has a UDP-tunnel GSO egress (vxtun/io/gso.py; Linux 6.17+): then its TAP
hands over TCP super-frames (TSO), and one that the core sends to a single unicast remote
leaves whole, wrapped in IPv4 (or IPv6)/UDP/VXLAN, through the egress, for the kernel to
segment (``_super_frame``).  The core decides the first segment (vxtun/wire/tso.py cuts it),
and its decision holds for the others: they differ only in sequence numbers, lengths, IDs
and checksums, none of which the core looks at.  A super-frame the egress cannot carry is cut
and each segment goes through the core as any frame.

While a VTEP is traced (``vxtun trace``, vxtun/trace/hub.py), its frames and datagrams go
through vxtun/trace/reference.py instead, which calls the same core and builds the record of
what it decided; untraced, the loop pays one dictionary test per frame.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
import time

from ..core.vtep import Transmit
from ..io import gso, tapsteer
from ..io.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUNSETOFFLOAD
from ..io.underlay import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DONT,
    TOS_CMSG_SPACE,
    SourceCache,
    received_tos,
)
from ..trace.reference import trace_datagram, trace_frame
from ..trace.summary import HEAD
from ..wire import tso
from ..wire.ether import ETH_HLEN
from ..wire.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, complete_checksum
from ..wire.vxlan import rx_order

BATCH = 64          # frames read per wake-up before looking at other fds again
RX_BUF = 1 << 18    # a GSO super-frame from a kernel peer can be ~64 KB; leave room


class PureBackend:
    name = "pure"
    tap_offload = 0

    def __init__(self, node) -> None:
        self.node = node
        self._buf = bytearray(RX_BUF)
        self._egress: dict = {}        # id(Port) -> its gso.Egress, or why it has none

    def tap_queues(self, config) -> int:
        """Two, unless told one: the steering program (vxtun/io/tapsteer.py) puts ARP/NS from
        behind the TAP on queue 0 and the host's own frames on queue 1, and this one loop
        reads both, so a storm that overflows queue 0's ring leaves the host's frames alone.
        More queues would bring nothing to one thread."""
        return 1 if config.queues == 1 else 2

    def make_fdb(self, config):
        return None          # the core builds its pure-Python Fdb

    def make_neigh(self, config):
        return None          # the core builds its pure-Python NeighTable

    def start(self) -> None:
        """Called once, before the loop runs; ports opened so far are attached after it."""

    def stop(self) -> None:
        pass

    # The node attaches each VTEP once it is open, and detaches it before closing its TAP.
    # An underlay socket is attached with its first VTEP and detached after its last.

    def attach_underlay(self, us) -> None:
        self.node.watch(us.rx.fileno(), lambda u=us: self._on_rx(u))

    def detach_underlay(self, us) -> None:
        self.node.unwatch(us.rx.fileno())

    def attach(self, port) -> None:
        self._open_egress(port)
        for fd in (port.tap_fd, *port.tap_queues):
            self.node.watch(fd, lambda p=port, f=fd: self._on_tap(p, f))
        self._steer(port, port.config.mac)

    def detach(self, port) -> None:
        for fd in (port.tap_fd, *port.tap_queues):
            self.node.unwatch(fd)
        eg = self._egress.pop(id(port), None)
        if isinstance(eg, gso.Egress):
            eg.close()

    def _steer(self, port, mac: bytes) -> None:
        if not port.tap_queues:
            return
        why = tapsteer.steer(port.tap_fd, mac, 1 + len(port.tap_queues))
        if why is not None:
            print(f"vxtun: {port.config.name}: {why}; the TAP's queues are steered by the "
                  "kernel's flow hash", file=sys.stderr, flush=True)

    def _open_egress(self, port) -> None:
        """Give ``port`` a UDP-tunnel GSO egress and TSO on its TAP if it can have them; else
        remember why not (``egress``), and the TAP keeps its offloads off."""
        v6 = port.underlay.family == socket.AF_INET6
        eg = gso.open_for(port.config.name, port.underlay.family,
                          bool(getattr(port.config, "udp6zerocsumtx", False)))
        if isinstance(eg, gso.Egress):
            tx = port.tx or port.underlay.tx
            ttl = tx.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS) if v6 \
                else tx.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
            try:
                fcntl.ioctl(port.tap_fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
            except OSError:
                eg.close()
                eg = "off (the TAP has no TSO)"
            else:
                eg.ttl = ttl
                # IPv6: no DF (the raw socket says IPV6_PMTUDISC_DONT), the checksum always
                # (open_for refused udp6zerocsumtx), the flow label tx_fd leases (or 0)
                eg.df = not v6 and tx.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) \
                    != IP_PMTUDISC_DONT
                eg.csum = v6 or bool(getattr(tx, "udp_csum", False))
                eg.flowinfo = getattr(tx, "flowinfo", 0) if v6 else 0
                eg.sources = getattr(tx, "sources", None) \
                    or SourceCache(port.underlay.family, None)
        self._egress[id(port)] = eg

    def egress(self, port) -> str | None:
        """What ``vxtun show`` says of the UDP-tunnel GSO egress of ``port``."""
        eg = self._egress.get(id(port))
        return gso.describe(eg, eg.sent, eg.refused) if isinstance(eg, gso.Egress) \
            else gso.describe(eg, 0, 0)

    def check_egress(self, port) -> None:
        """Once a tick: if the egress of ``port`` no longer forwards (gso.forwarding_lost),
        close it; its super-frames are then cut here (``_super_frame``), as without one."""
        eg = self._egress.get(id(port))
        why = gso.forwarding_lost(eg) if isinstance(eg, gso.Egress) else None
        if why is not None:
            eg.close()
            self._egress[id(port)] = f"off ({why})"

    def set_local(self, port, ips) -> None:
        """The namespace's addresses changed: nothing to do, the core's Vtep.local_ips is it."""

    def set_mac(self, port, mac: bytes) -> None:
        """The TAP's address changed: the core's Vtep.mac is the check; the steering program
        tells the host's own ARP/NS by it."""
        self._steer(port, mac)

    def stats(self, port) -> dict:
        return port.vtep.stats.to_json()

    def demux_stats(self, us) -> dict:
        return us.demux.stats.to_json()

    def features(self) -> list[str]:
        on = any(isinstance(e, gso.Egress) for e in self._egress.values())
        return ["vnet_hdr", "raw_tx"] + (["tap_tso", "udp_tunnel_gso"] if on else [])

    def trace_changed(self, port, on: bool) -> None:
        """Nothing to switch: the loop asks the node's TraceHub for every frame."""

    @property
    def punts_lost(self) -> int:
        """Nothing is handed over between threads here (see FastBackend.punts_lost)."""
        return 0

    # --- per packet -----------------------------------------------------------------------

    def _on_tap(self, port, fd: int | None = None) -> None:
        """Read up to BATCH frames of one queue (``fd``; None: queue 0) of ``port``'s TAP."""
        fd = port.tap_fd if fd is None else fd
        for _ in range(BATCH):
            try:
                data = os.read(fd, 65536 + 10)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # ip link del: the fd stays readable (EPOLLERR) and every read fails (EBADFD).
                # Returning would spin the loop on it; the VTEP goes instead (queue 0 says
                # so: every queue fails together, tun_detach_all).
                if fd != port.tap_fd:
                    self.node.unwatch(fd)
                else:
                    self.node.tap_gone(port, e.errno or 0)
                return
            frame = data[10:]
            if data[1]:
                # a TSO super-frame: only while the VTEP has its egress (_open_egress)
                self._super_frame(port, data, frame)
                continue
            if data[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                # Offloads are off (unless the VTEP has an egress): finish it like a NIC would.
                frame = bytearray(frame)
                start = data[6] | (data[7] << 8)
                off = data[8] | (data[9] << 8)
                complete_checksum(frame, start, off)
                frame = bytes(frame)
            now = time.monotonic()
            traces = self.node.traces
            if traces.watching(port):
                actions, rec = trace_frame(port.vtep, frame, now)
                port.execute(actions)
                traces.publish(port, rec, frame[:HEAD])
            else:
                port.execute(port.vtep.handle_frame(frame, now))
            self.node.after_core(port)

    def _super_frame(self, port, vnet: bytes, frame: bytes) -> None:
        """A TSO super-frame: through the egress if the core sends it to one unicast remote,
        else cut into segments that go through the core one by one (see the docstring)."""
        mss = vnet[4] | (vnet[5] << 8)
        nseg = tso.count(frame, mss)
        vtep = port.vtep
        if not nseg:
            vtep.stats.drop("bad_frame")        # as fp_tx_decide: nothing we can cut
            return
        now = time.monotonic()
        first = tso.segments(frame, mss, 1)[0]
        eg = self._egress.get(id(port))
        if not self.node.traces.watching(port) and isinstance(eg, gso.Egress):
            actions = vtep.handle_frame(first, now)
            if len(actions) == 1 and type(actions[0]) is Transmit \
                    and self._egress_send(eg, vnet, frame, actions[0], nseg):
                # the other segments, counted as the core counts each one (Stats.count_tx)
                vtep.stats.tx_packets += nseg - 1
                vtep.stats.tx_bytes += (nseg - 1) * (len(first) - mss - ETH_HLEN) \
                    + len(frame) - len(first)
                self.node.after_core(port)
                return
            port.execute(actions)
            segs = tso.segments(frame, mss)[1:]
        else:
            segs = tso.segments(frame, mss)
        for seg in segs:
            if self.node.traces.watching(port):
                actions, rec = trace_frame(vtep, seg, now)
                port.execute(actions)
                self.node.traces.publish(port, rec, seg[:HEAD])
            else:
                port.execute(vtep.handle_frame(seg, now))
        self.node.after_core(port)

    @staticmethod
    def _egress_send(eg, vnet: bytes, frame: bytes, t: Transmit, nseg: int) -> bool:
        """Write ``frame`` wrapped for ``t`` (the core's Transmit of its first segment) to the
        egress as one UDP-tunnel GSO packet; False if it cannot go that way."""
        v6 = eg.v6
        if (":" in t.ip) != v6 or not vnet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM \
                or frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
            return False            # (an 802.1Q tag: gso.tnl_vnet_hdr's offsets are untagged)
        dst = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, t.ip)
        ttl = t.ttl or eg.ttl
        src = eg.sources(t.ip)
        if (dst[0] == 0xFF if v6 else dst[0] >= 224) or ttl >= 255 or src is None:
            return False            # a group (head-end replication), or no hop left to give
        if v6:
            if 8 + 8 + len(frame) > 0xFFFF:
                return False
            # flowlabel inherit: the core's label; else the one tx_fd leases (0: none)
            outer = gso.outer_ipv6(eg.mac, src, dst, t.sport, t.port, 8 + len(frame), t.tos,
                                   ttl, t.label or eg.flowinfo)
        else:
            if 36 + len(frame) > 0xFFFF:
                return False
            outer = gso.outer_ipv4(eg.mac, src, dst, t.sport, t.port, 8 + len(frame), eg.ident,
                                   t.tos, ttl, eg.df or t.df, eg.csum)
        try:
            os.writev(eg.fd, [gso.tnl_vnet_hdr(vnet, eg.csum, v6), outer, t.payload[:8], frame])
        except OSError:
            eg.refused += 1
            return False
        eg.ident = (eg.ident + nseg) & 0xFFFF
        eg.sent += 1
        return True

    def _on_rx(self, us) -> None:
        """Read what the socket holds (up to BATCH datagrams), then decide it in ``rx_order``
        (as the fast path's _rx_drain does): behind a bulk flow's queued super-frames, the
        datagrams that carry no TCP go first, so that a ping's echo does not wait for them."""
        buf = self._buf
        rx = us.rx
        got = []
        for _ in range(BATCH):
            try:
                # the outer TOS / traffic class comes as a control message (IP_RECVTOS)
                n, anc, _flags, addr = rx.recvmsg_into([buf], TOS_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            got.append((bytes(buf[:n]), addr, received_tos(anc)))
        if not got:
            return
        now = time.monotonic()
        for data, addr, tos in rx_order(got) if len(got) > 1 else got:
            if self.node.traces.active:
                actions = self._traced_rx(us, data, addr, now, tos)
            else:
                actions = us.demux.handle_datagram(data, addr[0], now, tos)
            if actions:
                port = us.by_vni.get(int.from_bytes(data[4:7], "big"))
                if port is not None:
                    port.execute(actions)
                    self.node.after_core(port)

    def _traced_rx(self, us, data: bytes, addr, now: float, tos: int) -> list:
        """A datagram while some VTEP is traced: its record goes to the tracers of the VTEP
        that decided it, or of every VTEP on the socket when it was dropped before one was
        known (not_vxlan, vni_not_found: the kernel counts those on the socket too)."""
        family = 6 if us.family == socket.AF_INET6 else 4
        actions, rec, vtep = trace_datagram(us.demux, data, addr[0], addr[1], now, tos, family)
        traces = self.node.traces
        head = data[8:8 + HEAD]
        ports = [p for p in us.by_vni.values() if vtep is None or p.vtep is vtep]
        for port in ports:
            if traces.watching(port):
                traces.publish(port, rec, head)
        return actions
