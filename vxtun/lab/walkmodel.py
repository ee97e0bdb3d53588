"""What a packet walk is, as data: the topology it ran on and the steps it saw.

``vxtun lab walk`` fills a :class:`Walk` from real events (trace records of vxtun VTEPs,
``ip monitor``/``bridge monitor fdb`` of kernel VTEPs, underlay captures) and hands it to
its renderers: the narrated text, ``--pcap`` and the ``--html`` page.  Everything here is
plain data that round-trips through JSON (``Walk.to_json`` / ``Walk.from_json``), so a
renderer can be tested on a stored walk without building a lab.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Field:
    name: str                      # "VNI", "I flag", "source port", "TTL", "UDP checksum"
    value: str                     # "42", "set", "51234", "1", "0x3a5c"
    explain: str = ""              # said once per walk, on the first datagram that shows it


@dataclass
class Layer:
    name: str                      # "outer Ethernet", "outer IPv4", "UDP", "VXLAN", "inner frame"
    size: int                      # bytes: 14, 20 or 40, 8, 8, len(inner)
    fields: list[Field] = field(default_factory=list)


@dataclass
class TableChange:
    vtep: str                      # "host2/vxtun0"
    table: str                     # "fdb" | "neigh" | "arp" (a host's ARP cache)
    change: str                    # "added" | "deleted" | "changed"
    line: str                      # as `bridge fdb show` / `ip neigh` prints it


@dataclass
class Step:
    n: int                         # 1, 2, ... in the order they happened
    title: str                     # "host1 sends an ARP request for 10.20.1.3"
    at: float                      # seconds since the walk started
    actor: str                     # host name where it happened
    kind: str                      # "frame" | "datagram" | "table" | "note" | "check"
    text: str = ""                 # the narration, one or a few sentences
    src: str = ""                  # host an arrow leaves (sequence diagram); "" for none
    dst: list[str] = field(default_factory=list)    # hosts the arrow reaches
    layers: list[Layer] = field(default_factory=list)
    tables: list[TableChange] = field(default_factory=list)
    ok: bool | None = None         # for kind "check": did it hold


@dataclass
class Vtep:
    name: str                      # "vxtun0" / "vxlan0"
    kind: str                      # "kernel" | "vxtun" | "vxtun-pure"
    vni: int
    mac: str = ""
    overlay: list[str] = field(default_factory=list)    # "10.20.1.2/24"


@dataclass
class Host:
    name: str                      # "host1"
    underlay: list[str] = field(default_factory=list)   # "192.0.2.1/24"
    vteps: list[Vtep] = field(default_factory=list)


@dataclass
class Walk:
    scenario: str                  # "2"
    title: str                     # "multicast flood and learn"
    hosts: list[Host] = field(default_factory=list)
    group: str = ""                # multicast group, if the scenario has one
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok is not False for s in self.steps)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Walk:
        hosts = [Host(name=h["name"], underlay=list(h.get("underlay", [])),
                      vteps=[Vtep(**v) for v in h.get("vteps", [])]) for h in d.get("hosts", [])]
        steps = []
        for s in d.get("steps", []):
            s = dict(s)
            s["layers"] = [Layer(name=la["name"], size=la["size"],
                                 fields=[Field(**f) for f in la.get("fields", [])])
                           for la in s.get("layers", [])]
            s["tables"] = [TableChange(**t) for t in s.get("tables", [])]
            steps.append(Step(**s))
        return cls(scenario=d["scenario"], title=d["title"], hosts=hosts,
                   group=d.get("group", ""), steps=steps)
