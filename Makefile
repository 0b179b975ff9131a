# Everything the project needs is installed by these targets; `make demo` and
# `make test` work on a fresh clone with only python3 (3.11+) on the PATH.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean systemd-analyze

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lead-poller demo

# The unit tests run `systemd-analyze verify` on every unit in systemd/. CI runs as root on Debian,
# where the package is installed if missing; elsewhere this says what to install.
systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing systemd (for systemd-analyze)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; \
	  else \
	    echo "make test needs systemd-analyze: install the systemd package (e.g. sudo apt-get install systemd)" >&2; exit 1; \
	  fi; }

test: $(STAMP) systemd-analyze
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
