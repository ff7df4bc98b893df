"""Reader of the original Deep Compression file (``squeezenet1.0-deepcompression.net``).

The release stores every convolution pruned and weight-shared, with no shapes: the layer order
and the shapes come from the Caffe network definition (``*.deploy.prototxt``). The file is, all
numbers little-endian:

```
u32 n_entries[L]                 one count per convolution, in prototxt order
per layer, in the same order:
  f32 codebook[2**bits]          bits = 8 for convolutions ("conv" in the name), 4 otherwise
  f32 bias[O]
  codes                          n_entries codebook indices: one byte each (8 bits) or two
                                 per byte (4 bits, the even entry in the low nibble)
  runs                           n_entries 4-bit zero runs, two per byte, low nibble first
```

Entry ``j`` sits ``runs[j]`` weights after the previous entry (the first one ``runs[0]`` weights
after the start), so its flat position is ``cumsum(runs + 1)[j] - 1`` in the row-major
``[O, C, KH, KW]`` weight; a gap longer than 15 is bridged by filler entries whose code is 0.
Every weight without an entry has code 0 too, and its value is ``codebook[code]``
(``codebook[0]`` is 0.0 in the release). :func:`read_dcnet` returns per layer the dense float
weights, the codebook, the dense per-weight code (``indices``) and the biases.

Everything here is numpy; a truncated or malformed file raises :class:`DCNetError` naming the
file, the byte offset and what was expected there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["DCNetError", "ConvSpec", "DCLayer", "read_prototxt", "conv_specs", "read_dcnet",
           "onnx_name", "DEFAULT_NET", "DEFAULT_PROTOTXT"]

_SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
DEFAULT_NET = _SHARED_MODELS / "squeezenet1.0-deepcompression.net"
DEFAULT_PROTOTXT = _SHARED_MODELS / "squeezenet1.0-deepcompression.deploy.prototxt"


class DCNetError(ValueError):
    """A Deep Compression file (or its prototxt) that is truncated or malformed."""


@dataclass(frozen=True)
class ConvSpec:
    """One convolution of a prototxt: its Caffe name and weight shape ``[O, C, KH, KW]``."""

    name: str
    shape: tuple[int, int, int, int]
    stride: int = 1
    pad: int = 0

    @property
    def bits(self) -> int:
        """Code width of the layer in the .net file (8 for convolutions, else 4)."""
        return 8 if "conv" in self.name else 4


@dataclass
class DCLayer:
    """One decoded layer of the .net file."""

    name: str  # the prototxt (Caffe) name, e.g. "fire2/conv1x1_1"
    onnx_name: str  # the ONNX model's name of the same layer, e.g. "fire2/squeeze1x1"
    codebook: np.ndarray  # float32 [2**bits]
    bias: np.ndarray  # float32 [O]
    indices: np.ndarray  # int64 [O, C, KH, KW]: the codebook index of every weight
    n_entries: int  # entries in the file (non-zero weights plus zero-run fillers)
    stride: int = 1
    pad: int = 0

    @property
    def bits(self) -> int:
        return int(self.codebook.size).bit_length() - 1

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(s) for s in self.indices.shape)

    @property
    def weight(self) -> np.ndarray:
        """The dense float32 weights ``codebook[indices]``, as the release's decoder makes them."""
        return self.codebook[self.indices]


# -- the prototxt ---------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|([A-Za-z_][A-Za-z0-9_]*)\s*:\s*("(?:[^"\\]|\\.)*"|[^\s{}]+)'
                    r'|([A-Za-z_][A-Za-z0-9_]*)\s*\{|(\}))')


def read_prototxt(path: str | Path) -> dict:
    """Parse a Caffe prototxt (protobuf text format) into nested dicts of lists of values.

    Every key maps to a list (fields repeat); values are str (quotes removed), int or float, and
    message fields are dicts. Only what network definitions use is supported.
    """
    path = Path(path)
    text = path.read_text()
    root: dict = {}
    stack = [root]
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            line = text.count("\n", 0, pos) + 1
            raise DCNetError(f"{path}: cannot parse line {line}: {text[pos:].strip()[:40]!r}; "
                             f"expected 'key: value', 'key {{' or '}}'")
        pos = m.end()
        comment, key, value, block, close = m.groups()
        if comment:
            continue
        if key:
            if value.startswith('"'):
                v: object = value[1:-1]
            else:
                try:
                    v = int(value)
                except ValueError:
                    try:
                        v = float(value)
                    except ValueError:
                        v = value
            stack[-1].setdefault(key, []).append(v)
        elif block:
            child: dict = {}
            stack[-1].setdefault(block, []).append(child)
            stack.append(child)
        elif close:
            if len(stack) == 1:
                raise DCNetError(f"{path}: unbalanced '}}' at line "
                                 f"{text.count(chr(10), 0, pos) + 1}")
            stack.pop()
    if len(stack) != 1:
        raise DCNetError(f"{path}: unterminated block at the end of the file")
    return root


def _one(d: dict, key: str, default=None):
    v = d.get(key)
    return v[0] if v else default


