"""The README's main job: ``vxtun-lab`` (``python -m vxtun.lab``) passes and cleans up."""
from __future__ import annotations

import subprocess

from vxtun.lab.netns import child_env, python


def test_lab_passes_and_leaves_nothing(netns_ready, dataplane):
    p = subprocess.Popen(python("-m", "vxtun.lab", "--bytes", "1000000"), env=child_env(dataplane),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    for n in range(1, 9):
        assert f"[{n}/8]" in out
    assert "FAIL" not in out and out.rstrip().splitlines()[-1].startswith("PASS")
    plane = "pure" if dataplane["VXTUN_PUREPYTHON"] == "1" else "fast"
    assert f"dataplane {plane}" in out
    assert "###[ VXLAN ]###" in out                   # scapy decoded the captured datagram
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"vxt-lab-{p.pid}-" not in left
