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

from helpers import TwoVteps, links, ping, vxtun_json, wait_exit

GONE = "vxtun: vx42: the TAP was deleted (ip link del); the VTEP is gone"
LOGGED = "vxtun: vx42: the TAP was deleted (ip link del); removing the VTEP"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_deleted_tap_ends_its_vtep_and_its_up_and_nothing_else(topo, dataplane, tmp_path):
    log = tmp_path / "owner.log"
    t = TwoVteps(topo, dataplane, log)
    a, x42, owner = t.a, t.x42, t.owner

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
    t.vx42_comes_back()
