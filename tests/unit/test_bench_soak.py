"""bench/soak.py's verdicts, without a soak: the RSS slope after warm-up (least squares) and
"flat", and which results pass.  A soak that can only say "flat" proves nothing, so a leak
must be called one."""
from __future__ import annotations

import pytest

from bench import soak


def samples(kb_at, seconds: float = 600.0, step: float = 5.0) -> list[tuple[float, int]]:
    return [(t, int(kb_at(t))) for t in (i * step for i in range(int(seconds / step) + 1))]


def test_a_steady_rss_is_flat_and_its_slope_is_near_zero():
    # warm-up (the first quarter) may grow as much as it likes: tables fill, pages are touched
    rss = samples(lambda t: 40000 + (300 * t if t < 100 else 30000) + (t % 10))
    f = soak.flatness(rss, 600.0)
    assert f["flat"] is True and f["warmup_s"] == 150.0
    assert abs(f["slope_kb_per_min"]) < 5
    assert f["min_kb"] >= 70000


def test_a_leak_is_not_flat():
    # 1 MB a minute on 40 MB: 7.5 MB over the 450 s measured, above max(5%, 4 MB)
    rss = samples(lambda t: 40000 + 1024 * t / 60)
    f = soak.flatness(rss, 600.0)
    assert f["flat"] is False
    assert f["slope_kb_per_min"] == pytest.approx(1024, rel=0.01)
    assert f["growth_kb"] == pytest.approx(1024 * 450 / 60, rel=0.01)


def test_too_short_a_run_says_so_instead_of_passing_a_verdict():
    f = soak.flatness([(0.0, 100), (5.0, 100), (10.0, 100), (25.0, 100)], 30.0)
    assert f["flat"] is None and "run longer" in f["why"]


BASE = {"kind": "fast", "seconds": 60, "alive": True, "rss": {"flat": True, "samples": []},
        "transfers": 3, "bytes": 3 << 22, "byte_errors": 0, "storm": {}, "drops": {},
        "counters": {}, "kernel_vtep": {}, "loop_errors": {}}


@pytest.mark.parametrize("change, passes", [
    ({}, True),
    ({"rss": {"flat": None, "samples": []}}, True),          # too short to judge is no failure
    ({"byte_errors": 1}, False),
    ({"alive": False}, False),
    ({"transfers": 0}, False),
    ({"rss": {"flat": False, "samples": []}}, False),
])
def test_a_result_passes_only_alive_whole_and_flat(change, passes):
    assert soak.ok({**BASE, **change}) is passes
    assert soak.ok({"kind": "pure", "error": "the overlay does not answer"}) is False


def test_the_report_has_a_row_per_kind_and_names_errors():
    text = soak.report([{**BASE, "rss": {"flat": True, "mean_kb": 2048, "slope_kb_per_min": 0.5,
                                         "samples": [(0.0, 2048)]}},
                        {"kind": "pure", "error": "the overlay does not answer"}])
    rows = [ln for ln in text.splitlines() if ln.startswith("| fast") or ln.startswith("| pure")]
    assert rows[0].startswith("| fast | 60 | True | 3 | 13 | 0 | 2.0 | 0.5 | True |")
    assert rows[1] == "| pure | error: the overlay does not answer ||||||||"
