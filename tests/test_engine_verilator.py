"""The engine in Verilator (compiled C++ harness): real layers, random layers, cycles, lint.

Every layer of SqueezeNet v1.1 and v1.0-DC runs on the real activations of a photo that is not
a calibration image and must equal the golden model's output bit for bit; the measured cycles
must agree with ``compiler.cycles`` within 5%, and v1.1's fire2, fire5, fire9, conv1 and conv10
must take at most 1.25 x their ideal cycles (MACs / all multipliers).
"""

import random

import numpy as np
import pytest
from harness.engine_cases import random_conv, random_fire, random_input
from harness.engine_models import UNSEEN, V10_DC, V11, model_and_outputs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import cycles as cycle_model
from compiler.qmodel import QConv, QFire, QGlobalSum, QMaxPool
from hw.program import layer_program
from sim.layer import build_harness, harness_config, ideal_cycles, run_program

pytestmark = pytest.mark.verilator

CFG = harness_config()
TARGETS = {"conv1", "fire2", "fire5", "fire9", "conv10"}


@pytest.fixture(scope="module")
def exe():
    return build_harness(CFG)


def _engine_layers(model):
    qm, _, _ = model_and_outputs(model, UNSEEN)
    return [la.name for la in qm.layers if isinstance(la, (QConv, QFire))]


def _layer_input(qm, x0, outs, name):
    names = [la.name for la in qm.layers]
    k = names.index(name)
    return qm.layers[k], (outs[names[k - 1]] if k else x0), k


@pytest.mark.slow
@pytest.mark.parametrize("model", [V11, V10_DC], ids=["v1.1", "v1.0-dc"])
def test_every_real_layer_bit_exact_and_on_time(model, exe):
    qm, x0, outs = model_and_outputs(model, UNSEEN)
    report = []
    for name in _engine_layers(model):
        layer, x, _ = _layer_input(qm, x0, outs, name)
        prog = layer_program(CFG, layer, x.shape)
        run = run_program(CFG, prog, x, exe)
        assert np.array_equal(run.output, outs[name]), f"{qm.name} {name} differs"
        predicted = cycle_model.layer_cycles(CFG, prog)
        ideal = ideal_cycles(CFG, prog)
        report.append((name, run.cycles, ideal, predicted))
        assert abs(predicted - run.cycles) <= 0.05 * run.cycles, (name, run.cycles, predicted)
        if model == V11 and name in TARGETS:
            assert run.cycles <= 1.25 * ideal, (name, run.cycles, ideal)
    assert len(report) == 10


@pytest.mark.slow
@pytest.mark.parametrize("model", [V11, V10_DC], ids=["v1.1", "v1.0-dc"])
def test_real_layers_with_fused_pools(model, exe):
    qm, x0, outs = model_and_outputs(model, UNSEEN)
    names = [la.name for la in qm.layers]
    fused = 0
    for k, pool in enumerate(qm.layers):
        if not isinstance(pool, (QMaxPool, QGlobalSum)):
            continue
        layer, x, _ = _layer_input(qm, x0, outs, names[k - 1])
        prog = layer_program(CFG, layer, x.shape, pool=pool)
        run = run_program(CFG, prog, x, exe, out_stall=0.2, in_stall=0.1, seed=k)
        assert np.array_equal(run.output, outs[pool.name]), f"{qm.name} {pool.name} differs"
        fused += 1
    assert fused == 4


def _case(draw_seed, kind, cin, cout, hw, extra):
    rng = np.random.default_rng(draw_seed)
    h, w = hw
    if kind == "fire":
        s, e1, e3 = extra
        return random_fire(rng, "fire", cin, s, e1, e3), random_input(rng, (cin, h, w)), None
    if kind == "conv1":
        k = extra[0]
        layer = random_conv(rng, "conv1", 3, cout, k, 2, 0, in_max=150)
        return layer, random_input(rng, (3, h + k, w + k), signed_input=True), QMaxPool("pool")
    pad = extra[0] % 2
    layer = random_conv(rng, "conv10", cin, cout, 1, 1, pad, out_max=65535)
    return layer, random_input(rng, (cin, h, w)), QGlobalSum("pool10") if extra[0] > 1 else None


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["fire", "conv1", "conv10"]),
       cin=st.integers(1, 70), cout=st.integers(1, 70), hw=st.tuples(st.integers(1, 9),
                                                                    st.integers(1, 9)),
       extra=st.tuples(st.integers(1, 40), st.integers(1, 40), st.integers(1, 40)),
       stall=st.sampled_from([0.0, 0.3]))
def test_random_layers_bit_exact(exe, seed, kind, cin, cout, hw, extra, stall):
    if kind == "conv1":
        extra = (random.Random(seed).choice([3, 7]),)
    layer, x, pool = _case(seed, kind, cin, cout, hw, extra)
    y = layer(x)
    if pool is not None and isinstance(pool, QMaxPool) and min(y.shape[1:]) < 2:
        pool = None
    prog = layer_program(CFG, layer, x.shape, pool=pool)
    run = run_program(CFG, prog, x, exe, in_stall=stall, out_stall=stall, seed=seed)
    assert np.array_equal(run.output, pool(y) if pool is not None else y)


def test_verilog_lints_clean(tmp_path):
    from hw.engine import Engine
    from sim.toolchain import lint
    from sim.verilate import export_verilog

    path = tmp_path / "engine_top.v"
    path.write_text(export_verilog(Engine(CFG), "engine_top", emit_src=False))
    lint(path, "engine_top")
