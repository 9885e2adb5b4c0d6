"""``[api]`` and ``[[account]] api_tokens``: TLS unless on loopback, tokens only as hashes."""

import pytest

from smscenter.config import ConfigError, settings_from_dict
from smscenter.runtime.passwords import hash_password, hash_token, token_matches

HASH = hash_password("secret")
TOKEN = "t" * 40


def errors_of(data, base_dir):
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data, base_dir=base_dir)
    return info.value.errors


def test_defaults_no_api_listener(tmp_path):
    s = settings_from_dict({}, base_dir=tmp_path)
    assert s.api.listen is None and s.api.max_recipients == 100 and s.api.max_body == 65_536


def test_plain_http_on_loopback_only(tmp_path):
    s = settings_from_dict({"api": {"listen": "127.0.0.1:0"}}, base_dir=tmp_path)
    assert s.api.listen.host == "127.0.0.1" and s.api.tls_cert is None
    errors = errors_of({"api": {"listen": "0.0.0.0:8443"}}, tmp_path)
    assert any(e.startswith("api.tls_cert: required when api.listen (0.0.0.0:8443)") for e in errors), errors


def test_tls_files_both_and_existing(tmp_path):
    (tmp_path / "cert.pem").write_text("x")
    errors = errors_of({"api": {"listen": "0.0.0.0:8443", "tls_cert": "cert.pem"}}, tmp_path)
    assert any(e.startswith("api.tls_key: required with tls_cert") for e in errors), errors
    errors = errors_of({"api": {"listen": "0.0.0.0:8443", "tls_cert": "cert.pem", "tls_key": "nope.pem"}}, tmp_path)
    assert any(e.startswith("api.tls_key: file not found") for e in errors), errors
    (tmp_path / "key.pem").write_text("x")
    s = settings_from_dict({"api": {"listen": "0.0.0.0:8443", "tls_cert": "cert.pem", "tls_key": "key.pem"}},
                           base_dir=tmp_path)
    assert s.api.tls_key == tmp_path / "key.pem"


def test_limits_named(tmp_path):
    errors = errors_of({"api": {"max_recipients": 0, "max_body": 10}}, tmp_path)
    assert any(e.startswith("api.max_recipients") for e in errors), errors
    assert any(e.startswith("api.max_body") for e in errors), errors


def test_api_tokens_only_as_hashes(tmp_path):
    account = {"system_id": "acme", "password": HASH}
    errors = errors_of({"account": [{**account, "api_tokens": [TOKEN]}]}, tmp_path)
    assert any(e.startswith("account[0].api_tokens[0]") and "hash-token" in e for e in errors), errors
    assert TOKEN not in " ".join(errors)  # the token is not echoed back
    s = settings_from_dict({"account": [{**account, "api_tokens": [hash_token(TOKEN)]}]}, base_dir=tmp_path)
    assert token_matches(TOKEN, s.accounts[0].api_tokens)
    assert not token_matches(TOKEN + "x", s.accounts[0].api_tokens)
    assert hash_token(TOKEN) not in repr(s.accounts[0])
