"""Shipping a LoRA-finetuned model to llama.cpp: the usual chain against weightkit.

Run by `cargo xtask export-bench [--small]` with the interop venv's python. The
versions it was written and run against (the xtask's pins; a different
installed version is reported, not refused):

    torch 2.15.0, transformers 5.24.0, peft 0.21.2, safetensors 0.8.0,
    llama-cpp-python 0.3.36 (llama.cpp 0c1e570; its convert_hf_to_gguf.py and
    gguf-py are used from that version's source distribution)

What it does, on one machine and one model:

1. Generates (once, cached under WORK/<shape>/) a Llama checkpoint with random
   weights (normal * 0.02, norms 1, seed 0) in bf16, saved by transformers'
   save_pretrained (its default sharding: one file below 50 GB), with
   testdata/arch/tok-llama2 as tokenizer (a sentencepiece Llama-2 tokenizer of
   320 pieces; config vocab_size stays 32000, llama.cpp's converter pads), and
   a PEFT LoRA adapter (q,k,v,o,gate,up,down; r=16, alpha=32; A and B seeded
   normal * 0.02, so B is not zero) saved by PEFT's save_pretrained. The model
   is built on the meta device and filled one tensor at a time, so generating
   needs the model's bf16 size once, not twice.
   Shapes: `full` is TinyLlama-1.1B's (1.1e9 parameters), `small` ~1.2e8.
2. Reads the base and adapter files once (no root to drop the page cache), so
   both sides start with them in the page cache.
3. The usual chain, each step a subprocess:
     peft-merge: AutoModelForCausalLM.from_pretrained(bf16) + PeftModel,
                 merge_and_unload(), save_pretrained (bf16 safetensors),
                 tokenizer files copied
     convert:    convert_hf_to_gguf.py MERGED --outtype f16 (what most guides do)
     quantize:   llama-quantize F16.gguf OUT.gguf Q4_K_M (built from the same
                 sources with g++ against llama-cpp-python's libllama: only
                 tools/quantize and the few common/ files it uses)
4. weightkit's side: the step templates given with --step (placeholders
   {weightkit} {base} {adapter} {out} {tmp}), each run with `sh -c`.
5. Per step: wall time (time.perf_counter around the subprocess) and peak RSS
   (ru_maxrss of that child from os.wait4: the largest resident set of the
   process and the children it waited for; file pages it has mapped count too;
   the harness itself stays small, as Linux carries a parent's peak into its
   children's figure, and its peak is reported as their floor).
   os.sync() runs, untimed, before each step. Totals: wall = sum, peak = max.
6. Checks both outputs with gguf-py's GGUFReader (same tensor names, types and
   shapes; counts byte-identical tensors; lists metadata key differences),
   prints a Markdown table and writes WORK/results-<shape>-<label>.json.
   A type difference is reported, not fatal. Intermediates (merged
   directories, the f16 GGUF) are deleted; the two
   Q4_K_M files are kept.

usage: export_bench.py run --llama-cpp-python VERSION --work DIR [--sdist-dir DIR] --shape small|full
                           --weightkit BIN --label LABEL [--step NAME=TEMPLATE]...
                           [--only chain|weightkit]
       export_bench.py generate SHAPE DIR          (step 1 alone)
       export_bench.py peft-merge BASE ADAPTER OUT (the chain's first step)
"""

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "peft": "0.21.2",
    "safetensors": "0.8.0",
    "llama_cpp_python": "0.3.36",
}
SEED = 0
TOKENIZER_DIR = "testdata/arch/tok-llama2"
TOKENIZER_FILES = ["tokenizer.model", "tokenizer.json", "tokenizer_config.json"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPES = {
    # TinyLlama-1.1B's shape.
    "full": dict(hidden_size=2048, num_hidden_layers=22, intermediate_size=5632, num_attention_heads=32,
                 num_key_value_heads=4),
    "small": dict(hidden_size=768, num_hidden_layers=12, intermediate_size=2048, num_attention_heads=12,
                  num_key_value_heads=4),
}
COMMON = dict(vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
              tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, hidden_act="silu",
              initializer_range=0.02)
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")


def log(msg):
    print(f"export_bench: {msg}", file=sys.stderr, flush=True)


def versions():
    import importlib.metadata as md

    got = {}
    for name in PINNED:
        try:
            got[name] = md.version(name.replace("_", "-"))
        except md.PackageNotFoundError:
            got[name] = None
    for name, want in PINNED.items():
        if got[name] != want:
            log(f"warning: {name} {got[name]} is installed, the pin is {want}")
    return got


# ---------------------------------------------------------------- generation


def generate(shape, out):
    """The base model and its adapter, in `out`/model and `out`/adapter."""
    stamp = os.path.join(out, "generated.json")
    spec = {"shape": shape, "config": {**SHAPES[shape], **COMMON}, "lora": LORA, "seed": SEED}
    if os.path.exists(stamp) and json.load(open(stamp)).get("spec") == spec:
        log(f"reusing the generated {shape} model in {out}")
        return
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.exists(out):
        shutil.rmtree(out)
    model_dir, adapter_dir = os.path.join(out, "model"), os.path.join(out, "adapter")
    start = time.perf_counter()
    config = LlamaConfig(**spec["config"], dtype="bfloat16")
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to(torch.bfloat16).to_empty(device="cpu")
    gen = torch.Generator().manual_seed(SEED)
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                # f32 draws one tensor at a time (the largest, the embedding,
                # is 256 MiB for the full shape), rounded to bf16 in place.
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            n += p.numel()
    log(f"{shape}: {n / 1e9:.3f}e9 parameters, filled in {time.perf_counter() - start:.1f}s")
    model.save_pretrained(model_dir)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(TOKENIZER_DIR, f), model_dir)
    log(f"{shape}: base saved in {time.perf_counter() - start:.1f}s")

    torch.manual_seed(SEED)
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    peft_model.save_pretrained(adapter_dir)
    json.dump({"spec": spec, "parameters": n, "versions": versions()}, open(stamp, "w"), indent=1)
    log(f"{shape}: adapter saved; generation took {time.perf_counter() - start:.1f}s")


