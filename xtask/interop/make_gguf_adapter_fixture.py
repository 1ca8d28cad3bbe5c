"""Writes the llama.cpp-made GGUF LoRA adapters in testdata/lora/gguf/ by
running llama.cpp's own convert_lora_to_gguf.py (from the pinned llama.cpp
sources) on the PEFT fixtures in testdata/lora, with the tiny Llama's
config.json as --base.

usage: make_gguf_adapter_fixture.py LLAMA_CPP_DIR [OUT_DIR]

LLAMA_CPP_DIR is a llama.cpp checkout at the pinned commit (the one vendored
by llama-cpp-python 0.3.36's source distribution); the converter runs with
that checkout's gguf-py, as it does by default. OUT_DIR defaults to
testdata/lora/gguf. Run with the interop venv's python (torch, transformers,
numpy). Deterministic: the converter has no randomness, and gguf-py writes
tensors in the order it is given them.

Files (NAME-OUTTYPE.gguf):
- basic-f32.gguf, basic-q8_0.gguf: the reference layouts weightkit's
  exporter must reproduce (tensor by tensor; q8_0 also checks the converter's
  F16 fallback for rows that are not a multiple of 32).
- rslora-f32.gguf, rank-pattern-f32.gguf: what the converter makes of rsLoRA
  and rank_pattern/alpha_pattern adapters. It ignores use_rslora and the
  patterns (only lora_alpha is written; llama.cpp scales by alpha / rank),
  so these files apply the wrong scaling: weightkit's tests check that its
  own export equals these tensors times PEFT's scaling over llama.cpp's.
"""
import subprocess
import sys
from pathlib import Path

PINNED_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
root = Path(__file__).resolve().parents[2]
llama_cpp = Path(sys.argv[1]).resolve()
out = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "testdata/lora/gguf"
base = root / "testdata/tiny-llama/safetensors-f32"

head = subprocess.run(
    ["git", "-C", str(llama_cpp), "rev-parse", "HEAD"], capture_output=True, text=True
)
if head.returncode != 0 or head.stdout.strip() != PINNED_COMMIT:
    sys.exit(f"{llama_cpp} is not llama.cpp at {PINNED_COMMIT} ({head.stdout.strip() or head.stderr.strip()})")

out.mkdir(parents=True, exist_ok=True)
for name, outtype in [
    ("basic", "f32"),
    ("basic", "q8_0"),
    ("rslora", "f32"),
    ("rank-pattern", "f32"),
]:
    target = out / f"{name}-{outtype}.gguf"
    cmd = [
        sys.executable,
        str(llama_cpp / "convert_lora_to_gguf.py"),
        "--base", str(base),
        "--outtype", outtype,
        "--outfile", str(target),
        str(root / "testdata/lora" / name),
    ]
    print("running", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    print("wrote", target, target.stat().st_size, "bytes")
