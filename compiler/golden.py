"""The bit-exact integer golden model: the oracle for every level (PE, layer, network).

Every function takes and returns integer numpy arrays and follows ``docs/numerics.md`` to the
letter. Products are computed as float matrix products of integers, which are exact while every
partial sum stays below the float's integer range: float32 (BLAS, fastest) when the layer's bound
``max_o sum|w[o]| * max|x|`` is below 2**24, float64 below 2**53 (``conv_acc`` checks the bound
per call), and are converted back to int64; the bias is added in int64.

Tensors have no batch axis: activations are ``[C, H, W]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "conv_acc",
    "im2col",
    "requantize",
    "maxpool",
    "pool_out_size",
    "global_sum",
    "run",
]

_EXACT_LIMIT = 2**53
_EXACT_LIMIT_F32 = 2**24


def _check_int(name: str, a: np.ndarray, ndim: int):
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be an integer numpy array, not "
                        f"{type(a).__name__}{getattr(a, 'dtype', '')}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, not shape {a.shape}")


def conv_acc(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1,
             pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """Accumulators of a 2-D convolution: ``b[o] + sum(w[o,c,ky,kx] * xpad[c, y*s+ky, x*s+kx])``.

    ``x`` is ``[C, H, W]``, ``w`` is ``[O, C, KH, KW]``, ``b`` is ``[O]``, ``pads`` is
    ``(top, left, bottom, right)`` of zeros. Returns int64 ``[O, HO, WO]``.
    """
    _check_int("x", x, 3)
    _check_int("w", w, 4)
    _check_int("b", b, 1)
    c, h, wd = x.shape
    o, wc, kh, kw = w.shape
    if wc != c:
        raise ValueError(f"weights expect {wc} input channels, the input has {c} (shape {x.shape})")
    if b.shape != (o,):
        raise ValueError(f"bias must have shape ({o},), not {b.shape}")
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    hp, wp = xp.shape[1:]
    if hp < kh or wp < kw:
        raise ValueError(f"input {x.shape} with pads {pads} is smaller than the kernel {kh}x{kw}")
    ho = (hp - kh) // stride + 1
    wo = (wp - kw) // stride + 1
    wsum = int(np.abs(w).reshape(o, -1).sum(axis=1).max(initial=0))
    bound = wsum * int(np.abs(x).max(initial=0))
    if bound >= _EXACT_LIMIT:
        raise OverflowError(f"accumulator bound {bound} exceeds exact float64 range")
    ftype = np.float32 if bound < _EXACT_LIMIT_F32 else np.float64
    cols = im2col(xp, kh, kw, stride, ho, wo, ftype)
    wm = w.reshape(o, c * kh * kw).astype(ftype)
    acc = (wm @ cols).astype(np.int64).reshape(o, ho, wo)
    return acc + b.astype(np.int64)[:, None, None]


def im2col(xp: np.ndarray, kh: int, kw: int, stride: int, ho: int, wo: int,
           dtype=np.float64) -> np.ndarray:
    """Columns ``[C*KH*KW, HO*WO]`` of a padded ``[C, H, W]`` input, row order (c, ky, kx)."""
    c = xp.shape[0]
    if kh == 1 and kw == 1:
        cols = xp[:, : (ho - 1) * stride + 1 : stride, : (wo - 1) * stride + 1 : stride]
        return cols.reshape(c, ho * wo).astype(dtype)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))
    win = win[:, ::stride, ::stride][:, :ho, :wo]  # [C, HO, WO, KH, KW]
    cols = np.ascontiguousarray(win.transpose(0, 3, 4, 1, 2), dtype=dtype)
    return cols.reshape(c * kh * kw, ho * wo)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, lo: int, hi: int
               ) -> np.ndarray:
    """Per-channel multiply, round half up, shift right and clamp (docs/numerics.md).

    ``acc`` is ``[O, ...]``; ``mult`` and ``shift`` are ``[O]``. Returns
    ``clamp((acc * mult + 2**(shift-1)) >> shift, lo, hi)`` as int64; ``>>`` is the arithmetic
    (floor) shift and every shift is at least 1.
    """
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 1):
        raise ValueError(f"requantisation shifts must be at least 1, got min {shift.min()}")
    extra = (1,) * (acc.ndim - 1)
    m = mult.reshape(-1, *extra)
    s = shift.reshape(-1, *extra)
    r = (acc * m + (np.int64(1) << (s - 1))) >> s
    return np.clip(r, lo, hi)


def pool_out_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                  ceil_mode: bool) -> int:
    """Output length of a pooling window along one axis (ONNX/Caffe rules)."""
    span = size + pad_begin + pad_end - kernel
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    # The last window must start inside the input or its leading padding.
    if ceil_mode and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def maxpool(x: np.ndarray, kernel: int, stride: int, ceil_mode: bool = True,
            pads: tuple[int, int, int, int] = (0, 0, 0, 0)) -> np.ndarray:
    """Max over ``kernel x kernel`` windows; positions outside the input do not take part."""
    _check_int("x", x, 3)
    return maxpool_any(x, kernel, stride, ceil_mode, pads)


def maxpool_any(x: np.ndarray, kernel: int, stride: int, ceil_mode: bool,
                pads: tuple[int, int, int, int]) -> np.ndarray:
    """:func:`maxpool` for integer or float tensors (the float executor uses it too)."""
    c, h, w = x.shape
    top, left, bottom, right = pads
    ho = pool_out_size(h, kernel, stride, top, bottom, ceil_mode)
    wo = pool_out_size(w, kernel, stride, left, right, ceil_mode)
    # Pad with the smallest value of the type so padding never wins the max.
    fill = np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.integer) else -np.inf
    need_h = (ho - 1) * stride + kernel
    need_w = (wo - 1) * stride + kernel
    xp = np.full((c, need_h, need_w), fill, dtype=x.dtype)
    hh = min(h, need_h - top)
    ww = min(w, need_w - left)
    xp[:, top : top + hh, left : left + ww] = x[:, :hh, :ww]
    out = None
    for ky in range(kernel):
        for kx in range(kernel):
            v = xp[:, ky : ky + (ho - 1) * stride + 1 : stride,
                   kx : kx + (wo - 1) * stride + 1 : stride]
            out = v.copy() if out is None else np.maximum(out, v)
    return out


def global_sum(x: np.ndarray) -> np.ndarray:
    """Integer sum over all positions of each channel: the global average pool without division."""
    _check_int("x", x, 3)
    return x.astype(np.int64).sum(axis=(1, 2))


def run(model, x: np.ndarray) -> dict[str, np.ndarray]:
    """Run a quantised model (``compiler.quant.QModel``) on an integer input ``[C, H, W]``.

    Returns every layer's output by layer name, in execution order; the last entry is the
    integer class scores.
    """
    return model.run(x)
