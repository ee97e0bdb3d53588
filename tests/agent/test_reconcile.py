"""The reconciler (vxtun/agent/reconcile.py) against random histories of the store.

Whatever order events arrive in, whichever of them an agent saw (reconciling after some and
not others, as an agent that was down or cut off from the store does), and whatever it had
programmed before a restart, one reconcile after the last event leaves the VTEP with the tables
that the final store state alone decides.  A second reconcile then runs nothing.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxtun.agent import model
from vxtun.agent.filestore import FileStore
from vxtun.agent.reconcile import (Fdb, LocalVtep, Neigh, VtepState, Wanted, apply, plan,
                                   want)
from vxtun.agent.store import Compacted, KeyValue, LeaseExpired

ME = LocalVtep("vxlan0", 42, "192.0.2.1")
IPS = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
MACS = ["52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"]
OVERLAY = ["10.20.0.1", "10.20.0.2", "10.20.0.3"]

member = st.builds(lambda vni, ip: ("member", vni, ip), st.sampled_from([42, 43]),
                   st.sampled_from(IPS))
endpoint = st.builds(lambda vni, mac, vtep, ips: ("endpoint", vni, mac, vtep, ips),
                     st.sampled_from([42, 43]), st.sampled_from(MACS), st.sampled_from(IPS),
                     st.lists(st.sampled_from(OVERLAY), max_size=2, unique=True))
event = st.tuples(st.sampled_from(["put", "delete", "reconcile"]), st.one_of(member, endpoint))


def key_value(item) -> tuple[str, str]:
    if item[0] == "member":
        _, vni, ip = item
        m = model.Member(vni, ip)
        return model.member_key(vni, ip), model.member_value(m)
    _, vni, mac, vtep, ips = item
    e = model.Endpoint(vni, mac, vtep, tuple(ips))
    return model.endpoint_key(vni, mac, vtep), model.endpoint_value(e)


class Store:
    """The store's keys with etcd's mod revisions."""

    def __init__(self) -> None:
        self.rev = 1
        self.kvs: dict[str, KeyValue] = {}

    def apply(self, kind: str, item) -> None:
        key, value = key_value(item)
        self.rev += 1
        if kind == "put":
            self.kvs[key] = KeyValue(key, value, self.rev)
        else:
            self.kvs.pop(key, None)

    def desired(self) -> model.Desired:
        return model.parse(self.rev, list(self.kvs.values()))


def reconcile(vtep: VtepState, store: Store, mode="preprogram", wanted=None) -> VtepState:
    return apply(vtep, plan(want(ME, store.desired(), mode, wanted), vtep))


leftover = st.builds(
    VtepState,
    st.sets(st.sampled_from(IPS)),
    st.dictionaries(st.sampled_from(MACS), st.lists(st.sampled_from(IPS), min_size=1,
                                                      max_size=2).map(tuple)),
    st.dictionaries(st.sampled_from(OVERLAY), st.sampled_from(MACS)))


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=40), leftover, st.sampled_from(["preprogram", "on-miss"]))
def test_end_state_depends_only_on_the_final_store(events, start, mode):
    store = Store()
    vtep = start.copy()
    wanted = Wanted(set(MACS[:2]), set(OVERLAY[:2]))
    for kind, item in events:
        if kind == "reconcile":
            vtep = reconcile(vtep, store, mode, wanted)
        else:
            store.apply(kind, item)
    vtep = reconcile(vtep, store, mode, wanted)
    # The same final store, reconciled once onto an empty VTEP, gives the same tables.
    fresh = reconcile(VtepState(), store, mode, wanted)
    assert vtep == fresh
    assert plan(want(ME, store.desired(), mode, wanted), vtep) == []
    # And those tables are what the store says: every other member of VNI 42 in the flood
    # list, every endpoint behind another VTEP pointing at the one that published it last.
    d = store.desired()
    assert vtep.flood == {ip for ip in d.members.get(42, {}) if ip != ME.ip}
    for mac, dsts in vtep.fdb.items():
        e = d.endpoints[42][mac]
        assert dsts == (e.vtep,) and e.vtep != ME.ip


@settings(max_examples=100, deadline=None)
@given(st.permutations(list(range(12))))
def test_event_order_does_not_matter(order):
    """The same set of puts in any order (revisions differ, so only membership and endpoints
    with one publisher each are compared) ends in the same tables."""
    items = [("member", 42, ip) for ip in IPS] + \
            [("endpoint", 42, mac, IPS[i + 1], [OVERLAY[i]]) for i, mac in enumerate(MACS)] + \
            [("member", 43, ip) for ip in IPS] + [("endpoint", 43, MACS[0], IPS[1], [])]
    store = Store()
    vtep = VtepState()
    for i in order:
        store.apply("put", items[i])
        vtep = reconcile(vtep, store)
    assert vtep == VtepState({"192.0.2.2", "192.0.2.3", "192.0.2.4"},
                             {MACS[0]: ("192.0.2.2",), MACS[1]: ("192.0.2.3",),
                              MACS[2]: ("192.0.2.4",)},
                             {OVERLAY[0]: MACS[0], OVERLAY[1]: MACS[1], OVERLAY[2]: MACS[2]})


def test_restart_runs_nothing_on_a_programmed_vtep():
    store = Store()
    for item in [("member", 42, "192.0.2.2"), ("endpoint", 42, MACS[0], "192.0.2.2",
                                                ["10.20.0.2"])]:
        store.apply("put", item)
    vtep = reconcile(VtepState(), store)
    assert plan(want(ME, store.desired()), vtep) == []


def test_endpoint_move_leaves_no_stale_entry():
    store = Store()
    store.apply("put", ("endpoint", 42, MACS[0], "192.0.2.2", ["10.20.0.2"]))
    vtep = reconcile(VtepState(), store)
    assert vtep.fdb == {MACS[0]: ("192.0.2.2",)}
    store.apply("put", ("endpoint", 42, MACS[0], "192.0.2.3", ["10.20.0.2"]))   # new host
    store.apply("delete", ("endpoint", 42, MACS[0], "192.0.2.2", []))          # old host
    assert plan(want(ME, store.desired()), vtep) == [Fdb("replace", MACS[0], "192.0.2.3")]
    vtep = reconcile(vtep, store)
    assert vtep.fdb == {MACS[0]: ("192.0.2.3",)} and vtep.neigh == {"10.20.0.2": MACS[0]}


def test_a_unicast_entry_with_two_destinations_is_rebuilt():
    store = Store()
    store.apply("put", ("endpoint", 42, MACS[0], "192.0.2.2", []))
    have = VtepState(fdb={MACS[0]: ("192.0.2.3", "192.0.2.2")})
    assert plan(want(ME, store.desired()), have) == [Fdb("del", MACS[0]),
                                                      Fdb("replace", MACS[0], "192.0.2.2")]


def test_on_miss_installs_only_what_was_asked_for():
    store = Store()
    store.apply("put", ("endpoint", 42, MACS[0], "192.0.2.2", ["10.20.0.2"]))
    store.apply("put", ("endpoint", 42, MACS[1], "192.0.2.3", ["10.20.0.3"]))
    cmds = plan(want(ME, store.desired(), "on-miss", Wanted(ips={"10.20.0.3"})), VtepState())
    assert cmds == [Fdb("replace", MACS[1], "192.0.2.3"), Neigh("replace", "10.20.0.3", MACS[1])]


def test_no_flood_keeps_no_flood_list_and_answers_an_l2_miss_with_its_fdb_entry():
    store = Store()
    store.apply("put", ("member", 42, "192.0.2.2"))
    store.apply("put", ("endpoint", 42, MACS[1], "192.0.2.2", ["10.20.0.2"]))
    flooding = VtepState(flood={"192.0.2.2"})
    cmds = plan(want(ME, store.desired(), "on-miss", Wanted(macs={MACS[1]}), flood=False),
                flooding)
    # The flood list goes (an all-zeros entry would take the frame vxlan_fdb_miss is for),
    # the MAC the L2 miss asked for gets its FDB entry, and no neighbour entry.
    assert cmds == [Fdb("del", "00:00:00:00:00:00", "192.0.2.2"),
                    Fdb("replace", MACS[1], "192.0.2.2")]


def test_bad_data_is_skipped_with_a_reason():
    kvs = [KeyValue("/vxtun/members/42/192.0.2.2", "not json", 2),
           KeyValue("/vxtun/members/42/192.0.2.3", '{"vni": "x", "ip": "192.0.2.3"}', 3),
           KeyValue("/vxtun/members/42/192.0.2.4", '[1, 2]', 4),
           KeyValue("/vxtun/endpoints/42/ff:ff:ff:ff:ff:ff/192.0.2.2",
                    '{"vni": 42, "mac": "ff:ff:ff:ff:ff:ff", "vtep": "192.0.2.2"}', 5),
           KeyValue("/vxtun/endpoints/42/52:54:00:00:00:01/192.0.2.2",
                    '{"vni": 42, "mac": "52:54:00:00:00:01", "vtep": "192.0.2.2", "ips": 7}', 6),
           KeyValue("/vxtun/foreign", "x", 7),
           KeyValue("/vxtun/members/42/192.0.2.5",
                    model.member_value(model.Member(42, "192.0.2.5")), 8)]
    d = model.parse(8, kvs)
    assert list(d.members[42]) == ["192.0.2.5"]
    assert d.endpoints == {}
    assert len(d.bad) == 6 and all(": " in b for b in d.bad)


def test_file_store_leases_watches_and_compaction(tmp_path):
    now = [1000.0]
    s = FileStore(str(tmp_path / "s.sqlite"), clock=lambda: now[0])
    t = FileStore(str(tmp_path / "s.sqlite"), clock=lambda: now[0])    # a second agent
    lease = s.grant(5)
    r1 = s.put("/vxtun/members/42/192.0.2.1", "a", lease)
    w = t.watch("/vxtun/", r1)
    assert [(c.kind, c.key) for c in w.next(1)] == [("put", "/vxtun/members/42/192.0.2.1")]
    now[0] += 4
    s.keepalive(lease)
    now[0] += 4                       # 8 s after the grant, 4 after the keep-alive: alive
    assert t.snapshot("/vxtun/")[1][0].key == "/vxtun/members/42/192.0.2.1"
    now[0] += 2                       # 6 s after the keep-alive: expired, seen by any client
    batch = w.next(1)
    assert [(c.kind, c.key) for c in batch] == [("delete", "/vxtun/members/42/192.0.2.1")]
    assert batch[0].revision == r1 + 1
    with pytest.raises(LeaseExpired):
        s.keepalive(lease)
    rev, kvs = t.snapshot("/vxtun/")
    assert kvs == [] and rev == r1 + 1
    s.put("/other/x", "1")
    s.compact(rev + 1)
    with pytest.raises(Compacted) as e:
        t.watch("/vxtun/", r1).next(0.1)
    assert e.value.compact_revision == rev + 1

