"""The Python API of a running VTEP, for controllers: events in, table changes out.

What a person does by hand with ``ip monitor``, ``ip neigh replace`` and ``bridge fdb add``, a
controller does as a program: it listens for the misses and answers them.  This module is that
program's side of a vxtun VTEP::

    from vxtun.api import Controller, L2Miss, L3Miss

    ctl = Controller("vxtun0")
    with ctl.subscribe() as events:            # subscribed once this returns
        for ev in events:                      # blocks; ends when the VTEP goes away
            if isinstance(ev, L3Miss):         # miss 10.20.1.3 STALE
                ctl.neigh_replace(ev.ip, "b2:ee:aa:42:8b:0b", nud="reachable")
            elif isinstance(ev, L2Miss):       # miss lladdr b2:ee:aa:42:8b:0b STALE
                ctl.fdb_add(ev.lladdr, dst="192.0.2.2")

Everything goes through the VTEP's control socket (``@vxtun/<dev>`` in the caller's network
namespace, root only), the one ``vxtun neigh|fdb|monitor`` use, so a controller and a person at
the CLI see and change the same tables.  A malformed argument (a bad MAC or address, an
unknown nud state) raises ``vxtun.errors.LocalError`` before anything is sent; a request the
VTEP refuses (``add`` of an existing entry, ``del`` of a missing one) or a VTEP that is not
running raises ``vxtun.errors.ControlError`` with the message the CLI would print.  Both derive
from ``VxtunError``.  So does a control socket held by anyone but root (an abstract name can
be bound by any user of the namespace): the controller refuses it before sending anything, and
a VTEP that serves too many connections already answers that it is busy.

Events are the dataclasses of ``vxtun.core.events``: ``L3Miss`` (``.ip``), ``L2Miss``
(``.mac``, ``.lladdr``), ``NeighChange`` (``.action`` ``new``/``del``, ``.ip``, ``.lladdr``,
``.state``) and ``FdbChange`` (``.action``, ``.mac``, ``.remotes``, ``.state``); both changes
also give ``.entry``, as ``ip -j neigh`` / ``bridge -j fdb`` show one.  Every request is one
of the typed requests of ``vxtun.core.requests``, checked before it is sent.  A listener that
falls behind loses events, never the VTEP's packets: ``EventStream.lost`` counts what it
missed.  Misses of one key are reported at most once a second, so a controller is never
flooded by a burst.
"""
from __future__ import annotations

from collections.abc import Iterator

from .core.events import FdbChange, L2Miss, L3Miss, NeighChange, event_from_json
from .core.requests import (FdbDelete, FdbShow, FdbUpdate, NeighDelete, NeighFlush, NeighShow,
                            NeighUpdate, Request, Show, Stats)
from .errors import ControlError
from .fdb import Remote
from .io import control

__all__ = ["Controller", "EventStream", "L2Miss", "L3Miss", "NeighChange", "FdbChange",
           "running"]


def running() -> list[str]:
    """The names of the vxtun VTEPs running in this network namespace."""
    return control.running()


