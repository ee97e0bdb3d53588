"""``flowlabel inherit`` (IFLA_VXLAN_LABEL_POLICY, ip_tunnel_get_flowlabel): over an IPv6
underlay the outer flow label is the inner IPv6 packet's (behind up to three VLAN tags), 0
for anything else; the C TX thread hands frames with a label to the core."""
from __future__ import annotations

import struct

from vxtun.core import VtepConfig
from vxtun.core.vtep import Vtep
from vxtun.wire.ecn import inner_flowlabel

MAC = bytes.fromhex("02bb00000002") + bytes.fromhex("02aa00000001")


def ipv6(label: int, vlans: int = 0) -> bytes:
    tags = b"\x81\x00\x00\x05" * vlans
    return MAC + tags + b"\x86\xdd" + struct.pack("!I", 6 << 28 | 0xB8 << 20 | label) + bytes(36)


IPV4 = MAC + b"\x08\x00" + bytes([0x45]) + bytes(39)


def test_inner_flowlabel_is_ip_tunnel_get_flowlabel():
    assert inner_flowlabel(ipv6(0x12345)) == 0x12345          # the traffic class left out
    assert inner_flowlabel(ipv6(0xFFFFF, vlans=2)) == 0xFFFFF
    assert inner_flowlabel(IPV4) == 0 and inner_flowlabel(ipv6(0)) == 0
    assert inner_flowlabel(ipv6(0x12345)[:16]) == 0          # cut inside the header


def test_each_transmit_carries_the_inner_label_over_ipv6_only():
    v6 = Vtep(VtepConfig(vni=1, remote="2001:db8::2", flowlabel="inherit"))
    assert [v6.handle_frame(f, 0.0)[0].label for f in (ipv6(0x9ABCD), ipv6(0), IPV4)] == [
        0x9ABCD, 0, 0]
    v4 = Vtep(VtepConfig(vni=1, remote="192.0.2.2", flowlabel="inherit"))
    assert v4.handle_frame(ipv6(0x9ABCD), 0.0)[0].label == 0


def test_the_tx_thread_hands_labelled_frames_to_the_core():
    from vxtun import _fastpath as fp
    from vxtun.dataplane.fast import handle_punt
    from vxtun.fdb import Fdb

    store = fp.CFdb()
    core = Vtep(VtepConfig(vni=1, remote="2001:db8::2", flowlabel="inherit"),
                fdb=Fdb(store=store))
    dec = fp.Decisions()
    vid = dec.add_vtep(1, bytes.fromhex("02ee00000001"), 1450, store, label_inherit=True)
    for f, label in ((ipv6(0x12345), 0x12345), (ipv6(0x1, vlans=1), 1), (ipv6(0), 0),
                     (IPV4, 0)):
        acts, punts = dec.tx(vid, bytes(10) + f, 0.0)
        assert (len(acts), len(punts)) == ((0, 1) if label else (1, 0)), f.hex()
        if label:
            (kind, _, data), = punts
            assert handle_punt(core, kind, data, 0.0)[0].label == label
