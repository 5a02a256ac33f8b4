# Plain entry points. `make serve` and `make test` are the README's quick start.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# MODEL empty: the stories260K model shipped inside the package.
MODEL ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test check lint unit kernels e2e e2e-node soak bench fmt lock

$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "== setup: creating $(VENV) with Pagoda and its dependencies: PyTorch (its Linux wheels"
	@echo "== bring the CUDA libraries), transformers, aiohttp, kopf, kubernetes and the test tools."
	@echo "== About 2.8 GB to download and 5 GB in $(VENV); a few minutes on a fast link."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	touch $@
	@echo "== setup done: activate it with 'source $(VENV)/bin/activate'"

setup: $(VENV)/.installed

serve: setup
	$(VENV)/bin/pagoda serve $(if $(MODEL),--model $(MODEL)) --host $(HOST) --port $(PORT)

test: lint unit kernels e2e e2e-node

# The fast loop while coding: everything but the Kubernetes tiers.
check: lint unit kernels

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Re-pin constraints.txt (what `make setup` installs) to the newest versions pyproject allows.
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-emit-package pagoda --upgrade \
		--output-file constraints.txt

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: setup
	$(PY) -m pytest tests -q --ignore=tests/kernels

# The Triton kernels in Triton's CPU interpreter (on a GPU machine, plain `pytest tests/kernels`).
kernels: setup
	TRITON_INTERPRET=1 $(PY) -m pytest tests/kernels -q

e2e: setup
	$(PY) -m e2e.build
	$(PY) -m pytest e2e -q

# Real pods: a kubelet node running the worker image, in namespaces of the run's own. Needs root;
# installs Debian's containerd, runc, CNI plugins, iptables and debootstrap when missing, and
# puts back the few host settings it changes (e2e/node/host.py).
e2e-node: setup
	$(PY) -m e2e.node --install-missing

# Ten minutes of mixed and abusive traffic against one server on CPU (`make unit` runs 20 s of it).
soak: setup
	PAGODA_SOAK_SECONDS=600 $(PY) -m pytest tests/server/test_soak.py -q -s

bench: setup
	$(PY) bench/throughput.py
