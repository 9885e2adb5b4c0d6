"""A partner's webhook receiver for the tests: an aiohttp HTTPS server on 127.0.0.1 with a
self-signed certificate made here with ``cryptography`` (the daemon trusts it through the
account's ``webhook_ca``), recording every request, answering as scripted.

Signatures are checked here with ``hmac`` from the README's scheme, not with the daemon's
code: ``HMAC-SHA256(secret, "<X-Smscenter-Timestamp>.<body>")``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.patience import PATIENCE

HOST = "127.0.0.1"
SECRET = "whsec-0123456789abcdef"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1 (IP SAN), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook receiver")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "receiver.crt", folder / "receiver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered (0: hung)

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    def signed_by(self, secret: str = SECRET) -> bool:
        ts = self.headers.get("X-Smscenter-Timestamp", "")
        want = "sha256=" + hmac.new(secret.encode(), ts.encode() + b"." + self.body, hashlib.sha256).hexdigest()
        return ts.isdigit() and hmac.compare_digest(want, self.headers.get("X-Smscenter-Signature", ""))


class Receiver:
    """``answers``: statuses for the next requests, one each (then 200); "hang" holds the
    request until the test ends; a 3xx answer carries a Location to ``/elsewhere``."""

    def __init__(self, cert: Path, key: Path, port: int = 0, sock: socket.socket | None = None) -> None:
        """``sock``: a socket already bound (not listening: connections to it are refused
        meanwhile) to serve on — a port held for the receiver while it is "down", which no
        other test's listener can take in between, as a port merely found free could be."""
        self.cert, self.key, self.port, self.sock = cert, key, port, sock
        self.hits: list[Hit] = []
        self.answers: list[int | str] = []
        self._runner: web.AppRunner | None = None
        self._hung = asyncio.Event()
        self._new = asyncio.Event()

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        if self.sock is not None:
            site: web.BaseSite = web.SockSite(self._runner, self.sock, ssl_context=ctx)
        else:
            site = web.TCPSite(self._runner, HOST, self.port, ssl_context=ctx, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    def url(self, path: str) -> str:
        return f"https://{HOST}:{self.port}{path}"

    async def stop(self) -> None:
        self._hung.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        answer = self.answers.pop(0) if self.answers else 200
        hit = Hit(request.path, dict(request.headers), body, 0 if answer == "hang" else int(answer))
        self.hits.append(hit)
        self._new.set()
        if answer == "hang":
            await self._hung.wait()
            return web.Response(status=200)
        if 300 <= int(answer) < 400:
            return web.Response(status=int(answer), headers={"Location": self.url("/elsewhere")})
        return web.Response(status=int(answer), text="ok")

    async def wait_hits(self, count: int, timeout: float = PATIENCE) -> list[Hit]:
        async with asyncio.timeout(max(timeout, PATIENCE)):
            while len(self.hits) < count:
                self._new.clear()
                await self._new.wait()
        return list(self.hits)

    def acknowledged(self, path: str | None = None) -> list[Hit]:
        return [h for h in self.hits if 200 <= h.status < 300 and (path is None or h.path == path)]
