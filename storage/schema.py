"""The database schema (SQLAlchemy Core tables). Alembic migrations create it.

Personal data never sits in clear: destination numbers and message bodies are AES-GCM
tokens (``*_enc`` columns, see ``crypto.py``), and look-ups by number use a keyed hash
(``dest_hash``). Times are UNIX seconds as floats: one representation for SQLite and
PostgreSQL, cheap to compare, no time-zone ambiguity.

Tables:
- ``messages``: one row per partner message (our 64-bit id), its final state and receipt
  wishes, and the id of the ``submit_multi`` it came from, if any (migration 0015);
- ``parts``: one row per segment sent upstream — also the durable MT queue (``state``,
  ``next_attempt_at``: when the dispatcher next looks at it — its schedule, its send window's
  opening, its retry, or its validity's end if sooner) and the receipt correlation key
  ``(connector, upstream_id)``;
- ``outbox``: everything owed to a partner (receipts, MO) until the partner acknowledged it;
- ``early_receipts``: upstream receipts that arrived before the ``submit_sm_resp`` that
  tells us which message they belong to;
- ``meta``: small facts about the database itself (schema, key fingerprint);
- ``billing_days``: what billing keeps of purged messages — counts per account, day,
  country, category, sender and final state, no number (migration 0009);
- ``jobs``: when each periodic job (the retention purge) last ran, so that a restart knows
  whether one is overdue;
- ``connection_log``: every bind attempt on the partner listener, never a password
  (migration 0010).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()

# parts.state values besides the final MessageState values (2..5, 8) reused as-is.
PART_QUEUED = 0  # waiting to be sent (possibly until next_attempt_at / not_before)
PART_SENDING = 1  # handed to a connector, no submit_sm_resp yet
PART_SUBMITTED = 10  # upstream accepted it (ENROUTE); waiting for its receipt
PART_PENDING_STATES = (PART_QUEUED, PART_SENDING)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("account", String(16), nullable=False),
    Column("category", String(10), nullable=False),
    Column("source_addr", String(21), nullable=False),  # a sender ID or short code: not personal
    Column("source_ton", SmallInteger, nullable=False),
    Column("source_npi", SmallInteger, nullable=False),
    Column("dest_hash", LargeBinary(16), nullable=False),
    Column("dest_enc", LargeBinary, nullable=False),
    Column("data_coding", SmallInteger, nullable=False),
    Column("registered_delivery", SmallInteger, nullable=False),
    Column("priority", SmallInteger, nullable=False, default=0),
    Column("parts_total", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),  # protocol.constants.MessageState
    Column("error", BigInteger, nullable=False, default=0),  # upstream error code (u32), if any
    Column("submitted_at", Float, nullable=False),
    Column("not_before", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("done_at", Float, nullable=True),
    Column("connector", String(64), nullable=True),  # last connector that carried it
    # Token of the unsubscribe link in the text (destinations that cannot reply STOP).
    Column("unsub_token", String(8), nullable=True),
    # ISO region of the destination (from the number, at submit): billing keeps it once the
    # number is gone (migration 0009; None in older rows, derived at purge).
    Column("dest_country", String(2), nullable=True),
    # The id a submit_multi was answered with, on each of its messages (migration 0015):
    # receipts to the partner carry it as their id; NULL for every other message.
    Column("multi_id", BigInteger, nullable=True),
    Index("ix_messages_submitted_at", "submitted_at"),
)

parts = Table(
    "parts",
    metadata,
    Column("message_id", BigInteger, nullable=False),
    Column("part_no", SmallInteger, nullable=False),
    Column("pdu_enc", LargeBinary, nullable=False),  # the upstream submit_sm, encrypted
    Column("state", SmallInteger, nullable=False),
    Column("connector", String(64), nullable=True),
    Column("upstream_id", String(80), nullable=True),  # normalised: 64 hex digits → ≤ 78 decimal
    Column("attempts", SmallInteger, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("message_id", "part_no"),
    Index("ix_parts_upstream", "connector", "upstream_id"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # time-ordered, from ids.py
    Column("account", String(16), nullable=False),
    Column("kind", SmallInteger, nullable=False),  # OUTBOX_RECEIPT | OUTBOX_MO
    Column("message_id", BigInteger, nullable=True),
    Column("pdu_enc", LargeBinary, nullable=False),  # the deliver_sm to send, encrypted
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_outbox_account", "account", "id"),
)

OUTBOX_RECEIPT = 1
OUTBOX_MO = 2

early_receipts = Table(
    "early_receipts",
    metadata,
    Column("connector", String(64), nullable=False),
    Column("upstream_id", String(80), nullable=False),
    # The upstream's deliver_sm, encrypted: only in rows kept before migration 0006.
    Column("pdu_enc", LargeBinary, nullable=True),
    Column("received_at", Float, nullable=False),
    Column("state", SmallInteger, nullable=True),  # MessageState (None in older rows)
    Column("error", BigInteger, nullable=True),
    PrimaryKeyConstraint("connector", "upstream_id"),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)

# --- opt-outs, invalid numbers, MO (migration 0002) ---------------------------------------

#: Blacklist entries are keyed by scope: an account's system_id, or "sc:<short code>" for a
#: platform-level opt-out on a shared short code. Numbers are keyed hashes only: an opt-out
#: must outlive every retention purge, so it must hold nothing personal in clear.
blacklist = Table(
    "blacklist",
    metadata,
    Column("scope", String(24), nullable=False),
    Column("dest_hash", LargeBinary(16), nullable=False),
    Column("source", String(16), nullable=False),  # stop | manual | import | link
    Column("created_at", Float, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("confirmed_at", Float, nullable=True),  # last confirmation SMS sent
    PrimaryKeyConstraint("scope", "dest_hash"),
)

#: Numbers an upstream reported as permanently invalid: refused (RINVDSTADR) until expiry.
invalid_numbers = Table(
    "invalid_numbers",
    metadata,
    Column("dest_hash", LargeBinary(16), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: Mobile-originated messages (replies): kept (encrypted) for routing, the partner's outbox
#: and ``smscenter mo list`` of the unroutable ones.
mo_messages = Table(
    "mo_messages",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("received_at", Float, nullable=False),
    Column("connector", String(64), nullable=False),
    Column("short_code", String(21), nullable=False),
    Column("source_hash", LargeBinary(16), nullable=True),  # None: not a valid number
    Column("source_enc", LargeBinary, nullable=False),
    Column("text_enc", LargeBinary, nullable=False),
    Column("data_coding", SmallInteger, nullable=False),
    Column("account", String(16), nullable=True),  # None: unroutable
    Column("status", String(16), nullable=False),  # routed | optout | unroutable
    Column("reason", String(64), nullable=False),
    Index("ix_mo_status", "status", "received_at"),
)

#: Who changed or read what: blacklist changes (the daemon follows them) and every CLI verb
#: reading clear data or changing data (``smscenter/cli/roles.py``). No numbers in clear.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("scope", String(24), nullable=False),
    Column("dest_hash", LargeBinary(16), nullable=True),
    Column("detail", String(256), nullable=False),
)

Index("ix_messages_dest", messages.c.dest_hash, messages.c.submitted_at)
#: ``smscenter audit list`` newest first, cut by ``--since`` (migration 0011).
Index("ix_audit_at", audit_log.c.at)
#: The queue's due order (migration 0007): only waiting parts are in it, so paging through
#: the queue by (next_attempt_at, message_id) never reads the settled bulk of the table.
_WAITING = parts.c.state.in_(PART_PENDING_STATES)
Index(
    "ix_parts_due", parts.c.next_attempt_at, parts.c.message_id, parts.c.part_no,
    sqlite_where=_WAITING, postgresql_where=_WAITING,
)
#: The parts out upstream, waiting for their receipt (migration 0008): housekeeping's look-up.
_OUT = parts.c.state == PART_SUBMITTED
Index("ix_parts_submitted", parts.c.message_id, sqlite_where=_OUT, postgresql_where=_OUT)
# Partial: most messages carry no unsubscribe link, and every index costs each insert.
_WITH_TOKEN = messages.c.unsub_token.isnot(None)
Index("ix_messages_unsub_token", messages.c.unsub_token, sqlite_where=_WITH_TOKEN, postgresql_where=_WITH_TOKEN)
#: A submit_multi's messages by its id (migration 0015). Partial: most messages have none.
_WITH_MULTI = messages.c.multi_id.isnot(None)
Index("ix_messages_multi_id", messages.c.multi_id, sqlite_where=_WITH_MULTI, postgresql_where=_WITH_MULTI)
#: MO by the sender's keyed hash (migration 0012): a data-subject export or erasure
#: (``storage/subject.py``) finds a number's replies without reading the table.
Index("ix_mo_source", mo_messages.c.source_hash)
#: The partners' copies of MO in the outbox (rows without a message, migration 0012): what
#: those requests decrypt to find a number's, without reading every receipt.
_NO_MESSAGE = outbox.c.message_id.is_(None)
Index("ix_outbox_mo", outbox.c.id, sqlite_where=_NO_MESSAGE, postgresql_where=_NO_MESSAGE)

# --- retention (migration 0009) -----------------------------------------------------------

#: Messages by end time: the retention purge takes the oldest ended ones first, a range scan.
Index("ix_messages_done_at", messages.c.done_at)
#: Outbox rows of a message (receipts): deleted with it. Partial: MO rows have no message.
_WITH_MESSAGE = outbox.c.message_id.isnot(None)
Index("ix_outbox_message", outbox.c.message_id, sqlite_where=_WITH_MESSAGE, postgresql_where=_WITH_MESSAGE)

#: Billing aggregates, written by the purge in the transaction that deletes the messages
#: counted (``storage/purge.py``). ``day`` is the UTC day of submission (YYYY-MM-DD),
#: ``country`` the destination's ISO region ("" when unknown), ``state`` the final
#: MessageState: enough for invoices and disputes, nothing that names a person.
billing_days = Table(
    "billing_days",
    metadata,
    Column("account", String(16), nullable=False),
    Column("day", String(10), nullable=False),
    Column("country", String(2), nullable=False),
    Column("category", String(10), nullable=False),
    Column("sender", String(21), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("messages", BigInteger, nullable=False),
    Column("segments", BigInteger, nullable=False),
    PrimaryKeyConstraint("account", "day", "country", "category", "sender", "state"),
)

#: Periodic jobs' last runs (UNIX seconds), by job name.
jobs = Table(
    "jobs",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("last_run_at", Float, nullable=False),
    Column("detail", String(512), nullable=False, default=""),
)

# --- connection log (migration 0010) ------------------------------------------------------

#: Every bind attempt on the partner listener (``smscenter/pipeline/connlog.py``): when, the system_id
#: as sent (cut to its SMPP maximum, 15 octets), the account when the system_id is one, the
#: peer's address, the bind type, TLS or not, and the command_status answered (None: the peer
#: hung up before its answer). Never a password. Kept ``[retention] connections`` (12 months).
connection_log = Table(
    "connection_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # time-ordered, from ids.py
    Column("at", Float, nullable=False),
    Column("system_id", String(16), nullable=False),
    Column("account", String(16), nullable=True),
    Column("peer_ip", String(45), nullable=False),
    Column("peer_port", Integer, nullable=False),
    Column("bind_type", String(12), nullable=False),
    Column("tls", Boolean, nullable=False),
    Column("status", Integer, nullable=True),
    #: By age: the retention purge and ``--since``.
    Index("ix_connection_log_at", "at"),
    #: An account's connections, newest first: ``connections list --account``, ``accounts``.
    Index("ix_connection_log_account", "account", "at"),
)

# --- webhooks (migration 0013) -------------------------------------------------------------

#: The webhook subscriber's backlog (``smscenter/pipeline/webhook_backlog.py`` writes it in
#: the transaction of each event's cause; ``smscenter/http/webhooks.py`` delivers and deletes
#: it): one row per event owed to an account's ``receipt_url`` or ``mo_url``, its JSON
#: payload encrypted (an MO's carries the sender's number and text), kept until the receiver
#: answered 2xx or ``expires_at`` (the account's message-details retention) passed.
webhook_backlog = Table(
    "webhook_backlog",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # time-ordered, from ids.py
    Column("account", String(16), nullable=False),
    Column("kind", SmallInteger, nullable=False),  # WEBHOOK_RECEIPT | WEBHOOK_MO (MO and opt-outs: mo_url's)
    Column("message_id", BigInteger, nullable=True),  # receipts: our message id
    Column("payload_enc", LargeBinary, nullable=False),  # the JSON body, encrypted
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    #: An account's rows due now, soonest first (the sender's pump for that account).
    Index("ix_webhook_due", "account", "next_attempt_at", "id"),
    #: An account's oldest row (``webhook_ordered``: the head of its line) and its depth.
    Index("ix_webhook_account", "account", "id"),
    #: A message's rows (migration 0015): a subject's erase and an account's purge delete
    #: an erased message's receipts by ``message_id``.
    Index("ix_webhook_message", "message_id"),
)

WEBHOOK_RECEIPT = 1
WEBHOOK_MO = 2

# --- the HTTPS API's idempotency keys (migration 0014) --------------------------------------

api_idempotency = Table(
    "api_idempotency",
    metadata,
    Column("account", String(16), nullable=False),
    Column("key_hash", LargeBinary(32), nullable=False),  # keyed hash of the Idempotency-Key
    Column("request_hash", LargeBinary(32), nullable=False),  # keyed hash of the body it answered
    Column("status", SmallInteger, nullable=False),
    Column("answer", Text, nullable=False),  # JSON, each recipient as its index: no number
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("account", "key_hash"),
    Index("ix_api_idempotency_created", "created_at"),
)
