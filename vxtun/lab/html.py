"""The packet walk as one self-contained HTML page (``vxtun lab walk N --html FILE``).

``render(walk)`` returns the page as a string.  Everything is inline: the CSS, an SVG drawn
here, and a short script; the page fetches nothing, so it opens from a file, offline, and can be
mailed to a class.  It shows:

* the topology: one box per host with its underlay addresses and each VTEP's name, kind
  (kernel / vxtun), VNI, MAC and overlay addresses, all on the underlay (and its group);
* the walk as a sequence diagram drawn on the same columns: a lifeline under each host and one
  row per step, an arrow from the step's source to each destination (a flood's replicated
  copies are drawn side by side and counted), a marker for steps that stay on one host;
* the current step's detail: its narration, the datagram's layers as a byte-size bar and a
  field table with the explanations, the table changes, and a check's result.

A learner replays it with the Back / Next / Play buttons, the arrow keys (space plays and
pauses, Home and End jump), or by clicking a row of the diagram; ``page.html#step-5`` opens a
given step and ``page.html#play`` plays the walk from the start (for a classroom screen).
Without the script every step's detail shows, one after the other.

All text from the walk is escaped (``html.escape``): a step title or a table line is data, and
a MAC or hostname that happens to hold markup must show as text.
"""
from __future__ import annotations

from html import escape

from .walkmodel import Host, Layer, Step, TableChange, Walk

# Geometry of the diagram, in SVG user units (CSS pixels at scale 1).
COL_W = 190            # one column per host
LEFT = 40              # the step numbers
BOX_TOP = 8
LINE_H = 15            # one text line in a host box
ROW_H = 38             # one step of the sequence diagram
COPY_GAP = 5           # vertical offset between the copies of a replicated datagram
CHAR_W = 6.4           # average width of a 12px sans-serif character, to shorten labels

LAYER_CLASS = {"outer Ethernet": "eth", "outer IPv4": "ip", "outer IPv6": "ip", "UDP": "udp",
               "VXLAN": "vxlan", "inner frame": "inner"}
KIND_MARK = {"table": "\u2261", "note": "i", "frame": "\u25b8", "datagram": "\u25b8"}
ZERO_MAC = "00:00:00:00:00:00"
CHANGE_SIGN = {"added": "+", "deleted": "\u2212", "changed": "~"}


def render(walk: Walk) -> str:
    """The whole page for ``walk``."""
    title = f"vxtun packet walk: scenario {walk.scenario}, {walk.title}"
    checks = [s for s in walk.steps if s.kind == "check"]
    failed = sum(1 for s in checks if s.ok is False)
    if failed:
        verdict = f'<span class="verdict bad">{failed} of {len(checks)} checks failed</span>'
    elif checks:
        verdict = f'<span class="verdict good">all {len(checks)} checks passed</span>'
    else:
        verdict = ""
    total = len(walk.steps)
    states = _table_states(walk.steps)
    details = "\n".join(_step_detail(s, i, total, states[i])
                        for i, s in enumerate(walk.steps)) or \
        '<p class="empty">This walk has no steps.</p>'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>Scenario {escape(walk.scenario)}: {escape(walk.title)} {verdict}</h1>
