"""One VTEP's decisions: what a frame from the TAP or a datagram from the underlay becomes.

Everything that affects forwarding lives here (h11-style: one file owns the rules).  The core
does no I/O and reads no clock; the caller passes ``now`` (seconds, monotonic) and carries out
the returned actions:

* ``Transmit(ip, port, sport, payload, tos)``: send ``payload`` (VXLAN header + inner frame)
  in a UDP datagram from source port ``sport`` to ``ip``:``port``, with ``tos`` as the outer
  IPv4 TOS / IPv6 traffic class (and ``ttl``, ``df`` when inherited from the inner packet).
* ``Deliver(vnet, frame)``: write ``vnet`` (the virtio-net header) + ``frame`` to the TAP.
* ``Bypass(family, port, vni, frame)``: with ``localbypass``, a remote that is an address of
  this namespace (``local_ips``) gets no datagram: ``frame`` goes straight to the local VTEP
  of ``vni`` on UDP port ``port`` and IP ``family``, whose ``handle_bypass`` takes it; with
  no such VTEP the caller counts ``tx_error`` (vxlan_xmit_one -> encap_bypass_if_local ->
  vxlan_encap_bypass).

Malformed input is never an exception: it is dropped and counted in ``self.stats``.

Administrative changes (``bridge fdb``, ``ip neigh``: ``fdb_update``, ``fdb_delete``,
``neigh_update``, ``neigh_delete``, ``neigh_flush``) are carried out here too, because what
each reports as an event is a rule of its own: the destination touched, not the whole entry;
a neighbour only when something changed; a deleted neighbour as FAILED.

Transmit path (vxlan_xmit):
  1. With ``proxy``, every ARP frame and every IPv6 Neighbour Solicitation is consumed: a
     request for an IP whose neighbour entry is usable (NUD_CONNECTED) is answered, any other
     is dropped, and nothing goes to the underlay (arp_reduce, neigh_reduce).  With
     ``l3miss``, a request for an IP that has *no* entry raises an L3 miss; an entry in an
     unusable state (``stale``) suppresses both the answer and the miss.
  2. Look the destination MAC up in the FDB; a miss falls back to the all-zeros default entry.
  3. No entry and no default: drop (``no_remote``); for a unicast MAC with ``l2miss`` on, raise
     an L2 miss so a controller can add the entry.
  4. Send one copy to every remote of the entry (head-end replication for the flood list),
     to the remote's port and VNI (unset: the device's; an explicit ``vni 0`` is VNI 0 on the
     wire, as the kernel sends it: vxlan_xmit_one's ``rdst->remote_vni ? : default_vni``
     falls back to a ``default_vni`` that vxlan_xmit leaves 0 unless the device is
     ``external``); a remote of 0.0.0.0 or :: is dropped and counted
     (``no_remote``: vxlan_xmit_one's ``vxlan_addr_any(dst)`` without route short-circuit),
     under an outer TOS that carries the inner ECN bits and a DSCP of 0 (the default ``tos``
     0 of a kernel vxlan device; vxtun.wire.ecn).  A remote that is a local address (the
     kernel: a route with RTCF_LOCAL, neither broadcast nor multicast) is a ``Bypass``
     with ``localbypass`` (the default since Linux 6.1), not counted here: the VTEP that
     carries it out counts one tx packet of the whole frame (vxlan_encap_bypass counts
     skb->len, Ethernet header included) once it found the local VTEP.

Receive path (vxlan_rcv), after the Demux checked length, I flag and VNI:
  1. Reserved bits set: drop.  Inner frame shorter than Ethernet: drop.
  2. Inner source MAC is ours (a loop, or our own multicast flood coming back): drop.  Ours
     is the TAP's address as it is now (``set_mac``), not as it was at start.
  3. With learning on (vxlan_set_mac calls vxlan_snoop only then): an inner source MAC that
     is multicast or zero is dropped (vxlan_snoop's is_valid_ether_addr); any other is learned
     against the outer source IP, and a static MAC claimed from elsewhere is dropped.  With
     ``nolearning`` neither check runs and such a frame is delivered, as by the kernel.
  4. The learning done, an inner IPv4/IPv6 header cut short is dropped, and the outer ECN
     field meets the inner one (RFC 6040): outer CE over Not-ECT is dropped, outer CE marks an
     ECT inner packet CE, outer ECT(1) turns an inner ECT(0) into ECT(1) (vxtun.wire.ecn).
  5. Deliver with a virtio-net header that keeps partial checksums and GSO honest.
"""
from __future__ import annotations

