"""The CLI without root: iproute2-style words -> requests, ``vxtun up`` options -> VtepConfig,
validation messages, exit statuses, and the iproute2-like output.  Nothing here opens a device.
"""
from __future__ import annotations

import pytest

from vxtun.cli import output
from vxtun.cli.main import config_from_args, dstport_note, main, up_parser
from vxtun.cli.requests import parse_dev_only, parse_fdb, parse_neigh
from vxtun.core import Vtep, VtepConfig
from vxtun.errors import LocalError
from vxtun.wire.ether import mac_from_str

ZERO = "00:00:00:00:00:00"
UP_OK = ["--vni", "42", "--remote", "192.0.2.1", "--local", "192.0.2.2", "--dev", "eth0"]


# --- vxtun fdb ... (bridge fdb grammar) -----------------------------------------------------


def test_fdb_add_default_entry_as_bridge_fdb_takes_it():
    req = parse_fdb(["add", ZERO, "dst", "192.0.2.1", "dev", "vxtun0", "self", "permanent"])
    assert req.dev == "vxtun0" and not req.json
    assert req.body == {"cmd": "fdb", "op": "add", "mac": ZERO, "dst": "192.0.2.1",
                        "state": "permanent"}


def test_fdb_normalises_mac_and_ip():
    req = parse_fdb(["append", "A:B:C:D:E:F", "dst", "2001:db8::0001", "port", "8472",
                     "vni", "43", "via", "eth0", "static"])
    assert req.body["mac"] == "0a:0b:0c:0d:0e:0f"
    assert req.body["dst"] == "2001:db8::1"
    assert (req.body["port"], req.body["vni"], req.body["via"]) == (8472, 43, "eth0")
    assert req.body["state"] == "static"


@pytest.mark.parametrize("words,op", [([], "show"), (["list"], "show"), (["show"], "show"),
                                      (["delete", ZERO], "del"), (["del", ZERO], "del"),
                                      (["flush"], "flush")])
def test_fdb_ops_and_aliases(words, op):
    assert parse_fdb(words).body["op"] == op


def test_fdb_show_json_and_flush_dynamic():
    req = parse_fdb(["show", "dev", "vxtun0", "-j"])
    assert req.json and req.dev == "vxtun0"
    assert parse_fdb(["flush", "dynamic"]).body.get("dynamic") is True


@pytest.mark.parametrize("words,message", [
    (["frob"], "unknown fdb command 'frob'"),
    (["add"], "fdb add needs a MAC address"),
    (["add", "zz:zz"], "invalid MAC address 'zz:zz'"),
    (["add", "00:11:22:33:44"], "invalid MAC address"),
    (["add", ZERO], "fdb add on a VTEP needs a destination: dst IP"),
    (["add", ZERO, "dst", "300.1.1.1"], "invalid dst address '300.1.1.1'"),
    (["add", ZERO, "dst"], "dst needs a value"),
    (["add", ZERO, "dst", "192.0.2.1", "port", "0"], "invalid port 0: must be 1..65535"),
    (["add", ZERO, "dst", "192.0.2.1", "port", "x"], "invalid port 'x': not a number"),
    (["add", ZERO, "dst", "192.0.2.1", "vni", "16777216"],
     "invalid vni 16777216: must be 0..16777215"),
    (["add", ZERO, "dst", "192.0.2.1", "master"], "use 'bridge fdb'"),
    (["show", "bogus"], "unexpected word 'bogus' in fdb show"),
])
def test_fdb_errors_say_what_is_wrong(words, message):
    with pytest.raises(LocalError, match=message.replace("(", r"\(")):
        parse_fdb(words)


# --- vxtun neigh ... (ip neigh grammar) -----------------------------------------------------


def test_neigh_add_as_ip_neigh_takes_it():
    req = parse_neigh(["add", "10.20.1.3", "lladdr", "D2:04:EB:E6:70:E4", "dev", "vxtun0",
                       "nud", "reachable"])
    assert req.dev == "vxtun0"
    assert req.body == {"cmd": "neigh", "op": "add", "dst": "10.20.1.3",
                        "lladdr": "d2:04:eb:e6:70:e4", "nud": "reachable"}


