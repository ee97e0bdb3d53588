"""Helpers shared by the namespace tests (import them: ``from helpers import ...``).  The
packet programs they start live in ``vxtun/lab/traffic.py``; every Python child starts as
``vxtun/lab/netns.py``'s ``python()`` says, so it imports the ``vxtun`` under test.

* ``kernel_vtep``: ``ip link add vxlan0 type vxlan ...`` on a host.
* ``vxtun_up`` / ``wait_up``: start ``vxtun up`` on a test's dataplane and wait for it.
* ``ping``: the real iputils ping; asserts that every echo came back.
* ``assert_tcp_transfer``: a byte-compared TCP stream (sha256 of what was sent and received);
  the only proof that checksum offload and GSO are handled (ping works without them).
* ``Tcpdump``: tcpdump in the underlay namespace (on the bridge, so it sees every host's
  datagrams); ``.packets()`` gives scapy packets, ``.count()`` counts them.
* ``Capture``: every VXLAN datagram the underlay bridge sends to each host, as records.
* ``inject`` / ``send_udp``: put crafted frames on an overlay device, or crafted datagrams on
  the underlay; ``send_udp_tos`` gives each datagram its own IPv4 TOS / IPv6 traffic class;
  ``send_vxlan_flood`` sends VXLAN frames from random MACs.
* ``RxFrames``: the frames a device of a host receives (a packet socket), until a marker;
  ``exchange``: the ARP replies and NAs a device receives after frames written on it;
  ``flood_unicast``: frames to many unknown unicast MACs.
* ``vxtun_json`` and ``links``: read ``vxtun ... -j`` and the namespace's link names.
* ``poll`` / ``wait_until``: wait for a condition (the timeout only bounds a failure).
* ``TwoVteps``: two ``vxtun up`` in one port owner against two kernel VTEPs, for the tests of
  a TAP that leaves under a running vxtun.
"""
from __future__ import annotations

import json
import os
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from vxtun.lab import traffic
from vxtun.lab.netns import Host, Topology, child_env

TCP_BYTES = 5 * 1024 * 1024


def kernel_vtep(host: Host, remote: str, local: str, address: str | None = None,
                vni: int = 42, dstport: int = 4789, name: str = "vxlan0", extra: str = "") -> str:
    """Create and bring up a kernel vxlan device (by default a point-to-point VTEP)."""
    host.sh(f"ip link add {name} type vxlan id {vni} dstport {dstport} remote {remote} "
            f"local {local} dev eth0 {extra}")
    if address:
        host.sh(f"ip addr add {address} dev {name}")
    host.sh(f"ip link set {name} up")
    return name


# An RTM_NEWLINK of our own, for the vxlan attributes that iproute2 6.1 and pyroute2 0.9 do
# not know (IFLA_VXLAN_LOCALBYPASS 31, IFLA_VXLAN_LABEL_POLICY 32: Linux 6.1 and 6.5).
_NEWLINK = """
import socket, struct, sys
def nla(t, v): n = 4 + len(v); return struct.pack("=HH", n, t) + v + bytes(-n % 4)
name, data = sys.argv[1], b"".join(nla(int(t), bytes.fromhex(v))
                                    for t, v in (a.split(":") for a in sys.argv[2:]))
info = nla(1, b"vxlan\\0") + nla(2 | 0x8000, data)
body = (struct.pack("=BxHiII", 0, 0, 0, 0, 0) + nla(3, name.encode() + b"\\0")
        + nla(18 | 0x8000, info))
msg = struct.pack("=IHHII", 16 + len(body), 16, 0x1 | 0x4 | 0x400 | 0x200, 1, 0) + body
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.send(msg)
err = struct.unpack("=i", s.recv(4096)[16:20])[0]
sys.exit(f"RTM_NEWLINK {name}: error {err}" if err else 0)
"""


def kernel_vxlan_nl(host: Host, name: str, attrs: dict[int, bytes]) -> None:
    """``ip link add NAME type vxlan`` with raw IFLA_VXLAN_* attributes (type: value)."""
    args = " ".join(f"{t}:{v.hex()}" for t, v in attrs.items())
    host.sh(f"python3 -c {shlex.quote(_NEWLINK)} {name} {args}")


