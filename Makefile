# Every target sets itself up: a fresh clone needs only python3 (3.11+).
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint browser

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

## Run the demo pipeline (embedded SQLite movie database -> output/*.csv, session log under logs/)
demo: $(STAMP)
	$(VENV)/bin/osiris-dagster demo

## Debian's chromium + chromium-driver, for the UI test in a real browser (installed when missing)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver; }

## Run the whole test suite (needs MariaDB on 127.0.0.1:3306 and PostgreSQL on 127.0.0.1:5432)
test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
