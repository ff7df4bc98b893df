"""Layer programs: what the engine needs to run one layer, computed from the integer model.

A layer program is three things (docs/engine.md, "Layer programs"):

- the **command**: one word of runtime fields (shapes, strides, pads, weight and parameter base
  rows, clamps) that the engine's ``cmd`` stream takes per layer. :func:`cmd_fields` lists the
  fields and their widths for a configuration; ``hw.engine.LayerCmd`` is built from that list, so
  this module and the gateware cannot disagree.
- **weight rows**: one row per pass of the column array, ``pe_columns x pe_lanes`` signed weights;
- **parameter rows**: one row per column group, a bias, a requantisation multiplier and a shift
  per column.

Every product the hardware would need (row bytes, strides times channels ...) is computed here, so
the gateware only adds and compares: no multiplier is spent on address arithmetic.

This module imports nothing from Amaranth; the compiler and the simulators use it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compiler.qmodel import QConv, QFire, QGlobalSum, QMaxPool

from .config import AccelConfig

__all__ = [
    "POOL_NONE", "POOL_MAX", "POOL_SUM",
    "cmd_fields", "cmd_width", "pack_cmd", "unpack_cmd",
    "Branch", "LayerProgram", "layer_program", "conv_program", "fire_program",
    "pack_weight_rows", "pack_bias_rows", "pack_requant_rows",
    "weight_row_bits", "bias_row_bits", "requant_row_bits",
    "wdesc_fields", "wdesc_bits", "pack_wdesc",
]

POOL_NONE, POOL_MAX, POOL_SUM = 0, 1, 2


def _bits(n: int) -> int:
    """Bits of an unsigned number up to ``n`` inclusive."""
    return max(1, int(n).bit_length())


def field_widths(cfg: AccelConfig) -> dict[str, int]:
    """Widths of the value kinds in a command (unsigned unless the field says signed)."""
    dim = _bits(cfg.max_dim)
    chans = _bits(cfg.max_channels)
    return {
        "dim": dim,
        "chans": chans,
        "kernel": _bits(cfg.max_kernel),
        # absolute value indices inside one tensor, plus a sign bit for the padding rows above it
        "abs": _bits(cfg.max_dim * cfg.max_dim * cfg.max_channels) + 1,
        "row": _bits(cfg.max_dim * cfg.max_channels) + 1,
        "groups": _bits(-(-cfg.max_channels // cfg.pe_columns)),
        "nseg": _bits(-(-cfg.max_kernel * cfg.max_channels // cfg.pe_lanes)),
        "wrow": _bits(cfg.weight_depth - 1),
        "prow": _bits(cfg.param_depth - 1),
        "ncol": _bits(cfg.pe_columns),
        "ymax": cfg.score_bits,
    }


def cmd_fields(cfg: AccelConfig) -> list[tuple[str, int, bool]]:
    """The command's fields in order (least significant first): ``(name, bits, signed)``."""
    w = field_widths(cfg)
    f = [
        ("fire", 1, False),          # a squeeze stage (stage A) feeds the window buffer
        ("pool", 2, False),          # POOL_NONE, POOL_MAX (3x3/2 ceil) or POOL_SUM (global)
        ("in_total", w["abs"], False),   # values of the input tensor
        # stage A: the squeeze (1x1, stride 1, no padding) from the input buffer
        ("a_pixels", w["abs"], False),   # H * W
        ("a_cin", w["chans"], False),    # input channels: values per input pixel
        ("a_out", w["chans"], False),    # squeeze channels: values per squeeze pixel
        ("a_lead", w["abs"], False),     # squeeze values to keep ready ahead of stage B
        ("a_ymax", w["ymax"], False),    # squeeze output clamp (255)
    ]
    f += _branch_fields("a", w)
    f += [
        # stage B: one or two convolutions over the window buffer (shared output pixel loop)
        ("b_h", w["dim"], False),        # source rows
        ("b_ho", w["dim"], False),
        ("b_wo", w["dim"], False),
        ("b_stride", 3, False),
        ("b_rb", w["row"], False),       # values per source row: W * C
        ("b_pix", w["row"], False),      # stride * C
        ("b_rowstep", w["abs"], False),  # stride * W * C
        ("b_top", w["dim"] + 1, True),   # -top of the union window (its first row for y = 0)
        ("b_top_abs", w["abs"], True),   # -top * W * C
        ("b_left", w["row"], True),      # -left * C
        ("b_win_rows", w["kernel"], False),  # union window height - 1
        ("b_win_last", w["abs"], False),     # (union window height - 1) * W * C
        ("b_hlast", w["abs"], False),        # (H - 1) * W * C
        ("b_win_bytes", w["row"], False),    # union window width * C
        ("b_two", 1, False),                 # a second branch (the 3x3 expand of a Fire)
    ]
    for k in (0, 1):
        f += _branch_fields(f"g{k}", w)
        f += [
            (f"g{k}_kh", w["kernel"], False),
            (f"g{k}_drow", w["kernel"], False),   # top of union window - top of this kernel
            (f"g{k}_dabs", w["abs"], False),      # drow * W * C
            (f"g{k}_dbyte", w["row"], False),     # (left of union - left of this kernel) * C
            (f"g{k}_ymax", w["ymax"], False),     # output clamp (255, or 65535 for conv10)
        ]
    f += [
        ("p_c", w["chans"], False),   # pool: channels, input and output sizes
        ("p_h", w["dim"], False),
        ("p_w", w["dim"], False),
        ("p_ho", w["dim"], False),
        ("p_wo", w["dim"], False),
        # the first output row's window reaches past the last source row: -top + win_rows >= H
        # (the sequencer's flag at the start, without an add and a compare on the command)
        ("b_top_hi", 1, False),
    ]
    if cfg.weight_streams:
        # the layer's row of the weight-stream descriptor memory (wdesc_fields)
        f.append(("wdesc", _bits(cfg.schedule_depth - 1), False))
    return f