# ---------------------------------------------------------------- the chain's first step


def peft_merge(base, adapter, out):
    """PEFT's merge as the guides do it: load in bf16, merge_and_unload, save."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(model, adapter)
    merged = model.merge_and_unload()
    merged.save_pretrained(out)
    for f in TOKENIZER_FILES:
        shutil.copy(os.path.join(base, f), out)


# ---------------------------------------------------------------- llama.cpp


def llama_cpp_sources(version, sdist_dir):
    """The llama-cpp-python sdist of `version`, unpacked under `sdist_dir`
    (quant_perf.py's download, sha256 check and unpacking; `cargo xtask
    quant-perf` shares the copy in target/qperf)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import quant_perf

    found = glob.glob(os.path.join(sdist_dir, "llama-cpp-python-src", f"llama_cpp_python-{version}",
                                   "vendor", "llama.cpp", "convert_hf_to_gguf.py"))
    if found:
        return os.path.dirname(found[0])
    return quant_perf.llama_cpp_sources(version, sdist_dir)


def llama_commit(llama):
    try:
        out = subprocess.run(["git", "-C", llama, "rev-parse", "--short=7", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        if out:
            return out
    except OSError:
        pass
    return "unknown"


def build_llama_quantize(llama, work):
    """tools/quantize (main.cpp, quantize.cpp) and the common/ files it needs,
    linked against the libllama that llama-cpp-python built from the same
    sources; --gc-sections drops the parts of common.cpp that quantize does not
    reach (and whose dependencies are not compiled here)."""
    import importlib.util

    # Found, not imported: importing it would grow this process (see measure).
    lib = os.path.join(os.path.dirname(importlib.util.find_spec("llama_cpp").origin), "lib")
    out = os.path.join(work, "llama-quantize")
    exe = os.path.join(out, "llama-quantize")
    if os.path.exists(exe):
        return exe
    os.makedirs(out, exist_ok=True)
    commit = llama_commit(llama)
    info = os.path.join(out, "build-info.cpp")
    with open(info, "w") as f:
        f.write('#include "build-info.h"\n'
                "int llama_build_number(void) { return 0; }\n"
                f'const char * llama_commit(void) {{ return "{commit}"; }}\n'
                'const char * llama_compiler(void) { return "g++"; }\n'
                'const char * llama_build_target(void) { return "host"; }\n'
                f'const char * llama_build_info(void) {{ return "b0-{commit}"; }}\n'
                'void llama_print_build_info(const char * v, FILE * s) { fprintf(s, "version: %s\\n", v); }\n')
    log("building llama-quantize (about half a minute)")
    subprocess.run(
        ["g++", "-O2", "-std=c++17", "-ffunction-sections", "-fdata-sections",
         f"-I{llama}/include", f"-I{llama}/ggml/include", f"-I{llama}/common", f"-I{llama}/vendor",
         f"{llama}/tools/quantize/main.cpp", f"{llama}/tools/quantize/quantize.cpp",
         f"{llama}/common/imatrix-loader.cpp", f"{llama}/common/log.cpp", f"{llama}/common/json.cpp",
         f"{llama}/common/common.cpp", info,
         f"-L{lib}", "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{lib}", "-Wl,--gc-sections",
         "-pthread", "-o", exe + ".tmp"],
        check=True,
    )
    os.rename(exe + ".tmp", exe)
    return exe


# ---------------------------------------------------------------- measuring


def own_peak_rss():
    """This process's peak RSS (VmHWM) in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(name, argv, env=None):
    """Runs argv; returns wall seconds and the child's peak RSS in bytes.

    Linux carries the parent's peak RSS into a forked (or vforked) child's
    ru_maxrss, so this process stays small (no torch, numpy or llama_cpp
    imports before the measurements) and its own peak is recorded as the
    floor of every figure."""
    os.sync()
    shown = " ".join(argv)
    log(f"step {name}: {shown}")
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"step {name} failed (exit {proc.returncode}): {shown}")
    rss = usage.ru_maxrss * 1024  # kilobytes on Linux
    log(f"step {name}: {wall:.1f}s, peak RSS {rss / 2**20:.0f} MiB")
    return {"step": name, "command": shown, "wall_s": wall, "peak_rss_bytes": rss,
            "harness_peak_rss_bytes": own_peak_rss()}


def warm(paths):
    n = 0
    for root in paths:
        for dirpath, _, files in os.walk(root):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    while chunk := fh.read(1 << 24):
                        n += len(chunk)
    log(f"read {n / 2**30:.2f} GiB of base and adapter once (page cache warm for both sides)")


def du(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def run_chain(work, shape_dir, llama, quantize_exe):
    base, adapter = os.path.join(shape_dir, "model"), os.path.join(shape_dir, "adapter")
    out = os.path.join(work, "run", "chain")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    merged, f16 = os.path.join(out, "merged"), os.path.join(out, "merged-f16.gguf")
    final = os.path.join(out, "chain-q4_k_m.gguf")
    py = sys.executable
    steps = [measure("peft-merge", [py, os.path.abspath(__file__), "peft-merge", base, adapter, merged])]
    steps[-1]["output_bytes"] = du(merged)
    steps.append(measure("convert_hf_to_gguf (f16)",
                         [py, os.path.join(llama, "convert_hf_to_gguf.py"), merged, "--outtype", "f16",
                          "--outfile", f16]))
    steps[-1]["output_bytes"] = du(f16)
    shutil.rmtree(merged)
    steps.append(measure("llama-quantize Q4_K_M", [quantize_exe, f16, final, "Q4_K_M"]))
    steps[-1]["output_bytes"] = du(final)
    os.remove(f16)
    return steps, final


def run_weightkit(work, shape_dir, weightkit, templates):
    base, adapter = os.path.join(shape_dir, "model"), os.path.join(shape_dir, "adapter")
    out = os.path.join(work, "run", "weightkit")
    shutil.rmtree(out, ignore_errors=True)
    tmp = os.path.join(out, "tmp")
    os.makedirs(tmp)
    final = os.path.join(out, "weightkit-q4_k_m.gguf")
    fields = dict(weightkit=weightkit, base=base, adapter=adapter, out=final, tmp=tmp)
    steps = []
    for name, template in templates:
        steps.append(measure(name, ["sh", "-c", template.format(**fields)]))
        steps[-1]["tmp_bytes"] = du(tmp)
    steps[-1]["output_bytes"] = du(final)
    shutil.rmtree(tmp)
    return steps, final


# ---------------------------------------------------------------- checking


def compare(chain_out, ours_out, llama):
    sys.path.insert(0, os.path.join(llama, "gguf-py"))
    from gguf import GGUFReader

    a, b = GGUFReader(chain_out), GGUFReader(ours_out)
    ta = {t.name: t for t in a.tensors}
    tb = {t.name: t for t in b.tensors}
    desc = lambda t: (t.tensor_type.name, [int(x) for x in t.shape])
    only_chain = sorted(set(ta) - set(tb))
    only_ours = sorted(set(tb) - set(ta))
    differing = [(n, desc(ta[n]), desc(tb[n])) for n in sorted(set(ta) & set(tb)) if desc(ta[n]) != desc(tb[n])]
    identical = [n for n in ta if n in tb and desc(ta[n]) == desc(tb[n])
                 and bytes(ta[n].data.tobytes()) == bytes(tb[n].data.tobytes())]
    types = {}
    for t in a.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    ka = {k for k in a.fields if not k.startswith("GGUF.")}
    kb = {k for k in b.fields if not k.startswith("GGUF.")}

    def value(r, k):
        f = r.fields[k]
        try:
            v = f.contents()
        except Exception:  # noqa: BLE001 - older gguf-py
            return None
        return len(v) if isinstance(v, list) else v

    kv_diff = {k: [value(a, k), value(b, k)] for k in sorted(ka & kb)
               if k != "general.name" and value(a, k) != value(b, k)}
    return {
        "tensors": len(ta),
        "types": types,
        "same_names_types_shapes": not (only_chain or only_ours or differing),
        "only_in_chain": only_chain,
        "only_in_weightkit": only_ours,
        "different_type_or_shape": differing,
        "byte_identical_tensors": len(identical),
        "metadata_only_in_chain": sorted(ka - kb),
        "metadata_only_in_weightkit": sorted(kb - ka),
        "metadata_values_differing": kv_diff,
    }


# ---------------------------------------------------------------- report


def mib(n):
    return f"{n / 2**20:,.0f}"


def table(result):
    rows = ["| side | step | wall s | peak RSS MiB | writes |", "|---|---|---:|---:|---:|"]
    for side in ["chain", "weightkit"]:
        if side not in result:
            continue
        label = "usual chain" if side == "chain" else result["weightkit_label"]
        for s in result[side]["steps"]:
            wrote = s.get("output_bytes", s.get("tmp_bytes", 0))
            rows.append(f"| {label} | {s['step']} | {s['wall_s']:.1f} | {mib(s['peak_rss_bytes'])} |"
                        f" {mib(wrote)} MiB |")
        t = result[side]["total"]
        rows.append(f"| **{label}** | **total** | **{t['wall_s']:.1f}** | **{mib(t['peak_rss_bytes'])}** |"
                    f" {mib(t['output_bytes'])} MiB |")
    if "ratios" in result:
        r = result["ratios"]
        rows.append(f"| | chain / weightkit wall | **{r['wall_chain_over_weightkit']:.2f}x** | | |")
        rows.append(f"| | weightkit / chain peak RSS | | **{r['peak_rss_weightkit_over_chain']:.3f}** | |")
    return "\n".join(rows)


def total(steps):
    return {"wall_s": sum(s["wall_s"] for s in steps), "peak_rss_bytes": max(s["peak_rss_bytes"] for s in steps),
            "output_bytes": steps[-1].get("output_bytes", 0)}


def run(args):
    work = args.work
    os.makedirs(work, exist_ok=True)
    shape_dir = os.path.join(work, args.shape)
    # In a child: the parent must stay small (see measure).
    subprocess.run([sys.executable, os.path.abspath(__file__), "generate", args.shape, shape_dir], check=True)
    llama = llama_cpp_sources(args.llama_cpp_python, args.sdist_dir)
    commit = llama_commit(llama)
    quantize_exe = build_llama_quantize(llama, work) if args.only != "weightkit" else None
    gen = json.load(open(os.path.join(shape_dir, "generated.json")))
    templates = [tuple(s.split("=", 1)) for s in args.step]
    result = {
        "shape": args.shape,
        "parameters": gen["parameters"],
        "config": gen["spec"]["config"],
        "lora": gen["spec"]["lora"],
        "base_bytes": du(os.path.join(shape_dir, "model")),
        "adapter_bytes": du(os.path.join(shape_dir, "adapter")),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_start": os.getloadavg(),
                    "mem_total_kib": int(open("/proc/meminfo").readline().split()[1])},
        "versions": {**versions(), "llama.cpp": commit},
        "weightkit_label": args.label,
        "weightkit_steps": [{"step": n, "template": t} for n, t in templates],
    }
    warm([os.path.join(shape_dir, "model"), os.path.join(shape_dir, "adapter")])
    outs = {}
    if args.only != "weightkit":
        steps, outs["chain"] = run_chain(work, shape_dir, llama, quantize_exe)
        result["chain"] = {"steps": steps, "total": total(steps)}
    if args.only != "chain":
        steps, outs["weightkit"] = run_weightkit(work, shape_dir, args.weightkit, templates)
        result["weightkit"] = {"steps": steps, "total": total(steps)}
    if len(outs) == 2:
        c, w = result["chain"]["total"], result["weightkit"]["total"]
        result["ratios"] = {"wall_chain_over_weightkit": c["wall_s"] / w["wall_s"],
                            "peak_rss_weightkit_over_chain": w["peak_rss_bytes"] / c["peak_rss_bytes"]}
        result["check"] = compare(outs["chain"], outs["weightkit"], llama)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    slug = "".join(c if c.isalnum() else "-" for c in args.label.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    result["harness_peak_rss_bytes"] = max(s["harness_peak_rss_bytes"] for side in ["chain", "weightkit"]
                                           if side in result for s in result[side]["steps"])
    name = f"results-{args.shape}-{args.only or 'both'}-{slug}.json"
    path = os.path.join(work, name)
    json.dump(result, open(path, "w"), indent=1)

    cfg = result["config"]
    print()
    print(f"Llama {args.shape} shape ({result['parameters'] / 1e9:.2f}e9 parameters: hidden {cfg['hidden_size']}, "
          f"{cfg['num_hidden_layers']} layers, intermediate {cfg['intermediate_size']}, "
          f"{cfg['num_attention_heads']}/{cfg['num_key_value_heads']} heads, vocab {cfg['vocab_size']}), "
          f"bf16 base {mib(result['base_bytes'])} MiB, LoRA r=16 on q,k,v,o,gate,up,down "
          f"({mib(result['adapter_bytes'])} MiB); {result['machine']['cpus']} CPUs, "
          f"load average {result['machine']['loadavg_at_start'][0]:.1f} at start; page cache warm; "
          f"harness peak RSS {mib(result['harness_peak_rss_bytes'])} MiB (every RSS figure's floor); "
          f"llama.cpp {commit}, torch {result['versions']['torch']}, "
          f"transformers {result['versions']['transformers']}, peft {result['versions']['peft']}")
    print()
    print(table(result))
    if "check" in result:
        ch = result["check"]
        print()
        print(f"outputs: {ch['tensors']} tensors, types {ch['types']}; same names/types/shapes: "
              f"{ch['same_names_types_shapes']}; byte-identical tensors: {ch['byte_identical_tensors']}")
        for k in ["only_in_chain", "only_in_weightkit", "different_type_or_shape", "metadata_only_in_chain",
                  "metadata_only_in_weightkit", "metadata_values_differing"]:
            if ch[k]:
                print(f"  {k}: {ch[k]}")
    print()
    print(f"results: {path}")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        generate(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "peft-merge":
        peft_merge(*sys.argv[2:5])
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["run"])
    p.add_argument("--llama-cpp-python", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--sdist-dir", default="target/qperf")
    p.add_argument("--shape", choices=list(SHAPES), required=True)
    p.add_argument("--weightkit", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--step", action="append", default=[])
    p.add_argument("--only", choices=["chain", "weightkit"])
    args = p.parse_args()
    if args.only != "chain" and not args.step:
        p.error("--step is needed for weightkit's side")
    run(args)


if __name__ == "__main__":
    main()
