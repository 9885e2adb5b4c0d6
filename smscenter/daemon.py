"""The daemon's lifecycle: start everything, tell systemd, wait for a signal, stop in stages.

Shutdown follows uvicorn's order: stop accepting, ask every session to unbind and wait for
the answers up to ``shutdown_grace``, then close what is left. SIGTERM and SIGINT are
handled in one place; the process exits 0 after an orderly stop.
"""

from __future__ import annotations

import asyncio
import signal

import structlog

from . import systemd
from .config import Settings
from .connector import Connector
from .relay import RelayHandler
from .server import PartnerServer

log = structlog.get_logger("smscenter.daemon")


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connectors = {c.name: Connector(c) for c in settings.connectors}
        self.handler = RelayHandler(settings, self.connectors)
        self.server = PartnerServer(settings, self.handler)
        self.stopping = asyncio.Event()

    async def start(self) -> None:
        for connector in self.connectors.values():
            await connector.start()
        await self.server.start()

    async def stop(self) -> None:
        grace = self.settings.server.shutdown_grace
        systemd.notify("STOPPING=1")
        log.info("stopping", grace=grace)
        await self.server.stop(grace)
        await self.handler.stop()
        await asyncio.gather(*(c.stop(grace) for c in self.connectors.values()))
        log.info("stopped")

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.start()
        systemd.notify("READY=1", f"STATUS=listening on {', '.join(f'{h}:{p}' for h, p in self.server.addresses)}")
        log.info("ready", listen=[f"{h}:{p}" for h, p in self.server.addresses], connectors=list(self.connectors))
        watchdog = systemd.watchdog_interval()
        watchdog_task = loop.create_task(_watchdog(watchdog)) if watchdog else None
        await self.stopping.wait()
        if watchdog_task is not None:
            watchdog_task.cancel()
        await self.stop()
        return 0


async def _watchdog(interval: float) -> None:
    while True:
        systemd.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def main(settings: Settings) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(Daemon(settings).run())
    return uvloop.run(Daemon(settings).run())
