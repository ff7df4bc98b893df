"""The golden model against independent, plain-Python integer arithmetic (docs/numerics.md)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from netgen import squeezenet

from compiler import golden, quant
from compiler.onnx_import import import_onnx
from compiler.passes import lower
from compiler.qmodel import QConv, QFire, QGlobalSum, QMaxPool
from hw.config import get_config


def naive_conv(x, w, b, stride, pads):
    c, h, wd = x.shape
    o, _, kh, kw = w.shape
    top, left, bottom, right = pads
    ho = (h + top + bottom - kh) // stride + 1
    wo = (wd + left + right - kw) // stride + 1
    out = [[[0] * wo for _ in range(ho)] for _ in range(o)]
    for oc in range(o):
        for y in range(ho):
            for xx in range(wo):
                s = int(b[oc])
                for ci in range(c):
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = y * stride + ky - top, xx * stride + kx - left
                            if 0 <= iy < h and 0 <= ix < wd:
                                s += int(w[oc, ci, ky, kx]) * int(x[ci, iy, ix])
                out[oc][y][xx] = s
    return np.array(out, dtype=object)


def naive_requant(acc, m, sh, hi):
    r = (int(acc) * int(m) + (1 << (int(sh) - 1))) >> int(sh)
    return min(max(r, 0), hi)


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 5), o=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9),
       k=st.sampled_from([1, 3, 5, 7]), stride=st.integers(1, 3),
       pads=st.tuples(*[st.integers(0, 3)] * 4), seed=st.integers(0, 2**31))
def test_conv_acc_matches_naive(c, o, h, w, k, stride, pads, seed):
    rng = np.random.default_rng(seed)
    if h + pads[0] + pads[2] < k or w + pads[1] + pads[3] < k:
        return
    x = rng.integers(-256, 256, (c, h, w))
    wt = rng.integers(-127, 128, (o, c, k, k))
    b = rng.integers(-2**20, 2**20, o)
    got = golden.conv_acc(x, wt, b, stride, pads)
    assert np.array_equal(got, naive_conv(x, wt, b, stride, pads).astype(np.int64))


@settings(max_examples=60, deadline=None)
@given(acc=st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=20),
       m=st.integers(0, 2**16 - 1), sh=st.integers(1, 47), hi=st.sampled_from([255, 65535]))
def test_requantize_matches_big_integers(acc, m, sh, hi):
    a = np.array(acc, dtype=np.int64)[:, None, None] * np.ones((1, 1, 1), np.int64)
    got = golden.requantize(a.reshape(1, -1, 1), np.array([m]), np.array([sh]), 0, hi)
    want = [naive_requant(v, m, sh, hi) for v in acc]
    assert got.reshape(-1).tolist() == want


def test_requantize_rounds_half_up():
    acc = np.array([[[-3, -1, 1, 3, 5]]])
    got = golden.requantize(acc, np.array([1]), np.array([1]), -100, 100)
    assert got.reshape(-1).tolist() == [-1, 0, 1, 2, 3]  # -1.5 -> -1, -0.5 -> 0, 0.5 -> 1


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 4), h=st.integers(3, 15), w=st.integers(3, 15), seed=st.integers(0, 99),
       ceil=st.booleans())
def test_maxpool_matches_naive(c, h, w, seed, ceil):
    x = np.random.default_rng(seed).integers(0, 256, (c, h, w))
    got = golden.maxpool(x, 3, 2, ceil)
    ho = golden.pool_out_size(h, 3, 2, 0, 0, ceil)
    wo = golden.pool_out_size(w, 3, 2, 0, 0, ceil)
    assert got.shape == (c, ho, wo)
    for ci in range(c):
        for y in range(ho):
            for xx in range(wo):
                win = x[ci, 2 * y: 2 * y + 3, 2 * xx: 2 * xx + 3]
                assert got[ci, y, xx] == win.max()


def test_pool_sizes_match_caffe_ceil_mode():
    # SqueezeNet's pools: 113 -> 56, 111 -> 55, 55 -> 27, 27 -> 13
    assert [golden.pool_out_size(n, 3, 2, 0, 0, True) for n in (113, 111, 55, 27)] == \
        [56, 55, 27, 13]


def _naive_model(qm, x):
    """The whole network with the naive functions above (Python integers throughout)."""
    def conv(q, a):
        acc = naive_conv(a, q.weight, q.bias, q.stride, q.pads)
        out = np.empty(acc.shape, dtype=np.int64)
        for idx in np.ndindex(acc.shape):
            out[idx] = naive_requant(acc[idx], q.mult[idx[0]], q.shift[idx[0]], q.out_max)
        return out
    for layer in qm.layers:
        if isinstance(layer, QConv):
            x = conv(layer, x)
        elif isinstance(layer, QFire):
            s = conv(layer.squeeze, x)
            x = np.concatenate([conv(layer.expand1x1, s), conv(layer.expand3x3, s)])
        elif isinstance(layer, QMaxPool):
            x = golden.maxpool(x, layer.kernel, layer.stride, layer.ceil_mode, layer.pads)
        elif isinstance(layer, QGlobalSum):
            x = np.array([int(v) for v in x.reshape(x.shape[0], -1).sum(axis=1)])
    return x


def test_whole_model_matches_naive_integers():
    g = lower(import_onnx(squeezenet(size=19, conv1_out=8, base_e=8, incr_e=4, n_fire=2,
                                     classes=5, seed=11)))
    rng = np.random.default_rng(0)
    xs = [rng.integers(-123, 152, g.input_shape) for _ in range(3)]
    qm = quant.quantize(g, quant.calibrate(g, xs, len(xs)), get_config("default"))
    for x in xs:
        assert np.array_equal(qm.scores(x), _naive_model(qm, x))


def test_conv_acc_exact_beyond_float32_range():
    # sum|w| * max|x| = 600*9*127*255 > 2**24: the float64 path must still be exact
    rng = np.random.default_rng(7)
    x = rng.integers(200, 256, (600, 3, 3))
    w = rng.integers(120, 128, (2, 600, 3, 3))
    b = np.array([1, -1])
    got = golden.conv_acc(x, w, b)
    want = [int((w[o].astype(object) * x.astype(object)).sum()) + int(b[o]) for o in range(2)]
    assert got.reshape(-1).tolist() == want
