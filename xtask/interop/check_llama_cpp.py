"""Runs weightkit-written GGUF files in llama.cpp (llama-cpp-python) and
compares the logits with transformers' (run by `cargo xtask interop`).

argv: a directory holding f32.gguf, q8_0.gguf and q4_k_m.gguf made by
weightkit from the tiny Llama (+ a Llama-3-style tokenizer), and the
reference logits file written by transformers for input_ids
[[1, 17, 42, 99, 7, 200, 3, 64]].
"""
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama
from safetensors.numpy import load_file

out = Path(sys.argv[1])
ref = load_file(sys.argv[2])["logits"][0]  # [8, 256]
ids = [1, 17, 42, 99, 7, 200, 3, 64]
worst = {}
for name, tol in [("f32.gguf", 1e-3), ("q8_0.gguf", 0.05), ("q4_k_m.gguf", 0.5)]:
    llm = Llama(model_path=str(out / name), n_ctx=16, logits_all=True, verbose=False, n_threads=2)
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
    err = float(np.max(np.abs(logits - ref)))
    worst[name] = err
    print(f"{name}: max |llama.cpp - transformers| = {err:.3g} (logits range {float(np.ptp(ref)):.3g})")
    assert err <= tol, f"{name}: max |llama.cpp - transformers| = {err} > {tol}"
    # The argmax tokens agree for the unquantized file (a random tiny model's
    # logits are near-ties, so quantized files may flip some).
    if name == "f32.gguf":
        assert (logits.argmax(-1) == ref.argmax(-1)).all(), name
    del llm
print("llama.cpp ran weightkit's GGUFs; max |logits - transformers|:", worst)
