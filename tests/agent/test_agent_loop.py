"""The agent loop (vxtun/agent/agent.py) over the embedded file store, with VTEPs in memory.

No root: the VTEPs are ``FakeVtep``s that keep the tables the reconciler owns, so these tests
check the loop itself (registration, watches, resync after a compaction or an outage, bad data,
misses) with the same store code the lab and ``--store sqlite:PATH`` use.
"""
from __future__ import annotations

import queue
import threading
import time

import pytest

from vxtun.agent import model
from vxtun.agent.agent import Agent
from vxtun.agent.filestore import FileStore
from vxtun.agent.reconcile import LocalVtep, VtepState, apply
from vxtun.agent.store import Unreachable


class FakeVtep:
    kind = "fake"

    def __init__(self, name: str, vni: int, ip: str) -> None:
        self.name = name
        self.local = LocalVtep(name, vni, ip, 4789, "fake")
        self.state = VtepState()
        self.runs: list = []
        self.pending: list = []

    def info(self):
        return self.local

    def read(self):
        return self.state.copy()

    def run(self, cmds):
        self.runs.append(list(cmds))
        self.state = apply(self.state, cmds)

    def miss_fd(self):
        return -1

    def misses(self):
        out, self.pending = self.pending, []
        return out


class Flaky(FileStore):
    """A file store that can be made unreachable."""
    down = False

    def _txn(self, fn):
        if self.down:
            raise Unreachable("store down (test)")
        return super()._txn(fn)


def start(agent: Agent) -> threading.Thread:
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    return t


