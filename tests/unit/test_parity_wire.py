"""The outer headers as a kernel VTEP writes them, without root: the UDP checksum, the source
port range, TTL and TOS (``ttl N|auto|inherit``, ``tos N|inherit``), ``df``, and the options
that set them.  tests/netns/test_parity_wire.py compares the same on the wire with the
kernel's vxlan device."""
from __future__ import annotations

import socket

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether

from vxtun.cli.main import config_from_args, up_parser
from vxtun.core import Vtep, VtepConfig
from vxtun.errors import LocalError
from vxtun.io import underlay
from vxtun.wire import ecn
from vxtun.wire.vxlan import LOCAL_PORT_RANGE, encode_header, port_range, udp_checksum

SRC, DST = "02:00:00:00:00:01", "02:00:00:00:00:02"


def v4(ttl=17, tos=0xB9) -> bytes:
    return bytes(Ether(src=SRC, dst=DST) / IP(src="10.20.1.1", dst="10.20.1.2", ttl=ttl,
                                             tos=tos) / UDP(sport=1, dport=2) / b"x")


def v6(hlim=33, tc=0x2A) -> bytes:
    return bytes(Ether(src=SRC, dst=DST) / IPv6(src="fd00::1", dst="fd00::2", hlim=hlim, tc=tc)
                 / UDP(sport=1, dport=2) / b"x")


# --- the UDP checksum ---------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 2, 51, 1400])
def test_udp_checksum_is_the_one_scapy_computes(n):
    payload = encode_header(42) + v4() + b"y" * n
    for src, dst, layer in (("192.0.2.1", "192.0.2.2", IP), ("2001:db8::1", "2001:db8::2",
                                                           IPv6)):
        fam = socket.AF_INET if layer is IP else socket.AF_INET6
        udp = underlay.udp_header(40000, 4789, len(payload)) + payload
        got = udp_checksum(socket.inet_pton(fam, src), socket.inet_pton(fam, dst), udp)
        want = layer(bytes(layer(src=src, dst=dst) / UDP(sport=40000, dport=4789) /
                           payload))[UDP].chksum
        assert got == want and got != 0


class _FakeTx:
    """A send socket that keeps what it was given."""

    def __init__(self, csum: bool, src: str = "192.0.2.7") -> None:
        self.udp_csum = csum
        self.sources = lambda dst: socket.inet_aton(src)
        self.sent: list = []

    def sendto(self, pkt, addr):
        self.sent.append((bytes(pkt), [], addr))

    def sendmsg(self, bufs, anc, flags, addr):
        self.sent.append((b"".join(bufs), anc, addr))


def test_send_datagram_checksums_ipv4_unless_noudpcsum():
    payload = encode_header(42) + v4()
    on, off = _FakeTx(True), _FakeTx(False)
    for s in (on, off):
        assert underlay.send_datagram(s, socket.AF_INET, "192.0.2.2", 40000, 4789, payload)
    pkt_on, pkt_off = on.sent[0][0], off.sent[0][0]
    assert pkt_off[6:8] == b"\0\0"
    want = IP(bytes(IP(src="192.0.2.7", dst="192.0.2.2") / UDP(sport=40000, dport=4789) /
                    payload))[UDP].chksum
    assert int.from_bytes(pkt_on[6:8], "big") == want and pkt_on[8:] == payload


def test_send_datagram_gives_tos_and_ttl_as_control_messages():
    s = _FakeTx(False)
    underlay.send_datagram(s, socket.AF_INET, "192.0.2.2", 1, 4789, b"x" * 8, tos=0x2E, ttl=9)
    (_, anc, _), = s.sent
    assert (socket.IPPROTO_IP, socket.IP_TOS, (0x2E).to_bytes(4, "little")) in anc
    assert (socket.IPPROTO_IP, socket.IP_TTL, (9).to_bytes(4, "little")) in anc
    assert underlay.tos_cmsg(socket.AF_INET6, 0, 7) == \
        [(socket.IPPROTO_IPV6, underlay.IPV6_HOPLIMIT, (7).to_bytes(4, "little"))]
    assert underlay.tos_cmsg(socket.AF_INET, 0, 0) == []


def test_source_cache_takes_local_or_the_routes_choice():
    assert underlay.SourceCache(socket.AF_INET, "192.0.2.9")("198.51.100.1") == \
        socket.inet_aton("192.0.2.9")
    lo = underlay.SourceCache(socket.AF_INET, None)
    assert lo("127.0.0.1", now=1.0) == socket.inet_aton("127.0.0.1")
    assert lo._cache["127.0.0.1"] == (socket.inet_aton("127.0.0.1"), 1.0)


