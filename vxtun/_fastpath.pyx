# cython: language_level=3
"""The fast path: vxtun's per-packet rules in C, run by two threads that never take the GIL.

This module ties the package vxtun/fastpath together and exports what the rest of vxtun uses
(``from vxtun import _fastpath``).  Each concern lives in one module of that package, each with
a ``.pxd`` that the next one cimports (see vxtun/fastpath/__init__.py for the map).  Every rule
mirrors a pure-Python reference (vxtun/wire, vxtun/fdb, vxtun/core); the tests in
tests/unit/test_fastpath_*.py hold the two equal.  The pure core stays the specification:
when they disagree, the C is wrong.
"""
from vxtun.fastpath.coalesce import coalesce
from vxtun.fastpath.dataplane import Dataplane
from vxtun.fastpath.decide import PUNT_KINDS, Decisions
from vxtun.fastpath.fdb import CFdb
from vxtun.fastpath.neigh import CNeigh
from vxtun.fastpath.send import tnl_headers
from vxtun.fastpath.threads import flow_queue, rx_express
from vxtun.fastpath.trace import TRACE_CAP, TRACE_HEAD, TraceRing
from vxtun.fastpath.wire import (
    complete_checksum,
    csum_add,
    decode_header,
    ecn_decapsulate,
    encap_tos,
    reserved_bits_set,
    rx_vnet_header,
    source_port,
    tso_segment,
)

__all__ = ["CFdb", "CNeigh", "Dataplane", "Decisions", "PUNT_KINDS", "coalesce",
           "complete_checksum", "csum_add", "decode_header", "ecn_decapsulate", "encap_tos",
           "reserved_bits_set", "rx_vnet_header", "source_port", "tnl_headers", "tso_segment",
           "TraceRing", "TRACE_CAP", "TRACE_HEAD", "flow_queue", "rx_express"]
