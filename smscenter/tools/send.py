"""``smscenter send``: submit one SMS by hand and wait for its delivery receipt.

For administrators checking a route or a partner account. It deliberately uses ``smpplib``, the
client library many partners use, rather than our own protocol code, so what it shows is what a
partner would see. Flow: connect, bind as transceiver, split the text with
``smpplib.gsm.make_parts`` (GSM 03.38, UCS-2 when the text needs it; concatenated with UDH),
submit each part, print each ``submit_sm_resp``, then wait for one receipt per part and print
its id and stat.

Exit codes: 0 every part DELIVRD (or, with ``--wait-receipt 0s``, every part accepted);
1 a submit refused, a receipt other than DELIVRD, a timeout, or the connection lost after
binding; 2 bad arguments, no connection or bind refused (nothing was submitted).

Receipts and MO that are not for the ids we submitted (an account's held receipts are flushed
to any receiver bind) are answered ESME_RX_T_APPN, so the server keeps them for the partner's
own application instead of handing them to this tool.
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from protocol.constants import CommandStatus, Tag
from protocol.receipt import (
    MessageIdError,
    Receipt,
    ReceiptParseError,
    normalize_message_id,
    receipt_from_tlvs,
)

__all__ = ["add_arguments", "classify_address", "ids_match", "main", "send"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

_KEEPALIVE = 10.0  # enquire_link after this much silence while waiting for receipts
_NOT_OURS = CommandStatus.ESME_RX_T_APPN  # "temporary application error: deliver later"

# (submit_sm_resp id mode, receipt id mode): the same first, then the classic mix-ups.
_ID_READINGS = (
    ("as-is", "as-is", ""),
    ("decimal", "decimal", ""),
    ("hex", "hex", ""),
    ("hex", "decimal", "hex in submit_sm_resp, decimal in the receipt"),
    ("decimal", "hex", "decimal in submit_sm_resp, hex in the receipt"),
)


class _Usage(Exception):
    """Bad arguments, no connection or bind refused: exit 2."""


class _Lost(Exception):
    """The connection or the bind went away after binding: exit 1."""


def classify_address(address: str, *, sender: bool) -> tuple[int, int, str]:
    """``(ton, npi, address)`` the way partners usually fill them.

    ``+33612345678`` → international (1, 1) without the ``+``; other digits → short code
    (3, 0) for a sender of at most 8 digits, else unknown/ISDN (0, 1), left to the server to
    read with the account's default country; anything else is an alphanumeric sender
    (5, 0), at most 11 characters. Raises ``ValueError``.
    """
    value = address.strip()
    if value.startswith("+"):
        digits = value[1:]
        if not re.fullmatch(r"[0-9]{3,20}", digits):
            raise ValueError(f"{address!r}: expected + and 3 to 20 digits")
        return 1, 1, digits
    if re.fullmatch(r"[0-9]+", value):
        if not 3 <= len(value) <= 20:
            raise ValueError(f"{address!r}: expected 3 to 20 digits")
        if sender and len(value) <= 8:
            return 3, 0, value
        return 0, 1, value
    if not sender:
        raise ValueError(f"{address!r}: a destination must be digits, e.g. +33612345678")
    if not value or len(value) > 11 or not value.isascii() or not value.isprintable():
        raise ValueError(f"{address!r}: an alphanumeric sender is 1 to 11 printable ASCII characters")
    return 5, 0, value


def ids_match(submitted: str, receipt: str) -> str | None:
    """How ``receipt`` (an id from a receipt) names ``submitted`` (a submit_sm_resp id):
    ``""`` for the same id, a note for a hex/decimal mix-up, None if it is another id."""
    if submitted.strip().casefold() == receipt.strip().casefold():
        return ""
    for resp_mode, dlr_mode, note in _ID_READINGS[1:]:
        try:
            if normalize_message_id(submitted, resp_mode) == normalize_message_id(receipt, dlr_mode):
                return note
        except MessageIdError:
            continue
    return None


@dataclass
class _Part:
    number: int
    sequence: int
    message_id: str | None = None
    status: int | None = None
    receipt: Receipt | None = None
    note: str = ""
    shown: bool = False


@dataclass
class _Run:
    out: TextIO
    err: TextIO
    parts: list[_Part] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def warn(self, line: str) -> None:
        print(line, file=self.err, flush=True)


# --------------------------------------------------------------------------- smpplib I/O


def _read(client, deadline: float):
    """The next PDU, or None at the deadline. Sends enquire_link after silence."""
    import smpplib.smpp

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        client._socket.settimeout(min(remaining, _KEEPALIVE))
        try:
            return client.read_pdu()
        except (socket.timeout, TimeoutError):
            if time.monotonic() < deadline:
                client.send_pdu(smpplib.smpp.make_pdu("enquire_link", client=client))


def _answer(client, pdu, command: str, status: int = 0) -> None:
    import smpplib.smpp

    resp = smpplib.smpp.make_pdu(command, client=client, status=status)
    resp.sequence = pdu.sequence
    client.send_pdu(resp)


def _tlv_getter(pdu):
    def get(tag: int):
        if tag == Tag.RECEIPTED_MESSAGE_ID:
            value = getattr(pdu, "receipted_message_id", None)
            return value.decode("latin-1") if isinstance(value, bytes) else value
        if tag == Tag.MESSAGE_STATE:
            return getattr(pdu, "message_state", None)
        if tag == Tag.NETWORK_ERROR_CODE:
            return getattr(pdu, "network_error_code", None)
        return None

    return get


def _on_deliver(client, pdu, run: _Run) -> None:
    """A deliver_sm: record it if it is a receipt for one of our parts, answer it."""
    esm_class = int(getattr(pdu, "esm_class", 0) or 0)
    text = getattr(pdu, "short_message", None) or getattr(pdu, "message_payload", None) or b""
    is_receipt = bool(esm_class & 0x3C) or getattr(pdu, "receipted_message_id", None)
    receipt = None
    if is_receipt:
        try:
            receipt = receipt_from_tlvs(_tlv_getter(pdu), bytes(text))
        except ReceiptParseError:
            receipt = None
    if receipt is not None:
        for part in run.parts:
            if part.message_id is None or part.receipt is not None:
                continue
            note = ids_match(part.message_id, receipt.message_id)
            if note is not None:
                part.receipt, part.note = receipt, note
                _answer(client, pdu, "deliver_sm_resp")
                return
        run.warn(f"send: receipt for another message (id {receipt.message_id}) left with the server")
    else:
        run.warn("send: a message that is not a receipt for us (MO?) left with the server")
    _answer(client, pdu, "deliver_sm_resp", _NOT_OURS)


def _dispatch(client, pdu, run: _Run) -> None:
    """Handle what may arrive at any time; submit_sm_resp / generic_nack go to ``run``."""
    command = pdu.command
    if command == "deliver_sm":
        _on_deliver(client, pdu, run)
    elif command == "enquire_link":
        _answer(client, pdu, "enquire_link_resp")
    elif command == "unbind":
        _answer(client, pdu, "unbind_resp")
        raise _Lost("the server unbound")
    elif command in ("submit_sm_resp", "generic_nack"):
        for part in run.parts:
            if part.sequence == pdu.sequence and part.status is None:
                part.status = int(pdu.status)
                raw = getattr(pdu, "message_id", None) if command == "submit_sm_resp" else None
                if isinstance(raw, bytes):
                    raw = raw.decode("latin-1")
                part.message_id = (raw or "").strip("\x00").strip() or None
                return


# --------------------------------------------------------------------------- the command


def send(
    *,
    host: str,
    port: int,
    system_id: str,
    password: str,
    source: str,
    destination: str,
    text: str,
    wait_receipt: float,
    category: str = "",
    system_type: str = "",
    timeout: float = 10.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Bind, submit ``text``, wait up to ``wait_receipt`` seconds for the receipts (0: do not
    ask for any). Prints to ``out`` / ``err``; returns the exit code."""
    import smpplib.client
    import smpplib.exceptions
    import smpplib.gsm

    run = _Run(out or sys.stdout, err or sys.stderr)
    try:
        src = classify_address(source, sender=True)
        dst = classify_address(destination, sender=False)
        if not text:
            raise ValueError("empty --text")
        try:
            parts, data_coding, esm_class = smpplib.gsm.make_parts(text)
        except smpplib.exceptions.MessageTooLong:
            raise ValueError("--text is too long (more than 255 parts)") from None
    except ValueError as exc:
        run.warn(f"send: {exc}")
        return EXIT_USAGE

    client = smpplib.client.Client(host, port, timeout=timeout, allow_unknown_opt_params=True)
    try:
        try:
            client.connect()
        except smpplib.exceptions.ConnectionError:
            raise _Usage(f"cannot connect to {host}:{port}") from None
        try:
            resp = client.bind_transceiver(system_id=system_id, password=password, system_type=system_type)
        except smpplib.exceptions.PDUError as exc:
            status = exc.args[1] if len(exc.args) > 1 else CommandStatus.ESME_RBINDFAIL
            raise _Usage(
                f"bind refused by {host}:{port}: {CommandStatus.name_of(status)} (0x{status:08X})"
            ) from None
        except (smpplib.exceptions.ConnectionError, OSError):
            raise _Usage(f"no answer to bind_transceiver from {host}:{port}") from None
        server = resp.system_id.decode("latin-1") if isinstance(resp.system_id, bytes) else resp.system_id
        run.say(f"bound to {host}:{port} as {system_id} (transceiver), server {server or '?'}")
        return _submit_and_wait(client, run, parts, data_coding, esm_class, src, dst, category, wait_receipt, timeout)
    except _Usage as exc:
        run.warn(f"send: {exc}")
        return EXIT_USAGE
    except (_Lost, smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError) as exc:
        run.warn(f"send: connection lost: {exc or type(exc).__name__}")
        return EXIT_FAILURE
    finally:
        _close(client)


