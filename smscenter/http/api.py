"""The HTTPS API door: ``POST /v1/messages`` → ``SubmitRequest``, and a neutral ``Refusal`` →
an HTTP status with a JSON error; ``GET /v1/messages/{id}`` for a message's state.

What is HTTP stays here: authentication (HTTP Basic with the account's system_id and
password, checked as an SMPP bind is, or a bearer token of ``[[account]] api_tokens``; both
through the login guard the SMPP door shares, its refusals as 401/403/429/503), the
body's size and JSON, its fields and their types (each error names its field), RFC 3339
times. The account's rate and queue limits are the core's (``submit.admit``, as the SMPP
server calls it per request), and every other policy runs in the core's neutral submit
(``Pipeline.submit``, handed in: a door does not import another door). Everything the
request itself gets wrong is answered before the core sees it, so nothing is stored for a
request refused as a whole; a refusal of one recipient (opted out, invalid number) leaves
the others accepted, each answered in the request's order. ``HTTP_STATUS`` is how the core's
refusals read here, the table the README documents. An ``Idempotency-Key`` returns a key's
first final answer again for 24 hours (``storage.idempotency``) instead of sending twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import socket
import time
from datetime import UTC, datetime

import structlog
from aiohttp import web

from protocol.constants import MessageState
from routing.senders import classify_sender

from smscenter.pipeline.request import Destination, ReceiptWish, Refusal, Refused, SubmitRequest, SubmitResult
from smscenter.pipeline.submit import admit
from smscenter.runtime.floodlog import Tally
from smscenter.runtime.listeners import listen_error, server_tls_context
from smscenter.runtime.loginguard import LoginGuard, address_key
from smscenter.runtime.timers import RealTimers, Timers

log = structlog.get_logger("smscenter.api")

#: How each neutral refusal reads: HTTP status and the JSON error's ``code``.
HTTP_STATUS: dict[Refusal, tuple[int, str]] = {
    Refusal.BAD_INPUT: (400, "bad_input"),
    Refusal.UNKNOWN_CATEGORY: (400, "unknown_category"),
    Refusal.TEXT_TOO_LONG: (400, "text_too_long"),
    Refusal.SENDER_NOT_ALLOWED: (403, "sender_not_allowed"),
    Refusal.OPTED_OUT: (409, "opted_out"),
    Refusal.INVALID_NUMBER: (422, "invalid_number"),
    Refusal.NO_ROUTE: (422, "no_route"),
    Refusal.OUTSIDE_WINDOW: (422, "outside_window"),
    Refusal.RATE_EXCEEDED: (429, "rate_exceeded"),
    Refusal.QUEUE_FULL: (503, "queue_full"),
    Refusal.STORAGE_BUSY: (503, "storage_busy"),
    Refusal.SYSTEM_ERROR: (500, "system_error"),
}

#: The fields of ``POST /v1/messages`` and the JSON types each may have.
FIELDS: dict[str, tuple[type, ...]] = {
    "from": (str,),
    "to": (str, list),
    "text": (str,),
    "category": (str,),
    "validity": (int, str),
    "schedule": (str,),
    "reference": (str,),
    "receipt": (bool,),
}
REQUIRED = ("from", "to", "text")
MAX_REFERENCE = 64
MAX_TEXT = 255 * 160  # characters: more can never fit 255 parts; the core counts the parts
_TYPE_NAMES = {str: "a string", list: "a list of strings", int: "an integer", bool: "true or false"}
#: The login guard's name for this door (``smscenter_logins_failed_total{door}``), the
#: reasons it adds to the guard's, and the one guard login all bearer tokens from an
#: address count under (a token names no account until it matches one).
API_DOOR = "api"
API_REASONS = ("no_credentials", "malformed_credentials", "invalid_token")
BEARER = "\0bearer"
#: Seconds a client waits before trying again when the queue or the storage is full.
BUSY_RETRY_AFTER = 1
MAX_KEY = 255  # characters of an Idempotency-Key
#: Answers kept for an ``Idempotency-Key``: final ones. A 429 or a 5xx is worth a retry, so
#: the key's next request is served anew.
KEPT_STATUSES = frozenset({202, 400, 403, 409, 422})


class ApiError(Exception):
    """A request answered with an error (``{"error": {code, message, recipient}}``)."""

    def __init__(self, status: int, code: str, message: str, *, recipient: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.recipient = status, code, message, recipient
        self.headers = headers or {}

    def body(self) -> dict:
        return {"code": self.code, "message": self.message, "recipient": self.recipient}


def error_of(refused: Refused, recipient: str | None = None) -> ApiError:
    """The HTTP answer to one of the core's refusals."""
    status, code = HTTP_STATUS[refused.refusal]
    message = refused.why if refused.field is None else f"{refused.field}: {refused.why}"
    headers = {"Retry-After": str(BUSY_RETRY_AFTER)} if status == 503 else None
    return ApiError(status, code, message, recipient=recipient, headers=headers)


