"""The OpenAPI document (``smscenter/http/openapi.py``) is valid and says what ``api.py`` does,
checked both ways so that a change to either side alone fails here:

- the request schema and ``parse_message`` accept and refuse the same bodies (the same fields,
  types and limits; an unknown field refused by both), on a table of edge cases and on bodies
  hypothesis makes up;
- every error ``code`` the door can answer, with its status (the ``ApiError(status, "code", …)``
  calls of api.py, read with ``ast`` as test_log_events.py reads log calls, and the core's
  refusals in ``HTTP_STATUS``), is documented under that status of that operation, and the
  document lists no other;
- the error bodies the door builds for the core's refusals validate against the document.

tests/integration/test_openapi_e2e.py checks the served document and the running door's real
answers.
"""

from __future__ import annotations

import ast
import math
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate

from smscenter.http import api
from smscenter.http.api import FIELDS, HTTP_STATUS, MAX_REFERENCE, MAX_TEXT, REQUIRED, ApiError, error_of, parse_message
from smscenter.http.openapi import document
from smscenter.pipeline.request import Refused
from tests.openapi_schemas import errors, request_validator, response_headers, response_validator

MAX_RECIPIENTS = 3
DOC = document(MAX_RECIPIENTS, 4096)
NOW = 1_780_000_000.0
ONE = "+33612345678"
OK = {"from": "ACME", "to": ONE, "text": "Hi"}


@pytest.mark.parametrize("limits", [(1, 1024), (100, 65_536), (10_000, 16 * 1024 * 1024)])
def test_the_document_is_valid_openapi_3_1_with_the_limits_filled_in(limits):
    max_recipients, max_body = limits
    doc = document(max_recipients, max_body)
    validate(doc)  # raises on an invalid document
    assert doc["openapi"].startswith("3.1.")
    assert "servers" not in doc  # relative: the address the document was fetched from
    post = doc["paths"]["/v1/messages"]["post"]
    to = post["requestBody"]["content"]["application/json"]["schema"]["properties"]["to"]
    assert [alt.get("maxItems") for alt in to["oneOf"]] == [None, max_recipients]
    assert f"{max_body} octets" in post["requestBody"]["description"]
    assert f"{max_body} octets" in post["responses"]["413"]["description"]
    assert doc["paths"]["/v1/openapi.json"]["get"]["security"] == []  # served to anyone


# --------------------------------------------------------------------------- the request body


def schema_accepts(body) -> bool:
    return not errors(request_validator(DOC), body)


def handler_accepts(body) -> bool:
    try:
        parse_message(body, MAX_RECIPIENTS, NOW)
    except ApiError as error:
        assert error.status == 400, error.message
        return False
    return True


