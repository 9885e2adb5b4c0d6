"""The demo upstream (``SimulatedSmsc``, ``smscenter simulate-smsc``) and the admin client
(``smscenter send``), over real loopback sockets.

The client side is ``smpplib``, an independent SMPP stack; it is blocking, so it runs in a
thread while the simulator runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp

from protocol.receipt import parse_receipt
from smscenter.tools.simulator import SimulatedSmsc, parse_delay, parse_outcomes
from tests.integration.optout_fixtures import run_cli_here
from tests.patience import PATIENCE

REPO = Path(__file__).resolve().parents[2]
DELAY = "50ms"

pytestmark = pytest.mark.timeout(30)


# --------------------------------------------------------------------------- smpplib side


@dataclass
class Seen:
    resp_ids: list[str] = field(default_factory=list)
    resp_statuses: list[int] = field(default_factory=list)
    receipts: list = field(default_factory=list)  # smpplib deliver_sm PDUs


def _text(value) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else (value or "")


def smpplib_session(
    port: int,
    *,
    system_id: str = "acme",
    password: str = "secret",
    bind: str = "transceiver",
    submits: list[int] = (),  # registered_delivery of each submit_sm
    receipts: int = 0,
    timeout: float = 5.0,
    refuse_first: int = 0,  # answer this many deliver_sm with ESME_RX_T_APPN first
    linger: float = 0.0,  # keep reading this long after the expected receipts
) -> Seen:
    """Bind, submit, collect responses and receipts, unbind. Blocking: run in a thread."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=timeout, allow_unknown_opt_params=True)
    seen = Seen()
    client.connect()
    try:
        getattr(client, f"bind_{bind}")(system_id=system_id, password=password)
        for registered_delivery in submits:
            client.send_message(
                source_addr_ton=5,
                source_addr_npi=0,
                source_addr="ACME",
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr="33612345678",
                short_message=b"hello",
                registered_delivery=registered_delivery,
            )
        def handle(pdu) -> None:
            nonlocal refuse_first
            if pdu.command == "submit_sm_resp":
                seen.resp_statuses.append(int(pdu.status))
                seen.resp_ids.append(_text(pdu.message_id))
            elif pdu.command in ("deliver_sm", "enquire_link"):
                status = 0
                if pdu.command == "deliver_sm":
                    seen.receipts.append(pdu)
                    if refuse_first > 0:
                        refuse_first -= 1
                        status = 0x64  # ESME_RX_T_APPN: try again later
                resp = smpplib.smpp.make_pdu(f"{pdu.command}_resp", client=client, status=status)
                resp.sequence = pdu.sequence
                client.send_pdu(resp)

        while len(seen.resp_statuses) < len(submits) or len(seen.receipts) < receipts:
            handle(client.read_pdu())  # socket.timeout if something never comes
        if linger:
            deadline = time.monotonic() + linger
            while (left := deadline - time.monotonic()) > 0:
                client._socket.settimeout(left)
                try:
                    handle(client.read_pdu())
                except socket.timeout:
                    break
        client._socket.settimeout(timeout)
        client.unbind()
    finally:
        client.disconnect()
    return seen


def receipt_fields(pdu) -> tuple[str, str, int, str]:
    """(text id, receipted_message_id TLV, message_state TLV, stat) of a receipt."""
    parsed = parse_receipt(pdu.short_message)
    return parsed.message_id, _text(pdu.receipted_message_id), pdu.message_state, parsed.stat


async def started(**kwargs) -> SimulatedSmsc:
    kwargs.setdefault("delay", DELAY)
    kwargs.setdefault("outcomes", "DELIVRD=1")
    smsc = SimulatedSmsc("127.0.0.1", 0, **kwargs)
    await smsc.start()
    return smsc


# --------------------------------------------------------------------------- the simulator


async def test_receipt_matches_submit_id():
    smsc = await started(seed=1)
    try:
        seen = await asyncio.to_thread(smpplib_session, smsc.port, submits=[1], receipts=1)
    finally:
        await smsc.stop()
    assert seen.resp_statuses == [0]
    (message_id,) = seen.resp_ids
    assert message_id.isdigit()
    (dlr,) = seen.receipts
    assert dlr.esm_class == 0x04
    assert _text(dlr.source_addr) == "33612345678" and dlr.source_addr_ton == 1
    assert _text(dlr.destination_addr) == "ACME" and dlr.dest_addr_ton == 5
    text = dlr.short_message.decode("ascii")
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 submit date:")
    assert " done date:" in text and " stat:DELIVRD err:000" in text
    assert receipt_fields(dlr) == (message_id, message_id, 2, "DELIVRD")
    assert (smsc.submits, smsc.receipts_sent, smsc.receipts_acked, smsc.receipts_held) == (1, 1, 1, 0)


