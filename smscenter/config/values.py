"""Value types of the config file: durations, paths, addresses, SMPP fields.

Each is an ``Annotated`` type with the validator that turns what TOML gives into what the
daemon reads (seconds as float, resolved ``Path``, ``Address``…), failing with a message an
administrator can act on.
"""

from __future__ import annotations

import ipaddress
import re
import typing
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import PlainValidator, ValidationInfo
from pydantic_core import PydanticCustomError

# --------------------------------------------------------------------------- durations

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "mo": 30 * 86400.0,  # a month is 30 days
    "y": 365 * 86400.0,  # a year is 365 days
}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|mo|s|m|h|d|w|y))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|mo|s|m|h|d|w|y)")


def parse_duration(text: str) -> float:
    """``"30s"`` → 30.0, ``"5m"`` → 300.0, ``"6mo"`` → 15552000.0, ``"1h30m"`` → 5400.0.

    Units: ms, s, m (minutes), h, d, w, mo (30 days), y (365 days). Raises ``ValueError``.
    """
    if not isinstance(text, str):
        raise ValueError(f'expected a duration string such as "30s", got {type(text).__name__}')
    compact = re.sub(r"\s+", "", text).lower()
    if not _DURATION.fullmatch(compact):
        raise ValueError(
            f"bad duration {text!r}: expected a number and a unit "
            '(ms, s, m, h, d, w, mo, y), e.g. "30s", "5m", "6mo"'
        )
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(compact))


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def _duration(value: Any) -> float:
    if isinstance(value, bool) or isinstance(value, int | float):
        raise PydanticCustomError(
            "duration_type",
            'expected a duration string with a unit, e.g. "{example}s", not a bare number',
            {"example": value},
        )
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("duration", str(exc)) from None


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise PydanticCustomError("duration_positive", "duration must be longer than 0s")
    return seconds


Duration = Annotated[float, PlainValidator(_duration)]
"""Seconds, written as a duration string; zero allowed."""
PositiveDuration = Annotated[float, PlainValidator(_positive_duration)]


# --------------------------------------------------------------------------- small types


def config_folder(info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _rel_path(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise PydanticCustomError("path_type", "expected a non-empty path string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (config_folder(info) / path).resolve()


RelPath = Annotated[Path, PlainValidator(_rel_path)]
"""A path; relative ones resolve against the config file's folder."""


class Address(NamedTuple):
    """A listen address. Port 0 asks the OS for a free port (tests)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_ADDRESS = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d{1,5})"  # [ipv6]:port
    r"|(?P<host>[^\s:\[\]]+):(?P<port>\d{1,5})"  # host-or-ipv4:port
)


def _address(value: Any) -> Address:
    if isinstance(value, Address):
        return value
    m = _ADDRESS.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise PydanticCustomError(
            "address", 'expected "host:port", e.g. "127.0.0.1:2775" or "[::1]:2775"'
        )
    host = m["v6"] or m["host"]
    port = int(m["p6"] or m["port"])
    if port > 65535:
        raise PydanticCustomError("address", "port must be between 0 and 65535")
    return Address(host, port)


ListenAddress = Annotated[Address, PlainValidator(_address)]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _network(value: Any) -> Network:
    if not isinstance(value, str):
        raise PydanticCustomError("network_type", 'expected a CIDR string, e.g. "192.0.2.0/24"')
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise PydanticCustomError("network", "bad CIDR: {reason}", {"reason": str(exc)}) from None


CIDR = Annotated[Network, PlainValidator(_network)]


def c_octet(max_len: int, *, allow_empty: bool = True):
    """An SMPP C-Octet string field: ASCII, at most ``max_len`` characters."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "Input should be a valid string")
        if not value and not allow_empty:
            raise PydanticCustomError("string_empty", "must not be empty")
        if not value.isascii() or not value.isprintable():
            raise PydanticCustomError("string_ascii", "must be printable ASCII")
        if len(value) > max_len:
            raise PydanticCustomError(
                "string_long", "at most {max} characters in SMPP 3.4", {"max": max_len}
            )
        return value

    return PlainValidator(check)


SystemId = Annotated[str, c_octet(15, allow_empty=False)]


def _short_code(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d{5}", value):
        raise PydanticCustomError(
            "short_code", 'a short code is exactly 5 digits, written as a string: "36180"'
        )
    return value


ShortCode = Annotated[str, PlainValidator(_short_code)]


def _sender_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("sender_id", "a sender ID is a non-empty string")
    if not value.isascii() or not value.isprintable():
        raise PydanticCustomError("sender_id", "a sender ID must be printable ASCII")
    if len(value) > 11:
        raise PydanticCustomError(
            "sender_id", "an alphanumeric sender ID has at most 11 characters"
        )
    return value


SenderId = Annotated[str, PlainValidator(_sender_id)]


def _destination(value: Any) -> str:
    if value == "*" or (isinstance(value, str) and re.fullmatch(r"\+\d{1,15}", value)):
        return value
    raise PydanticCustomError(
        "destination", 'a destination is "*" or an E.164 prefix such as "+33" ("+" and digits)'
    )


Destination = Annotated[str, PlainValidator(_destination)]


def lowercased(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


Category = Literal["marketing", "alert"]
BindType = Literal["transmitter", "receiver", "transceiver"]
ALL_BIND_TYPES: frozenset[str] = frozenset(typing.get_args(BindType))

# SMPP 3.4 §5.2.5 / §5.2.6
_TONS = frozenset(range(7))
_NPIS = frozenset({0, 1, 3, 4, 6, 8, 9, 10, 14, 18})


def _ton_npi(value: Any) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        raise PydanticCustomError("ton_npi", "expected [ton, npi], two integers, e.g. [5, 0]")
    ton, npi = value
    if ton not in _TONS:
        raise PydanticCustomError("ton_npi", "TON must be 0..6 (SMPP 3.4 §5.2.5)")
    if npi not in _NPIS:
        raise PydanticCustomError(
            "ton_npi", "NPI must be one of 0, 1, 3, 4, 6, 8, 9, 10, 14, 18 (SMPP 3.4 §5.2.6)"
        )
    return (ton, npi)


TonNpi = Annotated[tuple[int, int], PlainValidator(_ton_npi)]


def _webhook_url(value: Any) -> str:
    """An https URL, or http to a loopback address (a receiver on the same host): a
    partner's receipts and MO never cross a network in clear."""
    if not isinstance(value, str):
        raise PydanticCustomError("webhook_url", "expected a URL string")
    try:
        url = urllib.parse.urlsplit(value.strip())
        host = url.hostname or ""
        url.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise PydanticCustomError("webhook_url", "{problem}", {"problem": f"not a URL: {exc}"}) from None
    if url.scheme == "https" and host:
        return value.strip()
    if url.scheme == "http" and _is_loopback(host):
        return value.strip()
    raise PydanticCustomError(
        "webhook_url", "must be an https:// URL with a host (http:// only to a loopback address, e.g. 127.0.0.1)"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


WebhookUrl = Annotated[str, PlainValidator(_webhook_url)]

