# BitLoot developer commands. `make dev` and `make test` are the two a newcomer needs.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_LINK_MODE ?= copy

.PHONY: dev test setup lint typecheck imports unit bench docs browsers clean

# Installs uv if missing, then the locked environment (one lockfile for the workspace).
setup:
	@command -v uv >/dev/null 2>&1 || [ -x "$(HOME)/.local/bin/uv" ] || python3 -m pip install --quiet uv || curl -LsSf https://astral.sh/uv/install.sh | sh
	@$(UV) sync --all-packages --frozen --quiet

dev: setup
	@$(UV) run --frozen python -m shared.launcher

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

typecheck: setup
	$(UV) run --frozen mypy shared/shared services/orders/orders services/payments/payments services/webhooks/webhooks services/fulfillment/fulfillment services/admin/admin emulators/nowpayments/nowpayments_emulator web/web

imports: setup
	$(UV) run --frozen lint-imports

test: setup lint typecheck imports
	$(UV) run --frozen pytest

bench: setup
	$(UV) run --frozen python bench/outbox_relay.py

clean:
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
