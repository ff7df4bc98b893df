"""The stream test helpers move every payload once, in order, under random back-pressure."""

import random

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from streams import get_n, put_all


class _Fifo1(wiring.Component):
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        with m.If(self.o.ready | ~self.o.valid):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        m.d.comb += self.i.ready.eq(self.o.ready | ~self.o.valid)
        return m


def test_put_get_roundtrip_under_backpressure():
    dut = _Fifo1()
    data = list(range(50))
    got = []

    async def producer(ctx):
        await put_all(ctx, dut.i, data, rng=random.Random(2), stall=0.5)

    async def consumer(ctx):
        got.extend(await get_n(ctx, dut.o, len(data), rng=random.Random(3), stall=0.5))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert got == data
