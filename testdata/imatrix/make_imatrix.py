#!/usr/bin/env python3
"""Writes small importance matrices in both formats llama.cpp's `llama-imatrix`
writes, and what llama-quantize makes of them.

Outputs (next to this script):
  imatrix.gguf   the GGUF format (`IMatrixCollector::save_imatrix`)
  imatrix.dat    the legacy format (`IMatrixCollector::save_imatrix_legacy`)
  expected.json  per format: datasets, chunk count/size and, per entry, the
                 vector llama-quantize's `load_imatrix` / `load_legacy_imatrix`
                 (tools/quantize/quantize.cpp) build, as f32 bit patterns

The statistics are simulated the way `IMatrixCollector::collect_imatrix`
accumulates them (float sums of x and x*x per column, int64 token counts per
matrix), from seeded random activations. Both files are written byte by byte
following llama.cpp's writers (tools/imatrix/imatrix.cpp and
ggml/src/gguf.cpp `gguf_write_to_buf`), with nothing but the standard library
and numpy (for float32 arithmetic); the GGUF file is then read back with
gguf-py (0.19) as a cross-check when it is installed.

Usage: python3 make_imatrix.py   (deterministic: same bytes every run)
"""

import json
import os
import re
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

CHUNK_SIZE = 512  # n_ctx / n_parallel
N_TOKENS = 2048  # 4 chunks
DATASET = "wiki.train.raw"
GGUF_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT

F32 = np.float32


class Stats:
    """`struct Stats` of imatrix.cpp."""

    def __init__(self, n_cols, n_mat):
        self.activations = np.zeros(n_cols * n_mat, dtype=F32)
        self.values = np.zeros(n_cols * n_mat, dtype=F32)
        self.counts = [0] * n_mat


def collect_dense(rng, n_cols, scale):
    """The GGML_OP_MUL_MAT branch: one matrix, one count per token."""
    st = Stats(n_cols, 1)
    col_scale = rng.uniform(0.05, 3.0, n_cols).astype(F32) * F32(scale)
    for _ in range(N_TOKENS):
        x = (rng.standard_normal(n_cols).astype(F32) * col_scale).astype(F32)
        st.activations = (st.activations + x).astype(F32)
        st.values = (st.values + x * x).astype(F32)
    st.counts[0] += N_TOKENS
    return st


def collect_experts(rng, n_cols, n_exp, used, never):
    """The GGML_OP_MUL_MAT_ID branch: `used` experts per token, expert
    `never` is never routed to (partial data)."""
    st = Stats(n_cols, n_exp)
    col_scale = rng.uniform(0.05, 3.0, n_cols).astype(F32)
    choices = [e for e in range(n_exp) if e != never]
    for _ in range(N_TOKENS):
        x = (rng.standard_normal(n_cols).astype(F32) * col_scale).astype(F32)
        for ex in rng.choice(choices, size=used, replace=False):
            s = slice(ex * n_cols, (ex + 1) * n_cols)
            st.activations[s] = (st.activations[s] + x).astype(F32)
            st.values[s] = (st.values[s] + x * x).astype(F32)
            st.counts[ex] += 1
    return st


def make_stats():
    rng = np.random.default_rng(20240607)
    stats = {}
    attn_in = collect_dense(rng, 256, 1.0)
    # q, k and v read the same input, so their statistics are identical.
    for w in ("attn_q", "attn_k", "attn_v"):
        stats[f"blk.0.{w}.weight"] = attn_in
    stats["blk.0.attn_output.weight"] = collect_dense(rng, 256, 0.5)
    stats["blk.0.ffn_down.weight"] = collect_dense(rng, 512, 0.25)
    stats["blk.10.attn_output.weight"] = collect_dense(rng, 256, 2.0)
    stats["blk.1.ffn_up_exps.weight"] = collect_experts(rng, 256, 4, 2, never=1)
    stats["output.weight"] = collect_dense(rng, 256, 1.5)
    return stats


