# Two commands a new user needs: `make demo` (the whole product end to end) and `make test`.
# Both create ./.venv and install what they need; torch comes from `pip install torch==2.13.0`
# explicitly first (a CPU build on these machines; an unpinned torch pulls a multi-GB CUDA build).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
INFINITY := bench/.work/infinity-venv

.PHONY: install demo test test-slow test-all lint format bench mutation gpu-lock gpu-check clean promtool oci-registry wrk

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/artifact demo

# The fast suite (what a developer runs after each change); the real-MiniLM builds and the
# tiny end-to-end demo are marked slow and run by `make test-slow` (CI runs both).
test: install lint promtool oci-registry
	$(PY) -m pytest -m "not slow"

test-slow: install oci-registry
	$(PY) -m pytest -m slow

test-all: install lint oci-registry
	$(PY) -m pytest

# promtool checks and unit-tests deploy/monitoring's alert rules; taken from Debian's prometheus
# package without installing it (best effort: without it the parser tests still run).
PROMTOOL := $(VENV)/tools/promtool
$(PROMTOOL):
	@mkdir -p $(VENV)/tools/deb
	@(cd $(VENV)/tools/deb && apt-get download -q prometheus >/dev/null 2>&1 \
	  && dpkg -x prometheus_*.deb x && cp x/usr/bin/promtool ../promtool && cd .. && rm -rf deb) \
	  || echo "promtool unavailable: the alert rules are checked by the parser tests only"

promtool: $(PROMTOOL)

# Debian's docker-registry (Docker Distribution 2.8): the OCI blob store and mirror tests start
# their own on loopback (they skip, saying why, where it cannot be installed).
oci-registry:
	@command -v docker-registry >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	  docker-registry >/dev/null 2>&1 || sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install \
	  -y -q docker-registry >/dev/null 2>&1) \
	  || echo "docker-registry unavailable: the OCI tests will skip"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The benchmark's contenders: sentence-transformers' OpenVINO backend, and infinity-emb in its own
# virtualenv (its pinned dependencies must not touch ours).
$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[all,bench]"
	@test -x $(INFINITY)/bin/python || $(PYTHON) -m venv $(INFINITY)
	$(INFINITY)/bin/python -m pip install -q --upgrade pip
	$(INFINITY)/bin/python -m pip install -q torch==2.13.0 "infinity-emb[server,optimum]==0.0.78"
	@touch $(BENCH_STAMP)

# wrk (Debian): a C load generator, so the client takes little CPU from the servers it measures
wrk:
	@command -v wrk >/dev/null || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk \
	  >/dev/null 2>&1 || sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk \
	  >/dev/null 2>&1) || echo "wrk unavailable: the scale-out benchmark will refuse"

bench: $(BENCH_STAMP) oci-registry wrk
	$(PY) -m bench.run_all

# mutmut on the trust-critical contract against its unit tests; a score per module (not in make test)
mutation: install
	$(PY) -m tools.mutation

# Re-resolve the GPU environments' locks (requirements/gpu-*.txt) with uv for Linux x86_64, without
# a GPU (needs PyPI); `make test` checks them offline (tools/gpu_pins.py).
gpu-lock: install
	$(PY) -m tools.gpu_pins lock

# On an NVIDIA machine with the gpu-builder environment: build tensorrt-fp16/-int8 for MiniLM, gate,
# serve through the edge backend, and compare with onnx-fp16 (CUDA EP) and PyTorch eager on the
# GPU. Refuses with the reason elsewhere. GPU_PY: that environment's python.
GPU_PY ?= $(PY)
gpu-check:
	$(GPU_PY) -m tools.gpu_check

clean:
	rm -rf $(VENV) .demo bench/.work mutants