<div class="controls" role="toolbar" aria-label="replay the walk">
{BUTTONS}
<p id="where" aria-live="polite">{_where(walk.steps[0], 0, total) if total else "no steps"}</p>
<span class="keys">keys: \u2190 \u2192 step, space play, Home End</span>
</div>
</header>
<main>
<section class="diagram" aria-label="topology and sequence diagram">
{_diagram(walk)}
{LEGEND}
</section>
<section class="details" aria-label="the current step">
{details}
</section>
</main>
<script>{JS}</script>
</body>
</html>
"""


# The replay controls: id, label for assistive technology, tooltip with the key, text.
BUTTONS = "\n".join(
    f'<button id="{i}" type="button" aria-label="{label}" title="{tip}"'
    + (' aria-pressed="false"' if i == "play" else "") + f">{text}</button>"
    for i, label, tip, text in (
        ("first", "first step", "first step (Home)", "\u00ab First"),
        ("prev", "previous step", "previous step (\u2190)", "\u25c0 Back"),
        ("play", "play the walk", "play / pause (space)", "\u25b6 Play"),
        ("next", "next step", "next step (\u2192)", "Next \u25b6"),
        ("last", "last step", "last step (End)", "Last \u00bb")))
DOT = " \u00b7 "


def _where(step: Step, i: int, total: int) -> str:
    return f"Step {i + 1} of {total}: {escape(step.title)}"


# --- the diagram: topology on top, lifelines and one row per step below -------------------

def _diagram(walk: Walk) -> str:
    hosts = walk.hosts or _hosts_named_in(walk.steps)
    col = {h.name: i for i, h in enumerate(hosts)}
    width = LEFT + COL_W * max(len(hosts), 1) + 10
    box_h = max((_box_lines(h) for h in hosts), default=1) * LINE_H + 12
    bus_y = BOX_TOP + box_h + 18
    top = bus_y + 34                              # where the lifelines start
    height = top + ROW_H * len(walk.steps) + 16
    out = [f'<svg id="diagram" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="group" aria-labelledby="diagram-title">',
           f'<title id="diagram-title">{escape(_diagram_title(walk, hosts))}</title>',
           DEFS]
    # The underlay: every host's box hangs from one segment (and, if any, the group).
    x0, x1 = _x(0), _x(max(len(hosts) - 1, 0))
    under = "underlay" + (f" \u00b7 multicast group {walk.group}" if walk.group else "")
    out.append(f'<line class="bus" x1="{x0 - 60}" y1="{bus_y}" x2="{x1 + 60}" y2="{bus_y}"/>')
    out.append(f'<text class="bus-label" x="{x0 - 60}" y="{bus_y + 16}">{escape(under)}</text>')
    for i, h in enumerate(hosts):
        out.append(_host_box(h, _x(i), box_h, bus_y, top, height - 8))
    for i, s in enumerate(walk.steps):
        out.append(_row(s, i, top + ROW_H * i, col, width))
    out.append("</svg>")
    return "\n".join(out)


def _diagram_title(walk: Walk, hosts: list[Host]) -> str:
    names = ", ".join(h.name for h in hosts)
    return f"Hosts {names} on one underlay; {len(walk.steps)} steps as a sequence diagram"


def _hosts_named_in(steps: list[Step]) -> list[Host]:
    """A walk without topology still gets a column per host its steps name."""
    names: list[str] = []
    for s in steps:
        for n in (s.actor, s.src, *s.dst):
            if n and n not in names:
                names.append(n)
    return [Host(n) for n in names]


def _x(i: int) -> float:
    return LEFT + COL_W * i + COL_W / 2


def _box_lines(h: Host) -> int:
    return 1 + len(h.underlay) + sum(3 + max(len(v.overlay) - 1, 0) for v in h.vteps)


def _host_box(h: Host, x: float, box_h: int, bus_y: int, top: int, bottom: int) -> str:
    w = COL_W - 16
    left = x - w / 2
    lines = [f'<text class="host-name" x="{x}" y="{BOX_TOP + 17}">{escape(h.name)}</text>']
    y = BOX_TOP + 17
    for a in h.underlay:
        y += LINE_H
        lines.append(f'<text class="addr" x="{x}" y="{y}">{escape(a)}</text>')
    for v in h.vteps:
        y += LINE_H
        kind = "kernel" if v.kind == "kernel" else "vxtun"
        lines.append(f'<text x="{x}" y="{y}"><tspan class="vtep">{escape(v.name)}</tspan> '
                     f'<tspan class="kind {kind}">{escape(v.kind)}</tspan> '
                     f'<tspan class="addr">VNI {v.vni}</tspan></text>')
        y += LINE_H
        lines.append(f'<text class="addr" x="{x}" y="{y}">MAC {escape(v.mac or "?")}</text>')
        for a in v.overlay or ["(no overlay address)"]:
            y += LINE_H
            lines.append(f'<text class="overlay" x="{x}" y="{y}">{escape(a)}</text>')
    return "\n".join([
        f'<g class="host" data-host="{escape(h.name)}">',
        f'<line class="drop" x1="{x}" y1="{BOX_TOP + box_h}" x2="{x}" y2="{bus_y}"/>',
        f'<rect class="box" x="{left}" y="{BOX_TOP}" width="{w}" height="{box_h}" rx="6"/>',
        *lines,
        f'<line class="lifeline" x1="{x}" y1="{top - 10}" x2="{x}" y2="{bottom}"/>',
        "</g>"])


def _row(s: Step, i: int, y0: int, col: dict[str, int], width: int) -> str:
    """One step: a clickable band with its number, its arrows or marker, and a short label."""
    y = y0 + ROW_H - 11                     # the (lowest) arrow's height in the band
    kind = s.kind if s.kind in ("frame", "datagram", "table", "note", "check") else "note"
    if kind == "check":
        kind = "check-ok" if s.ok is not False else "check-bad"
    parts = [f'<g class="row {kind}" data-step="{i + 1}" data-actor="{escape(s.actor)}" '
             f'tabindex="0" role="button" aria-label="step {i + 1}: {escape(s.title)}">',
             f'<title>{escape(s.title)}</title>',
             f'<rect class="band" x="0" y="{y0}" width="{width}" height="{ROW_H}"/>',
             f'<text class="num" x="{LEFT / 2}" y="{y + 4}">{i + 1}</text>']
    targets = [col[d] for d in s.dst if d in col]
    if s.src in col and targets:
        src = col[s.src]
        xs = _x(src)
        # Copies side by side, nearest first, squeezed so that many still fit in the row.
        gap = min(COPY_GAP, 10 / max(len(targets) - 1, 1))
        for k, t in enumerate(sorted(targets, key=lambda t: abs(t - src))):
            yk = y - gap * k
            if t == src:      # stays on the host: a loop on its own lifeline
                parts.append(f'<path class="arrow" d="M{xs},{yk - 6} h26 v10 h-22" '
                             f'marker-end="url(#head)"/>')
            else:
                xt = _x(t) + (-7 if t > src else 7)
                parts.append(f'<line class="arrow" x1="{xs}" y1="{yk}" x2="{xt}" y2="{yk}" '
                             f'marker-end="url(#head)"/>')
        # The label sits above the arrows, from their left end to the diagram's edge.
        if targets == [src]:        # beside the loop
            label_x, label_y = xs + 34, y + 4
        else:
            label_x, label_y = _x(min([src, *targets])) + 6, y - gap * (len(targets) - 1) - 7
        label = _label(s.title, label_x, width - label_x - 6, label_y)
        if len(targets) > 1:        # counted on the side of the source the arrows leave
            right = max(targets) > src
            parts.append(f'<text class="copies" x="{xs + (-8 if right else 8)}" y="{y + 2}" '
                         f'text-anchor="{"end" if right else "start"}">'
                         f'{len(targets)} copies</text>')
    else:
        c = col.get(s.actor, col.get(s.src, 0))
        xa = _x(c)
        # "host2: vxtun0 learned ...": the marker already stands on host2's lifeline.
        title = s.title.removeprefix(f"{s.actor}: ") if s.actor in col else s.title
        mark = "\u2713" if kind == "check-ok" else "\u2717" if kind == "check-bad" \
            else KIND_MARK.get(kind, "i")
        parts.append(f'<circle class="marker" cx="{xa}" cy="{y}" r="8"/>')
        parts.append(f'<text class="mark" x="{xa}" y="{y + 4}">{mark}</text>')
        # Beside the marker, on whichever side has more room (left of the last host).
        if width - xa >= xa - LEFT:
            label = _label(title, xa + 14, width - xa - 20, y + 4)
        else:
            label = _label(title, xa - 14, xa - 14 - LEFT, y + 4, anchor="end")
    parts.append(label)
    parts.append("</g>")
    return "\n".join(parts)


def _label(text: str, x: float, room: float, y: float, anchor: str = "start") -> str:
    n = max(int(room / CHAR_W), 8)
    if len(text) > n:
        text = text[:n - 1].rstrip() + "\u2026"
    return f'<text class="label" x="{x}" y="{y}" text-anchor="{anchor}">{escape(text)}</text>'


# --- one step's detail ----------------------------------------------------------------

def _step_detail(s: Step, i: int, total: int, tables: dict[str, list[str]]) -> str:
    head = [f'<span class="kind-chip {escape(s.kind)}">{escape(s.kind)}</span>',
            f"on {escape(s.actor)}" if s.actor else "",
            f"+{s.at:.3f} s"]
    body = [f'<p class="meta">Step {i + 1} of {total}{DOT}{DOT.join(p for p in head if p)}</p>',
            f"<h2>{escape(s.title)}</h2>"]
    if s.kind == "check":
        ok = s.ok is not False
        verdict = "\u2713 check passed" if ok else "\u2717 check failed"
        body.append(f'<p class="check {"good" if ok else "bad"}">{verdict}</p>')
    if s.text:
        body.append(f'<p class="text">{escape(s.text)}</p>')
    if s.src and s.dst:
        copies = f" ({len(s.dst)} copies)" if len(s.dst) > 1 else ""
        body.append(f'<p class="path">{escape(s.src)} \u2192 {escape(", ".join(s.dst))}'
                    f"{copies}</p>")
    if s.layers:
        body.append(_layers(s.layers))
    if s.tables:
        body.append(_tables(s.tables))
    if tables:
        body.append(_table_state(tables, {f"{c.vtep} {c.table}" for c in s.tables}))
    # Not hidden here: without the script the page still reads top to bottom, every step.
    return (f'<article class="step" id="step-{i + 1}" data-step="{i + 1}" '
            f'data-title="{escape(s.title)}">\n' + "\n".join(body) + "\n</article>")


def _layers(layers: list[Layer]) -> str:
    total = sum(la.size for la in layers) or 1
    bar = []
    for la in layers:
        cls = LAYER_CLASS.get(la.name, "other")
        # Small headers stay readable: every segment gets at least a label's width.
        grow = max(la.size / total, 0.1)
        short = la.name.removeprefix("outer ")      # the bar's order already says outer
        bar.append(f'<div class="seg {cls}" style="flex-grow:{grow:.3f}" '
                   f'title="{escape(la.name)}: {la.size} bytes">'
                   f"<b>{escape(short)}</b><span>{la.size} B</span></div>")
    rows = []
    for la in layers:
        cls = LAYER_CLASS.get(la.name, "other")
        rows.append(f'<tr class="layer {cls}"><th colspan="2" scope="rowgroup">'
                    f"{escape(la.name)} \u00b7 {la.size} bytes</th></tr>")
        for f in la.fields:
            rows.append(f'<tr><th scope="row">{escape(f.name)}</th>'
                        f'<td class="value">{escape(f.value)}</td></tr>')
            if f.explain:       # said once per walk, under the field it explains
                rows.append(f'<tr class="why"><td></td><td>{escape(f.explain)}</td></tr>')
    return (f'<h3>Headers \u00b7 {total} bytes on the wire</h3>\n'
            f'<div class="bar" role="img" aria-label="'
            f'{escape(", ".join(f"{la.name} {la.size} bytes" for la in layers))}">'
            + "".join(bar) + "</div>\n"
            '<table class="fields"><thead><tr><th scope="col">field</th>'
            '<th scope="col">value, and why it matters the first time it shows</th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>")


def _tables(changes: list[TableChange]) -> str:
    items = []
    for c in changes:
        sign = CHANGE_SIGN.get(c.change, "~")
        items.append(f'<li class="{escape(c.change)}"><span class="sign">{sign}</span> '
                     f'<span class="where">{escape(c.vtep)} {escape(c.table)}</span> '
                     f"<code>{escape(c.line)}</code></li>")
    return '<h3>Tables changed</h3>\n<ul class="tables">' + "".join(items) + "</ul>"


def _table_states(steps: list[Step]) -> list[dict[str, list[str]]]:
    """After each step, every table the walk has seen change: ``{"host2/vxtun0 fdb": [lines]}``.

    A line is keyed by its first word (the MAC of an FDB line, the IP of a neighbour line), as
    ``bridge fdb`` and ``ip neigh`` key them; an FDB line also by its ``dst``, since the
    all-zeros entry has one line per remote.
    """
    state: dict[str, dict[str, str]] = {}
    out = []
    for s in steps:
        for c in s.tables:
            table = state.setdefault(f"{c.vtep} {c.table}", {})
            words = c.line.split()
            key = words[0] if words else ""
            if c.table == "fdb" and "dst" in words[:-1]:
                key += " " + words[words.index("dst") + 1]
            if c.change == "deleted":
                table.pop(key, None)
                continue
            if c.change == "changed" and c.table == "fdb" and key.split()[0] != ZERO_MAC:
                # A MAC that moved to another VTEP: its old line goes (one dst per MAC,
                # except the all-zeros entry, which keeps a line per remote).
                for old in [k for k in table if k.split()[0] == key.split()[0]]:
                    del table[old]
            table[key] = c.line
        out.append({name: list(lines.values()) for name, lines in state.items() if lines})
    return out


def _table_state(tables: dict[str, list[str]], changed: set[str]) -> str:
    groups = []
    for name, lines in tables.items():
        mark = ' class="changed"' if name in changed else ""
        groups.append(f"<div{mark}><h4>{escape(name)}</h4>"
                      + "".join(f"<code>{escape(line)}</code>" for line in lines) + "</div>")
    return ('<h3>Tables after this step</h3>\n<div class="state">' + "".join(groups)
            + "</div>")


LEGEND = ('<p class="legend"><span class="l-arrow">\u2500\u25b6</span> a VXLAN datagram on the '
          'underlay, one arrow per copy \u00b7 <span class="l-loop">\u21ba</span> a frame that '
          'stays on its host \u00b7 \u25b8 a frame on a host \u00b7 \u2261 a table changed '
          '\u00b7 i a note \u00b7 \u2713 \u2717 a check. Click a row to see its step.</p>')

DEFS = """<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"
markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"
class="head"/></marker></defs>"""

CSS = """
:root { --blue: #2b6cb0; --green: #2f855a; --red: #c53030; --ink: #1a202c; --mute: #4a5568;
        --line: #cbd5e0; --hi: #fefcbf; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: #f7fafc; display: flex; flex-direction: column;
       height: 100vh; }
