"""Many VTEPs, one UDP port: the namespace's port owner, and the lease every ``vxtun up`` holds.

The kernel shares one UDP socket (a ``vxlan_sock``) among all the vxlan devices of a namespace
that use the same port, and finds the device by VNI (vxlan_vs_find_vni).  vxtun does the same
with one process, the *owner*, per network namespace:

* ``vxtun up`` (in the foreground, as before) connects to the owner's abstract Unix socket
  ``@vxtun-owner`` (abstract names belong to the namespace) and hands it its VTEPs; the owner
  opens their TAPs, sockets and control sockets in one ``Node`` and runs the dataplane.  If no
  owner runs yet, ``up`` starts one (double fork, new session, so a signal to ``up``'s process
  group does not reach it) and retries; two ``up`` racing to start one are settled by the
  bind() of the abstract name: the loser exits at once.
* The connection stays open: it is the *lease*.  When ``up`` exits (SIGINT, SIGTERM: it asks
  for a release and waits until its TAPs are gone) or dies (SIGKILL: the owner reads EOF), the
  owner removes that lease's VTEPs and nothing else.  ``vxtun down dev NAME`` removes one VTEP
  and, once a lease has none left, tells its ``up`` to exit 0.  The owner exits when the last
  lease is gone, after closing every socket, so the next ``up`` can start a fresh one.
* The owner runs one backend (pure or fast, chosen by the environment of the ``up`` that
  started it) and hands it each VTEP with ``attach(port)``/``detach(port)`` and each socket
  with ``attach_underlay``/``detach_underlay`` as leases come and go.

Why not SO_REUSEPORT with a VNI-steering BPF program, one socket per ``up`` process?  Unicast
steering needs an eBPF ``sk_reuseport`` program and a REUSEPORT_SOCKARRAY map shared by
unrelated processes (pinned in a bpffs that may not be mounted, and left behind by a SIGKILL);
the classic-BPF variant returns an index into the group, which the kernel reshuffles whenever a
member closes.  Multicast is not steered at all: every socket of the group gets a copy, and
counting ``vni_not_found`` per socket would count other VTEPs' traffic as drops.  One owner per
namespace is what the kernel itself does, works the same for both dataplanes, and keeps the
whole per-port state (demux, group memberships, drop counters) in one place.

Protocol on ``@vxtun-owner`` (JSON lines, root only, like the control sockets):

    -> {"cmd": "attach", "vteps": [{"config": {...}, "fdb": [{...}]}], "pid": 123}
    <- {"ok": true, "result": {"pid": 456, "dataplane": "pure", "vteps": [{...}]}}
       or {"ok": false, "error": "device vxtun0 already exists"}
    -> {"cmd": "release"}          <- {"ok": true, "result": null}     (then EOF)
    <- {"event": "down"}           (vxtun down took the lease's last VTEP; then EOF)
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import socket
import sys
import time

from ..core import VtepConfig
from ..core.requests import FdbUpdate, fdb_update_from_json
from ..errors import ControlError, LocalError, VxtunError
from ..io import control
from ..wire.ether import mac_from_str, mac_to_str

ADDRESS = "\0vxtun-owner"
START_TIMEOUT = 10.0       # for the owner to answer an attach (it opens TAPs, joins groups)
RELEASE_TIMEOUT = 10.0
IDLE_EXIT = 15.0           # an owner nobody attached to (its up died early) exits by itself


# --- what travels on the owner socket -----------------------------------------------------


def config_to_json(cfg: VtepConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["mac"] = mac_to_str(cfg.mac) if cfg.mac else ""
    d["srcport"] = list(cfg.srcport)
    return d


def config_from_json(d: dict) -> VtepConfig:
    d = dict(d)
    d["mac"] = mac_from_str(d["mac"]) if d.get("mac") else b""
    d["srcport"] = tuple(d.get("srcport") or ())
    known = {f.name for f in dataclasses.fields(VtepConfig)}
    unknown = set(d) - known
    if unknown:
        raise LocalError(f"the port owner does not know the settings {sorted(unknown)}: "
                         "stop the VTEPs of this namespace and start them again")
    cfg = VtepConfig(**d)
    if not cfg.srcport:
        cfg.srcport = VtepConfig(vni=0).srcport
    return cfg


def fdb_to_json(entry: FdbUpdate) -> dict:
    return entry.to_json()


def fdb_from_json(d: dict) -> FdbUpdate:
    return fdb_update_from_json(d)


# --- the owner (daemon side) -------------------------------------------------------------------


class _Lease:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = b""
        self.ports: list = []
        self.attached = False
        self.pid = 0


class Owner:
    """Serves ``@vxtun-owner`` from inside a Node's loop."""

    def __init__(self, listener: socket.socket, node) -> None:
        self.listener = listener
        self.node = node
        node.on_down = self._down
        self.leases: dict[socket.socket, _Lease] = {}
        self._idle_since: float | None = time.monotonic()
        node.watch(listener.fileno(), self._accept)

    def serve(self) -> None:
        def idle(*_):
            if not self.leases and self._idle_since is not None:
                self.node.stop()
        signal.signal(signal.SIGALRM, idle)
        signal.alarm(int(IDLE_EXIT))
        try:
            self.node.run()
        finally:
            signal.alarm(0)
            # Refuse newcomers first: an up that connects from now on sees EOF and starts a
            # new owner, which must find the UDP ports free (Node.close frees them).
            self.node.unwatch(self.listener.fileno())
            self.listener.close()
            for conn in list(self.leases):
                self._drop(conn)
            self.node.close()

    def _accept(self) -> None:
        conn = control.accept_root(self.listener)
        if conn is None:
            return
        self.leases[conn] = _Lease(conn)
        self._idle_since = None
        self.node.watch(conn.fileno(), lambda c=conn: self._on_lease(c))

    def _send(self, lease: _Lease, msg: dict) -> bool:
        try:
            lease.conn.setblocking(True)
            lease.conn.settimeout(5.0)
            lease.conn.sendall(json.dumps(msg).encode() + b"\n")
            lease.conn.setblocking(False)
            return True
        except OSError:
            return False

    def _on_lease(self, conn: socket.socket) -> None:
        lease = self.leases.get(conn)
        if lease is None:
            return
        chunk = control.recv_nowait(conn)
        if chunk is None:
            return
        if not chunk:
            self._drop(conn)        # up exited or died: its VTEPs go
            self._maybe_exit()
            return
        lease.buf += chunk
        while b"\n" in lease.buf and conn in self.leases:
            line, _, lease.buf = lease.buf.partition(b"\n")
            self._request(lease, line)
        self._maybe_exit()

    def _request(self, lease: _Lease, line: bytes) -> None:
        try:
            req = json.loads(line)
            cmd = req.get("cmd")
            if cmd == "attach":
                ans = {"ok": True, "result": self._attach(lease, req)}
            elif cmd == "release":
                self._send(lease, {"ok": True, "result": self._release(lease)})
                self._drop(lease.conn)
                return
            else:
                raise LocalError(f"unknown owner command {cmd!r}")
        except VxtunError as e:
            ans = {"ok": False, "error": str(e)}
        except (ValueError, KeyError, TypeError) as e:
            ans = {"ok": False, "error": f"bad request: {e}"}
        except Exception as e:          # a bug must not take the other VTEPs down
            import traceback
            traceback.print_exc()
            ans = {"ok": False, "error": f"internal error: {e!r}"}
        if not self._send(lease, ans):
            self._drop(lease.conn)

    def _attach(self, lease: _Lease, req: dict) -> dict:
        if lease.attached:
            raise LocalError("this lease already holds VTEPs")
        configs, fdb = [], {}
        for v in req["vteps"]:
            cfg = config_from_json(v["config"])
            configs.append(cfg)
            fdb[cfg.name] = [fdb_from_json(e) for e in v.get("fdb", ())]
        ports = self.node.add(configs, fdb)
        lease.ports = list(ports)
        lease.attached = True
        lease.pid = int(req.get("pid") or 0)
        for port in ports:
            port.lease = lease
        return {"pid": os.getpid(), "dataplane": self.node.backend.name,
                "vteps": [{"name": p.config.name, "vni": p.config.vni, "mtu": p.config.mtu,
                           "address": mac_to_str(p.config.mac)} for p in ports]}

    def _release(self, lease: _Lease) -> None:
        for port in lease.ports:
            self.node.remove(port)
        lease.ports = []

    def _drop(self, conn: socket.socket) -> None:
        lease = self.leases.pop(conn, None)
        if lease is None:
            return
        self._release(lease)
        self.node.unwatch(conn.fileno())
        conn.close()

    def _down(self, port, conn=None) -> None:
        """``vxtun down dev NAME``: that VTEP goes; an up left with none exits 0."""
        lease = port.lease
        self.node.remove(port, keep=conn)
        if isinstance(lease, _Lease) and port in lease.ports:
            lease.ports.remove(port)
            if not lease.ports:
                self._send(lease, {"event": "down"})
                self._drop(lease.conn)
        # Not _maybe_exit() here: the answer to this down is still to be sent.
        self.node._deferred.append(self._maybe_exit)

    def _maybe_exit(self) -> None:
        if not self.leases:
            self.node.stop()


