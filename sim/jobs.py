"""Packing the job files of the compiled Verilator harnesses (``sim/harness/``) and decoding
what they return: payloads as little-endian uint32 words, least significant word first.

One place for the layouts of ``hw.engine.LoadBeat`` rows, ``hw.engine.InBeat`` input beats and
``hw.pool.Beat`` output beats, used by ``sim.layer`` (one layer on the engine), ``sim.run``
(the whole accelerator) and ``sim.board`` (the simulated board).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from hw.config import AccelConfig

__all__ = ["words", "n_words", "load_rows", "input_beats", "beat_fields", "beat_values"]


def n_words(bits: int) -> int:
    """uint32 words of a ``bits``-bit payload."""
    return -(-bits // 32)


def words(value: int, bits: int) -> list[int]:
    """A ``bits``-bit payload as uint32 words."""
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(n_words(bits))]


def load_rows(cfg: AccelConfig, tables: Iterable[tuple]) -> np.ndarray:
    """``LoadBeat`` payloads [n, words] (uint32): for each ``(target, rows)``, row ``i`` goes
    to address ``i`` of that memory; for each ``(target, rows, addrs)`` to ``addrs[i]``."""
    from hw.engine import LoadBeat

    layout = LoadBeat(cfg)
    t_off, a_off, d_off = (layout[n].offset for n in ("target", "addr", "data"))
    out = []
    for target, rows, *addrs in tables:
        rows = list(rows)
        at = list(addrs[0]) if addrs else range(len(rows))
        out += [words((target << t_off) | (int(a) << a_off) | (int(row) << d_off), layout.size)
                for a, row in zip(at, rows)]
    return np.array(out, dtype=np.uint32).reshape(len(out), n_words(layout.size))


def input_beats(cfg: AccelConfig, values: np.ndarray) -> np.ndarray:
    """``InBeat`` payloads [n, words] (uint32) of ``in_lanes`` values each, the last one
    shorter."""
    from hw.engine import InBeat

    layout = InBeat(cfg)
    lanes, bits = cfg.in_lanes, cfg.input_bits
    values = np.asarray(values).reshape(-1)
    nw = n_words(layout.size)
    n = -(-values.size // lanes)
    padded = np.zeros(n * lanes, dtype=np.uint64)
    padded[: values.size] = values.astype(np.int64) & ((1 << bits) - 1)
    lanes_v = padded.reshape(n, lanes)
    counts = np.full(n, lanes, dtype=np.uint64)
    counts[-1] = values.size - (n - 1) * lanes
    # assemble the bit string of each beat 32 bits at a time
    out = np.zeros((n, nw), dtype=np.uint64)
    fields = [(lanes_v[:, k], bits * k, bits) for k in range(lanes)]
    fields.append((counts, layout["count"].offset, layout["count"].width))
    for vals, off, width in fields:
        for w in range(nw):
            lo, hi = 32 * w, 32 * w + 32
            if off >= hi or off + width <= lo:
                continue
            shift = off - lo
            part = (vals << np.uint64(shift)) if shift >= 0 else (vals >> np.uint64(-shift))
            out[:, w] |= part & np.uint64(0xFFFFFFFF)
    return out.astype(np.uint32)


def beat_fields(cfg: AccelConfig, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode ``hw.pool.Beat`` payloads [n, words]: ``(counts, lasts, data)``, ``data``
    [n, requant_units] signed ``sum_bits`` values (lanes past ``count`` are garbage)."""
    from hw.pool import Beat

    beat = Beat(width=cfg.sum_bits, lanes=cfg.requant_units)
    w64 = np.asarray(rows, dtype=np.uint32).reshape(-1, n_words(beat.size)).astype(np.uint64)

    def field(off, width):
        word, bit = divmod(off, 32)
        v = w64[:, word] >> np.uint64(bit)
        if bit + width > 32 and word + 1 < w64.shape[1]:
            v |= w64[:, word + 1] << np.uint64(32 - bit)
        return v & np.uint64((1 << width) - 1)

    counts = field(beat["count"].offset, beat["count"].width).astype(np.int64)
    lasts = field(beat["last"].offset, 1).astype(bool)
    data = np.stack([field(cfg.sum_bits * k, cfg.sum_bits) for k in range(cfg.requant_units)],
                    axis=1).astype(np.int64)
    sign = 1 << (cfg.sum_bits - 1)
    data = np.where(data >= sign, data - (1 << cfg.sum_bits), data)
    return counts, lasts, data


def beat_values(cfg: AccelConfig, rows: np.ndarray) -> np.ndarray:
    """The values of ``hw.pool.Beat`` payloads [n, words], in order (``count`` of each)."""
    counts, _, data = beat_fields(cfg, rows)
    return data[np.arange(cfg.requant_units)[None, :] < counts[:, None]]
