"""Encryption at rest: the keys folder, field encryption, keyed look-up hashes, pseudonyms.

What is stored encrypted: phone numbers and message text (issue 4, DESIGN "Security").
What is stored beside them so we can still find rows: a keyed hash of the number.

Keys folder (``[storage] keys``), mode 0700, every file 0600 — or, to give the CLI's roles
(``smscenter/cli/roles.py``) their own read access, the folder 0750 and the files 0640 with a group
each (``dek-*.key`` the dpo group, ``lookup.key`` the support group). A key file is refused
when any "other" bit or a group write/execute bit is set: group *read* is the one loosening.

- ``dek-0001.key``, ``dek-0002.key`` … — data-encryption keys, 32 random bytes each
  (AES-256-GCM). The highest id is the *current* key: new values are encrypted with it.
  Older keys stay so older values still decrypt; ``Keyring.rotate()`` (``smscenter keys
  rotate``) adds the next one, and every ``FieldCipher`` — the running daemon's processes
  too — encrypts with it within ``KEY_CHECK_INTERVAL``.
- ``lookup.key`` — 32 random bytes, the HMAC key for look-up hashes and pseudonyms. It never
  rotates: a new one would change every stored hash, and look-ups would stop finding rows.

A look-up-only keyring (``Keyring.load_lookup``: the support role) holds ``lookup.key`` and no
data key: it hashes numbers, and any encryption or decryption raises ``NoDataKeyError``.

A new DEK from ``rotate`` takes the group and the group-read bit of the newest DEK already in
the folder, so a folder set up for the roles stays set up after ``smscenter keys rotate``;
``create`` writes owner-only files (0600) and the administrator grants the groups once.

Losing the folder loses the data; the daemon therefore refuses to start on a database that has
data but no keys (``Keyring.open``), rather than quietly making new keys. Back the folder up
together with the database, but not in the same place.

Token layout (bytes, as stored in a column)::

    version (1) | key id (2, big-endian) | nonce (12, random) | AES-GCM ciphertext + tag (16)

31 bytes of overhead. The 3-byte header is authenticated too (it is prepended to the AAD), so
changing the key id or version is detected like any other tampering. Callers should pass an
``aad`` that binds a value to its place, e.g. ``b"message.text"`` or
``b"message.text:%d" % message_id``: then a ciphertext copied into another column or row does
not decrypt.

Random 96-bit nonces: NIST SP 800-38D bounds one key to 2**32 encryptions with random nonces
(collision chance ≤ 2**-32). Real risk is far lower (10**9 values under one key: ~2**-37), but
rotate keys from time to time anyway (``smscenter keys rotate``, monthly is plenty) — old
keys keep decrypting, so rotation is free.

Several nodes may share one keys folder (DESIGN "scale-out later"): new keys are placed with a
hard link, which refuses to overwrite, so two nodes rotating at the same moment can never
replace each other's key; and a token whose key id is newer than any we know makes the keyring
re-read the folder once before giving up.
"""

from __future__ import annotations

import hmac
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Callable

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "CryptoError",
    "KeyringError",
    "DecryptError",
    "UnknownKeyError",
    "NoDataKeyError",
    "Keyring",
    "has_keys",
    "FieldCipher",
    "KEY_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "HEADER_SIZE",
    "OVERHEAD",
    "LOOKUP_HASH_SIZE",
]

KEY_SIZE = 32  # AES-256 / HMAC-SHA256 key
NONCE_SIZE = 12
TAG_SIZE = 16
VERSION = 1
HEADER_SIZE = 3  # version byte + 2-byte key id
OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE
MAX_KEY_ID = 0xFFFF
LOOKUP_HASH_SIZE = 16
PSEUDONYM_CHARS = 16

#: Seconds between two looks at the keys folder for a key added since (``smscenter keys
#: rotate``, or another node sharing the folder): a running daemon, its writer process
#: included, encrypts with the new key within about this long, with no restart. A look
#: lists a folder of a few files, once a second at most and only while encrypting.
KEY_CHECK_INTERVAL = 1.0

LOOKUP_FILE = "lookup.key"
_DEK_NAME = re.compile(r"dek-(\d{4,5})\.key")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_E164_SEPARATORS = str.maketrans("", "", " \t-.()/")
_PSEUDONYM_LABEL = b"smscenter pseudonym v1\x00"
_log = structlog.get_logger("smscenter.keys")


class CryptoError(Exception):
    """Base of everything this module raises. Messages never hold keys, numbers or text."""


class KeyringError(CryptoError):
    """The keys folder is missing, unsafe or malformed; the message tells the admin what to do."""


