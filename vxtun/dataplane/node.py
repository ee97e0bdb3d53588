"""A running vxtun process: its VTEPs, the loop that serves them, their control sockets.

``Node`` puts together the pieces, each in a module of its own:

* vxtun/dataplane/lifecycle.py: the VTEPs (TAPs, control listeners), the underlay sockets they
  share and their multicast groups, opened all or nothing;
* vxtun/dataplane/loop.py: the selector loop of the main thread, signals and the 1-s tick;
* vxtun/dataplane/server.py: the control connections and their requests;
* vxtun/dataplane/fanout.py: events to the monitors;
* vxtun/dataplane/counters.py: what ``vxtun stats`` reports;
* a backend (vxtun/dataplane/pure.py or fast.py) that moves the packets.

The node is also what backends and ``commands.handle`` see: ``watch``/``unwatch`` an fd,
``execute`` the core's actions, ``after_core`` to publish its events, ``stats``, ``down``,
``subscribe``, and ``tap_gone`` when a backend finds a VTEP's TAP deleted under it (or the
kernel says so: RTM_DELLINK, vxtun/io/linkwatch.py).
"""
from __future__ import annotations

import errno
import sys
import time

from ..core import VtepConfig
from ..errors import ControlError
from ..io import tap
from ..io import linkwatch
from ..io.linkwatch import LinkWatch
from ..io.netlink import Netlink
from ..trace.hub import TraceHub
from . import counters, use_pure
from .fanout import Fanout
from .lifecycle import Port, Underlay, Vteps
from .loop import Loop
from .server import ControlServer

__all__ = ["Node", "Port", "Underlay", "select_backend"]

# what the log says of a TAP moved away (ip link set vxtun0 netns X)
MOVED = "the TAP was moved to another network namespace (ip link set netns)"


def select_backend(node):
    if use_pure():
        from .pure import PureBackend
        return PureBackend(node)
    from .fast import FastBackend
    return FastBackend(node)


