"""One exception hierarchy for protocol problems, each carrying the command_status to answer.

Split like h11: a ``RemoteProtocolError`` is the peer's fault (answer it with the status it
carries), a ``LocalProtocolError`` is ours (a bug or a misuse of the API; never sent).
"""

from __future__ import annotations

from .constants import CommandId, CommandStatus


class SmppError(Exception):
    """Base of every error the protocol package raises."""

    status: CommandStatus = CommandStatus.ESME_RUNKNOWNERR

    def __init__(self, message: str, status: CommandStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class LocalProtocolError(SmppError):
    """We tried to do something the protocol does not allow (encode an invalid PDU, send in
    the wrong state). Raised to our own caller; never sent to the peer."""

    status = CommandStatus.ESME_RSYSERR


class RemoteProtocolError(SmppError):
    """The peer sent something invalid. ``status`` is what to answer with."""


class FramingError(RemoteProtocolError):
    """The byte stream cannot be trusted any more (absurd command_length). The connection
    must be closed after a generic_nack: there is no safe way to find the next PDU."""

    status = CommandStatus.ESME_RINVCMDLEN


class DecodeError(RemoteProtocolError):
    """A single PDU is invalid, but the frame boundary is sound, so the session can go on.

    Carries the header fields that were readable, so the caller can answer the right
    sequence_number with either the matching ``*_resp`` or a generic_nack.
    """

    def __init__(
        self,
        message: str,
        status: CommandStatus,
        command_id: int | None = None,
        sequence_number: int = 0,
    ) -> None:
        super().__init__(message, status)
        self.command_id = command_id
        self.sequence_number = sequence_number

    @property
    def known_command(self) -> CommandId | None:
        try:
            return CommandId(self.command_id) if self.command_id is not None else None
        except ValueError:
            return None
