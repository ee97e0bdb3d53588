"""etcd v3 through its JSON gRPC gateway: a small client of our own, on the standard library.

Why not a gRPC client from PyPI: ``etcd3`` (python-etcd3) has had no release since 2020 and
its generated code fails to import with protobuf 4 or later ("Descriptors cannot be created
directly"); ``aetcd`` is maintained but asyncio-only, and brings grpcio and protobuf along.
etcd 3.4 (Debian's ``etcd-server``) serves the same v3 API as JSON on its client port
(``/v3/kv/range``, ``/v3/kv/put``, ``/v3/watch``, ``/v3/lease/grant``...; etcd's
``Documentation/dev-guide/api_grpc_gateway.md``): keys and values are base64, 64-bit integers
are strings, and a stream (a watch) is one JSON object per line.  Leases, watches from a
revision, compaction and transactions are all there, and the dataplane depends on nothing.

Several endpoints (``etcd://a:2379,b:2379,c:2379``) are tried in turn: a request that cannot
reach one member goes to the next, as clientv3's balancer does, so losing one member of a
three-member cluster is not noticed.  TLS: ``etcds://`` or a CA file; a client certificate
and key when the server asks for one (``--client-cert-auth``).
"""
from __future__ import annotations

import base64
import http.client
import json
import queue
import socket
import ssl
import threading
from urllib.parse import urlsplit

from .store import (Change, Compacted, KeyValue, LeaseExpired, Store, StoreError, Unreachable,
                    Watch, prefix_end)

TIMEOUT = 5.0


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str | None) -> str:
    return base64.b64decode(s or "").decode("utf-8", "replace")


