"""Config loading: defaults, durations, relative paths, and one clear error per problem."""

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from smscenter.config import (
    Address,
    ConfigError,
    Settings,
    load_settings,
    parse_duration,
    settings_from_dict,
)
from smscenter.runtime.passwords import hash_password, verify_password

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "conf" / "smscenter.example.toml"
HASH = hash_password("secret")


def account(**kw):
    return {"system_id": "acme", "password": HASH, **kw}


def connector(**kw):
    return {
        "name": "op",
        "host": "127.0.0.1",
        "port": 2776,
        "system_id": "gw",
        "password": "pw",
        **kw,
    }


def errors_of(data, base_dir="/srv/smsc"):
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, base_dir=base_dir)
    return info.value.errors


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("1d", 86400),
        ("1w", 604800),
        ("6mo", 6 * 30 * 86400),
        ("1y", 365 * 86400),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (" 10 S ", 10),
        ("0s", 0),
    ],
)
def test_parse_duration(text, seconds):
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "30x", "-5s", "5 minutes", "1h-30m", "3.s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


def test_parse_duration_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_duration(30)  # type: ignore[arg-type]


# ------------------------------------------------------------------ valid files


def test_example_config_loads():
    s = load_settings(EXAMPLE)
    assert s.server.listen == (Address("127.0.0.1", 2775),)
    assert str(s.server.listen[0]) == "127.0.0.1:2775"
    assert s.server.system_id == "SMSCENTER"
    # relative to conf/, so var/ at the repository root
    assert s.storage.url == f"sqlite:///{REPO / 'var' / 'smscenter.db'}"
    assert s.storage.keys == REPO / "var" / "keys"
    (acme,) = s.accounts
    assert acme.system_id == "acme" and verify_password("secret", acme.password)
    assert acme.short_codes == ("36180",)
    assert s.connectors[0].name == "operator-a"
    assert s.connectors[0].password.get_secret_value() == "secret"
    assert s.routes[0].destinations == ("*",) and s.routes[0].connectors == ("operator-a",)
    assert s.optout is not None and s.optout.short_code == "36180"


def test_defaults():
    s = settings_from_dict(
        {"account": [account(category="alert")], "connector": [connector()]}, base_dir="/srv/smsc"
    )
    srv = s.server
    assert srv.listen == (Address("127.0.0.1", 2775),)
    assert (srv.max_connections, srv.window, srv.max_pdu_size, srv.bad_pdu_budget) == (
        1000,
        64,
        65536,
        10,
    )
    assert (srv.bind_timeout, srv.enquire_link_interval, srv.inactivity_timeout) == (10, 30, 120)
    assert (srv.response_timeout, srv.shutdown_grace, srv.failed_bind_delay) == (10, 5, 1)
    assert s.storage.url == "sqlite:////srv/smsc/var/smscenter.db"
    assert s.storage.keys == Path("/srv/smsc/var/keys")
    assert (s.logging.level, s.logging.format) == ("info", "console")
    a = s.accounts[0]
    assert a.throughput == 100 and a.max_binds == 4 and a.window == 64
    assert a.bind_types == {"transmitter", "receiver", "transceiver"}
    assert a.default_country == "FR" and a.outside_window == "defer"
    assert not a.blacklist_alerts and not a.per_part_receipts
    assert a.ip_allowed("203.0.113.9") and a.ip_allowed("2001:db8::1")
    c = s.connectors[0]
    assert (c.bind, c.binds, c.window, c.throughput, c.message_id) == (
        "transceiver",
        1,
        10,
        100,
        "as-is",
    )
    assert (c.reconnect_min, c.reconnect_max) == (1, 60)
    assert c.source_ton_npi.alphanumeric == (5, 0)
    assert s.optout is None and s.routes == ()


