"""The daemon's lifecycle: start everything, tell systemd, wait for a signal, stop in stages.

Start-up order follows the data: database (schema upgraded), encryption keys (refusing to
start when the database holds data but its keys are missing or readable by others), the
store's writer, connectors, the dispatcher with the queue rebuilt from storage, and only
then the partner listeners.

Shutdown follows uvicorn's order: stop accepting, ask every partner session to unbind and
wait for the answers up to ``shutdown_grace``, then the queue and connectors, then the last
commit. SIGTERM and SIGINT are handled in one place; the process exits 0 after an orderly
stop.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import time
from functools import partial
from pathlib import Path

import structlog

from routing.routes import RouteRule, RouteTable
from routing.windows import SendWindows
from storage import db
from storage.crypto import CryptoError, FieldCipher, Keyring
from storage.ids import IdGenerator
from storage.optouts import OptOutStore
from storage.store import Store, max_ids
from storage.webhooks import WebhookBacklog
from storage.writer import WriterDied

import smscenter.app.systemd as systemd
from smscenter.pipeline.blacklist import Blacklist
from smscenter.config import Settings
from smscenter.smpp.connector import Connector
from smscenter.pipeline.connlog import ConnectionLog
from smscenter.pipeline.dispatch import Dispatcher
from smscenter.app.housekeeping import Housekeeping
from smscenter.pipeline.mo import MoService
from smscenter.pipeline.outbox import OutboxSender
from smscenter.smpp.handler import Pipeline
from smscenter.pipeline.receipts import UpstreamDeliveries, daemon_transaction
from smscenter.app.retention import Purger, RetentionJob, cipher_country
from smscenter.app.metrics import registry_for
from smscenter.smpp.server import PartnerServer
from smscenter.pipeline.submit import MentionPolicy, SubmitPlanner
from smscenter.runtime.timers import RealTimers, Timers
from smscenter.http.ops import WebApp
from smscenter.http.webhooks import WebhookSender
from smscenter.pipeline.events import Events
from smscenter.pipeline.outbox_subscriber import OutboxSubscriber
from smscenter.pipeline.webhook_backlog import WebhookSubscriber, WebhookTargets

log = structlog.get_logger("smscenter.daemon")


def webhook_targets(settings: Settings) -> dict[str, WebhookTargets]:
    """What each account with a webhook URL subscribed to (plain values, for the writer)."""
    return {
        a.system_id: WebhookTargets(receipts=a.receipt_url is not None, mo=a.mo_url is not None)
        for a in settings.accounts if a.has_webhooks
    }


def route_table(settings: Settings) -> RouteTable:
    return RouteTable(RouteRule(r.destinations, r.connectors, r.accounts, r.category) for r in settings.routes)


class Daemon:
    def __init__(self, settings: Settings, *, clock=time.time, timers: Timers | None = None) -> None:
        self.settings = settings
        #: The wall clock (epoch seconds) of everything that stamps or compares message
        #: times: submit planning and send windows, the queue, the store, receipts, opt-outs.
        #: Tests pass a fake one (then ``dispatcher.poke()`` after moving it), or ``timers``.
        #: ``timers``: a ``FakeTimers`` puts every component's waits (links, connectors,
        #: outbox, MO reassembly, housekeeping, the retention purge, blacklist refresh, the
        #: store's linger, the watchdog) and the clock on one virtual time; without it, the
        #: wall clock's timers
        #: for those that stamp messages and the monotonic one for links and connectors
        #: (their keep-alive and rates must not jump with the wall clock).
        self._virtual = timers
        self.timers: Timers = timers if timers is not None else RealTimers(clock)
        self.link_timers: Timers = timers if timers is not None else RealTimers(time.monotonic)
        self.clock = self.timers.now
        self.stopping = asyncio.Event()
        self._background: set[asyncio.Task] = set()

    async def start(self) -> None:
        s = self.settings
        self.engine = db.create_engine(s.storage.url)
        before, after = await db.upgrade(self.engine)
        if before != after:
            log.info("schema_upgraded", before=before, after=after)
        self.keyring = Keyring.open(s.storage.keys, database_has_data=await db.has_data(self.engine))
        self.cipher = FieldCipher(self.keyring)
        self.ids = IdGenerator()
        retention = {a.system_id: s.retention_for(a).message_details for a in s.accounts}
        # Ids never go back across a restart, whatever the clock did meanwhile.
        self.webhook_backlog = WebhookBacklog(self.engine)
        id_floor = max(*(await max_ids(self.engine)).values(), await self.webhook_backlog.max_id()) + 1
        self.ids.seed(id_floor)
        # The group commit's transaction is built where it runs (a writer process on a
        # SQLite file): from plain values, not from objects of this process.
        transaction = partial(
            daemon_transaction,
            str(Path(s.storage.keys).resolve()),
            retention,
            s.retention.message_details,
            {a.system_id: a.per_part_receipts for a in s.accounts},
            id_floor,
            webhooks=webhook_targets(s),
        )
        self.store = Store(self.engine, transaction, clock=self.clock, timers=self._virtual)
        self.optouts = OptOutStore(self.engine, self.ids, clock=self.clock)
        self.blacklist = Blacklist(self.optouts, s.optout.short_code if s.optout else None, clock=self.clock,
                                   timers=self._virtual)
        await self.blacklist.start()
        self.deliveries = UpstreamDeliveries(self.store, self.cipher, clock=self.clock)
        await self.store.start()
        self.connectors = {c.name: Connector(c, self.deliveries, timers=self.link_timers) for c in s.connectors}
        self.dispatcher = Dispatcher(
            self.connectors, self.store, clock=self.clock, timers=self.timers, response_timeout=s.server.response_timeout,
            working_set=s.queue.working_set,
        )
        routes = route_table(s)
        shared = (s.optout.short_code,) if s.optout else ()
        self.windows = SendWindows(
            dict(s.windows.rules) or None, alsace_moselle=s.windows.alsace_moselle, default_zone=s.windows.default_zone
        )
        self.dispatcher.windows = self.windows
        mention = None
        if s.optout is not None:
            secret = self.cipher.pseudonymise("unsubscribe-links", b"token-secret").encode()
            mention = MentionPolicy(s.optout.mention, s.optout.short_code, s.optout.unsubscribe_url, secret)
        planner = SubmitPlanner(
            routes, self.cipher, self.ids, shared_short_codes=shared, blacklist=self.blacklist,
            windows=self.windows, mention=mention, wall_clock=self.clock,
        )
        self.dispatcher.on_invalid_number = self._invalid_number
        # Bind attempts, stamped on the wall clock, written in batches (connlog.py).
        self.connections = ConnectionLog(self.engine, timers=self.timers)
        await self.connections.start()
        # The pipeline needs the outbox, which needs the server's account registry.
        self.server = PartnerServer(s, handler=None, timers=self.link_timers,  # type: ignore[arg-type]
                                    connections=self.connections)
        self.outbox = OutboxSender(self.store, self.server.registry, self.cipher, timers=self.timers)
        self.pipeline = Pipeline(planner, self.store, self.dispatcher, self.outbox, routes, self.cipher,
                                 budgets=self.server.budgets, max_storage_reads=s.server.max_storage_reads)
        self.server.handler = self.pipeline
        kept = lambda account: retention.get(account, s.retention.message_details)  # noqa: E731
        # Where MO leave the core (receipts leave through the store's transaction, above).
        events = Events([OutboxSubscriber(self.cipher, self.ids, kept),
                         WebhookSubscriber(self.cipher, self.ids, webhook_targets(s), kept)])
        self.mo = MoService(
            s, self.optouts, self.blacklist, self.cipher, self.ids, planner, self.dispatcher, self.outbox,
            kept, timers=self.timers, events=events,
        )
        self.webhooks = WebhookSender(self.webhook_backlog, self.cipher, list(s.accounts), s.webhooks, self.timers)
        self.store.on_webhook_rows = self.webhooks.notify
        self.mo.on_webhook_rows = self.webhooks.notify
        self.deliveries.mo_handler = self.mo
        for connector in self.connectors.values():
            await connector.start()
        await self.dispatcher.start()
        await self.webhooks.start()
        self.housekeeping = Housekeeping(self.store, timers=self.timers)
        await self.housekeeping.start()
        purger = Purger(self.engine, s, timers=self.timers, country_of=cipher_country(self.cipher), checkpoint="PASSIVE")
        self.retention = RetentionJob(purger, s.retention.purge_at, self.timers)
        await self.retention.start()
        await self.pipeline.load()
        await self.server.start()
        self.web = None
        if s.http.listen is not None:
            self.web = WebApp(self.optouts, self.blacklist, registry_for(self))
            await self.web.start(s.http.listen.host, s.http.listen.port)

    def _invalid_number(self, dest_hash: bytes) -> None:
        """An upstream refused a number as invalid: refuse it at submit for 14 months."""
        ttl = self.settings.retention.lookups
        self.blacklist.mark_invalid(dest_hash, self.clock() + ttl)
        task = asyncio.get_running_loop().create_task(self.optouts.add_invalid(dest_hash, ttl))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        grace = self.settings.server.shutdown_grace
        systemd.notify("STOPPING=1")
        log.info("stopping", grace=grace)
        if self.web is not None:
            await self.web.stop()
        await self.server.stop(grace)
        await self.connections.stop()  # after the last bind: every answered bind's row written
        await self.pipeline.stop()
        await self.mo.stop()
        await self.blacklist.stop()
        await self.dispatcher.stop()
        await self.housekeeping.stop()
        await self.retention.stop()
        await self.outbox.stop()
        await self.webhooks.stop()
        await asyncio.gather(*(c.stop(grace) for c in self.connectors.values()))
        await self.store.stop()
        await self.engine.dispose()
        log.info("stopped")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self.start()
        except START_ERRORS as exc:
            # What an administrator must fix (keys, schema, a port in use): said in one line.
            log.error("start_failed", error=f"{type(exc).__name__}: {exc}")
            systemd.notify(f"STATUS=start failed: {exc}")
            await self._abort_start()
            return 1
        _tune_gc()
        listen = [f"{h}:{p}" for h, p in self.server.addresses]
        systemd.notify("READY=1", f"STATUS=listening on {', '.join(listen)}")
        log.info("ready", listen=listen, connectors=list(self.connectors))
        watchdog = systemd.watchdog_interval()
        watchdog_task = loop.create_task(_watchdog(watchdog, self.link_timers)) if watchdog else None
        await self.stopping.wait()
        if watchdog_task is not None:
            watchdog_task.cancel()
        await self.stop()
        return 0


    async def _abort_start(self) -> None:
        """Undo what a failed start had started (best effort: the process exits next)."""
        for name, closing in (("server", lambda x: x.stop(0)), ("connections", lambda x: x.stop()),
                              ("webhooks", lambda x: x.stop()),
                              ("store", lambda x: x.stop()), ("engine", lambda x: x.dispose())):
            part = getattr(self, name, None)
            if part is None:
                continue
            try:
                await closing(part)
            except Exception:  # noqa: BLE001 - it never fully started
                pass


#: Start-up failures with a cause an administrator can act on, reported without a traceback.
START_ERRORS = (CryptoError, db.SchemaTooNew, WriterDied, OSError)


def _tune_gc() -> None:
    """Once started: what start-up made (modules, config, tables) lives as long as the
    daemon, so it leaves the collector's view (``gc.freeze``), and the youngest generation
    is collected every 50,000 allocations rather than 700 (the traffic's objects are nearly
    all freed by reference counting; a collection every few submits only walks them).
    bench_mt: submit p99 latency 172-200 ms instead of 213-250 ms, three runs each."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def _watchdog(interval: float, timers: Timers) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await timers.sleep(interval)


def main(settings: Settings) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(Daemon(settings).run())
    return uvloop.run(Daemon(settings).run())
