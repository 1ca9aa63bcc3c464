# Ticketing: the two commands are `make up` and `make test`.
SHELL := /bin/bash
STACK := scripts/stack.sh
export CARGO_TERM_COLOR ?= auto
# The private PostgreSQL cluster of scripts/stack.sh, which the tests create their databases in.
export PG_PORT ?= 55432
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:$(PG_PORT)/postgres

CARGO_DENY_VERSION := 0.20.2

VENV := .stack/venv

.PHONY: up down status dev test deps lint sqlx-prepare unit-and-integration stack-tests infra-tests bench chaos clean-test-databases \
	images cluster cluster-down cluster-status cluster-chaos cluster-tests

## up: the whole system on http://localhost:8080 (installs what is missing);
## MONITORING=on adds Prometheus on :9090 with the prod alerts
up:
	$(STACK) up

## down: stop everything `make up` started
down:
	$(STACK) down

status:
	@$(STACK) status

## dev: the stack with debug builds; edits rebuild and restart just the affected services
dev:
	scripts/dev.sh

## test: format and lint checks, then every test: unit, HTTP, events, cross-service,
## then against a running stack: the ingress, a NATS outage, the browser, chaos;
## then the images and the cluster under a shortened run of its faults
test: deps lint unit-and-integration infra-tests stack-tests cluster-tests

# cargo-deny is built unoptimised and without debug info: 92 s instead of 311 s on a
# two-core machine, and its check of this tree still takes seconds. The offline query
# data check needs no sqlx-cli (scripts/sqlx-data.sh).
deps:
	MONITORING=on $(STACK) install
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
	@cargo deny --version 2>/dev/null | grep -q "$(CARGO_DENY_VERSION)" || \
		CARGO_PROFILE_DEV_DEBUG=false cargo install --locked --debug cargo-deny \
			--version $(CARGO_DENY_VERSION) --no-default-features

## lint: formatting, clippy, the documentation, the dependency tree's licences,
## duplicates and sources (deny.toml), and the offline query data (.sqlx/) against
## the migrations
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q
	# The testcontainers path is for machines with a Docker engine; here it is only compiled.
	cargo clippy -p testkit --features testcontainers --locked -- -D warnings
	cargo deny --locked check licenses bans sources
	$(STACK) with-postgres scripts/sqlx-data.sh check

## sqlx-prepare: regenerate .sqlx/ after changing a query or a migration
sqlx-prepare:
	$(STACK) with-postgres scripts/sqlx-data.sh prepare

# PostgreSQL is stopped afterwards unless it was running before. nextest does not run
# doctests; cargo test --doc does.
unit-and-integration:
	$(STACK) with-postgres bash -c '$(STACK) clean-test-databases && cargo nextest run --workspace --locked --profile ci'
	cargo test --doc --workspace --locked

## bench: every measurement of docs/benchmarks.md, three runs (BENCH_RUNS; scripts/bench.sh)
bench:
	scripts/bench.sh

## chaos: journeys for a few minutes under faults, then the invariant checker
chaos:
	scripts/chaos.sh

## stack-tests: the tests that need the whole stack running (scripts/stack-test.sh)
stack-tests:
	scripts/stack-test.sh

## infra-tests: offline checks of the images, manifests, skaffold.yaml and workflows
infra-tests: $(VENV)/.installed
	cargo build --workspace --bins --locked -q
	$(VENV)/bin/python -m unittest discover -s infra/tests -v

$(VENV)/.installed: infra/tests/requirements.txt
	python3 -m venv $(VENV) || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv && python3 -m venv $(VENV); }
	$(VENV)/bin/pip install -q -r infra/tests/requirements.txt
	touch $@

clean-test-databases:
	$(STACK) clean-test-databases

## images: an OCI image per deployable, built with buildah from this machine's files
images:
	scripts/cluster images

## cluster: the prod topology as containers on http://localhost:8090 (CLUSTER_PORT):
## three NATS nodes, two replicas of every service, each database with a synchronous
## standby (docs/cluster.md); safe to run twice
cluster:
	scripts/cluster up

## cluster-down: remove the cluster's containers (its data stays: scripts/cluster down --purge)
cluster-down:
	scripts/cluster down

cluster-status:
	@scripts/cluster status

## cluster-chaos: a fresh cluster under every fault of the fault library, measured,
## then the invariant checker; writes the cluster's section of docs/benchmarks.md
cluster-chaos:
	scripts/cluster-chaos.sh

# The end of make test: the images against the Dockerfile, then the shortened plan.
# Release builds, as make cluster runs them: with debug builds in the images (tried
# to shorten CI) the orders replicas missed readiness probes under the plan's load and
# the run failed.
cluster-tests: $(VENV)/.installed
	scripts/cluster images
	cd infra/tests && REQUIRE_IMAGES=1 ../../$(VENV)/bin/python -m unittest -v test_cluster.Images
	CLUSTER_CHAOS_PLAN=short CLUSTER_IMAGES_BUILT=1 scripts/cluster-chaos.sh
