"""vxtun/io/gso.py without root: the tunnel header and outer headers it writes, and the probe's
fallback on a kernel without TUN_F_UDP_TUNNEL_GSO (Linux < 6.17: TUNSETOFFLOAD says EINVAL);
and vxtun/wire/tso.py, the pure dataplane's TSO segmentation, against the fast path's."""
from __future__ import annotations

import errno
import socket
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
SRC6 = bytes.fromhex("20010db8000000000000000000000001")
DST6 = bytes.fromhex("20010db8000000000000000000000002")


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


def test_ipv6_tunnel_header_moves_every_offset_by_the_ipv6_outer_headers():
    inner = pack_vnet(1, 1 | 0x80, 14 + 20 + 32, 1398, 34, 16)
    h = gso.tnl_vnet_hdr(inner, csum=True, v6=True)
    flags, gtype, hdr_len, gso_size, start, off, nbuf, hv, hr, pad, oth, inh = struct.unpack(
        "<BBHHHHHIHHHH", h)
    assert flags == gso.VIRTIO_NET_HDR_F_NEEDS_CSUM | gso.VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM
    assert gtype == gso.VIRTIO_NET_HDR_GSO_TCPV4 | gso.VIRTIO_NET_HDR_GSO_ECN \
        | gso.VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6
    assert gso.OUTER6 == 14 + 40 + 8 + 8 == 70
    assert (hdr_len, gso_size, start, off) == (66 + 70, 1398, 34 + 70, 16)
    assert (nbuf, hv, hr, pad) == (0, 0, 0, 0)
    # virtio_net_hdr_tnl_to_skb(): outer_th >= ETH_HLEN + sizeof(ipv6hdr), inner_nh >=
    # outer_th + 8, inner_th (csum_start) >= inner_nh + 20
    assert (oth, inh) == (54, 84) and start >= inh + 20


def test_ipv6_outer_headers_carry_class_label_checksum_sum_and_one_more_hop():
    mac = b"\x02\xaa\xbb\xcc\xdd\xee"
    o = gso.outer_ipv6(mac, SRC6, DST6, 40000, 4789, 8 + 65000, 0x28, 64, 0x5A5A5)
    assert len(o) == 14 + 40 + 8 and o[:6] == mac and o[12:14] == b"\x86\xdd"
    ip = o[14:54]
    word, plen, nxt, hlim = struct.unpack_from("!IHBB", ip)
    assert (word >> 28, (word >> 20) & 0xFF, word & 0xFFFFF) == (6, 0x28, 0x5A5A5)
    assert (plen, nxt, hlim) == (8 + 8 + 65000, 17, 65)     # ip6_forward() takes one hop
    assert ip[8:24] == SRC6 and ip[24:40] == DST6
    sport, dport, ulen, check = struct.unpack_from("!HHHH", o, 54)
    assert (sport, dport, ulen) == (40000, 4789, plen)
    # the folded pseudo-header sum (RFC 8200 section 8.1), as udp6_set_csum() leaves it
    assert check == csum_add(SRC6 + DST6, 17 + ulen)


def test_ipv6_outer_header_checksum_completes_to_a_valid_datagram():
    """What __skb_udp_tunnel_segment() does with the sum: fold in the datagram, complement;
    a receiver then sums pseudo-header + datagram to 0xffff."""
    payload = b"\x08\0\0\0\0\0\x2a\0" + bytes(range(256)) * 3
    o = gso.outer_ipv6(b"\0" * 6, SRC6, DST6, 1234, 4789, len(payload), 0, 1, 0)
    udp = bytearray(o[54:] + payload)
    partial = struct.unpack_from("!H", udp, 6)[0]
    struct.pack_into("!H", udp, 6, 0)
    struct.pack_into("!H", udp, 6, ~csum_add(bytes(udp), partial) & 0xFFFF)
    assert csum_add(bytes(udp), csum_add(SRC6 + DST6, 17 + len(udp))) == 0xFFFF


@SETTINGS
@given(st.booleans(), st.booleans(), st.sampled_from([1, 4, 1 | 0x80, 4 | 0x80]),
       st.integers(0, 200), st.integers(1, 0xFFFF), st.integers(14, 200), st.integers(0, 200),
       st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFF),
       st.integers(0, 255), st.integers(1, 254), st.integers(0, 0xFFFF), st.booleans(),
       st.integers(0, 0xFFFFF), st.integers(60, 65400))