def _branch_fields(prefix, w):
    return [
        (f"{prefix}_groups", w["groups"], False),  # column groups: ceil(outputs / pe_columns)
        (f"{prefix}_nseg", w["nseg"], False),      # passes per kernel row: ceil(KW*C / lanes)
        (f"{prefix}_nlast", w["ncol"], False),     # outputs in the last group (1..pe_columns)
        (f"{prefix}_wbase", w["wrow"], False),     # first weight row
        (f"{prefix}_pbase", w["prow"], False),     # first parameter row
    ]


def cmd_width(cfg: AccelConfig) -> int:
    return sum(bits for _, bits, _ in cmd_fields(cfg))


def pack_cmd(cfg: AccelConfig, values: dict[str, int]) -> int:
    """The command word: every field of :func:`cmd_fields` (missing ones are 0)."""
    names = {name for name, _, _ in cmd_fields(cfg)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"Unknown command fields {sorted(unknown)}")
    word, pos = 0, 0
    for name, bits, signed in cmd_fields(cfg):
        v = int(values.get(name, 0))
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        if not lo <= v <= hi:
            raise ValueError(f"Command field {name} = {v} does not fit {bits} "
                             f"{'signed' if signed else 'unsigned'} bits ({lo}..{hi})")
        word |= (v & ((1 << bits) - 1)) << pos
        pos += bits
    return word


def unpack_cmd(cfg: AccelConfig, word: int) -> dict[str, int]:
    out, pos = {}, 0
    for name, bits, signed in cmd_fields(cfg):
        v = (word >> pos) & ((1 << bits) - 1)
        if signed and v >> (bits - 1):
            v -= 1 << bits
        out[name] = v
        pos += bits
    return out


# -- weight-stream descriptors (cfg.weight_streams) -----------------------------------------

def wdesc_fields(cfg: AccelConfig) -> list[tuple[str, int]]:
    """One layer's row of the descriptor memory, least significant field first: the layer's
    block of the central codebook memory (``cb_start``, ``cb_len`` entries: the image of the lane
    lookup tables), then per decoder context ``x`` (0: the squeeze of a Fire module; 1: its
    expands, or a plain convolution) the first and last stream word of every column
    (inclusive), the rows of a step, of its segment 0, each segment's code bits ``k``, DENSE
    flag and codebook base (its first entry in the lookup table) (``hw/wdecode.py``)."""
    ab = _bits(cfg.wstream_depth - 1)
    rb = _bits(cfg.weight_depth)
    kb = _bits(cfg.wstream_kmax)
    sb = _bits(cfg.lookup_depth - 1)
    f = [("cb_start", _bits(cfg.codebook_depth - 1)), ("cb_len", _bits(cfg.lookup_depth))]
    for x in (0, 1):
        f += [(f"c{x}_start{c}", ab) for c in range(cfg.pe_columns)]
        f += [(f"c{x}_end{c}", ab) for c in range(cfg.pe_columns)]
        f += [(f"c{x}_n_rows", rb), (f"c{x}_n0", rb),
              (f"c{x}_k0", kb), (f"c{x}_dense0", 1), (f"c{x}_base0", sb),
              (f"c{x}_k1", kb), (f"c{x}_dense1", 1), (f"c{x}_base1", sb)]
    return f


