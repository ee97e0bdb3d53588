"""Netlink through pyroute2: look up the underlay device, configure the TAP.

All calls act on the current network namespace (the one vxtun runs in).
"""
from __future__ import annotations

from pyroute2 import IPRoute

from ..errors import LocalError
from ..wire.addr import ip_version


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
        out = set()
        for m in self.ipr.get_addr():
            a = _attr(m, "IFA_ADDRESS")
            if a:
                out.add(a)
        return out

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
