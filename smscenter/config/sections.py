"""The config file's sections as frozen pydantic models that forbid unknown keys."""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from smscenter.runtime.passwords import parse_hash
from .values import (
    ALL_BIND_TYPES,
    CIDR,
    BindType,
    Category,
    Destination,
    Duration,
    ListenAddress,
    PositiveDuration,
    RelPath,
    SenderId,
    ShortCode,
    SystemId,
    TonNpi,
    WebhookUrl,
    c_octet,
    config_folder,
    lowercased,
)


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
    # Budgets (README "Budgets"): what one session may cost the others.
    pdus_per_turn: int = Field(32, gt=0, le=100_000)  # PDUs read from one session before others get a turn
    enquire_link_rate: float = Field(2.0, gt=0)  # enquire_link per second a session may send (sustained)
    enquire_link_burst: int = Field(10, gt=0)  # ... and in a burst
    max_storage_reads: int = Field(8, gt=0, le=10_000)  # query_sm / cancel_sm at the database at once (all sessions)
    flood_refusals: int = Field(1000, gt=0)  # refused requests + excess enquire_link per flood_interval before unbind
    flood_interval: PositiveDuration = "10s"  # type: ignore[assignment]
    refusal_log_interval: PositiveDuration = "10s"  # type: ignore[assignment]  # one log line per (account, reason) per interval
    # Connection slots per source IP (see smscenter/smpp/admission.py).
    max_connections_per_ip: int = Field(100, gt=0)
    max_unbound_per_ip: int = Field(10, gt=0)
    # Login throttling, for binds and the API alike (see smscenter/runtime/loginguard.py).
    max_failed_bind_delay: Duration = "30s"  # type: ignore[assignment]
    failed_bind_half_life: PositiveDuration = "5m"  # type: ignore[assignment]
    bind_guesses_per_minute: int = Field(5, gt=0, le=1000)
    bind_checks_per_ip: int = Field(4, gt=0)
    bind_checks: int = Field(32, gt=0)
    bind_check_threads: int = Field(2, gt=0, le=64)
    #: The control socket ``smscenter status`` and ``reload`` talk to (``control.py``);
    #: default: ``smscenter.sock`` in the state directory (see ``control_socket_path``).
    control_socket: RelPath | None = None
    #: The group given to the control socket (mode 0660); default: the daemon's own.
    control_group: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("max_unbound_per_ip")
    @classmethod
    def _unbound_within_per_ip(cls, value: int, info: ValidationInfo) -> int:
        per_ip = info.data.get("max_connections_per_ip")
        if per_ip is not None and value > per_ip:
            raise PydanticCustomError(
                "max_unbound_per_ip", "must not exceed max_connections_per_ip ({per_ip})", {"per_ip": per_ip}
            )
        return value

    @field_validator("max_failed_bind_delay")
    @classmethod
    def _max_delay_above_base(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("failed_bind_delay")
        if base is not None and value < base:
            raise PydanticCustomError("max_failed_bind_delay", "must not be below failed_bind_delay")
        return value


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
    return f"{scheme}:///{(config_folder(info) / path).resolve()}{query}"


class Storage(_Section):
    """``[storage]``: where messages and encryption keys live."""

    url: Annotated[str, PlainValidator(_storage_url)] = "sqlite:///var/smscenter.db"
    keys: RelPath = "var/keys"  # type: ignore[assignment]


class Queue(_Section):
    """``[queue]``: the MT queue lives in the database; memory holds only its working set."""

    #: Due messages kept in memory at most (each a few KB): beyond, they wait in the
    #: database until the loader reaches them. Held, scheduled and retrying ones never count.
    working_set: int = Field(10_000, ge=100, le=1_000_000)


class Logging(_Section):
    """``[logging]``."""

    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(lowercased)
    ] = "info"
    format: Literal["console", "json"] = "console"


#: The shortest ``message_details`` allowed: a message may wait in the queue up to its
#: longest validity (``smscenter.pipeline.submit.MAX_VALIDITY``, 7 days) and then its receipt up to the
#: housekeeping's ``receipt_grace`` (1 day); its partner's receipt waits in the outbox as long
#: as ``message_details``. Shorter, and receipts would be dropped before they could be owed.
MIN_MESSAGE_DETAILS = 8 * 86400.0


def _at_least_min_details(value: float | None) -> float | None:
    if value is not None and value < MIN_MESSAGE_DETAILS:
        raise PydanticCustomError(
            "retention_too_short",
            "must be at least 8d: the longest validity (7d) plus the wait for its receipt (1d)",
        )
    return value