def _submit_and_wait(client, run, parts, data_coding, esm_class, src, dst, category, wait_receipt, timeout) -> int:
    total = len(parts)
    for number, short_message in enumerate(parts, start=1):
        pdu = client.send_message(
            service_type=category,
            source_addr_ton=src[0],
            source_addr_npi=src[1],
            source_addr=src[2],
            dest_addr_ton=dst[0],
            dest_addr_npi=dst[1],
            destination_addr=dst[2],
            esm_class=esm_class,
            data_coding=data_coding,
            registered_delivery=1 if wait_receipt > 0 else 0,
            short_message=short_message,
        )
        part = _Part(number, pdu.sequence)
        run.parts.append(part)
        deadline = time.monotonic() + timeout
        while part.status is None:
            answer = _read(client, deadline)
            if answer is None:
                run.warn(f"send: no submit_sm_resp for part {number}/{total} within {timeout:g}s")
                return EXIT_FAILURE
            _dispatch(client, answer, run)
        name = CommandStatus.name_of(part.status)
        if part.status != 0 or part.message_id is None:
            run.say(f"submit_sm_resp: {name} (0x{part.status:08X}) part {number}/{total}")
            return EXIT_FAILURE
        run.say(f"submit_sm_resp: {name} message_id={part.message_id} part {number}/{total}")

    if wait_receipt <= 0:
        return EXIT_OK
    run.say(f"waiting up to {wait_receipt:g}s for {total} receipt{'s' if total > 1 else ''}")
    deadline = time.monotonic() + wait_receipt
    while any(part.receipt is None for part in run.parts):
        answer = _read(client, deadline)
        if answer is None:
            missing = ", ".join(p.message_id for p in run.parts if p.receipt is None)  # type: ignore[misc]
            run.warn(f"send: timeout: no receipt after {wait_receipt:g}s for message_id {missing}")
            return EXIT_FAILURE
        _dispatch(client, answer, run)
        for part in run.parts:
            if part.receipt is not None and not part.shown:
                part.shown = True
                r = part.receipt
                done = r.done_date.strftime("%Y-%m-%d %H:%M") if r.done_date else "?"
                run.say(f"receipt: stat={r.stat} id={r.message_id} err={r.err} done={done} part {part.number}/{total}")
                if part.note:
                    run.warn(f"send: note: receipt id {r.message_id} matches {part.message_id} only as {part.note}")
    failed = [p for p in run.parts if p.receipt is not None and p.receipt.stat != "DELIVRD"]
    return EXIT_FAILURE if failed else EXIT_OK


