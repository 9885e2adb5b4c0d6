"""Partner password hashes: scrypt, self-describing, compared in constant time.

Why scrypt and not a fast hash: the config file (and its backups) will leak one day; scrypt
makes each guess cost memory and time, unlike the MD5 hashes some peers still store. The
parameters travel inside the string (``scrypt$n$r$p$salt_b64$hash_b64``) so they can be raised
later without breaking existing hashes.

Verification costs tens of milliseconds of CPU on purpose: callers on an event loop should run
``verify_password`` in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import NamedTuple

__all__ = ["ScryptParams", "dummy_hash", "hash_password", "parse_hash", "verify_password"]

N = 2**14
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32
PREFIX = "scrypt"

# A hash string from a config file must not be able to make us allocate gigabytes.
_MAX_MEMORY = 256 * 1024 * 1024


class ScryptParams(NamedTuple):
    """A parsed hash string."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.b64decode(padded.encode("ascii"), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen
    )


def hash_password(password: str) -> str:
    """Return ``scrypt$16384$8$1$<salt>$<hash>`` for ``password`` with a fresh random salt."""
    if not isinstance(password, str):
        raise TypeError("password must be a str")
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, N, R, P, HASH_BYTES)
    return f"{PREFIX}${N}${R}${P}${_b64encode(salt)}${_b64encode(digest)}"


def parse_hash(stored: str) -> ScryptParams:
    """Split and check a hash string; ``ValueError`` says what is wrong (never echoing it)."""
    if not isinstance(stored, str) or not stored.startswith(PREFIX + "$"):
        raise ValueError("not an scrypt hash (expected 'scrypt$n$r$p$salt$hash')")
    parts = stored.split("$")
    if len(parts) != 6:
        raise ValueError("malformed scrypt hash: expected 6 fields separated by '$'")
    _, n_s, r_s, p_s, salt_s, digest_s = parts
    try:
        n, r, p = int(n_s), int(r_s), int(p_s)
    except ValueError:
        raise ValueError("malformed scrypt hash: n, r and p must be integers") from None
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or p > 16:
        raise ValueError("malformed scrypt hash: n must be a power of 2, r and p positive")
    if 128 * n * r > _MAX_MEMORY:
        raise ValueError("scrypt hash parameters too costly (n * r too large)")
    try:
        salt, digest = _b64decode(salt_s), _b64decode(digest_s)
    except (binascii.Error, ValueError):
        raise ValueError("malformed scrypt hash: salt or hash is not base64") from None
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("malformed scrypt hash: salt or hash too short")
    return ScryptParams(n, r, p, salt, digest)


_dummy: str | None = None


def dummy_hash() -> str:
    """A hash of a random password, made once per process with the default parameters.

    A bind for an unknown system_id is checked against it, so it costs the same scrypt as a
    wrong password for a known account and cannot be told apart by its timing.
    """
    global _dummy
    if _dummy is None:
        _dummy = hash_password(base64.b64encode(os.urandom(24)).decode("ascii"))
    return _dummy


def verify_password(password: str, stored: str) -> bool:
    """True if ``password`` matches ``stored``. A malformed ``stored`` never matches."""
    try:
        params = parse_hash(stored)
    except ValueError:
        return False
    if not isinstance(password, str):
        return False
    candidate = _scrypt(password, params.salt, params.n, params.r, params.p, len(params.digest))
    return hmac.compare_digest(candidate, params.digest)


def hash_token(token: str) -> str:
    """The stored form of an API bearer token (``[[account]] api_tokens``): ``sha256:<hex>``.

    A plain digest, not scrypt: a token is checked on every request, and it is random and
    long (``smscenter hash-token`` refuses one under 32 characters), so a fast hash of it
    cannot be guessed back the way a short password could."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored: tuple[str, ...]) -> bool:
    """True if ``token`` is one of ``stored`` (compared in constant time, each of them)."""
    candidate = hash_token(token).encode()
    found = False
    for entry in stored:
        found |= hmac.compare_digest(candidate, entry.encode())
    return found
