"""A TAP that vanishes under a running VTEP (``ip link del``): each dataplane notices it from
the fd, without spinning, and hands the VTEP to ``Node.tap_gone``; the port owner removes it
and tells that VTEP's ``vxtun up``, which exits 1 once none of its VTEPs is left.

No root: a deleted TAP's fd polls EPOLLERR and fails every read (tun_chr_poll,
tun_chr_read_iter); a pipe does the same (its write end polls EPOLLERR once the read end is
closed, and fails a read with EBADF; its read end polls EPOLLHUP once the write end is closed).
The whole scenario with real TAPs is tests/netns/test_hardening_tap.py.
"""
from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
import time
from types import SimpleNamespace

import pytest

from vxtun.dataplane.owner import Lease, Owner
from vxtun.dataplane.pure import PureBackend
from vxtun.io import tap
from vxtun.io.jsonlines import Channel

from stubs import OwnerNode, read_lines

DELETED = "the TAP was deleted (ip link del)"


class GoneNode:
    """What a backend sees of the node: who is told that a TAP failed."""

    def __init__(self) -> None:
        self.gone: list = []

    def tap_gone(self, port, err: int) -> None:
        self.gone.append((port, err))

    def after_core(self, port) -> None:
        pass


def test_tap_failures_are_worded_for_the_log():
    assert tap.failure(errno.EBADFD) == DELETED
    assert tap.failure(errno.EIO) == "the TAP failed (EIO: Input/output error)"
    assert "EPOLLHUP" in tap.failure(0)


def test_the_pure_loop_hands_over_a_tap_whose_read_fails():
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        node = GoneNode()
        port = SimpleNamespace(tap_fd=w, vtep=None)       # reading a write end: EBADF
        PureBackend(node)._on_tap(port)
        assert node.gone == [(port, errno.EBADF)]
    finally:
        os.close(r)
        os.close(w)


# --- the fast path's TX thread ------------------------------------------------------------


def cpu_over(seconds: float) -> float:
    """CPU time this process (all its threads) uses while sleeping ``seconds``."""
    t0 = time.process_time()
    time.sleep(seconds)
    return time.process_time() - t0


@pytest.mark.parametrize("event", ["epollerr", "epollhup"])
def test_the_tx_thread_stops_watching_a_failed_tap_and_says_so_once(event):
    from vxtun import _fastpath
    dp = _fastpath.Dataplane()
    socks = []

    def underlay() -> int:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.extend((rx, tx))
        return dp.add_underlay(rx.fileno(), tx.fileno(), 4, False)

    r, w = os.pipe2(os.O_NONBLOCK)
    fd, other, err = (w, r, errno.EBADF) if event == "epollerr" else (r, w, 0)
    try:
        uid = underlay()
        vid = dp.add_vtep(uid, 42, fd, socks[1].fileno(), b"\x02\0\0\0\0\x01", 1450, 32768,
                          61000, 4789, False, _fastpath.CFdb(), udp_gso=False)
        os.close(other)
        other = -1
        dp.start()
        assert select.select([dp.fileno()], [], [], 10)[0], "no punt for the failed TAP"
        assert dp.pop() == [(_fastpath.PUNT_KINDS["tap_gone"], vid,
                             err.to_bytes(4, sys.byteorder, signed=True))]
        # A thread spinning on the level-triggered event would burn about the whole interval.
        assert cpu_over(0.5) < 0.25
        # Threads restarted (an underlay comes) do not watch it again, nor say it again.
        underlay()
        assert cpu_over(0.5) < 0.25
        assert dp.pop() == []
        dp.remove_vtep(vid)
    finally:
        dp.stop()
        for s in socks:
            s.close()
        for x in (fd, other):
            if x >= 0:
                os.close(x)


# --- the owner and the lease ----------------------------------------------------------------


def test_the_owner_removes_the_vtep_and_tells_its_lease_only():
    node = OwnerNode()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a_ours, a_theirs = socket.socketpair()
    b_ours, b_theirs = socket.socketpair()
    try:
        owner = Owner(listener, node)
        assert node.on_tap_gone == owner._tap_gone
        ports = {}
        for sock in (a_ours, b_ours):
            sock.setblocking(False)
            lease = owner.leases[owner.serve_connection(sock)]
            names = ("vx42", "vx43") if sock is a_ours else ("vx44",)
            for name in names:
                ports[name] = SimpleNamespace(config=SimpleNamespace(name=name), lease=lease)
                lease.ports.append(ports[name])
                lease.attached = True
        # the first of two VTEPs: the up is told and keeps the other
        owner._tap_gone(ports["vx42"], DELETED)
        assert read_lines(a_theirs) == ([{"event": "gone", "name": "vx42", "error": DELETED}],
                                        False)
        assert node.removed == [ports["vx42"]] and not node.stopped
        # its last: told, then the end of the lease; the other lease runs on
        owner._tap_gone(ports["vx43"], DELETED)
        assert read_lines(a_theirs) == ([{"event": "gone", "name": "vx43", "error": DELETED}],
                                        True)
        assert node.removed == [ports["vx42"], ports["vx43"]] and not node.stopped
        assert [lease.ports for lease in owner.leases.values()] == [[ports["vx44"]]]
        assert read_lines(b_theirs) == ([], False)
        # the last VTEP of the namespace: the owner ends
        owner._tap_gone(ports["vx44"], DELETED)
        assert read_lines(b_theirs)[1] and node.stopped and not owner.leases
    finally:
        for s in (listener, a_ours, a_theirs, b_ours, b_theirs):
            s.close()
        node.loop.close()


@pytest.mark.parametrize("names", [["vxtun0"], ["vx42", "vx43"]])
def test_up_says_which_tap_vanished_and_exits_1_when_none_is_left(names, capsys):
    ours, theirs = socket.socketpair()
    try:
        lease = Lease(Channel(ours), {"pid": 1, "dataplane": "fast",
                                      "vteps": [{"name": n} for n in names]})
        for n in names:
            theirs.sendall(json.dumps({"event": "gone", "name": n, "error": DELETED}).encode()
                           + b"\n")
        theirs.close()
        assert lease.wait() == 1
        assert capsys.readouterr().err.splitlines() == [
            f"vxtun: {n}: the TAP was deleted (ip link del); the VTEP is gone" for n in names]
    finally:
        ours.close()
        theirs.close()


def test_up_exits_1_on_down_after_one_of_its_taps_vanished(capsys):
    ours, theirs = socket.socketpair()
    try:
        lease = Lease(Channel(ours), {"pid": 1, "dataplane": "pure",
                                      "vteps": [{"name": "vx42"}, {"name": "vx43"}]})
        theirs.sendall(b'{"event": "gone", "name": "vx42", "error": "x"}\n{"event": "down"}\n')
        assert lease.wait() == 1
        assert capsys.readouterr().err == "vxtun: vx42: x; the VTEP is gone\n"
    finally:
        ours.close()
        theirs.close()
