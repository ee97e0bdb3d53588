"""``vxtun agent``: a control plane on a shared store, for kernel and vxtun VTEPs alike.

The dataplane never imports this package.  One file per concern:

* ``store.py``: the store's interface in etcd's words (keys, revisions, leases, watches,
  compaction); ``etcd.py`` (etcd v3 through its JSON gateway) and ``filestore.py`` (one SQLite
  file, the embedded default) implement it with the same semantics;
* ``model.py``: the keys agents write (members, endpoints) and how they are read back, bad data
  skipped with its reason;
* ``reconcile.py``: sans-IO, the store's state and a VTEP's tables in, the commands out;
* ``vteps.py``: the adapters, kernel vxlan devices through netlink, vxtun through ``vxtun.api``;
* ``agent.py``: the loop between the two, and its control socket; ``cli.py``: the command;
* ``lab.py``: etcd members, VTEPs and agents in lab namespaces (tests, ``bench/control.py``).
"""
