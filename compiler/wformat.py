"""The compressed weight image: the one module that writes and reads it (``docs/compression.md``).

A weight image holds, for every convolution of a model in execution order (a Fire module's
squeeze, expand 1x1, expand 3x3), a codebook of ``2**k`` signed integer entries (entry 0 is 0),
the per-output-channel integers of the requantisation (bias, multiplier, shift), and the layer's
``k``-bit codebook indices in the smallest of three sparse encodings, packed into block-RAM words
of ``word_bits`` bits:

- ``DENSE``: every weight's index, ``k`` bits each;
- ``BITMASK``: one bit per weight (1 = non-zero), padded to a whole word, then the index of every
  non-zero weight, ``k`` bits each;
- ``ZERO_RUN``: entries of ``run_bits`` (zeros before this weight) + ``k`` (its index) bits; a run
  longer than ``2**run_bits - 1`` is split by a filler entry whose index is 0; zeros after the last
  entry are implicit.

The decoded integer weight of position ``(o, c, ky, kx)`` is ``codebook[index]``: exactly the
``QConv.weight`` of the golden model. Everything here is numpy; nothing is trained or rounded.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAGIC", "FORMAT_VERSION", "DENSE", "BITMASK", "ZERO_RUN", "ENCODING_NAMES",
    "DEFAULT_WORD_BITS", "MULT_BITS", "SHIFT_BITS", "FormatError", "CompressedLayer",
    "pack_fields", "unpack_fields", "encoding_sizes", "encode_indices", "decode_indices",
    "write_image", "read_image", "image_sha256",
]

MAGIC = b"SQWI"
FORMAT_VERSION = 1
DENSE, BITMASK, ZERO_RUN = 0, 1, 2
ENCODING_NAMES = {DENSE: "dense", BITMASK: "bitmask", ZERO_RUN: "zero-run"}
#: an ECP5 EBR in its widest mode is 512 words of 36 bits
DEFAULT_WORD_BITS = 36
#: widths of the per-output-channel requantisation integers (docs/numerics.md)
MULT_BITS = 16
SHIFT_BITS = 6
#: zero-run widths the compiler tries
RUN_BITS = (1, 2, 3, 4, 5, 6, 7, 8)

_HEADER = struct.Struct("<4sHBBH32s")  # magic, version, word_bits, reserved, n_layers, sha256
_LAYER = struct.Struct("<HHBBBBBBBBBBBdd" "IIII")


class FormatError(ValueError):
    """A weight image that is corrupt, of another version, or inconsistent with its model."""


@dataclass
class CompressedLayer:
    """One convolution as the board carries it: integers only, plus scales for information.

    ``indices`` ``[O, C, KH, KW]`` selects from ``codebook`` (``2**k`` signed entries of
    ``entry_bits`` bits, entry 0 is 0); ``bias``, ``mult``, ``shift`` are per output channel
    (docs/numerics.md). ``in_scale``/``out_scale``/``weight_scale`` are the real scales.
    """

    name: str
    indices: np.ndarray
    codebook: np.ndarray
    entry_bits: int
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    bias_bits: int
    stride: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    out_max: int = 255
    in_scale: float = 1.0
    out_scale: float = 1.0
    weight_scale: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.codebook.size).bit_length() - 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.indices.shape)

    @property
    def weight(self) -> np.ndarray:
        """The decoded integer weights ``codebook[indices]`` (int64)."""
        return self.codebook.astype(np.int64)[self.indices]

    @property
    def density(self) -> float:
        return float(np.count_nonzero(self.indices)) / max(self.indices.size, 1)

    def check(self):
        """Raise :class:`FormatError` unless the integers fit their declared widths."""
        cb = np.asarray(self.codebook)
        if cb.ndim != 1 or cb.size < 2 or cb.size & (cb.size - 1):
            raise FormatError(f"layer {self.name!r}: codebook must have 2**k >= 2 entries, "
                              f"not {cb.size}")
        if cb[0] != 0:
            raise FormatError(f"layer {self.name!r}: codebook entry 0 must be 0, not {cb[0]}")
        if not 2 <= self.entry_bits <= 18:
            raise FormatError(f"layer {self.name!r}: entry_bits must be in 2..18, "
                              f"not {self.entry_bits}")
        lim = 1 << (self.entry_bits - 1)
        if np.any(cb >= lim) or np.any(cb < -lim):
            raise FormatError(f"layer {self.name!r}: codebook entries {cb.min()}..{cb.max()} do "
                              f"not fit {self.entry_bits} signed bits")
        if self.indices.ndim != 4 or self.indices.min(initial=0) < 0 or \
                self.indices.max(initial=0) >= cb.size:
            raise FormatError(f"layer {self.name!r}: indices must be a 4-D array in "
                              f"0..{cb.size - 1}")
        o = self.indices.shape[0]
        for what, a in (("bias", self.bias), ("mult", self.mult), ("shift", self.shift)):
            if np.shape(a) != (o,):
                raise FormatError(f"layer {self.name!r}: {what} must have shape ({o},), "
                                  f"not {np.shape(a)}")
        blim = 1 << (self.bias_bits - 1)
        if np.any(self.bias >= blim) or np.any(self.bias < -blim):
            raise FormatError(f"layer {self.name!r}: a bias does not fit {self.bias_bits} bits")
        if np.any(self.mult < 0) or np.any(self.mult >= 1 << MULT_BITS):
            raise FormatError(f"layer {self.name!r}: a multiplier does not fit {MULT_BITS} bits")
        if np.any(self.shift < 1) or np.any(self.shift >= 1 << SHIFT_BITS):
            raise FormatError(f"layer {self.name!r}: a shift is not in 1..{(1 << SHIFT_BITS) - 1}")


# -- bit packing --------------------------------------------------------------------------------

def pack_fields(values: np.ndarray, widths: np.ndarray | int) -> np.ndarray:
    """Concatenate unsigned fields LSB first into a bit array (uint8 0/1, one element per bit).

    Field ``i`` occupies bits ``sum(widths[:i]) ..`` with its least significant bit first.
    """
    values = np.asarray(values, dtype=np.int64).ravel()
    widths = np.broadcast_to(np.asarray(widths, dtype=np.int64), values.shape)
    if values.size == 0:
        return np.zeros(0, np.uint8)
    if np.any(values < 0) or np.any(values >> widths):
        raise ValueError("a field value is negative or does not fit its width")
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]])
    bits = np.zeros(int(widths.sum()), np.uint8)
    for i in range(int(widths.max())):
        sel = widths > i
        bits[starts[sel] + i] = (values[sel] >> i) & 1
    return bits


def unpack_fields(bits: np.ndarray, width: int, count: int, start: int = 0) -> np.ndarray:
    """``count`` unsigned fields of ``width`` bits from ``bits`` at ``start`` (LSB first)."""
    end = start + width * count
    if end > bits.size:
        raise FormatError(f"stream too short: need {end} bits, have {bits.size}")
    f = bits[start:end].reshape(count, width).astype(np.int64)
    return (f << np.arange(width, dtype=np.int64)).sum(axis=1)


def _words(nbits: int, word_bits: int) -> int:
    return -(-nbits // word_bits)


def _run_entries(flat: np.ndarray, run_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Zero-run entries ``(runs, indices)`` of a flat index array (fillers included)."""
    nz = np.flatnonzero(flat)
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    period = 1 << run_bits
    fillers = gaps // period
    n = fillers + 1
    total = int(n.sum())
    runs = np.full(total, period - 1, np.int64)
    idx = np.zeros(total, np.int64)
    last = np.cumsum(n) - 1
    runs[last] = gaps % period
    idx[last] = flat[nz]
    return runs, idx


