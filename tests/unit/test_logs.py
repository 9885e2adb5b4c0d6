"""Logging: numbers masked, secrets and message text never rendered, both formats."""

import json
import logging

import pytest
import structlog

from smscenter.app.logs import configure_logging, mask_number, scrub


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_smscenter", False)]:
        root.removeHandler(h)


@pytest.mark.parametrize(
    "raw, masked",
    [
        ("+33612345678", "+336****78"),
        ("33612345678", "336****78"),
        ("+33 6 12 34 56 78", "+336****78"),
        (b"33612345678", "336****78"),
        (33612345678, "336****78"),
        ("0612345678", "061****78"),
        ("36180", "36180"),  # short codes are not personal data
        ("ACME", "ACME"),  # nor alphanumeric sender IDs
        ("jean.dupont@example.com", "j***@example.com"),
    ],
)
def test_mask_number(raw, masked):
    assert mask_number(raw) == masked


def test_scrub_processor():
    event = {
        "event": "submit",
        "source_addr": "ACME",
        "destination_addr": "+33612345678",
        "msisdn": "33698765432",
        "to": ["+33612345678", "+32470123456"],
        "from": "+33611112222",
        "number": "0612345678",
        "password": "hunter2",
        "short_message": b"Bonjour Jean",
        "text": "Bonjour Jean",
        "message_payload": None,
        "pdu": {"destination_addr": "+33612345678", "short_message": "Salut"},
        "system_id": "acme",
    }
    out = scrub(None, "info", dict(event))
    assert out["source_addr"] == "ACME"
    assert out["destination_addr"] == "+336****78"
    assert out["msisdn"] == "336****32"
    assert out["to"] == ["+336****78", "+324****56"]
    assert out["from"] == "+336****22"
    assert out["number"] == "061****78"
    assert out["password"] == "<redacted>"
    assert out["short_message"] == "<redacted: 12 chars>"
    assert out["text"] == "<redacted: 12 chars>"
    assert out["message_payload"] == "<redacted>"
    assert out["pdu"] == {"destination_addr": "+336****78", "short_message": "<redacted: 5 chars>"}
    assert out["system_id"] == "acme"


def _log_one(capsys, fmt):
    configure_logging("info", fmt)
    log = structlog.get_logger("test")
    log.debug("hidden", destination_addr="+33612345678")
    log.info(
        "submit_sm", destination_addr="+33612345678", password="hunter2", short_message="Bonjour"
    )
    return capsys.readouterr()


def test_json_output(capsys):
    captured = _log_one(capsys, "json")
    assert captured.out == ""
    lines = [json.loads(line) for line in captured.err.splitlines()]
    assert len(lines) == 1  # debug filtered out at level info
    record = lines[0]
    assert record["event"] == "submit_sm"
    assert record["level"] == "info"
    assert record["destination_addr"] == "+336****78"
    assert "timestamp" in record
    assert "hunter2" not in captured.err and "Bonjour" not in captured.err
    assert "33612345678" not in captured.err


def test_console_output(capsys):
    captured = _log_one(capsys, "console")
    assert "submit_sm" in captured.err
    assert "+336****78" in captured.err
    assert "hunter2" not in captured.err and "Bonjour" not in captured.err
    assert "hidden" not in captured.err


def test_stdlib_logging_is_scrubbed_too(capsys):
    configure_logging("info", "json")
    logging.getLogger("thirdparty").warning("peer said hi")
    record = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert record["event"] == "peer said hi"
    assert record["level"] == "warning"


def test_reconfigure_does_not_stack_handlers():
    configure_logging("info", "json")
    configure_logging("debug", "console")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_smscenter", False)]
    assert len(ours) == 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        configure_logging("info", "xml")
    with pytest.raises(ValueError):
        configure_logging("loud", "json")