def wait(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(what)


@pytest.fixture
def fleet(tmp_path):
    path = str(tmp_path / "store.sqlite")
    agents, threads = [], []

    def add(ip: str, mode="preprogram", store=None, ttl=2):
        v = FakeVtep("vx0", 42, ip)
        a = Agent(store or FileStore(path), [v], mode=mode, ttl=ttl, host=ip)
        agents.append(a)
        threads.append(start(a))
        return a, v
    yield path, add
    for a in agents:
        a.stop()
    for t in threads:
        t.join(5)


def test_members_and_endpoints_follow_the_store(fleet):
    path, add = fleet
    a1, v1 = add("192.0.2.1")
    a2, v2 = add("192.0.2.2")
    wait(lambda: v1.state.flood == {"192.0.2.2"} and v2.state.flood == {"192.0.2.1"},
         what="flood lists")
    a2.requests.put(({"cmd": "endpoint", "op": "add", "mac": "52:54:00:00:00:02",
                      "ips": ["10.20.0.2"]}, reply := queue.Queue()))
    assert reply.get(timeout=5) == {"ok": True, "result": None}
    wait(lambda: v1.state.fdb == {"52:54:00:00:00:02": ("192.0.2.2",)}
         and v1.state.neigh == {"10.20.0.2": "52:54:00:00:00:02"}, what="endpoint")
    assert v2.state.fdb == {}             # its own endpoint: nothing to program
    # A clean stop revokes the lease: the other host drops it at once.
    a2.stop()
    wait(lambda: v1.state == VtepState(), what="h2 gone")


def test_a_killed_agent_expires_with_its_lease(fleet):
    path, add = fleet
    a1, v1 = add("192.0.2.1")
    s2 = FileStore(path)
    lease = s2.grant(1)
    s2.put(model.member_key(42, "192.0.2.9"), model.member_value(model.Member(42, "192.0.2.9")),
           lease)
    wait(lambda: v1.state.flood == {"192.0.2.9"}, what="joined")
    wait(lambda: v1.state.flood == set(), timeout=5, what="expired within the TTL")


def test_after_an_outage_and_a_compaction_it_resyncs_from_the_current_state(fleet):
    path, add = fleet
    store = Flaky(path)
    a1, v1 = add("192.0.2.1", store=store)
    other = FileStore(path)
    wait(lambda: a1.revision > 0, what="started")
    store.down = True                      # a1 is cut off ...
    time.sleep(0.5)
    for i in range(3):                     # ... while members come and go, and the history
        key = model.member_key(42, f"192.0.2.{10 + i}")
        other.put(key, model.member_value(model.Member(42, f"192.0.2.{10 + i}")))
    other.delete(model.member_key(42, "192.0.2.10"))
    rev, _ = other.snapshot("/")
    other.compact(rev)                     # ... is compacted away
    assert v1.state.flood == set()         # the VTEP kept its state while the store was down
    assert "store" in a1.last_error
    store.down = False
    wait(lambda: v1.state.flood == {"192.0.2.11", "192.0.2.12"}, timeout=15,
         what="resynced from the current revision")


def test_bad_data_is_logged_and_skipped(fleet):
    path, add = fleet
    other = FileStore(path)
    other.put("/vxtun/members/42/192.0.2.7", "[]")
    other.put("/vxtun/endpoints/x", "{}")
    a1, v1 = add("192.0.2.1")
    other.put(model.member_key(42, "192.0.2.8"), model.member_value(model.Member(42, "192.0.2.8")))
    wait(lambda: v1.state.flood == {"192.0.2.8"}, what="good data used")
    assert len(a1.status()["bad"]) == 2 and a1.status()["last_error"] == ""


def test_on_miss_answers_only_misses(fleet):
    path, add = fleet
    a1, v1 = add("192.0.2.1", mode="on-miss")
    other = FileStore(path)
    for mac, ip, vtep in [("52:54:00:00:00:02", "10.20.0.2", "192.0.2.2"),
                          ("52:54:00:00:00:03", "10.20.0.3", "192.0.2.3")]:
        other.put(model.endpoint_key(42, mac, vtep),
                  model.endpoint_value(model.Endpoint(42, mac, vtep, (ip,))))
    wait(lambda: a1.revision >= 3, what="read the store")
    time.sleep(0.3)
    assert v1.state.neigh == {} and v1.state.fdb == {}
    v1.pending.append(("l3", "10.20.0.3"))
    wait(lambda: v1.state.neigh == {"10.20.0.3": "52:54:00:00:00:03"}
         and v1.state.fdb == {"52:54:00:00:00:03": ("192.0.2.3",)}, what="miss answered")
    # The endpoint leaves: its entries go too.
    other.delete(model.endpoint_key(42, "52:54:00:00:00:03", "192.0.2.3"))
    wait(lambda: v1.state.neigh == {} and v1.state.fdb == {}, what="entries removed")
    # Back again: installed only when a miss asks for it again.
    other.put(model.endpoint_key(42, "52:54:00:00:00:03", "192.0.2.4"),
              model.endpoint_value(model.Endpoint(42, "52:54:00:00:00:03", "192.0.2.4",
                                                  ("10.20.0.3",))))
    rev = other.snapshot("/")[0]
    wait(lambda: a1.revision >= rev, what="read the store")
    time.sleep(0.3)
    assert v1.state.neigh == {}
    v1.pending.append(("l3", "10.20.0.3"))
    wait(lambda: v1.state.fdb == {"52:54:00:00:00:03": ("192.0.2.4",)}, what="asked again")


class Surprising(FileStore):
    """A store whose first read fails with something no one expected."""
    surprises = 1

    def snapshot(self, prefix):
        if self.surprises:
            self.surprises -= 1
            raise RuntimeError("surprise")
        return super().snapshot(prefix)


def test_an_unexpected_error_is_reported_and_survived(fleet):
    path, add = fleet
    store = Surprising(path)
    a1, v1 = add("192.0.2.1", store=store)
    FileStore(path).put(model.member_key(42, "192.0.2.8"),
                        model.member_value(model.Member(42, "192.0.2.8")))
    wait(lambda: v1.state.flood == {"192.0.2.8"}, what="recovered")
    assert store.surprises == 0


def test_a_vtep_that_goes_away_withdraws_its_membership(fleet):
    from vxtun.agent.vteps import VtepGone
    path, add = fleet
    a1, v1 = add("192.0.2.1")
    a2, v2 = add("192.0.2.2")
    wait(lambda: v1.state.flood == {"192.0.2.2"}, what="joined")

    def gone():
        raise VtepGone("no device vx0")
    v2.read = v2.info = gone
    FileStore(path).put("/vxtun/status/poke", "1")        # any change makes a2 reconcile
    wait(lambda: v1.state.flood == set(), what="withdrawn")
    assert "no device vx0" in a2.status()["last_error"]


class Refusing(FakeVtep):
    """A VTEP that refuses one command, as the kernel refuses an entry with an errno."""

    def __init__(self, *args, refuse: str) -> None:
        super().__init__(*args)
        self.refuse = refuse

    def run(self, cmds):
        for c in cmds:
            if str(c).startswith(self.refuse):
                raise OSError(22, f"Invalid argument ({c})")
            super().run([c])


def publish(store: FileStore, n: int, vtep="192.0.2.2") -> dict:
    """Endpoints 52:54:00:00:01:NN / 10.20.1.NN behind ``vtep``; IP -> MAC."""
    out = {}
    for i in range(n):
        mac, ip = f"52:54:00:00:01:{i:02x}", f"10.20.1.{i}"
        store.put(model.endpoint_key(42, mac, vtep),
                  model.endpoint_value(model.Endpoint(42, mac, vtep, (ip,))))
        out[ip] = mac
    return out


def test_a_refused_command_does_not_stop_the_others(tmp_path):
    store = FileStore(str(tmp_path / "s.sqlite"))
    v = Refusing("vx0", 42, "192.0.2.1", refuse="neigh replace 10.20.1.1 ")
    a = Agent(store, [v], host="h1")
    t = start(a)
    try:
        neigh = publish(FileStore(store.path), 4)
        # 10.20.1.1 comes second in the plan: the ones after it are installed all the same.
        wait(lambda: v.state.neigh == {ip: m for ip, m in neigh.items() if ip != "10.20.1.1"}
             and len(v.state.fdb) == 4, what="the other entries installed")
        assert "neigh replace 10.20.1.1 " in a.last_error and "1 of" in a.last_error
        v.refuse = "nothing"                       # the kernel accepts it now: retried
        wait(lambda: v.state.neigh == neigh, timeout=15, what="the refused entry retried")
    finally:
        a.stop()
        t.join(5)


def test_the_tables_are_read_once_per_reread_not_once_per_change(tmp_path):
    """Each change costs its commands, not a dump of the VTEP: the tables read once are kept
    up to date with the commands run (reconcile.apply) until ``reread`` seconds have passed."""
    store = FileStore(str(tmp_path / "s.sqlite"))
    v = FakeVtep("vx0", 42, "192.0.2.1")
    reads = []
    read = v.read
    v.read = lambda: reads.append(1) or read()
    a = Agent(store, [v], host="h1")
    a.reread = 3600.0
    t = start(a)
    try:
        wait(lambda: a.revision > 0, what="started")
        other = FileStore(store.path)
        want = {}
        for i in range(10):                        # ten changes, each seen on its own
            want |= publish(other, i + 1)
            wait(lambda w=dict(want): v.state.neigh == w, what=f"endpoint {i}")
        assert len(reads) == 1, len(reads)
        # Changed by hand behind the agent's back: put right at the next reread.
        v.state.neigh.pop("10.20.1.3")
        a.reread = 0.0
        wait(lambda: v.state.neigh == want, what="the hand change undone")
    finally:
        a.stop()
        t.join(5)


class Lapsing(FileStore):
    """The lease lapses just before an endpoint is written under it (the keeper thread and
    the watch have not said so yet: a loaded host)."""
    lapse = True

    def put(self, key, value, lease=0):
        if self.lapse and "/endpoints/" in key and lease:
            self.lapse = False
            self.revoke(lease)
        return super().put(key, value, lease)


def test_endpoint_add_on_a_lapsed_lease_registers_again(tmp_path):
    store = Lapsing(str(tmp_path / "s.sqlite"))
    v = FakeVtep("vx0", 42, "192.0.2.1")
    a = Agent(store, [v], host="h1", ttl=60)
    t = start(a)
    try:
        wait(lambda: a.lease and a.revision > 0, what="registered")
        old = a.lease
        a.requests.put(({"cmd": "endpoint", "op": "add", "mac": "52:54:00:00:00:01",
                         "ips": ["10.20.0.1"]}, reply := queue.Queue()))
        assert reply.get(timeout=5) == {"ok": True, "result": None}
        other = FileStore(store.path)
        key = model.endpoint_key(42, "52:54:00:00:00:01", "192.0.2.1")
        wait(lambda: {kv.key for kv in other.snapshot("/vxtun/")[1]} >= {
            key, model.member_key(42, "192.0.2.1")}, what="member and endpoint written again")
        assert a.lease != old and "expired" in a.last_error
    finally:
        a.stop()
        t.join(5)


class Slow(FakeVtep):
    """A VTEP that takes its time over each command (a loaded vxtun, a busy netlink)."""

    def run(self, cmds):
        time.sleep(0.01 * len(cmds))
        super().run(cmds)


def test_requests_are_answered_during_a_long_reconcile(tmp_path):
    store = FileStore(str(tmp_path / "s.sqlite"))
    publish(store, 150)                          # 300 commands, 3 s, for a cold start
    v = Slow("vx0", 42, "192.0.2.1")
    a = Agent(store, [v], host="h1")
    t = start(a)
    try:
        wait(lambda: v.runs, what="programming started")
        t0 = time.monotonic()
        a.requests.put(({"cmd": "status"}, reply := queue.Queue()))
        assert reply.get(timeout=5)["ok"]
        assert time.monotonic() - t0 < 1.0
        assert len(v.state.neigh) < 150          # answered while it was still programming
        wait(lambda: len(v.state.neigh) == 150, what="all programmed")
    finally:
        a.stop()
        t.join(5)