@pytest.mark.parametrize("words,message", [
    (["add", "10.20.1.3"], "neigh add needs lladdr MAC"),
    (["add"], "neigh add needs an IP address"),
    (["add", "10.20.1.999", "lladdr", ZERO], "invalid neighbour address"),
    (["add", "10.20.1.3", "lladdr", ZERO, "nud", "bogus"], "invalid nud state 'bogus'"),
    (["poke"], "unknown neigh command 'poke'"),
    (["show", "x"], "unexpected word 'x' in neigh show"),
])
def test_neigh_errors(words, message):
    with pytest.raises(LocalError, match=message):
        parse_neigh(words)


def test_neigh_show_is_the_default():
    assert parse_neigh([]).body == {"cmd": "neigh", "op": "show"}


# --- down / show / stats / monitor ----------------------------------------------------------


def test_dev_only_forms():
    assert parse_dev_only([], "show").dev is None
    assert parse_dev_only(["vxtun1"], "down").dev == "vxtun1"
    req = parse_dev_only(["dev", "vxtun1", "-j"], "stats")
    assert (req.dev, req.json, req.body) == ("vxtun1", True, {"cmd": "stats"})
    assert parse_dev_only(["all"], "monitor").dev is None


@pytest.mark.parametrize("words,message", [(["dev"], "dev needs a value"),
                                           (["a", "b"], "unexpected word 'b' in show"),
                                           (["--frob"], "unexpected word '--frob'")])
def test_dev_only_errors(words, message):
    with pytest.raises(LocalError, match=message):
        parse_dev_only(words, "show")


# --- vxtun up: options -> VtepConfig -> validate() -----------------------------------------


def config(argv: list[str]) -> VtepConfig:
    (cfg,) = config_from_args(up_parser().parse_args(argv))
    cfg.validate()
    return cfg


def test_up_defaults(capsys):
    cfg = config(UP_OK)
    assert (cfg.vni, cfg.name, cfg.remote, cfg.local, cfg.dev) == \
        (42, "vxtun0", "192.0.2.1", "192.0.2.2", "eth0")
    assert cfg.dstport == 4789 and cfg.srcport == (0, 0)     # the namespace's range
    assert cfg.mtu is None          # chosen from the underlay device when the VTEP opens
    assert cfg.learning and not cfg.proxy and cfg.ageing == 300
    assert capsys.readouterr().err == ""       # the note waits until the VTEP is valid
    note = dstport_note(up_parser().parse_args(UP_OK))
    assert note.count("4789") == 1 and "IANA" in note and "8472" in note
    assert len(note.splitlines()) == 1


def test_up_explicit_dstport_says_nothing(capsys):
    cfg = config(UP_OK + ["--dstport", "8472"])
    assert cfg.dstport == 8472
    assert capsys.readouterr().err == ""
    assert dstport_note(up_parser().parse_args(UP_OK + ["--dstport", "8472"])) is None


def test_up_all_options(capsys):
    cfg = config(["--id", "7", "--name", "vx7", "--group", "239.1.1.1", "--dev", "eth0",
                  "--dstport", "4789", "--srcport", "1000", "2000", "--ttl", "5", "--mtu",
                  "1400", "--address", "10.20.1.3/24", "--address", "fd00::3/64", "--mac",
                  "02:00:00:00:00:07", "--nolearning", "--ageing", "30", "--maxaddress", "9",
                  "--proxy", "--l2miss", "--l3miss", "--reachable-time", "5"])
    assert (cfg.vni, cfg.name, cfg.group, cfg.srcport, cfg.ttl, cfg.mtu) == \
        (7, "vx7", "239.1.1.1", (1000, 2000), 5, 1400)
    assert cfg.address == ["10.20.1.3/24", "fd00::3/64"]
    assert cfg.mac == mac_from_str("02:00:00:00:00:07")
    assert not cfg.learning and cfg.ageing == 30 and cfg.maxaddress == 9
    assert cfg.proxy and cfg.l2miss and cfg.l3miss and cfg.reachable_time == 5


