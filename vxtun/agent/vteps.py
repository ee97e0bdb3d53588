"""Thin adapters from the reconciler's commands to the two kinds of VTEP.

* ``KernelVtep``: a kernel vxlan device, through rtnetlink (pyroute2): RTM_NEWNEIGH /
  RTM_DELNEIGH with NTF_SELF on the device for the FDB (what ``bridge fdb ... self`` sends;
  without NTF_SELF the kernel refuses ``replace`` with EOPNOTSUPP), AF_INET/AF_INET6 neighbours
  for ``ip neigh``.  L3/L2 misses arrive as RTM_GETNEIGH notifications on RTNLGRP_NEIGH
  (vxlan_fdb_miss / vxlan_ip_miss call vxlan_fdb_notify with RTM_GETNEIGH).
* ``VxtunVtep``: a running vxtun VTEP, through ``vxtun.api.Controller`` (its control socket).

Each has ``info()`` (a ``LocalVtep``), ``read()`` (the ``VtepState`` the agent owns on it) and
``run(cmds)``.
"""
from __future__ import annotations

import socket
import struct

from ..errors import VxtunError
from .reconcile import ZERO_MAC, Command, Fdb, LocalVtep, VtepState

NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTM_GETNEIGH = 30
NETLINK_ROUTE = 0
RTMGRP_NEIGH = 0x4


def local_endpoints(ifname: str) -> list[tuple[str, tuple[str, ...]]]:
    """The endpoints behind a VTEP device of this host (a kernel vxlan device or vxtun's TAP,
    both netdevs here), as (MAC, IPs):

    * on a bridge (``master br0``): every MAC the bridge learned on its other ports (not
      permanent: the bridge's own and static entries are left out), with the IPs the bridge's
      neighbour table holds for it, and the bridge itself if it has addresses;
    * on its own: the device's MAC and its addresses (the TAP side of a vxtun VTEP).
    """
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise VtepGone(f"no device {ifname}")
        link = ipr.get_links(idx[0])[0]
        master = link.get_attr("IFLA_MASTER")
        holder = master or idx[0]
        own = ipr.get_links(holder)[0].get_attr("IFLA_ADDRESS")
        addrs = tuple(sorted(a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=holder)
                             if a["scope"] == 0))
        out: dict[str, set[str]] = {}
        if addrs:
            out[own] = set(addrs)
        if master:
            for m in ipr.fdb("dump"):
                if m.get_attr("NDA_MASTER") != master or m["ifindex"] in (idx[0], master) \
                        or m["state"] & NUD_PERMANENT or m.get_attr("NDA_VLAN"):
                    continue
                mac = m.get_attr("NDA_LLADDR")
                if mac and not int(mac[:2], 16) & 1:
                    out.setdefault(mac, set())
        for m in ipr.neigh("dump", ifindex=holder):
            mac = m.get_attr("NDA_LLADDR")
            if m["family"] in (socket.AF_INET, socket.AF_INET6) and mac in out \
                    and m["state"] & (NUD_PERMANENT | NUD_REACHABLE | NUD_STALE):
                out[mac].add(m.get_attr("NDA_DST"))
    return [(mac, tuple(sorted(ips))) for mac, ips in sorted(out.items())]


class VtepGone(VxtunError):
    """The VTEP an agent programs is not there (deleted, or not yet created)."""


