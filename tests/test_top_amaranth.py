"""The whole accelerator (hw.top.Accelerator) in Amaranth's simulator on a tiny generated
SqueezeNet: memories initialised from the weight image and the schedule (the board's path),
feature maps through a ModelMemory, every step's output and the scores bit-exact."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from netgen import squeezenet
from streams import in_beats, stream_get, stream_put

from compiler import quant, schedule, wimage
from compiler.onnx_import import import_onnx
from compiler.passes import lower
from hw.config import AccelConfig
from hw.memport import ModelMemory
from hw.top import MAX_LEN, Accelerator

CFG = AccelConfig(weight_depth=128, param_depth=32, window_buffer_depth=1024, in_buffer_depth=256,
                  max_channels=128, pool_row_depth=1024, max_dim=32, fmap_addr_bits=12,
                  fmap_read_latency=6, schedule_depth=8)


def tiny_model(cfg, seed=0):
    g = lower(import_onnx(squeezenet(size=15, conv1_out=8, n_fire=2, base_e=8, incr_e=8,
                                     classes=7, pools_after=(0,), seed=seed)))
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-123, 152, g.input_shape) for _ in range(3)]
    return quant.quantize(g, quant.calibrate(g, xs, len(xs)), cfg)


def run_tiny(cfg, qm, x, *, seed=0, stall=0.2, image=None, info=None):
    img = wimage.build_image(cfg, qm) if image is None else image
    sched = schedule.build_schedule(cfg, qm)
    acc = Accelerator(cfg, image=img, schedule=sched, weight_depth=cfg.weight_depth,
                      param_depth=cfg.param_depth)
    m = Module()
    m.submodules.acc = acc
    m.submodules.mem = mem = ModelMemory(cfg, depth=1024, addr_bits=cfg.fmap_addr_bits,
                                         max_len=MAX_LEN)
    wiring.connect(m, acc.mem, mem.bus)
    progs = wimage.place_programs(cfg, qm)
    scores, taps = [], []

    async def feed(ctx):
        rng = random.Random(seed)
        for beat in in_beats(progs[0].input_stream(x), cfg.in_lanes, rng):
            await stream_put(ctx, acc.i, beat, rng=rng, stall=stall)

    async def drain(ctx):
        rng = random.Random(seed + 1)
        while True:
            s = await stream_get(ctx, acc.o, rng=rng, stall=stall)
            scores.append(int(s.data))
            if s.last:
                break
        await ctx.tick().until(~acc.busy)
        if info is not None:
            info["cycles"] = ctx.get(acc.cycles)

    async def watch(ctx):
        async for _clk, _rst, tap_valid, tap in ctx.tick().sample(acc.tap_valid, acc.tap):
            if tap_valid:
                taps.append([int(tap.data[k]) for k in range(tap.count)] + [int(tap.last)])

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(feed)
    sim.add_testbench(drain)
    sim.add_process(watch)
    sim.run()
    return progs, scores, taps


@pytest.mark.parametrize("seed,stall,port", [(0, 0.2, 8), (1, 0.0, 2)])
def test_tiny_network_bit_exact_from_initialised_memories(seed, stall, port):
    cfg = dataclasses.replace(CFG, fmap_port_bytes=port)
    qm = tiny_model(cfg)
    rng = np.random.default_rng(5 + seed)
    x = rng.integers(-123, 152, qm.input_shape).astype(np.int16)
    outs = qm.run(x)
    progs, scores, taps = run_tiny(cfg, qm, x, seed=seed, stall=stall)
    check_steps(qm, outs, progs, scores, taps)


def check_steps(qm, outs, progs, scores, taps):
    """Every step's output (the tap beats split at their `last` flags) and the class scores
    equal the golden model's ``outs``."""
    steps = wimage.engine_steps(qm)
    per_step, cur = [], []
    for t in taps:
        cur.extend(t[:-1])
        if t[-1]:
            per_step.append(cur)
            cur = []
    assert len(per_step) == len(steps)
    for st, prog, vals in zip(steps, progs, per_step):
        got = prog.output_from_stream(np.array(vals))
        assert np.array_equal(got, outs[st.out_name]), st.name
    assert scores == [int(v) for v in np.asarray(outs[steps[-1].out_name]).reshape(-1)]
