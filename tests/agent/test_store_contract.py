"""The file store keeps the store contract (store_contract.py), as etcd does
(tests/agent/netns/test_store_contract_etcd.py)."""
from __future__ import annotations

from store_contract import check

from vxtun.agent.filestore import FileStore


def test_file_store_contract(tmp_path):
    check(FileStore(str(tmp_path / "s.sqlite")))
