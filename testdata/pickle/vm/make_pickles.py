#!/usr/bin/env python3
"""Writes the fixtures of weightkit-pickle's VM tests (crates/pickle/tests/vm.rs).

Run from anywhere with python3 (no torch needed); it rewrites, next to itself:

* ``benign/<case>-p<N>.pkl``: real pickles made by Python's ``pickle.dumps``
  at every protocol 0-5, plus ``handmade-*.pkl``: Python 2 era opcodes and
  opcodes Python 3 rarely writes (STRING, BINSTRING, PERSID, POP, DUP,
  BINUNICODE8, ...), checked here with a restricted ``pickle.loads`` (no
  globals can be resolved).
* ``benign/expected.json``: for each case, the expected value in a tagged
  JSON form (see ``enc``) and its files, each with ``needs_globals``.
* ``malicious/NN-description.pkl``: hostile or malformed pickles, written as
  raw bytes and NEVER loaded by this script. The expected error of each is in
  the table in crates/pickle/tests/vm.rs.
"""

import collections
import io
import json
import pickle
import pickletools
import struct
import sys
import types
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------- encoding


def enc(o, path=()):
    """The tagged JSON form the Rust test builds from the object graph.

    None/bool/str as themselves; ints in i64 as numbers, others as
    {"bigint": minimal little-endian two's complement hex}; floats as
    {"float": big-endian IEEE bits hex}; bytes and bytearray as
    {"bytes": hex}; lists as arrays; {"tuple": [...]}, {"set": [...]},
    {"frozenset": [...]}; dicts as {"dict": [[k, v], ...]} (+ "state" for an
    OrderedDict with attributes); {"call": "module.name", "args": [...],
    "state": ...} for an instance rebuilt by a call; {"persid": pid};
    {"global": "module.name"}; a reference back to an enclosing container as
    {"cycle": n}, n = how many containers up (1 = the direct parent).
    """
    for depth, anc in enumerate(reversed(path), start=1):
        if anc is o:
            return {"cycle": depth}
    sub = path + (o,)
    if o is None or isinstance(o, (bool, str)):
        return o
    if isinstance(o, int):
        if -(2**63) <= o < 2**63:
            return o
        return {"bigint": pickle.encode_long(o).hex()}
    if isinstance(o, float):
        return {"float": struct.pack(">d", o).hex()}
    if isinstance(o, (bytes, bytearray)):
        return {"bytes": bytes(o).hex()}
    if isinstance(o, list):
        return [enc(x, sub) for x in o]
    if isinstance(o, tuple):
        return {"tuple": [enc(x, sub) for x in o]}
    if isinstance(o, frozenset):
        return {"frozenset": [enc(x, sub) for x in o]}
    if isinstance(o, set):
        return {"set": [enc(x, sub) for x in o]}
    if isinstance(o, dict):
        out = {"dict": [[enc(k, sub), enc(v, sub)] for k, v in o.items()]}
        attrs = getattr(o, "__dict__", None)
        if attrs:
            out["state"] = enc(attrs, sub)
        return out
    if isinstance(o, PersId):
        return {"persid": enc(o.pid, sub)}
    if isinstance(o, type):
        return {"global": f"{o.__module__}.{o.__qualname__}"}
    if isinstance(o, FakeTensor):
        return {"call": "torch._utils._rebuild_tensor_v2", "args": [enc(x, sub) for x in o.args]}
    if isinstance(o, Point):
        return {"call": "__main__.Point", "args": [], "state": enc(vars(o), sub)}
    raise TypeError(type(o))


class PersId:
    def __init__(self, pid):
        self.pid = pid


class Point:
    """A plain class: pickled as NEWOBJ (protocol >= 2) + BUILD of its __dict__."""

    def __init__(self, x, y):
        self.x, self.y = x, y


# A stand-in for torch, so that the torch-style pickle names the real globals.
torch = types.ModuleType("torch")
torch._utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch
sys.modules["torch._utils"] = torch._utils


def _rebuild_tensor_v2(*args):
    raise AssertionError("never called")


_rebuild_tensor_v2.__module__ = "torch._utils"
torch._utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class FloatStorage:
    pass


FloatStorage.__module__ = "torch"
torch.FloatStorage = FloatStorage


class FakeStorage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class FakeTensor:
    def __init__(self, storage, shape, stride):
        self.args = (
            PersId(("storage", FloatStorage, storage.key, "cpu", storage.numel)),
            0,
            shape,
            stride,
            False,
            collections.OrderedDict(),
        )
        self.storage, self.shape, self.stride = storage, shape, stride

    def __reduce_ex__(self, proto):
        return (
            _rebuild_tensor_v2,
            (self.storage, 0, self.shape, self.stride, False, collections.OrderedDict()),
        )


