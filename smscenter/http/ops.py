"""The daemon's small HTTP listener: unsubscribe links, Prometheus metrics, a health check.

Unsubscribe links (``/u/<token>``) are for destinations that cannot reply STOP. A GET only
shows a page with one button: link previewers and mail scanners fetch links, and must not
unsubscribe anyone. The POST records the opt-out exactly like a STOP reply (blacklist entry
for the account that sent the message, audited, picked up by the submit path at once), and,
when the entry is new, its opt-out event (``events.OptOutEvent``, source ``link``, with the
number read from the message) committed with it: the account's ``mo_url`` gets it.
"""

from __future__ import annotations

import html
import socket
import time

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from smscenter.pipeline.events import OptOutEvent
from smscenter.runtime.listeners import listen_error

log = structlog.get_logger("smscenter.web")

_PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><meta name="robots" content="noindex">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 30em; margin: 3em auto; padding: 0 1em">
<h1>{title}</h1>{body}</body></html>"""


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body),
        content_type="text/html",
        status=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


class WebApp:
    def __init__(self, optouts, blacklist, registry, clock=time.time) -> None:
        self.optouts = optouts
        self.blacklist = blacklist
        self.registry = registry  # prometheus_client.CollectorRegistry
        self.clock = clock
        #: Set by the daemon once storage is open: the field cipher (a link's number), the
        #: core's ``events.Events`` and who is told of webhook rows committed (the sender's
        #: ``notify``). Without events, an opt-out by link emits none.
        self.cipher = None
        self.events = None
        self.on_webhook_rows = None
        self.runner: web.AppRunner | None = None
        self.sock: socket.socket | None = None
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/u/{token}", self.confirm_page),
                web.post("/u/{token}", self.unsubscribe),
                web.get("/metrics", self.metrics),
                web.get("/healthz", self.health),
            ]
        )

    async def start(self, host: str, port: int) -> None:
        """``bind`` then ``serve``."""
        await self.bind(host, port)
        await self.serve()

    async def bind(self, host: str, port: int) -> None:
        """Take the port without serving yet (see ``PartnerServer.bind``): a port in use
        fails the daemon's start before anything else ran. Raises ``OSError`` naming the
        address."""
        try:
            self.sock = socket.create_server((host, port), family=_family(host), backlog=128)
        except OSError as exc:
            raise listen_error(exc, "HTTP", host, port) from None
        self.sock.setblocking(False)

    async def serve(self) -> None:
        """Answer HTTP on the socket ``bind`` took."""
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        self.site = web.SockSite(self.runner, self.sock)
        await self.site.start()
        host, port = self.sock.getsockname()[:2]
        log.info("http_listening", address=f"{host}:{port}")

    @property
    def port(self) -> int:
        """The port actually listened on (useful with port 0 in tests)."""
        return self.sock.getsockname()[1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        elif self.sock is not None:  # bound, never served
            self.sock.close()

    async def _target(self, token: str) -> tuple[str, bytes, int, bytes | None] | None:
        """(account, number hash, a message id, its encrypted number) the token was issued
        for; None if unknown or ambiguous."""
        if not token.isalnum() or len(token) > 8:
            return None
        return await self.optouts.link_message(token)

    async def confirm_page(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if await self._target(token) is None:
            return _page("Lien inconnu", "<p>Ce lien de désinscription est inconnu ou a expiré.</p>", 404)
        return _page(
            "Désinscription",
            "<p>Vous ne recevrez plus de SMS promotionnels de cet expéditeur.</p>"
            f'<form method="post" action="/u/{html.escape(token)}">'
            '<button type="submit" style="font-size: 1.2em; padding: .5em 1em">'
            "Confirmer la désinscription / Confirm unsubscribe</button></form>",
        )

    async def unsubscribe(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        target = await self._target(token)
        if target is None:
            return _page("Lien inconnu", "<p>Ce lien de désinscription est inconnu ou a expiré.</p>", 404)
        account, dest_hash, message_id, dest_enc = target
        backlog = None
        if self.events is not None:
            number = self.cipher.decrypt(dest_enc, b"dest:%d" % message_id).decode() if dest_enc else None
            backlog = self.events.backlog([OptOutEvent(account, account, "link", self.clock(), number)])
        added = await self.optouts.add(account, dest_hash, "link", "unsubscribe-link", backlog=backlog)
        self.blacklist.added(account, dest_hash)
        if added and backlog is not None and backlog.webhooks and self.on_webhook_rows is not None:
            self.on_webhook_rows([(row["id"], row["account"]) for row in backlog.webhooks])
        log.info("unsubscribed_by_link", account=account)
        return _page("Désinscription enregistrée", "<p>Votre désinscription est enregistrée. Merci.</p>")

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")
