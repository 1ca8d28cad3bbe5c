"""Loads weightkit-written checkpoints with real torch (run by `cargo xtask interop`).

`ours.pt` must load with torch.load(weights_only=True) and hold exactly the
tensors of `expected.safetensors` (written by weightkit's safetensors writer,
read here by the official safetensors library).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

out = Path(sys.argv[1])
ours = torch.load(out / "ours.pt", weights_only=True, map_location="cpu")
expected = load_file(out / "expected.safetensors")
assert isinstance(ours, dict), type(ours)
assert list(ours) == sorted(ours, key=list(ours).index)
assert set(ours) == set(expected), (set(ours) ^ set(expected))
for name, t in expected.items():
    o = ours[name]
    assert o.dtype == t.dtype, (name, o.dtype, t.dtype)
    assert tuple(o.shape) == tuple(t.shape), (name, o.shape, t.shape)
    assert o.is_contiguous(), name
    # Bit-level equality (NaN-safe): compare the raw bytes.
    raw = lambda x: x.reshape(-1).view(torch.uint8) if x.numel() else x.reshape(-1)
    assert torch.equal(raw(o), raw(t)), name
print(f"torch {torch.__version__}: torch.load(weights_only=True) read {len(ours)} tensors, all equal")
