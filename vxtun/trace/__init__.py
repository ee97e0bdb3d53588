"""``vxtun trace``: a record of every decision a running VTEP makes, one per frame or datagram.

* vxtun/trace/summary.py: the one-line summary of an inner frame (tcpdump's words);
* vxtun/trace/records.py: the record, its JSON and text forms, and the server-side filter;
* vxtun/trace/reference.py: records of the pure core's decisions;
* vxtun/trace/hub.py: the control connections that trace a VTEP (as monitors get events);
* vxtun/fastpath/trace.pyx: the C fast path's bounded ring of fixed-size records.
"""
from .records import TraceFilter, format_record, record
from .summary import addresses, summarize

__all__ = ["TraceFilter", "addresses", "format_record", "record", "summarize"]
