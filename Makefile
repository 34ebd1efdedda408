# Set-up is part of every target: `make test` and `make demo` create .venv and
# install the pinned dependencies (requirements.lock) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-core test-mp demo bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

# The shared core's tests on the real MicroPython binary only.
test-mp: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/core/test_on_micropython.py

demo: $(STAMP)
	$(VENV)/bin/amiko demo

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
