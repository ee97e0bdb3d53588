"""The tracers of each VTEP: control connections that asked ``{"cmd": "trace", ...}``.

Like a monitor (vxtun/dataplane/fanout.py), a tracer gets one line per record,
``{"ok": true, "trace": {...}}``, as a droppable message: a tracer that falls behind loses
records and is told how many (the channel's ``{"ok": true, "lost": N}``), never the loop's
time.  Each tracer's filter (``mac``, ``ip``, ``drops``) is applied here, in the VTEP, so a
narrow trace of a busy VTEP does not fill the socket.

The backends ask ``watching(port)`` before they trace at all; ``on_change(port, on)`` tells
them when the first tracer of a VTEP arrives and the last one leaves (the fast path then turns
its C ring on or off).  A tracer leaves when its connection closes.
"""
from __future__ import annotations

from collections.abc import Callable

from ..io.jsonlines import Channel, encode
from .records import TraceFilter, lost


class TraceHub:
    def __init__(self) -> None:
        self._subs: dict = {}                           # Port -> [(Channel, TraceFilter)]
        self._port_of: dict[Channel, object] = {}
        self.on_change: Callable[[object, bool], None] | None = None

    def watching(self, port) -> bool:
        return port in self._subs

    @property
    def active(self) -> bool:
        """Some VTEP is traced (what the pure loop asks of every datagram)."""
        return bool(self._subs)

    def subscribe(self, port, chan: Channel, flt: TraceFilter) -> None:
        if chan in self._port_of:
            self.unsubscribe(chan)
        first = port not in self._subs
        self._port_of[chan] = port
        self._subs.setdefault(port, []).append((chan, flt))
        before = chan.on_close

        def closed() -> None:
            self.unsubscribe(chan)
            if before is not None:
                before()
        chan.on_close = closed
        if first and self.on_change is not None:
            self.on_change(port, True)

    def unsubscribe(self, chan: Channel) -> None:
        port = self._port_of.pop(chan, None)
        subs = self._subs.get(port)
        if subs is None:
            return
        subs[:] = [(c, f) for c, f in subs if c is not chan]
        if not subs:
            del self._subs[port]
            if self.on_change is not None:
                self.on_change(port, False)

    def forget(self, port) -> None:
        """``port`` goes away: its tracers stop being tracers (their connections close with
        the VTEP's, vxtun/dataplane/server.py ``forget``)."""
        for chan, _ in self._subs.get(port, []):
            self.unsubscribe(chan)

    def publish(self, port, rec: dict, head: bytes) -> None:
        """One record of ``port``'s VTEP (``head``: the start of its inner frame)."""
        line = None
        for chan, flt in list(self._subs.get(port, ())):
            if flt.keeps(rec, head):
                if line is None:
                    rec = dict(rec, dev=port.config.name) if not rec["dev"] else rec
                    line = encode({"ok": True, "trace": rec})
                chan.send_line(line, droppable=True)

    def lost(self, port, count: int) -> None:
        """``count`` records of ``port`` were lost before they reached Python (the fast
        path's ring was full)."""
        line = encode({"ok": True, "trace": lost(port.config.name, count)})
        for chan, _ in list(self._subs.get(port, ())):
            chan.send_line(line, droppable=True)
