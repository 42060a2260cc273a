# speedup-proxy: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: install model run test lint bench-overhead bench-replay bench-scale clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: a looser pin pulls a multi-GB CUDA build.
	$(PIP) install torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e '.[dev,verifier]' 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import torch, faiss, sentence_transformers, xllamacpp, openai, fastapi"
	touch $(STAMP)

install: $(STAMP)

model: install
	$(PY) -m proxy.backend.model_files --verifier
	$(PY) -c "from memory_store.embedding.onnx_encoder import OnnxMiniLMEncoder; OnnxMiniLMEncoder(quantized=True)"

run: model
	$(VENV)/bin/speedup-proxy serve $(ARGS)

test: model
	bash scripts/install-system-deps.sh
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check proxy memory_store budget

bench-overhead: install
	$(PY) -m bench.overhead

bench-replay: model
	$(PY) -m bench.run_replay

bench-scale: install
	$(PY) -m bench.search_scale

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
