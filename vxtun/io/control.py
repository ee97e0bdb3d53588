"""The control socket through which ``vxtun down|show|stats|fdb|neigh|monitor`` reach a VTEP.

An abstract Unix socket named ``@vxtun/<dev>``: abstract names belong to the network namespace,
so two namespaces can each run a ``vxtun0`` and nothing is left on disk after a crash.  Only
root (uid 0, checked with SO_PEERCRED) may use it, and only root may serve it: any user can
bind an abstract name first, so the client checks who holds the socket before it says a word
(vxtun/io/jsonlines.py ``connect``).  The protocol is one JSON object per line: request
``{"cmd": "show", ...}``, answer ``{"ok": true, "result": ...}`` or ``{"ok": false, "error":
"..."}``; ``monitor`` turns the connection into a stream of events.

Accepting never spins.  When the process has no descriptor left (EMFILE, or ENFILE for the
whole system), accept() fails and leaves the connection queued, so the listener stays readable
and a selector loop would call us again at once, for ever.  One descriptor is kept in reserve
(``_Reserve``, the trick of libev and nginx): it is given up for a moment to accept that
connection, tell its client why, and close it.
"""
from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable

from ..errors import ControlError
from . import jsonlines

PREFIX = "vxtun/"
CONNECT_TIMEOUT = 5.0       # for a client without a timeout of its own (monitor)


def address(dev: str) -> str:
    return "\0" + PREFIX + dev


def listen(dev: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.bind(address(dev))
    except OSError:
        s.close()
        holder = holder_uid(address(dev))
        if holder not in (None, 0):
            raise ControlError(f"the control socket @{PREFIX}{dev} is held by uid {holder}, "
                               f"not root: cannot start {dev}") from None
        raise ControlError(f"a vxtun VTEP named {dev} is already running in this namespace") \
            from None
    s.listen(16)
    s.setblocking(False)
    _reserve.keep()
    return s


def holder_uid(addr: str) -> int | None:
    """The uid of whoever listens on ``addr`` (None if nobody does, or it cannot be told)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.setblocking(False)
    try:
        s.connect(addr)
        return jsonlines.peer_uid(s)
    except OSError:
        return None
    finally:
        s.close()


def peer_is_root(conn: socket.socket) -> bool:
    return jsonlines.peer_uid(conn) == 0


class _Reserve:
    """One descriptor (on /dev/null) held back for accept() at EMFILE."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._pid = 0

    def keep(self) -> bool:
        """Hold the reserve (again); False if not even one descriptor is free."""
        if self._pid != os.getpid():
            # Kept by the process we were forked from: its number may have been closed
            # (the port owner closes every inherited descriptor) and reused since.
            self.fd = None
        if self.fd is None:
            try:
                self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return False
            self._pid = os.getpid()
        return True

    def release(self) -> None:
        if self.fd is not None and self._pid == os.getpid():
            os.close(self.fd)
        self.fd = None


_reserve = _Reserve()


def refuse(conn: socket.socket, error: str) -> None:
    """Tell a client in one line why it is not served, and close its connection.  A fresh
    connection's buffer takes the line at once; a client that is gone loses nothing."""
    try:
        conn.setblocking(False)
        conn.send(jsonlines.encode({"ok": False, "error": error}))
    except OSError:
        pass
    conn.close()


def accept_root(listener: socket.socket,
                on_starved: Callable[[], None] | None = None) -> socket.socket | None:
    """Accept one connection on ``listener``, non-blocking, if its peer is root; else None.

    A non-root peer gets one refusal line and is closed.  At EMFILE/ENFILE the reserve
    descriptor lets the waiting client be told and closed; if even that fails,
    ``on_starved()`` is called: the caller must stop watching the listener for a while, or
    its loop would spin."""
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        if e.errno in (errno.EMFILE, errno.ENFILE) and not _shed(listener) \
                and on_starved is not None:
            on_starved()
        return None
    if not peer_is_root(conn):
        refuse(conn, "permission denied: root only")
        return None
    conn.setblocking(False)
    return conn


def _shed(listener: socket.socket) -> bool:
    """Out of descriptors: accept the waiting connection on the reserve's, tell its client,
    close it.  False if that did not work either (no reserve, or ENFILE taken by others)."""
    if _reserve.fd is None and not _reserve.keep():
        return False
    _reserve.release()
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        conn = None
    except OSError:
        _reserve.keep()
        return False
    if conn is not None:
        refuse(conn, "the VTEP is busy: its process has no file descriptor left for another "
                     "control connection; try again later")
    return _reserve.keep()


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
    """A blocking connection to one VTEP's control socket (vxtun/io/jsonlines.py frames it).

    ControlError if nobody serves ``dev``, if its server does not accept connections now (a
    full backlog: busy, not gone), or if the socket is not held by root."""

    def __init__(self, dev: str, timeout: float | None = 5.0) -> None:
        self.dev = dev
        try:
            # A monitor waits for ever for its events, never for its connection: a server
            # whose backlog is full is busy, and connect() would otherwise block until it
            # is not.
            self.chan = jsonlines.connect(address(dev), CONNECT_TIMEOUT if timeout is None
                                          else timeout)
            self.chan.timeout = timeout
        except OSError as e:
            if jsonlines.is_busy(e):
                raise ControlError(f"VTEP {dev} is busy: it does not accept another control "
                                   "connection now; try again later") from None
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
        """The answer to ``req``; a listing that came in pages is joined into one list."""
        parts = list(self.pages(req))
        if len(parts) == 1:
            return parts[0]
        return [row for part in parts for row in part]

    def pages(self, req: dict):
        """The answer to ``req`` as it comes: each page of a listing (``fdb show``, ``neigh
        show``; see vxtun/dataplane/server.py) as soon as it arrives, else the one result."""
        ans = self._io(lambda: self.chan.request(req))
        while True:
            if ans is None:
                raise ControlError(f"VTEP {self.dev} closed the control connection")
            if not ans.get("ok"):
                raise ControlError(ans.get("error", "unknown error"))
            if "more" not in ans:
                yield ans.get("result")
                return
            yield ans["more"]
            ans = self._io(self.chan.read)

    def _io(self, fn):
        try:
            return fn()
        except TimeoutError:
            raise ControlError(f"VTEP {self.dev} did not answer in time") from None
        except OSError as e:
            raise ControlError(f"VTEP {self.dev}: {e.strerror or e}") from None


def call(dev: str, req: dict, timeout: float = 5.0):
    c = Client(dev, timeout)
    try:
        return c.call(req)
    finally:
        c.close()
