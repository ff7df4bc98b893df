"""cocotb + Verilator benches of the engine (cocotb's Python runner), bit-exact.

A smaller geometry than the default (8 columns, 3 requantisers) so the build and the run stay
short, and so the mapping is exercised with a second array shape. One simulation runs a list of
layers back to back through one engine: (a) hypothesis-drawn random Fire modules, conv1-like
3x3/2 and 7x7/2 convolutions with the fused max pool, conv10-like 1x1 convolutions (pad 0/1)
with the fused global sum; (b) a real v1.1 Fire module (fire6) on a crop of its real input.
"""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from harness.engine_cases import random_conv, random_fire, random_input
from harness.engine_models import UNSEEN, V11, model_and_outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.qmodel import QGlobalSum, QMaxPool
from hw.config import AccelConfig
from hw.engine import Engine, LayerCmd
from hw.pool import Beat
from hw.program import layer_program, pack_cmd
from sim.jobs import input_beats
from sim.layer import _load_words

pytestmark = pytest.mark.verilator

CFG = AccelConfig(pe_columns=8, requant_units=3, weight_depth=2048, param_depth=160,
                  window_buffer_depth=8192, in_buffer_depth=1024, max_channels=1024,
                  max_dim=64, pool_row_depth=4096)
BENCH = __file__.replace("test_engine_cocotb.py", "cocotb_engine.py")


def _join(words):
    return sum(int(w) << (32 * i) for i, w in enumerate(words))


def _job(name, layer, x, pool, seed, stall):
    prog = layer_program(CFG, layer, x.shape, pool=pool)
    y = layer(x)
    ref = pool(y) if pool is not None else y
    beat = Beat(width=CFG.sum_bits, lanes=CFG.requant_units)
    packed = input_beats(CFG, prog.input_stream(x))
    flat = ref.ravel() if ref.ndim == 1 else ref.transpose(1, 2, 0).ravel()
    return {
        "name": name, "seed": seed, "stall": stall,
        "cmd": pack_cmd(CFG, prog.cmd),
        "loads": [_join(w) for w in _load_words(CFG, prog)],
        "inputs": [_join(w) for w in packed],
        "expect": [int(v) for v in flat],
        "lanes": CFG.requant_units, "width": CFG.sum_bits,
        "count_off": beat["count"].offset, "count_w": beat["count"].width,
        "last_off": beat["last"].offset,
    }


def _run(jobs, tmp_path, name):
    from sim.verilate import default_cache_dir, export_verilog, run_cocotb

    text = export_verilog(Engine(CFG), "engine_top", emit_src=False)
    # a build folder per design content: make rebuilds nothing on later runs
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    build = default_cache_dir().parent / "cocotb-engine" / key
    build.mkdir(parents=True, exist_ok=True)
    vpath = build / "engine_top.v"
    if not vpath.is_file() or vpath.read_text() != text:
        vpath.write_text(text)
    jobs_path = tmp_path / f"{name}.json"
    jobs_path.write_text(json.dumps(jobs))
    run_cocotb([vpath], "engine_top", BENCH, build, tmp_path / name,
               {"ENGINE_JOBS": str(jobs_path)})


layer_kinds = st.sampled_from(["fire", "conv3", "conv7", "conv1x1"])


@pytest.mark.slow
@settings(max_examples=1, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(draws=st.lists(st.tuples(st.integers(0, 2**31 - 1), layer_kinds, st.integers(1, 24),
                                st.integers(1, 24), st.integers(2, 5), st.integers(2, 5)),
                      min_size=3, max_size=3))
def test_random_layers_in_cocotb(tmp_path, draws):
    jobs = []
    for i, (seed, kind, a, b, h, w) in enumerate(draws):
        rng = np.random.default_rng(seed)
        if kind == "fire":
            layer = random_fire(rng, "fire", a, max(1, b // 3), b, a + 3)
            x, pool = random_input(rng, (a, h, w)), None
        elif kind in ("conv3", "conv7"):
            k = 3 if kind == "conv3" else 7
            layer = random_conv(rng, "conv1", 3, a, k, 2, 0, in_max=150)
            x = random_input(rng, (3, 2 * h + k, 2 * w + k), signed_input=True)
            pool = QMaxPool("pool")
        else:
            layer = random_conv(rng, "conv10", a, b, 1, 1, seed % 2, out_max=65535)
            x, pool = random_input(rng, (a, h, w)), QGlobalSum("pool10")
        jobs.append(_job(f"{i}:{kind}", layer, x, pool, seed, 0.3))
    _run(jobs, tmp_path, "random")


@pytest.mark.slow
def test_real_v11_layers_in_cocotb(tmp_path):
    qm, _, outs = model_and_outputs(V11, UNSEEN)
    # cocotb drives every cycle from Python (about a thousand cycles/s): fire6's real weights
    # on the top-left 5x5 of its real input; the C++ harness runs every whole real layer
    # (tests/test_engine_verilator.py)
    fire6 = qm.layer("fire6")
    x = outs["pool5"][:, :5, :5]
    jobs = [_job("fire6", fire6, x, None, 2, 0.1)]
    # on the whole map the golden output's top-left 4x4 depends only on this crop
    assert np.array_equal(fire6(x)[:, :4, :4], outs["fire6"][:, :4, :4])
    assert len(jobs[0]["expect"]) == fire6(x).size
    _run(jobs, tmp_path, "real")


def test_small_config_is_a_valid_geometry():
    assert dataclasses.replace(CFG).multipliers == 72
    assert LayerCmd(CFG).size == sum(b for _, b, _ in __import__(
        "hw.program", fromlist=["cmd_fields"]).cmd_fields(CFG))
