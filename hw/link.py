"""The host link in gateware: frames of ``docs/protocol.md`` between a byte stream and the
accelerator.

- :class:`FrameDecoder`: received bytes -> COBS decode -> CRC-32 check -> tokens (data bytes,
  then one end-of-frame token with the frame's status).
- :class:`CRCAppender`, :class:`COBSEncoder` and :class:`FrameEncoder` (the two chained): a frame
  body (header and payload, ``last`` on its final byte) -> CRC-32 appended -> COBS with
  delimiters -> bytes to send.
- :class:`LinkBridge`: parses requests, streams the pixels of a classify request to the
  accelerator, answers ``info`` from a ROM, sends the accelerator's scores and cycle count back,
  and answers every bad request with an error frame.
- :class:`SerialBridge`: a :class:`~hw.uart.UART` in front of a :class:`LinkBridge`.

The wire constants (version, message types, error codes and reasons) come from
:mod:`host.protocol`, the one definition both sides share.
"""

import operator
from collections.abc import Sequence
from functools import reduce

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from host.protocol import (
    CRC32_RESIDUE,
    ERROR_REASONS,
    HEADER_SIZE,
    MIN_BODY_SIZE,
    VERSION,
    ErrorCode,
    InfoReply,
    Layout,
    MsgType,
    ProtocolError,
)
from hw.config import AccelConfig
from hw.skid import RegisterSlice
from hw.uart import UART, RxByte, resolve_divisor

__all__ = [
    "Token", "BodyByte", "Score", "pixel_layout", "crc32_byte",
    "FrameDecoder", "CRCAppender", "COBSEncoder", "FrameEncoder", "LinkBridge", "SerialBridge",
]

#: Output of :class:`FrameDecoder`. ``end = 0``: ``data`` is the next body byte. ``end = 1``: the
#: frame is over and ``data`` is 0; ``line_error``: a byte of the frame had a UART framing error
#: or an overrun went before it; ``truncated``: the last COBS block was cut short; ``crc_ok``: the
#: CRC-32 over all body bytes (CRC field included) left the residue of a correct frame.
Token = data.StructLayout({"data": 8, "end": 1, "line_error": 1, "truncated": 1, "crc_ok": 1})

#: A byte of a frame body going into :class:`FrameEncoder`; ``last`` marks the body's final byte.
BodyByte = data.StructLayout({"data": 8, "last": 1})

#: A class score from the accelerator; ``last`` marks the final score.
Score = data.StructLayout({"data": 32, "last": 1})

_CRC_INIT = 0xFFFFFFFF
_CRC_POLY_REFLECTED = 0xEDB88320


def pixel_layout(pixel_width: int, *, signed_data: bool) -> data.StructLayout:
    """The payload of :attr:`LinkBridge.pixels`: one pixel value and ``last``."""
    return data.StructLayout({
        "data": signed(pixel_width) if signed_data else unsigned(pixel_width),
        "last": 1,
    })


def _crc_step(crc: int, byte: int) -> int:
    crc ^= byte
    for _ in range(8):
        crc = (crc >> 1) ^ (_CRC_POLY_REFLECTED if crc & 1 else 0)
    return crc


def _crc_taps() -> list[tuple[list[int], list[int]]]:
    # The byte step is linear over GF(2): find which register and data bits feed each output bit.
    taps = []
    for out in range(32):
        reg = [k for k in range(32) if _crc_step(1 << k, 0) >> out & 1]
        dat = [k for k in range(8) if _crc_step(0, 1 << k) >> out & 1]
        taps.append((reg, dat))
    return taps


_CRC_TAPS = _crc_taps()


def crc32_byte(crc, byte):
    """The CRC-32 shift register (reflected, no final inversion) after one more ``byte``, as an
    XOR network; matches :func:`host.protocol.crc32` with init and xorout 0xFFFFFFFF."""
    return Cat(*(reduce(operator.xor, [crc[k] for k in reg] + [byte[k] for k in dat])
                 for reg, dat in _CRC_TAPS))


class _Pipelined(wiring.Component):
    """A link component with a ``pipelined`` form: registers on its long paths, the same bytes
    (:attr:`AccelConfig.fast_pipeline <hw.config.AccelConfig.fast_pipeline>` builds)."""

    def __init__(self, *, pipelined: bool = False):
        self._pipelined = bool(pipelined)
        super().__init__()

    @property
    def pipelined(self) -> bool:
        return self._pipelined


