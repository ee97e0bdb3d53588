"""The fast dataplane: the per-packet loop in C threads without the GIL (vxtun/fastpath/).

The common path never enters Python: a TX thread reads every TAP (TAP -> underlay) and an RX
thread reads every underlay socket (underlay -> TAP); each asks the C decisions
(vxtun/fastpath/decide.pyx, the mirror of vxtun/core) what to do and does it.  What is rare
comes back here through the Dataplane's punt queue, whose eventfd the Node's selector watches,
and ``handle_punt`` gives it to the core:

* a frame from the TAP that the core must decide (no FDB entry and no default entry: the
  core counts ``no_remote`` and raises the L2 miss; with ``proxy`` and ``l3miss``, an ARP
  request or NS for an IP with no neighbour entry, at most twice a second per IP: the core
  raises the L3 miss), run through ``Vtep.handle_frame`` and carried out here
  (``node.transmit``, or a write to the TAP);
* an FDB learn or move by the RX thread: the core emits the FdbChange event;
* a frame to a local address (localbypass), or one whose outer DF or flow label is
  inherited per packet (``df inherit``, ``flowlabel inherit``): the core sends it;
* a TAP that failed (deleted by ``ip link del``: the TX thread's read gave EBADFD, or epoll
  EPOLLERR; vxtun/fastpath/threads.pyx no longer watches it): the node removes the VTEP.

With ``proxy``, every other ARP request and NS is decided and answered by the TX thread from
the C neighbour table (vxtun/fastpath/neigh.pyx, the store of the core's NeighTable): a storm
of requests never reaches the punt queue, so it cannot crowd out the misses and frames that
must (and the host's own resolution is answered at the TX thread's rate).  The TX thread reads
each TAP in bursts of BURST frames and the punt queue is bounded: what the kernel cannot queue
on the TAP meanwhile is its ``tx_dropped``, shown by ``vxtun stats`` as "tap queue drops".

Offloads are probed when a TAP or socket is attached, with a fallback for each, and listed by
``features()`` (and so by ``vxtun show``):

* ``tap_tso``: TUNSETOFFLOAD(TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6): the TAP hands us 64 KB TCP
  super-frames with partial checksums; the TX thread completes checksums and cuts the TCP
  segments itself (as a NIC would), so only MTU-sized, fully checksummed frames hit the wire.
  Fallback ``tap_csum`` (checksum only), then none.
* ``udp_gso``: a TCP super-frame for one unicast remote leaves as UDP GSO trains
  (UDP_SEGMENT) from a UDP socket bound to the flow's source port (a small LRU per VTEP), so
  the kernel handles one large packet instead of ~45; fallback: the raw socket.
* ``udp_gro``: the receive socket takes UDP GRO trains (UDP_GRO), split by the RX thread.
* ``poll_other``: after delivering to a TAP the RX thread reads that TAP once (the stack
  often answers inside the write), and after sending the TX thread reads the socket once,
  instead of waking the other thread: a few microseconds less per round trip.
* ``tap_coalesce``: in-order TCP segments of one flow received back to back are written to the
  TAP as one GSO super-frame (LRO in software), so the stack above handles one packet.
* ``udp_tunnel_gso``: a TCP super-frame for one unicast remote is wrapped in
  IPv4 (or IPv6)/UDP/VXLAN whole and written to an egress TAP of the VTEP's own
  (``<tap>-gso``, vxtun/io/gso.py) as one UDP-tunnel GSO packet, which the kernel forwards
  and segments as late as it can (a kernel VTEP over veth takes it whole, as from its own
  vxlan_xmit()).  Probed per VTEP (Linux 6.17's TUN_F_UDP_TUNNEL_GSO, the per-device
  sysctls: IPv6 needs ``force_forwarding``; ``udp6zerocsumtx`` stays off); fallback
  ``udp_gso``.  ``vxtun show`` says which, and why not.
* ``recvmmsg`` / ``sendmmsg``: batches of datagrams per system call.
* ``tap_steering``: the TAP has several queues (``vxtun up --queues``, a TX thread each) and
  a steering program (vxtun/io/tapsteer.py) puts ARP/NS from behind the TAP on queue 0 and
  the host's own traffic, its ARP included, on the others: a storm's overflowing ring is
  not the host's.  Fallback: tun's automq (flows follow the queue the RX thread wrote them on).

``vxtun trace``: while a VTEP is traced, the threads copy each decision into a bounded ring
(vxtun/fastpath/trace.pyx) whose eventfd the selector watches; ``_on_trace`` turns each entry
into the record the pure core's tracer would build (vxtun/trace/records.py ``from_ring``), and
punted frames are traced by the core that decides them.  Untraced, the threads test one flag.

ECN as the kernel's vxlan: the outer TOS / traffic class of each send is given as a control
message (IP_TOS / IPV6_TCLASS, only when it is not 0), and the receive socket hands each
datagram's outer TOS over as one (IP_RECVTOS / IPV6_RECVTCLASS, set by vxtun.io.underlay): no
system call is added per packet.
"""
from __future__ import annotations

