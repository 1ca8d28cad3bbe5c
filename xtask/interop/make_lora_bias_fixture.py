"""Writes testdata/lora/gpt2-lora-bias/ and gpt2-bias-all/ with real PEFT (run
by `cargo xtask interop` into target/interop; the output is committed under
testdata/lora). Deterministic: fixed seeds, CPU, PYTHONHASHSEED=0.

Base: testdata/gpt2-base (the shared tiny GPT-2). Adapter: LoRA on c_attn
(Conv1D, fan_in_fan_out) and mlp.c_fc (Conv1D) with lora_bias=True, r=4,
alpha=8, rank_pattern c_fc -> 2, init_lora_weights=False so lora_A, lora_B
and lora_B.bias all keep nn.Linear's non-zero default init.
gpt2-bias-all is the same with bias="all", and every trainable base bias
(LayerNorm biases, the wrapped layers' base_layer.bias, ...) moved by
0.1 * randn (seed 11) to stand in for training.
merged_reference.safetensors is PEFT's merge_and_unload() state dict.
"""
import os
import sys
from pathlib import Path

# PEFT stores target_modules from a Python set: fix the hash seed so the
# config is byte-identical across runs.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

root = Path(__file__).resolve().parents[2]
parent = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "testdata/lora"
base_dir = root / "testdata/gpt2-base"
torch.set_num_threads(1)


def make(name, bias, train_biases):
    out = parent / name
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    config = GPT2Config.from_pretrained(base_dir)
    model = GPT2LMHeadModel.from_pretrained(base_dir, config=config).eval()
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["c_attn", "c_fc"],
        rank_pattern={"c_fc": 2},
        fan_in_fan_out=True,
        lora_bias=True,
        bias=bias,
        init_lora_weights=False,
        lora_dropout=0.0,
    )
    peft_model = get_peft_model(model, lora)
    if train_biases:
        # Stand in for training: move every trainable base bias.
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if p.requires_grad and "lora_" not in n:
                    p.add_(0.1 * torch.randn(p.shape, generator=g))
    ids = torch.tensor([[1, 17, 42, 99, 7, 200, 3, 64]])
    with torch.no_grad():
        adapter_logits = peft_model(ids).logits
    peft_model.save_pretrained(out)
    merged = peft_model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(ids).logits
    print(name, "max |adapter - merged logits| =", (adapter_logits - merged_logits).abs().max().item())
    state = {k: v.detach().contiguous() for k, v in merged.state_dict().items()}
    # GPT-2 ties lm_head to wte; the base file stores wte only.
    state.pop("lm_head.weight", None)
    save_file(state, out / "merged_reference.safetensors", metadata={"format": "pt"})


make("gpt2-lora-bias", "none", False)
make("gpt2-bias-all", "all", True)