def test_the_schema_has_the_handlers_fields_and_required_ones():
    schema = DOC["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False
    assert list(schema["properties"]) == list(FIELDS)
    assert schema["required"] == list(REQUIRED)


#: (why, body): each body answered alike by the schema and ``parse_message``; the expected
#: answer is written down too, so that a case cannot pass by both sides refusing everything.
BODIES = [
    ("the minimum", OK, True),
    ("every field", {**OK, "to": [ONE, "0612345678"], "category": "MKT", "validity": 3600,
                     "schedule": "2026-06-02T10:00:00+02:00", "reference": "order-42", "receipt": True}, True),
    ("validity as a time", {**OK, "validity": "2026-06-02T10:00:00Z"}, True),
    ("fractional seconds", {**OK, "schedule": "2026-06-02T10:00:00.250-05:30"}, True),
    ("receipt false", {**OK, "receipt": False}, True),
    ("to at its limit", {**OK, "to": [ONE] * MAX_RECIPIENTS}, True),
    ("text at its limit", {**OK, "text": "x" * MAX_TEXT}, True),
    ("reference at its limit", {**OK, "reference": "r" * MAX_REFERENCE}, True),
    ("validity of one second", {**OK, "validity": 1}, True),
    ("not an object", [OK], False),
    ("a string body", "hello", False),
    ("an unknown field", {**OK, "priority": 3}, False),
    ("an unknown field, null", {**OK, "sender": None}, False),
    *((f"no {key}", {k: v for k, v in OK.items() if k != key}, False) for key in REQUIRED),
    ("to over its limit", {**OK, "to": [ONE] * (MAX_RECIPIENTS + 1)}, False),
    ("to empty", {**OK, "to": []}, False),
    ("to an empty string", {**OK, "to": ""}, False),
    ("to with an empty number", {**OK, "to": [ONE, ""]}, False),
    ("to with a number", {**OK, "to": [ONE, 33612345678]}, False),
    ("to a number", {**OK, "to": 33612345678}, False),
    ("to an object", {**OK, "to": {"n": ONE}}, False),
    ("text empty", {**OK, "text": ""}, False),
    ("text over its limit", {**OK, "text": "x" * (MAX_TEXT + 1)}, False),
    ("text true", {**OK, "text": True}, False),
    ("text null", {**OK, "text": None}, False),
    ("from a list", {**OK, "from": ["ACME"]}, False),
    ("category a number", {**OK, "category": 1}, False),
    ("reference over its limit", {**OK, "reference": "r" * (MAX_REFERENCE + 1)}, False),
    ("receipt 1", {**OK, "receipt": 1}, False),
    ("receipt a string", {**OK, "receipt": "yes"}, False),
    ("validity 0", {**OK, "validity": 0}, False),
    ("validity negative", {**OK, "validity": -5}, False),
    ("validity true", {**OK, "validity": True}, False),
    ("validity a fraction", {**OK, "validity": 1.5}, False),
    ("validity not a time", {**OK, "validity": "tomorrow"}, False),
    ("schedule without offset", {**OK, "schedule": "2026-06-02T10:00:00"}, False),
    ("schedule a date", {**OK, "schedule": "2026-06-02"}, False),
    ("schedule lower-case t and z", {**OK, "schedule": "2026-06-02t10:00:00z"}, False),
    ("schedule a leap second", {**OK, "schedule": "2026-12-31T23:59:60Z"}, False),
    ("schedule month 13", {**OK, "schedule": "2026-13-02T10:00:00Z"}, False),
    ("schedule seconds", {**OK, "schedule": 3600}, False),
]


@pytest.mark.parametrize(("why", "body", "accepted"), BODIES, ids=[case[0] for case in BODIES])
def test_the_schema_and_parse_message_accept_the_same_bodies(why, body, accepted):
    assert (schema_accepts(body), handler_accepts(body)) == (accepted, accepted), errors(request_validator(DOC), body)


NAMES = st.sampled_from([*FIELDS, "priority", "From"])
TIMES = st.sampled_from(["2026-06-02T10:00:00Z", "2026-06-02T10:00:00.5+02:00", "2026-06-02T10:00:00",
                         "2026-06-02 10:00:00Z", "2026-06-02T25:00:00Z", "soon", ""])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8), TIMES, st.just(ONE))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=MAX_RECIPIENTS + 1),
                   st.dictionaries(st.text(max_size=3), SCALARS, max_size=2))
NUMBERS = st.sampled_from([ONE, "0612345678"])
#: Per field: values of its type, or near its limits (valid or not), or anything.
VALID = {
    "from": st.sampled_from(["ACME", "+33612345678"]),
    "to": st.one_of(NUMBERS, st.lists(NUMBERS, min_size=1, max_size=MAX_RECIPIENTS)),
    "text": st.text(min_size=1, max_size=20),
    "category": st.text(max_size=5),
    "validity": st.one_of(st.integers(1, 10**7), st.just("2026-06-02T10:00:00.5+02:00")),
    "schedule": st.just("2026-06-02T10:00:00Z"),
    "reference": st.text(max_size=MAX_REFERENCE),
    "receipt": st.booleans(),
}
EDGES = {
    "from": st.sampled_from(["", 5]),
    "to": st.one_of(st.just(""), st.lists(st.sampled_from([ONE, ""]), max_size=MAX_RECIPIENTS + 1)),
    "text": st.sampled_from(["", "x" * MAX_TEXT, "x" * (MAX_TEXT + 1)]),
    "category": st.just(None),
    "validity": st.one_of(st.integers(-2, 2), TIMES),
    "schedule": TIMES,
    "reference": st.text(min_size=MAX_REFERENCE - 1, max_size=MAX_REFERENCE + 1),
    "receipt": st.sampled_from([0, 1, "true"]),
}


@st.composite
def bodies(draw) -> object:
    """A valid body with none, one or a few of its fields changed (to an edge or to anything),
    dropped or added; or anything at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.one_of(VALUES, st.dictionaries(NAMES, VALUES, max_size=9)))
    body = draw(st.fixed_dictionaries({name: VALID[name] for name in REQUIRED},
                                      optional={name: VALID[name] for name in FIELDS if name not in REQUIRED}))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        name = draw(NAMES)
        change = draw(st.sampled_from(["edge", "edge", "anything", "drop"]))
        if change == "drop":
            body.pop(name, None)
        else:
            body[name] = draw(EDGES[name] if change == "edge" and name in EDGES else VALUES)
    return body


def integral_float_validity(body) -> bool:
    """A validity of 3600.0: an integer to JSON Schema, which cannot tell it from 3600, a float
    that ``parse_message`` refuses. The schema's description asks for no fraction."""
    validity = body.get("validity") if isinstance(body, dict) else None
    return isinstance(validity, float) and math.isfinite(validity) and validity.is_integer()


