"""vxtun/io/gso.py without root: the tunnel header and outer headers it writes, and the probe's
fallback on a kernel without TUN_F_UDP_TUNNEL_GSO (Linux < 6.17: TUNSETOFFLOAD says EINVAL);
and vxtun/wire/tso.py, the pure dataplane's TSO segmentation, against the fast path's."""
from __future__ import annotations

import errno
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_fastpath_offload import SETTINGS, tcp_frame

from vxtun import _fastpath as fp
from vxtun.errors import LocalError
from vxtun.io import gso
from vxtun.wire import tso
from vxtun.wire.offload import csum_add, pack_vnet

SRC = bytes([192, 0, 2, 1])
DST = bytes([192, 0, 2, 2])


def test_tunnel_header_moves_every_offset_by_the_outer_headers():
    # a TSO super-frame as the overlay TAP hands it: Ethernet, IPv4, TCP (32 bytes), MSS 1398
    inner = pack_vnet(1, 1, 14 + 20 + 32, 1398, 34, 16)
    h = gso.tnl_vnet_hdr(inner, csum=True)
    assert len(h) == gso.VNET_TNL_HDR_LEN == 24
    flags, gtype, hdr_len, gso_size, start, off, nbuf, hv, hr, pad, oth, inh = struct.unpack(
        "<BBHHHHHIHHHH", h)
    assert flags == gso.VIRTIO_NET_HDR_F_NEEDS_CSUM | gso.VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM
    assert gtype == gso.VIRTIO_NET_HDR_GSO_TCPV4 | gso.VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4
    assert (hdr_len, gso_size, start, off) == (66 + 50, 1398, 34 + 50, 16)
    assert (nbuf, hv, hr, pad) == (0, 0, 0, 0)
    # virtio_net_hdr_tnl_to_skb(): outer_th >= ETH_HLEN + 20, inner_nh >= outer_th + 8,
    # inner_th (csum_start) >= inner_nh + 20
    assert (oth, inh) == (34, 64) and start >= inh + 20


def test_tunnel_header_keeps_ecn_and_the_inner_ipv6_type_and_no_csum_flag_without_csum():
    h = gso.tnl_vnet_hdr(pack_vnet(1, 4 | 0x80, 0, 1380, 54, 16), csum=False)
    assert h[0] == gso.VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert h[1] == gso.VIRTIO_NET_HDR_GSO_TCPV6 | gso.VIRTIO_NET_HDR_GSO_ECN \
        | gso.VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4
    assert struct.unpack_from("<H", h, 2)[0] == 0          # no hint stays no hint


def test_outer_headers_are_complete_and_one_ttl_higher():
    mac = b"\x02\xaa\xbb\xcc\xdd\xee"
    o = gso.outer_ipv4(mac, SRC, DST, 40000, 4789, 8 + 65000, 7, 0x28, 64, df=False,
                       csum=True)
    assert len(o) == 14 + 20 + 8 and o[:6] == mac and o[12:14] == b"\x08\x00"
    ip = o[14:34]
    assert csum_add(ip) == 0xFFFF                            # ip_rcv() checks it
    tot, ident, frag, ttl = struct.unpack_from("!HHHB", ip, 2)
    assert (tot, ident, frag, ttl, ip[1]) == (20 + 8 + 8 + 65000, 7, 0, 65, 0x28)
    sport, dport, ulen, check = struct.unpack_from("!HHHH", o, 34)
    assert (sport, dport, ulen) == (40000, 4789, 8 + 8 + 65000)
    # the folded pseudo-header sum, as udp_set_csum() leaves it for a GSO skb
    assert check == csum_add(SRC + DST, 17 + ulen)
    o = gso.outer_ipv4(mac, SRC, DST, 40000, 4789, 100, 0, 0, 5, df=True, csum=False)
    assert struct.unpack_from("!H", o, 34 + 6)[0] == 0 and o[14 + 6] & 0x40


def test_egress_name_fits_ifnamsiz():
    assert gso.egress_name("vxtun0") == "vxtun0-gso"
    assert len(gso.egress_name("a-very-long-vtep")) <= 15


def test_probe_fails_cleanly_on_a_kernel_without_tunnel_gso(monkeypatch):
    """TUNSETOFFLOAD with TUN_F_UDP_TUNNEL_GSO is EINVAL before 6.17: a LocalError that says
    so, and the device's fd is closed (the TAP goes with it)."""
    opened, closed = [], []
    monkeypatch.setattr(gso, "rp_filter_all", lambda: 0)
    monkeypatch.setattr(gso.os, "open", lambda *a, **k: opened.append(a) or 99)
    monkeypatch.setattr(gso.os, "close", closed.append)

    def ioctl(fd, req, arg):
        if req == gso.TUNSETOFFLOAD and arg & gso.TUN_F_UDP_TUNNEL_GSO:
            raise OSError(errno.EINVAL, "Invalid argument")
        return arg

    monkeypatch.setattr(gso.fcntl, "ioctl", ioctl)
    with pytest.raises(LocalError, match="6.17"):
        gso.open_egress("vxtun0-gso")
    assert opened and closed == [99]


