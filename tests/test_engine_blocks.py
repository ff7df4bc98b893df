"""Unit tests of the engine's blocks in Amaranth's simulator, against numpy models."""

import random

import numpy as np
import pytest
from amaranth import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import simulate
from yosys_support import flip_flops as yosys_flip_flops

from compiler import golden
from hw.config import AccelConfig
from hw.lbuf import LUTRAM_MAX_DEPTH, SegmentBuffer, SegmentRead, SegmentWrite
from hw.pe import ColumnArray
from hw.requant import Requantizer, ResultDrain

CFG = AccelConfig()
SLOW = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])



@SLOW
@given(seed=st.integers(0, 10_000))
def test_segment_buffer_reads_masked_segments(seed):
    rng = random.Random(seed)
    depth, banks, lanes, wlanes = 64, 16, 9, 6
    dut = SegmentBuffer(depth=depth, banks=banks, lanes=lanes, wlanes=wlanes, width=9,
                        row_bits=12)
    model = [0] * depth
    checks = []

    async def bench(ctx):
        written = 0
        for _ in range(60):
            # write a run of 1..wlanes values at the next absolute indices (random idle cycles)
            if rng.random() < 0.7:
                n = rng.randint(1, wlanes)
                vals = [rng.randint(-256, 255) for _ in range(n)]
                ctx.set(dut.w.payload, {"addr": written % depth,
                                        "data": vals + [0] * (wlanes - n), "count": n})
                ctx.set(dut.w.valid, 1)
            else:
                ctx.set(dut.w.valid, 0)
                vals = []
            # read a segment somewhere in the written part
            addr = rng.randrange(depth)
            off = rng.randint(-12, 20)
            row_len = rng.randint(1, 24)
            row_ok = rng.random() < 0.85
            ctx.set(dut.r_en, 1)
            ctx.set(dut.r_req, {"addr": addr, "off": off, "row_len": row_len, "row_ok": row_ok,
                                "nomask": 0})
            expect = [model[(addr + i) % depth] if row_ok and 0 <= off + i < row_len else 0
                      for i in range(lanes)]
            # a read sees the memory before this cycle's write (the engine never reads a
            # value in the cycle it is written: it waits for the written count)
            for i, v in enumerate(vals):
                model[(written + i) % depth] = v
            written += len(vals)
            await ctx.tick()
            ctx.set(dut.w.valid, 0)
            ctx.set(dut.r_en, 0)
            await ctx.tick()
            got = [ctx.get(dut.r_data[i]) for i in range(lanes)]
            checks.append((got, expect))

    simulate(dut, bench)
    for got, expect in checks:
        assert got == expect


@pytest.mark.parametrize("latency,depth,select_init", [
    (2, 64, 0), (3, 64, 0), (3, 16 * (LUTRAM_MAX_DEPTH * 2), 0),
    (4, 64, 0), (4, 16 * (LUTRAM_MAX_DEPTH * 2), 15),
    (5, 64, 15), (5, 16 * (LUTRAM_MAX_DEPTH * 2), 0)])
def test_segment_buffer_without_hold_reads_every_cycle(latency, depth, select_init):
    """``hold=False`` (the engine's fast pipeline): a request every cycle, ``r_en`` low, and
    ``r_data`` gives each request's masked lanes exactly ``latency`` cycles later (latency 3 to
    5: banks small enough for LUT RAM, and block RAM banks; the registers of the buffer's own
    starting at 0 or at all ones)."""
    rng = random.Random(3)
    banks, lanes, wlanes = 16, 9, 6
    dut = SegmentBuffer(depth=depth, banks=banks, lanes=lanes, wlanes=wlanes, width=9,
                        row_bits=12, hold=False, latency=latency, select_init=select_init)
    model = [rng.randint(-256, 255) for _ in range(depth)]
    got, want = [], []

    async def bench(ctx):
        for a in range(0, depth, wlanes):
            n = min(wlanes, depth - a)
            ctx.set(dut.w.payload, {"addr": a, "data": model[a:a + n] + [0] * (wlanes - n),
                                    "count": n})
            ctx.set(dut.w.valid, 1)
            await ctx.tick()
        ctx.set(dut.w.valid, 0)
        ctx.set(dut.r_en, 0)
        for t in range(40):
            addr, off, row_len = rng.randrange(depth), rng.randint(-4, 8), rng.randint(1, 12)
            ctx.set(dut.r_req, {"addr": addr, "off": off, "row_len": row_len, "row_ok": 1,
                                "nomask": 0})
            want.append([model[(addr + i) % depth] if 0 <= off + i < row_len else 0
                         for i in range(lanes)])
            await ctx.tick()
            if t >= latency - 1:    # the lanes of the request `latency` cycles ago (sampled
                got.append([ctx.get(dut.r_data[i]) for i in range(lanes)])  # a tick late)

    simulate(dut, bench)
    assert len(got) > 30 and got == want[:len(got)]


