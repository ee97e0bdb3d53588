"""The benchmark command still runs end to end (about 10 s): ``python -m bench.run --quick
--only kernel-kernel`` builds its topology, drives iperf3 and ping, parses them, writes the
JSON, Markdown and PNG, and leaves no namespace behind.  It checks that figures exist, never how
fast anything is (speed belongs to the benchmark itself, not to the tests)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vxtun.lab.netns import child_env, python

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_kernel_reference(netns_ready, tmp_path):
    p = subprocess.run(python("-m", "bench.run", "--quick", "--only", "kernel-kernel",
                              "--out", str(tmp_path)), cwd=ROOT, env=child_env(None, str(ROOT)),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    (js,) = tmp_path.glob("bench-*.json")
    assert js.with_suffix(".md").exists() and js.with_suffix(".png").exists()
    res = json.loads(js.read_text())
    ref = res["pairings"]["kernel-kernel"]
    assert "error" not in ref and "errors" not in ref, ref
    assert ref["tcp1"]["bps"] > 0 and ref["tcp4"]["bps"] > 0
    assert ref["udp64"]["pps"] > 0 and ref["udp1400"]["bps"] > 0
    assert ref["ping"]["received"] > 0 and 0 < ref["ping"]["p50_us"] <= ref["ping"]["p99_us"]
    assert res["meta"]["kernel"] and res["meta"]["cpu"]
    # The table printed at the end carries the reference row of every figure.
    assert "| TCP, 1 stream (Gbit/s) | kernel<->kernel |" in p.stdout
    # The benchmark tears its namespaces down.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ref["netns_prefix"] not in left
