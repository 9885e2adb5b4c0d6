# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/smscenter.example.toml

.PHONY: venv install install-test run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	mkdir -p var
	$(BIN)/smscenter run -c $(CONFIG)

test: install-test
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m protocol.bench

clean:
	rm -rf $(VENV) var build *.egg-info
