# Faultline developer entry points. The scripts under scripts/ do the work; see .env.example for settings.

SHELL := bash
CARGO ?= cargo
# Extra arguments for the test runner: make test ARGS="-p worker"
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test build fmt lint services bench

help: ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

run: ## start the services, build, migrate, create the dev key and run ingest, worker and alerter (Ctrl-C stops)
	@bash scripts/run.sh

test: ## start the services and run every test in the workspace
	@bash scripts/test.sh $(ARGS)

build: ## build the three release binaries
	$(CARGO) build --release --bin ingest --bin worker --bin alerter

fmt: ## format the code
	$(CARGO) fmt --all

lint: ## check formatting and run clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

services: ## install (if missing) and start PostgreSQL, RabbitMQ and Redis
	@bash scripts/services.sh

bench: ## run the load benchmark on its own stack (make bench ARGS="--rate 10000 --duration 30"; see benches/README.md)
	@bash benches/run.sh $(ARGS)