class FrameDecoder(_Pipelined):
    """Received bytes (:data:`~hw.uart.RxByte`) to body tokens (:data:`Token`).

    Each 0x00 byte ends a frame; a frame with no bytes gives no token (so extra delimiters are
    harmless), any other gives its decoded body bytes and then one end token. Bytes with a
    framing error are not decoded (they cannot be trusted to be, or not to be, a delimiter) but
    mark the frame with ``line_error``. ``pipelined``: whether the block is over is a flip-flop
    of its own, not a comparison of the count.
    """

    i: In(stream.Signature(RxByte))
    o: Out(stream.Signature(Token))

    def elaborate(self, platform):
        m = Module()
        left = Signal(8)       # bytes still to come in the current COBS block
        if self._pipelined:
            # the test that decides the token's valid, kept with `left` (see set_left)
            left_zero = Signal(init=1)
        else:
            left_zero = left == 0

        def set_left(value, is_zero):
            m.d.sync += left.eq(value)
            if self._pipelined:
                m.d.sync += left_zero.eq(is_zero)
        max_block = Signal()   # the current block has code 0xFF: no implied zero after it
        zero = Signal()        # an implied zero, emitted only when another block follows
        nonempty = Signal()    # any byte since the last delimiter
        line_error = Signal()
        crc = Signal(32, init=_CRC_INIT)

        byte = self.i.payload.data
        overrun = self.i.payload.overrun
        take = Signal()
        give = Signal()
        m.d.comb += [
            take.eq(self.i.valid & self.i.ready),
            give.eq(self.o.valid & self.o.ready),
            self.o.payload.line_error.eq(line_error | overrun),
            self.o.payload.truncated.eq(~left_zero),
            self.o.payload.crc_ok.eq(crc == CRC32_RESIDUE),
        ]
        with m.If(take & overrun):
            m.d.sync += line_error.eq(1)
        if self._pipelined:
            # the CRC takes each byte a cycle after it is given, and starts again a cycle after
            # the end token (rather than at the delimiter: no byte comes between them): no path
            # from the received byte through `valid` into its 32 flip-flops. The end token waits
            # for the last byte.
            crc_take = Signal()
            crc_byte = Signal(8)
            crc_clear = Signal()
            m.d.sync += [
                crc_take.eq(give & ~self.o.payload.end),
                crc_byte.eq(self.o.payload.data),
                crc_clear.eq(give & self.o.payload.end),
            ]
            with m.If(crc_clear):
                m.d.sync += crc.eq(_CRC_INIT)
            with m.Elif(crc_take):
                m.d.sync += crc.eq(crc32_byte(crc, crc_byte))
        else:
            with m.If(give & ~self.o.payload.end):
                m.d.sync += crc.eq(crc32_byte(crc, self.o.payload.data))

        with m.If(self.i.valid):
            with m.If(self.i.payload.framing_error):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += [line_error.eq(1), nonempty.eq(1)]
            with m.Elif(byte == 0):
                with m.If(nonempty | overrun):
                    m.d.comb += [
                        self.o.valid.eq(1),
                        self.o.payload.end.eq(1),
                        self.i.ready.eq(self.o.ready),
                    ]
                    if self._pipelined:
                        with m.If(crc_take):
                            m.d.comb += [self.o.valid.eq(0), self.i.ready.eq(0)]
                with m.Else():
                    m.d.comb += self.i.ready.eq(1)
                with m.If(take):
                    set_left(0, 1)
                    m.d.sync += [zero.eq(0), nonempty.eq(0), line_error.eq(0)]
                    if not self._pipelined:
                        m.d.sync += crc.eq(_CRC_INIT)
            with m.Elif(left_zero):
                with m.If(zero):
                    m.d.comb += self.o.valid.eq(1)  # data 0
                    with m.If(self.o.ready):
                        m.d.sync += zero.eq(0)
                with m.Else():
                    m.d.comb += self.i.ready.eq(1)
                    set_left(byte - 1, byte == 1)
                    m.d.sync += [
                        max_block.eq(byte == 0xFF),
                        zero.eq(byte == 1),
                        nonempty.eq(1),
                    ]
            with m.Else():
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(byte),
                    self.i.ready.eq(self.o.ready),
                ]
                with m.If(take):
                    set_left(left - 1, left == 1)
                    with m.If(left == 1):
                        m.d.sync += zero.eq(~max_block)
        return m


class CRCAppender(wiring.Component):
    """Passes a body through and appends its CRC-32 (4 bytes, little-endian) after the byte
    marked ``last``; ``last`` of the output marks the final CRC byte."""

    i: In(stream.Signature(BodyByte))
    o: Out(stream.Signature(BodyByte))

    def elaborate(self, platform):
        m = Module()
        crc = Signal(32, init=_CRC_INIT)
        appending = Signal()
        index = Signal(2)

        with m.If(~appending):
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                self.o.payload.data.eq(self.i.payload.data),
                self.i.ready.eq(self.o.ready),
            ]
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += crc.eq(crc32_byte(crc, self.i.payload.data))
                with m.If(self.i.payload.last):
                    m.d.sync += [appending.eq(1), index.eq(0)]
        with m.Else():
            m.d.comb += [
                self.o.valid.eq(1),
                self.o.payload.data.eq((~crc).word_select(index, 8)),
                self.o.payload.last.eq(index == 3),
            ]
            with m.If(self.o.ready):
                m.d.sync += index.eq(index + 1)
                with m.If(index == 3):
                    m.d.sync += [appending.eq(0), crc.eq(_CRC_INIT)]
        return m