class DecryptError(CryptoError):
    """A stored token does not decrypt: tampered, truncated, wrong AAD or not a token."""


class UnknownKeyError(DecryptError, KeyringError):
    """A token names a key id that is not in the keys folder."""


class NoDataKeyError(KeyringError):
    """A look-up-only keyring (the support role) was asked to encrypt or decrypt."""


def dek_filename(key_id: int) -> str:
    return f"dek-{key_id:04d}.key"


# --------------------------------------------------------------------------------- files


#: Mode bits a key file may not have: any "other" bit, group write or execute. Group read
#: (0640) is allowed so a role's group can read its key (see the module docstring).
_UNSAFE_BITS = 0o037


def _check_file(path: Path) -> None:
    """Refuse a key file that is not a regular file, that others may touch at all, or that
    its group may change."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise KeyringError(f"key file {path} is missing; restore the keys folder") from None
    except OSError as exc:
        raise KeyringError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyringError(f"key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & _UNSAFE_BITS:
        raise KeyringError(
            f"key file {path} is open to others or writable by its group (mode {mode:04o}); "
            f"run `chmod 600 {path}` (or `chmod 640` to let its role's group read it), then "
            "start again"
        )


def _read_key(path: Path) -> bytes:
    _check_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyringError(f"cannot read key file {path}: {exc.strerror}") from None
    if len(data) != KEY_SIZE:
        raise KeyringError(
            f"key file {path} is malformed: {len(data)} bytes, expected {KEY_SIZE}; "
            "restore it from your backup"
        )
    return data


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_key(path: Path, key: bytes, like: Path | None = None) -> None:
    """Write ``key`` to ``path`` atomically with mode 0600; never overwrite an existing file.

    With ``like`` (a sibling key file), the new file takes its group and its group-read bit
    (0640), so the roles' set-up survives a rotation. If the group cannot be given (the
    writer is not a member of it), the file stays 0600 and a warning says what to run.

    The bytes go to a temp file in the same folder (``os.open`` with 0600, fsync), which is
    then hard-linked to the final name: a link is atomic like ``os.replace`` but fails if the
    name exists, so a key already in use can never be replaced. On a filesystem without hard
    links we fall back to ``os.replace`` after checking the name is free.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # whatever the umask said
            if like is not None:
                _copy_group(fd, like, path)
            view = memoryview(key)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            if path.exists():
                raise FileExistsError(str(path)) from None
            os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _fsync_dir(path.parent)


def _copy_group(fd: int, like: Path, path: Path) -> None:
    """Give the open file ``fd`` the group of ``like`` and, if ``like`` has it, group read."""
    try:
        st = os.stat(like)
    except OSError:
        return
    if not st.st_mode & stat.S_IRGRP:
        return  # an owner-only folder stays owner-only
    try:
        if os.fstat(fd).st_gid != st.st_gid:
            os.fchown(fd, -1, st.st_gid)
        os.fchmod(fd, 0o640)
    except OSError as exc:
        _log.warning("key_left_owner_only", path=str(path), gid=st.st_gid, folder=like.name,
                     error=exc.strerror, fix=f"chgrp {st.st_gid} {path} && chmod 640 {path}")


def _scan(folder: Path) -> tuple[dict[int, Path], bool]:
    """DEK files by id, and whether ``lookup.key`` exists. Hidden files (temp) are skipped."""
    deks: dict[int, Path] = {}
    has_lookup = False
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        raise KeyringError(f"keys folder {folder} does not exist") from None
    except NotADirectoryError:
        raise KeyringError(f"keys folder {folder} is not a folder") from None
    except OSError as exc:
        raise KeyringError(f"cannot list keys folder {folder}: {exc.strerror}") from None
    for name in names:
        if name.startswith("."):
            continue
        if name == LOOKUP_FILE:
            has_lookup = True
            continue
        if name.startswith("dek-") and name.endswith(".key"):
            m = _DEK_NAME.fullmatch(name)
            key_id = int(m.group(1)) if m else 0
            if not m or not 1 <= key_id <= MAX_KEY_ID or name != dek_filename(key_id):
                raise KeyringError(
                    f"key file {folder / name} is malformed: expected a name like dek-0001.key "
                    f"(id 1..{MAX_KEY_ID})"
                )
            deks[key_id] = folder / name
    return deks, has_lookup


def has_keys(folder: Path) -> bool:
    """Whether ``folder`` holds any key file (a DEK or the look-up key); False if it does
    not exist, ``KeyringError`` if it is not a folder or holds a malformed key name."""
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise KeyringError(f"keys folder {folder} is not a folder")
    deks, has_lookup = _scan(folder)
    return bool(deks) or has_lookup


