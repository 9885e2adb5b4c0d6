"""``smscenter ARGS`` in the test's own process, answered like ``subprocess.run``.

Why: each ``python -m smscenter`` costs an interpreter start and the imports (about a second
of CPU, several under load), and most CLI tests run a verb many times over with other inputs.
``smscenter.cli.main.main`` is the very code the console script runs: calling it here, with
stdout and stderr captured and argparse's usage errors turned back into their exit code,
checks the same output and exit codes. Each verb family keeps at least one test that starts a
real process (the console script's contract: exit code, stdout vs stderr, nothing else printed).

Paths in ARGS must be absolute (the subprocess helpers run in the repository's folder); the
environment is this process's (a test that needs another ``SUDO_USER`` runs a process); and
stdout/stderr are captured process-wide while the verb runs, so not while a ``Daemon`` runs in
the test's process (its log lines would be captured with the verb's output: run a process).
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys

import structlog


def smscenter_here(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """Run the verb in this thread (the verbs run their own event loop: call it from a
    thread when one is running, as ``run_cli_here`` does). ``stdin`` is what the verb reads
    (not a terminal, as with a pipe)."""
    from smscenter.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    # A verb configures logging from its config file (level, format): this process's tests
    # after it get the logging they had, not the verb's.
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's usage errors and --help
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdin = saved_stdin
        structlog.configure(**saved_structlog)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    return subprocess.CompletedProcess(["smscenter", *args], code, out.getvalue(), err.getvalue())
