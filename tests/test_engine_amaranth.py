"""Whole-engine runs in Amaranth's simulator: small Fire modules and convolutions, bit-exact.

Every stream (load, command, input, output) sees random valid/ready back-pressure.
"""

import dataclasses
import gc
import random

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator
from harness.engine_cases import cmd_word, load_beats, random_conv, random_fire, random_input
from streams import get_until, in_beats, put_all, stream_put, values_of

from compiler.qmodel import QGlobalSum, QMaxPool
from hw import engine
from hw.config import AccelConfig
from hw.engine import Engine, LayerCmd
from hw.program import layer_program

CFG = AccelConfig(weight_depth=256, param_depth=32, window_buffer_depth=1024,
                  in_buffer_depth=256, max_channels=128, pool_row_depth=1024, max_dim=32)


#: cycles a layer of these tests may take before :func:`run_sim` calls it a hang (every test
#: here passes with a tenth of it)
MAX_CYCLES = 200_000


def run_sim(cfg, layer, x, *, pool=None, seed=0, stall=0.3, wbase=3, pbase=2, watch=None,
            max_cycles=MAX_CYCLES):
    prog = layer_program(cfg, layer, x.shape, pool=pool, wbase=wbase, pbase=pbase)
    dut = Engine(cfg, weight_depth=cfg.weight_depth, param_depth=cfg.param_depth)
    got = []

    async def control(ctx):
        await put_all(ctx, dut.load, load_beats(cfg, prog, wbase, pbase),
                      rng=random.Random(seed), stall=stall)
        await stream_put(ctx, dut.cmd, data.Const(LayerCmd(cfg), cmd_word(cfg, prog)))

    async def feed(ctx):
        await ctx.tick().until(dut.busy)
        beats = in_beats(prog.input_stream(x), cfg.in_lanes, random.Random(seed + 3))
        await put_all(ctx, dut.i, beats, rng=random.Random(seed + 1), stall=stall)

    async def drain(ctx):
        got.extend(await get_until(ctx, dut.o, lambda p: p.last, rng=random.Random(seed + 2),
                                   stall=stall))

    async def idle_takes_nothing(ctx):
        # the input's ready is built from flip-flops without ``busy`` (fast_pipeline): it must
        # still never be high while the engine is idle or starting
        async for _clk, _rst, busy, ready in ctx.tick().sample(dut.busy, dut.i.ready):
            assert busy or not ready, "the engine is ready for input while idle"

    hung = []

    async def deadlock(ctx):
        # a layer that never ends (a deadlock) fails below instead of hanging the test run
        for _ in range(max_cycles):
            await ctx.tick()
        hung.append(True)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(control)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.add_process(idle_takes_nothing)
    sim.add_process(deadlock)
    if watch is not None:
        sim.add_process(watch)
    while sim.advance():
        if hung:
            raise AssertionError(f"the engine has not finished the layer after {max_cycles} "
                                 f"cycles")
    return prog.output_from_stream(values_of(got))


@pytest.mark.parametrize("seed", [0, 1])
def test_small_fire_bit_exact(seed):
    rng = np.random.default_rng(seed)
    fire = random_fire(rng, "fire", 10, 5, 7, 18)
    x = random_input(rng, (10, 4, 5))
    assert np.array_equal(run_sim(CFG, fire, x, seed=seed), fire(x))


# the simulation is abandoned with its testbenches waiting, and their coroutines complain as
# they are collected
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_layer_that_does_not_end_fails_instead_of_hanging():
    """``run_sim``'s cycle limit: a layer still running after ``max_cycles`` is a failure (a
    deadlocked engine would otherwise hang the test run)."""
    rng = np.random.default_rng(0)
    fire = random_fire(rng, "fire", 10, 5, 7, 18)
    x = random_input(rng, (10, 4, 5))
    with pytest.raises(AssertionError, match="has not finished the layer after 100 cycles"):
        run_sim(CFG, fire, x, max_cycles=100)
    gc.collect()    # here, under the filter above


def test_conv_3x3_stride2_signed_input():
    rng = np.random.default_rng(5)
    conv = random_conv(rng, "conv1", 3, 20, 3, 2, 0, in_max=150)
    x = random_input(rng, (3, 9, 8), signed_input=True)
    assert np.array_equal(run_sim(CFG, conv, x, seed=5), conv(x))


def test_conv_3x3_pad1_on_a_single_row():
    """The first output row's window already reaches past the last source row (the
    command's ``b_top_hi``, from the compiler: -1 + 2 >= 1)."""
    rng = np.random.default_rng(9)
    conv = random_conv(rng, "conv", 6, 11, 3, 1, 1)
    x = random_input(rng, (6, 1, 7))
    prog = layer_program(CFG, conv, x.shape)
    assert prog.cmd["b_top_hi"] == 1
    assert np.array_equal(run_sim(CFG, conv, x, seed=9), conv(x))


