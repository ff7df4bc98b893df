"""A fake board for host tests: speaks docs/protocol.md in Python and injects faults.

:class:`FakeDevice` answers ``INFO`` with an :class:`~host.protocol.InfoReply` and ``CLASSIFY``
with the scores of any callable of the pixel bytes, checks frames like the device (error replies
for bad ones), records what it received, and misbehaves on request (:class:`Fault`): silence,
garbage bytes, a corrupt CRC, a wrong sequence number, an error reply, ``BUSY``, a slow reply.

It serves a :class:`~host.transport.LoopbackTransport` end (:meth:`FakeDevice.loopback`) or a
TCP socket that pyserial opens as ``socket://127.0.0.1:PORT`` (:meth:`FakeDevice.serve_socket`),
so the command line can be tested end to end through :class:`~host.transport.SerialTransport`.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from host.protocol import (
    ERROR_REASONS,
    ClassifyReply,
    CRCError,
    ErrorCode,
    ErrorReply,
    Frame,
    FrameParser,
    InfoReply,
    Layout,
    MsgType,
    OversizedFrameError,
    ProtocolError,
    TruncatedFrameError,
    UnknownTypeError,
    VersionError,
    cobs_encode,
    encode_body,
    encode_message,
)
from host.transport import LoopbackTransport, Transport, TransportClosed

__all__ = ["Fault", "FakeDevice", "SocketTransport", "make_info"]

FAULT_KINDS = ("silent", "garbage", "bad_crc", "wrong_seq", "error", "busy", "delay",
               "wrong_type", "short_scores")


@dataclass(frozen=True)
class Fault:
    """One misbehaviour for the next request (of type ``on``, any if None).

    ``silent``: no reply. ``garbage``: ``arg`` random bytes (default 200) instead of the reply.
    ``bad_crc``: the reply with its CRC flipped. ``wrong_seq``: the reply with seq + 1.
    ``error``: an error reply with code ``arg``. ``busy``: a ``BUSY`` error reply. ``delay``:
    the reply after ``arg`` seconds. ``wrong_type``: an info reply instead of a classify reply
    (or the reverse). ``short_scores``: one score too few.
    """
    kind: str
    arg: object = None
    on: MsgType | None = None

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; expected one of {FAULT_KINDS}")


def make_info(*, shape=(3, 8, 8), classes=10, layout=Layout.HWC, model_hash=bytes(32),
              name="fake", clk_hz=100_000_000, baud=3_000_000) -> InfoReply:
    return InfoReply(config_name=name, model_hash=model_hash, clk_hz=clk_hz, uart_baud=baud,
                     input_shape=tuple(shape), num_classes=classes, layout=Layout(layout))


class SocketTransport(Transport):
    """A connected TCP socket as a :class:`~host.transport.Transport`."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._closed = False

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as e:
            raise TransportClosed(f"socket closed: {e}") from e

    def read(self, n: int, timeout: float | None) -> bytes:
        self._check_read(n, timeout)
        if self._closed:
            raise TransportClosed("socket closed")
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(n)
        except TimeoutError:
            return b""
        except OSError as e:
            raise TransportClosed(f"socket closed: {e}") from e
        if not data:
            raise TransportClosed("peer closed the socket")
        return data

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()


_ERROR_OF = [(CRCError, ErrorCode.BAD_CRC), (TruncatedFrameError, ErrorCode.TRUNCATED),
             (OversizedFrameError, ErrorCode.OVERSIZED), (VersionError, ErrorCode.BAD_VERSION),
             (UnknownTypeError, ErrorCode.UNKNOWN_TYPE)]


