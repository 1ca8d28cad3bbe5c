"""Runs `weightkit export` outputs in llama.cpp (llama-cpp-python) and
compares the logits with transformers running PEFT's own merge of the same
adapter (run by `cargo xtask interop` and `cargo xtask interop export`).

argv: a directory holding f32.gguf, q8_0.gguf and q4_k_m.gguf, written by
`weightkit export` from the tiny Llama (+ a Llama-3-style tokenizer) and
testdata/lora/basic, and `peft-merged/` (the tiny Llama's config.json with
PEFT 0.21.2's merged_reference.safetensors as model.safetensors).
Pinned: torch 2.15.0, transformers 5.24.0, llama-cpp-python 0.3.36.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from llama_cpp import Llama
from transformers import AutoModelForCausalLM

out = Path(sys.argv[1])
ids = [1, 17, 42, 99, 7, 200, 3, 64]
model = AutoModelForCausalLM.from_pretrained(out / "peft-merged", dtype=torch.float32)
with torch.no_grad():
    ref = model(torch.tensor([ids])).logits[0].numpy()
base = AutoModelForCausalLM.from_pretrained(out / "base", dtype=torch.float32)
with torch.no_grad():
    effect = float(np.max(np.abs(base(torch.tensor([ids])).logits[0].numpy() - ref)))
print(f"the adapter moves transformers' logits by up to {effect:.3g}")
worst = {}
for name, tol in [("f32.gguf", 1e-3), ("q8_0.gguf", 0.05), ("q4_k_m.gguf", 0.5)]:
    llm = Llama(model_path=str(out / name), n_ctx=16, logits_all=True, verbose=False, n_threads=2)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    del llm
    err = float(np.max(np.abs(logits - ref)))
    worst[name] = err
    print(f"{name}: max |llama.cpp - transformers on PEFT's merge| = {err:.3g}")
    assert err <= tol, f"{name}: {err} > {tol}"
    if name == "f32.gguf":
        assert (logits.argmax(-1) == ref.argmax(-1)).all(), name
assert effect > 100 * 1e-3, f"the adapter changes nothing ({effect})"
print("llama.cpp ran weightkit export's GGUFs as PEFT's merged model:", worst)