# ------------------------------------------------------------------------------- keyring


class Keyring:
    """The keys in one keys folder. Build with ``create``, ``load`` or ``open``.

    ``repr`` shows the folder and key ids only — never key bytes.
    """

    __slots__ = ("folder", "_deks", "_lookup", "_lock", "lookup_only")

    def __init__(self, folder: Path, deks: dict[int, bytes], lookup: bytes, *, lookup_only: bool = False) -> None:
        # Internal: use create/load/load_lookup/open.
        if not deks and not lookup_only:
            raise KeyringError(f"keys folder {folder} has no data-encryption key (dek-*.key)")
        self.folder = folder
        self._deks = {} if lookup_only else dict(deks)
        self._lookup = lookup
        self._lock = threading.Lock()
        #: Only the look-up key (the support role): hashes, no encryption or decryption.
        self.lookup_only = lookup_only

    # -- construction

    @classmethod
    def create(cls, folder: Path | str) -> Keyring:
        """Make the folder (0700) with a first DEK and the lookup key (0600 each).

        Refuses if the folder already holds keys: new keys over old would strand the data.
        """
        folder = Path(folder)
        if has_keys(folder):
            raise KeyringError(
                f"keys folder {folder} already holds keys; refusing to create new ones over them"
            )
        created = not folder.exists()
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if created:
                os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
        except OSError as exc:
            raise KeyringError(f"cannot create keys folder {folder}: {exc.strerror}") from None
        lookup = os.urandom(KEY_SIZE)
        dek = os.urandom(KEY_SIZE)
        try:
            _write_key(folder / LOOKUP_FILE, lookup)
            _write_key(folder / dek_filename(1), dek)
        except FileExistsError:
            raise KeyringError(
                f"keys folder {folder} gained keys while we were creating them "
                "(another node starting?); start again to load them"
            ) from None
        except OSError as exc:
            raise KeyringError(f"cannot write keys in {folder}: {exc.strerror}") from None
        return cls(folder, {1: dek}, lookup)

    @classmethod
    def load(cls, folder: Path | str) -> Keyring:
        """Load every key in the folder; refuse loose permissions and malformed files."""
        folder = Path(folder)
        if not folder.exists():
            raise KeyringError(f"keys folder {folder} does not exist; restore the keys folder")
        deks, has_lookup = _scan(folder)
        if not has_lookup:
            raise KeyringError(
                f"key file {folder / LOOKUP_FILE} is missing; restore the keys folder"
            )
        if not deks:
            raise KeyringError(
                f"keys folder {folder} has no data-encryption key (dek-0001.key …); "
                "restore the keys folder"
            )
        lookup = _read_key(folder / LOOKUP_FILE)
        return cls(folder, {kid: _read_key(path) for kid, path in deks.items()}, lookup)

    @classmethod
    def load_lookup(cls, folder: Path | str) -> Keyring:
        """Load ``lookup.key`` alone (the support role): look-up hashes and pseudonyms work,
        encrypting or decrypting raises ``NoDataKeyError``. The DEK files are not opened, so
        a caller without read access to them loads this fine."""
        folder = Path(folder)
        if not folder.exists():
            raise KeyringError(f"keys folder {folder} does not exist; restore the keys folder")
        return cls(folder, {}, _read_key(folder / LOOKUP_FILE), lookup_only=True)

    def _need_data_keys(self) -> None:
        if self.lookup_only:
            raise NoDataKeyError(
                f"this keyring holds only the look-up key of {self.folder} (the support role); "
                "encrypting or decrypting needs the data keys dek-*.key (the dpo role)"
            )

    @classmethod
    def open(cls, folder: Path | str, database_has_data: bool) -> Keyring:
        """What the daemon calls at start.

        No keys and a new database → create them. Data but no keys → refuse: making new keys
        would leave every stored value unreadable. Otherwise load (and refuse unsafe files).
        """
        folder = Path(folder)
        if has_keys(folder):
            return cls.load(folder)
        if database_has_data:
            raise KeyringError(
                f"the database has encrypted data but no keys at {folder}; restore the keys "
                "folder from your backup (or fix [storage] keys) before starting"
            )
        return cls.create(folder)

    # -- keys

    @property
    def current_id(self) -> int:
        """The id new values are encrypted with (the highest)."""
        self._need_data_keys()
        return max(self._deks)

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._deks))

    def rotate(self) -> int:
        """Add the next DEK to the folder; it becomes current. Returns its id.

        The new file takes the group and group-read bit of the newest DEK (``_write_key``).
        """
        self._need_data_keys()
        with self._lock:
            self._refresh_locked()
            while True:
                key_id = max(self._deks) + 1
                if key_id > MAX_KEY_ID:
                    raise KeyringError(f"keys folder {self.folder} has run out of key ids")
                key = os.urandom(KEY_SIZE)
                try:
                    _write_key(self.folder / dek_filename(key_id), key,
                               like=self.folder / dek_filename(max(self._deks)))
                except FileExistsError:
                    self._refresh_locked()  # another node rotated first: take theirs, go on
                    continue
                except OSError as exc:
                    raise KeyringError(
                        f"cannot write a new key in {self.folder}: {exc.strerror}"
                    ) from None
                self._deks[key_id] = key
                return key_id

    def refresh(self) -> tuple[int, ...]:
        """Re-read the folder for DEKs added by another process; returns the new ids.

        Keys are only ever added, never dropped, by a refresh. A look-up-only keyring reads
        no DEK: it returns ().
        """
        if self.lookup_only:
            return ()
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> tuple[int, ...]:
        deks, _ = _scan(self.folder)
        new = tuple(kid for kid in sorted(deks) if kid not in self._deks)
        for kid in new:
            self._deks[kid] = _read_key(deks[kid])
        return new

    def _dek(self, key_id: int) -> bytes | None:
        return self._deks.get(key_id)

    def __repr__(self) -> str:
        if self.lookup_only:
            return f"Keyring(folder={str(self.folder)!r}, lookup only)"
        return (
            f"Keyring(folder={str(self.folder)!r}, key_ids={list(self.key_ids)}, "
            f"current={self.current_id})"
        )

    def __reduce__(self):  # no pickling: a pickle would carry the keys
        raise TypeError("Keyring holds secret keys and cannot be pickled")