class FakeDevice:
    """A board in Python. ``scores(pixels: bytes) -> sequence of int`` computes the scores of
    an image (default: class ``i`` scores the sum of the pixels times ``i+1``, mod 2**32);
    ``cycles`` is the cycle count to report (an int or a callable of the pixels).

    ``faults`` is a queue: each request takes the first fault whose ``on`` matches it (see
    :meth:`inject`); ``always`` is a fault applied to every reply (e.g. garbage for a wrong baud
    rate). ``requests`` lists the frames received, ``errors`` the bad ones (as exceptions).
    """

    def __init__(self, info: InfoReply | None = None,
                 scores: Callable[[bytes], Sequence[int]] | None = None,
                 cycles: int | Callable[[bytes], int] = 123_456, *,
                 faults: Sequence[Fault] = (), always: Fault | None = None, seed: int = 0):
        self.info = info or make_info()
        self.scores = scores or self._default_scores
        self.cycles = cycles
        self.faults: list[Fault] = list(faults)
        self.always = always
        self.requests: list[Frame] = []
        self.errors: list[ProtocolError] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._transports: list[Transport] = []
        self._server: socket.socket | None = None

    def _default_scores(self, pixels: bytes) -> list[int]:
        total = sum(pixels)
        return [(total * (i + 1)) & 0xFFFFFFFF for i in range(self.info.num_classes)]

    # -- setup -------------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> FakeDevice:
        with self._lock:
            self.faults.extend(faults)
        return self

    def loopback(self) -> LoopbackTransport:
        """Serve one end of a new loopback pair; returns the host's end."""
        host, dev = LoopbackTransport.pair()
        self._start(dev)
        return host

    def serve_socket(self) -> str:
        """Listen on a local TCP port and serve each connection in turn; returns the pyserial
        URL (``socket://127.0.0.1:PORT``)."""
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.1)
        self._server = server

        def accept():
            while not self._stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._start(SocketTransport(conn))

        t = threading.Thread(target=accept, name="fakedev-accept", daemon=True)
        t.start()
        self._threads.append(t)
        return f"socket://127.0.0.1:{server.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()
        for tr in self._transports:
            tr.close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- serving -----------------------------------------------------------------------------

    def _start(self, transport: Transport) -> None:
        self._transports.append(transport)
        t = threading.Thread(target=self._serve, args=(transport,), name="fakedev",
                             daemon=True)
        t.start()
        self._threads.append(t)

    def _serve(self, transport: Transport) -> None:
        parser = FrameParser(max_payload=self.info.image_size)
        while not self._stop.is_set():
            try:
                data = transport.read(1 << 16, 0.05)
            except TransportClosed:
                return
            parser.feed(data)
            while True:
                try:
                    frame = parser.pop()
                except ProtocolError as e:
                    self.errors.append(e)
                    code = next((c for cls, c in _ERROR_OF if isinstance(e, cls)),
                                ErrorCode.TRUNCATED)
                    self._reply(transport, self._error(code, 0, 0), 0, None)
                    continue
                if frame is None:
                    break
                self.requests.append(frame)
                try:
                    self._answer(transport, frame)
                except TransportClosed:
                    return

    @staticmethod
    def _error(code: ErrorCode, request_type: int, detail: int) -> ErrorReply:
        return ErrorReply(code=code, request_type=request_type, detail=detail,
                          reason=ERROR_REASONS[code])

    def _take_fault(self, mtype: int) -> Fault | None:
        with self._lock:
            for i, f in enumerate(self.faults):
                if f.on is None or f.on == mtype:
                    return self.faults.pop(i)
        return self.always

    def _answer(self, transport: Transport, frame: Frame) -> None:
        c_h_w = self.info.image_size
        if frame.type == MsgType.INFO:
            ok = len(frame.payload) == 0
        elif frame.type == MsgType.CLASSIFY:
            ok = len(frame.payload) == c_h_w
        else:
            self._reply(transport, self._error(ErrorCode.UNKNOWN_TYPE, frame.type, frame.type),
                        frame.seq, None)
            return
        if not ok:
            self._reply(transport, self._error(ErrorCode.BAD_LENGTH, frame.type,
                                               len(frame.payload)), frame.seq, None)
            return
        fault = self._take_fault(frame.type)
        if frame.type == MsgType.INFO:
            reply = self.info
        else:
            scores = [int(s) & 0xFFFFFFFF for s in self.scores(frame.payload)]
            cycles = self.cycles(frame.payload) if callable(self.cycles) else self.cycles
            reply = ClassifyReply(scores=tuple(scores), cycles=cycles)
        self._reply(transport, reply, frame.seq, fault)

    def _reply(self, transport: Transport, reply, seq: int, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if kind == "silent":
            return
        if kind == "delay":
            time.sleep(float(fault.arg))
        if kind == "garbage":
            n = int(fault.arg or 200)
            transport.write(bytes(self._rng.randrange(256) for _ in range(n)))
            return
        if kind == "busy":
            reply = self._error(ErrorCode.BUSY, int(reply.TYPE) & 0x7F, 0)
        elif kind == "error":
            code = ErrorCode(fault.arg)
            reply = self._error(code, int(reply.TYPE) & 0x7F, 0)
        elif kind == "wrong_type":
            reply = (ClassifyReply(scores=(1,) * self.info.num_classes, cycles=1)
                     if isinstance(reply, InfoReply) else self.info)
        elif kind == "short_scores" and isinstance(reply, ClassifyReply):
            reply = ClassifyReply(scores=reply.scores[:-1] or (0,), cycles=reply.cycles)
        if kind == "wrong_seq":
            seq = seq % 255 + 1
        if kind == "bad_crc":
            body = bytearray(encode_body(Frame(type=int(reply.TYPE), seq=seq,
                                               payload=reply.payload())))
            body[-1] ^= 0x55
            transport.write(b"\x00" + cobs_encode(bytes(body)) + b"\x00")
            return
        transport.write(encode_message(reply, seq))
