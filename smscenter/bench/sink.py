"""The upstream sink of ``bench.mt``: the least an upstream SMSC can be, in a process of its own.

Raw ``struct`` parsing on uvloop; binds of any kind are accepted; ``submit_sm`` is answered at
once with a decimal id, and for each submit that asks for one (``registered_delivery``) a
delivery receipt ``deliver_sm`` (esm_class 0x04, Appendix B text plus ``receipted_message_id``
/ ``message_state`` TLVs) is sent after the receipt delay on a receiver/transceiver bind of
the submitter's ``system_id``, with up to ``window`` receipts in flight per bind; refused or
lost receipts are offered again. ``SinkHandle`` starts it and reads its counters.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import signal
import socket
import struct
import time
from collections import defaultdict, deque

_HEADER = struct.Struct(">IIII")
_BIND_RX, _BIND_TX, _BIND_TRX = 0x00000001, 0x00000002, 0x00000009
_SUBMIT_SM, _DELIVER_SM, _UNBIND, _ENQUIRE_LINK = 0x00000004, 0x00000005, 0x00000006, 0x00000015
_DELIVER_SM_RESP = 0x80000005
_RETRY_AFTER = 0.05  # seconds before a refused receipt is offered again


class Sink:
    """Shared state of the sink process: ids, receipts due, receiver binds per system_id."""

    def __init__(self, delay: float, window: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.delay = delay
        self.window = window
        self.counter = 0
        self.due: deque[tuple[float, str, bytes]] = deque()  # (when, system_id, deliver_sm body)
        self.timer: asyncio.TimerHandle | None = None
        self.ready: dict[str, deque[bytes]] = defaultdict(deque)  # receipts waiting for a slot
        self.receivers: dict[str, list[SinkConnection]] = defaultdict(list)
        self.stats = {
            "binds": 0,
            "submits": 0,
            "receipts_due": 0,
            "receipts_sent": 0,
            "receipts_acked": 0,
            "receipts_refused": 0,
        }
        self._date = (0, b"")

    def date(self) -> bytes:
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, time.strftime("%y%m%d%H%M", time.gmtime(now)).encode())
        return self._date[1]

    def receipt_due(self, system_id: str, body: bytes) -> None:
        self.stats["receipts_due"] += 1
        self.due.append((self.loop.time() + self.delay, system_id, body))
        if self.timer is None:
            self.timer = self.loop.call_later(self.delay, self._fire)

    def _fire(self) -> None:
        self.timer = None
        now = self.loop.time()
        due, touched = self.due, set()
        while due and due[0][0] <= now:
            _, system_id, body = due.popleft()
            self.ready[system_id].append(body)
            touched.add(system_id)
        for system_id in touched:
            self.pump(system_id)
        if due:
            self.timer = self.loop.call_at(due[0][0], self._fire)

    def pump(self, system_id: str) -> None:
        """Send what is ready for ``system_id`` on its receivers, up to each one's window."""
        queue = self.ready.get(system_id)
        if not queue:
            return
        for conn in self.receivers.get(system_id, ()):
            room = self.window - len(conn.in_flight)
            if room <= 0:
                continue
            out = []
            pack = _HEADER.pack
            while room > 0 and queue:
                body = queue.popleft()
                conn.seq = seq = conn.seq % 0x7FFFFFFF + 1
                conn.in_flight[seq] = body
                out.append(pack(16 + len(body), _DELIVER_SM, 0, seq))
                out.append(body)
                room -= 1
            self.stats["receipts_sent"] += len(out) // 2
            conn.transport.write(b"".join(out))
            if not queue:
                return

    def give_back(self, system_id: str, bodies) -> None:
        """Receipts refused or lost with their connection: offered again a little later."""
        self.ready[system_id].extendleft(reversed(list(bodies)))
        self.loop.call_later(_RETRY_AFTER, self.pump, system_id)


def _receipt_body(msg_id: bytes, submit_src: tuple[int, int, bytes], submit_dst: tuple[int, int, bytes], date: bytes) -> bytes:
    """A delivery receipt for one message: from the handset (the submit's destination) to
    the sender, Appendix B text plus the receipted_message_id and message_state TLVs."""
    text = b"id:%s sub:001 dlvrd:001 submit date:%s done date:%s stat:DELIVRD err:000 text:" % (msg_id, date, date)
    return b"".join(
        (
            b"\0",  # service_type
            bytes((submit_dst[0], submit_dst[1])), submit_dst[2], b"\0",
            bytes((submit_src[0], submit_src[1])), submit_src[2], b"\0",
            b"\x04\x00\x00",  # esm_class = delivery receipt, protocol_id, priority_flag
            b"\0\0",  # schedule_delivery_time, validity_period
            bytes((0, 0, 0, 0, len(text))),  # registered_delivery, replace, data_coding, default_msg_id, sm_length
            text,
            struct.pack(">HH", 0x001E, len(msg_id) + 1), msg_id, b"\0",  # receipted_message_id
            b"\x04\x27\x00\x01\x02",  # message_state = DELIVERED
        )
    )


