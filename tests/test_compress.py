"""Compression of shared-weight models (compiler/compress.py, compiler/wformat.py).

A tiny generated Fire-family model (pruned, few distinct values per layer, like the
Deep-Compression release) and a few generated images keep every test fast.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from compiler import api, compress, wformat
from compiler.execute import execute
from compiler.preprocess import load_image
from compiler.qmodel import QConv, QFire

# -- a tiny shared-weight model --------------------------------------------------------------------

LAYERS = [  # name, out, in, kernel
    ("conv1", 8, 3, 3),
    ("fire2/squeeze1x1", 4, 8, 1),
    ("fire2/expand1x1", 8, 4, 1),
    ("fire2/expand3x3", 8, 4, 3),
    ("conv10", 10, 16, 1),
]


def _shared_weights(rng, shape, distinct: int, density: float) -> np.ndarray:
    values = np.sort(rng.normal(0, 0.4, distinct)).astype(np.float32)
    values[values == 0] = 0.01
    w = values[rng.integers(0, distinct, shape)]
    w[rng.random(shape) > density] = 0
    return w


def make_model(path, seed: int = 0, distinct: int = 24):
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(name, x, out, cin, k, stride=1, pad=0, density=0.6):
        w = _shared_weights(rng, (out, cin, k, k), distinct, density)
        b = rng.normal(0.1, 0.05, out).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, name + "_w"),
                      numpy_helper.from_array(b, name + "_b")])
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [name], [name + "_r"], name=name + "_relu"))
        return name + "_r"

    x = conv("conv1", "data", 8, 3, 3, stride=2, density=0.9)
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[3, 3],
                                  strides=[2, 2], ceil_mode=1))
    s = conv("fire2/squeeze1x1", "pool1", 4, 8, 1)
    e1 = conv("fire2/expand1x1", s, 8, 4, 1)
    e3 = conv("fire2/expand3x3", s, 8, 4, 3, pad=1, density=0.35)
    nodes.append(helper.make_node("Concat", [e1, e3], ["fire2"], name="fire2/concat", axis=1))
    y = conv("conv10", "fire2", 10, 16, 1, density=0.3)
    nodes += [helper.make_node("GlobalAveragePool", [y], ["pool10"], name="pool10"),
              helper.make_node("Flatten", ["pool10"], ["flat"], name="flatten"),
              helper.make_node("Softmax", ["flat"], ["prob"], name="prob", axis=1)]
    graph = helper.make_graph(
        nodes, "tiny_shared",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


def make_images(folder, n: int = 6, seed: int = 1):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(0, 256, (5, 5, 3)).astype(np.uint8)
        img = Image.fromarray(base).resize((40, 36), Image.Resampling.BILINEAR)
        img.save(folder / f"img{i:02d}.png")
    return folder


TINY = compress.Target("tiny", weight_bytes=900, ebr_total=4, ebr_reserved=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    model = make_model(d / "tiny.onnx")
    images = make_images(d / "images")
    graph = api.import_model(model)
    return model, images, graph, api.calibration_files(images)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZENET_FPGA_CACHE", str(tmp_path / "cache"))


# -- clustering ----------------------------------------------------------------------------------

def _brute_force_sse(v, w, n):
    best = math.inf
    m = len(v)
    for cuts in itertools.combinations(range(1, m), n - 1):
        b = (0, *cuts, m)
        sse = 0.0
        for a, c in itertools.pairwise(b):
            mu = np.average(v[a:c], weights=w[a:c])
            sse += float((w[a:c] * (v[a:c] - mu) ** 2).sum())
        best = min(best, sse)
    return best


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-4, 4, allow_nan=False), min_size=2, max_size=8, unique=True),
       st.integers(1, 4), st.integers(0, 2**31))
def test_optimal_clusters_matches_brute_force(values, n, seed):
    v = np.sort(np.array(values))
    if np.any(np.diff(v) < 1e-9):
        return
    w = np.random.default_rng(seed).uniform(0.1, 3, v.size)
    n = min(n, v.size)
    cent, labels, sse = compress.optimal_clusters(v, w, n)
    assert sse == pytest.approx(_brute_force_sse(v, w, n), rel=1e-9, abs=1e-9)
    assert np.all(np.diff(labels) >= 0) and labels.max() == n - 1
    recomputed = sum(float((w[labels == c] * (v[labels == c] - cent[c]) ** 2).sum())
                     for c in range(n))
    assert recomputed == pytest.approx(sse, rel=1e-9, abs=1e-9)


def test_cluster_weights_keeps_zeros_and_entry_zero():
    rng = np.random.default_rng(3)
    w = _shared_weights(rng, (6, 5, 3, 3), 40, 0.4)
    prev = math.inf
    for k in (1, 2, 3, 4, 5, 6):
        cent, idx, sse = compress.cluster_weights(w, k)
        assert cent.size == 2**k and cent[0] == 0
        assert np.array_equal(idx == 0, w == 0)
        assert sse <= prev + 1e-12
        assert sse == pytest.approx(float(((w - cent[idx]) ** 2).sum()), rel=1e-9, abs=1e-12)
        prev = sse
    cent, idx, sse = compress.cluster_weights(w, 6)  # 63 >= 40 values: exact
    assert sse == 0 and np.array_equal(cent[idx], w.astype(np.float64))


def test_cluster_weights_many_values_is_binned_but_sane():
    w = np.random.default_rng(0).normal(0, 1, (64, 64, 1, 1))
    cent, idx, sse = compress.cluster_weights(w, 4)
    assert np.unique(idx).size == 15 and cent[0] == 0  # no zeros: index 0 unused
    assert sse < 0.02 * float((w**2).sum())


# -- the weight format ---------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.integers(1, 7), st.floats(0.0, 1.0), st.integers(1, 300), st.integers(0, 2**31),
       st.sampled_from([16, 18, 36, 72]))
def test_encode_decode_round_trip_and_smallest(k, density, n, seed, word_bits):
    rng = np.random.default_rng(seed)
    idx = np.where(rng.random(n) < density, rng.integers(1, 2**k, n), 0)
    enc, r, entries, bits = wformat.encode_indices(idx, k, word_bits)
    assert bits.size % word_bits == 0
    back = wformat.decode_indices(bits, n, k, enc, r, entries, word_bits)
    assert np.array_equal(back, idx)
    # the chosen encoding is the smallest of all candidates, counted independently here
    nnz = int(np.count_nonzero(idx))
    words = lambda b: -(-b // word_bits)  # noqa: E731
    cands = [words(n * k), words(n) + words(nnz * k)]
    for rb in wformat.RUN_BITS:
        gaps = np.diff(np.concatenate([[-1], np.flatnonzero(idx)])) - 1
        cands.append(words((int((gaps // 2**rb).sum()) + nnz) * (rb + k)))
    assert bits.size // word_bits == min(cands)


def test_each_encoding_is_chosen_where_it_is_smallest():
    n = 4000
    dense = np.arange(n) % 15 + 1
    half = np.where(np.random.default_rng(0).random(n) < 0.5, dense, 0)  # irregular: no runs
    sparse = np.where(np.arange(n) % 97 == 0, dense, 0)
    got = [wformat.encode_indices(i, 4)[0] for i in (dense, half, sparse)]
    assert got == [wformat.DENSE, wformat.BITMASK, wformat.ZERO_RUN]


def test_image_round_trip_is_exact_and_deterministic(tiny):
    _, _, graph, files = tiny
    data, rep = compress.compress(graph, files, TINY, use_torch=False, sens_images=3)
    layers, header = wformat.read_image(data)
    assert header["version"] == wformat.FORMAT_VERSION
    again = wformat.write_image(layers, header["model_sha256"], header["word_bits"])
    assert again == data
    data2, _ = compress.compress(graph, files, TINY, use_torch=False, sens_images=3)
    assert data2 == data  # same inputs, same seed: byte-identical image


def test_corrupt_images_are_refused(tiny):
    _, _, graph, files = tiny
    data, _ = compress.compress(graph, files, TINY, use_torch=False, sens_images=3)
    with pytest.raises(wformat.FormatError, match="magic"):
        wformat.read_image(b"XXXX" + data[4:])
    with pytest.raises(wformat.FormatError, match="version"):
        wformat.read_image(data[:4] + b"\x09\x00" + data[6:])
    with pytest.raises(wformat.FormatError, match="size"):
        wformat.read_image(data[:-1])
    other = make_model_graph_with_other_shape(tiny)
    with pytest.raises(wformat.FormatError):
        compress.qmodel_from_image(data, other)


def make_model_graph_with_other_shape(tiny):
    g = tiny[2].copy()
    g.source_sha256 = ""
    c = compress.conv_nodes(g)[0]
    c.params["W"] = np.zeros((8, 3, 5, 5), np.float32)
    return g


# -- the compiler passes -------------------------------------------------------------------------

def test_golden_model_consumes_the_decoded_codebook(tiny):
    _, _, graph, files = tiny
    data, rep = compress.compress(graph, files, TINY, use_torch=False, sens_images=3)
    layers, _ = wformat.read_image(data)
    qm = compress.qmodel_from_image(data, graph)
    convs = []
    for la in qm.layers:
        if isinstance(la, QConv):
            convs.append(la)
        elif isinstance(la, QFire):
            convs += [la.squeeze, la.expand1x1, la.expand3x3]
    assert [c.name for c in convs] == [la.name for la in layers]
    for c, la in zip(convs, layers, strict=True):
        assert np.array_equal(c.weight, la.codebook[la.indices])
        assert np.array_equal(c.bias, la.bias) and np.array_equal(c.mult, la.mult)
        bound = np.abs(c.weight).reshape(c.out_channels, -1).sum(1) * (
            256 if c.name == "conv1" else 255) + np.abs(c.bias)
        assert bound.max() < 2**31
    x = load_image(files[0], (32, 32))
    outs = qm.run(x)
    assert outs["pool10"].shape == (10,)
    # the report describes exactly this image
    assert rep["fits"] and rep["weight_bytes"] <= TINY.weight_bytes
    assert [r["bits"] for r in rep["layers"]] == [la.k for la in layers]
    assert [r["codebook_size"] for r in rep["layers"]] == [la.codebook.size for la in layers]
    assert all(1 <= r["bits"] <= 8 for r in rep["layers"])


def test_budget_is_respected_and_more_bytes_buy_more_bits(tiny):
    _, _, graph, files = tiny
    plans = compress.measure_sensitivity(graph, compress.read_shared_weights(graph),
                                         [load_image(f, (32, 32)) for f in files[:3]])
    totals = []
    for budget in (700, 900, 1400, 4000):
        chosen = compress.allocate_bits(plans, budget, TINY)
        size = sum((p.words[p.k] * TINY.word_bits
                    + compress.layer_param_bits(p, p.k, compress.DEFAULT_ENTRY_BITS, 24)) / 8
                   for p in chosen)
        assert size <= budget
        totals.append(sum(p.sse[p.k] * (p.sensitivity + 1e-9) for p in chosen))
    assert all(a >= b for a, b in itertools.pairwise(totals))
    assert totals[-1] == 0  # enough room for every distinct value: lossless
    with pytest.raises(ValueError, match="fit"):
        compress.allocate_bits(plans, 100, TINY)


def test_a_fire_modules_codebooks_fit_the_lookup_table(tiny):
    """With ``lookup_depth`` the three codebooks of each Fire module together fit a lane's table
    (``sum(2**k) <= lookup_depth``); without it the same budget spends more entries."""
    _, _, graph, files = tiny
    big = compress.Target("big", weight_bytes=10_000, ebr_total=10, ebr_reserved=0)
    plans = compress.measure_sensitivity(graph, compress.read_shared_weights(graph),
                                         [load_image(f, (32, 32)) for f in files[:2]])
    groups = compress.lookup_groups(plans)
    assert [[plans[i].name for i in g] for g in groups if len(g) > 1] == [
        [f"{f}/squeeze1x1", f"{f}/expand1x1", f"{f}/expand3x3"] for f in ("fire2",)]
    free = compress.allocate_bits(plans, big.weight_bytes, big)
    need = max(sum(1 << free[i].k for i in g) for g in groups)
    assert need > 16          # lossless wants more than the table below holds
    bound = compress.allocate_bits(plans, big.weight_bytes, big, lookup_depth=16)
    assert all(sum(1 << bound[i].k for i in g) <= 16 for g in groups)
    assert sum(p.sse[p.k] for p in bound) > sum(p.sse[p.k] for p in free)
    with pytest.raises(ValueError, match=r"fire2: no code widths .* lookup_depth 8 "):
        compress.allocate_bits(plans, big.weight_bytes, big, lookup_depth=8)


def test_lossless_when_the_budget_allows(tiny):
    _, _, graph, files = tiny
    big = compress.Target("big", weight_bytes=10_000, ebr_total=10, ebr_reserved=0)
    plans = compress.measure_sensitivity(graph, compress.read_shared_weights(graph),
                                         [load_image(f, (32, 32)) for f in files[:2]])
    chosen = compress.recluster(compress.allocate_bits(plans, big.weight_bytes, big))
    for p, n in zip(chosen, compress.conv_nodes(graph), strict=True):
        assert np.array_equal(p.weight(), n.params["W"])


def test_match_channel_stats_matches_first_layer_moments(tiny):
    _, _, graph, files = tiny
    xs = [load_image(f, (32, 32)) for f in files]
    plans = compress.read_shared_weights(graph)
    for p in plans:
        p.k = 1
    plans = compress.match_channel_stats(graph, compress.recluster(plans), xs)
    node = compress.conv_nodes(graph)[0]
    p = plans[0]
    from compiler.execute import conv_float
    zf = np.stack([conv_float(x.astype(np.float32), node.params["W"], node.params["B"], 2,
                              (0, 0, 0, 0)) for x in xs])
    zq = np.stack([conv_float(x.astype(np.float32), p.weight(), p.bias.astype(np.float32), 2,
                              (0, 0, 0, 0)) for x in xs])
    np.testing.assert_allclose(zq.mean(axis=(0, 2, 3)), zf.mean(axis=(0, 2, 3)),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(zq.std(axis=(0, 2, 3)), zf.std(axis=(0, 2, 3)),
                               rtol=1e-3, atol=1e-3)


def test_integer_model_follows_the_float_student(tiny):
    _, _, graph, files = tiny
    big = compress.Target("big", weight_bytes=10_000, ebr_total=10, ebr_reserved=0)
    data, _ = compress.compress(graph, files, big, use_torch=False, sens_images=2)
    qm = compress.qmodel_from_image(data, graph)
    # lossless codebooks: the integer model's logits track the float model's
    for f in files:
        x = load_image(f, (32, 32))
        fl = execute(graph, x)
        logits = qm.scores(x) * qm.score_scale
        assert np.corrcoef(fl, logits)[0, 1] > 0.98


def test_compress_for_target_caches_by_content(tiny, monkeypatch):
    model, images, graph, files = tiny
    monkeypatch.setitem(compress.TARGETS, "tiny", TINY)
    qm, rep = compress.compress_for_target(model, "tiny", images, use_torch=False)
    assert rep["fits"] and rep["weight_ebr"] <= TINY.ebr_max

    def boom(*a, **k):
        raise AssertionError("recompressed instead of reading the cache")

    monkeypatch.setattr(compress, "compress", boom)
    qm2, rep2 = compress.compress_for_target(model, "tiny", images, use_torch=False)
    assert rep2["image_sha256"] == rep["image_sha256"]
    x = load_image(files[1], (32, 32))
    assert np.array_equal(qm.scores(x), qm2.scores(x))
    with pytest.raises(ValueError, match="Unknown target"):
        compress.compress_for_target(model, "nonexistent", images)


def test_sweep_writes_a_plot(tiny, tmp_path, monkeypatch):
    model, images, _, _ = tiny
    monkeypatch.setitem(compress.TARGETS, "tiny", TINY)
    out = tmp_path / "sweep.png"
    rows = compress.sweep(model, [800, 2000], out, "tiny", images, use_torch=False)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [r["weight_bytes"] <= b for r, b in zip(rows, [800, 2000], strict=True)] == [True] * 2
    assert all(0 <= r["agreement"] <= 1 for r in rows)



def test_sweep_command_line_writes_plot_and_rows(tiny, tmp_path, monkeypatch):
    model, images, _, _ = tiny
    monkeypatch.setitem(compress.TARGETS, "tiny", TINY)
    png, js = tmp_path / "s.png", tmp_path / "s.json"
    assert compress.main(["--model", str(model), "--target", "tiny", "--images", str(images),
                          "--no-torch", "--budgets", "1.9,0.8", "--plot", str(png),
                          "--json", str(js)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(js.read_text())
    assert [r["budget"] for r in rows] == [int(1.9 * 1024), int(0.8 * 1024)]  # KiB on the CLI
    assert all(r["weight_bytes"] <= r["budget"] and r["method"] == "gptq" for r in rows)


# -- GPTQ-style codebook assignment ------------------------------------------------------------

def _random_layer(seed: int, o: int = 12, c: int = 6, k: int = 3, n: int = 600):
    """A pruned shared-weight 3x3 layer and inputs like a CNN's (correlated, a decaying
    spectrum, after a ReLU), with a constant bias row: float ``xf`` and the quantised path's
    ``xq`` (the float inputs rounded to a grid)."""
    rng = np.random.default_rng(seed)
    w = _shared_weights(rng, (o, c, 3, 3), 40, 0.5).astype(np.float64)
    b = rng.normal(0, 0.1, o)
    d = c * 9
    basis = np.linalg.qr(rng.normal(0, 1, (d, d)))[0]
    spectrum = 1.0 / (1 + np.arange(d))
    xf = np.maximum(basis @ (spectrum[:, None] * rng.normal(0, 1, (d, n))) * 3 + 0.2, 0)
    xq = np.floor(xf * 20 + 0.5) / 20
    xf = np.concatenate([xf, np.ones((1, n))])
    xq = np.concatenate([xq, np.ones((1, n))])
    plan = compress.LayerPlan("layer", w, b, k, *compress.cluster_weights(w, k)[:2],
                              np.ones(o), b.copy())
    return plan, xf, xq


def _output_error(plan, xf, xq):
    o = plan.out_channels
    wf = np.concatenate([plan.w.reshape(o, -1), plan.b[:, None]], axis=1)
    wq = np.concatenate([plan.weight().reshape(o, -1).astype(np.float64),
                         plan.bias[:, None]], axis=1)
    return float(((wq @ xq - wf @ xf) ** 2).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gptq_assignment_beats_nearest_centroid_and_keeps_the_mask(seed):
    plan, xf, xq = _random_layer(seed)
    hqq, hqf = xq @ xq.T, xq @ xf.T
    o = plan.out_channels
    wf = np.concatenate([plan.w.reshape(o, -1), plan.b[:, None]], axis=1)
    t_pow = float(((wf @ xf) ** 2).sum())
    # nearest centroid (the re-clustered plan), with its best least-squares gains and biases
    v = wf @ hqf.T
    near = compress.LayerPlan(**plan.__dict__)
    near.gain, near.bias = compress.refit_gain_bias(
        plan.indices.reshape(o, -1), plan.centroids, hqq, v)
    e_near = _output_error(near, xf, xq)
    new, losses = compress.gptq_layer(plan, hqq, hqf, t_pow, iters=3)
    e_gptq = _output_error(new, xf, xq)
    assert losses[0] == pytest.approx(e_near, rel=1e-6)  # the loss is the output error
    assert e_gptq == pytest.approx(min(losses), rel=1e-6)
    assert e_gptq < 0.8 * e_near
    assert np.array_equal(new.indices == 0, plan.w == 0)  # zeros stay zeros, the rest non-zero
    assert new.indices.max() < 2**plan.k and new.centroids[0] == 0
    assert np.all(new.gain > 0)
    again, _ = compress.gptq_layer(plan, hqq, hqf, t_pow, iters=3)
    assert np.array_equal(again.indices, new.indices)
    assert np.array_equal(again.centroids, new.centroids)


def test_refit_codebook_recovers_the_codebook_of_a_fixed_assignment():
    plan, xf, _ = _random_layer(5)
    o = plan.out_channels
    true = plan.centroids.copy()
    w = plan.weight().reshape(o, -1).astype(np.float64) * 1.5  # gains 1.5, weights on the grid
    wf = np.concatenate([w, plan.b[:, None]], axis=1)
    h = xf @ xf.T
    c = compress.refit_codebook(plan.indices.reshape(o, -1), np.full(o, 1.5), true.size, h,
                                wf @ h.T)
    np.testing.assert_allclose(c, true, rtol=1e-6, atol=1e-9)


def test_gptq_codebooks_on_a_model_lowers_every_layer_error(tiny):
    _, _, graph, files = tiny
    xs = [load_image(f, (32, 32)) for f in files]
    plans = compress.read_shared_weights(graph)
    for p in plans:
        p.k = 2
    plans = compress.recluster(plans)
    new, report = compress.gptq_codebooks(graph, plans, xs, iters=2)
    assert list(report) == [p.name for p in plans]
    for p, q in zip(plans, new, strict=True):
        assert np.array_equal(q.indices == 0, p.w == 0)
    assert sum(min(r) for r in report.values()) < 0.9 * sum(r[0] for r in report.values())
    again, _ = compress.gptq_codebooks(graph, plans, xs, iters=2)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(new, again, strict=True))


def test_compress_without_gptq_keeps_the_moment_matching(tiny):
    _, _, graph, files = tiny
    data, rep = compress.compress(graph, files, TINY, use_torch=False, sens_images=3,
                                  gptq_iters=0)
    gdata, grep_ = compress.compress(graph, files, TINY, use_torch=False, sens_images=3)
    assert rep["method"] == "stats" and rep["gptq_error"] is None
    assert grep_["method"] == "gptq" and set(grep_["gptq_error"]) == {n for n, *_ in LAYERS}
    assert all(e[1] <= e[0] for e in grep_["gptq_error"].values())
    # same allocation, same sparsity pattern: the streams are the same size
    assert [la["stream_words"] for la in rep["layers"]] == \
        [la["stream_words"] for la in grep_["layers"]]
