"""The embedded store: etcd's semantics (``store.py``) in one SQLite file.

Agents of one machine (the namespaces of a lab, the tests) share the file; no server runs.
What etcd's server does on its own clock, expiring leases, is done here by whichever client
touches the store next: every operation and every watch poll first deletes the keys of leases
whose deadline has passed, each deletion a revision of its own as in etcd (lessor.revokeExpired
then a DeleteRange per key).  So a lease expires within its TTL plus one poll interval as long
as any agent is running; a store no process touches needs no expiring.

Tables: ``meta`` (the current and the compacted revision), ``kv`` (the keys), ``log`` (one row
per change, the history watches read; ``compact`` deletes rows below a revision), ``lease``.
Each operation is one ``BEGIN IMMEDIATE`` transaction, so concurrent agents serialize.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time

from .store import Change, Compacted, KeyValue, LeaseExpired, Store, StoreError, Watch

DEFAULT_PATH = "/run/vxtun/agent-store.sqlite"
POLL = 0.05          # seconds between two looks at the log by a watch

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 0),
                                 revision INTEGER NOT NULL, compacted INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES (0, 1, 0);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,
                               mod_revision INTEGER NOT NULL, lease INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (revision INTEGER PRIMARY KEY, kind TEXT NOT NULL,
                                key TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS lease (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL,
                                  deadline REAL NOT NULL);
"""


class FileStore(Store):
    def __init__(self, path: str, clock=time.time) -> None:
        self.path = path
        self.url = f"sqlite:{path}"
        self.clock = clock
        self._lock = threading.RLock()
        d = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(d, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the store {path}: {e}") from e

    # --- one transaction per operation ----------------------------------------------------

    def _txn(self, fn):
        with self._lock:           # one connection, used by the agent loop and its lease keeper
            return self._txn_locked(fn)

    def _txn_locked(self, fn):
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self._expire()
                out = fn()
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return out
        except sqlite3.Error as e:
            raise StoreError(f"store {self.path}: {e}") from e

    def _revision(self) -> int:
        return self.db.execute("SELECT revision FROM meta").fetchone()[0]

    def _change(self, kind: str, key: str, value: str = "", lease: int = 0) -> int:
        rev = self._revision() + 1
        self.db.execute("UPDATE meta SET revision = ?", (rev,))
        self.db.execute("INSERT INTO log VALUES (?, ?, ?, ?)", (rev, kind, key, value))
        if kind == "put":
            self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)",
                            (key, value, rev, lease))
        else:
            self.db.execute("DELETE FROM kv WHERE key = ?", (key,))
        return rev

    def _expire(self) -> None:
        now = self.clock()
        for (lease,) in self.db.execute("SELECT id FROM lease WHERE deadline <= ?",
                                        (now,)).fetchall():
            self._drop_lease(lease)

    def _drop_lease(self, lease: int) -> None:
        for (key,) in self.db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key",
                                      (lease,)).fetchall():
            self._change("delete", key)
        self.db.execute("DELETE FROM lease WHERE id = ?", (lease,))

    # --- Store ------------------------------------------------------------------------------

    def snapshot(self, prefix: str) -> tuple[int, list[KeyValue]]:
        def read():
            rows = self.db.execute(
                "SELECT key, value, mod_revision, lease FROM kv "
                "WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)).fetchall()
            return self._revision(), [KeyValue(*r) for r in rows]
        return self._txn(read)

    def put(self, key: str, value: str, lease: int = 0) -> int:
        def write():
            if lease and not self.db.execute("SELECT 1 FROM lease WHERE id = ?",
                                             (lease,)).fetchone():
                raise LeaseExpired(f"lease {lease:x} not found")
            return self._change("put", key, value, lease)
        return self._txn(write)

    def delete(self, key: str) -> int:
        def write():
            if self.db.execute("SELECT 1 FROM kv WHERE key = ?", (key,)).fetchone():
                return self._change("delete", key)
            return self._revision()
        return self._txn(write)

    def grant(self, ttl: int) -> int:
        def write():
            lease = int.from_bytes(os.urandom(7), "big") or 1
            self.db.execute("INSERT INTO lease VALUES (?, ?, ?)",
                            (lease, ttl, self.clock() + ttl))
            return lease
        return self._txn(write)

    def keepalive(self, lease: int) -> int:
        def write():
            row = self.db.execute("SELECT ttl FROM lease WHERE id = ?", (lease,)).fetchone()
            if not row:
                raise LeaseExpired(f"lease {lease:x} expired")
            self.db.execute("UPDATE lease SET deadline = ? WHERE id = ?",
                            (self.clock() + row[0], lease))
            return row[0]
        return self._txn(write)

    def revoke(self, lease: int) -> None:
        self._txn(lambda: self._drop_lease(lease))

    def compact(self, revision: int) -> None:
        def write():
            self.db.execute("DELETE FROM log WHERE revision < ?", (revision,))
            self.db.execute("UPDATE meta SET compacted = max(compacted, ?)", (revision,))
        self._txn(write)

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _FileWatch(self, prefix, start_revision)

    def changes_since(self, prefix: str, start: int) -> list[Change]:
        """The log from ``start`` on (expiring leases first); Compacted if it is gone."""
        def read():
            compacted = self.db.execute("SELECT compacted FROM meta").fetchone()[0]
            if start < compacted:
                raise Compacted(compacted)
            rows = self.db.execute(
                "SELECT kind, key, value, revision FROM log WHERE revision >= ? "
                "AND substr(key, 1, ?) = ? ORDER BY revision", (start, len(prefix), prefix))
            return [Change(*r) for r in rows.fetchall()]
        return self._txn(read)

    def close(self) -> None:
        self.db.close()


class _FileWatch(Watch):
    def __init__(self, store: FileStore, prefix: str, start: int) -> None:
        self.store = store
        self.prefix = prefix
        self.next_revision = start

    def next(self, timeout: float) -> list[Change] | None:
        deadline = time.monotonic() + timeout
        while True:
            batch = self.store.changes_since(self.prefix, self.next_revision)
            if batch:
                self.next_revision = batch[-1].revision + 1
                return batch
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(POLL, left))

    def close(self) -> None:
        pass
