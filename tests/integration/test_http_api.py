"""The HTTPS API door end to end, over real sockets on 127.0.0.1: an aiohttp client over TLS
(a self-signed certificate made here with ``cryptography``) submits to the running
``Daemon``; what it accepts reaches the upstream SMSC (``smpp34.Server``, ``SmscPeer``);
``GET /v1/messages/{id}`` shows it; every bad input has its status and JSON error and
stores nothing; and the same policies answer through both doors (SMPP statuses from an
``smpp34.Client`` partner, HTTP answers from the API), table-driven."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from protocol.constants import CommandStatus as S
from smscenter.app.daemon import Daemon
from smscenter.config import settings_from_dict
from smscenter.runtime.passwords import hash_token
from smscenter.runtime.timers import FakeTimers
from sqlalchemy import create_engine, select
from storage.schema import api_idempotency, messages
from tests.integration.mt_fixtures import (  # noqa: F401 - mt is a fixture
    HOST,
    PARTNER_PASSWORDS,
    TEST_SERVER,
    Harness,
    connector_entry,
    count_rows,
    db_path,
    mt,
    wait_for,
)
from tests.integration.test_tls import make_certificate
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(90)

TOKEN = "acme-token-" + "0123456789abcdef" * 2
BETA_TOKEN = "beta-token-" + "fedcba9876543210" * 2
PARIS = ZoneInfo("Europe/Paris")
ONE, TWO = "+33612345678", "+33698765432"


@pytest.fixture
def build(password_hashes, tmp_path):
    """``build(connectors, accounts=..., api=..., tls=True)`` → Settings with ``[api]`` on
    127.0.0.1:0 (HTTPS with a certificate made here, unless ``tls=False``). Accounts "acme"
    (sender ID ACME, short code 38123, token ``TOKEN``) and "beta" (BETA, ``BETA_TOKEN``)."""

    def make(connectors, *, accounts=None, api=None, tls=True, **sections):
        tables = []
        for acc in accounts or [{"system_id": "acme"}, {"system_id": "beta"}]:
            sid = acc["system_id"]
            table = {"category": "alert", "sender_ids": [sid.upper()], "throughput": 10_000,
                     "api_tokens": [hash_token(TOKEN if sid == "acme" else BETA_TOKEN)], **acc}
            table.setdefault("password", password_hashes[sid])
            tables.append(table)
        api_section = {"listen": f"{HOST}:0", **(api or {})}
        if tls:
            cert, key = make_certificate(tmp_path)
            api_section.update(tls_cert=str(cert), tls_key=str(key))
        data = {
            "server": dict(TEST_SERVER),
            "storage": {"url": "sqlite:///var/smscenter.db", "keys": "var/keys"},
            "account": tables,
            "connector": connectors,
            "route": [{"destinations": ["*"], "connectors": [c["name"] for c in connectors]}],
            "api": api_section,
            **sections,
        }
        return settings_from_dict(data, base_dir=tmp_path)

    return make


class Client:
    """An aiohttp session to the daemon's API, trusting the test's certificate."""

    def __init__(self, d: Daemon) -> None:
        api = d.settings.api
        self.tls = api.tls_cert is not None
        self.base = f"{'https' if self.tls else 'http'}://{HOST}:{d.api.port}"
        self.context = ssl.create_default_context(cafile=str(api.tls_cert)) if self.tls else None
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PATIENCE))

    async def request(self, method: str, path: str, *, token: str | None = TOKEN, auth: tuple | None = None,
                      body=None, data: bytes | None = None, headers: dict | None = None):
        """(status, JSON body, headers)."""
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base + path, data=data, headers=headers,
                                        ssl=self.context if self.tls else None) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text else None), resp.headers

    async def post(self, body=None, **kw):
        return await self.request("POST", "/v1/messages", body=body, **kw)

    async def get(self, message_id: str, **kw):
        return await self.request("GET", f"/v1/messages/{message_id}", **kw)

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def clients():
    opened: list[Client] = []

    def open_(d: Daemon) -> Client:
        client = Client(d)
        opened.append(client)
        return client

    yield open_
    for client in opened:
        await client.close()


# --------------------------------------------------------------------------- the happy path


async def test_https_submit_to_two_numbers_reaches_upstream_and_get_shows_them(mt, build, clients):
    up = await mt.upstream(stat="DELIVRD")
    d = await mt.daemon(build([connector_entry("op", up.port)]))
    api = clients(d)
    assert api.base.startswith("https://")

    status, body, _ = await api.post({"from": "ACME", "to": [ONE, TWO], "text": "Rendez-vous à 10 h",
                                      "category": "ALERT", "receipt": True, "reference": "order-42"})
    assert status == 202, body
    assert [m["to"] for m in body["messages"]] == [ONE, TWO]
    assert all(m["parts"] == 1 and "held_until" not in m for m in body["messages"])
    ids = [m["id"] for m in body["messages"]]
    assert count_rows(d.settings, messages) == 2  # answered after the commit
    await wait_for(lambda: len(up.accepted) == 2, what="both messages upstream")
    assert sorted(s.destination_addr for s in up.submits) == ["33612345678", "33698765432"]
    assert {s.source_addr for s in up.submits} == {"ACME"}

    # GET: our own messages, delivered once the upstream's receipts came back.
    async def states():
        return [(await api.get(i))[1]["state"] for i in ids]

    deadline = asyncio.get_running_loop().time() + PATIENCE
    while await states() != ["delivered", "delivered"]:
        assert asyncio.get_running_loop().time() < deadline, await states()
        await asyncio.sleep(0.05)
    status, shown, _ = await api.get(ids[0])
    assert status == 200
    assert shown["id"] == ids[0] and shown["parts"] == 1 and shown["final"] is True and shown["error"] is None
    assert shown["submitted_at"].endswith("Z") and shown["done_at"].endswith("Z")

    # HTTP Basic with the account's SMPP credentials works as well as the token.
    status, shown, _ = await api.get(ids[1], token=None, auth=("acme", PARTNER_PASSWORDS["acme"]))
    assert status == 200 and shown["state"] == "delivered"
    # Another account's message, an unknown id, a non-id: 404 alike.
    for token, message_id in ((BETA_TOKEN, ids[0]), (TOKEN, "999999999"), (TOKEN, "abc")):
        status, shown, _ = await api.get(message_id, token=token)
        assert (status, shown["error"]["code"]) == (404, "not_found")


async def test_plain_http_on_loopback(mt, build, clients):
    up = await mt.upstream(stat=None)
    d = await mt.daemon(build([connector_entry("op", up.port)], tls=False))
    api = clients(d)
    assert api.base.startswith("http://")
    status, body, _ = await api.post({"from": "ACME", "to": ONE, "text": "Hi"})
    assert status == 202 and len(body["messages"]) == 1
    await wait_for(lambda: len(up.submits) == 1, what="the message upstream")


# --------------------------------------------------------------------------- bad input

LONG_TEXT = "x" * (255 * 153 + 1)  # GSM 7-bit: 256 parts, one more than a message may have

BAD = [
    ("malformed json", {"data": b'{"from": "ACME", "to": '}, 400, "bad_input", "body: malformed JSON"),
    ("not an object", {"body": ["ACME"]}, 400, "bad_input", "the body must be a JSON object"),
    ("wrong type", {"body": {"from": "ACME", "to": 33612345678, "text": "Hi"}}, 400, "bad_input", "to: expected"),
    ("wrong type in list", {"body": {"from": "ACME", "to": [ONE, 5], "text": "Hi"}}, 400, "bad_input", "to[1]:"),
    ("bool for a string", {"body": {"from": "ACME", "to": ONE, "text": True}}, 400, "bad_input", "text: expected"),
    ("unknown field", {"body": {"from": "ACME", "to": ONE, "text": "Hi", "priority": 3}}, 400, "bad_input",
     "priority: unknown field"),
    ("missing field", {"body": {"from": "ACME", "to": ONE}}, 400, "bad_input", "text: required"),
    ("empty to", {"body": {"from": "ACME", "to": [], "text": "Hi"}}, 400, "bad_input", "to: at least one"),
    ("too many recipients", {"body": {"from": "ACME", "to": [ONE, TWO, ONE, TWO], "text": "Hi"}}, 400, "bad_input",
     "to: at most 3 recipients"),
    ("text over the segment limit", {"body": {"from": "ACME", "to": ONE, "text": LONG_TEXT}}, 400, "text_too_long",
     "text:"),
    ("bad schedule", {"body": {"from": "ACME", "to": ONE, "text": "Hi", "schedule": "tomorrow"}}, 400, "bad_input",
     "schedule: expected an RFC 3339 time"),
    ("schedule without offset", {"body": {"from": "ACME", "to": ONE, "text": "Hi", "schedule": "2026-01-01T10:00:00"}},
     400, "bad_input", "schedule: the time needs its offset"),
    ("negative validity", {"body": {"from": "ACME", "to": ONE, "text": "Hi", "validity": -5}}, 400, "bad_input",
     "validity:"),
    ("unknown category", {"body": {"from": "ACME", "to": ONE, "text": "Hi", "category": "NOPE"}}, 400,
     "unknown_category", "category:"),
    ("body over the limit", {"data": b'{"text": "' + b"x" * 70_000 + b'"}'}, 413, "body_too_large", "body: over"),
    ("not json", {"data": b"from=ACME", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415,
     "unsupported_media_type", "Content-Type"),
    ("no credentials", {"token": None, "body": {"from": "ACME", "to": ONE, "text": "Hi"}}, 401, "unauthorized", ""),
    ("wrong token", {"token": "x" * 40, "body": {"from": "ACME", "to": ONE, "text": "Hi"}}, 401, "unauthorized", ""),
    ("wrong password", {"auth": ("acme", "nope"), "body": {"from": "ACME", "to": ONE, "text": "Hi"}}, 401,
     "unauthorized", ""),
    ("unknown account", {"auth": ("nobody", "secret1"), "body": {"from": "ACME", "to": ONE, "text": "Hi"}}, 401,
     "unauthorized", ""),
    ("malformed basic", {"token": None, "headers": {"Authorization": "Basic !!!"},
                         "body": {"from": "ACME", "to": ONE, "text": "Hi"}}, 401, "unauthorized", ""),
]


async def test_every_bad_input_gets_its_status_and_json_error_and_stores_nothing(mt, build, clients):
    up = await mt.upstream(stat=None)
    d = await mt.daemon(build([connector_entry("op", up.port)], api={"max_recipients": 3}))
    api = clients(d)
    for name, kwargs, want_status, want_code, want_message in BAD:
        status, body, headers = await api.post(**kwargs)
        assert status == want_status, (name, status, body)
        assert set(body) == {"error"}, name
        error = body["error"]
        assert error["code"] == want_code, (name, error)
        assert want_message in error["message"], (name, error)
        if status == 401:
            assert headers["WWW-Authenticate"].startswith("Basic realm="), name
    assert count_rows(d.settings, messages) == 0  # nothing stored, not even half a request
    status, body, _ = await api.post({"from": "ACME", "to": ONE, "text": "Hi"})  # the door still serves
    assert status == 202
    await wait_for(lambda: len(up.submits) == 1, what="the one good message upstream")


# --------------------------------------------------------------------------- one policy, two doors

#: Each row: (case, account, what the SMPP partner and the API client send, SMPP status,
#: HTTP status, JSON error code or None for a 202). On virtual time, Friday 22:00 in Paris:
#: marketing is outside its window.
POLICY = [
    ("opted out", "acme", {"to": ONE}, S.SMSC_ROPTEDOUT, 409, "opted_out"),
    ("outside window: held", "acme", {"to": TWO, "category": "MKT"}, S.ESME_ROK, 202, None),
    ("sender not allowed", "acme", {"to": TWO, "from": "NOTOURS"}, S.ESME_RINVSRCADR, 403, "sender_not_allowed"),
    ("invalid number", "acme", {"to": "+336"}, S.ESME_RINVDSTADR, 422, "invalid_number"),
    ("rate exceeded", "beta", {"to": TWO}, S.ESME_RTHROTTLED, 429, "rate_exceeded"),
]


async def test_the_same_policy_answers_through_both_doors(mt, build, clients):
    timers = FakeTimers(datetime(2026, 6, 5, 22, 0, tzinfo=PARIS).timestamp())  # a Friday night
    up = await mt.upstream(stat=None)
    settings = build(
        [connector_entry("op", up.port)],
        accounts=[{"system_id": "acme", "short_codes": ["38123"], "window": 1, "blacklist_alerts": True},
                  {"system_id": "beta", "throughput": 1}],
        optout={"short_code": "36180"},
    )
    d = await start(mt, settings, timers)
    smpp = {sid: await mt.partner(d, sid) for sid in ("acme", "beta")}
    api = clients(d)
    # acme's recipient ONE opted out (as a STOP reply records it).
    one = d.cipher.lookup_hash(ONE)
    await d.optouts.add("acme", one, "stop", "test")
    d.blacklist.added("acme", one)
    # beta's one token a second: the first submit takes it, then both doors are over the rate.
    assert (await smpp["beta"].submit("33611111111", b"first", source_addr="BETA")).command_status == 0

    for case, sid, sent, smpp_status, http_status, code in POLICY:
        source = sent.get("from", sid.upper())
        category = sent.get("category", "")
        resp = await smpp[sid].submit(sent["to"].removeprefix("+"), b"Soldes", source_addr=source,
                                      source_addr_ton=5, source_addr_npi=0, dest_addr_ton=1, dest_addr_npi=1,
                                      service_type=category)
        assert resp.command_status == smpp_status, (case, hex(resp.command_status))
        body = {"from": source, "to": sent["to"], "text": "Soldes", **({"category": category} if category else {})}
        status, answer, headers = await api.post(body, token=TOKEN if sid == "acme" else BETA_TOKEN)
        assert status == http_status, (case, status, answer)
        if code is None:
            [message] = answer["messages"]
            held = datetime.fromisoformat(message["held_until"])
            assert held == datetime(2026, 6, 6, 8, 0, tzinfo=PARIS), case  # Saturday 08:00, its window
        else:
            assert answer["error"]["code"] == code, (case, answer)
            assert answer["error"]["recipient"] in (None, sent["to"]), (case, answer)
            if status == 429:
                assert int(headers["Retry-After"]) >= 1, case
    assert d.dispatcher.held() == 2  # one held per door, nothing else stored but beta's first
    assert count_rows(d.settings, messages) == 3

    # Queue full: acme's window is 1. With the store's commits held back, one submit of a
    # door is awaiting its answer, and the next through that door is refused.
    gate = asyncio.Event()
    real_add = d.store.add_message
    waiting: list[asyncio.Task] = []

    def held_add(row, part_rows):
        fut = real_add(row, part_rows)

        async def later():
            await gate.wait()
            return await fut

        task = asyncio.get_running_loop().create_task(later())
        waiting.append(task)
        return task

    d.store.add_message = held_add
    first_smpp = asyncio.get_running_loop().create_task(smpp["acme"].submit("33622222222", b"Hi"))
    await wait_for(lambda: len(waiting) == 1, what="the SMPP submit awaiting its commit")
    assert (await smpp["acme"].submit("33633333333", b"Hi")).command_status == S.ESME_RMSGQFUL
    first_http = asyncio.get_running_loop().create_task(api.post({"from": "ACME", "to": "+33622222223", "text": "Hi"}))
    await wait_for(lambda: len(waiting) == 2, what="the API submit awaiting its commit")
    status, answer, headers = await api.post({"from": "ACME", "to": "+33633333334", "text": "Hi"})
    assert (status, answer["error"]["code"], headers["Retry-After"]) == (503, "queue_full", "1")
    gate.set()
    assert (await first_smpp).command_status == 0
    status, answer, _ = await first_http
    assert status == 202 and len(answer["messages"]) == 1


async def start(mt: Harness, settings, timers: FakeTimers) -> Daemon:
    d = Daemon(settings, timers=timers)
    await d.start()
    mt.daemons.append(d)
    for connector in d.connectors.values():
        await connector.wait_up(5)
    return d


async def test_a_request_partly_refused_answers_each_recipient(mt, build, clients):
    up = await mt.upstream(stat=None)
    d = await mt.daemon(build([connector_entry("op", up.port)]))
    api = clients(d)
    status, body, _ = await api.post({"from": "ACME", "to": [ONE, "+336", TWO], "text": "Hi"})
    assert status == 202
    assert [m["to"] for m in body["messages"]] == [ONE, TWO]
    assert body["errors"] == [{"code": "invalid_number", "message": body["errors"][0]["message"], "recipient": "+336"}]
    await wait_for(lambda: len(up.submits) == 2, what="the two valid recipients upstream")
    # All refused: the status of the refusal, each recipient's error listed.
    status, body, _ = await api.post({"from": "ACME", "to": ["+336", "+337"], "text": "Hi"})
    assert status == 422 and body["error"]["recipient"] == "+336"
    assert [e["recipient"] for e in body["errors"]] == ["+336", "+337"]


# --------------------------------------------------------------------------- Idempotency-Key


async def test_idempotency_key_returns_the_first_answer_even_after_a_restart(mt, build, clients):
    up = await mt.upstream(stat=None)
    settings = build([connector_entry("op", up.port)])
    d = await mt.daemon(settings)
    api = clients(d)
    order = {"from": "ACME", "to": [ONE, TWO], "text": "Votre commande est prête"}
    key = {"Idempotency-Key": "order-42-attempt"}

    status, first, headers = await api.post(order, headers=key)
    assert status == 202 and "Idempotent-Replayed" not in headers
    status, again, headers = await api.post(order, headers=key)
    assert (status, again, headers["Idempotent-Replayed"]) == (202, first, "true")
    # The same key with another body: refused, nothing sent.
    status, other, _ = await api.post({**order, "text": "Autre chose"}, headers=key)
    assert (status, other["error"]["code"]) == (422, "idempotency_key_reused")
    # A final refusal is kept too; a key is the account's own.
    status, refused, _ = await api.post({**order, "from": "NOTOURS"}, headers={"Idempotency-Key": "bad-sender"})
    assert (status, refused["error"]["code"]) == (403, "sender_not_allowed")
    status, beta, _ = await api.post({**order, "from": "BETA"}, headers=key, token=BETA_TOKEN)
    assert status == 202 and [m["id"] for m in beta["messages"]] != [m["id"] for m in first["messages"]]
    await wait_for(lambda: len(up.submits) == 4, what="acme's two messages and beta's two upstream")

    # Stored: a restart on the same database answers the same, and sends nothing more.
    await mt.stop_daemon(d)
    d2 = await mt.daemon(settings)
    api2 = clients(d2)
    status, after, headers = await api2.post(order, headers=key)
    assert (status, after, headers["Idempotent-Replayed"]) == (202, first, "true")
    status, refused_again, _ = await api2.post({**order, "from": "NOTOURS"}, headers={"Idempotency-Key": "bad-sender"})
    assert (status, refused_again) == (403, refused)
    assert count_rows(settings, messages) == 4
    # No number in the table: recipients are kept as their index in the request.
    engine = create_engine(f"sqlite:///{db_path(settings)}")
    with engine.connect() as conn:
        stored = [row.answer for row in conn.execute(select(api_idempotency))]
    engine.dispose()
    # (the whole national number: a part as short as "336" may be in an id by chance)
    assert len(stored) == 3, stored
    assert not any(n[3:] in answer or n[1:] in answer for n in (ONE, TWO) for answer in stored), stored
    # A bad key is a bad input.
    status, body, _ = await api2.post(order, headers={"Idempotency-Key": "x" * 256})
    assert (status, body["error"]["code"]) == (400, "bad_input") and "Idempotency-Key" in body["error"]["message"]
    # acme's order went upstream once. (beta's may go again after the restart: the stop came
    # right after the upstream had them, before their answers were committed — in flight.)
    assert sorted(s.destination_addr for s in up.submits if s.source_addr == "ACME") == ["33612345678", "33698765432"]


async def test_idempotency_key_under_way_is_409_and_a_503_is_not_kept(mt, build, clients):
    up = await mt.upstream(stat=None)
    d = await mt.daemon(build([connector_entry("op", up.port)], accounts=[{"system_id": "acme", "window": 1},
                                                                          {"system_id": "beta"}]))
    api = clients(d)
    gate = asyncio.Event()
    real_add = d.store.add_message
    waiting: list[asyncio.Task] = []

    def held_add(row, part_rows):
        fut = real_add(row, part_rows)

        async def later():
            await gate.wait()
            return await fut

        waiting.append(task := asyncio.get_running_loop().create_task(later()))
        return task

    d.store.add_message = held_add
    order = {"from": "ACME", "to": ONE, "text": "Hi"}
    first = asyncio.get_running_loop().create_task(api.post(order, headers={"Idempotency-Key": "k1"}))
    await wait_for(lambda: len(waiting) == 1, what="the first request awaiting its commit")
    status, body, _ = await api.post(order, headers={"Idempotency-Key": "k1"})
    assert (status, body["error"]["code"]) == (409, "idempotency_key_in_use")
    status, body, _ = await api.post(order, headers={"Idempotency-Key": "k2"})  # over acme's window of 1
    assert (status, body["error"]["code"]) == (503, "queue_full")
    gate.set()
    status, answer, _ = await first
    assert status == 202
    d.store.add_message = real_add
    status, again, headers = await api.post(order, headers={"Idempotency-Key": "k1"})
    assert (status, again, headers["Idempotent-Replayed"]) == (202, answer, "true")
    status, k2, headers = await api.post(order, headers={"Idempotency-Key": "k2"})  # served anew
    assert status == 202 and "Idempotent-Replayed" not in headers and k2 != answer
    # At least: on a loaded machine an answer later than the connector's response_timeout
    # sends a message again, and two submits can land between two looks.
    await wait_for(lambda: len(up.submits) >= 2, what="k1's and k2's messages upstream")
    assert count_rows(d.settings, messages) == 2  # k1 stored once (its replay made none), k2 once


async def test_the_throughput_costs_a_token_per_recipient(mt, build, clients):
    """One core, one rate: a request to three recipients takes three of the account's tokens,
    as three submit_sm (or a submit_multi to three) would, not one."""
    timers = FakeTimers(datetime(2026, 6, 5, 12, 0, tzinfo=PARIS).timestamp())
    up = await mt.upstream(stat=None)
    d = await start(mt, build([connector_entry("op", up.port)],
                              accounts=[{"system_id": "acme"}, {"system_id": "beta", "throughput": 3}]), timers)
    api = clients(d)
    three = ["+33611111111", "+33622222222", "+33633333333"]
    status, answer, _ = await api.post({"from": "BETA", "to": three, "text": "Hi"}, token=BETA_TOKEN)
    assert status == 202 and len(answer["messages"]) == 3, answer
    status, answer, headers = await api.post({"from": "BETA", "to": ONE, "text": "Hi"}, token=BETA_TOKEN)
    assert (status, answer["error"]["code"]) == (429, "rate_exceeded") and int(headers["Retry-After"]) >= 1
    await timers.advance(1.0)  # a second: three tokens again
    status, answer, _ = await api.post({"from": "BETA", "to": three[:2], "text": "Hi"}, token=BETA_TOKEN)
    assert status == 202, answer
