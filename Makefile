# Every target builds .venv itself, from a bare Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DOCS_STAMP := $(VENV)/.installed-docs
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`: one a core (`make test PYTEST_WORKERS=0` runs in one process).
PYTEST_WORKERS ?= auto
NOX_ARGS ?=

.PHONY: install test soak lint docs demo run bench screenshots test-matrix test-install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# MariaDB tests need mysqlclient, which builds against the client headers: without them
	@# (a laptop) those tests are skipped; CI installs the headers first. One pip run either way.
	if pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null; \
	then extras=dev,mysql; \
	else extras=dev; echo "No MariaDB/MySQL client headers: MariaDB tests will be skipped."; fi; \
	$(BIN)/python -m pip install --quiet -e ".[$$extras]"
	touch $(STAMP)

install: $(STAMP)

# The docs extra (mkdocs) on top of the dev install, for `make docs` only.
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $(DOCS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two sessions: dj-stripe's tests have settings of their own (tests/settings_djstripe.py), so
# that the rest of the suite neither migrates nor flushes its ~60 tables.
test: lint
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)
	$(BIN)/pytest --ds=tests.settings_djstripe tests/test_contrib_djstripe.py $(PYTEST_ARGS)

# The fault tests and the soak (tests marked soak): real workers and receivers through database
# faults, deploys, outages and a broker that goes away. Several minutes; .ci/run runs them.
soak: $(STAMP)
	$(BIN)/pytest -m soak $(PYTEST_ARGS)

# The documentation site from docs/ (mkdocs.yml) into site/. --strict: a link to a page or an
# anchor that does not exist, or a page left out of the nav, fails the build.
docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

demo: $(STAMP)
	$(BIN)/python -m testproject.demo

run: $(STAMP)
	$(BIN)/python -m testproject.run

bench: $(STAMP)
	cd bench && ../$(BIN)/python track_cost.py --rounds 40
	cd bench && ../$(BIN)/python delivery.py efficiency --events 3000 --workers 2
	cd bench && ../$(BIN)/python delivery.py efficiency --events 3000 --workers 4
	cd bench && ../$(BIN)/python delivery.py capacity --events 3000 --workers 2 --receivers 2
	cd bench && ../$(BIN)/python delivery.py lag --rate 50 --seconds 20 --workers 2
	cd bench && ../$(BIN)/python delivery.py wan --events 1500 --workers 2 --rtt 0.04 --jitter 0.01 --clock-offset -0.3
	cd bench && ../$(BIN)/python delivery.py recovery --events 3000 --outage 120 --workers 2
	cd bench && ../$(BIN)/python receiver_throughput.py
	cd bench && ../$(BIN)/python middleware_overhead.py --rounds 40
	cd bench && ../$(BIN)/python outbox_size.py --rounds 9
	cd bench && ../$(BIN)/python attempt_log.py

# The browser tests again, saving their screenshots into docs/images/ (the docs show them).
screenshots: $(STAMP)
	SUPALYTICS_SCREENSHOTS=docs $(BIN)/pytest -p no:randomly -m browser tests/test_browser.py

# Every supported Django × Python (noxfile.py), each in its own virtualenv under .nox/.
test-matrix: $(STAMP)
	$(BIN)/python -m pip install --quiet 'nox>=2025.2'
	$(BIN)/nox $(NOX_ARGS)

# The built wheel in a clean virtualenv with only user extras, a real worker on Redis and on
# RabbitMQ (tests/install/check.py). Uses the bare Python on purpose, not .venv.
test-install:
	$(PYTHON) tests/install/check.py

clean:
	rm -rf $(VENV) .var .nox build dist *.egg-info test-artifacts site
