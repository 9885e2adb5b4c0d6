# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/smscenter.example.toml
SIM_LISTEN ?= 127.0.0.1:2776

.PHONY: venv install install-test run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

# The server, with the demo upstream SMSC (simulate-smsc) beside it on $(SIM_LISTEN), where the
# example config's connector binds; the simulator is stopped when the server exits.
run: install
	mkdir -p var
	$(BIN)/smscenter simulate-smsc --listen $(SIM_LISTEN) & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null' EXIT INT TERM; \
	$(BIN)/smscenter run -c $(CONFIG)

test: install-test
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m protocol.bench

# Session overhead: our partner server vs a minimal sink, both driven by smpp34 clients
# (python -m smscenter.bench.sessions --help; e.g. make bench-sessions BENCH_ARGS="--messages 20000").
.PHONY: bench-sessions
bench-sessions: install
	$(BIN)/python -m smscenter.bench.sessions $(BENCH_ARGS)

# The durable MT path end to end: smpp34 partners -> smscenter daemon (SQLite) -> upstream sink
# with receipts, beside partners -> sink directly (python -m smscenter.bench.mt --help;
# e.g. make bench-mt BENCH_MT_ARGS="--messages 5000").
.PHONY: bench-mt
bench-mt: install
	$(BIN)/python -m smscenter.bench.mt $(BENCH_MT_ARGS)

# The daemon's memory with a deep MT queue behind a closed connector, then drained
# (python -m smscenter.bench.queue --help; e.g. make bench-queue BENCH_QUEUE_ARGS="--messages 1000000").
.PHONY: bench-queue
bench-queue: install
	$(BIN)/python -m smscenter.bench.queue $(BENCH_QUEUE_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
