"""The walk's HTML page in a real browser: headless Chromium runs its script and draws it.

The walk is scenario 2 as the lab sees it (tests/browser/fixtures/walk2.json): three hosts, a
kernel VTEP and two vxtun ones, the ARP request flooded to the group, the learned entries, the
unicast reply and the ping, with the captured datagrams as bytes that go through layers_of().
Chromium (Debian's ``chromium``, installed by .ci/run) is required: without it these tests fail.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cdp import Browser

from vxtun.lab.html import render
from vxtun.lab.layers import layers_of
from vxtun.lab.walkmodel import Walk

FIXTURE = Path(__file__).parent / "fixtures" / "walk2.json"
WIDTH, HEIGHT = 1280, 800


def scenario2_walk() -> Walk:
    """The fixture's steps, each captured datagram ("frame", hex) taken apart by layers_of."""
    data = json.loads(FIXTURE.read_text())
    first: set[str] = set()
    for step in data["steps"]:
        frame = step.pop("frame", None)
        if frame:
            step["layers"] = [{"name": la.name, "size": la.size,
                               "fields": [vars(f) for f in la.fields]}
                              for la in layers_of(bytes.fromhex(frame), first)]
    return Walk.from_json(data)


@pytest.fixture(scope="module")
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("the browser tests need Chromium: apt-get install chromium (.ci/run does)",
                pytrace=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> tuple[Path, Walk]:
    walk = scenario2_walk()
    path = tmp_path_factory.mktemp("walk") / "walk2.html"
    path.write_text(render(walk))
    return path, walk


def run_chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp / 'profile'}",
           f"--window-size={WIDTH},{HEIGHT}", *args]
    env = dict(os.environ, HOME=str(tmp))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert res.returncode == 0, f"chromium failed ({res.returncode}): {res.stderr[-2000:]}"
    return res


