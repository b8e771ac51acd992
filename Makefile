# Both entry points build .venv/ (with the embedded model's llama.cpp) on first use.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# llama.cpp's native build uses CPU features (AMX) that crash on some hosts.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,local,server,serve,bench,ray]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fathom demo

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check fathom tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/engine.py
	$(PY) benchmarks/sandbox.py
	$(PY) benchmarks/local_model.py
	$(PY) benchmarks/viewer.py
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/session.py
	$(PY) benchmarks/citations.py
	$(PY) benchmarks/serve_load.py
	$(PY) benchmarks/bench_scale.py
	$(PY) benchmarks/bench_runner.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