def ping(host: Host, dst: str, count: int = 3, size: int = 56) -> str:
    """iputils ping; every echo must come back.  Sizes above the MTU leave as IP fragments."""
    p = host.run(f"ping -c {count} -i 0.2 -W 2 -s {size} {dst}", timeout=30)
    assert p.returncode == 0 and f"{count} received" in p.stdout, \
        f"ping -s {size} {dst} from {host.name} failed:\n{p.stdout}{p.stderr}"
    return p.stdout


def assert_tcp_transfer(src: Host, dst: Host, dst_ip: str, nbytes: int = TCP_BYTES,
                        port: int = 5201, seed: int = 1) -> traffic.Transfer:
    """Send ``nbytes`` from ``src`` to ``dst_ip`` on ``dst`` and compare sha256 both ends."""
    t = traffic.tcp_transfer(src, dst, dst_ip, nbytes, port=port, seed=seed)
    assert t.sent == nbytes, t
    assert t.identical, f"TCP {src.name} -> {dst.name} ({dst_ip}) corrupted: {t}"
    return t


def vxtun_json(host: Host, *args: str):
    """``vxtun ARGS -j`` in ``host``, parsed."""
    return json.loads(host.cmd(*args, "-j"))


def links(host: Host) -> set[str]:
    """The names of every link in the host's namespace (``ip -o link show``)."""
    out = host.sh("ip -o link show")
    return {ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines() if ln.strip()}


def mac_of(host: Host, dev: str) -> str:
    return json.loads(host.sh(f"ip -j link show {dev}"))[0]["address"]


def mtu_of(host: Host, dev: str) -> int:
    return int(json.loads(host.sh(f"ip -j link show {dev}"))[0]["mtu"])


def neigh_lladdr(host: Host, ip: str, dev: str) -> str | None:
    for n in json.loads(host.sh(f"ip -j neigh show {ip} dev {dev}")):
        if n.get("lladdr"):
            return n["lladdr"]
    return None


def _hex(data: bytes | str) -> str:
    return data if isinstance(data, str) else data.hex()


def inject(host: Host, dev: str, *frames: bytes | str) -> None:
    """Transmit frames (bytes or hex) on ``dev`` through a packet socket: the VTEP behind
    ``dev`` encapsulates them."""
    traffic.run_in(host, "inject", dev, *map(_hex, frames))


def send_udp(host: Host, dst: str, port: int, datagrams: list[bytes | str]) -> None:
    """Send crafted UDP payloads (bytes or hex) from ``host`` to ``dst``:``port``, one
    datagram each."""
    traffic.run_in(host, "udp", dst, port, *map(_hex, datagrams))


def send_vxlan_flood(host: Host, dst: str, port: int, vni: int, n: int) -> None:
    """``n`` VXLAN datagrams from ``host`` to ``dst``:``port``, each a broadcast frame in
    ``vni`` from a new random MAC (``traffic.vxlan_flood``)."""
    traffic.run_in(host, "vxlan-flood", dst, port, vni, n)


def send_udp_tos(host: Host, dst: str, port: int, datagrams: list[tuple[int, bytes]]) -> None:
    """Send crafted UDP payloads from ``host``, each ``(tos, payload)`` under its own IPv4 TOS /
    IPv6 traffic class (ECN bits included: a UDP socket keeps them)."""
    traffic.run_in(host, "udp-tos", dst, port, *(f"{tos}:{d.hex()}" for tos, d in datagrams))


def exchange(host: Host, dev: str, frames: list[bytes], wait: float) -> list[str]:
    """Write ``frames`` on ``dev`` and return, in hex, the ARP replies and Neighbour
    Advertisements ``dev`` receives in the next ``wait`` seconds (``traffic.xchg``)."""
    return traffic.run_in(host, "xchg", dev, wait, *(f.hex() for f in frames),
                          timeout=120)["replies"]


def flood_unicast(host: Host, dev: str, n: int, src: str, first: int = 0) -> dict:
    """Write ``n`` IPv4 frames from MAC ``src`` on ``dev``, each to its own unknown unicast MAC
    (02:aa:00:00:00:00 + ``first`` + i, ``traffic.flood_unicast``); what the program said
    (``{"sent": n}``)."""
    return traffic.run_in(host, "flood-unicast", dev, n, src.replace(":", ""), first,
                          timeout=120)


