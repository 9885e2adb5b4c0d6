"""Logging: structlog to stderr (console or JSON), with personal data kept out.

Why here and not at each call site: the GDPR note forbids message text and secrets in logs and
asks for minimal personal data, and one forgotten call site is enough to leak. So every event
(ours and the stdlib's) goes through two processors: one drops secrets and message text, one
masks phone numbers in well-known keys. Call sites must pass numbers as key-values
(``log.info("submit", destination_addr=addr)``), never formatted into the event text.

Under systemd, stderr goes to the journal; JSON suits log shippers, console suits humans.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

__all__ = ["NUMBER_KEYS", "REDACTED_KEYS", "configure_logging", "mask_number", "scrub"]

NUMBER_KEYS = frozenset(
    {
        "source_addr",
        "destination_addr",
        "dest_addr",
        "msisdn",
        "msisdns",
        "to",
        "from",
        "from_",
        "number",
        "numbers",
        "phone",
        "recipient",
        "recipients",
        "sender_number",
    }
)
"""Keys whose values are phone numbers (or lists of them): masked."""

SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "token", "api_key", "authorization", "private_key"}
)
TEXT_KEYS = frozenset({"short_message", "text", "message_payload", "body", "message_text"})
REDACTED_KEYS = SECRET_KEYS | TEXT_KEYS
"""Keys whose values never reach the log: secrets (``<redacted>``) and message text (length)."""

_MAX_DEPTH = 4
_NON_DIGIT = re.compile(r"\D")


def mask_number(value: Any) -> str:
    """Mask a phone number, keeping the first 3 and last 2 digits.

    ``"+33612345678"`` → ``"+336****78"``. The ``+`` is kept; the hidden part is always four
    stars so the length does not leak. Values that are not phone numbers are left readable:
    5-digit short codes and shorter, and alphanumeric sender IDs (``"ACME"``). An e-mail
    address keeps its first character and its domain.
    """
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    text = str(value)
    if "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}***@{domain}"
    digits = _NON_DIGIT.sub("", text)
    if len(digits) <= 5 or any(c.isalpha() for c in text):
        return text
    plus = "+" if text.lstrip().startswith("+") else ""
    return f"{plus}{digits[:3]}****{digits[-2:]}"


def _redact(key: str, value: Any) -> Any:
    if key in SECRET_KEYS or value is None:
        return "<redacted>"
    try:
        return f"<redacted: {len(value)} chars>"
    except TypeError:
        return "<redacted>"


def _scrub_value(key: str, value: Any, depth: int) -> Any:
    if key in REDACTED_KEYS:
        return _redact(key, value)
    if key in NUMBER_KEYS and value is not None:
        if isinstance(value, list | tuple | set | frozenset):
            return [mask_number(v) for v in value]
        return mask_number(value)
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {k: _scrub_value(str(k), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_scrub_value("", v, depth + 1) for v in value]
    return value


def scrub(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact secrets and message text, mask phone numbers (also in
    nested dicts and lists)."""
    return {k: _scrub_value(k, v, 0) for k, v in event_dict.items()}


class _Stderr:
    """The process's stderr *as it is at each write*: a logger holding the file object itself
    would keep writing to one that was replaced and closed since (a test's capture; a CLI verb
    run in-process by tests/cli_here.py), and fail with "I/O operation on closed file"."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


STDERR = _Stderr()


def configure_logging(level: str = "info", fmt: str = "console", stream: Any = STDERR) -> None:
    """Send structlog and stdlib logging to stderr (or ``stream``: a test's buffer) at
    ``level``, rendered as ``fmt`` (``"console"`` or ``"json"``). Safe to call again (tests,
    reloads)."""
    if fmt not in ("console", "json"):
        raise ValueError(f"unknown log format {fmt!r} (console or json)")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub,
    ]
    renderer: Any
    if fmt == "json":
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())

    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        # Not cached: a reconfiguration (tests, capture_logs) must reach existing loggers.
        cache_logger_on_first_use=False,
    )

    # Third-party and asyncio messages get the same format and the same scrubbing.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_smscenter", False)]:
        root.removeHandler(old)
    handler._smscenter = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    # Alembic narrates every start at info (plugins, "Context impl SQLiteImpl"): only its
    # warnings are worth an administrator's log; the daemon logs what it upgraded itself.
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
