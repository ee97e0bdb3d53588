"""FDB and receive rules that follow the kernel's vxlan driver, over both dataplanes' pieces.

Each rule is checked on the pure core (``Vtep`` over a ``DictStore``) and on the fast path's
(the C decisions of ``_fastpath.Decisions`` over a ``CFdb``, whose punts go to a ``Vtep`` as
``vxtun.dataplane.fast.handle_punt`` hands them):

* with learning off, a zero or multicast inner source MAC is delivered (vxlan_set_mac calls
  vxlan_snoop, which checks is_valid_ether_addr, only with VXLAN_F_LEARN);
* the own-MAC check uses the address the VTEP has now (``set_mac``), not the one at start;
* a remote's port and VNI are used, ``vni 0`` too: the kernel sends VNI 0 (vxlan_xmit_one's
  ``rdst->remote_vni ? : default_vni`` falls back to 0 on a device that is not ``external``);
* a remote of 0.0.0.0 or :: is dropped and counted, never sent to (vxlan_xmit_one);
* a learned MAC that moves keeps its port, VNI and device (vxlan_snoop changes remote_ip only);
* an entry that expires on the way (lookup, learn, a change) is reported deleted, before what
  replaces it (vxlan_cleanup notifies every deletion);
* ``ageing 0`` is the default 300 s (vxlan_config_validate).

tests/netns/test_parity_fdb.py checks the same against a kernel VTEP end to end.
"""
from __future__ import annotations

import pytest

from vxtun import _fastpath as fp
from vxtun.core import Vtep, VtepConfig
from vxtun.core.events import FdbChange
from vxtun.dataplane.fast import handle_punt
from vxtun.fdb import LEARN_MOVED, DictStore, Fdb, Remote
from vxtun.wire.ether import ZERO_MAC, mac_from_str
from vxtun.wire.vxlan import decode_header, encode_header

VNI = 42
OWN = bytes.fromhex("02aabbccdd2a")
PEER = mac_from_str("02:11:22:33:44:01")
HOST = mac_from_str("02:aa:aa:aa:aa:01")
A, B = "192.0.2.1", "192.0.2.2"
VNET = bytes(10)            # a virtio-net header that asks for nothing


def frame(src: bytes, dst: bytes = b"\xff" * 6) -> bytes:
    return dst + src + b"\x88\xb5" + b"parity" * 8


class Pure:
    """The pure dataplane's view: a Vtep over the pure Fdb."""
    name = "pure"

    def __init__(self, learning: bool = True, ageing: float = 300.0, remote: str | None = A):
        self.vtep = Vtep(VtepConfig(vni=VNI, remote=remote, mac=OWN, learning=learning,
                                    ageing=ageing))

    def rx(self, data: bytes, src_ip: str, now: float) -> list:
        return self.vtep.handle_datagram(data, src_ip, now)

    def tx(self, f: bytes, now: float) -> list:
        return self.vtep.handle_frame(f, now)

    def stats(self) -> dict:
        return self.vtep.stats.to_json()


class Fast:
    """The fast dataplane's view: the C decisions over a CFdb, their punts to a Vtep over
    the same table."""
    name = "fast"

    def __init__(self, learning: bool = True, ageing: float = 300.0, remote: str | None = A):
        cfg = VtepConfig(vni=VNI, remote=remote, mac=OWN, learning=learning, ageing=ageing)
        self.vtep = Vtep(cfg, fdb=Fdb(store=fp.CFdb(ageing, 0, learning)))
        self.d = fp.Decisions()
        self.vid = self.d.add_vtep(VNI, OWN, 1450, self.vtep.fdb.store, dstport=cfg.dstport)

    def _punts(self, punts, now) -> list:
        out = []
        for kind, _vid, data in punts:
            out += handle_punt(self.vtep, kind, data, now)
        return out

    def rx(self, data: bytes, src_ip: str, now: float) -> list:
        actions, punts = self.d.rx(data, src_ip, now)
        return actions + self._punts(punts, now)

    def tx(self, f: bytes, now: float) -> list:
        actions, punts = self.d.tx(self.vid, VNET + f, now)
        return actions + self._punts(punts, now)

    def stats(self) -> dict:
        st = self.d.stats(self.vid)
        core = self.vtep.stats.to_json()
        for k, v in core["drops"].items():
            st["drops"][k] = st["drops"].get(k, 0) + v
        return st


SIDES = [Pure, Fast]
pytestmark = pytest.mark.parametrize("side", SIDES, ids=[s.name for s in SIDES])


def events(vtep) -> list:
    out = []
    while (ev := vtep.next_event()) is not None:
        out.append(ev)
    return out


# --- receive: the source MAC checks belong to learning ------------------------------------------

@pytest.mark.parametrize("src", [ZERO_MAC, mac_from_str("01:00:5e:00:00:01")],
                         ids=["zero", "multicast"])
def test_invalid_source_mac_is_delivered_with_learning_off(side, src):
    s = side(learning=False)
    before = s.vtep.fdb.entries()
    delivered = s.rx(encode_header(VNI) + frame(src), B, 1.0)
    assert [a.frame for a in delivered] == [frame(src)]
    assert s.stats()["drops"].get("invalid_src_mac", 0) == 0
    assert s.vtep.fdb.entries() == before             # nothing learned


@pytest.mark.parametrize("src", [ZERO_MAC, mac_from_str("01:00:5e:00:00:01")],
                         ids=["zero", "multicast"])
def test_invalid_source_mac_is_dropped_with_learning_on(side, src):
    s = side(learning=True)
    assert s.rx(encode_header(VNI) + frame(src), B, 1.0) == []
    assert s.stats()["drops"]["invalid_src_mac"] == 1


