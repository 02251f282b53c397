# One-command set-up: `make app` starts the app, `make test` runs the tests.
# Both create .venv and install requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test setup lint bench clean

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

app: setup
	$(PY) -m streamlit run app.py

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m pip install --quiet ruff && $(VENV)/bin/ruff check ptq_core tests tools benchmarks app.py

bench: setup
	$(PY) benchmarks/rtn.py

clean:
	rm -rf $(VENV) .pytest_cache tests/artifacts
