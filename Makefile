# Every target builds .venv itself, from a bare Python 3.10+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: install test lint demo run bench test-matrix clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
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
	cd bench && ../$(BIN)/python receiver_throughput.py
	cd bench && ../$(BIN)/python middleware_overhead.py --rounds 40
	cd bench && ../$(BIN)/python outbox_size.py --rounds 9

test-matrix: $(STAMP)
	$(BIN)/python -m pip install --quiet nox
	$(BIN)/nox

clean:
	rm -rf $(VENV) .var build *.egg-info test-artifacts