@pytest.mark.parametrize("depth", [64, 16 * (LUTRAM_MAX_DEPTH * 2)])
@pytest.mark.parametrize("write_latency,latency", [(2, 3), (3, 3), (3, 5)])
def test_segment_buffer_write_latency_lands_that_much_later(depth, write_latency, latency):
    """``write_latency=2`` or 3 (the engine's buffers): each write is registered once or twice
    before the banks, so a request ``write_latency`` cycles after a write reads its values,
    with the read's ``latency`` 3 or 5 (LUT RAM banks and block RAM banks); the slots it did
    not write keep theirs."""
    rng = random.Random(5)
    banks, lanes, wlanes = 16, 9, 6
    dut = SegmentBuffer(depth=depth, banks=banks, lanes=lanes, wlanes=wlanes, width=9,
                        row_bits=12, hold=False, latency=latency, write_latency=write_latency)
    model = [0] * depth
    got, want = [], []

    async def bench(ctx):
        ctx.set(dut.r_en, 0)
        for _ in range(60):
            # a write of 1..wlanes values at a random place, then a request write_latency
            # cycles later around it: the lanes it wrote and the ones next to it
            addr, n = rng.randrange(depth), rng.randint(1, wlanes)
            vals = [rng.randint(-256, 255) for _ in range(n)]
            ctx.set(dut.w.payload, {"addr": addr, "data": vals + [0] * (wlanes - n),
                                    "count": n})
            ctx.set(dut.w.valid, 1)
            await ctx.tick()
            ctx.set(dut.w.valid, 0)
            for _ in range(write_latency - 1):
                await ctx.tick()
            for i, v in enumerate(vals):
                model[(addr + i) % depth] = v
            start = (addr - rng.randint(0, lanes - n)) % depth
            ctx.set(dut.r_req, {"addr": start, "off": 0, "row_len": lanes, "row_ok": 1,
                                "nomask": 1})
            want.append([model[(start + i) % depth] for i in range(lanes)])
            for _ in range(latency):
                await ctx.tick()
            got.append([ctx.get(dut.r_data[i]) for i in range(lanes)])

    simulate(dut, bench)
    assert len(got) == 60 and got == want


@pytest.mark.parametrize("write_latency", [2, 3])
def test_segment_buffer_write_is_not_seen_a_cycle_early(write_latency):
    """A request ``write_latency - 2`` cycles after a write still reads the old value, one a
    cycle later the new one (LUT RAM banks, latency 3): each registered stage of the write
    really delays it (a ``write_latency=3`` whose second stage was not registered landed a
    cycle early)."""
    banks, lanes, wlanes = 16, 9, 6
    dut = SegmentBuffer(depth=64, banks=banks, lanes=lanes, wlanes=wlanes, width=9,
                        row_bits=12, hold=False, latency=3, write_latency=write_latency)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.r_en, 0)
        ctx.set(dut.r_req, {"addr": 5, "off": 0, "row_len": lanes, "row_ok": 1, "nomask": 1})
        ctx.set(dut.w.payload, {"addr": 5, "data": [77] + [0] * (wlanes - 1), "count": 1})
        ctx.set(dut.w.valid, 1)             # the write in cycle 0, a request in every cycle
        for cycle in range(write_latency + 4):
            await ctx.tick()
            ctx.set(dut.w.valid, 0)
            # after tick cycle + 1: the lanes of the request of cycle cycle + 1 - 3
            seen[cycle + 1 - 3] = ctx.get(dut.r_data[0])

    simulate(dut, bench)
    assert seen[write_latency - 2] == 0 and seen[write_latency - 1] == 77, seen


def test_segment_buffer_write_latency_is_one_to_three():
    with pytest.raises(ValueError, match="write_latency must be 1, 2 or 3, not 4"):
        SegmentBuffer(depth=64, banks=16, lanes=9, wlanes=6, width=9, row_bits=12,
                      write_latency=4)