def _daemon() -> None:
    """The owner process (a grandchild of the first ``vxtun up``)."""
    lst = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        lst.bind(ADDRESS)
    except OSError:
        lst.close()
        return                 # another up started an owner first: it serves us all
    lst.listen(64)
    lst.setblocking(False)
    try:
        with open("/proc/self/comm", "w") as f:     # "vxtun-owner" in ps -o comm, top
            f.write("vxtun-owner")
    except OSError:
        pass
    from .node import Node
    try:
        node = Node([])
    except Exception as e:      # no dataplane: say why to whoever asks, then go
        _refuse(lst, f"cannot start the dataplane: {e}")
        return
    Owner(lst, node).serve()


def _refuse(lst: socket.socket, message: str) -> None:
    lst.setblocking(True)
    lst.settimeout(2.0)
    try:
        while True:
            conn, _ = lst.accept()
            conn.sendall(json.dumps({"ok": False, "error": message}).encode() + b"\n")
            conn.close()
    except OSError:
        pass
    finally:
        lst.close()


def spawn() -> None:
    """Start an owner in this namespace, detached from the caller (double fork + setsid)."""
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return
    code = 0
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        # The daemon must not hold the caller's pipes: a test reading up's stdout to EOF
        # would wait for the owner too.  VXTUN_OWNER_LOG names a file for its complaints.
        null = os.open(os.devnull, os.O_RDWR)
        log = os.environ.get("VXTUN_OWNER_LOG")
        err = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if log else null
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.dup2(err, 2)
        os.closerange(3, 65536)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        _daemon()
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)


