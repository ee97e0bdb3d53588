"""The pure-Python per-packet loop: the reference dataplane, readable top to bottom.

Every frame read from a TAP goes through ``Vtep.handle_frame`` and every datagram through
``Demux.handle_datagram``; the returned actions are carried out here.  The TAP is opened with
offloads off, so the kernel hands us complete checksums and frames no larger than the MTU.
"""
from __future__ import annotations

import os
import time

from ..io.underlay import TOS_CMSG_SPACE, received_tos
from ..wire.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, complete_checksum

BATCH = 64          # frames read per wake-up before looking at other fds again
RX_BUF = 1 << 18    # a GSO super-frame from a kernel peer can be ~64 KB; leave room


class PureBackend:
    name = "pure"
    tap_offload = 0

    def __init__(self, node) -> None:
        self.node = node
        self._buf = bytearray(RX_BUF)

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
        self.node.watch(port.tap_fd, lambda p=port: self._on_tap(p))

    def detach(self, port) -> None:
        self.node.unwatch(port.tap_fd)

    def stats(self, port) -> dict:
        return port.vtep.stats.to_json()

    def demux_stats(self, us) -> dict:
        return us.demux.stats.to_json()

    def features(self) -> list[str]:
        return ["vnet_hdr", "raw_tx"]

    @property
    def punts_lost(self) -> int:
        """Nothing is handed over between threads here (see FastBackend.punts_lost)."""
        return 0

    # --- per packet -----------------------------------------------------------------------

    def _on_tap(self, port) -> None:
        fd = port.tap_fd
        for _ in range(BATCH):
            try:
                data = os.read(fd, 65536 + 10)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                # ip link del: the fd stays readable (EPOLLERR) and every read fails (EBADFD).
                # Returning would spin the loop on it; the VTEP goes instead.
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
            actions = us.demux.handle_datagram(bytes(buf[:n]), addr[0], now, received_tos(anc))
            if actions:
                vni = (buf[4] << 16) | (buf[5] << 8) | buf[6]
                port = us.by_vni.get(vni)
                if port is not None:
                    port.execute(actions)
                    self.node.after_core(port)

