"""The control socket through which ``vxtun down|show|stats|fdb|neigh|monitor`` reach a VTEP.

An abstract Unix socket named ``@vxtun/<dev>``: abstract names belong to the network namespace,
so two namespaces can each run a ``vxtun0`` and nothing is left on disk after a crash.  Only
root (uid 0, checked with SO_PEERCRED) may use it.  The protocol is one JSON object per line:
request ``{"cmd": "show", ...}``, answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``; ``monitor`` turns the connection into a stream of events.
"""
from __future__ import annotations

import json
import socket
import struct

from ..errors import ControlError

PREFIX = "vxtun/"


def address(dev: str) -> str:
    return "\0" + PREFIX + dev


def listen(dev: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(address(dev))
    except OSError:
        s.close()
        raise ControlError(f"a vxtun VTEP named {dev} is already running in this namespace") \
            from None
    s.listen(16)
    s.setblocking(False)
    return s


def peer_is_root(conn: socket.socket) -> bool:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == 0


def accept_root(listener: socket.socket) -> socket.socket | None:
    """Accept one connection on ``listener``, non-blocking, if its peer is root; else None.

    A non-root peer gets one refusal line and is closed."""
    try:
        conn, _ = listener.accept()
    except OSError:
        return None
    if not peer_is_root(conn):
        conn.sendall(b'{"ok": false, "error": "permission denied: root only"}\n')
        conn.close()
        return None
    conn.setblocking(False)
    return conn


def recv_nowait(conn: socket.socket) -> bytes | None:
    """Read what a non-blocking connection has: None if nothing yet, b"" if it is closed
    (or broken, which the servers treat the same way)."""
    try:
        return conn.recv(65536)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


def running() -> list[str]:
    """Names of the VTEPs running in this network namespace (from /proc/net/unix)."""
    names = []
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                parts = line.split()
                if len(parts) >= 8 and parts[7].startswith("@" + PREFIX) and parts[5] == "01":
                    names.append(parts[7][len("@" + PREFIX):])
    except OSError:
        pass
    return sorted(set(names))


class Client:
    def __init__(self, dev: str, timeout: float = 5.0) -> None:
        self.dev = dev
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address(dev))
        except OSError:
            self.sock.close()
            raise ControlError(f"no vxtun VTEP named {dev} is running in this network "
                               "namespace") from None
        self._buf = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, req: dict) -> None:
        self.sock.sendall(json.dumps(req).encode() + b"\n")

    def readline(self) -> dict | None:
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    def call(self, req: dict):
        self.send(req)
        ans = self.readline()
        if ans is None:
            raise ControlError(f"VTEP {self.dev} closed the control connection")
        if not ans.get("ok"):
            raise ControlError(ans.get("error", "unknown error"))
        return ans.get("result")


def call(dev: str, req: dict, timeout: float = 5.0):
    c = Client(dev, timeout)
    try:
        return c.call(req)
    finally:
        c.close()
