"""A running vxtun process: its VTEPs (one TAP each), its underlay sockets, its control sockets.

Start-up opens everything that can fail *before* the TAP exists (the underlay device, the
sockets), so a bad invocation leaves nothing behind; the TAP itself is non-persistent and goes
away with the process.  The main thread runs a selector loop over the control sockets, the
backend's fds and a 1-second timer (ageing, events).
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field

from ..core import Demux, Stats, Vtep, VtepConfig
from ..core.vtep import Transmit
from ..errors import LocalError, VxtunError
from ..io import control, tap, underlay
from ..io.netlink import Netlink
from ..wire.vxlan import OVERHEAD_V4, OVERHEAD_V6
from . import use_pure
from .pure import send_datagram

TICK = 1.0


@dataclass
class Underlay:
    """One UDP port on one family: a receive socket, a send socket, the VNIs it serves."""
    family: int
    rx: socket.socket
    tx: socket.socket
    demux: Demux = field(default_factory=Demux)
    by_vni: dict = field(default_factory=dict)


@dataclass
class Port:
    """One VTEP: its configuration, its core, its TAP and its control socket."""
    config: VtepConfig
    vtep: Vtep
    tap_fd: int
    underlay: Underlay
    listener: socket.socket
    monitors: list = field(default_factory=list)


def select_backend(node):
    if use_pure():
        from .pure import PureBackend
        return PureBackend(node)
    from .fast import FastBackend
    return FastBackend(node)


class Node:
    def __init__(self, configs: list[VtepConfig]) -> None:
        self.configs = configs
        self.ports: dict[str, Port] = {}
        self.underlays: dict = {}
        self.sel = selectors.DefaultSelector()
        self.nl = Netlink()
        self.backend = select_backend(self)
        self.running = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._clients: dict = {}

    # --- start-up ----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        names = set()
        for cfg in self.configs:
            cfg.validate()
            if cfg.name in names:
                raise LocalError(f"device name {cfg.name} given twice")
            names.add(cfg.name)
            if self.nl.exists(cfg.name):
                raise LocalError(f"device {cfg.name} already exists")
        vnis = {}
        for cfg in self.configs:
            key = (cfg.family, cfg.dstport)
            if (key, cfg.vni) in vnis:
                raise LocalError(f"VNI {cfg.vni} on port {cfg.dstport} is served twice "
                                 f"({vnis[(key, cfg.vni)]} and {cfg.name})")
            vnis[(key, cfg.vni)] = cfg.name
        # Everything that can fail on the underlay, before any TAP exists.
        for cfg in self.configs:
            ifindex = self.nl.index(cfg.dev) if cfg.dev else 0
            if cfg.mtu is None:
                lower = cfg.dev or (self.nl.route_dev(cfg.remote) if cfg.remote else None)
                base = self.nl.mtu(lower) if lower else 1500
                cfg.mtu = base - (OVERHEAD_V6 if cfg.family == 6 else OVERHEAD_V4)
            if cfg.mtu < 68:
                raise LocalError(f"MTU {cfg.mtu} is too small for a VTEP")
            fam = socket.AF_INET6 if cfg.family == 6 else socket.AF_INET
            key = (fam, cfg.dstport)
            if key not in self.underlays:
                bind_local = None if any(c.group for c in self.configs
                                         if (c.family, c.dstport) == (cfg.family, cfg.dstport)) \
                    else cfg.local
                rx = underlay.open_rx(fam, bind_local, cfg.dstport, None)
                try:
                    tx = underlay.open_tx(fam, cfg.local, cfg.ttl, cfg.group, ifindex)
                except BaseException:
                    rx.close()
                    raise
                self.underlays[key] = Underlay(fam, rx, tx)
            us = self.underlays[key]
            if cfg.group:
                self._join(us, cfg, ifindex)
        for cfg in self.configs:
            lst = control.listen(cfg.name)
            try:
                fd = tap.open_tap(cfg.name, self.backend.tap_offload)
            except BaseException:
                lst.close()
                raise
            try:
                if not cfg.mac:
                    cfg.mac = self.nl.mac(cfg.name)
                else:
                    from ..wire.ether import mac_to_str
                    self.nl.set_mac(cfg.name, mac_to_str(cfg.mac))
                self.nl.configure(cfg.name, cfg.mtu, cfg.address, cfg.master)
            except BaseException:
                os.close(fd)
                lst.close()
                raise
            fam = socket.AF_INET6 if cfg.family == 6 else socket.AF_INET
            us = self.underlays[(fam, cfg.dstport)]
            vtep = Vtep(cfg, fdb=self.backend.make_fdb(cfg))
            port = Port(cfg, vtep, fd, us, lst)
            self.ports[cfg.name] = port
            us.demux.add(vtep)
            us.by_vni[cfg.vni] = port
            self.sel.register(lst, selectors.EVENT_READ, lambda p=port: self._accept(p))

    def _join(self, us: Underlay, cfg: VtepConfig, ifindex: int) -> None:
        s = us.rx
        try:
            if us.family == socket.AF_INET:
                import struct
                mreq = struct.pack("4s4si", socket.inet_aton(cfg.group), b"\0" * 4, ifindex)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            else:
                import struct
                mreq = struct.pack("16sI", socket.inet_pton(socket.AF_INET6, cfg.group), ifindex)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        except OSError as e:
            raise LocalError(f"cannot join group {cfg.group} on {cfg.dev}: {e.strerror}") \
                from None

    # --- the loop ----------------------------------------------------------------------

    def watch(self, fd: int, callback) -> None:
        self.sel.register(fd, selectors.EVENT_READ, callback)

    def unwatch(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def stop(self) -> None:
        self.running = False
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self) -> None:
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._drain_wake)
        old = {s: signal.signal(s, lambda *_: self.stop()) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
        self.backend.start()
        for us in self.underlays.values():
            self.backend.attach_underlay(us)
        for port in self.ports.values():
            self.backend.attach(port)
        self.running = True
        next_tick = time.monotonic() + TICK
        try:
            while self.running:
                timeout = max(0.0, next_tick - time.monotonic())
                for key, _ in self.sel.select(timeout):
                    key.data()
                    if not self.running:
                        break
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    for port in self.ports.values():
                        port.vtep.expire(now)
                        self.after_core(port)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            for port in self.ports.values():
                self.backend.detach(port)
            for us in self.underlays.values():
                self.backend.detach_underlay(us)
            self.backend.stop()

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def transmit(self, port: Port, a: Transmit) -> None:
        if not send_datagram(port.underlay.tx, port.underlay.family, a):
            port.vtep.stats.drop("tx_error")

    def after_core(self, port: Port) -> None:
        """Hand the core's pending events to the monitors (and drop them if nobody listens)."""
        vtep = port.vtep
        ev = vtep.next_event()
        while ev is not None:
            if port.monitors:
                line = json.dumps({"ok": True, "event": ev.to_json(), "text": str(ev)}).encode()
                for conn in list(port.monitors):
                    try:
                        conn.send(line + b"\n")
                    except (BlockingIOError, InterruptedError):
                        pass             # a slow listener loses events, never packets
                    except OSError:
                        self._close_client(conn)
            ev = vtep.next_event()

    # --- control -----------------------------------------------------------------------

    def _accept(self, port: Port) -> None:
        try:
            conn, _ = port.listener.accept()
        except OSError:
            return
        if not control.peer_is_root(conn):
            conn.sendall(b'{"ok": false, "error": "permission denied: root only"}\n')
            conn.close()
            return
        conn.setblocking(False)
        self._clients[conn] = (port, b"")
        self.sel.register(conn, selectors.EVENT_READ, lambda c=conn: self._on_client(c))

    def _close_client(self, conn) -> None:
        entry = self._clients.pop(conn, None)
        if entry is not None:
            port = entry[0]
            if conn in port.monitors:
                port.monitors.remove(conn)
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        conn.close()

    def _on_client(self, conn) -> None:
        port, buf = self._clients[conn]
        try:
            chunk = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close_client(conn)
            return
        buf += chunk
        while b"\n" in buf:
            line, _, buf = buf.partition(b"\n")
            self._clients[conn] = (port, buf)
            try:
                req = json.loads(line)
                from .commands import handle
                result = handle(self, port, conn, req)
                ans = {"ok": True, "result": result}
            except VxtunError as e:
                ans = {"ok": False, "error": str(e)}
            except (ValueError, KeyError, TypeError) as e:
                ans = {"ok": False, "error": f"bad request: {e}"}
            try:
                conn.setblocking(True)
                conn.sendall(json.dumps(ans).encode() + b"\n")
                conn.setblocking(False)
            except OSError:
                self._close_client(conn)
                return
        if conn in self._clients:
            self._clients[conn] = (port, buf)

    # --- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        for conn in list(self._clients):
            self._close_client(conn)
        for port in self.ports.values():
            try:
                port.listener.close()
            except OSError:
                pass
            try:
                os.close(port.tap_fd)
            except OSError:
                pass
        self.ports.clear()
        for us in self.underlays.values():
            us.rx.close()
            us.tx.close()
        self.underlays.clear()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.nl.close()

    def stats(self, port: Port) -> dict:
        s = self.backend.stats(port)
        if len(port.underlay.by_vni) == 1:
            # Drops before the VNI is known belong to the socket; with one VTEP on it, show
            # them on that VTEP, as the kernel counts them on its single device.
            s = Stats.merge(s, self.backend.demux_stats(port.underlay))
        return s