@pytest.mark.parametrize("latency,hold", [(3, True), (5, True), (6, False), (1, False)])
def test_segment_buffer_latency_above_two_needs_no_hold(latency, hold):
    with pytest.raises(ValueError, match="latency must be 2, or 3 to 5 with hold=False"):
        SegmentBuffer(depth=64, banks=16, lanes=9, wlanes=6, width=9, row_bits=12,
                      latency=latency, hold=hold)


@pytest.mark.parametrize("fast", [True, False])
@SLOW
@given(seed=st.integers(0, 10_000))
def test_column_array_accumulates_groups(fast, seed):
    rng = np.random.default_rng(seed)
    cfg = AccelConfig(pe_columns=4, requant_units=2, fast_pipeline=fast)
    dut = ColumnArray(cfg)
    assert dut.latency == cfg.array_latency == (6 if fast else 4)
    lanes, cols = cfg.pe_lanes, cfg.pe_columns
    groups = []
    for _ in range(5):
        passes = int(rng.integers(1, 4))
        x = rng.integers(-256, 256, size=(passes, lanes))
        w = rng.integers(-127, 128, size=(passes, cols, lanes))
        b = rng.integers(-(1 << 20), 1 << 20, size=cols)
        groups.append((x, w, b, b + np.einsum("pl,pcl->c", x, w)))
    got = []

    async def drive(ctx):
        sched = []
        for gi, (x, _w, _b, _) in enumerate(groups):
            for p in range(len(x)):
                sched.append((gi, p, p == 0, p == len(x) - 1))
                if rng.random() < 0.3:
                    sched.append(None)        # an idle cycle between passes
        bias_at = {}
        for t, item in enumerate(sched):
            if item is None:
                ctx.set(dut.en, 0)
            else:
                gi, p, first, last = item
                x, w, b, _ = groups[gi]
                ctx.set(dut.en, 1)
                ctx.set(dut.first, first)
                ctx.set(dut.last, last)
                ctx.set(dut.x, x[p].tolist())
                ctx.set(dut.w, w[p].tolist())
                if first:
                    bias_at[t + dut.latency - 1] = b
            if t in bias_at:
                ctx.set(dut.bias, bias_at[t].tolist())
            await ctx.tick()
        ctx.set(dut.en, 0)
        for t in range(len(sched), len(sched) + dut.latency - 1):
            if t in bias_at:
                ctx.set(dut.bias, bias_at[t].tolist())
            await ctx.tick()

    async def watch(ctx):
        async for _clk, _rst, done, acc in ctx.tick().sample(dut.done, dut.acc):
            if done:
                got.append([int(acc[c]) for c in range(cols)])
                if len(got) == len(groups):
                    return

    simulate(dut, drive, watch)
    assert got == [g[3].tolist() for g in groups]


