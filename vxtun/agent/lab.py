"""Agents, etcd members and VTEPs in lab namespaces, for the tests and ``bench/control.py``.

* ``EtcdCluster``: real etcd processes (Debian's ``etcd-server``), one per namespace host,
  data in a temporary directory, optionally with TLS and client certificates made on the fly
  with ``openssl``; ``stop()`` always kills them and removes the data.
* ``kernel_vtep`` / ``vxtun_vtep``: a VTEP for the agent to program (``nolearning proxy``, as
  preprogram mode wants), ``start_agent``, and ``tables``: a VTEP's flood list, FDB and
  neighbour entries as the reconciler sees them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

from ..lab.netns import Host, python


def require_etcd() -> str:
    path = shutil.which("etcd")
    if not path:
        raise RuntimeError("etcd is not installed: apt-get install etcd-server (as .ci/run does)")
    return path


class Certs:
    """A CA, a server certificate for the given IPs and a client certificate, with openssl."""

    def __init__(self, ips: list[str]) -> None:
        if not shutil.which("openssl"):
            raise RuntimeError("openssl is not installed")
        self.dir = tempfile.mkdtemp(prefix="vxtun-agent-tls-")
        d = self.dir
        self.ca, self.ca_key = f"{d}/ca.pem", f"{d}/ca.key"
        self.server, self.server_key = f"{d}/server.pem", f"{d}/server.key"
        self.client, self.client_key = f"{d}/client.pem", f"{d}/client.key"

        def sh(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
        sh("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
           "/CN=vxtun-test-ca", "-keyout", self.ca_key, "-out", self.ca)
        san = ",".join(f"IP:{ip}" for ip in ips)
        for name, cn, ext in (("server", "etcd", f"subjectAltName={san}\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n"),
                              ("client", "vxtun-agent", "extendedKeyUsage=clientAuth\n")):
            with open(f"{d}/{name}.ext", "w") as f:
                f.write(ext)
            sh("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
               "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr")
            sh("x509", "-req", "-in", f"{d}/{name}.csr", "-CA", self.ca, "-CAkey", self.ca_key,
               "-CAcreateserial", "-days", "2", "-extfile", f"{d}/{name}.ext",
               "-out", f"{d}/{name}.pem")

    def args(self) -> list[str]:
        return ["--cacert", self.ca, "--cert", self.client, "--key", self.client_key]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class EtcdCluster:
    """etcd members on lab hosts (each host's first address), client port 2379."""

    def __init__(self, hosts: list[Host], certs: Certs | None = None) -> None:
        require_etcd()
        self.hosts = hosts
        self.certs = certs
        self.dir = tempfile.mkdtemp(prefix="vxtun-etcd-")
        self.procs: dict[str, subprocess.Popen] = {}
        scheme = "https" if certs else "http"
        self.scheme = scheme
        self.initial = ",".join(f"{h.name}=http://{h.ip}:2380" for h in hosts)
        self.url = ("etcds://" if certs else "etcd://") + ",".join(f"{h.ip}:2379" for h in hosts)

    def url_of(self, host: Host) -> str:
        return ("etcds://" if self.certs else "etcd://") + f"{host.ip}:2379"

    def start(self, host: Host, state: str = "new") -> None:
        scheme = self.scheme
        args = ["etcd", "--name", host.name, "--data-dir", f"{self.dir}/{host.name}",
                "--listen-client-urls", f"{scheme}://{host.ip}:2379",
                "--advertise-client-urls", f"{scheme}://{host.ip}:2379",
                "--listen-peer-urls", f"http://{host.ip}:2380",
                "--initial-advertise-peer-urls", f"http://{host.ip}:2380",
                "--initial-cluster", self.initial, "--initial-cluster-state", state,
                "--initial-cluster-token", os.path.basename(self.dir),
                "--heartbeat-interval", "100", "--election-timeout", "1000"]
        if self.certs:
            c = self.certs
            args += ["--cert-file", c.server, "--key-file", c.server_key,
                     "--trusted-ca-file", c.ca, "--client-cert-auth"]
        log = open(f"{self.dir}/{host.name}.log", "ab")
        self.procs[host.name] = host.popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self, timeout: float = 30) -> EtcdCluster:
        for h in self.hosts:
            self.start(h)
        self.wait_healthy(self.hosts, timeout)
        return self

    def wait_healthy(self, hosts: list[Host], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        for h in hosts:
            while True:
                if self.procs[h.name].poll() is not None:
                    raise RuntimeError(f"etcd on {h.name} exited:\n{self.log(h)}")
                if self.store_call(h, "snapshot", "/", check=False).returncode == 0:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd on {h.name} not healthy in {timeout}s:\n"
                                       f"{self.log(h)}")
                time.sleep(0.3)

    def log(self, host: Host) -> str:
        try:
            with open(f"{self.dir}/{host.name}.log", errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def store_call(self, host: Host, method: str, *args, url: str | None = None,
                   check: bool = True) -> subprocess.CompletedProcess:
        """Call a Store method from inside ``host`` (the store is reachable only there); its
        result as JSON on stdout."""
        return store_call(host, url or self.url_of(host), method, *args,
                          tls=self.certs.args() if self.certs else [], check=check)

    def kill(self, host: Host) -> None:
        p = self.procs.pop(host.name, None)
        if p is not None and p.poll() is None:
            os.killpg(p.pid, 9)
            p.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            p = self.procs.pop(name)
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except OSError:
                    pass
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.certs:
            self.certs.remove()


_CALL = """
import json, sys, dataclasses
from vxtun.agent.store import open_store
url, method, tls, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
s = open_store(url, *tls)
out = getattr(s, method)(*args)
def conv(o):
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    if isinstance(o, (list, tuple)):
        return [conv(x) for x in o]
    return o
print(json.dumps(conv(out)))
"""


def store_call(host: Host, url: str, method: str, *args, tls: list[str] | None = None,
               check: bool = True) -> subprocess.CompletedProcess:
    t = tls or []
    tls_args = [t[1], t[3] or None, t[5] or None] if t else []
    cmd = ["ip", "netns", "exec", host.ns, *python("-c", _CALL, url, method,
                                                   json.dumps(tls_args), json.dumps(list(args)))]
    from ..lab.netns import child_env
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=child_env())
    if check and p.returncode:
        raise RuntimeError(f"store {method}{args} from {host.name} failed:\n{p.stderr}")
    return p


