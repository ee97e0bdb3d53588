"""The virtio-net header on the TAP, and the checksum rules that make vxtun interoperate.

Why this exists: over veth, the kernel never computes the checksums of a packet that stays
inside the machine.  A kernel vxlan peer therefore hands our UDP socket inner TCP and UDP
packets whose checksum field holds only the pseudo-header sum (CHECKSUM_PARTIAL), and, because
a UDP socket does not segment a tunnel GSO packet (udp_unexpected_gso() only checks for UDP_L4
and FRAGLIST GSO), sometimes a whole TCP super-frame of up to 64 KB as one datagram.  Written
to a TAP as they are, such frames are dropped by the receiving stack (bad checksum, or larger
than the MTU), so ping works while TCP stalls.

The TAP is opened with IFF_VNET_HDR: every frame written to it is preceded by a 10-byte
``struct virtio_net_hdr``.  For an inner TCP/UDP packet whose checksum field equals the folded
pseudo-header sum (the partial form), vxtun sets VIRTIO_NET_HDR_F_NEEDS_CSUM with csum_start and
csum_offset, exactly as the peer's kernel had it; the receiving kernel then either trusts it
(local delivery) or completes it (when it forwards the frame, e.g. through a bridge).  A TCP
frame longer than the TAP's MTU is marked as GSO (TCPV4/TCPV6) with gso_size chosen so every
segment fits the MTU, so the kernel segments it where needed, like a NIC doing LRO in reverse.
A frame whose checksum is neither partial nor complete is left alone: the receiving stack
drops it, as it should drop a corrupted packet.
"""
from __future__ import annotations

import struct

from .ether import ETH_HLEN, ETH_P_IP, ETH_P_IPV6

VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VIRTIO_NET_HDR_GSO_UDP = 3
VIRTIO_NET_HDR_GSO_TCPV6 = 4
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
VIRTIO_NET_HDR_GSO_ECN = 0x80

# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little endian on x86 and arm64:
# tun uses the host's byte order unless TUNSETVNETLE/BE says otherwise)
_VNET = struct.Struct("<BBHHHH")
EMPTY_VNET_HDR = bytes(VNET_HDR_LEN)

IPPROTO_TCP = 6
IPPROTO_UDP = 17


def pack_vnet(flags: int = 0, gso_type: int = 0, hdr_len: int = 0, gso_size: int = 0,
              csum_start: int = 0, csum_offset: int = 0) -> bytes:
    return _VNET.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def unpack_vnet(data: bytes) -> tuple[int, int, int, int, int, int]:
    return _VNET.unpack_from(data)


def csum_add(data: bytes, initial: int = 0) -> int:
    """One's-complement sum of ``data`` as 16-bit big-endian words, folded to 16 bits.

    Uses the fact that 2**16 == 1 (mod 0xffff): the sum of the words modulo 0xffff equals the
    whole buffer read as one big integer modulo 0xffff, which CPython computes in C.
    """
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    x = int.from_bytes(data, "big")
    s = x % 0xFFFF
    if s == 0 and x:        # one's complement has two zeros; a non-zero sum folds to 0xffff
        s = 0xFFFF
    s += initial
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def fold_complement(s: int) -> int:
    """The value that goes in a checksum field for a one's-complement sum ``s``."""
    c = (~s) & 0xFFFF
    return c


def _l4_info(frame: bytes):
    """(l4_offset, l4_len, proto, pseudo_sum, ip_header_len, is_v6) or None.

    Only unfragmented IPv4 and IPv6 without extension headers carry TCP/UDP we can fix up; this
    mirrors what a NIC's checksum offload covers.
    """
    n = len(frame)
    if n < ETH_HLEN + 20:
        return None
    etype = (frame[12] << 8) | frame[13]
    if etype == ETH_P_IP:
        b0 = frame[ETH_HLEN]
        if b0 >> 4 != 4:
            return None
        ihl = (b0 & 0x0F) * 4
        if ihl < 20 or n < ETH_HLEN + ihl:
            return None
        frag = ((frame[ETH_HLEN + 6] & 0x3F) << 8) | frame[ETH_HLEN + 7]
        if frag:  # MF set or non-zero offset: a fragment carries no complete L4 header
            return None
        tot = (frame[ETH_HLEN + 2] << 8) | frame[ETH_HLEN + 3]
        proto = frame[ETH_HLEN + 9]
        l4len = tot - ihl
        if l4len <= 0 or ETH_HLEN + tot > n:
            return None
        pseudo = csum_add(frame[ETH_HLEN + 12:ETH_HLEN + 20], proto + l4len)
        return ETH_HLEN + ihl, l4len, proto, pseudo, ihl, False
    if etype == ETH_P_IPV6:
        if n < ETH_HLEN + 40 or frame[ETH_HLEN] >> 4 != 6:
            return None
        plen = (frame[ETH_HLEN + 4] << 8) | frame[ETH_HLEN + 5]
        proto = frame[ETH_HLEN + 6]
        if plen == 0 or ETH_HLEN + 40 + plen > n:
            return None
        pseudo = csum_add(frame[ETH_HLEN + 8:ETH_HLEN + 40], proto + plen)
        return ETH_HLEN + 40, plen, proto, pseudo, 40, True
    return None


def rx_vnet_header(frame: bytes, mtu: int) -> bytes:
    """The virtio-net header to write in front of a decapsulated ``frame`` (see module doc)."""
    info = _l4_info(frame)
    if info is None:
        return EMPTY_VNET_HDR
    l4off, l4len, proto, pseudo, iphl, v6 = info
    if proto == IPPROTO_TCP:
        if l4len < 20:
            return EMPTY_VNET_HDR
        coff = 16
    elif proto == IPPROTO_UDP:
        if l4len < 8:
            return EMPTY_VNET_HDR
        coff = 6
    else:
        return EMPTY_VNET_HDR
    field = (frame[l4off + coff] << 8) | frame[l4off + coff + 1]
    partial = field == pseudo and field != 0
    if proto == IPPROTO_TCP and len(frame) - ETH_HLEN > mtu:
        thl = (frame[l4off + 12] >> 4) * 4
        gso_size = mtu - iphl - thl
        if not partial or thl < 20 or gso_size <= 0:
            return EMPTY_VNET_HDR
        gtype = VIRTIO_NET_HDR_GSO_TCPV6 if v6 else VIRTIO_NET_HDR_GSO_TCPV4
        return pack_vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, gtype, l4off + thl, gso_size, l4off, coff)
    if partial:
        return pack_vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, l4off, coff)
    return EMPTY_VNET_HDR


def complete_checksum(frame: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finish a partial checksum in place (what a NIC does for NEEDS_CSUM on transmit)."""
    pos = csum_start + csum_offset
    s = csum_add(frame[csum_start:])
    c = fold_complement(s)
    if c == 0 and csum_offset == 6:   # UDP: an all-zero result is sent as 0xffff (RFC 768)
        c = 0xFFFF
    frame[pos] = c >> 8
    frame[pos + 1] = c & 0xFF
