# amaranth: UnusedElaboratable=no
"""UART: loopback with random data, exact bit timing, framing errors, glitches and overruns."""

import random

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from streams import get_n, put_all, simulate, stream_get

from hw.config import AccelConfig
from hw.uart import UART, RxByte, UARTReceiver, UARTTransmitter, baud_divisor


async def send_bits(ctx, line, bits, divisor):
    """Drive ``line`` with ``bits`` (an iterable of 0/1), ``divisor`` cycles each."""
    for bit in bits:
        ctx.set(line, bit)
        await ctx.tick().repeat(divisor)


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    return [0] + [byte >> k & 1 for k in range(8)] + [stop]


async def drain(ctx, o, n, cycles):
    """Collect what ``o`` delivers within ``cycles`` (always ready), at most ``n`` bytes."""
    got = []
    ctx.set(o.ready, 1)
    for _ in range(cycles):
        await ctx.tick()
        if ctx.get(o.valid):
            got.append(ctx.get(o.payload))
            if len(got) == n:
                break
    ctx.set(o.ready, 0)
    return got


# -- parameters ----------------------------------------------------------------------------------

def test_divisor_from_config():
    cfg = AccelConfig()
    assert baud_divisor(cfg.clk_hz, cfg.uart_baud) == 33
    duts = [UART(config=cfg), UARTReceiver(config=AccelConfig(clk_hz=48_000_000)),
            UARTTransmitter(7)]
    assert [dut.divisor for dut in duts] == [33, 16, 7]


@pytest.mark.parametrize("args, kw, exc, message", [
    ((), {}, TypeError, "exactly one of divisor and config"),
    ((8,), {"config": AccelConfig()}, TypeError, "exactly one of divisor and config"),
    ((3,), {}, ValueError, "at least 4 clocks per bit"),
    ((8.0,), {}, ValueError, "at least 4 clocks per bit"),
    ((), {"config": "default"}, TypeError, "config must be an AccelConfig"),
    ((), {"config": AccelConfig(clk_hz=10_000_000, uart_baud=3_000_000)}, ValueError,
     "too slow"),
])
def test_bad_parameters(args, kw, exc, message):
    for cls in (UART, UARTReceiver, UARTTransmitter):
        with pytest.raises(exc, match=message):
            cls(*args, **kw)


def test_baud_divisor_rejects_large_rate_error():
    with pytest.raises(ValueError, match="off by"):
        baud_divisor(1_000_000, 88_000)  # 11.36 clocks per bit: 11 is 3.3 % fast
    with pytest.raises(ValueError, match="baud must be a positive integer"):
        baud_divisor(1_000_000, 0)


# -- transmitter ---------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [4, 7])
def test_transmitter_bit_timing(divisor):
    dut = UARTTransmitter(divisor)
    data = [0x55, 0x00, 0xFF, 0xA3]
    line = []

    async def producer(ctx):
        await put_all(ctx, dut.i, data)

    async def monitor(ctx):
        assert ctx.get(dut.txd) == 1
        while ctx.get(dut.txd):
            await ctx.tick()
        for _ in range(10 * divisor * len(data) + 3 * divisor):
            line.append(ctx.get(dut.txd))
            await ctx.tick()

    simulate(dut, producer, monitor)
    # back-to-back bytes: each bit exactly `divisor` cycles, no idle time in between
    want = [b for byte in data for b in frame_bits(byte) for _ in range(divisor)]
    assert line[:len(want)] == want
    assert all(line[len(want):])


# -- loopback ------------------------------------------------------------------------------------

