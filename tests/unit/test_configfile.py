"""``vxtun up --config FILE`` (vxtun/cli/configfile.py) and what travels to the port owner.

The examples in the README and in the module's docstring are parsed as they are printed, so
the documentation cannot drift from the format.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from vxtun.cli import configfile
from vxtun.cli.main import main
from vxtun.core.requests import FdbUpdate
from vxtun.dataplane import owner
from vxtun.errors import LocalError
from vxtun.fdb import Remote
from vxtun.wire.ether import ZERO_MAC, mac_from_str

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Several VTEPs on one port"):]
    return re.search(r"```toml\n(.*?)```", section, re.S).group(1)


def docstring_example() -> str:
    doc = configfile.__doc__
    lines = doc.split("\n\n", 1)[1].split("\n\nThe keys")[0].splitlines()
    return "\n".join(ln[4:] for ln in lines)


def write(tmp_path, text: str) -> str:
    p = tmp_path / "vteps.toml"
    p.write_text(text)
    return str(p)


def test_the_readme_example(tmp_path):
    configs, fdb = configfile.load_with_fdb(write(tmp_path, readme_example()))
    vx42, vx43 = configs
    assert (vx42.name, vx42.vni, vx42.group, vx42.dev, vx42.local, vx42.dstport) == \
        ("vx42", 42, "239.1.1.42", "eth0", "192.0.2.1", 4789)
    assert vx42.address == ["10.20.42.1/24"] and vx42.learning
    assert (vx43.vni, vx43.learning, vx43.address) == (43, False, ["10.20.43.1/24"])
    assert fdb["vx42"] == []
    assert fdb["vx43"] == [
        FdbUpdate("append", ZERO_MAC, Remote("192.0.2.2"), "permanent"),
        FdbUpdate("append", ZERO_MAC, Remote("192.0.2.3"), "permanent"),
        FdbUpdate("append", mac_from_str("52:5e:55:58:9a:ab"), Remote("192.0.2.2"), "static")]


def test_the_docstring_example(tmp_path):
    configs, fdb = configfile.load_with_fdb(write(tmp_path, docstring_example()))
    assert [c.name for c in configs] == ["vx42", "vx43"]
    assert len(fdb["vx43"]) == 3


def test_every_key(tmp_path):
    (cfg,) = configfile.load(write(tmp_path, """
[[vtep]]
id = 7
name = "vx7"
remote = "2001:db8::2"
local = "2001:db8::1"
dev = "eth0"
dstport = 8472
srcport = [40000, 50000]
ttl = 5
tos = 0
mtu = 1400
address = ["10.20.7.1/24", "2001:db8:7::1/64"]
mac = "02:00:00:00:00:07"
master = "br0"
learning = false
ageing = 30.5
maxaddress = 100
proxy = true
l2miss = true
l3miss = true
reachable-time = 12
fdb = ["add 02:00:00:00:00:08 dst 2001:db8::3 port 4790 vni 8 via eth0 dynamic"]
"""))
    assert (cfg.vni, cfg.name, cfg.remote, cfg.dstport, cfg.srcport, cfg.ttl, cfg.mtu) == \
        (7, "vx7", "2001:db8::2", 8472, (40000, 50000), 5, 1400)
    assert cfg.mac == mac_from_str("02:00:00:00:00:07") and cfg.master == "br0"
    assert (cfg.learning, cfg.ageing, cfg.maxaddress) == (False, 30.5, 100)
    assert cfg.proxy and cfg.l2miss and cfg.l3miss and cfg.reachable_time == 12
    _, fdb = configfile.load_with_fdb(write(tmp_path, """
