"""Runs weightkit-exported GGUF LoRA adapters in llama.cpp (llama-cpp-python)
on the tiny Llama's F32 GGUF and compares the logits with the merged model
(weightkit merge, then weightkit convert) run alone (run by
`cargo xtask interop` and `cargo xtask interop gguf-lora`).

argv: a directory holding base.gguf, and for each adapter NAME (basic,
rslora) NAME.gguf (weightkit adapter export-gguf) and merged-NAME.gguf; and
the llama.cpp converter's own rslora file (testdata/lora/gguf/rslora-f32.gguf),
which ignores use_rslora: it is run too, to show how far it is off.
"""
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

out = Path(sys.argv[1])
theirs_rslora = sys.argv[2]
ids = [1, 17, 42, 99, 7, 200, 3, 64]
# Both sides are f32: the adapter path computes W x + scale * B (A x), the
# merged one (W + scale * B A) x, so they differ by f32 rounding only.
TOL = 1e-3


def logits(model, lora=None, scale=1.0):
    kw = {"lora_path": str(lora), "lora_scale": scale} if lora else {}
    llm = Llama(model_path=str(model), n_ctx=16, logits_all=True, verbose=False, n_threads=2, **kw)
    llm.eval(ids)
    x = np.array(llm.scores[: len(ids)], dtype=np.float32)
    del llm
    return x


base = logits(out / "base.gguf")
results = {}
for name in ["basic", "rslora"]:
    merged = logits(out / f"merged-{name}.gguf")
    with_lora = logits(out / "base.gguf", out / f"{name}.gguf")
    err = float(np.max(np.abs(with_lora - merged)))
    effect = float(np.max(np.abs(merged - base)))
    results[name] = err
    print(
        f"{name}: max |llama.cpp base + weightkit adapter - merged| = {err:.3g} "
        f"(the adapter moves the logits by up to {effect:.3g})"
    )
    assert effect > 100 * TOL, f"{name}: the adapter changes nothing ({effect})"
    assert err <= TOL, f"{name}: {err} > {TOL}"

merged = logits(out / "merged-rslora.gguf")
wrong = logits(out / "base.gguf", theirs_rslora)
err = float(np.max(np.abs(wrong - merged)))
print(f"rslora with convert_lora_to_gguf.py's file: max |logits - merged| = {err:.3g}")
assert err > 100 * TOL, "the converter's rslora file should be visibly off"
# It is PEFT's adapter at half strength (alpha / r = 2 instead of
# alpha / sqrt(r) = 4): ours with llama.cpp's user scale 0.5 gives its logits.
half = logits(out / "base.gguf", out / "rslora.gguf", 0.5)
err_half = float(np.max(np.abs(half - wrong)))
print(f"rslora: weightkit's file at lora_scale 0.5 vs the converter's file: {err_half:.3g}")
assert err_half <= TOL, err_half
print("llama.cpp applies weightkit's GGUF LoRA adapters as PEFT merges them:", results)
