"""Builds llama.cpp's ggml for this machine's CPU (cmake's defaults: GGML_NATIVE=ON,
that is -march=native: AVX-512, VNNI and BF16 kernels where the CPU has them).

llama-cpp-python's wheel build (what `cargo xtask interop` installs and
test-quantize-perf links) compiles ggml for AVX2 only; a user who builds
llama.cpp with cmake gets this build instead, so `cargo xtask quant-perf` times
weightkit against both. Same pinned sources as quant_perf.py (the
llama-cpp-python sdist, sha256 checked); cmake and ninja pinned from PyPI into
the interop venv. Prints the directory that holds libggml-base.so and
libggml-cpu.so.

usage: build_ggml_native.py VERSION WORKDIR
"""

import os
import subprocess
import sys

from quant_perf import llama_cpp_sources

CMAKE = "cmake==4.4.5"
NINJA = "ninja==1.13.2"


def main():
    version, work = sys.argv[1:3]
    llama = llama_cpp_sources(version, work)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", CMAKE, NINJA], check=True)
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    src = os.path.join(llama, "ggml")
    # The sdist leaves out ggml's pkg-config template, which configure reads.
    pc = os.path.join(src, "ggml.pc.in")
    if not os.path.exists(pc):
        open(pc, "w").close()
    build = os.path.join(os.path.abspath(work), "ggml-native")
    subprocess.run(
        [os.path.join(bindir, "cmake"), "-S", src, "-B", build, "-G", "Ninja",
         "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=ON",
         "-DGGML_BUILD_TESTS=OFF", "-DGGML_BUILD_EXAMPLES=OFF", "-DGGML_OPENMP=OFF"],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    subprocess.run([os.path.join(bindir, "cmake"), "--build", build, "--target", "ggml-cpu", "ggml"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    print(os.path.join(build, "src"))


if __name__ == "__main__":
    main()
