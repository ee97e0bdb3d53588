"""Labs on network namespaces: hosts joined by veth pairs to an underlay bridge that lives in a
namespace of its own.  ``vxtun lab`` (``cli.py``) builds the tutorial's scenarios
(``scenarios.py``), remembers what it made (``state.py``) and walks a packet through them
(``walk.py``, filling ``walkmodel.py``); ``vxtun-lab`` with no arguments is the point-to-point
lab (``p2p.py``).  Also used by the tests and the benchmarks.  Nothing here touches the root
namespace's interfaces."""
