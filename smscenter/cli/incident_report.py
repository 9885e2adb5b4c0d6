"""``smscenter incident report``: the first draft of a personal-data breach notification.

The provider note promises to notify the authority (the CNIL) within 24 hours of finding a
breach, and to tell the customers in the days after. What the authority asks first is what
the tables can answer: which categories of personal data, how many records, how many people,
where they live. This verb counts them, per account, for a window ``--since … --until …``,
and leaves the rest of the notification — nature of the breach, likely consequences, measures
taken, the DPO's contact, when it was found — as fields to fill in, in Markdown (to edit and
send) or JSON (to feed a form).

Two counts per category, because the right one depends on the breach:

- *processed*: records created in the window (messages submitted, MO received, opt-outs
  recorded) — an interception while they were carried;
- *held*: records created before ``--until`` and still stored — a copy of the database taken
  in the window holds these. Rows the retention purge removed since are not counted (they
  are gone), nor are the billing aggregates (they hold no personal data).

People are counted by keyed hash (``lookup_hash``: the same number gives the same hash in
every table), so "persons" per account is the distinct count over all its number categories;
the connection log's peer IPs are counted apart (distinct IPs; failed binds of no account
under "(no account)"). No number, text, hash or IP is printed. Countries come from
``messages.dest_country``.

Each category is one function returning a SELECT of ``(account, person, country)`` over its
window; the report's counts are built from those alone: a new category is one more function
in ``CATEGORIES``. Messages and MO are cut by id (ids are time-ordered: ``storage/ids.py``),
a primary-key range; opt-outs by ``created_at``; connections by ``at`` (indexed).

The verb (``incident_cli.py``) is a ``support`` verb (counts and hashes only, ``roles.py``);
each report leaves an audit row (``incident.report``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import Select, and_, func, null, select, union_all

from storage.purge import id_floor
from storage.schema import blacklist, connection_log, messages, mo_messages, parts

__all__ = ["CATEGORIES", "Category", "TO_FILL", "build_report", "to_markdown"]

#: The authority's notification fields the tables cannot answer: (key, heading, hint).
TO_FILL = (
    ("discovered_at", "When the breach was found", "date and time (UTC); the authority must be notified within 24 h of it"),
    ("nature", "Nature of the breach", "what happened: loss, theft, disclosure, unauthorised access, alteration; how; since when"),
    ("likely_consequences", "Likely consequences", "for the people concerned: spam or phishing on their numbers, disclosure of message contents …"),
    ("measures_taken", "Measures taken or proposed", "to end the breach and limit its effects: keys rotated, access closed, partners told …"),
    ("customers_informed", "Customers informed", "which partners were told, when, and what they were asked to do"),
    ("dpo_contact", "DPO contact", "name, e-mail and telephone of the data protection officer"),
)


@dataclass(frozen=True, slots=True)
class Category:
    """One kind of personal data: ``rows(since, until)`` selects ``(account, person,
    country)`` for each record created in [since, until); ``person`` is a keyed hash."""

    name: str
    description: str
    rows: Callable[[float, float], Select]
    #: Whether ``person`` is a number's keyed hash, counted in the distinct persons over
    #: the categories (a connection's peer IP is not: its distinct IPs are its own count).
    numbers: bool = True


def _numbers(since: float, until: float) -> Select:
    return select(messages.c.account.label("account"), messages.c.dest_hash.label("person"),
                  messages.c.dest_country.label("country")).where(
        and_(messages.c.id >= id_floor(since), messages.c.id < id_floor(until)))


def _texts(since: float, until: float) -> Select:
    return select(messages.c.account.label("account"), messages.c.dest_hash.label("person"),
                  messages.c.dest_country.label("country")).select_from(
        parts.join(messages, parts.c.message_id == messages.c.id)).where(
        and_(messages.c.id >= id_floor(since), messages.c.id < id_floor(until)))


def _mo(since: float, until: float) -> Select:
    return select(func.coalesce(mo_messages.c.account, "(unroutable)").label("account"),
                  mo_messages.c.source_hash.label("person"), null().label("country")).where(
        and_(mo_messages.c.id >= id_floor(since), mo_messages.c.id < id_floor(until)))


def _optouts(since: float, until: float) -> Select:
    return select(blacklist.c.scope.label("account"), blacklist.c.dest_hash.label("person"),
                  null().label("country")).where(
        and_(blacklist.c.created_at >= since, blacklist.c.created_at < until))


def _connection_ips(since: float, until: float) -> Select:
    return select(func.coalesce(connection_log.c.account, "(no account)").label("account"),
                  connection_log.c.peer_ip.label("person"), null().label("country")).where(
        and_(connection_log.c.at >= since, connection_log.c.at < until))


#: In the order the report shows them.
CATEGORIES: tuple[Category, ...] = (
    Category("numbers", "recipients' phone numbers (messages; encrypted, with a keyed hash)", _numbers),
    Category("texts", "message texts (stored segments; encrypted)", _texts),
    Category("mo", "MO received: senders' numbers and texts (encrypted)", _mo),
    Category("optouts", "opt-outs (keyed hashes of numbers, never purged)", _optouts),
    Category("connection_ips", "bind attempts' peer IPs (connection log; persons: distinct IPs)",
             _connection_ips, numbers=False),
)


def _counts(conn, since: float, until: float, account: str | None) -> tuple[dict[str, dict], dict]:
    """{account: {"categories": {name: {records, persons}}, "persons": n, "countries": {cc: n}}}
    for records created in [since, until), and the total over the accounts: {records,
    persons} (a person of two accounts counted once)."""
    out: dict[str, dict] = {}

    def entry(acc: str) -> dict:
        return out.setdefault(acc, {"categories": {}, "persons": 0, "countries": {}})

    subs = []
    for cat in CATEGORIES:
        sub = cat.rows(since, until).subquery()
        if cat.numbers:
            subs.append(select(sub.c.account, sub.c.person, sub.c.country))
        q = select(sub.c.account, func.count(), func.count(sub.c.person.distinct())).group_by(sub.c.account)
        if account is not None:
            q = q.where(sub.c.account == account)
        for acc, records, persons in conn.execute(q):
            entry(acc)["categories"][cat.name] = {"records": records, "persons": persons}
    every = union_all(*subs).subquery()
    scoped = (lambda q: q.where(every.c.account == account)) if account is not None else (lambda q: q)
    for acc, persons in conn.execute(scoped(
            select(every.c.account, func.count(every.c.person.distinct())).group_by(every.c.account))):
        entry(acc)["persons"] = persons  # numbers' hashes only: an IP is no number
    for acc, cc, persons in conn.execute(scoped(
            select(every.c.account, every.c.country, func.count(every.c.person.distinct()))
            .where(every.c.country.is_not(None)).group_by(every.c.account, every.c.country))):
        entry(acc)["countries"][cc] = persons
    records, persons = conn.execute(scoped(select(func.count(), func.count(every.c.person.distinct())))).one()
    records += sum(c["records"] for a in out.values() for n, c in a["categories"].items() if n in _NOT_NUMBERS)
    return out, {"records": records, "persons": persons}


_NOT_NUMBERS = {c.name for c in CATEGORIES if not c.numbers}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(conn, since: float, until: float, account: str | None = None, *, now: float | None = None) -> dict:
    """The report as a JSON-ready dict (synchronous ``Connection``): per account, each
    category's processed and held counts, the distinct persons and their countries, and the
    notification's fields to fill (None)."""
    processed, processed_total = _counts(conn, since, until, account)
    held, held_total = _counts(conn, 0.0, until, account)
    accounts = []
    for acc in sorted(set(processed) | set(held)):
        p, h = processed.get(acc, {}), held.get(acc, {})
        zero = {"records": 0, "persons": 0}
        accounts.append({
            "account": acc,
            "categories": [
                {"category": cat.name, "description": cat.description,
                 "processed": p.get("categories", {}).get(cat.name, zero),
                 "held": h.get("categories", {}).get(cat.name, zero)}
                for cat in CATEGORIES
            ],
            "persons": {"processed": p.get("persons", 0), "held": h.get("persons", 0)},
            "countries": {"processed": dict(sorted(p.get("countries", {}).items())),
                          "held": dict(sorted(h.get("countries", {}).items()))},
        })
    return {
        "title": "Personal data breach: notification draft",
        "generated_at": _iso(time.time() if now is None else now),
        "window": {"since": _iso(since), "until": _iso(until)},
        "account": account,
        "notify_within": "24 hours of the breach being found (the CNIL); customers in the days after",
        "accounts": accounts,
        "total": {"processed": processed_total, "held": held_total},
        "counted": [{"category": c.name, "description": c.description} for c in CATEGORIES],
        "to_fill": {key: None for key, _, _ in TO_FILL},
    }


