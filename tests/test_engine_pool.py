"""Max pool and global sum on beat streams (Amaranth simulator, random back-pressure)."""

import dataclasses
import random

import numpy as np
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
