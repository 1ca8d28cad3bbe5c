"""Reference data for ggml's Q1_0 and Q2_0 from llama.cpp itself.

gguf-py has no Q1_0/Q2_0 quantizer, so this compiles a small C program
against the ggml shared libraries that llama-cpp-python installed (the
interop venv's site-packages/llama_cpp/lib) and runs it on the four input
rows of testdata/ggml-reference (gauss, uniform, outlier, edge; 8 x 4096
f32 each). For each distribution and type it writes into OUT_DIR:

* `<dist>_<type>.q`: `ggml_quantize_chunk(type, x, dst, 0, 8, 4096, NULL)`;
* `<dist>_<type>_imatrix.q`: the same with testdata/ggml-reference/imatrix.f32;
* `<dist>_<type>.deq.f32`: the type traits' `to_float` of `<dist>_<type>.q`;
* `<dist>_<type>.dot.f32`: 8 f32, value r = ggml-cpu's `vec_dot` of row r of
  `<dist>_<type>.q` with row (r + 1) % 8 of `<dist>_q8_0_cpu.q`;

and per distribution `<dist>_q8_0_cpu.q`: every row quantized to the
`vec_dot_type` (Q8_0) with ggml-cpu's `from_float`.

usage: make_q1q2_reference.py LLAMA_CPP_SRC IN_DIR OUT_DIR
  (LLAMA_CPP_SRC: the llama.cpp tree of the installed version, for the headers)
Run with the interop venv's python (/work/main/target/interop-venv/bin/python).
"""

import hashlib
import os
import subprocess
import sys
import tempfile

C_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ggml.h"
#include "ggml-cpu.h"

enum { ROWS = 8, COLS = 4096 };

static void *read_all(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    void *buf = malloc(want);
    if (fread(buf, 1, want, f) != want) { fprintf(stderr, "%s: short read\n", path); exit(1); }
    fclose(f);
    return buf;
}

static void write_all(const char *path, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n) { perror(path); exit(1); }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: IN_DIR OUT_DIR\n"); return 2; }
    const char *in = argv[1], *out = argv[2];
    const char *dists[] = {"gauss", "uniform", "outlier", "edge"};
    const enum ggml_type types[] = {GGML_TYPE_Q1_0, GGML_TYPE_Q2_0};
    char path[4096];
    ggml_cpu_init();
    printf("ggml %s commit %s\n", ggml_version(), ggml_commit());
    snprintf(path, sizeof path, "%s/imatrix.f32", in);
    float *imatrix = read_all(path, COLS * sizeof(float));
    for (int di = 0; di < 4; di++) {
        snprintf(path, sizeof path, "%s/%s.f32", in, dists[di]);
        float *x = read_all(path, (size_t)ROWS * COLS * sizeof(float));
        const struct ggml_type_traits_cpu *q8 = ggml_get_type_traits_cpu(GGML_TYPE_Q8_0);
        size_t q8_row = ggml_row_size(GGML_TYPE_Q8_0, COLS);
        char *yq = malloc(ROWS * q8_row);
        for (int r = 0; r < ROWS; r++) q8->from_float(x + (size_t)r * COLS, yq + r * q8_row, COLS);
        snprintf(path, sizeof path, "%s/%s_q8_0_cpu.q", out, dists[di]);
        write_all(path, yq, ROWS * q8_row);
        for (int ti = 0; ti < 2; ti++) {
            enum ggml_type t = types[ti];
            const char *name = ggml_type_name(t);
            const struct ggml_type_traits_cpu *cpu = ggml_get_type_traits_cpu(t);
            if (cpu->vec_dot_type != GGML_TYPE_Q8_0) { fprintf(stderr, "%s: vec_dot_type\n", name); return 1; }
            size_t row = ggml_row_size(t, COLS);
            char *q = malloc(ROWS * row);
            size_t n = ggml_quantize_chunk(t, x, q, 0, ROWS, COLS, NULL);
            if (n != ROWS * row) { fprintf(stderr, "%s: size %zu\n", name, n); return 1; }
            snprintf(path, sizeof path, "%s/%s_%s.q", out, dists[di], name);
            write_all(path, q, n);
            float *deq = malloc((size_t)ROWS * COLS * sizeof(float));
            ggml_get_type_traits(t)->to_float(q, deq, (int64_t)ROWS * COLS);
            snprintf(path, sizeof path, "%s/%s_%s.deq.f32", out, dists[di], name);
            write_all(path, deq, (size_t)ROWS * COLS * sizeof(float));
            float dots[ROWS];
            for (int r = 0; r < ROWS; r++) {
                cpu->vec_dot(COLS, &dots[r], 0, q + r * row, 0, yq + ((r + 1) % ROWS) * q8_row, 0, 1);
            }
            snprintf(path, sizeof path, "%s/%s_%s.dot.f32", out, dists[di], name);
            write_all(path, dots, sizeof dots);
            char *qi = malloc(ROWS * row);
            n = ggml_quantize_chunk(t, x, qi, 0, ROWS, COLS, imatrix);
            if (n != ROWS * row) { fprintf(stderr, "%s: size %zu\n", name, n); return 1; }
            snprintf(path, sizeof path, "%s/%s_%s_imatrix.q", out, dists[di], name);
            write_all(path, qi, n);
            free(q); free(qi); free(deq);
        }
        free(x); free(yq);
    }
    return 0;
}
"""


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    llama, in_dir, out_dir = sys.argv[1:]
    import llama_cpp

    lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "q1q2ref.c")
        exe = os.path.join(tmp, "q1q2ref")
        open(src, "w").write(C_SOURCE)
        subprocess.run(
            ["gcc", "-O2", "-std=c11", f"-I{llama}/ggml/include", src, f"-L{lib}", "-lggml-base",
             "-lggml-cpu", f"-Wl,-rpath,{lib}", "-o", exe],
            check=True,
        )
        subprocess.run([exe, in_dir, out_dir], check=True)
    print(f"llama-cpp-python {llama_cpp.__version__}, libraries in {lib}")
    for name in ["libggml-base.so", "libggml-cpu.so"]:
        print(f"  {name}: sha256 {sha256(os.path.realpath(os.path.join(lib, name)))}")
    for name in ["gauss.f32", "uniform.f32", "outlier.f32", "edge.f32", "imatrix.f32"]:
        print(f"  input {name}: sha256 {sha256(os.path.join(in_dir, name))}")


if __name__ == "__main__":
    main()
