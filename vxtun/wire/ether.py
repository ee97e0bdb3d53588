"""Ethernet helpers shared by the core, the CLI and the tests (IP addresses: ``wire/addr.py``)."""
from __future__ import annotations

import re

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
    if not isinstance(text, str) or not _MAC_RE.match(text):
        shown = repr(text[:64]) if isinstance(text, str) else f"of type {type(text).__name__}"
        raise LocalError(f"invalid MAC address {shown}: expected six colon-separated hex octets")
    return bytes(int(p, 16) for p in text.split(":"))


def is_multicast_mac(mac: bytes) -> bool:
    """The group bit (I/G) of the first octet; covers broadcast too."""
    return bool(mac[0] & 1)


def is_zero_mac(mac: bytes) -> bool:
    return mac == ZERO_MAC


def is_valid_unicast_mac(mac: bytes) -> bool:
    """Like the kernel's is_valid_ether_addr(): not multicast and not all zeros."""
    return not is_multicast_mac(mac) and mac != ZERO_MAC
