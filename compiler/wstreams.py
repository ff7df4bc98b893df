"""Per-column weight-index streams: the one module that writes and reads this format.

The engine reads its weight rows (``pe_columns x pe_lanes`` codebook indices, "codes") in a fixed
cyclic order per *context* (``hw/wdecode.py``): rows ``0 .. n-1`` and again from row 0. A context
is one or two *segments*; segment ``s`` has codes ``[R_s, C, L]`` of ``k_s`` bits (1..8) and a
mode, :data:`DENSE` or :data:`MASK`. Rows are numbered ``r = 0 .. n-1`` over the segments in order.
A MASK row has a lane mask per column (``L`` bits, bit ``l`` set iff the code of lane ``l`` is not
0); a DENSE row has none (its codes include the zeros).

Per column ``c`` two parts of ``W``-bit words, the codes first:

- **codes**: one bit stream, LSB first (stream bit ``i`` is bit ``i % W`` of word ``i // W``):
  for ``r = 0 .. n-1`` row ``r``'s *record*, its codes: DENSE: ``L`` codes of ``k`` bits in lane
  order; MASK: the codes of the set lanes of ``mask_r`` in lane order, ``k`` bits each; then zero
  padding to a whole word (at least one word, even when every record is empty);
- **masks**: ``mask_r`` of every MASK row in row order, ``W // L`` to a word (mask ``j`` of a
  word in bits ``j L .. j L + L - 1``, no mask across two words), the rest of each word zero
  (no words when no row is MASK).

The masks stand apart so that a decoder knows every record's length (``popcount(mask) * k``)
from a fixed-stride stream, as far ahead as it likes: finding the next record is an add, never
a selection at a data-dependent position (``hw/wdecode.py``). A descriptor names the code
part's first and last word; the mask part follows the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DENSE", "MASK", "Segment", "SegmentSpec", "encode_context", "encode_parts",
           "decode_context", "record_bits", "context_bits", "max_record_bits", "context_words",
           "code_words", "mask_words", "branch_codes"]

DENSE, MASK = 0, 1
_MODES = {DENSE: "DENSE", MASK: "MASK"}


@dataclass(frozen=True)
class SegmentSpec:
    """What a reader needs to know of a segment: rows, code bits and mode."""

    rows: int
    k: int
    mode: int


@dataclass
class Segment:
    """A segment's codes ``[rows, C, L]`` (values ``0 .. 2**k - 1``), code bits and mode."""

    codes: np.ndarray
    k: int
    mode: int = MASK

    @property
    def spec(self) -> SegmentSpec:
        return SegmentSpec(int(np.shape(self.codes)[0]), int(self.k), int(self.mode))


def _check_spec(i: int, rows, k, mode):
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= 8:
        raise ValueError(f"segment {i}: k must be an integer in 1..8, not {k!r}")
    if mode not in _MODES:
        raise ValueError(f"segment {i}: mode must be DENSE ({DENSE}) or MASK ({MASK}), "
                         f"not {mode!r}")
    if not isinstance(rows, (int, np.integer)) or rows < 1:
        raise ValueError(f"segment {i}: rows must be a positive integer, not {rows!r}")


def _as_segments(segments) -> list[Segment]:
    out = []
    for s in segments:
        if isinstance(s, Segment):
            out.append(s)
        elif isinstance(s, dict):
            out.append(Segment(s["codes"], s["k"], s.get("mode", MASK)))
        else:
            codes, k, mode = s
            out.append(Segment(codes, k, mode))
    return out


def _check_segments(segments) -> tuple[list[Segment], int, int]:
    segs = _as_segments(segments)
    if not 1 <= len(segs) <= 2:
        raise ValueError(f"a context has 1 or 2 segments, not {len(segs)}")
    shape = None
    for i, s in enumerate(segs):
        codes = np.asarray(s.codes)
        if codes.ndim != 3:
            raise ValueError(f"segment {i}: codes must be [rows, C, L], not shape {codes.shape}")
        _check_spec(i, codes.shape[0], s.k, s.mode)
        if shape is not None and codes.shape[1:] != shape:
            raise ValueError(f"segment {i}: codes of shape [*, C, L] = {codes.shape} do not match "
                             f"segment 0's [*, {shape[0]}, {shape[1]}]")
        shape = codes.shape[1:]
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"segment {i}: codes must be integers, not {codes.dtype}")
        lo, hi = int(codes.min(initial=0)), int(codes.max(initial=0))
        if lo < 0 or hi >= 1 << s.k:
            bad = lo if lo < 0 else hi
            raise ValueError(f"segment {i}: code {bad} out of range 0..{(1 << s.k) - 1} "
                             f"(k = {s.k})")
        s.codes = codes.astype(np.int64)
    c, lanes = shape
    if c < 1 or lanes < 1:
        raise ValueError(f"codes need at least one column and lane, got C={c}, L={lanes}")
    return segs, c, lanes


