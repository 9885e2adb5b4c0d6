"""The ``[server]`` keys of the connection slots and the bind guard: defaults, and errors
that name the key."""

import pytest

from smscenter.config import ConfigError, settings_from_dict
from smscenter.runtime.passwords import hash_password

HASH = hash_password("secret")


def settings(**server):
    return settings_from_dict(
        {"server": server, "account": [{"system_id": "acme", "password": HASH, "category": "alert"}]}
    )


def errors_of(**server):
    with pytest.raises(ConfigError) as info:
        settings(**server)
    return info.value.errors


def test_defaults():
    srv = settings().server
    assert (srv.max_connections, srv.max_connections_per_ip, srv.max_unbound_per_ip) == (1000, 100, 10)
    assert (srv.failed_bind_delay, srv.max_failed_bind_delay, srv.failed_bind_half_life) == (1, 30, 300)
    assert (srv.bind_guesses_per_minute, srv.bind_checks_per_ip, srv.bind_checks, srv.bind_check_threads) == (
        5, 4, 32, 2
    )


def test_bad_values_name_their_key():
    errs = errors_of(
        max_connections_per_ip=0, bind_guesses_per_minute=0, bind_checks_per_ip=-1, bind_checks=0,
        bind_check_threads=100, failed_bind_half_life="0s",
    )
    for key in ("max_connections_per_ip", "bind_guesses_per_minute", "bind_checks_per_ip", "bind_checks",
                "bind_check_threads", "failed_bind_half_life"):
        assert any(e.startswith(f"server.{key}: ") for e in errs), (key, errs)


def test_shares_must_fit():
    assert errors_of(max_connections_per_ip=5, max_unbound_per_ip=6) == [
        "server.max_unbound_per_ip: must not exceed max_connections_per_ip (5)"
    ]
    assert errors_of(failed_bind_delay="2s", max_failed_bind_delay="1s") == [
        "server.max_failed_bind_delay: must not be below failed_bind_delay"
    ]
