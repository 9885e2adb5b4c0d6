"""The configuration file: one TOML file, validated once into immutable settings.

Why it looks like this: the daemon must never start half-configured, and an administrator must
see every mistake at once, each with the key that holds it (``account[1].throughput: Input
should be greater than 0``). So the file is parsed with ``tomllib``, validated by frozen
pydantic models that forbid unknown keys, then cross-checked (duplicates, references between
sections, files that must exist). Everything after that reads plain attributes.

Conventions:

- Durations are strings: a number and a unit, ``250ms``, ``30s``, ``5m``, ``2h``, ``1d``,
  ``1w``, ``6mo``, ``1y``; parts may be combined (``1h30m``). A month is 30 days and a year
  365 days: retention periods need a fixed length, not a calendar. Parsed to seconds (float).
- Relative paths (TLS files, the SQLite file in ``storage.url``, ``storage.keys``) resolve
  against the folder that holds the config file, so the daemon does not depend on its cwd.
- Lists are tuples and models are frozen: settings are shared by every task, nobody may
  change them under the others' feet.

Build settings with :func:`load_settings` (a file) or :func:`settings_from_dict` (tests);
both run the cross-checks. ``Settings.model_validate`` alone skips them.
"""

from __future__ import annotations

import difflib
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .checks import cross_check
from .sections import (
    Account,
    AccountRetention,
    Api,
    Connector,
    Http,
    Logging,
    OptOut,
    Queue,
    Retention,
    Route,
    Server,
    Settings,
    SourceTonNpi,
    Storage,
    Webhooks,
    Windows,
)
from .values import Address, Duration, RelPath, parse_duration

__all__ = [
    "Account",
    "AccountRetention",
    "Address",
    "ConfigError",
    "Connector",
    "Duration",
    "Api",
    "Http",
    "Logging",
    "Queue",
    "OptOut",
    "RelPath",
    "Retention",
    "Route",
    "Server",
    "Settings",
    "SourceTonNpi",
    "Storage",
    "Webhooks",
    "Windows",
    "load_or_report",
    "load_settings",
    "parse_duration",
    "settings_from_dict",
]


class ConfigError(Exception):
    """The configuration cannot be used. ``errors`` holds one line per problem:
    ``"<key path>: <problem>"``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = list(errors)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, for 'did you mean' hints."""
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


_LIST_SECTIONS = {"account", "connector", "route"}


def _message(err: Any) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(loc[:-1]), n=1)
        return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required key is missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "expected a table"
    if kind in ("list_type", "tuple_type", "frozen_set_type", "set_type"):
        if len(loc) == 1 and loc[0] in _LIST_SECTIONS:
            return f"expected an array of tables: write [[{loc[0]}]], not [{loc[0]}]"
        return "expected an array"
    msg = err["msg"]
    return msg.removeprefix("Value error, ")


def settings_from_dict(data: dict[str, Any], base_dir: str | Path | None = None) -> Settings:
    """Validate already-parsed TOML data. Relative paths resolve against ``base_dir``
    (default: the current directory). Raises :class:`ConfigError`."""
    context = {"base_dir": Path(base_dir) if base_dir is not None else Path.cwd()}
    try:
        settings = Settings.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(
            [f"{_format_loc(e['loc'])}: {_message(e)}" for e in exc.errors()]
        ) from None
    errors = cross_check(settings)
    if errors:
        raise ConfigError(errors)
    return settings


def load_settings(path: str | Path) -> Settings:
    """Read, parse and validate the config file. Raises :class:`ConfigError` listing every
    problem found (a TOML syntax error stops at the first, with its line)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start})"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return settings_from_dict(data, base_dir=path.resolve().parent)


def load_or_report(path: str | Path, *then: str) -> Settings | None:
    """For the command-line verbs: the settings, or None after printing every problem (and
    the ``then`` lines, e.g. what the verb did not do) on stderr."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        for line in (*exc.errors, *then):
            print(line, file=sys.stderr)
        return None
