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
    if pro != ETH_P_IP or hln != 6 or pln != 4 or op != ARPOP_REQUEST or hrd != 1:
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
    src_mac: bytes
    saddr: bytes
    target: str
    target_raw: bytes


def parse_ns(frame: bytes) -> NsRequest | None:
    """A Neighbour Solicitation (RFC 4861 4.3) that neigh_reduce() would consider, else None."""
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
    return NsRequest(bytes(frame[6:12]), bytes(frame[ip6 + 8:ip6 + 24]), str(target), traw)


def na_reply(request: bytes, ns: NsRequest, lladdr: bytes, router: bool = False) -> bytes:
    """A Neighbour Advertisement (RFC 4861 4.4) as vxlan_na_create() builds it: solicited and
    override set, hop limit 255, the target link-layer address option carrying ``lladdr``."""
    flags = 0x60000000 | (0x80000000 if router else 0)
    body = struct.pack("!BBHI", 136, 0, 0, flags) + ns.target_raw + b"\x02\x01" + lladdr
    src = ns.target_raw
    dst = ns.saddr
    if dst == bytes(16):           # an NS from the unspecified address (DAD): answer all-nodes
        dst = ipaddress.IPv6Address("ff02::1").packed
    s = csum_add(src + dst, len(body) + 58)
    s = csum_add(body, s)
    c = fold_complement(s)
    body = body[:2] + struct.pack("!H", c) + body[4:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + src + dst
    eth = ns.src_mac + lladdr + struct.pack("!H", ETH_P_IPV6)
    return eth + ip6 + body
