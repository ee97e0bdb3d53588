"""``df inherit`` (vxlan_xmit_one: ``vxlan->cfg.df == VXLAN_DF_INHERIT``): the outer IPv4 DF
is set for an inner IPv6 packet and for an inner IPv4 packet with DF, decided per frame by the
core; the C TX thread hands such frames to the core, whose Port sends them through the VTEP's
second socket (DF is a socket's setting)."""
from __future__ import annotations

from vxtun.core import VtepConfig
from vxtun.core.vtep import Transmit, Vtep, inner_df

MAC = bytes.fromhex("02bb00000002") + bytes.fromhex("02aa00000001")


def ipv4(df: bool) -> bytes:
    hdr = bytes([0x45, 0, 0, 28, 0, 0, 0x40 if df else 0, 0, 64, 17, 0, 0]) + bytes(8)
    return MAC + b"\x08\x00" + hdr + bytes(8)


IPV6 = MAC + b"\x86\xdd" + bytes([0x60]) + bytes(47)
VLAN_DF = MAC + b"\x81\x00\x00\x05" + ipv4(True)[12:]
ARP = MAC + b"\x08\x06" + bytes(28)


def test_inner_df_follows_the_kernels_rule():
    assert inner_df(ipv4(True)) and inner_df(IPV6)
    assert not inner_df(ipv4(False)) and not inner_df(ARP)
    assert not inner_df(VLAN_DF)               # eth->h_proto is the VLAN tag's
    assert not inner_df(MAC + b"\x08\x00")     # no IPv4 header


def test_each_transmit_says_whether_it_takes_df():
    v = Vtep(VtepConfig(vni=1, remote="192.0.2.2", df="inherit"))
    got = [v.handle_frame(f, 0.0)[0].df for f in (ipv4(True), ipv4(False), IPV6, ARP)]
    assert got == [True, False, True, False]


def test_df_inherit_means_nothing_over_ipv6_nor_without_it():
    for cfg in (VtepConfig(vni=1, remote="2001:db8::2", df="inherit"),
                VtepConfig(vni=1, remote="192.0.2.2", df="set"),
                VtepConfig(vni=1, remote="192.0.2.2")):
        (t,) = Vtep(cfg).handle_frame(ipv4(True), 0.0)
        assert type(t) is Transmit and t.df is False


def test_the_tx_thread_hands_frames_that_take_df_to_the_core():
    from vxtun import _fastpath as fp
    from vxtun.dataplane.fast import handle_punt
    from vxtun.fdb import Fdb

    store = fp.CFdb()
    cfg = VtepConfig(vni=1, remote="192.0.2.2", df="inherit")
    core = Vtep(cfg, fdb=Fdb(store=store))
    dec = fp.Decisions()
    vid = dec.add_vtep(1, bytes.fromhex("02ee00000001"), 1450, store, df_inherit=True)
    plain = dec.add_vtep(2, bytes.fromhex("02ee00000002"), 1450, store)
    for f, takes in ((ipv4(True), True), (ipv4(False), False), (IPV6, True), (ARP, False)):
        acts, punts = dec.tx(vid, bytes(10) + f, 0.0)
        assert (len(acts), len(punts)) == ((0, 1) if takes else (1, 0)), f.hex()
        if takes:
            (kind, _, data), = punts
            (t,) = handle_punt(core, kind, data, 0.0)
            assert t.df
        assert dec.tx(plain, bytes(10) + f, 0.0)[1] == []
