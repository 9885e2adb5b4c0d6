"""Who may run which administrator verb, and the audit row each one leaves.

Three roles, by what they may read (the provider note: access to data according to each
person's role):

- ``dpo`` reads personal data in clear: the data-encryption keys (``dek-*.key``) and the
  look-up key. Verbs: ``subject export|erase``, ``mo list --show-numbers``, anything that
  decrypts.
- ``support`` works with keyed hashes only: the look-up key (``lookup.key``). Verbs:
  ``blacklist``, ``connections``, ``billing``, ``mo list``.
- ``ops`` reads no key: ``db status``, ``check-config``, status-like verbs.

``keyring_for`` is the one door to the keys for a verb: it loads what the role needs and
nothing more, or says which role the verb needs. ``audit`` writes the row that every verb
reading clear data or changing data leaves (OS user, verb, scope, counts — never a number in
clear); ``smscenter audit list`` reads them.
"""

from __future__ import annotations

import enum
import getpass
import os
import time
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
    """Who runs the verb: the user behind sudo, else the current OS user."""
    for name in ("SUDO_USER", "USER", "LOGNAME"):
        value = os.environ.get(name)
        if value:
            return value
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database entry (containers)
        return f"uid:{os.getuid()}"


def keyring_for(settings: Any, role: Role, verb: str):
    """The keys ``verb`` needs under ``role`` (None for ``ops``), loaded read-only.

    Raises ``RoleError`` ("this needs the … role") when the keys cannot be read, before any
    data is touched.
    """
    if role is Role.OPS:
        return None
    from storage.crypto import Keyring, KeyringError

    try:
        return Keyring.load(settings.storage.keys)
    except (KeyringError, OSError) as exc:
        raise RoleError(f"{verb}: this needs the {role.value} role: {exc}") from None


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
