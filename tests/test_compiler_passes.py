"""Every pass is tested by executing the graph before and after it and comparing outputs."""

import numpy as np
import pytest
from netgen import squeezenet

from compiler.execute import execute
from compiler.onnx_import import import_onnx
from compiler.passes import PASSES, FuseRelu, LowerFire, RemoveIdentities, lower

VARIANTS = [
    dict(seed=1),
    dict(seed=2, conv1_k=7, base_e=12, incr_e=4, pct3x3=0.75, sr=0.5, n_fire=3),
    dict(seed=3, conv10_pad=1, softmax=False, dropout=False),
]


def _inputs(shape, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(-123, 152, size=shape).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("meta", VARIANTS)
def test_each_pass_preserves_outputs(meta):
    g = import_onnx(squeezenet(**meta))
    xs = _inputs(g.input_shape)
    ref = [execute(g, x) for x in xs]
    seen = []

    def verify(name, before, after):
        seen.append(name)
        for x in xs:
            a, b = execute(before, x), execute(after, x)
            if name == "StripSoftmaxHead":
                # the head goes: compare the classes' order, which softmax does not change
                assert np.argmax(a) == np.argmax(b)
            else:
                np.testing.assert_array_equal(a, b)

    out = lower(g, verify=verify)
    assert seen == [type(p).__name__ for p in PASSES]
    assert set(out.ops()) <= {"Conv", "Fire", "MaxPool", "GlobalAveragePool"}
    for x, r in zip(xs, ref):
        logits = execute(out, x)
        if meta.get("softmax", True):
            e = np.exp(logits - logits.max())
            logits = e / e.sum()
        np.testing.assert_allclose(logits, r.reshape(-1), rtol=1e-5, atol=1e-6)


def test_passes_do_not_modify_their_input():
    g = import_onnx(squeezenet(seed=4))
    before = [repr(n) for n in g.nodes]
    for p in (RemoveIdentities(), FuseRelu(), LowerFire()):
        p.apply(g)
    assert [repr(n) for n in g.nodes] == before


def test_fuse_relu_folds_every_conv_relu():
    g = FuseRelu().apply(RemoveIdentities().apply(import_onnx(squeezenet(seed=5))))
    assert "Relu" not in g.ops()
    assert all(n.attrs["relu"] for n in g.nodes if n.op == "Conv")


def test_lower_fire_needs_the_1x1_branch_first():
    m = squeezenet(seed=6, n_fire=1)
    cat = next(n for n in m.graph.node if n.op_type == "Concat")
    cat.input[0], cat.input[1] = cat.input[1], cat.input[0]
    g = LowerFire().apply(FuseRelu().apply(RemoveIdentities().apply(import_onnx(m))))
    assert "Fire" not in g.ops()
