"""Cut a TCP byte stream into PDUs, whatever the chunking.

The command_length is checked from the 4-octet prefix, before any body is buffered: a peer
announcing 2 GiB (or less than a header) gets a ``FramingError`` at once and never makes us
allocate. After such an error the stream cannot be trusted, so the framer refuses further
input instead of guessing where the next PDU starts.
"""

from __future__ import annotations

from .constants import HEADER_LEN
from .errors import FramingError

DEFAULT_MAX_PDU = 64 * 1024


class Framer:
    """Incremental framer: ``feed(data)`` then iterate ``frames()``."""

    __slots__ = ("_buf", "_max", "_broken")

    def __init__(self, max_pdu_size: int = DEFAULT_MAX_PDU) -> None:
        self._buf = bytearray()
        self._max = max_pdu_size
        self._broken: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as a frame (for read backpressure)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        self._buf += data

    def next_frame(self) -> bytes | None:
        """The next whole PDU as ``bytes``, or ``None`` until more data arrives."""
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[:4], "big")
        if length < HEADER_LEN or length > self._max:
            self._broken = FramingError(
                f"command_length {length} outside {HEADER_LEN}..{self._max}; closing the stream"
            )
            self._broken.sequence_number = (
                int.from_bytes(buf[12:16], "big") if len(buf) >= 16 else 0
            )
            raise self._broken
        if len(buf) < length:
            return None
        frame = bytes(buf[:length])
        del buf[:length]
        return frame

    def frames(self):
        """Yield every whole PDU buffered so far."""
        while (frame := self.next_frame()) is not None:
            yield frame
