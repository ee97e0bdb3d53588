"""vxtun: a userspace VXLAN tunnel endpoint that talks to the Linux kernel's vxlan driver.

The pure-Python core (``vxtun.core``, ``vxtun.fdb``, ``vxtun.proxy``, ``vxtun.wire``) decides
what every frame and datagram becomes; ``vxtun._fastpath`` runs the same rules in C.
"""
__version__ = "0.1.0"
