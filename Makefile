# Two commands a newcomer needs: `make run` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Demo-only secrets so `make run` works on a fresh machine; set real ones in production.
export GATEWAY_JWT_SECRET ?= demo-jwt-secret-not-for-production
export SANDBOX_SECRET ?= demo-sandbox-secret-not-for-production

.PHONY: run test bench lint typecheck check clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/gateway serve --config config.example.toml

test: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q || { rc=$$?; [ $$rc -eq 5 ] && echo "pytest: no tests collected" && exit 0; exit $$rc; }

# Benchmarks print figures; they assert nothing (tests assert behaviour).
bench: $(STAMP)
	$(BIN)/python bench/delivery.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/isolation.py
	$(BIN)/python bench/e2e.py
	$(BIN)/python bench/growth.py

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
