"""The benchmark's topology: two hosts over a veth underlay bridge, one VTEP in each.

    h1 (192.0.2.1) --veth-- br0 (namespace <prefix>-ul) --veth-- h2 (192.0.2.2)
    overlay 10.20.1.1/24 on h1's VTEP          overlay 10.20.1.2/24 on h2's VTEP

A *pairing* names the VTEP on each side, sender first: ``kernel-vxtun`` is the kernel's vxlan
device on h1 sending to vxtun on h2.  The iperf3 client and ping run on h1, the iperf3 server on
h2, so the first kind encapsulates and the second decapsulates the bulk of the traffic.  Kinds:

* ``kernel``: ``ip link add vxlan0 type vxlan id 42 dstport 4789 remote PEER local ME dev eth0``
  (a point-to-point VTEP), MTU 1450 from the underlay's 1500;
* ``vxtun``: ``vxtun up`` with the default dataplane (the Cython fast path);
* ``pure``: ``vxtun up`` with ``VXTUN_PUREPYTHON=1``;
* ``busy``: the fast path with ``VXTUN_BUSY_POLL_US`` set (busy polling after traffic).

Offloads stay at their defaults everywhere (no ethtool): the point is to compare with what the
kernel does on the same machine, not to tune the machine.  Each pairing gets a fresh topology
(vxt-bench-<pid>-N-*), so no ARP, FDB or socket state leaks from one pairing into the next;
``close()`` deletes every namespace and kills every process the pairing started.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field

from vxtun.lab.netns import Host, Topology

KINDS = ("kernel", "vxtun", "pure", "busy")
# What a full run measures, in this order (pure-Python mode both ways, as the fast path, and
# the fast path with busy polling); any other SENDER-RECEIVER of KINDS works with --only.
DEFAULT_PAIRINGS = ("kernel-kernel", "kernel-vxtun", "vxtun-kernel", "vxtun-vxtun",
                    "pure-kernel", "kernel-pure", "kernel-busy", "busy-kernel", "busy-busy")
REFERENCE = "kernel-kernel"

VNI = 42
DSTPORT = 4789
UNDERLAY = ("192.0.2.1", "192.0.2.2")
# The IPv6 underlay (bench.run's IPv6 part): the same hosts and overlay over 2001:db8:1::/64.
UNDERLAY6 = ("2001:db8:1::1", "2001:db8:1::2")
OVERLAY = ("10.20.1.1", "10.20.1.2")
DEV = {"kernel": "vxlan0", "vxtun": "vxtun0", "pure": "vxtun0", "busy": "vxtun0"}
# ``busy``: the fast path with busy polling after traffic (vxtun/fastpath/threads.pyx); its
# budget in microseconds is BUSY_POLL_US unless bench.run's --busy-poll says otherwise.
BUSY_POLL_US = 200
ENV = {"vxtun": {"VXTUN_PUREPYTHON": "0", "VXTUN_BUSY_POLL_US": "0"},
       "pure": {"VXTUN_PUREPYTHON": "1"},
       "busy": {"VXTUN_PUREPYTHON": "0", "VXTUN_BUSY_POLL_US": str(BUSY_POLL_US)}}


def parse_pairing(name: str) -> tuple[str, str]:
    """``"kernel-vxtun"`` -> ``("kernel", "vxtun")``; ValueError for anything else."""
    parts = name.strip().lower().replace("<->", "-").replace("->", "-").split("-")
    if len(parts) != 2 or not all(p in KINDS for p in parts):
        raise ValueError(f"unknown pairing {name!r}: say SENDER-RECEIVER with each of "
                         f"{', '.join(KINDS)} (e.g. {', '.join(DEFAULT_PAIRINGS)})")
    return parts[0], parts[1]


def label(name: str) -> str:
    """How the report prints a pairing: ``kernel<->kernel``, ``kernel->vxtun``."""
    a, b = parse_pairing(name)
    return f"{a}<->{b}" if a == b else f"{a}->{b}"


@dataclass
class Vtep:
    kind: str
    host: Host
    dev: str
    overlay: str
    proc: object = None          # the `vxtun up` Popen (it holds the lease), for vxtun kinds
    # The process that runs the dataplane, from `vxtun show`: the namespace's port owner, which
    # `vxtun up` may have started (vxtun/dataplane/owner.py).  Its CPU time is what we account.
    pid: int | None = None
    show: dict = field(default_factory=dict)

    @property
    def is_vxtun(self) -> bool:
        return self.kind != "kernel"

    def _owner_alive(self) -> bool:
        if not self.pid:
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def alive(self) -> bool:
        return self.proc is None or (self.proc.poll() is None and self._owner_alive())

    def why_dead(self) -> str:
        """The exit status and the last lines a dead vxtun wrote, for the report."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            return "" if self._owner_alive() else \
                f"the vxtun dataplane process {self.pid} on {self.host.name} is gone"
        try:
            out, err = self.proc.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        tail = "\n".join(((out or "") + (err or "")).strip().splitlines()[-5:])
        return f"vxtun on {self.host.name} exited {self.proc.returncode}: {tail}"

    def stats(self) -> dict:
        if not self.is_vxtun or not self.alive():
            return {}
        out = self.host.run_vxtun("stats", "dev", self.dev, "-j", timeout=10)
        try:
            return json.loads(out.stdout)[0]
        except (ValueError, IndexError):
            return {}


