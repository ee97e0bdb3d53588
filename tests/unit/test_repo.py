"""The README's two commands, .ci/run and the console scripts stay in step, and every Python
child of the lab, the tests and the bench imports the ``vxtun`` its parent imported."""
from __future__ import annotations

import glob
import os
import re
import subprocess
import tomllib

from vxtun.lab.netns import VXTUN_PATH, child_env, python

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def fresh_machine_commands() -> list[str]:
    section = read("README.md").split("## On a fresh machine", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_readme_shows_exactly_two_commands_lab_and_ci():
    assert fresh_machine_commands() == [
        "pip install '.[lab]' && vxtun lab walk 2 --vteps kernel,vxtun,vxtun", "bash .ci/run"]


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
    # vxtun-lab: with no arguments the point-to-point lab, with a subcommand ``vxtun lab``.
    assert project["scripts"]["vxtun-lab"] == "vxtun.lab.cli:alias_main"
    assert "scapy>=2.5" in project["optional-dependencies"]["lab"]
    from vxtun.lab.p2p import main
    assert callable(main)


def test_ci_runs_the_readme_lab_command_in_a_fresh_clone_and_venv():
    ci = read(".ci/run")
    lab = fresh_machine_commands()[0]
    # .ci/run reads the command from the README (never a copy of it that could drift) ...
    out = subprocess.run(["bash", os.path.join(ROOT, ".ci/run"), "--readme-lab-command"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == lab
    assert "pip install '.[lab]'" not in ci and "vxtun-lab" not in ci
    assert "-e" not in lab.split()                      # a non-editable install
    # ... and runs it in a fresh clone of this repository at HEAD, in a fresh venv, from the
    # clone's root, with the environment a reader has (no PIP_BREAK_SYSTEM_PACKAGES).
    assert re.search(r'^ci_git clone -q "\$PWD" "\$fresh/vxtun"$', ci, re.M)
    assert 'ci_git -C "$fresh/vxtun" checkout -q --detach "$(ci_git rev-parse HEAD)"' in ci
    assert re.search(r'cd "\$fresh/vxtun" && "\$PY" -m venv v && \. v/bin/activate &&\s+'
                     r'.*&& sh -c "\$lab_cmd"', ci)
    assert "unset PIP_BREAK_SYSTEM_PACKAGES" in ci
    assert "python3-venv" in ci                          # Debian's python3 needs it for venv
    # Its failure fails CI.
    assert ') || lab_status=$?' in ci
    assert re.search(r'if \[ "\$status" = 0 \] && \[ "\$lab_status" != 0 \]; then\n'
                     r'\s+status=1', ci)
    assert ci.index('sh -c "$lab_cmd"') < ci.index('exit "$status"')


def test_python_children_import_the_parents_vxtun(tmp_path):
    """A child started from a clone's root must not import the clone's unbuilt source tree
    instead of the installed package (the README's first command once failed so)."""
    import vxtun
    decoy = tmp_path / "vxtun"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy in the working directory')\n")
    for args in (["-c", "import vxtun; print(vxtun.__file__)"],
                 ["-m", "vxtun.lab.traffic", "nosuch"]):
        p = subprocess.run(python(*args), cwd=tmp_path, env=child_env(), capture_output=True,
                           text=True)
        assert "decoy" not in p.stderr, p.stderr
    p = subprocess.run(python("-c", "import vxtun; print(vxtun.__file__)"), cwd=tmp_path,
                       env=child_env(), capture_output=True, text=True, check=True)
    assert p.stdout.strip() == vxtun.__file__
    assert os.path.dirname(vxtun.__path__[0]) == VXTUN_PATH


def test_python_children_start_through_lab_netns_python():
    """Every place that starts a Python child uses ``vxtun.lab.netns.python``."""
    for path in sorted(glob.glob(os.path.join(ROOT, "vxtun", "**", "*.py"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)
                       + glob.glob(os.path.join(ROOT, "bench", "*.py"))):
        rel = os.path.relpath(path, ROOT)
        if rel in ("vxtun/lab/netns.py", "tests/unit/test_repo.py"):
            continue
        with open(path) as f:
            text = f.read()
        assert "sys.executable" not in text, f"{rel} starts a Python child by itself"


def test_test_files_have_unique_basenames():
    # tests/ has no __init__.py: pytest imports each test file under its basename, so two
    # files of one name in different folders stop the whole collection ("import file mismatch").
    names = [os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", "**", "*.py"),
                                                     recursive=True)
             if os.path.basename(p).startswith("test_")]
    assert sorted(set(n for n in names if names.count(n) > 1)) == []
