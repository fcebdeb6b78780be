# `make demo` and `make test` each create .venv (if missing) and install the pinned project.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINTED := platform evaluation pipelines tests benchmarks

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,server,kubeflow]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/genforge run pipelines/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)

test: lint
	$(BIN)/python -m pytest tests --durations=20

clean:
	rm -rf mlflow.db mlartifacts mlruns genforge_runs

# `make bench`: the speed benchmarks (under 20 minutes on 2 cores); `make bench-quality`: train the shipped specs and
# record what their models score (longer). Both write benchmarks/results/latest.json and latest.md. The `bench` extra
# (torchmetrics, prdc: the reference implementations) is installed once, beside the project.
BENCH_STAMP := $(VENV)/.installed-bench
BENCH_ARGS ?=

.PHONY: bench bench-quality

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quality: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run --only quality $(BENCH_ARGS)
