"""The daemon's lifecycle: start everything, tell systemd, wait for a signal, stop in stages.

Start-up takes the control socket first (``control.py``: it is also the mark that a daemon
runs on this state, so a second one stops before touching anything), then binds the listeners
(SMPP, TLS, HTTP, the API: their ports, not serving yet), then follows the data: database (schema
upgraded), encryption keys (refusing to start when the database holds data but its keys are
missing or readable by others), the store's writer, the queue rebuilt from storage; then the
listeners serve, and only then do the connectors connect and the dispatcher send. So whatever
makes a start fail (another daemon, a port in use, keys, the schema) fails it before anything
went upstream: a failed start sends nothing, and says why in one line. The control socket
answers ``status`` and ``reload`` once all of it is up, and closes last.

Shutdown follows uvicorn's order: stop accepting, ask every partner session to unbind and
wait for the answers up to ``shutdown_grace``, then the queue and connectors, then the last
commit. SIGTERM and SIGINT are handled in one place; the process exits 0 after an orderly
stop. SIGHUP reloads the config file the daemon was started with (``reload.py``).
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
from storage.idempotency import IdempotencyKeys
from storage.ids import IdGenerator
from storage.optouts import OptOutStore
from storage.store import Store, max_ids
from storage.webhooks import WebhookBacklog
from storage.writer import WriterDied

import smscenter.app.status as status
import smscenter.app.systemd as systemd
from smscenter.pipeline.blacklist import Blacklist
from smscenter.config import Settings
from smscenter.smpp.connector import Connector
from smscenter.pipeline.connlog import ConnectionLog
from smscenter.app.control import ControlServer, ControlSocketError
from smscenter.pipeline.dispatch import Dispatcher
from smscenter.app.housekeeping import Housekeeping
from smscenter.pipeline.mo import MoService
from smscenter.pipeline.outbox import OutboxSender
from smscenter.smpp.handler import Pipeline
from smscenter.pipeline.receipts import AccountPolicies, UpstreamDeliveries, daemon_transaction
from smscenter.app.retention import KeysCountry, Purger, RetentionJob
from smscenter.app.metrics import registry_for
from smscenter.smpp.server import PartnerServer
from smscenter.smpp.upstream import UpstreamDoor
from smscenter.pipeline.submit import MentionPolicy, SubmitPlanner
from smscenter.runtime.timers import RealTimers, Timers, every
from smscenter.http.api import ApiDoor
from smscenter.http.ops import WebApp
from smscenter.http.webhooks import WebhookSender

log = structlog.get_logger("smscenter.daemon")


def _writer_died(pid: int | None, held: int) -> None:
    """One line per death of the SQLite writer process, however many calls it failed (each
    caller answers its own: a partner's submit refused, an upstream receipt not acknowledged)."""
    log.error("store_writer_died", pid=pid, batches=held)


def route_table(settings: Settings) -> RouteTable:
    return RouteTable(RouteRule(r.destinations, r.connectors, r.accounts, r.category) for r in settings.routes)


class Daemon:
    def __init__(self, settings: Settings, *, clock=time.time, timers: Timers | None = None,
                 config_path: str | Path | None = None) -> None:
        self.settings = settings
        #: The file ``settings`` came from: what ``reload`` reads again (None: no reload).
        self.config_path = Path(config_path) if config_path is not None else None
        #: One reload at a time (SIGHUP, the control socket).
        self.reload_lock = asyncio.Lock()
        self.closing = False  # stop() began: no reload any more
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
        # First the control socket: it also marks that a daemon runs on this state, so a
        # second one stops here, before it opens the database or binds anything.
        self.control = ControlServer(s.control_socket_path, s.server.control_group, self.link_timers)
        await self.control.start()
        self.started_at = self.clock()
        self.engine = db.create_engine(s.storage.url)  # no connection yet
        self.ids = IdGenerator()
        self.optouts = OptOutStore(self.engine, self.ids, clock=self.clock)
        self.blacklist = Blacklist(self.optouts, s.optout.short_code if s.optout else None, clock=self.clock,
                                   timers=self._virtual)
        # Bind attempts, stamped on the wall clock, written in batches (connlog.py).
        self.connections = ConnectionLog(self.engine, timers=self.timers)
        # The pipeline needs the outbox, which needs the server's account registry.
        self.server = PartnerServer(s, handler=None, timers=self.link_timers,  # type: ignore[arg-type]
                                    connections=self.connections)
        # The listeners' ports first: one in use fails the start before the database is
        # touched and before any connector connects.
        await self.server.bind()
        self.web = None
        if s.http.listen is not None:
            self.web = WebApp(self.optouts, self.blacklist, registry_for(self), clock=self.clock)
            await self.web.bind(s.http.listen.host, s.http.listen.port)
        self.api = None
        if s.api.listen is not None:
            # Its rate buckets are the accounts', on the SMPP server's clock; its logins go
            # through the SMPP server's guard: one guard for every door, so a guesser does not
            # double its rate by alternating them (runtime/loginguard.py).
            self.api = ApiDoor(s.api, self.server.registry, timers=self.link_timers, wall_clock=self.clock,
                               guard=self.server.guard)
            await self.api.bind()
        before, after = await db.upgrade(self.engine)
        if before != after:
            log.info("schema_upgraded", before=before, after=after)
        self.keyring = Keyring.open(s.storage.keys, database_has_data=await db.has_data(self.engine))
        self.cipher = FieldCipher(self.keyring)
        #: Per account: how long receipts and MO wait in the outbox, per-part receipts.
        self.policies = AccountPolicies(*AccountPolicies.values_of(s))
        # Ids never go back across a restart, whatever the clock did meanwhile.
        self.webhook_backlog = WebhookBacklog(self.engine)
        self.id_floor = id_floor = max(*(await max_ids(self.engine)).values(), await self.webhook_backlog.max_id()) + 1
        self.ids.seed(id_floor)
        # The group commit's transaction is built where it runs (a writer process on a
        # SQLite file): from plain values, not from objects of this process.
        transaction = partial(
            daemon_transaction, str(Path(s.storage.keys).resolve()), *AccountPolicies.values_of(s), id_floor,
        )
        self.store = Store(self.engine, transaction, clock=self.clock, timers=self._virtual)
        self.store.on_writer_died = _writer_died
        await self.blacklist.start()
        self.deliveries = UpstreamDeliveries(self.store, self.cipher, clock=self.clock, timers=self.timers)
        # What connectors deliver, read by the SMPP door into the core's values.
        self.upstream_door = UpstreamDoor(self.deliveries)
        await self.store.start()
        # Where MO, opt-outs and connector up/down leave the core (receipts leave through the
        # store's transaction, above). The webhook subscriptions are the policies' dict,
        # updated in place by a reload.
        self.events = self.policies.events(self.cipher, self.ids)
        self.connectors = {c.name: self.new_connector(c) for c in s.connectors}
        await self.deliveries.restore_conventions(self.connectors.values())
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
        self.planner = planner = SubmitPlanner(
            routes, self.cipher, self.ids, shared_short_codes=shared, blacklist=self.blacklist,
            windows=self.windows, mention=mention, wall_clock=self.clock,
        )
        self.dispatcher.on_invalid_number = self._invalid_number
        await self.connections.start()
        self.outbox = OutboxSender(self.store, self.server.registry, self.cipher, timers=self.timers)
        self.pipeline = Pipeline(planner, self.store, self.dispatcher, self.outbox, routes, self.cipher,
                                 budgets=self.server.budgets, max_storage_reads=s.server.max_storage_reads)
        self.server.handler = self.pipeline
        self.idempotency = IdempotencyKeys(self.engine)  # expired by housekeeping, API or not
        if self.api is not None:
            self.api.pipeline, self.api.store = self.pipeline, self.store
            self.api.keys = self.idempotency
            self.api.key_secret = self.cipher.pseudonymise("api-idempotency", b"key-secret").encode()
        if self.web is not None:  # an unsubscribe link's opt-out event
            self.web.cipher, self.web.events = self.cipher, self.events
        self.mo = MoService(
            s, self.optouts, self.blacklist, self.cipher, self.ids, planner, self.dispatcher, self.outbox,
            self.policies.retention_of, timers=self.timers, events=self.events,
        )
        self.webhooks = WebhookSender(self.webhook_backlog, self.cipher, list(s.accounts), s.webhooks, self.timers)
        self.store.on_webhook_rows = self.webhooks.notify
        self.mo.on_webhook_rows = self.webhooks.notify
        if self.web is not None:
            self.web.on_webhook_rows = self.webhooks.notify
        # Opt-outs another process committed (``smscenter blacklist add|import``) wrote their
        # webhook rows themselves: the accounts' pumps look when the blacklist sees them.
        self.blacklist.on_added = self.webhooks.look
        self.upstream_door.mo = self.mo
        self.housekeeping = Housekeeping(self.store, timers=self.timers, idempotency=self.idempotency)
        await self.housekeeping.start()
        # On a SQLite file the purge's batches are low-priority work on the store's writer.
        purger = Purger(self.engine, s, timers=self.timers, country_of=KeysCountry(str(Path(s.storage.keys).resolve())),
                        checkpoint="PASSIVE", store=self.store)
        self.retention = RetentionJob(purger, s.retention.purge_at, self.timers)
        await self.retention.start()
        await self.pipeline.load()
        await self.server.serve()
        if self.web is not None:
            await self.web.serve()
        if self.api is not None:
            await self.api.serve()
        # Last: what goes upstream. Everything that can fail a start has run.
        for connector in self.connectors.values():
            await connector.start()
        await self.dispatcher.start()
        await self.webhooks.start()
        self.control.commands.update(status=self._status, reload=self._reload)
        self.control.state = "ready"

    def new_connector(self, config) -> Connector:
        """An upstream connector (not started) whose deliveries reach the pipeline."""
        return Connector(config, self.upstream_door, timers=self.link_timers, events=self.events,
                         wall_clock=self.clock)

    def spawn(self, coro) -> asyncio.Task:
        """A task the daemon keeps a reference to until it is done."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def reload(self) -> dict:
        """Read the config file again and apply it live, or refuse it whole (``reload.py``):
        ``{"ok", "changes", "errors", "restart_needed"}``."""
        from smscenter.app.reload import reload

        return await reload(self)

    async def _status(self, request: dict) -> dict:
        """The control socket's ``status``: ``smscenter status``."""
        return await status.snapshot(self)

    async def _reload(self, request: dict) -> dict:
        """The control socket's ``reload``: ``smscenter reload``."""
        return await self.reload()

    def _invalid_number(self, dest_hash: bytes) -> None:
        """An upstream refused a number as invalid: refuse it at submit for 14 months."""
        ttl = self.settings.retention.lookups
        self.blacklist.mark_invalid(dest_hash, self.clock() + ttl)
        self.spawn(self.optouts.add_invalid(dest_hash, ttl))

    async def stop(self) -> None:
        async with self.reload_lock:  # a reload under way finishes first; none starts after
            self.closing = True
        grace = self.settings.server.shutdown_grace
        systemd.notify("STOPPING=1")
        log.info("stopping", grace=grace)
        self.control.state = "stopping"  # answered as such until it closes, last
        if self.web is not None:
            await self.web.stop()
        if self.api is not None:
            await self.api.stop()  # requests under way get their answer first
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
        await self.deliveries.stop()
        await self.store.stop()
        await self.engine.dispose()
        await self.control.close()
        log.info("stopped")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        # Before the start, so that an early SIGHUP does not kill the process: it is answered
        # once the daemon is ready.
        ready = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, lambda: self.spawn(self._reload_when(ready)))
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
        # What listens where, in the one line a newcomer watches for (README "Log events").
        http = f"{self.settings.http.listen.host}:{self.web.port}" if self.web is not None else None
        api = f"{self.settings.api.listen.host}:{self.api.port}" if self.api is not None else None
        log.info("ready", listen=listen, http=http, api=api, control=str(self.control.path), connectors=list(self.connectors))
        ready.set()
        watchdog = systemd.watchdog_interval()
        watchdog_loop = (every(watchdog, lambda: systemd.notify("WATCHDOG=1"), self.link_timers,
                               name="watchdog", at_once=True) if watchdog else None)
        await self.stopping.wait()
        if watchdog_loop is not None:
            await watchdog_loop.stop()
        await self.stop()
        return 0

    async def _reload_when(self, ready: asyncio.Event) -> None:
        await ready.wait()
        if not self.stopping.is_set():
            await self.reload()


    async def _abort_start(self) -> None:
        """Undo what a failed start had started (best effort: the process exits next)."""
        for name, closing in (("web", lambda x: x.stop()), ("api", lambda x: x.stop()), ("server", lambda x: x.stop(0)),
                              ("connectors", lambda x: asyncio.gather(*(c.stop(0) for c in x.values()))),
                              ("connections", lambda x: x.stop()), ("webhooks", lambda x: x.stop()),
                              ("store", lambda x: x.stop()), ("engine", lambda x: x.dispose()),
                              ("control", lambda x: x.close())):
            part = getattr(self, name, None)
            if part is None:
                continue
            try:
                await closing(part)
            except Exception:  # noqa: BLE001 - it never fully started
                pass


#: Start-up failures with a cause an administrator can act on, reported without a traceback.
START_ERRORS = (CryptoError, db.SchemaTooNew, WriterDied, OSError, ControlSocketError)


def _tune_gc() -> None:
    """Once started: what start-up made (modules, config, tables) lives as long as the
    daemon, so it leaves the collector's view (``gc.freeze``), and the youngest generation
    is collected every 50,000 allocations rather than 700 (the traffic's objects are nearly
    all freed by reference counting; a collection every few submits only walks them).
    bench.mt: submit p99 latency 172-200 ms instead of 213-250 ms, three runs each."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def main(settings: Settings, config_path: str | Path | None = None) -> int:
    """Run the daemon; ``config_path`` (the file ``settings`` came from) is what SIGHUP
    reloads."""
    daemon = Daemon(settings, config_path=config_path)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(daemon.run())
    return uvloop.run(daemon.run())