def encoding_sizes(indices: np.ndarray, k: int, word_bits: int = DEFAULT_WORD_BITS
                   ) -> dict[tuple[int, int], int]:
    """Words each encoding needs: ``{(encoding, run_bits): words}`` (run_bits 0 if unused)."""
    flat = np.asarray(indices).ravel()
    n = flat.size
    nnz = int(np.count_nonzero(flat))
    out = {(DENSE, 0): _words(n * k, word_bits),
           (BITMASK, 0): _words(n, word_bits) + _words(nnz * k, word_bits)}
    nz = np.flatnonzero(flat)
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    for r in RUN_BITS:
        entries = int((gaps >> r).sum()) + nnz
        out[(ZERO_RUN, r)] = _words(entries * (r + k), word_bits)
    return out


def encode_indices(indices: np.ndarray, k: int, word_bits: int = DEFAULT_WORD_BITS
                   ) -> tuple[int, int, int, np.ndarray]:
    """Encode in the smallest encoding: ``(encoding, run_bits, n_entries, bits)``.

    ``bits`` is padded to a whole number of words; ``n_entries`` is the number of zero-run
    entries (0 for the other encodings). Ties go to the simpler encoding (dense, bitmask, run).
    """
    flat = np.asarray(indices, dtype=np.int64).ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << k):
        raise ValueError(f"indices must be in 0..{(1 << k) - 1}")
    sizes = encoding_sizes(flat, k, word_bits)
    (enc, r), words = min(sizes.items(), key=lambda kv: (kv[1], kv[0]))
    if enc == DENSE:
        bits, n_entries = pack_fields(flat, k), 0
    elif enc == BITMASK:
        mask = (flat != 0).astype(np.uint8)
        mask = np.concatenate([mask, np.zeros(_words(mask.size, word_bits) * word_bits
                                              - mask.size, np.uint8)])
        bits, n_entries = np.concatenate([mask, pack_fields(flat[flat != 0], k)]), 0
    else:
        runs, idx = _run_entries(flat, r)
        fields = np.stack([runs, idx], axis=1).ravel()
        widths = np.tile([r, k], runs.size)
        bits, n_entries = pack_fields(fields, widths), runs.size
    pad = words * word_bits - bits.size
    assert pad >= 0
    return enc, r, n_entries, np.concatenate([bits, np.zeros(pad, np.uint8)])


