#!/usr/bin/env python3
"""Writes the seed files for the `safetensors_parse` fuzz target into
`safetensors_parse/` beside this script (kept out of the seed directory so
the fuzzer does not read it as an input). Run from anywhere:
`python3 fuzz/seeds/make_seeds.py`.

The header layout is what weightkit's `header_bytes` (and the `safetensors`
crate) writes: compact JSON, padded with spaces to a multiple of 8, behind an
8-byte little-endian length.
"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "safetensors_parse")


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

if __name__ == "__main__":
    for name, blob in SEEDS.items():
        with open(os.path.join(HERE, name), "wb") as f:
            f.write(blob)
