# poise: two commands on a fresh machine — `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/python -m pip
# torch is installed first, pinned, so the extras never pull a different build.
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: demo test test-all bench lint install system-deps constraints clean

# constraints.txt holds the versions the suite was last run with: pip resolves every extra at once
# without backtracking (torchattacks pins requests 2.25, which rules out newer MLflow and urllib3).
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[all,test]' -c constraints.txt
	touch $@

# refresh constraints.txt from the installed environment (after changing a dependency)
constraints: install
	$(PIP) freeze --exclude-editable | grep -viE '^(poise|torch|torchvision|triton|nvidia-|cuda-)' > constraints.txt

install: $(VENV)/.installed

# system packages the tests drive (a headless browser, a PostgreSQL server), installed when missing
system-deps:
	.ci/system-deps

demo: install
	$(VENV)/bin/poise tour --quick

test: install system-deps
	$(PY) -m pytest -q -n 2 --dist loadgroup $(PYTEST_ARGS)

test-all: install system-deps
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "" $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf .poise poise-report .pytest_cache .hypothesis
