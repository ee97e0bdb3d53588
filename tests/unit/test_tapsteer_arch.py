"""The steering program's bpf() number comes from the machine (vxtun/io/tapsteer.py): on one
vxtun does not know, no program is loaded and the TAP keeps tun's automq, with the reason.
No root (nothing is loaded)."""
from __future__ import annotations

import platform
import sys

from vxtun.io import tapsteer


def test_this_machines_bpf_number_is_known():
    if platform.machine() == "x86_64":
        assert tapsteer.SYS_BPF == 321
    elif platform.machine() == "aarch64":
        assert tapsteer.SYS_BPF == 280
    assert sys.byteorder != "little" or tapsteer.SYS_BPF is not None or \
        platform.machine() not in tapsteer._SYS_BPF


def test_an_unknown_machine_steers_nothing_and_says_why(monkeypatch):
    monkeypatch.setattr(tapsteer, "SYS_BPF", None)
    why = tapsteer.steer(-1, b"\x02\x00\x00\x00\x00\x01", 4)
    assert why is not None and why.startswith("no steering program: bpf() on "), why
