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
from ..core.vtep import Deliver, Transmit
from ..errors import LocalError, VxtunError
from ..io import control, tap, underlay
from ..io.netlink import Netlink
from ..wire.vxlan import OVERHEAD_V4, OVERHEAD_V6
from . import use_pure
from .pure import send_datagram

TICK = 1.0
# Bytes queued for one control connection beyond what its socket buffer holds.  A monitor that
# falls this far behind loses events (and is told how many); a client that does not read its
# answers is disconnected.  Either way the loop never blocks on a control socket.
OUT_MAX = 256 * 1024


@dataclass
class Underlay:
    """One UDP port on one family: a receive socket, a send socket, the VNIs it serves.

    Like the kernel's vxlan_sock, the receive socket is bound to the any address and shared by
    every VTEP on the port; ``groups`` counts the VTEPs that joined each (group, ifindex) on it.
    ``tx`` is the first VTEP's send socket, kept for backends that send per underlay; each
    Port has its own (TTL, multicast interface and source address are per VTEP).
    """
    family: int
    rx: socket.socket
    tx: socket.socket
    demux: Demux = field(default_factory=Demux)
    by_vni: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)


@dataclass
class Port:
    """One VTEP: its configuration, its core, its TAP and its control socket."""
    config: VtepConfig
    vtep: Vtep
    tap_fd: int
    underlay: Underlay
    listener: socket.socket
    monitors: list = field(default_factory=list)
    tx: socket.socket | None = None     # this VTEP's send socket (its ttl, group, local)
    ifindex: int = 0                    # of --dev, where the group was joined
    lease: object = None                # who asked for it (vxtun.dataplane.owner)


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
        self.events_lost = 0            # events dropped for slow monitors, all VTEPs
        self._out: dict = {}            # conn -> bytearray not yet taken by the socket
        self._lost: dict = {}           # conn -> events dropped since the last notice
        self._attached = False          # run() has handed the open sockets to the backend
        self._deferred: list = []       # work to do once a control answer has been sent
        self.on_down = None             # set by the owner: down removes one VTEP, not all

    # --- start-up ----------------------------------------------------------------------

    def open(self) -> None:
        try:
            self.add(self.configs)
        except BaseException:
            self.close()
            raise

    def add(self, configs: list[VtepConfig], fdb: dict | None = None) -> list[Port]:
        """Open ``configs`` (all or none) beside the VTEPs already open; attach them to the
        backend if the loop runs.  ``fdb`` maps a device name to ``FdbUpdate``
        entries to add before the first packet.  Raises LocalError and leaves nothing behind."""
        new_us: list = []
        joined: list = []
        ports: list[Port] = []
        try:
            self._check(configs)
            # Everything that can fail on the underlay, before any TAP exists.
            ifindexes = {}
            for cfg in configs:
                ifindex = ifindexes[cfg.name] = self.nl.index(cfg.dev) if cfg.dev else 0
                if cfg.mtu is None:
                    lower = cfg.dev or (self.nl.route_dev(cfg.remote) if cfg.remote else None)
                    base = self.nl.mtu(lower) if lower else 1500
                    cfg.mtu = base - (OVERHEAD_V6 if cfg.family == 6 else OVERHEAD_V4)
                if cfg.mtu < 68:
                    raise LocalError(f"MTU {cfg.mtu} is too small for a VTEP")
                fam = socket.AF_INET6 if cfg.family == 6 else socket.AF_INET
                key = (fam, cfg.dstport)
                if key not in self.underlays:
                    # Bound to the any address, as vxlan_create_sock() binds the kernel's: every
                    # VTEP of the namespace on this port can share it, whatever its local/group.
                    rx = underlay.open_rx(fam, cfg.local, cfg.dstport)
                    try:
                        tx = underlay.open_tx(fam, cfg.local, cfg.ttl, cfg.group, ifindex)
                    except BaseException:
                        rx.close()
                        raise
                    self.underlays[key] = Underlay(fam, rx, tx)
                    new_us.append(key)
                us = self.underlays[key]
                if cfg.group:
                    g = (cfg.group, ifindex)
                    if not us.groups.get(g):
                        self._join(us, cfg, ifindex)
                    us.groups[g] = us.groups.get(g, 0) + 1
                    joined.append((us, cfg, ifindex))
            for cfg in configs:
                fam = socket.AF_INET6 if cfg.family == 6 else socket.AF_INET
                us = self.underlays[(fam, cfg.dstport)]
                ports.append(self._open_port(cfg, us, ifindexes[cfg.name],
                                             (fdb or {}).get(cfg.name, ())))
        except BaseException:
            for port in ports:
                self._close_port(port)
            for us, cfg, ifindex in joined:
                self._leave(us, cfg.group, ifindex)
            for key in new_us:
                us = self.underlays.pop(key)
                us.rx.close()
                us.tx.close()
            raise
        for port in ports:
            self.ports[port.config.name] = port
            port.underlay.demux.add(port.vtep)
            port.underlay.by_vni[port.config.vni] = port
            self.sel.register(port.listener, selectors.EVENT_READ,
                              lambda p=port: self._accept(p))
        if self._attached:
            for key in new_us:
                self.backend.attach_underlay(self.underlays[key])
            for port in ports:
                self.backend.attach(port)
        return ports

    def _check(self, configs: list[VtepConfig]) -> None:
        """Refuse what ``ip link add type vxlan`` would refuse beside the devices already here."""
        names = set(self.ports)
        for cfg in configs:
            cfg.validate()
            if cfg.name in names:
                raise LocalError(f"device {cfg.name} already exists")
            names.add(cfg.name)
            if self.nl.exists(cfg.name):
                raise LocalError(f"device {cfg.name} already exists")
        # vxlan_vni_in_use(): one VNI per (family, port) in a namespace.
        vnis = {(p.config.family, p.config.dstport, p.config.vni): p.config.name
                for p in self.ports.values()}
        for cfg in configs:
            key = (cfg.family, cfg.dstport, cfg.vni)
            if key in vnis:
                raise LocalError(f"VNI {cfg.vni} on port {cfg.dstport} is served twice "
                                 f"({vnis[key]} and {cfg.name}): a VNI is one overlay")
            vnis[key] = cfg.name

    def _open_port(self, cfg: VtepConfig, us: Underlay, ifindex: int, fdb) -> Port:
        fam = socket.AF_INET6 if cfg.family == 6 else socket.AF_INET
        tx = underlay.open_tx(fam, cfg.local, cfg.ttl, cfg.group, ifindex)
        try:
            lst = control.listen(cfg.name)
        except BaseException:
            tx.close()
            raise
        try:
            fd = tap.open_tap(cfg.name, self.backend.tap_offload)
        except BaseException:
            lst.close()
            tx.close()
            raise
        try:
            if not cfg.mac:
                cfg.mac = self.nl.mac(cfg.name)
            else:
                from ..wire.ether import mac_to_str
                self.nl.set_mac(cfg.name, mac_to_str(cfg.mac))
            vtep = Vtep(cfg, fdb=self.backend.make_fdb(cfg))
            for u in fdb:
                vtep.fdb.add(u.mac, u.remote, u.state, time.monotonic(), u.op)
            # Up (and into the bridge) last: the first frame must find the FDB complete.
            self.nl.configure(cfg.name, cfg.mtu, cfg.address, cfg.master)
        except BaseException:
            os.close(fd)
            lst.close()
            tx.close()
            raise
        return Port(cfg, vtep, fd, us, lst, tx=tx, ifindex=ifindex)

    def _close_port(self, port: Port) -> None:
        for sock in (port.listener, port.tx):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        try:
            os.close(port.tap_fd)
        except OSError:
            pass

    def remove(self, port: Port, keep=None) -> None:
        """Take one VTEP away while the others keep running: its TAP goes with its fd.
        ``keep``: the control connection being answered (closed once the answer is out)."""
        if self.ports.get(port.config.name) is not port:
            return
        if self._attached:
            self.backend.detach(port)
        del self.ports[port.config.name]
        for conn, (p, _) in list(self._clients.items()):
            if p is port:
                if conn is keep:
                    self._deferred.append(lambda c=conn: self._close_client(c))
                else:
                    self._close_client(conn)
        self.unwatch(port.listener.fileno())
        us = port.underlay
        us.demux.remove(port.config.vni)
        us.by_vni.pop(port.config.vni, None)
        self._close_port(port)
        cfg = port.config
        if cfg.group:
            self._leave(us, cfg.group, port.ifindex)
        if not us.by_vni:
            if self._attached:
                self.backend.detach_underlay(us)
            for key, u in list(self.underlays.items()):
                if u is us:
                    del self.underlays[key]
            us.rx.close()
            us.tx.close()

    def _leave(self, us: Underlay, group: str, ifindex: int) -> None:
        g = (group, ifindex)
        n = us.groups.get(g, 0) - 1
        if n > 0:
            us.groups[g] = n
            return
        us.groups.pop(g, None)
        try:
            underlay.set_membership(us.rx, us.family, group, ifindex, join=False)
        except OSError:
            pass        # the device went away, and its memberships with it

    def _join(self, us: Underlay, cfg: VtepConfig, ifindex: int) -> None:
        try:
            underlay.set_membership(us.rx, us.family, cfg.group, ifindex, join=True)
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
        self._attached = True
        self.running = True
        next_tick = time.monotonic() + TICK
        try:
            while self.running:
                timeout = max(0.0, next_tick - time.monotonic())
                fdmap = self.sel.get_map()
                for key, _ in self.sel.select(timeout):
                    # A callback may have removed a VTEP whose fd is also ready: skip its key.
                    if fdmap.get(key.fd) is not key:
                        continue
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
            self._attached = False
            self.backend.stop()

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def transmit(self, port: Port, a: Transmit) -> None:
        if not send_datagram(port.tx or port.underlay.tx, port.underlay.family, a):
            port.vtep.stats.drop("tx_error")

    def execute(self, port: Port, actions) -> None:
        """Carry out the core's actions for ``port``: send datagrams, write frames to its TAP."""
        for a in actions:
            if type(a) is Transmit:
                self.transmit(port, a)
            elif type(a) is Deliver:
                try:
                    os.write(port.tap_fd, a.vnet + a.frame)
                except OSError:
                    port.vtep.stats.drop("tap_error")

    def after_core(self, port: Port) -> None:
        """Hand the core's pending events to the monitors (and drop them if nobody listens)."""
        vtep = port.vtep
        ev = vtep.next_event()
        while ev is not None:
            if port.monitors:
                line = json.dumps({"ok": True, "event": ev.to_json()}).encode() + b"\n"
                for conn in list(port.monitors):
                    self._queue(conn, line, droppable=True)
            ev = vtep.next_event()

    def _queue(self, conn, data: bytes, droppable: bool) -> None:
        """Send ``data`` on a control connection without ever blocking: what the socket does
        not take now waits in a bounded buffer and goes out when it becomes writable.  A full
        buffer drops an event (``droppable``; a slow listener loses events, never packets) or
        closes a connection whose answers are not being read."""
        out = self._out.setdefault(conn, bytearray())
        lost = self._lost.get(conn, 0)
        if lost and len(out) < OUT_MAX // 2:
            out += json.dumps({"ok": True, "lost": lost}).encode() + b"\n"
            self._lost[conn] = lost = 0
        if len(out) + len(data) > OUT_MAX:
            if droppable:
                self._lost[conn] = lost + 1
                self.events_lost += 1
                return
            self._close_client(conn)
            return
        out += data
        self._flush(conn)

    def _flush(self, conn) -> None:
        out = self._out.get(conn)
        while out:
            try:
                n = conn.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close_client(conn)
                return
            del out[:n]
        try:
            key = self.sel.get_key(conn)
            want = selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0)
            if key.events != want:
                self.sel.modify(conn, want, key.data)
        except (KeyError, ValueError):
            pass

    # --- control -----------------------------------------------------------------------

    def _accept(self, port: Port) -> None:
        conn = control.accept_root(port.listener)
        if conn is None:
            return
        self._clients[conn] = (port, b"")
        self.sel.register(conn, selectors.EVENT_READ, lambda c=conn: self._on_client(c))

    def _close_client(self, conn) -> None:
        entry = self._clients.pop(conn, None)
        self._out.pop(conn, None)
        self._lost.pop(conn, None)
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
        # Called when the connection is readable or (with output queued) writable.
        if self._out.get(conn):
            self._flush(conn)
            if conn not in self._clients:
                return
        port, buf = self._clients[conn]
        chunk = control.recv_nowait(conn)
        if chunk is None:
            return
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
            self._queue(conn, json.dumps(ans).encode() + b"\n", droppable=False)
            if conn not in self._clients:
                return
        if conn in self._clients:
            self._clients[conn] = (port, buf)
        while self._deferred:
            self._deferred.pop(0)()

    def down(self, port: Port, conn=None) -> None:
        """``vxtun down``: stop the whole node, unless an owner says how to end one VTEP.  The
        owner removes it before the answer goes out on ``conn``: once ``vxtun down`` returns,
        the TAP is gone and its group left."""
        if self.on_down is None:
            self.stop()
        else:
            self.on_down(port, conn)

    # --- shutdown ----------------------------------------------------------------------

    def close(self) -> None:
        for conn in list(self._clients):
            self._close_client(conn)
        for port in self.ports.values():
            self._close_port(port)
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
