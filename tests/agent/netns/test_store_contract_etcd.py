"""etcd (through vxtun/agent/etcd.py) keeps the store contract that the file store keeps
(tests/agent/store_contract.py), checked from inside the namespace etcd listens in."""
from __future__ import annotations

import os
import subprocess

from vxtun.agent.lab import EtcdCluster
from vxtun.lab.netns import child_env, python

CONTRACT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "store_contract.py")


def test_etcd_store_contract(topo):
    e1 = topo.host("e1", "192.0.2.100/24")
    cluster = EtcdCluster([e1])
    try:
        cluster.start_all()
        p = subprocess.run(["ip", "netns", "exec", e1.ns,
                            *python(CONTRACT, cluster.url_of(e1))],
                           capture_output=True, text=True, timeout=120, env=child_env())
        assert p.returncode == 0 and p.stdout.strip() == "ok", p.stdout + p.stderr
    finally:
        cluster.stop()
