# Every target builds .venv itself, from a bare Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=
NOX_ARGS ?=

.PHONY: install test lint demo run bench test-matrix test-install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# MariaDB tests need mysqlclient, which builds against the client headers: without them
	@# (a laptop) those tests are skipped; CI installs the headers first.
	if pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null; \
	then $(BIN)/python -m pip install --quiet -e '.[dev,mysql]'; \
	else echo "No MariaDB/MySQL client headers: MariaDB tests will be skipped."; fi
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

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

# Every supported Django × Python (noxfile.py), each in its own virtualenv under .nox/.
test-matrix: $(STAMP)
	$(BIN)/python -m pip install --quiet 'nox>=2025.2'
	$(BIN)/nox $(NOX_ARGS)

# The built wheel in a clean virtualenv with only user extras, a real worker on Redis and on
# RabbitMQ (tests/install/check.py). Uses the bare Python on purpose, not .venv.
test-install:
	$(PYTHON) tests/install/check.py

clean:
	rm -rf $(VENV) .var .nox build dist *.egg-info test-artifacts
