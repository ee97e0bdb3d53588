"""Prototype of UDP-tunnel GSO egress (vxtun/io/gso.py), outside the dataplane.

    sudo python3 -m bench.gso_proto [--seconds 5] [--nocsum] [--no-check]

Two hosts on a veth underlay bridge (vxtun.lab.netns.Topology): h2 runs a kernel VTEP (VNI 42,
10.20.1.2/24).  h1's TCP stack sends into an overlay TAP ``ovl0`` (10.20.1.1/24, TSO super-
frames with their virtio-net header); a relay process (``relay`` below) wraps each frame in
IPv4/UDP/VXLAN and writes it to the egress TAP ``ovl0-gso``, whose per-device
``forwarding`` / ``accept_local`` let ip_forward() send it to h2: a TSO super-frame as one
UDP-tunnel GSO packet, anything else as one ordinary datagram.  The replies come back through
a kernel VTEP on h1 that only receives (no address on it: the replies are for ovl0's).

It then checks on the wire: with tunnel segmentation switched off on h1's eth0 (ethtool -K),
validate_xmit_skb() cuts each GSO packet in software as a NIC without it would, and every
datagram captured on the bridge must be a correct VXLAN datagram: outer IPv4 and UDP
checksums (or 0 with --nocsum), inner IPv4 and TCP checksums, TTL 64, no DF, one UDP source
port per flow, and its VXLAN payload and source port exactly what vxtun's reference core
(Vtep.handle_frame) sends for the same inner frame.  A TCP transfer's sha256 is compared end
to end, and finally iperf3 measures h1 -> h2 through the relay against kernel -> kernel in
the same run (segmentation back on: over veth the packet then crosses whole).
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import socket
import struct
import subprocess
import sys
import tempfile
import time

from vxtun.io import gso
from vxtun.lab.netns import Topology, python
from vxtun.wire.offload import VIRTIO_NET_HDR_F_NEEDS_CSUM, complete_checksum, csum_add
from vxtun.wire.vxlan import LOCAL_PORT_RANGE, encode_header, source_port, udp_checksum

VNI = 42
TTL = 64


def relay(args) -> None:
    """Run in h1: ovl0 -> (wrap) -> ovl0-gso.  Prints one JSON line of counters on SIGTERM."""
    import signal

    from vxtun.io.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, open_tap
    tap = open_tap("ovl0", TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    eg = gso.open_egress(gso.egress_name("ovl0"))
    os.set_blocking(eg.fd, True)
    src = socket.inet_aton(args.src)
    dst = socket.inet_aton(args.dst)
    vx = encode_header(VNI)
    counts = {"gso": 0, "plain": 0, "errors": 0}
    ident = 0
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    poller = select.poll()
    poller.register(tap, select.POLLIN)
    while not stop:
        if not poller.poll(200):
            continue
        while True:
            try:
                data = os.read(tap, 65536 + 10)
            except BlockingIOError:
                break
            frame = data[10:]
            sport = source_port(frame, *LOCAL_PORT_RANGE)
            vlen = 8 + len(frame)
            if data[1]:                  # a TSO super-frame: one tunnel GSO packet
                hdr = gso.tnl_vnet_hdr(data[:10], not args.nocsum)
                start = struct.unpack_from("<H", data, 6)[0]
                payload = len(frame) - start - (frame[start + 12] >> 4) * 4
                mss = struct.unpack_from("<H", data, 4)[0]
                nseg = -(-payload // mss)
                outer = gso.outer_ipv4(eg.mac, src, dst, sport, 4789, vlen, ident, 0, TTL,
                                       False, not args.nocsum)
                ident += nseg
                counts["gso"] += 1
            else:                         # finish it here, as the dataplane does today
                if data[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM:
                    frame = bytearray(frame)
                    complete_checksum(frame, *struct.unpack_from("<HH", data, 6))
                    frame = bytes(frame)
                hdr = bytes(gso.VNET_TNL_HDR_LEN)
                outer = bytearray(gso.outer_ipv4(eg.mac, src, dst, sport, 4789, vlen, ident, 0,
                                                 TTL, False, False))
                ident += 1
                if not args.nocsum:
                    udp = bytes(outer[34:42]) + vx + frame
                    struct.pack_into("!H", outer, 40, udp_checksum(src, dst, udp))
                counts["plain"] += 1
            try:
                os.writev(eg.fd, [hdr, outer, vx, frame])
            except OSError as e:
                counts["errors"] += 1
                counts["last_error"] = e.strerror
    t = os.times()
    counts["cpu_user_s"] = round(t.user, 2)
    counts["cpu_sys_s"] = round(t.system, 2)
    print(json.dumps(counts), flush=True)


def _sh(host, cmd: str) -> str:
    return host.sh(cmd)


def _mac(host, dev: str) -> str:
    return json.loads(host.sh(f"ip -j link show {dev}"))[0]["address"]


def build(topo: Topology, nocsum: bool):
    h1 = topo.host("h1", "192.0.2.1/24")
    h2 = topo.host("h2", "192.0.2.2/24")
    csum = "noudpcsum" if nocsum else "udpcsum"
    h2.sh(f"ip link add vxlan0 type vxlan id {VNI} dstport 4789 remote 192.0.2.1 "
          f"local 192.0.2.2 dev eth0 {csum} && ip addr add 10.20.1.2/24 dev vxlan0 && "
          "ip link set vxlan0 up")
    # h1's receive side: a kernel VTEP with no address, so that only ovl0 sends
    h1.sh(f"ip link add vxrx type vxlan id {VNI} dstport 4789 remote 192.0.2.2 "
          f"local 192.0.2.1 dev eth0 {csum} && sysctl -qw net.ipv6.conf.vxrx.disable_ipv6=1 && "
          "ip link set vxrx up")
    p = h1.popen(python("-m", "bench.gso_proto", "relay", "--src", "192.0.2.1",
                        "--dst", "192.0.2.2") + (["--nocsum"] if nocsum else []),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.wait(5)
        raise SystemExit(f"relay did not start: {line}{p.stderr.read()}")
    h1.sh("sysctl -qw net.ipv6.conf.ovl0.disable_ipv6=1 && ip addr add 10.20.1.1/24 dev ovl0 "
          "&& ip link set ovl0 mtu 1450 up")
    h1.sh(f"ip neigh replace 10.20.1.2 lladdr {_mac(h2, 'vxlan0')} dev ovl0 nud permanent")
    h2.sh(f"ip neigh replace 10.20.1.1 lladdr {_mac(h1, 'vxrx')} dev vxlan0 nud permanent")
    return h1, h2, p


def stop_relay(p) -> dict:
    p.terminate()
    out, err = p.communicate(timeout=10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"relay said nothing: {err}")
    return json.loads(lines[-1])


def transfer(h1, h2, nbytes: int) -> bool:
    """Send ``nbytes`` from h1 to h2 over TCP; True when h2's sha256 matches."""
    import hashlib
    data = os.urandom(nbytes)
    want = hashlib.sha256(data).hexdigest()
    srv = h2.popen(["python3", "-c", (
        "import socket,hashlib\n"
        "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('10.20.1.2',5201));s.listen(1);c,_=s.accept();h=hashlib.sha256()\n"
        "while True:\n b=c.recv(1<<20)\n if not b: break\n h.update(b)\n"
        "print(h.hexdigest())")], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        h1.sh("python3 -c " + shlex.quote(
            "import socket,sys;s=socket.create_connection(('10.20.1.2',5201),timeout=20);"
            f"s.sendall(open({f.name!r},'rb').read());s.close()"), timeout=60)
    got = srv.communicate(timeout=30)[0].strip()
    return got == want


def check_capture(path: str, nocsum: bool) -> dict:
    """Every VXLAN datagram of the capture, checked (see the module's docstring)."""
    import scapy.layers.all  # noqa: F401
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import rdpcap

    from vxtun.core.config import VtepConfig
    from vxtun.core.vtep import Transmit, Vtep
    cfg = VtepConfig(name="x", vni=VNI, remote="192.0.2.2", local="192.0.2.1")
    vtep = Vtep(cfg)
    res = {"datagrams": 0, "max_len": 0, "sports": set(), "bad": [], "ids": []}
    for pkt in rdpcap(path):
        if IP not in pkt or UDP not in pkt or pkt[IP].src != "192.0.2.1":
            continue
        ip = pkt[IP]
        raw = bytes(ip)
        res["datagrams"] += 1
        res["max_len"] = max(res["max_len"], ip.len)
        res["ids"].append(ip.id)

        def bad(why, ip=ip):
            res["bad"].append(f"id {ip.id}: {why}")
        if csum_add(raw[:20]) != 0xFFFF:
            bad("outer IP checksum")
        if ip.ttl != TTL or ip.flags.DF or ip.tos:
            bad(f"ttl {ip.ttl} flags {ip.flags} tos {ip.tos}")
        udp = raw[20:ip.len]
        if nocsum:
            if udp[6:8] != b"\0\0":
                bad("UDP checksum not 0")
        elif csum_add(udp, csum_add(raw[12:20], 17 + len(udp))) != 0xFFFF:
            bad("outer UDP checksum")
        inner = udp[16:]
        iip = IP(inner[14:])
        if csum_add(inner[14:34]) != 0xFFFF:
            bad("inner IP checksum")
        if TCP in iip:
            seg = inner[34:34 + iip.len - 20]
            if csum_add(seg, csum_add(inner[26:34], 6 + len(seg))) != 0xFFFF:
                bad("inner TCP checksum")
        res["sports"].add(pkt[UDP].sport)
        acts = [a for a in vtep.handle_frame(inner, time.monotonic()) if type(a) is Transmit]
        if len(acts) != 1 or acts[0].payload != udp[8:] or acts[0].sport != pkt[UDP].sport:
            bad("differs from the reference core's datagram")
    res["sports"] = sorted(res["sports"])
    ids = res.pop("ids")
    res["id_steps"] = sorted({(b - a) & 0xFFFF for a, b in zip(ids, ids[1:], strict=False)})[:5]
    res["bad"] = res["bad"][:10]
    return res


def iperf(h1, h2, seconds: int) -> float:
    srv = h2.popen(["iperf3", "-s", "-1", "-B", "10.20.1.2"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    out = h1.sh(f"iperf3 -c 10.20.1.2 -t {seconds} -J", timeout=seconds + 30)
    srv.wait(10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def kernel_reference(seconds: int, nocsum: bool) -> float:
    with Topology("gsoref") as topo:
        h1 = topo.host("h1", "192.0.2.1/24")
        h2 = topo.host("h2", "192.0.2.2/24")
        csum = "noudpcsum" if nocsum else "udpcsum"
        for h, me, peer, addr in ((h1, "192.0.2.1", "192.0.2.2", "10.20.1.1/24"),
                                  (h2, "192.0.2.2", "192.0.2.1", "10.20.1.2/24")):
            h.sh(f"ip link add vxlan0 type vxlan id {VNI} dstport 4789 remote {peer} "
                 f"local {me} dev eth0 {csum} && ip addr add {addr} dev vxlan0 && "
                 "ip link set vxlan0 up")
        return iperf(h1, h2, seconds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.gso_proto")
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("relay")
    r.add_argument("--src", required=True)
    r.add_argument("--dst", required=True)
    r.add_argument("--nocsum", action="store_true")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--nocsum", action="store_true", help="noudpcsum on both VTEPs")
    ap.add_argument("--no-check", action="store_true", help="only the iperf3 figures")
    args = ap.parse_args(argv)
    if args.cmd == "relay":
        relay(args)
        return 0
    report: dict = {}
    ok = True
    with Topology("gso") as topo:
        h1, h2, p = build(topo, args.nocsum)
        if not args.no_check:
            # software segmentation and checksums, as a NIC without them would get
            h1.sh("ethtool -K eth0 tx off tx-udp_tnl-segmentation off "
                  "tx-udp_tnl-csum-segmentation off")
            with tempfile.TemporaryDirectory() as d:
                pcap = os.path.join(d, "c.pcap")
                cap = subprocess.Popen(["ip", "netns", "exec", topo.ul, "tcpdump", "-i", "br0",
                                        "-U", "-s", "0", "-w", pcap, "udp port 4789"],
                                       stderr=subprocess.DEVNULL)
                time.sleep(1)
                report["sha256_ok"] = transfer(h1, h2, 4 << 20)
                time.sleep(0.5)
                cap.terminate()
                cap.wait(10)
                report["wire"] = check_capture(pcap, args.nocsum)
            ok = report["sha256_ok"] and not report["wire"]["bad"] \
                and report["wire"]["datagrams"] > 0
            h1.sh("ethtool -K eth0 tx on tx-udp_tnl-segmentation on "
                  "tx-udp_tnl-csum-segmentation on")
        report["relay_gbps"] = round(iperf(h1, h2, args.seconds), 2)
        report["relay"] = stop_relay(p)
    report["kernel_gbps"] = round(kernel_reference(args.seconds, args.nocsum), 2)
    report["ratio"] = round(report["relay_gbps"] / report["kernel_gbps"], 2)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
