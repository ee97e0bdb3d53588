"""The parts of ``vxtun lab`` that need no namespaces: scenario choice, the words of the
monitors it reads, one-line frame summaries, the ordering of late table changes, pcap files."""
from __future__ import annotations

import io
import struct

import pytest

from vxtun.lab import state as labstate
from vxtun.lab.resolver import parse_miss
from vxtun.lab.scenarios import Lab, LabHost, Vtep, parse_vteps, scenario
from vxtun.lab.walk import Event, Narrator, Watch, summary, vxlan_of, write_pcaps
from vxtun.lab.walkmodel import Walk

H1 = bytes.fromhex("521111111111")
H2 = bytes.fromhex("522222222222")
BCAST = b"\xff" * 6


def arp_request() -> bytes:
    return (BCAST + H1 + b"\x08\x06" + bytes.fromhex("0001080006040001") + H1 +
            bytes([10, 20, 1, 2]) + bytes(6) + bytes([10, 20, 1, 3]))


def datagram(inner: bytes, src=(192, 0, 2, 1), dst=(239, 1, 1, 1), ttl=1) -> bytes:
    vx = b"\x08\x00\x00\x00" + (42).to_bytes(3, "big") + b"\x00" + inner
    udp = struct.pack("!HHHH", 51234, 4789, 8 + len(vx), 0) + vx
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, ttl, 17, 0,
                     bytes(src), bytes(dst)) + udp
    return bytes.fromhex("01005e010101") + bytes.fromhex("020000000001") + b"\x08\x00" + ip


def test_scenarios_and_mixes():
    assert scenario("8").key == "vni" and scenario("2").hosts == 3
    assert parse_vteps(None, scenario("2")) == ["kernel", "vxtun", "vxtun"]
    assert parse_vteps("kernel", scenario("1")) == ["kernel", "kernel"]
    with pytest.raises(ValueError, match="3 hosts, got 2"):
        parse_vteps("kernel,vxtun", scenario("4"))
    with pytest.raises(ValueError, match="unknown VTEP kind 'ovs'"):
        parse_vteps("ovs", scenario("4"))
    with pytest.raises(ValueError, match="no scenario '9'"):
        scenario("9")


def test_lab_names_stay_inside_their_prefix():
    assert labstate.prefix_of("demo") == "vxlab-demo"
    for bad in ("", "a-b", "../x", "UP", "x" * 13):
        with pytest.raises(ValueError):
            labstate.check_name(bad)


def test_summary_and_vxlan_of():
    assert summary(arp_request()) == "ARP who-has 10.20.1.3 tell 10.20.1.2"
    v = vxlan_of(datagram(arp_request()))
    assert (v["src"], v["dst"], v["ttl"], v["vni"], v["sport"]) == \
        ("192.0.2.1", "239.1.1.1", 1, 42, 51234)
    assert v["inner"] == arp_request()
    assert vxlan_of(arp_request()) is None


def test_monitor_lines():
    (ev,) = Watch.neigh_parser("host1", "miss 10.20.1.3 dev vxlan0 STALE", 1.0)
    assert ev.kind == "miss" and ev.data["l3"] == "10.20.1.3" and ev.data["dev"] == "vxlan0"
    (ev,) = Watch.neigh_parser("host1", "miss dev vxlan0 lladdr b2:ee:aa:42:8b:0b STALE", 1.0)
    assert ev.data["l2"] == "b2:ee:aa:42:8b:0b"
    (ev,) = Watch.neigh_parser("host1", "10.20.1.3 dev vxlan0 lladdr 52:22:22:22:22:22 "
                                        "REACHABLE", 1.0)
    assert (ev.kind, ev.data["ip"], ev.data["state"]) == ("neigh", "10.20.1.3", "REACHABLE")
    (ev,) = Watch.bridge_parser("host1", "52:22:22:22:22:22 dev vxlan0 dst 192.0.2.2 self", 1.0)
    assert (ev.data["mac"], ev.data["dst"], ev.data["permanent"]) == \
        ("52:22:22:22:22:22", "192.0.2.2", False)
    assert not list(Watch.bridge_parser("host1", "52:22:22:22:22:22 dev ve1 master br0", 1.0))
    (ev,) = Watch.vxtun_parser("host2", '{"event": "fdb", "action": "new", "mac": '
                               '"52:11:11:11:11:11", "ifname": "vxtun0", "flags": ["self"], '
                               '"state": "", "remotes": [{"dst": "192.0.2.1"}]}', 1.0)
    assert ev.data["line"] == "52:11:11:11:11:11 dev vxtun0 dst 192.0.2.1 self"
    assert parse_miss("miss dev vxlan0 lladdr B2:EE:AA:42:8B:0B STALE", "vxlan0") == \
        ("l2", "b2:ee:aa:42:8b:0b")
    assert parse_miss("miss 10.20.1.3 dev vxlan0 STALE", "vxlan0") == ("l3", "10.20.1.3")
    assert parse_miss("miss 10.20.1.3 dev other STALE", "vxlan0") is None