# --- the source port range ----------------------------------------------------------------

def test_port_range_is_the_namespaces_unless_given(tmp_path):
    assert port_range((0, 0), (1024, 2048)) == (1024, 2048)
    assert port_range((100, 100), (1024, 2048)) == (1024, 2048)     # MIN = MAX: the default
    assert port_range((1000, 2000), (1024, 2048)) == (1000, 2000)
    f = tmp_path / "ip_local_port_range"
    f.write_text("20000\t20999\n")
    assert underlay.local_port_range(str(f)) == (20000, 20999)
    assert underlay.local_port_range(str(tmp_path / "none")) == LOCAL_PORT_RANGE


def test_default_range_leaves_the_high_end_out():
    # udp_flow_src_port(): ((u64)hash * (max - min) >> 32) + min, never max itself
    vtep = Vtep(VtepConfig(vni=42, remote="192.0.2.2"))
    assert vtep.sport_range == (32768, 60999)
    vtep.sport_range = (5000, 5002)
    ports = {vtep.handle_frame(bytes(Ether(src=SRC, dst=DST) / IP(dst=f"10.20.0.{i}") /
                                     UDP(sport=i)), 1.0)[0].sport for i in range(1, 60)}
    assert ports == {5000, 5001}


@pytest.mark.parametrize("lo, hi, ok", [(0, 0, True), (100, 100, True), (1, 65535, True),
                                         (2000, 1000, False), (1, 65536, False)])
def test_srcport_validation_is_vxlan_validate(lo, hi, ok):
    cfg = VtepConfig(vni=1, srcport=(lo, hi))
    if ok:
        cfg.validate()
    else:
        with pytest.raises(LocalError, match="invalid srcport range"):
            cfg.validate()


# --- TTL and TOS ----------------------------------------------------------------------------

def test_inner_ttl_is_ip_tunnel_get_ttl():
    assert ecn.inner_ttl(v4(ttl=17)) == 17
    assert ecn.inner_ttl(v6(hlim=33)) == 33
    tagged = bytes(Ether(src=SRC, dst=DST) / Dot1Q(vlan=5) / IP(ttl=44) / UDP())
    assert ecn.inner_ttl(tagged) == 44          # skb_protocol(skb, true): behind the tag
    assert ecn.inner_ttl(bytes(Ether(src=SRC, dst=DST) / ARP())) == 0
    assert ecn.inner_ttl(v4()[:14 + 8]) == 0     # cut before the TTL


def test_tos_inherit_copies_the_whole_ds_field_and_fixed_tos_keeps_the_ecn_rule():
    assert ecn.encap_tos(v4(tos=0xB9), 1) == 0xB9           # EF, ECT(1)
    assert ecn.encap_tos(v4(tos=0xBB), 1) == 0xBA           # CE leaves as ECT(0)
    assert ecn.encap_tos(v6(tc=0x2A), 1) == 0x2A
    assert ecn.encap_tos(v4(tos=0xB9), 0x28) == 0x29        # the device's DSCP, inner ECN
    assert ecn.encap_tos(v4(tos=0xB9), 0x2B) == 0x29        # its own ECN bits never count
    assert ecn.encap_tos(bytes(Ether() / ARP()), 1) == 0


def test_vtep_fills_tos_and_ttl_of_each_transmit():
    frame = v4(ttl=17, tos=0xB9)
    (t,) = Vtep(VtepConfig(vni=1, remote="192.0.2.2")).handle_frame(frame, 1.0)
    assert (t.tos, t.ttl) == (1, 0)
    cfg = VtepConfig(vni=1, remote="192.0.2.2", ttl="inherit", tos="inherit")
    cfg.validate()
    (t,) = Vtep(cfg).handle_frame(frame, 1.0)
    assert (t.tos, t.ttl) == (0xB9, 17)


def test_fast_path_mirrors_tos_and_ttl():
    from vxtun.fastpath import wire as fp
    frames = [v4(ttl=t, tos=d) for t in (0, 1, 64, 255) for d in (0, 0xB9, 0xBB, 3)]
    frames += [v6(hlim=h, tc=d) for h in (1, 200) for d in (0x2A, 0x2B)]
    frames += [bytes(Ether() / Dot1Q() / IP(ttl=9, tos=6)), bytes(Ether() / ARP()), b"",
               v4()[:15], v4()[:16], v4()[:22], v4()[:23]]
    for f in frames:
        assert fp.inner_ttl(f) == ecn.inner_ttl(f), f.hex()
        for tos in (0, 1, 0x28, 0xFF):
            assert fp.encap_tos(f, tos) == ecn.encap_tos(f, tos), (f.hex(), tos)


