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
import ipaddress
import re
import sys
import tomllib
import typing
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from .passwords import parse_hash

__all__ = [
    "Account",
    "AccountRetention",
    "Address",
    "ConfigError",
    "Connector",
    "Duration",
    "Logging",
    "OptOut",
    "RelPath",
    "Retention",
    "Route",
    "Server",
    "Settings",
    "SourceTonNpi",
    "Storage",
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


def _format_seconds(seconds: float) -> str:
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


def _base_dir(info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _rel_path(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip():
        raise PydanticCustomError("path_type", "expected a non-empty path string")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (_base_dir(info) / path).resolve()


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


def _c_octet(max_len: int, *, allow_empty: bool = True):
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


SystemId = Annotated[str, _c_octet(15, allow_empty=False)]


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


def _lower(value: Any) -> Any:
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


# --------------------------------------------------------------------------- sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Server(_Section):
    """``[server]``: the partner-facing SMPP listener."""

    listen: tuple[ListenAddress, ...] = ("127.0.0.1:2775",)  # type: ignore[assignment]
    tls_listen: tuple[ListenAddress, ...] = ()
    tls_cert: RelPath | None = None
    tls_key: RelPath | None = None
    system_id: SystemId = "SMSCENTER"
    max_connections: int = Field(1000, gt=0)
    bind_timeout: PositiveDuration = "10s"  # type: ignore[assignment]
    enquire_link_interval: PositiveDuration = "30s"  # type: ignore[assignment]
    inactivity_timeout: PositiveDuration = "120s"  # type: ignore[assignment]
    response_timeout: PositiveDuration = "10s"  # type: ignore[assignment]
    window: int = Field(64, gt=0)
    max_pdu_size: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    bad_pdu_budget: int = Field(10, ge=0)
    shutdown_grace: Duration = "5s"  # type: ignore[assignment]
    failed_bind_delay: Duration = "1s"  # type: ignore[assignment]


def _storage_url(value: Any, info: ValidationInfo) -> str:
    """Make a relative SQLite path absolute (against the config folder); leave others alone."""
    if not isinstance(value, str) or "://" not in value:
        raise PydanticCustomError(
            "url", 'expected a database URL, e.g. "sqlite:///var/smscenter.db"'
        )
    m = re.fullmatch(r"(sqlite(?:\+\w+)?):///([^?]*)(\?.*)?", value)
    if m is None:
        return value
    scheme, path, query = m[1], m[2], m[3] or ""
    if not path or path == ":memory:" or path.startswith("/"):
        return value
    return f"{scheme}:///{(_base_dir(info) / path).resolve()}{query}"


class Storage(_Section):
    """``[storage]``: where messages and encryption keys live."""

    url: Annotated[str, PlainValidator(_storage_url)] = "sqlite:///var/smscenter.db"
    keys: RelPath = "var/keys"  # type: ignore[assignment]


class Logging(_Section):
    """``[logging]``."""

    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"
    format: Literal["console", "json"] = "console"


class Retention(_Section):
    """``[retention]``: how long personal data is kept (defaults from the GDPR note)."""

    message_details: PositiveDuration = "6mo"  # type: ignore[assignment]
    contact_data: PositiveDuration = "26mo"  # type: ignore[assignment]
    lookups: PositiveDuration = "14mo"  # type: ignore[assignment]


def _window_rule(value: Any) -> str:
    from routing.windows import WindowRuleError, parse_rule

    if not isinstance(value, str):
        raise PydanticCustomError("window_rule", "must be a string like \"mon-sat 08:00-20:00, no holidays\"")
    try:
        parse_rule(value)
    except WindowRuleError as exc:
        raise PydanticCustomError("window_rule", "{problem}", {"problem": str(exc)}) from None
    return value


class Windows(_Section):
    """``[windows]``: when marketing may go out, in the recipient's local time.

    ``rules`` maps a country code (or "*" for the rest) to a rule such as
    ``"mon-sat 08:00-20:00, no holidays"`` (the seed rule, the default for FR and BE),
    ``"af2m-2026"`` (08:00-21:30) or ``"always"``.
    """

    rules: dict[str, Annotated[str, PlainValidator(_window_rule)]] = Field(default_factory=dict)
    alsace_moselle: bool = False  # Good Friday and 26 December closed for every +33 number
    default_zone: str = "UTC"  # for numbers whose country has no single time zone

    @field_validator("default_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError("zone", "{problem}", {"problem": f"unknown time zone {value!r}"}) from None
        return value


class Http(_Section):
    """``[http]``: the daemon's small web listener (unsubscribe links, /metrics, /healthz)."""

    listen: ListenAddress | None = None


class AccountRetention(_Section):
    """``[account.retention]``: per-account overrides; unset keys use ``[retention]``."""

    message_details: PositiveDuration | None = None
    contact_data: PositiveDuration | None = None
    lookups: PositiveDuration | None = None


def _password_hash(value: Any) -> str:
    if not isinstance(value, str):
        raise PydanticCustomError("password_type", "expected a string")
    if not value.startswith("scrypt$"):
        raise PydanticCustomError(
            "password_plaintext",
            "must be an scrypt hash made by `smscenter hash-password`, not a plaintext password",
        )
    try:
        parse_hash(value)
    except ValueError as exc:
        raise PydanticCustomError("password_hash", str(exc)) from None
    return value


def _country(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise PydanticCustomError(
            "country", 'expected an ISO 3166 two-letter country code, e.g. "FR"'
        )
    return value.upper()


def _keyword(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PydanticCustomError("keyword", "a keyword is a non-empty string")
    return value.strip()


class Account(_Section):
    """``[[account]]``: a partner that binds to us."""

    system_id: SystemId
    password: Annotated[str, PlainValidator(_password_hash)] = Field(repr=False)
    short_codes: tuple[ShortCode, ...] = ()
    sender_ids: tuple[SenderId, ...] = ()
    category: Category = "marketing"
    throughput: int = Field(100, gt=0)
    allowed_ips: tuple[CIDR, ...] = ("0.0.0.0/0", "::/0")  # type: ignore[assignment]
    max_binds: int = Field(4, gt=0)
    bind_types: frozenset[BindType] = ALL_BIND_TYPES  # type: ignore[assignment]
    window: int = Field(64, gt=0)
    default_country: Annotated[str, PlainValidator(_country)] = "FR"
    keywords: tuple[Annotated[str, PlainValidator(_keyword)], ...] = ()
    blacklist_alerts: bool = False
    outside_window: Literal["defer", "reject"] = "defer"
    per_part_receipts: bool = False
    retention: AccountRetention = Field(default_factory=dict)  # type: ignore[arg-type]

    def ip_allowed(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True if a peer address is inside ``allowed_ips`` (IPv4-mapped IPv6 counts as IPv4)."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.allowed_ips if net.version == addr.version)


class SourceTonNpi(_Section):
    """``[connector.source_ton_npi]``: [ton, npi] put on upstream submits, by sender kind."""

    alphanumeric: TonNpi = (5, 0)
    short_code: TonNpi = (3, 0)
    international: TonNpi = (1, 1)


def _connector_password(value: Any) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise PydanticCustomError("password_type", "expected a string")
    if not value.isascii() or len(value) > 8:
        raise PydanticCustomError(
            "password_long", "an SMPP 3.4 password is at most 8 ASCII characters"
        )
    return SecretStr(value)


def _connector_name(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
        raise PydanticCustomError(
            "connector_name",
            "a connector name is 1-64 letters, digits, '.', '_' or '-' (it keys stored receipts)",
        )
    return value


class Connector(_Section):
    """``[[connector]]``: an upstream SMSC we bind to as an ESME."""

    name: Annotated[str, PlainValidator(_connector_name)]
    host: str = Field(min_length=1)
    port: int = Field(gt=0, le=65535)
    system_id: SystemId
    password: Annotated[SecretStr, PlainValidator(_connector_password)]
    system_type: Annotated[str, _c_octet(12)] = ""
    bind: Literal["transmitter", "receiver", "transceiver", "pair"] = "transceiver"  # pair: TX + RX
    binds: int = Field(1, gt=0)
    window: int = Field(10, gt=0)
    throughput: int = Field(100, gt=0)
    address_range: Annotated[str, _c_octet(40)] = ""
    tls: bool = False
    tls_verify: bool = True
    tls_ca: RelPath | None = None
    message_id: Literal["decimal", "hex", "as-is", "hex-to-decimal", "decimal-to-hex"] = "as-is"
    source_ton_npi: SourceTonNpi = Field(default_factory=dict)  # type: ignore[arg-type]
    dest_ton_npi: TonNpi = (1, 1)
    enquire_link_interval: PositiveDuration = "30s"  # type: ignore[assignment]
    response_timeout: PositiveDuration = "10s"  # type: ignore[assignment]
    reconnect_min: PositiveDuration = "1s"  # type: ignore[assignment]
    reconnect_max: PositiveDuration = "60s"  # type: ignore[assignment]
    #: Short codes this connector carries MO for. With one bind (``binds = 1``) per short
    #: code, as aggregators often require, each bind's address_range is its short code and
    #: MO arriving on it is tagged with it even when destination_addr is empty.
    short_codes: tuple[ShortCode, ...] = ()


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    if not value:
        raise PydanticCustomError("empty", "must list at least one entry")
    return value


class Route(_Section):
    """``[[route]]``: MT destinations → connectors in failover order."""

    destinations: Annotated[tuple[Destination, ...], AfterValidator(_non_empty)]
    connectors: Annotated[tuple[str, ...], AfterValidator(_non_empty)]
    accounts: tuple[str, ...] | None = None
    category: Category | None = None


class OptOut(_Section):
    """``[optout]``: the shared STOP short code and the confirmation sent back."""

    short_code: ShortCode
    keywords: tuple[Annotated[str, PlainValidator(_keyword)], ...] | None = None
    confirmation: str = Field(
        "Votre désinscription est enregistrée, vous ne recevrez plus de SMS de cet expéditeur.",
        min_length=1,
    )
    unsubscribe_url: str | None = None
    #: Confirmation text per destination country (ISO code), e.g. ``{ BE = "…", CH = "…" }``;
    #: ``confirmation`` is used for the others.
    confirmations: dict[str, str] = Field(default_factory=dict)
    #: On a shared short code, a STOP goes to the accounts that sent marketing to the number
    #: through it within this period.
    lookback: PositiveDuration = "90d"  # type: ignore[assignment]
    #: Concatenated MO parts wait this long for the rest of their message.
    mo_reassembly_timeout: PositiveDuration = "30s"  # type: ignore[assignment]
    #: The STOP mention appended to marketing from alphanumeric senders.
    mention: str = "STOP au {short_code}"

    @field_validator("confirmation")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("confirmation", "must not be blank")
        return value

    @field_validator("mention")
    @classmethod
    def _mention_template(cls, value: str) -> str:
        from routing.mention import render_mention

        try:
            text = render_mention(value, "36180")
        except ValueError as exc:
            raise PydanticCustomError(
                "mention", "{problem}", {"problem": f"{exc} (the only field is {{short_code}})"}
            ) from None
        if not text.strip():
            raise PydanticCustomError("mention", "must not be blank")
        return value

    @field_validator("unsubscribe_url")
    @classmethod
    def _short_link(cls, value: str | None) -> str | None:
        from routing.mention import unsubscribe_link

        if value is None:
            return None
        if not re.match(r"https?://[^/]", value):
            raise PydanticCustomError("url", "must start with https:// (or http://) and a host")
        try:
            unsubscribe_link(value, "0" * 8)  # the daemon's tokens have 8 characters
        except ValueError as exc:
            raise PydanticCustomError("url", "{problem}", {"problem": str(exc)}) from None
        return value.rstrip("/")


class Settings(_Section):
    """The whole file. TOML keys ``[[account]]``, ``[[connector]]`` and ``[[route]]`` are the
    attributes ``accounts``, ``connectors`` and ``routes``."""

    server: Server = Field(default_factory=dict)  # type: ignore[arg-type]
    storage: Storage = Field(default_factory=dict)  # type: ignore[arg-type]
    logging: Logging = Field(default_factory=dict)  # type: ignore[arg-type]
    retention: Retention = Field(default_factory=dict)  # type: ignore[arg-type]
    accounts: tuple[Account, ...] = Field((), alias="account")
    connectors: tuple[Connector, ...] = Field((), alias="connector")
    routes: tuple[Route, ...] = Field((), alias="route")
    optout: OptOut | None = None
    windows: Windows = Field(default_factory=dict)  # type: ignore[arg-type]
    http: Http = Field(default_factory=dict)  # type: ignore[arg-type]

    @cached_property
    def accounts_by_id(self) -> dict[str, Account]:
        return {a.system_id: a for a in self.accounts}

    @cached_property
    def connectors_by_name(self) -> dict[str, Connector]:
        return {c.name: c for c in self.connectors}

    def account(self, system_id: str) -> Account | None:
        return self.accounts_by_id.get(system_id)

    def retention_for(self, account: Account) -> Retention:
        """The account's retention periods, its overrides applied over ``[retention]``."""
        overrides = {k: v for k, v in account.retention.model_dump().items() if v is not None}
        return self.retention.model_copy(update=overrides)


# --------------------------------------------------------------------------- cross-checks


def _cross_check(s: Settings) -> list[str]:
    """Rules that span keys or sections; returns ``"path: problem"`` lines."""
    errors: list[str] = []
    srv = s.server

    if not srv.listen and not srv.tls_listen:
        errors.append("server.listen: no address to listen on (set listen or tls_listen)")
    seen_addr: dict[Address, str] = {}
    for key in ("listen", "tls_listen"):
        for i, addr in enumerate(getattr(srv, key)):
            where = f"server.{key}[{i}]"
            if addr in seen_addr:
                errors.append(f"{where}: {addr} is already used by {seen_addr[addr]}")
            seen_addr.setdefault(addr, where)
    for key in ("tls_cert", "tls_key"):
        path = getattr(srv, key)
        if srv.tls_listen and path is None:
            errors.append(f"server.{key}: required when tls_listen is set")
        elif path is not None and not path.is_file():
            errors.append(f"server.{key}: file not found: {path}")
    if srv.inactivity_timeout <= srv.enquire_link_interval:
        errors.append(
            "server.inactivity_timeout: must be longer than enquire_link_interval "
            f"({_format_seconds(srv.enquire_link_interval)}), or live sessions get closed"
        )

    first_account: dict[str, int] = {}
    keyword_owner: dict[tuple[str, str], int] = {}
    for i, acc in enumerate(s.accounts):
        if acc.system_id in first_account:
            j = first_account[acc.system_id]
            errors.append(
                f"account[{i}].system_id: duplicate system_id {acc.system_id!r} "
                f"(already used by account[{j}])"
            )
        first_account.setdefault(acc.system_id, i)
        for k, word in enumerate(acc.keywords):
            if not acc.short_codes:
                errors.append(f"account[{i}].keywords[{k}]: keywords need short_codes to route MO")
                break
            for code in acc.short_codes:
                owner = keyword_owner.setdefault((code, word.casefold()), i)
                if owner != i:
                    errors.append(
                        f"account[{i}].keywords[{k}]: keyword {word!r} on short code {code} "
                        f"is already routed to account[{owner}]"
                    )
        if acc.category == "marketing" and acc.sender_ids and s.optout is None:
            errors.append(
                f"optout.short_code: required because account[{i}] ({acc.system_id}) sends "
                "marketing from alphanumeric sender IDs, whose STOP mention names it"
            )

    for key in s.windows.rules:
        if key != "*" and not re.fullmatch(r"[A-Z]{2}", key):
            errors.append(
                f"windows.rules.{key}: not a country: use an ISO code in capitals (\"FR\") or \"*\" for the rest"
            )

    first_connector: dict[str, int] = {}
    for i, con in enumerate(s.connectors):
        if con.name in first_connector:
            errors.append(
                f"connector[{i}].name: duplicate connector name {con.name!r} "
                f"(already used by connector[{first_connector[con.name]}])"
            )
        first_connector.setdefault(con.name, i)
        if con.reconnect_min > con.reconnect_max:
            errors.append(
                f"connector[{i}].reconnect_min: must not exceed reconnect_max "
                f"({_format_seconds(con.reconnect_max)})"
            )
        if con.tls_ca is not None and not con.tls_ca.is_file():
            errors.append(f"connector[{i}].tls_ca: file not found: {con.tls_ca}")

    for i, route in enumerate(s.routes):
        for k, name in enumerate(route.connectors):
            con = s.connectors_by_name.get(name)
            if con is None:
                errors.append(f"route[{i}].connectors[{k}]: no connector named {name!r}")
            elif con.bind == "receiver":
                errors.append(
                    f"route[{i}].connectors[{k}]: connector {name!r} binds as receiver "
                    "and cannot send"
                )
        for k, sid in enumerate(route.accounts or ()):
            if sid not in first_account:
                errors.append(f"route[{i}].accounts[{k}]: no account with system_id {sid!r}")
    return errors


# --------------------------------------------------------------------------- loading


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
    errors = _cross_check(settings)
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
