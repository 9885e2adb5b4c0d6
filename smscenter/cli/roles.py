"""Who may run which administrator verb, and the audit row each one leaves.

Three roles, by what they may read (the provider note: access to data according to each
person's role):

- ``dpo`` reads personal data in clear: the data-encryption keys (``dek-*.key``) and the
  look-up key. Verbs: ``subject export|erase``, ``account purge``, ``mo list
  --show-numbers``, ``keys``, anything that decrypts.
- ``support`` works with keyed hashes only: the look-up key (``lookup.key``). Verbs:
  ``blacklist``, ``connections``, ``accounts``, ``billing``, ``mo list``, ``audit list``,
  ``incident report``.
- ``ops`` reads no key: ``db status|upgrade``, ``retention run``, ``check-config``,
  status-like verbs.

How it is enforced: by the file system, not by this code. The keys folder's files get a
group each (README "Roles"): ``dek-*.key`` mode 0640 group ``smscenter-dpo``, ``lookup.key``
0640 group ``smscenter-support``, the folder 0750 group ``smscenter-support``, all owned by the
daemon's user; a dpo is a member of both groups. A user who cannot read a file cannot get its
key, whatever flag they give a verb. ``storage.crypto`` allows group read on key files (never
group write nor any "other" bit) and a look-up-only keyring for support.

``keyring_for`` is the one door to the keys for a verb: it loads what the role needs and
nothing more (support: ``Keyring.load_lookup``, the DEK files are not even opened), or raises
``RoleError`` saying which role the verb needs — before the verb touches the database.
``audit`` writes the row that every verb reading clear data or changing data leaves (OS user,
verb, scope, counts — never a number in clear); ``smscenter audit list`` reads them.
"""

from __future__ import annotations

import enum
import os
import pwd
import time
from pathlib import Path
from typing import Any

__all__ = ["CLI_NODE", "Role", "RoleError", "audit", "current_actor", "keyring_for"]

#: Node id of the ids the CLI makes (audit rows): the daemons use the low ones, so two
#: writers never make the same id in the same millisecond.
CLI_NODE = 1023


class Role(enum.Enum):
    OPS = "ops"
    SUPPORT = "support"
    DPO = "dpo"


class RoleError(Exception):
    """The caller cannot read the keys the verb needs: printed, exit 1, nothing read."""


def current_actor() -> str:
    """Who runs the verb, for the audit row: the OS user of the real uid; when that is root
    and the verb runs under ``sudo``, the user behind it (``$SUDO_USER``). Other environment
    variables are not trusted: any user can set ``$USER``."""
    uid = os.getuid()
    if uid == 0 and os.environ.get("SUDO_USER"):
        return os.environ["SUDO_USER"]
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no user database entry (containers)
        return f"uid:{uid}"


#: What each role reads in the keys folder, for the "this needs the … role" message.
_NEEDS = {Role.SUPPORT: "lookup.key", Role.DPO: "dek-*.key and lookup.key"}


def keyring_for(settings: Any, role: Role, verb: str):
    """The keys ``verb`` needs under ``role``, loaded read-only: None for ``ops``, a
    look-up-only ``Keyring`` for ``support`` (hashes; decrypting raises ``NoDataKeyError``),
    the whole keyring for ``dpo``.

    Raises ``RoleError`` ("this needs the … role (read access to …)") when the keys cannot be
    read; call it before any database access, so a refused verb reads nothing.
    """
    if role is Role.OPS:
        return None
    from storage.crypto import Keyring, KeyringError

    folder = Path(settings.storage.keys)
    try:
        if role is Role.SUPPORT:
            return Keyring.load_lookup(folder)
        return Keyring.load(folder)
    except (KeyringError, OSError) as exc:
        raise RoleError(
            f"{verb}: this needs the {role.value} role (read access to {_NEEDS[role]} in {folder}): {exc}"
        ) from None


async def audit(engine: Any, verb: str, scope: str, detail: str, *, actor: str | None = None,
                dest_hash: bytes | None = None, clock=time.time) -> None:
    """One audit row: ``verb`` (``subject.export``), ``scope`` (an account or ``*``),
    ``detail`` (counts, never a number in clear), in its own transaction."""
    from storage.ids import IdGenerator
    from storage.schema import audit_log
    from storage.store import max_ids

    ids = IdGenerator(node=CLI_NODE, clock=clock)
    ids.seed((await max_ids(engine))["audit_log"] + 1)
    async with engine.begin() as conn:
        await conn.execute(
            audit_log.insert().values(
                id=ids.next(), at=clock(), actor=(actor or current_actor())[:64], action=verb[:32],
                scope=scope[:24], dest_hash=dest_hash, detail=detail[:256],
            )
        )