class TorchPickler(pickle.Pickler):
    """Writes storages as persistent ids, as torch.save does."""

    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", FloatStorage, obj.key, "cpu", obj.numel)
        return None


# ---------------------------------------------------------------- benign


def benign_cases():
    shared_inner = [1]
    self_list = [1]
    self_list.append(self_list)
    self_dict = {"k": "v"}
    self_dict["me"] = self_dict
    rec_tuple = ([],)
    rec_tuple[0].append(rec_tuple)
    many = [[i] for i in range(300)]
    od = collections.OrderedDict([("b", 2), ("a", 1)])
    od_meta = collections.OrderedDict([("w", [1.5])])
    od_meta._metadata = {"": {"version": 1}}
    sd = collections.OrderedDict()
    sd["weight"] = FakeTensor(FakeStorage("0", 4), (2, 2), (2, 1))
    sd["bias"] = FakeTensor(FakeStorage("1", 2), (2,), (1,))
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return {
        "none": None,
        "bools": [True, False],
        "small_ints": [0, 1, -1, 127, 128, 255, 256, 65535, 65536, -128, -129, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1],
        "i64_edges": [2**63 - 1, -(2**63), 2**62, -(2**62)],
        "big_ints": [2**63, -(2**63) - 1, 2**64, -(2**64), 2**100, -(2**100) - 1, 2**2100, -(2**2100)],
        "floats": [0.0, -0.0, 1.5, -2.25, 0.1, 1e300, 5e-324, float("inf"), float("-inf"), float("nan")],
        "unicode": [
            "", "ascii", "h\u00e9llo w\u00f6rld", "\u65e5\u672c\u8a9e", "\U0001f980 crab",
            "back\\slash", "\\u1234 not an escape", "\\\\u00e9", "new\nline", "nul\x00",
            "cr\r", "sub\x1a", "quote ' \" done", "x" * 300,
        ],
        "long_string_frames": ["a", "\u00e9" * 32768, "b"],
        "bytes": [b"", b"abc", bytes(range(256)), b"\x00\xff" * 200],
        "bytearray": bytearray(b"ba\x00\xff"),
        "empty_bytearray": bytearray(),
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        "nested": {
            "a": [1, (2, 3), {"b": None}],
            "c": ((), [], {}),
            5: "int key",
            (1, 2): "tuple key",
            None: [[[[]]]],
        },
        "set": {1, 2, 3},
        "empty_set": set(),
        "frozenset": frozenset({4, 5}),
        "shared": [shared_inner, shared_inner],
        "self_ref_list": self_list,
        "self_ref_dict": self_dict,
        "recursive_tuple": rec_tuple,
        "many_memo": [many, many[::-1]],
        "ordered_dict": od,
        "ordered_dict_metadata": od_meta,
        "instance_newobj_build": Point(1, [2]),
        "torch_like_state_dict": sd,
    }


TEXTLESS_PID = {"torch_like_state_dict"}


def needs_globals(data):
    return any(
        op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ")
        for op, _arg, _pos in pickletools.genops(data)
    )


def dumps(obj, proto):
    buf = io.BytesIO()
    TorchPickler(buf, protocol=proto).dump(obj)
    return buf.getvalue()


class DataOnly(pickle.Unpickler):
    """Loads the handmade benign pickles: no globals, markers for pids."""

    def find_class(self, module, name):
        raise AssertionError(f"handmade pickle names {module}.{name}")

    def persistent_load(self, pid):
        return PersId(pid)


def u32(n):
    return struct.pack("<I", n)


def i32(n):
    return struct.pack("<i", n)


def u64(n):
    return struct.pack("<Q", n)


def binunicode(s):
    b = s.encode()
    return b"X" + u32(len(b)) + b


def short_binunicode(s):
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