def decode_indices(bits: np.ndarray, n: int, k: int, encoding: int, run_bits: int,
                   n_entries: int, word_bits: int = DEFAULT_WORD_BITS) -> np.ndarray:
    """Inverse of :func:`encode_indices`: the ``n`` flat indices (int64)."""
    if encoding == DENSE:
        return unpack_fields(bits, k, n)
    if encoding == BITMASK:
        if bits.size < n:
            raise FormatError(f"bitmask stream too short: {bits.size} bits for {n} weights")
        mask = bits[:n].astype(bool)
        out = np.zeros(n, np.int64)
        start = _words(n, word_bits) * word_bits
        vals = unpack_fields(bits, k, int(mask.sum()), start)
        if np.any(vals == 0):
            raise FormatError("bitmask stream: a non-zero weight has index 0")
        out[mask] = vals
        return out
    if encoding == ZERO_RUN:
        f = unpack_fields(bits, run_bits + k, n_entries)
        runs = f & ((1 << run_bits) - 1)
        idx = f >> run_bits
        pos = np.cumsum(runs + 1) - 1
        if pos.size and pos[-1] >= n:
            raise FormatError(f"zero-run stream runs past the layer's {n} weights")
        out = np.zeros(n, np.int64)
        out[pos] = idx
        return out
    raise FormatError(f"unknown encoding {encoding}; expected 0 (dense), 1 (bitmask) or "
                      f"2 (zero-run)")


# -- the image ----------------------------------------------------------------------------------

def _signed(a: np.ndarray, bits: int) -> np.ndarray:
    return np.asarray(a, np.int64) & ((1 << bits) - 1)


def _unsigned_to_signed(a: np.ndarray, bits: int) -> np.ndarray:
    return np.where(a >= 1 << (bits - 1), a - (1 << bits), a)


def param_bits(layer: CompressedLayer) -> int:
    """Bits of a layer's parameters: codebook, then per channel bias, multiplier, shift."""
    o = layer.shape[0]
    return layer.codebook.size * layer.entry_bits + o * (layer.bias_bits + MULT_BITS + SHIFT_BITS)


def _pack_params(layer: CompressedLayer) -> bytes:
    o = layer.shape[0]
    vals = np.concatenate([
        _signed(layer.codebook, layer.entry_bits),
        np.stack([_signed(layer.bias, layer.bias_bits), np.asarray(layer.mult, np.int64),
                  np.asarray(layer.shift, np.int64)], axis=1).ravel()])
    widths = np.concatenate([np.full(layer.codebook.size, layer.entry_bits),
                             np.tile([layer.bias_bits, MULT_BITS, SHIFT_BITS], o)])
    return np.packbits(pack_fields(vals, widths), bitorder="little").tobytes()


def _unpack_params(data: bytes, o: int, k: int, entry_bits: int, bias_bits: int):
    bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
    n = 1 << k
    cb = _unsigned_to_signed(unpack_fields(bits, entry_bits, n), entry_bits)
    start = n * entry_bits
    per = bits[start:start + o * (bias_bits + MULT_BITS + SHIFT_BITS)]
    if per.size != o * (bias_bits + MULT_BITS + SHIFT_BITS):
        raise FormatError("parameter section too short")
    per = per.reshape(o, -1)
    bias = _unsigned_to_signed(unpack_fields(per[:, :bias_bits].ravel(), bias_bits, o),
                               bias_bits)
    mult = unpack_fields(per[:, bias_bits:bias_bits + MULT_BITS].ravel(), MULT_BITS, o)
    shift = unpack_fields(per[:, bias_bits + MULT_BITS:].ravel(), SHIFT_BITS, o)
    return cb, bias, mult, shift


