"""Writes the torch.nn.init fixtures for weightkit-init (outputs committed
under testdata/init/; tests read those files and never run torch).

Usage: make_init_fixtures.py OUT_DIR   (run with torch 2.15.0, CPU)

For each ATen CPU build torch can select (ATEN_CPU_CAPABILITY = default,
avx2, avx512) the script re-runs itself in a subprocess with that variable
set, seeds torch, calls torch.nn.init exactly as training code does and
stores every result tensor's raw little-endian bytes in `torch_<CAP>.bin`.
`manifest.json` lists each case: the torch call, seed, shape, dtype, CPU
build, byte offset and length, plus the Python-side doubles (bounds,
standard deviations, gains, fans) as float.hex() strings.

Torch's bits depend on the CPU build: the AVX2/AVX512 builds fuse the
uniform transform into an FMA, and normal_ never dispatches to AVX512 (it
uses the AVX2 kernel there). Recording all three lets the tests pin each.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

PINNED = "2.15.0"
CAPS = ["DEFAULT", "AVX2", "AVX512"]


def child(out: Path, cap: str) -> None:
    import torch
    import torch.nn.init as init

    got = torch.backends.cpu.get_cpu_capability()
    assert got == cap, f"asked for {cap}, torch chose {got}"
    torch.set_num_threads(1)
    blob = bytearray()
    cases = []
    dtypes = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

    def raw(t):
        t = t.detach().contiguous()
        if t.dtype == torch.float32:
            return t.numpy().astype("<f4").tobytes()
        return t.view(torch.int16).numpy().astype("<i2").tobytes()

    def record(name, fn, seed, shape, dtype, args, tensors, extra=None):
        outs = []
        for t in tensors:
            b = raw(t)
            outs.append({"offset": len(blob), "len": len(b), "shape": list(t.shape)})
            blob.extend(b)
        case = {
            "name": name, "fn": fn, "seed": seed, "shape": list(shape),
            "dtype": dtype, "args": args, "outputs": outs,
        }
        if extra:
            case.update(extra)
        cases.append(case)

    def run(name, fn, seed, shape, dtype="f32", **args):
        torch.manual_seed(seed)
        t = torch.empty(*shape, dtype=dtypes[dtype])
        getattr(init, fn)(t, **args)
        record(name, fn, seed, shape, dtype, args, [t])

    for seed in [0, 1, 1234]:
        for shape in [(7,), (16,), (1000,), (33, 17)]:
            run(f"uniform{shape}-s{seed}", "uniform_", seed, shape)
            run(f"uniform-ab{shape}-s{seed}", "uniform_", seed, shape, a=-0.5, b=2.25)
    for seed in [0, 7, 2024]:
        for shape in [(1,), (5,), (15,), (16,), (17,), (31,), (100,), (64, 33), (4103,)]:
            run(f"normal{shape}-s{seed}", "normal_", seed, shape)
            run(f"normal-ms{shape}-s{seed}", "normal_", seed, shape, mean=0.3, std=1.7)
    for seed in [0, 3]:
        for shape in [(4, 8), (8, 4), (64, 3, 3, 3), (128, 7)]:
            run(f"kaiming_uniform{shape}-s{seed}", "kaiming_uniform_", seed, shape)
            run(f"kaiming_uniform-sqrt5{shape}-s{seed}", "kaiming_uniform_", seed, shape, a=math.sqrt(5))
            run(f"kaiming_uniform-out-relu{shape}-s{seed}", "kaiming_uniform_", seed, shape,
                mode="fan_out", nonlinearity="relu")
        for shape in [(3, 5), (8, 2), (9, 2), (64, 3, 3, 3)]:
            run(f"kaiming_normal{shape}-s{seed}", "kaiming_normal_", seed, shape)
            run(f"kaiming_normal-out-relu{shape}-s{seed}", "kaiming_normal_", seed, shape,
                mode="fan_out", nonlinearity="relu")
            run(f"kaiming_normal-leaky{shape}-s{seed}", "kaiming_normal_", seed, shape, a=0.2)
        for shape in [(4, 3), (20, 30), (16, 8, 3, 3)]:
            run(f"xavier_uniform{shape}-s{seed}", "xavier_uniform_", seed, shape)
            run(f"xavier_uniform-relu{shape}-s{seed}", "xavier_uniform_", seed, shape,
                gain=init.calculate_gain("relu"))
            run(f"xavier_normal{shape}-s{seed}", "xavier_normal_", seed, shape)
            run(f"xavier_normal-tanh{shape}-s{seed}", "xavier_normal_", seed, shape,
                gain=init.calculate_gain("tanh"))
    for seed in [0, 5, 99]:
        # p > 0.3: normal proposals, whole-tensor redraws.
        run(f"trunc_normal{(1000,)}-s{seed}", "trunc_normal_", seed, (1000,))
        run(f"trunc_normal-vit{(96, 32)}-s{seed}", "trunc_normal_", seed, (96, 32), std=0.02)
        run(f"trunc_normal-tight{(300,)}-s{seed}", "trunc_normal_", seed, (300,), mean=0.1, std=1.0, a=-0.8, b=1.2)
        run(f"trunc_normal-small{(9,)}-s{seed}", "trunc_normal_", seed, (9,), a=-1.0, b=1.0)
        # p <= 0.3: uniform proposals with log-density acceptance.
        run(f"trunc_normal-tail{(500,)}-s{seed}", "trunc_normal_", seed, (500,), a=1.5, b=3.0)
        run(f"trunc_normal-narrow{(17,)}-s{seed}", "trunc_normal_", seed, (17,), a=-0.1, b=0.1)
        run(f"trunc_normal-far{(1000,)}-s{seed}", "trunc_normal_", seed, (1000,), mean=0.5, std=0.7, a=2.0, b=2.5)
    for seed in [0, 11]:
        run(f"sparse{(20, 10)}-s{seed}", "sparse_", seed, (20, 10), sparsity=0.3)
        run(f"sparse{(7, 5)}-s{seed}", "sparse_", seed, (7, 5), sparsity=0.5, std=0.1)
        for shape in [(8, 8), (6, 10), (12, 5), (4, 2, 3)]:
            run(f"orthogonal{shape}-s{seed}", "orthogonal_", seed, shape)
        run(f"orthogonal-gain{(5, 7)}-s{seed}", "orthogonal_", seed, (5, 7), gain=2.0)
    run("eye(3, 5)", "eye_", 0, (3, 5))
    run("eye(4, 2)", "eye_", 0, (4, 2))
    run("dirac(6, 4, 3, 3)-g2", "dirac_", 0, (6, 4, 3, 3), groups=2)
    run("dirac(4, 4, 5)", "dirac_", 0, (4, 4, 5))
    run("dirac(3, 2, 3, 4, 2)", "dirac_", 0, (3, 2, 3, 4, 2))
    run("constant(4, 3)", "constant_", 0, (4, 3), val=0.3)
    for seed in [0, 42]:
        run(f"kaiming_uniform-bf16{(64, 32)}-s{seed}", "kaiming_uniform_", seed, (64, 32), "bf16")
        run(f"kaiming_uniform-f16{(48, 5)}-s{seed}", "kaiming_uniform_", seed, (48, 5), "f16", a=math.sqrt(5))
        run(f"uniform-f16{(50,)}-s{seed}", "uniform_", seed, (50,), "f16", a=-1.0, b=1.0)
        run(f"normal-bf16{(100,)}-s{seed}", "normal_", seed, (100,), "bf16", mean=0.25, std=0.5)
        run(f"normal-f16{(15,)}-s{seed}", "normal_", seed, (15,), "f16")
        run(f"xavier_normal-bf16{(40, 20)}-s{seed}", "xavier_normal_", seed, (40, 20), "bf16")
        run(f"trunc_normal-bf16{(300,)}-s{seed}", "trunc_normal_", seed, (300,), "bf16", std=0.02)

    # Sequences on one seed.
    for seed in [5, 6]:
        torch.manual_seed(seed)
        ts = [torch.empty(n) for n in (5, 3, 20, 4, 1)]
        for t in ts:
            init.normal_(t, mean=-1.0, std=0.5)
        record(f"normal-sequence-s{seed}", "sequence", seed, (33,), "f32",
               {"calls": "normal_(mean=-1, std=0.5) on sizes 5, 3, 20, 4, 1"}, ts)
        # PEFT LoRA default on a Linear(32 -> 16), r = 8: the two nn.Linear
        # constructors draw first, then reset_lora_parameters.
        torch.manual_seed(seed)
        lin_a = torch.nn.Linear(32, 8, bias=False)
        lin_b = torch.nn.Linear(8, 16, bias=False)
        a0, b0 = lin_a.weight.detach().clone(), lin_b.weight.detach().clone()
        init.kaiming_uniform_(lin_a.weight, a=math.sqrt(5))
        init.zeros_(lin_b.weight)
        record(f"peft-default-s{seed}", "peft_default", seed, (8, 32), "f32",
               {"in": 32, "out": 16, "r": 8}, [a0, b0, lin_a.weight, lin_b.weight])
        torch.manual_seed(seed)
        a = torch.empty(8, 32)
        init.normal_(a, std=1 / 8)
        record(f"peft-gaussian-s{seed}", "peft_gaussian", seed, (8, 32), "f32", {"r": 8}, [a])

    # PiSSA on a fixed weight (PEFT's formulas, torch.linalg.svd in f32).
    g = torch.Generator().manual_seed(1)
    w = torch.randn(24, 16, generator=g)
    r, scaling = 4, 2.0
    v, s, uh = torch.linalg.svd(w, full_matrices=False)
    sr = s[:r] / scaling
    lora_a = torch.diag(torch.sqrt(sr)) @ uh[:r]
    lora_b = v[:, :r] @ torch.diag(torch.sqrt(sr))
    residual = w - scaling * lora_b @ lora_a
    record("pissa(24, 16)-r4", "pissa", 1, (24, 16), "f32", {"r": r, "scaling": scaling},
           [w, lora_a, lora_b, residual, s])

    (out / f"torch_{cap}.bin").write_bytes(bytes(blob))
    (out / f"cases_{cap}.json").write_text(json.dumps(cases))


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    import torch
    import torch.nn.init as init

    version = torch.__version__.split("+")[0]
    assert version == PINNED, f"fixtures are pinned to torch {PINNED}, found {torch.__version__}"
    manifest = {
        "torch_version": torch.__version__,
        "generator": "xtask/interop/make_init_fixtures.py",
        "cpu_builds": {},
    }
    for stale in out.glob("torch_*.bin"):
        stale.unlink()
    for cap in CAPS:
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap.lower(), OMP_NUM_THREADS="1")
        subprocess.run([sys.executable, __file__, "--child", str(out), cap], env=env, check=True)
        cases = json.loads((out / f"cases_{cap}.json").read_text())
        (out / f"cases_{cap}.json").unlink()
        blob = (out / f"torch_{cap}.bin").read_bytes()
        file = f"torch_{cap}.bin"
        # Builds that produce identical bytes share one file (AVX2 and
        # AVX512 do: both fuse the uniform FMA and share the normal_ kernel).
        for other, entry in manifest["cpu_builds"].items():
            if (out / entry["file"]).read_bytes() == blob:
                (out / file).unlink()
                file = entry["file"]
                break
        manifest["cpu_builds"][cap] = {"file": file, "cases": cases}

    names = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]
    gains = []
    for n in names:
        for p in [None, 0, 0.2, math.sqrt(5), 1, -0.3, 0.01]:
            gains.append({"nonlinearity": n, "param": p, "gain": float(init.calculate_gain(n, p)).hex()})
    manifest["gains"] = gains

    fans = []
    for shape in [(3, 5), (16, 3, 3, 3), (7, 2, 4), (2, 3, 4, 5, 6), (1, 1), (5, 0, 3)]:
        fi, fo = init._calculate_fan_in_and_fan_out(torch.empty(*shape))
        fans.append({"shape": list(shape), "fan_in": fi, "fan_out": fo})
    manifest["fans"] = fans

    # The doubles torch passes to uniform_/normal_, for the closed-form checks.
    bounds = []
    for shape in [(4, 8), (64, 3, 3, 3), (128, 7), (1000, 999), (3, 5, 7, 11)]:
        fan_in, fan_out = init._calculate_fan_in_and_fan_out(torch.empty(*shape))
        for a, mode, nl in [(0, "fan_in", "leaky_relu"), (math.sqrt(5), "fan_in", "leaky_relu"),
                            (0, "fan_out", "relu"), (0.2, "fan_in", "leaky_relu"), (0, "fan_in", "tanh")]:
            fan = fan_in if mode == "fan_in" else fan_out
            gain = init.calculate_gain(nl, a)
            std = gain / math.sqrt(fan)
            bounds.append({"fn": "kaiming_uniform_", "shape": list(shape), "a": a, "mode": mode,
                           "nonlinearity": nl, "bound": (math.sqrt(3.0) * std).hex()})
            bounds.append({"fn": "kaiming_normal_", "shape": list(shape), "a": a, "mode": mode,
                           "nonlinearity": nl, "std": float(std).hex()})
        for gain in [1.0, math.sqrt(2.0), 5.0 / 3]:
            std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
            bounds.append({"fn": "xavier_uniform_", "shape": list(shape), "gain": gain,
                           "bound": (math.sqrt(3.0) * std).hex()})
            bounds.append({"fn": "xavier_normal_", "shape": list(shape), "gain": gain, "std": std.hex()})
    manifest["bounds"] = bounds
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    files = sorted({b["file"] for b in manifest["cpu_builds"].values()})
    total = sum((out / f).stat().st_size for f in files)
    print(f"wrote {out}/manifest.json and {files}, {total} bytes")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[3])
    else:
        main()
