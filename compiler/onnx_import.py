"""Read a SqueezeNet-family ONNX model into the IR, refusing anything else clearly.

Accepted: a single float32 input ``[1, C, H, W]`` with static sizes; nodes ``Conv`` (square
kernels 1x1, 3x3, 5x5, 7x7 ..., any stride and padding, group 1, dilation 1, with constant
weights and optional bias), ``Relu``, ``MaxPool`` (square, ceil_mode 0 or 1, no dilation),
``Concat`` (axis 1), ``GlobalAveragePool``, ``Flatten`` (axis 1), ``Softmax`` (axis 1 or -1),
``Dropout`` and ``Identity`` (both identities at inference). Every refusal is an
:class:`compiler.ir.IRError` naming the node, the op or attribute, and what is supported.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .ir import Graph, IRError, Node

__all__ = ["import_onnx", "SUPPORTED_OPS"]

SUPPORTED_OPS = ("Conv", "Relu", "MaxPool", "Concat", "GlobalAveragePool", "Flatten", "Softmax",
                 "Dropout", "Identity")

_ALLOWED_ATTRS = {
    "Conv": {"kernel_shape", "pads", "strides", "dilations", "group", "auto_pad"},
    "MaxPool": {"kernel_shape", "pads", "strides", "ceil_mode", "dilations", "auto_pad",
                "storage_order"},
    "Concat": {"axis"},
    "Flatten": {"axis"},
    "Softmax": {"axis"},
    "Dropout": {"ratio", "seed"},
    "Relu": set(),
    "GlobalAveragePool": set(),
    "Identity": set(),
}


def _where(node) -> str:
    return f"node {node.name!r} ({node.op_type})"


def _attrs(node) -> dict:
    out = {}
    allowed = _ALLOWED_ATTRS[node.op_type]
    for a in node.attribute:
        if a.name not in allowed:
            raise IRError(f"{_where(node)}: attribute {a.name!r} is not supported; supported "
                          f"attributes of {node.op_type} are {sorted(allowed) or 'none'}")
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        out[a.name] = v
    return out


def _pads(node, attrs: dict, kernel: int) -> tuple[int, int, int, int]:
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise IRError(f"{_where(node)}: auto_pad={auto!r} is not supported; give explicit pads "
                      f"(auto_pad NOTSET or VALID)")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or any(p < 0 for p in pads):
        raise IRError(f"{_where(node)}: pads={pads} is not supported; expected 4 non-negative "
                      f"values [top, left, bottom, right]")
    top, left, bottom, right = pads
    return (int(top), int(left), int(bottom), int(right))


def _square(node, attrs: dict, name: str, default=None) -> int:
    v = attrs.get(name, default)
    if v is None:
        raise IRError(f"{_where(node)}: attribute {name!r} is required")
    v = list(v)
    if len(v) != 2 or v[0] != v[1] or v[0] < 1:
        raise IRError(f"{_where(node)}: {name}={v} is not supported; expected two equal "
                      f"positive values (square)")
    return int(v[0])


def import_onnx(model: str | Path | onnx.ModelProto) -> Graph:
    """Read an ONNX file or ModelProto into a :class:`Graph` of op-level nodes.

    Raises :class:`FileNotFoundError` for a missing file and :class:`IRError` for anything that
    is not a SqueezeNet-family network (the message names the node and what is supported).
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {str(path)!r} does not exist")
        data = path.read_bytes()
        try:
            proto = onnx.load_from_string(data)
        except Exception as e:  # onnx raises DecodeError and others
            raise IRError(f"{str(path)!r} is not a readable ONNX model: {e}") from None
        name = path.stem
    else:
        proto = model
        data = proto.SerializeToString()
        name = proto.graph.name or "model"
    sha = hashlib.sha256(data).hexdigest()
    g = proto.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            raise IRError(f"{_where(node)}: op Constant is not supported; weights must be "
                          f"initializers. Supported ops: {', '.join(SUPPORTED_OPS)}")
    inputs = [i for i in g.input if i.name not in inits]
    if len(inputs) != 1:
        raise IRError(f"model must have exactly one input tensor, it has {len(inputs)}: "
                      f"{[i.name for i in inputs]}")
    inp = inputs[0]
    tt = inp.type.tensor_type
    if tt.elem_type != onnx.TensorProto.FLOAT:
        raise IRError(f"input {inp.name!r} must be float32, not "
                      f"{onnx.TensorProto.DataType.Name(tt.elem_type)}")
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value <= 0:
            raise IRError(f"input {inp.name!r} has a dynamic or unknown dimension "
                          f"({d.dim_param or '?'}); expected a static shape [1, C, H, W]")
        dims.append(int(d.dim_value))
    if len(dims) != 4 or dims[0] != 1:
        raise IRError(f"input {inp.name!r} has shape {dims}; expected [1, C, H, W]")
    if len(g.output) != 1:
        raise IRError(f"model must have exactly one output, it has {len(g.output)}")

    nodes = []
    for node in g.node:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise IRError(f"{_where(node)}: domain {node.domain!r} is not supported")
        if op not in SUPPORTED_OPS:
            raise IRError(f"{_where(node)}: op {op} is not supported; supported ops: "
                          f"{', '.join(SUPPORTED_OPS)}")
        attrs = _attrs(node)
        outs = [o for o in node.output if o]
        if op == "Dropout":
            outs = outs[:1]  # the optional mask output is never used at inference
        if len(outs) != 1:
            raise IRError(f"{_where(node)}: expected one output, got {list(node.output)}")
        ins = [i for i in node.input if i]
        params = {}
        if op == "Conv":
            if len(ins) not in (2, 3):
                raise IRError(f"{_where(node)}: expected inputs X, W[, B], got {ins}")
            if ins[1] not in inits or (len(ins) == 3 and ins[2] not in inits):
                raise IRError(f"{_where(node)}: weights and bias must be initializers "
                              f"(constant); {ins[1:]} are not all constant")
            w = inits[ins[1]].astype(np.float32)
            if w.ndim != 4:
                raise IRError(f"{_where(node)}: weight {ins[1]!r} has shape {w.shape}; "
                              f"expected [O, C, KH, KW]")
            b = (inits[ins[2]].astype(np.float32) if len(ins) == 3
                 else np.zeros(w.shape[0], np.float32))
            if b.shape != (w.shape[0],):
                raise IRError(f"{_where(node)}: bias has shape {b.shape}; expected "
                              f"({w.shape[0]},)")
            if attrs.get("group", 1) != 1:
                raise IRError(f"{_where(node)}: group={attrs['group']} is not supported; "
                              f"only group=1 (no grouped or depthwise convolution)")
            if any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise IRError(f"{_where(node)}: dilations={attrs['dilations']} is not "
                              f"supported; only 1")
            if w.shape[2] != w.shape[3]:
                raise IRError(f"{_where(node)}: kernel {w.shape[2]}x{w.shape[3]} is not "
                              f"supported; only square kernels")
            k = _square(node, attrs, "kernel_shape", [w.shape[2], w.shape[3]])
            if k != w.shape[2]:
                raise IRError(f"{_where(node)}: kernel_shape {k} does not match the weight "
                              f"shape {w.shape}")
            attrs = {"kernel": k, "stride": _square(node, attrs, "strides", [1, 1]),
                     "pads": _pads(node, attrs, k)}
            params = {"W": w, "B": b}
            ins = ins[:1]
        elif op == "MaxPool":
            if any(d != 1 for d in attrs.get("dilations", [1, 1])):
                raise IRError(f"{_where(node)}: dilations are not supported")
            if len(node.output) > 1 and node.output[1]:
                raise IRError(f"{_where(node)}: the Indices output is not supported")
            k = _square(node, attrs, "kernel_shape")
            attrs = {"kernel": k, "stride": _square(node, attrs, "strides", [1, 1]),
                     "pads": _pads(node, attrs, k), "ceil_mode": bool(attrs.get("ceil_mode", 0))}
        elif op == "Concat":
            if attrs.get("axis") not in (1, -3):
                raise IRError(f"{_where(node)}: axis={attrs.get('axis')} is not supported; "
                              f"only the channel axis 1")
            attrs = {}
        elif op == "Flatten":
            if attrs.get("axis", 1) != 1:
                raise IRError(f"{_where(node)}: axis={attrs['axis']} is not supported; only 1")
            attrs = {}
        elif op == "Softmax":
            if attrs.get("axis", -1) not in (1, -1):
                raise IRError(f"{_where(node)}: axis={attrs['axis']} is not supported; only "
                              f"the class axis (1 or -1)")
            attrs = {}
        else:
            attrs = {}
        if op != "Concat" and len(ins) != 1:
            raise IRError(f"{_where(node)}: expected one data input, got {ins}")
        nodes.append(Node(op, node.name or outs[0], ins, outs[0], attrs, params))

    graph = Graph(name=name, input_name=inp.name, input_shape=tuple(dims[1:]),
                  output=g.output[0].name, nodes=_toposort(nodes, inp.name),
                  source_sha256=sha)
    return graph


def _toposort(nodes: list[Node], input_name: str) -> list[Node]:
    """Nodes in an order where every input is produced before use; refuse dangling inputs."""
    produced = {n.output: n for n in nodes}
    done: set[str] = {input_name}
    order: list[Node] = []
    pending = list(nodes)
    while pending:
        progress = False
        for n in list(pending):
            if all(i in done for i in n.inputs):
                order.append(n)
                done.add(n.output)
                pending.remove(n)
                progress = True
        if not progress:
            n = pending[0]
            missing = [i for i in n.inputs if i not in done and i not in produced]
            what = (f"reads {missing}, which no node produces" if missing
                    else "is part of a cycle")
            raise IRError(f"node {n.name!r} ({n.op}) {what}")
    return order
