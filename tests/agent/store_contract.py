"""The semantics every store must have (vxtun/agent/store.py), checked the same way on the
file store (tests/agent/test_store_contract.py) and on a real etcd (tests/agent/netns/).

Run as ``python3 store_contract.py URL`` it checks the store at URL and exits 0.
"""
from __future__ import annotations

import sys
import time

from vxtun.agent.store import Compacted, LeaseExpired, Store, open_store


def check(store: Store, prefix: str = "/contract/") -> None:
    r0, kvs = store.snapshot(prefix)
    assert kvs == [], kvs
    r1 = store.put(prefix + "a", "1")
    r2 = store.put(prefix + "b", "2")
    store.put("/elsewhere/c", "3")
    assert r0 < r1 < r2
    rev, kvs = store.snapshot(prefix)
    assert rev > r2 and [(kv.key, kv.value, kv.mod_revision) for kv in kvs] == [
        (prefix + "a", "1", r1), (prefix + "b", "2", r2)], kvs
    # A watch from a past revision replays from there, in order, then goes on live.
    w = store.watch(prefix, r2)
    r3 = store.delete(prefix + "a")
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        got += w.next(0.5) or []
    assert [(c.kind, c.key, c.revision) for c in got] == [
        ("put", prefix + "b", r2), ("delete", prefix + "a", r3)], got
    assert got[0].value == "2"
    # Leases: kept alive they hold; left alone they expire, and their keys go with them.
    lease = store.grant(2)
    rl = store.put(prefix + "leased", "x", lease)
    assert store.keepalive(lease) >= 1
    time.sleep(1.5)
    assert store.keepalive(lease) >= 1
    time.sleep(1.5)
    assert prefix + "leased" in [kv.key for kv in store.snapshot(prefix)[1]]
    time.sleep(2.5)                       # more than the TTL after the last keep-alive
    assert prefix + "leased" not in [kv.key for kv in store.snapshot(prefix)[1]]
    try:
        store.keepalive(lease)
        raise AssertionError("keep-alive of an expired lease")
    except LeaseExpired:
        pass
    try:
        store.put(prefix + "late", "x", lease)
        raise AssertionError("put under an expired lease")
    except LeaseExpired:
        pass
    deletes = []
    deadline = time.monotonic() + 5
    while not deletes and time.monotonic() < deadline:
        deletes = [c for c in w.next(0.5) or [] if c.kind == "delete"]
    assert deletes and deletes[0].key == prefix + "leased" and deletes[0].revision > rl
    w.close()
    # Revoking deletes the keys at once.
    lease = store.grant(30)
    store.put(prefix + "revoked", "x", lease)
    store.revoke(lease)
    assert prefix + "revoked" not in [kv.key for kv in store.snapshot(prefix)[1]]
    # After a compaction the history below it is gone: a watch from there says so.
    rev, _ = store.snapshot(prefix)
    store.compact(rev)
    try:
        store.watch(prefix, r1).next(2)
        raise AssertionError("a watch from a compacted revision")
    except Compacted as e:
        assert e.compact_revision >= rev, e.compact_revision


if __name__ == "__main__":
    check(open_store(sys.argv[1], *(sys.argv[2:5] if len(sys.argv) > 2 else ())))
    print("ok")
