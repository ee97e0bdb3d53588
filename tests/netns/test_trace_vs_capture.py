"""``vxtun trace`` against a capture of the underlay, frame for frame, on both dataplanes.

A kernel VTEP (h1) and vxtun (h2), point to point, VNI 42.  While ``vxtun trace -j`` runs on
h2 and tcpdump captures the underlay bridge, the two hosts resolve each other and ping both
ways, starting from empty ARP caches.  Every VXLAN datagram the bridge carried between the two
markers must have its trace record, in the same order each way: a ``tx`` record for each one
vxtun sent (outer addresses, ports, VNI, TTL, TOS, length; the inner MACs, type and length),
an ``rx`` record for each one it received, and the summary must say what scapy says the inner
frame is.  The markers are datagrams for a VNI nobody serves (dropped as ``vni_not_found``,
which the trace shows too).
"""
from __future__ import annotations

import json
import subprocess
import threading
import time

from helpers import Tcpdump, kernel_vtep, ping, send_udp, stop
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import ARP, Ether

from vxtun.lab.netns import python
from vxtun.wire.vxlan import encode_header

U1, U2 = "192.0.2.1", "192.0.2.2"
IP1, IP2 = "10.20.1.2", "10.20.1.3"
START, STOP, HELLO = 98, 97, 99         # marker VNIs


