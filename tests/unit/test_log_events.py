"""The README's "Log events" table is the whole list of what the daemon and the CLI log.

Administrators write alerts and log-shipper rules against event names, so a name must not
change or appear unannounced: this test walks the source with ``ast``, collects every event
logged (by a structlog or stdlib logger, or through the helpers that log a name they are
given: the aggregated logs of ``floodlog``), and compares them with the table — both ways,
with their levels, and with every field passed at a call site.

It also checks what the scrubber of ``smscenter/app/logs.py`` cannot: that an event name is a
literal in snake_case (never a formatted text, which could carry a number), and that a value
read from a number or a message text is logged only under a key the scrubber masks.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from smscenter.app.logs import NUMBER_KEYS, REDACTED_KEYS

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("smscenter", "storage", "routing", "protocol")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")


@dataclass(frozen=True)
class Forwarder:
    """A helper that logs an event name it is given (argument ``index``)."""

    index: int
    levels: frozenset[str]  # when the call does not say ``level=``
    fields: frozenset[str]  # the fields it adds itself
    controls: frozenset[str] = frozenset()  # its keyword arguments that are not fields


_AGGREGATED = frozenset({"count", "interval"})
_ERROR_LOG = frozenset({"error", "where", "repeated"})
_EVERY_OPTIONS = frozenset({"name", "at_once", "as_long_as", "with_traceback", "log_interval"})
FORWARDERS = {
    # floodlog.Tally(logger, event, timers, ..., level="warning"): one line per label set and interval
    "Tally": Forwarder(1, frozenset({"warning"}), _AGGREGATED, frozenset({"interval", "max_keys", "level"})),
    # floodlog.ErrorLog.exception(event, exc): the traceback once per cause (error), else a warning
    "exception": Forwarder(0, frozenset({"error", "warning"}), _ERROR_LOG, frozenset({"with_traceback"})),
    # dispatch.Dispatcher._note(event, level="info", **labels): aggregated like Tally
    "_note": Forwarder(0, frozenset({"info"}), _AGGREGATED, frozenset({"level"})),
    # pipeline.Pipeline._storage_failed(event, bind, exc): ErrorLog.exception with the account
    "_storage_failed": Forwarder(0, frozenset({"error", "warning"}), _ERROR_LOG | {"account"}),
    # timers.every(interval, fn, timers, failed, ...): a failure of fn, ErrorLog.exception(failed, exc)
    "every": Forwarder(3, frozenset({"error", "warning"}), _ERROR_LOG, _EVERY_OPTIONS),
    "Every": Forwarder(3, frozenset({"error", "warning"}), _ERROR_LOG, _EVERY_OPTIONS),
}
"""Where the event name of a log call may be a variable: these, and the classes they live in."""
FORWARDING_SCOPES = {"Tally", "ErrorLog", "_note", "_storage_failed", "Every", "every"}

# Names a value is read from that hold a phone number or a message text.
SENSITIVE_SOURCES = NUMBER_KEYS | REDACTED_KEYS | {"e164", "dest", "source", "payload"}
# Calls that make such a value safe to log.
SAFE_CALLS = {"mask", "mask_number", "len", "hash_number", "type"}


@dataclass
class Event:
    levels: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    where: list[str] = field(default_factory=list)


@dataclass
class Scan:
    events: dict[str, Event] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _loggers(tree: ast.Module) -> set[str]:
    """Module-level names bound to ``structlog.get_logger(...)`` or ``logging.getLogger(...)``."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Attribute) and func.attr in ("get_logger", "getLogger"):
                names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _callee(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _names_read(node: ast.AST) -> set[str]:
    """The names and attributes a value is read from, except inside a masking call."""
    if isinstance(node, ast.Call) and _callee(node) in SAFE_CALLS:
        return set()
    found = set()
    if isinstance(node, ast.Name):
        found.add(node.id)
    elif isinstance(node, ast.Attribute):
        found.add(node.attr)
    for child in ast.iter_child_nodes(node):
        found |= _names_read(child)
    return found


class _Walker(ast.NodeVisitor):
    def __init__(self, path: str, loggers: set[str], scan: Scan) -> None:
        self.path, self.loggers, self.scan = path, loggers, scan
        self.scopes: list[str] = []

    def _scoped(self, node) -> None:
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _scoped

    def visit_Call(self, call: ast.Call) -> None:
        self.generic_visit(call)
        func, name = call.func, _callee(call)
        if (isinstance(func, ast.Attribute) and func.attr in LEVELS and isinstance(func.value, ast.Name)
                and func.value.id in self.loggers):
            level = "error" if func.attr == "exception" else func.attr
            self._event(call, 0, {level}, frozenset(), frozenset({"exc_info", "stack_info"}))
        elif name in FORWARDERS:
            fwd = FORWARDERS[name]
            if len(call.args) <= fwd.index:
                return  # not this helper (``fut.exception()``)
            levels = set(fwd.levels)
            for kw in call.keywords:
                if kw.arg == "level" and isinstance(kw.value, ast.Constant):
                    levels = {kw.value.value}
                if kw.arg == "with_traceback" and isinstance(kw.value, ast.Constant) and not kw.value.value:
                    levels = {"warning"}
            self._event(call, fwd.index, levels, fwd.fields, fwd.controls)

    def _event(self, call: ast.Call, index: int, levels: set[str], added: frozenset[str],
               controls: frozenset[str]) -> None:
        where = f"{self.path}:{call.lineno}"
        arg = call.args[index] if len(call.args) > index else None
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            if not FORWARDING_SCOPES & set(self.scopes):
                self.scan.problems.append(f"{where}: the event name is not a literal")
            return
        name = arg.value
        if not SNAKE.fullmatch(name):
            self.scan.problems.append(f"{where}: event {name!r} is not a snake_case name")
        fields = set(added)
        for kw in call.keywords:
            if kw.arg is None or kw.arg in controls:
                continue  # **splat: documented in words
            fields.add(kw.arg)
            leaked = _names_read(kw.value) & SENSITIVE_SOURCES
            if leaked and kw.arg not in NUMBER_KEYS | REDACTED_KEYS:
                self.scan.problems.append(
                    f"{where}: {name} logs {sorted(leaked)} as {kw.arg!r}, which the scrubber does not mask")
        event = self.scan.events.setdefault(name, Event())
        event.levels |= levels
        event.fields |= fields
        event.where.append(where)


def scan_sources() -> Scan:
    scan = Scan()
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if "/migrations/" in rel or rel.startswith("smscenter/bench/"):
                continue  # Alembic scripts log nothing of ours; benchmarks are not the daemon
            tree = ast.parse(path.read_text(), rel)
            _Walker(rel, _loggers(tree), scan).visit(tree)
    return scan


def readme_table() -> dict[str, tuple[set[str], set[str]]]:
    """event -> (levels, fields) from the README's "Log events" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Log events\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        event = cells[0].strip("`")
        assert event not in rows, f"README lists {event} twice"
        levels = {w for w in re.findall(r"[a-z]+", cells[1])}
        rows[event] = (levels, set(re.findall(r"`([a-z_]+)`", cells[2])))
    return rows


def test_the_walker_finds_what_it_must():
    """Guard against a walker that finds nothing: a few events of each kind of call site."""
    events = scan_sources().events
    assert {"ready", "bound", "upstream_bound"} <= events.keys()  # log.info(...)
    assert {"connection_refused", "bind_refused"} <= events.keys()  # Tally(log, ...)
    assert "submit_refused" in events and events["submit_refused"].levels == {"info"}  # _note(...)
    assert "queue_blocked_lines_full" in events and events["queue_blocked_lines_full"].levels == {"warning"}
    assert {"query_failed", "connection_log_write_failed"} <= events.keys()  # ErrorLog
    assert events["connection_log_write_failed"].levels == {"warning"}  # with_traceback=False


def test_event_names_are_literal_snake_case_and_numbers_stay_masked():
    assert scan_sources().problems == []


def test_every_event_is_in_the_readme_table_and_nothing_else():
    events, table = scan_sources().events, readme_table()
    missing = {name: e.where[0] for name, e in events.items() if name not in table}
    assert missing == {}, "logged but not in the README's Log events table"
    assert sorted(table.keys() - events.keys()) == [], "in the README's table but logged nowhere"


def test_the_readme_gives_each_event_its_levels_and_fields():
    events, table = scan_sources().events, readme_table()
    wrong = {}
    for name, event in events.items():
        levels, fields = table.get(name, (set(), set()))
        if levels != event.levels or not event.fields <= fields:
            wrong[name] = (sorted(event.levels), sorted(event.fields - fields))
    assert wrong == {}, "event: (levels in the code, fields missing from the README)"
