"""The agent: one loop between the store and this host's VTEPs.

    register   a lease (TTL seconds), and under it one member key per local VTEP and one key
               per local endpoint (model.py);
    resync     read everything under the prefix at revision R, reconcile every VTEP;
    watch      from R+1: apply each batch of changes to the in-memory copy, reconcile again;
               keep the lease alive every TTL/3 seconds.

Every reconcile reads the VTEP's tables and compares them with what the store wants
(reconcile.py), so the agent never replays history: after a restart, a compaction, or a time
cut off from the store, a full resync is just the same step.  While the store is unreachable
nothing is changed on the VTEPs (the dataplane never depends on the store being up); the
agent retries with exponential backoff, and when the store is back reads the whole state at
the current revision (its old revision may have been compacted meanwhile; a full read is right
either way, and a watch that falls behind a compaction, ``Compacted``, ends in the same read).
If the lease expired meanwhile, its keys were deleted by the store: it takes a new lease and
writes them again.

Requests (``vxtun agent status``, ``vxtun agent endpoint add``) arrive on the abstract Unix
socket ``@vxtun-agent`` of the namespace (root only, as the VTEPs' control sockets), and are
served by the loop between two watch polls.
"""
from __future__ import annotations

import logging
import queue
import random
import socket
import socketserver
import threading
import time

from ..errors import VxtunError
from ..io import jsonlines
from ..io.control import peer_is_root
from . import model
from .reconcile import MODES, LocalVtep, VtepState, Wanted, apply, plan, want
from .store import Compacted, LeaseExpired, Store, StoreError, Unreachable

log = logging.getLogger("vxtun.agent")

ADDRESS = "\0vxtun-agent"
POLL = 0.2                # seconds between two looks at requests, misses and the lease
LEARN_EVERY = 1.0         # seconds between two reads of the local bridge / device tables
REREAD = 5.0              # seconds between two reconciles with no change (a VTEP changed by hand)
BACKOFF_MAX = 8.0


class Agent:
    def __init__(self, store: Store, vteps: list, mode: str = "preprogram", ttl: int = 10,
                 prefix: str = model.PREFIX, host: str = "", learn: bool = False,
                 flood: bool = True) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        self.store = store
        self.vteps = vteps                       # adapters (vteps.py), by the order given
        self.mode = mode
        self.ttl = ttl
        self.prefix = prefix
        self.host = host or socket.gethostname()
        self.lease = 0
        self.locals: dict[str, LocalVtep] = {}
        self.endpoints: dict[tuple[int, str], model.Endpoint] = {}   # endpoint add, adopted
        self.learn = learn
        self.flood = flood                       # False: no flood lists (reconcile.want)
        self.learned: dict[tuple[int, str], model.Endpoint] = {}     # from the local tables
        self._learned_at = 0.0
        self.kvs: dict[str, model.KeyValue] = {}
        self.revision = 0
        self.desired = model.Desired()
        self.wanted: dict[str, Wanted] = {}
        self.programmed: dict[str, dict] = {}
        self.seen: dict[str, tuple[float, VtepState]] = {}   # name -> (read at, tables)
        self.reread = REREAD
        self.last_error = ""
        self.bad: list[str] = []
        self.requests: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._kept = 0.0
        self._lost_lease = 0
        self._keeper_error: StoreError | None = None

    # --- the loop -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        threading.Thread(target=self._keeper, daemon=True, name="agent-lease").start()
        backoff = 0.5
        while not self._stop.is_set():
            try:
                self._session()
            except Compacted as e:
                self._error(f"watch: {e}; full resync")
                continue
            except Exception as e:
                if isinstance(e, (StoreError, OSError)):
                    self._error(f"store: {e}; retrying in {backoff:.1f} s")
                else:                    # a bug or a surprise from a library: log, never die
                    log.exception("unexpected error")
                    self._error(f"unexpected: {e!r}; resync in {backoff:.1f} s")
                self._serve_for(backoff * random.uniform(0.8, 1.2))
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = 0.5
        if self.lease:
            try:
                # Leaving on purpose: the others drop this host now, not a TTL later.
                self.store.revoke(self.lease)
            except StoreError:
                pass

    def _serve_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < end:
            self._serve_requests(min(POLL, max(0.0, end - time.monotonic())))

    def _session(self) -> None:
        self._resolve_vteps()
        self._lease()
        rev, kvs = self.store.snapshot(self.prefix)
        self.kvs = {kv.key: kv for kv in kvs}
        self.revision = rev
        self._adopt()
        self._learn()
        self._publish()
        self._reconcile()
        watch = self.store.watch(self.prefix, rev + 1)
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                self._keepalive()
                batch = watch.next(POLL)
                while batch and (more := watch.next(0)):
                    batch += more          # what already arrived: one reconcile for all of it
                dirty = False
                if batch:
                    for c in batch:
                        if c.kind == "put":
                            self.kvs[c.key] = model.KeyValue(c.key, c.value, c.revision)
                        else:
                            self.kvs.pop(c.key, None)
                    self.revision = max(self.revision, batch[-1].revision)
                    dirty = True
                    self._republish_own()
                dirty |= self._serve_requests(0)
                dirty |= self._take_misses()
                if self.learn and time.monotonic() - self._learned_at >= LEARN_EVERY:
                    self._learn()
                if dirty or time.monotonic() - last > self.reread:
                    if len(self.locals) < len(self.vteps):
                        self._resolve_vteps()
                        self._publish()
                    self._reconcile()
                    last = time.monotonic()
        finally:
            watch.close()

    def _error(self, msg: str) -> None:
        self.last_error = f"{time.strftime('%H:%M:%S')} {msg}"
        log.warning("%s", msg)

    # --- the store: lease, members, endpoints ---------------------------------------------

    def _resolve_vteps(self) -> None:
        from .vteps import VtepGone
        for v in self.vteps:
            if v.name in self.locals:
                continue
            try:
                self.locals[v.name] = v.info()
            except (VtepGone, OSError) as e:
                self._error(f"vtep {v.name}: {e}")

    def _register(self) -> None:
        self._lease()
        self._publish()

    def _lease(self) -> None:
        if self.lease:
            try:
                self.store.keepalive(self.lease)
                self._kept = time.monotonic()
            except LeaseExpired:
                self._error(f"lease {self.lease:x} expired: registering again")
                self.lease = 0
        if not self.lease:
            self.lease = self.store.grant(self.ttl)
            self._kept = time.monotonic()

    def _adopt(self) -> None:
        """Endpoints in the store published from one of our VTEPs are ours: a killed agent's
        keys live on under its old lease until the TTL, and the restarted agent takes them
        over (``_publish`` moves them to its own lease) instead of letting them lapse."""
        mine = {lv.ip: lv for lv in self.locals.values()}
        for kv in self.kvs.values():
            if not kv.key.startswith(self.prefix + "endpoints/"):
                continue
            try:
                e = model.read_endpoint(kv, self.prefix)
            except (ValueError, TypeError):
                continue
            lv = mine.get(e.vtep)
            # Learned ones are taken over as learned: the next _learn drops those now gone.
            into = self.learned if self.learn else self.endpoints
            if lv is not None and lv.vni == e.vni and (e.vni, e.mac) not in into:
                into[(e.vni, e.mac)] = model.Endpoint(e.vni, e.mac, e.vtep, e.ips)

    def _learn(self) -> None:
        """``--learn``: publish what the local tables hold behind each VTEP
        (vteps.local_endpoints), and withdraw what they no longer hold."""
        if not self.learn:
            return
        from .vteps import local_endpoints
        self._learned_at = time.monotonic()
        found: dict[tuple[int, str], model.Endpoint] = {}
        for v in self.vteps:
            lv = self.locals.get(v.name)
            if lv is None:
                continue
            try:
                for mac, ips in local_endpoints(v.name):
                    found[(lv.vni, mac)] = model.Endpoint(lv.vni, mac, lv.ip, ips)
            except Exception as e:
                self._error(f"vtep {v.name}: reading its endpoints: {e}")
                return                   # a partial read must not withdraw anything
        if found == self.learned:
            return
        gone = [e for k, e in self.learned.items() if k not in found and k not in self.endpoints]
        self.learned = found
        self._publish()
        for e in gone:
            self.store.delete(model.endpoint_key(e.vni, e.mac, e.vtep, self.prefix))

    def _own_keys(self) -> dict[str, str]:
        out = {}
        for lv in self.locals.values():
            m = model.Member(lv.vni, lv.ip, lv.port, self.host, lv.name, lv.kind)
            out[model.member_key(lv.vni, lv.ip, self.prefix)] = model.member_value(m)
        for e in [*self.learned.values(), *self.endpoints.values()]:    # endpoint add wins
            out[model.endpoint_key(e.vni, e.mac, e.vtep, self.prefix)] = model.endpoint_value(e)
        return out

    def _publish(self) -> None:
        for key, value in self._own_keys().items():
            have = self.kvs.get(key)
            # A lease of 0 is unknown (a key read from a watch event), not "no lease".
            if have is None or have.value != value or (have.lease and have.lease != self.lease):
                self.store.put(key, value, self.lease)

    def _republish_own(self) -> None:
        """Our own keys deleted under us (by hand, or a lease the store expired while we were
        cut off): write them again, under a new lease if need be."""
        mine = self._own_keys()
        if any(k not in self.kvs for k in mine):
            self._register()

    def _keepalive(self) -> None:
        """Act on what the keeper thread found: a lease gone means registering again."""
        if self._lost_lease and self._lost_lease == self.lease:
            self._error(f"lease {self.lease:x} expired: registering again")
            self.lease = 0
            self._register()
        if self._keeper_error:
            err, self._keeper_error = self._keeper_error, None
            raise err

    def _keeper(self) -> None:
        """Keep the lease alive every TTL/4, in a thread of its own (clientv3 does it in a
        goroutine): a slow reconcile or a slow VTEP must never let the lease lapse."""
        while not self._stop.wait(self.ttl / 4):
            lease = self.lease
            if not lease:
                continue
            try:
                self.store.keepalive(lease)
                self._kept = time.monotonic()
            except LeaseExpired:
                self._lost_lease = lease
            except StoreError as e:
                self._keeper_error = e        # the loop resyncs once the store is back

    # --- reconciling ----------------------------------------------------------------------

    def _reconcile(self) -> None:
        from .vteps import VtepGone
        self.desired = model.parse(self.revision, self.kvs.values(), self.prefix)
        for b in self.desired.bad:
            if b not in self.bad:
                log.warning("skipped bad data in the store: %s", b)
        self.bad = list(self.desired.bad)
        for name, w in self.wanted.items():
            # A miss is answered while its endpoint exists; once that is gone, the next
            # install waits for the next miss, as it would on a fresh agent.
            lv = self.locals.get(name)
            eps = self.desired.endpoints.get(lv.vni, {}) if lv else {}
            w.macs &= set(eps)
            w.ips &= {ip for e in eps.values() for ip in e.ips}
        for v in self.vteps:
            lv = self.locals.get(v.name)
            if lv is None:
                continue
            try:
                have = self._tables(v)
                cmds = plan(want(lv, self.desired, self.mode, self.wanted.get(v.name),
                                 self.flood), have)
                if cmds:
                    self._run(v, have, cmds)
            except Exception as e:      # a VTEP gone, a table that cannot be read
                self.seen.pop(v.name, None)
                self._error(f"vtep {v.name}: {e}")
                if isinstance(e, VtepGone) or "no vxtun VTEP named" in str(e):
                    # Gone: withdraw its membership; it is looked for again every REREAD.
                    self.locals.pop(v.name, None)
                    self.store.delete(model.member_key(lv.vni, lv.ip, self.prefix))

    def _tables(self, v) -> VtepState:
        """The VTEP's tables: read from it at most every ``reread`` seconds, and in between
        the last read with the commands run since applied (reconcile.apply).  A dump of a
        VTEP's tables costs far more than the few commands an event brings (netlink messages
        parsed by pyroute2, or the whole FDB as JSON from a vxtun VTEP), and with many hosts
        joining and leaving every agent reconciles several times a second: a read per
        reconcile made the fleet fall behind the store (bench/control.py, churn)."""
        got = self.seen.get(v.name)
        now = time.monotonic()
        if got is None or now - got[0] >= self.reread:
            got = (now, v.read())
            self.seen[v.name] = got
        return got[1].copy()

    def _run(self, v, have: VtepState, cmds: list) -> None:
        """Run ``cmds`` one by one: a command the VTEP refuses (a netlink error on one entry)
        is reported and retried at the next reconcile, and never stops the others."""
        from .vteps import VtepGone
        done, failed = [], []
        t0 = served = time.monotonic()
        for c in cmds:
            if time.monotonic() - served > POLL:
                # A cold start programs hundreds of entries: requests (status, endpoint add)
                # are answered meanwhile, not after (their changes come back by the watch).
                self._serve_requests(0)
                served = time.monotonic()
            try:
                v.run([c])
                done.append(c)
            except VtepGone:
                raise
            except Exception as e:
                if "no vxtun VTEP named" in str(e):
                    raise
                failed.append(f"{c}: {e}")
        if done:
            log.info("%s: %s", v.name, "; ".join(map(str, done)))
            self.programmed[v.name] = {"time": time.time(), "revision": self.revision,
                                       "commands": [str(c) for c in done],
                                       "seconds": time.monotonic() - t0}
        if failed:
            self.seen.pop(v.name, None)       # read the VTEP again before the next try
            self._error(f"vtep {v.name}: {len(failed)} of {len(cmds)} commands failed: "
                        + "; ".join(failed[:3]))
        else:
            self.seen[v.name] = (self.seen[v.name][0], apply(have, done))

    # --- misses (on-miss mode) -----------------------------------------------------------

    def _take_misses(self) -> bool:
        if self.mode != "on-miss":
            return False
        got = False
        for v in self.vteps:
            lv = self.locals.get(v.name)
            if lv is None:
                continue
            try:
                v.miss_fd()
                misses = v.misses()
            except Exception as e:
                self._error(f"vtep {v.name} misses: {e}")
                continue
            w = self.wanted.setdefault(v.name, Wanted())
            for kind, key in misses:
                (w.ips if kind == "l3" else w.macs).add(key)
                got = True
        return got

    # --- requests from the CLI -------------------------------------------------------------

    def _serve_requests(self, timeout: float) -> bool:
        changed = False
        try:
            req, reply = self.requests.get(timeout=timeout) if timeout else \
                self.requests.get_nowait()
        except queue.Empty:
            return False
        while True:
            try:
                ans, ch = self._handle(req)
                changed |= ch
            except (StoreError, ValueError) as e:
                ans = {"ok": False, "error": str(e)}
            reply.put(ans)
            try:
                req, reply = self.requests.get_nowait()
            except queue.Empty:
                return changed

    def _handle(self, req: dict) -> tuple[dict, bool]:
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "result": self.status()}, False
        if cmd == "endpoint":
            return self._endpoint(req), True
        return {"ok": False, "error": f"unknown request {cmd!r}"}, False

    def _endpoint(self, req: dict) -> dict:
        dev = req.get("dev") or (self.vteps[0].name if self.vteps else "")
        lv = self.locals.get(dev)
        if lv is None:
            return {"ok": False, "error": f"no VTEP {dev} known to this agent"}
        mac = str(req.get("mac", "")).lower()
        e = model.Endpoint(lv.vni, mac, lv.ip, tuple(sorted(req.get("ips", []))))
        key = model.endpoint_key(e.vni, e.mac, e.vtep, self.prefix)
        # Checked as every reader of the store will check it.
        model.read_endpoint(model.KeyValue(key, model.endpoint_value(e), 0), self.prefix)
        if req.get("op") == "del":
            if self.endpoints.pop((lv.vni, mac), None) is None:
                return {"ok": False, "error": f"no endpoint {mac} published here"}
            self.store.delete(key)
        else:
            self.endpoints[(lv.vni, mac)] = e
            try:
                self.store.put(key, model.endpoint_value(e), self.lease)
            except LeaseExpired:
                # The lease lapsed before the keeper or the watch said so (a loaded host):
                # not the user's error.  A new lease, and every key of ours under it.
                self._error(f"lease {self.lease:x} expired: registering again")
                self.lease = 0
                self._register()
        return {"ok": True, "result": None}

    def status(self) -> dict:
        d = self.desired
        return {
            "store": self.store.url, "revision": self.revision, "mode": self.mode,
            "host": self.host, "lease": f"{self.lease:x}", "ttl": self.ttl,
            "flood": self.flood,
            "vteps": [{"name": v.name, "kind": v.kind,
                       **({"vni": lv.vni, "local": lv.ip, "port": lv.port}
                          if (lv := self.locals.get(v.name)) else {"state": "not found"}),
                       **({"programmed": self.programmed[v.name]}
                          if v.name in self.programmed else {})}
                      for v in self.vteps],
            "members": {str(vni): [{"ip": m.ip, "port": m.port, "host": m.host,
                                    "vtep": m.vtep, "kind": m.kind}
                                   for _, m in sorted(ms.items())]
                        for vni, ms in sorted(d.members.items())},
            "endpoints": [{"vni": e.vni, "mac": e.mac, "ips": list(e.ips), "vtep": e.vtep}
                          for vni, es in sorted(d.endpoints.items())
                          for _, e in sorted(es.items())],
            "bad": list(self.bad), "last_error": self.last_error,
        }


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        conn, agent = self.request, self.server.agent        # type: ignore[attr-defined]
        if not peer_is_root(conn):
            conn.sendall(jsonlines.encode({"ok": False, "error": "permission denied"}))
            return
        ch = jsonlines.Channel(conn, timeout=5.0)
        try:
            req = ch.read()
        except (OSError, VxtunError):
            return
        if req is None:
            return
        reply: queue.Queue = queue.Queue()
        agent.requests.put((req, reply))        # answered by the agent's loop
        try:
            ans = reply.get(timeout=10)
        except queue.Empty:
            ans = {"ok": False, "error": "the agent did not answer in time"}
        try:
            ch.write(ans)
        except OSError:
            pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """``@vxtun-agent``: one JSON request per connection, each in a thread of its own."""
    daemon_threads = True

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        try:
            super().__init__(ADDRESS, _Handler)
        except OSError:
            raise StoreError("an agent is already running in this namespace") from None
        self.thread = threading.Thread(target=self.serve_forever, args=(0.5,), daemon=True,
                                       name="agent-ctl")
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def request(req: dict, timeout: float = 15.0):
    """Send one request to the agent of this namespace; its result (StoreError if refused)."""
    try:
        ch = jsonlines.connect(ADDRESS, timeout=timeout)
    except OSError as e:
        raise StoreError(f"no agent running in this namespace ({e.strerror or e})") from None
    try:
        ans = ch.request(req)
    finally:
        ch.close()
    if not ans or not ans.get("ok"):
        raise StoreError((ans or {}).get("error", "the agent closed the connection"))
    return ans.get("result")


__all__ = ["Agent", "Server", "request", "Unreachable"]
