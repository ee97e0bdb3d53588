"""The neighbour table that the ARP/ND proxy answers from (the kernel's arp_tbl/nd_tbl entries
of the vxlan device, as ``ip neigh ... dev vxlan0`` fills them).

States, as ``ip neigh`` names them: ``permanent``, ``noarp``, ``reachable`` and ``stale``.
The rules, each from the kernel function named:

* The proxy answers only from an entry in NUD_CONNECTED (``permanent``, ``noarp``,
  ``reachable``).  An entry in any other state is *not* answered from, and it does not raise an
  L3 miss either: arp_reduce()/neigh_reduce() raise the miss only when neigh_lookup() finds no
  entry at all.  So ``lookup()`` returns an entry in any state and the caller checks
  ``connected``.
* A ``reachable`` entry turns ``stale`` once ``reachable_time`` has passed since it was last
  confirmed (added or replaced): neigh_timer_handler().  Default 30 s, the kernel's
  ``base_reachable_time_ms`` (30000).  The kernel draws the actual time at random between 0.5x
  and 1.5x of it; vxtun does not, so that expiry is predictable.  (A kernel entry that is
  confirmed and expires within ``delay_first_probe_time``, 5 s, goes through DELAY/PROBE to
  FAILED instead, because the kernel probes it; vxtun has no IP stack on the VTEP and never
  probes, so its entries always go to ``stale``.)
* A ``stale`` entry is garbage-collected ``gc_stale_time`` after it was last confirmed
  (neigh_periodic_work(), default 60 s, the kernel's ``gc_stale_time``).  Only then does the
  next request for that IP raise an L3 miss again, so a controller that answers misses with
  ``nud reachable`` sees the miss again at the latest ``max(reachable_time, gc_stale_time)``
  after its answer.  The kernel runs that collection only while its neighbour table (all
  namespaces together) holds at least ``gc_thresh1`` (128) entries; on a quieter host a
  kernel VTEP keeps the stale entry, and drops requests for that IP without a miss, until
  someone deletes it.  vxtun always collects, as a busy kernel host does.
* ``permanent`` and ``noarp`` entries never expire.  (The kernel's collector would take a
  ``noarp`` entry too once the table is large; vxtun keeps it, like ``permanent``.)
* ``ip neigh add`` refuses an existing entry (EEXIST), ``change`` a missing one (ENOENT),
  ``replace`` does either.  A change is notified only when the state or the lladdr changed
  (__neigh_update); a refresh with the same values only restarts the reachable time.
* ``ip neigh flush`` removes every entry except ``permanent`` and ``noarp`` ones;
  ``ip neigh show`` lists every entry except ``noarp`` ones (iproute2's default state filter).

The rules are stated once, here, over a *store* that only holds entries (the pattern of
vxtun/fdb/table.py): ``DictNeighStore`` for the pure dataplane, ``vxtun._fastpath.CNeigh`` (a C
table the fast path's TX thread answers ARP/ND from, vxtun/fastpath/neigh.pyx) for the fast
one.  A store hands out copies, so every change the rules make is written back with ``put``.
The C lookup ages an entry *as if* ``_age`` had run (same times, read from the store), and
the next tick's ``expire`` makes the change and reports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import NeighError
from ..wire.addr import canonical_ip, ip_sort_key
from ..wire.ether import mac_to_str

NUD_STATES = ("permanent", "noarp", "reachable", "stale")
NUD_CONNECTED = ("permanent", "noarp", "reachable")

REACHABLE_TIME = 30.0           # base_reachable_time_ms / 1000
GC_STALE_TIME = 60.0            # gc_stale_time


@dataclass
class NeighEntry:
    ip: str
    lladdr: bytes
    state: str
    updated: float              # last confirmation: the kernel's ``confirmed``

    @property
    def connected(self) -> bool:
        """NUD_CONNECTED: the proxy may answer from this entry."""
        return self.state in NUD_CONNECTED

    def to_json(self) -> dict:
        """As ``ip -j neigh show dev DEV`` prints one entry."""
        return {"dst": self.ip, "lladdr": mac_to_str(self.lladdr), "state": [self.state.upper()]}


def normalize(ip: str) -> str:
    """The table's key for ``ip``: its canonical text (NeighError if it is no address)."""
    return canonical_ip(ip, "IP", NeighError)


def _copy(e: NeighEntry) -> NeighEntry:
    return NeighEntry(e.ip, e.lladdr, e.state, e.updated)


class DictNeighStore:
    """The pure-Python storage of a neighbour table: copies of entries by canonical IP.  The
    C store (``vxtun._fastpath.CNeigh``) has the same methods and attributes."""

    def __init__(self, reachable_time: float = REACHABLE_TIME,
                 gc_stale_time: float = GC_STALE_TIME) -> None:
        self.reachable_time = float(reachable_time)
        self.gc_stale_time = float(gc_stale_time)
        self._entries: dict[str, NeighEntry] = {}

    def get(self, ip: str) -> NeighEntry | None:
        e = self._entries.get(ip)
        return None if e is None else _copy(e)

    def put(self, entry: NeighEntry) -> None:
        self._entries[entry.ip] = _copy(entry)

    def remove(self, ip: str) -> NeighEntry | None:
        return self._entries.pop(ip, None)

    def entries(self) -> list[NeighEntry]:
        return [_copy(e) for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)