def conv_specs(prototxt: str | Path = DEFAULT_PROTOTXT) -> list[ConvSpec]:
    """The convolutions of a prototxt in file order with their weight shapes: input channels
    follow the blobs (Concat adds, ReLU/Dropout/Pooling pass through)."""
    path = Path(prototxt)
    net = read_prototxt(path)
    dims = net.get("input_dim")
    if dims is None and net.get("input_shape"):
        dims = net["input_shape"][0].get("dim")
    if not dims or len(dims) != 4:
        raise DCNetError(f"{path}: no 4-D input (input_dim or input_shape); expected "
                         f"N, C, H, W of the input blob")
    channels = {_one(net, "input", "data"): int(dims[1])}
    out = []
    for layer in net.get("layer", []) + net.get("layers", []):
        name, typ = _one(layer, "name"), _one(layer, "type")
        bottoms, tops = layer.get("bottom", []), layer.get("top", [])
        missing = [b for b in bottoms if b not in channels]
        if missing:
            raise DCNetError(f"{path}: layer {name!r} reads blob {missing[0]!r}, which no "
                             f"earlier layer writes")
        if typ == "Convolution":
            p = _one(layer, "convolution_param", {})
            group = int(_one(p, "group", 1))
            if group != 1:
                raise DCNetError(f"{path}: layer {name!r} has group {group}; expected 1")
            k = int(_one(p, "kernel_size", 0) or 0)
            if k <= 0:
                raise DCNetError(f"{path}: layer {name!r} has no kernel_size; expected a "
                                 f"square kernel")
            o = int(_one(p, "num_output"))
            out.append(ConvSpec(name, (o, channels[bottoms[0]], k, k),
                                int(_one(p, "stride", 1)), int(_one(p, "pad", 0))))
            channels[tops[0]] = o
        elif typ == "Concat":
            channels[tops[0]] = sum(channels[b] for b in bottoms)
        elif tops and bottoms:
            channels[tops[0]] = channels[bottoms[0]]
    return out


_ONNX_NAMES = {"conv1x1_1": "squeeze1x1", "conv1x1_2": "expand1x1", "conv3x3_2": "expand3x3"}


def onnx_name(caffe_name: str) -> str:
    """The ONNX model's name of a prototxt convolution (``fire2/conv1x1_1`` ->
    ``fire2/squeeze1x1``, ``conv_final`` -> ``conv10``); other names are kept."""
    if caffe_name == "conv_final":
        return "conv10"
    head, _, tail = caffe_name.rpartition("/")
    return f"{head}/{_ONNX_NAMES[tail]}" if head and tail in _ONNX_NAMES else caffe_name


# -- the .net file --------------------------------------------------------------------------------

class _Reader:
    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.off = path, data, 0

    def take(self, n: int, what: str) -> bytes:
        left = len(self.data) - self.off
        if n > left:
            raise DCNetError(f"{self.path}: truncated at byte offset {self.off}: expected {what} "
                             f"({n} bytes), but only {left} bytes remain (file is "
                             f"{len(self.data)} bytes)")
        b = self.data[self.off:self.off + n]
        self.off += n
        return b


def _nibbles(b: bytes, n: int) -> np.ndarray:
    a = np.frombuffer(b, np.uint8)
    out = np.empty(2 * a.size, np.int64)
    out[0::2] = a & 15
    out[1::2] = a >> 4
    return out[:n]


def read_dcnet(net: str | Path = DEFAULT_NET, prototxt: str | Path = DEFAULT_PROTOTXT
               ) -> list[DCLayer]:
    """Decode a Deep Compression ``.net`` file with the layer table of its ``prototxt``.

    Returns one :class:`DCLayer` per convolution in prototxt order. Raises
    :class:`DCNetError` (naming the file, the byte offset and what was expected) for a file that
    is truncated, too long, or whose zero runs run past a layer.
    """
    path = Path(net)
    specs = conv_specs(prototxt)
    r = _Reader(path, path.read_bytes())
    head = r.take(4 * len(specs), f"the header: {len(specs)} u32 entry counts (one per "
                                  f"convolution of {Path(prototxt).name})")
    counts = np.frombuffer(head, "<u4").astype(np.int64)
    layers = []
    for spec, n in zip(specs, counts, strict=True):
        size = int(np.prod(spec.shape))
        at = r.off
        if n > size:
            raise DCNetError(f"{path}: header says layer {spec.name!r} has {n} entries; expected "
                             f"at most its {size} weights (shape {spec.shape}); the file does "
                             f"not match {Path(prototxt).name} or is not a Deep Compression file")
        bits = spec.bits
        cb = np.frombuffer(r.take(4 << bits, f"layer {spec.name!r}: codebook of {1 << bits} f32"),
                           "<f4").astype(np.float32)
        bias = np.frombuffer(r.take(4 * spec.shape[0], f"layer {spec.name!r}: {spec.shape[0]} "
                                                       f"f32 biases"), "<f4").astype(np.float32)
        per_byte = 8 // bits
        raw = r.take(-(-n // per_byte), f"layer {spec.name!r}: {n} {bits}-bit codebook indices")
        codes = np.frombuffer(raw, np.uint8).astype(np.int64) if bits == 8 else _nibbles(raw, n)
        runs = _nibbles(r.take(-(-n // 2), f"layer {spec.name!r}: {n} 4-bit zero runs"), n)
        pos = np.cumsum(runs + 1) - 1
        if pos.size and pos[-1] >= size:
            raise DCNetError(f"{path}: layer {spec.name!r} (data from byte offset {at}): its zero "
                             f"runs reach weight {int(pos[-1])}; expected positions below its "
                             f"{size} weights (shape {spec.shape})")
        idx = np.zeros(size, np.int64)
        idx[pos] = codes
        layers.append(DCLayer(spec.name, onnx_name(spec.name), cb, bias, idx.reshape(spec.shape),
                              int(n), spec.stride, spec.pad))
    if r.off != len(r.data):
        raise DCNetError(f"{path}: {len(r.data) - r.off} unexpected bytes at byte offset "
                         f"{r.off}; expected the end of the file after the last layer "
                         f"{specs[-1].name!r}")
    return layers
