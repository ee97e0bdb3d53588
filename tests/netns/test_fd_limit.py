"""A VTEP's process at its file-descriptor limit, on both dataplanes (issue 10, defect 6).

Idle control connections fill the process's descriptor table (RLIMIT_NOFILE lowered on the
running process, as a low ``ulimit -n`` or thousands of connections would): accept() then
fails with EMFILE with the connection still queued, and a loop that only retries spins at
100% of a core while every client waits.  vxtun must instead tell the waiting client, in
words, that the VTEP is busy (vxtun/io/control.py keeps a reserve descriptor for that), never
spin, never let ``vxtun show`` say that no VTEP is running, and serve again once descriptors
are free.  tests/unit/test_control.py checks the mechanism inside one process; this is the
whole path, through a real ``vxtun up``.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import time

from helpers import stop
from test_hardening_tap import cpu_seconds

from vxtun.lab.netns import python

ARGS = ["--vni", "42", "--remote", "192.0.2.2", "--local", "192.0.2.1", "--dev", "eth0",
        "--dstport", "4789"]
SPARE = 12              # descriptors left to the process above those it holds at rest
CONNS = 40              # idle connections: more than SPARE, fewer than server.MAX_CLIENTS

# A root client that opens N idle connections and holds those the VTEP keeps until stdin
# closes; prints how many it opened and how many the VTEP closed at once (with what words).
HOLDER = r"""
import json, select, signal, socket, sys, time
signal.alarm(30)    # a connect that waits for ever (a listener nobody drains) fails the test
conns, told = [], []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0vxtun/vxtun0")     # blocking: waits while the backlog is full
    conns.append(s)
time.sleep(2)       # the VTEP takes the last of the backlog
for s in select.select(conns, [], [], 0)[0]:
    told.append(s.recv(4096).decode(errors="replace"))
print(json.dumps({"opened": len(conns), "told": told}), flush=True)
signal.alarm(0)
sys.stdin.read()
"""


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_at_the_fd_limit_clients_are_told_busy_and_nothing_spins(topo, dataplane):
    from vxtun.dataplane.server import MAX_CLIENTS
    assert CONNS < MAX_CLIENTS
    h = topo.host("h1", "192.0.2.1/24")
    p = h.vxtun(*ARGS, env=dataplane)
    (pid,) = {d["pid"] for d in json.loads(h.cmd("show", "-j"))}
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    limit = open_fds(pid) + SPARE
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limits[1]))

    holder = h.popen(python("-c", HOLDER, str(CONNS)), stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    assert line, holder.stderr.read()
    held = json.loads(line)
    # every connect went through (a listener left full would make them hang), and those past
    # the limit were told why they were closed
    assert held["opened"] == CONNS
    assert held["told"] and all("the VTEP is busy" in t for t in held["told"]), held["told"]
    assert open_fds(pid) <= limit

    busy = h.run_vxtun("show", "dev", "vxtun0", timeout=30)
    assert busy.returncode != 0
    assert busy.stderr.splitlines() == [
        "vxtun: the VTEP is busy: its process has no file descriptor left for another control "
        "connection; try again later"], busy.stderr
    assert "not running" not in busy.stderr and "Traceback" not in busy.stderr
    # nothing spins at the limit: a spinning loop would take about all of the 2 s
    cpu = cpu_seconds(pid)
    time.sleep(2)
    assert cpu_seconds(pid) - cpu < 0.5

    holder.stdin.close()
    holder.wait(10)
    # descriptors are free again: the VTEP answers (within its 1-s tick) as before
    deadline = time.monotonic() + 10
    while (r := h.run_vxtun("show", "dev", "vxtun0", "-j", timeout=30)).returncode != 0:
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.2)
    assert json.loads(r.stdout)[0]["ifname"] == "vxtun0"
    rc, _, err = stop(p)
    assert rc == 0, err