def test_empty_file_is_valid(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    s = load_settings(path)
    assert s.accounts == () and s.storage.keys == tmp_path / "var" / "keys"


def test_settings_are_immutable():
    s = settings_from_dict({"account": [account(category="alert")]})
    with pytest.raises(ValidationError):
        s.server.window = 3  # type: ignore[misc]
    assert isinstance(s.accounts, tuple) and isinstance(s.server.listen, tuple)
    assert s.account("acme") is s.accounts[0] and s.account("nobody") is None


def test_secrets_not_in_repr():
    s = settings_from_dict({"account": [account(category="alert")], "connector": [connector()]})
    text = repr(s)
    assert HASH not in text and "'pw'" not in text


def test_relative_tls_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "c.pem").write_text("x")
    (tmp_path / "tls" / "k.pem").write_text("x")
    (tmp_path / "smsc.toml").write_text(
        '[server]\ntls_listen = ["[::1]:3550"]\ntls_cert = "tls/c.pem"\ntls_key = "tls/k.pem"\n'
    )
    s = load_settings(tmp_path / "smsc.toml")
    assert s.server.tls_listen == (Address("::1", 3550),)
    assert str(s.server.tls_listen[0]) == "[::1]:3550"
    assert s.server.tls_cert == tmp_path / "tls" / "c.pem"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite:///db.sqlite", "sqlite:////srv/smsc/db.sqlite"),
        (
            "sqlite+aiosqlite:///var/x.db?timeout=5",
            "sqlite+aiosqlite:////srv/smsc/var/x.db?timeout=5",
        ),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ],
)
def test_storage_url(url, expected):
    s = settings_from_dict({"storage": {"url": url}}, base_dir="/srv/smsc")
    assert s.storage.url == expected


def test_retention_overrides():
    s = settings_from_dict(
        {
            "retention": {"message_details": "3mo"},
            "account": [account(category="alert", retention={"lookups": "1y"})],
        }
    )
    r = s.retention_for(s.accounts[0])
    assert r.message_details == 90 * 86400
    assert r.lookups == 365 * 86400
    assert r.contact_data == 26 * 30 * 86400


def test_ip_allow_list():
    allowed = ["10.0.0.0/8", "2001:db8::/32"]
    s = settings_from_dict({"account": [account(category="alert", allowed_ips=allowed)]})
    a = s.accounts[0]
    assert a.ip_allowed("10.1.2.3") and a.ip_allowed("::ffff:10.1.2.3")
    assert a.ip_allowed("2001:db8::5")
    assert not a.ip_allowed("192.0.2.1") and not a.ip_allowed("::1")


# ------------------------------------------------------------------ errors


def test_error_path_with_index():
    errs = errors_of(
        {
            "account": [
                account(system_id="a", category="alert"),
                account(system_id="b", category="alert", throughput=0),
            ]
        }
    )
    assert errs == ["account[1].throughput: Input should be greater than 0"]


def test_unknown_keys():
    errs = errors_of(
        {
            "server": {"enquire_interval": "30s"},
            "frobnicate": 1,
            "account": [account(category="alert", colour="red")],
        }
    )
    assert "server.enquire_interval: unknown key (did you mean 'enquire_link_interval'?)" in errs
    assert "frobnicate: unknown key" in errs
    assert "account[0].colour: unknown key" in errs


def test_bad_duration_names_the_key():
    errs = errors_of(
        {
            "server": {"bind_timeout": "10 sec", "inactivity_timeout": 120},
            "connector": [connector(reconnect_max="0s")],
        }
    )
    assert any(e.startswith("server.bind_timeout: bad duration '10 sec'") for e in errs)
    assert any(e.startswith("server.inactivity_timeout: expected a duration string") for e in errs)
    assert "connector[0].reconnect_max: duration must be longer than 0s" in errs


def test_queue_working_set():
    assert settings_from_dict({}).queue.working_set == 10_000
    assert settings_from_dict({"queue": {"working_set": 500}}).queue.working_set == 500
    errs = errors_of({"queue": {"working_set": 10}})
    assert any(e.startswith("queue.working_set: ") and "100" in e for e in errs), errs
    errs = errors_of({"queue": {"working_set": "many"}})
    assert any(e.startswith("queue.working_set: ") for e in errs), errs
    assert any(e.startswith("queue.size") for e in errors_of({"queue": {"size": 5}}))


def test_plaintext_password_rejected_without_echo():
    errs = errors_of({"account": [account(password="hunter2", category="alert")]})
    assert len(errs) == 1
    assert errs[0].startswith("account[0].password: must be an scrypt hash")
    assert "hunter2" not in errs[0]


