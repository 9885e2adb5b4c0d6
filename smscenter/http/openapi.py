"""The OpenAPI 3.1 document of the HTTPS API, served at ``GET /v1/openapi.json``.

A client generator or a partner's developer reads what ``api.py`` accepts and answers from
here rather than from the README, so the document is built from the same limits the handlers
check (``MAX_TEXT``, ``MAX_REFERENCE``, ``MAX_KEY``, and the configured ``max_recipients`` and
``max_body``) and says nothing the door does not do: the request schema refuses any other
field (``additionalProperties: false``, as ``parse_message`` does), and each error status
lists the exact ``code`` values the door answers with it. tests/unit/test_openapi.py holds
the two together both ways (fields, limits, codes), and the integration test validates the
served document and the running door's real answers against it.

It holds no secret and no account's data: it is served without authentication. No
``servers``: a client uses the address it fetched the document from.
"""

from __future__ import annotations

from protocol.constants import MessageState

from smscenter.http.api import KEPT_STATUSES, MAX_KEY, MAX_REFERENCE, MAX_TEXT

#: Every JSON error ``code`` the door answers with: its HTTP status and when.
ERRORS: dict[str, tuple[int, str]] = {
    "bad_input": (400, ("malformed JSON, not an object, an unknown field, a wrong type, a missing field, "
                        "an empty or too long `to`, a bad time, a validity that ends before delivery, a bad "
                        "Idempotency-Key; `message` starts with the field")),
    "unknown_category": (400, "a category unknown, or not the account's"),
    "text_too_long": (400, "more than 255 parts, or no room for the STOP mention"),
    "unauthorized": (401, "no or wrong credentials"),
    "forbidden": (403, "a request from an address outside the account's `allowed_ips`"),
    "sender_not_allowed": (403, "`from` is not one of the account's senders"),
    "not_found": (404, "no such message of this account (another account's, unknown, or malformed id)"),
    "opted_out": (409, "the recipient opted out (per recipient)"),
    "idempotency_key_in_use": (409, "a request with this Idempotency-Key is under way"),
    "body_too_large": (413, "a body over the configured `max_body`"),
    "unsupported_media_type": (415, "a body that is not `Content-Type: application/json`"),
    "invalid_number": (422, "not a phone number, or reported invalid by an upstream (per recipient)"),
    "no_route": (422, "no route for the recipient (per recipient)"),
    "outside_window": (422, "marketing outside its window, for an account that rejects it"),
    "idempotency_key_reused": (422, "the Idempotency-Key was used for another body in the last 24 hours"),
    "rate_exceeded": (429, "over the account's throughput; `Retry-After` in seconds"),
    "too_many_logins": (429, "too many login attempts from this address, or for this account from it; "
                             "`Retry-After` in seconds"),
    "system_error": (500, "a failure of ours"),
    "queue_full": (503, "the account's requests awaiting their commit are over its window"),
    "storage_busy": (503, "the database cannot take it now"),
    "busy": (503, "too many logins being checked in all; `Retry-After` in seconds"),
}
#: The codes each operation can answer (the GET authenticates and reads, nothing more).
GET_CODES = ("unauthorized", "forbidden", "not_found", "storage_busy", "too_many_logins", "busy")
POST_CODES = tuple(code for code in ERRORS if code != "not_found")
#: Statuses answered with ``Retry-After`` (integer seconds).
RETRY_STATUSES = (429, 503)

#: An RFC 3339 time with its offset, as ``datetime.fromisoformat`` reads it (``format:
#: date-time`` alone also allows a lower-case ``t``/``z`` and a leap second, which it refuses).
TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
TIME = {"type": "string", "format": "date-time", "pattern": TIME_PATTERN}
MESSAGE_ID = {"type": "string", "pattern": "^[0-9]{1,19}$", "description": "our id of one recipient's message"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def message_request(max_recipients: int) -> dict:
    """The body of ``POST /v1/messages``: ``api.FIELDS``, their types and limits."""
    number = {"type": "string", "minLength": 1,
              "description": "`+` and E.164 digits, or a national number read with the account's default_country"}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["from", "to", "text"],
        "properties": {
            "from": {"type": "string", "description": "a sender ID, a short code or a number (`+` and digits) "
                                                      "the account may use"},
            "to": {"description": f"one recipient, or a list of 1 to {max_recipients}",
                   "oneOf": [number, {"type": "array", "items": number, "minItems": 1, "maxItems": max_recipients}]},
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT,
                     "description": "the text: sent in GSM 7-bit when it fits (160 characters in one part, 153 "
                                    "per part split), else UCS-2 (70, 67 split); at most 255 parts, with the "
                                    "STOP mention a marketing message gets (else `text_too_long`)"},
            "category": {"type": "string", "description": "as SMPP's service_type (ALERT, MKT, …); default the "
                                                          "account's category"},
            "validity": {"description": "until when it may be delivered: seconds from now (an integer written "
                                        "without a fraction) or an RFC 3339 time",
                         "oneOf": [{"type": "integer", "minimum": 1}, TIME]},
            "schedule": {**TIME, "description": "not before (RFC 3339 with its offset)"},
            "reference": {"type": "string", "maxLength": MAX_REFERENCE, "description": "the client's own reference"},
            "receipt": {"type": "boolean", "description": "a delivery receipt wanted (to the account's SMPP binds "
                                                          "and its receipt_url)"},
        },
    }


def _error_schema(codes: tuple[str, ...]) -> dict:
    """An error answer whose ``error.code`` is one of ``codes``."""
    return {"allOf": [_ref("ErrorAnswer"), {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}}]}


