#!/usr/bin/env python3
"""Writes the seed files for the fuzz targets into `<target>/` beside this
script (kept out of the seed directories so the fuzzer does not read it as
an input). Run from anywhere: `python3 fuzz/seeds/make_seeds.py`.

The safetensors header layout is what weightkit's `header_bytes` (and the
`safetensors` crate) writes: compact JSON, padded with spaces to a multiple
of 8, behind an 8-byte little-endian length.

The GGUF seeds are the repository's `testdata/gguf/*.gguf` fixtures, copied,
plus a few tiny hand-made files (`gguf()` below lays them out as gguf-py
does: header, tensor infos, zero padding to the alignment, then each
tensor's data padded to the alignment).

The pickle seeds (`pickle_vm/`, `zip_parse/`, `torch_checkpoint/`) are
copies of the repository's `testdata/pickle/` fixtures: torch's own
`views.pt` (zip) and `views.legacy.pt`, a selection of the small benign VM
pickles, the `data.pkl` and the five legacy pickles taken out of those two
checkpoints, the ZIP fixtures, and `views.pt` re-packed with Python's
`zipfile` (deflated storages, another archive prefix) so that inflated
storages are reachable too.
"""
import glob
import io
import json
import os
import shutil
import struct
import zipfile

SEEDS_DIR = os.path.dirname(os.path.abspath(__file__))
HERE = os.path.join(SEEDS_DIR, "safetensors_parse")
GGUF_HERE = os.path.join(SEEDS_DIR, "gguf_parse")
TESTDATA_GGUF = os.path.join(SEEDS_DIR, "..", "..", "testdata", "gguf")
TESTDATA_PICKLE = os.path.join(SEEDS_DIR, "..", "..", "testdata", "pickle")


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, data bytes), in storage order."""
    header, data, at = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
        data += raw
        at += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


SEEDS = {
    # A valid tiny file mixing dtypes and ranks (2-d, 1-d, 0-d).
    "tiny.safetensors": safetensors([
        ("w", "F32", [2, 2], struct.pack("<4f", 1.0, -2.0, 0.5, 3.25)),
        ("h", "F16", [3], struct.pack("<3H", 0x3C00, 0xC000, 0x7E00)),
        ("b", "BF16", [2], struct.pack("<2H", 0x3F80, 0x0001)),
        ("s", "I64", [], struct.pack("<q", -7)),
    ]),
    # `__metadata__` (string to string) before the tensors.
    "metadata.safetensors": safetensors(
        [("model.embed.weight", "U8", [2, 3], bytes(range(6)))],
        metadata={"format": "pt", "note": "seed with \u00e9scapes \"quoted\""},
    ),
    # Empty tensors: zero-sized dimensions share one offset.
    "empty_tensor.safetensors": safetensors([
        ("empty", "F32", [0], b""),
        ("also_empty", "BF16", [3, 0, 2], b""),
        ("one", "U8", [1], b"\x2a"),
    ]),
    # No tensors at all: the smallest valid file.
    "no_tensors.safetensors": safetensors([]),
}


# GGUF value type ids.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i",
              F32: "<f", BOOL: "<B", U64: "<Q", I64: "<q", F64: "<d"}
# ggml type ids.
GGML_F32, GGML_F16, GGML_Q8_0 = 0, 1, 8


def gguf_str(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack("<Q", len(b)) + b


def gguf_value(vtype, value):
    """The encoding of a value (without its type id)."""
    if vtype == STRING:
        return gguf_str(value)
    if vtype == ARRAY:
        elem, items = value
        out = struct.pack("<iQ", elem, len(items))
        return out + b"".join(gguf_value(elem, x) for x in items)
    return struct.pack(SCALAR_FMT[vtype], value)


def gguf(kv, tensors, version=3, alignment=32):
    """kv: list of (key, type id, value); tensors: list of (name, ggml type
    id, ne (innermost first), data bytes), in storage order."""
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for key, vtype, value in kv:
        out += gguf_str(key) + struct.pack("<i", vtype) + gguf_value(vtype, value)
    offset, data = 0, b""
    for name, ggml_type, ne, raw in tensors:
        out += gguf_str(name) + struct.pack("<I", len(ne))
        out += b"".join(struct.pack("<q", d) for d in ne)
        out += struct.pack("<iQ", ggml_type, offset)
        pad = b"\0" * (-len(raw) % alignment)
        data += raw + pad
        offset += len(raw) + len(pad)
    if tensors:
        out += b"\0" * (-len(out) % alignment)
    return out + data


GGUF_SEEDS = {
    # Magic, version, no tensors, no key-value pairs: the smallest valid file.
    "empty.gguf": gguf([], []),
    # Version 2, a custom alignment, scalars of several types (a bool byte
    # of 1), an F32 matrix and a zero-element tensor.
    "v2_align8.gguf": gguf(
        [("general.architecture", STRING, "llama"),
         ("general.alignment", U32, 8),
         ("llama.block_count", U32, 1),
         ("test.flag", BOOL, 1),
         ("test.eps", F32, 1e-5),
         ("test.big", I64, -(1 << 40))],
        [("w", GGML_F32, [2, 3], struct.pack("<6f", 1, 2, 3, 4, 5, -6)),
         ("empty", GGML_F16, [0, 4], b"")],
        version=2, alignment=8),
    # A tokenizer-like pair of arrays (one token not UTF-8), a Q8_0 block
    # with an f16 scale of 1.0, and an F16 vector.
    "vocab_q8_0.gguf": gguf(
        [("general.architecture", STRING, "llama"),
         ("tokenizer.ggml.tokens", ARRAY, (STRING, ["<s>", "\u2581a", b"\xff"])),
         ("tokenizer.ggml.scores", ARRAY, (F32, [0.0, -1.0, float("nan")])),
         ("general.name", STRING, b"not \xc3 utf-8")],
        [("blk.0.attn_q.weight", GGML_Q8_0, [32, 1],
          struct.pack("<H", 0x3C00) + bytes(range(32))),
         ("output_norm.weight", GGML_F16, [3], struct.pack("<3H", 0x3C00, 0x8000, 0x7E00))]),
}

# Benign VM fixtures copied into pickle_vm/ (testdata/pickle/vm/benign/):
# every handmade one, and each data shape at protocol 0 (text opcodes),
# 2 (GLOBAL, BINPUT) and 4 (FRAME, MEMOIZE, STACK_GLOBAL). The large
# `long_string_frames` and `many_memo` files are left out (they would raise
# libFuzzer's default -max_len).
VM_SHAPES = ["big_ints", "bools", "bytearray", "bytes", "empty_set", "floats",
             "frozenset", "i64_edges", "instance_newobj_build", "nested",
             "ordered_dict", "ordered_dict_metadata", "recursive_tuple",
             "self_ref_dict", "self_ref_list", "set", "shared", "small_ints",
             "torch_like_state_dict", "tuples", "unicode"]


def legacy_pickles(blob):
    """The five pickles at the start of a legacy torch.save file, split with
    pickletools (no unpickling)."""
    import pickletools
    out, f = [], io.BytesIO(blob)
    for _ in range(5):
        start = f.tell()
        for _op in pickletools.genops(f):
            pass
        out.append(blob[start:f.tell()])
    return out


def repack(src, prefix=None, compress=zipfile.ZIP_STORED):
    """The entries of zip `src`, rewritten by Python's zipfile (data.pkl and
    the storages compressed with `compress`), optionally under `prefix/`."""
    buf = io.BytesIO()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(buf, "w") as zout:
        for info in zin.infolist():
            name = info.filename
            if prefix is not None:
                name = prefix + name[name.index("/"):]
            data = zin.read(info)
            method = compress if ("/data/" in name or name.endswith("data.pkl")) else zipfile.ZIP_STORED
            zout.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buf.getvalue()


def write_dir(target, files):
    d = os.path.join(SEEDS_DIR, target)
    os.makedirs(d, exist_ok=True)
    for name, blob in files.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)


def pickle_seeds():
    def read(*parts):
        with open(os.path.join(TESTDATA_PICKLE, *parts), "rb") as f:
            return f.read()

    views = read("views.pt")
    legacy = read("views.legacy.pt")
    with zipfile.ZipFile(io.BytesIO(views)) as z:
        data_pkl = z.read("views/data.pkl")

    vm = {"views-data.pkl": data_pkl}
    for i, p in enumerate(legacy_pickles(legacy)):
        vm[f"views-legacy-{i}.pkl"] = p
    benign = os.path.join(TESTDATA_PICKLE, "vm", "benign")
    for path in sorted(glob.glob(os.path.join(benign, "handmade-*.pkl"))):
        vm[os.path.basename(path)] = read("vm", "benign", os.path.basename(path))
    for shape in VM_SHAPES:
        for proto in (0, 2, 4):
            name = f"{shape}-p{proto}.pkl"
            if os.path.exists(os.path.join(benign, name)):
                vm[name] = read("vm", "benign", name)
    write_dir("pickle_vm", vm)

    zips = {"views.pt": views}
    for path in sorted(glob.glob(os.path.join(TESTDATA_PICKLE, "zip", "*.zip"))):
        zips[os.path.basename(path)] = read("zip", os.path.basename(path))
    write_dir("zip_parse", zips)

    write_dir("torch_checkpoint", {
        "views.pt": views,
        "views.legacy.pt": legacy,
        # Python's zipfile layout (no data descriptors, no FB padding), a
        # prefix other than the file stem, deflated data.pkl and storages.
        "views-zipfile.pt": repack(os.path.join(TESTDATA_PICKLE, "views.pt"), prefix="model"),
        "views-deflated.pt": repack(os.path.join(TESTDATA_PICKLE, "views.pt"),
                                    compress=zipfile.ZIP_DEFLATED),
    })


if __name__ == "__main__":
    for name, blob in SEEDS.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(blob)
    os.makedirs(GGUF_HERE, exist_ok=True)
    for name, blob in GGUF_SEEDS.items():
        with open(os.path.join(GGUF_HERE, name), "wb") as f:
            f.write(blob)
    for path in sorted(glob.glob(os.path.join(TESTDATA_GGUF, "*.gguf"))):
        shutil.copyfile(path, os.path.join(GGUF_HERE, os.path.basename(path)))
    pickle_seeds()
