"""Float execution of the IR (any stage): the reference each compiler pass is tested against.

Tensors have no batch axis (``[C, H, W]``; ``[C]`` after the global pool). Float32 throughout,
like onnxruntime, so the imported graph matches it to float rounding.
"""

from __future__ import annotations

import numpy as np

from .golden import im2col, maxpool_any
from .ir import Graph, IRError, Node

__all__ = ["execute", "conv_float", "maxpool_float"]


def conv_float(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int,
               pads: tuple[int, int, int, int]) -> np.ndarray:
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.float32, copy=False), ((0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    cols = im2col(xp, kh, kw, stride, ho, wo, np.float32)
    y = w.reshape(o, -1).astype(np.float32) @ cols
    return (y + b[:, None]).reshape(o, ho, wo)


def maxpool_float(x: np.ndarray, kernel: int, stride: int, ceil_mode: bool,
                  pads: tuple[int, int, int, int]) -> np.ndarray:
    return maxpool_any(np.asarray(x, np.float32), kernel, stride, ceil_mode, pads)


def _conv_node(n: Node, x: np.ndarray) -> np.ndarray:
    y = conv_float(x, n.params["W"], n.params["B"], n.attrs["stride"], n.attrs["pads"])
    return np.maximum(y, 0) if n.attrs.get("relu") else y


def _run_node(n: Node, env: dict) -> np.ndarray:
    xs = [env[i] for i in n.inputs]
    x = xs[0]
    op = n.op
    if op == "Conv":
        return _conv_node(n, x)
    if op == "Relu":
        return np.maximum(x, 0)
    if op == "MaxPool":
        return maxpool_float(x, n.attrs["kernel"], n.attrs["stride"], n.attrs["ceil_mode"],
                             n.attrs["pads"])
    if op == "Concat":
        return np.concatenate(xs, axis=0)
    if op == "GlobalAveragePool":
        return x.mean(axis=(1, 2), dtype=np.float32)
    if op in ("Flatten", "Dropout", "Identity"):
        return x.reshape(-1) if op == "Flatten" else x
    if op == "Softmax":
        e = np.exp(x - x.max())
        return e / e.sum()
    if op == "Fire":
        s = _conv_node(n.params["squeeze"], x)
        return np.concatenate([_conv_node(n.params["expand1x1"], s),
                               _conv_node(n.params["expand3x3"], s)], axis=0)
    raise IRError(f"node {n.name!r}: the float executor has no op {op}")


def execute(graph: Graph, x: np.ndarray, keep: bool = False) -> dict[str, np.ndarray] | np.ndarray:
    """Run ``graph`` on ``x`` (``[C, H, W]`` float). Returns the output, or with ``keep`` every
    node's output by node name (in execution order)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape != tuple(graph.input_shape):
        raise ValueError(f"input must have shape {tuple(graph.input_shape)}, not {x.shape}")
    env = {graph.input_name: x}
    outs = {}
    for n in graph.nodes:
        env[n.output] = _run_node(n, env)
        if keep:
            outs[n.name] = env[n.output]
    return outs if keep else env[graph.output]