# ---------------------------------------------------------------------------- the cipher


class FieldCipher:
    """Encrypts and decrypts column values; computes look-up hashes and pseudonyms.

    ``AESGCM`` objects are built once per key and cached (building one is the costly part).
    While encrypting, it looks at the keys folder once per ``KEY_CHECK_INTERVAL`` (by
    ``clock``) for a key added since, which then becomes current. Safe to share between
    threads and tasks; holds no state besides those caches and when it last looked.
    """

    __slots__ = ("keyring", "_aeads", "_pseudonym_keys", "_lookup_mac", "_clock", "_next_check", "_folder_error")

    def __init__(self, keyring: Keyring, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.keyring = keyring
        self._aeads: dict[int, tuple[bytes, AESGCM]] = {}
        self._pseudonym_keys: dict[bytes, bytes] = {}
        # HMAC keyed once; each look-up copies it (a copy is cheaper than keying again).
        self._lookup_mac = hmac.new(keyring._lookup, digestmod="sha256")
        self._clock = clock
        self._next_check = clock() + KEY_CHECK_INTERVAL
        self._folder_error: str | None = None

    def _aead(self, key_id: int) -> tuple[bytes, AESGCM]:
        entry = self._aeads.get(key_id)
        if entry is None:
            self.keyring._need_data_keys()
            key = self.keyring._dek(key_id)
            if key is None and 1 <= key_id <= MAX_KEY_ID and key_id > self.keyring.current_id:
                # Perhaps another node rotated since we loaded: look once more.
                self.keyring.refresh()
                key = self.keyring._dek(key_id)
            if key is None:
                raise UnknownKeyError(
                    f"value was encrypted with key id {key_id}, which is not in the keys folder "
                    f"{self.keyring.folder} (ids there: {list(self.keyring.key_ids)}); "
                    f"restore {dek_filename(key_id) if 1 <= key_id <= MAX_KEY_ID else 'it'} "
                    "from your backup"
                )
            header = bytes((VERSION,)) + key_id.to_bytes(2, "big")
            entry = self._aeads[key_id] = (header, AESGCM(key))
        return entry

    # -- bytes

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """A token: header (version, key id) + random nonce + ciphertext + tag."""
        if self._clock() >= self._next_check:
            self._look_for_new_keys()
        header, aead = self._aead(self.keyring.current_id)
        nonce = os.urandom(NONCE_SIZE)
        return header + nonce + aead.encrypt(nonce, plaintext, header + aad)

    def _look_for_new_keys(self) -> None:
        """Load keys added to the folder since we last looked; the highest becomes current.
        A folder we cannot read now (moved, a new key with loose permissions) is reported
        once and we go on with the keys we have: refusing to encrypt would refuse traffic."""
        self._next_check = self._clock() + KEY_CHECK_INTERVAL
        try:
            added = self.keyring.refresh()
        except (KeyringError, OSError) as exc:
            if str(exc) != self._folder_error:
                self._folder_error = str(exc)
                _log.warning("keys_folder_unreadable", key_id=self.keyring.current_id, error=str(exc))
            return
        self._folder_error = None
        if added:
            _log.info("keys_added", keys=list(added), folder=str(self.keyring.folder),
                      key_id=self.keyring.current_id)

    def decrypt(self, token: bytes, aad: bytes = b"") -> bytes:
        """The plaintext of ``token``; ``DecryptError`` if it was altered or the AAD differs,
        ``UnknownKeyError`` if its key is not in the keyring."""
        if not isinstance(token, bytes):
            token = bytes(token)  # memoryview / bytearray from a driver
        key_id = self.key_id_of(token)
        header, aead = self._aead(key_id)
        try:
            return aead.decrypt(token[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE],
                                token[HEADER_SIZE + NONCE_SIZE :], header + aad)
        except InvalidTag:
            raise DecryptError(
                f"encrypted value (key id {key_id}) failed authentication: it was altered, "
                "truncated, or belongs to another field/row (AAD mismatch)"
            ) from None

    @staticmethod
    def key_id_of(token: bytes) -> int:
        """The key id in a token's header (to find values still under an old key)."""
        if len(token) < OVERHEAD:
            raise DecryptError(
                f"not an encrypted value: {len(token)} bytes, shorter than the {OVERHEAD}-byte "
                "minimum"
            )
        if token[0] != VERSION:
            raise DecryptError(f"not an encrypted value: unknown format version {token[0]}")
        return int.from_bytes(token[1:HEADER_SIZE], "big")

    # -- text

    def encrypt_text(self, text: str, aad: bytes = b"") -> bytes:
        # surrogatepass: a lone surrogate from a UCS-2 message survives the round trip.
        return self.encrypt(text.encode("utf-8", "surrogatepass"), aad)

    def decrypt_text(self, token: bytes, aad: bytes = b"") -> str:
        data = self.decrypt(token, aad)
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise DecryptError("encrypted value is not text (invalid UTF-8)") from None

    # -- keyed hashes

    def lookup_hash(self, e164: str) -> bytes:
        """HMAC-SHA256(lookup key, "+33612345678") truncated to 16 bytes: the column we search.

        Keyed, because a plain hash of a phone number is no protection: the number space is
        small (≤ 10**15 in all, ~10**9 for one country's mobiles), so anyone with the database
        could hash every number and reverse the column in minutes. With a secret key they need
        the keys folder too.

        16 bytes (128 bits) is plenty: HMAC output is uniform, and even 10**10 distinct numbers
        collide with probability ~n²/2**129 ≈ 10**-19; a guessed 128-bit tag is hopeless. Half of
        SHA-256 keeps the index small.

        ``e164`` must already be normalised (``+`` and country code, e.g. by ``phonenumbers``);
        spaces, dots, dashes, slashes and brackets are dropped, anything else is a ValueError.
        The error does not echo the number (it is personal data and errors get logged).
        """
        number = e164.strip().translate(_E164_SEPARATORS)
        if not _E164.fullmatch(number):
            raise ValueError("not a normalised E.164 number (expected '+' then 2-15 digits)")
        mac = self._lookup_mac.copy()
        mac.update(number.encode("ascii"))
        return mac.digest()[:LOOKUP_HASH_SIZE]

    def pseudonymise(self, value: str, purpose: bytes) -> str:
        """A stable keyed pseudonym (16 hex chars) of ``value`` for records kept for billing.

        The key is derived from the lookup key and ``purpose`` (HMAC(lookup key, label +
        purpose), an HKDF-Expand style derivation), so pseudonyms for one purpose cannot be
        joined with another purpose's, nor with the look-up hashes. Same value, same purpose,
        same keys folder → same pseudonym. 64 bits: fine for grouping billing lines (a
        collision among 10**7 distinct values has probability ~3·10**-6) while not a look-up
        key. ``value`` is taken as given; normalise numbers first.
        """
        if not purpose:
            raise ValueError("pseudonymise needs a non-empty purpose")
        key = self._pseudonym_keys.get(purpose)
        if key is None:
            key = hmac.digest(self.keyring._lookup, _PSEUDONYM_LABEL + purpose + b"\x01",
                              "sha256")
            self._pseudonym_keys[bytes(purpose)] = key
        digest = hmac.digest(key, value.encode("utf-8", "surrogatepass"), "sha256")
        return digest[: PSEUDONYM_CHARS // 2].hex()

    def __repr__(self) -> str:
        return f"FieldCipher({self.keyring!r})"

    def __reduce__(self):
        raise TypeError("FieldCipher holds secret keys and cannot be pickled")

