"""Build SqueezeNet-family ONNX models with ``onnx.helper`` for tests.

:func:`squeezenet` follows the paper's metaparameters (Iandola et al., 2016, section 3.3):
``base_e`` expand filters in the first Fire module, ``incr_e`` more every ``freq`` modules,
``pct3x3`` of the expand filters are 3x3, the squeeze ratio ``sr`` sets squeeze = sr * expand.
Weights are random (seeded), scaled so that activations stay in a sensible range.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["squeezenet", "fire_widths", "conv_node"]


def fire_widths(n_fire: int, base_e: int, incr_e: int, freq: int, pct3x3: float, sr: float
                ) -> list[tuple[int, int, int]]:
    """(squeeze, expand1x1, expand3x3) of each Fire module."""
    out = []
    for i in range(n_fire):
        e = base_e + incr_e * (i // freq)
        e3 = max(1, round(e * pct3x3))
        e1 = max(1, e - e3)
        s = max(1, round(sr * e))
        out.append((s, e1, e3))
    return out


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.nodes = []
        self.inits = []

    def conv(self, name, x, cin, cout, k, stride=1, pad=0, relu=True, gain=1.0):
        fan_in = cin * k * k
        w = self.rng.normal(0, gain * np.sqrt(2.0 / fan_in), (cout, cin, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, cout).astype(np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}_w"),
                       numpy_helper.from_array(b, f"{name}_b")]
        self.nodes.append(conv_node(name, x, f"{name}_w", f"{name}_b", k, stride, pad))
        if not relu:
            return name
        self.nodes.append(helper.make_node("Relu", [name], [f"{name}_relu"], name=f"{name}_relu"))
        return f"{name}_relu"

    def pool(self, name, x, k=3, s=2, ceil=1):
        self.nodes.append(helper.make_node("MaxPool", [x], [name], name=name, kernel_shape=[k, k],
                                           strides=[s, s], pads=[0, 0, 0, 0], ceil_mode=ceil))
        return name

    def fire(self, name, x, cin, s, e1, e3):
        sq = self.conv(f"{name}/squeeze1x1", x, cin, s, 1)
        a = self.conv(f"{name}/expand1x1", sq, s, e1, 1)
        b = self.conv(f"{name}/expand3x3", sq, s, e3, 3, pad=1)
        self.nodes.append(helper.make_node("Concat", [a, b], [f"{name}/concat"],
                                           name=f"{name}/concat", axis=1))
        return f"{name}/concat"


def conv_node(name, x, w, b, k, stride=1, pad=0):
    return helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
                            strides=[stride, stride], pads=[pad] * 4)


def squeezenet(*, size: int = 35, in_ch: int = 3, conv1_k: int = 3, conv1_out: int = 16,
               n_fire: int = 4, base_e: int = 16, incr_e: int = 8, freq: int = 2,
               pct3x3: float = 0.5, sr: float = 0.25, pools_after: tuple[int, ...] = (1,),
               classes: int = 10, conv10_pad: int = 0, dropout: bool = True, seed: int = 0,
               softmax: bool = True) -> onnx.ModelProto:
    """A SqueezeNet-family model: conv1/2 - maxpool - Fire modules (a maxpool after the Fire
    modules listed in ``pools_after``, 0-based) - [dropout] - conv10 - global pool - softmax."""
    b = _Builder(np.random.default_rng(seed))
    x = b.conv("conv1", "data", in_ch, conv1_out, conv1_k, stride=2, gain=0.02)
    x = b.pool("pool1", x)
    cin = conv1_out
    for i, (s, e1, e3) in enumerate(fire_widths(n_fire, base_e, incr_e, freq, pct3x3, sr)):
        x = b.fire(f"fire{i + 2}", x, cin, s, e1, e3)
        cin = e1 + e3
        if i in pools_after:
            x = b.pool(f"pool{i + 2}", x)
    if dropout:
        b.nodes.append(helper.make_node("Dropout", [x], ["drop9"], name="drop9"))
        x = "drop9"
    x = b.conv("conv10", x, cin, classes, 1, pad=conv10_pad)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool10"], name="pool10"))
    out = "pool10"
    if softmax:
        b.nodes.append(helper.make_node("Flatten", ["pool10"], ["flat"], name="flatten", axis=1))
        b.nodes.append(helper.make_node("Softmax", ["flat"], ["prob"], name="prob", axis=1))
        out = "prob"
    out_shape = [1, classes] if softmax else [1, classes, 1, 1]
    graph = helper.make_graph(
        b.nodes, "squeezenet_variant",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, in_ch, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
