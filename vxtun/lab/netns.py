"""Build and always tear down namespace topologies (the pyroute2 fixtures' discipline).

    with Topology("t1") as topo:
        h1 = topo.host("h1", "192.0.2.1/24", "2001:db8::1/64")
        h2 = topo.host("h2", "192.0.2.2/24", "2001:db8::2/64")
        h1.sh("ip link add vxlan0 type vxlan id 42 dstport 4789 remote 192.0.2.2 "
              "local 192.0.2.1 dev eth0")

Every namespace name carries a unique prefix (``vxt-<tag>-<pid>-...``), so parallel runs never
collide; ``close()`` deletes every namespace it made (which removes their veths, TAPs and
bridges), kills the processes it started in them, and is idempotent.

Every Python child (``vxtun up``, ``vxtun fdb ...``, the programs of ``vxtun.lab.traffic``)
starts as ``python(...)`` says, in the environment ``child_env()`` gives: it imports the very
``vxtun`` this process imported, whatever the working directory holds.
"""
from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
import time

from ..wire.addr import ip_version

_counter = itertools.count()

# The directory that holds the package this process imported: a checkout built in place, or
# the site-packages of an installed vxtun.
VXTUN_PATH = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python(*args: str) -> list[str]:
    """The command line of a Python child.  ``-P`` keeps the working directory off its
    ``sys.path``: started from a clone's root, the source tree (which has no built fast path)
    would otherwise shadow the installed ``vxtun``; ``child_env`` says where ``vxtun`` is."""
    return [sys.executable, "-P", *args]