HANDMADE = {
    # Python 2 text opcodes: STRING with escapes, INT bools, LONG, FLOAT.
    "py2_text": b"(lp0\nS'abc'\np1\naS'esc\\n\\x41\\101\\\\\\'\\q'\np2\naS\"dq'\"\np3\na"
    b"I01\naI00\naI-5\naL123L\naL-99999999999999999999999L\naL7\naF1.5\naF-inf\naF1e-05\na.",
    # Python 2 binary strings decode as latin-1.
    "py2_binstrings": b"\x80\x02]q\x00(U\x07storageq\x01T\x04\x00\x00\x00\xe9\xe8\xff\x00U\x00e.",
    # Text and binary persistent ids.
    "persid": b"(lp0\nPstorage0\naPx\na(X\x07\x00\x00\x00storageK\x05tQa.",
    # POP, POP_MARK, DUP, and POP of an empty frame popping its MARK.
    "stack_ops": b"\x80\x02(K\x01K\x021K\x030(0N2\x86.",
    # 8-byte lengths Python only writes for objects over 4 GiB.
    "eight_byte_lengths": b"\x80\x05\x8d" + u64(3) + b"abc\x8e" + u64(2) + b"\xff\x00\x96" + u64(1) + b"z\x87.",
    # DICT, SETITEM, text GET/PUT, LONG_BINPUT/LONG_BINGET with small keys.
    "text_memo": b"(dp7\nVk\np8\n(lp9\nsg9\ng7\nr\x05\x00\x00\x00j\x05\x00\x00\x00\x87.",
    # An empty frame, then a frame, then unframed opcodes.
    "frames": b"\x80\x04\x95" + u64(0) + b"\x95" + u64(2) + b"K\x01K\x02\x86.",
    # LONG1 with redundant sign bytes, LONG1 of length 0, BININT of -1.
    "long1_forms": b"\x80\x02(\x8a\x03\x01\x00\x00\x8a\x00\x8a\x02\xff\xffJ\xff\xff\xff\xff\x8a\x09"
    + b"\x00" * 8 + b"\x80\x8b" + i32(3) + b"\xff\xff\x7ft.",
    # A UNICODE line with raw-unicode-escape forms Python 3 writes.
    "raw_unicode": b"V\\u00e9\\\\u00e9 \\U0001f980 \xe9\n.",
    # Trailing bytes after STOP are not read.
    "trailing_bytes": b"\x80\x02K\x07.garbage\xff",
}


