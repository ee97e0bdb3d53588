"""Stand-ins for the node that the control-socket unit tests share (no root, no sockets but
socketpairs): what ``commands.handle`` and ``Owner`` need of a node, and a reader of the
JSON lines a peer was sent."""
from __future__ import annotations

import json
import socket

from vxtun.dataplane.fanout import Fanout
from vxtun.dataplane.loop import Loop


class StubNode:
    """What commands.handle needs of a node for ``monitor``."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    def after_core(self, port) -> None:
        self.fanout.publish(port)

    def subscribe(self, port, conn) -> None:
        self.fanout.subscribe(port, conn)


class OwnerNode:
    """What the port owner (vxtun/dataplane/owner.py) needs of its node."""

    def __init__(self) -> None:
        self.loop = Loop()
        self.on_down = None
        self.on_tap_gone = None
        self.stopped = False
        self.removed: list = []

    def watch(self, fd, callback) -> None:
        self.loop.watch(fd, callback)

    def unwatch(self, fd) -> None:
        self.loop.unwatch(fd)

    def remove(self, port, keep=None) -> None:
        self.removed.append(port)

    def stop(self) -> None:
        self.stopped = True


def read_lines(sock: socket.socket) -> tuple[list[dict], bool]:
    """What ``sock`` has now, as JSON lines, and whether the peer closed."""
    sock.setblocking(False)
    data, eof = b"", False
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            eof = True
            break
        data += chunk
    return [json.loads(x) for x in data.split(b"\n") if x], eof
