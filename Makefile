# Ruta's two set-up commands: `make run` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Development mode: default secrets are allowed, partner URLs may be loopback http.
DEV_ENV := RUTA_ENV=development

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(VENV)/.installed

# The development settings for the `ruta` commands the README shows, read by the settings
# from the working directory (gitignored; the environment still wins). Written once: a .env
# you edited is left alone. It holds no secret: development mode's defaults are public.
.env:
	printf '%s\n' '# Written by `make run`: the ruta commands run here in development mode.' \
	  '# Delete it before running anything here in production mode.' \
	  'RUTA_ENV=development' > $@

## run: create the environment, migrate the SQLite file, start the service (development mode)
run: $(VENV)/.installed .env
	$(DEV_ENV) $(BIN)/ruta migrate
	$(DEV_ENV) $(BIN)/ruta demo
	$(DEV_ENV) $(BIN)/ruta serve

## test: lint, format check, strict type check, and the whole test suite
test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) ruta.db ruta.db-wal ruta.db-shm .ruta .env
