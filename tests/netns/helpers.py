"""Helpers shared by the namespace tests (import them: ``from helpers import ...``).

* ``kernel_vtep``: the tutorial's ``ip link add vxlan0 type vxlan ...`` on a host.
* ``ping``: the real iputils ping; asserts that every echo came back.
* ``assert_tcp_transfer``: a byte-compared TCP stream (sha256 of what was sent and received);
  the only proof that checksum offload and GSO are handled (ping works without them).
* ``Tcpdump``: tcpdump in the underlay namespace (on the bridge, so it sees every host's
  datagrams); ``.packets()`` gives scapy packets, ``.count()`` counts them.
* ``inject`` / ``send_udp``: put a crafted frame on an overlay device, or crafted datagrams on
  the underlay; ``send_udp_tos`` gives each datagram its own IPv4 TOS / IPv6 traffic class.
* ``RxFrames``: the frames a device of a host receives (a packet socket), until a marker.
* ``vxtun_json`` and ``links``: read ``vxtun ... -j`` and the namespace's link names.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from vxtun.lab import traffic
from vxtun.lab.netns import Host, Topology

TCP_BYTES = 5 * 1024 * 1024


def kernel_vtep(host: Host, remote: str, local: str, address: str | None = None,
                vni: int = 42, dstport: int = 4789, name: str = "vxlan0", extra: str = "") -> str:
    """Create and bring up a kernel vxlan device, as in the tutorial's scenario 1."""
    host.sh(f"ip link add {name} type vxlan id {vni} dstport {dstport} remote {remote} "
            f"local {local} dev eth0 {extra}")
    if address:
        host.sh(f"ip addr add {address} dev {name}")
    host.sh(f"ip link set {name} up")
    return name


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


def inject(host: Host, dev: str, frame: bytes) -> None:
    """Transmit ``frame`` on ``dev`` through a packet socket (the VTEP encapsulates it)."""
    traffic.run_in(host, "inject", dev, frame.hex())


def send_udp(host: Host, dst: str, port: int, datagrams: list[bytes]) -> None:
    """Send crafted UDP payloads from ``host`` to ``dst``:``port`` (one datagram each)."""
    traffic.run_in(host, "udp", dst, port, *(d.hex() for d in datagrams))


_SEND_UDP_TOS = r"""
import socket, sys
dst, port = sys.argv[1], int(sys.argv[2])
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
for arg in sys.argv[3:]:
    tos, data = arg.split(":")
    if v6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, int(tos))
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, int(tos))
    s.sendto(bytes.fromhex(data), (dst, port))
"""


def send_udp_tos(host: Host, dst: str, port: int, datagrams: list[tuple[int, bytes]]) -> None:
    """Send crafted UDP payloads from ``host``, each ``(tos, payload)`` under its own IPv4 TOS /
    IPv6 traffic class (ECN bits included: a UDP socket keeps them)."""
    p = host.popen([sys.executable, "-c", _SEND_UDP_TOS, dst, str(port),
                    *(f"{tos}:{d.hex()}" for tos, d in datagrams)],
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err


_RX_FRAMES = r"""
import json, select, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((sys.argv[1], 0))
marker, deadline = bytes.fromhex(sys.argv[2]), time.monotonic() + float(sys.argv[3])
print("ready", flush=True)
frames = []
while time.monotonic() < deadline:
    if not select.select([s], [], [], 0.1)[0]:
        continue
    f, addr = s.recvfrom(65535)
    if addr[2] == 4:            # PACKET_OUTGOING: what the host itself sends
        continue
    if marker in f:
        break
    frames.append(f.hex())
print(json.dumps(frames), flush=True)
"""


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
        self.proc = self.host.popen([sys.executable, "-c", _RX_FRAMES, self.dev,
                                     self.marker.hex(), str(self.timeout)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()
        return self

    def __exit__(self, *exc) -> None:
        out, err = self.proc.communicate(timeout=self.timeout + 10)
        if exc[0] is None:
            assert self.proc.returncode == 0, err
            self.frames = [bytes.fromhex(h) for h in json.loads(out.strip().splitlines()[-1])]


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
