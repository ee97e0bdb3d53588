"""The main thread's loop: one selector over every fd the node serves, the signals that end
it, and a 1-second tick (FDB and neighbour ageing, events).

Nothing called from here may block: the pure dataplane forwards packets from this very loop,
and the fast one takes its punts here.  Control connections are served through
``vxtun.io.jsonlines.Channel``, whose bounded buffer goes out when the socket is writable.
"""
from __future__ import annotations

import os
import selectors
import signal
import time
from collections.abc import Callable

from ..io.jsonlines import Channel

TICK = 1.0


class Loop:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.running = False
        # stop() from a signal handler or another thread must wake a select() without fds
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` whenever ``fd`` is readable."""
        self.sel.register(fd, selectors.EVENT_READ, callback)

    def unwatch(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def want_write(self, fd: int, on: bool) -> None:
        """Also call ``fd``'s callback when it is writable (while output waits for it)."""
        try:
            key = self.sel.get_key(fd)
        except (KeyError, ValueError):
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        if key.events != want:
            self.sel.modify(fd, want, key.data)

    def serve(self, chan: Channel, on_message: Callable[[Channel, object], None],
              on_close: Callable[[Channel], None]) -> None:
        """Serve a non-blocking channel: each line it receives goes to ``on_message(chan,
        msg)`` (a dict or a BadLine), its backlog goes out when the socket is writable, and
        ``on_close(chan)`` runs once it closes, for whatever reason (EOF, error, overflow)."""
        fd = chan.fileno()

        def ready() -> None:
            chan.flush()
            msgs = chan.receive()
            if msgs is None:
                chan.close()
                return
            for msg in msgs:
                if chan.closed:
                    return
                on_message(chan, msg)

        def closed() -> None:
            self.unwatch(fd)
            on_close(chan)

        chan.on_backlog = lambda waiting: self.want_write(fd, waiting)
        chan.on_close = closed
        self.watch(fd, ready)

    def stop(self) -> None:
        self.running = False
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def run(self, on_tick: Callable[[float], None]) -> None:
        """Until stop() (SIGINT and SIGTERM call it): serve the fds, ``on_tick(now)`` each
        second."""
        self.watch(self._wake_r, self._drain_wake)
        old = {s: signal.signal(s, lambda *_: self.stop())
               for s in (signal.SIGINT, signal.SIGTERM)}
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
                    on_tick(now)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.unwatch(self._wake_r)

    def _drain_wake(self) -> None:
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.sel.close()