class COBSEncoder(_Pipelined):
    """COBS-encodes each body (ending at ``last``) and frames it as ``00 | COBS(body) | 00``.

    The code byte of a block gives the distance to the next zero, so the up to 254 bytes of a
    block wait in a small memory until the block is complete. The output is byte-for-byte that
    of :func:`host.protocol.cobs_encode`. ``pipelined``: whether a block's byte is its last is a
    flip-flop, set a byte ahead.
    """

    i: In(stream.Signature(BodyByte))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = buffer = Memory(shape=8, depth=254, init=[])
        wr = buffer.write_port()
        rd = buffer.read_port()

        count = Signal(range(255))  # bytes in the block being filled or emitted
        index = Signal(range(254))
        code = Signal(8)
        final = Signal()    # the body ends with this block
        trailer = Signal()  # the body ended with a zero: an empty block 01 follows this one
        if self._pipelined:
            last_index = Signal()   # index == count - 1, for the index it is about to have
        else:
            last_index = index == count - 1

        with m.FSM():
            with m.State("START"):
                with m.If(self.i.valid):
                    m.d.comb += self.o.valid.eq(1)  # the leading delimiter
                    with m.If(self.o.ready):
                        m.next = "FILL"
            with m.State("FILL"):
                m.d.comb += self.i.ready.eq(1)
                last = self.i.payload.last
                with m.If(self.i.valid):
                    with m.If(self.i.payload.data != 0):
                        m.d.comb += [
                            wr.en.eq(1),
                            wr.addr.eq(count),
                            wr.data.eq(self.i.payload.data),
                        ]
                        m.d.sync += count.eq(count + 1)
                        with m.If((count == 253) | last):
                            m.d.sync += [code.eq(count + 2), final.eq(last), trailer.eq(0)]
                            m.next = "CODE"
                    with m.Else():
                        m.d.sync += [code.eq(count + 1), final.eq(last), trailer.eq(last)]
                        m.next = "CODE"
            with m.State("CODE"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.eq(code),
                    rd.addr.eq(0),
                ]
                with m.If(self.o.ready):
                    m.d.sync += index.eq(0)
                    if self._pipelined:
                        m.d.sync += last_index.eq(count == 1)
                    with m.If(count == 0):
                        m.next = "NEXT"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.eq(rd.data),
                    rd.addr.eq(index + 1),
                    rd.en.eq(self.o.ready),
                ]
                with m.If(self.o.ready):
                    m.d.sync += index.eq(index + 1)
                    if self._pipelined:
                        m.d.sync += last_index.eq(index + 2 == count)
                    with m.If(last_index):
                        m.next = "NEXT"
            with m.State("NEXT"):
                m.d.sync += count.eq(0)
                with m.If(trailer):
                    m.d.sync += [code.eq(1), trailer.eq(0)]
                    m.next = "CODE"
                with m.Elif(final):
                    m.next = "END"
                with m.Else():
                    m.next = "FILL"
            with m.State("END"):
                m.d.comb += self.o.valid.eq(1)  # the closing delimiter
                with m.If(self.o.ready):
                    m.next = "START"
        return m


class FrameEncoder(_Pipelined):
    """A frame body (header and payload, ``last`` on its final byte) to wire bytes:
    :class:`CRCAppender` then :class:`COBSEncoder`, with ``pipelined`` a register slice between
    them."""

    i: In(stream.Signature(BodyByte))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRCAppender()
        m.submodules.cobs = cobs = COBSEncoder(pipelined=self._pipelined)
        wiring.connect(m, wiring.flipped(self.i), crc.i)
        if self._pipelined:
            # the CRC byte select and the encoder's zero test and FSM are each a path of their own
            m.submodules.slice = body_slice = RegisterSlice(BodyByte)
            wiring.connect(m, producer=crc.o, consumer=body_slice.i)
            wiring.connect(m, producer=body_slice.o, consumer=cobs.i)
        else:
            wiring.connect(m, producer=crc.o, consumer=cobs.i)
        wiring.connect(m, cobs.o, wiring.flipped(self.o))
        return m


class _Job(enum.Enum, shape=2):
    IDLE = 0      # no classify request in progress
    STREAM = 1    # an accepted classify frame is arriving; its pixels go to the accelerator
    OK = 2        # the frame checked out: send the scores when they come
    DISCARD = 3   # the frame was bad: drop the scores, an error reply has been sent


class _Reply(enum.Enum, shape=2):
    INFO = 0
    ERROR = 1
    RESULT = 2


def _check_bridge_args(*, image_shape, n_scores, info, pixel_width, means, layout,
                       pipelined) -> dict:
    """Check the parameters of a :class:`LinkBridge`; return them normalised."""
    shape = tuple(image_shape) if isinstance(image_shape, Sequence) else None
    if (shape is None or len(shape) != 3
            or not all(isinstance(d, int) and 0 < d <= 0xFFFF for d in shape)):
        raise ValueError(f"Image shape must be (C, H, W) of integers in 1..65535, not "
                         f"{image_shape!r}")
    if not isinstance(n_scores, int) or not 0 < n_scores <= 0xFFFF:
        raise ValueError(f"Number of scores must be an integer in 1..65535, not {n_scores!r}")
    if not isinstance(info, bytes | bytearray):
        raise TypeError(f"Info must be the bytes of an info reply payload, not "
                        f"{type(info).__name__}")
    if not isinstance(pixel_width, int) or pixel_width < 1:
        raise ValueError(f"Pixel width must be a positive integer, not {pixel_width!r}")
    try:
        layout = Layout(layout)
    except ValueError:
        raise ValueError(f"Layout must be one of {[x.name for x in Layout]}, not "
                         f"{layout!r}") from None
    if means is None:
        if pixel_width < 8:
            raise ValueError(f"Pixel width must be at least 8 for unsigned 8-bit pixels, not "
                             f"{pixel_width}")
    else:
        means = tuple(means)
        if len(means) != shape[0] or not all(isinstance(v, int) and 0 <= v <= 255
                                             for v in means):
            raise ValueError(f"Means must be {shape[0]} integers in 0..255 (one per channel), "
                             f"not {means!r}")
        lo, hi = -max(means), 255 - min(means)
        if not -(1 << (pixel_width - 1)) <= lo <= hi < 1 << (pixel_width - 1):
            raise ValueError(f"Pixel width {pixel_width} cannot hold the mean-subtracted range "
                             f"{lo}..{hi} as signed values")
    if not isinstance(pipelined, bool):
        raise TypeError(f"Pipelined must be a bool, not {pipelined!r}")
    try:
        announced = InfoReply.from_payload(bytes(info))
    except ProtocolError as e:
        raise ValueError(f"Info is not a valid info reply payload: {e}") from None
    if (announced.input_shape, announced.num_classes, announced.layout) != \
            (shape, n_scores, layout):
        raise ValueError(f"Info announces input shape {announced.input_shape}, "
                         f"{announced.num_classes} classes and layout {announced.layout.name}, "
                         f"but the bridge has {shape}, {n_scores} and {layout.name}")
    return dict(image_shape=shape, n_scores=n_scores, info=bytes(info), pixel_width=pixel_width,
                means=means, layout=layout, pipelined=pipelined)


