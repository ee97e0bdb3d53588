"""Typed requests (vxtun/core/requests.py), the server side that carries them out
(vxtun/dataplane/commands.py ``handle``) and the core's rules for what an administrative change
reports (vxtun/core/vtep.py).  No root: ``handle`` runs against a VTEP with no sockets, over
the pure FDB and over the fast path's C FDB.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vxtun import _fastpath
from vxtun.cli.output import format_event
from vxtun.cli.requests import parse_fdb, parse_neigh
from vxtun.core import Vtep, VtepConfig
from vxtun.core.events import FdbChange, NeighChange
from vxtun.core.requests import (NUD_WORDS, Down, FdbDelete, FdbFlush, FdbShow, FdbUpdate, Monitor,
                                 NeighDelete, NeighFlush, NeighShow, NeighUpdate, Show, Stats,
                                 fdb_update_from_json, request_from_json)
from vxtun.dataplane import commands, owner
from vxtun.errors import LocalError
from vxtun.fdb import Fdb, Remote
from vxtun.proxy import NUD_STATES
from vxtun.wire import addr
from vxtun.wire.ether import ZERO_MAC, mac_from_str

MAC = "b2:ee:aa:42:8b:0b"
M = mac_from_str(MAC)
ADD = {"cmd": "fdb", "op": "add", "mac": MAC, "dst": "192.0.2.2"}
NEIGH = {"cmd": "neigh", "op": "add", "dst": "10.20.1.3", "lladdr": MAC}


def nested(depth: int):
    """A list ``depth`` deep, built without recursion (as json.loads would hand it over)."""
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


# --- request_from_json: everything is checked before anything changes -------------------------

BAD = [
    ([], "a request must be a JSON object, not a list"),
    ("show", "a request must be a JSON object, not 'show'"),
    (42, "a request must be a JSON object, not 42"),
    (None, "a request must be a JSON object, not null"),
    (nested(100000), "a request must be a JSON object, not a list"),
    ({}, "unknown command null"),
    ({"cmd": "poke"}, "unknown command 'poke'"),
    ({"cmd": nested(100000)}, "unknown command a list"),
    ({"cmd": "show", "op": "x"}, "show takes no operation, not 'x'"),
    ({"cmd": "stats", "dev": "vxtun0"}, "unknown field 'dev' in stats"),
    ({"cmd": "fdb"}, "unknown fdb operation null"),
    ({"cmd": "fdb", "op": "delete", "mac": MAC}, "unknown fdb operation 'delete'"),
    ({"cmd": "neigh", "op": ["add"]}, "unknown neigh operation a list"),
    ({**ADD, "via": 123}, "via must be a string, not 123"),
    ({**ADD, "via": nested(100000)}, "via must be a string, not a list"),
    ({**ADD, "dst": 5}, "dst address must be a string, not 5"),
    ({**ADD, "dst": "192.0.2.300"}, "invalid dst address '192.0.2.300'"),
    ({**ADD, "dst": None}, "fdb add on a VTEP needs a destination: dst IP"),
    ({**ADD, "mac": None}, "fdb add needs a MAC address"),
    ({**ADD, "mac": "b2:ee:aa:42:8b"}, "invalid MAC address 'b2:ee:aa:42:8b'"),
    ({**ADD, "mac": {"a": 1}}, "a MAC address must be a string, not an object"),
    ({**ADD, "port": True}, "port must be a number, not true"),
    ({**ADD, "port": "4789"}, "port must be a number, not '4789'"),
    ({**ADD, "port": 65536}, "invalid port 65536: must be 0..65535"),
    ({**ADD, "port": 4789.5}, "port must be a number, not 4789.5"),
    ({**ADD, "vni": False}, "vni must be a number, not false"),
    ({**ADD, "vni": 1 << 24}, "invalid vni 16777216: must be 0..16777215"),
    ({**ADD, "vni": -1}, "invalid vni -1"),
    ({**ADD, "vni": 10**5000}, "invalid vni a number out of range: must be 0..16777215"),
    ({**ADD, "state": "sticky"}, "invalid fdb state 'sticky' (expected permanent, static or "
                                 "dynamic)"),
    ({**ADD, "state": ["permanent"]}, "invalid fdb state a list"),
    ({**ADD, "vin": 5}, "unknown field 'vin' in fdb add"),
    ({"cmd": "fdb", "op": "del", "mac": MAC, "dst": 5}, "dst address must be a string"),
    ({"cmd": "fdb", "op": "del"}, "fdb del needs a MAC address"),
    ({"cmd": "fdb", "op": "flush", "dynamic": 1}, "dynamic must be true or false, not 1"),
    ({"cmd": "fdb", "op": "flush", "dynamic": "yes"}, "dynamic must be true or false"),
    ({"cmd": "fdb", "op": "show", "mac": MAC}, "unknown field 'mac' in fdb show"),
    ({**NEIGH, "dst": 5}, "neighbour address must be a string, not 5"),
    ({"cmd": "neigh", "op": "del", "dst": 5}, "neighbour address must be a string, not 5"),
    ({"cmd": "neigh", "op": "del", "dst": "10.20.1.300"}, "invalid neighbour address"),
    ({"cmd": "neigh", "op": "del"}, "neigh del needs an IP address: dst"),
    ({**NEIGH, "lladdr": None}, "neigh add needs lladdr MAC"),
    ({**NEIGH, "lladdr": 7}, "a MAC address must be a string, not 7"),
    ({**NEIGH, "nud": "incomplete"}, "invalid nud state 'incomplete' (expected permanent, "
                                     "reachable, stale or noarp)"),
    ({**NEIGH, "nud": "all"}, "invalid nud state 'all'"),
    ({"cmd": "neigh", "op": "show", "nud": 3}, "invalid nud state 3"),
    ({"cmd": "neigh", "op": "show", "to": ["10.20.1.3"]}, "neighbour address must be a "
                                                          "string, not a list"),
    ({"cmd": "neigh", "op": "flush", "nud": "bogus"}, "invalid nud state 'bogus'"),
    ({"cmd": "neigh", "op": "flush", "to": 3}, "neighbour address must be a string, not 3"),
]


@pytest.mark.parametrize("obj, message", BAD, ids=range(len(BAD)))
def test_a_malformed_request_is_a_local_error(obj, message):
    with pytest.raises(LocalError) as e:
        request_from_json(obj)
    assert message in str(e.value)
    assert len(str(e.value)) < 200          # a flat message, whatever the request held


def test_a_long_string_is_shortened_in_the_message():
    with pytest.raises(LocalError) as e:
        request_from_json({**ADD, "dst": "x" * 100000})
    assert len(str(e.value)) < 200


GOOD = [
    (Show(), {"cmd": "show"}),
    (Stats(), {"cmd": "stats"}),
    (Down(), {"cmd": "down"}),
    (Monitor(), {"cmd": "monitor"}),
    (FdbUpdate("add", M, Remote("192.0.2.2")),
     {**ADD, "state": "permanent"}),
    (FdbUpdate("append", ZERO_MAC, Remote("2001:db8::1", 4790, 7, "eth0"), "static"),
     {"cmd": "fdb", "op": "append", "mac": "00:00:00:00:00:00", "dst": "2001:db8::1",
      "port": 4790, "vni": 7, "via": "eth0", "state": "static"}),
    (FdbUpdate("replace", M, Remote("192.0.2.2", vni=0), "dynamic"),
     {**ADD, "op": "replace", "vni": 0, "state": "dynamic"}),
    (FdbDelete(M), {"cmd": "fdb", "op": "del", "mac": MAC}),
    (FdbDelete(M, "192.0.2.2", 4790, 7),
     {"cmd": "fdb", "op": "del", "mac": MAC, "dst": "192.0.2.2", "port": 4790, "vni": 7}),
    (FdbShow(), {"cmd": "fdb", "op": "show"}),
    (FdbFlush(), {"cmd": "fdb", "op": "flush"}),
    (FdbFlush(dynamic=True), {"cmd": "fdb", "op": "flush", "dynamic": True}),
    (NeighUpdate("change", "10.20.1.3", M, "reachable"),
     {**NEIGH, "op": "change", "nud": "reachable"}),
    (NeighDelete("2001:db8:1020::3"), {"cmd": "neigh", "op": "del", "dst": "2001:db8:1020::3"}),
    (NeighShow(), {"cmd": "neigh", "op": "show"}),
    (NeighShow("10.20.1.3", "all"), {"cmd": "neigh", "op": "show", "to": "10.20.1.3",
                                     "nud": "all"}),
    (NeighFlush(), {"cmd": "neigh", "op": "flush"}),
    (NeighFlush("10.20.1.3", all_states=True),
     {"cmd": "neigh", "op": "flush", "to": "10.20.1.3", "nud": "all"}),
]


@pytest.mark.parametrize("req, js", GOOD, ids=[type(r).__name__ for r, _ in GOOD])
def test_requests_travel_as_json_and_back(req, js):
    assert req.to_json() == js
    assert request_from_json(json.loads(json.dumps(js))) == req


def test_the_nud_words_are_the_neighbour_tables_states():
    assert sorted(NUD_WORDS) == sorted(NUD_STATES)


def test_constructors_canonicalise():
    u = FdbUpdate("add", bytearray(M), Remote("2001:DB8:0::0001", via=""))
    assert u.mac == M and u.remote == Remote("2001:db8::1")
    assert NeighUpdate("add", "2001:DB8:1020::3", MAC).lladdr == M
    assert FdbDelete(MAC.upper(), "2001:DB8::1").dst == "2001:db8::1"
    # null stands for an absent field, as the server has always read it
    assert request_from_json({**ADD, "port": None, "vni": None, "via": None, "state": None}) \
        == FdbUpdate("add", M, Remote("192.0.2.2"))


def test_constructors_refuse_what_json_would():
    with pytest.raises(LocalError, match="a MAC address is 6 bytes"):
        FdbUpdate("add", b"\x01\x02", Remote("192.0.2.2"))
    with pytest.raises(LocalError, match="unknown fdb operation 'del'"):
        FdbUpdate("del", M, Remote("192.0.2.2"))
    with pytest.raises(LocalError, match="an FDB destination is a Remote"):
        FdbUpdate("add", M, "192.0.2.2")
    with pytest.raises(LocalError, match="unknown neigh operation 'del'"):
        NeighUpdate("del", "10.20.1.3", M)
    with pytest.raises(LocalError, match="all_states must be true or false"):
        NeighFlush(all_states="all")


def test_the_owner_takes_only_fdb_updates():
    u = FdbUpdate("append", ZERO_MAC, Remote("192.0.2.3"))
    assert owner.fdb_from_json(owner.fdb_to_json(u)) == u
    assert fdb_update_from_json(u.to_json()) == u
    with pytest.raises(LocalError, match="must be fdb add, append or replace, not fdb del"):
        fdb_update_from_json({"cmd": "fdb", "op": "del", "mac": MAC})
    with pytest.raises(LocalError, match="not show"):
        fdb_update_from_json({"cmd": "show"})


def test_the_cli_builds_the_same_typed_requests():
    assert parse_fdb(["add", MAC.upper(), "dst", "192.0.2.2", "dev", "vxtun0"]).request == \
        FdbUpdate("add", M, Remote("192.0.2.2"))
    assert parse_fdb(["append", "00:00:00:00:00:00", "dst", "2001:db8::0001", "port", "4790",
                      "vni", "7", "via", "eth0", "static"]).request == \
        FdbUpdate("append", ZERO_MAC, Remote("2001:db8::1", 4790, 7, "eth0"), "static")
    assert parse_fdb(["del", MAC, "dst", "192.0.2.2", "self", "permanent"]).request == \
        FdbDelete(M, "192.0.2.2")
    assert parse_fdb(["flush", "dynamic"]).request == FdbFlush(dynamic=True)
    assert parse_fdb(["list", "-j"]).request == FdbShow()
    assert parse_neigh(["replace", "10.20.1.3", "lladdr", MAC, "nud", "stale"]).request == \
        NeighUpdate("replace", "10.20.1.3", M, "stale")
    assert parse_neigh(["delete", "10.20.1.3", "dev", "vxtun0"]).request == \
        NeighDelete("10.20.1.3")
    assert parse_neigh(["flush", "nud", "stale"]).request == NeighFlush()
    assert parse_neigh(["show", "to", "10.20.1.3", "nud", "noarp"]).request == \
        NeighShow("10.20.1.3", "noarp")


def test_the_cli_still_names_a_missing_value_in_its_words():
    with pytest.raises(LocalError, match="lladdr needs a value"):
        parse_neigh(["add", "10.20.1.3", "lladdr"])
    with pytest.raises(LocalError, match="via needs a value"):
        parse_fdb(["add", MAC, "dst", "192.0.2.2", "via"])


# --- one address parser -------------------------------------------------------------------------


def test_addresses_are_parsed_in_one_place():
    assert addr.canonical_ip("2001:DB8:0::0001", "dst") == "2001:db8::1"
    assert addr.ip_version("::ffff:192.0.2.1") == 6         # a colon is not the test; the parse is
    assert addr.ip_version("192.0.2.1") == 4
    assert addr.ip_from_bytes(addr.ip_to_bytes("2001:db8::1")) == "2001:db8::1"
    assert addr.is_ip("10.20.1.3") and not addr.is_ip("10.20.1.300")
    assert sorted(["2001:db8::1", "10.0.0.10", "10.0.0.9"], key=addr.ip_sort_key) == \
        ["10.0.0.9", "10.0.0.10", "2001:db8::1"]
    with pytest.raises(LocalError, match="invalid remote address '300.1.1.1'"):
        addr.canonical_ip("300.1.1.1", "remote")
    with pytest.raises(LocalError, match="invalid IP address of type int"):
        addr.parse_ip(5)


# --- handle(): the server side, over both FDBs ----------------------------------------------


class FakeNode:
    """What ``handle`` needs of a Node for the table requests: nothing but after_core."""

    def __init__(self) -> None:
        self.after = 0

    def after_core(self, port) -> None:
        self.after += 1


@pytest.fixture(params=["pure", "fast"])
def port(request):
    cfg = VtepConfig(vni=42, name="vxtun0", local="192.0.2.1", remote="192.0.2.9", dev="eth0",
                     dstport=4789, proxy=True)
    fdb = (Fdb(cfg.ageing, cfg.maxaddress, cfg.learning) if request.param == "pure"
           else Fdb(store=_fastpath.CFdb(cfg.ageing, cfg.maxaddress, cfg.learning)))
    return SimpleNamespace(config=cfg, vtep=Vtep(cfg, fdb=fdb))


def call(port, req):
    return commands.handle(FakeNode(), port, None, req)


def events(port) -> list:
    out = []
    while (ev := port.vtep.next_event()) is not None:
        out.append(ev)
    return out


def text(port) -> list[str]:
    return [format_event(ev, with_dev=False) for ev in events(port)]


@pytest.mark.parametrize("obj, message", BAD, ids=range(len(BAD)))
def test_handle_answers_any_malformed_request_with_a_local_error(port, obj, message):
    before = port.vtep.fdb_show()
    with pytest.raises(LocalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(port, obj)
    assert port.vtep.fdb_show() == before
    assert events(port) == []


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(["cmd", "op", "mac", "dst", "port", "vni",
                                                       "via", "state", "lladdr", "nud", "to",
                                                       "dynamic", "x"]), inner, max_size=6),
                    max_leaves=20),
       st.sampled_from(["fdb", "neigh", "show", "stats", "down", "monitor"]),
       st.sampled_from(["add", "append", "replace", "change", "del", "show", "flush"]))
def test_handle_raises_nothing_but_local_error(obj, cmd, op):
    cfg = VtepConfig(vni=42, name="vxtun0", local="192.0.2.1", remote="192.0.2.9")
    p = SimpleNamespace(config=cfg, vtep=Vtep(cfg))
    for req in (obj, {"cmd": cmd, "op": op, **obj} if isinstance(obj, dict) else obj):
        if isinstance(req, dict) and req.get("cmd") in ("show", "stats", "down", "monitor"):
            continue        # those need a whole Node; request_from_json checks them below
        try:
            request_from_json(req)
            call(p, req)
        except LocalError:
            pass


def test_fdb_add_append_and_del_report_the_destinations_they_touch(port):
    call(port, {"cmd": "fdb", "op": "append", "mac": "00:00:00:00:00:00", "dst": "192.0.2.2"})
    call(port, {**ADD, "port": 4789, "vni": 42, "via": "eth0"})
    call(port, {**ADD, "op": "replace", "dst": "192.0.2.3", "port": 4790, "vni": 43,
                "state": "static"})
    assert text(port) == [
        "00:00:00:00:00:00 dev vxtun0 dst 192.0.2.2 self permanent",   # not 192.0.2.9 as well
        f"{MAC} dev vxtun0 dst 192.0.2.2 via eth0 self permanent",     # the device's port, vni
        f"{MAC} dev vxtun0 dst 192.0.2.3 port 4790 vni 43 self static"]
    call(port, {"cmd": "fdb", "op": "del", "mac": "00:00:00:00:00:00", "dst": "192.0.2.9"})
    call(port, {"cmd": "fdb", "op": "del", "mac": MAC})
    assert text(port) == [
        "Deleted 00:00:00:00:00:00 dev vxtun0 dst 192.0.2.9 via eth0 self permanent",
        f"Deleted {MAC} dev vxtun0 dst 192.0.2.3 port 4790 vni 43 self static"]
    (entry,) = call(port, {"cmd": "fdb", "op": "show"})
    assert entry["remotes"] == [{"dst": "192.0.2.2"}]


def test_fdb_changes_are_events_of_data(port):
    call(port, {**ADD, "dst": "192.0.2.2", "state": "dynamic"})
    (ev,) = events(port)
    assert ev == FdbChange("new", "vxtun0", M, (Remote("192.0.2.2"),), "dynamic")
    assert ev.to_json()["state"] == ""          # bridge prints no state for NUD_REACHABLE


def test_a_refused_change_changes_nothing_and_reports_nothing(port):
    before = call(port, {"cmd": "fdb", "op": "show"})
    for req, message in [({**ADD, "dst": "2001:db8::2"}, "dst 2001:db8::2 is IPv6 but vxtun0 "
                                                         "has an IPv4 underlay"),
                         ({**ADD, "mac": "00:00:00:00:00:00"}, "already exists"),
                         ({"cmd": "fdb", "op": "del", "mac": MAC}, "does not exist"),
                         ({"cmd": "fdb", "op": "del", "mac": "00:00:00:00:00:00",
                           "dst": "192.0.2.7"}, "has no destination 192.0.2.7"),
                         ({"cmd": "neigh", "op": "change", "dst": "10.20.1.3",
                           "lladdr": MAC}, "does not exist"),
                         ({"cmd": "neigh", "op": "del", "dst": "10.20.1.3"}, "does not exist")]:
        with pytest.raises(LocalError, match=message):
            call(port, req)
    assert call(port, {"cmd": "fdb", "op": "show"}) == before
    assert events(port) == []


def test_fdb_flush_keeps_what_was_added(port):
    call(port, {**ADD, "state": "static"})
    port.vtep.fdb.learn(mac_from_str("02:00:00:00:00:01"), "192.0.2.5", 1.0)
    call(port, {"cmd": "fdb", "op": "flush", "dynamic": True})
    assert [e["mac"] for e in call(port, {"cmd": "fdb", "op": "show"})] == \
        ["00:00:00:00:00:00", MAC]
    call(port, {"cmd": "fdb", "op": "flush"})
    assert call(port, {"cmd": "fdb", "op": "show"}) == []


def test_neigh_changes_are_reported_only_when_something_changed(port):
    call(port, {**NEIGH, "nud": "reachable"})
    call(port, {**NEIGH, "op": "replace", "nud": "reachable"})         # a refresh: silent
    call(port, {**NEIGH, "op": "change", "nud": "permanent"})
    call(port, {**NEIGH, "op": "replace", "lladdr": "02:00:00:00:00:07", "nud": "permanent"})
    call(port, {"cmd": "neigh", "op": "del", "dst": "10.20.1.3"})
    assert text(port) == [f"10.20.1.3 lladdr {MAC} REACHABLE",
                          f"10.20.1.3 lladdr {MAC} PERMANENT",
                          "10.20.1.3 lladdr 02:00:00:00:00:07 PERMANENT",
                          "Deleted 10.20.1.3 FAILED"]


def test_neigh_show_and_flush(port):
    for ip, nud in [("10.20.1.3", "permanent"), ("10.20.1.4", "noarp"),
                    ("2001:db8:1020::3", "reachable"), ("10.20.1.5", "stale")]:
        call(port, {**NEIGH, "dst": ip, "nud": nud})
    events(port)

    def show(**kw):
        return [r["dst"] for r in call(port, {"cmd": "neigh", "op": "show", **kw})]
    assert show() == ["10.20.1.3", "10.20.1.5", "2001:db8:1020::3"]       # no noarp
    assert show(nud="all") == ["10.20.1.3", "10.20.1.4", "10.20.1.5", "2001:db8:1020::3"]
    assert show(nud="stale") == ["10.20.1.5"]
    assert show(to="2001:DB8:1020::3") == ["2001:db8:1020::3"]
    call(port, {"cmd": "neigh", "op": "flush"})
    assert sorted(text(port)) == ["Deleted 10.20.1.5 FAILED", "Deleted 2001:db8:1020::3 FAILED"]
    call(port, {"cmd": "neigh", "op": "flush", "to": "10.20.1.4", "nud": "all"})
    assert [ev.ip for ev in events(port)] == ["10.20.1.4"]
    assert show(nud="all") == ["10.20.1.3"]


def test_neigh_changes_are_events_of_data(port):
    call(port, {**NEIGH, "nud": "stale"})
    call(port, {"cmd": "neigh", "op": "del", "dst": "10.20.1.3"})
    assert events(port) == [NeighChange("new", "vxtun0", "10.20.1.3", M, "stale"),
                            NeighChange("del", "vxtun0", "10.20.1.3", None, "failed")]


def test_handle_tells_the_node_after_every_request():
    cfg = VtepConfig(vni=42, name="vxtun0", local="192.0.2.1")
    node = FakeNode()
    commands.handle(node, SimpleNamespace(config=cfg, vtep=Vtep(cfg)), None,
                    {"cmd": "fdb", "op": "show"})
    assert node.after == 1


# --- layers ----------------------------------------------------------------------------------


def outer_imports(source: str) -> list[str]:
    """The vxtun subpackages outside the core that a module of vxtun/<layer>/ imports."""
    import ast
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level >= 2:      # from ..X import ...
            tops = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops = [node.module.split(".")[1]] if node.module.startswith("vxtun.") else []
        elif isinstance(node, ast.Import):
            tops = [a.name.split(".")[1] for a in node.names if a.name.startswith("vxtun.")]
        else:
            continue
        found += [t for t in tops if t in ("cli", "dataplane", "io", "_fastpath", "api", "lab")]
    return found


def test_the_core_imports_no_outer_layer():
    """core, fdb, proxy and wire state the rules; the CLI, the dataplane and I/O use them, never
    the other way round (so the core's events cannot carry CLI text)."""
    from pathlib import Path
    assert outer_imports("from ..cli.output import x\nfrom .. import io\nimport vxtun.lab") == \
        ["cli", "io", "lab"]
    pkg = Path(__file__).resolve().parents[2] / "vxtun"
    for layer in ("core", "fdb", "proxy", "wire"):
        for path in sorted((pkg / layer).glob("*.py")):
            assert outer_imports(path.read_text()) == [], path