def test_probe_refuses_with_rp_filter_on(monkeypatch):
    monkeypatch.setattr(gso, "rp_filter_all", lambda: 1)
    with pytest.raises(LocalError, match="rp_filter"):
        gso.open_egress("vxtun0-gso")


# --- the pure dataplane's TSO segmentation (vxtun/wire/tso.py) against the fast path's ------

@SETTINGS
@given(st.booleans(), st.integers(0, 2**32 - 1), st.binary(min_size=0, max_size=9000),
       st.sampled_from(["A", "PA", "FA", "FPA", "CA", "EA", "CPA"]), st.integers(64, 1460),
       st.integers(0, 0xFFFF))
def test_python_segments_are_the_fast_paths(v6, seq, payload, flags, mss, ip_id):
    big = tcp_frame(v6, seq, payload, flags, ip_id=ip_id)
    assert tso.segments(big, mss) == fp.tso_segment(big, mss)
    assert tso.count(big, mss) == len(fp.tso_segment(big, mss))


def test_python_segmentation_refuses_what_the_fast_path_refuses():
    big = tcp_frame(False, 1, b"x" * 3000)
    for bad in (big[:40], big[:12] + b"\x08\x06" + big[14:], big[:23] + b"\x11" + big[24:]):
        assert tso.segments(bad, 1400) is None
        try:
            fp.tso_segment(bad, 1400)
        except ValueError:
            pass
        else:
            raise AssertionError("the fast path cut what the reference refuses")


# --- the pure dataplane's write to the egress (vxtun/dataplane/pure.py) ----------------------

class _Egress:
    """A gso.Egress whose fd is a pipe: what the pure dataplane writes can be read back."""

    def __init__(self, fd: int) -> None:
        self.fd, self.mac, self.ttl, self.df, self.csum = fd, b"\x02\0\0\0\0\x07", 64, False, True
        self.ident, self.sent, self.refused = 100, 0, 0
        self.sources = lambda ip: SRC


def _written(v6_inner: bool, vlan: bool = False):
    import os

    from scapy.layers.l2 import Dot1Q, Ether

    from vxtun.core.vtep import Transmit
    from vxtun.dataplane.pure import PureBackend
    frame = tcp_frame(v6_inner, 5, b"z" * 5000)
    if vlan:
        p = Ether(frame)
        frame = bytes(Ether(src=p.src, dst=p.dst) / Dot1Q(vlan=3) / p.payload)
    vnet = pack_vnet(1, 4 if v6_inner else 1, 0, 1400, 54 if v6_inner else 34, 16)
    t = Transmit("192.0.2.2", 4789, 41000, b"\x08\0\0\0\0\0\x2a\0" + frame[:1500], 0x28, 0)
    r, w = os.pipe()
    try:
        eg = _Egress(w)
        ok = PureBackend._egress_send(eg, vnet, frame, t, 4)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            return ok, f.read(), eg, vnet, frame
    except BaseException:
        os.close(r)
        raise


def test_pure_egress_write_is_header_outer_vxlan_and_the_whole_frame():
    ok, out, eg, vnet, frame = _written(False)
    assert ok and (eg.sent, eg.ident) == (1, 104)          # four segments take four IDs
    want = (gso.tnl_vnet_hdr(vnet, True)
            + gso.outer_ipv4(eg.mac, SRC, DST, 41000, 4789, 8 + len(frame), 100, 0x28, 64,
                             False, True)
            + b"\x08\0\0\0\0\0\x2a\0" + frame)
    assert out == want


def test_pure_egress_refuses_a_vlan_tagged_frame():
    ok, out, eg, _vnet, _frame = _written(False, vlan=True)
    assert not ok and out == b"" and eg.sent == 0


def test_show_says_which_egress_is_in_use():
    from vxtun.cli import output
    d = {"ifname": "vxtun0", "mtu": 1450, "dataplane": "fast", "address": "02:00:00:00:00:03",
         "vni": 42, "remote": "192.0.2.1", "local": None, "dev": None, "srcport": [0, 0],
         "dstport": 4789, "ttl": None, "ageing": 300.0, "learning": True,
         "features": ["udp_tunnel_gso"]}
    said = gso.describe(gso.Egress("vxtun0-gso", -1, b"\0" * 6), 12, 0)
    assert "udp tunnel gso egress vxtun0-gso super-frames 12 refused 0" in output.format_show(
        {**d, "egress": said})
    assert "udp tunnel gso egress off (IPv4 underlays only)" in output.format_show(
        {**d, "egress": gso.describe("off (IPv4 underlays only)", 0, 0)})
