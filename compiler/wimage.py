"""The dense weight image: the one module that writes and reads it (``docs/weight-image.md``).

A weight image is the content of the engine's on-chip weight memory and parameter memories for a
whole model, exactly as ``hw/engine.py`` holds them after its ``load`` stream: every layer's
weight rows (``pe_columns x pe_lanes`` signed weights each, ``hw.program.pack_weight_rows``),
bias rows and requantisation rows (``pack_bias_rows``, ``pack_requant_rows``), one layer after
the other from row 0, plus a header (magic, version, geometry, model hash) and a table of every
layer's base rows. The compressed format of the ULX3S is ``compiler/wformat.py``; this is the
dense one of the default configuration.

:func:`place_programs` decides the layout (which the layer schedule, ``compiler/schedule.py``,
uses for its commands); :func:`build_image` fills it; :func:`write_image` / :func:`read_image`
turn a :class:`WeightImage` into bytes and back (``read_image(write_image(x)) == x``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hw.config import AccelConfig
from hw.program import (
    LayerProgram,
    layer_program,
    pack_bias_rows,
    pack_requant_rows,
    pack_weight_rows,
    shift_bits,
)

from .qmodel import QConv, QFire, QGlobalSum, QMaxPool, QModel

__all__ = [
    "MAGIC", "FORMAT_VERSION", "HEADER_BYTES", "ENTRY_BYTES", "NAME_BYTES", "ImageFormatError",
    "Geometry", "ImageLayer", "WeightImage", "Step", "engine_steps", "place_programs",
    "build_image", "write_image", "read_image",
]

MAGIC = b"SQDW"
FORMAT_VERSION = 1
NAME_BYTES = 32

# magic, version, n_layers, pe_columns, pe_lanes, weight_bits, bias_bits, mult_bits, shift_bits,
# weight_rows, param_rows, weight_row_bytes, bias_row_bytes, requant_row_bytes, reserved,
# model sha256, weight_offset, bias_offset, requant_offset, total_bytes
_HEADER = struct.Struct("<4sHHHHBBBBIIHHHH32sIIII")
_ENTRY = struct.Struct(f"<{NAME_BYTES}sIIII")  # name, wbase, wrows, pbase, prows
HEADER_BYTES = _HEADER.size
ENTRY_BYTES = _ENTRY.size


class ImageFormatError(ValueError):
    """Bytes that are not a dense weight image of this version, or are truncated or corrupt."""


@dataclass(frozen=True)
class Geometry:
    """The configuration a weight image was laid out for (the widths its rows depend on)."""

    pe_columns: int
    pe_lanes: int
    weight_bits: int
    bias_bits: int
    mult_bits: int
    shift_bits: int

    @classmethod
    def of(cls, cfg: AccelConfig) -> Geometry:
        return cls(cfg.pe_columns, cfg.pe_lanes, cfg.weight_bits, cfg.bias_bits,
                   cfg.requant_mult_bits, shift_bits(cfg))

    @property
    def weight_row_bytes(self) -> int:
        return -(-self.pe_columns * self.pe_lanes * self.weight_bits // 8)

    @property
    def bias_row_bytes(self) -> int:
        return -(-self.pe_columns * self.bias_bits // 8)

    @property
    def requant_row_bytes(self) -> int:
        return -(-self.pe_columns * (self.mult_bits + self.shift_bits) // 8)


@dataclass(frozen=True)
class ImageLayer:
    """One engine layer's place in the memories: weight rows ``wbase .. wbase + wrows - 1``,
    parameter (bias and requantisation) rows ``pbase .. pbase + prows - 1``."""

    name: str
    wbase: int
    wrows: int
    pbase: int
    prows: int


@dataclass
class WeightImage:
    """The weight and parameter memories' contents; rows are the packed integers of
    ``hw.program`` (element 0 in the least significant bits)."""

    geometry: Geometry
    model_sha256: str
    layers: list[ImageLayer] = field(default_factory=list)
    weight_rows: list[int] = field(default_factory=list)
    bias_rows: list[int] = field(default_factory=list)
    requant_rows: list[int] = field(default_factory=list)
    #: with ``weight_streams``: the compressed weight path's memories
    #: (``compiler.wstream_image.StreamImage``), which replace ``weight_rows`` on the engine; not
    #: part of this file format
    streams: object | None = None

    def layer(self, name: str) -> ImageLayer:
        for la in self.layers:
            if la.name == name:
                return la
        raise KeyError(f"no layer {name!r} in the weight image; it has "
                       f"{', '.join(la.name for la in self.layers)}")

    @property
    def weight_bytes(self) -> int:
        return len(self.weight_rows) * self.geometry.weight_row_bytes

    @property
    def param_bytes(self) -> int:
        g = self.geometry
        return len(self.bias_rows) * g.bias_row_bytes + len(self.requant_rows) * \
            g.requant_row_bytes


# -- layout --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One engine command: a convolution or Fire module with the pool fused into its output."""

    layer: QConv | QFire
    pool: QMaxPool | QGlobalSum | None
    in_shape: tuple[int, int, int]

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def out_name(self) -> str:
        """The name of the model layer whose output this step produces."""
        return (self.pool or self.layer).name