import fcntl
import os
import socket
import sys
import time

from .. import _fastpath
from ..core.stats import Stats
from ..fdb import Fdb
from ..io import gso, tap, tapsteer
from ..io.tap import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUNSETOFFLOAD
from ..proxy import NeighTable
from ..trace.records import from_ring
from ..trace.reference import trace_frame
from ..trace.summary import HEAD
from ..wire.addr import ip_to_bytes

SOL_UDP = 17
UDP_GRO = 104
PUNT_FRAME = _fastpath.PUNT_KINDS["frame"]
PUNT_LEARN = _fastpath.PUNT_KINDS["learn"]
PUNT_TAP_GONE = _fastpath.PUNT_KINDS["tap_gone"]
POP_MAX = 256       # punted records handled per wake-up before the selector looks elsewhere
# Offloads can be turned off one by one to measure what each brings (and to work around a
# kernel bug): VXTUN_FAST_DISABLE=tap_tso,udp_gso,udp_gro,tap_coalesce,poll_other,
# udp_tunnel_gso,tap_steering
OFFLOADS = ("tap_tso", "udp_gso", "udp_gro", "tap_coalesce", "poll_other", "udp_tunnel_gso",
            "tap_steering")


def disabled() -> set[str]:
    return {w.strip() for w in os.environ.get("VXTUN_FAST_DISABLE", "").split(",") if w.strip()}


def probe_tap_offload(fd: int, tso: bool = True) -> int:
    """Ask for the richest TAP offload the kernel grants; returns the TUN_F_* flags set."""
    tries = (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6, TUN_F_CSUM, 0) if tso else (0,)
    for flags in tries:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, flags)
            return flags
        except OSError:
            continue
    return 0


def probe_udp_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def handle_punt(vtep, kind: int, data: bytes, now: float) -> list:
    """What the core makes of one record the C threads punted: the actions to carry out.

    C decides only "fast, or hand it back"; the core decides everything rare: a punted frame
    goes through ``Vtep.handle_frame`` (proxy, L2 miss, ``no_remote``), and a learn
    notification (the MAC the RX thread just learned or moved) becomes an FdbChange event.
    """
    if kind == PUNT_FRAME:
        return vtep.handle_frame(data, now)
    if kind == PUNT_LEARN:
        e = vtep.fdb.get(data)
        if e is not None:
            vtep.fdb_changed("new", e)
    return []


def _c_store(neigh):
    """The C table under a NeighTable, or None (then the core decides every ARP/NS)."""
    store = getattr(neigh, "store", None)
    return store if isinstance(store, _fastpath.CNeigh) else None