@pytest.mark.parametrize(
    ("id_format", "receipt_id_format", "resp_base", "receipt_base"),
    [
        ("hex", "same", 16, 16),
        ("hex", "decimal", 16, 10),  # the classic mix-up
        ("decimal", "hex", 10, 16),
    ],
)
async def test_id_formats(id_format, receipt_id_format, resp_base, receipt_base):
    smsc = await started(id_format=id_format, receipt_id_format=receipt_id_format, seed=7)
    try:
        seen = await asyncio.to_thread(smpplib_session, smsc.port, submits=[1, 1, 1], receipts=3)
    finally:
        await smsc.stop()
    resp_numbers = [int(i, resp_base) for i in seen.resp_ids]
    if resp_base == 16:
        # Hex ids start with a letter: they can never be mistaken for decimal.
        assert all(i[0] in "ABCDEF" and i == i.upper() for i in seen.resp_ids)
    else:
        assert all(i.isdigit() for i in seen.resp_ids)
    for dlr in seen.receipts:
        text_id, tlv_id, state, stat = receipt_fields(dlr)
        assert text_id == tlv_id and (state, stat) == (2, "DELIVRD")
        if receipt_id_format == "same":
            assert tlv_id in seen.resp_ids
        else:
            assert tlv_id not in seen.resp_ids
        assert int(tlv_id, receipt_base) in resp_numbers
    assert sorted(int(receipt_fields(d)[1], receipt_base) for d in seen.receipts) == sorted(resp_numbers)


async def test_registered_delivery_values():
    """0: none; 1: always; 2: failure only; 3 (SMPP 5.0): success only."""
    smsc = await started(outcomes="DELIVRD=1")
    try:
        seen = await asyncio.to_thread(
            smpplib_session, smsc.port, submits=[0, 2, 1, 3, 0x11], receipts=3, linger=0.3
        )
    finally:
        await smsc.stop()
    ids = [receipt_fields(d)[1] for d in seen.receipts]
    assert sorted(ids) == sorted([seen.resp_ids[2], seen.resp_ids[3], seen.resp_ids[4]])

    smsc = await started(outcomes="UNDELIV=1")
    try:
        seen = await asyncio.to_thread(smpplib_session, smsc.port, submits=[2, 3], receipts=1, linger=0.3)
    finally:
        await smsc.stop()
    ((text_id, tlv_id, state, stat),) = [receipt_fields(d) for d in seen.receipts]
    assert tlv_id == seen.resp_ids[0] and (state, stat) == (5, "UNDELIV")
    assert seen.receipts[0].network_error_code == b"\x03\x00\x01"
    assert b" err:001 " in seen.receipts[0].short_message


async def outcome_run(seed: int) -> tuple[list[str], SimulatedSmsc]:
    smsc = await started(outcomes="DELIVRD=90,UNDELIV=8,REJECTD=2", seed=seed, delay="10ms")
    try:
        seen = await asyncio.to_thread(smpplib_session, smsc.port, submits=[1] * 200, receipts=200)
    finally:
        await smsc.stop()
    by_id = {receipt_fields(d)[1]: receipt_fields(d)[3] for d in seen.receipts}
    return [by_id[i] for i in seen.resp_ids], smsc


async def test_outcome_mix_is_weighted_and_seedable():
    stats, smsc = await outcome_run(seed=42)
    counts = {word: stats.count(word) for word in set(stats)}
    assert set(counts) <= {"DELIVRD", "UNDELIV", "REJECTD"}
    assert 165 <= counts["DELIVRD"] <= 195, counts
    assert 5 <= counts.get("UNDELIV", 0) + counts.get("REJECTD", 0) <= 35, counts
    assert smsc.outcome_counts == counts
    assert (smsc.submits, smsc.receipts_acked) == (200, 200)
    again, _ = await outcome_run(seed=42)
    assert again == stats  # same seed, same outcomes in the same order
    other, _ = await outcome_run(seed=43)
    assert other != stats


async def test_receipts_held_until_receiver_binds():
    smsc = await started(delay="20ms")
    try:
        # Another account's receiver is bound all along: it must get nothing.
        other = asyncio.create_task(
            asyncio.to_thread(smpplib_session, smsc.port, system_id="other", bind="receiver", linger=0.6)
        )
        sent = await asyncio.to_thread(smpplib_session, smsc.port, bind="transmitter", submits=[1, 1, 1])
        await asyncio.sleep(0.2)
        assert smsc.receipts_held == 3 and smsc.receipts_sent == 0
        later = await asyncio.to_thread(smpplib_session, smsc.port, bind="receiver", receipts=3)
        assert (await other).receipts == []
    finally:
        await smsc.stop()
    assert sorted(receipt_fields(d)[1] for d in later.receipts) == sorted(sent.resp_ids)
    assert (smsc.receipts_held, smsc.receipts_acked) == (0, 3)


async def test_refused_receipt_is_retried():
    smsc = await started(retry_after=0.05)
    try:
        seen = await asyncio.to_thread(smpplib_session, smsc.port, submits=[1], receipts=2, refuse_first=1)
    finally:
        await smsc.stop()
    first, second = (receipt_fields(d)[1] for d in seen.receipts)
    assert first == second == seen.resp_ids[0]
    assert (smsc.receipts_sent, smsc.receipts_acked) == (2, 1)


