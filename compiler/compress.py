"""Compress a shared-weight (Deep-Compression) model into a board's block RAM.

The passes, in order (each a function over a list of :class:`LayerPlan`, one per convolution):

1. :func:`read_shared_weights` - the model's per-layer codebooks as they are (pruned weights are
   exact zeros; every layer of the Deep-Compression v1.0 model has at most 256 distinct values);
2. :func:`measure_sensitivity` - per layer, how much the class scores move per unit of
   (input-power-weighted) weight error, measured on a few calibration images;
3. :func:`allocate_bits` - the code width ``k`` per layer that minimises the predicted score error
   under the board's byte budget (a multiple-choice knapsack over the exact encoded sizes);
4. :func:`recluster` - SSE-optimal 1-D clustering of each layer's non-zero weights into
   ``2**k - 1`` centroids (entry 0 stays 0, so the sparsity pattern is the model's own);
5. :func:`gptq_codebooks` - layer by layer along the quantised path, GPTQ-style assignment of
   every non-zero weight to a codebook entry with error feedback through the layer's input
   Hessian, alternated with least-squares refits of the codebook, gains and biases on the
   layer's output (numpy; the pruning mask stays);
6. (only with ``gptq_iters=0``) :func:`match_channel_stats` - no gradients: per output channel, a
   gain and a bias that give the pre-activations the float model's mean and standard deviation
   on the calibration images, layer by layer along the quantised path;
7. optionally :func:`compiler.distill.distill` (PyTorch) - fine-tunes the shared centroids, the
   gains and the biases by knowledge distillation from the float model with augmentation;
8. :func:`integerize` - integer codebooks (``entry_bits`` wide), biases and requantisation
   integers, written to the weight image (:mod:`compiler.wformat`), from which
   :func:`qmodel_from_image` builds the golden :class:`~compiler.qmodel.QModel`.

:func:`compress_for_target` runs them all and caches the weight image by content hash;
:func:`sweep` evaluates several byte budgets and plots accuracy against weight bytes.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hw.config import AccelConfig, get_config

from . import api, quant, wformat
from .execute import conv_float, maxpool_float
from .ir import Graph, IRError, Node
from .preprocess import load_image
from .qmodel import QConv, QFire, QModel

__all__ = [
    "Target", "TARGETS", "LayerPlan", "METHOD_VERSION",
    "optimal_clusters", "cluster_weights", "conv_nodes", "lookup_groups", "column_words",
    "read_shared_weights", "measure_sensitivity", "allocate_bits", "recluster",
    "match_channel_stats", "gptq_assign", "refit_codebook", "refit_gain_bias", "gptq_layer",
    "gptq_codebooks", "integerize", "qmodel_from_image", "image_report",
    "student_graph", "compress", "compress_cached", "compress_for_target", "teacher_ranges",
    "split_files", "evaluate", "evaluate_split", "sweep", "main", "get_target",
    "shipped_files", "shipped_product", "ship_product", "check_shared_weight_model",
    "load_target_model", "SHIPPED_SEED", "MAX_SHARED_VALUES",
]

#: bump when the compression changes meaning, so cached images are not reused
METHOD_VERSION = "compress-v4"


@dataclass(frozen=True)
class Target:
    """What a board gives the weights: a byte budget and the block RAM left after buffers."""

    name: str
    weight_bytes: int
    ebr_total: int
    ebr_reserved: int
    word_bits: int = wformat.DEFAULT_WORD_BITS
    ebr_bits: int = 18 * 1024

    @property
    def ebr_max(self) -> int:
        """EBR blocks the weight streams may use."""
        return self.ebr_total - self.ebr_reserved

    @property
    def words_per_ebr(self) -> int:
        return self.ebr_bits // self.word_bits


TARGETS: dict[str, Target] = {
    # ECP5 LFE5U-85F: 208 EBR x 18 Kbit. 48 are not the streams': the engine's buffers and
    # FIFOs (~35), the parameters (9), the central codebook (2), the host link (docs/boards.md).
    # The engine's per-column stream memories (hw.config ulx3s-85f wstream_depth) are the
    # binding limit; compress() checks them.
    "ulx3s-85f": Target("ulx3s-85f", weight_bytes=390 * 1024, ebr_total=208, ebr_reserved=48),
}

#: code widths the allocator may choose
K_CHOICES = (2, 3, 4, 5, 6, 7, 8)
#: default width of the integer codebook entries (ECP5 multipliers take 18-bit operands)
DEFAULT_ENTRY_BITS = 12
#: most distinct values clustered exactly; more are first binned into this many quantiles
MAX_EXACT_VALUES = 1024


def get_target(target: str | Target) -> Target:
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except KeyError:
        raise ValueError(f"Unknown target {target!r}; expected one of "
                         f"{', '.join(sorted(TARGETS))}") from None


# -- clustering ---------------------------------------------------------------------------------

def optimal_clusters(values: np.ndarray, weights: np.ndarray, n: int
                     ) -> tuple[np.ndarray, np.ndarray, float]:
    """SSE-optimal 1-D clustering of sorted distinct ``values`` with ``weights`` into ``n``.

    Exact dynamic programme over contiguous segments (optimal 1-D clusters are intervals).
    Returns ``(centroids [n'], labels [len(values)], weighted SSE)`` with ``n' = min(n, len)``;
    centroids are the weighted means, increasing.
    """
    v = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    m = v.size
    if m == 0:
        return np.zeros(0), np.zeros(0, np.int64), 0.0
    if np.any(np.diff(v) <= 0):
        raise ValueError("values must be sorted and distinct")
    if n >= m:
        return v.copy(), np.arange(m), 0.0
    w1 = np.concatenate([[0.0], np.cumsum(w)])
    s1 = np.concatenate([[0.0], np.cumsum(w * v)])
    s2 = np.concatenate([[0.0], np.cumsum(w * v * v)])
    i = np.arange(m + 1)[:, None]
    j = np.arange(m + 1)[None, :]
    ww, ss = w1[j] - w1[i], s1[j] - s1[i]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = (s2[j] - s2[i]) - np.where(ww > 0, ss * ss / ww, 0.0)
    cost = np.where(j > i, np.maximum(cost, 0.0), np.inf)
    best = cost[0].copy()
    back = np.zeros((n, m + 1), np.int64)
    cols = np.arange(m + 1)
    for c in range(1, n):
        tot = best[:, None] + cost
        back[c] = np.argmin(tot, axis=0)
        best = tot[back[c], cols]
    bounds = [m]
    for c in range(n - 1, 0, -1):
        bounds.append(int(back[c][bounds[-1]]))
    bounds.append(0)
    bounds = bounds[::-1]
    labels = np.zeros(m, np.int64)
    cent = np.zeros(n)
    for c in range(n):
        a, b = bounds[c], bounds[c + 1]
        labels[a:b] = c
        cent[c] = (s1[b] - s1[a]) / (w1[b] - w1[a]) if w1[b] > w1[a] else v[a:b].mean()
    return cent, labels, float(best[m])


def cluster_weights(w: np.ndarray, k: int, importance: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster the non-zero entries of ``w`` into ``2**k - 1`` shared values.

    ``importance`` (broadcastable to ``w``) weights each weight's squared error. Zeros stay zero
    (index 0). Returns ``(centroids [2**k] with centroids[0] == 0, indices like w, SSE)``.
    Exact when ``w`` has at most :data:`MAX_EXACT_VALUES` distinct non-zero values.
    """
    if not 1 <= k <= 16:
        raise ValueError(f"code width k must be in 1..16, not {k}")
    w = np.asarray(w, np.float64)
    imp = np.broadcast_to(np.ones(1) if importance is None else
                          np.asarray(importance, np.float64), w.shape)
    nz = w != 0
    vals, wts = w[nz], imp[nz]
    cent = np.zeros(1 << k)
    idx = np.zeros(w.shape, np.int64)
    if vals.size == 0:
        return cent, idx, 0.0
    u, inv = np.unique(vals, return_inverse=True)
    if u.size > MAX_EXACT_VALUES:
        # bin to quantiles first: clustering the bin means is near-optimal and keeps it fast
        edges = np.quantile(vals, np.linspace(0, 1, MAX_EXACT_VALUES + 1)[1:-1])
        inv = np.searchsorted(edges, vals)
        cnt = np.bincount(inv, wts, MAX_EXACT_VALUES)
        sw = np.bincount(inv, wts * vals, MAX_EXACT_VALUES)
        keep = cnt > 0
        remap = np.cumsum(keep) - 1
        u = sw[keep] / cnt[keep]
        inv = remap[inv]
        cw = cnt[keep]
    else:
        cw = np.bincount(inv, wts, u.size)
    cw = np.maximum(cw, 1e-30)
    c, lab, _ = optimal_clusters(u, cw, (1 << k) - 1)
    # re-derive exact weighted means and the SSE from the raw values
    codes = lab[inv]
    sw_ = np.bincount(codes, wts, c.size)
    sv_ = np.bincount(codes, wts * vals, c.size)
    c = np.where(sw_ > 0, sv_ / np.maximum(sw_, 1e-300), c)
    # a cluster of one distinct value is that value exactly (no rounding in the mean)
    lo = np.full(c.size, np.inf)
    hi = np.full(c.size, -np.inf)
    np.minimum.at(lo, codes, vals)
    np.maximum.at(hi, codes, vals)
    c = np.where(lo == hi, lo, c)
    cent[1:1 + c.size] = c
    idx[nz] = codes + 1
    sse = float((wts * (vals - c[codes]) ** 2).sum())
    return cent, idx, sse


# -- the layers ---------------------------------------------------------------------------------

def conv_nodes(graph: Graph) -> list[Node]:
    """Every convolution of a lowered chain in execution order (Fire: squeeze, e1x1, e3x3)."""
    out = []
    for n in graph.nodes:
        if n.op == "Conv":
            out.append(n)
        elif n.op == "Fire":
            out += [n.params[k] for k in ("squeeze", "expand1x1", "expand3x3")]
    return out


@dataclass
class LayerPlan:
    """One convolution on its way to the board.

    The float weight the student model uses is ``gain[o] * centroids[indices]`` and its bias
    ``bias[o]``; ``k`` is the code width (``centroids`` has ``2**k`` entries, entry 0 is 0).
    """

    name: str
    w: np.ndarray  # the model's float weights
    b: np.ndarray
    k: int
    centroids: np.ndarray
    indices: np.ndarray
    gain: np.ndarray
    bias: np.ndarray
    importance: np.ndarray | None = None  # [C] mean square input per input channel
    sensitivity: float = 1.0  # score error per unit of importance-weighted weight error
    sse: dict = field(default_factory=dict)  # k -> importance-weighted clustering error
    words: dict = field(default_factory=dict)  # k -> stream words

    def weight(self) -> np.ndarray:
        return (self.gain[:, None, None, None] * self.centroids[self.indices]).astype(np.float32)

    @property
    def out_channels(self) -> int:
        return int(self.w.shape[0])


def read_shared_weights(graph: Graph, source: str | Path | None = None,
                        prototxt: str | Path | None = None) -> list[LayerPlan]:
    """Read each layer's shared-weight structure: its distinct values become the codebook.

    A layer with ``d`` distinct non-zero values gets ``k = ceil(log2(d + 1))`` (at least 1);
    the Deep-Compression v1.0 model has at most 255 per layer (its 8-bit codebooks). Centroids
    are the distinct values in increasing order (entry 0 is 0) and ``indices`` their ranks.

    ``source`` None reads the values from ``graph`` (the ONNX weights). A Deep Compression
    ``.net`` file (:mod:`compiler.dcnet`, with ``prototxt``, default the release's) reads them
    from the authors' own codebooks and indices instead: the codebook entries the layer uses,
    sorted; its layers must match ``graph``'s convolutions in order and shape. Both give the
    same plans for the release (``tests/test_dcnet.py``).
    """
    convs = conv_nodes(graph)
    if source is None:
        plans = []
        for n in convs:
            w = np.asarray(n.params["W"], np.float64)
            b = np.asarray(n.params["B"], np.float64)
            d = np.unique(w[w != 0]).size
            k = max(1, math.ceil(math.log2(d + 1)))
            cent, idx, _ = cluster_weights(w, k)
            plans.append(LayerPlan(n.name, w, b, k, cent, idx, np.ones(w.shape[0]), b.copy()))
        return plans
    from . import dcnet

    layers = dcnet.read_dcnet(source, prototxt or dcnet.DEFAULT_PROTOTXT)
    if len(layers) != len(convs):
        raise ValueError(f"{source}: {len(layers)} layers, but model {graph.name!r} has "
                         f"{len(convs)} convolutions; expected one layer per convolution")
    plans = []
    for la, n in zip(layers, convs, strict=True):
        if la.shape != tuple(n.params["W"].shape):
            raise ValueError(f"{source}: layer {la.name!r} has shape {la.shape}; expected "
                             f"{tuple(n.params['W'].shape)} of the model's convolution "
                             f"{n.name!r}")
        values = la.codebook.astype(np.float64)[la.indices]
        used = np.unique(values[values != 0])  # the codebook entries in use, increasing
        k = max(1, math.ceil(math.log2(used.size + 1)))
        cent = np.zeros(1 << k)
        cent[1:1 + used.size] = used
        idx = np.where(values != 0, np.searchsorted(used, values) + 1, 0)
        b = la.bias.astype(np.float64)
        plans.append(LayerPlan(n.name, values, b, k, cent, idx, np.ones(la.shape[0]), b.copy()))
    return plans


def student_graph(graph: Graph, plans: list[LayerPlan]) -> Graph:
    """``graph`` with every convolution's weights and bias replaced by the plans' float ones."""
    g = graph.copy()
    by = {p.name: p for p in plans}
    for n in conv_nodes(g):
        p = by[n.name]
        n.params["W"] = p.weight()
        n.params["B"] = p.bias.astype(np.float32)
    return g


# -- a small numpy forward with per-layer hooks ------------------------------------------------

def _steps(graph: Graph):
    """(node, [conv nodes]) per top-level layer."""
    return [(n, [n] if n.op == "Conv" else
             [n.params[k] for k in ("squeeze", "expand1x1", "expand3x3")] if n.op == "Fire"
             else []) for n in graph.nodes]


def _run_step(n: Node, x: np.ndarray, weights: dict, fq: dict | None = None) -> np.ndarray:
    """One top-level layer in float32; ``weights`` overrides (W, B) by conv name and ``fq``
    gives activation scales to fake-quantise conv outputs with (round, clamp 0..255)."""

    def conv(c: Node, a):
        w, b = weights.get(c.name, (c.params["W"], c.params["B"]))
        y = np.maximum(conv_float(a, w, b, c.attrs["stride"], c.attrs["pads"]), 0)
        if fq is not None and c.name in fq:
            s, top = fq[c.name]
            y = np.clip(np.floor(y / s + 0.5), 0, top) * np.float32(s)
        return y

    if n.op == "Conv":
        return conv(n, x)
    if n.op == "Fire":
        s = conv(n.params["squeeze"], x)
        return np.concatenate([conv(n.params["expand1x1"], s), conv(n.params["expand3x3"], s)])
    if n.op == "MaxPool":
        return maxpool_float(x, n.attrs["kernel"], n.attrs["stride"], n.attrs["ceil_mode"],
                             n.attrs["pads"])
    if n.op == "GlobalAveragePool":
        return x.mean(axis=(1, 2))
    raise IRError(f"node {n.name!r} ({n.op}) is not a layer of a lowered chain")


def _act_scales(graph: Graph, ranges: dict, cfg: AccelConfig) -> dict:
    """Per conv name, the (scale, top) its output is quantised to (quant.quantize's rule)."""
    out = {}
    classifier = graph.nodes[-2]
    for n in graph.nodes:
        if n.op == "Conv":
            top = cfg.score_max if n is classifier else cfg.act_max
            out[n.name] = (max(ranges[n.name], 1e-8) / top, top)
        elif n.op == "Fire":
            sq = n.params["squeeze"]
            out[sq.name] = (max(ranges[sq.name], 1e-8) / cfg.act_max, cfg.act_max)
            for k in ("expand1x1", "expand3x3"):
                out[n.params[k].name] = (max(ranges[n.name], 1e-8) / cfg.act_max, cfg.act_max)
    return out


# -- passes ----------------------------------------------------------------------------------------

def measure_sensitivity(graph: Graph, plans: list[LayerPlan], images: Sequence[np.ndarray],
                        probe_k: int = 4, word_bits: int = wformat.DEFAULT_WORD_BITS,
                        progress=None) -> list[LayerPlan]:
    """Fill each plan's ``importance``, ``sse`` and ``words`` for every k of :data:`K_CHOICES`
    and its ``sensitivity``: the mean squared change of the class scores (pre-softmax logits)
    when only that layer is clustered to ``probe_k`` bits, per unit of its importance-weighted
    clustering error. Returns new plans."""
    plans = copy.deepcopy(plans)
    by = {p.name: p for p in plans}
    steps = _steps(graph)
    # forward once, keeping every step's input and every conv's mean square input channel
    inputs = [[None] * len(steps) for _ in images]
    power = {p.name: np.zeros(p.w.shape[1]) for p in plans}
    logits = []
    for i, x in enumerate(images):
        a = np.asarray(x, np.float32)
        for s, (n, convs) in enumerate(steps):
            inputs[i][s] = a
            if n.op == "Fire":
                sq = n.params["squeeze"]
                power[sq.name] += (a.astype(np.float64) ** 2).mean(axis=(1, 2))
                sqo = _run_step(sq, a, {})
                for c in convs[1:]:
                    power[c.name] += (sqo.astype(np.float64) ** 2).mean(axis=(1, 2))
            elif n.op == "Conv":
                power[n.name] += (a.astype(np.float64) ** 2).mean(axis=(1, 2))
            a = _run_step(n, a, {})
        logits.append(a)
    for p in plans:
        p.importance = power[p.name] / max(len(images), 1)
        imp = p.importance[None, :, None, None]
        for k in K_CHOICES:
            _, idx, sse = cluster_weights(p.w, k, imp)
            p.sse[k] = sse
            p.words[k] = min(wformat.encoding_sizes(idx, k, word_bits).values())
    done = 0
    for s, (n, convs) in enumerate(steps):
        for c in convs:
            p = by[c.name]
            # probe at the widest k <= probe_k that still loses something
            k = max([kk for kk in K_CHOICES if kk <= probe_k and p.sse[kk] > 0], default=1)
            cent, idx, sse = cluster_weights(p.w, k, p.importance[None, :, None, None])
            wq = (cent[idx]).astype(np.float32)
            err = 0.0
            for i in range(len(images)):
                a = _run_step(n, inputs[i][s], {c.name: (wq, c.params["B"])})
                for n2, _ in steps[s + 1:]:
                    a = _run_step(n2, a, {})
                err += float(((a - logits[i]) ** 2).mean())
            err /= max(len(images), 1)
            p.sensitivity = err / sse if sse > 0 else 0.0
            done += 1
            if progress:
                progress(done, len(plans))
    return plans


def layer_param_bits(p: LayerPlan, k: int, entry_bits: int, bias_bits: int) -> int:
    return (1 << k) * entry_bits + p.out_channels * (bias_bits + wformat.MULT_BITS
                                                     + wformat.SHIFT_BITS)


def lookup_groups(plans: Sequence[LayerPlan]) -> list[list[int]]:
    """Indices of ``plans`` grouped by the engine step that runs them: a Fire module's squeeze
    and expands (``fireN/...``) share one lane lookup table, a plain convolution has its own."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(plans):
        groups.setdefault(p.name.split("/")[0], []).append(i)
    return list(groups.values())


def allocate_bits(plans: list[LayerPlan], budget_bytes: int, target: Target,
                  entry_bits: int = DEFAULT_ENTRY_BITS, bias_bits: int = 24,
                  k_choices: Sequence[int] = K_CHOICES, unit: int = 16,
                  lookup_depth: int | None = None) -> list[LayerPlan]:
    """Choose ``k`` per layer minimising ``sum(sensitivity * sse[k])`` subject to
    stream bytes + parameter bytes <= ``budget_bytes``, stream words within the target's
    EBR and, with ``lookup_depth``, the codebooks of each engine step (:func:`lookup_groups`:
    ``sum(2**k)`` over a Fire module's three convolutions) within a lane's lookup table (a
    multiple-choice knapsack over the steps, solved by dynamic programming in ``unit``-byte
    steps).

    Needs :func:`measure_sensitivity` first. Raises ``ValueError`` if even the smallest ``k``
    everywhere does not fit. Returns new plans with ``k`` set (centroids are not yet updated).
    """
    plans = copy.deepcopy(plans)
    max_words = target.ebr_max * target.words_per_ebr
    cap = budget_bytes // unit
    inf = float("inf")
    best = np.full(cap + 1, inf)
    best[0] = 0.0
    words_best = np.zeros(cap + 1, np.int64)
    # a floor on the sensitivities, so that spare bytes still go to the largest weight errors
    floor = 1e-3 * float(np.median([p.sensitivity for p in plans]) or 1.0)

    def option(p: LayerPlan, k: int) -> tuple[int, float, int]:
        if k not in p.sse:
            raise ValueError(f"layer {p.name!r}: no size for k={k}; run measure_sensitivity "
                             f"first")
        nbytes = (p.words[k] * target.word_bits
                  + layer_param_bits(p, k, entry_bits, bias_bits)) / 8
        return int(math.ceil(nbytes / unit)), (p.sensitivity + floor) * p.sse[k], p.words[k]

    groups = lookup_groups(plans)
    choice = []
    for group in groups:
        combos = [ks for ks in itertools.product(k_choices, repeat=len(group))
                  if lookup_depth is None or sum(1 << k for k in ks) <= lookup_depth]
        if not combos:
            raise ValueError(f"{plans[group[0]].name.split('/')[0]}: no code widths "
                             f"{tuple(k_choices)} keep its {len(group)} codebooks within "
                             f"lookup_depth {lookup_depth} entries")
        nb = np.full(cap + 1, inf)
        nw = np.zeros(cap + 1, np.int64)
        ch = np.full(cap + 1, -1, np.int64)
        for c, ks in enumerate(combos):
            opts = [option(plans[i], k) for i, k in zip(group, ks, strict=True)]
            cost_units = sum(o[0] for o in opts)
            d = sum(o[1] for o in opts)
            words = sum(o[2] for o in opts)
            if cost_units > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[cost_units:] = best[:cap + 1 - cost_units] + d
            cw = np.zeros(cap + 1, np.int64)
            cw[cost_units:] = words_best[:cap + 1 - cost_units] + words
            cand[cw > max_words] = inf
            # prefer lower error, then fewer bits
            better = cand < nb
            nb = np.where(better, cand, nb)
            nw = np.where(better, cw, nw)
            ch = np.where(better, c, ch)
        choice.append((combos, ch))
        best, words_best = nb, nw
    if not np.isfinite(best).any():
        raise ValueError(f"no code widths {tuple(k_choices)} fit {budget_bytes} bytes on "
                         f"{target.name}")
    s = int(np.argmin(best))
    for group, (combos, ch) in zip(reversed(groups), reversed(choice), strict=True):
        ks = combos[int(ch[s])]
        for i, k in zip(group, ks, strict=True):
            plans[i].k = k
            s -= option(plans[i], k)[0]
    return plans


def recluster(plans: list[LayerPlan], weighted: bool = True) -> list[LayerPlan]:
    """Cluster each layer's model weights into ``2**k - 1`` non-zero centroids (SSE-optimal,
    weighted by input-channel power when measured and ``weighted``); gains reset to 1 and
    biases to the model's. Returns new plans."""
    out = []
    for p in plans:
        p = copy.copy(p)
        imp = p.importance[None, :, None, None] if (weighted and p.importance is not None) \
            else None
        p.centroids, p.indices, _ = cluster_weights(p.w, p.k, imp)
        p.gain = np.ones(p.out_channels)
        p.bias = p.b.copy()
        out.append(p)
    return out


def _walk_both_paths(graph: Graph, xf, xq, fix, progress=None):
    """Run the float activations ``xf`` and the quantised-path ones ``xq`` (lists of
    per-image arrays) through the graph in execution order; every convolution goes through
    ``fix(conv, xf, xq) -> (yf, yq)`` (which corrects its plan and returns its outputs), pools
    run on both paths. ``progress(done, total)`` after every step."""
    for n_done, (n, convs) in enumerate(_steps(graph), 1):
        if n.op == "Conv":
            xf, xq = fix(n, xf, xq)
        elif n.op == "Fire":
            sf, sq = fix(convs[0], xf, xq)
            f1, q1 = fix(convs[1], sf, sq)
            f3, q3 = fix(convs[2], sf, sq)
            xf = [np.concatenate(t) for t in zip(f1, f3, strict=True)]
            xq = [np.concatenate(t) for t in zip(q1, q3, strict=True)]
        elif n.op == "MaxPool":
            xf = [_run_step(n, a, {}) for a in xf]
            xq = [_run_step(n, a, {}) for a in xq]
        if progress:
            progress(n_done, len(graph.nodes))


def match_channel_stats(graph: Graph, plans: list[LayerPlan], images: Sequence[np.ndarray],
                        act_scales: dict | None = None, progress=None) -> list[LayerPlan]:
    """No-gradient correction: layer by layer in execution order, along the quantised path
    (earlier layers already corrected, activations fake-quantised with ``act_scales``), set each
    output channel's gain and bias so that its pre-activation has the float model's mean and
    standard deviation over ``images`` and all positions. Returns new plans."""
    plans = copy.deepcopy(plans)
    by = {p.name: p for p in plans}
    xf = [np.asarray(x, np.float32) for x in images]
    xq = [a.copy() for a in xf]

    def fix(c: Node, af, aq):
        p = by[c.name]
        st, pads = c.attrs["stride"], c.attrs["pads"]
        wq = (p.centroids[p.indices]).astype(np.float32)
        o = p.out_channels
        sf = np.zeros((2, o))
        su = np.zeros((2, o))
        n = 0
        zfs, us = [], []
        for a_f, a_q in zip(af, aq, strict=True):
            zf = conv_float(a_f, c.params["W"], c.params["B"], st, pads).reshape(o, -1)
            u = conv_float(a_q, wq, np.zeros(o, np.float32), st, pads).reshape(o, -1)
            sf += [zf.sum(1, dtype=np.float64), (zf.astype(np.float64) ** 2).sum(1)]
            su += [u.sum(1, dtype=np.float64), (u.astype(np.float64) ** 2).sum(1)]
            n += zf.shape[1]
            zfs.append(zf)
            us.append(u)
        mf, mu = sf[0] / n, su[0] / n
        vf = np.maximum(sf[1] / n - mf**2, 0)
        vu = np.maximum(su[1] / n - mu**2, 0)
        gain = np.where((vu > 1e-20) & (vf > 1e-20), np.sqrt(vf / np.maximum(vu, 1e-30)), 1.0)
        p.gain = gain
        p.bias = mf - gain * mu
        outs_f, outs_q = [], []
        for zf, u in zip(zfs, us, strict=True):
            outs_f.append(np.maximum(zf, 0))
            y = np.maximum(u * gain[:, None].astype(np.float32)
                           + p.bias[:, None].astype(np.float32), 0)
            if act_scales is not None and c.name in act_scales:
                s, top = act_scales[c.name]
                y = np.clip(np.floor(y / s + 0.5), 0, top) * np.float32(s)
            outs_q.append(y)
        # restore spatial shapes
        _, h, w = af[0].shape
        kh = c.params["W"].shape[2]
        ho = (h + pads[0] + pads[2] - kh) // st + 1
        wo = (w + pads[1] + pads[3] - kh) // st + 1
        return ([a.reshape(o, ho, wo) for a in outs_f], [a.reshape(o, ho, wo) for a in outs_q])

    _walk_both_paths(graph, xf, xq, fix, progress)
    return plans


# -- GPTQ-style codebook assignment ------------------------------------------------------------

def _patches(a: np.ndarray, c: Node) -> np.ndarray:
    """``[C*KH*KW + 1, positions]`` im2col columns of ``a`` for conv ``c``, plus a row of ones
    (the bias input), float32."""
    from .golden import im2col

    kh, kw = c.params["W"].shape[2:]
    st = c.attrs["stride"]
    top, left, bottom, right = c.attrs["pads"]
    xp = np.pad(np.asarray(a, np.float32), ((0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[1] - kh) // st + 1
    wo = (xp.shape[2] - kw) // st + 1
    cols = im2col(xp, kh, kw, st, ho, wo, np.float32)
    return np.concatenate([cols, np.ones((1, cols.shape[1]), np.float32)])


def _row_grid(cent: np.ndarray, active: np.ndarray):
    """The codebook values of the ``active`` entries, sorted, and their indices."""
    vals = cent[active]
    order = np.argsort(vals, kind="stable")
    return vals[order], active[order]


def _nearest(x: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """Position in sorted ``vals`` nearest to each ``x``."""
    if vals.size == 1:
        return np.zeros(x.shape, np.int64)
    mids = (vals[1:] + vals[:-1]) / 2
    return np.searchsorted(mids, x)


def gptq_assign(target: np.ndarray, mask: np.ndarray, cent: np.ndarray, active: np.ndarray,
                gain: np.ndarray, hess: np.ndarray, damp: float = 1e-3
                ) -> tuple[np.ndarray, np.ndarray]:
    """Assign each masked weight of ``target`` (``[O, D]``, the last column the bias, not
    quantised) to a codebook entry, GPTQ-style: columns in order of decreasing input power,
    each column's rounding error (row ``o``'s grid is ``gain[o] * cent[active]``; unmasked
    weights become 0) spread over the not-yet-assigned columns of the same row through the
    Cholesky factor of ``hess^-1`` (``hess`` is ``[D, D]``, the layer's input second moment
    including the constant bias input). Returns ``(indices [O, D-1], bias [O])``."""
    o, d1 = target.shape
    d = d1 - 1
    h = np.array(hess, np.float64)
    dead = np.diag(h)[:d] <= 0
    h[np.arange(d)[dead], np.arange(d)[dead]] = 1.0
    h += damp * float(np.mean(np.diag(h))) * np.eye(d1)
    perm = np.concatenate([np.argsort(-np.diag(h)[:d], kind="stable"), [d]])
    hp = h[np.ix_(perm, perm)]
    hinv = np.linalg.inv(hp)
    hinv = (hinv + hinv.T) / 2
    u = np.linalg.cholesky(hinv).T  # upper: hinv = u.T @ u
    w = np.array(target, np.float64)[:, perm]
    mk = np.asarray(mask, bool)[:, perm[:d]]
    vals, ids = _row_grid(cent, active)
    g = np.maximum(np.asarray(gain, np.float64), 1e-12)
    idx = np.zeros((o, d), np.int64)
    for j in range(d):
        col = w[:, j]
        pos = _nearest(col / g, vals)
        q = np.where(mk[:, j], g * vals[pos], 0.0)
        idx[:, j] = np.where(mk[:, j], ids[pos], 0)
        err = (col - q) / u[j, j]
        w[:, j + 1:] -= err[:, None] * u[j, j + 1:][None, :]
    out = np.zeros((o, d), np.int64)
    out[:, perm[:d]] = idx
    return out, w[:, d]


def refit_codebook(idx: np.ndarray, gain: np.ndarray, k_entries: int, hqq: np.ndarray,
                   v: np.ndarray, ridge: float = 1e-9) -> np.ndarray:
    """Least-squares codebook for fixed assignment ``idx`` (``[O, D]``, 0 = zero weight) and
    gains, with each row's bias free: minimises ``sum_o q_o^T hqq q_o - 2 q_o^T v_o`` over
    ``q_o = [gain[o] * c[idx[o]], b_o]``. ``v`` is ``[O, D+1]`` (``hqf @ [w_o, b_o]``).
    Returns ``c`` (``k_entries`` values, ``c[0] = 0``; unused entries 0)."""
    d = idx.shape[1]
    hww, hwb, hbb = hqq[:d, :d], hqq[:d, d], max(float(hqq[d, d]), 1e-30)
    hc = hww - np.outer(hwb, hwb) / hbb
    vc = v[:, :d] - np.outer(v[:, d], hwb) / hbb
    a = np.zeros((k_entries, k_entries))
    r = np.zeros(k_entries)
    for lo in range(0, idx.shape[0], 64):
        sl = slice(lo, lo + 64)
        oh = (idx[sl, None, :] == np.arange(k_entries)[None, :, None]).astype(np.float64)
        oh[:, 0] = 0
        gs = np.asarray(gain[sl], np.float64)
        ph = oh @ hc  # [o, K, D]
        a += np.einsum("o,okd,old->kl", gs ** 2, ph, oh, optimize=True)
        r += np.einsum("o,okd,od->k", gs, oh, vc[sl], optimize=True)
    used = np.diag(a) > 0
    c = np.zeros(k_entries)
    if used.any():
        au = a[np.ix_(used, used)]
        au = au + ridge * float(np.mean(np.diag(au))) * np.eye(au.shape[0])
        c[used] = np.linalg.solve(au, r[used])
    c[0] = 0.0
    return c


def refit_gain_bias(idx: np.ndarray, cent: np.ndarray, hqq: np.ndarray, v: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the least-squares gain (kept positive) and bias for fixed weights
    ``cent[idx]`` (same objective as :func:`refit_codebook`)."""
    d = idx.shape[1]
    hww, hwb, hbb = hqq[:d, :d], hqq[:d, d], max(float(hqq[d, d]), 1e-30)
    hc = hww - np.outer(hwb, hwb) / hbb
    vc = v[:, :d] - np.outer(v[:, d], hwb) / hbb
    a = cent[idx]
    den = np.einsum("od,de,oe->o", a, hc, a)
    num = np.einsum("od,od->o", a, vc)
    gain = np.where(den > 1e-30, num / np.maximum(den, 1e-30), 1.0)
    gain = np.maximum(gain, 1e-3 * max(float(np.median(np.abs(gain))), 1e-12))
    bias = (v[:, d] - gain * (a @ hwb)) / hbb
    return gain, bias


def _layer_loss(idx, cent, gain, bias, hqq, v, const):
    """``sum_o |Y_student - Y_float|^2`` from the second moments (``const = sum t^T hff t``)."""
    q = np.concatenate([gain[:, None] * cent[idx], bias[:, None]], axis=1)
    return float(np.einsum("od,de,oe->", q, hqq, q) - 2 * np.einsum("od,od->", q, v) + const)


def gptq_layer(p: LayerPlan, hqq: np.ndarray, hqf: np.ndarray, hff_t: float, iters: int = 3,
               damp: float = 1e-3, assign: str = "gptq", target_damp: float | None = 1e-6
               ) -> tuple[LayerPlan, list[float]]:
    """One layer: alternately GPTQ-assign (:func:`gptq_assign`, toward the least-squares
    optimum of the layer output given the quantised-path input) and refit the codebook, then
    the gains and biases, by least squares. The pruning mask stays. Returns the plan with the
    lowest output error (of those visited, starting from ``p`` with LS gains and biases) and
    the errors ``[start, after each iteration]``.

    ``hqq``/``hqf`` are the second moments of the layer's quantised-path input with itself and
    with the float input (im2col columns plus a constant row for the bias) and ``hff_t`` the
    float output's power, so the errors are ``sum |Y_student - Y_float|^2``. ``damp`` (relative
    to the mean diagonal) regularises GPTQ's Hessian, ``target_damp`` (None: ``damp``) the
    solve for the unconstrained optimum. ``assign="nearest"`` replaces GPTQ by the nearest
    grid entry (for comparison)."""
    p = copy.copy(p)
    o = p.out_channels
    d = int(np.prod(p.w.shape[1:]))
    w = np.concatenate([p.w.reshape(o, d), p.b[:, None]], axis=1)
    mask = p.w.reshape(o, d) != 0
    v = w @ hqf.T  # [O, D+1]: hqf @ w_o per row
    k_entries = p.centroids.size
    idx = p.indices.reshape(o, d)
    cent = np.asarray(p.centroids, np.float64)
    active = np.unique(idx[idx > 0])
    h = np.array(hqq, np.float64)
    hd = h.copy()
    hd += (damp if target_damp is None else target_damp) * float(np.mean(np.diag(h))) \
        * np.eye(d + 1)
    # the unconstrained optimum of the weights given the quantised-path input
    target = np.linalg.solve(hd, v.T).T
    gain, bias = refit_gain_bias(idx, cent, h, v)
    best = (_layer_loss(idx, cent, gain, bias, h, v, hff_t), idx, cent, gain, bias)
    losses = [best[0]]
    if active.size == 0:
        return p, losses
    for _ in range(iters):
        if assign == "gptq":
            idx, _ = gptq_assign(target, mask, cent, active, gain, h, damp)
        else:  # nearest entry of the row's grid to the model's weight (no error feedback)
            vals, ids = _row_grid(cent, active)
            idx = np.where(mask, ids[_nearest(w[:, :d] / gain[:, None], vals)], 0)
        cent = refit_codebook(idx, gain, k_entries, h, v)
        gain, bias = refit_gain_bias(idx, cent, h, v)
        loss = _layer_loss(idx, cent, gain, bias, h, v, hff_t)
        losses.append(loss)
        if loss < best[0]:
            best = (loss, idx, cent, gain, bias)
    _, idx, cent, gain, bias = best
    # a codebook entry that no weight uses keeps the value 0 (never decoded)
    p.indices = idx.reshape(p.w.shape).astype(np.int64)
    p.centroids = cent
    p.gain = gain
    p.bias = bias
    return p, losses


def gptq_codebooks(graph: Graph, plans: list[LayerPlan], images: Sequence[np.ndarray],
                   act_scales: dict | None = None, iters: int = 3, damp: float = 1e-3,
                   assign: str = "gptq", progress=None) -> tuple[list[LayerPlan], dict]:
    """Layer by layer along the quantised path (earlier layers already done, activations
    fake-quantised with ``act_scales``), collect each layer's input second moments over
    ``images`` (quantised path, and its cross moments with the float path) and run
    :func:`gptq_layer`. Returns the new plans and, per layer, the output errors
    ``[start, after each iteration]`` relative to the float output's power."""
    plans = copy.deepcopy(plans)
    by = {p.name: p for p in plans}
    xf = [np.asarray(x, np.float32) for x in images]
    xq = [a.copy() for a in xf]
    report = {}

    def fix(c: Node, af, aq):
        p = by[c.name]
        o = p.out_channels
        d1 = int(np.prod(p.w.shape[1:])) + 1
        hqq = np.zeros((d1, d1))
        hqf = np.zeros((d1, d1))
        pf = []
        for a_f, a_q in zip(af, aq, strict=True):
            cf, cq = _patches(a_f, c), _patches(a_q, c)
            hqq += cq @ cq.T
            hqf += cq @ cf.T
            pf.append((cf, cq))
        w = np.concatenate([p.w.reshape(o, -1), p.b[:, None]], axis=1)
        t_pow = 0.0
        for cf, _ in pf:
            t_pow += float((((w @ cf.astype(np.float64))) ** 2).sum())
        new, losses = gptq_layer(p, hqq, hqf, t_pow, iters, damp, assign)
        by[c.name].indices, by[c.name].centroids = new.indices, new.centroids
        by[c.name].gain, by[c.name].bias = new.gain, new.bias
        report[c.name] = [x / max(t_pow, 1e-30) for x in losses]
        wq = np.concatenate([new.weight().reshape(o, -1).astype(np.float64),
                             new.bias[:, None]], axis=1).astype(np.float32)
        wf = w.astype(np.float32)
        _, h, wd = af[0].shape
        kh = c.params["W"].shape[2]
        st, pads = c.attrs["stride"], c.attrs["pads"]
        ho = (h + pads[0] + pads[2] - kh) // st + 1
        wo = (wd + pads[1] + pads[3] - kh) // st + 1
        outs_f, outs_q = [], []
        for cf, cq in pf:
            outs_f.append(np.maximum(wf @ cf, 0).reshape(o, ho, wo))
            y = np.maximum(wq @ cq, 0)
            if act_scales is not None and c.name in act_scales:
                s, top = act_scales[c.name]
                y = np.clip(np.floor(y / s + 0.5), 0, top) * np.float32(s)
            outs_q.append(y.reshape(o, ho, wo))
        return outs_f, outs_q

    _walk_both_paths(graph, xf, xq, fix, progress)
    return plans, report


# -- integers --------------------------------------------------------------------------------------

def _signed_bits(a: np.ndarray) -> int:
    a = np.asarray(a, np.int64)
    hi = int(max(a.max(initial=0), -a.min(initial=0) - 1, 0))
    return hi.bit_length() + 1


def integerize(graph: Graph, plans: list[LayerPlan], ranges: dict, cfg: AccelConfig,
               entry_bits: int = DEFAULT_ENTRY_BITS) -> list[wformat.CompressedLayer]:
    """Integer codebooks, biases and requantisation per layer (``docs/compression.md``).

    Codebook entries are ``round(centroid / s_l)`` with ``s_l = max|centroid| / (2**(E-1) - 1)``
    and ``E = entry_bits``, lowered one bit at a time while a layer's accumulator bound
    ``sum|W[o]| * in_max + |B[o]|`` would not fit ``cfg.acc_bits``; the per-channel gain goes into
    the weight scale ``s_W[o] = s_l * gain[o]`` and from there into the requantisation
    multiplier. Activation scales follow :func:`compiler.quant.quantize` exactly.
    """
    by = {p.name: p for p in plans}
    scales = _act_scales(graph, ranges, cfg)
    out = []
    s_in, in_max = 1.0, max(-cfg.input_min, cfg.input_max)
    for n, convs in _steps(graph):
        if not convs:
            continue
        prev = (s_in, in_max)
        for j, c in enumerate(convs):
            p = by[c.name]
            if n.op == "Fire":
                s_in_c, max_c = prev if j == 0 else (scales[convs[0].name][0], cfg.act_max)
            else:
                s_in_c, max_c = prev
            s_out, top = scales[c.name]
            out.append(_integer_layer(c, p, s_in_c, max_c, s_out, top, cfg, entry_bits))
        s_in, in_max = scales[convs[-1].name]
    return out


def _integer_layer(c: Node, p: LayerPlan, s_in: float, in_max: int, s_out: float, top: int,
                   cfg: AccelConfig, entry_bits: int) -> wformat.CompressedLayer:
    cent = np.asarray(p.centroids, np.float64)
    gain = np.maximum(np.asarray(p.gain, np.float64), 1e-12)
    cmax = float(np.abs(cent).max())
    acc_lim = 1 << (cfg.acc_bits - 1)
    for e in range(entry_bits, 1, -1):
        s_l = cmax / ((1 << (e - 1)) - 1) if cmax > 0 else 1.0
        cb = np.round(cent / s_l).astype(np.int64)
        cb[0] = 0
        s_w = s_l * gain
        bias = np.round(p.bias / (s_in * s_w)).astype(np.int64)
        wint = cb[p.indices]
        bound = np.abs(wint).reshape(wint.shape[0], -1).sum(axis=1) * in_max + np.abs(bias)
        if bound.max(initial=0) < acc_lim and _signed_bits(bias) <= cfg.bias_bits:
            break
    else:
        raise IRError(f"layer {c.name!r}: no codebook width keeps the accumulator within "
                      f"{cfg.acc_bits} bits")
    dead = ~np.any(p.indices.reshape(p.indices.shape[0], -1), axis=1) & (bias == 0)
    m = np.where(dead, 0.0, s_in * s_w / s_out)
    mult, shift = quant._requant_params(m, cfg, f"layer {c.name!r}")
    return wformat.CompressedLayer(
        name=c.name, indices=p.indices.astype(np.int64), codebook=cb, entry_bits=e,
        bias=bias, mult=mult, shift=shift, bias_bits=max(2, _signed_bits(bias)),
        stride=c.attrs["stride"], pads=tuple(c.attrs["pads"]), out_max=top, in_scale=s_in,
        out_scale=s_out, weight_scale=s_w)


def _qconv(la: wformat.CompressedLayer) -> QConv:
    return QConv(name=la.name, weight=la.weight, bias=la.bias.astype(np.int64),
                 mult=la.mult.astype(np.int64), shift=la.shift.astype(np.int64),
                 stride=la.stride, pads=tuple(la.pads), out_max=la.out_max,
                 in_scale=la.in_scale, out_scale=la.out_scale, weight_scale=la.weight_scale)


def qmodel_from_image(data: bytes | list[wformat.CompressedLayer], graph: Graph,
                      config: AccelConfig | str = "ulx3s-85f") -> QModel:
    """The golden model of a weight image: ``QConv.weight`` is exactly ``codebook[index]``.

    ``graph`` (the lowered float model) gives the pools and the layer order; the image's layers
    must match its convolutions by name and shape (:class:`compiler.wformat.FormatError`).
    """
    cfg = get_config(config) if isinstance(config, str) else config
    if isinstance(data, (bytes, bytearray)):
        layers, header = wformat.read_image(data)
        if header["model_sha256"] != "0" * 64 and graph.source_sha256 and \
                header["model_sha256"] != graph.source_sha256:
            raise wformat.FormatError(f"weight image is for model {header['model_sha256'][:12]}"
                                      f", not {graph.source_sha256[:12]}")
    else:
        layers = list(data)
    convs = conv_nodes(graph)
    if [la.name for la in layers] != [c.name for c in convs]:
        raise wformat.FormatError(f"weight image layers {[la.name for la in layers]} do not "
                                  f"match the model's convolutions {[c.name for c in convs]}")
    by = {}
    for la, c in zip(layers, convs, strict=True):
        if la.shape != tuple(c.params["W"].shape):
            raise wformat.FormatError(f"layer {la.name!r}: image shape {la.shape}, model "
                                      f"{tuple(c.params['W'].shape)}")
        by[la.name] = _qconv(la)
    for n in graph.nodes:
        if n.op == "Fire":
            by[n.name] = QFire(n.name, *(by[n.params[k].name]
                                         for k in ("squeeze", "expand1x1", "expand3x3")))
    return quant.assemble(graph, by, cfg)


def image_report(data: bytes, target: Target | str) -> dict:
    """Sizes of a weight image on a target: ``weight_bytes`` (streams + parameters, bit-packed),
    ``weight_ebr`` (EBR blocks of the streams), ``fits`` and per layer bits, codebook size,
    density, encoding and bytes."""
    t = get_target(target)
    layers, header = wformat.read_image(data)
    rows = []
    words_total = 0
    param_bits_total = 0
    for la in layers:
        sizes = wformat.encoding_sizes(la.indices, la.k, header["word_bits"])
        (enc, r), words = min(sizes.items(), key=lambda kv: (kv[1], kv[0]))
        pbits = wformat.param_bits(la)
        words_total += words
        param_bits_total += pbits
        acc = np.abs(la.weight).reshape(la.shape[0], -1).sum(axis=1)
        rows.append({
            "name": la.name, "bits": la.k, "codebook_size": int(la.codebook.size),
            "entry_bits": la.entry_bits, "bias_bits": la.bias_bits,
            "density": round(la.density, 5), "weights": int(la.indices.size),
            "encoding": wformat.ENCODING_NAMES[enc], "run_bits": r, "stream_words": words,
            "stream_bytes": words * header["word_bits"] / 8, "param_bytes": pbits / 8,
            "max_abs_weight_sum": int(acc.max(initial=0)),
        })
    stream_bytes = words_total * header["word_bits"] / 8
    param_bytes = math.ceil(param_bits_total / 8)
    weight_bytes = math.ceil(stream_bytes) + param_bytes
    ebr = -(-words_total // t.words_per_ebr)
    return {
        "target": t.name, "weight_bytes": weight_bytes, "weight_budget": t.weight_bytes,
        "weight_ebr": ebr, "ebr_available": t.ebr_max, "stream_bytes": math.ceil(stream_bytes),
        "param_bytes": param_bytes, "word_bits": header["word_bits"],
        "fits": bool(weight_bytes <= t.weight_bytes and ebr <= t.ebr_max),
        "image_bytes": len(data), "image_sha256": wformat.image_sha256(data), "layers": rows,
    }


def column_words(graph: Graph, layers: list[wformat.CompressedLayer], cfg: AccelConfig
                 ) -> list[int]:
    """Words of each column's stream memory the engine of ``cfg`` needs for ``layers`` (the
    layout of ``compiler/wstream_image.py``; its limits other than ``wstream_depth`` raise
    ``ValueError`` as there, e.g. a Fire module's codebooks over ``lookup_depth``)."""
    from . import wimage, wstream_image

    qm = qmodel_from_image(layers, graph, cfg)
    img = wstream_image.build_stream_image(
        dataclasses.replace(cfg, wstream_depth=1 << 30), wimage.place_programs(cfg, qm),
        wstream_image.codes_of_image(layers))
    return [len(w) for w in img.words]


# -- the driver ------------------------------------------------------------------------------------

def _files_key(files: Sequence[Path]) -> bytes:
    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).name.encode() + b"\0" + hashlib.sha256(Path(f).read_bytes()).digest())
    return h.digest()


def teacher_ranges(graph: Graph, files: Sequence[Path]) -> dict[str, float]:
    """Activation ranges of the float model over ``files`` (:func:`compiler.quant.calibrate`),
    cached by content hash beside the compiler's other calibrations."""
    h = hashlib.sha256(f"{api.CALIB_METHOD}\n{graph.source_sha256}\n".encode())
    h.update(_files_key(files))
    cached = api.cache_dir() / "calib" / f"{h.hexdigest()}.json"
    if cached.is_file():
        return json.loads(cached.read_text())["ranges"]
    size = tuple(graph.input_shape[1:])
    ranges = quant.calibrate(graph, (load_image(f, size) for f in files), len(files))
    cached.parent.mkdir(parents=True, exist_ok=True)
    doc = {"method": api.CALIB_METHOD, "model_sha256": graph.source_sha256,
           "images": f"{len(files)} images", "ranges": ranges}
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(cached)
    return ranges


def _have_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _log(progress, msg: str):
    if progress:
        print(msg, flush=True)


def compress(graph: Graph, calib_files: Sequence[Path], target: Target | str = "ulx3s-85f",
             config: AccelConfig | str | None = None, budget: int | None = None, seed: int = 0,
             use_torch: bool | None = None, distill_opts: dict | None = None,
             entry_bits: int = DEFAULT_ENTRY_BITS, sens_images: int = 16,
             gptq_iters: int = 3, progress: bool = False) -> tuple[bytes, dict]:
    """Run every pass on ``graph`` and return ``(weight image, report)`` (no caching).

    ``budget`` defaults to the target's weight bytes. ``use_torch`` None means: distil when
    PyTorch is installed. ``gptq_iters`` rounds of :func:`gptq_codebooks` (0: keep the
    re-clustered nearest-centroid assignment). Deterministic for a given ``seed`` (and, with
    PyTorch, machine).
    """
    t0 = time.perf_counter()
    tgt = get_target(target)
    cfg = get_config(config or (tgt.name if tgt.name in _configs() else "default")) \
        if not isinstance(config, AccelConfig) else config
    budget = tgt.weight_bytes if budget is None else int(budget)
    if use_torch is None:
        use_torch = _have_torch()
    files = [Path(f) for f in calib_files]
    if not files:
        raise ValueError("compression needs at least one calibration image")
    size = tuple(graph.input_shape[1:])
    ranges = teacher_ranges(graph, files)
    images = [load_image(f, size) for f in files]
    rng = np.random.default_rng(seed)
    sel = np.sort(rng.choice(len(images), min(sens_images, len(images)), replace=False))
    timings = {}
    _log(progress, f"compress: {len(files)} calibration images, budget {budget} bytes")
    plans = read_shared_weights(graph)
    t = time.perf_counter()
    plans = measure_sensitivity(graph, plans, [images[i] for i in sel], word_bits=tgt.word_bits)
    timings["sensitivity_s"] = time.perf_counter() - t
    act = _act_scales(graph, ranges, cfg)
    alloc_budget = budget
    lookup = cfg.lookup_depth if cfg.weight_streams else None
    for _ in range(8):
        chosen = recluster(allocate_bits(plans, alloc_budget, tgt, entry_bits,
                                         lookup_depth=lookup))
        layers = integerize(graph, chosen, ranges, cfg, entry_bits)
        rep = image_report(wformat.write_image(layers, graph.source_sha256, tgt.word_bits), tgt)
        # parameter bytes were estimated: tighten by the excess (plus bias-width slack)
        excess = rep["weight_bytes"] - budget
        if cfg.weight_streams:
            # the allocator counts one stream; the engine's columns hold their own, unevenly
            over = max(column_words(graph, layers, cfg)) - cfg.wstream_depth
            excess = max(excess, over * cfg.pe_columns * cfg.wstream_word_bits // 8)
        if excess <= 0 and rep["weight_ebr"] <= tgt.ebr_max:
            break
        alloc_budget -= max(excess, 0) + 64
    else:
        raise ValueError(f"could not fit {budget} bytes on {tgt.name}")
    _log(progress, "compress: bits " + " ".join(f"{p.name}:{p.k}" for p in chosen))
    gptq_err = None
    t = time.perf_counter()
    if gptq_iters > 0:
        # the least-squares gains and biases replace the moment matching (measured: matching
        # the moments afterwards changes nothing, docs/compression.md)
        plans, gptq_err = gptq_codebooks(graph, chosen, images, act, iters=gptq_iters)
        gptq_err = {k: [round(v[0], 6), round(min(v), 6)] for k, v in gptq_err.items()}
        timings["gptq_s"] = time.perf_counter() - t
        method = "gptq"
    else:
        plans = match_channel_stats(graph, chosen, images, act)
        timings["match_stats_s"] = time.perf_counter() - t
        method = "stats"
    history = None
    if use_torch:
        from . import distill
        t = time.perf_counter()
        plans, history = distill.distill(graph, plans, files, ranges, cfg, seed=seed,
                                         progress=progress, **(distill_opts or {}))
        timings["distill_s"] = time.perf_counter() - t
        method += "+distill"
    layers = integerize(graph, plans, ranges, cfg, entry_bits)
    data = wformat.write_image(layers, graph.source_sha256, tgt.word_bits)
    rep = image_report(data, tgt)
    if cfg.weight_streams:
        cols = column_words(graph, layers, cfg)
        rep.update({"column_words": cols, "wstream_depth": cfg.wstream_depth})
        rep["fits"] = rep["fits"] and max(cols) <= cfg.wstream_depth
    if rep["weight_bytes"] > budget:
        raise ValueError(f"compressed image is {rep['weight_bytes']} bytes, over the budget "
                         f"{budget} (bias widths grew after fine-tuning)")
    timings["total_s"] = time.perf_counter() - t0
    rep.update({"budget": budget, "method": method, "seed": seed, "config": cfg.name,
                "calib_images": len(files), "timings": timings, "distill_history": history,
                "gptq_error": gptq_err, "hardware": _hw_fields(cfg),
                "method_version": METHOD_VERSION})
    return data, rep


def _configs():
    from hw.config import CONFIGS
    return CONFIGS


#: the fields of a target's configuration that shape its weight image (the stream layout)
_HW_FIELDS = ("weight_streams", "pe_columns", "pe_lanes", "wstream_word_bits", "wstream_depth",
              "wstream_kmax", "lookup_depth", "weight_bits")


def _hw_fields(cfg: AccelConfig) -> dict:
    """The fields of ``cfg`` that shape a weight image (:data:`_HW_FIELDS`)."""
    return {f: getattr(cfg, f) for f in _HW_FIELDS}


def _hw_key(tgt: Target) -> dict:
    """The configuration fields (:data:`_HW_FIELDS`) the image of ``tgt`` was laid out for."""
    return _hw_fields(get_config(_config_name(tgt)))


def _cache_key(graph: Graph, files: Sequence[Path], tgt: Target, budget: int, seed: int,
               use_torch: bool, distill_opts: dict | None, entry_bits: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": METHOD_VERSION, "model": graph.source_sha256, "hw": _hw_key(tgt),
                         "target": [tgt.name, tgt.weight_bytes, tgt.ebr_total, tgt.ebr_reserved,
                                    tgt.word_bits, tgt.ebr_bits],
                         "budget": budget, "seed": seed, "torch": use_torch,
                         "distill": distill_opts or {}, "entry_bits": entry_bits},
                        sort_keys=True).encode())
    h.update(_files_key(files))
    return h.hexdigest()


def compress_cached(graph: Graph, calib_files: Sequence[Path], target: Target | str,
                    budget: int | None = None, seed: int = 0, use_torch: bool | None = None,
                    distill_opts: dict | None = None, entry_bits: int = DEFAULT_ENTRY_BITS,
                    progress: bool = False) -> tuple[bytes, dict]:
    """:func:`compress` with its result cached by content hash (model, images, options) under
    ``<cache>/compress/``: a second call reads the image instead of recompressing."""
    tgt = get_target(target)
    budget = tgt.weight_bytes if budget is None else int(budget)
    if use_torch is None:
        use_torch = _have_torch()
    files = [Path(f) for f in calib_files]
    key = _cache_key(graph, files, tgt, budget, seed, use_torch, distill_opts, entry_bits)
    hit = shipped_product(graph, tgt, key)
    if hit is not None:
        return hit
    d = api.cache_dir() / "compress"
    img, js = d / f"{key}.sqwi", d / f"{key}.json"
    if img.is_file() and js.is_file():
        data = img.read_bytes()
        rep = json.loads(js.read_text())
        if rep.get("image_sha256") == wformat.image_sha256(data):
            return data, rep
    data, rep = compress(graph, files, tgt, budget=budget, seed=seed, use_torch=use_torch,
                         distill_opts=distill_opts, entry_bits=entry_bits, progress=progress)
    d.mkdir(parents=True, exist_ok=True)
    for path, blob in ((img, data), (js, json.dumps(rep, indent=1).encode())):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        tmp.replace(path)
    return data, rep


#: the seed of the shipped products (compiler/data/compress-*.sqwi)
SHIPPED_SEED = 0


def shipped_files(model_sha256: str, target: str) -> tuple[Path, Path]:
    """Where the shipped product of a model (by SHA-256) and target lives: ``(image, report)``
    in ``compiler/data/``, named ``compress-<first 16 hex digits of the model SHA-256>-<target>``.
    """
    stem = f"compress-{model_sha256[:16]}-{target}"
    return api.DATA / f"{stem}.sqwi", api.DATA / f"{stem}.json"


def shipped_product(graph: Graph, target: Target | str, key: str | None = None
                    ) -> tuple[bytes, dict] | None:
    """The weight image shipped in ``compiler/data/`` for ``graph``'s model on ``target``, or
    None: it is used only when its report names the model's SHA-256, this
    :data:`METHOD_VERSION` and the same target budget (and, with ``key``, the same cache key).
    A shipped image whose bytes do not match its report raises
    :class:`compiler.wformat.FormatError`."""
    tgt = get_target(target)
    if not graph.source_sha256:
        return None
    img, js = shipped_files(graph.source_sha256, tgt.name)
    if not (img.is_file() and js.is_file()):
        return None
    rep = json.loads(js.read_text())
    if (rep.get("method_version") != METHOD_VERSION
            or rep.get("model_sha256") != graph.source_sha256
            or rep.get("target") != tgt.name or rep.get("weight_budget") != tgt.weight_bytes
            or rep.get("ebr_available") != tgt.ebr_max or rep.get("hardware") != _hw_key(tgt)
            or (key is not None and rep.get("cache_key") != key)):
        return None
    data = img.read_bytes()
    if wformat.image_sha256(data) != rep.get("image_sha256"):
        raise wformat.FormatError(f"shipped weight image {str(img)!r} does not match its report "
                                  f"{js.name} (SHA-256 {wformat.image_sha256(data)[:12]}, "
                                  f"expected {str(rep.get('image_sha256'))[:12]})")
    return data, dict(rep, shipped=True)


def ship_product(graph: Graph, data: bytes, rep: dict, key: str) -> tuple[Path, Path]:
    """Write a product (image and report, with its cache key) to ``compiler/data/``."""
    img, js = shipped_files(graph.source_sha256, rep["target"])
    doc = {k: v for k, v in rep.items() if k not in ("image_path", "shipped")}
    doc.update(cache_key=key, model_sha256=graph.source_sha256)
    img.write_bytes(data)
    js.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return img, js


def compress_for_target(model_path: str | Path, target: str = "ulx3s-85f",
                        calib_dir: str | Path | None = None, seed: int = 0,
                        budget: int | None = None, use_torch: bool | None = None,
                        progress: bool = False, graph: Graph | None = None
                        ) -> tuple[QModel, dict]:
    """The model exactly as ``target`` carries it: ``(QModel, report)``.

    With the defaults (``calib_dir`` None, seed 0, the target's budget, ``use_torch`` not
    False) the product shipped in ``compiler/data/`` is returned when its report matches the
    model's SHA-256 and :data:`METHOD_VERSION` (:func:`shipped_product`): no calibration image
    and no PyTorch are needed. Otherwise compresses (or reads from the cache) the model's
    weights into the target's budget using the images of ``calib_dir`` (default:
    ../shared/images/imagenet-dev) and returns the golden model decoded from the weight image,
    with the report of :func:`image_report` plus ``budget``, ``method``, ``timings``. The image
    itself is in ``report['image_path']``.
    """
    graph = graph if graph is not None else api.import_model(model_path)
    tgt = get_target(target)
    hit = None
    if calib_dir is None and seed == SHIPPED_SEED and budget in (None, tgt.weight_bytes) \
            and use_torch is not False:
        hit = shipped_product(graph, tgt)
    if hit is not None:
        data, rep = hit
        path = shipped_files(graph.source_sha256, tgt.name)[0]
    else:
        files = api.calibration_files(calib_dir or api.DEFAULT_CALIB_DIR)
        data, rep = compress_cached(graph, files, tgt, budget=budget, seed=seed,
                                    use_torch=use_torch, progress=progress)
        path = api.cache_dir() / "compress" / f"{wformat.image_sha256(data)}.sqwi"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    qm = qmodel_from_image(data, graph, _config_name(tgt))
    rep = dict(rep, image_path=str(path))
    return qm, rep


#: most distinct non-zero weight values per layer of a shared-weight (Deep-Compression) model
MAX_SHARED_VALUES = 255


def check_shared_weight_model(graph: Graph, model_path: str | Path = "") -> None:
    """Raise ``ValueError`` unless every convolution of ``graph`` has at most
    :data:`MAX_SHARED_VALUES` distinct non-zero weights (an 8-bit shared codebook, as in the
    Deep-Compression release); the message names the model, the layer and the count."""
    for n in conv_nodes(graph):
        w = np.asarray(n.params["W"])
        d = np.unique(w[w != 0]).size
        if d > MAX_SHARED_VALUES:
            raise ValueError(
                f"model {str(model_path or graph.name)!r} is not a Deep-Compression "
                f"(shared-weight) model: layer {n.name!r} has {d} distinct non-zero weights, "
                f"expected at most {MAX_SHARED_VALUES} per layer; a compressed target "
                f"({', '.join(sorted(TARGETS))}) needs a model such as "
                f"squeezenet1.0-deepcompression.onnx")


def load_target_model(model_path: str | Path, target: str = "ulx3s-85f",
                      calib_dir: str | Path | None = None, seed: int = 0,
                      progress: bool = False) -> tuple[QModel, dict]:
    """What ``target`` carries for ``model_path``: :func:`compress_for_target` after checking
    the target name (``ValueError`` listing the valid ones) and that the model is a
    shared-weight model (:func:`check_shared_weight_model`). Used by
    ``python -m compiler eval --target``."""
    tgt = get_target(target)
    graph = api.import_model(model_path)
    check_shared_weight_model(graph, model_path)
    return compress_for_target(model_path, tgt.name, calib_dir, seed, progress=progress,
                               graph=graph)


# -- evaluation, sweep, command line ---------------------------------------------------------

def split_files(files: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """The honest split of a folder (name order): even positions calibrate and distil, odd
    positions evaluate. The shared dev images are one per class, so no class is in both."""
    files = list(files)
    return files[0::2], files[1::2]


def evaluate(qm: QModel, graph: Graph, files: Sequence[Path], progress: bool = False) -> dict:
    """Float model (:func:`compiler.execute.execute`) vs golden integer model on ``files``:
    top-1/top-5 against the labels in the ImageNet file names, and top-1 agreement."""
    from .execute import execute
    from .labels import class_of_filename

    size = tuple(graph.input_shape[1:])
    hits = dict.fromkeys(("float_top1", "float_top5", "int_top1", "int_top5"), 0)
    agree = labelled = 0
    for i, f in enumerate(files, 1):
        x = load_image(f, size)
        fl = execute(graph, x)
        sc = qm.scores(x)
        f5 = np.argsort(-fl, kind="stable")[:5]
        i5 = np.lexsort((np.arange(sc.size), -sc))[:5]
        agree += int(f5[0] == i5[0])
        truth = class_of_filename(Path(f).name)
        if truth is not None:
            labelled += 1
            hits["float_top1"] += int(f5[0] == truth)
            hits["float_top5"] += int(truth in f5)
            hits["int_top1"] += int(i5[0] == truth)
            hits["int_top5"] += int(truth in i5)
        if progress:
            api._bar("evaluating", i, len(files))
    out = {k: v / max(labelled, 1) for k, v in hits.items()}
    out.update(n=len(files), labelled=labelled, agreement=agree / max(len(files), 1))
    return out


def evaluate_split(model_path: str | Path, target: str = "ulx3s-85f",
                   calib_dir: str | Path | None = None, budget: int | None = None, seed: int = 0,
                   use_torch: bool | None = None, progress: bool = False) -> dict:
    """Compress on the even-position images of ``calib_dir`` and evaluate on the odd ones
    (never seen by calibration or distillation). Returns the evaluation plus the size report."""
    graph = api.import_model(model_path)
    cal, ev = split_files(api.calibration_files(calib_dir or api.DEFAULT_CALIB_DIR))
    data, rep = compress_cached(graph, cal, target, budget=budget, seed=seed,
                                use_torch=use_torch, progress=progress)
    qm = qmodel_from_image(data, graph, _config_name(target))
    res = evaluate(qm, graph, ev, progress)
    res.update({k: rep[k] for k in ("weight_bytes", "weight_ebr", "fits", "budget", "method")})
    res["bits"] = {la["name"]: la["bits"] for la in rep["layers"]}
    return res


def _config_name(target: str | Target) -> str:
    name = get_target(target).name
    return name if name in _configs() else "default"


def sweep(model_path: str | Path, budgets: Sequence[int], out_png: str | Path,
          target: str = "ulx3s-85f", calib_dir: str | Path | None = None, seed: int = 0,
          use_torch: bool | None = None, progress: bool = False) -> list[dict]:
    """Compress at each byte budget (honest split, :func:`evaluate_split`) and plot integer
    top-1 and agreement with the float model against weight bytes to ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for b in budgets:
        r = evaluate_split(model_path, target, calib_dir, b, seed, use_torch, progress)
        rows.append(r)
        _log(progress, f"budget {b}: {r['weight_bytes']} bytes, top-1 {r['int_top1']:.3f} "
                       f"(float {r['float_top1']:.3f}), agreement {r['agreement']:.3f}")
    pts = sorted(rows, key=lambda r: r["weight_bytes"])
    kib = [r["weight_bytes"] / 1024 for r in pts]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(kib, [r["int_top1"] for r in pts], "o-", label="compressed top-1")
    ax.plot(kib, [r["agreement"] for r in pts], "s--", label="agreement with float")
    if rows:
        ax.axhline(rows[0]["float_top1"], color="gray", lw=1, label="float top-1")
    tgt = get_target(target)
    ax.axvline(tgt.weight_bytes / 1024, color="red", lw=1, ls=":", label=f"{tgt.name} budget")
    ax.set_xlabel("weight bytes (KiB)")
    ax.set_ylabel("fraction of images")
    ax.set_title(f"{Path(model_path).name}: {rows[0]['n'] if rows else 0} held-out images")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``compress`` command line: one target (writes the image and prints the report) or, with
    ``--budgets``, a sweep that writes a PNG plot."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m compiler.compress",
                                 description="Compress a shared-weight model into a board's "
                                             "block RAM; optionally sweep byte budgets.")
    ap.add_argument("--model", required=True, help="ONNX model (e.g. the Deep-Compression v1.0)")
    ap.add_argument("--target", default="ulx3s-85f", choices=sorted(TARGETS))
    ap.add_argument("--images", default=None, help="calibration images (default: "
                                                   "../shared/images/imagenet-dev)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true", help="no distillation even if PyTorch "
                                                           "is installed")
    ap.add_argument("--budgets", default=None,
                    help="comma-separated weight budgets in KiB: sweep them (honest split)")
    ap.add_argument("--plot", default="compression-sweep.png", help="PNG of the sweep")
    ap.add_argument("--out", default=None, help="write the weight image here")
    ap.add_argument("--json", default=None, help="write the report (or sweep rows) here")
    args = ap.parse_args(argv)
    use_torch = False if args.no_torch else None
    if args.budgets:
        budgets = [int(float(b) * 1024) for b in args.budgets.split(",") if b.strip()]
        rows = sweep(args.model, budgets, args.plot, args.target, args.images, args.seed,
                     use_torch, progress=True)
        print(f"wrote {args.plot}")
        doc = rows
    else:
        qm, doc = compress_for_target(args.model, args.target, args.images, args.seed,
                                      use_torch=use_torch, progress=True)
        print(f"{doc['target']}: {doc['weight_bytes']} weight bytes "
              f"(budget {doc['weight_budget']}), {doc['weight_ebr']} EBR of "
              f"{doc['ebr_available']}, fits: {doc['fits']}")
        for la in doc["layers"]:
            print(f"  {la['name']:18s} k={la['bits']} {la['encoding']:8s} "
                  f"density {la['density']:.3f} {la['stream_bytes'] + la['param_bytes']:9.0f} B")
        if args.out:
            Path(args.out).write_bytes(Path(doc["image_path"]).read_bytes())
            print(f"wrote {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
