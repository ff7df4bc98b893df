"""Max pool and global sum on beat streams (Amaranth simulator, random back-pressure)."""

import dataclasses
import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import beats_of, get_until, put_all, values_of

from compiler import golden
from hw.config import AccelConfig
from hw.pool import GlobalSum, MaxPool

CFG = AccelConfig(max_channels=64, pool_row_depth=512, max_dim=32)


def _run(dut, shape_sets, beats, seed, stall):
    got = []

    async def setup_and_feed(ctx):
        for sig, v in shape_sets:
            ctx.set(sig, v)
        await ctx.tick()        # the shape is set a cycle before the first beat
        await put_all(ctx, dut.i, beats, rng=random.Random(seed), stall=stall)

    async def drain(ctx):
        got.extend(await get_until(ctx, dut.o, lambda p: p.last,
                                   rng=random.Random(seed + 1), stall=stall))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(setup_and_feed)
    sim.add_testbench(drain)
    sim.run()
    return got


def _maxpool_case(c, h, w, seed, stall, lanes_rng):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(c, h, w))
    ref = golden.maxpool(x, 3, 2, True)
    dut = MaxPool(CFG)
    flat = x.transpose(1, 2, 0).ravel()
    beats = beats_of(flat, c, CFG.requant_units, random.Random(seed) if lanes_rng else None)
    _, ho, wo = ref.shape
    got = _run(dut, [(dut.c, c), (dut.h, h), (dut.w, w), (dut.ho, ho), (dut.wo, wo)], beats,
               seed, stall)
    out = np.array(values_of(got)).reshape(ho, wo, c).transpose(2, 0, 1)
    assert np.array_equal(out, ref)


def test_maxpool_odd_and_even_sizes_under_backpressure():
    # 7x6: the last column window is truncated (ceil mode); 6 rows: the last row window too
    _maxpool_case(5, 7, 6, seed=1, stall=0.4, lanes_rng=True)
    _maxpool_case(16, 6, 9, seed=2, stall=0.3, lanes_rng=False)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 20), h=st.integers(2, 9), w=st.integers(2, 9), seed=st.integers(0, 999))
def test_maxpool_matches_golden(c, h, w, seed):
    _maxpool_case(c, h, w, seed, stall=0.3, lanes_rng=bool(seed & 1))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 40), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 999))
def test_global_sum_matches_golden(c, h, w, seed):
    _global_sum_case(CFG, c, h, w, seed)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 20), h=st.integers(1, 4), w=st.integers(1, 4), seed=st.integers(0, 999))
def test_global_sum_one_cycle_matches_golden(c, h, w, seed):
    """The small devices' global sum (``fast_pipeline=False``: read-modify-write in one cycle)."""
    _global_sum_case(dataclasses.replace(CFG, fast_pipeline=False), c, h, w, seed)


def _global_sum_case(cfg, c, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 1 << 16, size=(c, h, w))
    dut = GlobalSum(cfg)
    beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units, random.Random(seed))
    got = _run(dut, [(dut.c, c), (dut.h, h), (dut.w, w)], beats, seed, stall=0.3)
    assert np.array_equal(np.array(values_of(got)), golden.global_sum(x))


# -- read-after-write hazards of the pipelined read-modify-write (fast_pipeline) -------------
#
# The fast pools read a row four cycles before the row's new value is in the memory: a beat
# must see the updates of the one, two and three beats before it. These cases make exactly
# those hazards happen: pixels of at most ``requant_units`` channels in one beat (the same rows
# of the horizontal stage and of the global sum in consecutive cycles), one-column output rows
# (``w`` 1 or 2: the same vertical row in consecutive beats), beats of random sizes (a bank's
# row touched again one, two or three beats later), fixed gaps of 0 to 3 idle cycles between
# beats, and a slow output (credits run out, the input stalls). Both pipelines run them.

PIPELINES = [pytest.param(True, id="fast"), pytest.param(False, id="short")]


