"""Any line on a VTEP's control socket, through the real server (vxtun/dataplane/server.py,
vxtun/io/jsonlines.py) and commands (vxtun/dataplane/commands.py) to a real ``Vtep`` over
either FDB store: any JSON value at any nesting, any field of any type, and lines that are
not JSON at all.  Every line gets exactly one answer, ``{"ok": true, ...}`` or ``{"ok":
false, "error": "<text>"}``; the connection and the VTEP live on; and when the answer is an
error, nothing changed: configuration, FDB, neighbour table, and no event was raised.
"""
from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vxtun import _fastpath
from vxtun.core import Stats, Vtep, VtepConfig
from vxtun.dataplane.fanout import Fanout
from vxtun.dataplane.loop import Loop
from vxtun.dataplane.server import ControlServer
from vxtun.fdb import Fdb, Remote
from vxtun.wire.ether import mac_from_str

FIELDS = ["cmd", "op", "mac", "dst", "port", "vni", "via", "state", "lladdr", "nud", "to",
          "dynamic", "count", "x"]
WORDS = ["fdb", "neigh", "show", "stats", "monitor", "add", "append", "replace", "change",
         "del", "flush", "permanent", "static", "dynamic", "reachable", "stale", "noarp", "all",
         "00:00:00:00:00:00", "b2:ee:aa:42:8b:0b", "192.0.2.2", "2001:db8::1", "10.20.1.3",
         "eth0", ""]

json_scalars = (st.none() | st.booleans() | st.integers() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(WORDS)
                | st.text(max_size=12))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4),
                                             inner, max_size=6), max_leaves=25)


@st.composite
def requests(draw):
    """A request-shaped object (a known cmd/op and fields of any type), or any JSON value."""
    if draw(st.booleans()):
        return draw(json_values)
    obj = {"cmd": draw(st.sampled_from(["fdb", "neigh", "show", "stats", "monitor"])
                       | json_scalars)}
    if draw(st.booleans()):
        obj["op"] = draw(st.sampled_from(["add", "append", "replace", "change", "del", "show",
                                          "flush"]) | json_scalars)
    for key in draw(st.lists(st.sampled_from(FIELDS[2:]), max_size=5, unique=True)):
        obj[key] = draw(json_values)
    return obj


def _line(obj) -> bytes:
    return json.dumps(obj).encode()


raw_lines = st.one_of(
    requests().map(_line),
    # nested far deeper than the parser's recursion limit
    st.integers(1, 100_000).map(lambda d: b"[" * d + b"]" * d),
    st.integers(1, 100_000).map(lambda d: b'{"cmd": ' * d + b"1" + b"}" * d),
    # not JSON, not UTF-8, JSON with junk after it
    st.binary(max_size=64).map(lambda b: b.replace(b"\n", b" ")),
    requests().map(lambda o: _line(o) + b" x"),
)


class Backend:
    """What ``show`` and ``stats`` ask of the dataplane."""
    name = "pure"
    punts_lost = 0

    def features(self) -> list:
        return []

    def stats(self, port) -> dict:
        return port.vtep.stats.to_json()

    def demux_stats(self, us) -> dict:
        return Stats().to_json()


class Node:
    """A node around one VTEP: what commands.handle uses of the real one (vxtun/dataplane/
    node.py), with ``down`` recorded instead of carried out."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.backend = Backend()
        self.nl = SimpleNamespace(tx_dropped=lambda name: 0)
        self.events_lost = 0
        self.downs = 0

    def after_core(self, port) -> None:
        self.fanout.publish(port)

    def subscribe(self, port, conn) -> None:
        self.fanout.subscribe(port, conn)

    def down(self, port, conn) -> None:
        self.downs += 1


def make_port(kind: str):
    cfg = VtepConfig(vni=42, name="vxtun0", local="192.0.2.1", remote="192.0.2.9", dev="eth0",
                     proxy=True, reachable_time=1e9, gc_stale_time=1e9,
                     mac=mac_from_str("02:00:00:00:00:01"))
    fdb = Fdb(store=_fastpath.CFdb()) if kind == "fast" else Fdb()
    vtep = Vtep(cfg, fdb=fdb)
    vtep.fdb_update("append", bytes(6), Remote("192.0.2.3"), "permanent", 0.0)
    vtep.fdb_update("add", mac_from_str("b2:ee:aa:42:8b:0b"), Remote("192.0.2.2"), "static", 0.0)
    vtep.neigh_update("add", "10.20.1.3", mac_from_str("b2:ee:aa:42:8b:0b"), "permanent", 0.0)
    while vtep.next_event() is not None:
        pass
    return FakePort(cfg, vtep)


class FakePort:
    """A VTEP as the server holds it (vxtun/dataplane/lifecycle.py Port), hashable as it."""

    def __init__(self, config: VtepConfig, vtep: Vtep) -> None:
        self.config = config
        self.vtep = vtep
        self.underlay = SimpleNamespace(by_vni={42: None})


def state(port) -> tuple:
    v = port.vtep
    return (port.config.to_json(), v.fdb_show(), v.neigh_show(0.0, nud="all"),
            v.stats.to_json())


def turn(loop: Loop) -> None:
    for key, _ in loop.sel.select(0.001):
        if loop.sel.get_map().get(key.fd) is key:
            key.data()


def send(loop: Loop, client: socket.socket, data: bytes) -> None:
    """Send a line of any length, the loop reading it meanwhile."""
    view = memoryview(data)
    while view:
        try:
            view = view[client.send(view):]
        except BlockingIOError:
            turn(loop)


def read_answer(loop: Loop, client: socket.socket, buf: bytearray) -> dict:
    """Turn the loop until one whole line has come back."""
    for _ in range(2000):
        nl = buf.find(b"\n")
        if nl >= 0:
            line = bytes(buf[:nl])
            del buf[:nl + 1]
            return json.loads(line)
        turn(loop)
        try:
            buf += client.recv(1 << 20)
        except BlockingIOError:
            pass
    raise AssertionError("no answer")


@pytest.mark.parametrize("kind", ["pure", "fast"])
@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(lines=st.lists(raw_lines, min_size=1, max_size=6))
def test_every_line_gets_one_answer_and_an_error_changes_nothing(kind, lines):
    loop = Loop()
    fanout = Fanout()
    node = Node(fanout)
    server = ControlServer(loop, node, fanout)
    port = make_port(kind)
    client, conn = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.setblocking(False)
    client.setblocking(False)
    try:
        chan = server.serve_connection(port, conn)
        buf = bytearray()
        monitoring = False
        for line in lines:
            before = state(port)
            send(loop, client, line + b"\n")
            ans = read_answer(loop, client, buf)
            while monitoring and "event" in ans:          # a monitor's events, then ours
                ans = read_answer(loop, client, buf)
            assert set(ans) <= {"ok", "result", "error", "more"}, ans
            assert isinstance(ans["ok"], bool), ans
            if ans["ok"]:
                assert "error" not in ans
                while "more" in ans:                      # a listing's pages
                    ans = read_answer(loop, client, buf)
                monitoring = monitoring or chan in fanout._port_of
            else:
                assert isinstance(ans["error"], str) and ans["error"], ans
                assert "\n" not in ans["error"] and len(ans["error"]) < 1000, ans
                assert state(port) == before, line[:200]
                assert port.vtep.next_event() is None
            assert not chan.closed and chan in server.clients
    finally:
        server.close()
        client.close()
        loop.close()