def wdesc_bits(cfg: AccelConfig) -> int:
    return sum(bits for _, bits in wdesc_fields(cfg))


def pack_wdesc(cfg: AccelConfig, values: dict[str, int]) -> int:
    """A descriptor row: every field of :func:`wdesc_fields` (missing ones are 0); a value that
    does not fit its field raises ``ValueError`` naming it."""
    names = {name for name, _ in wdesc_fields(cfg)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"Unknown descriptor fields {sorted(unknown)}")
    word, pos = 0, 0
    for name, bits in wdesc_fields(cfg):
        v = int(values.get(name, 0))
        if not 0 <= v < 1 << bits:
            raise ValueError(f"Descriptor field {name} = {v} does not fit {bits} unsigned bits")
        word |= v << pos
        pos += bits
    return word


# -- rows ------------------------------------------------------------------------------------

def weight_row_bits(cfg: AccelConfig) -> int:
    return cfg.pe_columns * cfg.pe_lanes * cfg.weight_bits


def bias_row_bits(cfg: AccelConfig) -> int:
    return cfg.pe_columns * cfg.bias_bits


def shift_bits(cfg: AccelConfig) -> int:
    return _bits(cfg.requant_max_shift)


def requant_row_bits(cfg: AccelConfig) -> int:
    return cfg.pe_columns * (cfg.requant_mult_bits + shift_bits(cfg))


def _pack_fields(values: np.ndarray, bits: int) -> list[int]:
    """Rows of ``values`` [rows, n] as integers, element 0 in the least significant bits."""
    mask = (1 << bits) - 1
    out = []
    for row in values.tolist():
        word = 0
        for i, v in enumerate(row):
            word |= (int(v) & mask) << (i * bits)
        out.append(word)
    return out


def pack_weight_rows(cfg: AccelConfig, rows: np.ndarray) -> list[int]:
    """Weight rows ``[n, pe_columns, pe_lanes]`` as integers (column-major, lane-minor)."""
    return _pack_fields(rows.reshape(len(rows), -1), cfg.weight_bits)


def pack_bias_rows(cfg: AccelConfig, bias: np.ndarray) -> list[int]:
    return _pack_fields(bias, cfg.bias_bits)


def pack_requant_rows(cfg: AccelConfig, mult: np.ndarray, shift: np.ndarray) -> list[int]:
    sb = shift_bits(cfg)
    both = (mult.astype(np.int64) << sb) | shift.astype(np.int64)
    return _pack_fields(both, cfg.requant_mult_bits + sb)


# -- programs ------------------------------------------------------------------------------

@dataclass
class Branch:
    """One convolution mapped onto the column array: its weight and parameter rows."""

    conv: QConv
    in_shape: tuple[int, int, int]
    groups: int
    nseg: int
    weights: np.ndarray   # [groups * KH * nseg, pe_columns, pe_lanes]
    bias: np.ndarray      # [groups, pe_columns]
    mult: np.ndarray
    shift: np.ndarray

    @property
    def passes(self) -> int:
        """Passes (cycles of the column array) per group and output pixel."""
        return self.conv.kernel * self.nseg


