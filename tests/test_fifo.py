"""hw.fifo.CreditFIFO: order and level against a Python queue, writes never refused, and a broken
promise (a write into a full FIFO, a trusted read of an empty one) raises ``overflow``."""

import random
from collections import deque

import pytest
from amaranth.sim import Simulator

from hw.fifo import CreditFIFO


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
