# BitLoot developer commands. `make dev` and `make test` are the two a newcomer needs.
SHELL := /bin/bash
# Resolved at each use, so a uv installed by `setup` is found in the same make run.
UV = $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export UV_LINK_MODE ?= copy

.PHONY: dev test setup lint typecheck imports bench docs docs-check deploy-check browsers clean

# Installs uv if missing, then the locked environment (one lockfile for the workspace).
setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --all-packages --frozen --quiet

# Debian's chromium for the Playwright browser tests (Playwright's own download cannot work offline).
browsers:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi; }

dev: setup
	@$(UV) run --frozen python -m shared.launcher

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: setup
	$(UV) run --frozen mypy shared/shared services/orders/orders services/payments/payments services/webhooks/webhooks services/fulfillment/fulfillment services/admin/admin emulators/nowpayments/nowpayments_emulator web/web

imports: setup
	$(UV) run --frozen lint-imports

test: setup browsers lint typecheck imports docs-check deploy-check
	$(UV) run --frozen pytest

# compose.yaml, Dockerfiles and the Kubernetes manifests, validated without Docker or a cluster.
deploy-check: setup
	bash .ci/check-compose

# OpenAPI of every HTTP API and AsyncAPI of every event subject, committed under docs/.
docs: setup
	$(UV) run --frozen python tools/gen_docs.py

docs-check: setup
	$(UV) run --frozen python tools/gen_docs.py --check

bench: setup
	$(UV) run --frozen python bench/outbox_relay.py
	$(UV) run --frozen python bench/ipn_ingest.py
	$(UV) run --frozen pytest -q -s services/fulfillment/tests/integration/measure_fulfillment.py
	$(UV) run --frozen python bench/e2e_latency.py --replicas 1
	$(UV) run --frozen python bench/e2e_latency.py --replicas 2

clean:
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
