# The README's commands: `make run`, `make send` (from another terminal) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= conf/smscenter.example.toml
SIM_LISTEN ?= 127.0.0.1:2776
# The demo upstream delivers everything, so a first `make send` ends DELIVRD; e.g.
# SIM_ARGS="--outcomes DELIVRD=90,UNDELIV=8,REJECTD=2 --delay 0.5s-3s" for a realistic mix.
SIM_ARGS ?= --outcomes DELIVRD=100
# `make send`: one message to the server `make run` started, as the example config's demo account.
TO   ?= +33612345678
TEXT ?= hello
SEND_ARGS ?= --host 127.0.0.1 --port 2775 --system-id acme --password secret --from ACME --category ALERT

.PHONY: venv install install-test run send test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installed once (editable: code changes need no reinstall), again only when pyproject.toml
# (dependencies, entry points) changes: a second `make run` starts at once.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# The server, with the demo upstream SMSC (simulate-smsc) beside it on $(SIM_LISTEN), where the
# example config's connector binds; the simulator is stopped when the server exits.
run: install
	mkdir -p var
	@echo "make run: smscenter on $(CONFIG), the demo upstream on $(SIM_LISTEN)."
	@echo "  Its 'ready' line says where it listens (listen: SMPP, http: HTTP); Ctrl-C stops both."
	@echo "  Then, in another terminal: make send TO=+33612345678 TEXT=hello"
	$(BIN)/smscenter simulate-smsc --listen $(SIM_LISTEN) $(SIM_ARGS) & sim=$$!; \
	trap 'kill $$sim 2>/dev/null; wait $$sim 2>/dev/null' EXIT INT TERM; \
	$(BIN)/smscenter run -c $(CONFIG)

# One message through the running server, waiting for its receipt (smscenter send --help).
send: install
	$(BIN)/smscenter send $(SEND_ARGS) --to "$(TO)" --text "$(TEXT)"

# Two workers (pytest-xdist), each test file on one of them (module fixtures and a file's order
# kept): the suite waits on sockets, timers and child processes as much as it computes. Each
# worker has its own tmp_path folders and PostgreSQL cluster; every port is picked free.
# One process: make test PYTEST_ARGS=
PYTEST_ARGS ?= -n 2 --dist loadfile
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
