"""Running VTEPs: the process that owns TAPs and sockets, and the per-packet loops.

``node.Node`` opens everything and serves the control sockets; the per-packet work is done by a
backend: ``pure.PureBackend`` (the core in Python, VXTUN_PUREPYTHON=1) or ``fast.FastBackend``
(``vxtun/_fastpath.pyx``, C threads without the GIL).  ``select_backend()`` chooses at start.
"""
import os


def use_pure() -> bool:
    return os.environ.get("VXTUN_PUREPYTHON", "") not in ("", "0")