def write_benign():
    out = HERE / "benign"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.pkl"):
        old.unlink()
    manifest = []
    for name, obj in benign_cases().items():
        files = []
        # Protocol 0 writes persistent ids as str(pid): torch never uses it.
        for proto in range(1 if name in TEXTLESS_PID else 0, 6):
            data = dumps(obj, proto)
            fname = f"{name}-p{proto}.pkl"
            (out / fname).write_bytes(data)
            files.append({"file": fname, "protocol": proto, "needs_globals": needs_globals(data)})
        manifest.append({"name": name, "expected": enc(obj), "files": files})
    for name, data in HANDMADE.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the \\q escape
            obj = DataOnly(io.BytesIO(data), encoding="latin1").load()
        fname = f"handmade-{name}.pkl"
        (out / fname).write_bytes(data)
        manifest.append(
            {
                "name": f"handmade-{name}",
                "expected": enc(obj),
                "files": [{"file": fname, "protocol": None, "needs_globals": False}],
            }
        )
    with open(out / "expected.json", "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------- malicious

P2 = b"\x80\x02"
P4 = b"\x80\x04"


def memo_bomb(levels):
    # a = []; b = (a, a); c = (b, b); ... : 2**levels leaves if copied.
    out = b"(lp0\n0"
    for i in range(levels):
        out += b"(g%d\ng%d\ntp%d\n0" % (i, i, i + 1)
    return out + b"g%d\n." % levels


TORCH_GADGET = (
    P2
    + b"ctorch._utils\n_rebuild_tensor_v2\nq\x00(("
    + binunicode("storage")
    + b"cbuiltins\neval\nq\x01"
    + binunicode("0")
    + binunicode("cpu")
    + b"K\x04tq\x02QK\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rtq\x03Rq\x04."
)

MALICIOUS = {
    "01-os-system": b"cos\nsystem\n(S'echo pwned'\ntR.",
    "02-posix-system-proto2": P2 + b"cposix\nsystem\nq\x00" + binunicode("id") + b"\x85R.",
    "03-subprocess-popen-stack-global": P4 + short_binunicode("subprocess") + short_binunicode("Popen")
    + b"\x93" + short_binunicode("/bin/sh") + b"\x85R.",
    "04-builtins-eval": b"cbuiltins\neval\n(Vprint('pwned')\ntR.",
    "05-builtins-exec": P2 + b"cbuiltins\nexec\n" + binunicode("import os") + b"\x85R.",
    "06-builtins-getattr": P2 + b"cbuiltins\ngetattr\nccollections\nOrderedDict\n" + binunicode("fromkeys")
    + b"\x86R)R.",
    "07-python2-builtin-eval": b"c__builtin__\neval\n(S'1+1'\ntR.",
    "08-nt-system-allow-all": b"cnt\nsystem\n(S'calc'\ntR.",
    "09-os-path-allow-all": b"cos.path\nexists\n(S'/'\ntR.",
    "10-inst": b"(S'ls'\nios\nsystem\n.",
    "11-obj": b"(ccollections\nOrderedDict\no.",
    "12-newobj-ex-forbidden-class": P4 + short_binunicode("subprocess") + short_binunicode("Popen") + b"\x93"
    + short_binunicode("/bin/sh") + b"\x85}\x92.",
    "13-newobj-on-list": P2 + b"])\x81.",
    "14-build-on-list": P2 + b"]}b.",
    "15-build-on-int": P2 + b"K\x01}b.",
    "16-memo-bomb": memo_bomb(100),
    "17-recursion-bomb": P2 + b"]" * 100_000 + b"a" * 99_999 + b".",
    "18-huge-binunicode8": P4 + b"\x8d" + u64(1 << 60) + b"abc.",
    "19-huge-binbytes8": P4 + b"\x8e" + u64(1 << 60) + b"abc.",
    "20-huge-long4": P2 + b"\x8b" + i32(0x7FFFFFFF) + b"\x00" * 8 + b".",
    "21-frame-larger-than-input": P4 + b"\x95" + u64(1000) + b"N.",
    "22-get-missing-memo": P2 + b"h\x05.",
    "23-stack-underflow": P2 + b"K\x01\x86.",
    "24-unknown-opcode-ff": P2 + b"\xff.",
    "25-protocol-6": b"\x80\x06N.",
    "26-ext2": P2 + b"\x83\x01\x00.",
    "27-readonly-buffer": b"\x80\x05\x96" + u64(1) + b"x\x98.",
    "28-next-buffer": b"\x80\x05\x97.",
    "29-torch-gadget-persid-eval": TORCH_GADGET,
    "30-reduce-on-call-result": P2 + b"ctorch\nSize\n)R)R.",
    "31-reduce-args-not-tuple": P2 + b"ctorch\nSize\n]R.",
    "32-setitem-on-list": P2 + b"]K\x01K\x02s.",
    "33-append-on-dict": P2 + b"}K\x01a.",
    "34-no-stop": P2 + b"]q\x00K\x01a",
    "35-empty-stack-at-stop": P2 + b".",
    "36-mark-not-found": P2 + b"K\x01K\x02t.",
    "37-invalid-utf8": P2 + b"X\x02\x00\x00\x00\xff\xfe.",
    "38-string-unquoted": b"Sabc\n.",
    "39-negative-binstring": P2 + b"T" + i32(-1) + b".",
    "40-memo-too-large": P2 + b"N" + b"".join(b"q" + bytes([i]) for i in range(32)) + b".",
    "41-too-many-objects": P2 + b"N0" * 200 + b"N.",
    "42-stack-too-deep": P2 + b"N" * 200 + b".",
    "43-truncated-binint": P2 + b"J\x01\x00",
    "44-huge-decimal-long": b"L" + b"9" * 10_000 + b"L\n.",
    "45-nested-frame": P4 + b"\x95" + u64(20) + b"\x95" + u64(2) + b"N." + b"\x00" * 9,
    "46-opcode-straddles-frame": P4 + b"\x95" + u64(3) + b"J\x01\x00\x00\x00.",
    "47-build-twice": P2 + b"ctorch\nSize\n)R}b}b.",
    "48-stack-global-non-str": P4 + b"K\x01K\x02\x93.",
    "49-dict-odd-items": b"(K\x01d.",
    "50-newobj-ex-kwargs": P4 + b"ctorch\nSize\n)}" + short_binunicode("a") + b"K\x01s\x92.",
    "51-global-not-utf8": b"cos\xff\nsystem\n.",
    "52-reduce-on-str": P2 + binunicode("os.system") + b")R.",
    "53-append-below-mark": P2 + b"]K\x01(a.",
    "54-int-garbage": b"I12abc\n.",
    "55-lone-surrogate-utf8": P2 + b"X\x03\x00\x00\x00\xed\xa0\x80.",
    "56-lone-surrogate-escape": b"V\\ud800\n.",
    "57-copyreg-reconstructor": b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nNNtR.",
    "58-torch-load-from-bytes": P2 + b"ctorch.storage\n_load_from_bytes\nC\x01xR.",
    "59-build-on-global": P2 + b"ccollections\nOrderedDict\n}b.",
    "60-truncated-global-line": b"cos\nsys",
    "61-long-line-over-limit": b"I" + b"1" * 5000,
}


def write_malicious():
    out = HERE / "malicious"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.pkl"):
        old.unlink()
    for name, data in MALICIOUS.items():
        (out / f"{name}.pkl").write_bytes(data)


if __name__ == "__main__":
    write_benign()
    write_malicious()
