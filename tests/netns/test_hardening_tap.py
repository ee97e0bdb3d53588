"""A TAP deleted under a running vxtun (``ip link del``), on both dataplanes.

The kernel detaches the TAP from vxtun's fd (tun_detach_all): the fd then polls EPOLLERR and
every read fails with EBADFD.  vxtun must notice, say so once in the owner's log, remove that
VTEP as ``vxtun down`` would (so its name can be used again), and end the ``vxtun up`` that
held it with status 1 and one line, while the other VTEP of the namespace, served by the
same owner process from another ``vxtun up``, runs on.  And nothing may spin on the dead fd.
"""
from __future__ import annotations

import os
import time

from helpers import kernel_vtep, links, ping, stop, vxtun_json, vxtun_up, wait_exit

A, B = "192.0.2.1", "192.0.2.2"
GONE = "vxtun: vx42: the TAP was deleted (ip link del); the VTEP is gone"
LOGGED = "vxtun: vx42: the TAP was deleted (ip link del); removing the VTEP"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_deleted_tap_ends_its_vtep_and_its_up_and_nothing_else(topo, dataplane, tmp_path):
    a = topo.host("h0", f"{A}/24")
    b = topo.host("h1", f"{B}/24")
    log = tmp_path / "owner.log"
    env = {**dataplane, "VXTUN_OWNER_LOG": str(log)}
    for vni in (42, 43):
        kernel_vtep(b, remote=A, local=B, address=f"10.20.{vni}.2/24", vni=vni,
                    name=f"vxlan{vni}")

    def up(vni: int):
        return vxtun_up(a, env, "--vni", str(vni), "--name", f"vx{vni}", "--remote", B,
                        "--local", A, "--dev", "eth0", "--dstport", "4789",
                        "--mac", f"02:00:00:00:01:{vni}", "--address", f"10.20.{vni}.1/24",
                        name=f"vx{vni}")

    x42, x43 = up(42), up(43)
    ping(a, "10.20.42.2")
    ping(a, "10.20.43.2")
    (owner,) = {d["pid"] for d in vxtun_json(a, "show")}

    a.sh("ip link del vx42")
    # its up ends (the timeout only bounds a failure), non-zero, with one line
    status, _, err = wait_exit(x42, timeout=15)
    assert status == 1 and err.splitlines() == [GONE], (status, err)
    assert [d["ifname"] for d in vxtun_json(a, "show")] == ["vx43"]
    assert "vx42" not in links(a)
    # nothing spins on the dead fd: a spinning thread would take about all of the 2 s
    cpu = cpu_seconds(owner)
    time.sleep(2)
    assert cpu_seconds(owner) - cpu < 0.5
    # the other VTEP, from the other up, is untouched
    ping(a, "10.20.43.2")
    # the owner said it once
    assert [ln for ln in log.read_text().splitlines() if "vx42" in ln] == [LOGGED]
    # and the name is free: a new up takes it, in the same owner
    again = up(42)
    assert {d["pid"] for d in vxtun_json(a, "show")} == {owner}
    ping(a, "10.20.42.2")
    assert stop(again)[0] == 0
    assert stop(x43)[0] == 0
    assert not {"vx42", "vx43"} & links(a)
