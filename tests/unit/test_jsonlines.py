"""The control sockets' JSON-lines channel (vxtun/io/jsonlines.py) and the loop-side servers
that use it (vxtun/dataplane/server.py, vxtun/dataplane/owner.py): framing, bounded input and
output, a loop that never blocks on a peer that does not read, and the blocking client mode.
No root: every connection is a socketpair.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from vxtun.cli import output
from vxtun.core import Stats, Vtep, VtepConfig
from vxtun.core.events import L3Miss
from vxtun.dataplane.fanout import Fanout
from vxtun.dataplane.lifecycle import Port
from vxtun.dataplane.loop import Loop
from vxtun.dataplane.owner import Owner
from vxtun.dataplane.server import ControlServer
from vxtun.errors import ControlError
from vxtun.io.jsonlines import MAX_LINE, OUT_MAX, BadLine, Channel

from stubs import OwnerNode, StubNode, read_lines


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def spin(loop: Loop, rounds: int = 5) -> None:
    """Run the loop's callbacks for what is ready, without its signals and timer."""
    for _ in range(rounds):
        for key, _ in loop.sel.select(0.01):
            if loop.sel.get_map().get(key.fd) is key:
                key.data()


# --- framing ---------------------------------------------------------------------------------

def test_lines_arrive_whole_and_bad_lines_are_reported_not_raised(pair):
    ours, theirs = pair
    chan = Channel(ours)
    theirs.sendall(b'{"cmd": "show"}\n[1, 2]\nnot json\n{"cmd": "st')
    got = chan.receive()
    assert got[0] == {"cmd": "show"}
    assert got[1] == BadLine("not a JSON object")
    assert isinstance(got[2], BadLine) and got[2].reason.startswith("not JSON")
    assert len(got) == 3
    theirs.sendall(b'ats"}\n')
    assert chan.receive() == [{"cmd": "stats"}]
    assert chan.receive() == []                  # nothing more yet
    theirs.close()
    assert chan.receive() is None                # end of stream


def test_json_nested_deeper_than_the_parser_can_go_is_a_bad_line(pair):
    ours, theirs = pair
    chan = Channel(ours)
    theirs.sendall(b"[" * 100000 + b"\n" + b'{"cmd": "show"}\n')
    got: list = []
    while len(got) < 2:
        got += chan.receive()
    assert got == [BadLine("not JSON: nested too deeply"), {"cmd": "show"}]


def test_a_line_too_long_is_one_error_and_the_next_line_is_read(pair):
    ours, theirs = pair
    chan = Channel(ours, max_line=100)
    theirs.sendall(b"x" * 150)
    assert chan.receive() == [BadLine("line longer than 100 bytes")]
    theirs.sendall(b"y" * 150)
    assert chan.receive() == []                  # the same line: said once
    theirs.sendall(b'zzz\n{"cmd": "show"}\n')
    assert chan.receive() == [{"cmd": "show"}]


# --- never blocking the loop -------------------------------------------------------------------

def test_a_peer_that_does_not_read_its_answers_is_closed_not_waited_for(pair):
    ours, theirs = pair
    chan = Channel(ours)
    closed = []
    chan.on_close = lambda: closed.append(True)
    answer = {"ok": True, "result": "x" * 1000}
    start = time.monotonic()
    sent = 0
    while chan.send(answer):
        sent += 1
        assert sent < 10000
    assert time.monotonic() - start < 2.0
    assert chan.closed and closed == [True]
    assert chan.backlog == 0
    assert not chan.send(answer)                 # a closed channel takes nothing


