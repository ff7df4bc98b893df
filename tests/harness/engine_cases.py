"""Test support for the engine: random integer layers, load beats and stream images.

Random layers follow docs/numerics.md (int8 weights, int32 biases, 16-bit multipliers, shifts
>= 1) and pick multipliers and shifts so that outputs spread over the whole clamp range instead of
saturating, which would hide arithmetic errors.
"""

from __future__ import annotations

import numpy as np

from compiler.qmodel import QConv, QFire
from hw.config import AccelConfig
from hw.engine import LOAD_BIAS, LOAD_REQUANT, LOAD_WEIGHTS
from hw.program import (
    LayerProgram,
    pack_bias_rows,
    pack_cmd,
    pack_requant_rows,
    pack_weight_rows,
)

__all__ = ["random_conv", "random_fire", "random_input", "load_beats", "cmd_word"]


def random_conv(rng: np.random.Generator, name: str, cin: int, cout: int, k: int = 1,
                stride: int = 1, pad: int = 0, *, out_max: int = 255, in_max: int = 255,
                sparsity: float = 0.0) -> QConv:
    w = rng.integers(-127, 128, size=(cout, cin, k, k))
    if sparsity:
        w[rng.random(w.shape) < sparsity] = 0
    fan = cin * k * k
    b = rng.integers(-(1 << 12), 1 << 12, size=cout) * max(1, int(np.sqrt(fan)))
    # typical accumulator magnitude ~ sqrt(fan) * 73 * in_max/2: map it onto about out_max / 2
    typical = max(1.0, np.sqrt(fan) * 73 * in_max / 2)
    scale = (out_max / 2) / typical
    shift = np.clip(15 - np.floor(np.log2(scale)).astype(int)
                    + rng.integers(-1, 2, size=cout), 1, 47)
    mult = np.round(scale * 2.0 ** shift * rng.uniform(0.6, 1.6, size=cout)).astype(np.int64)
    mult = np.clip(mult, 0, (1 << 16) - 1)
    return QConv(name, w.astype(np.int64), b.astype(np.int64), mult, shift.astype(np.int64),
                 stride, (pad, pad, pad, pad), out_max)


def random_fire(rng, name, cin, s, e1, e3) -> QFire:
    return QFire(name, random_conv(rng, f"{name}/squeeze", cin, s),
                 random_conv(rng, f"{name}/e1", s, e1),
                 random_conv(rng, f"{name}/e3", s, e3, 3, 1, 1))


def random_input(rng, shape, signed_input: bool = False) -> np.ndarray:
    if signed_input:
        return rng.integers(-123, 152, size=shape).astype(np.int64)
    return rng.integers(0, 256, size=shape).astype(np.int64)


def load_beats(cfg: AccelConfig, prog: LayerProgram, wbase: int = 0, pbase: int = 0
               ) -> list[dict]:
    """Load-stream payloads that put ``prog``'s rows at ``wbase``/``pbase``."""
    beats = []
    for i, word in enumerate(pack_weight_rows(cfg, prog.weight_rows)):
        beats.append({"target": LOAD_WEIGHTS, "addr": wbase + i, "data": word})
    for i, word in enumerate(pack_bias_rows(cfg, prog.bias_rows)):
        beats.append({"target": LOAD_BIAS, "addr": pbase + i, "data": word})
    for i, word in enumerate(pack_requant_rows(cfg, prog.mult_rows, prog.shift_rows)):
        beats.append({"target": LOAD_REQUANT, "addr": pbase + i, "data": word})
    return beats


def cmd_word(cfg: AccelConfig, prog: LayerProgram) -> int:
    return pack_cmd(cfg, prog.cmd)