class SinkConnection(asyncio.Protocol):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.system_id = ""
        self.receiver = False
        self.seq = 0
        self.in_flight: dict[int, bytes] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc) -> None:
        sink = self.sink
        if self.system_id:
            sink.stats["binds"] -= 1
        if self.receiver:
            sink.receivers[self.system_id].remove(self)
            self.receiver = False
            if self.in_flight:
                sink.give_back(self.system_id, self.in_flight.values())
                self.in_flight.clear()

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        stats = sink.stats
        buf = self.buf
        buf += data
        out = []
        pos, end, close, freed = 0, len(buf), False, False
        pack, unpack_from = _HEADER.pack, _HEADER.unpack_from
        while end - pos >= 16:
            length, cid, status, seq = unpack_from(buf, pos)
            if length < 16 or length > 65536:
                self.transport.close()
                return
            if end - pos < length:
                break
            start, pos = pos, pos + length
            if cid == _SUBMIT_SM:
                sink.counter += 1
                msg_id = b"%d" % sink.counter
                out.append(pack(17 + len(msg_id), cid | 0x80000000, 0, seq) + msg_id + b"\0")
                stats["submits"] += 1
                if self.system_id:
                    try:
                        p = buf.index(0, start + 16, pos) + 1  # after service_type
                        e = buf.index(0, p + 2, pos)
                        src = (buf[p], buf[p + 1], bytes(buf[p + 2 : e]))
                        p = e + 1
                        e = buf.index(0, p + 2, pos)
                        dst = (buf[p], buf[p + 1], bytes(buf[p + 2 : e]))
                        p = buf.index(0, e + 4, pos) + 1  # after esm, protocol_id, priority, schedule
                        p = buf.index(0, p, pos) + 1  # after validity_period
                        registered = buf[p] & 0x03
                    except (ValueError, IndexError):
                        registered = 0
                    if registered in (1, 3):  # the sink delivers everything
                        sink.receipt_due(self.system_id, _receipt_body(msg_id, src, dst, sink.date()))
            elif cid == _DELIVER_SM_RESP:
                body = self.in_flight.pop(seq, None)
                if body is not None:
                    if status == 0:
                        stats["receipts_acked"] += 1
                    else:
                        stats["receipts_refused"] += 1
                        sink.give_back(self.system_id, (body,))
                    freed = True
            elif cid & 0x80000000:
                pass  # enquire_link_resp, unbind_resp, generic_nack: nothing to do
            elif cid in (_BIND_RX, _BIND_TX, _BIND_TRX):
                if not self.system_id:
                    try:
                        e = buf.index(0, start + 16, pos)
                        self.system_id = bytes(buf[start + 16 : e]).decode("ascii", "replace") or "?"
                    except ValueError:
                        self.system_id = "?"
                    stats["binds"] += 1
                    if cid != _BIND_TX:
                        self.receiver = True
                        sink.receivers[self.system_id].append(self)
                        freed = True  # receipts may be waiting for this system_id
                out.append(pack(21, cid | 0x80000000, 0, seq) + b"SINK\0")
            elif cid == _ENQUIRE_LINK or cid == _UNBIND:
                out.append(pack(16, cid | 0x80000000, 0, seq))
                close = close or cid == _UNBIND
            else:  # generic_nack, ESME_RINVCMDID
                out.append(pack(16, 0x80000000, 0x03, seq))
        del buf[:pos]
        if out:
            self.transport.write(b"".join(out))
        if close:
            self.transport.close()
        elif freed and self.receiver:
            sink.pump(self.system_id)


def sink_process(conn, delay: float, window: int, port: int = 0) -> None:
    """Child process: the sink on uvloop until the parent says stop. Answers ``"stats"``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        sink = Sink(delay, window)
        stopping = asyncio.Event()
        server = await loop.create_server(lambda: SinkConnection(sink), "127.0.0.1", port, backlog=1024)

        def on_message() -> None:
            try:
                command = conn.recv()
            except EOFError:
                command = "stop"
            if command == "stats":
                conn.send(dict(sink.stats, held=sum(len(q) for q in sink.ready.values()) + len(sink.due)))
                return
            loop.remove_reader(conn.fileno())
            stopping.set()

        loop.add_reader(conn.fileno(), on_message)
        conn.send(("ready", server.sockets[0].getsockname()[1]))
        await stopping.wait()
        server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


class SinkHandle:
    """The parent's side of a sink process."""

    def __init__(self, delay: float, window: int, port: int = 0) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=sink_process, args=(child, delay, window, port), name="bench-mt-sink",
                                daemon=True)
        self.proc.start()
        child.close()
        try:
            if not self.pipe.poll(30):
                raise RuntimeError("the sink did not start")
            _, self.port = self.pipe.recv()
        except (EOFError, OSError, RuntimeError) as exc:
            self.close()
            raise RuntimeError(f"the sink did not start: {exc}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stats(self) -> dict:
        self.pipe.send("stats")
        if not self.pipe.poll(10):
            raise RuntimeError("the sink does not answer")
        return self.pipe.recv()

    def close(self) -> None:
        try:
            self.pipe.send("stop")
        except (OSError, EOFError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

