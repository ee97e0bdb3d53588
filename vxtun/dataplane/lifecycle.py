"""The VTEPs of one process and the underlay sockets they share: opening, adding, removing,
closing, and the multicast groups they joined.

Start-up opens everything that can fail *before* the TAP exists (the underlay device, the
sockets), so a bad invocation leaves nothing behind; the TAP itself is non-persistent and goes
away with the process (or with its fd, when one VTEP is removed).
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field, replace

from ..core import Demux, Vtep, VtepConfig
from ..core.requests import NeighUpdate
from ..core.vtep import Bypass, Deliver, Transmit
from ..errors import ControlError, LocalError
from ..io import control, tap, underlay
from ..io.netlink import Netlink
from ..wire.ether import mac_to_str
from ..wire.vxlan import OVERHEAD_V4, OVERHEAD_V6, port_range


@dataclass
class Underlay:
    """One UDP port on one family: a receive socket, a send socket, the VNIs it serves.

    Like the kernel's vxlan_sock, the receive socket is bound to the any address and shared by
    every VTEP on the port; ``groups`` counts the VTEPs that joined each (group, ifindex) on it.
    ``tx`` is the first VTEP's send socket, kept for backends that send per underlay; each
    Port has its own (TTL, multicast interface and source address are per VTEP).
    """
    family: int
    rx: socket.socket
    tx: socket.socket
    demux: Demux = field(default_factory=Demux)
    by_vni: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    zero_csum6_rx: bool = False       # udp6zerocsumrx: UDP_NO_CHECK6_RX on rx

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@dataclass(eq=False)
class Port:
    """One VTEP: its configuration, its core, its TAP and its control socket.  Compared by
    identity: a name can come back as another VTEP once this one is removed."""
    config: VtepConfig
    vtep: Vtep
    tap_fd: int
    underlay: Underlay
    listener: socket.socket
    tx: socket.socket | None = None     # this VTEP's send socket (its ttl, group, local)
    ifindex: int = 0                    # of --dev, where the group was joined
    lease: object = None                # who asked for it (vxtun.dataplane.owner)
    bypass: object = None               # Node.bypass: hands a Bypass to the local VTEP
    tx_df: socket.socket | None = None  # df inherit: a send socket that sets DF
    tap_queues: list = field(default_factory=list)  # the TAP's queues after tap_fd (queue 0)
    tap_index: int = 0                  # the TAP's ifindex: it follows a rename, the name not

    def execute(self, actions) -> None:
        """Carry out the core's actions: send datagrams, write frames to the TAP, hand
        bypassed frames to the local VTEP they are for."""
        for a in actions:
            if type(a) is Bypass:
                if self.bypass is None:
                    self.vtep.stats.drop("tx_error")
                else:
                    self.bypass(self, a)
            elif type(a) is Transmit:
                # DF is a socket's setting (IP_MTU_DISCOVER; no control message sets it), so
                # df inherit chooses between two sockets per datagram
                sock = self.tx_df if a.df and self.tx_df is not None else self.tx
                if not underlay.send_datagram(sock or self.underlay.tx, self.underlay.family,
                                              a.ip, a.sport, a.port, a.payload, a.tos,
                                              a.ttl, a.label):
                    self.vtep.stats.drop("tx_error")
            elif type(a) is Deliver:
                try:
                    os.write(self.tap_fd, a.vnet + a.frame)
                except OSError:
                    self.vtep.stats.drop("tap_error")

    def close(self) -> None:
        for sock in (self.listener, self.tx, self.tx_df):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        for fd in (self.tap_fd, *self.tap_queues):
            try:
                os.close(fd)
            except OSError:
                pass


def _family(cfg: VtepConfig) -> int:
    return socket.AF_INET6 if cfg.family == 6 else socket.AF_INET


class Vteps:
    """The open VTEPs (``by_name``) and underlays (``underlays``, by (family, port)).

    While the loop runs (``attached``), each VTEP and socket is handed to the backend as it
    comes and taken back before it goes."""

    def __init__(self, backend, nl: Netlink) -> None:
        self.backend = backend
        self.nl = nl
        self.by_name: dict[str, Port] = {}
        self.underlays: dict = {}
        self.attached = False

    def add(self, configs: list[VtepConfig], fdb: dict | None = None) -> list[Port]:
        """Open ``configs`` (all or none) beside the VTEPs already open.  ``fdb`` maps a device
        name to ``FdbUpdate`` entries to add before the first packet.  Raises
        LocalError and leaves nothing behind."""
        new_us: list = []
        joined: list = []
        ports: list[Port] = []
        try:
            self._check(configs)
            # Everything that can fail on the underlay, before any TAP exists.
            ifindexes = {}
            for cfg in configs:
                ifindex = ifindexes[cfg.name] = self.nl.index(cfg.dev) if cfg.dev else 0
                if cfg.mtu is None:
                    lower = cfg.dev or (self.nl.route_dev(cfg.remote) if cfg.remote else None)
                    base = self.nl.mtu(lower) if lower else 1500
                    cfg.mtu = base - (OVERHEAD_V6 if cfg.family == 6 else OVERHEAD_V4)
                if cfg.mtu < 68:
                    raise LocalError(f"MTU {cfg.mtu} is too small for a VTEP")
                key = (_family(cfg), cfg.dstport)
                if key not in self.underlays:
                    self.underlays[key] = self._open_underlay(cfg, ifindex)
                    new_us.append(key)
                us = self.underlays[key]
                # vxlan_find_sock() shares a socket only between devices whose receive flags
                # agree: another udp6zerocsumrx on the same port fails to bind, as here.
                if us.zero_csum6_rx != cfg.udp6zerocsumrx:
                    raise LocalError(f"{cfg.name}: udp6zerocsumrx differs from the VTEPs "
                                     f"already on port {cfg.dstport}, which share its socket")
                if cfg.group:
                    g = (cfg.group, ifindex)
                    if not us.groups.get(g):
                        self._join(us, cfg, ifindex)
                    us.groups[g] = us.groups.get(g, 0) + 1
                    joined.append((us, cfg, ifindex))
            for cfg in configs:
                us = self.underlays[(_family(cfg), cfg.dstport)]
                ports.append(self._open_port(cfg, us, ifindexes[cfg.name],
                                             (fdb or {}).get(cfg.name, ())))
        except BaseException:
            for port in ports:
                port.close()
            for us, cfg, ifindex in joined:
                self._leave(us, cfg.group, ifindex)
            for key in new_us:
                self.underlays.pop(key).close()
            raise
        for port in ports:
            self.by_name[port.config.name] = port
            port.underlay.demux.add(port.vtep)
            port.underlay.by_vni[port.config.vni] = port
        if self.attached:
            self._hand_over([self.underlays[key] for key in new_us], ports)
        return ports

    def local_vtep(self, family: int, port: int, vni: int) -> Port | None:
        """vxlan_find_vni(): the VTEP of this process serving ``vni`` on UDP ``port`` over IP
        ``family`` (4 or 6), if any."""
        us = self.underlays.get((socket.AF_INET6 if family == 6 else socket.AF_INET, port))
        return None if us is None else us.by_vni.get(vni)

    def serves(self, family: int, port: int) -> bool:
        """This process holds UDP ``port`` over IP ``family`` (4 or 6)."""
        return (socket.AF_INET6 if family == 6 else socket.AF_INET, port) in self.underlays

    def _check(self, configs: list[VtepConfig]) -> None:
        """Refuse what ``ip link add type vxlan`` would refuse beside the devices already here."""
        names = set(self.by_name)
        for cfg in configs:
            cfg.validate()
            if cfg.name in names:
                raise LocalError(f"device {cfg.name} already exists")
            names.add(cfg.name)
            if self.nl.exists(cfg.name):
                raise LocalError(f"device {cfg.name} already exists")
        # vxlan_vni_in_use(): one VNI per (family, port) in a namespace.
        vnis = {(p.config.family, p.config.dstport, p.config.vni): p.config.name
                for p in self.by_name.values()}
        for cfg in configs:
            key = (cfg.family, cfg.dstport, cfg.vni)
            if key in vnis:
                raise LocalError(f"VNI {cfg.vni} on port {cfg.dstport} is served twice "
                                 f"({vnis[key]} and {cfg.name}): a VNI is one overlay")
            vnis[key] = cfg.name

    def _open_underlay(self, cfg: VtepConfig, ifindex: int) -> Underlay:
        fam = _family(cfg)
        # Bound to the any address, as vxlan_create_sock() binds the kernel's: every VTEP of
        # the namespace on this port can share it, whatever its local/group.
        rx = underlay.open_rx(fam, cfg.local, cfg.dstport, cfg.udp6zerocsumrx)
        try:
            tx = underlay.open_tx(fam, cfg.local, cfg.ttl, cfg.group, ifindex, cfg)
        except BaseException:
            rx.close()
            raise
        return Underlay(fam, rx, tx, zero_csum6_rx=cfg.udp6zerocsumrx)

    def _open_port(self, cfg: VtepConfig, us: Underlay, ifindex: int, fdb) -> Port:
        tx = underlay.open_tx(_family(cfg), cfg.local, cfg.ttl, cfg.group, ifindex, cfg)
        tx_df = None
        try:
            if cfg.df == "inherit" and cfg.family == 4:
                tx_df = underlay.open_tx(_family(cfg), cfg.local, cfg.ttl, cfg.group, ifindex,
                                         replace(cfg, df="set"))
            lst = control.listen(cfg.name)
        except BaseException:
            tx.close()
            if tx_df is not None:
                tx_df.close()
            raise
        try:
            fds = tap.open_tap_queues(cfg.name, self.backend.tap_offload,
                                      self.backend.tap_queues(cfg))
        except BaseException:
            lst.close()
            tx.close()
            if tx_df is not None:
                tx_df.close()
            raise
        port = Port(cfg, None, fds[0], us, lst, tx=tx, ifindex=ifindex, tx_df=tx_df,
                    tap_queues=fds[1:])
        try:
            port.tap_index = self.nl.index(cfg.name)
            if not cfg.mac:
                cfg.mac = self.nl.mac(cfg.name)
            else:
                self.nl.set_mac(cfg.name, mac_to_str(cfg.mac))
            port.vtep = vtep = Vtep(cfg, fdb=self.backend.make_fdb(cfg),
                                    neigh=self.backend.make_neigh(cfg), now=time.monotonic())
            vtep.sport_range = port_range(cfg.srcport, underlay.local_port_range())
            for u in fdb:           # FdbUpdate, or NeighUpdate (a saved file's neigh lines)
                if isinstance(u, NeighUpdate):
                    vtep.neigh.add(u.ip, u.lladdr, u.nud, time.monotonic(), u.op)
                else:
                    vtep.fdb.add(u.mac, u.remote, u.state, time.monotonic(), u.op)
            # Up (and into the bridge) last: the first frame must find the FDB complete.
            self.nl.configure(cfg.name, cfg.mtu, cfg.address, cfg.master)
        except BaseException:
            port.close()
            raise
        return port

    def rename(self, port: Port, name: str) -> None:
        """``port``'s TAP is called ``name`` now (``ip link set OLD name NEW``): so is the VTEP,
        for every command (``dev NAME``), event and listing, and so is its control socket,
        which is bound anew (abstract names cannot be renamed; connections already open stay
        open).  Raises ControlError, and changes nothing, when ``@vxtun/NAME`` is held."""
        old = port.config.name
        if self.by_name.get(old) is not port or name == old:
            return
        if name in self.by_name:
            raise ControlError(f"a vxtun VTEP named {name} is already running in this "
                               "namespace")
        lst = control.listen(name)
        port.listener, old_lst = lst, port.listener
        del self.by_name[old]
        self.by_name[name] = port
        port.config.name = name
        old_lst.close()

    def remove(self, port: Port) -> None:
        """Take one VTEP away while the others keep running: its TAP goes with its fd, its
        group is left, and its underlay closes with its last VTEP."""
        if self.by_name.get(port.config.name) is not port:
            return
        if self.attached:
            self.backend.detach(port)
        del self.by_name[port.config.name]
        us = port.underlay
        us.demux.remove(port.config.vni)
        us.by_vni.pop(port.config.vni, None)
        port.close()
        if port.config.group:
            self._leave(us, port.config.group, port.ifindex)
        if not us.by_vni:
            if self.attached:
                self.backend.detach_underlay(us)
            for key, u in list(self.underlays.items()):
                if u is us:
                    del self.underlays[key]
            us.close()

    def _join(self, us: Underlay, cfg: VtepConfig, ifindex: int) -> None:
        try:
            underlay.set_membership(us.rx, us.family, cfg.group, ifindex, join=True)
        except OSError as e:
            raise LocalError(f"cannot join group {cfg.group} on {cfg.dev}: {e.strerror}") \
                from None

    def _leave(self, us: Underlay, group: str, ifindex: int) -> None:
        g = (group, ifindex)
        n = us.groups.get(g, 0) - 1
        if n > 0:
            us.groups[g] = n
            return
        us.groups.pop(g, None)
        try:
            underlay.set_membership(us.rx, us.family, group, ifindex, join=False)
        except OSError:
            pass        # the device went away, and its memberships with it

    # --- the backend's share ---------------------------------------------------------------

    def attach(self) -> None:
        """Hand every open socket and VTEP to the backend (the loop starts)."""
        self._hand_over(self.underlays.values(), self.by_name.values())
        self.attached = True

    def _hand_over(self, underlays, ports) -> None:
        for us in underlays:
            self.backend.attach_underlay(us)
        for port in ports:
            self.backend.attach(port)

    def detach(self) -> None:
        """Take every VTEP, then every socket, back from the backend (the loop ends)."""
        for port in self.by_name.values():
            self.backend.detach(port)
        for us in self.underlays.values():
            self.backend.detach_underlay(us)
        self.attached = False

    def close(self) -> None:
        for port in self.by_name.values():
            port.close()
        self.by_name.clear()
        for us in self.underlays.values():
            us.close()
        self.underlays.clear()
