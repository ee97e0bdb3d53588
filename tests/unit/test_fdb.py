"""The FDB's rules, each checked against what the kernel's vxlan driver does.

The kernel behaviour quoted here was observed with ``bridge fdb`` on a vxlan device (iproute2
6.1, Linux 6.x); ``tests/netns/test_l2.py`` checks the same rules end to end.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxtun._fastpath import CFdb
from vxtun.errors import FdbError
from vxtun.fdb import (LEARN_FULL, LEARN_MOVED, LEARN_NEW, LEARN_OFF, LEARN_PINNED,
                       LEARN_REFRESH, DictStore, Fdb, Remote)
from vxtun.wire.ether import ZERO_MAC, mac_from_str

M1 = mac_from_str("52:5e:55:58:9a:ab")
M2 = mac_from_str("d6:d9:cd:0a:a4:28")
MCAST = mac_from_str("01:00:5e:00:00:01")
A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"


# Every rule runs over both stores: the pure one, and the fast path's C table (the same
# administrative rules in Fdb, its data-path rules in C).
STORES = {"dict": DictStore, "cfdb": CFdb}
pytestmark = pytest.mark.parametrize("store", list(STORES.values()), ids=list(STORES))


def new(store, **kw) -> Fdb:
    return Fdb(store=store(**kw))


def ips(remotes):
    return [r.ip for r in remotes]


# --- learning (vxlan_snoop) ----------------------------------------------------------------

def test_learn_new_then_refresh(store):
    f = new(store)
    assert f.learn(M1, A, 0.0) == LEARN_NEW
    assert f.get(M1).state == "dynamic"
    assert f.learn(M1, A, 5.0) == LEARN_REFRESH
    assert f.get(M1).updated == 5.0
    assert ips(f.lookup(M1, 6.0)) == [A]


def test_learned_mac_moves_to_the_new_vtep(store):
    f = new(store)
    f.learn(M1, A, 0.0)
    assert f.learn(M1, B, 1.0) == LEARN_MOVED
    assert ips(f.lookup(M1, 1.0)) == [B]
    assert f.get(M1).updated == 1.0


@pytest.mark.parametrize("state", ["permanent", "static"])
def test_static_and_permanent_macs_are_pinned(store, state):
    f = new(store)
    f.add(M1, Remote(A), state)
    assert f.learn(M1, B, 1.0) == LEARN_PINNED
    assert ips(f.lookup(M1, 1.0)) == [A]
    # Seen from its own VTEP it is simply delivered.
    assert f.learn(M1, A, 2.0) == LEARN_REFRESH


def test_user_added_dynamic_entry_can_move(store):
    f = new(store)
    f.add(M1, Remote(A), "dynamic", now=0.0)
    assert f.learn(M1, B, 1.0) == LEARN_MOVED


def test_nolearning_learns_nothing_and_pins_nothing(store):
    f = new(store, learning=False)
    assert f.learn(M1, A, 0.0) == LEARN_OFF
    assert f.get(M1) is None
    f.add(M2, Remote(A), "static")
    # The kernel does not snoop at all without learning: no pinning drop either.
    assert f.learn(M2, B, 0.0) == LEARN_OFF


# --- ageing (vxlan_cleanup) --------------------------------------------------------------------

def test_learned_entries_age_even_while_used_as_destinations(store):
    f = new(store, ageing=10)
    f.learn(M1, A, 0.0)
    for t in range(0, 10):
        assert f.lookup(M1, float(t)) is not None   # used as a destination every second
    assert f.lookup(M1, 10.0) is None
    assert f.get(M1) is None


def test_expire_removes_only_dynamic_entries(store):
    f = new(store, ageing=10)
    f.learn(M1, A, 0.0)
    f.add(M2, Remote(B), "static")
    f.add(ZERO_MAC, Remote(C), "permanent")
    assert f.expire(9.9) == []
    gone = f.expire(10.0)
    assert [e.mac for e in gone] == [M1]
    assert {e.mac for e in f.entries()} == {M2, ZERO_MAC}


def test_refresh_postpones_ageing(store):
    f = new(store, ageing=10)
    f.learn(M1, A, 0.0)
    f.learn(M1, A, 8.0)
    assert f.expire(12.0) == []
    assert len(f.expire(18.0)) == 1


# --- maxaddress ------------------------------------------------------------------------------

def test_maxaddress_caps_learning_but_not_the_administrator(store):
    f = new(store, maxaddress=3)
    f.add(ZERO_MAC, Remote(A), "permanent")
    assert f.learn(M1, B, 0.0) == LEARN_NEW
    assert f.learn(M2, B, 0.0) == LEARN_NEW
    assert f.learn(mac_from_str("02:00:00:00:00:01"), B, 0.0) == LEARN_FULL
    assert len(f) == 3
    # Known MACs still refresh and move at the cap.
    assert f.learn(M1, B, 1.0) == LEARN_REFRESH
    assert f.learn(M1, C, 1.0) == LEARN_MOVED
    # A static add still works (the kernel would say ENOSPC; see the module docstring).
    f.add(mac_from_str("02:00:00:00:00:02"), Remote(C), "static")
    assert len(f) == 4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=6, max_size=6), max_size=300), st.integers(1, 40))
def test_maxaddress_bounds_the_table_under_random_sources(store, macs, cap):
    f = new(store, maxaddress=cap)
    for i, m in enumerate(macs):
        m = bytes([m[0] & 0xFE]) + m[1:]           # unicast sources only, like vxlan_rcv
        f.learn(m, f"192.0.2.{i % 250 + 1}", float(i))
        assert len(f) <= cap


# --- bridge fdb add / append / replace / del ----------------------------------------------------

def test_add_refuses_an_existing_entry(store):
    f = new(store)
    f.add(M1, Remote(A))
    with pytest.raises(FdbError, match="already exists"):
        f.add(M1, Remote(B))
    assert ips(f.get(M1).remotes) == [A]


def test_append_builds_the_flood_list(store):
    f = new(store)
    f.add(ZERO_MAC, Remote(A), op="append")
    f.add(ZERO_MAC, Remote(B), op="append")
    f.add(ZERO_MAC, Remote(C, port=4790, vni=43), op="append")
    assert ips(f.lookup(ZERO_MAC, 0.0)) == [A, B, C]


def test_append_of_a_listed_destination_changes_nothing(store):
    f = new(store)
    f.add(ZERO_MAC, Remote(A), op="append")
    f.add(ZERO_MAC, Remote(A), op="append")
    assert ips(f.get(ZERO_MAC).remotes) == [A]


def test_append_to_a_multicast_mac(store):
    f = new(store)
    f.add(MCAST, Remote(A))
    f.add(MCAST, Remote(B), op="append")
    assert ips(f.get(MCAST).remotes) == [A, B]


def test_append_creates_a_unicast_entry_but_refuses_a_second_destination(store):
    f = new(store)
    f.add(M1, Remote(A), op="append")             # a unicast entry, as the kernel makes
    with pytest.raises(FdbError, match="only the all-zeros or a multicast MAC"):
        f.add(M1, Remote(B), op="append")
    assert ips(f.get(M1).remotes) == [A]
    f.add(M1, Remote(A), "static", op="append")    # same destination: only the state changes
    assert f.get(M1).state == "static"


def test_replace_repoints_unicast_and_refuses_flood_lists(store):
    f = new(store)
    f.add(M1, Remote(A))
    f.add(M1, Remote(B), "static", op="replace")
    assert ips(f.get(M1).remotes) == [B]
    assert f.get(M1).state == "static"
    f.add(ZERO_MAC, Remote(A), op="append")
    with pytest.raises(FdbError, match="flood list"):
        f.add(ZERO_MAC, Remote(B), op="replace")
    with pytest.raises(FdbError, match="flood list"):
        f.add(MCAST, Remote(B), op="replace")      # EOPNOTSUPP even when absent
    assert f.get(MCAST) is None
    f.add(M2, Remote(C), op="replace")             # replace creates a missing unicast entry
    assert ips(f.get(M2).remotes) == [C]


def test_del_one_destination_then_the_entry(store):
    f = new(store)
    for ip in (A, B):
        f.add(ZERO_MAC, Remote(ip), op="append")
    f.delete(ZERO_MAC, B)
    assert ips(f.get(ZERO_MAC).remotes) == [A]
    f.delete(ZERO_MAC, A)
    assert f.get(ZERO_MAC) is None


def test_del_errors_change_nothing(store):
    f = new(store)
    f.add(ZERO_MAC, Remote(A), op="append")
    with pytest.raises(FdbError, match="does not exist"):
        f.delete(M1)
    with pytest.raises(FdbError, match="no destination"):
        f.delete(ZERO_MAC, C)
    assert ips(f.get(ZERO_MAC).remotes) == [A]


def test_del_matches_port_and_vni(store):
    f = new(store)
    f.add(ZERO_MAC, Remote(A, port=4790), op="append")
    f.add(ZERO_MAC, Remote(A, vni=43), op="append")
    f.delete(ZERO_MAC, A, port=4790)
    assert f.get(ZERO_MAC).remotes == [Remote(A, vni=43)]


def test_bad_state_or_operation_is_refused(store):
    f = new(store)
    with pytest.raises(FdbError):
        f.add(M1, Remote(A), "reachable")
    with pytest.raises(FdbError):
        f.add(M1, Remote(A), op="prepend")
    assert len(f) == 0


def test_expired_entry_can_be_added_again(store):
    f = new(store, ageing=5)
    f.learn(M1, A, 0.0)
    f.add(M1, Remote(B), now=5.0)                  # aged out: add sees no entry
    assert f.get(M1).state == "permanent"


def test_flush_dynamic_keeps_static(store):
    f = new(store)
    f.learn(M1, A, 0.0)
    f.add(M2, Remote(B), "static")
    f.flush(dynamic_only=True)
    assert [e.mac for e in f.entries()] == [M2]
    f.flush()
    assert len(f) == 0


def test_entries_list_the_default_first(store):
    f = new(store)
    f.learn(M1, A, 0.0)
    f.add(ZERO_MAC, Remote(B), op="append")
    assert f.entries()[0].mac == ZERO_MAC


# --- a model check: the table never holds a duplicate and never grows past the cap -------------

OPS = st.lists(st.tuples(
    st.sampled_from(["learn", "add", "append", "replace", "del", "expire"]),
    st.sampled_from([M1, M2, MCAST, ZERO_MAC]),
    st.sampled_from([A, B, C]),
    st.floats(0, 100)), max_size=60)


@settings(max_examples=100, deadline=None)
@given(OPS)
def test_invariants_under_any_sequence(store, ops):
    f = new(store, ageing=20, maxaddress=3)
    now = 0.0
    for op, mac, ip, dt in ops:
        now += dt
        try:
            if op == "learn":
                if mac[0] & 1 or mac == ZERO_MAC:
                    continue
                n = len(f)
                f.learn(mac, ip, now)
                assert len(f) <= max(n, 3)
            elif op == "del":
                f.delete(mac, ip)
            elif op == "expire":
                f.expire(now)
            else:
                f.add(mac, Remote(ip), "permanent", now, op)
        except FdbError:
            pass
        for e in f.entries():
            assert e.remotes, "an entry without destinations"
            assert len(set(e.remotes)) == len(e.remotes), "a duplicate destination"
            if not e.is_group:
                assert len(e.remotes) == 1, "a unicast MAC with several destinations"
