"""The compressed weight path's memory contents: per-column streams, descriptors, codebooks.

With ``AccelConfig.weight_streams`` the engine holds no dense weight rows. It reads every
layer's codebook indices ("codes") from per-column bit streams (``compiler/wstreams.py`` is the
format) through the stream decoder (``hw/wdecode.py``) and looks them up in the layer's
codebooks (docs/compression.md, "The weight path with streams"). This module lays out what the
engine's memories then hold, from a model's codebooks and indices:

- the code rows of every convolution have exactly the layout of its weight rows
  (:func:`compiler.wstreams.branch_codes` is ``hw.program``'s row packing run on the indices;
  padding is code 0, weight 0), and :func:`layer_contexts` checks ``codebook[codes]`` against
  the weight rows of the layer program;
- a Fire module is two decoder contexts: 0 the squeeze (one segment), 1 the expands (segment 0
  expand 1x1, segment 1 expand 3x3); a plain convolution is context 1 with one segment. Each
  segment is DENSE or MASK, whichever makes the smaller streams;
- every context's words (its code part, then its mask part) are appended to each column's
  stream memory, layer after layer;
- a layer's descriptor row (``hw.program.wdesc_fields``: its codebook block, per context the
  first and last word of every column's code part, rows, segment sizes, ``k``, modes and
  codebook bases) sits in the descriptor memory at the layer's index, the command's ``wdesc``
  field (``wimage.place_programs``);
- every layer has one contiguous block of the central codebook memory (``cb_start``,
  ``cb_len``), exactly the image of the lane lookup tables while the layer runs: the codebooks
  of its (context, segment) pairs in the order squeeze, expand 1x1, expand 3x3 (a plain
  convolution: its one codebook), each ``2**k`` entries of its own ``k`` (entry 0 is 0),
  packed one after another; a codebook's offset in the block is its segment's *base*. The
  engine copies the block into every lane's table at the layer's start and looks a code up at
  ``base + code``. A block is at most ``lookup_depth`` entries, all blocks at most
  ``codebook_depth``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from hw.config import AccelConfig
from hw.program import LayerProgram, pack_wdesc

from .qmodel import QConv, QFire, QModel
from .wstreams import (
    DENSE,
    MASK,
    Segment,
    branch_codes,
    context_words,
    decode_context,
    encode_parts,
    max_record_bits,
)

__all__ = ["LayerCodes", "codes_from_weights", "codes_of_model", "codes_of_image",
           "StreamContext", "StreamLayer", "StreamImage", "layer_contexts", "choose_modes",
           "build_stream_image", "decode_layer_rows"]


@dataclass(frozen=True)
class LayerCodes:
    """One convolution's codebook (``2**k`` signed entries, entry 0 is 0) and its indices
    ``[O, C, KH, KW]``: the decoded weight is ``codebook[indices]``."""

    indices: np.ndarray
    codebook: np.ndarray

    @property
    def k(self) -> int:
        return int(np.size(self.codebook)).bit_length() - 1


def codes_from_weights(name: str, weight: np.ndarray, kmax: int) -> LayerCodes:
    """A codebook of ``weight``'s distinct values (0 first, then ascending), padded to a power
    of two of at least 2 entries, and the indices. ``ValueError`` when more than
    ``2**kmax - 1`` distinct non-zero values need a code wider than ``kmax`` bits."""
    w = np.asarray(weight, dtype=np.int64)
    values = np.unique(w[w != 0])
    k = max(1, int(values.size).bit_length())
    if k > kmax:
        raise ValueError(f"{name}: {values.size} distinct non-zero weights need {k}-bit codes, "
                         f"more than wstream_kmax = {kmax}")
    codebook = np.zeros(1 << k, dtype=np.int64)
    codebook[1: values.size + 1] = values
    indices = np.zeros(w.shape, dtype=np.int64)
    nz = w != 0
    indices[nz] = np.searchsorted(values, w[nz]) + 1
    return LayerCodes(indices, codebook)


def codes_of_model(qm: QModel, kmax: int) -> dict[str, LayerCodes]:
    """Every convolution of ``qm`` through :func:`codes_from_weights` (a model whose layers have
    few distinct weights, such as a shared-weight model)."""
    out = {}
    for la in qm.layers:
        convs = [la.squeeze, la.expand1x1, la.expand3x3] if isinstance(la, QFire) else \
            [la] if isinstance(la, QConv) else []
        for cv in convs:
            out[cv.name] = codes_from_weights(cv.name, cv.weight, kmax)
    return out


def codes_of_image(layers) -> dict[str, LayerCodes]:
    """The codebooks and indices of a compressed weight image's layers
    (``compiler.wformat.read_image(...)[0]``), by layer name."""
    return {la.name: LayerCodes(np.asarray(la.indices, dtype=np.int64),
                                np.asarray(la.codebook, dtype=np.int64)) for la in layers}


@dataclass
class StreamContext:
    """One decoder context of a layer: its segments (codes, ``k``, mode), the base of each
    segment's codebook in the layer's lookup table and, in every column's memory, the first and
    last word of its code part (``start``, ``end``: the descriptor's fields) and the last word of
    its mask part, which follows (``stop``; ``end`` when no row is MASK)."""

    segments: list[Segment]
    bases: list[int]
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    stop: list[int] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return sum(len(s.codes) for s in self.segments)

    def desc(self, x: int) -> dict[str, int]:
        """The descriptor fields of this context as context ``x``."""
        s0, s1 = self.segments[0], self.segments[-1]
        out = {f"c{x}_n_rows": self.n_rows, f"c{x}_n0": len(s0.codes),
               f"c{x}_k0": s0.k, f"c{x}_dense0": int(s0.mode == DENSE),
               f"c{x}_base0": self.bases[0],
               f"c{x}_k1": s1.k, f"c{x}_dense1": int(s1.mode == DENSE),
               f"c{x}_base1": self.bases[-1]}
        for c, (a, b) in enumerate(zip(self.start, self.end)):
            out[f"c{x}_start{c}"] = a
            out[f"c{x}_end{c}"] = b
        return out


@dataclass
class StreamLayer:
    """A layer's contexts (``{0: squeeze, 1: expands}`` of a Fire module, ``{1: conv}`` else)
    and its block of the codebook memory (``cb_start``, ``cb_len`` entries)."""

    name: str
    contexts: dict[int, StreamContext]
    cb_start: int = 0
    cb_len: int = 0


@dataclass
class StreamImage:
    """The contents of the stream, descriptor and codebook memories (module docstring)."""

    word_bits: int
    words: list[list[int]]             # per column
    desc_rows: list[int]               # per layer (the command's wdesc)
    codebook: list[int]                # signed entries: the layers' blocks, one after another
    layers: list[StreamLayer] = field(default_factory=list)

    @property
    def stream_bytes(self) -> int:
        """Bytes of the words the column stream memories hold (all columns)."""
        return -(-sum(len(w) for w in self.words) * self.word_bits // 8)

    def codebook_rows(self, bits: int) -> list[int]:
        """The codebook entries as unsigned ``bits``-bit rows (two's complement), as a load
        beat carries them."""
        return [v & ((1 << bits) - 1) for v in self.codebook]

    @property
    def column_words(self) -> list[int]:
        return [len(w) for w in self.words]

    @property
    def stream_bits(self) -> int:
        """Bits of all the column memories' used words."""
        return sum(self.column_words) * self.word_bits


def choose_modes(segments: list[tuple[np.ndarray, int]], word_bits: int) -> list[Segment]:
    """Segments ``(codes, k)`` with the mode (DENSE or MASK) of each that makes the fewest
    words over all columns, preferring combinations whose every record fits a word (a row per
    cycle, ``hw/wdecode.py``)."""
    best = None
    for modes in itertools.product((DENSE, MASK), repeat=len(segments)):
        segs = [Segment(c, k, mode) for (c, k), mode in zip(segments, modes)]
        key = (max_record_bits(segs) > word_bits, int(context_words(segs, word_bits).sum()),
               modes)
        if best is None or key < best[0]:
            best = (key, segs)
    return best[1]


def layer_contexts(cfg: AccelConfig, prog: LayerProgram,
                   codes: dict[str, LayerCodes]) -> dict[int, list[tuple[np.ndarray, LayerCodes]]]:
    """Per context of ``prog`` the code rows of its segments and their codebooks, in the order
    the engine reads the weight rows. Raises ``ValueError`` when a layer has no codes, a code
    is wider than ``wstream_kmax``, or ``codebook[codes]`` differs from the weight rows."""
    out: dict[int, list[tuple[np.ndarray, LayerCodes]]] = {}
    parts = ([(0, prog.squeeze)] if prog.squeeze is not None else []) + \
        [(1, br) for br in prog.branches]
    for x, br in parts:
        name = br.conv.name
        if name not in codes:
            raise ValueError(f"{prog.name}: no codebook and indices for convolution {name!r}")
        lc = codes[name]
        cb = np.asarray(lc.codebook, dtype=np.int64)
        if cb.size < 2 or cb.size & (cb.size - 1) or cb[0] != 0:
            raise ValueError(f"{name}: a codebook needs 2**k >= 2 entries with entry 0 = 0, "
                             f"got {cb.size} entries starting {cb[:1].tolist()}")
        if lc.k > cfg.wstream_kmax:
            raise ValueError(f"{name}: {lc.k}-bit codes exceed wstream_kmax = "
                             f"{cfg.wstream_kmax}")
        lim = 1 << (cfg.weight_bits - 1)
        if cb.min() < -lim or cb.max() >= lim:
            raise ValueError(f"{name}: codebook entries {cb.min()}..{cb.max()} do not fit "
                             f"weight_bits = {cfg.weight_bits} signed bits")
        idx = np.asarray(lc.indices)
        if idx.min(initial=0) < 0 or idx.max(initial=0) >= cb.size:
            raise ValueError(f"{name}: indices {idx.min()}..{idx.max()} outside the codebook's "
                             f"0..{cb.size - 1}")
        rows = branch_codes(idx, cfg.pe_columns, cfg.pe_lanes)
        if rows.shape != br.weights.shape or not np.array_equal(cb[rows], br.weights):
            raise ValueError(f"{name}: codebook[indices] laid out as rows differs from the "
                             f"layer program's weight rows (shape {rows.shape} vs "
                             f"{br.weights.shape})")
        out.setdefault(x, []).append((rows, lc))
    return out


def build_stream_image(cfg: AccelConfig, progs: list[LayerProgram],
                       codes: dict[str, LayerCodes]) -> StreamImage:
    """The stream image of the layer programs ``progs`` (``wimage.place_programs``, in
    execution order: layer ``i`` is descriptor row ``i``) with the codes of ``codes``.

    Raises ``ValueError`` (naming the layer or column, the size and the limit) when a column's
    streams exceed ``wstream_depth`` words, a layer's codebooks ``lookup_depth`` entries, all
    layers' codebooks ``codebook_depth``, the layers the descriptor memory (``schedule_depth``)
    or a descriptor field its width."""
    if not cfg.weight_streams:
        raise ValueError(f"configuration {cfg.name!r} reads dense weight rows "
                         f"(weight_streams is False)")
    cols, wb = cfg.pe_columns, cfg.wstream_word_bits
    if len(progs) > cfg.schedule_depth:
        raise ValueError(f"{len(progs)} layers exceed the descriptor memory's "
                         f"{cfg.schedule_depth} rows (schedule_depth)")
    img = StreamImage(wb, [[] for _ in range(cols)], [], [])
    for p in progs:
        contexts = sorted(layer_contexts(cfg, p, codes).items())
        # the layer's lookup table: its codebooks packed in (context, segment) order
        table = [int(v) for _x, parts in contexts for _rows, lc in parts for v in lc.codebook]
        if len(table) > cfg.lookup_depth:
            sizes = " + ".join(str(lc.codebook.size) for _x, parts in contexts
                               for _rows, lc in parts)
            raise ValueError(f"{p.name}: its codebooks need {len(table)} lookup-table entries "
                             f"({sizes}), more than lookup_depth {cfg.lookup_depth}")
        layer = StreamLayer(p.name, {}, len(img.codebook), len(table))
        if layer.cb_start + layer.cb_len > cfg.codebook_depth:
            raise ValueError(f"{p.name}: the codebooks of the layers up to this one need "
                             f"{layer.cb_start + layer.cb_len} entries, more than "
                             f"codebook_depth {cfg.codebook_depth}")
        img.codebook += table
        base = 0
        for x, parts in contexts:
            bases = []
            for _rows, lc in parts:
                bases.append(base)
                base += lc.codebook.size
            segs = choose_modes([(rows, max(1, lc.k)) for rows, lc in parts], wb)
            ctx = StreamContext(segs, bases)
            for c, (code, masks) in enumerate(encode_parts(segs, wb)):
                ctx.start.append(len(img.words[c]))
                img.words[c] += code
                ctx.end.append(len(img.words[c]) - 1)
                img.words[c] += masks
                ctx.stop.append(len(img.words[c]) - 1)
                if len(img.words[c]) > cfg.wstream_depth:
                    raise ValueError(f"{p.name}: column {c}'s streams need "
                                     f"{len(img.words[c])} words, more than wstream_depth "
                                     f"{cfg.wstream_depth}")
            layer.contexts[x] = ctx
        fields = {"cb_start": layer.cb_start, "cb_len": layer.cb_len}
        for x, ctx in layer.contexts.items():
            fields.update(ctx.desc(x))
        try:
            img.desc_rows.append(pack_wdesc(cfg, fields))
        except ValueError as exc:
            raise ValueError(f"{p.name}: {exc}") from None
        img.layers.append(layer)
    return img


def decode_layer_rows(cfg: AccelConfig, img: StreamImage, i: int) -> dict[int, np.ndarray]:
    """Read layer ``i``'s contexts back from the column memories (an independent reader,
    ``wstreams.decode_context``): per context the code rows ``[n, C, L]``, and the weights per
    row as the lookup gives them (``{x: (codes, weights)}``): ``table[base + code]``, with
    ``table`` the layer's block of the codebook memory (as copied into the lane tables) and
    ``base`` the row's segment's base."""
    layer = img.layers[i]
    table = np.asarray(img.codebook[layer.cb_start: layer.cb_start + layer.cb_len],
                       dtype=np.int64)
    out = {}
    for x, ctx in layer.contexts.items():
        words = [img.words[c][a: b + 1] for c, (a, b) in enumerate(zip(ctx.start, ctx.stop))]
        segs = decode_context(words, [s.spec for s in ctx.segments], cfg.pe_columns,
                              cfg.pe_lanes, img.word_bits)
        rows = np.concatenate(segs)
        base = np.concatenate([np.full(len(s), b, dtype=np.int64)
                               for s, b in zip(segs, ctx.bases)])
        out[x] = (rows, table[base[:, None, None] + rows])
    return out

