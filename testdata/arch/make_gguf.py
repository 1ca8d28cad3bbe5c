#!/usr/bin/env python3
"""Runs llama.cpp's real `convert_hf_to_gguf.py` on tiny model directories and
writes the GGUF files the weightkit-io `arch` tests compare against key by key
(and, for the full conversions, tensor by tensor).

Needs torch, transformers (5.x), tokenizers, sentencepiece, numpy, and a
llama.cpp checkout (its `convert_hf_to_gguf.py`, `conversion/` and `gguf-py/`):

    target/interop-venv/bin/python testdata/arch/make_gguf.py /path/to/llama.cpp

What the fixtures were made with is recorded in `expected/PROVENANCE.json`
(set `LLAMA_CPP_SOURCE` to describe the checkout, e.g. its commit).

Runs (model directories are assembled in a temporary folder):

| output | config | tokenizer | weights | mode |
|---|---|---|---|---|
| `expected/llama3.f32.gguf` | tiny-llama (transformers 5, rope_parameters) | tok-llama3 | tiny-llama f32 | full, `--outtype f32` |
| `expected/qwen2.f32.gguf` | `qwen2/config.json` | tok-qwen2 | `qwen2/model.safetensors` | full, `--outtype f32` |
| `expected/llama-bias.f32.gguf` | `llama-bias/config.json` | tok-qwen2 | `llama-bias/model.safetensors` | full, `--outtype f32` |
| `expected/llama2.vocab.gguf` | config-llama-t4.json | tok-llama2 (tokenizer.json only) | none | `--vocab-only` |
| `expected/llama2-spm.vocab.gguf` | config-llama-t4.json | tok-llama2 (with tokenizer.model) | none | `--vocab-only` |
| `expected/unigram.vocab.gguf` | config-llama-t4.json | tok-unigram (with tokenizer.model) | none | `--vocab-only` |
| `expected/mistral.vocab.gguf` | config-mistral.json | tok-llama2 (tokenizer.json only) | none | `--vocab-only` |
| `expected/llama3-rope.vocab.gguf` | config-llama3-rope.json | tok-llama3 | none | `--vocab-only` |
| `expected/llama3-jinja.vocab.gguf` | tiny-llama | tok-llama3-jinja | none | `--vocab-only` |
| `expected/llama3-rope.rope_freqs.f32` | config-llama3-rope.json | | | `LlamaModel.generate_extra_tensors` |

The BPE pre-tokenizer name (`tokenizer.ggml.pre`) is chosen by
`get_vocab_base_pre`, which hashes the token ids of a fixed text; a tiny
tokenizer's hash is in no table, so this script replaces that method by one
returning `llama-bpe` (for tok-llama3) or `qwen2` (for tok-qwen2), the names
convert gives the real Llama-3 and Qwen2 tokenizers whose pre-tokenizers the
tiny ones copy. Everything else is convert's own code.

`qwen2/` (config.json, model.safetensors) is made here too, by transformers'
`Qwen2ForCausalLM` with torch seed 0 and random (non-zero) q/k/v biases, and
`llama-bias/`, a `LlamaForCausalLM` with `attention_bias` and `mlp_bias`
(seed 1, random biases: the converter permutes q/k biases like the weights).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TINY = os.path.join(ROOT, "testdata", "tiny-llama", "safetensors-f32")
OUT = os.path.join(HERE, "expected")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "chat_template.jinja")


def make_qwen2():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    d = os.path.join(HERE, "qwen2")
    shutil.rmtree(d, ignore_errors=True)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=192, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=180, eos_token_id=182,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    )
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.5)
    model.save_pretrained(d, safe_serialization=True)
    for extra in ("generation_config.json",):
        p = os.path.join(d, extra)
        if os.path.exists(p):
            os.remove(p)


def make_llama_bias():
    """A tiny LlamaForCausalLM with attention_bias and mlp_bias: the converter
    permutes the q and k biases like the weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = os.path.join(HERE, "llama-bias")
    shutil.rmtree(d, ignore_errors=True)
    torch.manual_seed(1)
    cfg = LlamaConfig(
        vocab_size=192, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
        bos_token_id=180, eos_token_id=182,
    )
    model = LlamaForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.5)
    model.save_pretrained(d, safe_serialization=True)
    p = os.path.join(d, "generation_config.json")
    if os.path.exists(p):
        os.remove(p)


def assemble(tmp, name, config, tokenizer_dir, weights_dir=None, tokenizer_files=TOKENIZER_FILES):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    shutil.copy(config, os.path.join(d, "config.json"))
    for f in tokenizer_files:
        src = os.path.join(tokenizer_dir, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(d, f))
    extra = os.path.join(tokenizer_dir, "additional_chat_templates")
    if os.path.isdir(extra):
        shutil.copytree(extra, os.path.join(d, "additional_chat_templates"))
    if weights_dir is not None:
        for f in os.listdir(weights_dir):
            if f.endswith(".safetensors") or f.endswith(".index.json"):
                shutil.copy(os.path.join(weights_dir, f), os.path.join(d, f))
    return d


