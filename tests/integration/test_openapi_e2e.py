"""The OpenAPI document as the running daemon serves it, over a real TLS socket on 127.0.0.1:
fetched without credentials, a valid OpenAPI 3.1 document with the configured limits, and
the door's real answers — 202s, GETs, and an error of every status the POST can answer here —
valid against the response schemas of their status, with the headers it says are required.
(tests/unit/test_openapi.py holds the document and api.py together field by field and code
by code.)"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from smscenter.http.openapi import document
from smscenter.runtime.passwords import hash_token
from tests.integration.mt_fixtures import PARTNER_PASSWORDS, connector_entry, mt, wait_for  # noqa: F401 - mt
from tests.integration.test_http_api import BETA_TOKEN, LONG_TEXT, ONE, TOKEN, TWO, build, clients  # noqa: F401
from tests.openapi_schemas import errors, request_validator, response_headers, response_validator
from tests.patience import PATIENCE

pytestmark = pytest.mark.timeout(90)

GAMMA_TOKEN = "gamma-token-" + "0123456789abcdef" * 2
OPTED_OUT = "+33655555555"
MAX_RECIPIENTS, MAX_BODY = 3, 50_000
MESSAGES, MESSAGE = "/v1/messages", "/v1/messages/{id}"


@pytest.fixture
def password_hashes(password_hashes):
    """The session's, and "gamma" (acme's password: only its token is used here)."""
    return {**password_hashes, "gamma": password_hashes["acme"]}


async def test_the_served_document_is_valid_and_the_doors_answers_match_it(mt, build, clients):
    up = await mt.upstream(stat="DELIVRD")
    settings = build(
        [connector_entry("op", up.port)],
        api={"max_recipients": MAX_RECIPIENTS, "max_body": MAX_BODY},
        accounts=[{"system_id": "acme", "blacklist_alerts": True},
                  {"system_id": "beta", "throughput": 1},
                  {"system_id": "gamma", "api_tokens": [hash_token(GAMMA_TOKEN)], "allowed_ips": ["10.0.0.0/8"]}],
    )
    d = await mt.daemon(settings)
    api = clients(d)
    one = d.cipher.lookup_hash(OPTED_OUT)  # as a STOP reply records it
    await d.optouts.add("acme", one, "stop", "test")
    d.blacklist.added("acme", one)

    # Served to anyone, valid, this listener's limits in it, and nothing else than the module's.
    status, doc, headers = await api.request("GET", "/v1/openapi.json", token=None)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    validate(doc)
    assert doc == document(MAX_RECIPIENTS, MAX_BODY)
    assert doc["openapi"] == "3.1.0" and "servers" not in doc

    answers: list[tuple[str, str, str, int, dict, object]] = []  # (case, path, method, status, headers, body)

    async def post(case: str, body=None, **kw):
        status, answer, headers = await api.post(body, **kw)
        answers.append((case, MESSAGES, "post", status, headers, answer))
        return status, answer

    async def get(case: str, message_id: str, **kw):
        status, answer, headers = await api.get(message_id, **kw)
        answers.append((case, MESSAGE, "get", status, headers, answer))
        return status, answer

    # Every field of the request schema, as the document allows them: accepted by the door.
    every = {"from": "ACME", "to": [ONE, TWO], "text": "Rendez-vous à 10 h", "category": "ALERT", "validity": 3600,
             "reference": "order-42", "receipt": True}
    schema = doc["paths"][MESSAGES]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(every) | {"schedule"} == set(schema["properties"])
    later = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat(timespec="seconds")
    for case, body in (("every field", every), ("scheduled", {**every, "to": ONE, "schedule": later})):
        assert not errors(request_validator(doc), body), case
        status, answer = await post(case, body)
        assert status == 202, (case, answer)
    assert "held_until" in answer["messages"][0]
    # An unknown field: refused by the schema and by the door.
    unknown = {"from": "ACME", "to": ONE, "text": "Hi", "priority": 3}
    assert errors(request_validator(doc), unknown)
    assert (await post("unknown field", unknown))[0] == 400

    ids = [m["id"] for m in answers[0][5]["messages"]]
    await wait_for(lambda: len(up.accepted) >= 2, what="the two unscheduled messages upstream")
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while (await api.get(ids[0]))[1]["state"] != "delivered":  # its receipt back: done_at set
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    await get("delivered", ids[0])
    await get("another account's", ids[0], token=BETA_TOKEN)
    await get("no credentials", ids[1], token=None)
    await get("from outside allowed_ips", ids[1], token=GAMMA_TOKEN)

    key = {"Idempotency-Key": "e2e-1"}
    hi = {"from": "ACME", "to": TWO, "text": "Hi"}
    await post("a key", hi, headers=key)
    status, _ = await post("the key again", hi, headers=key)
    assert status == 202 and answers[-1][4]["Idempotent-Replayed"] == "true"
    await post("the key, another body", {**hi, "text": "Ho"}, headers=key)
    await post("partly refused", {**hi, "to": [ONE, "+336"]})
    await post("all refused", {**hi, "to": ["+336", "+337"]})
    await post("opted out", {**hi, "to": OPTED_OUT})
    await post("unknown category", {**hi, "category": "NOPE"})
    await post("text over 255 parts", {**hi, "text": LONG_TEXT})
    await post("too many recipients", {**hi, "to": [ONE] * (MAX_RECIPIENTS + 1)})
    await post("sender not allowed", {**hi, "from": "NOTOURS"})
    await post("no credentials", hi, token=None)
    await post("from outside allowed_ips", {**hi, "from": "GAMMA"}, token=GAMMA_TOKEN)
    await post("body too large", data=b'{"text": "' + b"x" * MAX_BODY + b'"}')
    await post("not json", data=b"from=ACME", headers={"Content-Type": "application/x-www-form-urlencoded"})
    # beta's one a second: the next request is over it (a few, should the machine pause a second).
    for _ in range(10):
        if (await post("beta's one a second", {**hi, "from": "BETA"}, token=BETA_TOKEN))[0] == 429:
            break

    seen = {}
    for case, path, method, status, headers, body in answers:
        assert not errors(response_validator(doc, path, method, status), body), (case, status, body)
        for name, header in response_headers(doc, path, method, status).items():
            if header.get("required"):
                assert name in headers, (case, name)
            if name in headers:
                value = int(headers[name]) if header["schema"]["type"] == "integer" else headers[name]
                assert not errors(Draft202012Validator(header["schema"]), value), (case, name, value)
        seen.setdefault((method, status), []).append(case)
    # Every status the POST documents was answered here, but those of a failing store or a
    # full queue (the unit test validates the door's bodies for them) — and the GET's.
    documented = {("post", int(s)) for s in doc["paths"][MESSAGES]["post"]["responses"]}
    documented |= {("get", int(s)) for s in doc["paths"][MESSAGE]["get"]["responses"]}
    # Not produced here: a failure of ours, a full queue or busy storage, and a GET from an address
    # in penalty (tests/integration/test_api_guard.py answers 429 to the POST that shares its path).
    assert documented - set(seen) == {("post", 500), ("post", 503), ("get", 503), ("get", 429)}, seen
    assert set(seen) <= documented, seen