from collections import deque
from typing import NamedTuple

from ..errors import LocalError
from ..fdb import LEARN_MOVED, LEARN_NEW, LEARN_PINNED, Fdb, Remote
from ..wire import ecn
from ..wire.addr import ip_version
from ..wire.ether import ETH_HLEN, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ZERO_MAC, mac_to_str
from ..wire.offload import rx_vnet_header
from ..wire.vxlan import (
    LOCAL_PORT_RANGE,
    VXLAN_HLEN,
    encode_header,
    port_range,
    reserved_bits_set,
    source_port,
)
from .config import VtepConfig
from .events import FdbChange, L2Miss, L3Miss, NeighChange, fdb_entry_json
from .stats import Stats


class Transmit(NamedTuple):
    ip: str
    port: int
    sport: int
    payload: bytes
    tos: int = 0         # outer IPv4 TOS / IPv6 traffic class (DSCP << 2 | ECN)
    ttl: int = 0         # outer TTL / hop limit; 0: the socket's (``ttl N``, or the route's)
    df: bool = False     # ``df inherit``: set the outer IPv4 DF (else the socket's ``df``)
    label: int = 0       # ``flowlabel inherit``: the outer IPv6 flow label (0: the socket's)


def inner_df(frame: bytes) -> bool:
    """vxlan_xmit_one() with ``df inherit``: the outer IPv4 header gets DF when the inner
    frame's Ethernet type is IPv6, or IPv4 with DF set (a VLAN tag in front: neither)."""
    if len(frame) < ETH_HLEN:
        return False
    etype = (frame[12] << 8) | frame[13]
    return etype == ETH_P_IPV6 or (etype == ETH_P_IP and len(frame) > ETH_HLEN + 6
                                   and bool(frame[ETH_HLEN + 6] & 0x40))


class Deliver(NamedTuple):
    vnet: bytes
    frame: bytes


class Bypass(NamedTuple):
    family: int          # 4 or 6: the remote's, as vxlan_find_vni() is asked
    port: int
    vni: int
    frame: bytes
    datagram: Transmit   # what to send instead if the port is not one of ours (see Node.bypass)


# How often the same miss may be reported: the kernel reports every one (vxlan_fdb_miss and
# vxlan_ip_miss have no limit), which lets a burst of traffic flood the listener; one report
# per key (IP or MAC) per interval is enough for a controller.
MISS_INTERVAL = 1.0
# The any address as a remote: "this host" (vxlan_addr_any), never a VTEP to send to.
ANY_IPS = ("0.0.0.0", "::")
# What vxlan_encap_bypass() learns a bypassed frame's source MAC against: the loopback
# address of the receiving VTEP's family, not the local address the frame was sent to.
LOOPBACK = {4: "127.0.0.1", 6: "::1"}
MISS_KEYS_MAX = 4096
EVENTS_MAX = 4096