class _Lab:
    """What the narrator reads of a Lab, without namespaces."""
    def __init__(self) -> None:
        self.hosts = [LabHost("host1", "ns1", "192.0.2.1/24", "kernel",
                              [Vtep("vxlan0", "kernel", 42, mac=H1.hex(":"))]),
                      LabHost("host2", "ns2", "192.0.2.2/24", "vxtun",
                              [Vtep("vxtun0", "vxtun", 42, mac=H2.hex(":"))])]


def test_a_late_table_change_is_told_right_after_its_cause():
    out = io.StringIO()
    n = Narrator(_Lab(), Walk("2", "multicast"), t0=100.0, out=out)   # type: ignore[arg-type]
    n.fdb[("host1", "vxlan0")] = {"00:00:00:00:00:00": ["239.1.1.1"]}
    f = datagram(arp_request())
    learn = Event(100.010, "fdb", "host2", {"dev": "vxtun0", "mac": H1.hex(":"),
                                            "dst": "192.0.2.1", "deleted": False,
                                            "permanent": False, "line": "x"})
    n.add(learn)                                   # read from its pipe before the frames
    n.add(Event(100.001, "ol", "host1", {"dev": "vxlan0", "out": True, "frame": arp_request()}))
    n.add(Event(100.002, "ul", "host1", {"dev": "v0", "out": False, "frame": f}))
    n.add(Event(100.003, "ul", "host2", {"dev": "v1", "out": True, "frame": f}))
    n.add(Event(100.004, "ol", "host2", {"dev": "vxtun0", "out": False, "frame": arp_request()}))
    n.flush(None)
    titles = [s.title for s in n.walk.steps]
    assert titles[0] == "host1: ARP who-has 10.20.1.3 tell 10.20.1.2 enters vxlan0 (kernel VTEP)"
    assert "fdb miss, default 00:00:00:00:00:00 with 1 remote (239.1.1.1)" in n.walk.steps[0].text
    assert titles[1].startswith("host1 sends VXLAN 192.0.2.1 > 239.1.1.1 VNI 42")
    assert n.walk.steps[1].dst == ["host2"] and n.walk.steps[1].layers
    assert titles[2] == f"host2: vxtun0 learned {H1.hex(':')} (host1) dst 192.0.2.1"
    assert titles[3] == "host2: vxtun0 delivers ARP who-has 10.20.1.3 tell 10.20.1.2"
    assert n.datagrams[0]["to"] == ["host2"]


def test_pcap_files(tmp_path):
    w = Watch.__new__(Watch)
    w.frames = {"host1-eth0": [(5.25, datagram(arp_request())), (5.0, arp_request())]}
    (path,) = write_pcaps(w, str(tmp_path))
    data = open(path, "rb").read()
    assert struct.unpack("<IHHiIII", data[:24]) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    sec, usec, incl, orig = struct.unpack("<IIII", data[24:40])
    assert (sec, usec, incl, orig) == (5, 0, 42, 42)       # in time order
    assert data[40:82] == arp_request()


def test_lab_is_not_built_by_unit_tests():
    # Building needs root; the class is importable and its addresses follow the tutorial.
    lab = Lab(scenario("vni"), ["kernel"] * 3, ipv6=False, name="u")
    assert lab.group(43) == "239.1.1.43" and lab.underlay(2) == "192.0.2.2/24"
    assert Lab(scenario("2"), ["vxtun"] * 3, ipv6=True, name="u").underlay(1) == \
        "2001:db8::1/64"


def test_a_checksum_left_to_offload_is_filled_in_and_said_so():
    from vxtun.lab.walk import layers, with_udp_checksum
    f = datagram(arp_request())                      # UDP checksum 0x0000 as built
    partial = f[:40] + b"\x12\x34" + f[42:]          # what a CHECKSUM_PARTIAL capture holds
    fixed = with_udp_checksum(partial)
    assert fixed[:40] == f[:40] and fixed[42:] == f[42:] and fixed[40:42] != b"\x12\x34"
    (udp,) = [la for la in layers(partial, set(), partial=True) if la.name == "UDP"]
    (csum,) = [x for x in udp.fields if x.name == "checksum"]
    assert "(correct)" in csum.value and "checksum offload" in csum.value
    (udp,) = [la for la in layers(partial, set()) if la.name == "UDP"]
    assert "(wrong)" in [x for x in udp.fields if x.name == "checksum"][0].value


def test_vxtun_lab_alias(monkeypatch, capsys):
    from vxtun.lab import cli, p2p
    seen = []
    monkeypatch.setattr(p2p, "main", lambda argv=None: seen.append(argv) or 42)
    assert cli.alias_main([]) == 42 and cli.alias_main(["--pure"]) == 42   # the old lab
    assert seen == [[], ["--pure"]]
    assert cli.alias_main(["list"]) == 0                                    # vxtun lab
    assert "head-end replication" in capsys.readouterr().out
