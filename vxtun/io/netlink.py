"""Netlink through pyroute2: look up the underlay device, configure the TAP.

All calls act on the current network namespace (the one vxtun runs in).
"""
from __future__ import annotations

import socket
import struct

from pyroute2 import IPRoute

from ..errors import LocalError
from ..wire.addr import ip_version
from .rtnl import NLMSG, attributes, messages


def _attr(msg, name):
    return msg.get_attr(name)


class Netlink:
    def __init__(self) -> None:
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def index(self, ifname: str) -> int:
        idx = self.ipr.link_lookup(ifname=ifname)
        if not idx:
            raise LocalError(f"device {ifname!r} does not exist")
        return idx[0]

    def name(self, index: int) -> str | None:
        """The name of link ``index``, or None if there is none."""
        try:
            link = self.ipr.get_links(index)[0]
        except Exception:           # pyroute2's NetlinkError (ENODEV), or an empty answer
            return None
        name = _attr(link, "IFLA_IFNAME")
        return str(name) if name else None

    def exists(self, ifname: str) -> bool:
        return bool(self.ipr.link_lookup(ifname=ifname))

    def mtu(self, ifname: str) -> int:
        link = self.ipr.get_links(self.index(ifname))[0]
        return int(_attr(link, "IFLA_MTU"))

    def mac(self, ifname: str) -> bytes:
        link = self.ipr.get_links(self.index(ifname))[0]
        return bytes(int(x, 16) for x in _attr(link, "IFLA_ADDRESS").split(":"))

    def set_mac(self, ifname: str, mac: str) -> None:
        self.ipr.link("set", index=self.index(ifname), address=mac)

    def configure(self, ifname: str, mtu: int, addresses: list[str], master: str | None) -> None:
        idx = self.index(ifname)
        self.ipr.link("set", index=idx, mtu=mtu)
        for a in addresses:
            ip, _, plen = a.partition("/")
            if not plen:
                plen = "128" if ip_version(ip) == 6 else "32"
            try:
                self.ipr.addr("add", index=idx, address=ip, prefixlen=int(plen))
            except Exception as e:  # NetlinkError
                raise LocalError(f"cannot add address {a} to {ifname}: {e}") from None
        if master:
            self.ipr.link("set", index=idx, master=self.index(master))
        self.ipr.link("set", index=idx, state="up")

    def local_addresses(self) -> set[str]:
        return local_addresses()

    def route_dev(self, dst: str) -> str | None:
        """The device the kernel would use to reach ``dst`` (for the MTU when --dev is absent)."""
        try:
            r = self.ipr.route("get", dst=dst)[0]
        except Exception:
            return None
        oif = _attr(r, "RTA_OIF")
        if oif is None:
            return None
        link = self.ipr.get_links(oif)[0]
        return _attr(link, "IFLA_IFNAME")

    def tx_dropped(self, ifname: str) -> int | None:
        """The device's tx_dropped (IFLA_STATS64); None if it cannot be read."""
        try:
            link = self.ipr.link("get", ifname=ifname)[0]
            return int(_attr(link, "IFLA_STATS64")["tx_dropped"])
        except Exception:           # NetlinkError, or no stats attribute
            return None


# --- the namespace's addresses, asked once a tick ---------------------------------------
# A plain RTM_GETADDR dump rather than IPRoute.get_addr(): the node asks every second for
# the life of the VTEP, and each pyroute2 call kept about 1 KB (bench.soak's RSS slope).
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS = 1
_IFADDR = struct.Struct("=BBBBI")       # ifaddrmsg: family, prefixlen, flags, scope, index


def addresses_of(data: bytes, out: set[str]) -> bool:
    """Add the IFA_ADDRESS of every RTM_NEWADDR in ``data`` (one recv of a dump) to ``out``;
    True at NLMSG_DONE. An NLMSG_ERROR raises OSError with its errno."""
    for kind, body, end in messages(data):
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR and end - body >= 4:
            err = -struct.unpack_from("=i", data, body)[0]
            if err:
                raise OSError(err, f"RTM_GETADDR: {err}")
        elif kind == RTM_NEWADDR and end - body >= _IFADDR.size:
            family = _IFADDR.unpack_from(data, body)[0]
            size = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
            for atype, value in attributes(data, body + _IFADDR.size, end):
                if atype == IFA_ADDRESS and len(value) == size:
                    out.add(socket.inet_ntop(family, value))
    return False


def local_addresses() -> set[str]:
    """Every address of the current namespace (IFA_ADDRESS of each RTM_NEWADDR)."""
    out: set[str] = set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
        s.bind((0, 0))
        s.settimeout(2.0)
        body = _IFADDR.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        s.send(NLMSG.pack(NLMSG.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                           1, 0) + body)
        while not addresses_of(s.recv(65536), out):
            pass
    return out
