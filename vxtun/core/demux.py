"""Underlay demultiplexing: one UDP port, many VTEPs, chosen by VNI (like a vxlan_sock).

The kernel keeps one UDP socket per (port, family) in a namespace and looks up the device by VNI
(vxlan_vs_find_vni).  Datagrams rejected before a VTEP is known (too short, I flag clear, VNI not
served) are counted here, on the socket, as the kernel counts them on the socket's devices.
"""
from __future__ import annotations

from ..wire.vxlan import decode_header
from .stats import Stats


class Demux:
    def __init__(self) -> None:
        self.vteps: dict = {}
        self.stats = Stats()

    def add(self, vtep) -> None:
        self.vteps[vtep.config.vni] = vtep

    def remove(self, vni: int) -> None:
        self.vteps.pop(vni, None)

    def handle_datagram(self, data: bytes, src_ip: str, now: float, outer_tos: int = 0) -> list:
        """A datagram from the UDP socket, from ``src_ip``, with the outer IPv4 TOS / IPv6
        traffic class ``outer_tos`` (IP_RECVTOS / IPV6_RECVTCLASS)."""
        vni, reason = decode_header(data)
        if reason is not None:
            self.stats.drop(reason)
            return []
        vtep = self.vteps.get(vni)
        if vtep is None:
            self.stats.drop("vni_not_found")
            return []
        return vtep.handle_datagram(data, src_ip, now, outer_tos)
