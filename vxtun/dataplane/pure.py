"""The pure-Python per-packet loop: the reference dataplane, readable top to bottom.

Every frame read from a TAP goes through ``Vtep.handle_frame`` and every datagram through
``Demux.handle_datagram``; the returned actions are carried out here.  The TAP is opened with
offloads off, so the kernel hands us complete checksums and frames no larger than the MTU.

While a VTEP is traced (``vxtun trace``, vxtun/trace/hub.py), its frames and datagrams go
through vxtun/trace/reference.py instead, which calls the same core and builds the record of
what it decided; untraced, the loop pays one dictionary test per frame.
"""
from __future__ import annotations

import os
import socket
import sys
import time

from ..io import tapsteer
from ..io.underlay import TOS_CMSG_SPACE, received_tos
from ..trace.reference import trace_datagram, trace_frame
from ..trace.summary import HEAD
from ..wire.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, complete_checksum

BATCH = 64          # frames read per wake-up before looking at other fds again
RX_BUF = 1 << 18    # a GSO super-frame from a kernel peer can be ~64 KB; leave room


class PureBackend:
    name = "pure"
    tap_offload = 0

    def __init__(self, node) -> None:
        self.node = node
        self._buf = bytearray(RX_BUF)

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
        for fd in (port.tap_fd, *port.tap_queues):
            self.node.watch(fd, lambda p=port, f=fd: self._on_tap(p, f))
        self._steer(port, port.config.mac)

    def detach(self, port) -> None:
        for fd in (port.tap_fd, *port.tap_queues):
            self.node.unwatch(fd)

    def _steer(self, port, mac: bytes) -> None:
        if not port.tap_queues:
            return
        why = tapsteer.steer(port.tap_fd, mac, 1 + len(port.tap_queues))
        if why is not None:
            print(f"vxtun: {port.config.name}: {why}; the TAP's queues are steered by the "
                  "kernel's flow hash", file=sys.stderr, flush=True)

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
        return ["vnet_hdr", "raw_tx"]

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
            if data[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                # Offloads are off, so this should not happen; finish it like a NIC would.
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

    def _on_rx(self, us) -> None:
        buf = self._buf
        rx = us.rx
        for _ in range(BATCH):
            try:
                # the outer TOS / traffic class comes as a control message (IP_RECVTOS)
                n, anc, _flags, addr = rx.recvmsg_into([buf], TOS_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            now = time.monotonic()
            if self.node.traces.active:
                actions = self._traced_rx(us, bytes(buf[:n]), addr, now, received_tos(anc))
            else:
                actions = us.demux.handle_datagram(bytes(buf[:n]), addr[0], now,
                                                   received_tos(anc))
            if actions:
                vni = (buf[4] << 16) | (buf[5] << 8) | buf[6]
                port = us.by_vni.get(vni)
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