# --- the lease (the vxtun up side) ----------------------------------------------------------


class _Stop(Exception):
    pass


class Lease:
    """What ``vxtun up`` holds while its VTEPs run in the owner."""

    def __init__(self, sock: socket.socket, result: dict) -> None:
        self.sock = sock
        self.result = result
        self._buf = b""

    @property
    def vteps(self) -> list[dict]:
        return self.result["vteps"]

    @classmethod
    def acquire(cls, configs: list[VtepConfig], fdb: dict | None = None) -> "Lease":
        req = {"cmd": "attach", "pid": os.getpid(),
               "vteps": [{"config": config_to_json(c),
                          "fdb": [fdb_to_json(e) for e in (fdb or {}).get(c.name, ())]}
                         for c in configs]}
        line = json.dumps(req).encode() + b"\n"
        deadline = time.monotonic() + START_TIMEOUT
        spawned = False
        while True:
            sock = _connect()
            if sock is None:
                if time.monotonic() > deadline:
                    raise ControlError("could not start the vxtun port owner of this namespace")
                if not spawned:
                    spawn()
                    spawned = True
                time.sleep(0.02)
                continue
            sock.settimeout(START_TIMEOUT + 20)
            try:
                sock.sendall(line)
                ans = _readline(sock)
            except OSError:
                ans = None
            if ans is None:
                # The owner was exiting as we came (its last lease had just gone): start anew.
                sock.close()
                spawned = False
                if time.monotonic() > deadline:
                    raise ControlError("the vxtun port owner of this namespace does not answer")
                time.sleep(0.02)
                continue
            if not ans.get("ok"):
                sock.close()
                raise LocalError(ans.get("error", "the port owner refused"))
            sock.settimeout(None)
            return cls(sock, ans["result"])

    def wait(self) -> int:
        """Until SIGINT/SIGTERM/SIGHUP (release, exit 0), ``vxtun down`` (exit 0) or the
        owner's death (exit 1)."""
        def stop(*_):
            raise _Stop()
        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            while True:
                while b"\n" not in self._buf:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        names = ", ".join(v["name"] for v in self.vteps)
                        print(f"vxtun: the port owner (pid {self.result.get('pid')}) exited; "
                              f"{names} is gone", file=sys.stderr)
                        return 1
                    self._buf += chunk
                line, _, self._buf = self._buf.partition(b"\n")
                msg = json.loads(line)
                if msg.get("event") == "down":
                    return 0
        except _Stop:
            for s in old:
                signal.signal(s, signal.SIG_IGN)
            self.release()
            return 0
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.sock.close()

    def release(self) -> None:
        """Ask the owner to remove our VTEPs and wait until it has (the TAPs are gone)."""
        try:
            self.sock.settimeout(RELEASE_TIMEOUT)
            self.sock.sendall(b'{"cmd": "release"}\n')
            while True:             # skip a "down" event that crossed our request
                while b"\n" not in self._buf:
                    chunk = self.sock.recv(4096)
                    if not chunk:
                        return
                    self._buf += chunk
                line, _, self._buf = self._buf.partition(b"\n")
                if "event" not in json.loads(line):
                    return
        except (OSError, ValueError):
            pass


def _connect() -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(ADDRESS)
    except OSError as e:
        sock.close()
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
            return None
        raise ControlError(f"cannot reach the vxtun port owner: {e.strerror}") from None
    return sock


def _readline(sock: socket.socket) -> dict | None:
    """The owner's answer to an attach: the first line, read byte-wise so nothing after it
    (a later event) is consumed here."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return None
        buf += chunk
    return json.loads(buf)


__all__ = ["Owner", "Lease", "spawn", "ADDRESS"]