def _row_table(specs: Sequence[SegmentSpec]) -> list[tuple[int, int, int, int]]:
    """Per row: (segment, row within it, k, mode)."""
    rows = []
    for s, sp in enumerate(specs):
        rows += [(s, i, sp.k, sp.mode) for i in range(sp.rows)]
    return rows


def record_bits(mask: np.ndarray | None, k: int, mode: int, lanes: int) -> int:
    """Bits of one record: the row's codes (its mask is in the mask part)."""
    if mode == DENSE:
        return lanes * k
    return int(np.count_nonzero(mask)) * k


def _record_sizes(segs: list[Segment], lanes: int) -> np.ndarray:
    """Record bits ``[n, C]``."""
    per = []
    for s, i, k, mode in _row_table([s.spec for s in segs]):
        if mode == DENSE:
            per.append(np.full(segs[s].codes.shape[1], lanes * k))
        else:
            per.append(np.count_nonzero(segs[s].codes[i], axis=1) * k)
    return np.array(per, dtype=np.int64)


def _mask_rows(specs: Sequence[SegmentSpec]) -> int:
    return sum(sp.rows for sp in specs if sp.mode == MASK)


def _words(bits: int, word_bits: int) -> int:
    return -(-bits // word_bits)


def context_bits(segments) -> np.ndarray:
    """Bits of every column's codes and masks, without padding: ``[C]``."""
    segs, _c, lanes = _check_segments(segments)
    return _record_sizes(segs, lanes).sum(axis=0) + _mask_rows([s.spec for s in segs]) * lanes


def code_words(segments, word_bits: int) -> np.ndarray:
    """Words of every column's code part (at least one): ``[C]``."""
    segs, _c, lanes = _check_segments(segments)
    _check_word_bits(word_bits, lanes)
    bits = _record_sizes(segs, lanes).sum(axis=0)
    return np.maximum(1, -(-bits // word_bits))


def mask_words(specs, lanes: int, word_bits: int) -> int:
    """Words of a column's mask part (the same for every column): ``W // L`` masks a word."""
    specs = [sp if isinstance(sp, SegmentSpec) else SegmentSpec(*sp) for sp in specs]
    _check_word_bits(word_bits, lanes)
    return _words(_mask_rows(specs), word_bits // lanes)


def context_words(segments, word_bits: int) -> np.ndarray:
    """Words of every column's two parts: ``[C]``."""
    segs, _c, lanes = _check_segments(segments)
    return code_words(segs, word_bits) + mask_words([s.spec for s in segs], lanes, word_bits)


def max_record_bits(segments) -> int:
    """The largest record of any row and column (a decoder delivers a row per cycle when every
    record fits a word)."""
    segs, _c, lanes = _check_segments(segments)
    return int(_record_sizes(segs, lanes).max())


def _check_word_bits(word_bits, lanes):
    if not isinstance(word_bits, (int, np.integer)) or word_bits < max(lanes, 1):
        raise ValueError(f"word_bits must be an integer of at least L = {lanes}, not "
                         f"{word_bits!r}")


def _pack(fields: list[tuple[int, int]], word_bits: int) -> list[int]:
    acc, pos = 0, 0
    for v, b in fields:
        acc |= v << pos
        pos += b
    wmask = (1 << word_bits) - 1
    return [(acc >> (w * word_bits)) & wmask for w in range(_words(pos, word_bits))]


def encode_parts(segments, word_bits: int) -> list[tuple[list[int], list[int]]]:
    """Per column the words of its code part and of its mask part (module docstring).

    ``segments``: 1 or 2 :class:`Segment` (or ``(codes, k, mode)`` tuples), codes ``[R_s, C, L]``.
    """
    segs, cols, lanes = _check_segments(segments)
    _check_word_bits(word_bits, lanes)
    table = _row_table([s.spec for s in segs])
    codes = [segs[s].codes[i] for s, i, _k, _m in table]      # per row [C, L]
    per_word = word_bits // lanes
    out = []
    for c in range(cols):
        fields: list[tuple[int, int]] = []        # (value, bits)
        masks: list[int] = []
        for r, (_s, _i, k, mode) in enumerate(table):
            if mode == MASK:
                masks.append(sum(1 << lane for lane in range(lanes) if codes[r][c, lane]))
            for lane in range(lanes):
                v = int(codes[r][c, lane])
                if mode == DENSE or v:
                    fields.append((v, k))
        code = _pack(fields, word_bits) or [0]
        mwords = [sum(m << (j * lanes) for j, m in enumerate(masks[w: w + per_word]))
                  for w in range(0, len(masks), per_word)]
        out.append((code, mwords))
    return out


def encode_context(segments, word_bits: int) -> list[list[int]]:
    """The words (``word_bits`` bits each) of every column: its code part, then its mask part.

    ``segments``: 1 or 2 :class:`Segment` (or ``(codes, k, mode)`` tuples), codes ``[R_s, C, L]``.
    """
    return [code + masks for code, masks in encode_parts(segments, word_bits)]


def decode_context(words_per_column, specs, columns: int, lanes: int,
                   word_bits: int) -> list[np.ndarray]:
    """Read the streams back: one code array ``[R_s, C, L]`` per segment spec.

    ``words_per_column``: per column its code part and then its mask part (as
    :func:`encode_context` gives them). ``specs``: 1 or 2 :class:`SegmentSpec` or ``(rows, k,
    mode)`` tuples. An independent reader of the format (bit cursors, no shared code with
    :func:`encode_parts`); raises ValueError for truncated or too many words, or non-zero
    padding.
    """
    specs = [sp if isinstance(sp, SegmentSpec) else SegmentSpec(*sp) for sp in specs]
    if not 1 <= len(specs) <= 2:
        raise ValueError(f"a context has 1 or 2 segments, not {len(specs)}")
    for i, sp in enumerate(specs):
        _check_spec(i, sp.rows, sp.k, sp.mode)
    _check_word_bits(word_bits, lanes)
    if len(words_per_column) != columns:
        raise ValueError(f"expected words for {columns} columns, got {len(words_per_column)}")
    table = _row_table(specs)
    per_word = word_bits // lanes
    nmask = sum(1 for row in table if row[3] == MASK)
    mwords = -(-nmask // per_word)
    out = [np.zeros((sp.rows, columns, lanes), dtype=np.int64) for sp in specs]
    for c, words in enumerate(words_per_column):
        words = [int(w) for w in words]
        for j, w in enumerate(words):
            if not 0 <= w < 1 << word_bits:
                raise ValueError(f"column {c}: word {j} = {w} does not fit {word_bits} bits")
        if len(words) < mwords + 1:
            raise ValueError(f"column {c}: stream truncated: {len(words)} words cannot hold a "
                             f"code word and {mwords} mask words ({nmask} masks)")
        code, mpart = words[: len(words) - mwords], words[len(words) - mwords:]
        masks = []
        for j in range(nmask):
            masks.append((mpart[j // per_word] >> (j % per_word * lanes)) & ((1 << lanes) - 1))
        for w, word in enumerate(mpart):
            used = min(per_word, nmask - w * per_word) * lanes
            if word >> used:
                raise ValueError(f"column {c}: mask word {w} has bits set after its "
                                 f"{used // lanes} masks")
        total = len(code) * word_bits
        pos = 0

        def take(bits, what, c=c, code=code, total=total):
            nonlocal pos
            if pos + bits > total:
                raise ValueError(f"column {c}: stream truncated reading {what} at bit {pos}: "
                                 f"needs {bits} bits, {len(code)} code words hold {total}")
            v = 0
            for b in range(bits):
                i = pos + b
                v |= ((code[i // word_bits] >> (i % word_bits)) & 1) << b
            pos += bits
            return v

        it = iter(masks)
        for r, (s, i, k, mode) in enumerate(table):
            m = next(it) if mode == MASK else (1 << lanes) - 1
            for lane in range(lanes):
                if (m >> lane) & 1:
                    v = take(k, f"the code of row {r} lane {lane}")
                    if mode == MASK and v == 0:
                        raise ValueError(f"column {c}: row {r} lane {lane} is set in the mask "
                                         f"but its code is 0")
                    out[s][i, c, lane] = v
        if max(1, -(-pos // word_bits)) != len(code):
            raise ValueError(f"column {c}: the codes take {max(1, -(-pos // word_bits))} words "
                             f"and the masks {mwords}, got {len(words)} words")
        end = pos
        if pos < total and take(total - pos, "the padding"):
            raise ValueError(f"column {c}: padding after bit {end} is not zero")
    return out


def branch_codes(indices: np.ndarray, columns: int, lanes: int) -> np.ndarray:
    """A convolution's codebook indices ``[O, C, KH, KW]`` as rows ``[groups*KH*nseg, columns,
    lanes]`` in the engine's order (group, ky, segment), zero-padded: the layout of
    ``hw.program`` (``_map_branch``) applied to indices instead of weights."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 4:
        raise ValueError(f"indices must be [O, C, KH, KW], not shape {idx.shape}")
    o, c, kh, kw = idx.shape
    groups = -(-o // columns)
    nseg = -(-kw * c // lanes)
    pad = np.zeros((groups * columns, c, kh, kw), dtype=np.int64)
    pad[:o] = idx
    rowvals = np.zeros((groups * columns, kh, nseg * lanes), dtype=np.int64)
    rowvals[:, :, : kw * c] = pad.transpose(0, 2, 3, 1).reshape(groups * columns, kh, kw * c)
    rows = rowvals.reshape(groups, columns, kh, nseg, lanes).transpose(0, 2, 3, 1, 4)
    return rows.reshape(groups * kh * nseg, columns, lanes)
