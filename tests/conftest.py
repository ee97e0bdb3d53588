"""Shared fixtures.

* ``tests/unit``: no root, no kernel state; run anywhere.
* ``tests/netns``: need root, network namespaces and the veth, bridge, vxlan and tun modules.
  A missing prerequisite is a *failure*, never a skip: CI must not go green by testing nothing.

Every netns test gets a fresh ``Topology`` (unique namespace names, torn down even when the
test fails) and runs once per dataplane: ``fast`` (the Cython fast path) and ``pure``
(VXTUN_PUREPYTHON=1), so both are held to the same behaviour.
"""
from __future__ import annotations

import os

import pytest

from vxtun.lab.netns import Topology, prerequisites

DATAPLANES = {"fast": {"VXTUN_PUREPYTHON": "0"}, "pure": {"VXTUN_PUREPYTHON": "1"}}

_prereq_cache: list | None = None


# Tests that keep a CPU busy (an ARP storm, a soak, bulk TCP, a 100k-entry listing, a browser,
# busy polling): one xdist worker runs them all, one at a time, so that they never starve
# each other's timers or the other workers' namespace tests of both cores.
CPU_BOUND = {"test_storm.py", "test_soak_smoke.py", "test_multiqueue.py", "test_listing.py",
             "test_bench_smoke.py", "test_busy_poll.py", "test_gso_egress_vs_kernel.py",
             "test_walk_chromium.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/netns/" in str(item.fspath):
            item.add_marker(pytest.mark.netns)
        if item.fspath.basename in CPU_BOUND:
            item.add_marker(pytest.mark.xdist_group("cpu"))


@pytest.fixture(scope="session")
def netns_ready():
    """Fail (not skip) when this machine cannot run the namespace tests."""
    global _prereq_cache
    if _prereq_cache is None:
        _prereq_cache = prerequisites()
    if _prereq_cache:
        pytest.fail("netns tests need: " + ", ".join(_prereq_cache), pytrace=False)


@pytest.fixture(params=sorted(DATAPLANES), ids=lambda p: p)
def dataplane(request) -> dict:
    """The environment for ``vxtun up`` in this test: fast path or pure Python."""
    return dict(DATAPLANES[request.param])


@pytest.fixture
def topo(netns_ready, request):
    tag = "".join(c for c in request.node.name if c.isalnum())[:6] or "t"
    t = Topology(tag)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture(autouse=True)
def _no_leaked_namespaces(request):
    """After each netns test, no namespace of this process may survive."""
    yield
    if "/netns/" not in str(request.node.fspath):
        return
    import subprocess
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    mine = [ln.split()[0] for ln in out.splitlines() if ln.startswith("vxt-") and
            f"-{os.getpid()}-" in ln]
    for ns in mine:
        subprocess.run(["ip", "netns", "del", ns])
    assert not mine, f"namespaces leaked by the test: {mine}"