@dataclass
class LayerProgram:
    """Everything the engine needs to run one layer (see the module docstring)."""

    name: str
    cmd: dict[str, int]
    in_shape: tuple[int, int, int]      # [C, H, W] of the input stream
    conv_shape: tuple[int, int, int]    # [C, H, W] of the convolution output
    out_shape: tuple[int, ...]          # what the engine streams out (after a fused pool)
    squeeze: Branch | None
    branches: list[Branch] = field(default_factory=list)
    pool: int = POOL_NONE

    @property
    def weight_rows(self) -> np.ndarray:
        parts = ([self.squeeze.weights] if self.squeeze else []) + [b.weights for b in
                                                                     self.branches]
        return np.concatenate(parts)

    def _param(self, name):
        parts = ([self.squeeze] if self.squeeze else []) + self.branches
        return np.concatenate([getattr(b, name) for b in parts])

    @property
    def bias_rows(self) -> np.ndarray:
        return self._param("bias")

    @property
    def mult_rows(self) -> np.ndarray:
        return self._param("mult")

    @property
    def shift_rows(self) -> np.ndarray:
        return self._param("shift")

    @property
    def out_values(self) -> int:
        return int(np.prod(self.out_shape))

    def output_from_stream(self, values) -> np.ndarray:
        """The output tensor ([C, H, W], or [C] after a global sum) from the streamed values."""
        v = np.asarray(values, dtype=np.int64)
        if v.size != self.out_values:
            raise ValueError(f"layer {self.name} streams {self.out_values} values, got {v.size}")
        if len(self.out_shape) == 1:
            return v
        c, h, w = self.out_shape
        return v.reshape(h, w, c).transpose(2, 0, 1)

    def input_stream(self, x: np.ndarray) -> np.ndarray:
        """The input tensor [C, H, W] in stream order (row-major pixels, channels interleaved)."""
        if tuple(x.shape) != tuple(self.in_shape):
            raise ValueError(f"layer {self.name} takes input shape {self.in_shape}, not "
                             f"{tuple(x.shape)}")
        return np.ascontiguousarray(np.asarray(x, dtype=np.int64).transpose(1, 2, 0)).ravel()