RUNNER = r'''
import sys, runpy
llama_cpp, pre = sys.argv[1], sys.argv[2]
sys.path.insert(0, llama_cpp)
sys.argv = [llama_cpp + "/convert_hf_to_gguf.py"] + sys.argv[3:]
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
runpy.run_path(llama_cpp + "/convert_hf_to_gguf.py", run_name="__main__")
'''


def convert(llama_cpp, model_dir, out, pre, *args):
    cmd = [sys.executable, "-c", RUNNER, llama_cpp, pre, model_dir, "--outfile", out,
           "--outtype", "f32", "--model-name", "weightkit-tiny", *args]
    subprocess.run(cmd, check=True)


def rope_freqs(llama_cpp, config):
    """LlamaModel.generate_extra_tensors on a stand-in `self` with the
    transformers-5 view of the config (rope_parameters)."""
    sys.path.insert(0, llama_cpp)
    sys.path.insert(1, os.path.join(llama_cpp, "gguf-py"))
    from transformers import AutoConfig
    from conversion.llama import LlamaModel

    hparams = AutoConfig.from_pretrained(os.path.dirname(config)).to_dict()
    me = types.SimpleNamespace(
        hparams=hparams,
        rope_parameters=hparams.get("rope_parameters", hparams.get("rope_scaling")) or {},
        format_tensor_name=lambda key, bid=None, suffix=".weight": "rope_freqs.weight",
    )
    ((name, t),) = list(LlamaModel.generate_extra_tensors(me))
    assert name == "rope_freqs.weight"
    return t.numpy().astype("<f4").tobytes()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    llama_cpp = os.path.abspath(sys.argv[1])
    make_qwen2()
    make_llama_bias()
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        arch = lambda *p: os.path.join(HERE, *p)
        runs = [
            ("llama3.f32.gguf", TINY + "/config.json", arch("tok-llama3"), TINY, "llama-bpe", ()),
            ("qwen2.f32.gguf", arch("qwen2", "config.json"), arch("tok-qwen2"), arch("qwen2"), "qwen2", ()),
            ("llama-bias.f32.gguf", arch("llama-bias", "config.json"), arch("tok-qwen2"), arch("llama-bias"), "qwen2", ()),
            ("llama2.vocab.gguf", arch("config-llama-t4.json"), arch("tok-llama2"), None, "unused", ("--vocab-only",)),
            ("llama2-spm.vocab.gguf", arch("config-llama-t4.json"), arch("tok-llama2"), None, "unused", ("--vocab-only",)),
            ("unigram.vocab.gguf", arch("config-llama-t4.json"), arch("tok-unigram"), None, "unused", ("--vocab-only",)),
            ("mistral.vocab.gguf", arch("config-mistral.json"), arch("tok-llama2"), None, "unused", ("--vocab-only",)),
            ("llama3-rope.vocab.gguf", arch("config-llama3-rope.json"), arch("tok-llama3"), None, "llama-bpe", ("--vocab-only",)),
            ("llama3-jinja.vocab.gguf", TINY + "/config.json", arch("tok-llama3-jinja"), None, "llama-bpe", ("--vocab-only",)),
        ]
        for out, config, tok, weights, pre, args in runs:
            files = TOKENIZER_FILES
            if out in ("llama2.vocab.gguf", "mistral.vocab.gguf"):
                files = ("tokenizer.json", "tokenizer_config.json")  # the tokenizer.json-only path
            d = assemble(tmp, out.split(".")[0], config, tok, weights, files)
            convert(llama_cpp, d, os.path.join(OUT, out), pre, *args)
        d = assemble(tmp, "rope", arch("config-llama3-rope.json"), arch("tok-llama3"))
        with open(os.path.join(OUT, "llama3-rope.rope_freqs.f32"), "wb") as f:
            f.write(rope_freqs(llama_cpp, os.path.join(d, "config.json")))

    import re
    import torch, transformers, tokenizers
    with open(os.path.join(llama_cpp, "gguf-py", "pyproject.toml")) as f:
        gguf_version = re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)
    try:
        import sentencepiece
        spv = sentencepiece.__version__
    except ImportError:
        spv = None
    prov = {
        # Describe the checkout with LLAMA_CPP_SOURCE (e.g. a commit or a release).
        "llama.cpp": os.environ.get("LLAMA_CPP_SOURCE", llama_cpp),
        "gguf-py": gguf_version,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": spv,
    }
    with open(os.path.join(OUT, "PROVENANCE.json"), "w") as f:
        json.dump(prov, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
