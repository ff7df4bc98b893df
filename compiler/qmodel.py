"""The integer model: what the quantiser produces and every back end consumes.

A :class:`QModel` is a chain of integer layers (:class:`QConv`, :class:`QFire`,
:class:`QMaxPool`, :class:`QGlobalSum`) with the arithmetic of ``docs/numerics.md``. Its
:meth:`QModel.run` is the golden model: it returns every layer's output by name, so gateware
tests can compare layer by layer with ``np.array_equal``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import golden

__all__ = ["QConv", "QFire", "QMaxPool", "QGlobalSum", "QModel"]


@dataclass
class QConv:
    """An integer convolution followed by requantisation with the ReLU folded in."""

    name: str
    weight: np.ndarray  # int8-valued int64 [O, C, KH, KW]
    bias: np.ndarray  # int64 [O]
    mult: np.ndarray  # int64 [O], 0 .. 2**requant_mult_bits - 1
    shift: np.ndarray  # int64 [O], 1 .. requant_max_shift
    stride: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    out_max: int = 255
    in_scale: float = 1.0
    out_scale: float = 1.0
    weight_scale: np.ndarray | None = None  # float [O], for information

    @property
    def kernel(self) -> int:
        return int(self.weight.shape[2])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def acc(self, x: np.ndarray) -> np.ndarray:
        return golden.conv_acc(x, self.weight, self.bias, self.stride, self.pads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return golden.requantize(self.acc(x), self.mult, self.shift, 0, self.out_max)

    def out_shape(self, in_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        _, h, w = in_shape
        t, left, b, r = self.pads
        k = self.kernel
        return (self.out_channels, (h + t + b - k) // self.stride + 1,
                (w + left + r - k) // self.stride + 1)

    def macs(self, in_shape: tuple[int, int, int]) -> int:
        _, ho, wo = self.out_shape(in_shape)
        return ho * wo * self.weight[0].size * self.out_channels


@dataclass
class QFire:
    """squeeze 1x1 -> (expand 1x1 | expand 3x3 pad 1) -> concat; both expands share one scale."""

    name: str
    squeeze: QConv
    expand1x1: QConv
    expand3x3: QConv

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s = self.squeeze(x)
        return np.concatenate([self.expand1x1(s), self.expand3x3(s)], axis=0)

    def out_shape(self, in_shape):
        _, h, w = self.squeeze.out_shape(in_shape)
        return (self.expand1x1.out_channels + self.expand3x3.out_channels, h, w)

    def macs(self, in_shape) -> int:
        s_shape = self.squeeze.out_shape(in_shape)
        return (self.squeeze.macs(in_shape) + self.expand1x1.macs(s_shape)
                + self.expand3x3.macs(s_shape))

    @property
    def out_scale(self) -> float:
        return self.expand1x1.out_scale

    @property
    def out_max(self) -> int:
        return self.expand1x1.out_max


@dataclass
class QMaxPool:
    name: str
    kernel: int = 3
    stride: int = 2
    ceil_mode: bool = True
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return golden.maxpool(x, self.kernel, self.stride, self.ceil_mode, self.pads)

    def out_shape(self, in_shape):
        c, h, w = in_shape
        t, left, b, r = self.pads
        return (c, golden.pool_out_size(h, self.kernel, self.stride, t, b, self.ceil_mode),
                golden.pool_out_size(w, self.kernel, self.stride, left, r, self.ceil_mode))

    def macs(self, in_shape) -> int:
        return 0


@dataclass
class QGlobalSum:
    """Global average pool without the division: integer sums per channel."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return golden.global_sum(x)

    def out_shape(self, in_shape):
        return (in_shape[0],)

    def macs(self, in_shape) -> int:
        return 0


@dataclass
class QModel:
    """A quantised SqueezeNet-family network: a chain of integer layers."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    layers: list = field(default_factory=list)
    score_scale: float = 1.0  # real logit = score_scale * integer score
    source_sha256: str = ""
    config_name: str = "default"

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's integer output by layer name; the last is the class scores."""
        x = np.asarray(x)
        if x.shape != tuple(self.input_shape):
            raise ValueError(f"input must have shape {tuple(self.input_shape)}, not {x.shape}")
        if not np.issubdtype(x.dtype, np.integer):
            raise TypeError(f"input must be integers (preprocessed image), not {x.dtype}")
        outs = {}
        for layer in self.layers:
            x = layer(x)
            outs[layer.name] = x
        return outs

    def scores(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)[self.layers[-1].name]

    def shapes(self) -> dict[str, tuple]:
        """Output shape of every layer, by name, in order."""
        shape = tuple(self.input_shape)
        out = {}
        for layer in self.layers:
            shape = layer.out_shape(shape)
            out[layer.name] = shape
        return out

    def input_shapes(self) -> dict[str, tuple]:
        """Input shape of every layer, by name, in order."""
        shape = tuple(self.input_shape)
        out = {}
        for layer in self.layers:
            out[layer.name] = shape
            shape = layer.out_shape(shape)
        return out

    def layer(self, name: str):
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; the layers are "
                       f"{', '.join(la.name for la in self.layers)}")

    def macs(self) -> int:
        ins = self.input_shapes()
        return sum(layer.macs(ins[layer.name]) for layer in self.layers)
