"""One line that says what an inner frame is, in tcpdump's words.

``summarize(head, length)`` reads the first bytes of an Ethernet frame (``HEAD`` of them are
all it needs: the C fast path copies no more into its trace ring) and the frame's whole length,
and returns, for example:

* ``ARP who-has 10.20.1.3 tell 10.20.1.2``, ``ARP reply 10.20.1.3 is-at b2:...``
* ``ICMP echo request id 7 seq 1``, ``ICMPv6 echo reply id 7 seq 1``
* ``TCP 10.20.1.2:41234 > 10.20.1.3:5201 [P.] len 1398`` (tcpdump's flag letters; ``len`` is
  the TCP payload, from the IP header's length, so the padding of a short frame is not
  counted and a TSO super-frame reports all of its payload)
* ``UDP 10.20.1.2:5353 > 10.20.1.3:53 len 20``
* ``ND NS for 2001:db8::3``, ``ND NA for 2001:db8::3``, ``ND RS`` / ``ND RA``
* ``802.1Q vlan 10`` before what the tag carries, ``IPv4 ... proto 47``, ``ethertype 0x88cc``

``addresses(head)`` gives the IP addresses a frame names (IP source and destination, ARP
sender and target, the ND target), for ``vxtun trace ip IP``.  No scapy here: the tests use it
as the oracle (tests/unit/test_trace_summary.py).
"""
from __future__ import annotations

import ipaddress

from ..wire.ether import ETH_HLEN, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, mac_to_str

HEAD = 96       # bytes of the inner frame a trace record keeps (vxtun/fastpath/trace.pxd)

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
_ICMP4 = {0: "echo reply", 8: "echo request", 3: "unreachable", 11: "time exceeded"}
_ICMP6 = {128: "echo request", 129: "echo reply", 1: "unreachable", 3: "time exceeded",
          2: "packet too big"}
_ND = {133: "RS", 134: "RA", 135: "NS", 136: "NA", 137: "redirect"}
# tcpdump's order and letters (print-tcp.c, tcp_flag_values); ACK alone is "."
_TCP_FLAGS = ((0x02, "S"), (0x01, "F"), (0x08, "P"), (0x04, "R"), (0x20, "U"), (0x40, "E"),
              (0x80, "W"))


def _be16(b: bytes, off: int) -> int:
    return (b[off] << 8) | b[off + 1]


def _ip4(b: bytes) -> str:
    return str(ipaddress.IPv4Address(bytes(b)))


def _ip6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(bytes(b)))


def _l3(head: bytes) -> tuple[int, int]:
    """The Ethernet type after any 802.1Q tags, and where its header starts."""
    off = ETH_HLEN
    etype = _be16(head, 12)
    while etype == ETH_P_8021Q and len(head) >= off + 4:
        etype = _be16(head, off + 2)
        off += 4
    return etype, off


def tcp_flags(flags: int) -> str:
    """``[S]``, ``[S.]``, ``[P.]``, ``[F.]``, ``[.]`` as tcpdump prints them."""
    s = "".join(ch for bit, ch in _TCP_FLAGS if flags & bit)
    if flags & 0x10:
        s += "."
    return s or "none"


def _ports(proto: str, src: str, dst: str, l4: bytes, payload: int | None, v6: bool) -> str:
    if len(l4) < 4:
        return f"{proto} {src} > {dst} (truncated)"
    a, b = (f"[{src}]", f"[{dst}]") if v6 else (src, dst)
    text = f"{proto} {a}:{_be16(l4, 0)} > {b}:{_be16(l4, 2)}"
    if proto == "TCP":
        if len(l4) < 14:
            return text + " (truncated)"
        text += f" [{tcp_flags(l4[13])}]"
        if payload is not None:
            payload -= (l4[12] >> 4) * 4
    elif payload is not None:
        payload -= 8
    if payload is not None:
        text += f" len {max(payload, 0)}"
    return text


def _icmp(name: str, kinds: dict, l4: bytes) -> str:
    if len(l4) < 2:
        return f"{name} (truncated)"
    kind = kinds.get(l4[0])
    if kind is None:
        return f"{name} type {l4[0]} code {l4[1]}"
    if kind.startswith("echo") and len(l4) >= 8:
        return f"{name} {kind} id {_be16(l4, 4)} seq {_be16(l4, 6)}"
    return f"{name} {kind}"


