"""Coverage-guided fuzzing of the fast path's per-packet decisions (fp_rx_decide, fp_tx_decide)
under AddressSanitizer and UndefinedBehaviorSanitizer, with atheris (libFuzzer for Python).

Run through tools/fuzz/run.sh, which builds vxtun's fastpath extensions and the target module
(fuzz_decide.pyx) with clang ``-fsanitize=address,undefined,fuzzer-no-link`` in a separate
directory and preloads the sanitizer runtime::

    tools/fuzz/run.sh rx -max_total_time=3600      # an hour on received datagrams
    tools/fuzz/run.sh tx -max_total_time=3600      # an hour on frames read from the TAP

Each input begins with the state: the VTEPs (VNI, MAC, MTU, source-port range, proxy) and
their FDBs (learning, ``maxaddress``, entries of each state with one or several remotes, IPv4
and IPv6, the all-zeros default), then the clock.  The rest is what the thread reads: for
``rx`` the source address, the outer TOS, a UDP GRO segment size and the datagram(s); for
``tx`` which VTEP and the virtio-net header + frame (a TSO super-frame when the header's
gso_type says so).  Structure-aware seeds (a VXLAN datagram, an ARP request, a TSO frame)
start the corpus so that the fuzzer gets past the header checks at once.

A sanitizer report, an AssertionError from the target's checks (fuzz_decide.pyx) or any
other exception is a crash: libFuzzer stops and writes the input to ``crash-*``.
"""
from __future__ import annotations

import struct
import sys

import atheris

from vxtun.fdb import FdbEntry, Remote

# the sanitized modules, imported by main() once the sanitizer runtime is in (run.sh)
CFdb = Target = None

STATES = ("permanent", "static", "dynamic")
# the remotes an entry may get: IPv4 and IPv6, other port, VNI and device
REMOTES = [Remote("192.0.2.1"), Remote("192.0.2.2", port=8472), Remote("2001:db8::1"),
           Remote("198.51.100.7", vni=43), Remote("2001:db8::2", via="eth0"),
           Remote("192.0.2.3", port=4790, vni=7, via="veth1")]
# MACs the state and the packets share, so lookups and learning hit as often as they miss
MACS = [b"\x00" * 6, bytes.fromhex("021122334401"), bytes.fromhex("021122334402"),
        bytes.fromhex("01005e000001"), b"\xff" * 6, bytes.fromhex("02aabbccdd2a")]


def _mac(fdp: atheris.FuzzedDataProvider) -> bytes:
    i = fdp.ConsumeIntInRange(0, len(MACS))
    return MACS[i] if i < len(MACS) else fdp.ConsumeBytes(6).ljust(6, b"\x00")


def build_state(fdp: atheris.FuzzedDataProvider):
    t = Target()
    vnis: set[int] = set()
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        vni = fdp.ConsumeIntInRange(0, (1 << 24) - 1) if fdp.ConsumeBool() else 42 + len(vnis)
        if vni in vnis:
            continue
        vnis.add(vni)
        fdb = CFdb(ageing=fdp.ConsumeIntInRange(0, 600), maxaddress=fdp.ConsumeIntInRange(0, 4),
                   learning=fdp.ConsumeBool())
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            remotes = [REMOTES[fdp.ConsumeIntInRange(0, len(REMOTES) - 1)]
                       for _ in range(fdp.ConsumeIntInRange(1, 4))]
            fdb.put(FdbEntry(_mac(fdp), remotes, STATES[fdp.ConsumeIntInRange(0, 2)],
                             updated=fdp.ConsumeIntInRange(0, 1000),
                             used=fdp.ConsumeIntInRange(0, 1000)))
        lo = fdp.ConsumeIntInRange(1, 65535)
        hi = fdp.ConsumeIntInRange(lo + 1, 65536)
        t.add_vtep(vni, _mac(fdp), fdp.ConsumeIntInRange(68, 65535), fdb, lo, hi,
                   fdp.ConsumeBool())
    return t


def one_rx(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    t = build_state(fdp)
    now = float(fdp.ConsumeIntInRange(0, 2000))
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        v6 = fdp.ConsumeBool()
        addr = fdp.ConsumeBytes(16 if v6 else 4).ljust(16 if v6 else 4, b"\x00")
        tos = fdp.ConsumeIntInRange(0, 255)
        gso = fdp.ConsumeIntInRange(0, 1600) if fdp.ConsumeBool() else 0
        dgram = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 9000))
        t.rx(dgram, 6 if v6 else 4, addr, tos, now, gso)
        now += fdp.ConsumeIntInRange(0, 400)


def one_tx(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    t = build_state(fdp)
    now = float(fdp.ConsumeIntInRange(0, 2000))
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        vid = fdp.ConsumeIntInRange(0, 2)
        frame = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 70000))
        try:
            t.tx(vid, frame, now)
        except ValueError as e:          # a VTEP index past the ones built: not a finding
            if "no such VTEP" not in str(e):
                raise
        now += fdp.ConsumeIntInRange(0, 400)


# --- seeds: valid packets, so the fuzzer starts past the header checks ----------------------

def _ip4_tcp(payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 1000, 1, 5 << 4, 0x18, 512, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 2, 20 + len(tcp) + len(payload), 7, 0x4000, 64, 6,
                     0, bytes([10, 20, 1, 2]), bytes([10, 20, 1, 3]))
    return ip + tcp + payload


def seeds() -> list[bytes]:
    eth = bytes.fromhex("021122334401") + bytes.fromhex("021122334402")
    arp = (b"\xff" * 6 + bytes.fromhex("021122334402") + b"\x08\x06"
           + bytes.fromhex("0001080006040001") + bytes.fromhex("021122334402")
           + bytes([10, 20, 1, 2]) + b"\x00" * 6 + bytes([10, 20, 1, 3]))
    ip4 = eth + b"\x08\x00" + _ip4_tcp(b"x" * 3000)
    vx = b"\x08\x00\x00\x00\x00\x00\x2a\x00"
    vnet_tso = struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)
    vnet_none = b"\x00" * 10
    # FuzzedDataProvider takes integers from the end of the input and bytes from the front:
    # a zero tail is a state of one VTEP with VNI 42 and an empty FDB
    tail = b"\x00" * 64
    return [s + tail for s in (vx + ip4[:1514], vx + arp, vnet_tso + ip4, vnet_none + arp,
                               vnet_none + ip4[:1514])]


def main() -> None:
    target = sys.argv.pop(1) if len(sys.argv) > 1 else ""
    if target == "seeds":                # seeds DIR: write the seed corpus
        for i, s in enumerate(seeds()):
            with open(f"{sys.argv[1]}/seed-{i}", "wb") as f:
                f.write(s)
        return
    one = {"rx": one_rx, "tx": one_tx}.get(target)
    if one is None:
        sys.exit("usage: fuzz.py rx|tx [libFuzzer options] [CORPUS_DIR ...]")
    global CFdb, Target
    with atheris.instrument_imports():
        from fuzz_decide import Target
        from vxtun.fastpath.fdb import CFdb
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
