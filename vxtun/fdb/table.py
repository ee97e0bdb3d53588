"""The FDB of one VTEP, with the kernel's rules (drivers/net/vxlan/vxlan_core.c).

Rules, each from the kernel function named:

* An entry maps a MAC to one or more *remotes* (underlay IP, optional port, VNI, device).  Only
  the all-zeros MAC (the *default* entry) and multicast MACs may hold several remotes; a frame
  that matches such an entry is sent once to each (head-end replication).  (vxlan_fdb_append)
* States, as ``bridge fdb`` names them: ``permanent`` (NUD_PERMANENT, the default of
  ``bridge fdb add``), ``static`` (NUD_NOARP) and ``dynamic`` (NUD_REACHABLE, what learning
  creates).  Only dynamic entries age; permanent and static ones never move.  (vxlan_cleanup)
* Learning (vxlan_snoop): the inner source MAC of a received frame is bound to the outer
  source IP.  An unknown MAC is added as dynamic; a dynamic MAC seen from another VTEP is
  re-pointed (it moved): only the IP of its first remote changes, its port, VNI and device
  stay (``rdst->remote_ip = *src_ip``); a static or permanent MAC seen from another VTEP is
  *not* moved and the frame is dropped.  Seeing a MAC again from the same VTEP refreshes
  ``updated``.
* Ageing uses ``updated`` (last time the MAC was seen as a *source*), not ``used``: an entry
  that is only ever a destination still ages out, as in the kernel.
* Every deletion is reported (vxlan_cleanup notifies RTM_DELNEIGH for each entry it removes):
  an expired entry that ``lookup``, ``learn`` or an administrative change meets before the
  ageing pass is removed on the spot and kept aside until ``reaped()`` (or the next
  ``expire()``) hands it over, so the core can report it before anything newer.
* ``maxaddress`` caps learning: once the table holds that many entries nothing more is
  learned, but the administrator can still add entries and known traffic keeps flowing.
* ``add`` refuses an existing MAC (EEXIST), ``replace`` re-points a unicast entry and refuses
  the default/multicast ones, ``append`` adds a remote to the default/multicast entries (and
  creates a unicast entry that does not exist yet, as the kernel does: ``bridge fdb append
  MAC dst IP`` is a common way to write a static unicast entry),
  ``del`` removes one remote when ``dst`` is given, else the whole entry.  Appending a remote
  that is already listed succeeds and changes nothing but the state, as in the kernel.
* Deliberate differences from the kernel: an ``append`` of a second destination to a
  *unicast* MAC is an error (the kernel silently keeps the first one, which hides a typo), so
  is a ``del`` of a destination the entry does not have (the kernel ignores it); and
  ``maxaddress`` only caps learning (the kernel also refuses administrator adds with ENOSPC,
  but a controller must always be able to pin a MAC).

The rules above are stated once: the data-path ones (lookup, learn, expire) in ``DictStore``
(and in C for the fast path, ``vxtun._fastpath.CFdb``, held equal by
``tests/unit/test_fastpath_differential.py``), the administrative ones in ``Fdb``, over either
store.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import FdbError
from ..wire.ether import ZERO_MAC, is_multicast_mac, mac_to_str

STATES = ("permanent", "static", "dynamic")

# What learn() did; the core counts and reports these.
LEARN_OFF = 0        # learning is disabled or the source MAC cannot be learned
LEARN_REFRESH = 1    # known MAC, same VTEP: timestamp refreshed
LEARN_NEW = 2        # new dynamic entry
LEARN_MOVED = 3      # dynamic entry re-pointed to another VTEP
LEARN_PINNED = 4     # static/permanent MAC claimed by another VTEP: drop the frame
LEARN_FULL = 5       # table at maxaddress: not learned, frame still delivered


@dataclass(frozen=True)
class Remote:
    """One destination of an FDB entry. ``port``/``vni`` of 0/None mean "the VTEP's own"."""
    ip: str
    port: int = 0
    vni: int | None = None
    via: str | None = None     # underlay device name, as shown by "via eth0"

    def to_json(self) -> dict:
        d: dict = {"dst": self.ip}
        if self.port:
            d["port"] = self.port
        if self.vni is not None:
            d["vni"] = self.vni
        if self.via:
            d["via"] = self.via
        return d


@dataclass
class FdbEntry:
    mac: bytes
    remotes: list[Remote]
    state: str = "dynamic"
    updated: float = 0.0
    used: float = 0.0

    @property
    def is_group(self) -> bool:
        """The default entry and multicast MACs: flood lists that may hold several remotes."""
        return self.mac == ZERO_MAC or is_multicast_mac(self.mac)


def _copy(e: FdbEntry) -> FdbEntry:
    return FdbEntry(e.mac, list(e.remotes), e.state, e.updated, e.used)


def _order(e: FdbEntry) -> tuple[bool, bytes]:
    """The default (all-zeros) entry first, then by MAC, as ``bridge fdb show`` lists them."""
    return (e.mac != ZERO_MAC, e.mac)


def _expired(e: FdbEntry, ageing: float, now: float) -> bool:
    return e.state == "dynamic" and now - e.updated >= ageing


class DictStore:
    """The pure-Python storage of one FDB: entries in a dict keyed by MAC.

    A store holds entries and runs the three rules the data path needs on every packet:
    ``lookup`` (vxlan_find_mac), ``learn`` (vxlan_snoop) and ``expire`` (vxlan_cleanup).  The
    fast path runs the same three in C over its own table (``vxtun._fastpath.CFdb``, the same
    interface), and the differential tests hold the two equal.  The administrative rules
    (``bridge fdb add|append|replace|del``) are not here: they exist once, in ``Fdb`` below,
    over either store.  ``get`` and ``entries`` return copies, as the C table must.
    """

    def __init__(self, ageing: float = 300.0, maxaddress: int = 0, learning: bool = True):
        self.ageing = float(ageing)
        self.maxaddress = int(maxaddress)
        self.learning = bool(learning)
        self._entries: dict[bytes, FdbEntry] = {}
        self._reaped: list[FdbEntry] = []

    # --- the data path -------------------------------------------------------------------

    def lookup(self, mac: bytes, now: float) -> list[Remote] | None:
        """Remotes for ``mac``, or None.  An expired dynamic entry counts as absent (and goes)."""
        e = self._entries.get(mac)
        if e is None:
            return None
        if _expired(e, self.ageing, now):
            self._reaped.append(self._entries.pop(mac))
            return None
        e.used = now
        return e.remotes

    def learn(self, mac: bytes, ip: str, now: float) -> int:
        """vxlan_snoop(): bind ``mac`` to the VTEP at ``ip``.  Returns a LEARN_* code.

        With learning off the kernel does not snoop at all: nothing is refreshed or pinned.
        """
        if not self.learning:
            return LEARN_OFF
        e = self._entries.get(mac)
        if e is not None and _expired(e, self.ageing, now):
            self._reaped.append(self._entries.pop(mac))
            e = None
        if e is not None:
            first = e.remotes[0] if e.remotes else None
            if first is not None and first.ip == ip:
                if e.state == "dynamic":
                    e.updated = now
                return LEARN_REFRESH
            if e.state != "dynamic":
                return LEARN_PINNED
            e.remotes = ([replace(first, ip=ip)] + e.remotes[1:]) if first else [Remote(ip)]
            e.updated = now
            return LEARN_MOVED
        if self.maxaddress and len(self._entries) >= self.maxaddress:
            return LEARN_FULL
        self._entries[mac] = FdbEntry(mac, [Remote(ip)], "dynamic", now, now)
        return LEARN_NEW

    def expire(self, now: float) -> list[FdbEntry]:
        """vxlan_cleanup(): remove dynamic entries not refreshed for ``ageing`` seconds."""
        gone = [e for e in self._entries.values() if _expired(e, self.ageing, now)]
        for e in gone:
            del self._entries[e.mac]
        return self.reaped() + gone

    def reaped(self) -> list[FdbEntry]:
        """The expired entries ``lookup`` and ``learn`` removed since the last call (and the
        last ``expire``), oldest first."""
        gone, self._reaped = self._reaped, []
        return gone

    # --- raw storage, for the administrative rules ---------------------------------------

    def get(self, mac: bytes) -> FdbEntry | None:
        e = self._entries.get(mac)
        return None if e is None else _copy(e)

    def put(self, entry: FdbEntry) -> None:
        self._entries[entry.mac] = _copy(entry)

    def remove(self, mac: bytes) -> FdbEntry | None:
        return self._entries.pop(mac, None)

    def flush(self, dynamic_only: bool = False) -> None:
        if dynamic_only:
            self._entries = {m: e for m, e in self._entries.items() if e.state != "dynamic"}
        else:
            self._entries.clear()

    def entries(self) -> list[FdbEntry]:
        return [_copy(e) for e in self._entries.values()]

    def page(self, cursor, n: int) -> tuple[list[FdbEntry], object]:
        """A listing's next batch (CFdb.page has the same contract): up to ``n`` entries from
        ``cursor`` (0 to start) and the cursor to go on from, None at the end.  The first call
        takes the keys (one C-speed copy); each batch then reads the entries still there."""
        keys, i = (list(self._entries), 0) if cursor == 0 else cursor
        out = [_copy(e) for k in keys[i:i + n] if (e := self._entries.get(k)) is not None]
        i += n
        return out, ((keys, i) if i < len(keys) else None)

    def __len__(self) -> int:
        return len(self._entries)


class Fdb:
    """One VTEP's forwarding database: the kernel's rules over a store.

    The store (``DictStore``, or the fast path's ``CFdb`` that its C threads share) keeps the
    entries and runs the data-path rules; this class adds the administrative ones, once for
    both.  No I/O, no clock: calls that need time get ``now``.  An administrative change reads
    the entry, decides, and writes it back whole, so a refused request changes nothing.
    """

    def __init__(self, ageing: float = 300.0, maxaddress: int = 0, learning: bool = True,
                 store=None):
        self.store = store if store is not None else DictStore(ageing, maxaddress, learning)
        self._reaped: list[FdbEntry] = []       # expired entries a change removed (_current)

    @property
    def ageing(self) -> float:
        return self.store.ageing

    @property
    def maxaddress(self) -> int:
        return self.store.maxaddress

    @property
    def learning(self) -> bool:
        return self.store.learning

    # --- the data path -------------------------------------------------------------------

    def lookup(self, mac: bytes, now: float) -> list[Remote] | None:
        return self.store.lookup(mac, now)

    def learn(self, mac: bytes, ip: str, now: float) -> int:
        return self.store.learn(mac, ip, now)

    def expire(self, now: float) -> list[FdbEntry]:
        """The dynamic entries aged out, in ``entries()`` order: each store finds them in its
        own order, and the FdbChange events that report them must not depend on that."""
        return sorted(self.reaped() + self.store.expire(now), key=_order)

    def reaped(self) -> list[FdbEntry]:
        """The expired entries removed on the way (by a lookup, a learn or a change) since
        the last call or ``expire``: each must still be reported deleted."""
        gone, self._reaped = self._reaped, []
        return self.store.reaped() + gone

    # --- the control path (bridge fdb add/append/replace/del) -----------------------------

    def _current(self, mac: bytes, now: float) -> FdbEntry | None:
        """The entry of ``mac`` as a change sees it: an expired dynamic entry is gone."""
        e = self.store.get(mac)
        if e is not None and _expired(e, self.store.ageing, now):
            self.store.remove(mac)
            self._reaped.append(e)
            return None
        return e

    def add(self, mac: bytes, remote: Remote, state: str = "permanent", now: float = 0.0,
            op: str = "add") -> FdbEntry:
        """Apply ``bridge fdb {add,append,replace}``; if refused, raise FdbError, change nothing."""
        if state not in STATES:
            raise FdbError(f"unknown fdb state {state!r}")
        if op not in ("add", "append", "replace"):
            raise FdbError(f"unknown fdb operation {op!r}")
        group = mac == ZERO_MAC or is_multicast_mac(mac)
        e = self._current(mac, now)
        if e is None:
            if op == "replace" and group:
                raise FdbError(f"cannot replace {mac_to_str(mac)}: the all-zeros and multicast "
                               "entries are flood lists; use append and del")
            e = FdbEntry(mac, [remote], state, now, now)
        elif op == "add":
            raise FdbError(f"fdb entry {mac_to_str(mac)} already exists (use replace, or append "
                           "for the all-zeros or a multicast MAC)")
        elif op == "replace":
            if group:
                raise FdbError(f"cannot replace {mac_to_str(mac)}: the all-zeros and multicast "
                               "entries are flood lists; use append and del")
            e.remotes = [remote]
            e.state = state
            e.updated = now
        elif not group:
            if e.remotes != [remote]:
                raise FdbError(f"cannot append to {mac_to_str(mac)}: only the all-zeros or a "
                               "multicast MAC can have several destinations; use replace")
            e.state = state
        else:
            # vxlan_fdb_update_existing() sets the state first, and vxlan_fdb_append() treats
            # a destination that is already listed as success: "append" is idempotent.
            e.state = state
            if remote not in e.remotes:
                e.remotes.append(remote)
        self.store.put(e)
        return e

    def delete(self, mac: bytes, dst: str | None = None, port: int = 0,
               vni: int | None = None) -> FdbEntry:
        """``bridge fdb del``: one remote when ``dst`` is given, else the whole entry.  Returns
        the entry as it is left, or as it was when it is gone."""
        e = self.store.get(mac)
        if e is None:
            raise FdbError(f"fdb entry {mac_to_str(mac)} does not exist")
        if dst is None:
            self.store.remove(mac)
            return e
        keep = [r for r in e.remotes
                if not (r.ip == dst and (not port or r.port == port)
                        and (vni is None or r.vni == vni))]
        if len(keep) == len(e.remotes):
            raise FdbError(f"fdb entry {mac_to_str(mac)} has no destination {dst}")
        if keep:
            e.remotes = keep
            self.store.put(e)
        else:
            self.store.remove(mac)
        return e

    def flush(self, dynamic_only: bool = False) -> None:
        self.store.flush(dynamic_only)

    # --- inspection --------------------------------------------------------------------

    def get(self, mac: bytes) -> FdbEntry | None:
        return self.store.get(mac)

    def entries(self) -> list[FdbEntry]:
        """All entries, the default (all-zeros) one first, then by MAC."""
        return sorted(self.store.entries(), key=_order)

    def pages(self, n: int):
        """All entries in batches of at most ``n``, for a listing that must not hold up the
        data path (vxtun fdb show of a large table): the default entry first, then in the
        store's order, each batch read when the caller asks for it (``store.page``)."""
        default = self.store.get(ZERO_MAC)
        head = [] if default is None else [default]
        cursor: object = 0
        while cursor is not None:
            batch, cursor = self.store.page(cursor, n)
            batch = head + [e for e in batch if e.mac != ZERO_MAC]
            head = []
            if batch:
                yield batch

    def __len__(self) -> int:
        return len(self.store)

