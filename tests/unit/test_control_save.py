"""``vxtun save`` (vxtun/cli/configfile.py ``dump``): the TOML it writes is what ``vxtun up
--config`` reads, and a VTEP started from it has the configuration, the added FDB entries
(not the learned ones) and the neighbour table of the one saved.  No root: the answers are
made by the core's own Vtep, as commands.py makes them."""
from __future__ import annotations

import tomllib

import pytest

from vxtun.cli.configfile import dump, parse
from vxtun.core import Vtep, VtepConfig
from vxtun.core.requests import NeighUpdate
from vxtun.errors import LocalError
from vxtun.fdb import Remote
from vxtun.wire.ether import mac_from_str, mac_to_str


def answers(v: Vtep) -> dict:
    """What ``show``, ``fdb show`` and ``neigh show nud all`` answer for ``v``
    (vxtun/dataplane/commands.py)."""
    cfg = v.config
    show = cfg.to_json()
    show.update({"mtu": cfg.mtu, "address": mac_to_str(cfg.mac), "addresses": cfg.address,
                 "master": cfg.master, "tos": cfg.tos, "reachable_time": cfg.reachable_time,
                 "gc_stale_time": cfg.gc_stale_time})
    return {"show": show, "fdb": v.fdb_show(), "neigh": v.neigh_show(0.0, nud="all")}


def started(text: str) -> list[Vtep]:
    """The VTEPs ``vxtun up --config`` of ``text`` starts, with their entries applied as
    vxtun/dataplane/lifecycle.py applies them."""
    configs, entries = parse(tomllib.loads(text), "saved")
    out = []
    for cfg in configs:
        v = Vtep(cfg)
        for u in entries[cfg.name]:
            if isinstance(u, NeighUpdate):
                v.neigh.add(u.ip, u.lladdr, u.nud, 0.0, u.op)
            else:
                v.fdb.add(u.mac, u.remote, u.state, 0.0, u.op)
        out.append(v)
    return out


def test_save_then_up_gives_the_same_vteps_and_tables():
    a = Vtep(VtepConfig(vni=42, name="vx42", local="192.0.2.1", remote="192.0.2.2",
                        dev="eth0", mtu=1400, mac=mac_from_str("02:00:00:00:00:2a"),
                        address=["10.20.1.1/24", "2001:db8:1::1/64"], ageing=120.5,
                        maxaddress=1000, proxy=True, l3miss=True, srcport=(40000, 50000),
                        reachable_time=15.0))
    a.fdb_update("append", bytes(6), Remote("192.0.2.3"), "permanent", 0.0)
    a.fdb_update("append", bytes(6), Remote("192.0.2.4", port=8472, vni=7), "permanent", 0.0)
    a.fdb_update("add", mac_from_str("52:5e:55:58:9a:ab"), Remote("192.0.2.5", via="eth1"),
                 "static", 0.0)
    a.fdb_update("replace", mac_from_str("52:5e:55:58:9a:ac"), Remote("192.0.2.6"),
                 "permanent", 0.0)
    a.fdb.learn(mac_from_str("02:11:22:33:44:55"), "192.0.2.9", 0.0)       # learned: not saved
    a.neigh_update("add", "10.20.1.4", mac_from_str("52:5e:55:58:9a:ab"), "permanent", 0.0)
    a.neigh_update("add", "10.20.1.5", mac_from_str("52:5e:55:58:9a:ac"), "noarp", 0.0)
    a.neigh_update("add", "2001:db8:1::5", mac_from_str("52:5e:55:58:9a:ad"), "reachable", 0.0)
    b = Vtep(VtepConfig(vni=43, name="vx43", local="192.0.2.1", group="239.1.1.43", dev="eth0",
                        learning=False, ttl=3, tos="inherit", df="set", udpcsum=False))
    text = dump([answers(a), answers(b)])
    a2, b2 = started(text)
    assert a2.config == a.config
    assert b2.config == b.config
    learned = "02:11:22:33:44:55"
    assert a2.fdb_show() == [e for e in a.fdb_show() if e["mac"] != learned]
    assert a2.neigh_show(0.0, nud="all") == a.neigh_show(0.0, nud="all")
    assert b2.fdb_show() == b.fdb_show()
    # the file reads as an operator would write it
    assert '"00:00:00:00:00:00 dst 192.0.2.4 port 8472 vni 7 permanent",' in text
    assert '"52:5e:55:58:9a:ab dst 192.0.2.5 via eth1 static",' in text
    assert '"2001:db8:1::5 lladdr 52:5e:55:58:9a:ad nud reachable",' in text
    assert learned not in text


def test_a_bad_neigh_line_in_a_config_file_says_where():
    doc = {"vtep": [{"name": "vx1", "vni": 1, "neigh": ["10.20.1.4 lladdr nonsense"]}]}
    with pytest.raises(LocalError, match=r"cfg: vtep #1 \(vx1\): neigh '10.20.1.4 lladdr "
                                         r"nonsense': "):
        parse(doc, "cfg")
    doc = {"vtep": [{"name": "vx1", "vni": 1, "neigh": "10.20.1.4"}]}
    with pytest.raises(LocalError, match="neigh must be a list of strings"):
        parse(doc, "cfg")
