# The README's two commands: `make demo` (the main job on SensorScenes) and `make test`.
# Both work on a fresh machine with Python 3.11+: they create .venv and install torch==2.13.0
# (a CPU build) before the package, so pip never pulls a multi-GB CUDA torch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip "setuptools>=69" wheel
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[build,gpu,plot,ros,live,test]"
	# the public BasicMotions dataset ships inside aeon's wheel: tests and examples read it from there
	$(PY) -m pip download --no-deps --dest .cache/wheels aeon==1.6.0
	touch $@

venv: $(VENV)/.installed

# train, evaluate, build, replay a camera dropout through the runtime, benchmark: one summary table at the end
demo: venv
	$(VENV)/bin/edgefuse demo --out $(RUN)

# two pytest-xdist workers, one torch thread each (tests/conftest.py); whole files per worker, so that a
# module's expensive fixture (the demo model, the AOT compiles) is built once
test: venv
	$(PY) -m pytest -q -n 2 --dist loadfile

# ruff (pyproject.toml): lint rules and import order, and the formatting, checked, not applied
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# the runtime's overhead and swaps, CPU engine latency (need `make demo` first); GPU kernels: bash bench/gpu_check.sh on a GPU
bench: venv
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/bench_runtime.py --bundle $(RUN)/bundle --out bench/results/local
	$(PY) bench/bench_split.py --checkpoint $(RUN)/checkpoint --out bench/results/local
	$(PY) bench/bench_engines.py --checkpoint $(RUN)/checkpoint --out bench/results/local
	$(PY) bench/bench_calibration.py --checkpoint $(RUN)/checkpoint --out bench/results/local
	$(PY) bench/bench_launch_overhead.py --out bench/results/local
	$(PY) bench/bench_int8_scaling.py --out bench/results/local
	$(PY) bench/bench_openvino.py --checkpoint $(RUN)/checkpoint --out bench/results/local
	$(PY) bench/bench_lean.py --checkpoint $(RUN)/checkpoint --out bench/results/local
	$(PY) bench/bench_small_data.py --out bench/results/local
	$(PY) bench/bench_bag.py --bundle $(RUN)/bundle --out bench/results/local
	COMPARE=0 bash bench/bench_product.sh

clean:
	rm -rf $(VENV) runs build dist *.egg-info
