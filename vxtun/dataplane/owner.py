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
    <- {"event": "gone", "name": "vxtun0", "error": "the TAP was deleted (ip link del)"}
                                   (that VTEP's TAP vanished and the VTEP is removed; after
                                    the lease's last VTEP, EOF follows and up exits 1)
"""
from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import sys
import time

from ..core import VtepConfig
from ..core.requests import FdbUpdate, fdb_update_from_json
from ..errors import ControlError, LocalError, VxtunError
from ..io import control, jsonlines
from ..io.jsonlines import BadLine, Channel
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
    def __init__(self, chan: Channel) -> None:
        self.chan = chan
        self.ports: list = []
        self.attached = False
        self.pid = 0


# Leases one owner serves at once (each a ``vxtun up`` holding its connection), as the
# control server caps its clients (vxtun/dataplane/server.py MAX_CLIENTS): far below the
# RLIMIT_NOFILE its TAPs and sockets share.
MAX_LEASES = 256


class Owner:
    """Serves ``@vxtun-owner`` from inside a Node's loop.  Like the control sockets, it never
    blocks: answers and the "down" notice go through each lease's bounded channel, and a lease
    whose ``up`` does not read them is dropped (its VTEPs go), not waited for."""

    def __init__(self, listener: socket.socket, node) -> None:
        self.listener = listener
        self.node = node
        node.on_down = self._down
        node.on_tap_gone = self._tap_gone
        self.leases: dict[Channel, _Lease] = {}
        self.max_leases = MAX_LEASES
        self._ending: set[Channel] = set()     # released leases whose last line is going out
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
            for chan in list(self.leases):
                self._drop(chan)
            for chan in list(self._ending):
                chan.close()
            self.node.close()

    def _accept(self) -> None:
        conn = control.accept_root(self.listener)
        if conn is None:
            return
        if len(self.leases) + len(self._ending) >= self.max_leases:
            control.refuse(conn, f"the port owner is busy: {len(self.leases)} vxtun up hold "
                                 "leases, the most one owner serves; try again later")
            return
        self.serve_connection(conn)

    def serve_connection(self, conn: socket.socket) -> Channel:
        """Serve one accepted (non-blocking) connection: a new lease."""
        chan = Channel(conn)
        self.leases[chan] = _Lease(chan)
        self._idle_since = None
        self.node.loop.serve(chan, self._request, self._closed)
        return chan

    def _closed(self, chan: Channel) -> None:
        """The lease's connection closed: up exited or died, or did not read its answers."""
        self._ending.discard(chan)
        if chan in self.leases:
            self._drop(chan)
            self._maybe_exit()

    def _request(self, chan: Channel, req) -> None:
        lease = self.leases.get(chan)
        if lease is None:
            return
        try:
            if isinstance(req, BadLine):
                raise LocalError(f"bad request: {req.reason}")
            cmd = req.get("cmd")
            if cmd == "attach":
                ans = {"ok": True, "result": self._attach(lease, req)}
            elif cmd == "release":
                self._release(lease)
                self._end(lease, {"ok": True, "result": None})
                self._maybe_exit()
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
        chan.send(ans)                  # a full buffer closes it, and _closed drops the lease

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

    def _end(self, lease: _Lease, last: dict) -> None:
        """The lease is over (its VTEPs already gone): send ``last`` and close after it."""
        chan = lease.chan
        self.leases.pop(chan, None)
        self._ending.add(chan)
        chan.send(last)
        chan.close_when_flushed()

    def _drop(self, chan: Channel) -> None:
        lease = self.leases.pop(chan, None)
        if lease is None:
            return
        self._release(lease)
        chan.close()

    def _down(self, port, conn=None) -> None:
        """``vxtun down dev NAME``: that VTEP goes; an up left with none exits 0."""
        lease = port.lease
        self.node.remove(port, keep=conn)
        if isinstance(lease, _Lease) and port in lease.ports:
            lease.ports.remove(port)
            if not lease.ports:
                self._end(lease, {"event": "down"})
        # The answer to this down is queued when this returns, before the loop looks at
        # running again: stopping now does not lose it.
        self._maybe_exit()

    def _tap_gone(self, port, reason: str) -> None:
        """The VTEP's TAP vanished (Node.tap_gone logged it): the VTEP goes, and its up is told;
        an up left with no VTEP exits non-zero.  Other leases are not touched."""
        lease = port.lease
        self.node.remove(port)
        if isinstance(lease, _Lease) and port in lease.ports:
            lease.ports.remove(port)
            event = {"event": "gone", "name": port.config.name, "error": reason}
            if lease.ports:
                lease.chan.send(event)
            else:
                self._end(lease, event)
        self._maybe_exit()

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
        node = Node()
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
            conn.sendall(jsonlines.encode({"ok": False, "error": message}))
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

    def __init__(self, chan: Channel, result: dict) -> None:
        self.chan = chan
        self.result = result

    @property
    def vteps(self) -> list[dict]:
        return self.result["vteps"]

    @classmethod
    def acquire(cls, configs: list[VtepConfig], fdb: dict | None = None) -> "Lease":
        req = {"cmd": "attach", "pid": os.getpid(),
               "vteps": [{"config": config_to_json(c),
                          "fdb": [fdb_to_json(e) for e in (fdb or {}).get(c.name, ())]}
                         for c in configs]}
        deadline = time.monotonic() + START_TIMEOUT
        spawned = False
        while True:
            chan = _connect()
            if chan is None:
                if time.monotonic() > deadline:
                    raise ControlError("could not start the vxtun port owner of this namespace")
                if not spawned:
                    spawn()
                    spawned = True
                time.sleep(0.02)
                continue
            try:
                ans = chan.request(req)
            except OSError:
                ans = None
            if ans is None:
                # The owner was exiting as we came (its last lease had just gone): start anew.
                chan.close()
                spawned = False
                if time.monotonic() > deadline:
                    raise ControlError("the vxtun port owner of this namespace does not answer")
                time.sleep(0.02)
                continue
            if not ans.get("ok"):
                chan.close()
                raise LocalError(ans.get("error", "the port owner refused"))
            return cls(chan, ans["result"])

    def wait(self) -> int:
        """Until SIGINT/SIGTERM/SIGHUP (release, exit 0), ``vxtun down`` (exit 0) or the
        owner's death (exit 1).  A VTEP whose TAP vanished is said on stderr; once none is
        left, exit 1."""
        def stop(*_):
            raise _Stop()
        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        left = {v["name"] for v in self.vteps}
        try:
            while True:
                msg = self.chan.read(None)
                if msg is not None and msg.get("event") == "gone":
                    print(f"vxtun: {msg.get('name')}: {msg.get('error')}; the VTEP is gone",
                          file=sys.stderr, flush=True)
                    left.discard(msg.get("name"))
                    if not left:
                        return 1
                    continue
                if msg is None:
                    names = ", ".join(v["name"] for v in self.vteps)
                    print(f"vxtun: the port owner (pid {self.result.get('pid')}) exited; "
                          f"{names} is gone", file=sys.stderr)
                    return 1
                if msg.get("event") == "down":
                    return 0 if len(left) == len(self.vteps) else 1
        except _Stop:
            for s in old:
                signal.signal(s, signal.SIG_IGN)
            self.release()
            return 0
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.chan.close()

    def release(self) -> None:
        """Ask the owner to remove our VTEPs and wait until it has (the TAPs are gone)."""
        self.chan.timeout = RELEASE_TIMEOUT
        try:
            self.chan.write({"cmd": "release"})
            while True:             # skip a "down" event that crossed our request
                msg = self.chan.read()
                if msg is None or "event" not in msg:
                    return
        except (OSError, ControlError):
            pass


def _connect() -> Channel | None:
    """A client channel to this namespace's owner; None if none listens (yet).  ControlError,
    before the attach is sent and before any owner is started, if ``@vxtun-owner`` is held
    by a user other than root (vxtun/io/jsonlines.py ``connect``)."""
    try:
        # The owner opens TAPs and joins groups before it answers an attach.
        return jsonlines.connect(ADDRESS, timeout=START_TIMEOUT + 20)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
            return None
        raise ControlError(f"cannot reach the vxtun port owner: {e.strerror}") from None


__all__ = ["Owner", "Lease", "spawn", "ADDRESS"]
