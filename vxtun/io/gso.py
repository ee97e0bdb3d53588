"""A UDP-tunnel GSO egress device: hand the kernel one VXLAN super-packet, not ~45 datagrams.

Kernel 6.17 taught tun/tap to take a GSO packet that is already wrapped in a UDP tunnel
(``TUN_F_UDP_TUNNEL_GSO`` in set_offload(), ``VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4/IPV6`` in the
virtio-net header, ``struct virtio_net_hdr_v1_hash_tunnel`` for the outer/inner offsets).
tun_get_user() turns such a write into the skb the kernel's own vxlan_xmit() would have made
(virtio_net_hdr_tnl_to_skb(): SKB_GSO_UDP_TUNNEL[_CSUM] over TCPV4/TCPV6, encapsulation set),
and from there the stack treats it like its own: it is segmented as late as possible (by the
NIC, by validate_xmit_skb() on a device without tunnel TSO), or never: over veth a kernel
VTEP receives it whole (udp_unexpected_gso() lets SKB_GSO_UDP_TUNNEL through to vxlan_rcv()).

The device is a TAP (not a TUN): virtio_net_hdr_tnl_to_skb() checks the outer transport
offset against ``ETH_HLEN + sizeof(iphdr)``, i.e. it wants an Ethernet header in front.  A
frame written to it, addressed to its own MAC, is an IP packet received from outside: with
``forwarding`` and ``accept_local`` on *this device only* (per-device sysctls,
IN_DEV_FORWARD() / IN_DEV_ACCEPT_LOCAL() in ip_route_input_slow() / fib_validate_source();
nothing global is touched) ip_forward() sends it on by the ordinary route to the remote.
Forwarding decrements the TTL, so the outer TTL is written one higher.  The source is one of
our own addresses, which fib_validate_source() accepts with ``accept_local`` as long as the
effective rp_filter is 0 (it is max(all, dev)): with ``all.rp_filter`` set the probe says no.

An IPv6 underlay takes the same road with an IPv6 outer header
(VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6, outer_th_offset ETH_HLEN + 40).  ip6_forward() has
looked only at ``all.forwarding`` for a long time; Linux 6.17 added
``net.ipv6.conf.<dev>.force_forwarding``, read from the input device's inet6_dev, which is
the only switch we turn (on this device; the ``all``/``default`` ones are never touched).  A
kernel without it has no such file: :func:`open_egress` says so and the VTEP keeps today's
path (UDP GSO).  What else ip6_forward() wants: a unicast, non-link-local, non-loopback
source (ours is a global address of the namespace; IPv6 has no accept_local or rp_filter to
pass), PACKET_HOST (the frame is for the device's MAC), a hop limit above 1 (written one
higher: forwarding takes one), segments no longer than the route's MTU
(skb_gso_validate_network_len()).  The device gets no address at all (``addr_gen_mode`` 1:
no link-local, hence no DAD, no router solicitations), so nothing leaves through it and
nothing is read from it.  IPv6 requires the UDP checksum (RFC 8200 section 8.1): a VTEP with
``udp6zerocsumtx`` keeps today's path.

Either family's switch is the device's own, but a write of the namespace's
``all.forwarding`` reaches it too; :func:`forwarding_lost`, asked once a tick, tells the
dataplanes when the egress no longer forwards, and they fall back to today's path.

Layout of the 24-byte header (include/uapi/linux/virtio_net.h, little-endian): flags,
gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers (the v1 header, 12 bytes),
hash_value, hash_report, padding (8), outer_th_offset, inner_nh_offset.  tun takes the
tunnel fields when the header size is at least that (tun_vnet_hdr_guest_features()).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

from ..errors import LocalError
from ..wire.offload import csum_add, fold_complement
from .tap import (IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6,
                  TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ)

TUN_F_TSO_ECN = 0x08
TUN_F_UDP_TUNNEL_GSO = 0x80
TUN_F_UDP_TUNNEL_GSO_CSUM = 0x100
VNET_TNL_HDR_LEN = 24                   # sizeof(struct virtio_net_hdr_v1_hash_tunnel)

VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM = 8
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4 = 0x20
VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6 = 0x40
VIRTIO_NET_HDR_GSO_ECN = 0x80

ETH_HLEN = 14
OUTER4 = ETH_HLEN + 20 + 8 + 8          # what goes in front of the inner frame (IPv4 outer)
OUTER6 = ETH_HLEN + 40 + 8 + 8          # (IPv6 outer)
_TNL = struct.Struct("<BBHHHHHIHHHH")


def egress_name(tap: str) -> str:
    """The egress device of the VTEP whose TAP is ``tap``: ``<tap>-gso``, cut to IFNAMSIZ-1."""
    return (tap[:11] + "-gso")[:15]


def tnl_vnet_hdr(inner_vnet: bytes, csum: bool, v6: bool = False) -> bytes:
    """The 24-byte tunnel header for an IPv4/UDP/VXLAN packet (``v6``: IPv6/UDP/VXLAN)
    wrapped around a TSO super-frame whose own 10-byte virtio-net header (from the overlay
    TAP) is ``inner_vnet``.  The inner frame has a plain Ethernet header (no 802.1Q tag):
    inner_nh_offset is OUTER4 (OUTER6) + 14.

    Every offset moves by the outer headers (OUTER4 or OUTER6); gso_type keeps the inner TCP
    type and gains UDP_TUNNEL_IPV4 (UDP_TUNNEL_IPV6); ``csum`` asks for the outer UDP
    checksum (SKB_GSO_UDP_TUNNEL_CSUM, computed per segment by __skb_udp_tunnel_segment()
    from the pseudo-header sum in the UDP header, see :func:`outer_ipv4`).  The inner
    checksum stays partial (NEEDS_CSUM)."""
    flags, gso_type, hdr_len, gso_size, csum_start, csum_off = struct.unpack_from(
        "<BBHHHH", inner_vnet)
    outer, ip_len = (OUTER6, 40) if v6 else (OUTER4, 20)
    # the ECN bit (0x80) stays
    gso_type |= VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV6 if v6 else VIRTIO_NET_HDR_GSO_UDP_TUNNEL_IPV4
    f = VIRTIO_NET_HDR_F_NEEDS_CSUM | (VIRTIO_NET_HDR_F_UDP_TUNNEL_CSUM if csum else 0)
    return _TNL.pack(f, gso_type, hdr_len + outer if hdr_len else 0, gso_size,
                     csum_start + outer, csum_off, 0, 0, 0, 0,
                     ETH_HLEN + ip_len, outer + ETH_HLEN)


def outer_ipv4(dst_mac: bytes, src: bytes, dst: bytes, sport: int, dport: int, vxlan_len: int,
               ident: int, tos: int, ttl: int, df: bool, csum: bool) -> bytes:
    """Ethernet (to the egress device's own MAC) + IPv4 + UDP headers in front of
    ``vxlan_len`` bytes of VXLAN header and inner frame.  The IP header is complete (ip_rcv()
    checks it); ``ttl`` is the TTL the datagrams must carry on the wire (one more is written:
    ip_forward() takes one).  With ``csum`` the UDP checksum field holds the folded
    pseudo-header sum with the whole length, which __skb_udp_tunnel_segment() adjusts per
    segment (as udp_set_csum() leaves it for a GSO skb); else 0, as with ``noudpcsum``."""
    ulen = 8 + vxlan_len
    tot = 20 + ulen
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, tot, ident & 0xFFFF,
                               0x4000 if df else 0, ttl + 1, 17, 0, src, dst))
    struct.pack_into("!H", ip, 10, fold_complement(csum_add(bytes(ip))))
    check = csum_add(src + dst, 17 + ulen) if csum else 0
    return (dst_mac + b"\x02\0\0\0\0\x01" + b"\x08\x00" + bytes(ip)
            + struct.pack("!HHHH", sport, dport, ulen, check))


def outer_ipv6(dst_mac: bytes, src: bytes, dst: bytes, sport: int, dport: int, vxlan_len: int,
               tclass: int, hop_limit: int, label: int) -> bytes:
    """Ethernet (to the egress device's own MAC) + IPv6 + UDP headers in front of
    ``vxlan_len`` bytes of VXLAN header and inner frame, as udp_tunnel6_xmit_skb() would
    write them: traffic class ``tclass``, flow label ``label`` (ip6_flow_hdr()), the hop
    limit one higher than ``hop_limit`` (ip6_forward() takes one).  The UDP checksum field
    holds the folded pseudo-header sum with the whole length (RFC 8200 section 8.1: upper-
    layer length, next header 17), as udp6_set_csum() leaves it for a GSO skb; IPv6 has no
    zero-checksum variant here (``udp6zerocsumtx`` keeps today's path)."""
    ulen = 8 + vxlan_len
    ip = struct.pack("!IHBB16s16s", (6 << 28) | ((tclass & 0xFF) << 20) | (label & 0xFFFFF),
                     ulen, 17, hop_limit + 1, src, dst)
    return (dst_mac + b"\x02\0\0\0\0\x01" + b"\x86\xdd" + ip
            + struct.pack("!HHHH", sport, dport, ulen, csum_add(src + dst, 17 + ulen)))


def rp_filter_all() -> int:
    """net.ipv4.conf.all.rp_filter of this namespace (the egress device needs it 0)."""
    try:
        with open("/proc/sys/net/ipv4/conf/all/rp_filter") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _sysctl(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class Egress:
    """The egress TAP of one VTEP (opened by :func:`open_egress`).  ``fd`` takes writes of a
    24-byte tunnel header + Ethernet frame to ``mac``.  The pure dataplane keeps its outer IP
    ID and counters here (the fast path keeps its own in C)."""

    def __init__(self, name: str, fd: int, mac: bytes, v6: bool = False) -> None:
        self.name = name
        self.fd = fd
        self.mac = mac
        self.v6 = v6            # it forwards IPv6 (force_forwarding), else IPv4
        self.ident = 0
        self.sent = 0
        self.refused = 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_egress(name: str, family: int = socket.AF_INET) -> Egress:
    """Create the egress TAP ``name`` in the caller's namespace for an underlay of ``family``,
    set its offloads (the probe: EINVAL from a kernel without TUN_F_UDP_TUNNEL_GSO), its
    per-device sysctls (IPv6: no ``force_forwarding`` file, a kernel before 6.17), and bring
    it up.  Raises LocalError saying why it cannot be used; leaves nothing behind then."""
    v6 = family == socket.AF_INET6
    if not v6 and rp_filter_all():
        raise LocalError("net.ipv4.conf.all.rp_filter is set: a packet from our own address "
                         "would fail fib_validate_source()")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(),
                                                  IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
        except OSError as e:
            raise LocalError(f"cannot create {name}: {e.strerror}") from None
        fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_TNL_HDR_LEN))
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
                        | TUN_F_UDP_TUNNEL_GSO | TUN_F_UDP_TUNNEL_GSO_CSUM)
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise LocalError("this kernel has no UDP tunnel GSO on tun "
                                 "(TUN_F_UDP_TUNNEL_GSO: Linux 6.17)") from None
            raise
        _sysctls(name, v6)
        from .tap import hwaddr
        _link_up(name)
        mac = hwaddr(name)
        if mac is None:
            raise LocalError(f"{name} vanished")
        os.set_blocking(fd, False)
        return Egress(name, fd, mac, v6)
    except BaseException:
        os.close(fd)
        raise


def _sysctls(name: str, v6: bool) -> None:
    """The per-device settings of the egress ``name`` (before it is up: addr_gen_mode must be
    set before addrconf_dev_config() would give it a link-local address)."""
    v4conf = f"/proc/sys/net/ipv4/conf/{name}"
    v6conf = f"/proc/sys/net/ipv6/conf/{name}"
    if v6:
        # this device's own switches only: ip6_forward() allowed (force_forwarding, Linux
        # 6.17), no address (addr_gen_mode 1 = IN6_ADDR_GEN_MODE_NONE), no router
        # advertisements or redirects taken; its IPv4 side stays as created (no forwarding)
        try:
            _sysctl(f"{v6conf}/force_forwarding", "1")
        except FileNotFoundError:
            raise LocalError("this kernel has no per-device IPv6 forwarding "
                             "(net.ipv6.conf.<dev>.force_forwarding: Linux 6.17)") from None
        except OSError as e:
            raise LocalError(f"cannot set {name}'s sysctls: {e.strerror}") from None
        settings = ((f"{v6conf}/addr_gen_mode", "1"), (f"{v6conf}/accept_ra", "0"),
                    (f"{v6conf}/autoconf", "0"), (f"{v6conf}/accept_redirects", "0"),
                    (f"{v6conf}/disable_ipv6", "0"))
    else:
        settings = ((f"{v4conf}/forwarding", "1"), (f"{v4conf}/accept_local", "1"),
                    (f"{v4conf}/rp_filter", "0"), (f"{v4conf}/send_redirects", "0"),
                    (f"{v6conf}/disable_ipv6", "1"))
    try:
        for path, value in settings:
            _sysctl(path, value)
    except OSError as e:
        raise LocalError(f"cannot set {name}'s sysctls: {e.strerror}") from None


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _link_up(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH22x", name.encode(), 0))
        flags = struct.unpack_from("H", ifr, 16)[0] | IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags))