def _ipv4(p: bytes, length: int) -> str:
    if len(p) < 20 or p[0] >> 4 != 4:
        return "IPv4 (truncated)"
    ihl = (p[0] & 15) * 4
    total = _be16(p, 2) or length       # 0 in a super-frame past 64 KB: the frame says
    src, dst, proto = _ip4(p[12:16]), _ip4(p[16:20]), p[9]
    l4 = p[ihl:]
    if _be16(p, 6) & 0x1fff:            # a later fragment: no transport header
        return f"IPv4 {src} > {dst} fragment proto {proto}"
    if proto == IPPROTO_ICMP:
        return _icmp("ICMP", _ICMP4, l4)
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        return _ports("TCP" if proto == IPPROTO_TCP else "UDP", src, dst, l4, total - ihl,
                      False)
    return f"IPv4 {src} > {dst} proto {proto} len {total}"


def _ipv6(p: bytes, length: int) -> str:
    if len(p) < 40 or p[0] >> 4 != 6:
        return "IPv6 (truncated)"
    plen = _be16(p, 4) or max(length - 40, 0)
    src, dst, nxt = _ip6(p[8:24]), _ip6(p[24:40]), p[6]
    l4 = p[40:]
    if nxt == IPPROTO_ICMPV6:
        if len(l4) >= 1 and l4[0] in _ND:
            kind = _ND[l4[0]]
            if kind in ("NS", "NA") and len(l4) >= 24:
                return f"ND {kind} for {_ip6(l4[8:24])}"
            return f"ND {kind}"
        return _icmp("ICMPv6", _ICMP6, l4)
    if nxt in (IPPROTO_TCP, IPPROTO_UDP):
        return _ports("TCP" if nxt == IPPROTO_TCP else "UDP", src, dst, l4, plen, True)
    return f"IPv6 {src} > {dst} next-header {nxt} len {plen}"


def _arp(p: bytes) -> str:
    # Ethernet/IPv4 ARP only (htype 1, ptype 0x0800, hlen 6, plen 4), as arp_reduce() reads
    if len(p) < 28 or _be16(p, 0) != 1 or _be16(p, 2) != ETH_P_IP or p[4] != 6 or p[5] != 4:
        return "ARP (not Ethernet/IPv4)" if len(p) >= 8 else "ARP (truncated)"
    op, sha, spa, tpa = _be16(p, 6), p[8:14], _ip4(p[14:18]), _ip4(p[24:28])
    if op == 1:
        return f"ARP who-has {tpa} tell {spa}"
    if op == 2:
        return f"ARP reply {spa} is-at {mac_to_str(sha)}"
    return f"ARP op {op} {spa} > {tpa}"


def summarize(head: bytes, length: int | None = None) -> str:
    """What the frame whose first bytes are ``head`` (and whose length is ``length``) is."""
    if length is None:
        length = len(head)
    if len(head) < ETH_HLEN:
        return f"truncated frame len {length}"
    etype, off = _l3(head)
    vlan = ""
    if off > ETH_HLEN:
        vlan = " ".join(f"802.1Q vlan {_be16(head, o) & 0xfff}"
                        for o in range(ETH_HLEN, off, 4)) + " "
    p = head[off:]
    if etype == ETH_P_ARP:
        text = _arp(p)
    elif etype == ETH_P_IP:
        text = _ipv4(p, length - off)
    elif etype == ETH_P_IPV6:
        text = _ipv6(p, length - off)
    else:
        text = f"ethertype 0x{etype:04x} len {length}"
    return vlan + text


def addresses(head: bytes) -> set[str]:
    """The IP addresses a frame names, as canonical text (for ``vxtun trace ip IP``)."""
    if len(head) < ETH_HLEN:
        return set()
    etype, off = _l3(head)
    p = head[off:]
    if etype == ETH_P_ARP and len(p) >= 28 and _be16(p, 2) == ETH_P_IP:
        return {_ip4(p[14:18]), _ip4(p[24:28])}
    if etype == ETH_P_IP and len(p) >= 20:
        return {_ip4(p[12:16]), _ip4(p[16:20])}
    if etype == ETH_P_IPV6 and len(p) >= 40:
        out = {_ip6(p[8:24]), _ip6(p[24:40])}
        if p[6] == IPPROTO_ICMPV6 and len(p) >= 64 and p[40] in (135, 136, 137):
            out.add(_ip6(p[48:64]))
        return out
    return set()
