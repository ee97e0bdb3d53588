"""The control sockets under attack: a squatter, too many clients, a reader that goes away.

* The sockets are abstract names (``@vxtun-owner``, ``@vxtun/NAME``), which any user of the
  namespace can bind first.  root's vxtun must see who holds them (SO_PEERCRED) and refuse to
  talk to anyone but root: say so, exit non-zero, send nothing, start nothing.
* A VTEP serves a bounded number of control connections; past it, ``vxtun show`` is told the
  VTEP is busy (it is running, not gone).
* ``vxtun show | head -0`` ends quietly, as ``ip`` does.
"""
from __future__ import annotations

import json
import shlex
import subprocess

from helpers import links, stop, wait_exit

from vxtun.lab.netns import python, run

ARGS = ["--vni", "42", "--remote", "192.0.2.2", "--local", "192.0.2.1", "--dev", "eth0",
        "--dstport", "4789"]

# A squatter as uid 65534: it binds the names before root's vxtun, answers every request with
# a forged success, and prints each request it gets ("got ...").
IMPOSTOR = r"""
import json, os, selectors, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
FORGED = {
    "attach": {"pid": 1, "dataplane": "fast",
               "vteps": [{"name": "vxtun0", "vni": 42, "mtu": 1450,
                          "address": "02:00:00:00:00:01"}]},
    "show": {"ifname": "vxtun0", "vni": 42, "mtu": 1450, "dataplane": "fast",
             "address": "02:00:00:00:00:01", "remote": "6.6.6.6", "srcport": [1, 2],
             "dstport": 4789, "ageing": 300},
    "fdb": [{"mac": "00:00:00:00:00:00", "remotes": [{"dst": "6.6.6.6"}], "flags": ["self"],
             "state": "permanent"}],
    "down": {"ifname": "vxtun0"},
}
sel = selectors.DefaultSelector()
listeners = []
for name in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0" + name)
    s.listen(16)
    listeners.append(s)
    sel.register(s, selectors.EVENT_READ)
print("bound", flush=True)
while True:
    for key, _ in sel.select():
        sock = key.fileobj
        if sock in listeners:
            conn, _ = sock.accept()
            sel.register(conn, selectors.EVENT_READ)
            continue
        data = sock.recv(65536)
        if not data:
            sel.unregister(sock)
            sock.close()
            continue
        for line in data.splitlines():
            print("got " + line.decode(errors="replace"), flush=True)
            cmd = json.loads(line).get("cmd", "")
            answer = FORGED.get("fdb" if cmd.startswith("fdb") else cmd)
            sock.sendall(json.dumps({"ok": True, "result": answer}).encode() + b"\n")
"""


def squat(h, *names: str) -> subprocess.Popen:
    p = h.popen(python("-c", IMPOSTOR, *names), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "bound", p.stderr.read()
    return p


def requests_seen(impostor: subprocess.Popen) -> list[str]:
    impostor.kill()
    out, _ = impostor.communicate(timeout=10)
    return [ln for ln in out.splitlines() if ln.startswith("got ")]


def refused(p: subprocess.CompletedProcess | tuple, socket_name: str) -> None:
    rc, out, err = (p.returncode, p.stdout, p.stderr) if not isinstance(p, tuple) else p
    assert rc != 0, (out, err)
    assert (f"vxtun: the control socket {socket_name} is held by uid 65534, not root: "
            "refusing to talk to it") in err, err
    assert "Traceback" not in err, err
    assert "up," not in out and "6.6.6.6" not in out, out


def test_root_refuses_to_talk_to_a_squatter(topo, dataplane):
    h = topo.host("h1", "192.0.2.1/24")
    baseline = links(h)
    impostor = squat(h, "vxtun-owner", "vxtun/vxtun0")

    up = h.popen(python("-m", "vxtun", "up", *ARGS), env=dataplane, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True)
    refused(wait_exit(up, timeout=30), "@vxtun-owner")
    for words in (["show"], ["show", "dev", "vxtun0"], ["fdb", "show"],
                  ["fdb", "show", "dev", "vxtun0"], ["down"], ["down", "vxtun0"]):
        refused(h.run_vxtun(*words), "@vxtun/vxtun0")
    api = h.run(shlex.join(python("-c", "from vxtun.api import Controller\n"
                                        "print(Controller('vxtun0').show())")))
    assert api.returncode != 0 and "not root: refusing to talk to it" in api.stderr, api
    assert "ControlError" in api.stderr and "6.6.6.6" not in api.stdout

    # Nothing changed: no TAP, no port owner started, and the squatter heard nothing.
    assert links(h) == baseline
    pids = set(run(f"ip netns pids {h.ns}").stdout.split())
    assert pids == {str(impostor.pid)}, pids
    assert requests_seen(impostor) == []


def test_a_squatted_vtep_name_is_not_started(topo, dataplane):
    """The port owner is root's, but the VTEP's own control name is taken: the VTEP is not
    created (its TAP would be served by the squatter's control socket)."""
    h = topo.host("h1", "192.0.2.1/24")
    baseline = links(h)
    impostor = squat(h, "vxtun/vxtun0")
    up = h.popen(python("-m", "vxtun", "up", *ARGS), env=dataplane, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE, text=True)
    rc, out, err = wait_exit(up, timeout=30)
    assert rc != 0, out
    assert ("the control socket @vxtun/vxtun0 is held by uid 65534, not root: cannot start "
            "vxtun0") in err, err
    assert "up," not in out and links(h) == baseline
    assert requests_seen(impostor) == []


# A root client that opens N idle connections to a VTEP and holds them until stdin closes.
HOLDER = r"""
import socket, sys
conns = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0vxtun/vxtun0")
    conns.append(s)
print("held", flush=True)
sys.stdin.read()
"""


def test_too_many_clients_are_told_the_vtep_is_busy(topo, dataplane):
    from vxtun.dataplane.server import MAX_CLIENTS
    h = topo.host("h1", "192.0.2.1/24")
    p = h.vxtun(*ARGS, env=dataplane)

    # A reader that goes away ends vxtun quietly, as it ends ip.
    for words in ("show", "fdb show dev vxtun0"):
        r = h.run(f"{shlex.join(python('-m', 'vxtun'))} {words} | head -c 0")
        assert r.returncode == 0 and r.stderr == "", (words, r.stderr)

    holder = h.popen(python("-c", HOLDER, str(MAX_CLIENTS + 50)), stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held", holder.stderr.read()
    busy = h.run_vxtun("show", "dev", "vxtun0")
    assert busy.returncode != 0
    assert "vxtun: VTEP vxtun0 is busy:" in busy.stderr, busy.stderr
    assert "not running" not in busy.stderr and "Traceback" not in busy.stderr
    holder.stdin.close()
    holder.wait(10)
    # The held connections are gone: the VTEP answers again, and it kept forwarding state.
    show = json.loads(h.cmd("show", "dev", "vxtun0", "-j"))
    assert show[0]["ifname"] == "vxtun0"
    rc, _, err = stop(p)
    assert rc == 0, err