class Dom(HTMLParser):
    """The rendered DOM's elements and the text of every element with an id."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.text_of: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if tag not in ("br", "meta", "input", "img", "line", "path", "rect", "circle"):
            self._open.append(a.get("id"))
            if a.get("id"):
                self.text_of[a["id"]] = ""

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for i in self._open:
            if i:
                self.text_of[i] += data


def dump_dom(chromium: str, tmp: Path, *args: str) -> Dom:
    return Dom(run_chromium(chromium, tmp, "--dump-dom", *args).stdout)


def test_the_script_shows_the_step_the_address_names(chromium, page, tmp_path):
    path, walk = page
    dom = dump_dom(chromium, tmp_path, path.as_uri() + "#step-4")
    body = [a for t, a in dom.elements if t == "body"][0]
    assert body.get("data-step") == "4", "the page's script did not run"
    assert dom.text_of["where"] == f"Step 4 of {len(walk.steps)}: {walk.steps[3].title}"
    articles = [a for t, a in dom.elements if t == "article"]
    assert [a["data-title"] for a in articles] == [s.title for s in walk.steps]
    assert ["hidden" in a for a in articles] == [i != 3 for i in range(len(walk.steps))]
    current = [a for t, a in dom.elements if t == "g" and "current" in a.get("class", "")]
    assert [a["data-step"] for a in current] == ["4"]
    assert current[0]["aria-current"] == "step"
    # Every step's label is in the rendered DOM, as the diagram's rows and as the details.
    rows = [a for t, a in dom.elements if t == "g" and "row" in a.get("class", "").split()]
    assert [a["aria-label"] for a in rows] == [f"step {i + 1}: {s.title}"
                                               for i, s in enumerate(walk.steps)]
    # Step 4 is the flood: its detail holds the datagram's layers from layers_of().
    flood = dom.text_of["step-4"]
    for needle in ("Headers \u00b7 92 bytes on the wire", "239.1.1.1", "VNI", "42",
                   "host1 \u2192 host2, host3 (2 copies)", "RFC 7348"):
        assert needle in flood
    buttons = {a["id"]: a for t, a in dom.elements if t == "button"}
    assert "disabled" not in buttons["prev"] and "disabled" not in buttons["next"]


def test_the_first_and_last_steps_disable_the_buttons_that_lead_nowhere(chromium, page,
                                                                        tmp_path):
    path, walk = page
    first = dump_dom(chromium, tmp_path, path.as_uri())
    buttons = {a["id"]: a for t, a in first.elements if t == "button"}
    assert "disabled" in buttons["prev"] and "disabled" in buttons["first"]
    assert "disabled" not in buttons["next"]
    assert first.text_of["where"] == f"Step 1 of {len(walk.steps)}: {walk.steps[0].title}"
    # A step number past the end shows the last step.
    last = dump_dom(chromium, tmp_path, path.as_uri() + "#step-999")
    assert last.text_of["where"].startswith(f"Step {len(walk.steps)} of {len(walk.steps)}: ")
    buttons = {a["id"]: a for t, a in last.elements if t == "button"}
    assert "disabled" in buttons["next"] and "disabled" not in buttons["prev"]


def test_the_page_renders_to_a_png_at_1280x800(chromium, page, tmp_path):
    path, _ = page
    png = tmp_path / "walk2-step4.png"
    run_chromium(chromium, tmp_path, f"--screenshot={png}", path.as_uri() + "#step-4")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack("!II", data[16:24]) == (WIDTH, HEIGHT)
    # A blank page compresses to a few kilobytes; the diagram and the tables do not.
    assert len(data) > 40_000, f"{png} looks empty ({len(data)} bytes)"
    print(f"screenshot: {png}")


def test_the_fixture_is_a_realistic_scenario_2_walk():
    walk = scenario2_walk()
    kinds = {v.kind for h in walk.hosts for v in h.vteps}
    assert {"kernel", "vxtun"} <= kinds
    flood = [s for s in walk.steps if len(s.dst) > 1]
    assert len(flood) == 1 and flood[0].layers
    sizes = [(la.name, la.size) for la in flood[0].layers]
    assert sizes == [("outer Ethernet", 14), ("outer IPv4", 20), ("UDP", 8), ("VXLAN", 8),
                     ("inner frame", 42)]
    ttl = {f.name: f.value for la in flood[0].layers for f in la.fields}["TTL"]
    assert ttl == "1"
    assert any(re.search(r"learns .* dst 192\.0\.2\.1", s.title) for s in walk.steps)


def test_play_advances_a_step_every_few_seconds_and_stops_at_the_end(chromium, page,
                                                                     tmp_path):
    path, walk = page
    # Virtual time: Chromium runs the page's timers for this many milliseconds, at once.
    playing = dump_dom(chromium, tmp_path, "--virtual-time-budget=5000", path.as_uri() + "#play")
    body = [a for t, a in playing.elements if t == "body"][0]
    assert body["data-step"] == "3"                 # two steps on, 2.2 s apart
    play = [a for t, a in playing.elements if t == "button" and a["id"] == "play"][0]
    assert play["aria-pressed"] == "true" and play["aria-label"] == "pause the walk"
    done = dump_dom(chromium, tmp_path, "--virtual-time-budget=60000", path.as_uri() + "#play")
    body = [a for t, a in done.elements if t == "body"][0]
    assert body["data-step"] == str(len(walk.steps))
    play = [a for t, a in done.elements if t == "button" and a["id"] == "play"][0]
    assert play["aria-pressed"] == "false"


@pytest.fixture
def browser(chromium, page, tmp_path):
    b = Browser(chromium, tmp_path / "cdp-profile", WIDTH, HEIGHT)
    try:
        b.open(page[0].as_uri())
        b.wait_for("document.body && document.body.dataset.step === '1'")
        yield b
    finally:
        b.close()


SHOWN = ("[document.body.dataset.step, document.getElementById('where').textContent, "
         "Array.prototype.filter.call(document.querySelectorAll('article.step'), "
         "function (a) { return !a.hidden; }).map(function (a) { return a.id; }), "
         "Array.prototype.map.call(document.querySelectorAll('g.row.current'), "
         "function (g) { return g.getAttribute('data-step'); })]")


def shown(browser: Browser) -> tuple[int, str]:
    """The step the page shows, checked to agree across the label, the detail and the row."""
    step, where, articles, rows = browser.eval(SHOWN)
    assert articles == [f"step-{step}"] and rows == [step]
    return int(step), where


def test_keys_step_forward_back_and_jump(browser, page):
    walk = page[1]
    browser.key("ArrowRight", 39)
    browser.key("ArrowRight", 39)
    assert shown(browser) == (3, f"Step 3 of {len(walk.steps)}: {walk.steps[2].title}")
    browser.key("ArrowLeft", 37)
    assert shown(browser)[0] == 2
    browser.key("End", 35)
    assert shown(browser)[0] == len(walk.steps)
    browser.key("ArrowRight", 39)                       # nothing after the last step
    assert shown(browser)[0] == len(walk.steps)
    browser.key("Home", 36)
    assert shown(browser)[0] == 1


def test_space_plays_and_pauses(browser):
    browser.key(" ", 32)
    assert browser.eval("document.getElementById('play').getAttribute('aria-pressed')") == "true"
    browser.wait_for("document.body.dataset.step === '2'", timeout=15)
    browser.key(" ", 32)
    assert browser.eval("document.getElementById('play').getAttribute('aria-pressed')") == "false"


def test_clicking_an_arrow_or_a_button_shows_that_step(browser, page):
    walk = page[1]
    browser.click('g.row[data-step="9"] line.arrow')      # the unicast reply's arrow
    assert shown(browser) == (9, f"Step 9 of {len(walk.steps)}: {walk.steps[8].title}")
    browser.click("#next")
    assert shown(browser)[0] == 10
    browser.click("#prev")
    browser.click("#prev")
    assert shown(browser)[0] == 8
    browser.click("#last")
    assert shown(browser)[0] == len(walk.steps)
    assert browser.eval("document.getElementById('next').disabled") is True
