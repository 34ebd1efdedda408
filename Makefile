# Set-up is part of every target: `make test` and `make demo` create .venv and
# install the pinned dependencies (requirements.lock) on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

NODE_STAMP := node_modules/.installed

.PHONY: test test-mp demo bench clean

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The MicroPython WebAssembly port (tests/wallet/test_heap32.py: a 32-bit MicroPython), pinned in
# package-lock.json, into ./node_modules; like .venv, installed only when missing or the lock changed.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

# The cashier page's browser tests drive Debian's chromium; CI runs as root on a clean clone.
test: $(STAMP) $(NODE_STAMP)
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| echo "chromium missing: install it (apt-get install chromium) for tests/bridge" >&2
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

# The shared core's tests on the real MicroPython binary only.
test-mp: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/core/test_on_micropython.py

demo: $(STAMP)
	$(VENV)/bin/amiko demo

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) node_modules build *.egg-info .pytest_cache .hypothesis