def test_up_ipv6_addresses_are_canonical():
    cfg = config(["--vni", "1", "--remote", "2001:db8:0::0001", "--local", "2001:DB8::2",
                  "--dstport", "4789"])
    assert (cfg.remote, cfg.local, cfg.family) == ("2001:db8::1", "2001:db8::2", 6)


@pytest.mark.parametrize("argv,message", [
    (["--vni", "16777216"], "invalid VNI 16777216: a VNI is 24 bits (0..16777215)"),
    (["--vni", "-1"], "invalid VNI -1"),
    (["--local", "2001:db8::2"], "must all be IPv4 or all IPv6"),
    (["--remote", "2001:db8::1"], "must all be IPv4 or all IPv6"),
    (["--remote", "192.0.2.300"], "invalid remote address '192.0.2.300'"),
    (["--dstport", "0"], "invalid dstport 0: must be 1..65535"),
    (["--dstport", "65536"], "invalid dstport 65536"),
    (["--srcport", "2000", "1000"], "invalid srcport range 2000 1000"),
    (["--remote", "239.1.1.1"], "remote 239.1.1.1 is multicast: use --group"),
    (["--group", "239.1.1.1"], "remote and group are mutually exclusive"),
    (["--ttl", "256"], "invalid ttl 256"),
    (["--mtu", "67"], "invalid mtu 67: must be 68..65535"),
    (["--name", "a-name-longer-than-15"], "invalid device name"),
    (["--name", "a/b"], "invalid device name"),
    (["--ageing", "-1"], "ageing must not be negative"),
])
def test_up_validation_messages(argv, message):
    # later options override UP_OK's, as argparse does
    with pytest.raises(LocalError) as e:
        config(UP_OK + argv)
    assert message in str(e.value)


@pytest.mark.parametrize("argv,message", [
    # vxlan_config_validate(): "Local address cannot be multicast"
    (["--local", "239.1.1.1"], "invalid local address 239.1.1.1: a local address cannot be "
                               "multicast"),
    (["--local", "ff02::1", "--remote", "2001:db8::1"], "invalid local address ff02::1"),
    (["--remote", "0.0.0.0"], "invalid remote address 0.0.0.0: the any address is no VTEP "
                              "(leave --remote out for no default destination)"),
    (["--remote", "::", "--local", "2001:db8::2"], "invalid remote address ::: the any "
                                                   "address is no VTEP"),
    (["--remote", "255.255.255.255"], "invalid remote address 255.255.255.255: the broadcast "
                                      "address is no VTEP"),
    (["--ageing", "nan"], "invalid ageing nan: must be a finite number of seconds"),
    (["--ageing", "inf"], "invalid ageing inf: must be a finite number of seconds"),
    (["--ageing=-inf"], "invalid ageing -inf"),
    (["--ageing", "4294967296"], "invalid ageing 4.29497e+09: at most 4294967295 seconds"),
    (["--reachable-time", "nan"], "invalid reachable time nan"),
    (["--gc-stale-time", "inf"], "invalid gc stale time inf"),
    # eth_prepare_mac_addr_change(): is_valid_ether_addr(), else EADDRNOTAVAIL
    (["--mac", "01:00:5e:00:00:01"], "invalid MAC address 01:00:5e:00:00:01: a device's "
                                     "address cannot be multicast or broadcast"),
    (["--mac", "ff:ff:ff:ff:ff:ff"], "cannot be multicast or broadcast"),
    (["--mac", "00:00:00:00:00:00"], "invalid MAC address 00:00:00:00:00:00: a device's "
                                     "address cannot be all zeros"),
    (["--address", "2001:db8::/200"], "cannot add address 2001:db8::/200: the prefix length "
                                      "must be 0..128 for IPv6"),
    (["--address", "10.20.1.3/33"], "cannot add address 10.20.1.3/33: the prefix length must "
                                    "be 0..32 for IPv4"),
    (["--address", "10.20.1.3/x"], "the prefix length must be 0..32"),
    (["--address", "10.20.1.3/"], "the prefix length must be 0..32"),
    (["--address", "10.20.1.300/24"], "cannot add address '10.20.1.300/24': '10.20.1.300' is "
                                      "not an IP address"),
])
def test_up_refuses_what_the_kernel_refuses(argv, message):
    with pytest.raises(LocalError) as e:
        config(UP_OK + argv)
    assert message in str(e.value)


