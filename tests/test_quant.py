"""Quantisation: integer parameters within the contract's widths, deterministic, faithful."""

from pathlib import Path

import numpy as np
import pytest
from netgen import squeezenet

from compiler import api, quant
from compiler.execute import execute
from compiler.ir import IRError
from compiler.onnx_import import import_onnx
from compiler.passes import lower
from compiler.qmodel import QConv, QFire
from hw.config import AccelConfig, get_config

CFG = get_config("default")


def _small(seed=0, **kw):
    g = lower(import_onnx(squeezenet(seed=seed, **kw)))
    rng = np.random.default_rng(seed)
    xs = [rng.integers(-123, 152, g.input_shape) for _ in range(8)]
    return g, xs


def _convs(qm):
    for layer in qm.layers:
        if isinstance(layer, QConv):
            yield layer
        elif isinstance(layer, QFire):
            yield from (layer.squeeze, layer.expand1x1, layer.expand3x3)


def test_parameters_fit_the_configured_widths():
    g, xs = _small()
    qm = quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)
    for q in _convs(qm):
        assert np.abs(q.weight).max() <= CFG.weight_max
        assert np.abs(q.bias).max() < 2 ** (CFG.bias_bits - 1)
        assert q.mult.min() >= 0 and q.mult.max() < 2 ** CFG.requant_mult_bits
        assert q.shift.min() >= 1 and q.shift.max() <= CFG.requant_max_shift
        live = q.mult > 0
        # M / 2**SH approximates the real multiplier to 16 significant bits
        m = q.in_scale * q.weight_scale / q.out_scale
        rel = np.abs(q.mult / 2.0 ** q.shift - m)[live] / m[live]
        assert rel.max() < 2 ** -15


def test_fire_branches_share_one_output_scale():
    g, xs = _small(1)
    qm = quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)
    for layer in qm.layers:
        if isinstance(layer, QFire):
            assert layer.expand1x1.out_scale == layer.expand3x3.out_scale
            assert layer.expand1x1.in_scale == layer.squeeze.out_scale


def test_classifier_is_wide_and_the_rest_8_bit():
    g, xs = _small(2)
    qm = quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)
    convs = list(_convs(qm))
    assert convs[-1].out_max == CFG.score_max
    assert all(q.out_max == CFG.act_max for q in convs[:-1])


def test_quantisation_is_deterministic():
    g, xs = _small(3)
    a = quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)
    b = quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)
    for qa, qb in zip(_convs(a), _convs(b)):
        for f in ("weight", "bias", "mult", "shift"):
            assert np.array_equal(getattr(qa, f), getattr(qb, f))


def test_integer_model_tracks_the_float_model():
    g, xs = _small(4, size=43)
    qm = quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)
    for x in xs:
        f = execute(g, x)
        q = qm.scores(x) * qm.score_scale
        assert np.corrcoef(f, q)[0, 1] > 0.98


def test_percentile_is_exact_over_all_inputs():
    g, xs = _small(5)
    ranges = quant.calibrate(g, xs, len(xs), percentiles={"conv1": 90.0})
    from compiler.quant import _layer_outputs
    allv = np.concatenate([_layer_outputs(g, x)["conv1"].ravel() for x in xs])
    k = int(np.ceil(0.9 * allv.size)) - 1
    assert ranges["conv1"] == np.sort(allv)[k]


def test_accumulator_overflow_is_refused():
    g, xs = _small(6)
    tiny = AccelConfig(name="tiny-acc", acc_bits=12)
    with pytest.raises(IRError, match="accumulator bound .* does not fit 12 bits"):
        quant.quantize(g, quant.calibrate(g, xs, len(xs)), tiny)


def test_bundled_calibration_is_used_for_the_bundled_model():
    g = api.import_model()
    ranges = api.load_ranges(g)
    assert set(ranges) == set(quant.calibration_points(g))


def test_missing_calibration_folder_is_named(tmp_path):
    g, _ = _small(7)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        api.load_ranges(g, tmp_path / "nowhere")


def test_shared_models_have_bundled_calibration_files():
    for sha in ("73467e6893009ac7", "aa6442292a40d29b"):
        assert (Path(api.DATA) / f"calibration-{sha}.json").is_file()


def test_refine_ranges_repairs_a_range_that_is_far_too_wide():
    g, xs = _small(8, size=43)
    ranges = quant.calibrate(g, xs, len(xs))
    bad = dict(ranges, conv1=ranges["conv1"] * 64)
    fixed = quant.refine_ranges(g, bad, xs, factors=(1 / 64, 1.0))
    assert fixed["conv1"] == pytest.approx(ranges["conv1"])
    # every tensor ends at one of the offered multiples, the classifier untouched
    for t, r in fixed.items():
        assert any(r == pytest.approx(bad[t] * f) for f in (1 / 64, 1.0))
    assert fixed[g.nodes[-2].name] == bad[g.nodes[-2].name]

