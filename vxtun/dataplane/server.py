"""The control sockets of a node's VTEPs (``@vxtun/<dev>``, vxtun/io/control.py): accept, one
channel per connection, each request to ``commands.handle`` and its answer back.

Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``, in the order
the requests came; a line that is not a JSON object gets an error answer and the connection
lives on.  Every answer goes through the channel's bounded buffer (vxtun/io/jsonlines.py), so
a client that does not read cannot hold up the loop.
"""
from __future__ import annotations

from ..errors import VxtunError
from ..io import control
from ..io.jsonlines import BadLine, Channel
from . import commands
from .fanout import Fanout
from .loop import Loop


class ControlServer:
    def __init__(self, loop: Loop, node, fanout: Fanout) -> None:
        self.loop = loop
        self.node = node                # what commands.handle gets as ``node``
        self.fanout = fanout
        self.clients: dict[Channel, object] = {}       # channel -> the Port it talks to
        self._serving: set = set()                     # Ports whose listener is watched
        self._last: set[Channel] = set()               # to close once answered (vxtun down)

    def listen(self, port) -> None:
        self._serving.add(port)
        self.loop.watch(port.listener.fileno(), lambda: self._accept(port))

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
        conn = control.accept_root(port.listener)
        if conn is not None:
            self.serve_connection(port, conn)

    def serve_connection(self, port, conn) -> Channel:
        """Serve one accepted (non-blocking) connection to ``port``'s control socket."""
        chan = Channel(conn)
        self.clients[chan] = port
        self.loop.serve(chan, self._answer, self._closed)
        return chan

    def _closed(self, chan: Channel) -> None:
        self.clients.pop(chan, None)
        self._last.discard(chan)
        self.fanout.unsubscribe(chan)

    def _answer(self, chan: Channel, req) -> None:
        port = self.clients[chan]
        if isinstance(req, BadLine):
            ans = {"ok": False, "error": f"bad request: {req.reason}"}
        else:
            try:
                ans = {"ok": True, "result": commands.handle(self.node, port, chan, req)}
            except VxtunError as e:
                ans = {"ok": False, "error": str(e)}
            except (ValueError, KeyError, TypeError) as e:
                ans = {"ok": False, "error": f"bad request: {e}"}
        chan.send(ans)
        if chan in self._last:
            chan.close_when_flushed()   # its VTEP is gone (vxtun down): this was the last
