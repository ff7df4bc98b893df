"""The host link wire protocol (``docs/protocol.md``): frames, COBS, CRC-32 and messages.

Pure Python, no Amaranth: the host driver uses it to talk to the board, the tests use it as the
reference for the gateware in ``hw/link.py``, and the gateware takes its wire constants (version,
message types, error codes and reasons) from here so that the two sides cannot drift apart.

A frame on the wire is ``00 | COBS(body) | 00`` with ``body = header | payload | crc32`` and
``header = version u8 | type u8 | seq u8 | length u32le``; see ``docs/protocol.md``.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

__all__ = [
    "VERSION", "DELIMITER", "HEADER_SIZE", "CRC_SIZE", "MIN_BODY_SIZE", "DEFAULT_MAX_PAYLOAD",
    "CRC32_RESIDUE", "MODEL_HASH_SIZE",
    "MsgType", "ErrorCode", "Layout", "ERROR_REASONS",
    "crc32", "cobs_encode", "cobs_decode", "max_encoded_size",
    "ProtocolError", "TruncatedFrameError", "OversizedFrameError", "CRCError", "VersionError",
    "UnknownTypeError", "BadLengthError", "DeviceError",
    "Frame", "Message", "InfoRequest", "ClassifyRequest", "InfoReply", "ClassifyReply",
    "ErrorReply", "MESSAGE_CLASSES",
    "encode_body", "decode_body", "encode_frame", "encode_message", "decode_message",
    "image_to_pixels", "FrameParser",
]

#: protocol version carried in every frame header and in the info reply
VERSION = 1
#: the COBS frame delimiter
DELIMITER = 0x00
#: version, type, seq, length (u32 little-endian)
HEADER_SIZE = 7
CRC_SIZE = 4
MIN_BODY_SIZE = HEADER_SIZE + CRC_SIZE
#: the largest payload the host parser accepts unless told otherwise (replies are a few kB)
DEFAULT_MAX_PAYLOAD = 1 << 20
#: CRC-32 shift register (before the final inversion) after a body *including* its CRC field
CRC32_RESIDUE = 0xDEBB20E3
MODEL_HASH_SIZE = 32


class MsgType(enum.IntEnum):
    """Message type byte. A reply's type is its request's type with bit 7 set; errors are 0xFE."""
    INFO = 0x01
    CLASSIFY = 0x02
    INFO_REPLY = 0x81
    CLASSIFY_REPLY = 0x82
    ERROR = 0xFE


class ErrorCode(enum.IntEnum):
    """The ``code`` of an error reply, in the order the device checks them (docs/protocol.md)."""
    BAD_CRC = 1
    TRUNCATED = 2
    OVERSIZED = 3
    UNKNOWN_TYPE = 4
    BAD_LENGTH = 5
    BUSY = 6
    BAD_VERSION = 7
    LINE_ERROR = 8


#: the reason string the device sends with each error code (served from a ROM in the gateware)
ERROR_REASONS: dict[ErrorCode, str] = {
    ErrorCode.BAD_CRC: "bad CRC",
    ErrorCode.TRUNCATED: "truncated frame",
    ErrorCode.OVERSIZED: "oversized frame",
    ErrorCode.UNKNOWN_TYPE: "unknown message type",
    ErrorCode.BAD_LENGTH: "bad payload length for this message type",
    ErrorCode.BUSY: "busy: a classify request is in progress",
    ErrorCode.BAD_VERSION: "unsupported protocol version",
    ErrorCode.LINE_ERROR: "UART framing error or receive overrun",
}


class Layout(enum.IntEnum):
    """Order of the pixels of a classify request."""
    #: row by row, pixel by pixel, the channels of a pixel together (what image files hold)
    HWC = 0
    #: channel by channel, each a row-major plane
    CHW = 1


# -- CRC and COBS ------------------------------------------------------------------------------

def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC (zlib's): poly 0x04C11DB7 reflected, init and xorout 0xFFFFFFFF.

    The check value, ``crc32(b"123456789")``, is 0xCBF43926.
    """
    return zlib.crc32(data) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing without delimiters; the result contains no zero byte.

    Each zero-terminated group becomes ``len+1`` followed by its bytes; a group longer than 254
    bytes is split into ``0xFF`` blocks of 254 bytes that carry no implied zero. The final group
    has no zero after it; when it is a non-empty multiple of 254 bytes no empty block follows
    (the same output as Cheshire and Baker's reference encoder).
    """
    out = bytearray()
    groups = bytes(data).split(b"\x00")
    for i, group in enumerate(groups):
        final = i == len(groups) - 1
        full, rest = divmod(len(group), 254)
        for k in range(full):
            out.append(0xFF)
            out += group[254 * k: 254 * (k + 1)]
        if rest or not final or not full:
            out.append(rest + 1)
            out += group[254 * full:]
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Undo :func:`cobs_encode`. Raises :class:`TruncatedFrameError` for a block cut short and
    :class:`ProtocolError` for a zero byte (a delimiter cannot be inside a frame)."""
    data = bytes(data)
    out = bytearray()
    i = 0
    while i < len(data):
        code = data[i]
        if code == 0:
            raise ProtocolError(f"zero byte at offset {i} inside a COBS-encoded frame")
        end = i + code
        if end > len(data):
            raise TruncatedFrameError(
                f"COBS block at offset {i} (code 0x{code:02x}) needs {code - 1} bytes, "
                f"only {len(data) - i - 1} follow", expected=None, received=None)
        block = data[i + 1:end]
        if 0 in block:
            raise ProtocolError(f"zero byte at offset {i + 1 + block.index(0)} inside a "
                                f"COBS-encoded frame")
        out += block
        i = end
        if code != 0xFF and i < len(data):
            out.append(0)
    return bytes(out)


def max_encoded_size(body_size: int) -> int:
    """The longest COBS encoding of a body of ``body_size`` bytes (delimiters excluded)."""
    return body_size + body_size // 254 + 1


# -- errors ------------------------------------------------------------------------------------

class ProtocolError(Exception):
    """A frame or message that breaks docs/protocol.md. The stream parser drops the frame and
    carries on with the next one, so a caller may log the error and keep reading."""


class TruncatedFrameError(ProtocolError):
    """The frame ended early: a COBS block was cut short, or the body is shorter than its header
    plus the declared payload plus the CRC. ``expected``/``received`` are body sizes in bytes
    (``None`` where not known)."""

    def __init__(self, message: str, *, expected: int | None, received: int | None):
        super().__init__(message)
        self.expected = expected
        self.received = received


class OversizedFrameError(ProtocolError):
    """The frame is longer than allowed: its declared payload length exceeds ``limit``, or it
    holds more bytes than declared. ``size`` is the offending size, ``limit`` the allowed one."""

    def __init__(self, message: str, *, size: int, limit: int):
        super().__init__(message)
        self.size = size
        self.limit = limit


class CRCError(ProtocolError):
    """The CRC field does not match the header and payload."""

    def __init__(self, message: str, *, received: int, computed: int):
        super().__init__(message)
        self.received = received
        self.computed = computed


class VersionError(ProtocolError):
    """The frame's protocol version is not :data:`VERSION`."""

    def __init__(self, message: str, *, version: int):
        super().__init__(message)
        self.version = version


class UnknownTypeError(ProtocolError):
    """The message type byte names no message of this protocol version."""

    def __init__(self, message: str, *, type: int):
        super().__init__(message)
        self.type = type


class BadLengthError(ProtocolError):
    """A payload whose length (or content) does not fit its message type."""

    def __init__(self, message: str, *, type: int, length: int):
        super().__init__(message)
        self.type = type
        self.length = length


class DeviceError(Exception):
    """The device answered a request with an error reply (see :meth:`ErrorReply.exception`)."""

    def __init__(self, reply: ErrorReply):
        code = reply.code
        name = code.name if isinstance(code, ErrorCode) else f"code {code}"
        super().__init__(f"device error {name}: {reply.reason!r} (request type "
                         f"0x{reply.request_type:02x}, detail {reply.detail})")
        self.reply = reply


# -- frames ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """One decoded frame: the header fields and the raw payload."""
    type: int
    seq: int
    payload: bytes = b""
    version: int = VERSION

    def __post_init__(self):
        for name in ("type", "seq", "version"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFF:
                raise ValueError(f"Frame {name} must be an integer in 0..255, not {value!r}")
        if not isinstance(self.payload, bytes):
            raise TypeError(f"Frame payload must be bytes, not {type(self.payload).__name__}")
        if len(self.payload) > 0xFFFFFFFF:
            raise ValueError(f"Frame payload of {len(self.payload)} bytes does not fit the "
                             f"32-bit length field")


def encode_body(frame: Frame) -> bytes:
    """Header, payload and CRC-32 (little-endian) of a frame, before COBS."""
    head = struct.pack("<BBBI", frame.version, frame.type, frame.seq, len(frame.payload))
    body = head + frame.payload
    return body + struct.pack("<I", crc32(body))


def decode_body(body: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Frame:
    """Check a COBS-decoded body and split it into a :class:`Frame`.

    The checks run in the device's order: header present, declared length within
    ``max_payload``, body not shorter then not longer than declared, CRC, version, type.
    """
    if len(body) < HEADER_SIZE:
        raise TruncatedFrameError(f"frame body of {len(body)} bytes is shorter than the "
                                  f"{HEADER_SIZE}-byte header", expected=MIN_BODY_SIZE,
                                  received=len(body))
    version, mtype, seq, length = struct.unpack_from("<BBBI", body)
    if length > max_payload:
        raise OversizedFrameError(f"declared payload length {length} exceeds the limit of "
                                  f"{max_payload} bytes", size=length, limit=max_payload)
    expected = MIN_BODY_SIZE + length
    if len(body) < expected:
        raise TruncatedFrameError(f"frame body of {len(body)} bytes is shorter than the "
                                  f"{expected} bytes its header declares (payload length "
                                  f"{length})", expected=expected, received=len(body))
    if len(body) > expected:
        raise OversizedFrameError(f"frame body of {len(body)} bytes is longer than the "
                                  f"{expected} bytes its header declares (payload length "
                                  f"{length})", size=len(body), limit=expected)
    (received,) = struct.unpack_from("<I", body, expected - CRC_SIZE)
    computed = crc32(body[:expected - CRC_SIZE])
    if received != computed:
        raise CRCError(f"frame CRC is 0x{received:08x}, the header and payload give "
                       f"0x{computed:08x}", received=received, computed=computed)
    if version != VERSION:
        raise VersionError(f"frame has protocol version {version}, expected {VERSION}",
                           version=version)
    if mtype not in MsgType._value2member_map_:
        raise UnknownTypeError(f"unknown message type 0x{mtype:02x}; expected one of "
                               f"{', '.join(f'0x{t:02x}' for t in MsgType)}", type=mtype)
    return Frame(type=mtype, seq=seq, payload=body[HEADER_SIZE:expected - CRC_SIZE],
                 version=version)


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of a frame: a delimiter, the COBS-encoded body and a delimiter."""
    return b"\x00" + cobs_encode(encode_body(frame)) + b"\x00"


# -- messages ----------------------------------------------------------------------------------

class Message:
    """Base of the message classes: each knows its type byte and its payload encoding."""
    TYPE: ClassVar[MsgType]

    def payload(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def from_payload(cls, payload: bytes) -> Message:
        raise NotImplementedError

    @classmethod
    def _bad_length(cls, payload: bytes, expected: str) -> BadLengthError:
        return BadLengthError(f"{cls.__name__} payload of {len(payload)} bytes; expected "
                              f"{expected}", type=int(cls.TYPE), length=len(payload))


@dataclass(frozen=True)
class InfoRequest(Message):
    """Ask the device what it is. Empty payload."""
    TYPE: ClassVar[MsgType] = MsgType.INFO

    def payload(self) -> bytes:
        return b""

    @classmethod
    def from_payload(cls, payload: bytes) -> InfoRequest:
        if payload:
            raise cls._bad_length(payload, "0")
        return cls()


@dataclass(frozen=True)
class ClassifyRequest(Message):
    """Classify one image: one unsigned byte per pixel value, in the device's layout order
    (build them with :func:`image_to_pixels`)."""
    TYPE: ClassVar[MsgType] = MsgType.CLASSIFY
    pixels: bytes

    def __post_init__(self):
        if not isinstance(self.pixels, bytes):
            raise TypeError(f"ClassifyRequest pixels must be bytes, not "
                            f"{type(self.pixels).__name__}")
        if not self.pixels:
            raise ValueError("ClassifyRequest needs at least one pixel")

    def payload(self) -> bytes:
        return self.pixels

    @classmethod
    def from_payload(cls, payload: bytes) -> ClassifyRequest:
        if not payload:
            raise cls._bad_length(payload, "at least 1 (C*H*W pixels)")
        return cls(pixels=bytes(payload))


_INFO_FIXED = struct.Struct(f"<BBHHHHII{MODEL_HASH_SIZE}sB")


@dataclass(frozen=True)
class InfoReply(Message):
    """What the device is: the answer to :class:`InfoRequest` (layout in docs/protocol.md)."""
    TYPE: ClassVar[MsgType] = MsgType.INFO_REPLY
    config_name: str
    model_hash: bytes
    clk_hz: int
    uart_baud: int
    input_shape: tuple[int, int, int]
    num_classes: int
    layout: Layout = Layout.HWC
    protocol_version: int = VERSION

    def __post_init__(self):
        name = self.config_name.encode("utf-8")
        if len(name) > 255:
            raise ValueError(f"config name {self.config_name!r} is longer than 255 bytes")
        if not isinstance(self.model_hash, bytes) or len(self.model_hash) != MODEL_HASH_SIZE:
            raise ValueError(f"model hash must be {MODEL_HASH_SIZE} bytes, not "
                             f"{self.model_hash!r}")
        shape = tuple(self.input_shape)
        if len(shape) != 3 or not all(isinstance(d, int) and 0 < d <= 0xFFFF for d in shape):
            raise ValueError(f"input shape must be (C, H, W) of integers in 1..65535, not "
                             f"{self.input_shape!r}")
        object.__setattr__(self, "input_shape", shape)
        if not isinstance(self.num_classes, int) or not 0 < self.num_classes <= 0xFFFF:
            raise ValueError(f"number of classes must be in 1..65535, not {self.num_classes!r}")
        for name_, value in (("clk_hz", self.clk_hz), ("uart_baud", self.uart_baud)):
            if not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name_} must be an integer in 0..2**32-1, not {value!r}")
        object.__setattr__(self, "layout", Layout(self.layout))

    def payload(self) -> bytes:
        name = self.config_name.encode("utf-8")
        c, h, w = self.input_shape
        return _INFO_FIXED.pack(self.protocol_version, self.layout, c, h, w, self.num_classes,
                                self.clk_hz, self.uart_baud, self.model_hash, len(name)) + name

    @classmethod
    def from_payload(cls, payload: bytes) -> InfoReply:
        if len(payload) < _INFO_FIXED.size:
            raise cls._bad_length(payload, f"at least {_INFO_FIXED.size}")
        (version, layout, c, h, w, classes, clk_hz, baud, model_hash,
         name_len) = _INFO_FIXED.unpack_from(payload)
        if len(payload) != _INFO_FIXED.size + name_len:
            raise cls._bad_length(payload, f"{_INFO_FIXED.size + name_len} (name of "
                                  f"{name_len} bytes)")
        try:
            return cls(config_name=payload[_INFO_FIXED.size:].decode("utf-8"),
                       model_hash=model_hash, clk_hz=clk_hz, uart_baud=baud,
                       input_shape=(c, h, w), num_classes=classes, layout=Layout(layout),
                       protocol_version=version)
        except ValueError as e:
            raise BadLengthError(f"malformed InfoReply payload: {e}", type=int(cls.TYPE),
                                 length=len(payload)) from e

    @property
    def image_size(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


@dataclass(frozen=True)
class ClassifyReply(Message):
    """The answer to :class:`ClassifyRequest`: unsigned 32-bit class scores and the
    accelerator's cycle count (unsigned 64-bit)."""
    TYPE: ClassVar[MsgType] = MsgType.CLASSIFY_REPLY
    scores: tuple[int, ...]
    cycles: int

    def __post_init__(self):
        scores = tuple(self.scores)
        if not scores or not all(isinstance(s, int) and 0 <= s <= 0xFFFFFFFF for s in scores):
            raise ValueError("scores must be a non-empty sequence of unsigned 32-bit integers")
        object.__setattr__(self, "scores", scores)
        if not isinstance(self.cycles, int) or not 0 <= self.cycles < 1 << 64:
            raise ValueError(f"cycles must be an unsigned 64-bit integer, not {self.cycles!r}")

    def payload(self) -> bytes:
        return struct.pack(f"<{len(self.scores)}IQ", *self.scores, self.cycles)

    @classmethod
    def from_payload(cls, payload: bytes) -> ClassifyReply:
        if len(payload) < 12 or len(payload) % 4:
            raise cls._bad_length(payload, "4*N + 8 with N >= 1")
        n = (len(payload) - 8) // 4
        *scores, cycles = struct.unpack(f"<{n}IQ", payload)
        return cls(scores=tuple(scores), cycles=cycles)


@dataclass(frozen=True)
class ErrorReply(Message):
    """The device's answer to a request it could not carry out."""
    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: ErrorCode | int
    request_type: int = 0
    detail: int = 0
    reason: str = field(default="")

    def __post_init__(self):
        if not isinstance(self.code, int) or not 0 <= self.code <= 0xFF:
            raise ValueError(f"error code must be an integer in 0..255, not {self.code!r}")
        if self.code in ErrorCode._value2member_map_:
            object.__setattr__(self, "code", ErrorCode(self.code))
        if not isinstance(self.request_type, int) or not 0 <= self.request_type <= 0xFF:
            raise ValueError(f"request type must be in 0..255, not {self.request_type!r}")
        if not isinstance(self.detail, int) or not 0 <= self.detail <= 0xFFFFFFFF:
            raise ValueError(f"detail must be an unsigned 32-bit integer, not {self.detail!r}")

    def payload(self) -> bytes:
        return (struct.pack("<BBI", self.code, self.request_type, self.detail)
                + self.reason.encode("utf-8"))

    @classmethod
    def from_payload(cls, payload: bytes) -> ErrorReply:
        if len(payload) < 6:
            raise cls._bad_length(payload, "at least 6")
        code, request_type, detail = struct.unpack_from("<BBI", payload)
        return cls(code=code, request_type=request_type, detail=detail,
                   reason=payload[6:].decode("utf-8", errors="replace"))

    def exception(self) -> DeviceError:
        return DeviceError(self)


MESSAGE_CLASSES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls
    for cls in (InfoRequest, ClassifyRequest, InfoReply, ClassifyReply, ErrorReply)
}


def encode_message(message: Message, seq: int) -> bytes:
    """The wire bytes (delimiters included) of ``message`` with sequence number ``seq``."""
    if not isinstance(message, Message):
        raise TypeError(f"expected a Message, not {type(message).__name__}")
    return encode_frame(Frame(type=int(message.TYPE), seq=seq, payload=message.payload()))


def decode_message(frame: Frame) -> Message:
    """The message a checked frame carries; :class:`BadLengthError` if its payload does not
    fit its type."""
    try:
        cls = MESSAGE_CLASSES[MsgType(frame.type)]
    except ValueError:
        raise UnknownTypeError(f"unknown message type 0x{frame.type:02x}",
                               type=frame.type) from None
    return cls.from_payload(frame.payload)


def image_to_pixels(image, shape: Sequence[int], layout: Layout = Layout.HWC) -> bytes:
    """The classify payload of an ``[H, W, C]`` unsigned 8-bit image (numpy array or anything
    with ``shape``, ``dtype`` and ``transpose``) for a device whose info reply gives
    ``shape = (C, H, W)`` and ``layout``."""
    c, h, w = shape
    if getattr(image, "shape", None) != (h, w, c):
        raise ValueError(f"image must have shape (H, W, C) = {(h, w, c)}, not "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    if str(getattr(image, "dtype", "")) != "uint8":
        raise TypeError(f"image must hold uint8 pixels, not {getattr(image, 'dtype', None)}")
    if Layout(layout) == Layout.CHW:
        image = image.transpose(2, 0, 1)
    return image.tobytes(order="C")


# -- streaming parser --------------------------------------------------------------------------

class FrameParser:
    """Split a byte stream into frames and check them, resynchronising on every delimiter.

    :meth:`feed` bytes as they arrive, then call :meth:`pop` until it returns ``None``. ``pop``
    returns the next good :class:`Frame` or raises the :class:`ProtocolError` that describes the
    next bad one; the bad frame is consumed either way, so the caller may log the error and call
    ``pop`` again. Bytes before the first delimiter count as a (most likely bad) frame. A
    partial frame that grows beyond the largest legal encoding of ``max_payload`` is dropped
    with :class:`OversizedFrameError` and the bytes up to the next delimiter are discarded, so
    garbage cannot make the buffer grow without bound.
    """

    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD):
        if not isinstance(max_payload, int) or max_payload < 0:
            raise ValueError(f"max_payload must be a non-negative integer, not {max_payload!r}")
        self._max_payload = max_payload
        self._max_chunk = max_encoded_size(MIN_BODY_SIZE + max_payload)
        self._buffer = bytearray()
        self._discarding = False
        self._pending: list[Frame | ProtocolError] = []

    @property
    def max_payload(self) -> int:
        return self._max_payload

    def feed(self, data: bytes) -> None:
        """Add received bytes; complete frames become available to :meth:`pop`."""
        self._buffer += data
        while True:
            end = self._buffer.find(0)
            if end < 0:
                break
            chunk = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._discarding:
                self._discarding = False
            elif len(chunk) > self._max_chunk:
                self._pending.append(self._too_long(len(chunk)))
            elif chunk:
                self._pending.append(self._parse(chunk))
        if not self._discarding and len(self._buffer) > self._max_chunk:
            self._pending.append(self._too_long(len(self._buffer)))
            self._buffer.clear()
            self._discarding = True
        elif self._discarding:
            self._buffer.clear()

    def pop(self) -> Frame | None:
        """The next complete frame, ``None`` if there is none yet; raises for a bad frame."""
        if not self._pending:
            return None
        item = self._pending.pop(0)
        if isinstance(item, ProtocolError):
            raise item
        return item

    def _too_long(self, size: int) -> OversizedFrameError:
        return OversizedFrameError(
            f"{size} bytes without a delimiter: longer than the {self._max_chunk}-byte encoding "
            f"of a frame with the largest allowed payload ({self._max_payload} bytes)",
            size=size, limit=self._max_chunk)

    def _parse(self, chunk: bytes) -> Frame | ProtocolError:
        try:
            return decode_body(cobs_decode(chunk), max_payload=self._max_payload)
        except ProtocolError as e:
            return e
