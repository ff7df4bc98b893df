"""The accelerator as a board design (boards.accel): it elaborates on the ULX3S with a real
compiled model in its memories, and its status follows the memory and the classifier."""

from __future__ import annotations

import dataclasses

import pytest
from amaranth.sim import Simulator
from test_top_amaranth import tiny_model
from test_wstream_engine import shared_weights

from boards import get_board
from boards.accel import BoardClassifier, classifier_factory
from compiler import schedule, wimage, wstream_image
from hw.config import get_config
from hw.memport import MemPortSignature


@pytest.fixture(scope="module")
def compiled():
    # the random tiny model's biases need more than the board's 18 bits (the product needs 15)
    cfg = dataclasses.replace(get_config("ulx3s-85f"), bias_bits=32)
    # the ULX3S engine reads compressed weight streams: a model with few distinct weights
    qm = shared_weights(tiny_model(cfg), 0)
    img = wimage.build_image(cfg, qm)
    img.streams = wstream_image.build_stream_image(
        cfg, wimage.place_programs(cfg, qm), wstream_image.codes_of_model(qm, cfg.wstream_kmax))
    return cfg, qm, img, schedule.build_schedule(cfg, qm)


def test_memories_sized_to_the_model(compiled):
    cfg, qm, img, sched = compiled
    design = BoardClassifier(cfg, MemPortSignature(2, cfg.fmap_addr_bits), qmodel=qm,
                             image=img, schedule=sched)
    eng = design.classifier._acc
    assert eng._weight_depth == len(img.weight_rows)
    assert eng._param_depth == len(img.bias_rows)


def test_status_follows_memory_ready(compiled):
    cfg, qm, img, sched = compiled
    design = BoardClassifier(cfg, MemPortSignature(2, cfg.fmap_addr_bits), qmodel=qm,
                             image=img, schedule=sched)
    seen = []

    async def bench(ctx):
        ctx.set(design.mem_ready, 0)
        await ctx.tick().repeat(3)
        seen.append((ctx.get(design.status.idle), ctx.get(design.status.error)))
        ctx.set(design.mem_ready, 1)
        await ctx.tick().repeat(3)
        seen.append((ctx.get(design.status.idle), ctx.get(design.status.error)))

    sim = Simulator(design)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(0, 1), (1, 0)]


def test_ulx3s_smoke_build_with_the_accelerator(compiled, tmp_path):
    """The ULX3S top with the classifier elaborates and its build files are generated (no
    tools run); the engine's 144 multipliers are in the netlist."""
    cfg, qm, img, sched = compiled
    board = get_board("ulx3s-85f")
    top = board.top(classifier_factory(qm, img, sched), config=cfg)
    plan = board.platform().build(top, name="top", build_dir=tmp_path, do_build=False)
    rtlil = plan.files["top.il"]
    assert "EHXPLLL" in rtlil
    assert rtlil.count("cell $mul ") >= cfg.pe_columns * cfg.pe_lanes


def test_the_board_carries_what_the_simulator_verified():
    """``boards build ulx3s-85f`` compiles the default model exactly as ``sim.run --config
    ulx3s-85f`` does: the compressed product, the same stream, codebook and descriptor
    memories, the same parameters and schedule."""
    import sim.run as simrun
    from boards.accel import compile_model
    from compiler.api import default_model

    cfg = get_config("ulx3s-85f")
    board = get_board("ulx3s-85f")
    assert board.default_design == "accel" and board.default_model == str(default_model(cfg))
    qm, img, sched = compile_model(board.default_model, cfg)
    comp = simrun.compile_model(board.default_model, cfg)
    assert img.streams.words == comp.image.streams.words
    assert img.streams.codebook == comp.image.streams.codebook
    assert img.streams.desc_rows == comp.image.streams.desc_rows
    assert img.bias_rows == comp.image.bias_rows and img.requant_rows == comp.image.requant_rows
    assert sched.entries == comp.schedule.entries
    assert max(len(w) for w in img.streams.words) <= cfg.wstream_depth