def _responses(codes: tuple[str, ...], max_body: int) -> dict:
    """The error responses of an operation answering ``codes``, one per status."""
    statuses: dict[int, list[str]] = {}
    for code in codes:
        statuses.setdefault(ERRORS[code][0], []).append(code)
    responses = {}
    for status, its_codes in sorted(statuses.items()):
        whens = "; ".join(f"`{code}`: {ERRORS[code][1]}" for code in its_codes)
        if status == 413:
            whens += f" ({max_body} octets)"
        response: dict = {"description": whens, "content": _json(_error_schema(tuple(its_codes)))}
        headers = {}
        if status in RETRY_STATUSES:
            headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
        if status == 401:
            headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WWWAuthenticate"}
        if status in KEPT_STATUSES:
            headers["Idempotent-Replayed"] = {"$ref": "#/components/headers/IdempotentReplayed"}
        if headers:
            response["headers"] = headers
        responses[str(status)] = response
    return responses


def document(max_recipients: int, max_body: int) -> dict:
    """The OpenAPI 3.1 document, with the configured limits (``[api] max_recipients``,
    ``max_body``) filled in."""
    post = {
        "operationId": "submitMessage",
        "summary": "Submit a message to one or more recipients",
        "description": "Each recipient's message is stored before it is answered. The request's own errors "
                       "(JSON, fields, sender, text, rate) are answered before anything is stored; a recipient "
                       "refused on its own (opted out, invalid number, no route) is listed in `errors` beside "
                       "the accepted ones.",
        "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
        "requestBody": {"required": True, "description": f"JSON, at most {max_body} octets",
                        "content": _json(message_request(max_recipients))},
        "responses": {
            "202": {"description": "at least one recipient stored: each one's id, in the request's order",
                    "headers": {"Idempotent-Replayed": {"$ref": "#/components/headers/IdempotentReplayed"}},
                    "content": _json(_ref("Accepted"))},
            **_responses(POST_CODES, max_body),
        },
    }
    get = {
        "operationId": "getMessage",
        "summary": "A message of the account: its state, parts and dates",
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "our id, as the 202 gave it (anything else is 404)"}],
        "responses": {"200": {"description": "the message", "content": _json(_ref("Message"))},
                      **_responses(GET_CODES, max_body)},
    }
    spec = {
        "operationId": "getOpenApi",
        "summary": "This document",
        "security": [],
        "responses": {"200": {"description": "the OpenAPI 3.1 document", "content": _json({"type": "object"})}},
    }
    error = {
        "type": "object",
        "additionalProperties": False,
        "required": ["code", "message", "recipient"],
        "properties": {
            "code": _ref("ErrorCode"),
            "message": {"type": "string", "description": "for people; a bad input's starts with its field"},
            "recipient": {"type": ["string", "null"], "description": "the recipient refused, as the request "
                                                                     "wrote it; null for the whole request"},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smscenter HTTPS API",
            "version": "1",
            "description": "Submit SMS and read their state. The same policies answer as over SMPP.",
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/v1/messages": {"post": post},
            "/v1/messages/{id}": {"get": get},
            "/v1/openapi.json": {"get": spec},
        },
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic",
                          "description": "the account's system_id and SMPP password"},
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "one of the account's api_tokens"},
            },
            "parameters": {
                "IdempotencyKey": {
                    "name": "Idempotency-Key", "in": "header", "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
                    "description": "printable characters; a retry with the same key and body gets the first "
                                   "final answer (202, 400, 403, 409, 422) again for 24 hours instead of "
                                   "sending twice",
                },
            },
            "headers": {
                "RetryAfter": {"required": True, "schema": {"type": "integer", "minimum": 1},
                               "description": "seconds to wait before trying again"},
                "WWWAuthenticate": {"required": True, "schema": {"type": "string"},
                                    "description": 'Basic realm="smscenter", charset="UTF-8", Bearer'},
                "IdempotentReplayed": {"schema": {"type": "string", "enum": ["true"]},
                                       "description": "the first answer to this Idempotency-Key, again"},
            },
            "schemas": {
                "ErrorCode": {"type": "string", "enum": list(ERRORS)},
                "Error": error,
                "ErrorAnswer": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["error"],
                    "properties": {
                        "error": _ref("Error"),
                        "errors": {"type": "array", "items": _ref("Error"), "minItems": 2,
                                   "description": "each recipient's refusal, when several were refused"},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["messages"],
                    "properties": {
                        "messages": {"type": "array", "minItems": 1, "items": _ref("AcceptedMessage")},
                        "errors": {"type": "array", "minItems": 1, "items": _ref("Error"),
                                   "description": "the recipients refused on their own"},
                    },
                },
                "AcceptedMessage": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "to", "parts"],
                    "properties": {
                        "id": MESSAGE_ID,
                        "to": {"type": "string", "description": "the recipient, as the request wrote it"},
                        "parts": {"type": "integer", "minimum": 1, "maximum": 255},
                        "held_until": {**TIME, "description": "held until then: marketing outside its send "
                                                              "window, or a scheduled message"},
                    },
                },
                "Message": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "state", "final", "parts", "category", "submitted_at", "not_before",
                                 "expires_at", "done_at", "error"],
                    "properties": {
                        "id": MESSAGE_ID,
                        "state": {"type": "string", "enum": [state.name.lower() for state in MessageState]},
                        "final": {"type": "boolean", "description": "the state will not change again"},
                        "parts": {"type": "integer", "minimum": 1, "maximum": 255},
                        "category": {"type": "string"},
                        "submitted_at": TIME,
                        "not_before": TIME,
                        "expires_at": TIME,
                        "done_at": {"oneOf": [TIME, {"type": "null"}], "description": "when it became final"},
                        "error": {"type": ["integer", "null"], "minimum": 1,
                                  "description": "the upstream's error code, if any"},
                    },
                },
            },
        },
    }