# --- the options, as iproute2 names them ------------------------------------------------------

UP = ["--vni", "42", "--remote", "192.0.2.1"]


def config(argv: list[str]) -> VtepConfig:
    (cfg,) = config_from_args(up_parser().parse_args(UP + argv))
    cfg.validate()
    return cfg


def test_defaults_are_the_kernels():
    cfg = config([])
    assert (cfg.ttl, cfg.tos, cfg.df, cfg.srcport) == (None, 0, "unset", (0, 0))
    assert cfg.udpcsum and not cfg.udp6zerocsumtx and not cfg.udp6zerocsumrx


@pytest.mark.parametrize("argv, field, value", [
    (["--ttl", "auto"], "ttl", None), (["--ttl", "0"], "ttl", None),
    (["--ttl", "inherit"], "ttl", "inherit"), (["--ttl", "9"], "ttl", 9),
    (["--tos", "inherit"], "tos", "inherit"), (["--tos", "1"], "tos", "inherit"),
    (["--tos", "28"], "tos", 0x28), (["--tos", "0xb8"], "tos", 0xB8),   # hex, as iproute2
    (["--df", "set"], "df", "set"),
    (["--noudpcsum"], "udpcsum", False), (["--udpcsum"], "udpcsum", True),
    (["--udp6zerocsumtx"], "udp6zerocsumtx", True),
    (["--udp6zerocsumrx"], "udp6zerocsumrx", True),
    (["--srcport", "100", "100"], "srcport", (100, 100)),
])
def test_options(argv, field, value):
    assert getattr(config(argv), field) == value


@pytest.mark.parametrize("argv, message", [
    (["--ttl", "256"], "invalid ttl 256: must be 1..255, auto or inherit"),
    (["--ttl", "often"], "invalid ttl often"),
    (["--tos", "300"], "invalid tos 768: must be 0..255 or inherit"),
])
def test_bad_options(argv, message):
    with pytest.raises(LocalError, match=message):
        config(argv)


def test_df_inherit_is_taken_and_other_words_refused():
    VtepConfig(vni=1, df="inherit").validate()
    with pytest.raises(LocalError, match="invalid df maybe: must be unset, set or inherit"):
        VtepConfig(vni=1, df="maybe").validate()


def test_config_file_keys(tmp_path):
    from vxtun.cli.configfile import load
    f = tmp_path / "v.toml"
    f.write_text('[[vtep]]\nvni = 1\nremote = "192.0.2.1"\nttl = "inherit"\ntos = 40\n'
                 'df = "set"\nnoudpcsum = true\nsrcport = [0, 0]\n')
    (cfg,) = load(str(f))
    assert (cfg.ttl, cfg.tos, cfg.df, cfg.udpcsum, cfg.srcport) == \
        ("inherit", 40, "set", False, (0, 0))


# --- counters -----------------------------------------------------------------------------------

def test_counters_are_a_kernel_vteps():
    """One tx per remote copy, bytes without the inner Ethernet header, both ways."""
    from vxtun.core.vtep import Transmit
    from vxtun.fdb import Remote
    vtep = Vtep(VtepConfig(vni=42))
    for ip in ("192.0.2.2", "192.0.2.3"):
        vtep.fdb.add(bytes(6), Remote(ip), "permanent", 1.0, "append")
    frame = bytes(Ether(src=SRC, dst="ff:ff:ff:ff:ff:ff") / IP() / UDP() / (b"x" * 58))
    out = vtep.handle_frame(frame, 1.0)
    assert [type(a) for a in out] == [Transmit, Transmit]
    assert vtep.stats.to_json()["tx"] == {"packets": 2, "bytes": 2 * (len(frame) - 14)}
    vtep.handle_datagram(encode_header(42) + bytes(Ether(src=DST, dst=SRC) / IP()), "192.0.2.2",
                         1.0)
    assert vtep.stats.to_json()["rx"] == {"packets": 1, "bytes": 20}


def test_flowlabel_option():
    assert config(["--flowlabel", "12345"]).flowlabel == 12345
    assert config(["--flowlabel", "inherit"]).flowlabel == "inherit"
    with pytest.raises(LocalError, match="invalid flowlabel 524288"):
        config(["--flowlabel", "524288"])
    assert config(["--df", "inherit"]).df == "inherit"
