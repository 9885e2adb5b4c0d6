"""A non-durable relay from partners to connectors: the session layer's first handler.

It answers a partner's submit_sm only after an upstream accepted it (so an ESME_ROK is
never a lie), with our own 64-bit decimal id. It keeps nothing: no queue, no receipt
correlation, no retry after a failed upstream. The durable pipeline replaces it.
"""

from __future__ import annotations

import asyncio

import structlog

from protocol import pdu as P
from protocol.constants import CommandId, CommandStatus
from routing.routes import RouteRule, RouteTable
from storage.ids import IdGenerator

from .accounts import PartnerBind
from .config import Settings
from .connector import Connector, ConnectorDown
from .link import ResponseTimeout

log = structlog.get_logger("smscenter.relay")

#: Requests this handler cannot serve yet, with the precise status they get.
_UNSUPPORTED = {
    CommandId.QUERY_SM: CommandStatus.ESME_RQUERYFAIL,
    CommandId.CANCEL_SM: CommandStatus.ESME_RCANCELFAIL,
    CommandId.REPLACE_SM: CommandStatus.ESME_RREPLACEFAIL,
    CommandId.SUBMIT_MULTI: CommandStatus.ESME_RINVCMDID,
    CommandId.DATA_SM: CommandStatus.ESME_RINVCMDID,
}


class RelayHandler:
    def __init__(self, settings: Settings, connectors: dict[str, Connector]) -> None:
        self.connectors = connectors
        self.routes = RouteTable(
            RouteRule(r.destinations, r.connectors, r.accounts, r.category) for r in settings.routes
        )
        self.ids = IdGenerator()
        self.timeout = settings.server.response_timeout
        self._tasks: set[asyncio.Task] = set()

    def handle(self, bind: PartnerBind, pdu: P.Pdu) -> None:
        if pdu.command_id != CommandId.SUBMIT_SM:
            bind.respond(pdu.response(_UNSUPPORTED.get(pdu.command_id, CommandStatus.ESME_RINVCMDID)))
            return
        digits = pdu.destination_addr.lstrip("+")  # type: ignore[attr-defined]
        if not digits.isdigit():
            bind.respond(pdu.response(CommandStatus.ESME_RINVDSTADR))
            return
        names = self.routes.connectors_for(digits, bind.account.system_id, bind.account.config.category)
        if not names:
            bind.respond(pdu.response(CommandStatus.ESME_RSUBMITFAIL))
            return
        task = asyncio.get_running_loop().create_task(self._forward(bind, pdu, names))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, bind: PartnerBind, pdu: P.Pdu, names: tuple[str, ...]) -> None:
        upstream = P.SubmitSm(**{f: getattr(pdu, f) for f in _FORWARDED}, tlvs=pdu.tlvs)
        status = CommandStatus.ESME_RSUBMITFAIL
        for name in names:
            connector = self.connectors.get(name)
            if connector is None:
                continue
            try:
                resp = await connector.submit(upstream, timeout=self.timeout)
            except (ConnectorDown, ResponseTimeout):
                continue
            if resp.command_status == CommandStatus.ESME_ROK:
                bind.respond(pdu.response(message_id=str(self.ids.next())))
                return
            status = resp.command_status
        bind.respond(pdu.response(status))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


_FORWARDED = [
    "service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton",
    "dest_addr_npi", "destination_addr", "esm_class", "protocol_id", "priority_flag",
    "schedule_delivery_time", "validity_period", "registered_delivery",
    "replace_if_present_flag", "data_coding", "sm_default_msg_id", "short_message",
]
