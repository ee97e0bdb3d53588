"""The soak benchmark (bench/soak.py) still runs end to end, briefly, on each dataplane: every
kind of traffic at once against a kernel VTEP (TCP both ways byte-compared, a MAC flood, an
ARP storm, control commands in a loop, a monitor that never reads), and vxtun comes out of it
alive, with no byte error and no failed control command.  Thirty seconds is too short to judge
the RSS (the verdict is then None, not a pass): that takes the real run, ``python3 -m
bench.soak --minutes 30``.  It checks that the figures exist, never how fast anything is."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vxtun.lab.netns import child_env, python

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_soak_leaves_vxtun_alive_and_whole(netns_ready, dataplane):
    kind = "pure" if dataplane.get("VXTUN_PUREPYTHON") == "1" else "fast"
    p = subprocess.run(python("-m", "bench.soak", "--minutes", "0.5", "--only", kind,
                              "--storm-rate", "5000", "--json"), cwd=ROOT,
                       env=child_env(None, str(ROOT)), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    (r,) = json.loads(p.stdout[p.stdout.index("\n[") + 1:])
    assert r["kind"] == kind and "error" not in r, r
    assert r["alive"] and r["byte_errors"] == 0 and r["transfers"] > 0, r
    assert r["loop_errors"] == {}, r["loop_errors"]
    assert len(r["rss"]["samples"]) >= 3 and r["rss"]["flat"] is None
    assert r["storm"]["taken"] > 0, r["storm"]
    assert r["counters"]["proxy_replies"] > 0, r["counters"]