def write_image(layers: list[CompressedLayer], model_sha256: str = "",
                word_bits: int = DEFAULT_WORD_BITS) -> bytes:
    """Serialise ``layers`` (execution order) to a weight image (``docs/compression.md``).

    Byte-identical output for identical input. Raises :class:`FormatError` for a layer whose
    integers do not fit their declared widths.
    """
    if not 8 <= word_bits <= 255:
        raise ValueError(f"word_bits must be in 8..255, not {word_bits}")
    sha = bytes.fromhex(model_sha256) if model_sha256 else bytes(32)
    if len(sha) != 32:
        raise ValueError(f"model_sha256 must be 64 hex digits, not {model_sha256!r}")
    table, params, streams = [], [], []
    word_off = param_off = 0
    for la in layers:
        la.check()
        enc, r, n_entries, bits = encode_indices(la.indices, la.k, word_bits)
        words = bits.size // word_bits
        p = _pack_params(la)
        name = la.name.encode()
        o, c, kh, kw = la.shape
        t, left, b, rt = la.pads
        table.append(struct.pack("<B", len(name)) + name + _LAYER.pack(
            o, c, kh, kw, la.k, la.entry_bits, la.bias_bits, enc, r, la.stride, t, left, b,
            float(la.in_scale), float(la.out_scale), n_entries, word_off, words, param_off)
            + struct.pack("<BI", rt, la.out_max) + np.asarray(
                la.weight_scale if la.weight_scale is not None else np.zeros(o),
                np.float32).astype("<f4").tobytes())
        streams.append(bits)
        params.append(p)
        word_off += words
        param_off += len(p)
    # The streams are one bit string of whole words, stored as bytes, LSB first.
    all_bits = np.concatenate(streams) if streams else np.zeros(0, np.uint8)
    stream_bytes = np.packbits(all_bits, bitorder="little").tobytes()
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, word_bits, 0, len(layers), sha)
    body = b"".join(table)
    sizes = struct.pack("<III", len(body), param_off, len(stream_bytes))
    return head + sizes + body + b"".join(params) + stream_bytes


def read_image(data: bytes) -> tuple[list[CompressedLayer], dict]:
    """Parse a weight image: ``(layers, header)`` with ``header`` = version, word_bits,
    model_sha256, stream_words, param_bytes. Raises :class:`FormatError` on any inconsistency."""
    data = bytes(data)
    if len(data) < _HEADER.size + 12:
        raise FormatError(f"weight image too short ({len(data)} bytes)")
    magic, version, word_bits, _, n_layers, sha = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise FormatError(f"not a weight image: magic {magic!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise FormatError(f"weight image version {version}; this compiler reads version "
                          f"{FORMAT_VERSION}")
    off = _HEADER.size
    body_len, param_len, stream_len = struct.unpack_from("<III", data, off)
    off += 12
    if off + body_len + param_len + stream_len != len(data):
        raise FormatError(f"weight image size {len(data)} does not match its sections "
                          f"({off} + {body_len} + {param_len} + {stream_len})")
    pbase = off + body_len
    sbase = pbase + param_len
    stream_bits = np.unpackbits(np.frombuffer(data, np.uint8, stream_len, sbase),
                                bitorder="little")
    layers = []
    total_words = 0
    for _ in range(n_layers):
        (nlen,) = struct.unpack_from("<B", data, off)
        name = data[off + 1:off + 1 + nlen].decode()
        off += 1 + nlen
        (o, c, kh, kw, k, entry_bits, bias_bits, enc, r, stride, t, left, b, s_in, s_out,
         n_entries, word_off, words, param_off) = _LAYER.unpack_from(data, off)
        off += _LAYER.size
        rt, out_max = struct.unpack_from("<BI", data, off)
        off += 5
        wscale = np.frombuffer(data, "<f4", o, off).astype(np.float64)
        off += 4 * o
        plen = -(-((1 << k) * entry_bits + o * (bias_bits + MULT_BITS + SHIFT_BITS)) // 8)
        cb, bias, mult, shift = _unpack_params(
            data[pbase + param_off:pbase + param_off + plen], o, k, entry_bits, bias_bits)
        bits = stream_bits[word_off * word_bits:(word_off + words) * word_bits]
        if bits.size != words * word_bits:
            raise FormatError(f"layer {name!r}: stream section too short")
        flat = decode_indices(bits, o * c * kh * kw, k, enc, r, n_entries, word_bits)
        la = CompressedLayer(name=name, indices=flat.reshape(o, c, kh, kw), codebook=cb,
                             entry_bits=entry_bits, bias=bias, mult=mult, shift=shift,
                             bias_bits=bias_bits, stride=stride, pads=(t, left, b, rt),
                             out_max=out_max, in_scale=s_in, out_scale=s_out,
                             weight_scale=wscale)
        la.check()
        layers.append(la)
        total_words = max(total_words, word_off + words)
    if off != pbase:
        raise FormatError("layer table does not end where the parameter section begins")
    header = {"version": version, "word_bits": word_bits, "model_sha256": sha.hex(),
              "stream_words": total_words, "param_bytes": param_len}
    return layers, header


def image_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