def _clock_time(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
        raise PydanticCustomError("clock_time", 'expected a UTC time of day "HH:MM", e.g. "03:30"')
    return value


class Retention(_Section):
    """``[retention]``: how long personal data is kept (defaults from the GDPR note), and
    the daily purge that enforces it (``smscenter/app/retention.py``)."""

    #: Messages, their parts, receipts, outbox rows, early receipts: after the message ended.
    message_details: Annotated[PositiveDuration, AfterValidator(_at_least_min_details)] = "6mo"  # type: ignore[assignment]
    #: MO (replies, survey answers): after it was received.
    contact_data: PositiveDuration = "26mo"  # type: ignore[assignment]
    #: Number look-ups (invalid numbers reported by an upstream): from the last report.
    lookups: PositiveDuration = "14mo"  # type: ignore[assignment]
    #: The billing aggregates (``billing_days``, no number at all): after their day.
    billing: PositiveDuration = "10y"  # type: ignore[assignment]
    #: The connection log (bind attempts, with the peer's IP): after the attempt.
    connections: PositiveDuration = "12mo"  # type: ignore[assignment]
    #: When the daily purge runs, UTC (and at start when a run is overdue).
    purge_at: Annotated[str, PlainValidator(_clock_time)] = "03:30"
    #: Messages (or other rows) deleted per transaction. Each batch holds SQLite's write
    #: lock while it runs, and a submit committing meanwhile waits: 100 messages (with their
    #: parts and receipts) take ~15 ms here (bench.purge, README).
    purge_batch: int = Field(100, ge=10, le=100_000)
    #: Pause between two batches, leaving the database to the traffic.
    purge_pause: Duration = "20ms"  # type: ignore[assignment]


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


class Api(_Section):
    """``[api]``: the HTTPS API door (README "HTTPS API"). Plain HTTP only on a loopback
    ``listen`` without a certificate (``checks.py``)."""

    listen: ListenAddress | None = None
    tls_cert: RelPath | None = None
    tls_key: RelPath | None = None
    max_recipients: int = Field(100, gt=0, le=10_000)  # the ``to`` list of one request
    max_body: int = Field(65_536, ge=1024, le=16 * 1024 * 1024)  # octets of a request body


def _api_token_hash(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", value):
        raise PydanticCustomError(
            "api_token",
            "must be a token's hash made by `smscenter hash-token` (sha256:<64 hex digits>), not the token",
        )
    return value


class Webhooks(_Section):
    """``[webhooks]``: how the daemon delivers every account's webhooks."""

    timeout: PositiveDuration = "10s"  # type: ignore[assignment]  # a receiver that hangs: a retry
    max_in_flight: int = Field(64, gt=0, le=10_000)  # requests at once, all accounts
    account_in_flight: int = Field(16, gt=0, le=10_000)  # ... per account (webhook_ordered: 1)
    retry_min: PositiveDuration = "5s"  # type: ignore[assignment]  # first retry's wait (before jitter)
    retry_max: PositiveDuration = "5m"  # type: ignore[assignment]  # the longest wait between tries


class AccountRetention(_Section):
    """``[account.retention]``: per-account overrides; unset keys use ``[retention]``."""

    message_details: Annotated[PositiveDuration | None, AfterValidator(_at_least_min_details)] = None
    contact_data: PositiveDuration | None = None
    #: Accepted, but invalid-number entries are shared by all accounts (an upstream's verdict
    #: on a number is no account's): the purge applies ``[retention] lookups`` to them.
    lookups: PositiveDuration | None = None
    #: The account's bind attempts (attempts with an unknown system_id use ``[retention]``).
    connections: PositiveDuration | None = None


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


def _webhook_secret(value: Any) -> SecretStr:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str) or len(value) < 16:
        raise PydanticCustomError("webhook_secret", "a webhook secret is a string of at least 16 characters")
    return SecretStr(value)


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
    # Webhooks (README "Webhooks"): receipts and MO as signed JSON to the partner's URLs.
    receipt_url: WebhookUrl | None = None
    mo_url: WebhookUrl | None = None
    webhook_secret: Annotated[SecretStr, PlainValidator(_webhook_secret)] | None = Field(None, repr=False)
    webhook_ordered: bool = False  # one event in flight at a time, in order
    webhook_ca: RelPath | None = None  # PEM CA(s) to trust for its URLs, besides the system's
    # Bearer tokens of the HTTPS API, stored hashed (``runtime.passwords.hash_token``).
    api_tokens: tuple[Annotated[str, PlainValidator(_api_token_hash)], ...] = Field((), repr=False)

    @property
    def has_webhooks(self) -> bool:
        return self.receipt_url is not None or self.mo_url is not None

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
    system_type: Annotated[str, c_octet(12)] = ""
    bind: Literal["transmitter", "receiver", "transceiver", "pair"] = "transceiver"  # pair: TX + RX
    binds: int = Field(1, gt=0)
    window: int = Field(10, gt=0)
    throughput: int = Field(100, gt=0)
    address_range: Annotated[str, c_octet(40)] = ""
    tls: bool = False
    tls_verify: bool = True
    tls_ca: RelPath | None = None
    #: How its ids in submit_sm_resp and in receipts relate (protocol/receipt.py); "auto"
    #: tries the usual readings and learns the one that matches (protocol/idreadings.py).
    message_id: Literal["auto", "decimal", "hex", "as-is", "hex-to-decimal", "decimal-to-hex"] = "auto"
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
    queue: Queue = Field(default_factory=dict)  # type: ignore[arg-type]
    webhooks: Webhooks = Field(default_factory=dict)  # type: ignore[arg-type]
    api: Api = Field(default_factory=dict)  # type: ignore[arg-type]

    @cached_property
    def accounts_by_id(self) -> dict[str, Account]:
        return {a.system_id: a for a in self.accounts}

    @cached_property
    def connectors_by_name(self) -> dict[str, Connector]:
        return {c.name: c for c in self.connectors}

    def account(self, system_id: str) -> Account | None:
        return self.accounts_by_id.get(system_id)

    @property
    def control_socket_path(self) -> Path:
        """``[server] control_socket``, else ``smscenter.sock`` in the state directory: the
        folder that holds ``[storage] keys`` (``var/`` beside the example's database,
        ``/var/lib/smscenter`` under the systemd unit), which every layout has, SQLite or not."""
        return self.server.control_socket or self.storage.keys.parent / "smscenter.sock"

    def retention_for(self, account: Account) -> Retention:
        """The account's retention periods, its overrides applied over ``[retention]``."""
        overrides = {k: v for k, v in account.retention.model_dump().items() if v is not None}
        return self.retention.model_copy(update=overrides)