def test_field_errors():
    errs = errors_of(
        {
            "server": {"listen": ["localhost"], "system_id": "X" * 16, "window": 0},
            "logging": {"level": "loud", "format": "xml"},
            "account": [
                account(
                    short_codes=["3618", 36180],
                    sender_ids=["TOOLONGSENDER"],
                    category="promo",
                    allowed_ips=["10.0.0.1/8"],
                    bind_types=["tx"],
                    default_country="XX",
                    outside_window="drop",
                )
            ],
            "connector": [
                connector(
                    password="123456789",
                    bind="both",
                    port=70000,
                    message_id="octal",
                    source_ton_npi={"short_code": [9, 0]},
                )
            ],
            "route": [{"destinations": ["33"], "connectors": []}],
            "optout": {},
        }
    )
    prefixes = [
        'server.listen[0]: expected "host:port"',
        "server.system_id: at most 15 characters",
        "server.window: Input should be greater than 0",
        "logging.level: Input should be",
        "logging.format: Input should be 'console' or 'json'",
        "account[0].short_codes[0]: a short code is exactly 5 digits",
        "account[0].short_codes[1]: a short code is exactly 5 digits",
        "account[0].sender_ids[0]: an alphanumeric sender ID has at most 11 characters",
        "account[0].category: Input should be 'marketing' or 'alert'",
        "account[0].allowed_ips[0]: bad CIDR",
        "account[0].bind_types[0]: Input should be 'transmitter', 'receiver' or 'transceiver'",
        "account[0].default_country: expected an ISO 3166",
        "account[0].outside_window: Input should be 'defer' or 'reject'",
        "connector[0].password: an SMPP 3.4 password is at most 8",
        "connector[0].bind: Input should be",
        "connector[0].port: Input should be less than or equal to 65535",
        "connector[0].message_id: Input should be",
        "connector[0].source_ton_npi.short_code: TON must be 0..6",
        'route[0].destinations[0]: a destination is "*" or an E.164 prefix',
        "route[0].connectors: must list at least one entry",
        "optout.short_code: required key is missing",
    ]
    for prefix in prefixes:
        assert any(e.startswith(prefix) for e in errs), (prefix, errs)
    assert len(errs) == len(prefixes), errs


def test_missing_required_keys():
    errs = errors_of({"account": [{}], "connector": [{}], "route": [{}]})
    for key in (
        "account[0].system_id",
        "account[0].password",
        "connector[0].name",
        "connector[0].host",
        "connector[0].port",
        "connector[0].system_id",
        "connector[0].password",
        "route[0].destinations",
        "route[0].connectors",
    ):
        assert f"{key}: required key is missing" in errs


def test_section_shapes():
    errs = errors_of({"server": "x", "account": {"system_id": "a"}})
    assert "server: expected a table" in errs
    assert "account: expected an array of tables: write [[account]], not [account]" in errs


def test_cross_checks():
    errs = errors_of(
        {
            "server": {
                "listen": ["0.0.0.0:2775"],
                "tls_listen": ["0.0.0.0:2775"],
                "inactivity_timeout": "20s",
            },
            "account": [
                account(category="alert"),
                account(category="alert"),
                account(system_id="b", category="alert", short_codes=["36180"], keywords=["PROMO"]),
                account(system_id="c", category="alert", short_codes=["36180"], keywords=["promo"]),
            ],
            "connector": [
                connector(),
                connector(),
                connector(name="rx", bind="receiver"),
                connector(name="slow", reconnect_min="2m", reconnect_max="1m"),
            ],
            "route": [
                {
                    "destinations": ["+33", "*"],
                    "connectors": ["op", "missing", "rx"],
                    "accounts": ["acme", "ghost"],
                }
            ],
        }
    )
    expected = [
        "server.tls_listen[0]: 0.0.0.0:2775 is already used by server.listen[0]",
        "server.tls_cert: required when tls_listen is set",
        "server.tls_key: required when tls_listen is set",
        "server.inactivity_timeout: must be longer than enquire_link_interval (30s), "
        "or live sessions get closed",
        "account[1].system_id: duplicate system_id 'acme' (already used by account[0])",
        "account[3].keywords[0]: keyword 'promo' on short code 36180 is already routed to "
        "account[2]",
        "connector[1].name: duplicate connector name 'op' (already used by connector[0])",
        "connector[3].reconnect_min: must not exceed reconnect_max (60s)",
        "route[0].connectors[1]: no connector named 'missing'",
        "route[0].connectors[2]: connector 'rx' binds as receiver and cannot send",
        "route[0].accounts[1]: no account with system_id 'ghost'",
    ]
    assert errs == expected