def _run_gaps(dut, shape_sets, beats, gaps, out_stall, seed, max_cycles=5_000):
    """Feed ``beats`` with ``gaps[i % len(gaps)]`` idle cycles before beat ``i``, take the output
    with ``ready`` low at random (``out_stall``); give up after ``max_cycles`` cycles (a lost
    last beat then shows as a short output, not as a hang)."""
    got = []

    async def feed(ctx):
        for sig, v in shape_sets:
            ctx.set(sig, v)
        await ctx.tick()        # the shape is set a cycle before the first beat
        budget = max_cycles
        for i, b in enumerate(beats):
            for _ in range(gaps[i % len(gaps)]):
                await ctx.tick()
            ctx.set(dut.i.payload, b)
            ctx.set(dut.i.valid, 1)
            while budget > 0:
                budget -= 1
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
            ctx.set(dut.i.valid, 0)

    async def drain(ctx):
        rng = random.Random(seed)
        for _ in range(max_cycles):
            ready = not rng.random() < out_stall
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(payload)
                if payload.last:
                    break
        ctx.set(dut.o.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    return got


HAZARD_CASES = [
    # c, h, w, random beat sizes, gaps, output stall
    (3, 5, 5, False, [0], 0.0),        # one beat per pixel, back to back
    (6, 4, 2, False, [0], 0.0),        # one-column output rows: the vertical row every beat
    (1, 2, 2, False, [0], 0.0),        # one value a beat, one output: the same rows always
    (5, 5, 4, True, [0], 0.0),         # rows touched again 1-3 beats later
    (4, 5, 3, False, [1], 0.0),        # one idle cycle between beats
    (4, 5, 3, False, [2], 0.0),        # two
    (4, 5, 3, False, [3], 0.0),        # three
    (7, 4, 5, True, [0, 1, 0, 2, 3], 0.0),
    (3, 6, 5, False, [0], 0.7),        # the output stalls: the input waits for credits
    (4, 5, 3, False, [4], 0.0),        # four: the fast max pool's first row read from memory
]


@pytest.mark.parametrize("fast", PIPELINES)
@pytest.mark.parametrize("case", HAZARD_CASES)
def test_maxpool_read_after_write_hazards(fast, case):
    c, h, w, sizes, gaps, out_stall = case
    cfg = dataclasses.replace(CFG, fast_pipeline=fast)
    rng = np.random.default_rng(c * 100 + h * 10 + w)
    # increasing values make every window's maximum its newest value and decreasing its oldest:
    # both orders, so a stale partial maximum changes the result either way
    for x in (rng.integers(0, 1 << 16, size=(c, h, w)),
              np.arange(c * h * w).reshape(c, h, w), np.arange(c * h * w)[::-1].reshape(c, h, w)):
        ref = golden.maxpool(x, 3, 2, True)
        dut = MaxPool(cfg)
        beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units,
                         random.Random(w) if sizes else None)
        _, ho, wo = ref.shape
        got = _run_gaps(dut, [(dut.c, c), (dut.h, h), (dut.w, w), (dut.ho, ho), (dut.wo, wo)],
                        beats, gaps, out_stall, seed=c)
        out = np.array(values_of(got)).reshape(ho, wo, c).transpose(2, 0, 1)
        assert np.array_equal(out, ref)


@pytest.mark.parametrize("fast", PIPELINES)
@pytest.mark.parametrize("case", HAZARD_CASES)
def test_global_sum_read_after_write_hazards(fast, case):
    c, h, w, sizes, gaps, out_stall = case
    cfg = dataclasses.replace(CFG, fast_pipeline=fast)
    x = np.random.default_rng(c * 100 + h * 10 + w).integers(0, 1 << 16, size=(c, h, w))
    dut = GlobalSum(cfg)
    beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units,
                     random.Random(w) if sizes else None)
    got = _run_gaps(dut, [(dut.c, c), (dut.h, h), (dut.w, w)], beats, gaps, out_stall, seed=c)
    assert np.array_equal(np.array(values_of(got)), golden.global_sum(x))