# --- VTEPs and agents --------------------------------------------------------------------------

def kernel_vtep(host: Host, vni: int, address: str, name: str = "vxlan0",
                extra: str = "nolearning proxy") -> str:
    host.sh(f"ip link add {name} type vxlan id {vni} dstport 4789 local {host.ip} dev eth0 "
            f"{extra}")
    host.sh(f"ip addr add {address} dev {name}")
    host.sh(f"ip link set {name} up")
    return name


def vxtun_vtep(host: Host, vni: int, address: str, name: str = "vxtun0",
               env: dict | None = None, extra: tuple[str, ...] = ("--nolearning", "--proxy")):
    return host.vxtun("--vni", str(vni), "--local", host.ip, "--dev", "eth0", "--dstport", "4789",
                      "--name", name, "--address", address, *extra, env=env, wait_dev=name)


def start_agent(host: Host, store: str, *vteps: str, ttl: int = 3, mode: str = "preprogram",
                extra: tuple[str, ...] = (), logdir: str | None = None) -> subprocess.Popen:
    args = ["-m", "vxtun", "agent", "--store", store, "--ttl", str(ttl), "--mode", mode,
            "--host", host.name, "-v", *extra]
    for v in vteps:
        args += ["--vtep", v]
    log = open(os.path.join(logdir or tempfile.gettempdir(),
                            f"vxtun-agent-{host.ns}.log"), "ab")
    p = host.popen(python(*args), stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return p


def agent_status(host: Host) -> dict:
    p = host.run_vxtun("agent", "status", "-j")
    if p.returncode:
        raise RuntimeError(f"vxtun agent status on {host.name}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def tables(host: Host, dev: str) -> dict:
    """The flood list, permanent unicast FDB entries and permanent neighbours of ``dev``, read
    with iproute2 (a kernel device) or ``vxtun ... -j`` (a vxtun VTEP)."""
    flood, fdb, neigh = set(), {}, {}
    if host.run(f"test -e /sys/class/net/{dev}/tun_flags").returncode == 0:
        fdb_rows = json.loads(host.cmd("-j", "fdb", "show", "dev", dev) or "[]")
        rows = json.loads(host.cmd("-j", "neigh", "show", "dev", dev) or "[]")
    else:
        fdb_rows = json.loads(host.sh(f"bridge -j fdb show dev {dev}") or "[]")
        rows = json.loads(host.sh(f"ip -j neigh show dev {dev}") or "[]")
    for e in fdb_rows:             # one row per destination, as bridge -j fdb prints them
        if e.get("state") != "permanent" or "dst" not in e:
            continue
        if e["mac"] == "00:00:00:00:00:00":
            flood.add(e["dst"])
        else:
            fdb.setdefault(e["mac"], []).append(e["dst"])
    for e in rows:
        if "PERMANENT" in e.get("state", []) and e.get("lladdr"):
            neigh[e["dst"]] = e["lladdr"]
    return {"flood": sorted(flood), "fdb": {m: sorted(d) for m, d in fdb.items()},
            "neigh": neigh}


def wait_for(cond, timeout: float, what: str, interval: float = 0.2):
    """Poll ``cond()`` until it returns something true; AssertionError with ``what`` and the
    last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")
