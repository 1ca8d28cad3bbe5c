"""PEFT's LoRA merge arithmetic in PyTorch, timed on this machine.

The counterpart of the criterion group `lora` (benches/benches/lora.rs): a
rank-16 adapter (f32 factors, as PEFT keeps them for f16/bf16 bases) merged
into a 4096 x 4096 and a 4096 x 14336 weight in f16 and bf16, with PEFT 0.21's
expression from `LoraLayer.merge` / `get_delta_weight`:

    delta = (lora_B.weight @ lora_A.weight) * scaling   # f32
    base_layer.weight.data += delta.to(weight.dtype)    # rounds twice

on 1 thread and on all threads; best of 5 rounds of 5 calls, in ms, and the
weight's bytes divided by the time (the unit the criterion group reports).

usage: lora_merge_perf.py   (with the interop venv's python)
"""

import timeit

import torch

RANK = 16


def main():
    torch.manual_seed(0)
    cores = torch.get_num_threads()
    print(f"torch {torch.__version__}, {cores} threads available")
    print("| weight | dtype | threads | ms | GiB/s of weight |")
    print("|---|---|---|---|---|")
    for rows, cols in [(4096, 4096), (4096, 14336)]:
        a = torch.randn(RANK, cols) * 0.02
        b = torch.randn(rows, RANK) * 0.02
        scaling = 2.0
        for dtype in [torch.float16, torch.bfloat16]:
            w = (torch.randn(rows, cols) * 0.02).to(dtype)
            for threads in [1, cores]:
                torch.set_num_threads(threads)

                def merge():
                    delta = (b @ a) * scaling
                    w.data += delta.to(w.dtype)

                merge()
                best = min(timeit.repeat(merge, number=5, repeat=5)) / 5
                gib = w.numel() * w.element_size() / 2**30
                print(f"| {rows}x{cols} | {str(dtype).split('.')[-1]} | {threads} | {best * 1e3:.1f} |"
                      f" {gib / best:.2f} |")


if __name__ == "__main__":
    main()
