# ses-relay: `make run` starts the sandbox relay, `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ses-relay serve --sandbox

# Most tests wait on processes, sockets and timers rather than the CPU: four at a time.
# Those that time a rate or a latency (marked solo) run afterwards, alone.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 4 -m "not solo"
	$(BIN)/python -m pytest -q -m solo

lint: $(STAMP)
	$(BIN)/ruff check relay feedback cli tests bench

clean:
	rm -rf $(VENV) ses-relay-data .pytest_cache