[[vtep]]
vni = 7
local = "2001:db8::1"
fdb = ["add 02:00:00:00:00:08 dst 2001:db8::3 port 4790 vni 8 via eth0 dynamic"]
"""))
    assert fdb["vxtun0"] == [FdbUpdate("add", mac_from_str("02:00:00:00:00:08"),
                                       Remote("2001:db8::3", 4790, 8, "eth0"), "dynamic")]


@pytest.mark.parametrize("text, message", [
    ("", "no VTEP: add at least one [[vtep]]"),
    ("[vtep]\nvni = 1\n", "no VTEP"),
    ("[[vtep]]\nname = 'a'\n", "vtep #1 (a): vni is required"),
    ("[[vtep]]\nvni = 1\ngrp = '239.1.1.1'\n", "unknown key 'grp'"),
    ("[[vtep]]\nvni = '42'\n", "vni must be a number, not '42'"),
    ("[[vtep]]\nvni = 1\nproxy = 'yes'\n", "proxy must be true or false, not 'yes'"),
    ("[[vtep]]\nvni = 1\nmtu = true\n", "mtu must be a number, not true"),
    ("[[vtep]]\nvni = 1\naddress = 3\n", "address must be a string or a list, not 3"),
    ("[[vtep]]\nvni = 16777216\n", "invalid VNI 16777216"),
    ("[[vtep]]\nvni = 1\nremote = '192.0.2.300'\n", "invalid remote address"),
    ("[[vtep]]\nvni = 1\nsrcport = [1]\n", "srcport must be [MIN, MAX]"),
    ("[[vtep]]\nvni = 1\nmac = 'zz'\n", "invalid MAC address 'zz'"),
    ("[[vtep]]\nvni = 1\nfdb = 'x'\n", "fdb must be a list of strings"),
    ("[[vtep]]\nvni = 1\nfdb = ['zz dst 192.0.2.1']\n", "fdb 'zz dst 192.0.2.1': invalid MAC"),
    ("[[vtep]]\nvni = 1\nfdb = ['00:00:00:00:00:00']\n", "needs a destination"),
    ("[[vtep]]\nvni = 1\nfdb = ['00:00:00:00:00:00 dst 2001:db8::1']\n", "is IPv6 but"),
    ("[[vtep]]\nvni = 1\nname = 'a'\nfdb = ['00:00:00:00:00:00 dst 192.0.2.1 dev b']\n",
     "dev b is not this VTEP (a)"),
    ("[[vtep]]\nvni = 1\n[[vtep]]\nvni = 2\n", "vtep #2: device name vxtun0 is already "
                                              "used by vtep #1"),
    ("[defaults]\nvni = 1\n[vteps]\n", "unknown section(s) vteps"),
    ("[[vtep]\n", "not valid TOML"),
])
def test_mistakes_name_the_file_and_the_vtep(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(LocalError) as e:
        configfile.load(path)
    assert message in str(e.value)
    assert str(e.value).startswith(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(LocalError, match="cannot read config file"):
        configfile.load(str(tmp_path / "nope.toml"))


def test_vxtun_up_config_reports_a_mistake_and_exits_1(tmp_path, capsys):
    path = write(tmp_path, "[[vtep]]\nvni = 1\ncolour = 'red'\n")
    assert main(["up", "--config", path]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'colour'" in err and "Traceback" not in err


def test_configs_and_fdb_entries_travel_to_the_owner_unchanged(tmp_path):
    configs, fdb = configfile.load_with_fdb(write(tmp_path, readme_example()))
    for cfg in configs:
        assert owner.config_from_json(owner.config_to_json(cfg)) == cfg
        for e in fdb[cfg.name]:
            assert owner.fdb_from_json(owner.fdb_to_json(e)) == e


def test_the_owner_refuses_settings_it_does_not_know():
    d = owner.config_to_json(configfile.parse({"vtep": [{"vni": 1}]})[0][0])
    d["flux"] = 1
    with pytest.raises(LocalError, match="does not know the settings"):
        owner.config_from_json(d)


def test_vxtun_up_config_takes_no_other_option(tmp_path, capsys):
    path = write(tmp_path, readme_example())
    assert main(["up", "--config", path, "--vni", "5", "--nolearning"]) == 1
    err = capsys.readouterr().err
    assert "put --nolearning, --vni in the file instead" in err