@pytest.mark.parametrize("fast", [True, False])
@SLOW
@given(seed=st.integers(0, 10_000))
def test_requantizer_matches_golden(fast, seed):
    rng = np.random.default_rng(seed)
    cfg = AccelConfig(fast_pipeline=fast)
    r = cfg.requant_units
    dut = Requantizer(cfg)
    assert dut.latency == cfg.requant_latency == (6 if fast else 4)
    n = 12
    acc = rng.integers(-(1 << 31), 1 << 31, size=(n, r))
    acc[: n // 2] >>= rng.integers(0, 24, size=(n // 2, r))
    mult = rng.integers(0, 1 << 16, size=(n, r))
    shift = rng.integers(1, 48, size=(n, r))
    ymax = [255 if i % 2 else 65535 for i in range(n)]
    got = []

    async def drive(ctx):
        for i in range(n):
            ctx.set(dut.valid, 1)
            ctx.set(dut.acc, acc[i].tolist())
            ctx.set(dut.mult, mult[i].tolist())
            ctx.set(dut.shift, shift[i].tolist())
            ctx.set(dut.meta, {"count": r, "dest": 0, "ymax": ymax[i], "last": 0})
            await ctx.tick()
        ctx.set(dut.valid, 0)

    async def watch(ctx):
        cycle = 0
        async for _clk, _rst, valid, y, meta in ctx.tick().sample(dut.out_valid, dut.y,
                                                                 dut.out_meta):
            cycle += 1
            if valid:
                # one value a cycle, the first ``latency`` cycles after the first input (the
                # sample at an edge holds the values before it)
                assert cycle == dut.latency + 1 + len(got)
                got.append(([int(y[k]) for k in range(r)], int(meta.ymax)))
                if len(got) == n:
                    return

    simulate(dut, drive, watch)
    for i, (y, ym) in enumerate(got):
        assert ym == ymax[i]
        assert y == golden.requantize(acc[i], mult[i], shift[i], 0, ymax[i]).tolist()


@SLOW
@given(seed=st.integers(0, 10_000))
def test_result_drain_chunks_in_order_under_backpressure(seed):
    rng = random.Random(seed)
    cfg = CFG
    cols, r = cfg.pe_columns, cfg.requant_units
    dut = ResultDrain(cfg)
    groups = []
    for gi in range(7):
        nvalid = rng.randint(1, cols)
        acc = [rng.randint(-(1 << 31), (1 << 31) - 1) for _ in range(cols)]
        mult = [rng.randrange(1 << 16) for _ in range(cols)]
        shift = [rng.randint(1, 47) for _ in range(cols)]
        groups.append((nvalid, acc, mult, shift, gi == 6))
    got = []

    async def push(ctx):
        credits = cfg.result_banks

        async def tick():
            # releases are counted at the clock edge (sampled before it), like the sequencer
            nonlocal credits
            _, _, released = await ctx.tick().sample(dut.release)
            credits += released

        for nvalid, acc, mult, shift, last in groups:
            while credits == 0:
                await tick()
            ctx.set(dut.push, 1)
            ctx.set(dut.acc, acc)
            ctx.set(dut.mult, mult)
            ctx.set(dut.shift, shift)
            ctx.set(dut.meta, {"nvalid": nvalid, "dest": nvalid & 1, "ymax": nvalid,
                               "last": last})
            credits -= 1
            await tick()
            ctx.set(dut.push, 0)
            while rng.random() < 0.3:
                await tick()

    async def pull(ctx):
        async for _clk, _rst in ctx.tick():
            ctx.set(dut.go, rng.random() < 0.6)
            if ctx.get(dut.q_valid):
                meta = ctx.get(dut.q_meta)
                n = int(meta.count)
                got.append((n, [int(ctx.get(dut.q_acc[k])) for k in range(n)],
                            [int(ctx.get(dut.q_mult[k])) for k in range(n)],
                            [int(ctx.get(dut.q_shift[k])) for k in range(n)],
                            int(meta.dest), int(meta.ymax), int(meta.last)))
                if meta.last:
                    return

    simulate(dut, push, pull)
    expect = []
    for nvalid, acc, mult, shift, last in groups:
        for k in range(0, nvalid, r):
            n = min(r, nvalid - k)
            expect.append((n, acc[k:k + n], mult[k:k + n], shift[k:k + n], nvalid & 1, nvalid,
                           int(last and k + r >= nvalid)))
    assert got == expect


class _TwoBuffers(wiring.Component):
    """Two latency-3 buffers written and read through the same ports (as the engine's in- and
    window buffers are read at the same addresses), their lane selects starting at
    ``inits``."""

    def __init__(self, inits):
        self._inits = inits
        self._kw = dict(depth=64, banks=16, lanes=9, wlanes=6, width=9, row_bits=12,
                        hold=False, latency=3)
        super().__init__({"w": In(SegmentWrite(addr_bits=6, width=9, lanes=6)),
                          "w_valid": In(1), "r_req": In(SegmentRead(addr_bits=6, row_bits=12)),
                          "o": Out(2 * 9 * 9)})

    def elaborate(self, platform):
        m = Module()
        outs = []
        for k, init in enumerate(self._inits):
            buf = m.submodules[f"buf{k}"] = SegmentBuffer(**self._kw, select_init=init)
            m.d.comb += [buf.w.payload.eq(self.w), buf.w.valid.eq(self.w_valid),
                         buf.r_req.eq(self.r_req)]
            outs += [buf.r_data[lane] for lane in range(9)]
        m.d.comb += self.o.eq(Cat(*outs))
        return m


@pytest.mark.yosys
def test_buffers_read_alike_keep_their_own_lane_selects(tmp_path):
    """Synthesised for the ECP5, two buffers read at the same addresses keep their own lane
    select registers when their ``select_init`` differ in every bit (0 and 15); with the same
    value yosys merges them, one register driving both buffers' multiplexers (board build
    b45). Within a buffer yosys still shares the bits that the lanes' selects have alike
    (``lo + lane``: 23 flip-flops for 9 lanes x 4 bits here)."""
    def flip_flops(inits):
        return yosys_flip_flops(_TwoBuffers(inits), tmp_path)

    merged = flip_flops((0, 0))
    assert flip_flops((15, 15)) == merged
    assert flip_flops((0, 15)) - merged >= 2 * 9