@pytest.mark.parametrize("argv", [
    ["--address", "10.20.1.3"], ["--address", "10.20.1.3/0"], ["--address", "fd00::3/128"],
    ["--mac", "02:00:00:00:00:01"], ["--ageing", "0"], ["--ageing", "4294967295"],
])
def test_up_takes_what_the_kernel_takes(argv):
    config(UP_OK + argv)


def test_an_mtu_above_the_lower_device_is_clamped_as_the_kernel_does():
    # vxlan_config_apply(): max_mtu = lowerdev->mtu - headroom; dev->mtu = min(mtu, max_mtu)
    cfg = config(UP_OK + ["--mtu", "1451"])
    assert cfg.max_mtu(1500) == 1450
    note = cfg.fit_mtu(1500)
    assert cfg.mtu == 1450
    assert note == ("vxtun0: mtu 1451 does not fit eth0 (mtu 1500, less 50 for the VXLAN "
                    "headers): using 1450, as the kernel does")
    v6 = config(["--vni", "1", "--remote", "2001:db8::1", "--dev", "eth0", "--mtu", "1500"])
    assert v6.fit_mtu(1500) and v6.mtu == 1430
    fits = config(UP_OK + ["--mtu", "1450"])
    assert fits.fit_mtu(1500) is None and fits.mtu == 1450
    tiny = config(UP_OK + ["--mtu", "1400"])
    assert tiny.fit_mtu(100) and tiny.mtu == 68           # never below ETH_MIN_MTU


def test_up_clamps_the_mtu_before_the_owner_sees_it(monkeypatch, capsys):
    from vxtun.cli import main as cli_main
    from vxtun.dataplane import owner
    sent = []

    def acquire(configs, fdb=None):
        sent.extend(configs)
        raise LocalError("stop here")

    monkeypatch.setattr(cli_main, "underlay_mtu", lambda dev: 1500 if dev == "eth0" else None)
    monkeypatch.setattr(owner.Lease, "acquire", staticmethod(acquire))
    assert main(["up"] + UP_OK + ["--dstport", "4789", "--mtu", "1451"]) == 1
    assert [c.mtu for c in sent] == [1450]
    err = capsys.readouterr().err
    assert "vxtun: vxtun0: mtu 1451 does not fit eth0 (mtu 1500" in err
    assert "using 1450, as the kernel does" in err


def test_underlay_mtu_reads_this_namespaces_device():
    from vxtun.cli.main import underlay_mtu
    assert underlay_mtu("lo") == int(open("/sys/class/net/lo/mtu").read())
    assert underlay_mtu("vxt-no-such-dev") is None


def test_group_needs_a_device_and_must_be_multicast():
    with pytest.raises(LocalError, match="needs the underlay device"):
        VtepConfig(vni=1, group="239.1.1.1").validate()
    with pytest.raises(LocalError, match="192.0.2.9 is not a multicast address"):
        VtepConfig(vni=1, group="192.0.2.9", dev="eth0").validate()


# --- main(): exit statuses and messages -----------------------------------------------------


@pytest.mark.parametrize("argv,message", [
    (["up"] + UP_OK + ["--vni", "16777216"], "vxtun: invalid VNI 16777216"),
    (["up", "--vni", "42", "--local", "192.0.2.2", "--remote", "2001:db8::1"],
     "vxtun: local, remote and group addresses must all be IPv4 or all IPv6"),
    (["up"], "vxtun: --vni is required"),
    (["frobnicate"], "vxtun: unknown command 'frobnicate'"),
    (["fdb", "add", "zz"], "vxtun: invalid MAC address 'zz'"),
    (["neigh", "add", "10.20.1.3"], "vxtun: neigh add needs lladdr MAC"),
    (["show", "dev", "vxt-no-such-vtep"], "no vxtun VTEP named vxt-no-such-vtep is running"),
])
def test_main_reports_errors_with_status_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_main_usage():
    assert main([]) == 2
    assert main(["help"]) == 0


