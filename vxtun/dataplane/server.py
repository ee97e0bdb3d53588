"""The control sockets of a node's VTEPs (``@vxtun/<dev>``, vxtun/io/control.py): accept, one
channel per connection, each request to ``commands.handle`` and its answer back.

Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``, in the order
the requests came; a line that is not a JSON object gets an error answer and the connection
lives on.  Every answer goes through the channel's bounded buffer (vxtun/io/jsonlines.py), so
a client that does not read cannot hold up the loop.

A listing (``fdb show``, ``neigh show``) is answered in pages of at most ``PAGE`` rows:
``{"ok": true, "more": [...]}`` lines, then ``{"ok": true, "result": [...]}`` with the last
page (a short table is that one line, as any other answer).  A page is read from the table
only when the client has taken the one before (``Channel.stream``), so a listing of a million
entries holds the loop a few milliseconds at a time and the process never holds more than a
page of it; requests that come meanwhile wait, in order, until the listing is out.

The number of connections is bounded too: past ``MAX_CLIENTS`` for the whole node, a new
connection is told in one line that the VTEP is busy and closed, so ``vxtun show`` says so
instead of hanging or finding nobody, and the process never runs out of descriptors because of
idle clients.  Should it run out anyway (a low RLIMIT_NOFILE), vxtun/io/control.py sheds the
waiting connections with its reserve descriptor, and if even that fails the listeners are left
unwatched for ``PAUSE`` seconds (or until a connection closes) instead of spinning on a
listener that stays readable.
"""
from __future__ import annotations

import time

from ..errors import VxtunError
from ..io import control
from ..io.jsonlines import BadLine, Channel, encode
from . import commands
from .fanout import Fanout
from .loop import Loop


# Control connections one node serves at once (monitors included), far below the default
# RLIMIT_NOFILE of 1024 that the TAPs and sockets share.
MAX_CLIENTS = 256
# Seconds the listeners rest when not even the reserve descriptor can accept.
PAUSE = 1.0
# Requests one connection may send while a listing goes out to it (a client that pipelines
# more without reading is not served further).
MAX_HELD = 64


class ControlServer:
    def __init__(self, loop: Loop, node, fanout: Fanout) -> None:
        self.loop = loop
        self.node = node                # what commands.handle gets as ``node``
        self.fanout = fanout
        self.max_clients = MAX_CLIENTS
        self.clients: dict[Channel, object] = {}       # channel -> the Port it talks to
        self._serving: set = set()                     # Ports whose listener is served
        self._last: set[Channel] = set()               # to close once answered (vxtun down)
        self._paused_until: float | None = None        # listeners unwatched: out of fds
        self._held: dict[Channel, list] = {}           # requests waiting for a listing

    def listen(self, port) -> None:
        self._serving.add(port)
        if self._paused_until is None:
            self._watch(port)

    def unlisten(self, port) -> None:
        """Stop accepting for ``port`` (its connections stay): its listener is about to be
        replaced (a renamed TAP, Node._renamed), and ``listen`` serves the new one."""
        if port in self._serving:
            self._serving.discard(port)
            if self._paused_until is None:
                self.loop.unwatch(port.listener.fileno())

    def _watch(self, port) -> None:
        self.loop.watch(port.listener.fileno(), lambda: self._accept(port))

    def tick(self, now: float) -> None:
        """Once a second: listeners that rested (no descriptor left) are served again."""
        if self._paused_until is not None and now >= self._paused_until:
            self._resume()

    def _starved(self) -> None:
        if self._paused_until is not None:
            return
        self._paused_until = time.monotonic() + PAUSE
        for port in self._serving:
            self.loop.unwatch(port.listener.fileno())

    def _resume(self) -> None:
        if self._paused_until is None:
            return
        self._paused_until = None
        for port in self._serving:
            self._watch(port)

    def forget(self, port, keep: Channel | None = None) -> None:
        """``port`` goes away: stop accepting and close its connections, except ``keep``, the
        one being answered, which closes once its answer is out."""
        if port in self._serving:
            self._serving.discard(port)
            self.loop.unwatch(port.listener.fileno())
        for chan, p in list(self.clients.items()):
            if p is port:
                if chan is keep:
                    self._last.add(chan)
                else:
                    chan.close()

    def close(self) -> None:
        for chan in list(self.clients):
            chan.flush()                # a last answer (to "down") that the socket takes now
            chan.close()

    def _accept(self, port) -> None:
        conn = control.accept_root(port.listener, self._starved)
        if conn is None:
            return
        if len(self.clients) >= self.max_clients:
            control.refuse(conn, f"VTEP {port.config.name} is busy: {len(self.clients)} "
                                 "control connections are open, the most one vxtun process "
                                 "serves; try again later")
            return
        self.serve_connection(port, conn)

    def serve_connection(self, port, conn) -> Channel:
        """Serve one accepted (non-blocking) connection to ``port``'s control socket."""
        chan = Channel(conn)
        self.clients[chan] = port
        self.loop.serve(chan, self._answer, self._closed)
        return chan

    def _closed(self, chan: Channel) -> None:
        self.clients.pop(chan, None)
        self._held.pop(chan, None)
        self._last.discard(chan)
        self.fanout.unsubscribe(chan)
        self._resume()                  # a descriptor is free again

    def _answer(self, chan: Channel, req) -> None:
        if chan.streaming:
            # a listing is going out on this connection: answer after it, in order
            held = self._held.setdefault(chan, [])
            if len(held) >= MAX_HELD:
                chan.close()
                return
            held.append(req)
            return
        port = self.clients[chan]
        result = None
        if isinstance(req, BadLine):
            ans = {"ok": False, "error": f"bad request: {req.reason}"}
        else:
            try:
                result = commands.handle(self.node, port, chan, req)
                ans = {"ok": True, "result": result}
            except VxtunError as e:
                ans = {"ok": False, "error": str(e)}
            except (ValueError, KeyError, TypeError) as e:
                ans = {"ok": False, "error": f"bad request: {e}"}
        if isinstance(result, commands.Pages):
            chan.stream(_page_lines(result), lambda: self._release(chan))
            return
        chan.send(ans)
        if chan in self._last:
            chan.close_when_flushed()   # its VTEP is gone (vxtun down): this was the last

    def _release(self, chan: Channel) -> None:
        """A listing is out: answer what came meanwhile, up to the next listing."""
        held = self._held.pop(chan, [])
        while held and not chan.closed and chan in self.clients:
            self._answer(chan, held.pop(0))
            if chan.streaming:
                self._held[chan] = held + self._held.get(chan, [])
                return
        if chan in self._last and not chan.closed:
            chan.close_when_flushed()


def _page_lines(pages):
    """The lines of a paged answer: each page but the last as ``more``, the last as the
    ``result``; a page is made only when the line before it has gone out.  A failure half
    way is the answer's last line, as an error."""
    prev = None
    try:
        for page in pages:
            if prev is not None:
                yield encode({"ok": True, "more": prev})
            prev = page
    except VxtunError as e:
        yield encode({"ok": False, "error": str(e)})
        return
    except (ValueError, KeyError, TypeError) as e:     # as _answer: never into the loop
        yield encode({"ok": False, "error": f"bad request: {e}"})
        return
    yield encode({"ok": True, "result": [] if prev is None else prev})