def to_markdown(report: dict) -> str:
    w = report["window"]
    lines = [
        f"# {report['title']}",
        "",
        f"- Window: {w['since']} to {w['until']} (UTC)" + (f", account {report['account']}" if report["account"] else ""),
        f"- Generated: {report['generated_at']}",
        f"- Notify: {report['notify_within']}",
        "",
        "*Processed*: records created in the window. *Held*: records created before its end and "
        "still stored (what a copy of the database taken then holds). Persons are counted by keyed "
        "hash of their number; no number or text appears here.",
        "",
        "## Personal data concerned",
    ]
    if not report["accounts"]:
        lines += ["", "No personal data stored or processed in the window."]
    for acc in report["accounts"]:
        lines += ["", f"### Account {acc['account']}", "",
                  "| Category | Processed: records | Processed: persons | Held: records | Held: persons |",
                  "|---|---:|---:|---:|---:|"]
        for c in acc["categories"]:
            lines.append(f"| {c['category']}: {c['description']} | {c['processed']['records']} | "
                         f"{c['processed']['persons']} | {c['held']['records']} | {c['held']['persons']} |")
        lines.append(f"| **distinct persons** | | {acc['persons']['processed']} | | {acc['persons']['held']} |")
        for scope in ("processed", "held"):
            cc = acc["countries"][scope]
            shown = ", ".join(f"{k} {v}" for k, v in cc.items()) or "none recorded"
            lines.append(f"\nCountries ({scope}, persons): {shown}")
    t = report["total"]
    lines += ["", "### All accounts", "",
              f"Processed: {t['processed']['records']} records, {t['processed']['persons']} distinct persons. "
              f"Held: {t['held']['records']} records, {t['held']['persons']} distinct persons "
              "(by number: a person of several accounts counted once; connection IPs apart)."]
    lines += ["", "## To fill in"]
    for key, heading, hint in TO_FILL:
        lines += ["", f"### {heading}", "", f"_To fill in: {hint.rstrip('.')}_"]
    return "\n".join(lines) + "\n"
