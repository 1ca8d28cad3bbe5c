"""Quantization speed: weightkit against llama.cpp's test-quantize-perf, same machine.

Run by `cargo xtask quant-perf` with the interop venv's python (llama-cpp-python
installed, so the ggml shared libraries it built are there). Steps:

1. Fetch the llama-cpp-python source distribution of the pinned version from
   PyPI (sha256 checked against PyPI's) and compile llama.cpp's tests/test-quantize-perf.cpp
   against the installed libggml*.so (the same ggml build the interop checks use).
2. Run it per type (--op quantize_row_q_reference, dequantize_row_q and vec_dot_q, 4096
   values, ITER iterations) and read its mean cycles per 32 values
   (GB/s of f32 data, 2^30 bytes, from the mean cycles per call; see run_llama).
3. Run weightkit's `speed` example (the same input and statistic) and print one
   markdown table with both and the ratios.

Rounds alternate between the two programs and each keeps its best round, so
a background load burst does not land on one side only.

With `--ggml-lib DIR` test-quantize-perf links the ggml libraries in DIR
instead (build_ggml_native.py's -march=native build: what cmake's defaults
give a llama.cpp user).

usage: quant_perf.py VERSION WORKDIR SPEED_BINARY [ROUNDS] [--ggml-lib DIR]
"""

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import urllib.request

# Every type both programs measure.
TYPES = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K",
         "iq4_nl", "iq4_xs", "tq1_0", "tq2_0", "mxfp4", "nvfp4", "q1_0", "q2_0", "f16", "bf16"]
ITER = 2000


def llama_cpp_sources(version, work):
    src = os.path.join(work, "llama-cpp-python-src")
    marker = glob.glob(os.path.join(src, "*", "vendor", "llama.cpp", "tests", "test-quantize-perf.cpp"))
    if marker:
        return os.path.dirname(os.path.dirname(marker[0]))
    os.makedirs(src, exist_ok=True)
    # The sdist itself, through PyPI's simple index (PEP 691 JSON); pip
    # download would try to build its metadata.
    req = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    files = json.load(urllib.request.urlopen(req))["files"]
    (sdist,) = [f for f in files if f["filename"] == f"llama_cpp_python-{version}.tar.gz"]
    tarball = os.path.join(src, sdist["filename"])
    urllib.request.urlretrieve(sdist["url"], tarball)
    digest = hashlib.sha256(open(tarball, "rb").read()).hexdigest()
    if digest != sdist["hashes"]["sha256"]:
        raise SystemExit(f"{tarball}: sha256 {digest} is not PyPI's {sdist['hashes']['sha256']}")
    with tarfile.open(tarball) as t:
        t.extractall(src, filter="data")
    (marker,) = glob.glob(os.path.join(src, "*", "vendor", "llama.cpp", "tests", "test-quantize-perf.cpp"))
    return os.path.dirname(os.path.dirname(marker))


def build_perf(llama, work, lib=None):
    exe = os.path.join(work, "test-quantize-perf" if lib is None else "test-quantize-perf-native")
    if lib is None:
        import llama_cpp

        lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    lib = os.path.abspath(lib)
    subprocess.run(
        ["g++", "-O2", "-std=c++17", f"-I{llama}/ggml/include", f"{llama}/tests/test-quantize-perf.cpp",
         f"-L{lib}", "-lggml", "-lggml-base", "-lggml-cpu", f"-Wl,-rpath,{lib}", "-o", exe],
        check=True,
    )
    commit = "unknown"
    try:
        commit = subprocess.run(["git", "-C", llama, "rev-parse", "HEAD"], capture_output=True,
                                text=True).stdout.strip() or commit
    except OSError:
        pass
    return exe, commit


def run_llama(exe):
    """GB/s per (type, op). test-quantize-perf prints its throughput with two
    decimals (0.05 GB/s for the k-quant quantizers) but the mean cycles per 32
    values precisely, so the GB/s come from the cycles and the time-stamp
    counter's rate, which the fast operations' two figures give."""
    cycles, gbs = {}, {}
    for t in TYPES:
        for op in ["quantize_row_q_reference", "dequantize_row_q", "vec_dot_q", "quantize_row_q_dot"]:
            text = subprocess.run([exe, "--type", t, "--op", op, "-i", str(ITER)], capture_output=True,
                                  text=True, check=True).stdout
            cycles[(t, op)] = float(re.search(r"avg cycles/32 vals\s*:\s*([0-9.]+)", text).group(1))
            gbs[(t, op)] = float(re.search(r"float32 throughput\s*:\s*([0-9.]+) GB/s", text).group(1))
    # GB/s = 128 bytes * rate / cycles / 2^30, from the operations above 1 GB/s.
    rates = sorted(g * 2**30 * cycles[k] / 128 for k, g in gbs.items() if g >= 1.0)
    rate = rates[len(rates) // 2]
    return {k: 128 * rate / c / 2**30 for k, c in cycles.items()}, rate


def run_ours(speed):
    text = subprocess.run([speed], capture_output=True, text=True, check=True).stdout
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].lower() in [t.lower() for t in TYPES]:
            t = next(x for x in TYPES if x.lower() == cells[0].lower())
            out[t] = tuple(float(c) for c in cells[1:])
    return out


def main():
    args = sys.argv[1:]
    lib = None
    if "--ggml-lib" in args:
        i = args.index("--ggml-lib")
        lib = args[i + 1]
        del args[i:i + 2]
    version, work, speed = args[:3]
    rounds = int(args[3]) if len(args) > 3 else 2
    os.makedirs(work, exist_ok=True)
    llama = llama_cpp_sources(version, work)
    exe, commit = build_perf(llama, work, lib)
    best_l, best_o = {}, {}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", file=sys.stderr)
        got, rate = run_llama(exe)
        for k, v in got.items():
            best_l[k] = max(best_l.get(k, 0.0), v)
        for k, v in run_ours(speed).items():
            best_o[k] = tuple(max(a, b) for a, b in zip(best_o.get(k, (0.0,) * 6), v))
    build = "AVX2 build (llama-cpp-python's)" if lib is None else f"ggml from {lib}"
    print(f"llama.cpp {commit[:7]} test-quantize-perf, {build} (-i {ITER}, 4096 values, 1 thread) vs "
          f"weightkit speed example, best of {rounds} alternating rounds; GB/s of f32 data "
          f"(llama.cpp's from its mean cycles at a {rate / 1e9:.2f} GHz time-stamp counter)")
    print()
    print("| type | quantize: weightkit / llama.cpp | ratio | dequantize: weightkit / llama.cpp | ratio |"
          " vec_dot: weightkit / llama.cpp | ratio | partner quantize: weightkit / llama.cpp | ratio |"
          " weightkit vec_dot, byte API | weightkit with imatrix |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ratio = lambda a, b: f"**{a / b:.2f}x**" if b > 0 else "n/a"
    for t in TYPES:
        q, w, d, v, vb, p = best_o[t]
        lq = best_l[(t, "quantize_row_q_reference")]
        ld = best_l[(t, "dequantize_row_q")]
        lv = best_l[(t, "vec_dot_q")]
        lp = best_l[(t, "quantize_row_q_dot")]
        print(f"| {t} | {q:.3f} / {lq:.3f} | {ratio(q, lq)} | {d:.2f} / {ld:.2f} | {ratio(d, ld)} |"
              f" {v:.1f} / {lv:.1f} | {ratio(v, lv)} | {p:.2f} / {lp:.2f} | {ratio(p, lp)} |"
              f" {vb:.1f} | {w:.3f} |")


if __name__ == "__main__":
    main()
