"""scrypt password hashes: format, round trip, and refusal of anything malformed."""

import hashlib

import pytest

from smscenter.runtime.passwords import hash_password, parse_hash, verify_password


def test_format_and_round_trip():
    stored = hash_password("secret")
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    params = parse_hash(stored)
    assert len(params.salt) == 16 and len(params.digest) == 32
    assert verify_password("secret", stored)
    assert not verify_password("Secret", stored)
    assert not verify_password("", stored)


def test_salt_is_random():
    assert hash_password("secret") != hash_password("secret")


def test_matches_hashlib_scrypt():
    params = parse_hash(hash_password("pässword"))
    expected = hashlib.scrypt(
        "pässword".encode(), salt=params.salt, n=params.n, r=params.r, p=params.p, dklen=32
    )
    assert params.digest == expected


def test_other_parameters_still_verify():
    # A hash made with other (cheaper) parameters is honoured: they travel in the string.
    import base64

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=2**4, r=2, p=1, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    stored = f"scrypt$16$2$1${b64(salt)}${b64(digest)}"
    assert verify_password("pw", stored)
    assert not verify_password("px", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "secret",
        "",
        "scrypt$",
        "scrypt$16384$8$1$abc",
        "scrypt$x$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "scrypt$16384$8$1$!!!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        # absurd memory cost: refused, not attempted
        "scrypt$1073741824$8$1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$2b$12$abcdefghijklmnopqrstuv",
        "5f4dcc3b5aa765d61d8327deb882cf99",
    ],
)
def test_malformed_hash_never_matches(stored):
    with pytest.raises(ValueError):
        parse_hash(stored)
    assert verify_password("secret", stored) is False


def test_error_does_not_echo_the_value():
    with pytest.raises(ValueError) as info:
        parse_hash("hunter2")
    assert "hunter2" not in str(info.value)