class Loopback(wiring.Component):
    """A UART whose transmit line is wired to its receive line."""

    def __init__(self, divisor):
        self.uart = UART(divisor)
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(RxByte))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = self.uart
        m.d.comb += self.uart.rxd.eq(self.uart.txd)
        wiring.connect(m, wiring.flipped(self.i), self.uart.tx)
        wiring.connect(m, self.uart.rx, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("divisor, seed", [(4, 1), (5, 2), (9, 3)])
def test_loopback_random_bytes(divisor, seed):
    dut = Loopback(divisor)
    rng = random.Random(seed)
    data = [rng.randrange(256) for _ in range(150)] + [0x00, 0xFF]
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.i, data, rng=random.Random(seed + 10), stall=0.7)

    async def consumer(ctx):
        # back-pressure well within a byte time, so nothing may be lost
        got.extend(await get_n(ctx, dut.o, len(data), rng=random.Random(seed + 20), stall=0.5))

    simulate(dut, producer, consumer)
    assert [g.data for g in got] == data
    assert not any(g.framing_error or g.overrun for g in got)


# -- receiver errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("divisor", [4, 6])
def test_framing_error_and_break(divisor):
    dut = UARTReceiver(divisor)
    got = []

    async def line(ctx):
        await ctx.tick().repeat(5)
        await send_bits(ctx, dut.rxd, frame_bits(0x3C, stop=0), divisor)
        # a break: the line stays low for several byte times; no further bytes may appear
        await send_bits(ctx, dut.rxd, [0] * 30, divisor)
        await send_bits(ctx, dut.rxd, [1] * 2, divisor)
        await send_bits(ctx, dut.rxd, frame_bits(0xC3), divisor)
        await send_bits(ctx, dut.rxd, frame_bits(0x81), divisor)
        await send_bits(ctx, dut.rxd, [1] * 3, divisor)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, 4, 80 * divisor))

    simulate(dut, line, consumer)
    assert [(g.data, g.framing_error, g.overrun) for g in got] == [
        (0x3C, 1, 0), (0xC3, 0, 0), (0x81, 0, 0)]


def test_glitches_are_ignored():
    divisor = 8
    dut = UARTReceiver(divisor)
    got = []

    async def line(ctx):
        for width in (1, 2, 3, 1):  # all shorter than half a bit
            await ctx.tick().repeat(7)
            await send_bits(ctx, dut.rxd, [0], width)
            ctx.set(dut.rxd, 1)
        await ctx.tick().repeat(7)
        await send_bits(ctx, dut.rxd, frame_bits(0x5A), divisor)
        await send_bits(ctx, dut.rxd, [1] * 3, divisor)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, 2, 20 * divisor))

    simulate(dut, line, consumer)
    assert [(g.data, g.framing_error) for g in got] == [(0x5A, 0)]


def test_sampling_tolerates_rate_error():
    # The far end runs about 4 % slow: 25 cycles per bit against a divisor of 24.
    dut = UARTReceiver(24)
    data = [0x00, 0xFF, 0x96]
    got = []

    async def line(ctx):
        for byte in data:
            await send_bits(ctx, dut.rxd, frame_bits(byte), 25)

    async def consumer(ctx):
        got.extend(await drain(ctx, dut.o, 3, 35 * 25))

    simulate(dut, line, consumer)
    assert [(g.data, g.framing_error) for g in got] == [(b, 0) for b in data]


def test_overrun_is_flagged_on_next_byte():
    divisor = 4
    dut = UARTReceiver(divisor)
    got = []

    async def line(ctx):
        for byte in (0x11, 0x22, 0x33, 0x44):
            await send_bits(ctx, dut.rxd, frame_bits(byte), divisor)
        await ctx.tick().repeat(4 * divisor)
        await send_bits(ctx, dut.rxd, frame_bits(0x55), divisor)

    async def consumer(ctx):
        # not ready while the first three bytes arrive: 0x22 and 0x33 are lost
        await ctx.tick().repeat(32 * divisor + 2)
        assert ctx.get(dut.o.valid)
        got.append(await stream_get(ctx, dut.o))
        for _ in range(2):
            got.append(await stream_get(ctx, dut.o))

    simulate(dut, line, consumer)
    assert [(g.data, g.overrun) for g in got] == [(0x11, 0), (0x44, 1), (0x55, 0)]
