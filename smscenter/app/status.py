"""What ``smscenter status`` shows: a snapshot of the running daemon, and its text rendering.

``snapshot(daemon)`` runs in the daemon (the control socket's ``status`` command) and returns
plain JSON values — what ``--json`` prints, field by field documented in the README. It holds
no personal data: accounts, connectors, countries, counts, times and the partners' addresses,
never a number or a text (the queue's and outbox's rows are counted in the database, not
read). ``render(status)`` runs in the CLI and turns it into tables for a person.

Times are UNIX seconds on the daemon's wall clock. Links and connectors stamp theirs on the
monotonic clock (their keep-alive must not jump with the wall clock); they are turned into
wall-clock times here, by their age.
"""

from __future__ import annotations

import os

from smscenter import __version__
from smscenter.app.retention import next_slot
from smscenter.runtime.timers import utc_stamp


async def snapshot(d) -> dict:
    """The daemon ``d``'s state now (``smscenter.app.daemon.Daemon``, started)."""
    now = d.clock()
    mono = d.link_timers.now()

    def wall(stamp: float | None) -> float | None:
        return None if stamp is None else now - (mono - stamp)

    outbox = await d.store.outbox_counts()
    held = await d.store.held_by_country(now)
    return {
        "version": __version__,
        "pid": os.getpid(),
        "now": now,
        "started_at": d.started_at,
        "uptime_seconds": max(0.0, now - d.started_at),
        "listen": [f"{host}:{port}" for host, port in d.server.addresses],
        "accounts": _accounts(d, outbox, wall),
        "connectors": [_connector(c, d, mono, wall) for c in d.connectors.values()],
        "queue": {
            "messages": d.dispatcher.queued,
            "resident": d.dispatcher.resident,
            "held_for_window": d.dispatcher.held(),
        },
        "held": [
            {"country": country, "messages": n, "next_due_at": due}
            for country, (n, due) in sorted(held.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
        ],
        "retention": {
            "last_run_at": d.retention.purger.last_run_at,
            "runs": d.retention.runs,
            "next_run_at": next_slot(now, d.retention.purge_at),
        },
    }


def _accounts(d, outbox: dict[str, int], wall) -> list[dict]:
    out = []
    for system_id, state in d.server.registry.accounts.items():
        binds = [
            {
                "type": b.bind_type,
                "peer": _address(b.link.peer),
                "since": wall(b.since),
                "in_flight": b.link.session.pending,  # its requests we have not answered yet
                "deliveries_in_flight": b.link.in_flight,  # our deliver_sm it has not answered
            }
            for b in state.binds
        ]
        out.append({"system_id": system_id, "configured": True, "binds": binds, "outbox": outbox.get(system_id, 0)})
    # Owed to accounts gone from the config (kept until retention ends): still a backlog.
    for system_id in sorted(set(outbox) - set(d.server.registry.accounts)):
        out.append({"system_id": system_id, "configured": False, "binds": [], "outbox": outbox[system_id]})
    return out


def _connector(c, d, mono: float, wall) -> dict:
    window = sum(link.session.window for link in c.links)
    entry = {
        "name": c.name,
        "state": c.state,
        "since": wall(c.state_since),
        "binds": {"bound": len(c.links), "planned": len(c.bind_plan())},
        "window": {"in_use": sum(link.in_flight for link in c.links), "size": window},
        "rate": {"per_second": c.rate.per_second(mono), "throughput": c.config.throughput},
        "last_error": None if c.last_error is None else {"error": c.last_error, "at": wall(c.last_error_at)},
        "queue": {
            "resident": d.dispatcher.resident_by_connector().get(c.name, 0),
            "waiting": c.waiting,
            "in_flight": c.in_flight,
        },
        # message_id: configured, learnt by "auto" from receipts, or "auto" while learning
        "id_convention": c.id_convention,
    }
    return entry


def _address(peer) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


# --------------------------------------------------------------------------- text for people


def render(status: dict) -> str:
    """``status`` as the tables ``smscenter status`` prints (times in UTC)."""
    now = status["now"]
    lines = [
        (f"smscenter {status['version']}  pid {status['pid']}  up {_duration(status['uptime_seconds'])} "
         f"(since {utc_stamp(status['started_at'])} UTC)  listening on {', '.join(status['listen']) or '-'}"),
        "",
        "ACCOUNT          BIND         PEER                   SINCE                 IN FLIGHT  DELIVERING  OUTBOX",
    ]
    for acc in status["accounts"]:
        name = acc["system_id"] + ("" if acc["configured"] else " (gone)")
        if not acc["binds"]:
            lines.append(f"{name:<16} {'-':<12} {'-':<22} {'-':<21} {'':>9}  {'':>10}  {acc['outbox']:>6}")
        for i, b in enumerate(acc["binds"]):
            outbox = f"{acc['outbox']:>6}" if i == 0 else ""
            lines.append(f"{name if i == 0 else '':<16} {b['type']:<12} {b['peer']:<22} {utc_stamp(b['since']):<21} "
                         f"{b['in_flight']:>9}  {b['deliveries_in_flight']:>10}  {outbox}")
    lines += ["", "CONNECTOR        STATE    SINCE                 BINDS  WINDOW    RATE/S (MAX)  QUEUED  WAITING  LAST ERROR"]
    for c in status["connectors"]:
        window = f"{c['window']['in_use']}/{c['window']['size']}"
        binds = f"{c['binds']['bound']}/{c['binds']['planned']}"
        rate = f"{c['rate']['per_second']:.1f}/{c['rate']['throughput']}"
        error = "-"
        if c["last_error"] is not None:
            error = f"{c['last_error']['error']} ({_ago(now, c['last_error']['at'])})"
        lines.append(f"{c['name']:<16} {c['state']:<8} {utc_stamp(c['since']):<21} {binds:>5}  {window:<8} {rate:>13}  "
                     f"{c['queue']['resident']:>6}  {c['queue']['waiting'] + c['queue']['in_flight']:>7}  {error}")
        if c["id_convention"] != "auto":
            lines.append(f"{'':<16} upstream ids: {c['id_convention']}")
    q = status["queue"]
    lines += ["", (f"QUEUE  {q['messages']} messages waiting ({q['resident']} in memory), "
                   f"{q['held_for_window']} held for their send window")]
    if status["held"]:
        lines.append("HELD   COUNTRY  MESSAGES  NEXT DUE")
        for h in status["held"]:
            lines.append(f"       {h['country'] or '?':<7}  {h['messages']:>8}  {utc_stamp(h['next_due_at'])}")
    r = status["retention"]
    last = "never" if r["last_run_at"] is None else f"{utc_stamp(r['last_run_at'])} ({_ago(now, r['last_run_at'])})"
    lines += ["", f"RETENTION  last run {last}, {r['runs']} since start, next {utc_stamp(r['next_run_at'])}"]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def _ago(now: float, ts: float | None) -> str:
    return "-" if ts is None else f"{_duration(max(0.0, now - ts))} ago"