def engine_steps(qm: QModel) -> list[Step]:
    """The model's layers as engine steps: every pool fused into the layer before it.

    Raises ``ValueError`` for a pool that does not follow a convolution or Fire module (the
    engine has no stand-alone pool) and ``TypeError`` for a layer it cannot run.
    """
    steps: list[Step] = []
    shapes = qm.input_shapes()
    prev = None
    for la in qm.layers:
        if isinstance(la, (QMaxPool, QGlobalSum)):
            if prev is None or prev.pool is not None:
                raise ValueError(f"{qm.name}: pool {la.name!r} does not follow a convolution or "
                                 f"Fire module; the engine only fuses pools into one")
            prev = Step(prev.layer, la, prev.in_shape)
            steps[-1] = prev
        elif isinstance(la, (QConv, QFire)):
            prev = Step(la, None, tuple(int(v) for v in shapes[la.name]))
            steps.append(prev)
        else:
            raise TypeError(f"{qm.name}: the engine runs QConv, QFire and fused pools, not "
                            f"{type(la).__name__} ({la.name!r})")
    return steps


def place_programs(cfg: AccelConfig, qm: QModel) -> list[LayerProgram]:
    """Every step's :class:`LayerProgram`, the layers packed one after the other from weight
    row 0 and parameter row 0 in execution order (raises ``ValueError`` when they do not fit
    ``weight_depth`` / ``param_depth``). With ``cfg.weight_streams`` step ``i``'s command
    names descriptor row ``i`` (``wdesc``, ``compiler/wstream_image.py``)."""
    progs, wbase, pbase = [], 0, 0
    for st in engine_steps(qm):
        p = layer_program(cfg, st.layer, st.in_shape, pool=st.pool, wbase=wbase, pbase=pbase)
        if cfg.weight_streams:
            # the layer's row of the weight-stream descriptor memory (compiler/wstream_image.py)
            p.cmd["wdesc"] = len(progs)
        progs.append(p)
        wbase += len(p.weight_rows)
        pbase += len(p.bias_rows)
    return progs


def build_image(cfg: AccelConfig, qm: QModel) -> WeightImage:
    """The weight image of ``qm`` for ``cfg`` (layout of :func:`place_programs`)."""
    img = WeightImage(Geometry.of(cfg), qm.source_sha256)
    for p in place_programs(cfg, qm):
        w = pack_weight_rows(cfg, p.weight_rows)
        b = pack_bias_rows(cfg, p.bias_rows)
        r = pack_requant_rows(cfg, p.mult_rows, p.shift_rows)
        img.layers.append(ImageLayer(p.name, len(img.weight_rows), len(w), len(img.bias_rows),
                                     len(b)))
        img.weight_rows += w
        img.bias_rows += b
        img.requant_rows += r
    return img


# -- bytes ---------------------------------------------------------------------------------

def _rows_bytes(rows: list[int], nbytes: int) -> bytes:
    return b"".join(int(r).to_bytes(nbytes, "little") for r in rows)


def _rows_from(data: bytes, off: int, n: int, nbytes: int) -> list[int]:
    return [int.from_bytes(data[off + i * nbytes: off + (i + 1) * nbytes], "little")
            for i in range(n)]


def sha_bytes(sha: str, error: type[ValueError] = ImageFormatError) -> bytes:
    """The 32 raw bytes of a model hash given as 64 hex digits (all zero for ""); ``error``
    (the calling format's error class) for anything else."""
    if sha == "":
        return bytes(32)
    try:
        raw = bytes.fromhex(sha)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise error(f"model hash must be 64 hex digits (sha256) or empty, not {sha!r}")
    return raw


