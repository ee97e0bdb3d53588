"""RTM_DELLINK (vxtun/io/linkwatch.py) in a real namespace: the kernel announces a deleted
TAP by name and index, which Node._links_deleted turns into tap_gone (the VTEP goes even if
its dataplane never reads the dead TAP again); tests/netns/test_hardening_tap.py checks the
whole path, whichever notice comes first.
"""
from __future__ import annotations

import json
import shlex

from vxtun.lab.netns import python, run

CHILD = r"""
import json, subprocess
from vxtun.io.linkwatch import LinkWatch
w = LinkWatch()
subprocess.run("ip tuntap add dev tapw mode tap && ip link set tapw up", shell=True, check=True)
idx = int(open("/sys/class/net/tapw/ifindex").read())
subprocess.run("ip link del tapw", shell=True, check=True)
import select
seen = []
while not seen and select.select([w], [], [], 5)[0]:
    seen += w.deleted()
print(json.dumps({"idx": idx, "seen": seen}))
"""


def test_the_kernel_announces_a_deleted_tap_by_name_and_index(topo):
    h = topo.host("h0", "192.0.2.1/24")
    out = run(f"ip netns exec {h.ns} {shlex.join(python('-c', CHILD))}", timeout=60).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["seen"] == [[res["idx"], "tapw", None]]
