"""``vxtun agent`` commands that need no running agent: mistakes are one clear line and a
non-zero exit, before anything is sent."""
from __future__ import annotations

import pytest

from vxtun.agent.cli import format_status
from vxtun.agent.store import StoreError, open_store
from vxtun.cli.main import main


@pytest.mark.parametrize("argv, message", [
    (["agent", "endpoint", "add", "52:54:00:zz:00:01", "10.20.0.1"], "bad MAC"),
    (["agent", "endpoint", "add", "52:54:00:00:00:01", "10.20.0.300"], "bad IP address"),
    (["agent", "endpoint", "flush"], "usage: vxtun agent endpoint add|del"),
    (["agent", "endpoint", "add", "dev"], "dev needs a name"),
    (["agent", "status", "extra"], "unknown argument 'extra'"),
    (["agent", "--store", "sqlite:/tmp/x"], "name at least one --vtep"),
    (["agent", "--vtep", "vx0", "--ttl", "1"], "--ttl must be at least 2"),
    (["agent", "--vtep", "vx0", "--cert", "c.pem"], "--cert and --key go together"),
])
def test_mistakes_are_one_line_and_exit_1(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_status_without_an_agent(capsys):
    assert main(["agent", "status"]) == 1
    assert "no agent running in this namespace" in capsys.readouterr().err


def test_unknown_store_url():
    with pytest.raises(StoreError, match="unknown store"):
        open_store("redis://192.0.2.1")
    with pytest.raises(StoreError, match="bad etcd endpoint"):
        open_store("etcd://192.0.2.1")


def test_status_text():
    st = {"store": "etcd://192.0.2.100:2379", "revision": 7, "mode": "preprogram",
          "host": "h1", "lease": "1f", "ttl": 10,
          "vteps": [{"name": "vxlan0", "kind": "kernel", "vni": 42, "local": "192.0.2.1",
                     "port": 4789, "programmed": {"time": 0, "revision": 7,
                                                  "commands": ["fdb append 00:00:00:00:00:00 "
                                                               "dst 192.0.2.2"]}}],
          "members": {"42": [{"ip": "192.0.2.1", "port": 4789, "host": "h1", "vtep": "vxlan0",
                              "kind": "kernel"}]},
          "endpoints": [{"vni": 42, "mac": "52:54:00:00:00:02", "ips": ["10.20.0.2"],
                         "vtep": "192.0.2.2"}],
          "bad": ["/vxtun/x: unknown key"], "last_error": "15:00:00 store: down"}
    text = format_status(st)
    assert text.splitlines()[0] == "store etcd://192.0.2.100:2379 revision 7 mode preprogram"
    assert "vtep vxlan0 kernel vni 42 local 192.0.2.1 dstport 4789" in text
    assert "fdb append 00:00:00:00:00:00 dst 192.0.2.2" in text
    assert "vni 42 members 192.0.2.1(h1 vxlan0)" in text
    assert "endpoint 52:54:00:00:00:02 10.20.0.2 vni 42 vtep 192.0.2.2" in text
    assert "skipped: /vxtun/x: unknown key" in text and "last error: 15:00:00 store: down" in text