def test_fast_paths_tunnel_headers_are_the_references(v6, csum, gtype, hdr_len, mss, start,
                                                       off, sport, dport, vni, tos, ttl, ident,
                                                       df, label, n):
    """send.pyx's _tnl_headers (what _tnl_send writes) against tnl_vnet_hdr + outer_ipv4 /
    outer_ipv6 + the VXLAN header, byte for byte."""
    vnet = pack_vnet(1, gtype, hdr_len, mss, start, off)
    mac = b"\x02\x11\x22\x33\x44\x55"
    src, dst = (SRC6, DST6) if v6 else (SRC, DST)
    c = fp.tnl_headers(vnet, mac, src, dst, sport, dport, vni, tos, ttl, ident, df, csum,
                       label, n)
    vxlan = b"\x08\0\0\0" + vni.to_bytes(3, "big") + b"\0"
    if v6:
        outer = gso.outer_ipv6(mac, src, dst, sport, dport, 8 + n, tos, ttl, label)
    else:
        outer = gso.outer_ipv4(mac, src, dst, sport, dport, 8 + n, ident, tos, ttl, df, csum)
    assert c == gso.tnl_vnet_hdr(vnet, csum or v6, v6) + outer + vxlan


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


def _fake_tun(monkeypatch, sysctl):
    """open_egress() on a fake /dev/net/tun whose ioctls all succeed; ``sysctl`` stands for
    the writes to /proc/sys.  Returns (opened, closed) fds."""
    opened, closed = [], []
    monkeypatch.setattr(gso, "rp_filter_all", lambda: 0)
    monkeypatch.setattr(gso.os, "open", lambda *a, **k: opened.append(a) or 99)
    monkeypatch.setattr(gso.os, "close", closed.append)
    monkeypatch.setattr(gso.fcntl, "ioctl", lambda fd, req, arg: arg)
    monkeypatch.setattr(gso, "_sysctl", sysctl)
    monkeypatch.setattr(gso, "_link_up", lambda name: None)
    return opened, closed