def test_conv_1x1_pad1_wide_output_with_global_sum():
    rng = np.random.default_rng(6)
    conv = random_conv(rng, "conv10", 12, 19, 1, 1, 1, out_max=65535)
    x = random_input(rng, (12, 3, 4))
    y = conv(x)
    assert np.array_equal(run_sim(CFG, conv, x, seed=6), y)
    pool = QGlobalSum("pool10")
    assert np.array_equal(run_sim(CFG, conv, x, pool=pool, seed=7), pool(y))


def test_conv_7x7_stride2_with_max_pool():
    rng = np.random.default_rng(8)
    conv = random_conv(rng, "conv1", 3, 17, 7, 2, 0, in_max=150)
    x = random_input(rng, (3, 15, 16), signed_input=True)
    pool = QMaxPool("pool1")
    assert np.array_equal(run_sim(CFG, conv, x, pool=pool, seed=8), pool(conv(x)))


def test_conv_1x1_pad1_rows_longer_than_half_the_buffer():
    # regression: with the window's top row in the padding, the first real row was released
    # early and overwritten by the rows after it (v1.0's conv10: 1x1, pad 1, 13 x 512 rows)
    rng = np.random.default_rng(9)
    conv = random_conv(rng, "conv10", 100, 3, 1, 1, 1, out_max=65535)
    x = random_input(rng, (100, 3, 6))
    assert 6 * 100 > CFG.window_buffer_depth // 2
    assert np.array_equal(run_sim(CFG, conv, x, seed=9, stall=0.1), conv(x))


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "short"])
def test_output_fifo_of_five_beats_never_overflows_under_a_slow_consumer(fast):
    """1x1 convolutions of few input channels finish a column group every cycle or two, faster
    than a consumer ready one cycle in five takes them: the drain's credit rule (a register with
    fast_pipeline, so it keeps one beat more) must hold results back, not drop them."""
    cfg = dataclasses.replace(CFG, fast_pipeline=fast, out_fifo_depth=5)
    rng = np.random.default_rng(11)
    conv = random_conv(rng, "conv", 4, 40, 1, 1, 0)
    x = random_input(rng, (4, 3, 4))
    assert np.array_equal(run_sim(cfg, conv, x, seed=11, stall=0.8), conv(x))
    with pytest.raises(ValueError, match=r"AccelConfig.out_fifo_depth \(\d\) must exceed"):
        dataclasses.replace(cfg, out_fifo_depth=cfg.drain_go_margin)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "short"])
def test_free_counts_never_pass_a_pass_not_yet_issued(fast, monkeypatch):
    """The free counts the buffers' writers see (``in_free``, ``win_free``) never pass the first
    value a pass reads before that pass has issued: with fast_pipeline the sequencer generates
    passes ahead into a register slice, and a count taken from the generator would let the
    input overwrite values the waiting passes still read (a Fire's squeeze reads its pixel from
    ``addr`` on; an expand pass of a real row from ``addr`` on when its offset is not padding)."""
    seqs = []

    class Recording(engine.Sequencer):
        def __init__(self, cfg):
            super().__init__(cfg)
            seqs.append(self)

    monkeypatch.setattr(engine, "Sequencer", Recording)
    checked = {"a": 0, "b": 0}

    async def frees_follow_issue(ctx):
        seq = seqs[-1]
        p = seq.pass_
        async for _clk, _rst, issue, stage_a, addr, off, row_ok, in_free, win_free in \
                ctx.tick().sample(seq.issue, p.stage_a, p.addr, p.off, p.row_ok, seq.in_free,
                                  seq.win_free):
            if not issue:
                continue
            if stage_a:
                assert addr >= in_free, ("squeeze pass", addr, "in_free", in_free)
                checked["a"] += 1
            elif row_ok and off >= 0:
                assert addr >= win_free, ("expand pass", addr, "win_free", win_free)
                checked["b"] += 1

    cfg = dataclasses.replace(CFG, fast_pipeline=fast, in_buffer_depth=64)
    rng = np.random.default_rng(12)
    fire = random_fire(rng, "fire", 9, 4, 6, 14)
    x = random_input(rng, (9, 5, 6))
    assert np.array_equal(run_sim(cfg, fire, x, seed=12, stall=0.5, watch=frees_follow_issue),
                          fire(x))
    assert checked["a"] > 0 and checked["b"] > 0
