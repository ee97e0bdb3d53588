"""Test vectors from Open vSwitch's tests/tunnel-push-pop.at ("tunnel_push_pop - action").

In that test the VXLAN port ``t2`` has ``options:key=123`` and the Geneve port ``t4`` key 123.
OVS prints the VXLAN header it pushes as ``vxlan(flags=<first 32-bit word>,vni=<VNI>)``:

* ``udp(src=0,dst=4789,csum=0x0),vxlan(flags=0x8000000,vni=0x7b)`` for key 123, and
* ``udp(src=0,dst=4789,csum=0x0),vxlan(flags=0xc000003,vni=0x159)`` for the VXLAN-GPE port
  (key 345, ``exts=gpe``), whose P bit and next-protocol byte a plain VTEP must refuse.

``OVS_GENEVE_FRAME`` is the datagram of the step "Check decapsulation of Geneve packet with
options" (UDP 6081, VNI 0x7b); its inner frame, a 98-byte ICMP echo reply 30.0.0.1 -> 30.0.0.2,
is the one every GRE decapsulation step carries too, and OVS counts it as "rx pkts=1,
bytes=98".  ``OVS_ARP_REQUEST`` is the ARP request its br0 sends for 1.1.2.92.
"""
import struct

OVS_VXLAN_PUSH = struct.pack("!II", 0x8000000, 0x7B << 8)
OVS_GPE_PUSH = struct.pack("!II", 0xC000003, 0x159 << 8)

OVS_INNER_ECHO_REPLY = bytes.fromhex(
    "fe71d883724fbeb6f4e1494a080045000054ba200000400184861e0000011e00000200004227e754"
    "00030af3195500000000f265010000000000101112131415161718191a1b1c1d1e1f202122232425"
    "262728292a2b2c2d2e2f3031323334353637")

OVS_GENEVE_FRAME = bytes.fromhex(
    "aa55aa550000001b213cab64080045000096794640004011ba5b0101025c01010258308817c10082"
    "00000400655800007b00ffff80010000000affff00010000000bfe71d883724fbeb6f4e1494a0800"
    "45000054ba200000400184861e0000011e00000200004227e75400030af3195500000000f2650100"
    "00000000101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f30313233"
    "34353637")

OVS_ARP_REQUEST = bytes.fromhex(
    "ffffffffffffaa55aa55000008060001080006040001aa55aa550000010102580000000000000101025c")