def test_one_large_answer_is_queued_whole_when_nothing_waits(pair):
    ours, theirs = pair
    chan = Channel(ours)
    big = {"ok": True, "result": ["52:5e:55:58:9a:ab"] * (OUT_MAX // 10)}
    assert chan.send(big)
    assert chan.backlog > 0
    theirs.setblocking(False)
    data = b""
    while chan.backlog or b"\n" not in data:
        try:
            data += theirs.recv(1 << 16)
        except BlockingIOError:
            pass
        chan.flush()
    assert json.loads(data) == big


def test_backlog_is_announced_to_the_loop_and_close_waits_for_it(pair):
    ours, theirs = pair
    chan = Channel(ours)
    waiting = []
    chan.on_backlog = waiting.append
    while not chan.backlog:
        assert chan.send({"ok": True, "result": "y" * 4000})
    assert waiting == [True]
    chan.close_when_flushed()
    assert not chan.closed
    theirs.sendall(b'{"cmd": "show"}\n')
    assert chan.receive() == []                  # closing: no more requests
    theirs.setblocking(False)
    while not chan.closed:
        try:
            theirs.recv(1 << 16)
        except BlockingIOError:
            pass
        chan.flush()
    assert waiting == [True]                     # closed, not "drained and open"


# --- blocking client mode ------------------------------------------------------------------------

def test_client_reads_one_line_at_a_time_with_a_timeout():
    ours, theirs = socket.socketpair()
    chan = Channel(ours, timeout=0.05)
    with pytest.raises(TimeoutError):
        chan.read()
    theirs.sendall(b'{"ok": true, "result": 1}\n{"ok": true, "ev')
    assert chan.read() == {"ok": True, "result": 1}
    with pytest.raises(TimeoutError):
        chan.read(0.01)                          # half a line is not a line
    theirs.sendall(b'ent": 2}\nnope\n')
    assert chan.read(None) == {"ok": True, "event": 2}
    with pytest.raises(ControlError, match="not JSON"):
        chan.read()
    theirs.close()
    assert chan.read() is None
    chan.close()


def test_request_sends_one_line_and_reads_the_answer():
    ours, theirs = socket.socketpair()
    chan = Channel(ours, timeout=2)
    theirs.sendall(b'{"ok": true, "result": null}\n')
    assert chan.request({"cmd": "show"}) == {"ok": True, "result": None}
    assert theirs.recv(100) == b'{"cmd": "show"}\n'
    chan.close()
    theirs.close()


# --- the node's control server -------------------------------------------------------------------

def test_control_server_answers_bad_lines_and_streams_events_without_text(pair):
    ours, theirs = pair
    loop = Loop()
    fanout = Fanout()
    server = ControlServer(loop, StubNode(fanout), fanout)
    cfg = VtepConfig(vni=42, name="vxtun0", proxy=True, l3miss=True)
    port = Port(cfg, Vtep(cfg), -1, None, None)
    chan = server.serve_connection(port, ours)
    theirs.sendall(b'garbage\n{"cmd": "monitor"}\n')
    spin(loop)
    assert read_lines(theirs)[0] == [
        {"ok": False, "error": "bad request: not JSON: Expecting value: line 1 column 1 "
                               "(char 0)"},
        {"ok": True, "result": {"ifname": "vxtun0"}}]
    port.vtep._emit(L3Miss("vxtun0", "10.20.1.3", 42))
    fanout.publish(port)
    assert read_lines(theirs)[0] == [
        {"ok": True, "event": L3Miss("vxtun0", "10.20.1.3", 42).to_json()}]
    # The VTEP goes: its connections close, and its monitors are forgotten.
    server.forget(port)
    assert chan.closed and not server.clients
    port.vtep._emit(L3Miss("vxtun0", "10.20.1.4", 42))
    fanout.publish(port)
    assert fanout.events_lost == 0
    loop.close()


# --- the port owner never blocks on a lease ----------------------------------------------

def test_a_lease_whose_up_does_not_read_is_dropped(pair):
    ours, theirs = pair
    node = OwnerNode()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner = Owner(listener, node)
    chan = owner.serve_connection(ours)
    # An up that keeps asking and never reads: answers pile up, and the owner lets it go.
    theirs.setblocking(False)
    start = time.monotonic()
    for _ in range(20000):
        try:
            theirs.send(b'{"cmd": "poke"}\n' * 64)
        except BlockingIOError:
            pass
        spin(node.loop, 1)
        if chan.closed:
            break
    assert chan.closed and not owner.leases and node.stopped
    assert time.monotonic() - start < 30
    listener.close()
    node.loop.close()


# --- vxtun stats ---------------------------------------------------------------------------------

def test_stats_show_punts_lost_and_the_taps_drops():
    s = Stats()
    d = {"ifname": "vxtun0", "vni": 42, **s.to_json(), "events": {"lost": 0},
         "punts_lost": 3, "tap": {"tx_dropped": 5}}
    text = output.format_stats(d)
    assert "    punts lost 3  tap queue drops 5" in text.splitlines()
    # "dropped N" stays vxtun's own total
    assert "dropped 5" not in text and "    dropped 0" in text
    plain = output.format_stats({"ifname": "vxtun0", "vni": 42, **s.to_json()})
    assert "punts" not in plain and "tap" not in plain


# --- bounded, linear input -------------------------------------------------------------------

class ChunkSocket:
    """A socket whose recv() hands out ``total`` bytes of ``fill`` in ``size``-byte pieces,
    then ``tail``: what a peer writing one long line looks like to the reader."""

    def __init__(self, total: int, size: int, fill: bytes = b"x", tail: bytes = b"") -> None:
        self.left = total
        self.piece = fill * size
        self.tail = tail

    def recv(self, n: int) -> bytes:
        if self.left > 0:
            piece = self.piece[:min(n, self.left)]
            self.left -= len(piece)
            return piece
        tail, self.tail = self.tail, b""
        return tail

    def settimeout(self, t) -> None:
        pass


def test_a_long_answer_in_small_pieces_is_read_in_linear_time():
    # 16 MB in 4 KB pieces: appending and searching only the new piece is 16 MB of work;
    # re-joining the kept part with each piece (buf = kept + data) would copy ~32 GB.
    big = 16 << 20
    payload = b'{"ok": true, "result": "' + b"y" * big + b'"}\n'
    sock = ChunkSocket(0, 1)
    pieces = iter([payload[i:i + 4096] for i in range(0, len(payload), 4096)])
    sock.recv = lambda n: next(pieces, b"")
    chan = Channel(sock, max_line=64 << 20, timeout=None)
    start = time.monotonic()
    msg = chan.read()
    assert time.monotonic() - start < 3.0
    assert len(msg["result"]) == big


def test_a_100_mb_line_without_newline_is_refused_fast_and_never_kept():
    chan = Channel(ChunkSocket(100 << 20, 65536, tail=b'\n{"cmd": "show"}\n'))
    got: list = []
    kept = 0
    start = time.monotonic()
    while True:
        lines = chan.receive()
        kept = max(kept, len(chan._in))
        if lines is None:
            break
        got += lines
        if got and got[-1] == {"cmd": "show"}:
            break
    assert time.monotonic() - start < 5.0
    assert got == [BadLine(f"line longer than {MAX_LINE} bytes"), {"cmd": "show"}]
    assert kept <= MAX_LINE + 65536


def test_a_whole_line_longer_than_max_line_in_one_piece_is_refused(pair):
    ours, theirs = pair
    chan = Channel(ours, max_line=100)
    theirs.sendall(b'"' + b"x" * 200 + b'"\n{"cmd": "show"}\n')
    assert chan.receive() == [BadLine("line longer than 100 bytes"), {"cmd": "show"}]
