"""Reporting for bench/test_micro.py: which implementations ran, and a summary of the figures
pytest-benchmark's own table does not show (cost per FDB lookup across table sizes, memory per
entry, cost per flood copy)."""
from __future__ import annotations

SUMMARY: dict[str, list[str]] = {}


def note(section: str, line: str) -> None:
    SUMMARY.setdefault(section, []).append(line)


def pytest_report_header(config):
    from bench.test_micro import implementations_line
    return implementations_line()


def pytest_terminal_summary(terminalreporter):
    if not SUMMARY:
        return
    tr = terminalreporter
    tr.section("vxtun microbenchmark summary")
    for section, lines in SUMMARY.items():
        tr.write_line(section)
        for ln in lines:
            tr.write_line("  " + ln)