class Trace:
    """``vxtun trace -j`` running in a host; its records as they come."""

    def __init__(self, host, env: dict, *args: str) -> None:
        self.p = host.popen(python("-m", "vxtun", "trace", "-j", *args), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.records: list[dict] = []
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.p.stdout:
            with self._lock:
                self.records.append(json.loads(line))

    def where(self, **match) -> list[dict]:
        with self._lock:
            return [r for r in self.records if all(r.get(k) == v for k, v in match.items())]

    def marker(self, vni: int) -> int | None:
        """The index of the marker datagram's record (for ``vni``), or None."""
        with self._lock:
            for i, r in enumerate(self.records):
                if r.get("outer", {}).get("vni") == vni and r.get("reason") == "vni_not_found":
                    return i
        return None


def _marker(vni: int) -> bytes:
    return encode_header(vni) + bytes(Ether(src="02:00:00:00:00:99", dst="ff:ff:ff:ff:ff:ff")
                                      / ARP(op=1, psrc="10.20.9.9", pdst="10.20.9.8"))


def _summary(inner: Ether) -> str:
    """What the inner frame is, from scapy's fields (the oracle for the trace's summary)."""
    if ARP in inner:
        a = inner[ARP]
        return (f"ARP who-has {a.pdst} tell {a.psrc}" if a.op == 1
                else f"ARP reply {a.psrc} is-at {a.hwsrc}")
    i = inner[ICMP]
    return f"ICMP echo {'request' if i.type == 8 else 'reply'} id {i.id} seq {i.seq}"


def _from_capture(pkt) -> dict:
    ip, udp = pkt[IP], pkt[UDP]
    data = bytes(udp.payload)
    inner = Ether(data[8:])
    d = {"dir": "tx" if ip.src == U2 else "rx", "summary": _summary(inner),
         "inner": {"src": inner.src, "dst": inner.dst, "ethertype": inner.type,
                   "len": len(data) - 8},
         "src": ip.src, "sport": udp.sport, "dport": udp.dport,
         "vni": int.from_bytes(data[4:7], "big"), "tos": ip.tos, "len": ip.len}
    if d["dir"] == "tx":
        d.update(dst=ip.dst, ttl=ip.ttl)
    return d


def _from_trace(r: dict) -> dict:
    o = r["outer"]
    d = {"dir": r["dir"], "summary": r["summary"], "inner": r["inner"],
         "src": o.get("src"), "sport": o["sport"], "dport": o["dport"], "vni": o["vni"],
         "tos": o["tos"], "len": o["len"]}
    if r["dir"] == "tx":
        d.update(dst=o["dst"], ttl=o["ttl"])
    return d


def _between(items: list, is_start, is_stop) -> list:
    start = next(i for i, x in enumerate(items) if is_start(x))
    stop_at = next(i for i, x in enumerate(items) if is_stop(x))
    return items[start + 1:stop_at]


def test_trace_matches_the_underlay_capture(topo, dataplane):
    h1 = topo.host("h1", f"{U1}/24")
    h2 = topo.host("h2", f"{U2}/24")
    for h in (h1, h2):      # no IPv6 chatter (MLD, RS) that would teach the VTEPs early
        h.sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1")
    kernel_vtep(h1, remote=U2, local=U1, address=f"{IP1}/24")
    vx = h2.vxtun("--vni", "42", "--remote", U1, "--local", U2, "--dev", "eth0",
                  "--dstport", "4789", "--address", f"{IP2}/24", env=dataplane)
    with Tcpdump(topo, "udp port 4789") as cap:
        tr = Trace(h2, dataplane)
        # a second tracer, in text, of drops only: the filter applies in the VTEP
        drops = h2.popen(python("-m", "vxtun", "trace", "drops"), env=dataplane,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # the tracer is attached once it shows a marker
            deadline = time.time() + 20
            while tr.marker(HELLO) is None:
                assert time.time() < deadline, f"vxtun trace showed nothing: {tr.p.stderr}"
                send_udp(h1, U2, 4789, [_marker(HELLO)])
                time.sleep(0.2)
            send_udp(h1, U2, 4789, [_marker(START)])
            ping(h2, IP1, count=2)          # ARP through the default entry, then ICMP
            ping(h1, IP2, count=1)          # the kernel's ARP and echo, vxtun's replies
            send_udp(h1, U2, 4789, [_marker(STOP)])
            deadline = time.time() + 10
            while tr.marker(STOP) is None and time.time() < deadline:
                time.sleep(0.1)
        finally:
            stop(tr.p)
            _, text, _ = stop(drops)
    pkts = [p for p in cap.packets() if UDP in p and IP in p]

    def vni_is(p, vni):
        return bytes(p[UDP].payload)[4:7] == vni.to_bytes(3, "big")

    captured = [_from_capture(p) for p in
                _between(pkts, lambda p: vni_is(p, START), lambda p: vni_is(p, STOP))]
    traced = [_from_trace(r) for r in
              _between(tr.records, lambda r: r.get("outer", {}).get("vni") == START,
                       lambda r: r.get("outer", {}).get("vni") == STOP)]
    for direction in ("tx", "rx"):
        want = [c for c in captured if c["dir"] == direction]
        got = [t for t in traced if t["dir"] == direction]
        assert got == want, f"{direction}: trace\n{got}\ncapture\n{want}"
    # what a reader of the walk needs: the ARP left through the default entry, the reply
    # taught vxtun the kernel's MAC, and the echo went unicast through that entry
    records = _between(tr.records, lambda r: r.get("outer", {}).get("vni") == START,
                       lambda r: r.get("outer", {}).get("vni") == STOP)
    first = records[0]
    assert (first["dir"], first["summary"]) == ("tx", f"ARP who-has {IP1} tell {IP2}")
    assert first["lookup"] == f"fdb miss, default 00:00:00:00:00:00 dst {U1}"
    learned = [r for r in records if r.get("changes")]
    assert learned and learned[0]["changes"][0]["change"] == "learned"
    assert learned[0]["changes"][0]["dst"] == U1
    echo = next(r for r in records if r["summary"].startswith("ICMP echo request")
                and r["dir"] == "tx")
    assert echo["fdb"]["hit"] and echo["action"] == "sent"
    assert all(r["segments"] == 1 for r in records)
    assert len([c for c in captured if c["dir"] == "tx"]) >= 4
    # the text tracer saw the markers that came after it attached, and nothing else
    lines = text.splitlines()
    assert lines and all("dropped: vni_not_found" in ln for ln in lines), text
    assert any(ln.split()[1:5] == ["rx", "dev", "vxtun0", "ARP"] for ln in lines), text
    assert "from 192.0.2.1:" in lines[-1] and "vni 97" in lines[-1], text
    stop(vx)