def test_up_rejects_a_non_numeric_vni():
    with pytest.raises(SystemExit) as e:
        main(["up", "--vni", "forty-two"])
    assert e.value.code == 2


# --- output, modelled on iproute2 -----------------------------------------------------------


def test_default_fdb_entry_prints_like_bridge_fdb_show():
    cfg = config(UP_OK + ["--dstport", "4789"])
    vtep = Vtep(cfg)
    (js,) = vtep.fdb_show()
    assert output.format_fdb_line(js, with_dev=False) == \
        "00:00:00:00:00:00 dst 192.0.2.1 via eth0 self permanent"
    assert output.format_fdb_line(js) == \
        "00:00:00:00:00:00 dev vxtun0 dst 192.0.2.1 via eth0 self permanent"


def test_learned_entry_prints_without_state():
    cfg = config(UP_OK + ["--dstport", "4789"])
    vtep = Vtep(cfg)
    vtep.fdb.learn(mac_from_str("02:00:00:00:00:01"), "192.0.2.1", 1.0)
    lines = [output.format_fdb_line(js, with_dev=False) for js in vtep.fdb_show()]
    assert lines[1] == "02:00:00:00:00:01 dst 192.0.2.1 self"


def test_show_prints_like_ip_d_link_show():
    d = {"ifname": "vxtun0", "mtu": 1450, "dataplane": "pure", "address": "02:00:00:00:00:03",
         "vni": 42, "remote": "192.0.2.1", "local": "192.0.2.2", "dev": "eth0",
         "srcport": [0, 0], "dstport": 4789, "ttl": None, "ageing": 300.0,
         "learning": True, "addresses": ["10.20.1.3/24"], "features": ["vnet_hdr"]}
    text = output.format_show(d)
    assert text.splitlines()[0].startswith("vxtun0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1450")
    assert "link/ether 02:00:00:00:00:03 brd ff:ff:ff:ff:ff:ff" in text
    assert ("vxlan id 42 remote 192.0.2.1 local 192.0.2.2 dev eth0 srcport 0 0 "
            "dstport 4789 ttl auto ageing 300 udpcsum noudp6zerocsumtx noudp6zerocsumrx") in text
    assert "localbypass" not in text and "tos" not in text and "df " not in text


def test_show_names_the_wire_settings_that_are_not_the_defaults():
    d = {"ifname": "vxtun0", "mtu": 1450, "dataplane": "fast", "address": "02:00:00:00:00:03",
         "vni": 42, "remote": "2001:db8::1", "srcport": [0, 0], "dstport": 4789, "ttl": 9,
         "tos": "inherit", "df": "set", "flowlabel": 0x12345, "udpcsum": False,
         "udp6zerocsumtx": True, "udp6zerocsumrx": True, "localbypass": False,
         "ageing": 300.0, "learning": True}
    text = output.format_show(d)
    assert ("ttl 9 tos inherit df set flowlabel 0x12345 ageing 300 noudpcsum udp6zerocsumtx "
            "udp6zerocsumrx nolocalbypass") in text


def test_stats_prints_drops_by_reason():
    from vxtun.core import Stats
    s = Stats()
    s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes = 3, 300, 4, 400
    s.drop("vni_not_found")
    s.drop("vni_not_found")
    text = output.format_stats({"ifname": "vxtun0", "vni": 42, **s.to_json()})
    assert "RX (underlay -> vxtun0): 3 packets 300 bytes" in text
    assert "TX (vxtun0 -> underlay): 4 packets 400 bytes" in text
    assert "dropped 2" in text and "vni_not_found 2" in text


def test_stats_prints_the_shared_sockets_drops():
    from vxtun.core import Stats
    s = Stats()
    sock = Stats()
    sock.drop("not_vxlan")
    d = {"ifname": "vx42", "vni": 42, **s.to_json(),
         "socket": {"dstport": 4789, "vteps": 2, "drops": sock.to_json()["drops"]}}
    text = output.format_stats(d)
    assert "socket (UDP port 4789, shared by 2 VTEPs): dropped 1" in text
    assert "not_vxlan 1" in text
