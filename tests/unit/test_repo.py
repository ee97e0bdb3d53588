"""The README's two commands, .ci/run and the console scripts stay in step."""
from __future__ import annotations

import os
import re
import subprocess
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def fresh_machine_commands() -> list[str]:
    section = read("README.md").split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_shows_exactly_two_commands_lab_and_ci():
    assert fresh_machine_commands() == ["pip install '.[lab]' && vxtun-lab", "bash .ci/run"]


def test_ci_runs_the_test_command_the_readme_names():
    ci = read(".ci/run")
    assert "`python3 -m pytest tests`" in read("README.md")
    assert re.search(r'^"\$PY" -m pytest tests ', ci, re.M), "the pytest line of .ci/run"
    assert 'PY=${PYTHON:-python3}' in ci
    assert "pip install -q -e '.[test,bench]'" in ci
    assert '"$status" = 5' in ci                    # no tests collected is a failure
    assert ci.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in ci
    assert os.access(os.path.join(ROOT, ".ci/run"), os.X_OK)
    subprocess.run(["bash", "-n", os.path.join(ROOT, ".ci/run")], check=True)


def test_console_scripts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["scripts"]["vxtun"] == "vxtun.cli.main:main"
    assert project["scripts"]["vxtun-lab"] == "vxtun.lab.p2p:main"
    assert "scapy>=2.5" in project["optional-dependencies"]["lab"]
    from vxtun.lab.p2p import main
    assert callable(main)