class Node:
    def __init__(self) -> None:
        self.loop = Loop()
        self.nl = Netlink()
        self.fanout = Fanout()
        self.backend = select_backend(self)
        self.traces = TraceHub()        # vxtun trace: the backends ask it, and are told
        self.traces.on_change = self.backend.trace_changed
        self.vteps = Vteps(self.backend, self.nl)
        self.control = ControlServer(self.loop, self, self.fanout)
        self.on_down = None             # set by the owner: down removes one VTEP, not all
        self.on_tap_gone = None         # set by the owner: tells the up that held the VTEP
        # RTM_DELLINK: a deleted TAP is noticed even when nothing is read from it;
        # RTM_NEWLINK: a renamed one is followed
        self.links = LinkWatch()
        self.loop.watch(self.links.fileno(), self._links_changed)
        self._moved: set[Port] = set()  # VTEPs whose TAP was moved to another namespace

    @property
    def ports(self) -> dict[str, Port]:
        return self.vteps.by_name

    @property
    def events_lost(self) -> int:
        return self.fanout.events_lost

    # --- VTEPs -------------------------------------------------------------------------

    def add(self, configs: list[VtepConfig], fdb: dict | None = None) -> list[Port]:
        """Open ``configs`` (all or none, see ``Vteps.add``) and serve their control sockets.
        Raises LocalError and leaves nothing behind."""
        local = self._local_ips()
        ports = self.vteps.add(configs, fdb)
        for port in ports:
            port.bypass = self.bypass
            self._set_local(port, local)
            self.control.listen(port)
        return ports

    def remove(self, port: Port, keep=None) -> None:
        """Take one VTEP away while the others keep running.  ``keep``: the control
        connection being answered (closed once the answer is out)."""
        if self.ports.get(port.config.name) is not port:
            return
        self._moved.discard(port)
        self.control.forget(port, keep)
        self.vteps.remove(port)

    def down(self, port: Port, conn=None) -> None:
        """``vxtun down``: stop the whole node, unless an owner says how to end one VTEP.  The
        owner removes it before the answer goes out on ``conn``: once ``vxtun down`` returns,
        the TAP is gone and its group left."""
        if self.on_down is None:
            self.stop()
        else:
            self.on_down(port, conn)

    def tap_gone(self, port: Port, err: int) -> None:
        """A read of ``port``'s TAP failed with ``err`` (EBADFD: ``ip link del``, see
        vxtun/io/tap.py), or the kernel said it was deleted: log one line and remove the VTEP
        as ``vxtun down`` would (control socket, group, FDB, the backend's tables), which frees
        its name.  The backends call this once per VTEP, from the loop; the other VTEPs run
        on."""
        if self.ports.get(port.config.name) is not port:
            return
        self._moved.discard(port)
        reason = tap.failure(err)
        print(f"vxtun: {port.config.name}: {reason}; removing the VTEP", file=sys.stderr,
              flush=True)
        if self.on_tap_gone is not None:
            self.on_tap_gone(port, reason)
            return
        self.remove(port)
        if not self.ports:
            self.stop()

    def _links_changed(self) -> None:
        """Links gone from the namespace or renamed (vxtun/io/linkwatch.py).  A VTEP whose TAP was
        deleted goes as ``tap_gone`` says, whichever of this and the TAP's read error comes
        first.  A TAP moved to another namespace (``ip link set vxtun0 netns X``) is served
        there, as the kernel serves a vxlan device moved away from the namespace it was made in
        (its UDP socket stays in that one, vxlan->net): frames still go between the TAP's file
        and the underlay sockets of this namespace, and ``vxtun down`` here ends it.  That is
        logged once; the own-MAC check then keeps the TAP's MAC of before the move (the name no
        longer reads it here).  When notifications were lost (ENOBUFS), every VTEP's TAP is
        looked at, so that a move is still noticed, and every TAP's name is read again, so
        that a rename is too."""
        for link in self.links.changes():
            if isinstance(link, linkwatch.DelLink):
                self._tap_left(link.name, link.moved)
            else:
                self._renamed(link.index, link.name)
        if self.links.lost():
            for name, port in list(self.ports.items()):
                self._tap_left(name, linkwatch.tap_attached(port.tap_fd))
            for port in list(self.ports.values()):
                if port not in self._moved and port.tap_index:
                    now = self.nl.name(port.tap_index)
                    if now is not None:
                        self._renamed(port.tap_index, now)

    def _renamed(self, index: int, name: str) -> None:
        """Link ``index`` is called ``name`` now (an RTM_NEWLINK).  If it is a VTEP's TAP under
        another name (``ip link set vxtun0 name ov0``), the VTEP takes the new name, as a
        kernel vxlan device, which knows itself by its index, goes on under its new one:
        ``dev ov0`` in every command, event and listing, and the control socket
        ``@vxtun/ov0``.  A TAP moved away is left alone: its index here means another link."""
        port = next((p for p in self.ports.values()
                     if p.tap_index == index and p not in self._moved), None)
        if port is None or port.config.name == name:
            return
        old = port.config.name
        self.control.unlisten(port)
        try:
            self.vteps.rename(port, name)
        except (ControlError, OSError) as e:
            print(f"vxtun: {old}: the TAP is called {name} now, but the VTEP keeps its name: "
                  f"{e}", file=sys.stderr, flush=True)
        else:
            print(f"vxtun: {old}: the TAP was renamed {name} (ip link set name); so is the "
                  "VTEP", file=sys.stderr, flush=True)
        finally:
            self.control.listen(port)

    def _tap_left(self, name: str, moved: bool) -> None:
        """The TAP ``name`` may have left the namespace.  A VTEP of the same name started since
        (the notice of the old TAP came late) has its TAP: that name still exists, and it
        stays."""
        port = self.ports.get(name)
        if port is None or port in self._moved or self.nl.exists(name):
            return
        if not moved:
            self.tap_gone(port, errno.EBADFD)
            return
        self._moved.add(port)
        print(f"vxtun: {name}: {MOVED}; serving it there, as the kernel serves a moved vxlan "
              "device", file=sys.stderr, flush=True)

    # --- the loop ----------------------------------------------------------------------

    def watch(self, fd: int, callback) -> None:
        self.loop.watch(fd, callback)

    def unwatch(self, fd: int) -> None:
        self.loop.unwatch(fd)

    def stop(self) -> None:
        self.loop.stop()

    def run(self) -> None:
        self.backend.start()
        self.vteps.attach()
        try:
            self.loop.run(self._tick)
        finally:
            self.vteps.detach()
            self.backend.stop()

    def _tick(self, now: float) -> None:
        self.control.tick(now)
        local = self._local_ips() if self.ports else frozenset()
        for port in list(self.ports.values()):
            self._set_local(port, local)
            if port not in self._moved:
                self._follow_mac(port)
            port.vtep.expire(now)
            self.backend.check_egress(port)     # vxtun/io/gso.py forwarding_lost()
            self.after_core(port)

    def _follow_mac(self, port) -> None:
        """``ip link set vxtun0 address ...`` works as on a kernel vxlan device: the own-MAC
        check follows the TAP's address (read once a tick; the kernel's is at once)."""
        mac = tap.hwaddr(port.config.name)
        if mac and any(mac) and mac != port.vtep.mac:
            port.vtep.set_mac(mac)
            self.backend.set_mac(port, mac)

    def close(self) -> None:
        self.control.close()
        self.vteps.close()
        self.loop.unwatch(self.links.fileno())
        self.links.close()
        self.loop.close()
        self.nl.close()

    def _local_ips(self) -> frozenset:
        """The namespace's addresses, for localbypass (read once a tick: an address added
        is bypassed within a second; the kernel's route lookup sees it at once)."""
        try:
            return frozenset(self.nl.local_addresses())
        except OSError:
            return frozenset()

    def _set_local(self, port: Port, local: frozenset) -> None:
        if port.vtep.local_ips != local:
            port.vtep.local_ips = local
            self.backend.set_local(port, local)

    # --- what the backends and the commands use ----------------------------------------

    def bypass(self, port: Port, a) -> None:
        """vxlan_encap_bypass(): ``port``'s frame for a remote that is a local address goes
        straight to the VTEP of this process serving that VNI, port and family, which learns
        it against the loopback address; tx and rx both count the whole frame.  No such VTEP
        here: the kernel's tx_errors (encap_bypass_if_local), counted as ``tx_error``.

        A UDP port this process has no socket on may be a kernel vxlan device's (the two
        cannot share a port: each binds it): the datagram is sent to it through the
        underlay, as it was without localbypass, and counted so."""
        if not self.vteps.serves(a.family, a.port):
            port.vtep.stats.count_tx(1, len(a.frame))
            port.execute([a.datagram])
            return
        dst = self.vteps.local_vtep(a.family, a.port, a.vni)
        if dst is None:
            port.vtep.stats.drop("tx_error")
            return
        port.vtep.stats.tx_packets += 1
        port.vtep.stats.tx_bytes += len(a.frame)
        dst.execute(dst.vtep.handle_bypass(a.frame, time.monotonic()))
        if dst is not port:
            self.after_core(dst)

    def execute(self, port: Port, actions) -> None:
        """Carry out the core's actions for ``port``: send datagrams, write frames to its TAP."""
        port.execute(actions)

    def after_core(self, port: Port) -> None:
        """Hand the core's pending events to the monitors (and drop them if nobody listens)."""
        self.fanout.publish(port)

    def subscribe(self, port: Port, conn) -> None:
        """Make control connection ``conn`` a monitor of ``port``'s events."""
        self.fanout.subscribe(port, conn)

    def stats(self, port: Port) -> dict:
        return counters.merged(self.backend, port)
