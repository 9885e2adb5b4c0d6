"""Fixtures for the opt-out / MO tests (``test_optout_e2e.py``, ``test_admin_cli.py``).

- ``write_config``: a real TOML file (accounts, connector, route, ``[optout]``) under
  ``tmp_path``, so the CLI — run as a subprocess — and the in-process ``Daemon`` read the same
  file, database and keys folder.
- ``SmpplibPartner``: a partner bound with ``smpplib`` (pure-Python client, not our code) as a
  transceiver. smpplib is blocking: one thread reads the socket and answers deliver_sm and
  enquire_link; submits are written from the test under the same lock.
- ``MoInjector``: the upstream side of an ``SmscPeer`` (``smpp34.Server``): ``Esme.deliver_sm``
  with the fields an operator sends for a reply to a short code.
- ``captured_logs``: the daemon's real log pipeline (``smscenter.app.logs.configure_logging``,
  JSON) written into a buffer, to check what reaches the logs.
- ``run_cli``: ``python -m smscenter …`` in a subprocess (without blocking the event loop);
  ``run_cli_here``: the same verb in this process (``tests/cli_here.py``).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
import smpplib.smpp
import structlog

from tests.cli_here import smscenter_here
from tests.integration.mt_fixtures import GW_PASSWORD, HOST, PARTNER_PASSWORDS, TEST_SERVER, wait_for
from tests.patience import PATIENCE

REPO = Path(__file__).resolve().parents[2]

SHARED = "36180"  # [optout] short_code
STOP_CONFIRMATION = "STOP enregistre: vous ne recevrez plus de SMS de cet expediteur."
BE_CONFIRMATION = "Desinscription enregistree (BE)."


# --------------------------------------------------------------------------- TOML config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: dict[str, Any]) -> str:
    """Tables (dicts) and arrays of tables (lists of dicts) one level deep; values inline."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
            lines.append("")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
                lines.append("")
        else:
            lines.insert(0, f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def config_data(password_hashes: dict[str, str], upstream_port: int, accounts: list[dict] | None = None,
                optout: dict | None = None, connector: dict | None = None) -> dict[str, Any]:
    """acme (marketing, sender ACME, shared code 36180) and beta (marketing, sender BETA,
    shared code 36180) by default; one transceiver connector ``up``; every number routed to it."""
    if accounts is None:
        accounts = [
            {"system_id": "acme", "sender_ids": ["ACME"], "short_codes": [SHARED]},
            {"system_id": "beta", "sender_ids": ["BETA"], "short_codes": [SHARED]},
        ]
    tables = []
    for acc in accounts:
        table = {"category": "marketing", "throughput": 10_000, **acc}
        table.setdefault("password", password_hashes[table["system_id"]])
        tables.append(table)
    return {
        "server": dict(TEST_SERVER),
        "storage": {"url": "sqlite:///var/smscenter.db", "keys": "var/keys"},
        "logging": {"level": "info", "format": "json"},
        "account": tables,
        "connector": [
            {
                "name": "up",
                "host": HOST,
                "port": upstream_port,
                "system_id": "gw",
                "password": GW_PASSWORD,
                "bind": "transceiver",
                "window": 10,
                "throughput": 10_000,
                "message_id": "hex-to-decimal",
                "enquire_link_interval": "5s",
                "response_timeout": "2s",
                "reconnect_min": "100ms",
                "reconnect_max": "300ms",
                **(connector or {}),
            }
        ],
        "route": [{"destinations": ["*"], "connectors": ["up"]}],
        "optout": {
            "short_code": SHARED,
            "confirmation": STOP_CONFIRMATION,
            "confirmations": {"BE": BE_CONFIRMATION},
            "mo_reassembly_timeout": "5s",
            **(optout or {}),
        },
    }


def write_config(tmp_path: Path, data: dict[str, Any], name: str = "smscenter.toml") -> Path:
    path = tmp_path / name
    path.write_text(to_toml(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- smpplib partner


@dataclass
class GotMo:
    """A deliver_sm as smpplib parsed it."""

    service_type: str
    source_addr: str
    destination_addr: str
    esm_class: int
    data_coding: int
    short_message: bytes
    message_payload: bytes | None

    @property
    def text(self) -> bytes:
        return self.message_payload if self.message_payload else self.short_message


def _s(value) -> str:
    if value is None:
        return ""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class SmpplibPartner:
    """A partner bound with smpplib as a transceiver; ``received`` holds its deliver_sm."""

    def __init__(self, port: int, system_id: str = "acme") -> None:
        self.port = port
        self.system_id = system_id
        self.client = smpplib.client.Client(HOST, port, timeout=PATIENCE, allow_unknown_opt_params=True)
        self.lock = threading.Lock()
        self.received: list[GotMo] = []
        self.responses: dict[int, tuple[int, str]] = {}
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False

    async def connect(self) -> "SmpplibPartner":
        await asyncio.to_thread(self._bind)
        self._thread = threading.Thread(target=self._pump, name=f"smpplib-{self.system_id}", daemon=True)
        self._thread.start()
        return self

    def _bind(self) -> None:
        self.client.connect()
        self.client.bind_transceiver(system_id=self.system_id, password=PARTNER_PASSWORDS[self.system_id])

    def _pump(self) -> None:
        while not self._stop.is_set():
            sock = self.client._socket
            if sock is None:
                return
            try:
                readable, _, _ = select.select([sock], [], [], 0.02)
            except (OSError, ValueError):
                return
            if not readable:
                continue
            with self.lock:
                try:
                    pdu = self.client.read_pdu()
                    self._handle(pdu)
                except Exception as exc:  # noqa: BLE001 - connection gone: stop reading
                    if not self._stop.is_set():
                        self.errors.append(exc)
                    return

    def _answer(self, pdu, command: str) -> None:
        resp = smpplib.smpp.make_pdu(command, client=self.client)
        resp.sequence = pdu.sequence
        self.client.send_pdu(resp)

    def _handle(self, pdu) -> None:
        if pdu.command == "deliver_sm":
            self.received.append(
                GotMo(
                    _s(pdu.service_type), _s(pdu.source_addr), _s(pdu.destination_addr), pdu.esm_class or 0,
                    pdu.data_coding or 0, pdu.short_message or b"", getattr(pdu, "message_payload", None),
                )
            )
            self._answer(pdu, "deliver_sm_resp")
        elif pdu.command in ("submit_sm_resp", "generic_nack"):
            self.responses[pdu.sequence] = (pdu.status, _s(getattr(pdu, "message_id", "")))
        elif pdu.command == "enquire_link":
            self._answer(pdu, "enquire_link_resp")
        elif pdu.command == "unbind":
            self._answer(pdu, "unbind_resp")
            self._stop.set()

    def _send_submit(self, destination: str, text: bytes, source: str, service_type: str) -> int:
        with self.lock:
            pdu = smpplib.smpp.make_pdu(
                "submit_sm", client=self.client, service_type=service_type,
                source_addr_ton=5 if not source.isdigit() else 3, source_addr_npi=0, source_addr=source,
                dest_addr_ton=1, dest_addr_npi=1, destination_addr=destination,
                esm_class=0, protocol_id=0, priority_flag=0, registered_delivery=0,
                replace_if_present_flag=0, data_coding=0, sm_default_msg_id=0, short_message=text,
            )
            self.client.send_pdu(pdu)
            return pdu.sequence

    async def submit(self, destination: str, text: bytes = b"Promo -20% ce week-end", *, source: str = "ACME",
                     service_type: str = "") -> tuple[int, str]:
        """(command_status, message_id) of the submit_sm_resp."""
        seq = await asyncio.to_thread(self._send_submit, destination, text, source, service_type)
        await wait_for(lambda: seq in self.responses or self.errors, 5, what="submit_sm_resp")
        assert not self.errors, self.errors
        return self.responses.pop(seq)

    async def mos(self, count: int, timeout: float = PATIENCE, settle: float = 0.2) -> list[GotMo]:
        """Wait for ``count`` deliver_sm in all, then ``settle`` seconds: exactly ``count``."""
        await wait_for(lambda: len(self.received) >= count, timeout,
                       what=f"{count} deliver_sm (got {len(self.received)})")
        await asyncio.sleep(settle)
        assert len(self.received) == count, self.received
        return list(self.received)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2)

        def finish() -> None:
            try:
                if self.client.state in (smpplib.consts.SMPP_CLIENT_STATE_BOUND_TRX,):
                    self.client.send_pdu(smpplib.smpp.make_pdu("unbind", client=self.client))
                    time.sleep(0.05)
            except Exception:  # noqa: BLE001 - the server may be gone
                pass
            if self.client._socket is not None:
                self.client._socket.close()
                self.client._socket = None
            self.client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED

        await asyncio.to_thread(finish)


# --------------------------------------------------------------------------- upstream MO


async def upstream_esme(peer, timeout: float = PATIENCE) -> Any:
    """The daemon's bind on the upstream peer that can receive deliver_sm, once the peer has
    seen it (our side may be bound a moment before the peer's event loop hears of it)."""
    return await wait_for(lambda: next((e for e in peer.esmes.values() if e.can_receive), None), timeout,
                          what="the daemon's receiving bind on the upstream")


async def inject_mo(peer, text: bytes, *, source: str = "33612345678", short_code: str = SHARED,
                    source_ton: int = 1, source_npi: int = 1, data_coding: int = 0, esm_class: int = 0,
                    tlvs: list | None = None, timeout: float = PATIENCE) -> int:
    """The upstream sends an MO (deliver_sm) and waits for our deliver_sm_resp: its status."""
    esme = await upstream_esme(peer)
    resp = await asyncio.wait_for(
        esme.deliver_sm(short_code, text, source_addr=source, source_addr_ton=source_ton,
                        source_addr_npi=source_npi, dest_addr_ton=3, dest_addr_npi=0,
                        data_coding=data_coding, esm_class=esm_class, tlvs=tlvs or []),
        timeout,
    )
    return resp.command_status


# --------------------------------------------------------------------------- logs


@pytest.fixture
def captured_logs():
    """The daemon's own logging set-up (JSON, with its scrubbing), written into a buffer.
    Returns the buffer; structlog's previous configuration is restored afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    saved_level = root.level
    buf = io.StringIO()
    from smscenter.app.logs import configure_logging

    configure_logging("info", "json", stream=buf)
    try:
        yield buf
    finally:
        structlog.configure(**saved)
        for handler in [h for h in root.handlers if getattr(h, "_smscenter", False)]:
            root.removeHandler(handler)
        root.setLevel(saved_level)


def log_events(buf: io.StringIO) -> list[dict]:
    events = []
    for line in buf.getvalue().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"event": line})
    return events


# --------------------------------------------------------------------------- CLI


async def run_cli(*args: str, stdin: str = "", env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """``python -m smscenter ARGS`` in a subprocess, off the event loop."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "smscenter", *args], input=stdin, capture_output=True, text=True,
            cwd=REPO, env=full_env, timeout=timeout,
        )

    return await asyncio.to_thread(run)


async def run_cli_here(*args: str) -> subprocess.CompletedProcess:
    """``smscenter ARGS`` in this process, on a thread (the verbs run their own event loop):
    ``tests/cli_here.py``. The same code as ``run_cli`` without an interpreter start (a second
    or more of CPU each), for the variations of a verb (filters, bad input) once a test ran it
    as a process with ``run_cli``. Paths in ARGS must be absolute (``run_cli`` runs in the
    repository)."""
    return await asyncio.to_thread(smscenter_here, *args)
