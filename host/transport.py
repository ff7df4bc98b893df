"""Byte transports under the host driver: a serial port, or an in-memory pair for tests.

A :class:`Transport` moves bytes and nothing else; framing is :mod:`host.protocol`'s job. The
same driver runs over :class:`SerialTransport` (the board's FT231X, or a pty of the simulated
board) and :class:`LoopbackTransport` (tests), so both see the same code paths.
"""

from __future__ import annotations

import abc
import threading
import time

from host.protocol import Frame, FrameParser

__all__ = ["Transport", "SerialTransport", "LoopbackTransport", "TransportClosed", "read_frame"]


class TransportClosed(ConnectionError):
    """Reading or writing a transport that has been closed (or whose peer has)."""


class Transport(abc.ABC):
    """A bidirectional byte stream.

    ``read(n, timeout)`` waits until at least one byte is available or ``timeout`` seconds have
    passed (``None``: wait for ever) and returns up to ``n`` bytes, ``b""`` on timeout.
    ``write(data)`` sends all of ``data``. Transports are context managers that close on exit.
    """

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        ...

    @abc.abstractmethod
    def read(self, n: int, timeout: float | None) -> bytes:
        ...

    @abc.abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _check_read(n, timeout):
        if not isinstance(n, int) or n <= 0:
            raise ValueError(f"read size must be a positive integer, not {n!r}")
        if timeout is not None and timeout < 0:
            raise ValueError(f"timeout must be non-negative or None, not {timeout!r}")


class SerialTransport(Transport):
    """A serial port through pyserial: a device path (``/dev/ttyUSB0``, a pty) or any pyserial
    URL (``loop://``, ``socket://host:port``, ``rfc2217://...``)."""

    def __init__(self, port: str, baud: int = 3_000_000, **serial_args):
        import serial  # imported here so that the protocol and tests need no serial port

        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"baud must be a positive integer, not {baud!r}")
        self._port_name = port
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=None,
                                                 **serial_args)
        except serial.SerialException as e:
            raise TransportClosed(f"cannot open serial port {port!r}: {e}") from e

    @property
    def port(self) -> str:
        return self._port_name

    def write(self, data: bytes) -> None:
        if not self._serial.is_open:
            raise TransportClosed(f"serial port {self._port_name!r} is closed")
        self._serial.write(data)
        self._serial.flush()

    def read(self, n: int, timeout: float | None) -> bytes:
        self._check_read(n, timeout)
        if not self._serial.is_open:
            raise TransportClosed(f"serial port {self._port_name!r} is closed")
        self._set_timeout(timeout)
        data = self._serial.read(1)
        if data and n > 1:
            waiting = self._serial.in_waiting
            if waiting:
                self._set_timeout(0)
                data += self._serial.read(min(n - 1, waiting))
        return data

    def _set_timeout(self, timeout):
        if self._serial.timeout != timeout:  # reconfigures the port: avoid needless calls
            self._serial.timeout = timeout

    def close(self) -> None:
        self._serial.close()


class _Pipe:
    """One direction of a :class:`LoopbackTransport` pair."""

    def __init__(self):
        self.buffer = bytearray()
        self.closed = False
        self.cond = threading.Condition()


class LoopbackTransport(Transport):
    """One end of an in-memory, thread-safe byte pipe; :meth:`pair` makes both ends. What one
    end writes, the other reads. Closing either end closes both directions; buffered bytes can
    still be read."""

    def __init__(self, incoming: _Pipe, outgoing: _Pipe):
        self._in = incoming
        self._out = outgoing

    @classmethod
    def pair(cls) -> tuple[LoopbackTransport, LoopbackTransport]:
        a_to_b, b_to_a = _Pipe(), _Pipe()
        return cls(b_to_a, a_to_b), cls(a_to_b, b_to_a)

    def write(self, data: bytes) -> None:
        with self._out.cond:
            if self._out.closed:
                raise TransportClosed("loopback transport is closed")
            self._out.buffer += data
            self._out.cond.notify_all()

    def read(self, n: int, timeout: float | None) -> bytes:
        self._check_read(n, timeout)
        with self._in.cond:
            ready = self._in.cond.wait_for(lambda: self._in.buffer or self._in.closed, timeout)
            if not ready:
                return b""
            if not self._in.buffer:
                raise TransportClosed("loopback transport is closed")
            data = bytes(self._in.buffer[:n])
            del self._in.buffer[:n]
            return data

    def close(self) -> None:
        for pipe in (self._in, self._out):
            with pipe.cond:
                pipe.closed = True
                pipe.cond.notify_all()


def read_frame(transport: Transport, parser: FrameParser, timeout: float | None) -> Frame:
    """The next frame from ``transport``, fed through ``parser``; raises :class:`TimeoutError`
    if none is complete within ``timeout`` seconds, and the parser's
    :class:`~host.protocol.ProtocolError` for a bad frame (which it has dropped)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        frame = parser.pop()
        if frame is not None:
            return frame
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(f"no complete frame within {timeout} s")
        parser.feed(transport.read(4096, left))