def child_env(env: dict | None = None, *paths: str) -> dict[str, str]:
    """This process's environment plus ``env``, with ``PYTHONPATH`` starting at the directory
    that holds this process's ``vxtun`` (then ``paths``, then what PYTHONPATH held before)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (VXTUN_PATH, *paths, e.get("PYTHONPATH"))
                                      if p)
    return e


def run(cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout,
                       env=child_env())
    if check and p.returncode != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {cmd}\n{p.stdout}{p.stderr}")
    return p


def prerequisites() -> list[str]:
    """What is missing for namespace labs (root, netns, veth, bridge, vxlan, tun)."""
    missing = []
    if os.geteuid() != 0:
        return ["root (run as root)"]
    probe = f"vxt-probe-{os.getpid()}"
    if run(f"ip netns add {probe}", check=False).returncode != 0:
        return ["network namespaces (ip netns add failed)"]
    try:
        for what, cmd in (
            ("veth", "link add vp0 type veth peer name vp1"),
            ("bridge", "link add br0 type bridge"),
            ("vxlan module", "link add vx0 type vxlan id 1 dstport 4789"),
            ("tun module", "tuntap add mode tap name tp0"),
        ):
            if run(f"ip -n {probe} {cmd}", check=False).returncode != 0:
                missing.append(what)
        if not os.path.exists("/dev/net/tun"):
            missing.append("/dev/net/tun")
    finally:
        run(f"ip netns del {probe}", check=False)
    return missing


class Host:
    """A namespace with one veth ``eth0`` into the underlay bridge."""

    def __init__(self, topo: "Topology", name: str, ns: str) -> None:
        self.topo = topo
        self.name = name
        self.ns = ns
        self.addrs: list[str] = []

    @property
    def ip(self) -> str:
        return self.addrs[0].split("/")[0]

    @property
    def ip6(self) -> str | None:
        for a in self.addrs:
            if ip_version(a.split("/")[0]) == 6:
                return a.split("/")[0]
        return None

    def sh(self, cmd: str, check: bool = True, timeout: float = 60) -> str:
        return run(f"ip netns exec {self.ns} sh -c {shlex.quote(cmd)}", check,
                   timeout).stdout

    def run(self, cmd: str, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess:
        return run(f"ip netns exec {self.ns} sh -c {shlex.quote(cmd)}", check, timeout)

    def popen(self, args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns] + args, env=child_env(env),
                             start_new_session=True, **kw)
        self.topo.procs.append(p)
        return p

    def vxtun(self, *args: str, env: dict | None = None, wait_dev: str | None = "vxtun0",
              timeout: float = 20) -> subprocess.Popen:
        """Start ``vxtun up ARGS`` here and wait until its control socket answers."""
        p = self.popen(python("-m", "vxtun", "up", *args), env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if wait_dev:
            deadline = time.time() + timeout
            while time.time() < deadline:
                if p.poll() is not None:
                    out, err = p.communicate()
                    raise RuntimeError(f"vxtun up {' '.join(args)} exited {p.returncode}:\n"
                                       f"{out}{err}")
                if self.run_vxtun("show", "dev", wait_dev).returncode == 0:
                    return p
                time.sleep(0.1)
            raise RuntimeError(f"vxtun {wait_dev} did not come up in {timeout}s")
        return p

    def run_vxtun(self, *args: str, check: bool = False,
                  timeout: float = 30) -> subprocess.CompletedProcess:
        """Run ``vxtun ARGS`` in this host; the result with its status, stdout and stderr."""
        return run(f"ip netns exec {self.ns} {shlex.join(python('-m', 'vxtun', *args))}",
                   check, timeout)

    def cmd(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """Run ``vxtun ARGS`` in this host; its stdout."""
        return self.run_vxtun(*args, check=check, timeout=timeout).stdout


class Topology:
    """Hosts on one underlay bridge (in namespace ``<prefix>-ul``)."""

    def __init__(self, tag: str = "lab", mtu: int = 1500, prefix: str | None = None) -> None:
        # ``prefix``: a fixed name prefix instead of the unique one (``vxtun lab up`` names its
        # namespaces after the lab, so that ``vxtun lab down`` finds them from another process).
        self.prefix = prefix or f"vxt-{tag}-{os.getpid()}-{next(_counter)}"
        self.mtu = mtu
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.hosts: dict[str, Host] = {}
        self.ul = f"{self.prefix}-ul"
        self._closed = False
        self._add_ns(self.ul)
        run(f"ip -n {self.ul} link add br0 type bridge")
        # Snooping would filter multicast until a querier shows up; the lab has no querier.
        run(f"ip -n {self.ul} link set br0 type bridge mcast_snooping 0", check=False)
        run(f"ip -n {self.ul} link set br0 up")
        run(f"ip -n {self.ul} link set lo up")

    def _add_ns(self, ns: str) -> None:
        run(f"ip netns add {ns}")
        self.namespaces.append(ns)

    def host(self, name: str, *addrs: str) -> Host:
        ns = f"{self.prefix}-{name}"
        self._add_ns(ns)
        idx = len(self.hosts)
        outside = f"v{idx}"
        # The veth is created inside the underlay namespace, never in the root namespace.
        run(f"ip -n {self.ul} link add {outside} mtu {self.mtu} type veth peer name eth0 "
            f"netns {ns}")
        run(f"ip -n {self.ul} link set {outside} master br0 up")
        run(f"ip -n {ns} link set lo up")
        run(f"ip -n {ns} link set eth0 mtu {self.mtu} up")
        h = Host(self, name, ns)
        for a in addrs:
            extra = " nodad" if ip_version(a.split("/")[0]) == 6 else ""
            run(f"ip -n {ns} addr add {a} dev eth0{extra}")
            h.addrs.append(a)
        self.hosts[name] = h
        return h

    def namespace(self, name: str) -> str:
        """An extra namespace (e.g. a container) that close() will delete."""
        ns = f"{self.prefix}-{name}"
        self._add_ns(ns)
        return ns

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.time() + 5
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                p.wait()
        for ns in reversed(self.namespaces):
            # Kill anything still running inside before deleting the namespace.
            pids = run(f"ip netns pids {ns}", check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            run(f"ip netns del {ns}", check=False)

    def __enter__(self) -> "Topology":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def set_container(host: Host, bridge: str, name: str, address: str) -> str:
    """A container on ``host``: a namespace with a veth into ``bridge`` and ``address`` on its
    ``eth0``.  Returns the container's namespace name."""
    topo = host.topo
    ns = topo.namespace(f"{host.name}-{name}")
    idx = sum(1 for n in topo.namespaces if n.startswith(f"{topo.prefix}-{host.name}-"))
    outside = f"ve{idx}"
    run(f"ip -n {host.ns} link add {outside} type veth peer name eth0 netns {ns}")
    run(f"ip -n {host.ns} link set {outside} master {bridge} up")
    run(f"ip -n {ns} link set lo up")
    run(f"ip -n {ns} addr add {address} dev eth0")
    run(f"ip -n {ns} link set eth0 up")
    return ns
