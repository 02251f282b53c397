# One-command set-up: `make app` starts the app, `make test` runs the tests.
# Both create .venv and install requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test setup lint check bench clean chromium

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

app: setup
	$(PY) -m streamlit run app.py

test: setup chromium
	$(PY) -m pytest -q

# The browser test drives Debian's chromium (playwright cannot download browsers here).
# Installed with apt-get when missing: as root, or through password-less sudo; else the test says why it skips.
NOCHROMIUM := chromium could not be installed: tests/ui/test_browser.py will be skipped
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || echo "$(NOCHROMIUM)"; \
	  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
	    { sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || echo "$(NOCHROMIUM)"; \
	  else echo "$(NOCHROMIUM) (apt-get needs root)"; fi; }

SOURCES := ptq_core ptq_ui pages tests tools benchmarks app.py

# ruff, then the import contracts of pyproject.toml ([tool.importlinter]: the core's layers, no app import in the core)
lint: setup
	$(PY) -m pip install --quiet ruff import-linter
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/lint-imports --no-logo

# everything a merge must pass besides the tests: lint (with the import contracts) and the formatting
check: lint
	$(VENV)/bin/ruff format --check $(SOURCES)

bench: setup
	$(PY) benchmarks/rtn.py

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
