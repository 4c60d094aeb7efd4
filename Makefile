PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-test demo scheduler clean

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Set up the embedded demo and serve it: SQLite, in-process tasks, and the
# scheduler process beside the server for the periodic sweeps.
run: install
	$(PY) manage.py migrate --no-input
	$(PY) manage.py load_demo
	$(PY) manage.py ensure_admin
	@echo "Serving OSCM on http://$(HOST):$(PORT)/ and the admin on /admin/ (Ctrl-C stops it)"
	@export OSCM_BASE_URL=$${OSCM_BASE_URL:-http://$(HOST):$(PORT)}; \
	$(PY) manage.py run_scheduler & scheduler=$$!; \
	trap 'kill $$scheduler 2>/dev/null' EXIT INT TERM; \
	$(PY) manage.py runserver $(HOST):$(PORT) --noreload

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) oscm.sqlite3 oscm.sqlite3-wal oscm.sqlite3-shm
