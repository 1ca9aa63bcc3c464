# Ticketing: the two commands are `make up` and `make test`.
SHELL := /bin/bash
STACK := scripts/stack.sh
export CARGO_TERM_COLOR ?= auto
# The private PostgreSQL cluster of scripts/stack.sh, which the tests create their databases in.
export PG_PORT ?= 55432
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:$(PG_PORT)/postgres

SQLX_CLI_VERSION := 0.9.0

.PHONY: up down status test deps lint sqlx-prepare unit-and-integration clean-test-databases

## up: the whole system on http://localhost:8080 (installs what is missing)
up:
	$(STACK) up

## down: stop everything `make up` started
down:
	$(STACK) down

status:
	@$(STACK) status

## test: format and lint checks, then every test (unit, HTTP, events, cross-service)
test: deps lint unit-and-integration

deps:
	$(STACK) install
	@command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
	@cargo sqlx --version 2>/dev/null | grep -q "$(SQLX_CLI_VERSION)" || \
		cargo install --locked sqlx-cli --version $(SQLX_CLI_VERSION) --no-default-features --features postgres,sqlx-toml

## lint: formatting, clippy, and the offline query data (.sqlx/) against the migrations
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	# The testcontainers path is for machines with a Docker engine; here it is only compiled.
	cargo clippy -p common --features testcontainers --locked -- -D warnings
	$(STACK) with-postgres scripts/sqlx-data.sh check

## sqlx-prepare: regenerate .sqlx/ after changing a query or a migration
sqlx-prepare:
	$(STACK) with-postgres scripts/sqlx-data.sh prepare

# PostgreSQL is stopped afterwards unless it was running before.
unit-and-integration:
	$(STACK) with-postgres bash -c '$(STACK) clean-test-databases && cargo nextest run --workspace --locked --profile ci'

clean-test-databases:
	$(STACK) clean-test-databases