def test_marketing_sender_ids_need_optout():
    errs = errors_of({"account": [account(sender_ids=["ACME"])]})
    assert errs == [
        "optout.short_code: required because account[0] (acme) sends marketing from "
        "alphanumeric sender IDs, whose STOP mention names it"
    ]
    settings_from_dict(
        {"account": [account(sender_ids=["ACME"])], "optout": {"short_code": "36180"}}
    )


def test_tls_file_must_exist(tmp_path):
    errs = errors_of(
        {
            "server": {
                "tls_listen": ["0.0.0.0:3550"],
                "tls_cert": "nope.pem",
                "tls_key": "/nonexistent/k.pem",
            }
        },
        base_dir=tmp_path,
    )
    assert f"server.tls_cert: file not found: {tmp_path / 'nope.pem'}" in errs
    assert "server.tls_key: file not found: /nonexistent/k.pem" in errs


def test_toml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nlisten = ["127.0.0.1:2775"]\nsystem_id = SMSC\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    (err,) = info.value.errors
    assert err.startswith(f"{path}: invalid TOML:") and "line 3" in err


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "nope.toml")
    assert "cannot read the file" in info.value.errors[0]


def test_retention_purge_keys_and_safe_minimum():
    s = settings_from_dict({"retention": {"billing": "5y", "purge_at": "04:15", "purge_batch": 50}})
    assert (s.retention.billing, s.retention.purge_at, s.retention.purge_batch) == (5 * 365 * 86400, "04:15", 50)
    assert settings_from_dict({}).retention.billing == 10 * 365 * 86400
    errors = errors_of({
        "retention": {"message_details": "7d", "purge_at": "3:30", "purge_batch": 1},
        "account": [account(category="alert", retention={"message_details": "2d"})],
    })
    assert any(e.startswith("retention.message_details: must be at least 8d") for e in errors)
    assert any(e.startswith("account[0].retention.message_details: must be at least 8d") for e in errors)
    assert any(e.startswith("retention.purge_at: expected a UTC time of day") for e in errors)
    assert any(e.startswith("retention.purge_batch:") for e in errors)


def test_retention_minimum_follows_validity_and_receipt_wait():
    from smscenter.config.sections import MIN_MESSAGE_DETAILS
    from smscenter.app.housekeeping import Housekeeping
    from smscenter.pipeline.submit import MAX_VALIDITY

    grace = Housekeeping.__init__.__kwdefaults__["receipt_grace"]
    assert MIN_MESSAGE_DETAILS == MAX_VALIDITY + grace


def test_array_of_tables_in_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        f'[[account]]\nsystem_id = "a"\npassword = "{HASH}"\ncategory = "alert"\n'
        f'[[account]]\nsystem_id = "b"\npassword = "{HASH}"\ncategory = "alert"\n'
        'throughput = -1\n[account.retention]\nlookups = "1 year"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.errors[0] == "account[1].throughput: Input should be greater than 0"
    assert info.value.errors[1].startswith("account[1].retention.lookups: bad duration")


def test_model_validate_alone_uses_toml_names():
    s = Settings.model_validate({"account": [account(category="alert")]})
    assert s.accounts[0].system_id == "acme"


def test_budget_keys_defaults_and_errors_name_the_key():
    s = settings_from_dict({"account": [account(category="alert")]})
    srv = s.server
    assert (srv.pdus_per_turn, srv.enquire_link_rate, srv.enquire_link_burst) == (32, 2.0, 10)
    assert (srv.max_storage_reads, srv.flood_refusals, srv.flood_interval, srv.refusal_log_interval) == (8, 1000, 10.0, 10.0)
    errs = errors_of(
        {
            "server": {
                "pdus_per_turn": 0,
                "enquire_link_rate": -1,
                "enquire_link_burst": 0,
                "max_storage_reads": 0,
                "flood_refusals": 0,
                "flood_interval": "0s",
                "refusal_log_interval": "often",
            },
            "account": [account(category="alert")],
        }
    )
    for key in ("pdus_per_turn", "enquire_link_rate", "enquire_link_burst", "max_storage_reads", "flood_refusals",
                "flood_interval", "refusal_log_interval"):
        assert any(e.startswith(f"server.{key}: ") for e in errs), (key, errs)
