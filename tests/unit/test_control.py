"""The control sockets' edges (vxtun/io/control.py, vxtun/io/jsonlines.py ``connect``,
vxtun/dataplane/server.py): who may serve, how many may connect, what happens without file
descriptors, and a reader that goes away (vxtun/cli/main.py).  No root: every server here is
an abstract socket of this test, and "who holds it" is what SO_PEERCRED would have said.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import resource
import select
import socket
import subprocess
import threading
import time

import pytest

from vxtun.core import Vtep, VtepConfig
from vxtun.dataplane.fanout import Fanout
from vxtun.dataplane.lifecycle import Port
from vxtun.dataplane.loop import Loop
from vxtun.dataplane.server import ControlServer
from vxtun.errors import ControlError
from vxtun.io import control, jsonlines
from vxtun.lab.netns import child_env, python

from stubs import StubNode

_names = itertools.count()


def unique_dev() -> str:
    return f"t{os.getpid() % 100000}x{next(_names)}"


def listener(backlog: int = 4) -> tuple[str, socket.socket]:
    """A bound, listening ``@vxtun/<dev>`` under a fresh device name: a server to connect to
    (or a squatter of the name)."""
    dev = unique_dev()
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(control.address(dev))
    lst.listen(backlog)
    return dev, lst


@pytest.fixture
def served(monkeypatch):
    """A ControlServer on a real listener ``@vxtun/<dev>``, every peer taken as root."""
    monkeypatch.setattr(control, "peer_is_root", lambda conn: True)
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 0)
    loop = Loop()
    fanout = Fanout()
    server = ControlServer(loop, StubNode(fanout), fanout)
    dev = unique_dev()
    cfg = VtepConfig(vni=42, name=dev)
    port = Port(cfg, Vtep(cfg), -1, None, control.listen(dev))
    server.listen(port)
    yield server, port, loop
    server.close()
    port.listener.close()
    loop.close()


def spin(loop: Loop, rounds: int = 5) -> int:
    """Run the callbacks of what is ready; how many ran."""
    ran = 0
    for _ in range(rounds):
        for key, _ in loop.sel.select(0.01):
            if loop.sel.get_map().get(key.fd) is key:
                key.data()
                ran += 1
    return ran


def raw_client(dev: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(control.address(dev))
    return s


def read_all(s: socket.socket) -> list[dict]:
    """Every line until the server closes the connection."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return [json.loads(x) for x in data.splitlines()]


# --- who serves: SO_PEERCRED on the client side -------------------------------------------------

def test_a_client_refuses_a_socket_not_held_by_root(monkeypatch):
    dev, lst = listener()
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 65534)
    try:
        with pytest.raises(ControlError) as e:
            control.Client(dev)
        assert str(e.value) == (f"the control socket @vxtun/{dev} is held by uid 65534, not "
                                "root: refusing to talk to it")
    finally:
        lst.settimeout(1)
        conn, _ = lst.accept()              # the client connected, then said nothing
        conn.settimeout(1)
        assert conn.recv(100) == b""
        conn.close()
        lst.close()


def test_vxtun_up_refuses_a_port_owner_not_held_by_root_and_starts_none(monkeypatch):
    from vxtun.dataplane import owner
    name = "\0vxtun-owner-test-" + unique_dev()
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(name)
    lst.listen(4)
    spawned = []
    monkeypatch.setattr(owner, "ADDRESS", name)
    monkeypatch.setattr(owner, "spawn", lambda: spawned.append(True))
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 65534)
    with pytest.raises(ControlError) as e:
        owner.Lease.acquire([VtepConfig(vni=42, remote="192.0.2.1")])
    assert str(e.value) == (f"the control socket @{name[1:]} is held by uid 65534, not root: "
                            "refusing to talk to it")
    assert spawned == []
    lst.settimeout(1)
    conn, _ = lst.accept()
    conn.settimeout(1)
    assert conn.recv(100) == b""            # not a byte of the attach went out
    conn.close()
    lst.close()


def test_a_client_talks_to_root(monkeypatch):
    dev, lst = listener()
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 0)
    c = control.Client(dev)
    conn, _ = lst.accept()
    conn.sendall(b'{"ok": true, "result": 7}\n')
    assert c.call({"cmd": "show"}) == 7
    c.close()
    conn.close()
    lst.close()


