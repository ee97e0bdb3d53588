"""What a running ``vxtun lab up`` made, on disk, so that another process can find and remove it.

``vxtun lab up`` exits and leaves the lab running; ``vxtun lab status|exec|down`` come later,
from new processes, and may follow a lab that was killed half-way with SIGKILL.  So the lab
writes ``/run/vxtun-lab/<name>.json`` *before* it makes each namespace (a killed ``up`` leaves
a state file that names everything it may have made), and ``down`` also looks for namespaces
that carry the lab's prefix (``vxlab-<name>-``), in case the state file itself is gone.
Nothing else is ever touched: every namespace the lab made carries that prefix, every process
it started runs inside one of them (``ip netns pids``), and deleting the namespaces removes
their veths, bridges and TAPs.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

STATE_DIR = "/run/vxtun-lab"
DEFAULT_NAME = "demo"
_NAME_RE = re.compile(r"^[a-z0-9]{1,12}$")


def check_name(name: str) -> str:
    """A lab name: short (it goes into every namespace name) and plain."""
    if not _NAME_RE.match(name):
        raise ValueError(f"lab name {name!r}: use 1 to 12 lower-case letters and digits")
    return name


def prefix_of(name: str) -> str:
    return f"vxlab-{check_name(name)}"


def path_of(name: str) -> str:
    return os.path.join(STATE_DIR, f"{check_name(name)}.json")


def log_dir(name: str) -> str:
    return os.path.join(STATE_DIR, check_name(name))


class State:
    """The state file of one lab: scenario, options, namespaces, hosts and their VTEPs."""

    def __init__(self, name: str, data: dict | None = None) -> None:
        self.name = check_name(name)
        self.data = data if data is not None else {
            "name": name, "prefix": prefix_of(name), "namespaces": [], "hosts": [],
            "pids": [], "created": time.time()}

    @classmethod
    def load(cls, name: str) -> State | None:
        try:
            with open(path_of(name)) as f:
                return cls(name, json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return cls(name)            # unreadable: down still finds namespaces by prefix

    def save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = path_of(self.name) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, path_of(self.name))

    def add_namespace(self, ns: str) -> None:
        self.data["namespaces"].append(ns)
        self.save()

    def remove(self) -> None:
        for p in (path_of(self.name), path_of(self.name) + ".tmp"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        d = log_dir(self.name)
        if os.path.isdir(d):
            for f in os.listdir(d):
                os.unlink(os.path.join(d, f))
            os.rmdir(d)


def labs() -> list[str]:
    """The names of the labs with a state file."""
    try:
        return sorted(f[:-5] for f in os.listdir(STATE_DIR)
                      if f.endswith(".json") and _NAME_RE.match(f[:-5]))
    except FileNotFoundError:
        return []


def lab_namespaces(name: str) -> list[str]:
    """Every namespace whose name carries the lab's prefix, whoever made it."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    prefix = prefix_of(name) + "-"
    return [ln.split()[0] for ln in out.splitlines() if ln.startswith(prefix)]


def down(name: str) -> list[str]:
    """Remove the lab: kill every process inside its namespaces, delete them, forget it.
    Returns what was deleted (the namespaces)."""
    st = State.load(name)
    prefix = prefix_of(name) + "-"
    names = [ns for ns in (st.data["namespaces"] if st else []) if ns.startswith(prefix)]
    names += [ns for ns in lab_namespaces(name) if ns not in names]
    # Processes first, all of them, then the namespaces: a VTEP killed after its namespace
    # went would have nothing left to clean, but one killed before never races the deletion.
    for _ in range(3):
        pids = []
        for ns in names:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            pids += [int(p) for p in r.stdout.split() if p.isdigit()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)
    gone = []
    # Containers and hosts before the underlay: deleting a host removes its veths.
    for ns in sorted(names, key=lambda n: (n.endswith("-ul"), -len(n))):
        if subprocess.run(["ip", "netns", "del", ns], capture_output=True).returncode == 0:
            gone.append(ns)
    if st is not None or os.path.exists(log_dir(name)):
        (st or State(name)).remove()
    return gone
