"""IP addresses, parsed in one place.

Every address that enters vxtun (a CLI word, a JSON request, a config file, a table line) goes
through ``canonical_ip`` once: it is refused with a message that names what it was meant to be
(``invalid dst address '300.1.1.1'``) or kept in its canonical text form, so that
``2001:DB8:0::1`` and ``2001:db8::1`` are one key of the FDB and of the neighbour table.  The
family comes from the parsed address (``ip_version``), never from the look of the text.
"""
from __future__ import annotations

import ipaddress
import socket

from ..errors import LocalError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str, what: str = "IP", error: type[LocalError] = LocalError) -> IPAddress:
    """The address ``text`` names; ``error`` ("invalid WHAT address 'TEXT'") if it names none."""
    if isinstance(text, str):
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            pass
    raise error(f"invalid {what} address {_shown(text)}")


def canonical_ip(text: str, what: str = "IP", error: type[LocalError] = LocalError) -> str:
    """``text`` in canonical form (lower case, zeros compressed), or ``error``."""
    return str(parse_ip(text, what, error))


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def ip_version(text: str) -> int:
    """4 or 6."""
    return parse_ip(text).version


def socket_family(text: str) -> int:
    """``AF_INET`` or ``AF_INET6``: the socket family that reaches ``text``."""
    return socket.AF_INET6 if ip_version(text) == 6 else socket.AF_INET


def ip_to_bytes(text: str) -> bytes:
    """The packed (network order) form: 4 or 16 bytes."""
    return parse_ip(text).packed


def ip_from_bytes(raw: bytes) -> str:
    """The canonical text of a packed 4- or 16-byte address."""
    return str(ipaddress.ip_address(bytes(raw)))


def ip_sort_key(text: str) -> tuple[int, int]:
    """IPv4 before IPv6, then by address (the order ``ip neigh show`` lists them in)."""
    a = parse_ip(text)
    return a.version, int(a)


def _shown(value) -> str:
    # A request may carry anything where an address belongs: show a short, flat form of it
    # (the repr of a deeply nested list would itself fail, and a long string floods the log).
    if isinstance(value, str):
        return repr(value if len(value) <= 64 else value[:64] + "...")
    return f"of type {type(value).__name__}"