def write_image(img: WeightImage) -> bytes:
    """The bytes of ``img`` (docs/weight-image.md); deterministic."""
    g = img.geometry
    if len(img.bias_rows) != len(img.requant_rows):
        raise ImageFormatError(f"{len(img.bias_rows)} bias rows but {len(img.requant_rows)} "
                               f"requantisation rows; the parameter memories have one each")
    for what, rows, nbytes in (("weight", img.weight_rows, g.weight_row_bytes),
                               ("bias", img.bias_rows, g.bias_row_bytes),
                               ("requant", img.requant_rows, g.requant_row_bytes)):
        if any(not 0 <= r < 1 << (8 * nbytes) for r in rows):
            raise ImageFormatError(f"a {what} row does not fit {nbytes} bytes")
    table = b""
    for la in img.layers:
        name = la.name.encode()
        if len(name) > NAME_BYTES:
            raise ImageFormatError(f"layer name {la.name!r} is longer than {NAME_BYTES} bytes")
        if la.wbase + la.wrows > len(img.weight_rows) or la.pbase + la.prows > len(img.bias_rows):
            raise ImageFormatError(f"layer {la.name!r} points past the image's rows")
        table += _ENTRY.pack(name, la.wbase, la.wrows, la.pbase, la.prows)
    w_off = HEADER_BYTES + len(table)
    b_off = w_off + len(img.weight_rows) * g.weight_row_bytes
    r_off = b_off + len(img.bias_rows) * g.bias_row_bytes
    total = r_off + len(img.requant_rows) * g.requant_row_bytes
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(img.layers), g.pe_columns, g.pe_lanes,
                        g.weight_bits, g.bias_bits, g.mult_bits, g.shift_bits,
                        len(img.weight_rows), len(img.bias_rows), g.weight_row_bytes,
                        g.bias_row_bytes, g.requant_row_bytes, 0, sha_bytes(img.model_sha256),
                        w_off, b_off, r_off, total)
    out = (head + table + _rows_bytes(img.weight_rows, g.weight_row_bytes)
           + _rows_bytes(img.bias_rows, g.bias_row_bytes)
           + _rows_bytes(img.requant_rows, g.requant_row_bytes))
    assert len(out) == total
    return out



def check_preamble(data: bytes, magic: bytes, version: int, header_bytes: int, what: str,
                   error: type[Exception]):
    """Refuse ``data`` unless it starts with ``magic``, the little-endian u16 ``version`` and a
    whole header of ``header_bytes``; the message names ``what`` the file should be."""
    if len(data) < 6:
        raise error(f"not a {what}: {len(data)} bytes, shorter than the magic and version")
    got, ver = struct.unpack_from("<4sH", data)
    if got != magic:
        raise error(f"not a {what}: magic {got!r}, expected {magic!r}")
    if ver != version:
        raise error(f"{what} version {ver}, expected {version}")
    if len(data) < header_bytes:
        raise error(f"truncated {what}: {len(data)} bytes, the header alone is {header_bytes}")


def read_image(data: bytes, cfg: AccelConfig | None = None) -> WeightImage:
    """The :class:`WeightImage` of ``data``.

    Raises :class:`ImageFormatError` for a wrong magic or version, a truncated or over-long
    file, inconsistent offsets or row sizes, or (when ``cfg`` is given) an image laid out for
    another geometry than ``cfg``'s.
    """
    data = bytes(data)
    check_preamble(data, MAGIC, FORMAT_VERSION, HEADER_BYTES, "dense weight image",
                   ImageFormatError)
    (_, _, n, cols, lanes, wb, bb, mb, sb, nw, npar, wrb, brb, rrb, _, sha, w_off, b_off, r_off,
     total) = _HEADER.unpack_from(data)
    g = Geometry(cols, lanes, wb, bb, mb, sb)
    if (wrb, brb, rrb) != (g.weight_row_bytes, g.bias_row_bytes, g.requant_row_bytes):
        raise ImageFormatError(f"row sizes {wrb}/{brb}/{rrb} bytes do not match the geometry "
                               f"{g}, expected {g.weight_row_bytes}/{g.bias_row_bytes}/"
                               f"{g.requant_row_bytes}")
    if cfg is not None and g != Geometry.of(cfg):
        raise ImageFormatError(f"image laid out for {g}, expected {Geometry.of(cfg)} of "
                               f"configuration {cfg.name!r}")
    expect = (HEADER_BYTES + n * ENTRY_BYTES, HEADER_BYTES + n * ENTRY_BYTES + nw * wrb)
    expect += (expect[1] + npar * brb, expect[1] + npar * (brb + rrb))
    if (w_off, b_off, r_off, total) != expect:
        raise ImageFormatError(f"section offsets {w_off}/{b_off}/{r_off}/{total}, expected "
                               f"{'/'.join(map(str, expect))}")
    if len(data) != total:
        raise ImageFormatError(f"{'truncated' if len(data) < total else 'over-long'} dense "
                               f"weight image: {len(data)} bytes, expected {total}")
    layers = []
    for i in range(n):
        name, wbase, wrows, pbase, prows = _ENTRY.unpack_from(data, HEADER_BYTES + i * ENTRY_BYTES)
        name = name.rstrip(b"\0").decode()
        if wbase + wrows > nw or pbase + prows > npar:
            raise ImageFormatError(f"layer {name!r} rows {wbase}+{wrows} / {pbase}+{prows} "
                                   f"exceed the image's {nw} weight / {npar} parameter rows")
        layers.append(ImageLayer(name, wbase, wrows, pbase, prows))
    return WeightImage(g, "" if sha == bytes(32) else sha.hex(), layers,
                       _rows_from(data, w_off, nw, wrb), _rows_from(data, b_off, npar, brb),
                       _rows_from(data, r_off, npar, rrb))
