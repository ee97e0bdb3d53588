"""Listings of large tables (vxtun/dataplane/server.py, ``Channel.stream`` in
vxtun/io/jsonlines.py, ``CFdb.page`` / ``DictStore.page``): ``fdb show`` and ``neigh show`` of
100,000 entries come in pages paced by the reader, on both stores, and the loop makes at most
one page per turn.  No root: the server is an abstract socket of this test.
"""
from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time

import pytest

from vxtun import _fastpath
from vxtun.core import Vtep, VtepConfig
from vxtun.dataplane import commands
from vxtun.dataplane.fanout import Fanout
from vxtun.dataplane.lifecycle import Port
from vxtun.dataplane.loop import Loop
from vxtun.dataplane.server import ControlServer
from vxtun.fdb import Fdb, FdbEntry, Remote
from vxtun.fdb.table import DictStore
from vxtun.io import control, jsonlines
from vxtun.wire.ether import mac_to_str

from stubs import StubNode

N = 100_000
_names = itertools.count()


def _mac(i: int) -> bytes:
    return bytes([2, 0]) + i.to_bytes(4, "big")


def _fill(fdb: Fdb, n: int) -> None:
    fdb.store.put(FdbEntry(b"\0" * 6, [Remote("192.0.2.1"), Remote("192.0.2.2")], "permanent"))
    for i in range(1, n):
        fdb.store.put(FdbEntry(_mac(i), [Remote("192.0.2.3")], "dynamic", 1e9, 1e9))


@pytest.fixture(params=["pure", "fast"])
def big(request, monkeypatch):
    """A ControlServer for one VTEP whose FDB holds N entries (the default one included) and
    whose neighbour table holds N // 10."""
    monkeypatch.setattr(control, "peer_is_root", lambda conn: True)
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 0)
    dev = f"l{os.getpid() % 100000}x{next(_names)}"
    cfg = VtepConfig(vni=42, name=dev, local="192.0.2.9", remote="192.0.2.1", proxy=True,
                     reachable_time=1e9)
    store = DictStore() if request.param == "pure" else _fastpath.CFdb()
    fdb = Fdb(store=store)
    vtep = Vtep(cfg, fdb=fdb)
    _fill(fdb, N)
    for i in range(N // 10):
        vtep.neigh.add(f"10.20.{i >> 8}.{i & 255}", _mac(i + 1), "reachable", time.monotonic())
    loop = Loop()
    fanout = Fanout()
    server = ControlServer(loop, StubNode(fanout), fanout)
    port = Port(cfg, vtep, -1, None, control.listen(dev))
    server.listen(port)
    yield server, port, loop
    server.close()
    port.listener.close()
    loop.close()


def turn(loop: Loop) -> int:
    """One turn of the loop: the callbacks of what is ready now; how many ran."""
    ran = 0
    for key, _ in loop.sel.select(0.01):
        if loop.sel.get_map().get(key.fd) is key:
            key.data()
            ran += 1
    return ran


def serve_while(loop: Loop, fn):
    """Run ``fn`` (a blocking client) in a thread while this thread turns the loop."""
    out: dict = {}

    def client():
        try:
            out["result"] = fn()
        except BaseException as e:          # handed to the test below
            out["error"] = e
    t = threading.Thread(target=client)
    t.start()
    deadline = time.monotonic() + 120
    while t.is_alive() and time.monotonic() < deadline:
        turn(loop)
    t.join(5)
    assert not t.is_alive(), "the client did not finish"
    if "error" in out:
        raise out["error"]
    return out["result"]


def read_until(loop: Loop, s: socket.socket, done) -> list[dict]:
    """The lines ``s`` reads while the loop turns, until ``done(lines)``; closes ``s``."""
    s.settimeout(0.05)
    lines: list[dict] = []
    buf = b""
    deadline = time.monotonic() + 120
    while not done(lines):
        assert time.monotonic() < deadline, "the answers did not all come"
        turn(loop)
        try:
            buf += s.recv(1 << 20)
        except TimeoutError:
            continue
        *whole, buf = buf.split(b"\n")
        lines += [json.loads(x) for x in whole]
    s.close()
    return lines


def test_fdb_show_of_a_large_table_is_whole(big):
    server, port, loop = big
    dev = port.config.name
    # as the CLI and the API read it: one page after the other, none larger than a page
    pages = serve_while(loop, lambda: list(control.Client(dev).pages(
        {"cmd": "fdb", "op": "show"})))
    assert max(len(p) for p in pages) <= commands.PAGE + 1 and len(pages) >= N // commands.PAGE
    rows = [r for p in pages for r in p]
    assert len(rows) == N
    assert rows[0]["mac"] == "00:00:00:00:00:00"
    assert [r["dst"] for r in rows[0]["remotes"]] == ["192.0.2.1", "192.0.2.2"]
    assert sorted(r["mac"] for r in rows[1:]) == sorted(mac_to_str(_mac(i)) for i in range(1, N))


def test_neigh_show_of_a_large_table_is_whole(big):
    server, port, loop = big
    rows = serve_while(loop, lambda: control.call(port.config.name,
                                                  {"cmd": "neigh", "op": "show"}))
    assert len(rows) == N // 10
    assert len({r["dst"] for r in rows}) == N // 10
    assert all(r["state"] == ["REACHABLE"] for r in rows), rows[0]


def test_a_page_is_made_only_when_the_reader_has_taken_the_last(big):
    """A client that asks and does not read gets a page or two queued, not the table: the
    server holds at most one page beyond what the socket buffers hold, and each turn of the
    loop makes at most one page."""
    server, port, loop = big
    made = []
    real = port.vtep.fdb_show_pages

    def counted(*args):
        for batch in real(*args):
            made.append(len(batch))
            yield batch
    port.vtep.fdb_show_pages = counted
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(control.address(port.config.name))
    s.sendall(jsonlines.encode({"cmd": "fdb", "op": "show"}))
    for _ in range(200):
        before = len(made)
        turn(loop)
        # one page per turn (two on the first: a page is sent once the next is known, so
        # that the last one can say it is the last)
        assert len(made) - before <= (2 if before == 0 else 1)
    (chan,) = server.clients
    sndbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) + \
        chan.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    # what went out fits the socket buffers, plus one page waiting in ours
    assert len(made) * commands.PAGE * 60 <= 4 * sndbuf + jsonlines.OUT_MAX
    assert len(made) < N // commands.PAGE // 4
    assert chan.backlog <= commands.PAGE * 200
    # now read it all, while the loop turns
    lines = read_until(loop, s, lambda lines: lines and "more" not in lines[-1])
    assert sum(len(x.get("more", x.get("result", []))) for x in lines) == N