class Vtep:
    """The decision logic of one VTEP (one VNI, one TAP)."""

    def __init__(self, config: VtepConfig, fdb=None, neigh=None, now: float = 0.0) -> None:
        self.config = config
        self.stats = Stats()
        self.fdb = fdb if fdb is not None else Fdb(config.ageing, config.maxaddress,
                                                   config.learning)
        if neigh is None:
            from ..proxy import NeighTable
            neigh = NeighTable(config.reachable_time, config.gc_stale_time)
        self.neigh = neigh
        self.mac = config.mac
        self.mtu = config.mtu or 1450
        self._hdr = encode_header(config.vni)
        # the device's tos as vxlan_xmit_one() reads it (1: inherit), and ttl inherit
        self.outer_tos = 1 if config.tos == "inherit" else config.tos
        self.ttl_inherit = config.ttl == "inherit"
        # df inherit means something over IPv4 only (vxlan_xmit_one's IPv4 branch)
        self.df_inherit = config.df == "inherit" and config.family == 4
        # flowlabel inherit: the inner IPv6 flow label (ip_tunnel_get_flowlabel), IPv6 only
        self.label_inherit = config.flowlabel == "inherit" and config.family == 6
        # [min, max) of the source ports: set by whoever creates the VTEP from the
        # namespace's ip_local_port_range (vxtun.io.underlay.local_port_range)
        self.sport_range = port_range(config.srcport, LOCAL_PORT_RANGE)
        # the namespace's own addresses (set by whoever runs the VTEP, vxtun.io.netlink): a
        # remote among them, or in 127.0.0.0/8 or ::1, is bypassed with ``localbypass``
        self.local_ips: frozenset = frozenset()
        self._events: deque = deque()
        self._miss_seen: dict = {}
        self.events_lost = 0
        if config.remote:
            self.fdb.add(ZERO_MAC, Remote(config.remote, via=config.dev), "permanent", now)
        elif config.group:
            self.fdb.add(ZERO_MAC, Remote(config.group, via=config.dev), "permanent", now)

    def set_mac(self, mac: bytes) -> None:
        """The TAP's own address changed (``ip link set vxtun0 address ...``): frames from it
        are ours from now on (vxlan_set_mac compares with the live dev->dev_addr)."""
        self.mac = self.config.mac = bytes(mac)

    # --- events ------------------------------------------------------------------------

    def next_event(self):
        """Pop the oldest pending event, or None (aioquic style)."""
        return self._events.popleft() if self._events else None

    def _emit(self, event) -> None:
        # A slow or absent listener loses events, never packets: the queue is bounded.
        if len(self._events) >= EVENTS_MAX:
            self._events.popleft()
            self.events_lost += 1
        self._events.append(event)

    def _miss(self, key, event, now: float) -> bool:
        last = self._miss_seen.get(key)
        if last is not None and now - last < MISS_INTERVAL:
            return False
        if len(self._miss_seen) >= MISS_KEYS_MAX:
            self._miss_seen = {k: t for k, t in self._miss_seen.items()
                               if now - t < MISS_INTERVAL}
        self._miss_seen[key] = now
        self._emit(event)
        return True

    def fdb_changed(self, action: str, entry) -> None:
        """Report an FDB entry (an FdbEntry, or the fast path's equivalent) with all its
        destinations: learned, moved or aged out."""
        self._fdb_event(action, entry.mac, entry.remotes, entry.state)

    def _fdb_event(self, action: str, mac: bytes, remotes, state: str) -> None:
        if action == "new":
            # An entry that expired on the way (a lookup, a learn, this change) is reported
            # gone first, so that a listener never sees a deletion after what replaced it.
            self.fdb_reaped()
        self._emit(FdbChange(action, self.config.name, mac, self._notified(remotes), state))

    def fdb_reaped(self) -> None:
        """Report the expired entries the FDB removed outside the ageing pass (vxlan_cleanup
        notifies every entry it deletes; vxtun removes some earlier, never silently)."""
        for e in self.fdb.reaped():
            self.fdb_changed("del", e)

    def _notified(self, remotes) -> tuple[Remote, ...]:
        # vxlan_fdb_info() puts NDA_PORT / NDA_VNI in only when they differ from the device's.
        cfg = self.config
        return tuple(Remote(r.ip, 0 if r.port == cfg.dstport else r.port,
                            None if r.vni == cfg.vni else r.vni, r.via) for r in remotes)

    def _neigh_event(self, action: str, entry) -> None:
        self._emit(NeighChange(action, self.config.name, entry.ip, entry.lladdr, entry.state))

    def neigh_aged(self) -> None:
        """Report what ageing did to the neighbour table (turned stale, collected)."""
        for action, e in self.neigh.changes():
            self._neigh_event(action, e)

    # --- administrative changes (bridge fdb, ip neigh) ------------------------------------
    #
    # Each either happens whole or raises LocalError and changes nothing, and each reports
    # what the kernel's notification would carry.

    def fdb_update(self, op: str, mac: bytes, remote: Remote, state: str, now: float) -> None:
        """``bridge fdb add|append|replace``.  Reported with the one destination the request
        named, not the whole flood list: vxlan_fdb_update() notifies the rdst it added."""
        fam, own = ip_version(remote.ip), self.config.family
        if fam != own:
            raise LocalError(f"dst {remote.ip} is IPv{fam} but {self.config.name} has an "
                             f"IPv{own} underlay")
        e = self.fdb.add(mac, remote, state, now, op)
        self._fdb_event("new", e.mac, [remote], e.state)

    def fdb_delete(self, mac: bytes, dst: str | None = None, port: int = 0,
                   vni: int | None = None) -> None:
        """``bridge fdb del``: one destination when ``dst`` is given, else the whole entry.
        Reported with the destinations that went: __vxlan_fdb_delete() notifies the one rdst
        it removes (vxlan_fdb_dst_destroy), or the entry's when the entry goes."""
        old = self.fdb.get(mac)
        before = list(old.remotes) if old is not None else []
        e = self.fdb.delete(mac, dst, port, vni)
        after = list(e.remotes) if self.fdb.get(mac) is not None else []
        self._fdb_event("del", e.mac, [r for r in before if r not in after] or before, e.state)

    def fdb_flush(self, dynamic_only: bool = False) -> None:
        """``bridge fdb flush [dynamic]``: every entry (or every learned one), unreported."""
        self.fdb.flush(dynamic_only=dynamic_only)

    def fdb_show(self, now: float | None = None) -> list[dict]:
        """Every entry as ``bridge -j fdb show`` has it, the default entry first; given
        ``now``, with the whole seconds since it was last used and updated, as ``bridge -s``
        shows NDA_CACHEINFO's ndm_used / ndm_updated (vxlan_fdb_info)."""
        return [self._fdb_row(e, now) for e in self.fdb.entries()]

    def _fdb_row(self, e, now: float | None) -> dict:
        d = fdb_entry_json(e.mac, self._notified(e.remotes), e.state, self.config.name)
        if now is not None:
            d["used"] = max(0, int(now - e.used))
            d["updated"] = max(0, int(now - e.updated))
        return d

    def fdb_show_pages(self, n: int, now: float | None = None):
        """``fdb_show`` in batches of at most ``n`` rows, each made when asked for, so that a
        listing of a million entries never holds the loop for long.  A table of up to ``n``
        entries is one batch, ordered as ``fdb_show``; a larger one comes in the store's
        order (the default entry first), as the kernel's dump comes in hash order."""
        if len(self.fdb) <= n:
            yield self.fdb_show(now)
            return
        for batch in self.fdb.pages(n):
            yield [self._fdb_row(e, now) for e in batch]

    def neigh_update(self, op: str, ip: str, lladdr: bytes, nud: str, now: float) -> None:
        """``ip neigh add|replace|change``: reported only when the state or the lladdr changed,
        as __neigh_update() notifies; a refresh with the same values only restarts the
        reachable time."""
        e, changed = self.neigh.add(ip, lladdr, nud, now, op)
        self.neigh_aged()
        if changed:
            self._neigh_event("new", e)

    def neigh_delete(self, ip: str) -> None:
        """``ip neigh del``: neigh_del() first sets the entry NUD_FAILED, so it is reported
        ``Deleted IP FAILED`` without its lladdr (a collected entry keeps both)."""
        self._neigh_deleted(self.neigh.delete(ip))

    def neigh_flush(self, now: float, all_states: bool = False, ip: str | None = None) -> None:
        """``ip neigh flush [ADDRESS] [nud all]``: all but permanent and noarp entries (every
        one with ``nud all``), each reported as a delete is."""
        self.neigh.expire(now)
        self.neigh_aged()
        for e in self.neigh.flush(all_states=all_states, ip=ip):
            self._neigh_deleted(e)

    def _neigh_deleted(self, entry) -> None:
        self._emit(NeighChange("del", self.config.name, entry.ip, None, "failed"))

    def neigh_show(self, now: float, to: str | None = None, nud: str | None = None) -> list[dict]:
        """``ip -j neigh show [ADDRESS] [nud STATE|all]``, aged to ``now``.  Without ``nud``,
        every state but noarp, as iproute2's default filter has it."""
        rows = self.neigh.entries(now)
        self.neigh_aged()
        if to:
            rows = [e for e in rows if e.ip == to]
        if nud != "all":
            rows = [e for e in rows if (e.state == nud if nud else e.state != "noarp")]
        return [e.to_json() for e in rows]

    def neigh_show_pages(self, now: float, n: int, to: str | None = None,
                         nud: str | None = None):
        """``neigh_show`` in batches of at most ``n`` rows (as ``fdb_show_pages``): a large
        table comes in table order, each batch read when asked for."""
        if len(self.neigh) <= n or to:
            yield self.neigh_show(now, to, nud)
            return
        self.neigh.expire(now)
        self.neigh_aged()
        keys = self.neigh.keys()
        for i in range(0, len(keys), n):
            rows = [e for k in keys[i:i + n] if (e := self.neigh.get(k)) is not None]
            if nud != "all":
                rows = [e for e in rows if (e.state == nud if nud else e.state != "noarp")]
            if rows:
                yield [e.to_json() for e in rows]

    # --- TAP -> underlay ---------------------------------------------------------------

    def handle_frame(self, frame: bytes, now: float) -> list:
        """A frame the overlay (the TAP) wants sent.  Returns actions."""
        if len(frame) < ETH_HLEN:
            self.stats.drop("bad_frame")
            return []
        if self.config.proxy:
            etype = (frame[12] << 8) | frame[13]
            if etype == ETH_P_ARP or (etype == ETH_P_IPV6 and _is_ns(frame)):
                return self._proxy(frame, etype, now)
        dst = frame[0:6]
        remotes = self.fdb.lookup(dst, now)
        if remotes is None:
            remotes = self.fdb.lookup(ZERO_MAC, now)
            if remotes is None:
                if self.config.l2miss and not dst[0] & 1:
                    if self._miss(("l2", dst), L2Miss(self.config.name, dst, self.config.vni, now),
                                  now):
                        self.stats.l2miss += 1
                self.stats.drop("no_remote")
                return []
        return self._encap(frame, remotes)

    def _encap(self, frame: bytes, remotes) -> list:
        cfg = self.config
        sport = source_port(frame, *self.sport_range)
        tos = ecn.encap_tos(frame, self.outer_tos)       # ip_tunnel_ecn_encap()
        ttl = ecn.inner_ttl(frame) if self.ttl_inherit else 0
        df = self.df_inherit and inner_df(frame)
        label = ecn.inner_flowlabel(frame) if self.label_inherit else 0
        out = []
        sent = 0
        for r in remotes:
            if r.ip in ANY_IPS:
                self.stats.drop("no_remote")
                continue
            hdr = self._hdr if r.vni is None else encode_header(r.vni)
            t = Transmit(r.ip, r.port or cfg.dstport, sport, hdr + frame, tos, ttl, df, label)
            if cfg.localbypass and self.is_local(r.ip):
                vni = cfg.vni if r.vni is None else r.vni
                out.append(Bypass(ip_version(r.ip), t.port, vni, frame, t))
                continue
            out.append(t)
            sent += 1
        self.stats.count_tx(sent, len(frame))
        return out

    def is_local(self, ip: str) -> bool:
        """``ip`` is this namespace's (the kernel's test: the route to it is RTCF_LOCAL)."""
        return ip in self.local_ips or ip.startswith("127.") or ip == "::1"

    # --- another VTEP of this namespace -> TAP (localbypass) ---------------------------

    def handle_bypass(self, frame: bytes, now: float) -> list:
        """A frame another local VTEP bypassed to us (vxlan_encap_bypass): no header to check
        and no own-MAC test, as the kernel's; with learning on its source MAC is snooped
        against the loopback address (and whatever vxlan_snoop says, it is delivered), and rx
        counts the whole frame."""
        if self.fdb.learning and not (frame[6] & 1 or frame[6:12] == ZERO_MAC):
            self._snoop(frame[6:12], LOOPBACK[self.config.family], now)
        self.stats.rx_packets += 1
        self.stats.rx_bytes += len(frame)
        return [Deliver(rx_vnet_header(frame, self.mtu), frame)]

    def _snoop(self, src: bytes, ip: str, now: float) -> int:
        """vxlan_snoop(): learn ``src`` at ``ip``, count and report what changed."""
        res = self.fdb.learn(src, ip, now)
        if res == LEARN_NEW or res == LEARN_MOVED:
            if res == LEARN_NEW:
                self.stats.learned += 1
            else:
                self.stats.moved += 1
            e = self.fdb.get(src)
            if e is not None:
                self.fdb_changed("new", e)
        return res

    # --- underlay -> TAP ---------------------------------------------------------------

    def handle_datagram(self, data: bytes, src_ip: str, now: float, outer_tos: int = 0) -> list:
        """A VXLAN datagram for our VNI (header already checked by the Demux), received under
        the outer IPv4 TOS / IPv6 traffic class ``outer_tos``."""
        if reserved_bits_set(data):
            self.stats.drop("reserved_bits")
            return []
        if len(data) < VXLAN_HLEN + ETH_HLEN:
            self.stats.drop("inner_truncated")
            return []
        frame = data[VXLAN_HLEN:]
        src = frame[6:12]
        if src == self.mac:
            self.stats.drop("own_mac")
            return []
        if self.fdb.learning and (src[0] & 1 or src == ZERO_MAC):
            self.stats.drop("invalid_src_mac")
            return []
        if self._snoop(src, src_ip, now) == LEARN_PINNED:
            self.stats.drop("static_mac_moved")
            return []
        # after vxlan_set_mac(): a frame dropped here has taught us its source MAC all the same
        reason, frame = ecn.decapsulate(frame, outer_tos)
        if reason is not None:
            self.stats.drop(reason)
            return []
        self.stats.count_rx(len(frame))
        return [Deliver(rx_vnet_header(frame, self.mtu), frame)]

    # --- timers ------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Age out FDB and neighbour entries (vxlan_cleanup runs every 10 s; call it often)."""
        for e in self.fdb.expire(now):
            self.fdb_changed("del", e)
        self.neigh.expire(now)
        self.neigh_aged()

    # --- ARP / ND proxy (arp_reduce, neigh_reduce) --------------------------------------

    def _proxy(self, frame: bytes, etype: int, now: float) -> list:
        from ..proxy import arp_reply, na_reply, parse_arp_request, parse_ns
        if etype == ETH_P_ARP:
            req = parse_arp_request(frame)
            if req is None:          # not an Ethernet/IPv4 request, or a loopback/mcast target
                self.stats.drop("proxy")
                return []
            ip = req[2]
        else:
            req = parse_ns(frame)
            if req is None:          # sent to loopback, or a multicast target
                self.stats.drop("proxy")
                return []
            ip = req.target
        n = self.neigh.lookup(ip, now)
        self.neigh_aged()
        if n is None:
            # The only case that raises an L3 miss: neigh_lookup() found nothing.
            if self.config.l3miss:
                if self._miss(("l3", ip), L3Miss(self.config.name, ip, self.config.vni, now), now):
                    self.stats.l3miss += 1
            self.stats.drop("proxy")
            return []
        if not n.connected:
            self.stats.drop("proxy")
            return []
        # A neighbour whose MAC sits behind this very host (an FDB entry whose first remote is
        # the any address) is left to answer for itself: the "bridge-local neighbor" check.
        f = self.fdb.get(n.lladdr)
        if f is not None and f.remotes and f.remotes[0].ip in ANY_IPS:
            self.stats.drop("proxy")
            return []
        if etype == ETH_P_ARP:
            reply = arp_reply(frame, n.lladdr)
        else:
            # NTF_ROUTER would set the router flag; vxtun's FDB has no router entries.
            reply = na_reply(frame, req, n.lladdr)
            if reply is None:
                self.stats.drop("proxy")
                return []
        self.stats.proxy_replies += 1
        return [Deliver(rx_vnet_header(reply, self.mtu), reply)]


def _is_ns(frame: bytes) -> bool:
    """IPv6 + ICMPv6 Neighbour Solicitation (type 135, code 0) with no extension headers."""
    return (len(frame) >= ETH_HLEN + 40 + 24 and frame[ETH_HLEN + 6] == 58
            and frame[ETH_HLEN + 40] == 135 and frame[ETH_HLEN + 41] == 0)


__all__ = ["Vtep", "Transmit", "Deliver", "Bypass", "mac_to_str"]
