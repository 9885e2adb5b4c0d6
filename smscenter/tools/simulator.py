"""A demo upstream SMSC: accepts binds, answers submits, sends delivery receipts.

``smscenter simulate-smsc`` runs it so a newcomer has an operator to point the example
connector at, and tests and benchmarks use :class:`SimulatedSmsc` as an upstream. It is built
on our own ``protocol`` package and :class:`smscenter.smpp.link.Link` in the SMSC role, so it is a
demo and a load sink, not an independent peer for proving the server right.

What it does:

- any bind (transmitter, receiver, transceiver) is accepted, unless a ``system_id`` and/or
  ``password`` were given: then a wrong one gets ESME_RINVSYSID / ESME_RINVPASWD;
- each ``submit_sm`` (and ``data_sm``) is answered ESME_ROK with an id of our own, in decimal
  or in hex (``id_format``), as real SMSCs do; other requests get a precise refusal;
- an outcome is drawn for each message from a weighted mix (``DELIVRD=90,UNDELIV=8,...``),
  seedable; after ``delay`` (a fixed time or a uniform range) a receipt is sent when
  ``registered_delivery`` asks for one (1: always, 2: failure only, 3: success only);
- a receipt is a ``deliver_sm`` with ``esm_class`` 0x04, the Appendix B text and the
  ``receipted_message_id`` / ``message_state`` TLVs (plus ``network_error_code`` on
  failures), sent on a receiver or transceiver bind of the *same system_id* as the submit,
  many in flight per bind; its id may be written in another format than the
  ``submit_sm_resp`` id (``receipt_id_format``), to reproduce the classic hex/decimal mix-up;
- receipts due while that system_id has no RX/TRX bind (or not acknowledged with ESME_ROK)
  are held in memory, bounded per system_id (oldest dropped first), and sent when it binds.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Mapping

import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus, EsmClass, MessageState
from protocol.errors import LocalProtocolError
from protocol.receipt import Receipt, format_receipt, receipt_tlvs, stat_for_state, state_for_stat
from protocol.session import InvalidPdu, Role

from smscenter.smpp.link import Link, LinkClosed

__all__ = [
    "ID_FORMATS",
    "RECEIPT_ID_FORMATS",
    "SimulatedSmsc",
    "format_delay",
    "parse_address",
    "parse_delay",
    "parse_outcomes",
]

log = structlog.get_logger("smscenter.simulator")

ID_FORMATS = ("decimal", "hex")
RECEIPT_ID_FORMATS = ("same", "decimal", "hex")
DEFAULT_OUTCOMES = "DELIVRD=90,UNDELIV=8,REJECTD=2"

#: GSM MAP error causes, as ``err:`` and ``network_error_code`` (type 3 = GSM), per outcome.
_ERRORS: dict[MessageState, int] = {
    MessageState.DELIVERED: 0,
    MessageState.UNDELIVERABLE: 1,  # unknown subscriber
    MessageState.REJECTED: 13,  # call barred
    MessageState.EXPIRED: 27,  # absent subscriber
    MessageState.DELETED: 0,
    MessageState.UNKNOWN: 0,
}

#: Requests the simulator does not serve, with the status they get.
_REFUSED = {
    CommandId.QUERY_SM: CommandStatus.ESME_RQUERYFAIL,
    CommandId.CANCEL_SM: CommandStatus.ESME_RCANCELFAIL,
    CommandId.REPLACE_SM: CommandStatus.ESME_RREPLACEFAIL,
    CommandId.SUBMIT_MULTI: CommandStatus.ESME_RINVCMDID,
}
_BINDS = frozenset({CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER})
_SUBMITS = frozenset({CommandId.SUBMIT_SM, CommandId.DATA_SM})
_RETRY_AFTER = 1.0  # seconds before a receipt refused or lost is offered again


# --------------------------------------------------------------------------- option parsing


def parse_delay(text: str) -> tuple[float, float]:
    """``"2s"`` → (2.0, 2.0); ``"0.5s-3s"`` → (0.5, 3.0). Raises ``ValueError``."""
    from smscenter.config import parse_duration

    parts = text.split("-")
    if len(parts) > 2:
        raise ValueError(f'bad delay {text!r}: expected "2s" or a range such as "0.5s-3s"')
    low = parse_duration(parts[0])
    high = parse_duration(parts[-1])
    if high < low:
        raise ValueError(f"bad delay {text!r}: the range ends before it starts")
    return low, high


def format_delay(delay: tuple[float, float]) -> str:
    low, high = delay
    return f"{low:g}s" if low == high else f"{low:g}s-{high:g}s"


def parse_outcomes(text: str | Mapping[str | MessageState, float]) -> dict[MessageState, float]:
    """``"DELIVRD=90,UNDELIV=8,REJECTD=2"`` (or a mapping of stat words or states to weights)
    → weights by final state. Any receipt stat word (short or long, any case) is accepted;
    weights are non-negative numbers, not all zero."""
    if isinstance(text, Mapping):
        items = [(k if isinstance(k, MessageState) else str(k), v) for k, v in text.items()]
    else:
        items = []
        for chunk in text.split(","):
            if not chunk.strip():
                continue
            word, sep, weight = chunk.partition("=")
            if not sep:
                raise ValueError(f"bad outcome {chunk.strip()!r}: expected STAT=WEIGHT, e.g. DELIVRD=90")
            items.append((word, weight))
    weights: dict[MessageState, float] = {}
    for key, raw in items:
        state = key if isinstance(key, MessageState) else state_for_stat(key)  # ValueError if unknown
        word = stat_for_state(state)
        if state in (MessageState.ENROUTE, MessageState.ACCEPTED):
            raise ValueError(f"outcome {word} is not a final state")
        try:
            weight = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"bad weight {raw!r} for {word}") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"bad weight {raw!r} for {word}: must be a number >= 0")
        weights[state] = weights.get(state, 0.0) + weight
    if not weights or sum(weights.values()) <= 0:
        raise ValueError("outcomes: at least one weight must be above zero")
    return weights


_ADDRESS = re.compile(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d{1,5})|(?P<host>[^\s:\[\]]+):(?P<port>\d{1,5})")


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:2776"`` or ``"[::1]:2776"`` → (host, port). Raises ``ValueError``."""
    m = _ADDRESS.fullmatch(text.strip())
    if m is None or int(m["p6"] or m["port"]) > 65535:
        raise ValueError(f'bad address {text!r}: expected "host:port", e.g. "127.0.0.1:2776"')
    return (m["v6"] or m["host"]), int(m["p6"] or m["port"])