class NeighTable:
    """One VTEP's neighbour table.  No clock: every call that needs time gets ``now``.

    Changes that happen by themselves (``reachable`` -> ``stale``, collection of ``stale``
    entries) are queued and handed out by ``changes()`` as ``("new"|"del", entry)`` pairs, so
    the core can report them as ``ip monitor`` does.
    """

    def __init__(self, reachable_time: float = REACHABLE_TIME,
                 gc_stale_time: float = GC_STALE_TIME, store=None) -> None:
        self.store = store if store is not None else DictNeighStore()
        # the store ages by the same times (the C lookup reads them there)
        self.store.reachable_time = float(reachable_time)
        self.store.gc_stale_time = float(gc_stale_time)
        self._changes: list[tuple[str, NeighEntry]] = []

    @property
    def reachable_time(self) -> float:
        return self.store.reachable_time

    @property
    def gc_stale_time(self) -> float:
        return self.store.gc_stale_time

    # --- ageing ------------------------------------------------------------------------

    def _age(self, e: NeighEntry, now: float) -> bool:
        """Age one entry (a copy from the store; a change is written back); False when it was
        collected (and is gone from the table)."""
        if e.state == "reachable" and now - e.updated >= self.reachable_time:
            e.state = "stale"
            self.store.put(e)
            self._changes.append(("new", e))
        if e.state == "stale" and now - e.updated >= self.gc_stale_time:
            self.store.remove(e.ip)
            self._changes.append(("del", e))
            return False
        return True

    def changes(self) -> list[tuple[str, NeighEntry]]:
        """The changes ageing made since the last call, oldest first."""
        out, self._changes = self._changes, []
        return out

    def expire(self, now: float) -> None:
        """Age every entry (neigh_timer_handler and neigh_periodic_work, every tick)."""
        for e in self.store.entries():
            self._age(e, now)

    # --- the data path -----------------------------------------------------------------

    def lookup(self, ip: str, now: float) -> NeighEntry | None:
        """neigh_lookup(): the entry for ``ip`` in whatever state, or None.

        ``ip`` must be in canonical text form (as the proxy's parsers produce it).
        """
        e = self.store.get(ip)
        if e is None or not self._age(e, now):
            return None
        return e

    # --- the control path (ip neigh add/replace/change/del/flush) ------------------------

    def add(self, ip: str, lladdr: bytes, state: str = "permanent", now: float = 0.0,
            op: str = "add") -> tuple[NeighEntry, bool]:
        """Apply ``ip neigh {add,replace,change}``.  Returns (entry, changed): ``changed`` is
        False when an existing entry got the same state and lladdr (only its timer restarts).
        Raises NeighError and changes nothing if refused."""
        if state not in NUD_STATES:
            raise NeighError(f"unknown nud state {state!r} (expected one of "
                             f"{', '.join(NUD_STATES)})")
        if op not in ("add", "replace", "change"):
            raise NeighError(f"unknown neigh operation {op!r}")
        if len(lladdr) != 6:
            raise NeighError("lladdr must be a 6-byte MAC address")
        key = normalize(ip)
        e = self.store.get(key)
        if e is not None and not self._age(e, now):
            e = None
        if op == "add" and e is not None:
            raise NeighError(f"neighbour {key} already exists (RTNETLINK answers: File exists; "
                             "use replace)")
        if op == "change" and e is None:
            raise NeighError(f"neighbour {key} does not exist")
        if e is None:
            e = NeighEntry(key, bytes(lladdr), state, now)
            self.store.put(e)
            return e, True
        changed = e.state != state or e.lladdr != lladdr
        e.state = state
        e.lladdr = bytes(lladdr)
        e.updated = now
        self.store.put(e)
        return e, changed

    def delete(self, ip: str) -> NeighEntry:
        key = normalize(ip)
        e = self.store.remove(key)
        if e is None:
            raise NeighError(f"neighbour {key} does not exist")
        return e

    def flush(self, all_states: bool = False, ip: str | None = None) -> list[NeighEntry]:
        """``ip neigh flush [ADDRESS]``: every entry (or the one for ``ip``) but ``permanent``
        and ``noarp`` ones (all of them with ``nud all``).  Returns the removed entries."""
        key = normalize(ip) if ip else None
        gone = [e for e in self.store.entries()
                if (all_states or e.state not in ("permanent", "noarp"))
                and (key is None or e.ip == key)]
        for e in gone:
            self.store.remove(e.ip)
        return gone

    # --- inspection --------------------------------------------------------------------

    def get(self, ip: str) -> NeighEntry | None:
        return self.store.get(normalize(ip))

    def entries(self, now: float | None = None) -> list[NeighEntry]:
        """Every entry (aged to ``now`` when given), IPv4 first, then by address."""
        if now is not None:
            self.expire(now)
        return sorted(self.store.entries(), key=lambda e: ip_sort_key(e.ip))

    def keys(self) -> list[str]:
        """The addresses in the table now (a listing in batches reads them one by one; the
        copy costs what the ageing tick's walk of the store costs)."""
        return [e.ip for e in self.store.entries()]

    def __len__(self) -> int:
        return len(self.store)
