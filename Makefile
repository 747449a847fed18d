# Two commands do all the set-up on a fresh clone:
#   make demo   create .venv if missing, install with the pinned constraints, run `quintet demo`
#   make test   same install, then the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
PY      = $(VENV)/bin/python
EXTRAS ?= all
STAMP   = $(VENV)/.installed-$(EXTRAS)
export NO_ALBUMENTATIONS_UPDATE=1 FLWR_TELEMETRY_ENABLED=0 RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 MPLBACKEND=Agg

.PHONY: install demo test test-integration faults lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade "pip>=23"
	$(PIP) install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/quintet demo --out demo_out

# The default suite: unit tests on data the tests make (integration tests are deselected).
test: install
	$(PY) -m pytest -q -n 2 -m "not integration" tests; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

# The fault suite alone (bad inputs, domain, leftovers, kill -9/resume); `make test` runs it too (it is under tests/).
faults: install
	$(PY) -m pytest -q -n 2 tests/faults

# Integration tests on ../shared/data (skip with a reason when it is absent).
test-integration: install
	$(PY) -m pytest -q -m integration tests; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo_out report_out .pytest_cache
