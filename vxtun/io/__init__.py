"""The I/O edge: the TAP, the underlay sockets, netlink (pyroute2) and the control socket.
Each is a thin module; none of them makes a forwarding decision."""
