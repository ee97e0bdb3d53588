"""The walk's HTML page as a document: structure, escaping, no fetches, every step present.

(tests/browser/test_walk_chromium.py renders it in a real browser.)
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

from vxtun.lab.html import render
from vxtun.lab.walkmodel import Field, Host, Layer, Step, TableChange, Vtep, Walk

EVIL = '<script>alert("x")</script>&<em onclick="x">'


class Page(HTMLParser):
    """Elements with their attributes and the text inside each, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        (self.scripts if self._in_script else self.text).append(data)

    def by(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.elements
                if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def walk(steps: list[Step], hosts=None) -> Walk:
    if hosts is None:
        hosts = [Host(f"host{i}", [f"192.0.2.{i}/24"],
                      [Vtep("vxtun0" if i > 1 else "vxlan0", "vxtun" if i > 1 else "kernel", 42,
                            f"02:00:00:00:00:0{i}", [f"10.20.1.{i + 1}/24"])])
                 for i in (1, 2, 3)]
    return Walk("2", "multicast flood and learn", hosts, "239.1.1.1", steps)


def flood() -> Step:
    return Step(4, "the request goes to the group", 0.002, "host1", "datagram",
                "one datagram, two copies", "host1", ["host2", "host3"],
                [Layer("outer Ethernet", 14, [Field("destination MAC", "01:00:5e:01:01:01",
                                                    "A multicast MAC.")]),
                 Layer("outer IPv4", 20, [Field("TTL", "1", "1 towards a group.")]),
                 Layer("UDP", 8), Layer("VXLAN", 8, [Field("VNI", "42", "The segment.")]),
                 Layer("inner frame", 42)])


def steps() -> list[Step]:
    return [
        Step(1, "host1 sends an ARP request for 10.20.1.3", 0.0, "host1", "frame"),
        flood(),
        Step(3, "host2 learns 02:00:00:00:00:01 dst 192.0.2.1", 0.003, "host2", "table",
             tables=[TableChange("host2/vxtun0", "fdb", "added",
                                 "02:00:00:00:00:01 dev vxtun0 dst 192.0.2.1 self")]),
        Step(4, "the reply goes unicast", 0.004, "host2", "datagram", src="host2",
             dst=["host1"]),
        Step(5, "host2 forgets it", 0.005, "host2", "table",
             tables=[TableChange("host2/vxtun0", "fdb", "deleted",
                                 "02:00:00:00:00:01 dev vxtun0 dst 192.0.2.1 self")]),
        Step(6, "check: both learned", 0.006, "host1", "check", ok=True),
    ]


def test_one_document_with_every_step_as_a_row_and_a_detail_in_order():
    w = walk(steps())
    page = Page(render(w))
    assert render(w).startswith("<!doctype html>")
    rows = [a for t, a in page.elements if t == "g" and "row" in a.get("class", "")]
    arts = page.by("article")
    assert [a["data-step"] for a in rows] == [str(i) for i in range(1, 7)]
    assert [a["id"] for a in arts] == [f"step-{i}" for i in range(1, 7)]
    assert [a["data-title"] for a in arts] == [s.title for s in w.steps]
    text = "".join(page.text)
    for s in w.steps:
        assert s.title in text
    # Without the script every step shows (the script hides all but the current one).
    assert not any("hidden" in a for a in arts)
    assert "Step 1 of 6: host1 sends an ARP request for 10.20.1.3" in text


def test_topology_shows_hosts_vtep_kinds_addresses_and_the_group():
    text = "".join(Page(render(walk(steps()))).text)
    for needle in ("host1", "192.0.2.1/24", "vxlan0", "kernel", "vxtun", "VNI 42",
                   "10.20.1.2/24", "02:00:00:00:00:03", "multicast group 239.1.1.1"):
        assert needle in text


def test_a_flood_draws_one_arrow_per_copy_and_counts_them():
    html = render(walk([flood()]))
    row = html[html.index('<g class="row datagram" data-step="1"'):]
    row = row[:row.index("</g>")]
    assert row.count('class="arrow"') == 2
    assert "2 copies" in row
    assert "host1 \u2192 host2, host3 (2 copies)" in html


def test_layers_are_a_size_bar_and_a_field_table_with_explanations():
    page = Page(render(walk([flood()])))
    segs = [a for t, a in page.elements if t == "div" and a.get("class", "").startswith("seg ")]
    assert [a["title"] for a in segs] == ["outer Ethernet: 14 bytes", "outer IPv4: 20 bytes",
                                          "UDP: 8 bytes", "VXLAN: 8 bytes",
                                          "inner frame: 42 bytes"]
    text = "".join(page.text)
    assert "Headers \u00b7 92 bytes on the wire" in text
    for needle in ("01:00:5e:01:01:01", "A multicast MAC.", "1 towards a group.",
                   "The segment.", "VXLAN \u00b7 8 bytes"):
        assert needle in text


def test_table_changes_and_the_tables_after_each_step():
    html = render(walk(steps()))
    arts = re.findall(r'<article class="step".*?</article>', html, re.S)
    learned, forgot = arts[2], arts[4]
    assert "Tables changed" in learned and "Tables after this step" in learned
    assert "02:00:00:00:00:01 dev vxtun0 dst 192.0.2.1 self" in learned
    assert "Tables changed" in forgot and "\u2212" in forgot
    assert "Tables after this step" not in forgot          # the only entry is gone
    assert "Tables after this step" in arts[3]              # still there one step later


def test_checks_and_the_verdict():
    ok = render(walk(steps()))
    assert "all 1 checks passed" in ok and "\u2713 check passed" in ok
    bad = steps()
    bad[-1].ok = False
    html = render(walk(bad))
    assert "1 of 1 checks failed" in html and "\u2717 check failed" in html


def test_every_text_from_the_walk_is_escaped():
    hosts = [Host(EVIL, [EVIL], [Vtep(EVIL, EVIL, 42, EVIL, [EVIL])]), Host("h2")]
    s = Step(1, EVIL, 0.0, EVIL, "datagram", EVIL, EVIL, ["h2"],
             [Layer(EVIL, 8, [Field(EVIL, EVIL, EVIL)])],
             [TableChange(EVIL, EVIL, "added", EVIL)])
    w = Walk(EVIL, EVIL, hosts, EVIL, [s, Step(2, "two", 1.0, EVIL, EVIL)])
    html = render(w)
    assert "<script>alert" not in html
    assert "<em" not in html
    page = Page(html)
    assert len(page.by("script")) == 1                  # only the page's own script
    assert EVIL in "".join(page.text)                   # shown as text, intact


def test_nothing_is_fetched_the_page_is_self_contained():
    html = render(walk(steps()))
    assert not re.search(r"https?://", html)
    page = Page(html)
    for tag, attrs in page.elements:
        assert "src" not in attrs, (tag, attrs)
        assert not attrs.get("href", "#").strip("#"), (tag, attrs)
    assert not page.by("link")
    assert "@import" not in html and "url(" not in html.replace("url(#head)", "")
    assert "fetch(" not in html and "XMLHttpRequest" not in html


def test_controls_are_labelled_buttons_and_the_step_label_is_live():
    page = Page(render(walk(steps())))
    buttons = page.by("button")
    assert [b["id"] for b in buttons] == ["first", "prev", "play", "next", "last"]
    assert all(b.get("aria-label") and b.get("type") == "button" for b in buttons)
    assert page.by("p", id="where")[0]["aria-live"] == "polite"
    assert page.by("html")[0]["lang"] == "en"
    rows = [a for t, a in page.elements if t == "g" and "row" in a.get("class", "")]
    assert all(r["tabindex"] == "0" and r["aria-label"].startswith("step ") for r in rows)


def test_a_walk_without_topology_gets_a_column_per_named_host_and_an_empty_walk_renders():
    html = render(Walk("9", "bare", steps=steps()))
    assert html.count('class="host"') == 3
    empty = render(Walk("9", "nothing"))
    assert "This walk has no steps." in empty


def test_a_moved_mac_replaces_its_line_and_the_default_entry_keeps_one_line_per_remote():
    def fdb(change, line):
        return TableChange("host1/vxtun0", "fdb", change, line)

    zero = "00:00:00:00:00:00 dev vxtun0 dst 192.0.2.{} self permanent"
    html = render(walk([
        Step(1, "defaults", 0.0, "host1", "table",
             tables=[fdb("added", zero.format(2)), fdb("added", zero.format(3))]),
        Step(2, "learned", 0.1, "host1", "table",
             tables=[fdb("added", "02:00:00:00:00:09 dev vxtun0 dst 192.0.2.2 self")]),
        Step(3, "moved", 0.2, "host1", "table",
             tables=[fdb("changed", "02:00:00:00:00:09 dev vxtun0 dst 192.0.2.3 self")]),
    ]))
    last = re.findall(r'<article class="step".*?</article>', html, re.S)[-1]
    state = last[last.index("Tables after this step"):]
    assert zero.format(2) in state and zero.format(3) in state
    assert "02:00:00:00:00:09 dev vxtun0 dst 192.0.2.3 self" in state
    assert "dst 192.0.2.2 self<" not in state


def test_a_markers_label_drops_the_host_its_lifeline_shows_and_keeps_the_narrations_lines():
    s = Step(1, "host2: vxtun0 learned 02:00:00:00:00:01", 0.0, "host2", "table",
             "the source MAC of the inner frame\nagainst the outer source IP")
    html = render(walk([s]))
    row = html[html.index('<g class="row table"'):]
    row = row[:row.index("</g>")]
    assert 'aria-label="step 1: host2: vxtun0 learned' in row
    assert '">vxtun0 learned 02:00:00:00:00:01</text>' in row
    assert "the source MAC of the inner frame\nagainst the outer source IP" in html
    assert ".text { white-space: pre-line; }" in html
