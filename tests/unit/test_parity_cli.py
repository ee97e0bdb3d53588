"""The CLI in iproute2's own words, without root.

* ``vxtun up NAME WORDS`` takes the words of ``ip link add NAME type vxlan WORDS``
  (ip/iplink_vxlan.c) and makes the same VtepConfig as the long options: proved with the
  seven scenarios' own ``ip link add`` lines (/work/shared/SCENARIOS.md, underlay addresses
  in TEST-NET), and a word vxtun has no counterpart for is refused by name.
* ``ageing 0`` is the kernel's default, 300 s (vxlan_config_validate).
* ``vxtun --version``, ``vxtun help``, ``vxtun fdb help``, ``vxtun neigh help``.
* ``vxtun fdb show -s``: each entry's used/updated seconds as ``bridge -s fdb show`` prints
  them (``... vni 77 used 3/10 self``), in text and JSON; ``src_vni`` is taken and ignored,
  as a kernel VTEP that is not ``external`` does.
"""
from __future__ import annotations

import pytest

from vxtun.cli import output
from vxtun.cli.main import config_from_args, main, parse_up, up_parser
from vxtun.cli.requests import parse_fdb
from vxtun.core import Vtep, VtepConfig
from vxtun.errors import LocalError
from vxtun.fdb import Remote
from vxtun.wire.ether import mac_from_str

R, L, D = "192.0.2.1", "192.0.2.2", "eth0"
BASE = f"id 42 dstport 4789 local {L} dev {D}"

# scenario: (the words after "ip link add vxlan0 type vxlan", the same as long options)
SCENARIOS = {
    "1 point to point": (f"id 42 dstport 4789 remote {R} local {L} dev {D}",
                         f"--vni 42 --dstport 4789 --remote {R} --local {L} --dev {D}"),
    "2 multicast": (f"id 42 dstport 4789 group 239.1.1.1 dev {D}",
                    f"--vni 42 --dstport 4789 --group 239.1.1.1 --dev {D}"),
    "3 bridge": (f"master br0 id 42 dstport 4789 group 239.1.1.1 dev {D}",
                 f"--master br0 --vni 42 --dstport 4789 --group 239.1.1.1 --dev {D}"),
    "4 head-end replication": (BASE, f"--vni 42 --dstport 4789 --local {L} --dev {D}"),
    "5 manual fdb": (f"{BASE} nolearning",
                     f"--vni 42 --dstport 4789 --local {L} --dev {D} --nolearning"),
    "6 arp proxy": (f"{BASE} nolearning proxy",
                    f"--vni 42 --dstport 4789 --local {L} --dev {D} --nolearning --proxy"),
    "7 miss events": (f"{BASE} nolearning proxy l2miss l3miss",
                      f"--vni 42 --dstport 4789 --local {L} --dev {D} --nolearning --proxy "
                      "--l2miss --l3miss"),
    "issue": ("id 42 group 239.1.1.1 dev eth0 dstport 4789 nolearning proxy l2miss l3miss "
              "ageing 120",
              "--vni 42 --group 239.1.1.1 --dev eth0 --dstport 4789 --nolearning --proxy "
              "--l2miss --l3miss --ageing 120"),
}


def config(argv: list[str]) -> VtepConfig:
    (cfg,) = config_from_args(parse_up(argv))
    cfg.validate()
    return cfg


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_up_words_make_the_same_request_as_long_options(name):
    words, long = SCENARIOS[name]
    by_words = config(["vxlan0", *words.split()])
    by_options = config(["--name", "vxlan0", *long.split()])
    assert by_words == by_options
    assert by_words.name == "vxlan0" and by_words.vni == 42


def test_up_words_take_type_vxlan_ip_link_words_and_long_options_after():
    cfg = config(["vx9", "address", "02:00:00:00:00:09", "mtu", "1400", "type", "vxlan",
                  "vni", "9", "remote", R, "srcport", "40000", "50000", "ttl", "5",
                  "maxaddress", "10", "learning", "--address", "10.20.1.3/24"])
    assert (cfg.name, cfg.vni, cfg.remote, cfg.mtu, cfg.ttl, cfg.maxaddress) == \
        ("vx9", 9, R, 1400, 5, 10)
    assert cfg.mac == mac_from_str("02:00:00:00:00:09")
    assert cfg.srcport == (40000, 50000) and cfg.learning
    assert cfg.address == ["10.20.1.3/24"]


@pytest.mark.parametrize("words,message", [
    (["rsc"], "vxtun does not support 'rsc'"),
    (["gbp"], "vxtun does not support 'gbp'"),
    (["external"], "vxtun does not support 'external'"),
    (["bogus"], "unknown word 'bogus'"),
    (["config", "x.toml"], "unknown word 'config'"),
    (["remote"], "'remote' needs 1 value"),
    (["srcport", "1"], "'srcport' needs 2 values"),
    (["type", "geneve"], "vxlan devices only"),
])
def test_up_words_vxtun_lacks_are_refused_by_name(words, message):
    with pytest.raises(LocalError, match=message):
        parse_up(["vxlan0", "id", "42", *words])