def _json_error(error: ApiError, **more) -> web.Response:
    headers = {"Cache-Control": "no-store", **error.headers}
    return web.json_response({"error": error.body(), **more}, status=error.status, headers=headers)


def _response(status: int, body: dict, headers: dict) -> web.Response:
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store", **headers})


def _indexed(body: dict, recipients: list[str]) -> dict:
    """``body`` with each recipient as its index in the request (to store no number)."""
    return _recipients(body, lambda number: recipients.index(number) if number in recipients else None)


def _numbered(body: dict, recipients: list[str]) -> dict:
    """A stored body's indexes back to the recipients of the request (the same body)."""
    return _recipients(body, lambda index: recipients[index] if isinstance(index, int) else None)


def _recipients(body: dict, change) -> dict:
    body = json.loads(json.dumps(body))
    for message in body.get("messages", ()):
        message["to"] = change(message["to"])
    for error in [body["error"]] if "error" in body else []:
        error["recipient"] = change(error["recipient"])
    for error in body.get("errors", ()):
        error["recipient"] = change(error["recipient"])
    return body


def _rfc3339(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(field: str, value: str) -> float:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "bad_input", f"{field}: expected an RFC 3339 time, e.g. 2026-01-31T09:00:00Z") from None
    if when.tzinfo is None:
        raise ApiError(400, "bad_input", f"{field}: the time needs its offset (Z or +01:00)")
    return when.timestamp()


def parse_message(body: object, max_recipients: int, now: float) -> dict:
    """The fields of a ``POST /v1/messages`` body, checked (``now``: the wall clock, for a
    relative ``validity``); raises ``ApiError`` 400 naming the field."""
    if not isinstance(body, dict):
        raise ApiError(400, "bad_input", "the body must be a JSON object")
    for key, value in body.items():
        if key not in FIELDS:
            raise ApiError(400, "bad_input", f"{key}: unknown field (known: {', '.join(FIELDS)})")
        types = FIELDS[key]
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            wanted = " or ".join(_TYPE_NAMES[t] for t in types)
            raise ApiError(400, "bad_input", f"{key}: expected {wanted}")
    for key in REQUIRED:
        if key not in body:
            raise ApiError(400, "bad_input", f"{key}: required")
    to = body["to"]
    recipients = [to] if isinstance(to, str) else to
    if not recipients:
        raise ApiError(400, "bad_input", "to: at least one recipient")
    if len(recipients) > max_recipients:
        raise ApiError(400, "bad_input", f"to: at most {max_recipients} recipients per request")
    for i, number in enumerate(recipients):
        if not isinstance(number, str) or not number:
            raise ApiError(400, "bad_input", f"to[{i}]: expected a phone number as a string")
    text = body["text"]
    if not text:
        raise ApiError(400, "bad_input", "text: empty")
    if len(text) > MAX_TEXT:
        raise ApiError(400, "text_too_long", f"text: over {MAX_TEXT} characters")
    reference = body.get("reference")
    if reference is not None and len(reference) > MAX_REFERENCE:
        raise ApiError(400, "bad_input", f"reference: at most {MAX_REFERENCE} characters")
    validity = body.get("validity")
    if isinstance(validity, int):
        if validity <= 0:
            raise ApiError(400, "bad_input", "validity: seconds, more than 0")
        validity = now + validity
    elif isinstance(validity, str):
        validity = _parse_time("validity", validity)
    schedule = body.get("schedule")
    return {
        "source": body["from"],
        "recipients": recipients,
        "text": text,
        "category": body.get("category", ""),
        "validity": validity,
        "schedule": _parse_time("schedule", schedule) if schedule is not None else None,
        "reference": reference,
        "receipt": ReceiptWish.ALWAYS if body.get("receipt") else ReceiptWish.NONE,
    }


