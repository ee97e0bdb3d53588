"""Build the answers of the proxy: an ARP reply (arp_create as called by arp_reduce) and an
IPv6 Neighbour Advertisement (vxlan_na_create), from a request frame and the known MAC."""
from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from ..wire.ether import ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6
from ..wire.offload import csum_add, fold_complement

ARPOP_REQUEST = 1
ARPOP_REPLY = 2


def parse_arp_request(frame: bytes):
    """(sender MAC, sender IP, target IP) of an Ethernet/IPv4 ARP request, else None.

    arp_reduce() ignores (and drops) anything else: other opcodes, other address sizes, and
    requests for loopback or multicast targets.
    """
    if len(frame) < ETH_HLEN + 28:
        return None
    hrd, pro, hln, pln, op = struct.unpack_from("!HHBBH", frame, ETH_HLEN)
    # ar_hrd may be ARPHRD_ETHER (1) or ARPHRD_IEEE802 (6), as arp_reduce() accepts both.
    if pro != ETH_P_IP or hln != 6 or pln != 4 or op != ARPOP_REQUEST or hrd not in (1, 6):
        return None
    a = ETH_HLEN + 8
    sha = bytes(frame[a:a + 6])
    sip = str(ipaddress.IPv4Address(bytes(frame[a + 6:a + 10])))
    tip_a = ipaddress.IPv4Address(bytes(frame[a + 16:a + 20]))
    if tip_a.is_loopback or tip_a.is_multicast:
        return None
    return sha, sip, str(tip_a)


def arp_reply(request: bytes, lladdr: bytes) -> bytes:
    """The reply the owner of the target IP would send: from ``lladdr`` to the requester."""
    a = ETH_HLEN + 8
    sha = request[a:a + 6]
    spa = request[a + 6:a + 10]
    tpa = request[a + 16:a + 20]
    eth = bytes(sha) + lladdr + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, ARPOP_REPLY) + lladdr + bytes(tpa) + \
        bytes(sha) + bytes(spa)
    return eth + arp


class NsRequest(NamedTuple):
    src_mac: bytes          # Ethernet source of the solicitation
    saddr: bytes            # IPv6 source (the NA goes back to it, even when it is ::)
    target: str             # canonical text form, the neighbour table's key
    target_raw: bytes
    priority: int           # the top 4 bits of the traffic class, copied into the NA
    reply_mac: bytes | None  # the NA's Ethernet destination; None: malformed options, no NA


ND_OPT_SOURCE_LL_ADDR = 1
ND_OPT_TARGET_LL_ADDR = 2


def _reply_mac(frame: bytes, opts: int) -> bytes | None:
    """vxlan_na_create(): the Source Link-Layer Address option if the NS carries one, else the
    Ethernet source; an option of length 0 makes the whole NS unanswerable (None).  The options
    run to the end of the frame, as the kernel measures them from the skb length."""
    n = len(frame) - opts
    i = 0
    while i < n - 1:
        olen = frame[opts + i + 1]
        if not olen:
            return None
        if frame[opts + i] == ND_OPT_SOURCE_LL_ADDR:
            return bytes(frame[opts + i + 2:opts + i + 8]).ljust(6, b"\0")
        i += olen << 3
    return bytes(frame[6:12])


def parse_ns(frame: bytes) -> NsRequest | None:
    """A Neighbour Solicitation (RFC 4861 4.3) that neigh_reduce() would consider, else None.

    The caller has checked the frame is IPv6 + ICMPv6 type 135 code 0 with no extension
    headers (vxlan_xmit); neigh_reduce() then ignores (and drops) an NS sent to loopback or for
    a multicast target.
    """
    if len(frame) < ETH_HLEN + 40 + 24:
        return None
    ip6 = ETH_HLEN
    daddr = ipaddress.IPv6Address(bytes(frame[ip6 + 24:ip6 + 40]))
    icmp = ip6 + 40
    if frame[icmp] != 135 or frame[icmp + 1] != 0:
        return None
    traw = bytes(frame[icmp + 8:icmp + 24])
    target = ipaddress.IPv6Address(traw)
    if daddr.is_loopback or target.is_multicast:
        return None
    return NsRequest(bytes(frame[6:12]), bytes(frame[ip6 + 8:ip6 + 24]), str(target), traw,
                     frame[ip6] & 0x0F, _reply_mac(frame, icmp + 24))


def na_reply(request: bytes, ns: NsRequest, lladdr: bytes, router: bool = False) -> bytes | None:
    """A Neighbour Advertisement (RFC 4861 4.4) byte for byte as vxlan_na_create() builds it:
    from the target address and ``lladdr`` to the solicitation's source, solicited and override
    set (router only for an FDB entry flagged as a router), hop limit 255, the NS's priority
    bits, flow label 0, and a Target Link-Layer Address option carrying ``lladdr``.

    Like the kernel, the NA goes to the NS's source address even when that is :: (a duplicate
    address detection probe): such an NA reaches nobody, so the proxy never makes a host's DAD
    fail.  None when the NS's options are malformed (the kernel sends nothing then).
    """
    if ns.reply_mac is None:
        return None
    flags = 0x60000000 | (0x80000000 if router else 0)
    body = struct.pack("!BBHI", 136, 0, 0, flags) + ns.target_raw + \
        bytes((ND_OPT_TARGET_LL_ADDR, 1)) + lladdr
    src = ns.target_raw
    dst = ns.saddr
    s = csum_add(src + dst, len(body) + 58)
    s = csum_add(body, s)
    c = fold_complement(s)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    ip6 = struct.pack("!BBHHBB", 0x60 | ns.priority, 0, 0, len(body), 58, 255) + src + dst
    eth = ns.reply_mac + lladdr + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + body
