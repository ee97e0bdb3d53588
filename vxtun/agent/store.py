"""The store an agent talks to, in the words of etcd v3: keys, revisions, leases, watches.

Two implementations share this interface and its semantics, so that everything above it (the
agent loop, the reconciler) runs the same code on both:

* ``EtcdStore`` (``etcd.py``): etcd v3 through its JSON gRPC gateway (``/v3/kv/range``,
  ``/v3/watch``, ``/v3/lease/grant``...).
* ``FileStore`` (``filestore.py``): an SQLite file shared by the agents of one machine (all the
  namespaces of a lab), with the same revisions, leases, watches and compaction.

The semantics are etcd's (``etcdserver/api/v3rpc``, ``mvcc``):

* every change (put, delete, a lease's keys deleted on expiry) takes the next *revision*, one
  store-wide counter; a range read answers at one revision, the header revision;
* a key written under a *lease* is deleted when the lease expires (its TTL passes without a
  keep-alive) or is revoked; a keep-alive of an expired lease reports TTL 0 (``LeaseExpired``);
* a *watch* from revision R delivers every change with revision >= R, in order, then live
  ones; if R is below the *compacted* revision the history is gone and the watch is cancelled
  with ``compact_revision`` (``Compacted``): the watcher must read the whole state again;
* an unreachable store raises ``Unreachable``: the caller keeps its last state and retries.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..errors import VxtunError


class StoreError(VxtunError):
    """The store refused a request or could not be reached."""


class Unreachable(StoreError):
    """No answer from the store (connection refused, timed out, no leader)."""


class Compacted(StoreError):
    """A watch asked for history the store has compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted (compact revision {compact_revision})")
        self.compact_revision = compact_revision


class LeaseExpired(StoreError):
    """A keep-alive found the lease gone: its keys are deleted already."""


@dataclass(frozen=True)
class KeyValue:
    """A key as a range read returns it: its value, the revision of its last write, and the
    lease it is attached to (0: none, or not known)."""
    key: str
    value: str
    mod_revision: int
    lease: int = 0


@dataclass(frozen=True)
class Change:
    """One event of a watch: ``put`` (``value`` set) or ``delete`` of ``key`` at ``revision``."""
    kind: str
    key: str
    value: str
    revision: int


class Watch(ABC):
    @abstractmethod
    def next(self, timeout: float) -> list[Change] | None:
        """The next batch of changes, or None after ``timeout`` seconds without one.  Raises
        Compacted or Unreachable; the watch is then over."""

    @abstractmethod
    def close(self) -> None: ...


class Store(ABC):
    url: str = ""

    @abstractmethod
    def snapshot(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` and the revision the answer is at."""

    @abstractmethod
    def put(self, key: str, value: str, lease: int = 0) -> int:
        """Write ``key``; the revision of the write."""

    @abstractmethod
    def delete(self, key: str) -> int: ...

    @abstractmethod
    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds; its id."""

    @abstractmethod
    def keepalive(self, lease: int) -> int:
        """Renew ``lease``; the TTL it now has.  Raises LeaseExpired if it is gone."""

    @abstractmethod
    def revoke(self, lease: int) -> None: ...

    @abstractmethod
    def watch(self, prefix: str, start_revision: int) -> Watch: ...

    @abstractmethod
    def compact(self, revision: int) -> None: ...

    def close(self) -> None:  # noqa: B027 (optional: only stores holding a handle close it)
        """Release the connection or file handle, if the store holds one."""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (clientv3.GetPrefixRangeEnd:
    the prefix with its last byte below 0xff incremented)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def open_store(url: str | None, cacert: str | None = None, cert: str | None = None,
               key: str | None = None) -> Store:
    """``etcd://HOST:PORT[,HOST:PORT...]`` (``etcds://`` or ``--cacert``: TLS), or
    ``sqlite:PATH``; no URL: the embedded file store at its default path."""
    from .filestore import DEFAULT_PATH, FileStore
    if not url:
        return FileStore(DEFAULT_PATH)
    if url.startswith("sqlite:"):
        return FileStore(url[len("sqlite:"):])
    if url.startswith(("etcd://", "etcds://", "http://", "https://")):
        from .etcd import EtcdStore
        return EtcdStore(url, cacert=cacert, cert=cert, key=key)
    raise StoreError(f"unknown store {url!r}: expected etcd://HOST:PORT or sqlite:PATH")