def in_rfc3339(body):
    """``body`` with its times as RFC 3339. ``parse_message`` reads whatever ISO 8601 time with
    an offset ``datetime.fromisoformat`` reads ("2026-06-02 10:00:00Z"); the document asks for
    RFC 3339, the part of it every client library writes."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    for name in ("validity", "schedule"):
        try:
            when = datetime.fromisoformat(body[name])
        except (KeyError, TypeError, ValueError):
            continue
        body[name] = when.isoformat()
    return body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_schema_and_parse_message_agree_on_made_up_bodies(body):
    if integral_float_validity(body):  # refused by the handler; else as the same body with 3600
        assert not handler_accepts(body)
        assert schema_accepts(body) == handler_accepts({**body, "validity": int(body["validity"])})
        return
    # What the document allows is accepted; what it refuses is refused, but for the times.
    assert handler_accepts(body) or not schema_accepts(body), (body, "allowed by the document, refused")
    assert handler_accepts(body) == schema_accepts(in_rfc3339(body)), (body, errors(request_validator(DOC), body))


@pytest.mark.parametrize("time", ["2026-06-02 10:00:00Z", "20260602T100000Z", "2026-06-02T10:00+02:00"])
def test_the_door_reads_more_iso_8601_times_than_the_document_says(time):
    body = {**OK, "schedule": time}
    assert (schema_accepts(body), handler_accepts(body)) == (False, True)


# --------------------------------------------------------------------------- error codes

OPERATIONS = {"post": ("/v1/messages", "post"), "get": ("/v1/messages/{id}", "get")}
#: api.py's functions that answer ``GET /v1/messages/{id}`` (the rest serves the POST).
GET_FUNCTIONS = {"get_message", "_account"}


def raised_codes() -> dict[str, set[tuple[int, str]]]:
    """Per operation, the (status, code) pairs api.py can answer: its ``ApiError(status,
    "code", …)`` calls, and the core's refusals (``HTTP_STATUS``, through ``error_of``, the one
    call with variables) for the POST, the one that submits."""
    tree = ast.parse(Path(api.__file__).read_text())
    found: dict[str, set[tuple[int, str]]] = {"post": set(), "get": set()}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "ApiError":
                status, code = node.args[:2]
                if function.name == "error_of":
                    continue
                assert isinstance(status, ast.Constant) and isinstance(code, ast.Constant), ast.unparse(node)
                pair = (status.value, code.value)
                if function.name in GET_FUNCTIONS:
                    found["get"].add(pair)
                if function.name not in GET_FUNCTIONS - {"_account"}:  # the POST authenticates too
                    found["post"].add(pair)
    found["post"] |= set(HTTP_STATUS.values())
    return found


def documented_codes(doc: dict) -> dict[str, set[tuple[int, str]]]:
    """Per operation, the (status, code) pairs of its error responses."""
    found = {}
    for name, (path, method) in OPERATIONS.items():
        found[name] = set()
        for status, response in doc["paths"][path][method]["responses"].items():
            schema = response["content"]["application/json"]["schema"]
            if "allOf" not in schema:
                assert int(status) < 400, (path, status)
                continue
            [narrowing] = [s for s in schema["allOf"] if "$ref" not in s]
            found[name] |= {(int(status), code) for code in narrowing["properties"]["error"]["properties"]["code"]["enum"]}
    return found


def test_every_code_the_door_answers_is_documented_under_its_status_and_no_other():
    raised, documented = raised_codes(), documented_codes(DOC)
    assert raised["get"] >= {(404, "not_found"), (401, "unauthorized")}  # the scan sees the calls
    for name in OPERATIONS:
        assert raised[name] - documented[name] == set(), f"{name}: answered, not documented"
        assert documented[name] - raised[name] == set(), f"{name}: documented, never answered"
    every = {code for pairs in raised.values() for _, code in pairs}
    assert set(DOC["components"]["schemas"]["ErrorCode"]["enum"]) == every


@pytest.mark.parametrize("refusal", list(HTTP_STATUS), ids=lambda r: r.name)
def test_the_cores_refusals_answer_as_documented(refusal):
    error = error_of(Refused(refusal, "why", "text"), ONE)
    body = {"error": error.body()}
    assert not errors(response_validator(DOC, "/v1/messages", "post", error.status), body)
    assert not errors(response_validator(DOC, "/v1/messages", "post", error.status), {**body, "errors": [error.body()] * 2})
    for name, header in response_headers(DOC, "/v1/messages", "post", error.status).items():
        if header.get("required") and name == "Retry-After" and error.status == 503:
            assert int(error.headers[name]) >= 1  # 429's is set where the bucket is read (_accept)


def test_a_wrong_code_for_a_status_fails_validation():
    """The per-status narrowing bites: a body valid as an error, with another status's code."""
    body = {"error": {"code": "queue_full", "message": "m", "recipient": None}}
    assert errors(response_validator(DOC, "/v1/messages", "post", 409), body)
    assert not errors(response_validator(DOC, "/v1/messages", "post", 503), body)
