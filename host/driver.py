"""The host driver: ask the board what it is and have it classify images (docs/protocol.md).

:class:`Device` speaks the protocol over any :class:`~host.transport.Transport`: a serial port
(the board's FT231X, or the simulated board's socket) or a loopback pair (tests). Every read has
a timeout; requests are retried only where that is safe (see :class:`Device`); every failure is
a :class:`HostError` whose message says what to check.

    with open_device("/dev/ttyUSB0") as dev:
        print(dev.info())
        result = dev.classify("pelican.jpeg")
        print(result.top(5), result.cycles, result.wall_s)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from host.protocol import (
    ClassifyReply,
    ClassifyRequest,
    DeviceError,
    ErrorCode,
    ErrorReply,
    Frame,
    FrameParser,
    InfoReply,
    InfoRequest,
    Message,
    MsgType,
    ProtocolError,
    decode_message,
    encode_message,
    image_to_pixels,
    max_encoded_size,
)
from host.transport import SerialTransport, Transport, TransportClosed

__all__ = [
    "DEFAULT_BAUD", "INFO_TIMEOUT", "COMPUTE_TIMEOUT", "SIM_TIMEOUT",
    "HostError", "NoDeviceError", "DeviceTimeoutError", "GarbageError", "ReplyError",
    "DeviceReplyError", "DeviceBusyError", "ModelMismatchError",
    "ClassifyResult", "Device", "open_device", "find_port", "describe_ports",
    "image_pixels", "wire_seconds", "file_sha256",
]

log = logging.getLogger("host")

DEFAULT_BAUD = 3_000_000
#: seconds to wait for an info reply (a 300-byte reply takes 1 ms at 3 Mbaud)
INFO_TIMEOUT = 1.0
#: seconds allowed for the accelerator's work and the reply, on top of the image's wire time
COMPUTE_TIMEOUT = 5.0
#: the reply timeout on the simulated board (Verilator runs the whole network: minutes)
SIM_TIMEOUT = 900.0
#: extra attempts of an info request (idempotent) and of a classify request that got no reply
RETRIES = 2
#: seconds to wait before resending a classify request that was answered BUSY
BUSY_WAIT = 1.0
#: image bytes written per progress report
CHUNK = 4096

#: error codes after which the request can be resent unchanged (the frame was damaged on the
#: way, the device dropped it and will not send a result for it)
_LINE_CODES = {ErrorCode.BAD_CRC, ErrorCode.TRUNCATED, ErrorCode.OVERSIZED, ErrorCode.LINE_ERROR}


# -- errors ------------------------------------------------------------------------------------

class HostError(Exception):
    """Anything that stops the host from getting an answer; the message says what to check."""


class NoDeviceError(HostError):
    """No serial port to talk to: it cannot be opened, or none (or several) to choose from."""


class DeviceTimeoutError(HostError, TimeoutError):
    """No reply to the request within the timeout; ``silent``: not a single byte came."""

    def __init__(self, message: str, *, silent: bool = True):
        super().__init__(message)
        self.silent = silent


class GarbageError(HostError):
    """Bytes arrived, but no valid frame: usually a wrong baud rate."""


class ReplyError(HostError):
    """A valid frame with our sequence number but the wrong message for the request."""


class DeviceReplyError(DeviceError, HostError):
    """The device answered with an error reply; ``code``, ``reason``, ``detail`` and
    ``request_type`` are its fields."""

    def __init__(self, reply: ErrorReply, hint: str = ""):
        DeviceError.__init__(self, reply)
        self.code = reply.code
        self.reason = reply.reason
        self.detail = reply.detail
        self.request_type = reply.request_type
        self.hint = hint
        if hint:
            self.args = (f"{self.args[0]}: {hint}",)


class DeviceBusyError(DeviceReplyError):
    """The device is still busy with another classification."""


class ModelMismatchError(HostError):
    """The device runs another model than the local one."""

    def __init__(self, message: str, *, device_hash: bytes, local_hashes: tuple[bytes, ...]):
        super().__init__(message)
        self.device_hash = device_hash
        self.local_hashes = local_hashes


# -- ports -------------------------------------------------------------------------------------

def _comports():
    from serial.tools import list_ports
    return list(list_ports.comports())


def describe_ports() -> str:
    """The serial ports of this machine, for error messages."""
    ports = _comports()
    if not ports:
        return "no serial ports found"
    return "available ports: " + ", ".join(
        f"{p.device} ({p.description})" if p.description and p.description != "n/a"
        else p.device for p in sorted(ports, key=lambda p: p.device))


def find_port() -> str:
    """The one USB serial port of this machine; :class:`NoDeviceError` naming the ports if there
    is none or more than one."""
    ports = _comports()
    usb = sorted(p.device for p in ports if getattr(p, "vid", None) is not None)
    if len(usb) == 1:
        return usb[0]
    if not usb:
        raise NoDeviceError(f"no USB serial port found (is the board plugged in?); "
                            f"{describe_ports()}; pass --port PORT (or --port sim)")
    raise NoDeviceError(f"{len(usb)} USB serial ports found ({', '.join(usb)}); "
                        f"pass --port with the board's")


# -- images ------------------------------------------------------------------------------------

def image_pixels(image, info: InfoReply) -> bytes:
    """The classify payload for ``info``'s device: from an image file (path), an ``[H, W, C]``
    uint8 array in the network's channel order (BGR for the Caffe models), or the raw bytes.

    A file goes through the compiler's preprocessing (:func:`compiler.preprocess.load_image`:
    RGB, bilinear resize to the input size, BGR); the device subtracts the means itself, so the
    host sends the 8-bit BGR pixels in the order of ``info.layout``. Raises
    :class:`compiler.preprocess.ImageError` for a missing or unreadable file.
    """
    import numpy as np

    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if len(data) != info.image_size:
            raise ValueError(f"image payload of {len(data)} bytes; the device takes "
                             f"{info.image_size} ({'x'.join(map(str, info.input_shape))})")
        return data
    if isinstance(image, str | Path):
        from compiler.preprocess import MEAN_BGR, ImageError, load_image

        c, h, w = info.input_shape
        if c != len(MEAN_BGR):
            raise ImageError(f"the device takes {c}-channel images; an image file gives "
                             f"{len(MEAN_BGR)} (BGR)")
        try:
            net = load_image(image, (h, w))
        except FileNotFoundError as e:
            raise ImageError(str(e)) from None
        bgr = net + np.array(MEAN_BGR, dtype=np.int16)[:, None, None]
        image = bgr.astype(np.uint8).transpose(1, 2, 0)
    return image_to_pixels(np.ascontiguousarray(image), info.input_shape, info.layout)


def wire_seconds(n_payload: int, baud: int) -> float:
    """The time a request with ``n_payload`` payload bytes takes on the line at ``baud``
    (worst-case COBS, 10 bits per byte)."""
    return (max_encoded_size(11 + n_payload) + 2) * 10 / baud


def file_sha256(path: str | Path) -> bytes:
    return hashlib.sha256(Path(path).read_bytes()).digest()


# -- results -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClassifyResult:
    """Scores (unsigned integers, class order), the device's cycle count, the host's wall time
    from the first byte sent to the reply, and how many times the request was sent."""
    scores: tuple[int, ...]
    cycles: int
    wall_s: float
    seq: int
    attempts: int = 1
    clk_hz: int = 0
    notes: tuple[str, ...] = field(default=())

    def top(self, k: int = 5) -> list[tuple[int, int]]:
        """The ``k`` best classes as (index, score): highest score first, on ties the lowest
        index first (the golden model's order)."""
        order = sorted(range(len(self.scores)), key=lambda i: (-self.scores[i], i))
        return [(i, self.scores[i]) for i in order[:max(k, 0)]]

    @property
    def device_s(self) -> float | None:
        """The accelerator's time, cycles / clock (None if the clock is unknown)."""
        return self.cycles / self.clk_hz if self.clk_hz else None


# -- the driver --------------------------------------------------------------------------------

class Device:
    """One board behind a :class:`~host.transport.Transport`.

    Timeouts: every read has one. ``info_timeout`` (default 1 s) for an info reply;
    ``timeout`` for a classify reply, counted from the moment the image has been written; by
    default ``COMPUTE_TIMEOUT`` (5 s) plus 1.5 times the image's wire time at ``baud``
    (0.52 s for 227x227x3 at 3 Mbaud), since a socket or USB driver may accept the bytes before
    they are on the line.

    Retries (``retries`` extra attempts, default 2), each with a new sequence number after a
    ``00`` that flushes any partial frame out of the device:

    - ``info`` is idempotent: resent after a timeout, a damaged reply, or a line-level error
      reply (``BAD_CRC``, ``TRUNCATED``, ``OVERSIZED``, ``LINE_ERROR``).
    - ``classify`` is resent only when *no reply at all* came (not one byte), or after a
      line-level error reply (the device dropped the damaged image and sends no result for it,
      docs/protocol.md "Host recovery"), or after ``BUSY`` (waiting ``busy_wait`` seconds, at
      most ``busy_retries`` times). A damaged or unexpected reply is not retried. Every resend
      is reported through ``log`` and listed in :attr:`ClassifyResult.notes`.

    Replies whose sequence number is not the request's are ignored (and counted in the timeout
    message).
    """

    def __init__(self, transport: Transport, *, port: str = "", baud: int = DEFAULT_BAUD,
                 timeout: float | None = None, info_timeout: float = INFO_TIMEOUT,
                 retries: int = RETRIES, busy_retries: int = 2, busy_wait: float = BUSY_WAIT,
                 log: Callable[[str], None] | None = None):
        for name, value in (("info_timeout", info_timeout), ("busy_wait", busy_wait)):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, not {value!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be positive, not {timeout!r}")
        self.transport = transport
        self.port = port
        self.baud = baud
        self.timeout = timeout
        self.info_timeout = info_timeout
        self.retries = retries
        self.busy_retries = busy_retries
        self.busy_wait = busy_wait
        self._log = log or log_warning
        self._parser = FrameParser()
        self._seq = 0
        self._info: InfoReply | None = None
        self.frames_seen = 0  # valid frames received over the device's lifetime

    # -- public API ----------------------------------------------------------------------------

    def close(self) -> None:
        self.transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def info(self, *, refresh: bool = False) -> InfoReply:
        """The device's info reply (cached; ``refresh`` asks again)."""
        if self._info is None or refresh:
            notes: list[str] = []
            reply, _ = self._transact(InfoRequest(), InfoReply, self.info_timeout,
                                      retry_damaged=True, notes=notes)
            self._info = reply
        return self._info

    def check_model(self, local_hashes: Iterable[bytes] | bytes, what: str = "local model"
                    ) -> bool:
        """Compare the device's model hash with the local model's; raise
        :class:`ModelMismatchError` naming both. Returns False (and logs) if the device does
        not know its hash (all zeros), True if it matches."""
        if isinstance(local_hashes, bytes):
            local_hashes = (local_hashes,)
        local = tuple(local_hashes)
        device = self.info().model_hash
        if not any(device):
            self._log("the device does not report a model hash (all zeros); not checked")
            return False
        if device in local:
            return True
        raise ModelMismatchError(
            f"the device runs model {device.hex()}, the {what} is "
            f"{' or '.join(h.hex() for h in local)}: program the board with this model's "
            f"weights or pass --model with the device's", device_hash=device, local_hashes=local)

    def classify(self, image, *, progress: Callable[[int, int], None] | None = None,
                 timeout: float | None = None) -> ClassifyResult:
        """Classify an image (file path, ``[H, W, C]`` uint8 array, or raw payload bytes;
        :func:`image_pixels`). ``progress(sent, total)`` is called as the image goes out."""
        info = self.info()
        pixels = image_pixels(image, info)
        if timeout is None:
            timeout = self.timeout
        if timeout is None:
            timeout = COMPUTE_TIMEOUT + 1.5 * wire_seconds(len(pixels), self.baud)
        notes: list[str] = []
        start = time.monotonic()
        reply, (seq, attempts) = self._transact(
            ClassifyRequest(pixels), ClassifyReply, timeout, retry_damaged=False, notes=notes,
            progress=progress)
        wall = time.monotonic() - start
        if len(reply.scores) != info.num_classes:
            raise ReplyError(f"the device sent {len(reply.scores)} scores, its info reply "
                             f"announces {info.num_classes} classes")
        return ClassifyResult(scores=reply.scores, cycles=reply.cycles, wall_s=wall, seq=seq,
                              attempts=attempts, clk_hz=info.clk_hz, notes=tuple(notes))

    # -- internals -----------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = self._seq % 255 + 1
        return self._seq

    def _note(self, notes: list[str], message: str) -> None:
        notes.append(message)
        self._log(message)

    def _send(self, message: Message, seq: int, progress) -> None:
        data = encode_message(message, seq)
        try:
            if progress is None:
                self.transport.write(data)
                return
            total = len(data)
            progress(0, total)
            for at in range(0, total, CHUNK):
                self.transport.write(data[at:at + CHUNK])
                progress(min(at + CHUNK, total), total)
        except TransportClosed as e:
            raise NoDeviceError(f"lost the connection to {self._where()}: {e}") from e

    def _where(self) -> str:
        return f"the device on {self.port}" if self.port else "the device"

    def _transact(self, message: Message, expect: type[Message], timeout: float, *,
                  retry_damaged: bool, notes: list[str], progress=None):
        """Send ``message`` and return (reply, (seq, attempts)) following the retry rules."""
        name = message.TYPE.name.lower()
        attempts = 0
        busy_left = self.busy_retries
        line_left = self.retries
        silent_left = self.retries
        while True:
            attempts += 1
            seq = self._next_seq()
            self._send(message, seq, progress)
            try:
                frame = self._await(seq, timeout)
            except DeviceTimeoutError as e:
                if silent_left > 0 and (e.silent or retry_damaged):
                    silent_left -= 1
                    what = "no reply" if e.silent else "no reply with this seq"
                    self._note(notes, f"{what} to {name} (seq {seq}) within {timeout:g} s; "
                                      f"resending")
                    self._flush()
                    continue
                raise e from None
            except GarbageError as e:
                if retry_damaged and silent_left > 0:
                    silent_left -= 1
                    self._note(notes, f"no valid reply to {name} (seq {seq}): {e.args[0]}; "
                                      f"resending")
                    self._flush()
                    continue
                raise e from None
            try:
                reply = decode_message(frame)
            except ProtocolError as e:
                raise ReplyError(f"malformed {MsgType(frame.type).name} reply to {name}: {e}"
                                 ) from None
            if isinstance(reply, ErrorReply):
                code = reply.code
                if code == ErrorCode.BUSY:
                    if busy_left > 0:
                        busy_left -= 1
                        self._note(notes, f"device busy (seq {seq}); waiting "
                                          f"{self.busy_wait:g} s and resending")
                        time.sleep(self.busy_wait)
                        continue
                    raise DeviceBusyError(reply, "the device is still classifying another "
                                                 "image (another program using the port?); "
                                                 "try again later") from None
                if code in _LINE_CODES and line_left > 0:
                    line_left -= 1
                    self._note(notes, f"device reports {code.name} for {name} (seq {seq}): "
                                      f"the request was damaged on the line; resending")
                    continue
                raise DeviceReplyError(reply, _hint(code, self.baud)) from None
            if not isinstance(reply, expect):
                raise ReplyError(f"the device answered {name} (seq {seq}) with "
                                 f"{type(reply).__name__}, expected {expect.__name__}")
            return reply, (seq, attempts)

    def _flush(self) -> None:
        try:
            self.transport.write(b"\x00")
        except TransportClosed as e:
            raise NoDeviceError(f"lost the connection to {self._where()}: {e}") from e

    def _await(self, seq: int, timeout: float) -> Frame:
        """The next valid frame with sequence number ``seq``; other frames are ignored."""
        deadline = time.monotonic() + timeout
        received = 0
        ignored: list[int] = []
        errors: list[ProtocolError] = []
        while True:
            while True:
                try:
                    frame = self._parser.pop()
                except ProtocolError as e:
                    errors.append(e)
                    continue
                if frame is None:
                    break
                self.frames_seen += 1
                if frame.seq == seq:
                    return frame
                ignored.append(frame.seq)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = self.transport.read(4096, left)
            except TransportClosed as e:
                raise NoDeviceError(f"lost the connection to {self._where()}: {e}") from e
            received += len(data)
            self._parser.feed(data)
        if received == 0:
            hint = ("wrong port, board not programmed, or the board is still computing (raise "
                    "--timeout)" if self.frames_seen else
                    f"is the board programmed with the accelerator, is this its port, and is "
                    f"the baud rate right (--baud {self.baud})?")
            raise DeviceTimeoutError(f"no reply from {self._where()} within {timeout:g} s "
                                     f"(not a single byte): {hint}")
        if errors and not ignored:
            hint = (f"the reply was damaged on the line: check the cable (and --baud, now "
                    f"{self.baud})" if self.frames_seen else
                    f"wrong baud rate (--baud, now {self.baud}; the board's is "
                    f"{DEFAULT_BAUD}), or another device on this port?")
            raise GarbageError(
                f"{received} bytes from {self._where()} within {timeout:g} s but no valid "
                f"frame ({len(errors)} bad, last: {errors[-1]}): {hint}")
        raise DeviceTimeoutError(
            f"no reply with seq {seq} from {self._where()} within {timeout:g} s; "
            f"{len(ignored)} frame(s) with other seq ignored ({sorted(set(ignored))[:8]}), "
            f"{len(errors)} damaged", silent=False)


def _hint(code, baud) -> str:
    if code in _LINE_CODES:
        return f"the line damages frames: check the cable and the baud rate (--baud {baud})"
    if code in (ErrorCode.BAD_LENGTH, ErrorCode.UNKNOWN_TYPE, ErrorCode.BAD_VERSION):
        return "the device does not speak this host's protocol or image size (see `host info`)"
    return ""


def log_warning(message: str) -> None:
    log.warning(message)


# -- opening -----------------------------------------------------------------------------------

def _open_serial(port: str, baud: int) -> SerialTransport:
    try:
        return SerialTransport(port, baud)
    except TransportClosed as e:
        cause = e.__cause__ or e
        raise NoDeviceError(f"cannot open serial port {port!r} ({cause}); "
                            f"{describe_ports()}") from None


@contextlib.contextmanager
def open_device(port: str | None = None, baud: int = DEFAULT_BAUD, *,
                model: str | Path | None = None, config: str = "default",
                **device_args) -> Iterator[Device]:
    """A :class:`Device` on ``port``: a serial device or pyserial URL, ``None`` for the one USB
    serial port of this machine, or ``"sim"`` for a simulated board (:class:`sim.board.SimBoard`
    with ``config`` and ``model``, whose reply timeout defaults to ``SIM_TIMEOUT``)."""
    if port is None:
        port = find_port()
    if port != "sim":
        with Device(_open_serial(port, baud), port=port, baud=baud, **device_args) as dev:
            yield dev
        return
    try:
        from sim.board import SimBoard
    except ImportError as e:
        raise NoDeviceError(f"--port sim needs the simulated board (sim/board.py), which "
                            f"cannot be imported: {e}") from None
    try:
        board = SimBoard(config=config, model=None if model is None else str(model))
        board.__enter__()
    except Exception as e:  # the simulator's own errors: report them as one line
        raise NoDeviceError(f"cannot start the simulated board: {type(e).__name__}: {e}"
                            ) from e
    try:
        device_args.setdefault("timeout", SIM_TIMEOUT)
        with Device(_open_serial(board.url, baud), port=f"sim ({board.url})", baud=baud,
                    **device_args) as dev:
            yield dev
    finally:
        board.__exit__(None, None, None)