def _map_branch(cfg: AccelConfig, conv: QConv, in_shape) -> Branch:
    cols, lanes = cfg.pe_columns, cfg.pe_lanes
    o, c, kh, kw = conv.weight.shape
    if kh != kw:
        raise ValueError(f"{conv.name}: only square kernels are supported, not {kh}x{kw}")
    if kh > cfg.max_kernel:
        raise ValueError(f"{conv.name}: kernel {kh} exceeds max_kernel {cfg.max_kernel}")
    if c != in_shape[0]:
        raise ValueError(f"{conv.name}: weights expect {c} channels, input has {in_shape[0]}")
    if o > cfg.max_channels or c > cfg.max_channels:
        raise ValueError(f"{conv.name}: {o} outputs / {c} inputs exceed max_channels "
                         f"{cfg.max_channels}")
    groups = -(-o // cols)
    nseg = -(-kw * c // lanes)
    wpad = np.zeros((groups * cols, c, kh, kw), dtype=np.int64)
    wpad[:o] = conv.weight
    # segment element k of kernel row ky is (kx, c) = divmod(k, C): the window buffer's order
    rowvals = np.zeros((groups * cols, kh, nseg * lanes), dtype=np.int64)
    rowvals[:, :, : kw * c] = wpad.transpose(0, 2, 3, 1).reshape(groups * cols, kh, kw * c)
    rows = rowvals.reshape(groups, cols, kh, nseg, lanes).transpose(0, 2, 3, 1, 4)
    rows = rows.reshape(groups * kh * nseg, cols, lanes)
    wmax = (1 << (cfg.weight_bits - 1)) - 1
    if np.abs(rows).max(initial=0) > wmax:
        raise ValueError(f"{conv.name}: weights exceed {cfg.weight_bits} bits")

    def per_group(v, fill):
        out = np.full(groups * cols, fill, dtype=np.int64)
        out[:o] = v
        return out.reshape(groups, cols)

    shift = per_group(conv.shift, 1)
    if shift.max() > cfg.requant_max_shift or shift.min() < 1:
        raise ValueError(f"{conv.name}: shifts must be in 1..{cfg.requant_max_shift}")
    if conv.mult.min() < 0 or conv.mult.max() >= 1 << cfg.requant_mult_bits:
        raise ValueError(f"{conv.name}: multipliers exceed {cfg.requant_mult_bits} bits")
    if conv.out_max > (1 << cfg.score_bits) - 1:
        raise ValueError(f"{conv.name}: output clamp {conv.out_max} exceeds score_bits")
    return Branch(conv, tuple(in_shape), groups, nseg, rows, per_group(conv.bias, 0),
                  per_group(conv.mult, 0), shift)


def _branch_cmd(prefix, br: Branch, wbase, pbase, cols):
    return {
        f"{prefix}_groups": br.groups,
        f"{prefix}_nseg": br.nseg,
        f"{prefix}_nlast": br.conv.out_channels - (br.groups - 1) * cols,
        f"{prefix}_wbase": wbase,
        f"{prefix}_pbase": pbase,
    }


def _pool_cmd(cfg, pool, conv_shape):
    c, h, w = conv_shape
    if pool is None:
        return POOL_NONE, conv_shape, {}
    if isinstance(pool, QMaxPool):
        if (pool.kernel, pool.stride, pool.ceil_mode, tuple(pool.pads)) != (3, 2, True,
                                                                           (0, 0, 0, 0)):
            raise ValueError(f"{pool.name}: the fused max pool is 3x3/2, ceil mode, no pads")
        if h < 2 or w < 2:
            raise ValueError(f"{pool.name}: input {h}x{w} is smaller than 2x2")
        out = pool.out_shape(conv_shape)
        if out[2] * c > cfg.pool_row_depth:
            raise ValueError(f"{pool.name}: output row of {out[2] * c} values exceeds "
                             f"pool_row_depth {cfg.pool_row_depth}")
        return POOL_MAX, out, {"p_c": c, "p_h": h, "p_w": w, "p_ho": out[1], "p_wo": out[2]}
    if isinstance(pool, QGlobalSum):
        return POOL_SUM, (c,), {"p_c": c, "p_h": h, "p_w": w, "p_ho": 1, "p_wo": 1}
    raise TypeError(f"Cannot fuse {type(pool).__name__} into the engine's output")


def _window_cmd(cfg, convs: list[QConv], in_shape, out_hw):
    """Stage-B fields: the union window of ``convs`` (same stride, same output size)."""
    c, h, w = in_shape
    s = convs[0].stride
    top = max(cv.pads[0] for cv in convs)
    left = max(cv.pads[1] for cv in convs)
    rows = max(cv.pads[0] + cv.kernel for cv in convs) - top
    cols = max(cv.pads[1] + cv.kernel for cv in convs) - left
    rb = w * c
    ho, wo = out_hw
    if ho > cfg.max_dim or wo > cfg.max_dim or h > cfg.max_dim or w > cfg.max_dim:
        raise ValueError(f"feature map {h}x{w} exceeds max_dim {cfg.max_dim}")
    cmd = {
        "b_h": h, "b_ho": ho, "b_wo": wo, "b_stride": s,
        "b_rb": rb, "b_pix": s * c, "b_rowstep": s * rb,
        "b_top": -top, "b_top_abs": -top * rb, "b_left": -left * c,
        "b_win_rows": rows - 1, "b_win_last": (rows - 1) * rb, "b_hlast": (h - 1) * rb,
        "b_win_bytes": cols * c,
        "b_top_hi": int(-top + rows - 1 >= h),
    }
    need = (rows - 1) * rb + cols * c + cfg.buffer_banks
    for k, cv in enumerate(convs):
        if cv.stride != s or cv.out_shape(in_shape)[1:] != (ho, wo):
            raise ValueError(f"{cv.name}: branches must share stride and output size")
        drow = top - cv.pads[0]
        cmd.update({
            f"g{k}_kh": cv.kernel, f"g{k}_drow": drow, f"g{k}_dabs": drow * rb,
            f"g{k}_dbyte": (left - cv.pads[1]) * c, f"g{k}_ymax": cv.out_max,
        })
    return cmd, need


def conv_program(cfg: AccelConfig, conv: QConv, in_shape, *, pool=None, wbase: int = 0,
                 pbase: int = 0, name: str | None = None) -> LayerProgram:
    """A plain convolution (conv1, conv10 ...): stage B only, reading the input stream."""
    in_shape = tuple(int(v) for v in in_shape)
    br = _map_branch(cfg, conv, in_shape)
    conv_shape = conv.out_shape(in_shape)
    cmd, need = _window_cmd(cfg, [conv], in_shape, conv_shape[1:])
    if need + in_shape[0] * conv.stride * (conv.stride + 1) > cfg.window_buffer_depth:
        raise ValueError(f"{conv.name}: a {conv.kernel}-row window of {in_shape} needs "
                         f"{need} buffered values, more than window_buffer_depth "
                         f"{cfg.window_buffer_depth}")
    cmd.update(_branch_cmd("g0", br, wbase, pbase, cfg.pe_columns))
    cmd.update({"fire": 0, "in_total": int(np.prod(in_shape)), "b_two": 0})
    pool_mode, out_shape, pcmd = _pool_cmd(cfg, pool, conv_shape)
    cmd.update(pcmd)
    cmd["pool"] = pool_mode
    _check_rows(cfg, [br], wbase, pbase, conv.name)
    return LayerProgram(name or conv.name, cmd, in_shape, conv_shape, out_shape, None, [br],
                        pool_mode)


def fire_program(cfg: AccelConfig, fire: QFire, in_shape, *, pool=None, wbase: int = 0,
                 pbase: int = 0, name: str | None = None) -> LayerProgram:
    """A Fire module: squeeze (stage A) into the window buffer, both expands (stage B)."""
    in_shape = tuple(int(v) for v in in_shape)
    sq = fire.squeeze
    if sq.kernel != 1 or sq.stride != 1 or any(sq.pads):
        raise ValueError(f"{fire.name}: the squeeze must be 1x1, stride 1, no padding")
    if in_shape[0] > cfg.in_buffer_depth // 2:
        raise ValueError(f"{fire.name}: {in_shape[0]} input channels need more than half of "
                         f"in_buffer_depth {cfg.in_buffer_depth}")
    a = _map_branch(cfg, sq, in_shape)
    s_shape = sq.out_shape(in_shape)
    e1 = _map_branch(cfg, fire.expand1x1, s_shape)
    e3 = _map_branch(cfg, fire.expand3x3, s_shape)
    conv_shape = fire.out_shape(in_shape)
    cmd, need = _window_cmd(cfg, [fire.expand1x1, fire.expand3x3], s_shape, conv_shape[1:])
    s = s_shape[0]
    lead = 2 * s
    if need + lead + 2 * s > cfg.window_buffer_depth:
        raise ValueError(f"{fire.name}: the squeeze window of {s_shape} needs {need + lead} "
                         f"buffered values, more than window_buffer_depth "
                         f"{cfg.window_buffer_depth}")
    wa, pa = wbase, pbase
    w0, p0 = wa + len(a.weights), pa + a.groups
    w1, p1 = w0 + len(e1.weights), p0 + e1.groups
    cmd.update(_branch_cmd("a", a, wa, pa, cfg.pe_columns))
    cmd.update(_branch_cmd("g0", e1, w0, p0, cfg.pe_columns))
    cmd.update(_branch_cmd("g1", e3, w1, p1, cfg.pe_columns))
    cmd.update({
        "fire": 1, "in_total": int(np.prod(in_shape)), "b_two": 1,
        "a_pixels": in_shape[1] * in_shape[2], "a_cin": in_shape[0], "a_out": s,
        "a_lead": lead, "a_ymax": sq.out_max,
    })
    pool_mode, out_shape, pcmd = _pool_cmd(cfg, pool, conv_shape)
    cmd.update(pcmd)
    cmd["pool"] = pool_mode
    _check_rows(cfg, [a, e1, e3], wbase, pbase, fire.name)
    return LayerProgram(name or fire.name, cmd, in_shape, conv_shape, out_shape, a, [e1, e3],
                        pool_mode)


def _check_rows(cfg, branches, wbase, pbase, name):
    wrows = sum(len(b.weights) for b in branches)
    prows = sum(b.groups for b in branches)
    if wbase + wrows > cfg.weight_depth:
        raise ValueError(f"{name}: needs weight rows {wbase}..{wbase + wrows - 1}, the weight "
                         f"memory has {cfg.weight_depth}")
    if pbase + prows > cfg.param_depth:
        raise ValueError(f"{name}: needs parameter rows {pbase}..{pbase + prows - 1}, the "
                         f"parameter memory has {cfg.param_depth}")


def layer_program(cfg: AccelConfig, layer, in_shape, *, pool=None, **kw) -> LayerProgram:
    """The program of a :class:`QConv` or :class:`QFire` layer, optionally with a fused pool."""
    if isinstance(layer, QFire):
        return fire_program(cfg, layer, in_shape, pool=pool, **kw)
    if isinstance(layer, QConv):
        return conv_program(cfg, layer, in_shape, pool=pool, **kw)
    raise TypeError(f"The engine runs QConv and QFire layers, not {type(layer).__name__}")