def test_maxpool_shape_changes_after_last_beat():
    """Layers back to back (``fast_pipeline``): the shape changes the cycle after a layer's
    last beat is taken and the next layer starts a cycle later (the documented contract),
    while the layer's beats are still in the pipeline, whose stages read the shape through
    registers delayed with the beats. (The short pipeline reads it a cycle after the beat is
    taken and fails this.)"""
    cfg = dataclasses.replace(CFG, fast_pipeline=True)
    dut = MaxPool(cfg)
    layers = []
    for seed, (c, h, w) in enumerate([(5, 7, 6), (3, 5, 9), (7, 3, 3)]):
        x = np.random.default_rng(seed).integers(0, 1 << 16, size=(c, h, w))
        ref = golden.maxpool(x, 3, 2, True)
        beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units,
                         random.Random(seed))
        layers.append(((c, h, w) + ref.shape[1:], beats, ref))
    got = [[] for _ in layers]
    budget = 2_000     # cycles: a lost last beat shows as a short output, not as a hang

    async def feed(ctx):
        cycles = 0
        for shape, beats, _ in layers:
            for sig, v in zip((dut.c, dut.h, dut.w, dut.ho, dut.wo), shape):
                ctx.set(sig, v)
            await ctx.tick()        # the shape is set a cycle before the first beat
            for b in beats:
                ctx.set(dut.i.payload, b)
                ctx.set(dut.i.valid, 1)
                while cycles < budget:
                    cycles += 1
                    _, _, ready = await ctx.tick().sample(dut.i.ready)
                    if ready:
                        break
                ctx.set(dut.i.valid, 0)
            # the shape changes in the cycle after the last beat is taken

    async def drain(ctx):
        ctx.set(dut.o.ready, 1)
        layer = 0
        for _ in range(budget):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                got[layer].append(payload)
                layer += payload.last
                if layer == len(layers):
                    break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.run()
    for (_, _, ref), beats in zip(layers, got):
        _, ho, wo = ref.shape
        out = np.array(values_of(beats)).reshape(ho, wo, ref.shape[0]).transpose(2, 0, 1)
        assert np.array_equal(out, ref)


@pytest.mark.parametrize("fast", PIPELINES)
def test_pools_take_a_beat_every_cycle(fast):
    """Throughput: with the output always ready, a layer's beats enter one per cycle."""
    cfg = dataclasses.replace(CFG, fast_pipeline=fast)
    c, h, w = 12, 5, 6
    x = np.random.default_rng(3).integers(0, 256, size=(c, h, w))
    ref = golden.maxpool(x, 3, 2, True)
    _, ho, wo = ref.shape
    beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units)
    for dut, shapes in ((MaxPool(cfg), lambda d: [(d.c, c), (d.h, h), (d.w, w), (d.ho, ho),
                                                  (d.wo, wo)]),
                        (GlobalSum(cfg), lambda d: [(d.c, c), (d.h, h), (d.w, w)])):
        stalls = 0

        async def feed(ctx, dut=dut, shapes=shapes):
            nonlocal stalls
            for sig, v in shapes(dut):
                ctx.set(sig, v)
            await ctx.tick()
            for b in beats:
                ctx.set(dut.i.payload, b)
                ctx.set(dut.i.valid, 1)
                while True:
                    _, _, ready = await ctx.tick().sample(dut.i.ready)
                    if ready:
                        break
                    stalls += 1
            ctx.set(dut.i.valid, 0)

        async def drain(ctx, dut=dut):
            await get_until(ctx, dut.o, lambda p: p.last)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(feed)
        sim.add_testbench(drain)
        sim.run()
        assert stalls == 0, type(dut).__name__


@pytest.mark.parametrize("fast", PIPELINES)
def test_pools_never_overflow_their_output_fifo(fast):
    """The smallest output FIFO the configuration allows (4 or 5 beats) and an output that is
    ready one cycle in six: the input must wait for credits, or beats are lost."""
    cfg = dataclasses.replace(CFG, fast_pipeline=fast, out_fifo_depth=4 + fast)
    c, h, w = 20, 5, 5
    x = np.random.default_rng(5).integers(0, 1 << 16, size=(c, h, w))
    ref = golden.maxpool(x, 3, 2, True)
    _, ho, wo = ref.shape
    dut = MaxPool(cfg)
    beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units, random.Random(1))
    got = _run_gaps(dut, [(dut.c, c), (dut.h, h), (dut.w, w), (dut.ho, ho), (dut.wo, wo)],
                    beats, [0], 0.83, seed=2)
    assert values_of(got) == list(ref.transpose(1, 2, 0).ravel())
    dut = GlobalSum(cfg)
    beats = beats_of(x.transpose(1, 2, 0).ravel(), c, cfg.requant_units, random.Random(1))
    got = _run_gaps(dut, [(dut.c, c), (dut.h, h), (dut.w, w)], beats, [0], 0.83, seed=2)
    assert values_of(got) == list(golden.global_sum(x))
