"""Micro-benchmark of the codec: ``python -m protocol.bench``.

Prints operations per second on one core for submit_sm and deliver_sm decode/encode, the
framer, and GSM-7 encoding. Figures only; nothing is asserted (timing belongs here, not in
tests).
"""

from __future__ import annotations

import argparse
import time

from . import codec
from . import pdu as P
from .constants import DataCoding, EsmClass, Tag
from .framing import Framer
from .gsm7 import encode_unpacked

TEXT = "Hello from ACME: your parcel 4711 arrives tomorrow between 10:00 and 12:00. Reply STOP to opt out."


def _rate(fn, seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds``, after a short warm-up."""
    for _ in range(1000):
        fn()
    n, batch = 0, 2000
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args(argv)

    short_message = encode_unpacked(TEXT)
    submit = P.SubmitSm(
        sequence_number=42,
        service_type="MKT",
        source_addr_ton=5,
        source_addr="ACME",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr="33612345678",
        registered_delivery=1,
        data_coding=DataCoding.DEFAULT,
        short_message=short_message,
    )
    receipt = (
        b"id:7264831238412906497 sub:001 dlvrd:001 submit date:2611281030 "
        b"done date:2611281031 stat:DELIVRD err:000 text:"
    )
    deliver = P.DeliverSm(
        sequence_number=43,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="33612345678",
        destination_addr="ACME",
        esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=receipt,
        tlvs=((Tag.RECEIPTED_MESSAGE_ID, "7264831238412906497"), (Tag.MESSAGE_STATE, 2)),
    )
    submit_bytes = codec.encode(submit)
    deliver_bytes = codec.encode(deliver)
    stream = submit_bytes * 100

    def frame_100() -> None:
        framer = Framer()
        framer.feed(stream)
        for frame in framer.frames():
            pass

    def encode_afresh(pdu):
        """An encode that does the work: the codec keeps a PDU's body once encoded."""
        memo = pdu.__dict__
        return lambda: (memo.pop("_body", None), codec.encode(pdu))

    rows = [
        ("submit_sm decode", _rate(lambda: codec.decode(submit_bytes), args.seconds)),
        ("submit_sm encode", _rate(encode_afresh(submit), args.seconds)),
        ("submit_sm encode again (kept body)", _rate(lambda: codec.encode(submit), args.seconds)),
        ("deliver_sm decode (receipt+TLVs)", _rate(lambda: codec.decode(deliver_bytes), args.seconds)),
        ("deliver_sm encode (receipt+TLVs)", _rate(encode_afresh(deliver), args.seconds)),
        ("framer, PDUs cut from a stream", 100 * _rate(frame_100, args.seconds)),
        ("GSM-7 encode, 100-char text", _rate(lambda: encode_unpacked(TEXT), args.seconds)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>12,.0f} /s  {1e6 / rate:8.2f} µs")


if __name__ == "__main__":
    main()
