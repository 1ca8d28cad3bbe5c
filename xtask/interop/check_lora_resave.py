"""Loads adapters re-saved by weightkit's Adapter::save with real PEFT and
checks they behave exactly like the originals (run by `cargo xtask interop`).

`prepare OUT`: writes OUT/src/basic-bin-bf16, the basic fixture as PEFT's
non-safetensors format (adapter_model.bin, torch.save) with every tensor
cast to bfloat16, so the re-save also goes through the pickle reader and
must keep the dtype.

`check OUT`: for each case, loads the original adapter and weightkit's
re-saved copy (OUT/resaved/<case>) onto the tiny Llama with
PeftModel.from_pretrained and compares the logits for input_ids
[[1, 17, 42, 99, 7, 200, 3, 64]], the loaded LoRA state dicts, and the
dtypes in the re-saved adapter_model.safetensors.
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

root = Path(__file__).resolve().parents[2]
mode, out = sys.argv[1], Path(sys.argv[2])
torch.set_num_threads(1)
base_dir = root / "testdata/tiny-llama/safetensors-f32"
CASES = {
    "basic": (root / "testdata/lora/basic", "F32"),
    "rank-pattern": (root / "testdata/lora/rank-pattern", "F32"),
    "dora": (root / "testdata/lora/dora", "F32"),
    "basic-bin-bf16": (out / "src/basic-bin-bf16", "BF16"),
}

if mode == "prepare":
    src = root / "testdata/lora/basic"
    dst = out / "src/basic-bin-bf16"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "adapter_config.json", dst / "adapter_config.json")
    state = {k: v.to(torch.bfloat16) for k, v in load_file(src / "adapter_model.safetensors").items()}
    torch.save(state, dst / "adapter_model.bin")
    print("wrote", dst)
    sys.exit(0)

assert mode == "check", mode
ids = torch.tensor([[1, 17, 42, 99, 7, 200, 3, 64]])


def load(adapter_dir):
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        logits = model(ids).logits
    return model, logits


results = {}
for name, (original, dtype) in CASES.items():
    resaved = out / "resaved" / name
    m1, l1 = load(original)
    m2, l2 = load(resaved)
    base = LlamaForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        l0 = base(ids).logits
    sd1, sd2 = get_peft_model_state_dict(m1), get_peft_model_state_dict(m2)
    assert sd1.keys() == sd2.keys(), (name, sd1.keys() ^ sd2.keys())
    same = all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    with safe_open(resaved / "adapter_model.safetensors", "pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    c1 = json.loads((Path(original) / "adapter_config.json").read_text())
    c2 = json.loads((resaved / "adapter_config.json").read_text())
    diff = (l1 - l2).abs().max().item()
    effect = (l1 - l0).abs().max().item()
    results[name] = diff
    print(
        f"{name}: max |logits(original) - logits(re-saved)| = {diff:.3g} "
        f"(the adapter moves logits by up to {effect:.3g}); "
        f"{len(sd1)} LoRA tensors identical: {same}; re-saved dtypes {sorted(dtypes)}; "
        f"config equal: {c1 == c2}"
    )
    assert same, name
    assert diff == 0.0, name
    assert effect > 1e-3, f"{name}: the adapter changes nothing, the check would be vacuous"
    assert dtypes == {dtype}, (name, dtypes)
    assert c1 == c2, name
print("PEFT loads weightkit's re-saved adapters; max |logits diff|:", results)