def _close(client) -> None:
    """Unbind politely (ignoring what arrives meanwhile), then close the socket."""
    import smpplib.consts
    import smpplib.smpp

    try:
        if client.state in (
            smpplib.consts.SMPP_CLIENT_STATE_BOUND_TX,
            smpplib.consts.SMPP_CLIENT_STATE_BOUND_RX,
            smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX,
        ):
            client.send_pdu(smpplib.smpp.make_pdu("unbind", client=client))
            deadline = time.monotonic() + 2.0
            while (pdu := _read(client, deadline)) is not None and pdu.command != "unbind_resp":
                if pdu.command == "deliver_sm":  # not ours any more: leave it with the server
                    _answer(client, pdu, "deliver_sm_resp", _NOT_OURS)
    except Exception:  # noqa: BLE001 - closing anyway
        pass
    if client._socket is not None:
        client._socket.close()
        client._socket = None
    client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED


# --------------------------------------------------------------------------- CLI glue


def _duration(text: str) -> float:
    from smscenter.config import parse_duration

    if text.strip() in ("0", "0s"):
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=2775, help="server port (default 2775)")
    parser.add_argument("--system-id", required=True, help="account to bind as")
    parser.add_argument("--password", default="", help="bind password")
    parser.add_argument("--system-type", default="", help="bind system_type (default empty)")
    parser.add_argument("--from", dest="source", required=True, metavar="SENDER",
                        help="sender: alphanumeric (ACME), short code (36180) or +E.164")
    parser.add_argument("--to", dest="destination", required=True, metavar="NUMBER",
                        help="recipient, +E.164 (e.g. +33612345678) or national digits")
    parser.add_argument("--text", required=True, help="message text (split into parts when long)")
    parser.add_argument("--wait-receipt", type=_duration, default=30.0, metavar="DURATION",
                        help='how long to wait for the receipt (default "30s"; "0s": ask for none)')
    parser.add_argument("--category", choices=("MKT", "ALERT"), default="",
                        help="service_type selecting the category (default: the account's)")
    parser.add_argument("--timeout", type=_duration, default=10.0, metavar="DURATION",
                        help='for connect, bind and each submit_sm_resp (default "10s")')


def main(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        print("send: --timeout must be above zero", file=sys.stderr)
        return EXIT_USAGE
    return send(
        host=args.host,
        port=args.port,
        system_id=args.system_id,
        password=args.password,
        source=args.source,
        destination=args.destination,
        text=args.text,
        wait_receipt=args.wait_receipt,
        category=args.category,
        system_type=args.system_type,
        timeout=args.timeout,
    )