def last_chunk(stats):
    """m_last_chunk after the run: the largest count over chunk_size."""
    return max(max(s.counts) for s in stats.values()) // CHUNK_SIZE


# ---------------------------------------------------------------- GGUF writer

GGUF_TYPE_UINT32 = 4
GGUF_TYPE_STRING = 8
GGUF_TYPE_ARRAY = 9
GGML_TYPE_F32 = 0


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def ggml_n_dims(ne):
    for i in range(3, 0, -1):
        if ne[i] > 1:
            return i + 1
    return 1


def pad(n, align=GGUF_ALIGNMENT):
    return (n + align - 1) // align * align


def write_gguf(stats, path):
    """`save_imatrix`: keys in insertion order, tensors for the sorted names
    (`W.in_sum2`, `W.counts`, then `W.in_sum`), gguf_write_to_buf's layout."""
    kv = b""
    kv += gguf_str("general.type") + struct.pack("<i", GGUF_TYPE_STRING) + gguf_str("imatrix")
    kv += gguf_str("imatrix.datasets") + struct.pack("<i", GGUF_TYPE_ARRAY)
    kv += struct.pack("<iQ", GGUF_TYPE_STRING, 1) + gguf_str(DATASET)
    kv += gguf_str("imatrix.chunk_count") + struct.pack("<iI", GGUF_TYPE_UINT32, last_chunk(stats))
    kv += gguf_str("imatrix.chunk_size") + struct.pack("<iI", GGUF_TYPE_UINT32, CHUNK_SIZE)
    n_kv = 4

    tensors = []  # (name, ne, float32 data)
    for name in sorted(stats):  # std::sort of std::string: bytewise
        st = stats[name]
        nval, nmat = len(st.values), len(st.counts)
        tensors.append((f"{name}.in_sum2", [nval // nmat, nmat, 1, 1], st.values.astype(F32)))
        tensors.append((f"{name}.counts", [1, nmat, 1, 1], np.array(st.counts, dtype=F32)))
        tensors.append((f"{name}.in_sum", [nval // nmat, nmat, 1, 1], st.activations.astype(F32)))

    infos = b""
    offset = 0
    for name, ne, data in tensors:
        n_dims = ggml_n_dims(ne)
        infos += gguf_str(name) + struct.pack("<I", n_dims)
        infos += b"".join(struct.pack("<q", ne[j]) for j in range(n_dims))
        infos += struct.pack("<iQ", GGML_TYPE_F32, offset)
        offset += pad(data.nbytes)

    out = bytearray(b"GGUF" + struct.pack("<Iqq", 3, len(tensors), n_kv) + kv + infos)
    out += bytes(pad(len(out)) - len(out))
    for _, _, data in tensors:
        raw = data.astype("<f4").tobytes()
        out += raw + bytes(pad(len(raw)) - len(raw))
    with open(path, "wb") as f:
        f.write(out)


# -------------------------------------------------------------- legacy writer


def write_dat(stats, path):
    """`save_imatrix_legacy`: entries whose counts are all zero are skipped,
    names sorted, values stored as `(value / count) * ncall` in float."""
    names = sorted(n for n, s in stats.items() if any(c != 0 for c in s.counts))
    out = bytearray(struct.pack("<i", len(names)))
    ncalls = {}
    for name in names:
        st = stats[name]
        b = name.encode()
        out += struct.pack("<i", len(b)) + b
        ncall = (max(st.counts) + (CHUNK_SIZE - 1)) // CHUNK_SIZE
        ncalls[name] = ncall
        nval, nmat = len(st.values), len(st.counts)
        out += struct.pack("<ii", ncall, nval)
        tmp = np.zeros(nval, dtype=F32)
        for i in range(nval):
            count = F32(st.counts[i // (nval // nmat)])
            value = F32(st.values[i])
            if count == F32(0):
                value, count = F32(1), F32(1)
            tmp[i] = F32(F32(value / count) * F32(ncall))
        out += tmp.astype("<f4").tobytes()
    out += struct.pack("<i", last_chunk(stats))
    d = DATASET.encode()
    out += struct.pack("<i", len(d)) + d
    with open(path, "wb") as f:
        f.write(out)
    return names, ncalls


# ----------------------------------------- what llama-quantize makes of them


def bits(a):
    return [int(x) for x in np.asarray(a, dtype="<f4").view("<u4")]


def expected_gguf(stats):
    """`load_imatrix`: in_sum2 / count per matrix, 1 where count <= 0."""
    out = {}
    for name, st in stats.items():
        nmat = len(st.counts)
        ne0 = len(st.values) // nmat
        e = np.zeros(len(st.values), dtype=F32)
        for j in range(nmat):
            count = F32(st.counts[j])
            for i in range(ne0):
                e[j * ne0 + i] = F32(st.values[j * ne0 + i] / count) if count > 0 else F32(1)
        out[name] = {"n_mat": nmat, "bits": bits(e)}
    return out


def expected_dat(path):
    """`load_legacy_imatrix`, reading the file just written: values / ncall."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    (n_entries,) = take("<i")
    out = {}
    for _ in range(n_entries):
        (n,) = take("<i")
        name = buf[pos : pos + n].decode()
        pos += n
        ncall, nval = take("<ii")
        e = np.frombuffer(buf, dtype="<f4", count=nval, offset=pos).astype(F32)
        pos += 4 * nval
        if ncall > 0:
            e = (e / F32(ncall)).astype(F32)
        out[name] = {"bits": bits(e)}
    (last_call,) = take("<i")
    (dlen,) = take("<i")
    dataset = buf[pos : pos + dlen].decode()
    assert pos + dlen == len(buf)
    return out, last_call, dataset


def cross_check_with_gguf_py(path, stats):
    try:
        from gguf import GGUFReader
    except ImportError:
        print("gguf-py not installed: cross-check skipped")
        return
    r = GGUFReader(path)
    tensors = {t.name: t for t in r.tensors}
    for name, st in stats.items():
        t = tensors[f"{name}.in_sum2"]
        assert np.array_equal(np.asarray(t.data).reshape(-1), st.values), name
        c = tensors[f"{name}.counts"]
        assert [int(x) for x in np.asarray(c.data).reshape(-1)] == st.counts, name
    assert int(r.fields["imatrix.chunk_size"].parts[-1][0]) == CHUNK_SIZE
    print(f"gguf-py reads {os.path.basename(path)}: {len(r.tensors)} tensors, ok")


def main():
    stats = make_stats()
    gguf_path = os.path.join(HERE, "imatrix.gguf")
    dat_path = os.path.join(HERE, "imatrix.dat")
    write_gguf(stats, gguf_path)
    write_dat(stats, dat_path)
    cross_check_with_gguf_py(gguf_path, stats)
    legacy_entries, last_call, dataset = expected_dat(dat_path)
    expected = {
        "gguf": {
            "file": "imatrix.gguf",
            "datasets": [DATASET],
            "chunk_count": last_chunk(stats),
            "chunk_size": CHUNK_SIZE,
            "entries": expected_gguf(stats),
        },
        "legacy": {
            "file": "imatrix.dat",
            "datasets": [dataset],
            "chunk_count": last_call,
            "chunk_size": None,
            "entries": legacy_entries,
        },
    }
    text = json.dumps(expected, indent=1, sort_keys=True)
    # One line per bit-pattern list.
    text = re.sub(r"\[\s+([0-9,\s]+?)\s+\]", lambda m: "[" + ",".join(m.group(1).split()) + "]", text)
    text = text.replace(",,", ",")
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        f.write(text + "\n")
    print("wrote imatrix.gguf, imatrix.dat, expected.json")


if __name__ == "__main__":
    main()
