# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models

.PHONY: demo test install model bench loadtest clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The model versions the demo and the tests use; trained once, reused afterwards.
$(MODELS)/.trained: $(STAMP)
	$(BIN)/modelramp train --out $(MODELS) --all-versions
	touch $@

model: $(MODELS)/.trained

demo: $(MODELS)/.trained
	$(BIN)/modelramp demo --models $(MODELS)

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(MODELS)/.trained
	$(BIN)/python loadtests/bench_model_server.py --models $(MODELS)

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache
