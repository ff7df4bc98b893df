# amaranth: UnusedElaboratable=no
"""LinkBridge and SerialBridge: every request of docs/protocol.md against a fake accelerator.

The host side is host/protocol.py (requests encoded by it, replies parsed by its FrameParser), the
accelerator is a testbench that takes an image and answers with scores computed from its pixels.
Every stream sees random back-pressure.
"""

import dataclasses
import random

import pytest
from amaranth import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from streams import stream_get, stream_put

from host import protocol as p
from hw.config import AccelConfig
from hw.link import LinkBridge, SerialBridge
from hw.uart import UART, RxByte

SHAPE = (3, 4, 4)
N_SCORES = 10
MEANS = (104, 117, 124)
INFO = p.InfoReply(config_name="test", model_hash=bytes(range(32)), clk_hz=1_000_000,
                   uart_baud=250_000, input_shape=SHAPE, num_classes=N_SCORES)
STALL = 0.3


def fake_scores(pixels: list[int], n: int) -> list[int]:
    """What the fake accelerator answers: depends on every pixel and its position, and has zero
    bytes in it so that COBS has work to do."""
    acc = sum((i + 1) * v for i, v in enumerate(pixels))
    scores = [(acc * 2654435761 + k * 0x9E3779B9) & 0xFFFFFFFF for k in range(n)]
    return [s & 0xFF00FFFF if k % 3 == 0 else s for k, s in enumerate(scores)]


def fake_cycles(image_index: int) -> int:
    return 0x0123456789ABCDEF + (image_index << 56) & 0xFFFFFFFFFFFFFFFF


def expected_pixels(pixels: bytes, shape, means, layout) -> list[int]:
    """The values LinkBridge must put on its pixel stream for a request's payload."""
    if means is None:
        return list(pixels)
    c, h, w = shape
    if layout == p.Layout.HWC:
        return [v - means[i % c] for i, v in enumerate(pixels)]
    return [v - means[i // (h * w)] for i, v in enumerate(pixels)]


async def wait_for(ctx, signal):
    while not ctx.get(signal):
        await ctx.tick()


class Rig:
    """Drives a LinkBridge (or SerialBridge, through a host-side UART) from async testbenches.

    ``send`` writes wire bytes, ``wait_replies`` waits until the background reader has parsed
    that many frames (``replies`` holds Frames and ProtocolErrors), the background accelerator
    records each image it is given in ``images``.
    """

    def __init__(self, dut, *, host_rx, host_tx, seed=0, accel_delay=0, stall=STALL,
                 max_cycles=200_000, n_pix=48, n_scores=N_SCORES):
        self.dut = dut
        self.n_pix = n_pix
        self.n_scores = n_scores
        self.host_rx = host_rx
        self.host_tx = host_tx
        self.rng = random.Random(seed)
        self.accel_delay = accel_delay
        self.stall = stall
        self.max_cycles = max_cycles
        self.parser = p.FrameParser()
        self.replies: list = []
        self.images: list[list[int]] = []
        self.bad_last: list[int] = []

    async def send(self, ctx, wire: bytes, *, line_error_at: dict | None = None):
        for i, b in enumerate(wire):
            payload = b
            if isinstance(self.host_tx.payload, data.View):  # RxByte into a LinkBridge
                payload = {"data": b, **(line_error_at or {}).get(i, {})}
            await stream_put(ctx, self.host_tx, payload, rng=self.rng, stall=self.stall)

    async def wait_replies(self, ctx, n: int):
        while len(self.replies) < n:
            await ctx.tick()

    # The background roles wait for `valid` with plain ticks before each transfer, so that the
    # end of the simulation never finds them inside `until()` (whose clean-up then fails).
    async def _reader(self, ctx):
        rng = random.Random(self.rng.random())
        while True:
            await wait_for(ctx, self.host_rx.valid)
            payload = await stream_get(ctx, self.host_rx, rng=rng, stall=self.stall)
            b = payload if isinstance(payload, int) else payload.data
            self.parser.feed(bytes([b]))
            while True:
                try:
                    frame = self.parser.pop()
                except p.ProtocolError as e:
                    self.replies.append(e)
                    continue
                if frame is None:
                    break
                self.replies.append(frame)

    async def _accelerator(self, ctx):
        rng = random.Random(self.rng.random())
        n_pix = self.n_pix
        while True:
            pixels = []
            for i in range(n_pix):
                await wait_for(ctx, self.dut.pixels.valid)
                px = await stream_get(ctx, self.dut.pixels, rng=rng, stall=self.stall)
                pixels.append(px.data)
                if px.last != (i == n_pix - 1):
                    self.bad_last.append(i)
            self.images.append(pixels)
            for _ in range(self.accel_delay + 1):
                await ctx.tick()
            ctx.set(self.dut.cycles, fake_cycles(len(self.images)))
            scores = fake_scores(pixels, self.n_scores)
            for k, s in enumerate(scores):
                await stream_put(ctx, self.dut.scores, {"data": s, "last": k == len(scores) - 1},
                                 rng=rng, stall=self.stall)

    async def _watchdog(self, ctx):
        for _ in range(self.max_cycles):
            await ctx.tick()
        raise AssertionError(f"simulation did not finish in {self.max_cycles} cycles; "
                             f"replies so far: {self.replies}")

    def run(self, top, host):
        sim = Simulator(top)
        sim.add_clock(1e-6)
        sim.add_testbench(self._reader, background=True)
        sim.add_testbench(self._accelerator, background=True)
        sim.add_testbench(self._watchdog, background=True)
        sim.add_testbench(host)
        sim.run()


@pytest.fixture(params=[False, True], ids=["plain", "pipelined"])
def pipelined(request):
    """Both forms of the bridge (``AccelConfig.fast_pipeline`` off and on) for the frame-level
    checks: the extra registers must not change a byte on the wire."""
    return request.param


def make_bridge(**kw):
    args = dict(image_shape=SHAPE, n_scores=N_SCORES, info=INFO.payload(), pixel_width=9,
                means=MEANS)
    args.update(kw)
    return LinkBridge(**args)


def info_for(layout=p.Layout.HWC, n_scores=N_SCORES, name="test") -> bytes:
    return dataclasses.replace(INFO, layout=layout, num_classes=n_scores,
                               config_name=name).payload()


def bridge_rig(dut, **kw):
    return Rig(dut, host_rx=dut.tx, host_tx=dut.rx, **kw)


def classify(pixels: bytes, seq: int) -> bytes:
    return p.encode_message(p.ClassifyRequest(pixels), seq)


def random_image(rng, n=48) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def check_result(frame, seq, pixels_seen, image_index, n_scores=N_SCORES):
    assert isinstance(frame, p.Frame), frame
    assert (frame.type, frame.seq) == (p.MsgType.CLASSIFY_REPLY, seq)
    reply = p.decode_message(frame)
    assert reply.scores == tuple(fake_scores(pixels_seen, n_scores))
    assert reply.cycles == fake_cycles(image_index)


def check_error(frame, code, seq=None, detail=None, request_type=None):
    assert isinstance(frame, p.Frame), frame
    assert frame.type == p.MsgType.ERROR, frame
    reply = p.decode_message(frame)
    assert reply.code == code, reply
    assert reply.reason == p.ERROR_REASONS[code]
    if seq is not None:
        assert frame.seq == seq
    if detail is not None:
        assert reply.detail == detail, reply
    if request_type is not None:
        assert reply.request_type == request_type
    return reply


# -- constructor checks --------------------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(image_shape=(3, 4)), "Image shape must be"),
    (dict(image_shape=(3, 0, 4)), "Image shape must be"),
    (dict(n_scores=0), "Number of scores"),
    (dict(info=b""), "Info is not a valid info reply payload: InfoReply payload of 0 bytes"),
    (dict(info="text"), "Info must be the bytes of an info reply payload, not str"),
    (dict(n_scores=11), r"Info announces input shape \(3, 4, 4\), 10 classes and layout HWC, "
                        r"but the bridge has \(3, 4, 4\), 11 and HWC"),
    (dict(layout=p.Layout.CHW), "layout HWC, but the bridge has .* and CHW"),
    (dict(means=(1, 2)), "Means must be 3 integers"),
    (dict(means=(1, 2, 300)), "Means must be 3 integers"),
    (dict(pixel_width=8), "cannot hold the mean-subtracted range"),
    (dict(means=None, pixel_width=7), "at least 8"),
    (dict(layout="rgb"), "Layout must be one of"),
    (dict(pipelined=1), "Pipelined must be a bool, not 1"),
])
def test_bridge_rejects_bad_parameters(kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make_bridge(**kw)


def test_bridge_ports():
    dut = make_bridge()
    assert dut.pixels.payload.data.shape().signed
    assert dut.pixels.payload.data.shape().width == 9
    assert not make_bridge(means=None, pixel_width=8).pixels.payload.data.shape().signed
    assert dut.scores.payload.data.shape().width == 32
    assert len(dut.cycles) == 64
    assert dut.image_size == 48


# -- good requests -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, means", [
    (p.Layout.HWC, MEANS),
    (p.Layout.CHW, MEANS),
    (p.Layout.HWC, None),
])
def test_info_and_classify(layout, means, pipelined):
    dut = make_bridge(layout=layout, means=means, pixel_width=9 if means else 8,
                      info=info_for(layout), pipelined=pipelined)
    rig = bridge_rig(dut, seed=int(layout) * 2 + (means is None))
    rng = random.Random(5)
    images = [random_image(rng), bytes([0] * 20 + [255] * 28)]

    async def host(ctx):
        await rig.send(ctx, p.encode_message(p.InfoRequest(), 7))
        await rig.wait_replies(ctx, 1)
        for k, image in enumerate(images):
            await rig.send(ctx, classify(image, 100 + k))
            await rig.wait_replies(ctx, 2 + k)

    rig.run(dut, host)
    info = rig.replies[0]
    assert (info.type, info.seq) == (p.MsgType.INFO_REPLY, 7)
    assert p.decode_message(info) == p.InfoReply.from_payload(info_for(layout))
    assert not rig.bad_last
    for k, image in enumerate(images):
        assert rig.images[k] == expected_pixels(image, SHAPE, means, layout)
        check_result(rig.replies[1 + k], 100 + k, rig.images[k], k + 1)
    assert len(rig.replies) == 3


@pytest.mark.parametrize("n", [70, 71])
def test_long_replies_cross_cobs_blocks(n, pipelined):
    # 70 scores are 288 payload bytes: the encoder has to split a block longer than 254 bytes.
    # (71: the cycle count starts at an index that is not a multiple of 8.)
    info = info_for(n_scores=n, name="x" * 255)
    dut = make_bridge(n_scores=n, info=info, means=None, pixel_width=8, pipelined=pipelined)
    rig = bridge_rig(dut, seed=3, stall=0.1, n_scores=n)
    image = bytes([1] * 48)

    async def host(ctx):
        await rig.send(ctx, p.encode_message(p.InfoRequest(), 1))
        await rig.send(ctx, classify(image, 2))
        await rig.wait_replies(ctx, 2)

    rig.run(dut, host)
    assert rig.replies[0].payload == info
    check_result(rig.replies[1], 2, rig.images[0], 1, n_scores=n)


# -- bad requests --------------------------------------------------------------------------------

def _body(version=p.VERSION, mtype=p.MsgType.INFO, seq=1, payload=b"", length=None):
    length = len(payload) if length is None else length
    head = bytes([version, mtype, seq]) + length.to_bytes(4, "little")
    body = head + payload
    return body + p.crc32(body).to_bytes(4, "little")


def _wire(body: bytes) -> bytes:
    return b"\x00" + p.cobs_encode(body) + b"\x00"


def _flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x10]) + body[at + 1:]


PIXELS = bytes(range(40, 88))
GOOD_CLASSIFY = _body(mtype=p.MsgType.CLASSIFY, seq=9, payload=PIXELS)

# (name, wire bytes, code, seq in the reply, detail, request type in the reply, image discarded)
BAD_REQUESTS = [
    ("crc in header", _wire(_flip(_body(seq=3), 2)), p.ErrorCode.BAD_CRC, 0x13, 11, 1, False),
    ("crc in payload", _wire(_flip(GOOD_CLASSIFY, 20)), p.ErrorCode.BAD_CRC, 9, 59, 2, True),
    ("crc field", _wire(_flip(GOOD_CLASSIFY, 57)), p.ErrorCode.BAD_CRC, 9, 59, 2, True),
    ("header cut", _wire(_body(seq=4)[:5]), p.ErrorCode.TRUNCATED, 4, 5, 1, False),
    ("one byte", b"\x00\x02\x01\x00", p.ErrorCode.TRUNCATED, 0, 1, 0, False),
    ("cobs block cut", b"\x00" + p.cobs_encode(_body(seq=5))[:-2] + b"\x00",
     p.ErrorCode.TRUNCATED, 5, 9, 1, False),
    ("payload cut", _wire(GOOD_CLASSIFY[:30]), p.ErrorCode.TRUNCATED, 9, 30, 2, True),
    ("crc cut", _wire(GOOD_CLASSIFY[:-1]), p.ErrorCode.TRUNCATED, 9, 58, 2, True),
    ("declared too long", _wire(_body(length=0x12345678)), p.ErrorCode.OVERSIZED, 1,
     0x12345678, 1, False),
    ("extra bytes", _wire(GOOD_CLASSIFY + b"\x55\x00\x66"), p.ErrorCode.OVERSIZED, 9, 62, 2,
     True),
    ("unknown type", _wire(_body(mtype=0x33, seq=6)), p.ErrorCode.UNKNOWN_TYPE, 6, 0x33, 0x33,
     False),
    ("reply type", _wire(_body(mtype=p.MsgType.INFO_REPLY, seq=6)), p.ErrorCode.UNKNOWN_TYPE, 6,
     0x81, 0x81, False),
    ("info with payload", _wire(_body(seq=8, payload=b"ab")), p.ErrorCode.BAD_LENGTH, 8, 2, 1,
     False),
    ("short image", _wire(_body(mtype=p.MsgType.CLASSIFY, seq=8, payload=PIXELS[:47])),
     p.ErrorCode.BAD_LENGTH, 8, 47, 2, False),
    ("version", _wire(_body(version=2, seq=8)), p.ErrorCode.BAD_VERSION, 8, 2, 1, False),
]


@pytest.mark.parametrize("name, wire, code, seq, detail, rtype, discarded", BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_error_then_good_request_works(name, wire, code, seq, detail, rtype,
                                                        discarded, pipelined):
    dut = make_bridge(pipelined=pipelined)
    rig = bridge_rig(dut, seed=len(name))
    image = random_image(random.Random(name))

    async def host(ctx):
        await rig.send(ctx, wire)
        await rig.wait_replies(ctx, 1)
        await rig.send(ctx, classify(image, 42))
        await rig.wait_replies(ctx, 2)
        await rig.send(ctx, p.encode_message(p.InfoRequest(), 43))
        await rig.wait_replies(ctx, 3)

    rig.run(dut, host)
    check_error(rig.replies[0], code, seq=seq, detail=detail, request_type=rtype)
    # A classify frame that went bad still fed the accelerator a whole image (padded with
    # zeros where it was cut short), whose scores were dropped.
    assert len(rig.images) == 1 + discarded
    if discarded:
        sent = p.cobs_decode(wire.strip(b"\x00"))[7:7 + 48]
        want = expected_pixels(sent, SHAPE, MEANS, p.Layout.HWC)
        assert rig.images[0] == want + [0] * (48 - len(want))
    assert rig.images[-1] == expected_pixels(image, SHAPE, MEANS, p.Layout.HWC)
    check_result(rig.replies[1], 42, rig.images[-1], len(rig.images))
    assert (rig.replies[2].type, rig.replies[2].seq) == (p.MsgType.INFO_REPLY, 43)
    assert len(rig.replies) == 3
    assert not rig.bad_last


def test_line_errors_are_reported(pipelined):
    dut = make_bridge(pipelined=pipelined)
    rig = bridge_rig(dut, seed=11)
    info = p.encode_message(p.InfoRequest(), 21)

    async def host(ctx):
        # a byte with a bad stop bit inside a frame, then a good frame
        await rig.send(ctx, info, line_error_at={4: {"framing_error": 1}})
        await rig.wait_replies(ctx, 1)
        # an overrun (a byte lost before this one) inside a frame
        await rig.send(ctx, info, line_error_at={6: {"overrun": 1}})
        await rig.wait_replies(ctx, 2)
        # an overrun flagged on the closing delimiter
        await rig.send(ctx, info, line_error_at={len(info) - 1: {"overrun": 1}})
        await rig.wait_replies(ctx, 3)
        # a framing error between frames: its own (empty) frame gets an error too
        await rig.send(ctx, b"\x00\x00", line_error_at={0: {"framing_error": 1}})
        await rig.wait_replies(ctx, 4)
        await rig.send(ctx, info)
        await rig.wait_replies(ctx, 5)

    rig.run(dut, host)
    for k in range(4):
        check_error(rig.replies[k], p.ErrorCode.LINE_ERROR)
    assert (rig.replies[4].type, rig.replies[4].seq) == (p.MsgType.INFO_REPLY, 21)
    assert len(rig.replies) == 5


def test_busy_while_classifying(pipelined):
    dut = make_bridge(pipelined=pipelined)
    rig = bridge_rig(dut, seed=12, accel_delay=3000)
    rng = random.Random(12)
    a, b, c = (random_image(rng) for _ in range(3))

    async def host(ctx):
        await rig.send(ctx, classify(a, 1))
        assert ctx.get(dut.busy)
        await rig.send(ctx, p.encode_message(p.InfoRequest(), 2))  # served meanwhile
        await rig.wait_replies(ctx, 1)
        await rig.send(ctx, classify(b, 3))
        await rig.wait_replies(ctx, 2)
        await rig.wait_replies(ctx, 3)
        assert not ctx.get(dut.busy)
        await rig.send(ctx, classify(c, 4))
        await rig.wait_replies(ctx, 4)

    rig.run(dut, host)
    assert (rig.replies[0].type, rig.replies[0].seq) == (p.MsgType.INFO_REPLY, 2)
    check_error(rig.replies[1], p.ErrorCode.BUSY, seq=3, detail=0, request_type=2)
    check_result(rig.replies[2], 1, rig.images[0], 1)
    check_result(rig.replies[3], 4, rig.images[1], 2)
    assert rig.images == [expected_pixels(x, SHAPE, MEANS, p.Layout.HWC) for x in (a, c)]


def test_garbage_between_frames(pipelined):
    dut = make_bridge(pipelined=pipelined)
    rig = bridge_rig(dut, seed=13, stall=0.2, max_cycles=400_000)
    rng = random.Random(13)
    garbage = [bytes(rng.choice([0, 1, 2, 0xFF, rng.randrange(256)])
                     for _ in range(rng.randrange(1, 30))) for _ in range(6)]
    requests = []
    for k in range(5):
        if k % 2:
            requests.append((p.encode_message(p.InfoRequest(), 50 + k), None))
        else:
            requests.append((classify(random_image(rng), 50 + k), k))
    # every non-empty run of garbage between two delimiters is a frame of its own
    n_garbage_frames = sum(len([c for c in g.split(b"\x00") if c]) for g in garbage)

    async def host(ctx):
        replies = 0
        for k, (wire, _) in enumerate(requests):
            await rig.send(ctx, garbage[k])
            await rig.send(ctx, wire)
            replies += 1 + len([c for c in garbage[k].split(b"\x00") if c])
            await rig.wait_replies(ctx, replies)
        await rig.send(ctx, garbage[-1] + b"\x00")
        await rig.wait_replies(ctx, replies + len([c for c in garbage[-1].split(b"\x00") if c]))

    rig.run(dut, host)
    good = [r for r in rig.replies if isinstance(r, p.Frame) and r.type != p.MsgType.ERROR]
    errors = [r for r in rig.replies if isinstance(r, p.Frame) and r.type == p.MsgType.ERROR]
    assert len(good) == len(requests)
    assert len(errors) == n_garbage_frames
    assert len(rig.replies) == len(good) + len(errors)
    image = 0
    for frame, (_, k) in zip(good, requests, strict=True):
        if k is None:
            assert frame.type == p.MsgType.INFO_REPLY
        else:
            image += 1
            check_result(frame, 50 + k, rig.images[image - 1], image)
    assert len(rig.images) == 3


# -- through the UART ----------------------------------------------------------------------------

class _SerialRig(wiring.Component):
    """A SerialBridge wired to a host-side UART, with a glitch input that pulls the host's
    transmit line low."""

    def __init__(self, divisor, **bridge_args):
        self.bridge = SerialBridge(divisor=divisor, **bridge_args)
        self.host = UART(divisor)
        members = self.bridge.signature.members
        super().__init__({
            "host_tx": In(stream.Signature(8)),
            "host_rx": Out(stream.Signature(RxByte)),
            "glitch": In(1),
            "pixels": members["pixels"],
            "scores": members["scores"],
            "cycles": members["cycles"],
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = self.bridge
        m.submodules.host = self.host
        m.d.comb += [
            self.bridge.rxd.eq(self.host.txd & ~self.glitch),
            self.host.rxd.eq(self.bridge.txd),
            self.bridge.cycles.eq(self.cycles),
        ]
        wiring.connect(m, wiring.flipped(self.host_tx), self.host.tx)
        wiring.connect(m, self.host.rx, wiring.flipped(self.host_rx))
        wiring.connect(m, self.bridge.pixels, wiring.flipped(self.pixels))
        wiring.connect(m, wiring.flipped(self.scores), self.bridge.scores)
        return m


def test_serial_bridge_parameters():
    with pytest.raises(ValueError, match="Receive FIFO depth must be a non-negative integer"):
        SerialBridge(divisor=4, rx_fifo_depth=-1, image_shape=SHAPE, n_scores=N_SCORES,
                     info=INFO.payload())
    with pytest.raises(TypeError, match="exactly one of divisor and config"):
        SerialBridge(image_shape=SHAPE, n_scores=N_SCORES, info=INFO.payload())
    with pytest.raises(ValueError, match="Number of scores"):
        SerialBridge(divisor=4, image_shape=SHAPE, n_scores=0, info=INFO.payload())
    dut = SerialBridge(config=AccelConfig(), image_shape=SHAPE, n_scores=N_SCORES,
                       info=INFO.payload())
    assert (dut.divisor, dut.rx_fifo_depth, dut.image_size) == (33, 16, 48)
    assert not dut.pipelined
    assert SerialBridge(divisor=4, image_shape=SHAPE, n_scores=N_SCORES, info=INFO.payload(),
                        pipelined=True).pipelined


@pytest.mark.parametrize("fifo_depth", [16, 0])
def test_serial_bridge_through_uart_with_glitches(fifo_depth, pipelined):
    top = _SerialRig(4, image_shape=SHAPE, n_scores=N_SCORES, info=INFO.payload(),
                     pixel_width=9, means=MEANS, rx_fifo_depth=fifo_depth, pipelined=pipelined)
    rig = Rig(top, host_rx=top.host_rx, host_tx=top.host_tx, seed=14, stall=0.2)
    rng = random.Random(14)
    image = random_image(rng)

    async def glitches(ctx):
        # single-cycle low pulses on the idle line: shorter than half a bit, ignored
        for _ in range(5):
            await ctx.tick().repeat(rng.randrange(3, 30))
            ctx.set(top.glitch, 1)
            await ctx.tick()
            ctx.set(top.glitch, 0)

    async def host(ctx):
        await glitches(ctx)
        await rig.send(ctx, p.encode_message(p.InfoRequest(), 1))
        await rig.wait_replies(ctx, 1)
        await glitches(ctx)
        await rig.send(ctx, classify(image, 2))
        await rig.wait_replies(ctx, 2)
        # a glitch long enough to look like a start bit: a garbage byte, then a good request
        ctx.set(top.glitch, 1)
        await ctx.tick().repeat(10)
        ctx.set(top.glitch, 0)
        await ctx.tick().repeat(100)
        await rig.send(ctx, p.encode_message(p.InfoRequest(), 3))
        await rig.wait_replies(ctx, 4)

    rig.run(top, host)
    assert p.decode_message(rig.replies[0]) == INFO
    check_result(rig.replies[1], 2, rig.images[0], 1)
    assert rig.images[0] == expected_pixels(image, SHAPE, MEANS, p.Layout.HWC)
    # the garbage byte is a frame of its own: one error reply for it, then the info reply
    check_error(rig.replies[2], p.ErrorCode.TRUNCATED, seq=0, detail=0, request_type=0)
    assert (rig.replies[3].type, rig.replies[3].seq) == (p.MsgType.INFO_REPLY, 3)