def test_ipv6_probe_fails_cleanly_without_per_device_force_forwarding(monkeypatch):
    """Before Linux 6.17 net.ipv6.conf.<dev>.force_forwarding does not exist (ENOENT): the
    IPv6 underlay keeps today's path, and ``vxtun show`` says why."""
    written = []

    def sysctl(path, value):
        if path.endswith("/force_forwarding"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        written.append(path)

    _opened, closed = _fake_tun(monkeypatch, sysctl)
    with pytest.raises(LocalError, match="force_forwarding: Linux 6.17"):
        gso.open_egress("vxtun0-gso", socket.AF_INET6)
    assert closed == [99] and written == []
    said = gso.open_for("vxtun0", socket.AF_INET6)
    assert said.startswith("off (") and "force_forwarding" in said, said
    assert closed == [99, 99]


def test_ipv6_egress_sets_only_its_own_ipv6_switches(monkeypatch):
    written = {}
    _fake_tun(monkeypatch, written.__setitem__)
    monkeypatch.setattr(gso, "rp_filter_all", lambda: 1)    # an IPv4 matter: not asked
    import vxtun.io.tap as tap
    monkeypatch.setattr(tap, "hwaddr", lambda name: b"\x02\0\0\0\0\x09")
    monkeypatch.setattr(gso.os, "set_blocking", lambda fd, on: None)
    eg = gso.open_egress("vxtun0-gso", socket.AF_INET6)
    assert (eg.name, eg.fd, eg.mac) == ("vxtun0-gso", 99, b"\x02\0\0\0\0\x09")
    conf = "/proc/sys/net/ipv6/conf/vxtun0-gso/"
    assert written == {conf + "force_forwarding": "1", conf + "addr_gen_mode": "1",
                       conf + "accept_ra": "0", conf + "autoconf": "0",
                       conf + "accept_redirects": "0", conf + "disable_ipv6": "0"}
    assert not any("/all/" in p or "/default/" in p for p in written)


def test_udp6zerocsumtx_keeps_todays_path_without_creating_a_device(monkeypatch):
    monkeypatch.setattr(gso, "open_egress", lambda *a: pytest.fail("no device wanted"))
    said = gso.open_for("vxtun0", socket.AF_INET6, zero_csum6=True)
    assert said == "off (udp6zerocsumtx: IPv6 datagrams keep today's path)"


def _proc(tmp_path, values: dict):
    for rel, value in values.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(value + "\n")
    return str(tmp_path)


def test_forwarding_lost_when_all_forwarding_reset_the_devices_switch(tmp_path):
    """A write of all.forwarding reaches every device (inet_forward_change(),
    addrconf_forward_change()): the egress must notice its own switch went 0."""
    v4 = gso.Egress("vxtun0-gso", -1, b"\0" * 6)
    v6 = gso.Egress("vxtun0-gso", -1, b"\0" * 6, v6=True)
    proc = _proc(tmp_path, {"ipv4/conf/vxtun0-gso/forwarding": "1",
                            "ipv6/conf/vxtun0-gso/force_forwarding": "1",
                            "ipv6/conf/all/forwarding": "0"})
    assert gso.forwarding_lost(v4, proc) is None and gso.forwarding_lost(v6, proc) is None
    _proc(tmp_path, {"ipv4/conf/vxtun0-gso/forwarding": "0",
                     "ipv6/conf/vxtun0-gso/force_forwarding": "0"})
    assert "net.ipv4.conf.vxtun0-gso.forwarding was reset" in gso.forwarding_lost(v4, proc)
    assert "net.ipv6.conf.vxtun0-gso.force_forwarding was reset" in gso.forwarding_lost(v6, proc)
    _proc(tmp_path, {"ipv6/conf/all/forwarding": "1"})      # ip6_forward() takes either
    assert gso.forwarding_lost(v6, proc) is None
    gone = gso.Egress("other-gso", -1, b"\0" * 6)
    assert gso.forwarding_lost(gone, proc) == "other-gso vanished"


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

    def __init__(self, fd: int, v6: bool = False) -> None:
        self.fd, self.mac, self.ttl, self.df, self.csum = fd, b"\x02\0\0\0\0\x07", 64, False, True
        self.ident, self.sent, self.refused = 100, 0, 0
        self.sources = lambda ip: SRC6 if v6 else SRC
        self.v6, self.flowinfo = v6, 0x1234 if v6 else 0


def _written(v6_inner: bool, vlan: bool = False, v6: bool = False, label: int = 0):
    import os

    from scapy.layers.l2 import Dot1Q, Ether

    from vxtun.core.vtep import Transmit
    from vxtun.dataplane.pure import PureBackend
    frame = tcp_frame(v6_inner, 5, b"z" * 5000)
    if vlan:
        p = Ether(frame)
        frame = bytes(Ether(src=p.src, dst=p.dst) / Dot1Q(vlan=3) / p.payload)
    vnet = pack_vnet(1, 4 if v6_inner else 1, 0, 1400, 54 if v6_inner else 34, 16)
    t = Transmit("2001:db8::2" if v6 else "192.0.2.2", 4789, 41000,
                 b"\x08\0\0\0\0\0\x2a\0" + frame[:1500], 0x28, 0, label=label)
    r, w = os.pipe()
    try:
        eg = _Egress(w, v6)
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


def test_pure_egress_write_over_ipv6_has_the_ipv6_header_and_tx_fds_label():
    ok, out, eg, vnet, frame = _written(True, v6=True)
    assert ok and (eg.sent, eg.ident) == (1, 104)
    want = (gso.tnl_vnet_hdr(vnet, True, v6=True)
            + gso.outer_ipv6(eg.mac, SRC6, DST6, 41000, 4789, 8 + len(frame), 0x28, 64, 0x1234)
            + b"\x08\0\0\0\0\0\x2a\0" + frame)
    assert out == want


def test_pure_egress_over_ipv6_takes_an_inherited_label_and_refuses_an_ipv4_remote():
    ok, out, _eg, _vnet, _frame = _written(False, v6=True, label=0x7777)
    assert ok and struct.unpack_from("!I", out, 24 + 14)[0] & 0xFFFFF == 0x7777
    from vxtun.core.vtep import Transmit
    from vxtun.dataplane.pure import PureBackend
    t = Transmit("192.0.2.2", 4789, 41000, b"\x08" + bytes(7), 0, 0)
    frame = tcp_frame(False, 5, b"z" * 3000)
    assert not PureBackend._egress_send(_Egress(-1, True), pack_vnet(1, 1, 0, 1400, 34, 16),
                                        frame, t, 3)


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
