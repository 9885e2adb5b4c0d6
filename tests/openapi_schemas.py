"""Validating JSON against the schemas of the API's OpenAPI document (``smscenter/http/openapi.py``),
for tests/unit/test_openapi.py and the integration test that checks the running door's answers.

The schemas' ``$ref`` point inside the whole document (``#/components/schemas/…``): the document
is registered as one resource and a schema is reached by its JSON pointer, with formats checked
(``date-time``, which the OpenAPI 3.1 dialect only annotates by default).
"""

from __future__ import annotations

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

URI = "urn:smscenter:openapi"


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def validator(doc: dict, *path: str) -> Draft202012Validator:
    """A validator for the schema at ``path`` inside ``doc`` (keys, as written)."""
    resource = Resource(contents=doc, specification=DRAFT202012)
    registry = Registry().with_resource(URI, resource)
    pointer = "/".join(_escape(segment) for segment in path)
    return Draft202012Validator({"$ref": f"{URI}#/{pointer}"}, registry=registry,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def request_validator(doc: dict) -> Draft202012Validator:
    """``POST /v1/messages``'s request body."""
    return validator(doc, "paths", "/v1/messages", "post", "requestBody", "content", "application/json", "schema")


def response_validator(doc: dict, path: str, method: str, status: int) -> Draft202012Validator:
    """The JSON body of one documented response (KeyError if the status is not documented)."""
    doc["paths"][path][method]["responses"][str(status)]["content"]["application/json"]  # KeyError: undocumented
    return validator(doc, "paths", path, method, "responses", str(status), "content", "application/json", "schema")


def response_headers(doc: dict, path: str, method: str, status: int) -> dict[str, dict]:
    """A documented response's headers, name → header object (references resolved)."""
    found = {}
    for name, header in doc["paths"][path][method]["responses"][str(status)].get("headers", {}).items():
        if "$ref" in header:
            header = doc["components"]["headers"][header["$ref"].rsplit("/", 1)[1]]
        found[name] = header
    return found


def errors(validator_: Draft202012Validator, instance) -> list[str]:
    """What is wrong with ``instance`` (empty: valid), readable in an assertion."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator_.iter_errors(instance)]
