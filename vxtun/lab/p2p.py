"""``vxtun-lab``: a point-to-point VTEP pair, the kernel's on one side and vxtun on the other.

Two hosts (network namespaces) on one underlay bridge: ``h1`` runs the kernel's vxlan device,
``h2`` runs vxtun, both on VNI 42 and UDP port 4789, overlay 10.20.1.0/24.  The lab shows the
commands it runs, proves the two VTEPs talk (ARP, ping, a fragmented ping, a TCP stream of
several megabytes compared by sha256 in both directions), shows one VXLAN datagram as it
crosses the underlay, and always deletes everything it made.  Exit status 0 means every check
passed.

It needs root, iproute2 and Python; ping, tcpdump and iperf3 are not needed (the traffic is
made by ``vxtun.lab.traffic``).  scapy, when installed, decodes the captured datagram.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from ..wire.ether import ETH_HLEN, mac_to_str
from ..wire.vxlan import VXLAN_HLEN, decode_header, reserved_bits_set
from . import traffic
from .netns import Host, Topology, prerequisites

VNI = 42
PORT = 4789
OVERLAY = ("10.20.1.2", "10.20.1.3")
UNDERLAY = {4: ("192.0.2.1", "192.0.2.2", 24), 6: ("2001:db8::1", "2001:db8::2", 64)}


class Failed(Exception):
    """A check of the lab did not hold."""


class Lab:
    def __init__(self, family: int, nbytes: int, env: dict, out=sys.stdout) -> None:
        self.family = family
        self.nbytes = nbytes
        self.env = env
        self.out = out
        self.step_no = 0
        self.steps = 8

    # --- output ------------------------------------------------------------------------

    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"\n[{self.step_no}/{self.steps}] {text}", file=self.out, flush=True)

    def say(self, text: str = "", indent: int = 6) -> None:
        for line in (text.splitlines() or [""]):
            print(" " * indent + line, file=self.out, flush=True)

    def shell(self, host: Host, cmd: str) -> str:
        self.say(f"{host.name}$ {cmd}")
        return host.sh(cmd)

    def check(self, ok: bool, what: str) -> None:
        self.say(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            raise Failed(what)

    # --- the lab -----------------------------------------------------------------------

    def run(self) -> None:
        u1, u2, plen = UNDERLAY[self.family]
        o1, o2 = OVERLAY
        with Topology("lab") as topo:
            self.step("underlay: two hosts on one bridge, each in a network namespace")
            h1 = topo.host("h1", f"{u1}/{plen}")
            h2 = topo.host("h2", f"{u2}/{plen}")
            self.say(f"namespaces {topo.ul} (bridge br0), {h1.ns}, {h2.ns}")
            self.say(f"h1 eth0 {u1}/{plen}    h2 eth0 {u2}/{plen}    underlay MTU {topo.mtu}")

            self.step("h1: the kernel's VTEP, point to point")
            self.shell(h1, f"ip link add vxlan0 type vxlan id {VNI} dstport {PORT} "
                           f"remote {u2} local {u1} dev eth0")
            self.shell(h1, f"ip addr add {o1}/24 dev vxlan0")
            self.shell(h1, "ip link set vxlan0 up")

            self.step("h2: vxtun, the same VTEP in user space")
            args = ["--vni", str(VNI), "--remote", u1, "--local", u2, "--dev", "eth0",
                    "--dstport", str(PORT), "--address", f"{o2}/24"]
            self.say(f"h2$ vxtun up {' '.join(args)} &")
            proc = h2.vxtun(*args, env=self.env)
            self.say(f"h2$ vxtun show\n{h2.cmd('show')}", indent=6)
            fdb = h2.cmd("fdb", "show", "dev", "vxtun0")
            self.say(f"h2$ vxtun fdb show dev vxtun0\n{fdb}")
            self.check(fdb.splitlines()[0] ==
                       f"00:00:00:00:00:00 dst {u1} via eth0 self permanent",
                       "the default FDB entry sends everything to the remote VTEP")
            mtu = json.loads(h2.sh("ip -j link show vxtun0"))[0]["mtu"]
            want = topo.mtu - (70 if self.family == 6 else 50)
            self.check(mtu == want, f"vxtun0 MTU {mtu} = underlay MTU {topo.mtu} - "
                                    f"{topo.mtu - want} (outer IP, UDP, VXLAN, inner Ethernet)")

            self.step("ping across the overlay (ARP resolves first)")
            self.ping(h1, o2)
            self.ping(h2, o1)
            self.ping(h1, o2, size=3200, note=" (3200 bytes: IP fragments inside the overlay)")
            mac2 = json.loads(h2.sh("ip -j link show vxtun0"))[0]["address"]
            neigh = json.loads(h1.sh(f"ip -j neigh show {o2} dev vxlan0"))
            self.check(bool(neigh) and neigh[0].get("lladdr") == mac2,
                       f"h1's ARP cache: {o2} is at {mac2}, vxtun0's MAC")
            learned = h1.sh("bridge fdb show dev vxlan0")
            self.check(f"{mac2} dst {u2} self" in learned,
                       f"the kernel VTEP learned {mac2} behind {u2}")

            self.step("one VXLAN datagram from vxtun, captured on h2's eth0")
            self.show_datagram(h2, h1, o1)

            self.step(f"TCP: {self.nbytes} bytes each way, compared by sha256")
            for src, dst, ip, seed in ((h2, h1, o1, 1), (h1, h2, o2, 2)):
                t = traffic.tcp_transfer(src, dst, ip, self.nbytes, port=5201, seed=seed)
                self.check(t.identical,
                           f"{src.name} -> {dst.name} ({ip}): {t.received} of {t.sent} bytes, "
                           f"sha256 {t.received_sha256[:16]}... "
                           f"{'==' if t.identical else '!='} {t.sent_sha256[:16]}... "
                           f"({t.seconds:.2f} s)")

            self.step("what vxtun counted")
            self.say(f"h2$ vxtun stats\n{h2.cmd('stats')}")
            stats = json.loads(h2.cmd("stats", "-j"))[0]
            self.check(sum(stats["drops"].values()) == 0, "no datagram or frame was dropped")

            self.step("stop vxtun; the TAP goes with it")
            self.say("h2$ vxtun down")
            h2.cmd("down")
            proc.communicate(timeout=10)
            gone = h2.run("ip link show vxtun0").returncode != 0
            self.check(proc.returncode == 0 and gone,
                       f"vxtun exited with status {proc.returncode} and vxtun0 is "
                       f"{'gone' if gone else 'still there'}")
        self.say("\nnamespaces deleted", indent=0)

    def ping(self, src: Host, dst: str, count: int = 3, size: int = 56, note: str = "") -> None:
        r = traffic.run_in(src, "ping", dst, count, size)
        self.check(r["received"] == count,
                   f"{src.name} -> {dst}: {r['received']}/{count} echo replies{note}")

    def show_datagram(self, h2: Host, h1: Host, o1: str) -> None:
        cap = h2.popen(traffic.command("capture", "eth0", PORT, 1, 5, "out"),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cap.stdout.readline()                    # ready
        traffic.run_in(h2, "ping", o1, 1, 56)
        out, err = cap.communicate(timeout=15)
        frames = json.loads(out.strip().splitlines()[-1])["frames"]
        self.check(len(frames) == 1, "captured a datagram to UDP port 4789")
        frame = bytes.fromhex(frames[0])
        try:
            import scapy.layers.all  # noqa: F401
            from scapy.layers.l2 import Ether
            self.say(Ether(frame).show(dump=True))
        except ImportError:
            self.say("(install scapy to see every field decoded: pip install scapy)")
            self.say(frame.hex())
        ip_len = (frame[ETH_HLEN] & 0x0F) * 4 if self.family == 4 else 40
        udp = ETH_HLEN + ip_len
        sport = int.from_bytes(frame[udp:udp + 2], "big")
        dport = int.from_bytes(frame[udp + 2:udp + 4], "big")
        vx = frame[udp + 8:]
        vni, reason = decode_header(vx)
        inner = vx[VXLAN_HLEN:]
        self.check(vx[0] == 0x08 and not reserved_bits_set(vx) and vni == VNI and reason is None,
                   f"VXLAN header {vx[:8].hex(' ')}: flags 0x08 (I), reserved bits zero, "
                   f"VNI {vni}")
        self.check(dport == PORT and 32768 <= sport < 61000,
                   f"UDP {sport} -> {dport}: source port from the inner flow's hash, "
                   "destination the VXLAN port")
        self.say(f"inner frame: {mac_to_str(inner[6:12])} -> {mac_to_str(inner[0:6])}, "
                 f"{len(inner)} bytes (outer {len(frame)} bytes)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="vxtun-lab", description="Build two namespace hosts, one with the kernel's VXLAN "
        "VTEP and one with vxtun, prove they talk, and clean up.  Needs root.")
    ap.add_argument("--ipv6", action="store_true", help="IPv6 underlay (2001:db8::/64)")
    ap.add_argument("--pure", action="store_true",
                    help="run vxtun's pure-Python dataplane (VXTUN_PUREPYTHON=1)")
    ap.add_argument("--bytes", type=int, default=5 * 1024 * 1024, dest="nbytes",
                    help="bytes for each TCP transfer (default 5 MiB)")
    a = ap.parse_args(argv)
    env = {"VXTUN_PUREPYTHON": "1"} if a.pure else {}
    print(f"vxtun lab: kernel VTEP <-> vxtun, VNI {VNI}, UDP {PORT}, "
          f"IPv{6 if a.ipv6 else 4} underlay, "
          f"{'pure-Python' if a.pure else 'default'} dataplane", flush=True)
    missing = prerequisites()
    if missing:
        print(f"vxtun-lab: cannot build namespaces here; missing: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    t0 = time.monotonic()
    try:
        Lab(6 if a.ipv6 else 4, a.nbytes, env).run()
    except Failed as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
        return 1
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
        print(f"\nFAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; namespaces deleted", file=sys.stderr)
        return 130
    print(f"\nPASS: the kernel's VTEP and vxtun talk ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

