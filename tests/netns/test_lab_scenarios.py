"""``vxtun lab``: every scenario builds and passes its own check with every mix of VTEPs, the
walks of scenarios 2 and 4 show each learned entry where it first appears, and ``vxtun lab
down`` removes a lab whose ``up`` was killed with SIGKILL."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vxtun.lab import state as labstate
from vxtun.lab.netns import child_env, python

MIXES = {
    "kernel": ["--vteps", "kernel"],
    "vxtun": ["--vteps", "vxtun"],
    "mixed": [],                                  # the scenario's default: kernel,vxtun,...
    "pure": ["--vteps", "vxtun", "--pure"],
}


def lab(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(python("-m", "vxtun", "lab", *args), env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def leftovers(name: str) -> list[str]:
    return labstate.lab_namespaces(name)


def name_for(tag: str) -> str:
    return f"{tag}{os.getpid() % 100000}"


def _build_check_and_remove(key: str, mix: str, opts: list[str], name: str) -> None:
    try:
        p = lab("up", key, *opts, "--name", name)
        out = p.stdout + p.stderr
        assert p.returncode == 0, f"scenario {key} with {mix} VTEPs:\n{out}"
        assert "\nok   " in p.stdout and "FAIL" not in out, out
        # The lab is a cheat-sheet: the commands it ran, as typed.
        if mix != "vxtun" and mix != "pure":
            assert "$ ip link add vxlan0 type vxlan id 42 dstport 4789" in p.stdout or \
                "$ ip link add vxlan42 type vxlan id 42 dstport 4789" in p.stdout, out
        if mix != "kernel":
            assert "$ vxtun up --name vxtun" in p.stdout or \
                "$ VXTUN_PUREPYTHON=1 vxtun up --name vxtun" in p.stdout, out
        d = lab("down", "--name", name)
        assert d.returncode == 0, d.stderr
        assert not leftovers(name), f"{mix}: {leftovers(name)}"
        assert not os.path.exists(labstate.path_of(name))
    finally:
        lab("down", "--name", name)


@pytest.mark.parametrize("key", ["1", "2", "3", "4", "5", "6", "7", "vni"])
def test_scenario_builds_and_checks_with_every_mix(netns_ready, key):
    # The four mixes are four labs with their own names, namespaces and state files: they
    # are built side by side (most of a build is waiting on pings and netlink), which keeps
    # the suite's time down without dropping a mix.
    with ThreadPoolExecutor(max_workers=len(MIXES)) as pool:
        futures = {mix: pool.submit(_build_check_and_remove, key, mix, opts,
                                    name_for(f"s{key[0]}{i}"))
                   for i, (mix, opts) in enumerate(MIXES.items())}
    failures = []
    for mix, f in futures.items():
        try:
            f.result()
        except AssertionError as e:
            failures.append(f"{mix}: {e}")
    assert not failures, "\n\n".join(failures)


def test_status_exec_down(netns_ready):
    name = name_for("st")
    try:
        p = lab("up", "1", "--vteps", "kernel,vxtun", "--name", name)
        assert p.returncode == 0, p.stdout + p.stderr
        s = lab("status", "--name", name)
        assert s.returncode == 0, s.stderr
        assert "host1$ bridge fdb show dev vxlan0" in s.stdout
        assert "00:00:00:00:00:00 dst 192.0.2.2 via eth0 self permanent" in s.stdout
        assert "host2$ vxtun fdb show dev vxtun0" in s.stdout
        assert "00:00:00:00:00:00 dst 192.0.2.1 via eth0 self permanent" in s.stdout
        assert "10.20.1.3 lladdr" in s.stdout          # host1's ARP cache after the check
        e = lab("exec", "--name", name, "host2", "ip", "-br", "addr", "show", "vxtun0")
        assert e.returncode == 0 and "10.20.1.3/24" in e.stdout, e.stdout + e.stderr
        bad = lab("exec", "--name", name, "host9", "true")
        assert bad.returncode == 1 and "no host 'host9'" in bad.stderr
        d = lab("down", "--name", name)
        assert "ip netns del vxlab-" in d.stdout and not leftovers(name)
        assert lab("status", "--name", name).returncode == 1
    finally:
        lab("down", "--name", name)


def alive(pid: int, wait: float = 0.0) -> bool:
    """Running, not a zombie (an orphan is reaped by whichever init adopts it, maybe late);
    ``wait``: seconds to give a dying process to become one."""
    deadline = time.time() + wait
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z" or time.time() > deadline:
            return state != "Z"
        time.sleep(0.1)


def _vxtun_pids(name: str) -> list[int]:
    st = labstate.State.load(name)
    return [v["pid"] for h in (st.data["hosts"] if st else []) for v in h["vteps"]
            if v.get("pid")]


def test_sigkilled_lab_is_removed_by_down(netns_ready):
    name = name_for("k")
    p = subprocess.Popen(python("-m", "vxtun", "lab", "up", "3", "--vteps", "vxtun",
                                "--name", name), env=child_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while len(_vxtun_pids(name)) < 2 and time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
        pids = _vxtun_pids(name)
        assert len(pids) >= 2, "the lab did not get as far as two VTEPs"
        p.send_signal(signal.SIGKILL)            # half-way through: containers not all made
        p.wait()
        assert leftovers(name) and all(os.path.exists(f"/proc/{pid}") for pid in pids)
        assert all(alive(pid) for pid in pids)
        d = lab("down", "--name", name)
        assert d.returncode == 0, d.stderr
        assert not leftovers(name)
        assert not any(alive(pid, wait=3) for pid in pids)
        assert not os.path.exists(labstate.path_of(name))
        assert not os.path.exists(labstate.log_dir(name))

        # A complete lab whose state file is gone too: down finds it by its prefix.
        u = lab("up", "2", "--vteps", "vxtun", "--name", name)
        assert u.returncode == 0, u.stdout + u.stderr
        pids = _vxtun_pids(name)
        os.unlink(labstate.path_of(name))
        d = lab("down", "--name", name)
        assert d.returncode == 0 and not leftovers(name), d.stdout + d.stderr
        assert not any(alive(pid, wait=3) for pid in pids)
    finally:
        if p.poll() is None:
            p.kill()
        lab("down", "--name", name)


def _walk(tmp_path, key: str, *opts: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / f"walk{key}.json"
    p = lab("walk", key, *opts, "--json", str(out), "--name", name_for(f"w{key}"))
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(out.read_text()), p


def _learned_where_it_appears(walk: dict) -> None:
    """Each other VTEP's learned entry for the sender's MAC: right MAC and VTEP IP, in the
    first table step that names it, after the datagram that reached that host."""
    hosts = {h["name"]: h for h in walk["hosts"]}
    sender = walk["hosts"][0]
    src_mac, src_ip = sender["vteps"][0]["mac"], sender["underlay"][0].split("/")[0]
    steps = walk["steps"]
    for h in walk["hosts"][1:]:
        first = next(s for s in steps if s["kind"] == "table" and s["actor"] == h["name"]
                     and any(t["table"] == "fdb" and src_mac in t["line"] for t in s["tables"]))
        line = next(t["line"] for t in first["tables"] if src_mac in t["line"])
        assert line.startswith(f"{src_mac} dev ") and f" dst {src_ip} " in line + " ", line
        reached = next(s for s in steps if s["kind"] == "datagram" and h["name"] in s["dst"])
        assert reached["n"] < first["n"], (reached, first)
        assert "inner frame" in [la["name"] for la in reached["layers"]]
        assert hosts[h["name"]]
    # The sender learns the target's MAC from the unicast reply.
    tgt = walk["hosts"][1]
    tgt_mac, tgt_ip = tgt["vteps"][0]["mac"], tgt["underlay"][0].split("/")[0]
    back = next(s for s in steps if s["kind"] == "table" and s["actor"] == sender["name"]
                and any(t["table"] == "fdb" and tgt_mac in t["line"] for t in s["tables"]))
    assert f"dst {tgt_ip}" in back["tables"][0]["line"]
    assert all(s["ok"] for s in steps if s["kind"] == "check")


def _arp_request_datagrams(walk: dict) -> list[dict]:
    return [s for s in walk["steps"] if s["kind"] == "datagram" and s["src"] == "host1"
            and "ARP who-has" in s["title"]]


@pytest.mark.parametrize("opts", [["--vteps", "kernel,vxtun,vxtun"], ["--vteps", "vxtun",
                                                                     "--pure"]],
                         ids=["mixed", "pure"])
def test_walk_2_multicast(netns_ready, tmp_path, opts):
    walk, p = _walk(tmp_path, "2", *opts)
    _learned_where_it_appears(walk)
    flood = _arp_request_datagrams(walk)
    assert len(flood) == 1, flood                     # one copy, to the group...
    assert "> 239.1.1.1 " in flood[0]["title"]
    assert sorted(flood[0]["dst"]) == ["host2", "host3"]   # ...that reached both others
    assert [la["size"] for la in flood[0]["layers"][:4]] == [14, 20, 8, 8]
    assert "PASS" in p.stdout


@pytest.mark.parametrize("opts", [["--vteps", "kernel,vxtun,vxtun"], ["--vteps", "vxtun"]],
                         ids=["mixed", "vxtun"])
def test_walk_4_replication_count(netns_ready, tmp_path, opts):
    walk, _ = _walk(tmp_path, "4", *opts)
    _learned_where_it_appears(walk)
    copies = _arp_request_datagrams(walk)
    assert len(copies) == 2, copies                  # once to each listed VTEP
    assert sorted(c["dst"][0] for c in copies) == ["host2", "host3"]
    assert all(len(c["dst"]) == 1 for c in copies)
    check = next(s for s in walk["steps"] if s["kind"] == "check"
                 and s["title"].startswith("head-end replication"))
    assert check["ok"] and "sent 2 times" in check["title"]


@pytest.mark.parametrize("key", ["1", "3", "5", "6", "7", "vni"])
def test_walk_other_scenarios(netns_ready, tmp_path, key):
    walk, p = _walk(tmp_path, key)
    checks = [s for s in walk["steps"] if s["kind"] == "check"]
    assert len(checks) >= 2 and all(s["ok"] for s in checks), p.stdout
    titles = " | ".join(s["title"] for s in checks)
    if key == "5":
        assert "nolearning: no VTEP learned anything" in titles
    if key == "6":
        assert "no ARP frame crossed the underlay" in titles
    if key == "7":
        assert "raised miss 10.20.1.3, then miss lladdr" in titles
        assert any(s["kind"] == "table" and s["tables"][0]["table"] in ("neigh", "arp", "fdb")
                   for s in walk["steps"])
    if key == "vni":
        assert "stayed in VNI 42" in titles


def test_walk_pcap_opens_in_tshark(netns_ready, tmp_path):
    tshark = shutil.which("tshark")
    assert tshark, "tshark is needed to check the --pcap files (apt-get install tshark)"
    d = tmp_path / "pcap"
    _walk(tmp_path, "2", "--vteps", "kernel,vxtun,vxtun", "--pcap", str(d))
    files = sorted(os.listdir(d))
    assert {"host1-eth0.pcap", "host2-eth0.pcap", "host3-eth0.pcap", "host1-vxlan0.pcap",
            "host2-vxtun0.pcap", "host3-vxtun0.pcap"} <= set(files), files
    for f in files:
        path = str(d / f)
        r = subprocess.run([tshark, "-n", "-r", path, "-T", "fields", "-e", "frame.protocols"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        protos = r.stdout.split()
        assert protos, f"{f}: no packets"
        if f.endswith("-eth0.pcap"):
            assert any("udp:vxlan:eth:ethertype:arp" in x for x in protos), (f, protos)
        else:
            assert any(x.endswith("eth:ethertype:arp") for x in protos), (f, protos)
        bad = subprocess.run([tshark, "-n", "-r", path, "-Y", "_ws.malformed || _ws.expert"
                              ".severity >= error"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 0 and not bad.stdout.strip(), (f, bad.stdout)
