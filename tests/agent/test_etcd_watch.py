"""The etcd watch reader (vxtun/agent/etcd.py) on a canned stream: no etcd, no root."""
from __future__ import annotations

import base64
import json

import pytest

from vxtun.agent.etcd import _EtcdWatch
from vxtun.agent.store import Change, Unreachable


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Stream:
    """A /v3/watch response: lines, then whatever a line in the list raises."""
    status = 200

    def __init__(self, lines: list) -> None:
        self.lines = lines

    def readline(self):
        item = self.lines.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class Conn:
    sock = None

    def close(self) -> None:
        pass


class Store:
    def __init__(self, lines: list) -> None:
        self.lines = lines

    def _open(self, path, body, timeout):
        return Conn(), Stream(self.lines)


def event(key: str, value: str, rev: int) -> bytes:
    kv = {"key": b64(key), "value": b64(value), "mod_revision": str(rev)}
    return json.dumps({"result": {"events": [{"kv": kv}]}}).encode() + b"\n"


def test_a_stream_that_breaks_in_any_way_ends_the_watch_with_unreachable():
    # What http.client raised when the stream was cut under a readline (seen in
    # bench.control): not an OSError, and the reader thread used to die without a word.
    cut = AttributeError("'NoneType' object has no attribute 'close'")
    w = _EtcdWatch(Store([event("/vxtun/a", "1", 7), cut]), "/vxtun/", 7)
    assert w.next(5) == [Change("put", "/vxtun/a", "1", 7)]
    with pytest.raises(Unreachable, match="AttributeError"):
        w.next(5)