class RxFrames:
    """The frames ``dev`` in ``host`` receives (a packet socket; VLAN tags come out stripped,
    as the stack strips them) until one containing ``marker`` arrives, which is left out:

        with RxFrames(h2, "vxlan0", marker) as rx:
            send_udp(...)             # the marker last
        frames = rx.frames
    """

    def __init__(self, host: Host, dev: str, marker: bytes, timeout: float = 15) -> None:
        self.host, self.dev, self.marker, self.timeout = host, dev, marker, timeout
        self.frames: list[bytes] = []

    def __enter__(self) -> "RxFrames":
        self.proc = self.host.popen(traffic.command("rx", self.dev, self.marker.hex(),
                                                    self.timeout),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == '{"ready": true}', self.proc.stderr.read()
        return self

    def __exit__(self, *exc) -> None:
        out, err = self.proc.communicate(timeout=self.timeout + 10)
        if exc[0] is None:
            assert self.proc.returncode == 0, err
            self.frames = [bytes.fromhex(h) for h in
                           json.loads(out.strip().splitlines()[-1])["frames"]]


class Capture:
    """The VXLAN datagrams to ``port`` that the underlay bridge sends out of each host's port
    (AF_PACKET, PACKET_OUTGOING on the bridge side of the host's veth): exactly what arrives
    at each VTEP.  Each record is ``traffic.watch``'s, with ``host`` naming the host.

        cap = Capture(topo, hosts)
        try:
            inject(...)
            cap.wait(10, isrc=SRC)
        finally:
            cap.close()
    """

    def __init__(self, topo: Topology, hosts: list[Host], port: int = 4789) -> None:
        ports = {f"v{list(topo.hosts.values()).index(h)}": h.name for h in hosts}
        self.by_port = ports
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self.p = subprocess.Popen(["ip", "netns", "exec", topo.ul,
                                   *traffic.command("watch", ",".join(ports), port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  env=child_env())
        topo.procs.append(self.p)
        assert json.loads(self.p.stdout.readline()) == {"ready": True}
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            rec = json.loads(line)
            rec["host"] = self.by_port[rec.pop("port")]
            with self._lock:
                self.records.append(rec)

    def where(self, **match) -> list[dict]:
        with self._lock:
            return [r for r in self.records if all(r.get(k) == v for k, v in match.items())]

    def wait(self, n: int, timeout: float = 10, **match) -> list[dict]:
        """At least ``n`` matching datagrams, then a settle time in which more may arrive
        (so that "exactly n" also means "not n+1 a moment later")."""
        deadline = time.time() + timeout
        while len(self.where(**match)) < n and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return self.where(**match)

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(5)


def vxtun_up(host: Host, env: dict, *args: str,
             name: str | None = "vxtun0") -> subprocess.Popen:
    """Start ``vxtun up ARGS`` in ``host`` with ``env`` (the ``dataplane`` fixture's).  With a
    ``name``, wait until that VTEP answers and check that it runs the dataplane ``env`` asks
    for; with ``name=None`` return at once (``wait_up`` reads its ``NAME: up`` lines)."""
    p = host.vxtun(*args, env=env, wait_dev=name)
    if name is not None:
        want = "pure" if env.get("VXTUN_PUREPYTHON") == "1" else "fast"
        assert json.loads(host.cmd("show", "dev", name, "-j"))[0]["dataplane"] == want
    return p


class TwoVteps:
    """h0 (192.0.2.1) runs vx42 and vx43, each from a ``vxtun up`` of its own (one port owner,
    ``VXTUN_OWNER_LOG`` in ``log``), against kernel VTEPs vxlan42 / vxlan43 on h1 (192.0.2.2),
    overlay 10.20.VNI.1 / 10.20.VNI.2; both answer pings when this returns."""

    A, B = "192.0.2.1", "192.0.2.2"

    def __init__(self, topo: Topology, dataplane: dict, log) -> None:
        self.a = topo.host("h0", f"{self.A}/24")
        self.b = topo.host("h1", f"{self.B}/24")
        self.env = {**dataplane, "VXTUN_OWNER_LOG": str(log)}
        for vni in (42, 43):
            kernel_vtep(self.b, remote=self.A, local=self.B, address=f"10.20.{vni}.2/24",
                        vni=vni, name=f"vxlan{vni}")
        self.x42, self.x43 = self.up(42), self.up(43)
        ping(self.a, "10.20.42.2")
        ping(self.a, "10.20.43.2")
        (self.owner,) = {d["pid"] for d in vxtun_json(self.a, "show")}

    def up(self, vni: int) -> subprocess.Popen:
        return vxtun_up(self.a, self.env, "--vni", str(vni), "--name", f"vx{vni}", "--remote",
                        self.B, "--local", self.A, "--dev", "eth0", "--dstport", "4789",
                        "--mac", f"02:00:00:00:01:{vni}", "--address", f"10.20.{vni}.1/24",
                        name=f"vx{vni}")

    def vx42_comes_back(self) -> None:
        """After vx42 went: its name is free (a new up takes it, in the same owner, and it
        forwards), then both ups end cleanly and leave no TAP."""
        again = self.up(42)
        assert {d["pid"] for d in vxtun_json(self.a, "show")} == {self.owner}
        ping(self.a, "10.20.42.2")
        assert stop(again)[0] == 0
        assert stop(self.x43)[0] == 0
        assert not {"vx42", "vx43"} & links(self.a)


def wait_up(p: subprocess.Popen, names: list[str], timeout: float = 30) -> None:
    """Read ``vxtun up``'s stdout until each of ``names`` said ``NAME: up``."""
    todo = set(names)
    deadline = time.time() + timeout
    fd = p.stdout.fileno()      # raw reads: a buffered readline could hide a second line
    buf = b""
    while todo:
        left = deadline - time.time()
        assert left > 0, f"vxtun up did not bring up {sorted(todo)} in {timeout}s"
        if not select.select([fd], [], [], left)[0]:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            p.wait(5)
            raise AssertionError(f"vxtun up exited {p.returncode}: {p.stderr.read()}")
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            todo.discard(line.decode().split(":")[0])


def poll(pred, timeout: float = 15.0, step: float = 0.1):
    """Wait for a condition and return its last value (never a timing assertion: the timeout
    only bounds a failure)."""
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() > deadline:
            return v
        time.sleep(step)


def wait_until(pred, timeout: float = 15, what: str = "condition") -> None:
    """``poll``, failing the test if the condition never held."""
    assert poll(pred, timeout, step=0.05), f"timed out waiting for {what}"


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, str,
                                                                                      str]:
    """Signal a ``vxtun up`` started by ``Host.vxtun`` and collect (status, stdout, stderr)."""
    if p.poll() is None:
        p.send_signal(sig)
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def wait_exit(p: subprocess.Popen, timeout: float = 10) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


class Tcpdump:
    """tcpdump on the underlay bridge (in the underlay namespace), written to a pcap file.

        with Tcpdump(topo, "udp port 4789") as cap:
            ping(...)
        pkts = cap.packets()

    The bridge is put in promiscuous mode by tcpdump, so it sees the frames it forwards
    between hosts, not only those addressed to itself.
    """

    def __init__(self, topo: Topology, bpf: str, iface: str = "br0",
                 netns: str | None = None) -> None:
        self.topo = topo
        self.bpf = bpf
        self.iface = iface
        self.netns = netns or topo.ul
        self.dir = tempfile.mkdtemp(prefix="vxtun-pcap-")
        self.path = os.path.join(self.dir, "cap.pcap")
        self.proc: subprocess.Popen | None = None
        self._packets: list | None = None

    def __enter__(self) -> "Tcpdump":
        # --immediate-mode -U: hand over and write each packet as it comes (else the last
        # second of packets can still sit in the capture ring when we stop); -Z root: tcpdump
        # would otherwise drop to a user that cannot write into our private directory.
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "tcpdump", "-i", self.iface, "--immediate-mode",
             "-U", "-n", "-s", "0", "-Z", "root", "-w", self.path, self.bpf],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        self.topo.procs.append(self.proc)
        said = ""
        while "listening on" not in said:      # "listening on br0, ..." once it captures
            line = self.proc.stderr.readline()
            if not line:
                self.proc.wait()
                raise RuntimeError(f"tcpdump did not start: {said}")
            said += line
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            time.sleep(0.2)                    # let the last frames cross the bridge
            self.proc.send_signal(signal.SIGINT)
            self.proc.communicate(timeout=10)

    def packets(self) -> list:
        """The captured frames as scapy packets (stops the capture on first use)."""
        if self._packets is None:
            import scapy.layers.all  # noqa: F401  (rdpcap decodes only layers that are loaded)
            from scapy.utils import rdpcap
            self.stop()
            try:
                self._packets = list(rdpcap(self.path))
            finally:
                shutil.rmtree(self.dir, ignore_errors=True)
        return self._packets

    def count(self) -> int:
        return len(self.packets())