# --------------------------------------------------------------------------- the simulator


@dataclass(slots=True)
class _Due:
    """One receipt owed to a system_id."""

    system_id: str
    receipt_id: str
    state: MessageState
    submitted_at: datetime
    done_at: datetime | None
    source: tuple[int, int, str]  # ton, npi, address of the receipt = the submit's destination
    dest: tuple[int, int, str]  # = the submit's source
    attempts: int = 0


class _Mailbox:
    """Per system_id: receiver binds and the receipts waiting for one of them."""

    __slots__ = ("links", "ready", "wake", "pump", "next_link")

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.ready: deque[_Due] = deque()
        self.wake = asyncio.Event()
        self.pump: asyncio.Task | None = None
        self.next_link = 0


class SimulatedSmsc:
    """An upstream SMSC on ``host:port`` (port 0: any free port, see ``.port``).

    ``delay`` is seconds, or a ``(low, high)`` range drawn uniformly, or a string accepted by
    :func:`parse_delay`. ``outcomes`` is a mapping or a string for :func:`parse_outcomes`.
    ``seed`` makes ids, outcomes and delays reproducible.

    Counters: ``submits`` (submit_sm and data_sm answered ESME_ROK), ``receipts_sent``
    (deliver_sm written, retries included), ``receipts_acked`` (answered ESME_ROK),
    ``receipts_dropped`` (over ``max_held``), ``receipts_held`` (property: waiting now).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay: float | tuple[float, float] | str = 2.0,
        outcomes: Mapping[str, float] | str = DEFAULT_OUTCOMES,
        id_format: str = "decimal",
        receipt_id_format: str = "same",
        seed: int | None = None,
        system_id: str | None = None,
        password: str | None = None,
        server_system_id: str = "SIMSMSC",
        window: int = 64,
        max_held: int = 100_000,
        enquire_link_interval: float = 30.0,
        inactivity_timeout: float = 300.0,
        response_timeout: float = 10.0,
        retry_after: float = _RETRY_AFTER,
    ) -> None:
        if id_format not in ID_FORMATS:
            raise ValueError(f"id_format must be one of {ID_FORMATS}, not {id_format!r}")
        if receipt_id_format not in RECEIPT_ID_FORMATS:
            raise ValueError(f"receipt_id_format must be one of {RECEIPT_ID_FORMATS}, not {receipt_id_format!r}")
        if isinstance(delay, str):
            delay = parse_delay(delay)
        elif isinstance(delay, int | float):
            delay = (float(delay), float(delay))
        if delay[0] < 0 or delay[1] < delay[0]:
            raise ValueError(f"bad delay {delay!r}")
        self.host = host
        self._port = port
        self.delay: tuple[float, float] = (float(delay[0]), float(delay[1]))
        self.outcomes = parse_outcomes(outcomes)
        self._states = list(self.outcomes)
        self._weights = [self.outcomes[s] for s in self._states]
        self.id_format = id_format
        self.receipt_id_format = receipt_id_format
        self.system_id = system_id
        self.password = password
        self.server_system_id = server_system_id
        self.window = window
        self.max_held = max_held
        self.enquire_link_interval = enquire_link_interval
        self.inactivity_timeout = inactivity_timeout
        self.response_timeout = response_timeout
        self.retry_after = retry_after
        self.rng = random.Random(seed)
        # Ids start at a random 32-bit value whose hex form begins with a letter, so a hex id
        # can never be read as decimal by mistake, and ids differ from one run to the next.
        self._next_id = self.rng.randrange(0xA0000000, 0xF0000000)

        self.submits = 0
        self.receipts_sent = 0
        self.receipts_acked = 0
        self.receipts_dropped = 0
        self.outcome_counts: dict[str, int] = {}

        self.links: set[Link] = set()
        self._boxes: dict[str, _Mailbox] = {}
        self._timers: set[asyncio.TimerHandle] = set()
        self._server: asyncio.base_events.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(self._accept, self.host, self._port, reuse_address=True)
        log.info(
            "simulator_listening",
            address=f"{self.host}:{self.port}",
            delay=format_delay(self.delay),
            id_format=self.id_format,
            receipt_id_format=self.receipt_id_format,
        )

    @property
    def port(self) -> int:
        """The port we listen on (the real one when started with port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return self._server.sockets[0].getsockname()[1]

    @property
    def receipts_held(self) -> int:
        """Receipts due and not yet acknowledged (waiting for a bind, or being retried)."""
        return sum(len(box.ready) for box in self._boxes.values())

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, unbind every session (waiting up to ``grace``), drop timers."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        pumps = [box.pump for box in self._boxes.values() if box.pump is not None]
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        links = list(self.links)
        if links:
            await asyncio.gather(*(link.unbind(grace) for link in links), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        log.info("simulator_stopped", **self.stats())

    def stats(self) -> dict[str, int]:
        return {
            "submits": self.submits,
            "receipts_sent": self.receipts_sent,
            "receipts_acked": self.receipts_acked,
            "receipts_held": self.receipts_held,
            "receipts_dropped": self.receipts_dropped,
        }

    def _accept(self) -> asyncio.Protocol:
        link = Link(
            Role.SMSC,
            self,
            window=self.window,
            response_timeout=self.response_timeout,
            enquire_link_interval=self.enquire_link_interval,
            inactivity_timeout=self.inactivity_timeout,
            bind_timeout=30.0,
            name="simulator",
        )
        self.links.add(link)
        return link

    # --- LinkHandler ------------------------------------------------------------------------

    def on_request(self, link: Link, pdu: P.Pdu) -> None:
        cid = pdu.command_id
        if cid in _SUBMITS:
            self._on_submit(link, pdu)
        elif cid in _BINDS:
            self._on_bind(link, pdu)
        else:
            link.respond(pdu.response(_REFUSED.get(cid, CommandStatus.ESME_RINVCMDID)))

    def on_invalid(self, link: Link, event: InvalidPdu) -> None:
        log.info("simulator_invalid_pdu", peer=link.peer[0], error=str(event.error))

    def on_late_response(self, link: Link, pdu: P.Pdu) -> None:
        pass

    def on_closed(self, link: Link, exc: BaseException | None) -> None:
        self.links.discard(link)
        system_id = link.context
        if isinstance(system_id, str):
            box = self._boxes.get(system_id)
            if box is not None and link in box.links:
                box.links.remove(link)
                box.wake.set()
            log.info("simulator_unbound", system_id=system_id, peer=link.peer[0])

    # --- binds ------------------------------------------------------------------------------

    def _on_bind(self, link: Link, pdu: P.Pdu) -> None:
        system_id: str = pdu.system_id  # type: ignore[attr-defined]
        if self.system_id is not None and system_id != self.system_id:
            link.respond(pdu.response(CommandStatus.ESME_RINVSYSID))
            return
        if self.password is not None and pdu.password != self.password:  # type: ignore[attr-defined]
            link.respond(pdu.response(CommandStatus.ESME_RINVPASWD))
            return
        link.respond(pdu.response(system_id=self.server_system_id))
        link.context = system_id
        log.info("simulator_bound", system_id=system_id, peer=link.peer[0], bind=CommandId(pdu.command_id).name.lower())
        if link.can_deliver:
            box = self._box(system_id)
            box.links.append(link)
            self._kick(box)

    def _box(self, system_id: str) -> _Mailbox:
        box = self._boxes.get(system_id)
        if box is None:
            box = self._boxes[system_id] = _Mailbox()
        return box

    # --- submits ----------------------------------------------------------------------------

    def _new_id(self) -> int:
        n = self._next_id
        self._next_id = n + 1 if n < 0xFFFFFFFFFFFF else 0xA0000000
        return n

    @staticmethod
    def _format_id(n: int, fmt: str) -> str:
        return f"{n:X}" if fmt == "hex" else str(n)

    def _on_submit(self, link: Link, pdu: P.Pdu) -> None:
        n = self._new_id()
        message_id = self._format_id(n, self.id_format)
        link.respond(pdu.response(message_id=message_id))
        self.submits += 1
        state = self.rng.choices(self._states, self._weights)[0]
        word = stat_for_state(state)
        self.outcome_counts[word] = self.outcome_counts.get(word, 0) + 1
        wanted = pdu.registered_delivery & 0x03  # type: ignore[attr-defined]
        delivered = state == MessageState.DELIVERED
        if wanted == 0 or (wanted == 2 and delivered) or (wanted == 3 and not delivered):
            return
        if self.receipt_id_format == "same":
            receipt_id = message_id
        else:
            receipt_id = self._format_id(n, self.receipt_id_format)
        due = _Due(
            system_id=link.context,  # type: ignore[arg-type]
            receipt_id=receipt_id,
            state=state,
            submitted_at=datetime.now(),
            done_at=None,
            source=(pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr),  # type: ignore[attr-defined]
            dest=(pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr),  # type: ignore[attr-defined]
        )
        low, high = self.delay
        delay = low if low == high else self.rng.uniform(low, high)
        timer: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(timer)  # type: ignore[arg-type]
            self._due(due)

        timer = self._loop.call_later(delay, fire)  # type: ignore[union-attr]
        self._timers.add(timer)

    # --- receipts ---------------------------------------------------------------------------

    def _due(self, due: _Due) -> None:
        if self._stopping:
            return
        due.done_at = datetime.now()
        self._requeue(due)

    def _kick(self, box: _Mailbox) -> None:
        box.wake.set()
        if box.pump is None and box.ready and box.links and not self._stopping:
            box.pump = self._loop.create_task(self._pump(box))  # type: ignore[union-attr]

    def _pick(self, box: _Mailbox) -> tuple[Link | None, bool]:
        """A receiver bind with a free window slot (round robin), and whether any bind is up."""
        links = [link for link in box.links if link.is_open and link.can_deliver]
        if not links:
            return None, False
        for i in range(len(links)):
            link = links[(box.next_link + i) % len(links)]
            if link.session.window_open():
                box.next_link = (box.next_link + i + 1) % len(links)
                return link, True
        return None, True

    async def _pump(self, box: _Mailbox) -> None:
        """Send what is ready while a receiver is bound, many in flight per bind."""
        try:
            while box.ready:
                link, any_bound = self._pick(box)
                if not any_bound:
                    return  # held until the system_id binds again
                if link is None:  # every window is full: wait for a response or a change
                    box.wake.clear()
                    await box.wake.wait()
                    continue
                due = box.ready.popleft()
                try:
                    fut = link.request_nowait(self._deliver_sm(due))
                except (LinkClosed, LocalProtocolError):
                    box.ready.appendleft(due)
                    await asyncio.sleep(0)  # the link is going away; on_closed drops it
                    continue
                due.attempts += 1
                self.receipts_sent += 1
                fut.add_done_callback(lambda f, due=due, box=box: self._on_ack(box, due, f))
        finally:
            box.pump = None

    def _deliver_sm(self, due: _Due) -> P.DeliverSm:
        receipt = Receipt(
            due.receipt_id,
            sub=1,
            submit_date=due.submitted_at,
            done_date=due.done_at,
            stat=due.state,
            err=_ERRORS.get(due.state, 0),
        )
        error = _ERRORS.get(due.state, 0)
        network_error = (3, error) if due.state != MessageState.DELIVERED and error else None
        return P.DeliverSm(
            source_addr_ton=due.source[0],
            source_addr_npi=due.source[1],
            source_addr=due.source[2],
            dest_addr_ton=due.dest[0],
            dest_addr_npi=due.dest[1],
            destination_addr=due.dest[2],
            esm_class=EsmClass.DELIVERY_RECEIPT,
            short_message=format_receipt(receipt).encode("ascii"),
            tlvs=tuple(receipt_tlvs(due.receipt_id, due.state, network_error)),
        )

    def _on_ack(self, box: _Mailbox, due: _Due, fut: asyncio.Future) -> None:
        ok = not fut.cancelled() and fut.exception() is None and fut.result().command_status == 0
        if ok:
            self.receipts_acked += 1
        elif not self._stopping:
            # Refused (e.g. ESME_RX_T_APPN), timed out or the bind went away: offer it again
            # later (at once on the next bind if the link is gone).
            if fut.cancelled() or isinstance(fut.exception(), LinkClosed):
                self._requeue(due)
            else:
                timer: asyncio.TimerHandle | None = None

                def later() -> None:
                    self._timers.discard(timer)  # type: ignore[arg-type]
                    self._requeue(due)

                timer = self._loop.call_later(self.retry_after, later)  # type: ignore[union-attr]
                self._timers.add(timer)
        box.wake.set()

    def _requeue(self, due: _Due) -> None:
        """Put a receipt in its system_id's mailbox (bounded: the oldest are dropped)."""
        if self._stopping:
            return
        box = self._box(due.system_id)
        box.ready.append(due)
        while len(box.ready) > self.max_held:
            box.ready.popleft()
            self.receipts_dropped += 1
        self._kick(box)


async def run_simulator(smsc: SimulatedSmsc, stop: asyncio.Event) -> None:
    """Start ``smsc``, wait for ``stop``, stop it (for the CLI)."""
    await smsc.start()
    try:
        await stop.wait()
    finally:
        await smsc.stop()
