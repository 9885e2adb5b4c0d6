"""Live reload (SIGHUP, ``systemctl reload``): the config file read again and applied
without dropping a bound session or a queued message.

Why it is all or nothing: an administrator who reloads expects either the file they wrote
or the one that was running, never a mix. So the file is loaded and validated whole by the
same loader as at start (``load_settings``: every error with its key path), then compared
with the running settings section by section. A change that only a restart can apply
(any section but ``LIVE`` below: where the storage and the keys are, what we listen on,
the partner sessions' server settings, the queue, the HTTP listener, ``[optout]``) refuses
the reload, naming the keys, and nothing else is applied either. Otherwise every change is
applied in one go, in an order that loses nothing:

- logging: level and format at once;
- accounts: passwords, short codes, sender IDs, keywords, rates, windows, categories and
  retention overrides for the next request of their binds (bound sessions stay, tokens
  earned are kept); new accounts may bind; a removed account's sessions are unbound (what
  it has queued stays in storage and still goes out; its receipts wait in the outbox);
- connectors: new and changed ones are put in place first (a changed one as a new
  connector under the same name: re-bound with its new settings), so that the new routes
  find them; then removed and replaced ones are drained (what waits for their rate fails
  over or is retried, what is on the wire gets its answer within ``shutdown_grace``) and
  stopped, and the new ones started;
- routes: new submits follow them, and so do the messages in the queue's memory (those in
  the database are routed when they are loaded);
- webhooks (``http/webhooks.py``): an account's URLs, secret, order and CA for its next
  attempt (a new session where a URL or the CA changed, the old one closed once its
  requests under way end); an account added gets its pump, one removed (or left without a
  URL) keeps nothing running and its backlog rows wait in the database. The subscriptions
  (which events make rows) change with the policies, in the same reload. ``[webhooks]``
  (the process-wide limits, timeout and backoff) needs a restart: every session and the
  shared in-flight limit are sized by it;
- send windows, retention (the purge's periods and time, the receipts' and MO's wait in the
  outbox, also in the SQLite writer process) and MO routing by short code and keyword.

The outcome is a dict (``{"ok", "changes", "errors", "restart_needed"}``) for the control
socket, and a log line, ``reload_done`` or ``reload_refused``: key paths, names of accounts
and connectors, never a number, a text or a password.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from routing.windows import SendWindows

import smscenter.app.systemd as systemd
from smscenter.config import ConfigError, Settings, load_settings
from smscenter.smpp.connector import Connector
from smscenter.app.daemon import Daemon, route_table
from smscenter.app.logs import configure_logging
from smscenter.pipeline.receipts import AccountPolicies, daemon_transaction

log = structlog.get_logger("smscenter.reload")

#: Config sections (TOML names) applied live. Any other section's change needs a restart.
LIVE = frozenset({"account", "connector", "route", "windows", "retention", "logging"})


def compare(old: Settings, new: Settings) -> tuple[list[str], list[str]]:
    """``(changes, restart_needed)`` from the running settings to a reloaded file's: what
    a reload would apply, in words, and the key paths of what only a restart can apply."""
    changes: list[str] = []
    restart: list[str] = []
    for name, field in Settings.model_fields.items():
        key = field.alias or name
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if key not in LIVE:
            restart += _changed_keys(key, before, after)
        elif key == "account":
            changes += _by_name("account", "system_id", before, after)
        elif key == "connector":
            changes += _by_name("connector", "name", before, after)
        elif key == "route":
            changes += _by_position("route", before, after)
        elif key == "logging":
            changes += [f"logging.{k}: {getattr(before, k)} -> {getattr(after, k)}"
                        for k in type(before).model_fields if getattr(before, k) != getattr(after, k)]
        else:
            changes += [f"{path}: changed" for path in _changed_keys(key, before, after)]
    return changes, restart


def _changed_keys(key: str, before: Any, after: Any) -> list[str]:
    """The key paths that differ between two values of a section (the section itself when
    it is not a table on both sides)."""
    if isinstance(before, BaseModel) and isinstance(after, BaseModel):
        return [f"{key}.{f.alias or n}" for n, f in type(before).model_fields.items()
                if getattr(before, n) != getattr(after, n)]
    return [key]


def _by_name(section: str, id_key: str, before: tuple, after: tuple) -> list[str]:
    """Entries of an array of tables added, removed or changed (which keys), by their id."""
    old = {getattr(e, id_key): e for e in before}
    new = {getattr(e, id_key): e for e in after}
    lines = [f"{section} {name}: added" for name in new if name not in old]
    lines += [f"{section} {name}: removed" for name in old if name not in new]
    for name, entry in new.items():
        if name in old and old[name] != entry:
            keys = ", ".join(k.removeprefix(f"{section}.") for k in _changed_keys(section, old[name], entry))
            lines.append(f"{section} {name}: {keys} changed")
    return lines


def _by_position(section: str, before: tuple, after: tuple) -> list[str]:
    """Entries of an array of tables without an id (routes: their order matters) added,
    removed or changed (which keys), by their index."""
    lines = []
    for i in range(max(len(before), len(after))):
        if i >= len(before):
            lines.append(f"{section}[{i}]: added")
        elif i >= len(after):
            lines.append(f"{section}[{i}]: removed")
        elif before[i] != after[i]:
            keys = ", ".join(k.removeprefix(f"{section}[{i}].") for k in _changed_keys(f"{section}[{i}]", before[i], after[i]))
            lines.append(f"{section}[{i}]: {keys} changed")
    return lines


async def reload(daemon: Daemon) -> dict:
    """Read the daemon's config file again and apply it whole, or refuse it whole. systemd
    hears ``RELOADING=1`` before and ``READY=1`` after, whatever the outcome (a refused
    reload leaves the old config running)."""
    async with daemon.reload_lock:
        systemd.reloading()
        began = time.monotonic()
        try:
            outcome = await _reload(daemon)
        finally:
            systemd.notify("READY=1", f"STATUS=listening on {', '.join(f'{h}:{p}' for h, p in daemon.server.addresses)}")
    took = round(time.monotonic() - began, 3)
    if outcome["ok"]:
        log.info("reload_done", changes=outcome["changes"], seconds=took)
    else:
        log.error("reload_refused", errors=outcome["errors"], restart_needed=outcome["restart_needed"], seconds=took)
    return outcome


async def _reload(daemon: Daemon) -> dict:
    outcome: dict = {"ok": False, "changes": [], "errors": [], "restart_needed": []}
    path = daemon.config_path
    if daemon.closing:
        outcome["errors"] = ["the daemon is stopping: nothing to reload"]
        return outcome
    if path is None:
        outcome["errors"] = ["the daemon was not started from a config file: nothing to reload"]
        return outcome
    try:
        new = load_settings(path)
    except ConfigError as exc:
        outcome["errors"] = [*exc.errors, f"{path}: invalid configuration, the running one is kept"]
        return outcome
    changes, restart = compare(daemon.settings, new)
    if restart:
        outcome["restart_needed"] = restart
        outcome["errors"] = [f"{key}: changed, needs a restart" for key in restart] + [
            "nothing was applied: restart to apply these, or put them back and reload"]
        return outcome
    if changes:
        try:
            await apply(daemon, new)
        except Exception as exc:  # a bug: said, and the daemon goes on
            log.exception("reload_failed", error=type(exc).__name__)
            outcome["changes"] = changes
            outcome["errors"] = [(f"applying the changes failed ({type(exc).__name__}): some may be in "
                                  "place, others not; restart the daemon to be sure of its config")]
            return outcome
    outcome.update(ok=True, changes=changes)
    return outcome


async def apply(daemon: Daemon, new: Settings) -> None:
    """Put ``new`` in place of the running settings (``compare`` found only live changes)."""
    old = daemon.settings
    if new.logging != old.logging:
        configure_logging(new.logging.level, new.logging.format)
    daemon.settings = daemon.server.settings = new
    _accounts(daemon, new)
    _policies(daemon, new)
    started, retired = _connectors(daemon, old, new)
    _routes(daemon, new)
    daemon.windows = SendWindows(
        dict(new.windows.rules) or None, alsace_moselle=new.windows.alsace_moselle, default_zone=new.windows.default_zone
    )
    daemon.planner.windows = daemon.dispatcher.windows = daemon.windows
    daemon.mo.reconfigure(new)
    daemon.webhooks.reconfigure(new.accounts)  # what changed is in reload_done's changes
    daemon.retention.purger.reconfigure(new)
    daemon.retention.reschedule(new.retention.purge_at)
    grace = new.server.shutdown_grace
    await asyncio.gather(*(c.stop(grace) for c in retired))
    # A connector re-created by the reload keeps the id convention it learnt (message_id = auto).
    await daemon.deliveries.restore_conventions(started)
    for connector in started:
        await connector.start()
    daemon.dispatcher.connectors_changed()


def _accounts(daemon: Daemon, new: Settings) -> None:
    """New settings for kept accounts, new accounts added; removed ones unbound."""
    grace = new.server.shutdown_grace
    for state in daemon.server.registry.update(new.accounts):
        links = [bind.link for bind in state.binds]
        log.info("account_removed", account=state.system_id, binds=len(links))
        daemon.outbox.forget(state.system_id)
        for link in links:
            daemon.spawn(link.unbind(grace))  # type: ignore[attr-defined]


def _policies(daemon: Daemon, new: Settings) -> None:
    """Retention and per-part receipts per account: here (MO) and in the group commit."""
    values = AccountPolicies.values_of(new)
    daemon.policies.update(values)
    factory = partial(daemon_transaction, str(Path(new.storage.keys).resolve()), *values, daemon.id_floor)
    daemon.store.reconfigure(factory, values)


def _connectors(daemon: Daemon, old: Settings, new: Settings) -> tuple[list[Connector], list[Connector]]:
    """Put new and changed connectors in the shared dict (not started yet); take removed
    ones out. Returns (to start, to drain and stop)."""
    connectors = daemon.connectors
    before, after = old.connectors_by_name, new.connectors_by_name
    started: list[Connector] = []
    retired: list[Connector] = []
    for name, config in after.items():
        if before.get(name) == config:
            continue
        if name in connectors:
            retired.append(connectors[name])
        connectors[name] = daemon.new_connector(config)
        started.append(connectors[name])
    for name in before.keys() - after.keys():
        retired.append(connectors.pop(name))
    for connector in retired:
        log.info("connector_retired", connector=connector.name)
    return started, retired


def _routes(daemon: Daemon, new: Settings) -> None:
    table = route_table(new)
    daemon.planner.routes = daemon.pipeline.routes = table
    moved = daemon.dispatcher.reroute(
        lambda msg: table.connectors_for(msg.dest, msg.account, "marketing" if msg.marketing else "alert")
    )
    if moved:
        log.info("queue_rerouted", messages=moved)


__all__ = ["LIVE", "apply", "compare", "reload"]