class FastBackend:
    name = "fast"
    # The TAP opens with offloads off (what every kernel accepts); attach() then asks for more.
    tap_offload = 0

    def __init__(self, node) -> None:
        self.node = node
        self._off = disabled()
        self.dp = _fastpath.Dataplane(poll_other="poll_other" not in self._off)
        self._uids: dict = {}          # id(Underlay) -> underlay id in C
        self._vids: dict = {}          # id(Port) -> VTEP id in C
        self._ports: dict = {}         # VTEP id -> Port
        self._egress: dict = {}        # id(Port) -> its gso.Egress, or why it has none
        self._features: dict = {}      # feature -> how many TAPs/sockets use it
        self._punted: dict = {}        # VTEP id -> frames the TX thread handed to the core
        self._watching = False
        self._traced: set = set()      # Ports with a tracer (vxtun trace)
        self._tracing = False
        self._trace_lost = 0

    def tap_queues(self, config) -> int:
        """How many queues ``config``'s TAP gets: ``--queues``, or one per CPU and one for ARP
        (a TX thread each; vxtun/fastpath/threads.pyx steers the host's flows among them)."""
        return config.queues or tap.default_queues()

    def make_fdb(self, config):
        """The core's rules over the C table the threads share (``fdb.store``)."""
        return Fdb(store=_fastpath.CFdb(config.ageing, config.maxaddress, config.learning))

    def make_neigh(self, config):
        """The core's neighbour rules over the C table the TX thread answers from."""
        return NeighTable(config.reachable_time, config.gc_stale_time, store=_fastpath.CNeigh())

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if not self._watching:
            self.node.watch(self.dp.fileno(), self._on_punt)
            self._watching = True
        self.dp.start()

    def stop(self) -> None:
        self.dp.stop()
        if self._watching:
            self.node.unwatch(self.dp.fileno())
            self._watching = False

    def _use(self, feature: str, on: bool) -> None:
        if on:
            self._features[feature] = self._features.get(feature, 0) + 1

    def _unuse(self, feature: str) -> None:
        n = self._features.get(feature, 0) - 1
        if n > 0:
            self._features[feature] = n
        else:
            self._features.pop(feature, None)

    def attach_underlay(self, us) -> None:
        gro = "udp_gro" not in self._off and probe_udp_gro(us.rx)
        uid = self.dp.add_underlay(us.rx.fileno(), us.tx.fileno(),
                                   6 if us.family == socket.AF_INET6 else 4, gro)
        self._uids[id(us)] = (uid, gro)
        self._use("udp_gro", gro)

    def detach_underlay(self, us) -> None:
        uid, gro = self._uids.pop(id(us), (None, False))
        if uid is not None:
            self.dp.remove_underlay(uid)
            if gro:
                self._unuse("udp_gro")

    def attach(self, port) -> None:
        cfg = port.config
        flags = probe_tap_offload(port.tap_fd, "tap_tso" not in self._off)
        tso = flags & (TUN_F_TSO4 | TUN_F_TSO6) == (TUN_F_TSO4 | TUN_F_TSO6)
        tx = getattr(port, "tx", None) or port.underlay.tx
        uid = self._uids[id(port.underlay)][0]
        lo, hi = port.vtep.sport_range
        vid = self.dp.add_vtep(uid, cfg.vni, port.tap_fd, tx.fileno(), cfg.mac, cfg.mtu,
                               lo, hi, cfg.dstport, cfg.proxy,
                               port.vtep.fdb.store, tso, "udp_gso" not in self._off,
                               "tap_coalesce" not in self._off, port.vtep.outer_tos,
                               port.vtep.ttl_inherit,
                               0 if cfg.flowlabel == "inherit" else cfg.flowlabel,
                               neigh=_c_store(port.vtep.neigh), l3miss=cfg.l3miss,
                               df_inherit=port.vtep.df_inherit,
                               label_inherit=port.vtep.label_inherit)
        for fd in getattr(port, "tap_queues", ()):
            self.dp.add_tap_queue(vid, fd)
        sources = getattr(tx, "sources", None)
        if sources is not None and sources.mcast_if is not None:
            self.dp.set_mcast_if(vid, sources.mcast_if)
        self._open_egress(port, vid, tso)
        extra = self.dp.vtep_features(vid)
        if self._steer(port, cfg.mac):
            extra.append("tap_steering")
        self._vids[id(port)] = (vid, flags, extra)
        self.set_local(port, port.vtep.local_ips)
        self._ports[vid] = port
        self._use("tap_tso", tso)
        self._use("tap_csum", bool(flags & TUN_F_CSUM) and not tso)
        for f in extra:
            self._use(f, True)

    def detach(self, port) -> None:
        vid, flags, extra = self._vids.pop(id(port), (None, 0, []))
        if vid is None:
            return
        # keep the final counters: the core's Stats is what outlives the VTEP's C block
        final = self.dp.remove_vtep(vid)
        eg = self._egress.pop(id(port), None)
        if isinstance(eg, gso.Egress):
            eg.close()                 # after remove_vtep: no thread writes to it any more
        self._ports.pop(vid, None)
        self._punted.pop(vid, None)
        port.fast_stats = final
        if flags & TUN_F_TSO4:
            self._unuse("tap_tso")
        elif flags & TUN_F_CSUM:
            self._unuse("tap_csum")
        for f in extra:
            self._unuse(f)

    def _open_egress(self, port, vid: int, tso: bool) -> None:
        """Give ``port`` its UDP-tunnel GSO egress TAP (vxtun/io/gso.py) if it can have one;
        else remember why (``egress``), and its super-frames keep today's path."""
        eg = gso.open_for(port.config.name, port.underlay.family,
                          bool(getattr(port.config, "udp6zerocsumtx", False))) if tso \
            else "off (the TAP has no TSO)"
        if isinstance(eg, gso.Egress) and not self.dp.set_tnl_egress(vid, eg.fd, eg.mac):
            eg.close()
            eg = "off (the send socket's TTL leaves none for forwarding)"
        self._egress[id(port)] = eg

    def check_egress(self, port) -> None:
        """Once a tick: if the egress of ``port`` no longer forwards (gso.forwarding_lost),
        take it from the C threads, then close it; super-frames go by UDP GSO again."""
        eg = self._egress.get(id(port))
        vid = self._vids.get(id(port), (None,))[0]
        why = gso.forwarding_lost(eg) if isinstance(eg, gso.Egress) else None
        if why is not None and vid is not None:
            self.dp.set_tnl_egress(vid, -1, b"")
            eg.close()
            self._egress[id(port)] = f"off ({why})"

    def egress(self, port) -> str | None:
        """What ``vxtun show`` says of the UDP-tunnel GSO egress of ``port``."""
        eg = self._egress.get(id(port))
        vid = self._vids.get(id(port), (None,))[0]
        if isinstance(eg, gso.Egress) and vid is not None:
            if "udp_tunnel_gso" not in self.dp.vtep_features(vid):
                return f"{eg.name} off (the kernel refused a packet)"
            return gso.describe(eg, *self.dp.tnl_egress_stats(vid))
        return gso.describe(eg, 0, 0)

    # --- counters --------------------------------------------------------------------------

    def set_local(self, port, ips) -> None:
        """The namespace's addresses changed: the TX thread punts frames for them."""
        vid = self._vids.get(id(port), (None,))[0]
        if vid is not None:
            self.dp.set_local(vid, port.config.localbypass, [ip_to_bytes(ip) for ip in ips])

    def set_mac(self, port, mac: bytes) -> None:
        """The TAP's address changed: the C threads' own_mac check follows it, and so does
        the steering program, which tells the host's own ARP/NS from others' by it."""
        vid, _, extra = self._vids.get(id(port), (None, 0, []))
        if vid is not None:
            self.dp.set_mac(vid, mac)
            if "tap_steering" in extra:
                self._steer(port, mac)

    def _steer(self, port, mac: bytes) -> bool:
        """Steer the queues of a multi-queue TAP (vxtun/io/tapsteer.py); False when it has
        one queue, steering is disabled, or the kernel refused (tun's automq then steers)."""
        queues = 1 + len(getattr(port, "tap_queues", ()))
        if queues < 2 or "tap_steering" in self._off:
            return False
        why = tapsteer.steer(port.tap_fd, mac, queues)
        if why is not None:
            print(f"vxtun: {port.config.name}: {why}; the TAP's queues are steered by the "
                  "kernel's flow hash (an ARP storm shares a queue with the host's ARP)",
                  file=sys.stderr, flush=True)
        return why is None

    def stats(self, port) -> dict:
        """The C threads' counters and the core's, added; and ``punted``, the frames the TX
        thread handed to the core (L2 and L3 misses: a proxy answer never is one)."""
        vid = self._vids.get(id(port), (None,))[0]
        c = self.dp.vtep_stats(vid) if vid is not None else getattr(port, "fast_stats", None)
        core = port.vtep.stats.to_json()
        out = Stats.merge(c, core) if c is not None else core
        out["punted"] = self._punted.get(vid, 0)
        return out

    def tap_queue_reads(self, port) -> list[int] | None:
        """Frames the threads read from each queue of ``port``'s TAP, queue 0 first."""
        vid = self._vids.get(id(port), (None,))[0]
        return self.dp.tap_queue_reads(vid) if vid is not None else None

    def demux_stats(self, us) -> dict:
        uid = self._uids.get(id(us), (None, False))[0]
        py = us.demux.stats.to_json()
        return Stats.merge(self.dp.underlay_stats(uid), py) if uid is not None else py

    @property
    def punts_lost(self) -> int:
        """Records the threads could not punt because the queue was full (each counted as the
        drop the core would have counted)."""
        return self.dp.punts_lost

    def features(self) -> list[str]:
        base = ["vnet_hdr", "raw_tx", "recvmmsg", "sendmmsg", "nogil_threads"]
        if self.dp.poll_other:
            base.append("poll_other")
        return base + sorted(self._features)

    # --- vxtun trace -----------------------------------------------------------------------

    def trace_changed(self, port, on: bool) -> None:
        """The first tracer of ``port`` came, or its last one left: the threads record into
        the trace ring while any VTEP is traced (vxtun/fastpath/trace.pyx), and the ring's
        eventfd is watched meanwhile."""
        if on:
            self._traced.add(port)
        else:
            self._traced.discard(port)
        want = bool(self._traced)
        if want == self._tracing:
            return
        self._tracing = want
        self.dp.trace(want)
        if want:
            self._trace_lost = self.dp.trace_lost
            self.node.watch(self.dp.trace_fileno(), self._on_trace)
        else:
            self.node.unwatch(self.dp.trace_fileno())

    def _on_trace(self) -> None:
        """Format what the threads recorded and hand it to the tracers (off the hot path)."""
        traces = self.node.traces
        offset = time.time() - time.monotonic()     # the threads' clock is CLOCK_MONOTONIC
        for raw in self.dp.trace_pop(POP_MAX):
            vid = raw["vid"]
            if vid:
                ports = [p for p in (self._ports.get(vid),) if p is not None]
            else:       # dropped before a VTEP was known: every VTEP of that socket is told
                ports = [p for p in self._ports.values()
                         if self._uids.get(id(p.underlay), (None,))[0] == raw["uid"]]
            ports = [p for p in ports if traces.watching(p)]
            if ports:
                rec = from_ring(raw, ports[0].config if vid else None, raw["now"] + offset)
                for p in ports:
                    traces.publish(p, rec, raw["head"])
        lost = self.dp.trace_lost
        if lost != self._trace_lost:
            for p in list(self._traced):
                traces.lost(p, lost - self._trace_lost)
            self._trace_lost = lost

    # --- what the C threads hand back ------------------------------------------------------

    def _on_punt(self) -> None:
        touched = {}
        gone = []
        now = time.monotonic()
        for kind, vid, data in self.dp.pop(POP_MAX):
            port = self._ports.get(vid)
            if port is None:            # detached since: nothing to do
                continue
            if kind == PUNT_TAP_GONE:
                gone.append((port, int.from_bytes(data, sys.byteorder, signed=True)))
                continue
            touched[vid] = port
            if kind == PUNT_FRAME:
                self._punted[vid] = self._punted.get(vid, 0) + 1
            if kind == PUNT_FRAME and self.node.traces.watching(port):
                # the core decides a punted frame: its record is the pure core's
                actions, rec = trace_frame(port.vtep, data, now)
                self.node.traces.publish(port, rec, data[:HEAD])
            else:
                actions = handle_punt(port.vtep, kind, data, now)
            if actions:
                self.node.execute(port, actions)
        for port in touched.values():
            self.node.after_core(port)
        for port, err in gone:          # detach() pauses the threads: after the records
            self.node.tap_gone(port, err)