class EventStream:
    """A subscription to one VTEP's events (``vxtun monitor``).  Iterate it, or call
    ``next(timeout)``; ``fileno()`` lets it join a selector or an event loop."""

    def __init__(self, dev: str) -> None:
        self.dev = dev
        self.lost = 0           # events the VTEP dropped because this listener was slow
        self._client = control.Client(dev, timeout=None)
        try:
            self._client.call({"cmd": "monitor"})
        except BaseException:
            self._client.close()
            raise

    def fileno(self) -> int:
        return self._client.fileno()

    def next(self, timeout: float | None = None):
        """The next event; None when ``timeout`` seconds pass without one.  Raises
        ControlError when the VTEP goes away."""
        while True:
            try:
                msg = self._client.read(timeout)
            except TimeoutError:
                return None
            if msg is None:
                raise ControlError(f"VTEP {self.dev} went away")
            if msg.get("lost"):
                self.lost += int(msg["lost"])
            if "event" in msg:
                return event_from_json(msg["event"])

    def __iter__(self) -> Iterator:
        while True:
            try:
                yield self.next()
            except ControlError:
                return

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Controller:
    """One VTEP, by device name, as a program sees it."""

    def __init__(self, dev: str = "vxtun0", timeout: float = 5.0) -> None:
        self.dev = dev
        self.timeout = timeout

    def _call(self, req: Request):
        return control.call(self.dev, req.to_json(), self.timeout)

    def _pages(self, req: Request) -> Iterator[list[dict]]:
        c = control.Client(self.dev, self.timeout)
        try:
            yield from c.pages(req.to_json())
        finally:
            c.close()

    # --- events ------------------------------------------------------------------------

    def subscribe(self) -> EventStream:
        """Start listening now: every event after this call returns is delivered."""
        return EventStream(self.dev)

    def events(self) -> Iterator:
        """Iterate over the VTEP's events until it goes away (a shorthand for subscribe())."""
        with self.subscribe() as stream:
            yield from stream

    # --- the device --------------------------------------------------------------------

    def show(self) -> dict:
        """What ``vxtun show -j`` shows: the configuration, MTU, MAC, dataplane."""
        return self._call(Show())

    def stats(self) -> dict:
        return self._call(Stats())

    # --- neighbour table (ip neigh ... dev DEV) ------------------------------------------

    def _neigh(self, op: str, ip: str, lladdr: str | bytes, nud: str) -> None:
        self._call(NeighUpdate(op, ip, lladdr, nud))

    def neigh_add(self, ip: str, lladdr: str | bytes, nud: str = "permanent") -> None:
        """``ip neigh add IP lladdr MAC nud NUD``; refuses an existing entry."""
        self._neigh("add", ip, lladdr, nud)

    def neigh_replace(self, ip: str, lladdr: str | bytes, nud: str = "permanent") -> None:
        """``ip neigh replace``: add or overwrite (and restart a reachable entry's time)."""
        self._neigh("replace", ip, lladdr, nud)

    def neigh_change(self, ip: str, lladdr: str | bytes, nud: str = "permanent") -> None:
        self._neigh("change", ip, lladdr, nud)

    def neigh_del(self, ip: str) -> None:
        self._call(NeighDelete(ip))

    def neigh_flush(self, all_states: bool = False) -> None:
        """``ip neigh flush dev DEV``: all but permanent and noarp entries (or every one)."""
        self._call(NeighFlush(all_states=all_states))

    def neigh_show(self, nud: str | None = None) -> list[dict]:
        """As ``ip -j neigh show dev DEV`` (noarp entries only with ``nud="all"``)."""
        return self._call(NeighShow(nud=nud or None))

    def neigh_pages(self, nud: str | None = None) -> Iterator[list[dict]]:
        """``neigh_show`` page by page, as ``fdb_pages``."""
        yield from self._pages(NeighShow(nud=nud or None))

    def neigh_count(self) -> int:
        """How many entries the neighbour table holds (in any state), without listing them."""
        return self._call(NeighShow(count=True))["count"]

    # --- FDB (bridge fdb ... dev DEV self) -----------------------------------------------

    def _fdb(self, op: str, mac: str | bytes, dst: str, port: int | None, vni: int | None,
             via: str | None, state: str) -> None:
        self._call(FdbUpdate(op, mac, Remote(dst, port or 0, vni, via), state))

    def fdb_add(self, mac: str | bytes, dst: str, port: int | None = None,
                vni: int | None = None, via: str | None = None,
                state: str = "permanent") -> None:
        """``bridge fdb add MAC dst IP dev DEV``; refuses an existing MAC."""
        self._fdb("add", mac, dst, port, vni, via, state)

    def fdb_append(self, mac: str | bytes, dst: str, port: int | None = None,
                   vni: int | None = None, via: str | None = None,
                   state: str = "permanent") -> None:
        """``bridge fdb append``: one more destination for the all-zeros or a multicast MAC."""
        self._fdb("append", mac, dst, port, vni, via, state)

    def fdb_replace(self, mac: str | bytes, dst: str, port: int | None = None,
                    vni: int | None = None, via: str | None = None,
                    state: str = "permanent") -> None:
        """``bridge fdb replace``: add or re-point a unicast MAC."""
        self._fdb("replace", mac, dst, port, vni, via, state)

    def fdb_del(self, mac: str | bytes, dst: str | None = None) -> None:
        """``bridge fdb del``: one destination when ``dst`` is given, else the whole entry."""
        self._call(FdbDelete(mac, dst))

    def fdb_show(self) -> list[dict]:
        """Every entry, as ``bridge -j fdb show`` has them (a large table is read in pages and
        joined: use ``fdb_pages`` to hold one page at a time)."""
        return self._call(FdbShow())

    def fdb_pages(self) -> Iterator[list[dict]]:
        """The FDB page by page, each as the VTEP sends it (a table of up to 256 entries is
        one page)."""
        yield from self._pages(FdbShow())

    def fdb_count(self) -> int:
        """How many entries the FDB holds, without listing them."""
        return self._call(FdbShow(count=True))["count"]
