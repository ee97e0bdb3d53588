"""Ethernet and address helpers shared by the core, the CLI and the tests."""
from __future__ import annotations

import ipaddress
import re
import socket

from ..errors import LocalError

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100

ZERO_MAC = b"\x00" * 6
BROADCAST_MAC = b"\xff" * 6

_MAC_RE = re.compile(r"^[0-9a-fA-F]{1,2}(:[0-9a-fA-F]{1,2}){5}$")


def mac_to_str(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def mac_from_str(text: str) -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff`` (as ``bridge fdb`` does); raise LocalError otherwise."""
    if not _MAC_RE.match(text):
        raise LocalError(f"invalid MAC address {text!r}: expected six colon-separated hex octets")
    return bytes(int(p, 16) for p in text.split(":"))


def is_multicast_mac(mac: bytes) -> bool:
    """The group bit (I/G) of the first octet; covers broadcast too."""
    return bool(mac[0] & 1)


def is_zero_mac(mac: bytes) -> bool:
    return mac == ZERO_MAC


def is_valid_unicast_mac(mac: bytes) -> bool:
    """Like the kernel's is_valid_ether_addr(): not multicast and not all zeros."""
    return not is_multicast_mac(mac) and mac != ZERO_MAC


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise LocalError(f"invalid IP address {text!r}") from None


def ip_family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def ip_to_bytes(addr: str) -> bytes:
    return parse_ip(addr).packed


def ip_from_bytes(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def normalize_ip(addr: str) -> str:
    """Canonical text form (so '2001:db8::0001' and '2001:db8::1' are one key)."""
    return str(parse_ip(addr))
