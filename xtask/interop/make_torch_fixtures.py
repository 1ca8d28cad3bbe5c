"""Writes extra torch.save fixtures (run by `cargo xtask interop`; outputs are
committed under testdata/pickle/torch/). Deterministic: fixed seed, CPU.

- v3_dtypes.pt: dtypes without a legacy storage class (float8_e4m3fn,
  float8_e5m2, uint16, uint32, uint64), saved through _rebuild_tensor_v3.
- parameters.pt: nn.Parameter values (_rebuild_parameter) and a plain tensor.
- nested.pt: {"epoch": 3, "state_dict": {...}, "optimizer": {...}}.
- linear_state_dict.pt: nn.Sequential(...).state_dict() (OrderedDict with _metadata).
- *.expected.safetensors: the same tensors, contiguous, for comparison.
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
g = torch.Generator().manual_seed(0)


def save(name, obj, tensors):
    torch.save(obj, out / f"{name}.pt")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, out / f"{name}.expected.safetensors")


v3 = {
    "f8e4m3": (torch.randn(4, 8, generator=g) * 4).to(torch.float8_e4m3fn),
    "f8e5m2": (torch.randn(3, 5, generator=g) * 4).to(torch.float8_e5m2),
    "u16": torch.randint(0, 65535, (6,), generator=g).to(torch.uint16),
    "u32": torch.randint(0, 2**31 - 1, (5,), generator=g).to(torch.uint32),
    "u64": torch.randint(0, 2**62, (2, 2), generator=g).to(torch.uint64),
}
save("v3_dtypes", v3, v3)

params = {
    "weight": torch.nn.Parameter(torch.randn(3, 4, generator=g)),
    "frozen": torch.nn.Parameter(torch.randn(2, generator=g), requires_grad=False),
    "plain": torch.arange(6, dtype=torch.int32).reshape(2, 3),
}
save("parameters", params, params)

sd = {"a.weight": torch.randn(2, 3, generator=g), "a.bias": torch.randn(2, generator=g)}
nested = {"epoch": 3, "state_dict": sd, "optimizer": {"lr": 0.1, "step": torch.tensor(7)}}
save("nested", nested, sd)

model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.Linear(3, 2, bias=False))
linear = model.state_dict()
save("linear_state_dict", linear, dict(linear))
print("wrote", sorted(p.name for p in out.iterdir()))