def test_own_mac_is_dropped_with_learning_off_too(side):
    s = side(learning=False)
    assert s.rx(encode_header(VNI) + frame(OWN), B, 1.0) == []
    assert s.stats()["drops"]["own_mac"] == 1


def test_own_mac_follows_the_live_address(side):
    s = side()
    new = mac_from_str("02:aa:bb:cc:dd:99")
    s.vtep.set_mac(new)
    if isinstance(s, Fast):
        s.d.set_mac(s.vid, new)
    assert s.rx(encode_header(VNI) + frame(new), B, 1.0) == []
    assert s.stats()["drops"]["own_mac"] == 1
    # the old address is someone else's now: delivered and learned
    assert len(s.rx(encode_header(VNI) + frame(OWN), B, 2.0)) == 1
    assert s.vtep.fdb.get(OWN) is not None
    assert s.vtep.config.mac == new                  # what vxtun show prints


# --- transmit: the remote's port, VNI and the any address ---------------------------------------

def sent(actions) -> list[tuple[str, int, int]]:
    return [(t.ip, t.port, decode_header(t.payload)[0]) for t in actions]


def test_remote_port_and_vni_are_used_vni_zero_too(side):
    s = side(remote=None)
    s.vtep.fdb_update("append", ZERO_MAC, Remote(A, 0, 0), "permanent", 0.0)
    s.vtep.fdb_update("append", ZERO_MAC, Remote(B, 5000, 77), "permanent", 0.0)
    s.vtep.fdb_update("append", ZERO_MAC, Remote(B), "permanent", 0.0)
    assert sent(s.tx(frame(HOST), 1.0)) == [(A, 4789, 0), (B, 5000, 77), (B, 4789, VNI)]


@pytest.mark.parametrize("any_ip", ["0.0.0.0"])
def test_remote_any_address_is_dropped_and_counted(side, any_ip):
    s = side(remote=None)
    s.vtep.fdb_update("add", PEER, Remote(any_ip), "permanent", 0.0)
    assert s.tx(frame(HOST, PEER), 1.0) == []
    assert s.stats()["drops"]["no_remote"] == 1
    assert s.stats()["tx"]["packets"] == 0
    # in a flood list, only that copy goes
    s.vtep.fdb_update("append", ZERO_MAC, Remote(any_ip), "permanent", 0.0)
    s.vtep.fdb_update("append", ZERO_MAC, Remote(B), "permanent", 0.0)
    assert sent(s.tx(frame(HOST), 2.0)) == [(B, 4789, VNI)]
    assert s.stats()["drops"]["no_remote"] == 2


# --- learning: a moved MAC keeps port, VNI and device ----------------------------------------

def test_moved_mac_keeps_port_vni_and_via(side):
    s = side()
    s.vtep.fdb_update("add", PEER, Remote(A, 5000, 77, "eth0"), "dynamic", 0.0)
    events(s.vtep)
    s.rx(encode_header(VNI) + frame(PEER), B, 1.0)
    (e,) = [e for e in s.vtep.fdb.entries() if e.mac == PEER]
    assert e.remotes == [Remote(B, 5000, 77, "eth0")]
    assert events(s.vtep) == [FdbChange("new", "vxtun0", PEER, (Remote(B, 5000, 77, "eth0"),),
                                        "dynamic")]


# --- expiry: every deletion is reported, before what replaces it ------------------------------

def test_entry_expired_at_learn_is_reported_deleted_then_new(side):
    s = side(ageing=10)
    s.rx(encode_header(VNI) + frame(PEER), A, 0.0)
    assert [ev.action for ev in events(s.vtep)] == ["new"]
    s.rx(encode_header(VNI) + frame(PEER), B, 20.0)       # expired, then seen from B
    evs = events(s.vtep)
    assert [(ev.action, ev.remotes[0].ip) for ev in evs] == [("del", A), ("new", B)]


def test_entry_expired_at_lookup_is_reported_deleted(side):
    s = side(ageing=10)
    s.rx(encode_header(VNI) + frame(PEER), B, 0.0)
    events(s.vtep)
    assert sent(s.tx(frame(HOST, PEER), 20.0)) == [(A, 4789, VNI)]    # expired: the default
    s.vtep.expire(20.5)
    assert [(ev.action, ev.mac) for ev in events(s.vtep)] == [("del", PEER)]
    s.vtep.expire(21.0)
    assert events(s.vtep) == []                                       # reported once


def test_entry_expired_at_add_is_reported_deleted_then_new(side):
    s = side(ageing=10)
    s.rx(encode_header(VNI) + frame(PEER), B, 0.0)
    events(s.vtep)
    s.vtep.fdb_update("add", PEER, Remote(A), "static", 20.0)
    evs = events(s.vtep)
    assert [(ev.action, ev.remotes[0].ip, ev.state) for ev in evs] == \
        [("del", B, "dynamic"), ("new", A, "static")]


# --- the stores alone ----------------------------------------------------------------------------

@pytest.mark.parametrize("store", [DictStore, fp.CFdb], ids=["dict", "cfdb"])
def test_store_hands_over_what_lookup_and_learn_removed(side, store):
    f = Fdb(store=store(ageing=10))
    f.learn(PEER, A, 0.0)
    f.learn(HOST, A, 0.0)
    assert f.lookup(PEER, 10.0) is None
    assert f.learn(HOST, B, 10.0) != LEARN_MOVED        # expired: a new entry, not a move
    assert sorted(e.mac for e in f.reaped()) == sorted([PEER, HOST])
    assert f.reaped() == []
    f.lookup(HOST, 30.0)
    assert [e.mac for e in f.expire(30.0)] == [HOST]