def test_peer_uid_is_the_listeners():
    a, b = socket.socketpair()
    assert jsonlines.peer_uid(a) == os.getuid()
    a.close()
    b.close()


def test_a_squatted_name_is_reported_when_the_vtep_starts(monkeypatch):
    dev, lst = listener()
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 65534)
    with pytest.raises(ControlError) as e:
        control.listen(dev)
    assert str(e.value) == (f"the control socket @vxtun/{dev} is held by uid 65534, not root: "
                            f"cannot start {dev}")
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 0)
    with pytest.raises(ControlError, match=f"a vxtun VTEP named {dev} is already running"):
        control.listen(dev)
    lst.close()


# --- how many: a busy VTEP says so ---------------------------------------------------------------

def test_past_the_limit_a_client_is_told_the_vtep_is_busy(served):
    server, port, loop = served
    server.max_clients = 2
    dev = port.config.name
    first, second = raw_client(dev), raw_client(dev)
    spin(loop)
    third = raw_client(dev)
    spin(loop)
    assert len(server.clients) == 2
    assert read_all(third) == [{"ok": False, "error": f"VTEP {dev} is busy: 2 control "
                                "connections are open, the most one vxtun process serves; "
                                "try again later"}]
    # The CLI's client reads that line even when the server closed before its request.
    c = control.Client(dev)
    spin(loop)
    with pytest.raises(ControlError, match=f"VTEP {dev} is busy: 2 control connections"):
        c.call({"cmd": "monitor"})
    c.close()
    # The ones served are served; once one goes, a newcomer is served again.
    first.sendall(b'{"cmd": "monitor"}\n')
    spin(loop)
    first.settimeout(1)
    assert json.loads(first.recv(1000)) == {"ok": True, "result": {"ifname": dev}}
    second.close()
    spin(loop)
    fourth = raw_client(dev)
    spin(loop)
    assert len(server.clients) == 2
    fourth.close()
    first.close()
    third.close()


def test_a_full_backlog_is_busy_not_gone(monkeypatch):
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 0)
    dev, lst = listener(0)                       # nobody accepts: the second connect waits
    held = []
    try:
        with pytest.raises(ControlError) as e:
            for _ in range(4):
                held.append(control.Client(dev, timeout=0.2))
        assert str(e.value) == (f"VTEP {dev} is busy: it does not accept another control "
                                "connection now; try again later")
    finally:
        for c in held:
            c.close()
        lst.close()
    with pytest.raises(ControlError, match=f"no vxtun VTEP named {dev} is running"):
        control.Client(dev)


def test_a_monitor_does_not_wait_for_ever_on_a_full_backlog(monkeypatch):
    monkeypatch.setattr(jsonlines, "peer_uid", lambda sock: 0)
    monkeypatch.setattr(control, "CONNECT_TIMEOUT", 0.2)
    dev, lst = listener(0)
    first = control.Client(dev, timeout=None)
    assert first.chan.timeout is None            # its reads wait for ever, as before
    said: list = []

    def second() -> None:
        try:
            control.Client(dev, timeout=None).close()
        except ControlError as e:
            said.append(str(e))

    t = threading.Thread(target=second, daemon=True)
    t.start()
    t.join(5)
    first.close()
    lst.close()                                  # lets a connect that hangs end, too
    t.join(5)
    assert said and said[0].startswith(f"VTEP {dev} is busy"), said


# --- out of descriptors: never a spinning loop ----------------------------------------------------

class Exhausted:
    """Every file descriptor this process may have is taken (RLIMIT_NOFILE lowered, then
    filled with dups) until exit; ``reserve=False`` takes the reserve descriptor too."""

    def __init__(self, reserve: bool = True) -> None:
        self.reserve = reserve

    def __enter__(self):
        if not self.reserve:
            control._reserve.release()
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        used = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (used + 8, self.limits[1]))
        self.fds = []
        try:
            while True:
                self.fds.append(os.dup(0))
        except OSError as e:
            assert e.errno == errno.EMFILE
        return self

    def __exit__(self, *exc) -> None:
        for fd in self.fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)
        control._reserve.keep()


def readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_at_emfile_the_waiting_client_is_told_and_the_listener_drained(served):
    server, port, loop = served
    client = raw_client(port.config.name)
    with Exhausted():
        spin(loop, 3)
        drained = not readable(port.listener)
    assert drained                       # nothing left queued: the loop has nothing to spin on
    assert read_all(client) == [{"ok": False, "error": "the VTEP is busy: its process has no "
                                 "file descriptor left for another control connection; try "
                                 "again later"}]
    assert control._reserve.fd is not None
    # With descriptors again, clients are served as before.
    again = raw_client(port.config.name)
    spin(loop)
    assert len(server.clients) == 1
    again.close()
    client.close()


def test_without_even_the_reserve_the_listener_rests_instead_of_spinning(served):
    server, port, loop = served
    client = raw_client(port.config.name)
    with Exhausted(reserve=False):
        spin(loop, 1)
        # The listener stays readable (the connection waits), but nobody watches it now.
        assert readable(port.listener)
        assert port.listener.fileno() not in loop.sel.get_map()
        assert spin(loop, 20) == 0
    server.tick(time.monotonic() + 5)
    spin(loop)
    assert len(server.clients) == 1      # served once descriptors are back
    client.close()


# --- a reader that goes away -------------------------------------------------------------------

CHILD = """
import sys
from vxtun.cli import main
from vxtun.io import control
SHOW = {"ifname": "vxtun0", "vni": 42, "mtu": 1450, "dataplane": "pure",
        "address": "02:00:00:00:00:01", "remote": "192.0.2.1", "srcport": [1, 2],
        "dstport": 4789, "ageing": 300}
FDB = {"mac": "00:00:00:00:00:00", "remotes": [{"dst": "192.0.2.1"}], "flags": ["self"],
       "state": "permanent"}
control.running = lambda: ["vxtun0"]
control.call = lambda dev, body, timeout=5.0: SHOW if body["cmd"] == "show" else \\
    [dict(FDB) for _ in range(int(sys.argv[1]))]
# a listing comes in pages (vxtun/dataplane/server.py): here in pages of 512
class Client:
    def __init__(self, dev, timeout=5.0):
        pass
    def pages(self, body):
        rows = control.call("vxtun0", body)
        return iter([rows[i:i + 512] for i in range(0, len(rows), 512)] or [[]])
    def close(self):
        pass
control.Client = Client
sys.exit(main.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("words,entries", [
    (["show"], 0), (["fdb", "show"], 1), (["fdb", "show", "dev", "vxtun0"], 20000),
    (["fdb", "show", "-j"], 20000),
])
def test_output_to_a_reader_that_has_gone_ends_quietly(words, entries):
    r, w = os.pipe()
    os.close(r)                          # as after `| head -0`: the first write fails
    p = subprocess.run(python("-c", CHILD, str(entries), *words), stdout=w,
                       stderr=subprocess.PIPE, text=True, env=child_env(), timeout=60)
    os.close(w)
    assert p.stderr == ""
    assert p.returncode == 141           # 128 + SIGPIPE, the status ip's death gives a shell


# --- the port owner caps its leases as the server caps its clients ------------------------------

def test_the_port_owner_refuses_a_lease_past_its_cap_and_serves_again_below_it(monkeypatch):
    from vxtun.dataplane.owner import Owner

    from stubs import OwnerNode
    monkeypatch.setattr(control, "peer_is_root", lambda conn: True)
    addr = "\0" + f"vxtun-owner-test-{unique_dev()}"
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lst.bind(addr)
    lst.listen(8)
    lst.setblocking(False)
    node = OwnerNode()
    owner = Owner(lst, node)
    owner.max_leases = 2
    clients = []
    try:
        for _ in range(2):
            clients.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            clients[-1].connect(addr)
            spin(node.loop)
        assert len(owner.leases) == 2
        late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        late.settimeout(5)
        late.connect(addr)
        spin(node.loop)
        assert read_all(late) == [{"ok": False, "error": "the port owner is busy: 2 vxtun up "
                                   "hold leases, the most one owner serves; try again later"}]
        assert len(owner.leases) == 2
        clients.pop().close()               # an up ends: its lease goes, room for another
        spin(node.loop)
        assert len(owner.leases) == 1
        clients.append(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        clients[-1].connect(addr)
        spin(node.loop)
        assert len(owner.leases) == 2
    finally:
        for c in clients:
            c.close()
        lst.close()
        node.loop.close()

