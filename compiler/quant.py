"""Post-training quantisation: calibrate activation ranges, then lower the float chain to a
:class:`compiler.qmodel.QModel` with the integer arithmetic of ``docs/numerics.md``.

Two passes, each a plain function over the lowered IR:

- :func:`calibrate` runs the float graph over calibration inputs and records, per quantised
  tensor, a high percentile of its values (exactly, from per-image top-k lists).
- :func:`quantize` turns weights, biases and scales into integers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from hw.config import AccelConfig

from .execute import _conv_node, _run_node
from .ir import Graph, IRError, Node
from .qmodel import QConv, QFire, QGlobalSum, QMaxPool, QModel

__all__ = ["calibrate", "quantize", "calibration_points", "DEFAULT_PERCENTILE",
           "CLASSIFIER_PERCENTILE", "assemble"]

#: percentile of each 8-bit activation tensor that maps to 255 (DESIGN.md: 99.999 is best)
DEFAULT_PERCENTILE = 99.999
#: percentile of the classifier output that maps to the top of its wide range
CLASSIFIER_PERCENTILE = 100.0


def calibration_points(graph: Graph) -> list[str]:
    """Names of the tensors that get their own scale: each conv output, each Fire's squeeze
    output and its concatenated output (max pools pass their input's scale through)."""
    pts = []
    for n in graph.nodes:
        if n.op == "Conv":
            pts.append(n.name)
        elif n.op == "Fire":
            pts += [n.params["squeeze"].name, n.name]
    return pts


def _layer_outputs(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    """Float outputs at the calibration points (Fire squeeze outputs included)."""
    out = {}
    x = np.asarray(x, dtype=np.float32)
    for n in graph.nodes:
        if n.op == "Fire":
            s = _conv_node(n.params["squeeze"], x)
            out[n.params["squeeze"].name] = s
            x = np.concatenate([_conv_node(n.params["expand1x1"], s),
                                _conv_node(n.params["expand3x3"], s)], axis=0)
        else:
            x = _run_node(n, {n.inputs[0]: x})
        if n.op in ("Conv", "Fire"):
            out[n.name] = x
    return out


def calibrate(graph: Graph, inputs: Iterable[np.ndarray], n_inputs: int,
              percentiles: dict[str, float] | None = None, progress=None) -> dict[str, float]:
    """Percentile of every calibration point's float values over all ``inputs``.

    ``n_inputs`` is how many inputs will come (needed to keep exact per-input top-k lists).
    ``percentiles`` overrides :data:`DEFAULT_PERCENTILE` per tensor; the classifier output uses
    :data:`CLASSIFIER_PERCENTILE`. Returns ``{tensor: value}``.
    """
    pts = calibration_points(graph)
    classifier = graph.nodes[-2].name
    pct = {p: DEFAULT_PERCENTILE for p in pts}
    pct[classifier] = CLASSIFIER_PERCENTILE
    pct.update(percentiles or {})
    tops: dict[str, list[np.ndarray]] = {p: [] for p in pts}
    sizes: dict[str, int] = {}
    seen = 0
    for x in inputs:
        outs = _layer_outputs(graph, x)
        for p in pts:
            v = outs[p].ravel()
            sizes[p] = v.size
            k = _top_rank(v.size * n_inputs, pct[p]) + 1
            k = min(k, v.size)
            tops[p].append(np.partition(v, v.size - k)[v.size - k:])
        seen += 1
        if progress:
            progress(seen)
    if seen != n_inputs:
        raise ValueError(f"calibration expected {n_inputs} inputs, got {seen}")
    result = {}
    for p in pts:
        allv = np.sort(np.concatenate(tops[p]))[::-1]
        result[p] = float(allv[_top_rank(sizes[p] * n_inputs, pct[p])])
    return result


def _top_rank(n: int, percentile: float) -> int:
    """0-based rank from the top of the value at ``percentile`` among ``n`` values."""
    return n - max(1, math.ceil(percentile / 100.0 * n))


def _requant_params(m: np.ndarray, cfg: AccelConfig, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Multiplier and shift per channel with ``M / 2**SH ~= m`` (docs/numerics.md)."""
    mbits = cfg.requant_mult_bits
    mult = np.zeros(m.shape, np.int64)
    shift = np.ones(m.shape, np.int64)
    for i, mi in enumerate(m):
        if mi <= 0:
            continue
        sh = (mbits - 1) - math.floor(math.log2(mi))
        sh = min(max(sh, 1), cfg.requant_max_shift)
        mm = round(mi * 2.0**sh)
        if mm >= 1 << mbits and sh > 1:
            sh -= 1
            mm = round(mi * 2.0**sh)
        if mm >= 1 << mbits:
            raise IRError(f"{where}: requantisation multiplier {mi:.4g} (channel {i}) does not "
                          f"fit {mbits} bits even with the smallest shift")
        mult[i], shift[i] = mm, sh
    return mult, shift


def _quantize_conv(n: Node, s_in: float, in_max: int, s_out: float, out_max: int,
                   cfg: AccelConfig) -> QConv:
    w = n.params["W"].astype(np.float64)
    b = n.params["B"].astype(np.float64)
    o = w.shape[0]
    qmax = cfg.weight_max
    wmax = np.abs(w).reshape(o, -1).max(axis=1)
    # A channel without weights keeps its bias: choose a scale that represents it well.
    s_w = np.where(wmax > 0, wmax / qmax, np.maximum(np.abs(b) / (s_in * 2.0**20), 1e-30))
    wq = np.clip(np.round(w / s_w[:, None, None, None]), -qmax, qmax).astype(np.int64)
    bq = np.round(b / (s_in * s_w)).astype(np.int64)
    blim = 1 << (cfg.bias_bits - 1)
    if np.any(np.abs(bq) >= blim):
        i = int(np.argmax(np.abs(bq)))
        raise IRError(f"layer {n.name!r}: bias {bq[i]} (channel {i}) does not fit "
                      f"{cfg.bias_bits} bits")
    bound = np.abs(wq).reshape(o, -1).sum(axis=1) * in_max + np.abs(bq)
    if bound.max() >= 1 << (cfg.acc_bits - 1):
        raise IRError(f"layer {n.name!r}: accumulator bound {int(bound.max())} does not fit "
                      f"{cfg.acc_bits} bits")
    dead = (wmax == 0) & (b == 0)
    m = np.where(dead, 0.0, s_in * s_w / s_out)
    mult, shift = _requant_params(m, cfg, f"layer {n.name!r}")
    return QConv(name=n.name, weight=wq, bias=bq, mult=mult, shift=shift,
                 stride=n.attrs["stride"], pads=tuple(n.attrs["pads"]), out_max=out_max,
                 in_scale=s_in, out_scale=s_out, weight_scale=s_w)


def quantize(graph: Graph, ranges: dict[str, float], cfg: AccelConfig) -> QModel:
    """Lower a calibrated chain (after :func:`compiler.passes.lower`) to a :class:`QModel`."""
    act_max = cfg.act_max
    s_in, in_max = 1.0, max(-cfg.input_min, cfg.input_max)
    layers = []
    classifier = graph.nodes[-2]

    def scale(name: str, top: int) -> float:
        r = ranges.get(name)
        if r is None:
            raise IRError(f"no calibration range for tensor {name!r}")
        return max(r, 1e-8) / top

    for n in graph.nodes:
        if n.op == "Conv":
            top = cfg.score_max if n is classifier else act_max
            s_out = scale(n.name, top)
            layers.append(_quantize_conv(n, s_in, in_max, s_out, top, cfg))
            s_in, in_max = s_out, top
        elif n.op == "Fire":
            sq, e1, e3 = (n.params[k] for k in ("squeeze", "expand1x1", "expand3x3"))
            s_sq = scale(sq.name, act_max)
            s_f = scale(n.name, act_max)
            qs = _quantize_conv(sq, s_in, in_max, s_sq, act_max, cfg)
            q1 = _quantize_conv(e1, s_sq, act_max, s_f, act_max, cfg)
            q3 = _quantize_conv(e3, s_sq, act_max, s_f, act_max, cfg)
            layers.append(QFire(n.name, qs, q1, q3))
            s_in, in_max = s_f, act_max
        elif n.op not in ("MaxPool", "GlobalAveragePool"):
            raise IRError(f"node {n.name!r} ({n.op}) cannot be quantised; lower the graph first")
    return assemble(graph, {la.name: la for la in layers}, cfg)


def assemble(graph: Graph, convs: dict, cfg: AccelConfig) -> QModel:
    """The :class:`QModel` of a lowered chain from its quantised layers by node name: ``convs``
    maps each Conv node's and each Fire node's name to its :class:`QConv` or :class:`QFire`
    (pools carry no parameters and come from the graph)."""
    layers = []
    for n in graph.nodes:
        if n.op in ("Conv", "Fire"):
            layers.append(convs[n.name])
        elif n.op == "MaxPool":
            layers.append(QMaxPool(n.name, n.attrs["kernel"], n.attrs["stride"],
                                   n.attrs["ceil_mode"], tuple(n.attrs["pads"])))
        elif n.op == "GlobalAveragePool":
            layers.append(QGlobalSum(n.name))
        else:
            raise IRError(f"node {n.name!r} ({n.op}) cannot be quantised; lower the graph first")
    qm = QModel(name=graph.name, input_shape=tuple(graph.input_shape), layers=layers,
                source_sha256=graph.source_sha256, config_name=cfg.name)
    _, h, w = qm.input_shapes()[layers[-1].name]
    qm.score_scale = convs[graph.nodes[-2].name].out_scale / (h * w)
    return qm



#: range multipliers that :func:`refine_ranges` tries for each 8-bit tensor
REFINE_FACTORS = (0.55, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _fake_quant(a: np.ndarray, r: float, top: int) -> np.ndarray:
    s = max(r, 1e-8) / top
    return np.clip(np.floor(a / s + 0.5), 0, top) * s


def refine_ranges(graph: Graph, ranges: dict[str, float], inputs: list[np.ndarray],
                  factors=REFINE_FACTORS, progress=None) -> dict[str, float]:
    """Choose each 8-bit tensor's range among ``factors`` x its percentile range.

    One percentile does not suit every tensor: a tensor fed by rare outliers wants a tighter
    range, one whose tail carries the decision a wider one. Each tensor is tried on its own (the
    rest of the network in float) and keeps the factor whose quantisation moves the network's
    output least: the smallest mean KL divergence from the float softmax over ``inputs``. The
    classifier output (wide) is left alone. Deterministic; few choices per tensor, so it does
    not overfit a calibration set of ~100 images.
    """
    pts = calibration_points(graph)[:-1]
    top = (1 << 8) - 1
    xs = [np.asarray(x, np.float32) for x in inputs]
    # The input of every chain layer for every image, so that a trial runs only the suffix.
    layer_in: list[list[np.ndarray]] = []
    ref = []
    for x in xs:
        ins = []
        for n in graph.nodes:
            ins.append(x)
            x = _run_node(n, {n.inputs[0]: x})
        layer_in.append(ins)
        ref.append(_softmax(x))

    def suffix(i: int, start: int, tensor: str, r: float) -> np.ndarray:
        x = layer_in[i][start]
        for n in graph.nodes[start:]:
            if n.op == "Fire":
                sq = n.params["squeeze"]
                s = _conv_node(sq, x)
                if sq.name == tensor:
                    s = _fake_quant(s, r, top)
                x = np.concatenate([_conv_node(n.params["expand1x1"], s),
                                    _conv_node(n.params["expand3x3"], s)], axis=0)
            else:
                x = _run_node(n, {n.inputs[0]: x})
            if n.name == tensor:
                x = _fake_quant(x, r, top)
        return x

    out = dict(ranges)
    for k, t in enumerate(pts):
        start = next(i for i, n in enumerate(graph.nodes)
                     if n.name == t or (n.op == "Fire" and n.params["squeeze"].name == t))
        best, best_kl = 1.0, None
        for f in factors:
            kl = 0.0
            for i, p in enumerate(ref):
                q = _softmax(suffix(i, start, t, ranges[t] * f))
                kl += float(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12))))
            if best_kl is None or kl < best_kl - 1e-12:
                best, best_kl = f, kl
        out[t] = ranges[t] * best
        if progress:
            progress(k + 1, len(pts))
    return out
