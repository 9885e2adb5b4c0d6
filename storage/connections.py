"""The connection log's statements: write a batch of bind attempts, read them back.

Each function runs on a synchronous SQLAlchemy ``Connection`` (the caller opens the
transaction, or uses ``run_sync``): the daemon's ``smscenter/pipeline/connlog.py`` writes, the CLI's
``smscenter/cli/connections.py`` reads, ``storage/purge.py`` (``CONNECTIONS``) deletes by age.

A row holds no password and no message content: time, system_id as the peer sent it, the
account when that system_id is one, the peer's IP and port, the bind type, TLS or not, and
the command_status answered (NULL when the peer hung up before its answer).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select

from .schema import connection_log, messages

#: SMPP 3.4 §5.2.1: system_id is a C-Octet String of at most 16 octets, its NUL included.
SYSTEM_ID_MAX = 15
#: The longest textual IP address (an IPv6 with an embedded IPv4).
PEER_IP_MAX = 45


@dataclass(frozen=True, slots=True)
class Filters:
    """What ``connections list`` asks for; None: no condition."""

    account: str | None = None
    ip: str | None = None
    since: float | None = None
    failed: bool = False
    limit: int = 100


def insert_rows(conn: Connection, rows: list[dict]) -> int:
    """One multi-row insert (executemany): the rows of a batch, as ``connlog`` built them."""
    if not rows:
        return 0
    conn.execute(connection_log.insert(), rows)
    return len(rows)


def max_id(conn: Connection) -> int:
    """The largest id stored (0 when empty): the writer's ids go on from there."""
    return conn.execute(select(func.max(connection_log.c.id))).scalar() or 0


def list_rows(conn: Connection, filters: Filters) -> list[dict]:
    """Rows matching ``filters``, newest first, at most ``limit``."""
    c = connection_log.c
    where = []
    if filters.account is not None:
        where.append(c.account == filters.account)
    if filters.ip is not None:
        where.append(c.peer_ip == filters.ip)
    if filters.since is not None:
        where.append(c.at >= filters.since)
    if filters.failed:
        where.append(or_(c.status.is_(None), c.status != 0))
    query = select(connection_log).where(*where).order_by(c.at.desc(), c.id.desc()).limit(filters.limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def last_connection(conn: Connection, account: str) -> dict | None:
    """The account's newest bind attempt (an index range on (account, at), read backwards)."""
    c = connection_log.c
    row = conn.execute(
        select(c.at, c.peer_ip, c.peer_port, c.status, c.bind_type)
        .where(c.account == account).order_by(c.at.desc(), c.id.desc()).limit(1)
    ).mappings().first()
    return dict(row) if row is not None else None


def last_submit(conn: Connection, account: str) -> float | None:
    """When the account's newest stored message was submitted (None: none stored). Ordered
    and limited rather than ``max()``: the submitted_at index is walked from its end and the
    walk stops at the account's first row, quick for an account that sends."""
    return conn.execute(
        select(messages.c.submitted_at).where(messages.c.account == account)
        .order_by(messages.c.submitted_at.desc()).limit(1)
    ).scalar()


__all__ = [
    "Filters", "PEER_IP_MAX", "SYSTEM_ID_MAX", "insert_rows", "last_connection", "last_submit",
    "list_rows", "max_id",
]
