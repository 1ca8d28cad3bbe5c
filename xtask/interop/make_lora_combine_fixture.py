"""Writes testdata/lora/combine/ with real PEFT's `add_weighted_adapter` (run
by `cargo xtask interop` into target/interop; the output is committed under
testdata/lora/combine). Deterministic: fixed seeds, CPU, one thread,
PYTHONHASHSEED=0 (PEFT keeps target_modules in a set).

Base: testdata/tiny-llama/safetensors-f32. Inputs: testdata/lora/basic (r=8,
alpha=16, all seven projections), testdata/lora/rslora (r=4, alpha=8, rsLoRA,
q/v) and `second/`, written here: r=8, alpha=4, q/v/up/down projections,
init_lora_weights=False (nn.Linear's default init for both factors), seed 23.

Each combination is saved with `save_pretrained` as its own adapter
directory (adapter_config.json + adapter_model.safetensors, no model card):

  linear       basic, second   weights [0.7, -0.4]
  cat          basic, rslora   weights [0.6, 1.3]   (ranks 8 + 4)
  svd          basic, second   weights [1.0, 0.5]   svd_rank=6
  svd_clamp    basic, second   weights [1.0, 0.5]   svd_rank=6, svd_clamp=0.9
  ties         basic, second   weights [0.7, 0.5]   density=0.5, "total"
  ties_frequency basic, second weights [0.7, 0.5]   density=0.3, "frequency"
  magnitude_prune basic, second weights [0.8, 0.6]  density=0.4

`extract_singular_values.safetensors`: for each module the basic adapter
targets, the float64 singular values of
(basic/merged_reference.safetensors - base) (the f32 difference, widened),
key = the base tensor name: the independent reference for LoRA extraction.
"""
import json
import os
import sys
from pathlib import Path

if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})

import torch
from peft import LoraConfig, PeftModel
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

root = Path(__file__).resolve().parents[2]
parent = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "testdata/lora"
out = parent / "combine"
out.mkdir(parents=True, exist_ok=True)
base_dir = root / "testdata/tiny-llama/safetensors-f32"
torch.set_num_threads(1)

base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
model = PeftModel.from_pretrained(base, root / "testdata/lora/basic", adapter_name="basic")
model.load_adapter(root / "testdata/lora/rslora", adapter_name="rslora")
torch.manual_seed(23)
model.add_adapter(
    "second",
    LoraConfig(
        r=8,
        lora_alpha=4,
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
        lora_dropout=0.0,
    ),
)


def save(name, subdir):
    tmp = out / "_tmp"
    model.save_pretrained(tmp, selected_adapters=[name])
    src = tmp / name if (tmp / name).is_dir() else tmp
    dst = out / subdir
    dst.mkdir(parents=True, exist_ok=True)
    os.replace(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
    # The absolute base path would make the file machine-dependent.
    config = json.loads((src / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (dst / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tmp.rmdir()
    print("wrote", dst)


save("second", "second")

CASES = [
    ("linear", ["basic", "second"], [0.7, -0.4], {}),
    ("cat", ["basic", "rslora"], [0.6, 1.3], {}),
    ("svd", ["basic", "second"], [1.0, 0.5], {"svd_rank": 6}),
    ("svd", ["basic", "second"], [1.0, 0.5], {"svd_rank": 6, "svd_clamp": 0.9}),
    ("ties", ["basic", "second"], [0.7, 0.5], {"density": 0.5, "majority_sign_method": "total"}),
    ("ties", ["basic", "second"], [0.7, 0.5], {"density": 0.3, "majority_sign_method": "frequency"}),
    ("magnitude_prune", ["basic", "second"], [0.8, 0.6], {"density": 0.4}),
]
NAMES = ["linear", "cat", "svd", "svd_clamp", "ties", "ties_frequency", "magnitude_prune"]
for name, (kind, adapters, weights, kw) in zip(NAMES, CASES):
    model.add_weighted_adapter(adapters, weights, name, combination_type=kind, **kw)
    save(name, name)

base_sd = load_file(base_dir / "model.safetensors")
merged = load_file(root / "testdata/lora/basic/merged_reference.safetensors")
svals = {}
for k in sorted(base_sd):
    if base_sd[k].dim() == 2 and not torch.equal(base_sd[k], merged[k]):
        delta = (merged[k].float() - base_sd[k].float()).double()
        svals[k] = torch.linalg.svdvals(delta).contiguous()
save_file(svals, out / "extract_singular_values.safetensors", metadata={"format": "pt"})
print("wrote", out / "extract_singular_values.safetensors", len(svals), "modules")