def test_up_words_refused_by_main_with_one_line_and_status_1(capsys):
    assert main(["up", "vxlan0", "id", "42", "gpe"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'gpe'" in err


def test_up_words_that_are_the_default_change_nothing():
    assert config(["vxlan0", "id", "42", "norsc", "noproxy", "nol2miss", "nol3miss",
                   "learning"]) == config(["--name", "vxlan0", "--vni", "42"])


@pytest.mark.parametrize("argv", [["vxlan0", "id", "42", "ageing", "0"],
                                  ["--vni", "42", "--ageing", "0"]])
def test_ageing_zero_is_the_kernel_default(argv):
    assert config(argv).ageing == 300.0
    assert config(argv[:-1] + ["120"]).ageing == 120.0


# --- help and version ----------------------------------------------------------------------------

def test_version(capsys):
    from vxtun import __version__
    assert main(["--version"]) == 0
    assert main(["-V"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"vxtun utility, vxtun-{__version__}"] * 2


@pytest.mark.parametrize("argv,first", [
    (["help"], "Usage: vxtun [ OPTIONS ] OBJECT { COMMAND | help }"),
    (["--help"], "Usage: vxtun [ OPTIONS ] OBJECT { COMMAND | help }"),
    (["fdb", "help"], "Usage: vxtun fdb { add | append | del | replace } ADDR dev DEV"),
    (["neigh", "help"], "Usage: vxtun neigh { add | del | change | replace }"),
])
def test_help_as_iproute2_prints_it(capsys, argv, first):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == first
    assert "``" not in out


def test_fdb_help_names_the_per_remote_options(capsys):
    main(["fdb", "help"])
    out = capsys.readouterr().out
    for word in ("dst IPADDR", "port PORT", "vni VNI", "via DEV", "src_vni VNI"):
        assert word in out


def test_up_help_has_no_double_backticks(capsys):
    with pytest.raises(SystemExit):
        up_parser().parse_args(["--help"])
    assert "``" not in capsys.readouterr().out


# --- fdb show -s, src_vni ----------------------------------------------------------------------

@pytest.mark.parametrize("words", [["show", "-s"], ["show", "-statistics"],
                                   ["show", "dev", "vxtun0", "-s", "-j"]])
def test_fdb_show_statistics_words(words):
    assert parse_fdb(words).stats


def test_fdb_show_without_s_has_no_timers():
    assert not parse_fdb(["show"]).stats


def _vtep_with_entries() -> Vtep:
    v = Vtep(VtepConfig(vni=42, remote=R, mac=bytes.fromhex("02aabbccdd2a")), now=100.0)
    v.fdb_update("add", mac_from_str("02:00:00:00:00:01"), Remote("192.0.2.7", 0, 77),
                 "dynamic", 105.0)
    v.fdb.lookup(mac_from_str("02:00:00:00:00:01"), 108.0)
    return v


def test_fdb_show_s_prints_used_and_updated_as_bridge_s():
    rows = _vtep_with_entries().fdb_show(110.0)
    lines = [output.format_fdb_line(e, with_dev=False, stats=True) for e in rows]
    assert lines == [f"00:00:00:00:00:00 dst {R} used 10/10 self permanent",
                     "02:00:00:00:00:01 dst 192.0.2.7 vni 77 used 2/5 self"]
    plain = [output.format_fdb_line(e, with_dev=False) for e in rows]
    assert plain[1] == "02:00:00:00:00:01 dst 192.0.2.7 vni 77 self"


def test_fdb_show_s_json_keys_in_iproute2_order():
    rows = _vtep_with_entries().fdb_show(110.0)
    (js,) = output.fdb_bridge_json(rows[1], with_dev=False, stats=True)
    assert list(js) == ["mac", "dst", "vni", "used", "updated", "flags", "state"]
    assert (js["used"], js["updated"]) == (2, 5)
    (plain,) = output.fdb_bridge_json(rows[1], with_dev=False)
    assert "used" not in plain and "updated" not in plain


def test_fdb_src_vni_is_taken_and_ignored_as_by_a_kernel_vtep():
    with_src = parse_fdb(["add", "02:00:00:00:00:01", "dst", R, "vni", "77", "src_vni", "9"])
    without = parse_fdb(["add", "02:00:00:00:00:01", "dst", R, "vni", "77"])
    assert with_src.body == without.body
    with pytest.raises(LocalError, match="invalid src_vni"):
        parse_fdb(["add", "02:00:00:00:00:01", "dst", R, "src_vni", "x"])