def _accelerator_ports(pixel_width: int, means) -> dict:
    return {
        "pixels": Out(stream.Signature(pixel_layout(pixel_width, signed_data=means is not None))),
        "scores": In(stream.Signature(Score)),
        "cycles": In(64),
        "busy": Out(1),
    }


class LinkBridge(wiring.Component):
    """Serves the requests of ``docs/protocol.md`` between a byte stream and the accelerator.

    Parameters
    ----------
    image_shape : (C, H, W)
        The accelerator's input; a classify request carries ``C*H*W`` bytes in ``layout`` order.
    n_scores : int
        How many scores the accelerator returns per image (the number of classes).
    info : bytes
        The payload of the info reply (:meth:`host.protocol.InfoReply.payload`), served from a
        ROM; its shape, number of classes and layout must be the bridge's.
    pixel_width : int
        Bits of a pixel on :attr:`pixels`.
    means : sequence of int or None
        Per-channel values (0..255) subtracted from the received 8-bit pixels, giving signed
        pixels; ``None`` passes the pixels on unsigned.
    layout : Layout
        Pixel order on the wire and on :attr:`pixels` (decides which mean applies to a pixel).
    pipelined : bool
        Registers added on the long paths (:attr:`AccelConfig.fast_pipeline
        <hw.config.AccelConfig.fast_pipeline>`): a few cycles more latency, the same bytes on
        the wire. ``False`` keeps the small form the iCE40 fits.

    Ports
    -----
    rx : In stream of :data:`~hw.uart.RxByte`
        Bytes from the host.
    tx : Out stream of 8-bit bytes
        Bytes to the host.
    pixels : Out stream of :func:`pixel_layout`
        The ``C*H*W`` pixels of one image, ``last`` on the final one. They leave as the frame
        arrives, before its CRC is checked: if the frame turns out bad, the bridge completes the
        image with zero pixels, discards the accelerator's scores and sends an error reply.
    scores : In stream of :data:`Score`
        ``n_scores`` scores per image; the bridge counts them (``last`` is not needed).
    cycles : In(64)
        The accelerator's cycle count, sampled as the final score is taken.
    busy : Out(1)
        A classify request is in progress (new ones are answered with ``BUSY``).
    """

    def __init__(self, *, image_shape: Sequence[int], n_scores: int, info: bytes,
                 pixel_width: int = 8, means: Sequence[int] | None = None,
                 layout: Layout = Layout.HWC, pipelined: bool = False):
        args = _check_bridge_args(image_shape=image_shape, n_scores=n_scores, info=info,
                                  pixel_width=pixel_width, means=means, layout=layout,
                                  pipelined=pipelined)
        self._image_shape = args["image_shape"]
        self._n_scores = args["n_scores"]
        self._info = args["info"]
        self._pixel_width = args["pixel_width"]
        self._means = args["means"]
        self._layout = args["layout"]
        self._pipelined = args["pipelined"]
        super().__init__({
            "rx": In(stream.Signature(RxByte)),
            "tx": Out(stream.Signature(8)),
            **_accelerator_ports(self._pixel_width, self._means),
        })

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._image_shape

    @property
    def image_size(self) -> int:
        c, h, w = self._image_shape
        return c * h * w

    @property
    def n_scores(self) -> int:
        return self._n_scores

    @property
    def info(self) -> bytes:
        return self._info

    @property
    def pixel_width(self) -> int:
        return self._pixel_width

    @property
    def means(self) -> tuple[int, ...] | None:
        return self._means

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def pipelined(self) -> bool:
        return self._pipelined

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = decoder = FrameDecoder(pipelined=self._pipelined)
        m.submodules.encoder = encoder = FrameEncoder(pipelined=self._pipelined)
        wiring.connect(m, wiring.flipped(self.rx), decoder.i)
        wiring.connect(m, encoder.o, wiring.flipped(self.tx))

        job = Signal(_Job)
        job_seq = Signal(8)
        m.d.comb += self.busy.eq(job != _Job.IDLE)

        # One reply slot from the receive side to the transmit side (info or error replies;
        # results are announced through `job`).
        slot = Signal()
        slot_error = Signal()
        slot_seq = Signal(8)
        slot_code = Signal(8)
        slot_type = Signal(8)
        slot_detail = Signal(32)

        tokens = decoder.o
        if self._pipelined:
            # the decoder's COBS state decides `valid` from the received byte: a register slice
            # keeps that path out of the request logic's counters and state
            m.submodules.tok_slice = tok_slice = RegisterSlice(Token)
            wiring.connect(m, producer=decoder.o, consumer=tok_slice.i)
            tokens = tok_slice.o
        self._elaborate_receive(m, tokens, job, job_seq, slot, slot_error, slot_seq,
                                slot_code, slot_type, slot_detail)
        # The reply bytes reach the encoder through a one-byte register, which takes a byte only
        # when empty: the transmit side offers a byte every other cycle at most (the UART takes
        # one in thousands). In the cycle after each byte the register is full, and the ROMs
        # read at the new, registered index. So no path runs from the encoder back into the
        # reply index or the ROM addresses, or from the ROMs into the encoder.
        body = stream.Signature(encoder.i.payload.shape()).create()
        held = Signal()
        held_byte = Signal.like(encoder.i.payload)
        m.d.comb += [
            encoder.i.valid.eq(held),
            encoder.i.payload.eq(held_byte),
            body.ready.eq(~held),
        ]
        if self._pipelined:
            # ... and with `pipelined` not in the two cycles after each byte: the ROMs' words
            # are registered once more (_elaborate_transmit)
            cool1, cool2 = Signal(), Signal()
            m.d.sync += [cool1.eq(body.valid & body.ready), cool2.eq(cool1)]
            m.d.comb += body.ready.eq(~held & ~cool1 & ~cool2)
        with m.If(encoder.i.ready):
            m.d.sync += held.eq(0)
        with m.If(body.valid & body.ready):
            m.d.sync += [held.eq(1), held_byte.eq(body.payload)]
        self._elaborate_transmit(m, body, job, job_seq, slot, slot_error, slot_seq,
                                 slot_code, slot_type, slot_detail)
        return m

    def _elaborate_receive(self, m, tok, job, job_seq, slot, slot_error, slot_seq, slot_code,
                           slot_type, slot_detail):
        channels, height, width = self._image_shape
        n_pix = self.image_size
        count_max = 0xFFFFFFFF  # body bytes received; saturates, to report it as a detail
        count = Signal(32)
        version = Signal(8)
        rtype = Signal(8)
        seq = Signal(8)
        length = Signal(32)
        accepted = Signal()
        end_line = Signal()
        end_truncated = Signal()
        end_crc_ok = Signal()

        # -- pixels: forwarded from an accepted frame, or zeros to complete a bad one -----------
        pix_left = Signal(range(n_pix + 1))
        pad = Signal()
        run_len = 1 if self._layout == Layout.HWC else height * width
        channel = Signal(range(max(channels, 2)))
        run = Signal(range(max(run_len, 2)))
        forward = Signal()
        if self._means is None:
            pixel = tok.payload.data
        else:
            means = Array(Const(v, 8) for v in self._means)
            pixel = tok.payload.data - means[channel]

        m.d.comb += self.pixels.payload.last.eq(pix_left == 1)
        with m.If(pad):
            m.d.comb += self.pixels.valid.eq(1)  # data 0
        with m.Elif(forward):
            m.d.comb += [
                self.pixels.valid.eq(tok.valid),
                self.pixels.payload.data.eq(pixel),
            ]
        with m.If(self.pixels.valid & self.pixels.ready):
            m.d.sync += pix_left.eq(pix_left - 1)
            with m.If(pix_left == 1):
                m.d.sync += pad.eq(0)
            with m.If(run == run_len - 1):
                m.d.sync += [run.eq(0), channel.eq(Mux(channel == channels - 1, 0, channel + 1))]
            with m.Else():
                m.d.sync += run.eq(run + 1)

        # -- the status of a finished frame, in the order of docs/protocol.md -----------------
        # (computed from registers into registers: `expected` follows `length`, and the end of a
        # frame waits in CHECK and CHECK2 while the comparisons and then the status register)
        code = Signal(8)
        detail = Signal(32)
        code_r = Signal(8)
        detail_r = Signal(32)
        expected = Signal(34)
        m.d.sync += [expected.eq(length + MIN_BODY_SIZE), code_r.eq(code), detail_r.eq(detail)]

        def fail(error, value):
            m.d.comb += [code.eq(error), detail.eq(value)]

        # the wide comparisons, registered (count, length and expected are final by CHECK)
        short_header = Signal()
        too_long = Signal()
        short_body = Signal()
        long_body = Signal()
        m.d.sync += [short_header.eq(count < HEADER_SIZE), too_long.eq(length > n_pix),
                     short_body.eq(count < expected), long_body.eq(count > expected)]
        with m.If(end_line):
            fail(ErrorCode.LINE_ERROR, count)
        with m.Elif(end_truncated | short_header):
            fail(ErrorCode.TRUNCATED, count)
        with m.Elif(too_long):
            fail(ErrorCode.OVERSIZED, length)
        with m.Elif(short_body):
            fail(ErrorCode.TRUNCATED, count)
        with m.Elif(long_body):
            fail(ErrorCode.OVERSIZED, count)
        with m.Elif(~end_crc_ok):
            fail(ErrorCode.BAD_CRC, count)
        with m.Elif(version != VERSION):
            fail(ErrorCode.BAD_VERSION, version)
        with m.Elif(rtype == MsgType.INFO):
            with m.If(length != 0):
                fail(ErrorCode.BAD_LENGTH, length)
        with m.Elif(rtype == MsgType.CLASSIFY):
            with m.If(length != n_pix):
                fail(ErrorCode.BAD_LENGTH, length)
            with m.Elif(~accepted):
                fail(ErrorCode.BUSY, 0)
        with m.Else():
            fail(ErrorCode.UNKNOWN_TYPE, rtype)

        image_request = (version == VERSION) & (rtype == MsgType.CLASSIFY) & (length == n_pix)
        if self._pipelined:
            # from a flip-flop, a cycle after the header's last byte (HEADER_END)
            image_request_r = Signal()
            m.d.sync += image_request_r.eq(image_request)
            image_request = image_request_r

        # With `pipelined`: in HEADER the count is below HEADER_SIZE, so its low bits name the
        # byte; whether the frame got as far as its type and sequence number is registered (the
        # count is final by CHECK, two cycles before FINISH).
        if self._pipelined:
            header_count = count[:(HEADER_SIZE - 1).bit_length()]
            got_type = Signal()
            got_seq = Signal()
            m.d.sync += [got_type.eq(count > 1), got_seq.eq(count > 2)]
        else:
            header_count, got_type, got_seq = count, count > 1, count > 2

        def take_byte():
            m.d.sync += count.eq(Mux(count == count_max, count, count + 1))

        def take_end():
            m.d.sync += [
                end_line.eq(tok.payload.line_error),
                end_truncated.eq(tok.payload.truncated),
                end_crc_ok.eq(tok.payload.crc_ok),
            ]
            m.next = "CHECK"

        with m.FSM(name="receive"):
            with m.State("HEADER"):
                m.d.comb += tok.ready.eq(1)
                with m.If(tok.valid):
                    with m.If(tok.payload.end):
                        take_end()
                    with m.Else():
                        take_byte()
                        with m.Switch(header_count):
                            with m.Case(0):
                                m.d.sync += version.eq(tok.payload.data)
                            with m.Case(1):
                                m.d.sync += rtype.eq(tok.payload.data)
                            with m.Case(2):
                                m.d.sync += seq.eq(tok.payload.data)
                            for k in range(4):
                                with m.Case(3 + k):
                                    m.d.sync += length.word_select(k, 8).eq(tok.payload.data)
                        with m.If(header_count == HEADER_SIZE - 1):
                            m.next = "HEADER_END" if self._pipelined else "DECIDE"
            if self._pipelined:
                with m.State("HEADER_END"):     # the header's comparisons are registered
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                # Stream the pixels now, check the frame at its end: nothing here can hold an
                # image until its CRC has arrived.
                with m.If(image_request & (job == _Job.IDLE) & ~pad):
                    m.d.sync += [
                        accepted.eq(1),
                        job.eq(_Job.STREAM),
                        job_seq.eq(seq),
                        pix_left.eq(n_pix),
                        channel.eq(0),
                        run.eq(0),
                    ]
                m.next = "BODY"
            with m.State("BODY"):
                m.d.comb += forward.eq(accepted & (pix_left != 0) & ~tok.payload.end)
                with m.If(forward):
                    m.d.comb += tok.ready.eq(self.pixels.ready)
                with m.Else():
                    m.d.comb += tok.ready.eq(1)
                with m.If(tok.valid & tok.ready):
                    with m.If(tok.payload.end):
                        take_end()
                    with m.Else():
                        take_byte()
            with m.State("CHECK"):      # the comparisons are registered
                m.next = "CHECK2"
            with m.State("CHECK2"):     # the status is registered
                m.next = "FINISH"
            with m.State("FINISH"):
                ok = code_r == 0
                post = ~(accepted & ok)  # a good accepted frame is answered by its result
                with m.If(~post | ~slot):
                    with m.If(post):
                        m.d.sync += [
                            slot.eq(1),
                            slot_error.eq(~ok),
                            slot_seq.eq(Mux(got_seq, seq, 0)),
                            slot_type.eq(Mux(got_type, rtype, 0)),
                            slot_code.eq(code_r),
                            slot_detail.eq(detail_r),
                        ]
                    with m.If(accepted & ok):
                        m.d.sync += job.eq(_Job.OK)
                    with m.Elif(accepted):
                        m.d.sync += job.eq(_Job.DISCARD)
                        with m.If(pix_left != 0):
                            m.d.sync += pad.eq(1)
                    m.d.sync += [count.eq(0), accepted.eq(0)]
                    m.next = "HEADER"

    def _elaborate_transmit(self, m, body, job, job_seq, slot, slot_error, slot_seq, slot_code,
                            slot_type, slot_detail):
        n = self._n_scores
        result_len = 4 * n + 8

        # Both ROMs are read synchronously at the registered index; ``body`` is not ready in the
        # cycle after each byte (elaborate), so their data belongs to the current index when it
        # is taken (and they can be block RAM, not logic). With `pipelined` their words are
        # registered once more and ``body`` is not ready in the two cycles after each byte
        # (board build b67: a block RAM's clock-to-out through the byte multiplexer into the
        # byte register, 11.7 ns).
        m.submodules.info_rom = info_rom = Memory(shape=8, depth=len(self._info),
                                                  init=list(self._info))
        info_rd = info_rom.read_port()

        codes = sorted(ERROR_REASONS)
        reasons = b"".join(ERROR_REASONS[c].encode("utf-8") for c in codes)
        offsets = [0] * 256
        lengths = [0] * 256
        at = 0
        for c in codes:
            offsets[c] = at
            lengths[c] = len(ERROR_REASONS[c].encode("utf-8"))
            at += lengths[c]
        m.submodules.reason_rom = reason_rom = Memory(
            shape=8, depth=len(reasons), init=list(reasons),
            attrs={"rom_style": "block"} if self._pipelined else None)
        reason_rd = reason_rom.read_port()
        reason_offset = Array(Const(v, range(len(reasons) + 1)) for v in offsets)
        reason_length = Array(Const(v, 8) for v in lengths)

        kind = Signal(_Reply)
        seq = Signal(8)
        err_code = Signal(8)
        err_type = Signal(8)
        err_detail = Signal(32)
        plen = Signal(32)
        reply_type = Signal(8)
        index = Signal(range(max(len(self._info), result_len, 6 + max(lengths)) + 1))
        index_next = Signal.like(index)     # what index becomes at the next clock edge
        reason_base = Signal(range(-6, len(reasons) + 1))  # the reason's offset - 6 (payload)
        cycles = Signal(64)

        with m.Switch(kind):
            with m.Case(_Reply.INFO):
                m.d.comb += reply_type.eq(MsgType.INFO_REPLY)
            with m.Case(_Reply.ERROR):
                m.d.comb += reply_type.eq(MsgType.ERROR)
            with m.Default():
                m.d.comb += reply_type.eq(MsgType.CLASSIFY_REPLY)

        # Scores of a bad classify request are drained without a reply (its error went out).
        drained = Signal(range(max(n, 2)))
        with m.If(job == _Job.DISCARD):
            m.d.comb += self.scores.ready.eq(1)
            with m.If(self.scores.valid):
                with m.If(drained == n - 1):
                    m.d.sync += [drained.eq(0), job.eq(_Job.IDLE)]
                with m.Else():
                    m.d.sync += drained.eq(drained + 1)

        m.d.comb += [index_next.eq(index), info_rd.addr.eq(index)]
        m.d.sync += index.eq(index_next)
        score_byte = self.scores.payload.data.word_select(index[:2], 8)

        def settled(value):
            # With `pipelined`, a function of `index` a cycle late, from flip-flops: `body` is not
            # ready in the cycle after `index` changes, so nothing is taken on a stale value.
            if not self._pipelined:
                return value
            r = Signal(value.shape())
            m.d.sync += r.eq(value)
            return r

        last = settled(index == plen - 1)
        in_scores = settled(index < 4 * n)
        last_score = settled(index == 4 * n - 1)
        # The byte muxes: with `pipelined` they look at the low bits of `index` only (the header
        # has 7 bytes, the error fields 6, and `4 * n` is a multiple of 4), not at all 12.
        if self._pipelined:
            header_index = index[:3]
            # index >= 8, a cycle late: late only for the reason's bytes 6 to 8, which are not
            # fields (6 and 7 fall to Default anyway, 8 is not taken in its first cycle)
            error_index = Cat(index[:3], settled(index[3:] != 0))
            cycles_index = (index[:3] + (-4 * n) % 8)[:3]
        else:
            header_index = error_index = index
            cycles_index = (index - 4 * n)[:3]

        # With `pipelined` the bytes that come from registers (header, error fields, cycles) are
        # picked into `fixed` and registered: that is a cycle late, like the comparisons, so
        # `fixed` must be right in the first cycle of each index (IDLE gives the header's first
        # byte, RESULT the cycles' byte before it knows it is past the scores). The choice
        # between it, the two ROMs and the score is made in the cycle the byte is taken.
        if self._pipelined:
            fixed = Signal(8)
            source = Signal(2)  # 0: fixed, 1: info ROM, 2: reason ROM, 3: score
            m.d.comb += body.payload.data.eq(
                Array([settled(fixed), settled(info_rd.data), settled(reason_rd.data),
                       score_byte])[source])

        def put(value, live=0):
            if not self._pipelined:
                m.d.comb += body.payload.data.eq(value)
            elif live:
                m.d.comb += source.eq(live)
            else:
                m.d.comb += fixed.eq(value)
        if self._pipelined:
            # `reason_base + index` kept in a counter of its own that steps with `index`: the
            # reason ROM's address is a flip-flop, not an adder in front of its logic
            reason_addr = Signal.like(reason_rd.addr)
            m.d.comb += reason_rd.addr.eq(reason_addr)
        else:
            m.d.comb += reason_rd.addr.eq(reason_base + index)
        with m.FSM(name="transmit"):
            with m.State("IDLE"):
                m.d.comb += index_next.eq(0)
                if self._pipelined:
                    put(VERSION)  # HEADER's first byte: it may be taken in HEADER's first cycle
                with m.If((job == _Job.OK) & self.scores.valid):
                    m.d.sync += [kind.eq(_Reply.RESULT), seq.eq(job_seq), plen.eq(result_len)]
                    m.next = "HEADER"
                with m.Elif(slot):
                    m.d.sync += [
                        slot.eq(0),
                        seq.eq(slot_seq),
                        err_code.eq(slot_code),
                        err_type.eq(slot_type),
                        err_detail.eq(slot_detail),
                        reason_base.eq(reason_offset[slot_code] - 6),
                    ]
                    with m.If(slot_error):
                        m.d.sync += [kind.eq(_Reply.ERROR), plen.eq(6 + reason_length[slot_code])]
                    with m.Else():
                        m.d.sync += [kind.eq(_Reply.INFO), plen.eq(len(self._info))]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += body.valid.eq(1)
                if self._pipelined:
                    m.d.sync += reason_addr.eq(reason_base)  # index starts at 0 in PAYLOAD
                with m.Switch(header_index):
                    with m.Case(0):
                        put(VERSION)
                    with m.Case(1):
                        put(reply_type)
                    with m.Case(2):
                        put(seq)
                    for k in range(4):
                        with m.Case(3 + k):
                            put(plen.word_select(k, 8))
                with m.If(body.ready):
                    m.d.comb += index_next.eq(index + 1)
                    with m.If(index == HEADER_SIZE - 1):
                        m.d.comb += index_next.eq(0)
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += body.payload.last.eq(last)
                with m.Switch(kind):
                    with m.Case(_Reply.INFO):
                        m.d.comb += body.valid.eq(1)
                        put(info_rd.data, live=1)
                    with m.Case(_Reply.ERROR):
                        m.d.comb += body.valid.eq(1)
                        with m.Switch(error_index):
                            with m.Case(0):
                                put(err_code)
                            with m.Case(1):
                                put(err_type)
                            for k in range(4):
                                with m.Case(2 + k):
                                    put(err_detail.word_select(k, 8))
                            with m.Default():
                                put(reason_rd.data, live=2)
                    with m.Case(_Reply.RESULT):
                        put(cycles.word_select(cycles_index, 8))
                        with m.If(in_scores):
                            m.d.comb += [
                                body.valid.eq(self.scores.valid),
                                self.scores.ready.eq(body.ready & (index[:2] == 3)),
                            ]
                            put(score_byte, live=3)
                            with m.If(self.scores.valid & self.scores.ready
                                      & last_score):
                                m.d.sync += cycles.eq(self.cycles)
                        with m.Else():
                            m.d.comb += body.valid.eq(1)
                with m.If(body.valid & body.ready):
                    m.d.comb += index_next.eq(index + 1)
                    if self._pipelined:
                        m.d.sync += reason_addr.eq(reason_addr + 1)
                    with m.If(last):
                        with m.If(kind == _Reply.RESULT):
                            m.d.sync += job.eq(_Job.IDLE)
                        m.next = "IDLE"


