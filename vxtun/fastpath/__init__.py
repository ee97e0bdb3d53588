"""The fast path's Cython modules (built by setup.py; ``vxtun._fastpath`` exports them).

Each module owns one concern and states its C-level interface in its ``.pxd``, which the
modules above it cimport (the msgpack / uvloop layout), bottom to top:

* ``libc.pxd``: the libc and Linux declarations (threads, epoll, sockets, control messages).
* ``wire``: the wire rules of vxtun/wire in C: checksums, the VXLAN header, the source port,
  the virtio-net header, ECN, TSO; and their Python wrappers for the differential tests.
* ``fdb``: one VTEP's FDB as a C hash table (lookup, learn, expire, raw entries) and ``CFdb``,
  the store vxtun.fdb.table.Fdb applies its administrative rules over.
* ``neigh``: one VTEP's neighbour table as a C hash table, the ARP/ND proxy decided and
  answered from it (``fp_proxy_decide``), and ``CNeigh``, the store
  vxtun.proxy.neigh.NeighTable applies its rules over.
* ``decide``: the per-packet decisions, pure C functions mirroring Demux + Vtep
  (vxtun/core): a datagram or a frame in, an action struct out; ``Decisions`` drives them
  from Python.
* ``trace``: the ring of fixed-size trace records the threads fill while a VTEP is traced
  (``vxtun trace``); ``TraceRing`` drives it over ``Decisions`` for the tests.
* ``coalesce``: TCP segments delivered back to back become one GSO super-frame for the TAP.
* ``state.pxd``: the tables the threads run over (VTEPs, sockets, the punt queue).
* ``send``: carrying out a send: batched sendmmsg(), UDP GSO trains, the outer TOS.
* ``threads``: the punt queue, reading, and one thread main for both roles (TX, RX).
* ``dataplane``: ``Dataplane``, the Python face of the threads.
"""
