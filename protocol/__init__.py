"""Sans-I/O SMPP 3.4: PDUs, codec, framing, session state, text and receipts.

Nothing here does I/O or reads a clock: it takes bytes, values and ``now`` and returns
events, decisions and bytes, so it is fast to test and the same code serves the partner
server, the upstream connectors and the simulator.
"""

from .codec import decode, encode
from .constants import CommandId, CommandStatus, DataCoding, EsmClass, MessageState, Tag
from .errors import DecodeError, FramingError, LocalProtocolError, RemoteProtocolError, SmppError
from .framing import Framer

__all__ = [
    "CommandId",
    "CommandStatus",
    "DataCoding",
    "DecodeError",
    "EsmClass",
    "Framer",
    "FramingError",
    "LocalProtocolError",
    "MessageState",
    "RemoteProtocolError",
    "SmppError",
    "Tag",
    "decode",
    "encode",
]
