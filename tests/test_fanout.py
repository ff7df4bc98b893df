"""``hw.fanout.fanout_tree``: every copy is the source, ``tree_depth`` cycles late, and yosys
keeps every copy (it merges flip-flops of the same input and initial value)."""

import random

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from yosys_support import flip_flops as yosys_flip_flops

from hw.fanout import fanout_tree, tree_depth


class Fanned(wiring.Component):
    def __init__(self, shape, n, *, tree=True):
        self._n, self._tree = n, tree
        super().__init__({"a": In(shape), "o": Out(shape).array(n)})

    def elaborate(self, platform):
        m = Module()
        if self._tree:
            copies = fanout_tree(m, self.a, self._n, name="a")
        else:
            copies = [Signal.like(self.a, name=f"a{k}") for k in range(self._n)]
            m.d.sync += [c.eq(self.a) for c in copies]
        for k, copy in enumerate(copies):
            m.d.comb += self.o[k].eq(copy)
        return m


def test_tree_depth():
    assert [tree_depth(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 1, 2, 2, 3, 3, 4, 4, 5]
    with pytest.raises(ValueError, match="at least one copy, not 0"):
        tree_depth(0)


@pytest.mark.parametrize("shape,n", [(unsigned(5), 16), (signed(8), 3), (unsigned(1), 1)])
def test_copies_are_the_source_depth_cycles_late(shape, n):
    dut = Fanned(shape, n)
    lo, hi = (-(1 << (shape.width - 1)), 1 << (shape.width - 1)) if shape.signed \
        else (0, 1 << shape.width)
    rng = random.Random(n)
    sent = []

    async def bench(ctx):
        for t in range(40):
            v = rng.randrange(lo, hi)
            ctx.set(dut.a, v)
            sent.append(v)
            await ctx.tick()
            d = tree_depth(n)
            if t + 1 >= d:
                got = [ctx.get(dut.o[k]) for k in range(n)]
                assert got == [sent[t + 1 - d]] * n, (t, got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.yosys
def test_yosys_keeps_every_copy(tmp_path):
    """Synthesised for the ECP5, 16 copies of a 5-bit value stay 16 x 5 leaf flip-flops (and
    the tree's inner ones); plain per-copy registers of the same input become one."""
    width, n = 5, 16

    def flip_flops(tree):
        return yosys_flip_flops(Fanned(unsigned(width), n, tree=tree), tmp_path, run=None)

    assert flip_flops(tree=True) == width * (2 + 4 + 8 + 16)
    assert flip_flops(tree=False) == width
