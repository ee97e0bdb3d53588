"""Events to the monitors (``vxtun monitor``, ``vxtun.api.EventStream``) of each VTEP.

The core queues its events (vxtun/core/vtep.py, ``Vtep.next_event``); after every call into
it, the node hands them here.  Each monitor is a control channel that gets one line per event,
``{"ok": true, "event": {...}}``, as a droppable message: a monitor that falls behind loses
events (and is told how many), never the loop's time.  Like ``ip monitor``, whoever subscribes
late sees only what happens after, and with nobody subscribed events are simply dropped.
"""
from __future__ import annotations

from ..io.jsonlines import Channel, encode


class Fanout:
    def __init__(self) -> None:
        self._subs: dict = {}                # Port -> its monitors' channels
        self._port_of: dict[Channel, object] = {}
        self.events_lost = 0            # events dropped for slow monitors, all VTEPs

    def subscribe(self, port, chan: Channel) -> None:
        if chan in self._port_of:
            return
        self._port_of[chan] = port
        self._subs.setdefault(port, []).append(chan)

    def unsubscribe(self, chan: Channel) -> None:
        key = self._port_of.pop(chan, None)
        subs = self._subs.get(key)
        if subs is not None:
            subs.remove(chan)
            if not subs:
                del self._subs[key]

    def publish(self, port) -> None:
        """Send the core's pending events of ``port`` to its monitors."""
        vtep = port.vtep
        ev = vtep.next_event()
        while ev is not None:
            subs = self._subs.get(port)
            if subs:
                line = encode({"ok": True, "event": ev.to_json()})
                for chan in list(subs):
                    if not chan.send_line(line, droppable=True) and not chan.closed:
                        self.events_lost += 1
            ev = vtep.next_event()
