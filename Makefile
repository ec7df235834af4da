# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODELS ?= models

.PHONY: demo test test-fast lint install lock images model bench bench-router bench-sketches loadtest clean

# Everything (every extra, the test and lint tools) at the versions of requirements/dev.lock, hashes checked;
# then this checkout itself, editable.
$(STAMP): pyproject.toml requirements/dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The lock files: one per image (the base install or an extra, each with [postgres]) and one for CI (`[dev]`).
# A refresh keeps every pin that still satisfies pyproject.toml; `make lock LOCK_FLAGS=--upgrade` moves them all.
LOCK_FLAGS ?=
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python $(BIN)/python \
	--custom-compile-command 'make lock' $(LOCK_FLAGS)
lock: $(STAMP)
	$(LOCK) --extra postgres -o requirements/router.lock
	$(LOCK) --extra controller --extra postgres -o requirements/controller.lock
	$(LOCK) --extra model --extra postgres -o requirements/model.lock
	$(LOCK) --extra dev -o requirements/dev.lock

# The three images (router, controller, model) from the Containerfile, built and smoke-tested as .ci/run does.
images: $(STAMP)
	scripts/build_images.sh

# The model versions the demo and the tests use; trained once, reused afterwards.
$(MODELS)/.trained: $(STAMP)
	$(BIN)/modelramp train --out $(MODELS) --all-versions
	touch $@

model: $(MODELS)/.trained

demo: $(MODELS)/.trained
	$(BIN)/modelramp demo --models $(MODELS)

test: $(STAMP)
	$(BIN)/python -m pytest

# The inner loop while developing: no end-to-end tests, nothing that needs TensorFlow or a trained model.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not tensorflow" -q

# Lint and types: ruff and mypy read their settings (and mypy its file list) from pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Benchmarks: ratios measured within one run (see loadtests/); results land in loadtests/results/.
bench: $(MODELS)/.trained
	$(BIN)/python loadtests/bench_model_server.py --models $(MODELS)

bench-router: $(MODELS)/.trained
	$(BIN)/python loadtests/bench_router.py --models $(MODELS) --json loadtests/results/router.json

bench-sketches: $(STAMP)
	$(BIN)/python loadtests/bench_sketches.py

# Locust against a running `modelramp up` (HTTP and gRPC users), headless and bounded in time.
LOCUST_HOST ?= http://127.0.0.1:8080
ROUTER_GRPC ?= 127.0.0.1:8090
loadtest: $(STAMP)
	mkdir -p loadtests/results
	ROUTER_GRPC=$(ROUTER_GRPC) $(BIN)/locust -f loadtests/locustfile.py --headless --host $(LOCUST_HOST) \
		-u 50 -r 10 -t 60s --csv loadtests/results/locust --only-summary

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache
