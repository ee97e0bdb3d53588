"""The control socket through which ``vxtun down|show|stats|fdb|neigh|monitor`` reach a VTEP.

An abstract Unix socket named ``@vxtun/<dev>``: abstract names belong to the network namespace,
so two namespaces can each run a ``vxtun0`` and nothing is left on disk after a crash.  Only
root (uid 0, checked with SO_PEERCRED) may use it.  The protocol is one JSON object per line:
request ``{"cmd": "show", ...}``, answer ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``; ``monitor`` turns the connection into a stream of events.
"""
from __future__ import annotations

import socket
import struct

from ..errors import ControlError
from . import jsonlines

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
        conn.sendall(jsonlines.encode({"ok": False, "error": "permission denied: root only"}))
        conn.close()
        return None
    conn.setblocking(False)
    return conn


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
    """A blocking connection to one VTEP's control socket (vxtun/io/jsonlines.py frames it)."""

    def __init__(self, dev: str, timeout: float | None = 5.0) -> None:
        self.dev = dev
        try:
            self.chan = jsonlines.connect(address(dev), timeout)
        except OSError:
            raise ControlError(f"no vxtun VTEP named {dev} is running in this network "
                               "namespace") from None

    def fileno(self) -> int:
        return self.chan.fileno()

    def close(self) -> None:
        self.chan.close()

    def read(self, timeout=jsonlines.DEFAULT) -> dict | None:
        """The next line the VTEP sends (None when it closes the connection); TimeoutError
        after ``timeout`` seconds (the client's own by default)."""
        return self.chan.read(timeout)

    def call(self, req: dict):
        try:
            ans = self.chan.request(req)
        except TimeoutError:
            raise ControlError(f"VTEP {self.dev} did not answer in time") from None
        except OSError as e:
            raise ControlError(f"VTEP {self.dev}: {e.strerror or e}") from None
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
