"""Events as ``ip monitor`` prints them, the Python API that delivers them, the monitor's
non-blocking delivery, and the resolver's answers.  No root: the API talks to a fake VTEP on
an abstract Unix socket, the delivery test uses a socketpair.

The iproute2 forms quoted were printed by iproute2 6.1 for a kernel vxlan device:
``ip monitor neigh dev vxlan0`` (no ``dev``) and ``ip monitor all`` (with ``dev``).
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from vxtun.api import Controller
from vxtun.cli.output import format_event
from vxtun.cli.requests import parse_neigh
from vxtun.core import VtepConfig, Vtep
from vxtun.core.events import FdbChange, L2Miss, L3Miss, NeighChange, event_from_json
from vxtun.errors import ControlError, LocalError
from vxtun.fdb import Remote
from vxtun.io import control
from vxtun.wire.ether import mac_from_str

MAC = "b2:ee:aa:42:8b:0b"
ROOT = Path(__file__).resolve().parents[2]


# --- text and JSON forms -------------------------------------------------------------------

EVENTS = [
    (L3Miss("vxlan0", "10.20.1.3", 42), "miss 10.20.1.3 STALE", "miss 10.20.1.3 dev vxlan0 STALE"),
    (L2Miss("vxlan0", mac_from_str(MAC), 42), f"miss lladdr {MAC} STALE",
     f"miss dev vxlan0 lladdr {MAC} STALE"),
    (NeighChange("new", "vxlan0", "10.20.1.3", mac_from_str(MAC), "reachable"),
     f"10.20.1.3 lladdr {MAC} REACHABLE", f"10.20.1.3 dev vxlan0 lladdr {MAC} REACHABLE"),
    (NeighChange("del", "vxlan0", "10.20.1.3", None, "failed"),
     "Deleted 10.20.1.3 FAILED", "Deleted 10.20.1.3 dev vxlan0 FAILED"),
    (FdbChange("new", "vxlan0", mac_from_str(MAC), (Remote("192.0.2.2"),), "permanent"),
     f"{MAC} dev vxlan0 dst 192.0.2.2 self permanent",
     f"{MAC} dev vxlan0 dst 192.0.2.2 self permanent"),
    (FdbChange("del", "vxlan0", mac_from_str(MAC), (Remote("192.0.2.2"),), "permanent"),
     f"Deleted {MAC} dev vxlan0 dst 192.0.2.2 self permanent",
     f"Deleted {MAC} dev vxlan0 dst 192.0.2.2 self permanent"),
]


@pytest.mark.parametrize("ev, filtered, unfiltered", EVENTS,
                         ids=["l3miss", "l2miss", "neigh", "neigh-del", "fdb", "fdb-del"])
def test_text_as_ip_monitor(ev, filtered, unfiltered):
    assert format_event(ev, with_dev=False) == filtered
    assert format_event(ev, with_dev=True) == unfiltered == format_event(ev)


@pytest.mark.parametrize("ev", [e for e, _, _ in EVENTS],
                         ids=["l3miss", "l2miss", "neigh", "neigh-del", "fdb", "fdb-del"])
def test_json_round_trip(ev):
    d = json.loads(json.dumps(ev.to_json()))
    back = event_from_json(d)
    assert type(back) is type(ev)
    assert format_event(back) == format_event(ev)
    assert back == ev


def test_json_uses_iproute2_keys():
    assert L3Miss("vxlan0", "10.20.1.3", 42).to_json() == {
        "event": "l3miss", "miss": None, "dst": "10.20.1.3", "dev": "vxlan0",
        "state": ["STALE"], "vni": 42}
    assert L2Miss("vxlan0", mac_from_str(MAC), 42).to_json() == {
        "event": "l2miss", "miss": None, "dev": "vxlan0", "lladdr": MAC, "state": ["STALE"],
        "vni": 42}
    d = NeighChange("del", "vxlan0", "10.20.1.3", None, "failed").to_json()
    assert d["deleted"] is True and "lladdr" not in d


def test_a_miss_for_the_zero_mac_carries_no_lladdr():
    ev = L2Miss("vxlan0", bytes(6), 42)
    assert format_event(ev, with_dev=False) == "miss STALE"
    assert format_event(ev) == "miss dev vxlan0 STALE"
    assert "lladdr" not in ev.to_json()
    assert event_from_json(ev.to_json()) == ev


def test_an_admin_delete_is_reported_failed_without_lladdr():
    """neigh_del marks the entry FAILED (dropping its lladdr) before removing it."""
    v = Vtep(VtepConfig(vni=42, name="vxtun0", proxy=True))
    e, _ = v.neigh.add("10.20.1.3", mac_from_str(MAC), "permanent")
    v.neigh_delete("10.20.1.3")
    assert format_event(v.next_event(), with_dev=False) == "Deleted 10.20.1.3 FAILED"


def test_unknown_events_are_refused():
    with pytest.raises(ValueError):
        event_from_json({"event": "poke"})


# --- ip neigh grammar: nud all -------------------------------------------------------------

def test_show_and_flush_take_an_address():
    assert parse_neigh(["show", "10.20.1.3", "dev", "vxtun0"]).request.to == "10.20.1.3"
    assert parse_neigh(["flush", "to", "2001:db8:1020:0::3"]).request.to == "2001:db8:1020::3"
    with pytest.raises(LocalError, match="unexpected word"):
        parse_neigh(["show", "10.20.1.3", "10.20.1.4"])


def test_nud_all_is_for_show_and_flush_only():
    assert parse_neigh(["show", "nud", "all"]).request.nud == "all"
    assert parse_neigh(["flush", "dev", "vxtun0", "nud", "all"]).body["nud"] == "all"
    with pytest.raises(LocalError, match="invalid nud state 'all'"):
        parse_neigh(["add", "10.20.1.3", "lladdr", MAC, "nud", "all"])


# --- the Python API against a fake VTEP -------------------------------------------------------

class FakeVtep:
    """Serves ``@vxtun/<dev>``: records requests, answers ok (or an error), and after a
    ``monitor`` request sends the given event lines and closes."""

    def __init__(self, events: list[dict] | None = None, error: str | None = None) -> None:
        # a name of its own: id() is reused once an earlier fake is collected
        self.dev = f"t{os.getpid() % 100000}-{next(_FAKE_NUMBER)}"
        self.events = events or []
        self.error = error
        self.requests: list[dict] = []
        self.sock = control.listen(self.dev)
        self.sock.setblocking(True)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                f = conn.makefile("rb")
                for line in f:
                    req = json.loads(line)
                    self.requests.append(req)
                    if self.error:
                        conn.sendall(json.dumps({"ok": False, "error": self.error}).encode()
                                     + b"\n")
                        continue
                    conn.sendall(b'{"ok": true, "result": []}\n')
                    if req.get("cmd") == "monitor":
                        for ev in self.events:
                            conn.sendall(json.dumps(ev).encode() + b"\n")
                        conn.shutdown(socket.SHUT_RDWR)     # the VTEP goes away
                        break
                f.close()

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(): close() alone would not, and the
        # listening socket, name and all, would live on until its next connection
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=5)


_FAKE_NUMBER = itertools.count()


@pytest.fixture
def fake():
    vteps = []

    def make(**kw) -> FakeVtep:
        v = FakeVtep(**kw)
        vteps.append(v)
        return v
    yield make
    for v in vteps:
        v.close()


def test_table_calls_send_the_cli_requests(fake):
    v = fake()
    ctl = Controller(v.dev)
    ctl.neigh_replace("10.20.1.3", MAC, nud="reachable")
    ctl.fdb_add(MAC.upper(), dst="192.0.2.2")
    ctl.fdb_del(mac_from_str(MAC), dst="192.0.2.2")
    ctl.neigh_del("2001:db8:1020:0::3")
    assert v.requests == [
        {"cmd": "neigh", "op": "replace", "dst": "10.20.1.3", "lladdr": MAC, "nud": "reachable"},
        {"cmd": "fdb", "op": "add", "mac": MAC, "dst": "192.0.2.2", "state": "permanent"},
        {"cmd": "fdb", "op": "del", "mac": MAC, "dst": "192.0.2.2"},
        {"cmd": "neigh", "op": "del", "dst": "2001:db8:1020::3"},
    ]


def test_bad_arguments_are_refused_before_sending(fake):
    v = fake()
    ctl = Controller(v.dev)
    with pytest.raises(LocalError):
        ctl.neigh_add("10.20.1.300", MAC)
    with pytest.raises(LocalError):
        ctl.neigh_add("10.20.1.3", MAC, nud="incomplete")
    with pytest.raises(LocalError):
        ctl.fdb_add("b2:ee:aa:42:8b", dst="192.0.2.2")
    assert v.requests == []


def test_refusals_carry_the_vteps_message(fake):
    v = fake(error="neighbour 10.20.1.3 already exists")
    with pytest.raises(ControlError, match="already exists"):
        Controller(v.dev).neigh_add("10.20.1.3", MAC)


def test_no_vtep_is_a_control_error():
    with pytest.raises(ControlError, match="no vxtun VTEP named"):
        Controller("vxt-none-here").show()


def test_event_stream(fake):
    evs = [{"ok": True, "event": L3Miss("d", "10.20.1.3", 42).to_json()},
           {"ok": True, "lost": 7},
           {"ok": True, "event": L2Miss("d", mac_from_str(MAC), 42).to_json()}]
    v = fake(events=evs)
    with Controller(v.dev).subscribe() as stream:
        first = stream.next(timeout=5)
        assert first == L3Miss("d", "10.20.1.3", 42)
        second = stream.next(timeout=5)
        assert isinstance(second, L2Miss) and second.lladdr == MAC
        assert stream.lost == 7
        with pytest.raises(ControlError, match="went away"):
            stream.next(timeout=5)
    assert v.requests == [{"cmd": "monitor"}]


def test_event_stream_timeout_and_iteration_end(fake):
    v = fake(events=[{"ok": True, "event": L3Miss("d", "10.20.1.9", 42).to_json()}])
    got = list(Controller(v.dev).events())
    assert got == [L3Miss("d", "10.20.1.9", 42)]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(control.address("vxt-silent"))
    srv.listen(1)
    try:
        def serve():
            c, _ = srv.accept()
            c.recv(100)
            c.sendall(b'{"ok": true, "result": {}}\n')
            threading.Event().wait(2)
            c.close()
        threading.Thread(target=serve, daemon=True).start()
        with Controller("vxt-silent").subscribe() as stream:
            assert stream.next(timeout=0.05) is None
    finally:
        srv.close()


# --- the monitor never blocks the loop --------------------------------------------------------

def test_a_listener_that_does_not_read_loses_events_not_the_loop():
    """Fill a monitor connection that nobody reads: every event call returns at once, the
    overflow is counted, and the reader later finds whole JSON lines and a 'lost' notice."""
    from vxtun.dataplane.fanout import Fanout
    from vxtun.dataplane.lifecycle import Port
    from vxtun.io import jsonlines

    fanout = Fanout()                      # no sockets, no netlink: only the delivery path
    cfg = VtepConfig(vni=42, name="vxtun0", proxy=True, l3miss=True)
    v = Vtep(cfg)
    port = Port(cfg, v, -1, None, None)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    chan = jsonlines.Channel(ours)
    fanout.subscribe(port, chan)
    total = 20000
    for i in range(total):
        v._emit(L3Miss("vxtun0", f"10.20.{i >> 8}.{i & 255}", 42))
        fanout.publish(port)
    assert fanout.events_lost > 0
    assert chan.backlog <= jsonlines.OUT_MAX
    # The reader catches up; the channel flushes as the socket drains.
    theirs.setblocking(False)
    data = b""
    for _ in range(2000):
        try:
            chunk = theirs.recv(1 << 16)
        except BlockingIOError:
            chunk = b""
        data += chunk
        chan.flush()
        if not chunk and not chan.backlog:
            break
    v._emit(L3Miss("vxtun0", "10.20.255.255", 42))
    fanout.publish(port)
    chan.flush()
    data += theirs.recv(1 << 16)
    lines = [json.loads(x) for x in data.split(b"\n") if x]
    got = [ln for ln in lines if "event" in ln]
    lost = sum(ln.get("lost", 0) for ln in lines)
    assert lost == fanout.events_lost
    assert len(got) + lost == total + 1
    assert got[-1]["event"]["dst"] == "10.20.255.255"
    ours.close()
    theirs.close()


# --- tools/resolver.py ------------------------------------------------------------------------

def load_resolver():
    spec = importlib.util.spec_from_file_location("resolver", ROOT / "tools" / "resolver.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class RecordingController:
    def __init__(self) -> None:
        self.calls: list = []

    def neigh_replace(self, ip, lladdr, nud="permanent"):
        self.calls.append(("neigh_replace", ip, lladdr, nud))

    def fdb_replace(self, mac, dst):
        self.calls.append(("fdb_replace", mac, dst))


def test_resolver_answers_from_its_table():
    r = load_resolver()
    table = r.Table.parse(f"""
        # IP  MAC  VTEP
        10.20.1.3 {MAC.upper()} 192.0.2.2
        2001:db8:1020::3 {MAC} 192.0.2.2   # the same host over IPv6
    """)
    ctl = RecordingController()
    assert r.answer(ctl, table, L3Miss("vxtun0", "10.20.1.3", 42), "reachable") == {
        "answered": "l3miss", "dst": "10.20.1.3", "lladdr": MAC, "nud": "reachable"}
    assert r.answer(ctl, table, L2Miss("vxtun0", mac_from_str(MAC), 42), "reachable") == {
        "answered": "l2miss", "lladdr": MAC, "dst": "192.0.2.2"}
    assert r.answer(ctl, table, L3Miss("vxtun0", "10.20.1.4", 42), "reachable") == {
        "unknown": "l3miss", "dst": "10.20.1.4"}
    assert r.answer(ctl, table, NeighChange("new", "vxtun0", "10.20.1.3", None, "stale"),
                    "reachable") is None
    assert ctl.calls == [("neigh_replace", "10.20.1.3", MAC, "reachable"),
                         ("fdb_replace", MAC, "192.0.2.2")]


def test_resolver_refuses_a_bad_table():
    r = load_resolver()
    with pytest.raises(Exception, match="line 1"):
        r.Table.parse("10.20.1.3 192.0.2.2\n")


# --- the README's section stays true ----------------------------------------------------------

def test_readme_controller_example_names_real_api():
    text = (ROOT / "README.md").read_text()
    section = text.split("## ARP/ND proxy, misses and a controller in Python", 1)[1]
    section = section.split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    compile(code, "README.md", "exec")
    import re

    from vxtun.api import EventStream
    for group in re.findall(r"`((?:neigh|fdb)_[a-z|]+)`", section):
        prefix, names = group.split("_", 1)
        for name in names.split("|"):
            assert hasattr(Controller, f"{prefix}_{name}"), name
    for attr in ("next", "fileno", "lost"):
        assert attr in EventStream.__init__.__code__.co_names or hasattr(EventStream, attr)
