#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz corpora (docs/fuzzing.md).

The binary formats are the ones the targets read (vmm/hypercalls_fuzz.cc,
vmm/devices/free_ring_fuzz.cc, vmm/memory/fuzz_ram.h): every number is
little-endian, and a "shaped" value is a mode byte and eight bytes. Mode 0
takes the eight bytes as they are; mode 1 reduces them modulo RAM + 2 pages,
so a value inside RAM comes out unchanged. Run from the repository root:
  python3 tests/fuzz/make_seeds.py
The config seeds are configs/ copied as they are, and mutations of them here.
"""
import json
import os
import struct

RAM = 8 << 20
PAGE = 4096
BOOT_END = 0x100000
HERE = os.path.dirname(os.path.abspath(__file__))


def u64(v):
    return struct.pack("<Q", v % (1 << 64))


def shaped(v):
    """A value the target reads back unchanged."""
    v %= 1 << 64
    return (b"\x01" if v < RAM + 2 * PAGE else b"\x00") + u64(v)


def write(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- hypercalls: ops 0 poke, 1 report, 2 call --------------------------------

def poke(gpa, data):
    return b"\x00" + shaped(gpa) + u64(len(data)) + data


def call(nr, rdi=0, rsi=0, rdx=0, r10=0):
    head = b"\x02" + (bytes([nr]) if nr < 0xf0 else b"\xf0" + u64(nr))
    return head + shaped(rdi) + shaped(rsi) + shaped(rdx) + shaped(r10)


def report(at, entries, count=None):
    out = b"\x01" + shaped(at) + u64(len(entries))
    for gpa, length in entries:
        out += shaped(gpa) + shaped(length) + u64(0x5a5a5a5a)
    if count is None:
        return out + b"\x01"
    return out + b"\x00" + shaped(count)


def hypercall_seeds():
    s = {}
    s["version"] = call(0)
    s["console-hello"] = poke(0x200000, b"hello, host\n") + call(1, 0x200000, 12)
    s["console-edges"] = (call(1, 0x200000, 4096) + call(1, 0x200000, 4097) + call(1, RAM - 8, 8) +
                          call(1, RAM - 8, 9) + call(1, RAM, 0) + call(1, 2**64 - 8, 16) +
                          poke(0x1ff000, b"\xff\xfe\x00\x1b[2J" * 100) + call(1, 0x1ff000, 4096))
    s["exit-fail-exception"] = (call(3, 1, 0x400000, 1, 2) + call(3, 2, 6, 0, 2**64 - 22) + call(3, 3, 0x400000, 0, 2**64 - 1) +
                                call(3, 2**64 - 1, 1, 2, 3) + call(4, 14, 0x401000, 6, 0xdead) + call(4, 255, 0, 0, 0) +
                                call(4, 2**64 - 1, 1, 1, 1) + call(2, 2**64 - 1))
    s["unknown-numbers"] = call(8) + call(0xf0 + 0, 2**32 + 1) + call(0xf1, 2**64 - 1) + call(6, 0x300000, 8) + call(7, 5)
    s["report-each-status"] = report(0x300000, [(0x400000, PAGE),        # 0
                                                (0x1000, PAGE),          # -EPERM: boot area
                                                (0x400001, PAGE),        # -EINVAL: unaligned
                                                (0x400000, 0),           # -EINVAL: empty
                                                (RAM - PAGE, 2 * PAGE),  # -EFAULT: past RAM
                                                (2**64 - PAGE, 2 * PAGE),  # -EINVAL: wraps
                                                (BOOT_END - PAGE, 2 * PAGE)])  # -EPERM: straddles
    s["report-runs"] = (poke(0x400000, b"\xaa" * 4096) +
                        report(0x300000, [(0x400000 + i * PAGE, PAGE) for i in range(64)]) +
                        report(0x300000, [(BOOT_END, RAM - BOOT_END)]))
    s["report-across-segments"] = (poke(0x1ff000, b"\x55" * 4096) + poke(0x200000, b"\x66" * 4096) +
                                   report(0x300000, [(0x1ff000, 2 * PAGE), (0x1fe000, PAGE)]))
    s["report-frees-its-list"] = report(0x500000, [(0x500000, PAGE), (0x600000, PAGE), (0x700000, PAGE)])
    s["report-bad-lists"] = (report(0x300000, [(0x400000, PAGE)], count=0) +
                             report(0x300000, [(0x400000, PAGE)], count=2049) +
                             report(0x300000, [(0x400000, PAGE)], count=2048) +
                             report(RAM - 32, [(0x400000, PAGE)], count=2) +
                             report(0x1fffe0, [(0x400000, PAGE), (0x401000, PAGE)]) +
                             call(5, 0x300004, 1) + call(5, 2**64 - 32, 1))
    return s


# --- free_ring: setup, then ops 0 slot, 1 produce, 2 header, 3 poke, 4 drain -

def ring(log2_entries, gpa, produced):
    return u64(log2_entries) + shaped(gpa) + shaped(produced)


def slot(i, gpa, length):
    return b"\x00" + u64(i) + shaped(gpa) + shaped(length)


def produce(n):
    return b"\x01" + u64(n)


def header(word, v):
    return b"\x02" + u64(word) + u64(v)


def rpoke(gpa, data):
    return b"\x03" + shaped(gpa) + u64(len(data)) + data


def drain(ring_thread=True):
    return b"\x04" + (b"\x01" if ring_thread else b"\x00")


def ring_seeds():
    s = {}
    s["one-run"] = ring(3, 0x300000, 0) + b"".join(slot(i, 0x400000 + i * PAGE, PAGE) for i in range(3)) + produce(3) + drain()
    s["scattered-parks"] = (ring(4, 0x300000, 0) + b"".join(slot(i, 0x400000 + 2 * i * PAGE, PAGE) for i in range(8)) +
                            produce(8) + drain() + b"".join(slot(i, 0x500000 + 2 * i * PAGE, PAGE) for i in range(8, 16)) +
                            produce(8) + drain(False))
    s["each-status"] = (ring(3, 0x300000, 0) + slot(0, 0x1000, PAGE) + slot(1, 0x400001, PAGE) + slot(2, 0x400000, 0) +
                        slot(3, RAM - PAGE, 2 * PAGE) + slot(4, 2**64 - PAGE, 2 * PAGE) + slot(5, 0x400000, PAGE) +
                        produce(6) + drain())
    s["more-than-a-lap"] = ring(2, 0x300000, 0) + produce(5) + drain() + produce(1) + drain() + drain()
    s["wraps-2-64"] = (ring(2, 0x300000, 2**64 - 2) + b"".join(slot(i, 0x400000 + i * PAGE, PAGE) for i in range(4)) +
                       produce(4) + drain() + produce(3) + drain(False))
    s["frees-itself"] = ring(1, 0x600000, 0) + slot(0, 0x600000, PAGE) + slot(1, 0x601000, PAGE) + produce(2) + drain()
    s["guest-rewrites-header"] = (ring(3, 0x300000, 7) + header(1, 2**64 - 1) + header(2, 2**64 - 1) +
                                  slot(7, 0x400000, PAGE) + produce(1) + drain() + header(0, 2**63) + drain())
    s["largest-at-the-end"] = ring(12, RAM - 64 - 4096 * 32, 0) + slot(4095, 0x400000, PAGE) + produce(4096) + drain()
    s["does-not-fit"] = ring(12, RAM - 4096 * 32, 0) + produce(1) + drain()
    s["across-segments"] = ring(5, 0x200000 - 64 * 9, 0) + produce(1) + drain()
    s["poked-slots"] = (ring(3, 0x300000, 0) + rpoke(0x300040, u64(0x400000) + u64(PAGE) + u64(1) + u64(0)) +
                        produce(1) + drain())
    return s


# --- config: mutations of configs/ -----------------------------------------

def config_seeds():
    hello = json.load(open(os.path.join(HERE, "../../configs/hello.json")))
    s = {}

    def vm(program, **kw):
        c = {"name": "m", "memory": "16M", "timeout_ms": 100, "program": program}
        c.update(kw)
        return c

    s["touch-huge-stride"] = vm([{"op": "touch", "at": "2M", "length": "4M", "stride": "0x8000000000000000"}])
    s["touch-wrapping-stride"] = vm([{"op": "touch", "at": "2M", "length": "12M", "stride": "0xfffffffffff00000"}])
    s["free-each-mode"] = vm([{"op": "free", "at": "4M", "length": "4M", "granule": "64K", "stride": "128K", "mode": "async",
                               "batch": 64},
                              {"op": "free", "at": "4M", "length": "4M", "granule": "4K", "mode": "sync", "batch": 2048}])
    s["report-ranges"] = vm([{"op": "report", "ranges": [["0x0", "4K"], ["0xfffffffffffff000", "8K"], [1, 0]],
                              "expect": ["-EPERM", "-EINVAL", None]}])
    s["nested-loops"] = vm([{"op": "loop", "count": 2, "body": [{"op": "loop", "count": 2, "body": [
        {"op": "loop", "count": 2, "body": [{"op": "print", "text": "x"}]}]}]}])
    deep = {"op": "print", "text": "deep"}
    for _ in range(9):
        deep = {"op": "loop", "count": 2, "body": [deep]}
    s["loops-too-deep"] = vm([deep])
    s["big-numbers"] = vm([{"op": "hypercall", "nr": 18446744073709551615, "args": [-1, 1.5, "0x", "-9223372036854775808"],
                            "expect": "-EWHATEVER"}], memory=18446744073709551615, timeout_ms=-1)
    s["wrong-types"] = {"name": 7, "memory": [], "timeout_ms": {}, "program": {"op": "exit"}}
    s["unicode-name"] = vm([{"op": "print", "text": "\u00e9\u4e2d\U0001f600\u0000\u001b[31m"}], name="\u00e9\u4e2d\U0001f600")
    s["many-vms-bad"] = {"vms": [hello, hello, dict(hello, name="x" * 300), {"vms": []}]}
    s["timestamp-out-fault"] = vm([{"op": "timestamp", "slot": 0}, {"op": "out", "port": 255, "value": 4294967296},
                                   {"op": "fault", "kind": "spin"}, {"op": "exit", "code": 4294967296}])
    s["stress-extremes"] = {"stress": {"rounds": 1, "duration_s": 0, "vms_per_round": 64, "vm_memory": "32G",
                                       "ram_unit": "2M", "regions_per_vm": 1000, "region_min": "2M", "region_max": "4M"}}
    s["stress-bad"] = {"stress": {"rounds": 0, "duration_s": 0, "vm_memory": "3M", "seed": -1, "inject_corruption": 1}}
    s["stress-corruption"] = {"stress": {"rounds": 2, "seed": 18446744073709551615, "vm_memory": "8M",
                                         "region_min": "2M", "region_max": "6M", "inject_corruption": True}}
    s["stress-vcpus-backings"] = {"stress": {"rounds": 1, "vm_memory": "16M", "ram_unit": "2M", "region_max": "8M",
                                             "vcpus": [2, 16], "backings": ["memfd", "anon", "hugetlb", "memfd-thp"],
                                             "prefault": ["none", "eager", "ahead"], "inject_corruption": True}}
    s["stress-vcpus-bad"] = {"stress": {"vcpus": [4, 2, 1], "backings": [], "prefault": "sometimes"}}
    s["stress-vcpus-extremes"] = {"stress": {"vcpus": 16, "regions_per_vm": 1000, "vm_memory": "32G",
                                             "backings": "anon", "prefault": ["ahead", 7]}}
    s["stress-snapshots"] = {"stress": {"rounds": 1, "vm_memory": "16M", "ram_unit": "2M", "region_max": "8M",
                                        "vcpus": [1, 16], "backings": ["memfd", "anon", "hugetlb"],
                                        "prefault": ["none", "ahead"], "inject_corruption": True,
                                        "snapshots": {"probability": 1, "lazy": 0.5, "dir": "/tmp/x", "keep": False}}}
    s["stress-snapshots-bad"] = {"stress": {"backings": ["anon"],
                                            "snapshots": {"probability": 1.5, "lazy": "half", "dir": "", "keep": 1}}}
    s.update(window_seeds(vm))
    out = {k: json.dumps(v).encode() for k, v in s.items()}
    out["not-json"] = b'{"name": "x", "memory": 16M}'
    out["invalid-utf8"] = b'{"name": "\xff\xfe", "memory": "16M", "program": []}'
    out["deep-arrays"] = b"[" * 5000 + b"]" * 5000
    out["duplicate-keys"] = b'{"name": "a", "name": "b", "memory": "16M", "program": [{"op": "exit"}]}'
    return out


# --- config: shared files and windows (docs/config.md) ----------------------

def window_seeds(vm):
    """Files and windows that parse, and near misses of each rule."""
    box = {"name": "box", "size": "2M", "pattern": {"seed": 7}, "seals": ["shrink", "grow"]}
    win = {"file": "box", "at": "1G", "length": "2M"}
    in_win = [{"op": "fill", "at": "1G", "length": "4K", "pattern": "address"},
              {"op": "verify", "at": "0x40001000", "length": "8", "pattern": {"byte": 0}},
              {"op": "touch", "at": "1G", "length": "2M", "stride": "64K", "write": False}]
    s = {}
    s["windows-valid"] = dict(vm(in_win, windows=[win, {"file": "box", "at": "2G", "offset": "1M", "length": "1M",
                                                        "writable": False}]), files=[box])
    s["windows-many-vms"] = {"files": [box, {"name": "a.b_c-9", "size": 0}, {"name": "sealed", "size": "4K",
                                                                            "seals": ["seal", "write", "future_write"]}],
                             "vms": [vm(in_win, name="a", windows=[win]),
                                     vm([], name="b", windows=[dict(win, writable=False), {"file": "sealed", "at": "3G",
                                                                                          "length": "1G"}])]}
    s["windows-overlapping"] = dict(vm([], windows=[win, dict(win, at="0x40100000")]), files=[box])
    s["windows-same-at"] = dict(vm([], windows=[win, win]), files=[box])
    s["window-in-ram"] = dict(vm([], windows=[dict(win, at="8M")]), files=[box])
    s["window-at-ram-end"] = dict(vm([{"op": "fill", "at": "16M", "length": "4K", "pattern": "zero"}],
                                     windows=[dict(win, at="16M")]), files=[box])
    s["window-past-page-tables"] = dict(vm([], windows=[dict(win, at="0x7fffff000", length="8K")]), files=[box])
    s["window-wrapping"] = dict(vm([], windows=[dict(win, at="0xfffffffffffff000", length="8K")]), files=[box])
    s["window-unaligned"] = dict(vm([], windows=[dict(win, at="0x40000800", offset="100", length="100")]),
                                 files=[box])
    s["window-offset-huge"] = dict(vm([], windows=[dict(win, offset="0x7ffffffffffff000")]), files=[box])
    s["window-unknown-file"] = dict(vm([], windows=[dict(win, file="nope")]), files=[box])
    s["window-no-files"] = vm([], windows=[win])
    s["window-bad-keys"] = dict(vm([], windows=[{"file": 7, "at": -1, "length": "2M", "writable": "yes",
                                                 "size": "4K"}]), files=[box])
    s["windows-too-many"] = dict(vm([], windows=[dict(win, at=(1 << 30) + i * 0x200000) for i in range(17)]),
                                 files=[box])
    s["file-bad-seals"] = dict(vm([]), files=[dict(box, seals=["seal", "frozen"])])
    s["file-seals-not-array"] = dict(vm([]), files=[dict(box, seals=8)])
    s["file-bad-names"] = {"files": [dict(box, name=""), dict(box, name="a/b"), dict(box, name="x" * 250)],
                           "vms": [vm([])]}
    s["file-twice"] = dict(vm([]), files=[box, box])
    s["files-too-big"] = dict(vm([]), files=[dict(box, size="40G"), dict(box, name="two", size="40G")])
    s["files-in-a-vm"] = {"vms": [dict(vm([]), files=[box])]}
    s["files-not-array"] = dict(vm([]), files={"name": "box", "size": "2M"})
    s["step-across-window-end"] = dict(vm([{"op": "fill", "at": "0x401ff000", "length": "8K", "pattern": "zero"}],
                                          windows=[win]), files=[box])
    s["step-between-windows"] = dict(vm([{"op": "verify", "at": "0x401ff000", "length": "8K", "pattern": "zero"}],
                                        windows=[win, dict(win, at="0x40200000")]), files=[box])
    s["step-from-ram-into-window"] = dict(vm([{"op": "touch", "at": "0xfff000", "length": "8K"}],
                                             windows=[dict(win, at="16M")]), files=[box])
    s["touch-window-wrapping-stride"] = dict(vm([{"op": "touch", "at": "1G", "length": "2M",
                                                  "stride": "0xfffffffffff00000"}], windows=[win]), files=[box])
    s["free-in-window"] = dict(vm([{"op": "free", "at": "1G", "length": "2M"},
                                   {"op": "report", "ranges": [["1G", "4K"]], "expect": ["-EPERM"]}],
                                  windows=[win]), files=[box])
    s["words-in-window"] = dict(vm([{"op": "store_word", "at": "0x401ffff8", "value": 1},
                                    {"op": "wait_word", "at": "1G", "value": "0xffffffffffffffff", "timeout_ms": 1}],
                                   windows=[win]), files=[box])
    s["word-past-window"] = dict(vm([{"op": "store_word", "at": "0x40200000", "value": 2}], windows=[win]),
                                 files=[box])
    return s


def main():
    for name, data in hypercall_seeds().items():
        write("hypercalls", name, data)
    for name, data in ring_seeds().items():
        write("free_ring", name, data)
    for name, data in config_seeds().items():
        write("config", "mutated-" + name + ".json", data)


if __name__ == "__main__":
    main()
