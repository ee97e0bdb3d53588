"""The core's unit tests again, with every Vtep over the fast path's C table.

FastBackend gives each Vtep ``Fdb(store=CFdb(...))``: the core's rules over the table its C
threads share.  Here the Vtep tests of test_decap, test_ecn_rules, test_events and test_proxy
run with that store instead of the pure one, so a rule that reads or writes the FDB in a way
only DictStore supports shows up as a failure here.
"""
from __future__ import annotations

import pytest
from test_decap import *  # noqa: F403  (collected again, over CFdb)
from test_ecn_rules import *  # noqa: F403
from test_events import *  # noqa: F403
from test_proxy import *  # noqa: F403

from vxtun import _fastpath
from vxtun.core import vtep as vtep_module
from vxtun.fdb import Fdb


def _fdb_over_cfdb(ageing: float = 300.0, maxaddress: int = 0, learning: bool = True) -> Fdb:
    return Fdb(store=_fastpath.CFdb(ageing, maxaddress, learning))


@pytest.fixture(autouse=True, scope="module")
def _vteps_over_cfdb():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vtep_module, "Fdb", _fdb_over_cfdb)
        yield


def test_the_vteps_here_are_over_cfdb():
    from vxtun.core import Vtep, VtepConfig
    assert type(Vtep(VtepConfig(vni=42)).fdb.store) is _fastpath.CFdb