def forwarding_lost(eg: Egress, proc: str = "/proc/sys/net") -> str | None:
    """Why ``eg`` no longer forwards (what ``vxtun show`` then says), or None.  Its switch is
    per device, but a write to the namespace's ``all.forwarding`` reaches every device:
    devinet_sysctl_forward() -> inet_forward_change() sets each device's IPv4 ``forwarding``,
    and addrconf_forward_change() clears each device's IPv6 ``force_forwarding`` when
    ``all.forwarding`` is written 0.  Packets written then would be dropped
    (ip_route_input_slow(): !IN_DEV_FORWARD; ip6_forward()), so the dataplanes take the
    egress away, and leave the administrator's choice alone."""
    fam, key = ("ipv6", "force_forwarding") if eg.v6 else ("ipv4", "forwarding")
    try:
        with open(f"{proc}/{fam}/conf/{eg.name}/{key}") as f:
            on = f.read().strip() != "0"
        if not on and eg.v6:
            with open(f"{proc}/ipv6/conf/all/forwarding") as f:
                on = f.read().strip() != "0"     # ip6_forward() takes either switch
    except FileNotFoundError:
        return f"{eg.name} vanished"
    except OSError:
        return None     # EMFILE at the fd limit and the like: nothing says it stopped
    return None if on else (f"net.{fam}.conf.{eg.name}.{key} was reset "
                            f"(net.{fam}.conf.all.forwarding was written)")


def disabled() -> bool:
    """VXTUN_FAST_DISABLE=udp_tunnel_gso (the offloads' switch, vxtun/dataplane/fast.py) turns
    the egress off for both dataplanes."""
    return "udp_tunnel_gso" in os.environ.get("VXTUN_FAST_DISABLE", "").split(",")


def open_for(tap: str, family: int, zero_csum6: bool = False) -> Egress | str:
    """The egress of the VTEP whose TAP is ``tap`` on an underlay of ``family``, or why it has
    none (what ``vxtun show`` says).  ``zero_csum6``: the VTEP has ``udp6zerocsumtx``, whose
    zero checksums stay on today's path."""
    if disabled():
        return "off (VXTUN_FAST_DISABLE)"
    if family == socket.AF_INET6 and zero_csum6:
        return "off (udp6zerocsumtx: IPv6 datagrams keep today's path)"
    try:
        return open_egress(egress_name(tap), family)
    except LocalError as e:
        return f"off ({e})"


def describe(egress: Egress | str | None, sent: int, refused: int) -> str | None:
    """The line of ``vxtun show`` for ``egress`` (an Egress, or why there is none)."""
    if isinstance(egress, Egress):
        return f"{egress.name} super-frames {sent} refused {refused}"
    return egress