def destination(number: str) -> Destination:
    """A recipient as written (``+33612345678``, or national digits read with the account's
    default country): international E.164 without its plus, else an unknown TON."""
    if number.startswith("+"):
        return Destination(number[1:], 1, 1)
    return Destination(number, 0, 1)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class ApiDoor:
    """The ``[api]`` listener. ``pipeline`` (its ``submit(request, done)``) and ``store``
    (its ``message(id)``) are set by the daemon once storage is open, after ``bind``."""

    def __init__(self, config, registry, *, timers: Timers | None = None, wall_clock=time.time,
                 guard: LoginGuard | None = None) -> None:
        self.config = config  # smscenter.config.Api
        self.registry = registry  # smscenter.pipeline.accounts.AccountRegistry
        timers = timers if timers is not None else RealTimers(time.monotonic)
        self.clock = timers.now  # the accounts' rate buckets' time (the SMPP server's)
        self.wall_clock = wall_clock
        #: The login guard shared with the other doors (the daemon's); one of its own without.
        #: Refused logins are logged by it, one ``api_auth_failed`` line per (peer, reason,
        #: known account) and interval.
        self._own_guard = guard is None
        self.guard = guard if guard is not None else LoginGuard(timers)
        self.guard.door(API_DOOR, Tally(log, "api_auth_failed", self.guard.timers, interval=self.guard.log_interval),
                        API_REASONS)
        self.pipeline = None
        self.store = None
        #: ``storage.idempotency.IdempotencyKeys`` and the secret of its keyed hashes (set by
        #: the daemon with the store; None: ``Idempotency-Key`` is refused).
        self.keys = None
        self.key_secret = b""
        self._keys_in_flight: set[tuple[str, bytes]] = set()
        self.pending: dict[str, int] = {}  # per account: submits awaiting their commit
        self.runner: web.AppRunner | None = None
        self.sock: socket.socket | None = None
        self.app = web.Application(client_max_size=config.max_body)
        self.app.add_routes([
            web.post("/v1/messages", self.post_message),
            web.get("/v1/messages/{id}", self.get_message),
            web.get("/v1/openapi.json", self.get_openapi),
        ])

    @property
    def tls(self) -> bool:
        return self.config.tls_cert is not None

    async def bind(self) -> None:
        """Take the port without serving yet (see ``PartnerServer.bind``). Raises
        ``OSError`` naming the address."""
        host, port = self.config.listen
        try:
            self.sock = socket.create_server((host, port), family=_family(host), backlog=128)
        except OSError as exc:
            raise listen_error(exc, "HTTPS API" if self.tls else "HTTP API", host, port) from None
        self.sock.setblocking(False)

    async def serve(self) -> None:
        context = server_tls_context(self.config.tls_cert, self.config.tls_key) if self.tls else None
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock, ssl_context=context).start()
        host, port = self.sock.getsockname()[:2]
        log.info("api_listening", address=f"{host}:{port}", tls=self.tls)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    async def stop(self) -> None:
        if self._own_guard:
            self.guard.close()  # a shared one is closed by its owner (the SMPP server)
        if self.runner is not None:
            await self.runner.cleanup()
        elif self.sock is not None:  # bound, never served
            self.sock.close()

    # --- authentication ---------------------------------------------------------------------

    async def _account(self, request: web.Request):
        """The account the request authenticates as, through the login guard every door
        shares (``runtime/loginguard.py``: an address in penalty waits, right credentials or
        not; guesses capped per (address, system_id), bearer tokens per address; concurrent
        checks capped), or ``ApiError``: 401 for an unknown account, a wrong password or an
        unknown token alike (same status, same body); 403 from an address outside the
        account's ``allowed_ips``; 429 with ``Retry-After`` when the address reached its
        guesses or its concurrent checks; 503 when every check slot is taken."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        ip = (request.remote or "").split("%")[0]
        peer = address_key(ip)
        transport = request.transport

        def still_there() -> bool:
            return transport is not None and not transport.is_closing()

        login = BEARER
        if scheme == "bearer" and value:
            token = value.strip()

            async def check_token(run):
                state = self.registry.by_token(token)  # one SHA-256: no thread needed
                if state is None:
                    return None, "invalid_token"
                if not self.registry.ip_allowed(state, ip):
                    return None, "ip_not_allowed"
                return state, None

            state, reason = await self.guard.attempt(API_DOOR, peer, BEARER, check_token, still_there,
                                                     shared_login=True)
        elif scheme == "basic" and value:
            try:
                system_id, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if sep:
                login = system_id
                known = system_id if self.registry.get(system_id) is not None else None

                def check_password(run):
                    return self.registry.credentials(system_id, password, ip, run)

                state, reason = await self.guard.attempt(API_DOOR, peer, system_id, check_password, still_there,
                                                         account=known)
            else:
                state, reason = None, self.guard.refuse(API_DOOR, peer, "malformed_credentials")
        else:
            state, reason = None, self.guard.refuse(API_DOOR, peer, "no_credentials")
        if state is not None:
            return state
        if reason == "ip_not_allowed":
            raise ApiError(403, "forbidden", "not allowed from this address")
        if reason in ("guess_limit", "checks_per_ip"):
            wait = self.guard.next_guess_in(peer, login) if reason == "guess_limit" else 1
            raise ApiError(429, "too_many_logins", "too many login attempts from this address: try again later",
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if reason == "checks_total":
            raise ApiError(503, "busy", "too many logins under way: try again later",
                           headers={"Retry-After": str(BUSY_RETRY_AFTER)})
        raise ApiError(401, "unauthorized", "HTTP Basic (system_id and password) or a bearer token required",
                       headers={"WWW-Authenticate": 'Basic realm="smscenter", charset="UTF-8", Bearer'})

    # --- POST /v1/messages ------------------------------------------------------------------

    async def post_message(self, request: web.Request) -> web.Response:
        try:
            return await self._post_message(request)
        except ApiError as error:
            return _json_error(error)

    async def _post_message(self, request: web.Request) -> web.Response:
        account = await self._account(request)
        limit = self.config.max_body
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "body_too_large", f"body: over {limit} octets")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "body_too_large", f"body: over {limit} octets") from None
        if request.content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "body: expected Content-Type: application/json")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "bad_input", f"body: malformed JSON ({type(exc).__name__})") from None
        fields = parse_message(body, self.config.max_recipients, self.wall_clock())
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return _response(*await self._accept(account, fields))
        if not key or len(key) > MAX_KEY or not key.isprintable() or self.keys is None:
            raise ApiError(400, "bad_input", f"Idempotency-Key: 1 to {MAX_KEY} printable characters")
        return await self._once(account, key, raw, fields)

    async def _once(self, account, key: str, raw: bytes, fields: dict) -> web.Response:
        """The request under an ``Idempotency-Key``: the first final answer to the key (kept
        24 h, for the same body only), else the request answered and its answer kept."""
        system_id = account.system_id
        key_hash = self._hash(b"key\0" + system_id.encode() + b"\0" + key.encode())
        request_hash = self._hash(b"request\0" + raw)
        recipients = fields["recipients"]
        busy = (system_id, key_hash)
        if busy in self._keys_in_flight:
            raise ApiError(409, "idempotency_key_in_use", "Idempotency-Key: a request with this key is under way")
        self._keys_in_flight.add(busy)
        try:
            found = await self.keys.find(system_id, key_hash, self.wall_clock())
            if found is not None:
                if not hmac.compare_digest(found["request_hash"], request_hash):
                    raise ApiError(422, "idempotency_key_reused",
                                   "Idempotency-Key: already used for another request in the last 24 hours")
                answer = _numbered(json.loads(found["answer"]), recipients)
                return _response(found["status"], answer, {"Idempotent-Replayed": "true"})
            now = self.wall_clock()

            def kept(result: SubmitResult, submit: SubmitRequest) -> dict | None:
                # A 202's key commits with its messages (``Pipeline.submit``'s ``keep``):
                # never one without the other, whenever the daemon dies.
                status, answer, _ = self._answer(recipients, submit, result)
                if status != 202:
                    return None
                return {"account": system_id, "key_hash": key_hash, "request_hash": request_hash,
                        "status": status, "answer": json.dumps(_indexed(answer, recipients)), "created_at": now}

            try:
                status, answer, headers = await self._accept(account, fields, kept)
            except ApiError as error:
                if error.status not in KEPT_STATUSES:
                    raise
                status, answer, headers = error.status, {"error": error.body()}, error.headers
            if status in KEPT_STATUSES and status != 202:
                # A final refusal: nothing was stored, so a crash before this costs nothing
                # (the retry is answered anew, the same way).
                try:
                    await self.keys.keep(system_id, key_hash, request_hash, status,
                                         json.dumps(_indexed(answer, recipients)), now)
                except Exception as exc:  # noqa: BLE001 - the answer goes out all the same
                    log.error("api_idempotency_failed", account=system_id, error=type(exc).__name__)
            return _response(status, answer, headers)
        finally:
            self._keys_in_flight.discard(busy)

    def _hash(self, data: bytes) -> bytes:
        return hmac.digest(self.key_secret, data, hashlib.sha256)

    async def _accept(self, account, fields: dict, kept=None) -> tuple[int, dict, dict]:
        """The account's limits, then the core's submit: (status, body, headers). ``kept``
        (an ``Idempotency-Key``'s): ``kept(result, submit)`` gives the key's row stored with
        the messages."""
        # The account's limits, as the SMPP server checks them per request: one request of
        # the window, a throughput token per recipient (as a submit_multi's destinations).
        system_id = account.system_id
        pending = self.pending.get(system_id, 0) + 1
        now = self.clock()
        refused = admit(account, pending, now, len(fields["recipients"]))
        if refused is not None:
            error = error_of(refused)
            if refused.refusal is Refusal.RATE_EXCEEDED:
                error.headers["Retry-After"] = str(max(1, math.ceil(account.bucket.delay(now))))
            raise error
        source = fields["source"]
        if source.startswith("+") and source[1:].isdigit():
            source = source[1:]  # an international number, as SMPP carries it (TON 1)
        submit = SubmitRequest(
            account=account,
            source=source,
            source_kind=classify_sender(source, 1),
            destinations=tuple(destination(n) for n in fields["recipients"]),
            text=fields["text"],
            category=fields["category"],
            receipt=fields["receipt"],
            validity=fields["validity"],
            schedule=fields["schedule"],
            reference=fields["reference"],
        )
        self.pending[system_id] = pending
        try:
            result = await self._submit(submit, None if kept is None else lambda r: kept(r, submit))
        finally:
            left = self.pending[system_id] - 1
            if left:
                self.pending[system_id] = left
            else:
                del self.pending[system_id]
        return self._answer(fields["recipients"], submit, result)

    def _submit(self, submit: SubmitRequest, keep=None) -> asyncio.Future:
        """The core's neutral submit as a future (its ``done`` may be called at once);
        ``keep``: ``Pipeline.submit``'s."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        def settle(result: SubmitResult) -> None:
            if not done.done():
                done.set_result(result)

        if keep is None:
            self.pipeline.submit(submit, settle)
        else:
            self.pipeline.submit(submit, settle, keep)
        return done

    @staticmethod
    def _answer(recipients: list[str], submit: SubmitRequest, result: SubmitResult) -> tuple[int, dict, dict]:
        """202 with each recipient's id (in the request's order) when any was accepted,
        each refused one as an error beside; else the first refusal's status."""
        number = {id(d): n for d, n in zip(submit.destinations, recipients)}
        errors = [error_of(refused, number.get(id(d))) for d, refused in result.refused]
        if not result.accepted:
            first = errors[0]
            body = {"error": first.body()}
            if len(errors) > 1:
                body["errors"] = [e.body() for e in errors]
            return first.status, body, first.headers
        messages = []
        for accepted in result.accepted:
            item = {"id": str(accepted.message_id), "to": number.get(id(accepted.destination)), "parts": accepted.parts}
            if accepted.held_until is not None:
                item["held_until"] = _rfc3339(accepted.held_until)
            messages.append(item)
        body: dict = {"messages": messages}
        if errors:
            body["errors"] = [e.body() for e in errors]
        return 202, body, {}

    # --- GET /v1/openapi.json --------------------------------------------------------------

    async def get_openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI document with this listener's limits, to anyone: it holds no secret."""
        from smscenter.http.openapi import document  # here: that module imports this one's limits

        return web.json_response(document(self.config.max_recipients, self.config.max_body))

    # --- GET /v1/messages/{id} --------------------------------------------------------------

    async def get_message(self, request: web.Request) -> web.Response:
        try:
            account = await self._account(request)
            text = request.match_info["id"]
            message_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None
            try:
                msg = await self.store.message(message_id) if message_id is not None else None
            except Exception as exc:  # noqa: BLE001 - answered, whatever happened
                log.error("api_query_failed", error=type(exc).__name__)
                raise ApiError(503, "storage_busy", "cannot read the message now",
                               headers={"Retry-After": str(BUSY_RETRY_AFTER)}) from None
            if msg is None or msg["account"] != account.system_id:
                raise ApiError(404, "not_found", "no such message of this account")
        except ApiError as error:
            return _json_error(error)
        state = MessageState(msg["state"])
        return web.json_response({
            "id": str(msg["id"]),
            "state": state.name.lower(),
            "final": state.is_final,
            "parts": msg["parts_total"],
            "category": msg["category"],
            "submitted_at": _rfc3339(msg["submitted_at"]),
            "not_before": _rfc3339(msg["not_before"]),
            "expires_at": _rfc3339(msg["expires_at"]),
            "done_at": _rfc3339(msg["done_at"]),
            "error": msg["error"] or None,
        }, headers={"Cache-Control": "no-store"})