class Pairing:
    """A fresh two-host topology with the VTEPs a pairing names; a context manager."""

    def __init__(self, name: str, family: int = 4) -> None:
        self.name = name
        self.kinds = parse_pairing(name)
        self.underlay = UNDERLAY6 if family == 6 else UNDERLAY
        plen = 64 if family == 6 else 24
        self.topo = Topology("bench")
        try:
            self.h1 = self.topo.host("h1", f"{self.underlay[0]}/{plen}")
            self.h2 = self.topo.host("h2", f"{self.underlay[1]}/{plen}")
            self.sender = self._vtep(self.kinds[0], self.h1, 0)
            self.receiver = self._vtep(self.kinds[1], self.h2, 1)
        except BaseException:
            self.topo.close()
            raise

    @property
    def vteps(self) -> list[Vtep]:
        return [self.sender, self.receiver]

    @property
    def server_ip(self) -> str:
        return OVERLAY[1]

    def _vtep(self, kind: str, host: Host, i: int) -> Vtep:
        return make_vtep(kind, host, i, underlay=self.underlay)

    def wait_reachable(self, timeout: float = 15.0) -> None:
        """Ping until the overlay answers: ARP and FDB are warm before anything is measured."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.h1.run(f"ping -n -c 1 -W 1 {self.server_ip}", timeout=5)
            if r.returncode == 0:
                return
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.server_ip} does not answer over {label(self.name)} "
                                   f"after {timeout:.0f} s")
            time.sleep(0.2)

    def check_alive(self) -> None:
        for v in self.vteps:
            if not v.alive():
                raise RuntimeError(v.why_dead())

    def counters(self) -> dict:
        """Where packets were lost, per host: the VTEP device's and eth0's drop counters
        (a TAP's tx_dropped means the VTEP did not read fast enough) and the namespace's UDP
        errors (RcvbufErrors: a receiving socket, the VTEP's or iperf3's, overflowed)."""
        out = {}
        for v in self.vteps:
            h = v.host
            c: dict = {}
            for dev in (v.dev, "eth0"):
                try:
                    c[dev] = link_counters(h, dev)
                except (RuntimeError, ValueError, IndexError):
                    pass
            lines = [ln.split() for ln in h.sh("cat /proc/net/snmp", timeout=10).splitlines()
                     if ln.startswith("Udp:")]
            if len(lines) >= 2:
                names, values = lines[0], lines[1]
                c["udp"] = {names[i]: int(values[i])
                            for i in range(1, min(len(names), len(values)))}
            out[h.name] = c
        return out

    def close(self) -> None:
        self.topo.close()

    def __enter__(self) -> "Pairing":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def overlay(i: int, j: int = 0) -> str:
    """Host ``i``'s overlay address on VTEP ``j``: 10.20.<j+1>.<i+1>."""
    return OVERLAY[i] if j == 0 else f"10.20.{j + 1}.{i + 1}"


def make_vtep(kind: str, host: Host, i: int, j: int = 0, env: dict | None = None,
              underlay: tuple[str, str] = UNDERLAY) -> Vtep:
    """The VTEP of ``kind`` on ``host``, the ``i``-th of ``underlay`` (0 or 1), remote the
    other.  ``j`` > 0: one more VTEP in the same namespace (VNI 42 + j, device vxlan<j> /
    vxtun<j>, overlay 10.20.<j+1>.0/24), sharing UDP port 4789 with the others.  ``env``:
    vxtun's environment instead of ENV[kind].  Either kind takes its MTU from eth0's less the
    overhead of the underlay's family (1450 over IPv4, 1430 over IPv6)."""
    me, peer, ov = underlay[i], underlay[1 - i], overlay(i, j)
    dev = DEV[kind] if j == 0 else DEV[kind].rstrip("0") + str(j)
    vni = VNI + j
    if kind == "kernel":
        host.sh(f"ip link add {dev} type vxlan id {vni} dstport {DSTPORT} remote {peer} "
                f"local {me} dev eth0 && ip addr add {ov}/24 dev {dev} && "
                f"ip link set {dev} up")
        return Vtep(kind, host, dev, ov)
    proc = host.vxtun("--vni", str(vni), "--remote", peer, "--local", me, "--dev", "eth0",
                      "--dstport", str(DSTPORT), "--address", f"{ov}/24", "--name", dev,
                      env=env or ENV[kind], wait_dev=dev)
    v = Vtep(kind, host, dev, ov, proc=proc)
    out = host.cmd("show", "dev", dev, "-j", timeout=10)
    v.show = json.loads(out)[0]
    v.pid = int(v.show.get("pid") or proc.pid)
    # Measuring the wrong dataplane under the right name would be worse than no figure.
    got = v.show.get("dataplane")
    if (kind == "pure") != (got == "pure"):
        raise RuntimeError(f"{kind}: asked for the {'pure' if kind == 'pure' else 'fast'} "
                           f"dataplane, vxtun runs {got!r}")
    return v


def link_counters(host: Host, dev: str) -> dict:
    """``ip -s link`` packet and drop counters of ``dev`` in ``host``'s namespace."""
    link = json.loads(host.sh(f"ip -j -s link show dev {dev}", timeout=10))[0]
    st = link.get("stats64", {})
    return {f"{d}_{k}": st.get(d, {}).get(k, 0)
            for d in ("rx", "tx") for k in ("packets", "dropped", "errors")}


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])     # fields 14 and 15 of proc(5)
    return (utime + stime) / clock_ticks()
