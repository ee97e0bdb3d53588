"""The benchmark command still runs end to end (about a minute): ``python -m bench.run --quick
--only kernel-kernel --vteps 2`` builds its topologies, drives iperf3, ping and the packet-rate
generator (bench/pktgen.c, against the kernel and vxtun), parses them, writes the JSON, Markdown
and PNG, and leaves no namespace behind.  It checks that figures exist, never how fast anything
is (speed belongs to the benchmark itself, not to the tests)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vxtun.lab.netns import child_env, python

ROOT = Path(__file__).resolve().parents[2]


def test_bench_quick_kernel_reference(netns_ready, tmp_path):
    p = subprocess.run(python("-m", "bench.run", "--quick", "--only", "kernel-kernel",
                              "--vteps", "2", "--out", str(tmp_path)), cwd=ROOT,
                       env=child_env(None, str(ROOT)), capture_output=True, text=True,
                       timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    (js,) = tmp_path.glob("bench-*.json")
    assert js.with_suffix(".md").exists() and js.with_suffix(".png").exists()
    res = json.loads(js.read_text())
    ref = res["pairings"]["kernel-kernel"]
    assert "error" not in ref and "errors" not in ref, ref
    assert ref["tcp1"]["bps"] > 0 and ref["tcp4"]["bps"] > 0
    assert ref["udp64"]["pps"] > 0 and ref["udp1400"]["bps"] > 0
    assert ref["ping"]["received"] > 0 and 0 < ref["ping"]["p50_us"] <= ref["ping"]["p99_us"]
    load = ref["ping_load"]
    assert load["received"] > 0 and 0 < load["p50_us"] <= load["p99_us"]
    assert load["load"]["bps"] > 0                  # the stream ran the other way meanwhile
    assert ref["tcp16"]["bps"] > 0 and ref["rest"]["seconds"] > 0
    assert ref["many_vteps"]["streams"] == 2 and ref["many_vteps"]["bps"] > 0
    # The same pairing over the IPv6 underlay.
    v6 = ref["ipv6"]
    assert "error" not in v6 and v6["tcp1"]["bps"] > 0 and v6["ping"]["received"] > 0, v6
    assert "| TCP, 1 stream, IPv6 underlay (Gbit/s) | kernel<->kernel |" in p.stdout
    # The packet rate, both directions and sizes, against the kernel and the fast path.
    pps = res["pps"]
    for direction in ("decap", "encap"):
        for kind in ("kernel", "vxtun"):
            r = pps[direction][kind]
            assert "error" not in r, r
            for size in ("64", "1400"):
                t = r[size]
                assert t["sent"] > 0 and t["delivered"] > 0, t
                assert t["delivered"] <= t["sent"] * 1.01 + 50, t     # nothing out of thin air
        assert pps[direction]["vxtun"]["64"]["vtep_cpu"] is not None
    assert "| decap | 64 B | vxtun |" in p.stdout and "| encap | 1400 B | kernel |" in p.stdout
    assert res["meta"]["kernel"] and res["meta"]["cpu"]
    # The table printed at the end carries the reference row of every figure.
    assert "| TCP, 1 stream (Gbit/s) | kernel<->kernel |" in p.stdout
    # The benchmark tears its namespaces down.
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert ref["netns_prefix"] not in left and v6["netns_prefix"] not in left
