"""hw.fifo.CreditFIFO: order and level against a Python queue, writes never refused, and a broken
promise (a write into a full FIFO, a trusted read of an empty one) raises ``overflow``.
hw.fifo.BlockFIFO: order, level and room against a Python queue, its latency, and a word a cycle
through it."""

import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from hw.fifo import BlockFIFO, CreditFIFO


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("depth", [1, 3, 4, 5])
@pytest.mark.parametrize("checked", [True, False], ids=["checked", "trusted"])
def test_order_and_level_with_every_promise_kept(depth, checked):
    rng = random.Random(depth * 2 + checked)
    dut = CreditFIFO(width=10, depth=depth, checked_reads=checked)
    model = deque()

    async def bench(ctx):
        for _ in range(600):
            # a checked FIFO is also asked to read while empty: nothing happens
            want_read = rng.random() < 0.5 and (checked or bool(model))
            write = rng.random() < 0.6 and (len(model) < depth or (want_read and bool(model)))
            word = rng.randrange(1 << 10)
            assert ctx.get(dut.level) == len(model)
            assert ctx.get(dut.r_rdy) == bool(model)
            if model:
                assert ctx.get(dut.r_data) == model[0]
            ctx.set(dut.r_en, want_read)
            ctx.set(dut.w_en, write)
            ctx.set(dut.w_data, word)
            await ctx.tick()
            if want_read and model:
                model.popleft()
            if write:
                model.append(word)
        assert not ctx.get(dut.overflow)

    run(dut, bench)


@pytest.mark.parametrize("case", ["write_full", "trusted_read_empty"])
def test_a_broken_promise_is_flagged(case):
    dut = CreditFIFO(width=4, depth=2, checked_reads=False)

    async def bench(ctx):
        if case == "write_full":
            ctx.set(dut.w_en, 1)
            await ctx.tick().repeat(2)
            assert ctx.get(dut.level) == 2 and not ctx.get(dut.overflow)
            await ctx.tick()
        else:
            ctx.set(dut.r_en, 1)
            await ctx.tick()
        assert ctx.get(dut.overflow)

    run(dut, bench)


def test_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="depth=0"):
        CreditFIFO(width=8, depth=0)


@pytest.mark.parametrize("depth,ahead", [(2, 4), (5, 4), (8, 5), (16, 6)])
def test_block_fifo_order_level_and_room(depth, ahead):
    """Random writes (refused while the RAM is full: ``w_rdy``) and reads: every word comes out
    once, in order; ``level`` counts every word held; the RAM refuses only when it holds
    ``depth`` words."""
    rng = random.Random(depth * 7 + ahead)
    dut = BlockFIFO(width=9, depth=depth, ahead=ahead)
    model = deque()
    out = []

    async def bench(ctx):
        refused = 0
        for cycle in range(1500):
            # writes come in bursts and reads stall now and then, so the RAM fills and empties
            phase = (cycle // 100) % 3
            write = rng.random() < (0.9, 0.5, 0.1)[phase]
            read = rng.random() < (0.3, 0.6, 0.95)[phase]
            word = rng.randrange(1 << 9)
            assert ctx.get(dut.level) == len(model)
            assert ctx.get(dut.level) <= depth + ahead
            if ctx.get(dut.r_rdy):
                assert ctx.get(dut.r_data) == model[0]
            # the RAM holds what is neither in the LUT RAM nor on its way out: refused only when
            # it is full, so never while fewer than depth words are held
            if len(model) < depth:
                assert ctx.get(dut.w_rdy)
            accepted = write and ctx.get(dut.w_rdy)
            refused += write and not accepted
            popped = read and ctx.get(dut.r_rdy)
            ctx.set(dut.w_en, write)
            ctx.set(dut.w_data, word)
            ctx.set(dut.r_en, read)
            await ctx.tick()
            if popped:
                out.append(model.popleft())
            if accepted:
                model.append(word)
        assert refused > 0 and len(out) > 300

    run(dut, bench)


def test_block_fifo_latency_and_a_word_a_cycle():
    """A word written is readable 4 cycles later; written and read in every cycle, a word
    leaves in every cycle."""
    dut = BlockFIFO(width=8, depth=16, ahead=4)

    async def bench(ctx):
        ctx.set(dut.w_en, 1)
        ctx.set(dut.w_data, 0)
        await ctx.tick()
        ctx.set(dut.w_en, 0)
        seen = []
        for _ in range(1, 8):
            seen.append(ctx.get(dut.r_rdy))
            await ctx.tick()
        assert seen == [0, 0, 0, 1, 1, 1, 1]
        ctx.set(dut.r_en, 1)
        await ctx.tick()
        assert not ctx.get(dut.r_rdy)
        # a stream: one word a cycle in, one a cycle out once the first is through
        got = []
        for k in range(100):
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_data, k + 1)
            if ctx.get(dut.r_rdy):
                got.append(ctx.get(dut.r_data))
            await ctx.tick()
        assert got == list(range(1, len(got) + 1)) and len(got) == 100 - BlockFIFO.READ_LATENCY - 2

    run(dut, bench)


def test_block_fifo_bad_geometry_is_refused():
    with pytest.raises(ValueError, match="ahead=3"):
        BlockFIFO(width=8, depth=8, ahead=3)