async def test_bind_credentials_checked_when_given():
    smsc = await started(system_id="gw", password="secret")
    try:
        with pytest.raises(smpplib.exceptions.PDUError) as bad_password:
            await asyncio.to_thread(smpplib_session, smsc.port, system_id="gw", password="nope")
        with pytest.raises(smpplib.exceptions.PDUError) as bad_system_id:
            await asyncio.to_thread(smpplib_session, smsc.port, system_id="acme", password="secret")
        seen = await asyncio.to_thread(smpplib_session, smsc.port, system_id="gw", submits=[1], receipts=1)
    finally:
        await smsc.stop()
    assert bad_password.value.args[1] == 0x0E
    assert bad_system_id.value.args[1] == 0x0F
    assert len(seen.receipts) == 1


def test_option_parsers():
    assert parse_delay("2s") == (2.0, 2.0)
    assert parse_delay("0.5s-3s") == (0.5, 3.0)
    for bad in ("2", "3s-1s", "1s-2s-3s", ""):
        with pytest.raises(ValueError):
            parse_delay(bad)
    weights = parse_outcomes("delivrd=90, UNDELIVERABLE=8,REJECTD=2")
    assert {k.name: v for k, v in weights.items()} == {"DELIVERED": 90, "UNDELIVERABLE": 8, "REJECTED": 2}
    for bad in ("DELIVRD", "FOO=1", "DELIVRD=0", "DELIVRD=-1", "ENROUTE=1", "DELIVRD=x"):
        with pytest.raises(ValueError):
            parse_outcomes(bad)


# --------------------------------------------------------------------------- smscenter send


async def smscenter_send(port: int, *args: str) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smscenter", "send", "--host", "127.0.0.1", "--port", str(port),
        "--system-id", "acme", "--from", "ACME", "--to", "+33612345678", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), PATIENCE)
    return proc.returncode, out.decode(), err.decode()


async def test_send_against_simulator():
    smsc = await started(password="secret")
    try:
        rc, out, err = await smscenter_send(
            smsc.port, "--password", "secret", "--text", "hello", "--wait-receipt", "5s", "--category", "MKT"
        )
    finally:
        await smsc.stop()
    assert rc == 0, (out, err)
    lines = out.splitlines()
    resp = next(line for line in lines if line.startswith("submit_sm_resp:"))
    assert "ESME_ROK" in resp
    message_id = resp.split("message_id=")[1].split()[0]
    assert any(line.startswith("receipt: stat=DELIVRD") and f"id={message_id}" in line for line in lines), out


async def test_send_long_text_with_hex_decimal_mixup():
    smsc = await started(id_format="hex", receipt_id_format="decimal")
    try:
        rc, out, err = await smscenter_send(smsc.port, "--text", "x" * 200, "--wait-receipt", "5s")
    finally:
        await smsc.stop()
    assert rc == 0, (out, err)
    assert out.count("submit_sm_resp: ESME_ROK") == 2 and out.count("receipt: stat=DELIVRD") == 2
    assert "hex in submit_sm_resp, decimal in the receipt" in err


async def test_send_failures():
    smsc = await started(outcomes="UNDELIV=1", password="secret")
    try:
        undelivered = await smscenter_send(smsc.port, "--password", "secret", "--text", "hi", "--wait-receipt", "5s")
        refused = await smscenter_send(smsc.port, "--password", "wrong", "--text", "hi")
    finally:
        await smsc.stop()
    rc, out, err = undelivered
    assert rc == 1 and "receipt: stat=UNDELIV" in out, (out, err)
    rc, out, err = refused
    assert rc == 2 and "ESME_RINVPASWD" in err and out == "", (out, err)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    # Nothing runs in this process any more (the simulator stopped): the same verb in-process.
    common = ("send", "--host", "127.0.0.1", "--port", str(free), "--system-id", "acme", "--from", "ACME")
    done = await run_cli_here(*common, "--to", "+33612345678", "--text", "hi")
    assert done.returncode == 2 and "cannot connect" in done.stderr
    done = await run_cli_here(*common, "--to", "not-a-number", "--text", "hi")
    assert done.returncode == 2 and "destination" in done.stderr


async def test_simulate_smsc_cli_runs_until_sigterm():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smscenter", "simulate-smsc", "--listen", "127.0.0.1:0",
        "--delay", "20ms-60ms", "--id-format", "hex", "--outcomes", "DELIVRD=1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env,
    )  # fmt: skip
    try:
        line = (await asyncio.wait_for(proc.stderr.readline(), PATIENCE)).decode()
        assert "simulator_listening" in line, line
        port = int(re.search(r"address=127\.0\.0\.1:(\d+)", line).group(1))
        rc, out, err = await smscenter_send(port, "--text", "hello", "--wait-receipt", "5s")
        assert rc == 0 and "receipt: stat=" in out, (out, err)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rest = (await asyncio.wait_for(proc.communicate(), PATIENCE))[1].decode()
    assert proc.returncode == 0, rest
    assert "submits=1" in rest
