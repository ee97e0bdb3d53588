"""``vxtun fdb show`` of 100,000 learned entries, on both dataplanes, while traffic flows.

Before listings were paged, anything above about 2,240 entries ended in "VTEP vxtun0 closed
the control connection", and each attempt stalled the pure dataplane for over a second.  Now
the listing is whole (as text and as JSON), ``fdb show count`` and ``vxtun stats`` give the
size without listing, and pings through the VTEP during the listing all come back (a ping
lost here would be a stall of seconds: ping waits 5 s for each).  bench/listing.py measures
the same at 1,000,000 entries.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from vxtun.lab.netns import python, run

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.listing import fdb_count, fill, list_table, ping_during, setup  # noqa: E402

N = 100_000


def test_fdb_show_of_100k_entries_is_whole_and_traffic_flows(topo, dataplane):
    h1, h2, _up = setup(topo, dataplane)
    have = fill(h1, h2, N)
    assert have >= N
    rtts, sent, got, (_secs, lines) = ping_during(h1, lambda: list_table(h2))
    assert lines == have
    assert sent > 0 and got == sent, f"{sent - got} of {sent} pings lost during the listing"
    # as JSON too: one array, one row per destination
    p = run(f"ip netns exec {h2.ns} " + " ".join(python("-m", "vxtun", "-j", "fdb", "show",
                                                        "dev", "vxtun0")), timeout=600)
    rows = json.loads(p.stdout)
    assert len(rows) == have and len({r["mac"] for r in rows}) == have
    # the size without a listing
    assert fdb_count(h2) == have
    stats = json.loads(h2.cmd("stats", "dev", "vxtun0", "-j"))[0]
    assert stats["fdb"]["entries"] == have
    assert f"fdb entries {have} " in h2.cmd("stats", "dev", "vxtun0")
    assert h2.cmd("fdb", "show", "dev", "vxtun0", "count").strip() == \
        f"vxtun0: {have} fdb entries"