class SerialBridge(wiring.Component):
    """A :class:`LinkBridge` behind a :class:`~hw.uart.UART`, with a receive FIFO between them
    so that short stalls of the accelerator or the reply path do not lose bytes.

    Takes the UART's ``divisor`` or ``config``, ``rx_fifo_depth`` (0: no FIFO) and the
    :class:`LinkBridge` parameters (``pipelined`` too: it is not taken from ``config``, which
    may be absent). Ports: ``rxd``, ``txd`` (the UART lines) and the bridge's
    ``pixels``, ``scores``, ``cycles`` and ``busy``.
    """

    def __init__(self, *, divisor: int | None = None, config: AccelConfig | None = None,
                 rx_fifo_depth: int = 16, image_shape: Sequence[int], n_scores: int,
                 info: bytes, pixel_width: int = 8, means: Sequence[int] | None = None,
                 layout: Layout = Layout.HWC, pipelined: bool = False):
        self._divisor = resolve_divisor(divisor, config)
        if not isinstance(rx_fifo_depth, int) or rx_fifo_depth < 0:
            raise ValueError(f"Receive FIFO depth must be a non-negative integer, not "
                             f"{rx_fifo_depth!r}")
        self._rx_fifo_depth = rx_fifo_depth
        self._bridge_args = _check_bridge_args(
            image_shape=image_shape, n_scores=n_scores, info=info, pixel_width=pixel_width,
            means=means, layout=layout, pipelined=pipelined)
        super().__init__({
            "rxd": In(1, init=1),
            "txd": Out(1, init=1),
            **_accelerator_ports(pixel_width, self._bridge_args["means"]),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def rx_fifo_depth(self) -> int:
        return self._rx_fifo_depth

    @property
    def pipelined(self) -> bool:
        return self._bridge_args["pipelined"]

    @property
    def image_size(self) -> int:
        c, h, w = self._bridge_args["image_shape"]
        return c * h * w

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self._divisor)
        m.submodules.bridge = bridge = LinkBridge(**self._bridge_args)
        m.d.comb += [uart.rxd.eq(self.rxd), self.txd.eq(uart.txd)]
        if self._rx_fifo_depth:
            m.submodules.rx_fifo = fifo = SyncFIFOBuffered(width=RxByte.size,
                                                           depth=self._rx_fifo_depth)
            m.d.comb += [
                fifo.w_data.eq(uart.rx.payload),
                fifo.w_en.eq(uart.rx.valid),
                uart.rx.ready.eq(fifo.w_rdy),
                bridge.rx.payload.eq(fifo.r_data),
                bridge.rx.valid.eq(fifo.r_rdy),
                fifo.r_en.eq(bridge.rx.ready),
            ]
        else:
            wiring.connect(m, uart.rx, bridge.rx)
        wiring.connect(m, uart.tx, bridge.tx)
        wiring.connect(m, wiring.flipped(self.pixels), bridge.pixels)
        wiring.connect(m, bridge.scores, wiring.flipped(self.scores))
        m.d.comb += [bridge.cycles.eq(self.cycles), self.busy.eq(bridge.busy)]
        return m