def test_requests_sent_during_a_listing_are_answered_after_it_in_order(big):
    server, port, loop = big
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(control.address(port.config.name))
    s.sendall(jsonlines.encode({"cmd": "fdb", "op": "show"})
              + jsonlines.encode({"cmd": "fdb", "op": "show", "count": True})
              + jsonlines.encode({"cmd": "fdb", "op": "add", "mac": "02:ff:00:00:00:01",
                                  "dst": "192.0.2.7"})
              + jsonlines.encode({"cmd": "fdb", "op": "show", "count": True}))
    lines = read_until(loop, s, lambda lines: len([x for x in lines if "more" not in x]) == 4)
    answers = [x for x in lines if "more" not in x]
    assert [a.get("result") for a in answers[1:]] == [{"count": N}, None, {"count": N + 1}]
    assert sum(len(x.get("more", [])) for x in lines) + len(answers[0]["result"]) == N


def test_count_and_stats_give_the_sizes_without_listing(big):
    server, port, loop = big
    dev = port.config.name
    assert serve_while(loop, lambda: control.call(
        dev, {"cmd": "fdb", "op": "show", "count": True})) == {"count": N}
    assert serve_while(loop, lambda: control.call(
        dev, {"cmd": "neigh", "op": "show", "count": True})) == {"count": N // 10}


@pytest.mark.parametrize("kind", ["pure", "fast"])
def test_a_store_hands_out_every_entry_once_in_batches_while_entries_are_added(kind):
    store = DictStore() if kind == "pure" else _fastpath.CFdb()
    fdb = Fdb(store=store)
    _fill(fdb, 5000)
    seen: list[bytes] = []
    for k, batch in enumerate(fdb.pages(300)):
        assert len(batch) <= 301         # the default entry comes with the first batch
        seen += [e.mac for e in batch]
        store.put(FdbEntry(bytes([2, 1, 0, 0]) + k.to_bytes(2, "big"), [Remote("192.0.2.5")],
                           "static"))
    old = [e for e in seen if e[:2] != b"\x02\x01"]
    assert old[0] == b"\0" * 6
    assert sorted(old) == sorted([b"\0" * 6] + [_mac(i) for i in range(1, 5000)])
    assert len(seen) == len(set(seen))


def test_a_listing_that_fails_half_way_ends_with_an_error_and_the_connection_lives(big):
    server, port, loop = big
    real = port.vtep.fdb_show_pages

    def broken(*args):
        pages = real(*args)
        yield next(pages)
        yield next(pages)
        raise ValueError("the table broke")
    port.vtep.fdb_show_pages = broken
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(control.address(port.config.name))
    s.sendall(jsonlines.encode({"cmd": "fdb", "op": "show"})
              + jsonlines.encode({"cmd": "fdb", "op": "show", "count": True}))
    lines = read_until(loop, s, lambda lines: len([x for x in lines if "more" not in x]) == 2)
    (page,) = lines[:-2]     # the first page; the second waited to learn if it was the last
    assert 0 < len(page["more"]) <= commands.PAGE + 1
    assert lines[-2:] == [{"ok": False, "error": "bad request: the table broke"},
                          {"ok": True, "result": {"count": N}}]
