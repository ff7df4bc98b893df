"""ONNX import: the real models and paper-metaparameter variants import; everything else is
refused with a message naming the node, the op or attribute, and what is supported."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from netgen import conv_node, squeezenet
from onnx import TensorProto, helper, numpy_helper

from compiler.api import import_model
from compiler.execute import execute
from compiler.ir import IRError
from compiler.onnx_import import import_onnx
from compiler.passes import lower

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
MODELS = [SHARED / "squeezenet1.1.onnx", SHARED / "squeezenet1.0-deepcompression.onnx"]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_real_models_lower_to_fire_chains(path):
    g = import_model(path)
    assert [n.op for n in g.nodes].count("Fire") == 8
    assert [n.name for n in g.nodes if n.op == "Fire"] == [f"fire{i}" for i in range(2, 10)]
    assert g.nodes[0].name == "conv1" and g.nodes[-2].name == "conv10"
    assert g.nodes[-1].op == "GlobalAveragePool"
    pools = [i for i, n in enumerate(g.nodes) if n.op == "MaxPool"]
    assert len(pools) == 3
    assert g.input_shape == (3, 227, 227)


@pytest.mark.parametrize("meta", [
    dict(base_e=16, incr_e=16, freq=2, pct3x3=0.5, sr=0.125),
    dict(base_e=24, incr_e=8, freq=1, pct3x3=0.75, sr=0.25),
    dict(base_e=12, incr_e=12, freq=3, pct3x3=0.25, sr=0.5, conv1_k=7, n_fire=5),
    dict(base_e=8, incr_e=0, freq=1, pct3x3=0.5, sr=1.0, n_fire=2, pools_after=()),
])
def test_metaparameter_variants_import(meta):
    model = squeezenet(**meta)
    g = lower(import_onnx(model))
    fires = [n for n in g.nodes if n.op == "Fire"]
    assert len(fires) == meta.get("n_fire", 4)
    from netgen import fire_widths
    widths = fire_widths(meta.get("n_fire", 4), meta["base_e"], meta["incr_e"], meta["freq"],
                         meta["pct3x3"], meta["sr"])
    got = [(f.params["squeeze"].params["W"].shape[0], f.params["expand1x1"].params["W"].shape[0],
            f.params["expand3x3"].params["W"].shape[0]) for f in fires]
    assert got == widths


def _graph_with(nodes, inits, in_shape=(1, 3, 8, 8), out="y", out_shape=None):
    g = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("data", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _w(name, shape, seed=0):
    return numpy_helper.from_array(
        np.random.default_rng(seed).normal(size=shape).astype(np.float32), name)


def _refusal(model) -> str:
    with pytest.raises(IRError) as e:
        lower(import_onnx(model))
    return str(e.value)


def test_unsupported_op_is_named():
    m = _graph_with([helper.make_node("Sigmoid", ["data"], ["y"], name="act0")], [])
    msg = _refusal(m)
    assert "'act0'" in msg and "Sigmoid" in msg and "Conv" in msg and "MaxPool" in msg


def test_unsupported_attribute_is_named():
    node = helper.make_node("Conv", ["data", "w"], ["y"], name="c1", kernel_shape=[3, 3],
                            group=3)
    msg = _refusal(_graph_with([node], [_w("w", (3, 1, 3, 3))]))
    assert "'c1'" in msg and "group=3" in msg and "group=1" in msg


def test_dilation_is_refused():
    node = helper.make_node("Conv", ["data", "w"], ["y"], name="c1", kernel_shape=[3, 3],
                            dilations=[2, 2])
    msg = _refusal(_graph_with([node], [_w("w", (4, 3, 3, 3))]))
    assert "'c1'" in msg and "dilations" in msg


def test_unknown_attribute_is_named():
    node = helper.make_node("MaxPool", ["data"], ["y"], name="p", kernel_shape=[3, 3],
                            frobnicate=1)
    msg = _refusal(_graph_with([node], []))
    assert "'p'" in msg and "frobnicate" in msg and "ceil_mode" in msg


def test_dynamic_input_shape_is_refused():
    m = _graph_with([helper.make_node("Relu", ["data"], ["y"], name="r")], [],
                    in_shape=["N", 3, 8, 8])
    msg = _refusal(m)
    assert "'data'" in msg and "dynamic" in msg and "[1, C, H, W]" in msg


def test_wrong_input_rank_is_refused():
    m = _graph_with([helper.make_node("Relu", ["data"], ["y"], name="r")], [], in_shape=[1, 3, 8])
    msg = _refusal(m)
    assert "[1, 3, 8]" in msg and "[1, C, H, W]" in msg


def test_conv_without_relu_is_refused():
    nodes = [conv_node("c1", "data", "w", "b", 3),
             helper.make_node("GlobalAveragePool", ["c1"], ["y"], name="gap")]
    msg = _refusal(_graph_with(nodes, [_w("w", (4, 3, 3, 3)), _w("b", (4,))]))
    assert "'c1'" in msg and "ReLU" in msg


def test_non_chain_graph_is_refused():
    # conv1's output feeds two convolutions whose outputs are concatenated: not a Fire module
    # (no squeeze in front), so the graph is not a chain of Fire-family layers.
    nodes = [conv_node("a", "data", "wa", "ba", 3, pad=1),
             helper.make_node("Relu", ["a"], ["ar"], name="ar"),
             conv_node("b", "data", "wb", "bb", 3, pad=1),
             helper.make_node("Relu", ["b"], ["br"], name="br"),
             helper.make_node("Concat", ["ar", "br"], ["cat"], name="cat", axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["y"], name="gap")]
    inits = [_w("wa", (4, 3, 3, 3)), _w("ba", (4,)), _w("wb", (4, 3, 3, 3)), _w("bb", (4,))]
    msg = _refusal(_graph_with(nodes, inits))
    assert "not a chain" in msg or "Concat" in msg


def test_concat_on_wrong_axis_is_refused():
    nodes = [helper.make_node("Concat", ["data", "data"], ["y"], name="cat", axis=2)]
    msg = _refusal(_graph_with(nodes, []))
    assert "'cat'" in msg and "axis=2" in msg


def test_constant_weights_node_is_refused():
    nodes = [helper.make_node("Constant", [], ["w"], name="k",
                              value=numpy_helper.from_array(np.zeros((4, 3, 1, 1), np.float32))),
             helper.make_node("Conv", ["data", "w"], ["y"], name="c")]
    msg = _refusal(_graph_with(nodes, []))
    assert "'k'" in msg and "Constant" in msg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        import_onnx(tmp_path / "nope.onnx")


def test_garbage_file_is_refused(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x00\x01 this is not a protobuf \xff" * 10)
    with pytest.raises(IRError, match="bad.onnx"):
        import_onnx(p)


def test_ends_without_global_pool_is_refused():
    nodes = [conv_node("c1", "data", "w", "b", 3), helper.make_node("Relu", ["c1"], ["y"],
                                                                      name="r")]
    msg = _refusal(_graph_with(nodes, [_w("w", (4, 3, 3, 3)), _w("b", (4,))]))
    assert "GlobalAveragePool" in msg and "'c1'" in msg


@pytest.mark.onnxruntime
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_import_matches_onnxruntime_on_shared_test_set(path):
    import onnxruntime as ort
    g = import_onnx(path)
    data = path.parent / f"{path.stem}_test_data"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for ds in sorted(data.glob("test_data_set_*")):
        x = numpy_helper.to_array(onnx.load_tensor(str(ds / "input_0.pb")))
        want = numpy_helper.to_array(onnx.load_tensor(str(ds / "output_0.pb")))
        got = execute(g, x[0])
        ref = sess.run(None, {"data": x})[0]
        assert np.abs(got - want[0]).max() < 1e-4
        assert np.abs(got - ref[0]).max() < 1e-4
