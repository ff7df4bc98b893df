"""hw.skid.RegisterSlice and PointerQueue: order, one beat a cycle, and nothing combinational
through them (PointerQueue's payload: the entry at its read pointer)."""

import random

import pytest
from amaranth import Cat, unsigned
from amaranth.sim import Simulator
from streams import get_n, put_all, simulate

from hw.skid import PointerQueue, RegisterSlice

KINDS = pytest.mark.parametrize("kind", [RegisterSlice, PointerQueue],
                                ids=["slice", "queue"])


def _run(dut, testbenches, processes=(), until=2e-3):
    """Simulate ``dut`` on a 1 MHz clock with these testbenches and processes for ``until``."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in testbenches:
        sim.add_testbench(bench)
    for proc in processes:
        sim.add_process(proc)
    sim.run_until(until)


@KINDS
@pytest.mark.parametrize("seed", range(4))
def test_keeps_every_beat_in_order_under_back_pressure(kind, seed):
    rng = random.Random(seed)
    dut = kind(unsigned(12))
    sent = [rng.randrange(1 << 12) for _ in range(200)]
    got = []

    async def source(ctx):
        await put_all(ctx, dut.i, sent, rng=rng, stall=0.3)

    async def sink(ctx):
        got.extend(await get_n(ctx, dut.o, len(sent), rng=rng, stall=0.4))

    async def level(ctx):
        async for _clk, _rst, lv, ov in ctx.tick().sample(dut.level, dut.o.valid):
            assert lv <= 2
            assert not ov or lv >= 1        # o.valid only with a beat held

    _run(dut, [source, sink], [level])
    assert got == sent


@KINDS
@pytest.mark.parametrize("seed", range(3))
def test_payload_without_valid_is_never_kept(kind, seed):
    """Between beats the source drives garbage on the payload (the queue's free entry loads it
    every cycle): only the beats sent with ``valid`` come out."""
    rng = random.Random(seed)
    dut = kind(unsigned(12))
    sent = [rng.randrange(1 << 11) for _ in range(150)]
    got = []

    async def source(ctx):
        for p in sent:
            while rng.random() < 0.4:
                ctx.set(dut.i.payload, (1 << 11) | rng.randrange(1 << 11))   # never a beat
                await ctx.tick()
            ctx.set(dut.i.payload, p)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.i.payload, (1 << 11) | rng.randrange(1 << 11))

    async def sink(ctx):
        got.extend(await get_n(ctx, dut.o, len(sent), rng=rng, stall=0.4))

    _run(dut, [source, sink])
    assert got == sent


@KINDS
def test_passes_a_beat_every_cycle(kind):
    dut = kind(unsigned(8))
    n = 50
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for t in range(n + 3):
            ctx.set(dut.i.payload, t % 256)
            # always ready downstream: the slice never pushes back
            assert ctx.get(dut.i.ready) == 1
            if ctx.get(dut.o.valid):
                seen.append((t, ctx.get(dut.o.payload)))
            await ctx.tick()

    simulate(dut, bench)
    # each beat leaves the cycle after it was taken
    assert seen[:n] == [(t + 1, t % 256) for t in range(n)]


@KINDS
def test_outputs_do_not_follow_inputs_in_the_same_cycle(kind):
    """o.valid, o.payload and i.ready come from flip-flops: changing i.valid, i.payload and
    o.ready without a clock edge leaves them as they are."""
    dut = kind(unsigned(8))

    async def bench(ctx):
        # fill both registers: one beat in o, one in the skid (o stalled)
        ctx.set(dut.o.ready, 0)
        for v in (11, 22):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, v)
            await ctx.tick()
        assert ctx.get(dut.i.ready) == 0 and ctx.get(dut.level) == 2
        before = (ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready))
        for ready, valid, payload in ((1, 0, 33), (1, 1, 44), (0, 1, 55)):
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, payload)
            await ctx.delay(1e-8)
            assert (ctx.get(dut.o.valid), ctx.get(dut.o.payload), ctx.get(dut.i.ready)) == \
                before
        # and the stalled beats come out in order once o is ready
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        out = []
        for _ in range(3):
            await ctx.tick()
            if ctx.get(dut.o.valid):
                out.append(ctx.get(dut.o.payload))
        assert before[1] == 11 and out == [22]

    simulate(dut, bench)


@pytest.mark.parametrize("seed", range(3))
def test_queue_flags_register_is_the_head_bits(seed):
    """``o_flags`` (a register) equals ``flags`` of the head payload in every cycle, under
    random stalls on both sides, with garbage between beats."""
    rng = random.Random(seed)
    dut = PointerQueue(unsigned(12), flags=lambda p: Cat(p[3], p[0:2]))
    sent = [rng.randrange(1 << 12) for _ in range(150)]
    got = []
    checked = []

    async def source(ctx):
        for p in sent:
            while rng.random() < 0.3:
                ctx.set(dut.i.payload, rng.randrange(1 << 12))
                await ctx.tick()
            ctx.set(dut.i.payload, p)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        got.extend(await get_n(ctx, dut.o, len(sent), rng=rng, stall=0.4))

    async def check(ctx):
        async for _clk, _rst, flags, head in ctx.tick().sample(dut.o_flags, dut.o.payload):
            want = ((head >> 3) & 1) | ((head & 3) << 1)
            assert flags == want
            checked.append(1)

    _run(dut, [source, sink], [check], until=1e-3)
    assert got == sent
    assert len(checked) > 500
