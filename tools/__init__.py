"""Verification tooling kept out of the installed package: AOT compiles, fuzzers, layout sweeps, mutant runs,
binary counts, per-release scripts, the kernels' GPU benchmark command. Run from the repository root
(``python -m tools.aot``, ``python tools/fuzz_kernels.py``); tests under tests/tools carry the ``tools`` marker."""
