"""Wire formats: the VXLAN header (RFC 7348), Ethernet/ARP/ND helpers and the virtio-net
header that carries checksum and segmentation offload state across the TAP."""
