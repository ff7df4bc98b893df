"""The top level's feature-map path in Amaranth's simulator: the writer packs engine beats into
memory words, the reader unpacks them into engine input beats, both through one memory port
(ModelMemory) with random back-pressure; plus the arbiter, the score serializer and the
schedule-row packing."""

from __future__ import annotations

import dataclasses
import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from streams import beats_of, simulate, stream_get, stream_put

from hw.config import AccelConfig
from hw.memport import MemCmd, ModelMemory
from hw.top import (
    MAX_LEN,
    CommandArbiter,
    FmapReader,
    FmapWriter,
    ScoreSerializer,
    StepLayout,
    pack_schedule,
    pack_step,
)


def _cfg(port_bytes: int, burst: int = 32) -> AccelConfig:
    return dataclasses.replace(AccelConfig(), fmap_port_bytes=port_bytes,
                               fmap_read_latency=5, fmap_burst_bytes=burst, fmap_addr_bits=12)


class _Path(wiring.Component):
    """Writer and reader sharing one ModelMemory through the arbiter (as in the top level)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.wr = FmapWriter(cfg)
        self.rd = FmapReader(cfg)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.wr = wr = self.wr
        m.submodules.rd = rd = self.rd
        m.submodules.arb = arb = CommandArbiter(MemCmd(cfg.fmap_addr_bits, MAX_LEN))
        m.submodules.mem = mem = ModelMemory(cfg, depth=1024, addr_bits=cfg.fmap_addr_bits,
                                             max_len=MAX_LEN)
        wiring.connect(m, wr.cmd, arb.a)
        wiring.connect(m, rd.cmd, arb.b)
        wiring.connect(m, arb.o, mem.bus.cmd)
        wiring.connect(m, wr.wdata, mem.bus.wdata)
        wiring.connect(m, mem.bus.rdata, rd.rdata)
        return m


async def _start_writer(ctx, wr, addr, vb):
    """Start ``wr`` on a tensor at word ``addr`` of ``vb``-byte values (a one-cycle strobe)."""
    ctx.set(wr.addr, addr)
    ctx.set(wr.vb, vb)
    ctx.set(wr.start, 1)
    await ctx.tick()
    ctx.set(wr.start, 0)


def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


@pytest.mark.parametrize("port_bytes,burst,vb,seed", [
    (8, 32, 1, 1), (8, 32, 2, 2), (2, 16, 1, 3), (2, 16, 2, 4), (8, 256, 1, 5)])
def test_write_then_read_back(port_bytes, burst, vb, seed):
    """Values written by the writer (random beat sizes, stalls) come back from the reader at
    another address in the same order, with the right sign, in beats of <= in_lanes values;
    the byte after the tensor is left alone (masked final word)."""
    cfg = _cfg(port_bytes, burst)
    rng = random.Random(seed * 100 + port_bytes + vb)
    n = rng.randint(40, 200)
    lo, hi = (0, 255) if vb == 1 else (-256, 255)
    values = [rng.randint(lo, hi) for _ in range(n)]
    dut = _Path(cfg)
    addr_a, addr_b = 8, 8 + 512 // port_bytes     # word addresses of two tensors
    got = []

    async def bench(ctx):
        wr, rd = dut.wr, dut.rd
        # a sentinel tensor right behind the tensor's end, written first
        tail_word = addr_a + (n * vb) // port_bytes
        for addr, vals in ((addr_a, values), (addr_b, list(range(1, 60)))):
            await _start_writer(ctx, wr, addr, vb)
            for beat in beats_of(vals, 6, cfg.requant_units, rng):
                await stream_put(ctx, wr.i, beat, rng=rng, stall=0.3)
            await ctx.tick().until(~wr.busy)
        del tail_word
        ctx.set(rd.addr, addr_a)
        ctx.set(rd.n, n)
        ctx.set(rd.vb, vb)
        ctx.set(rd.start, 1)
        await ctx.tick()
        ctx.set(rd.start, 0)
        while len(got) < n:
            beat = await stream_get(ctx, rd.o, rng=rng, stall=0.3)
            assert 1 <= beat.count <= cfg.in_lanes
            got.extend(_signed(int(beat.data[k]), cfg.input_bits) for k in range(beat.count))
        await ctx.tick().until(~rd.busy)
        # the second tensor is intact: read it too
        ctx.set(rd.addr, addr_b)
        ctx.set(rd.n, 59)
        ctx.set(rd.start, 1)
        await ctx.tick()
        ctx.set(rd.start, 0)
        second = []
        while len(second) < 59:
            beat = await stream_get(ctx, rd.o)
            second.extend(_signed(int(beat.data[k]), cfg.input_bits) for k in range(beat.count))
        assert second == list(range(1, 60))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * 200_000)
    assert got == values


@pytest.mark.parametrize("vb,port_bytes", [(1, 2), (2, 8), (4, 8), (4, 2), (1, 8)])
def test_writer_packs_bytes_and_masks_the_last_word(vb, port_bytes):
    """The memory holds the values little-endian, back to back; the final word's unused bytes
    keep their old content (here 0xAA). The words are read back through the arbiter's second
    input, as the reader would."""
    cfg = _cfg(port_bytes)
    n = 13
    values = [(0x01020304 * (i + 1)) & ((1 << (8 * vb)) - 1) for i in range(n)]
    if vb == 4:
        values = [v - (1 << 32) if v >> 31 else v for v in values]
    init = [int.from_bytes(b"\xaa" * port_bytes, "little")] * 64
    m = Module()
    m.submodules.wr = wr = FmapWriter(cfg)
    m.submodules.arb = arb = CommandArbiter(MemCmd(cfg.fmap_addr_bits, MAX_LEN))
    m.submodules.mem = mem = ModelMemory(cfg, depth=64, addr_bits=cfg.fmap_addr_bits,
                                         max_len=MAX_LEN, init=init)
    wiring.connect(m, wr.cmd, arb.a)
    wiring.connect(m, arb.o, mem.bus.cmd)
    wiring.connect(m, wr.wdata, mem.bus.wdata)
    nwords = -(-n * vb // port_bytes) + 1
    words = []

    async def bench(ctx):
        await _start_writer(ctx, wr, 3, vb)
        for beat in beats_of(values, 5, cfg.requant_units):
            await stream_put(ctx, wr.i, beat)
        await ctx.tick().until(~wr.busy)
        await stream_put(ctx, arb.b, {"addr": 2, "len": nwords + 1, "write": 0})
        for _ in range(nwords + 1):
            words.append(int((await stream_get(ctx, mem.bus.rdata)).data))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * 5000)
    assert words[0] == init[0]
    expect = b"".join((v & ((1 << (8 * vb)) - 1)).to_bytes(vb, "little") for v in values)
    raw = b"".join(w.to_bytes(port_bytes, "little") for w in words[1:])
    assert raw[:len(expect)] == expect
    assert set(raw[len(expect):]) == {0xAA}


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("vb,port_bytes,burst", [(4, 2, 8), (2, 2, 4), (4, 8, 32)])
def test_writer_fifo_fills_and_loses_nothing(vb, port_bytes, burst, fast):
    """A memory that takes write commands only now and then, and words slowly: the writer's FIFO
    runs full while the engine offers a beat every cycle. Every word arrives, in order, once,
    where its command put it; the writer never writes into a full FIFO (with fast_pipeline its
    room is a register decided a cycle ahead)."""
    cfg = dataclasses.replace(_cfg(port_bytes, burst), fast_pipeline=fast)
    rng = random.Random(vb * 100 + port_bytes * 10 + burst + fast)
    n = 150
    values = [rng.randint(-(1 << 31), (1 << 31) - 1) >> (32 - 8 * vb) for _ in range(n)]
    dut = FmapWriter(cfg)
    mem = {}
    done = []

    async def engine(ctx):
        await _start_writer(ctx, dut, 5, vb)
        beats = beats_of(values, 7, cfg.requant_units, rng)
        for _ in range(20_000):                 # a bound, so that a lost word fails, not hangs
            if beats:
                ctx.set(dut.i.payload, beats[0])
                ctx.set(dut.i.valid, 1)
                if ctx.get(dut.i.ready):
                    beats.pop(0)
            else:
                ctx.set(dut.i.valid, 0)
                if not ctx.get(dut.busy):
                    done.append(1)
                    break
            await ctx.tick()

    async def memory(ctx):
        """Takes a command after 0-60 idle cycles, then its words at random (half the cycles);
        one command at a time."""
        wait, addr, left = rng.randint(0, 60), 0, 0
        for _ in range(40_000):
            if done:
                break
            take_word = left > 0 and rng.random() < 0.5
            ctx.set(dut.cmd.ready, left == 0 and wait == 0)
            ctx.set(dut.wdata.ready, take_word)
            if left == 0 and wait == 0 and ctx.get(dut.cmd.valid):
                cmd = ctx.get(dut.cmd.payload)
                assert cmd.write and 1 <= cmd.len <= burst // port_bytes
                addr, left, wait = cmd.addr, cmd.len, rng.randint(0, 60)
            elif take_word and ctx.get(dut.wdata.valid):
                word = ctx.get(dut.wdata.payload)
                for b in range(port_bytes):
                    if (word.mask >> b) & 1:
                        a = addr * port_bytes + b
                        assert a not in mem, f"byte {a} written twice"
                        mem[a] = (word.data >> (8 * b)) & 0xFF
                addr, left = addr + 1, left - 1
            elif left == 0:
                wait = max(wait - 1, 0)
            await ctx.tick()

    simulate(dut, engine, memory)
    assert done, "the writer did not finish: a word went missing"
    expect = b"".join((v & ((1 << (8 * vb)) - 1)).to_bytes(vb, "little") for v in values)
    base = 5 * port_bytes
    assert sorted(mem) == list(range(base, base + len(expect)))
    assert bytes(mem[base + i] for i in range(len(expect))) == expect


def test_arbiter_keeps_a_grant_until_taken():
    """While ``o`` is stalled, a command offered on ``b`` stays on ``o`` even when ``a`` (the
    preferred input) becomes valid; afterwards ``a`` goes first."""
    layout = MemCmd(8, MAX_LEN)
    dut = CommandArbiter(layout)
    seen = []

    async def bench(ctx):
        ctx.set(dut.b.valid, 1)
        ctx.set(dut.b.payload, {"addr": 7, "len": 1, "write": 0})
        await ctx.tick()
        ctx.set(dut.a.valid, 1)
        ctx.set(dut.a.payload, {"addr": 9, "len": 2, "write": 1})
        for _ in range(3):
            assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.addr) == 7
            await ctx.tick()
        ctx.set(dut.o.ready, 1)
        for _ in range(2):
            await ctx.delay(1e-9)
            seen.append((ctx.get(dut.o.payload.addr), ctx.get(dut.a.ready),
                         ctx.get(dut.b.ready)))
            taken_b = ctx.get(dut.b.ready)
            await ctx.tick()
            if taken_b:
                ctx.set(dut.b.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run_until(1e-8 * 20)
    assert seen == [(7, 0, 1), (9, 1, 0)]


def test_score_serializer_splits_beats():
    cfg = AccelConfig()
    dut = ScoreSerializer(cfg)
    values = list(range(-3, 20))
    out = []

    async def bench(ctx):
        rng = random.Random(3)
        for beat in beats_of(values, 7, cfg.requant_units, rng):
            await stream_put(ctx, dut.i, beat, rng=rng, stall=0.3)

    async def sink(ctx):
        rng = random.Random(4)
        while True:
            s = await stream_get(ctx, dut.o, rng=rng, stall=0.3)
            out.append((_signed(int(s.data), 32), int(s.last)))
            if s.last:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.add_testbench(sink)
    sim.run_until(1e-8 * 2000)
    assert out == [(v, int(i == len(values) - 1)) for i, v in enumerate(values)]


def _entry(**kw):
    from compiler.schedule import ScheduleEntry

    base = dict(name="s", cmd={}, in_addr=0, in_values=10, in_value_bytes=1, out_addr=256,
                out_values=10, out_value_bytes=1, in_stream=False, out_stream=False)
    base.update(kw)
    return ScheduleEntry(**base)


def test_step_rows_and_refusals():
    cfg = AccelConfig()
    from hw.program import cmd_fields

    cmd = {name: 0 for name, _, _ in cmd_fields(cfg)}
    cmd["in_total"] = 10
    row = pack_step(cfg, _entry(cmd=cmd, in_addr=512, out_addr=1024), last=True)
    layout = StepLayout(cfg)
    fields = {name: (row >> f.offset) & ((1 << f.width) - 1) for name, f in layout}
    assert fields["in_addr"] == 512 // cfg.fmap_port_bytes
    assert fields["out_addr"] == 1024 // cfg.fmap_port_bytes
    assert (fields["in_values"], fields["in_vb"], fields["last"]) == (10, 1, 1)
    with pytest.raises(ValueError, match=r"input address 3 is not a multiple of the 8-byte"):
        pack_step(cfg, _entry(cmd=cmd, in_addr=3), last=False)
    with pytest.raises(ValueError, match=r"3-byte input values, expected 1 or 2"):
        pack_step(cfg, _entry(cmd=cmd, in_value_bytes=3), last=False)
    with pytest.raises(ValueError, match=r"beyond the port's"):
        pack_step(cfg, _entry(cmd=cmd, out_addr=8 << cfg.fmap_addr_bits), last=False)

    class _S:
        entries = [_entry(cmd=cmd)]

    with pytest.raises(ValueError, match=r"first step reads the input stream"):
        pack_schedule(cfg, _S)