class KernelVtep:
    kind = "kernel"

    def __init__(self, name: str) -> None:
        from pyroute2 import IPRoute
        self.name = name
        self.ipr = IPRoute()
        self._miss = None

    def _index(self) -> int:
        idx = self.ipr.link_lookup(ifname=self.name)
        if not idx:
            raise VtepGone(f"no device {self.name}")
        return idx[0]

    def info(self) -> LocalVtep:
        link = self.ipr.get_links(self._index())[0]
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            raise VtepGone(f"{self.name} is not a vxlan device")
        data = info.get_attr("IFLA_INFO_DATA")
        local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6")
        if not local:
            raise VtepGone(f"{self.name} has no local address (ip link add ... local IP)")
        return LocalVtep(self.name, int(data.get_attr("IFLA_VXLAN_ID")), local,
                         int(data.get_attr("IFLA_VXLAN_PORT") or 8472), "kernel")

    def read(self) -> VtepState:
        idx = self._index()
        s = VtepState()
        for m in self.ipr.fdb("dump", ifindex=idx):
            dst = m.get_attr("NDA_DST")
            if m["ifindex"] != idx or not dst or not m["state"] & NUD_PERMANENT:
                continue
            mac = m.get_attr("NDA_LLADDR")
            if mac == ZERO_MAC:
                s.flood.add(dst)
            else:
                s.fdb[mac] = s.fdb.get(mac, ()) + (dst,)
        for m in self.ipr.neigh("dump", ifindex=idx):
            if m["family"] in (socket.AF_INET, socket.AF_INET6) and m["ifindex"] == idx \
                    and m["state"] & NUD_PERMANENT and m.get_attr("NDA_LLADDR"):
                s.neigh[m.get_attr("NDA_DST")] = m.get_attr("NDA_LLADDR")
        return s

    def run(self, cmds: list[Command]) -> None:
        idx = self._index()
        for c in cmds:
            if isinstance(c, Fdb):
                kw = {"dst": c.dst} if c.dst else {}
                self.ipr.fdb(c.op, ifindex=idx, lladdr=c.mac, state=NUD_PERMANENT,
                             flags=NTF_SELF, **kw)
            elif c.op == "del":
                self.ipr.neigh("del", dst=c.ip, ifindex=idx)
            else:
                self.ipr.neigh("replace", dst=c.ip, lladdr=c.lladdr, ifindex=idx,
                               state=NUD_PERMANENT)

    # --- misses (on-miss mode) -----------------------------------------------------------------

    def miss_fd(self) -> int:
        """A netlink socket on RTNLGRP_NEIGH, where vxlan_fdb_notify sends the misses."""
        if self._miss is None:
            self._miss = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                       NETLINK_ROUTE)
            self._miss.bind((0, RTMGRP_NEIGH))
            self._miss.setblocking(False)
        return self._miss.fileno()

    def misses(self) -> list[tuple[str, str]]:
        """The misses waiting: ("l3", IP) and ("l2", MAC) of this device.

        vxlan_ip_miss and vxlan_fdb_miss both send RTM_GETNEIGH, an AF_BRIDGE ndmsg built by
        vxlan_fdb_info: an L3 miss carries the IP in NDA_DST (and an all-zeros NDA_LLADDR),
        an L2 miss only the MAC in NDA_LLADDR (NDA_DST is left out for the any address)."""
        from pyroute2.netlink.rtnl.ndmsg import ndmsg
        self.miss_fd()
        idx = self._index()
        out = []
        while True:
            try:
                data = self._miss.recv(65536)
            except BlockingIOError:
                return out
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if length < 16:
                    break
                if kind == RTM_GETNEIGH:
                    m = ndmsg(data[off:off + length])
                    m.decode()
                    if m["ifindex"] == idx:
                        dst, mac = m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")
                        if dst:
                            out.append(("l3", dst))
                        elif mac:
                            out.append(("l2", mac))
                off += (length + 3) & ~3

    def close(self) -> None:
        self.ipr.close()
        if self._miss is not None:
            self._miss.close()


class VxtunVtep:
    kind = "vxtun"

    def __init__(self, name: str) -> None:
        from ..api import Controller
        self.name = name
        self.ctl = Controller(name)
        self._events = None

    def info(self) -> LocalVtep:
        try:
            d = self.ctl.show()
        except VxtunError as e:
            raise VtepGone(f"{self.name}: {e}") from e
        if not d.get("local"):
            raise VtepGone(f"{self.name} has no local address (vxtun up --local IP)")
        return LocalVtep(self.name, int(d["vni"]), d["local"], int(d.get("dstport") or 4789),
                         "vxtun")

    def read(self) -> VtepState:
        s = VtepState()
        for e in self.ctl.fdb_show():
            if e.get("state") != "permanent":
                continue
            dsts = tuple(r["dst"] for r in e.get("remotes", []) if r.get("dst"))
            if e["mac"] == ZERO_MAC:
                s.flood.update(dsts)
            elif dsts:
                s.fdb[e["mac"]] = dsts
        for e in self.ctl.neigh_show():
            if "PERMANENT" in e.get("state", []) and e.get("lladdr"):
                s.neigh[e["dst"]] = e["lladdr"]
        return s

    def run(self, cmds: list[Command]) -> None:
        for c in cmds:
            if isinstance(c, Fdb):
                if c.op == "del":
                    self.ctl.fdb_del(c.mac, c.dst)
                else:
                    getattr(self.ctl, f"fdb_{c.op}")(c.mac, c.dst)
            elif c.op == "del":
                self.ctl.neigh_del(c.ip)
            else:
                self.ctl.neigh_replace(c.ip, c.lladdr or "", nud="permanent")

    def miss_fd(self) -> int:
        if self._events is None:
            self._events = self.ctl.subscribe()
        return self._events.fileno()

    def misses(self) -> list[tuple[str, str]]:
        from ..api import L2Miss, L3Miss
        from ..wire.ether import mac_to_str
        out = []
        while True:
            ev = self._events.next(0.005)      # a timeout of 0 would not even look
            if ev is None:
                return out
            if isinstance(ev, L3Miss):
                out.append(("l3", ev.ip))
            elif isinstance(ev, L2Miss):
                out.append(("l2", mac_to_str(ev.mac)))

    def close(self) -> None:
        if self._events is not None:
            self._events.close()


def open_vtep(name: str):
    """A kernel vxlan device of that name if there is one, else a running vxtun VTEP."""
    import os
    if os.path.exists(f"/sys/class/net/{name}/tun_flags"):
        return VxtunVtep(name)
    from ..api import running
    if name in running():
        return VxtunVtep(name)
    return KernelVtep(name)
