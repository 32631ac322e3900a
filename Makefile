# One entry point for every task. Each target sets up what it needs first, so on a fresh machine
# `make run` and `make test` are the only commands anyone has to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt lib/svckit/pyproject.toml | sha1sum | cut -c1-12)
STAGE ?= dev

.PHONY: setup run test lint unit integration bench package deploy deploy-localstack destroy \
        destroy-localstack localstack-up localstack-down clean

$(STAMP): requirements-dev.txt lib/svckit/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e lib/svckit
	rm -f $(VENV)/.installed-*
	touch $@

## setup: virtualenv with the pinned packages and the shared library (idempotent)
setup: $(STAMP)

## run: moto DynamoDB, tables, keys and the three local servers on 5000-5002; Ctrl-C stops all
run: setup
	$(BIN)/python -m tools.localrun

## test: lint, then every test layer (unit, integration, deploy checks)
test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

unit: setup
	$(BIN)/pytest -m "not integration and not deploy"

integration: setup
	$(BIN)/pytest -m integration

## bench: local latency/throughput, zip sizes and cold starts (not part of `make test`)
bench: setup
	$(BIN)/python -m tools.bench_local
	$(BIN)/python -m tools.bench_package --stage $(STAGE)

## package: one CloudFormation template + deployment.zip per service into build/$(STAGE)/
package: setup
	$(BIN)/python -m tools.package --stage $(STAGE)

## deploy / destroy: AWS with the usual credential chain
deploy: setup
	$(BIN)/python -m tools.deploy deploy --stage $(STAGE)

destroy: setup
	$(BIN)/python -m tools.deploy destroy --stage $(STAGE)

## deploy-localstack / destroy-localstack: the same stage against LocalStack (see localstack/)
deploy-localstack: setup
	$(BIN)/python -m tools.deploy deploy --stage $(STAGE) --localstack

destroy-localstack: setup
	$(BIN)/python -m tools.deploy destroy --stage $(STAGE) --localstack

localstack-up:
	$(MAKE) -C localstack up

localstack-down:
	$(MAKE) -C localstack down

clean:
	rm -rf build .pytest_cache .ruff_cache */vendor