class EtcdStore(Store):
    def __init__(self, url: str, cacert: str | None = None, cert: str | None = None,
                 key: str | None = None, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(url)
        tls = parts.scheme in ("etcds", "https") or bool(cacert)
        self.url = url
        self.timeout = timeout
        self.endpoints: list[tuple[str, int]] = []
        for hp in parts.netloc.split(","):
            host, _, port = hp.rpartition(":")
            if not host or not port.isdigit():
                raise StoreError(f"bad etcd endpoint {hp!r} in {url!r}: expected HOST:PORT")
            self.endpoints.append((host.strip("[]"), int(port)))
        self.ssl: ssl.SSLContext | None = None
        if tls:
            self.ssl = ssl.create_default_context(cafile=cacert)
            if cert:
                self.ssl.load_cert_chain(cert, key)
        self._first = 0           # the endpoint that answered last: tried first next time

    # --- HTTP -----------------------------------------------------------------------------

    def _connect(self, i: int, timeout: float | None) -> http.client.HTTPConnection:
        host, port = self.endpoints[i]
        if self.ssl:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self.ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _open(self, path: str, body: dict, timeout: float | None):
        """POST to the first member that answers; the connection and its response."""
        data = json.dumps(body).encode()
        errors = []
        n = len(self.endpoints)
        for k in range(n):
            i = (self._first + k) % n
            conn = self._connect(i, timeout if timeout is not None else self.timeout)
            try:
                conn.request("POST", path, data, {"Content-Type": "application/json"})
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                errors.append(f"{self.endpoints[i][0]}:{self.endpoints[i][1]}: {e}")
                continue
            if resp.status == 503 or (resp.status >= 500 and i != (self._first + n - 1) % n):
                # No leader on this member (a partitioned or starting one): try another.
                errors.append(f"{self.endpoints[i][0]}: HTTP {resp.status} {resp.read()[:200]!r}")
                conn.close()
                continue
            self._first = i
            return conn, resp
        raise Unreachable("etcd unreachable: " + "; ".join(errors))

    def _call(self, path: str, body: dict) -> dict:
        conn, resp = self._open(path, body, None)
        try:
            raw = resp.read()
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"etcd {path}: {e}") from e
        finally:
            conn.close()
        try:
            out = json.loads(raw or b"{}")
        except ValueError as e:
            raise StoreError(f"etcd {path}: not JSON: {raw[:200]!r}") from e
        if resp.status != 200 or "error" in out:
            msg = out.get("error") or out.get("message") or raw[:200].decode("latin-1")
            raise StoreError(f"etcd {path}: {msg}")
        return out.get("result", out)

    # --- Store ----------------------------------------------------------------------------

    def snapshot(self, prefix: str) -> tuple[int, list[KeyValue]]:
        out = self._call("/v3/kv/range", {"key": _b64(prefix),
                                          "range_end": _b64(prefix_end(prefix.encode()))})
        kvs = [KeyValue(_unb64(kv.get("key")), _unb64(kv.get("value")),
                        int(kv.get("mod_revision", 0)), int(kv.get("lease", 0)))
               for kv in out.get("kvs", [])]
        return int(out["header"]["revision"]), kvs

    def put(self, key: str, value: str, lease: int = 0) -> int:
        body: dict = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        try:
            out = self._call("/v3/kv/put", body)
        except StoreError as e:
            if "lease not found" in str(e):
                raise LeaseExpired(str(e)) from e
            raise
        return int(out["header"]["revision"])

    def delete(self, key: str) -> int:
        return int(self._call("/v3/kv/deleterange", {"key": _b64(key)})["header"]["revision"])

    def put_if_absent(self, key: str, value: str, lease: int = 0) -> bool:
        """A transaction: put ``key`` only if it does not exist (create_revision == 0)."""
        put: dict = {"key": _b64(key), "value": _b64(value)}
        if lease:
            put["lease"] = str(lease)
        out = self._call("/v3/kv/txn", {
            "compare": [{"key": _b64(key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": put}]})
        return bool(out.get("succeeded"))

    def grant(self, ttl: int) -> int:
        return int(self._call("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease: int) -> int:
        out = self._call("/v3/lease/keepalive", {"ID": str(lease)})
        ttl = int(out.get("TTL", 0))
        if ttl <= 0:                  # LeaseKeepAliveResponse with TTL 0: the lease is gone
            raise LeaseExpired(f"lease {lease:x} expired")
        return ttl

    def revoke(self, lease: int) -> None:
        try:
            self._call("/v3/lease/revoke", {"ID": str(lease)})
        except Unreachable:
            raise
        except StoreError as e:
            if "not found" not in str(e):
                raise

    def compact(self, revision: int) -> None:
        self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def watch(self, prefix: str, start_revision: int) -> Watch:
        return _EtcdWatch(self, prefix, start_revision)


class _EtcdWatch(Watch):
    """One ``/v3/watch`` stream, read by a thread into a queue (a blocking read of a stream
    has no timeout of its own that leaves the stream usable)."""

    def __init__(self, store: EtcdStore, prefix: str, start: int) -> None:
        req = {"create_request": {"key": _b64(prefix),
                                  "range_end": _b64(prefix_end(prefix.encode())),
                                  "start_revision": str(start)}}
        self.conn, self.resp = store._open("/v3/watch", req, None)
        if self.resp.status != 200:
            raise StoreError(f"etcd /v3/watch: HTTP {self.resp.status}")
        # The stream stays open with nothing to say for as long as nothing changes.
        sock = self.conn.sock
        if sock is not None:
            sock.settimeout(None)
        self.q: queue.Queue = queue.Queue()
        self._closed = False
        self.thread = threading.Thread(target=self._read, daemon=True, name="etcd-watch")
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    raise Unreachable("etcd closed the watch stream")
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    raise Unreachable(f"etcd watch: {msg['error']}")
                res = msg.get("result", {})
                if int(res.get("compact_revision", 0)) > 0:
                    raise Compacted(int(res["compact_revision"]))
                if res.get("canceled"):
                    raise Unreachable(f"etcd cancelled the watch: {res.get('cancel_reason')}")
                batch = []
                for ev in res.get("events", []):
                    kv = ev.get("kv", {})
                    kind = "delete" if ev.get("type") == "DELETE" else "put"
                    batch.append(Change(kind, _unb64(kv.get("key")), _unb64(kv.get("value")),
                                        int(kv.get("mod_revision", 0))))
                if batch:
                    self.q.put(batch)
        except StoreError as e:
            self.q.put(e)
        except Exception as e:
            # Whatever ends the stream ends the watch, and the loop must hear of it: a reader
            # thread that died quietly would leave the agent on a frozen copy of the store.
            # (http.client raises AttributeError, not OSError, when the connection is closed
            # under a readline: close() below, or a stream cut mid-chunk.)
            if not self._closed:
                self.q.put(Unreachable(f"etcd watch: {e!r}"))

    def next(self, timeout: float) -> list[Change] | None:
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self._closed = True
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