header { background: #fff; padding: 8px 16px; border-bottom: 1px solid var(--line); }
h1 { font-size: 18px; margin: 0 0 6px; }
.verdict { font-size: 13px; padding: 2px 8px; border-radius: 10px; margin-left: 8px;
           vertical-align: middle; }
.verdict.good { background: #c6f6d5; color: #22543d; }
.verdict.bad { background: #fed7d7; color: #742a2a; }
.controls { display: flex; align-items: center; gap: 6px; }
button { font: inherit; padding: 4px 12px; border: 1px solid #a0aec0; border-radius: 5px;
         background: #edf2f7; cursor: pointer; }
button:hover:not(:disabled) { background: #e2e8f0; }
button:disabled { opacity: .45; cursor: default; }
button:focus-visible, .row:focus-visible { outline: 3px solid #f6ad55; outline-offset: 1px; }
button[aria-pressed="true"] { background: var(--blue); color: #fff; }
#where { margin: 0 0 0 10px; font-weight: 600; white-space: nowrap; overflow: hidden;
         text-overflow: ellipsis; flex: 1; min-width: 0; }
.legend { color: var(--mute); font-size: 12px; margin: 8px 0 0 12px; max-width: 600px; }
.l-arrow { color: var(--blue); font-weight: 700; }
.l-loop { color: var(--green); font-weight: 700; }
.keys { color: var(--mute); font-size: 12px; white-space: nowrap; }
main { display: grid; grid-template-columns: minmax(0, auto) minmax(420px, 1fr); flex: 1;
       min-height: 0; }
.details article:not([hidden]) + article { border-top: 1px solid var(--line); margin-top: 16px; }
.diagram, .details { overflow: auto; padding: 10px 12px; }
.diagram { border-right: 1px solid var(--line); background: #fff; }
svg { display: block; font: 12px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
svg text { fill: var(--ink); }
.box { fill: #ebf8ff; stroke: #90cdf4; }
.host.active .box { fill: var(--hi); stroke: #d69e2e; stroke-width: 2; }
.host-name { font-weight: 700; font-size: 13px; text-anchor: middle; }
.host text { text-anchor: middle; }
.addr { fill: var(--mute); }
.overlay { fill: var(--green); font-weight: 600; }
.vtep { font-weight: 600; }
.kind.kernel { fill: #6b46c1; font-weight: 700; }
.kind.vxtun { fill: #c05621; font-weight: 700; }
.bus { stroke: #4a5568; stroke-width: 4; stroke-linecap: round; }
.bus-label { fill: var(--mute); font-style: italic; }
.drop { stroke: #4a5568; stroke-width: 2; }
.lifeline { stroke: #a0aec0; stroke-dasharray: 4 4; }
.row { cursor: pointer; }
.band { fill: transparent; }
.row:hover .band { fill: #f7fafc; }
.row.current .band { fill: var(--hi); }
.num { text-anchor: middle; fill: var(--mute); font-weight: 700; }
.row.current .num { fill: var(--ink); }
.arrow { stroke: var(--blue); stroke-width: 2; fill: none; }
.frame .arrow { stroke: var(--green); }
.head { fill: var(--blue); }
.label { font-size: 12px; }
.copies { fill: var(--blue); font-size: 11px; font-weight: 700; }
.marker { fill: #fff; stroke: #dd6b20; stroke-width: 2; }
.note .marker { stroke: #718096; }
.check-ok .marker { stroke: var(--green); fill: #c6f6d5; }
.check-bad .marker { stroke: var(--red); fill: #fed7d7; }
.mark { text-anchor: middle; font-size: 11px; font-weight: 700; }
.details h2 { font-size: 18px; margin: 2px 0 8px; }
.details h3 { font-size: 14px; margin: 14px 0 6px; }
.meta { margin: 0; color: var(--mute); }
.text { white-space: pre-line; }
.kind-chip { display: inline-block; padding: 0 7px; border-radius: 8px; background: #e2e8f0;
             font-size: 12px; }
.path { font-family: ui-monospace, "DejaVu Sans Mono", monospace; color: var(--blue); }
.check { font-weight: 700; }
.check.good { color: var(--green); }
.check.bad { color: var(--red); }
.bar { display: flex; height: 40px; border-radius: 5px; overflow: hidden;
       border: 1px solid #a0aec0; }
.seg { display: flex; flex-direction: column; justify-content: center; align-items: center;
       flex-basis: 0; min-width: 0; font-size: 11px; line-height: 1.2; overflow: hidden;
       white-space: nowrap; border-right: 1px solid #fff; }
.seg b { font-weight: 600; }
.eth { background: #e2e8f0; } .ip { background: #bee3f8; } .udp { background: #b2f5ea; }
.vxlan { background: #feebc8; } .inner { background: #c6f6d5; } .other { background: #edf2f7; }
table.fields { border-collapse: collapse; width: 100%; margin-top: 8px; font-size: 13px; }
.fields th, .fields td { text-align: left; vertical-align: top; padding: 3px 6px;
                         border-bottom: 1px solid #edf2f7; }
.fields thead th { color: var(--mute); font-weight: 600; }
.fields tr.layer th { font-weight: 700; padding-top: 6px; }
.fields th[scope=row] { font-weight: 500; white-space: nowrap; }
.value { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.fields tr.why td { color: var(--mute); padding: 1px 8px 5px; font-size: 12.5px; }
.fields tr.why td:last-child { border-left: 3px solid #f6ad55; }
.fields tr:has(+ tr.why) th, .fields tr:has(+ tr.why) td { border-bottom: 0; }
ul.tables { list-style: none; padding: 0; margin: 0; }
ul.tables li { padding: 3px 0; }
.sign { display: inline-block; width: 1.2em; font-weight: 700; text-align: center; }
.added .sign { color: var(--green); } .deleted .sign { color: var(--red); }
.where { color: var(--mute); }
.state { display: flex; flex-wrap: wrap; gap: 8px; }
.state div { background: #fff; border: 1px solid var(--line); border-radius: 5px;
             padding: 4px 8px; }
.state div.changed { border-color: #f6ad55; }
.state h4 { margin: 0 0 2px; font-size: 12px; color: var(--mute); font-weight: 600; }
.state code { display: block; font-size: 12px; background: none; padding: 0; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; background: #edf2f7;
       padding: 1px 4px; border-radius: 3px; }
"""

JS = """
(function () {
  "use strict";
  var steps = Array.prototype.slice.call(document.querySelectorAll("article.step"));
  var rows = Array.prototype.slice.call(document.querySelectorAll("g.row"));
  var hosts = Array.prototype.slice.call(document.querySelectorAll("g.host"));
  var where = document.getElementById("where");
  var btn = {};
  ["first", "prev", "play", "next", "last"].forEach(function (id) {
    btn[id] = document.getElementById(id);
  });
  var n = steps.length, cur = 0, timer = null;

  function show(i, scroll) {
    if (!n) { return; }
    cur = Math.max(0, Math.min(n - 1, i));
    var actor = null;
    steps.forEach(function (s, k) { s.hidden = k !== cur; });
    rows.forEach(function (r) {
      var on = Number(r.getAttribute("data-step")) === cur + 1;
      r.classList.toggle("current", on);
      if (on) { r.setAttribute("aria-current", "step"); }
      else { r.removeAttribute("aria-current"); }
      if (on && scroll && r.scrollIntoView) { r.scrollIntoView({block: "nearest"}); }
      if (on) { actor = r.getAttribute("data-actor"); }
    });
    hosts.forEach(function (h) {
      h.classList.toggle("active", h.getAttribute("data-host") === actor);
    });
    where.textContent = "Step " + (cur + 1) + " of " + n + ": " +
      steps[cur].getAttribute("data-title");
    btn.first.disabled = btn.prev.disabled = cur === 0;
    btn.next.disabled = btn.last.disabled = cur === n - 1;
    document.body.setAttribute("data-step", String(cur + 1));
    try { history.replaceState(null, "", "#step-" + (cur + 1)); } catch (e) { /* file: */ }
    if (cur === n - 1) { stop(); }
  }
  function stop() {
    if (timer) { clearInterval(timer); timer = null; }
    btn.play.setAttribute("aria-pressed", "false");
    btn.play.textContent = "\\u25b6 Play";
    btn.play.setAttribute("aria-label", "play the walk");
  }
  function play() {
    if (timer) { stop(); return; }
    if (cur === n - 1) { show(0, true); }
    btn.play.setAttribute("aria-pressed", "true");
    btn.play.textContent = "\\u2016 Pause";
    btn.play.setAttribute("aria-label", "pause the walk");
    timer = setInterval(function () { show(cur + 1, true); }, 2200);
  }
  btn.first.addEventListener("click", function () { stop(); show(0, true); });
  btn.prev.addEventListener("click", function () { stop(); show(cur - 1, true); });
  btn.next.addEventListener("click", function () { stop(); show(cur + 1, true); });
  btn.last.addEventListener("click", function () { stop(); show(n - 1, true); });
  btn.play.addEventListener("click", play);
  rows.forEach(function (r) {
    function pick() { stop(); show(Number(r.getAttribute("data-step")) - 1, false); }
    r.addEventListener("click", pick);
    r.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); pick(); }
    });
  });
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var k = e.key;
    var fwd = k === "ArrowRight" || k === "ArrowDown" || k === "PageDown";
    var back = k === "ArrowLeft" || k === "ArrowUp" || k === "PageUp";
    if (fwd) { stop(); show(cur + 1, true); }
    else if (back) { stop(); show(cur - 1, true); }
    else if (k === "Home") { stop(); show(0, true); }
    else if (k === "End") { stop(); show(n - 1, true); }
    else if (k === " " && e.target.tagName !== "BUTTON") { play(); }
    else { return; }
    e.preventDefault();
  });
  var m = /^#step-(\\d+)$/.exec(location.hash), autoplay = location.hash === "#play";
  show(m ? Number(m[1]) - 1 : 0, true);
  if (autoplay) { play(); }
}());
"""
