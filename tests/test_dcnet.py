"""The reader of the original Deep Compression file (compiler/dcnet.py).

A small generated .net file and prototxt (written here by an independent encoder) keep the
format tests fast and free of ../shared; the release itself is checked against its ONNX model
when ../shared is present.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from compiler import api, compress, dcnet

SHARED = Path(__file__).resolve().parents[2] / "shared" / "models"
NET = SHARED / "squeezenet1.0-deepcompression.net"
ONNX = SHARED / "squeezenet1.0-deepcompression.onnx"


def _needs_shared():
    for f in (NET, ONNX):
        if not f.is_file():
            pytest.fail(f"shared model file missing: {f} (../shared must be beside the checkout)")

PROTOTXT = """\
name: "tiny"  # a comment
input: "data"
input_dim: 1
input_dim: 3
input_dim: 16
input_dim: 16
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fire2/conv1x1_1" type: "Convolution" bottom: "conv1" top: "s"
  convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "fire2/conv1x1_2" type: "Convolution" bottom: "s" top: "e1"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "fire2/conv3x3_2" type: "Convolution" bottom: "s" top: "e3"
  convolution_param { num_output: 5 pad: 1 kernel_size: 3 } }
layer { name: "fire2/concat" type: "Concat" bottom: "e1" bottom: "e3" top: "f" }
layer { name: "conv_final" type: "Convolution" bottom: "f" top: "c"
  convolution_param { num_output: 6 kernel_size: 1 } }
"""
SHAPES = [(4, 3, 3, 3), (2, 4, 1, 1), (3, 2, 1, 1), (5, 2, 3, 3), (6, 8, 1, 1)]


def _nibble_bytes(v: np.ndarray) -> bytes:
    v = list(v) + [0] * (len(v) % 2)
    return bytes(int(v[i]) | int(v[i + 1]) << 4 for i in range(0, len(v), 2))


def encode(idx: np.ndarray) -> tuple[list[int], list[int]]:
    """Independent encoder: (codes, runs) with a filler (code 0, run 15) per 16 zeros."""
    codes, runs, gap = [], [], 0
    for v in idx.ravel():
        if v == 0:
            gap += 1
            continue
        while gap > 15:
            codes.append(0)
            runs.append(15)
            gap -= 16
        codes.append(int(v))
        runs.append(gap)
        gap = 0
    return codes, runs


def make_net(tmp_path: Path, seed: int = 0):
    rng = np.random.default_rng(seed)
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(PROTOTXT)
    head, body, want = [], b"", []
    for i, shape in enumerate(SHAPES):
        cb = np.concatenate([[0.0], rng.normal(0, 0.5, 255)]).astype(np.float32)
        idx = rng.integers(1, 256, shape)
        idx[rng.random(shape) < 0.6] = 0
        if i == 4:
            idx.ravel()[3:40] = 0  # a gap of more than 15: needs fillers
        bias = rng.normal(0, 1, shape[0]).astype(np.float32)
        codes, runs = encode(idx)
        head.append(len(codes))
        body += cb.astype("<f4").tobytes() + bias.astype("<f4").tobytes() + bytes(codes) \
            + _nibble_bytes(runs)
        want.append((cb, bias, idx))
    net = tmp_path / "tiny.net"
    net.write_bytes(struct.pack(f"<{len(head)}I", *head) + body)
    return net, proto, want


def test_prototxt_shapes_follow_the_blobs(tmp_path):
    _, proto, _ = make_net(tmp_path)
    specs = dcnet.conv_specs(proto)
    assert [s.shape for s in specs] == SHAPES
    assert [(s.stride, s.pad) for s in specs] == [(2, 0), (1, 0), (1, 0), (1, 1), (1, 0)]
    assert [dcnet.onnx_name(s.name) for s in specs] == [
        "conv1", "fire2/squeeze1x1", "fire2/expand1x1", "fire2/expand3x3", "conv10"]


def test_decodes_a_generated_file_exactly(tmp_path):
    net, proto, want = make_net(tmp_path)
    layers = dcnet.read_dcnet(net, proto)
    assert len(layers) == len(want)
    for la, (cb, bias, idx) in zip(layers, want, strict=True):
        assert np.array_equal(la.indices, idx)
        assert np.array_equal(la.codebook, cb) and np.array_equal(la.bias, bias)
        assert np.array_equal(la.weight, cb[idx]) and la.weight.dtype == np.float32
    assert layers[4].n_entries > np.count_nonzero(want[4][2])  # fillers were read


@pytest.mark.parametrize("cut,what", [(6, "header"), (20 + 100, "codebook"),
                                      (20 + 1024 + 10, "biases"), (-1, "zero runs")])
def test_truncated_file_names_file_offset_and_expectation(tmp_path, cut, what):
    net, proto, _ = make_net(tmp_path)
    bad = tmp_path / "cut.net"
    bad.write_bytes(net.read_bytes()[:cut])
    with pytest.raises(dcnet.DCNetError) as e:
        dcnet.read_dcnet(bad, proto)
    msg = str(e.value)
    assert str(bad) in msg and what in msg and "expected" in msg
    off = cut if cut >= 0 else len(net.read_bytes()) - 1
    # the offset named is where the incomplete item starts, at or before the cut
    start = int(msg.split("byte offset ")[1].split(":")[0])
    assert 0 <= start <= off


def test_garbage_and_trailing_bytes_are_refused(tmp_path):
    net, proto, _ = make_net(tmp_path)
    junk = tmp_path / "junk.net"
    junk.write_bytes(np.random.default_rng(5).integers(0, 256, 3000, np.uint8).tobytes())
    with pytest.raises(dcnet.DCNetError, match=r"junk\.net.*entries; expected at most"):
        dcnet.read_dcnet(junk, proto)
    long = tmp_path / "long.net"
    long.write_bytes(net.read_bytes() + b"\0\0\0")
    with pytest.raises(dcnet.DCNetError, match=r"3 unexpected bytes at byte offset \d+; "
                                               r"expected the end of the file"):
        dcnet.read_dcnet(long, proto)
    # runs that walk past the layer: all-15 runs in the last layer
    data = bytearray(net.read_bytes())
    data[-20:] = b"\xff" * 20
    past = tmp_path / "past.net"
    past.write_bytes(bytes(data))
    with pytest.raises(dcnet.DCNetError, match=r"conv_final.*byte offset \d+.*expected positions"):
        dcnet.read_dcnet(past, proto)


def test_bad_prototxt_is_refused(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text('input: "data"\ninput_dim: 1\nlayer { name: "c" type: "Convolution" '
                 'bottom: "nope" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n')
    with pytest.raises(dcnet.DCNetError, match="bad.prototxt.*4-D input"):
        dcnet.conv_specs(p)
    p.write_text("input_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\nlayer { name: 'x' \n")
    with pytest.raises(dcnet.DCNetError, match="bad.prototxt"):
        dcnet.conv_specs(p)


def test_release_decodes_to_the_onnx_weights_bit_for_bit():
    _needs_shared()
    graph = api.import_model(ONNX)
    layers = dcnet.read_dcnet(NET)
    convs = compress.conv_nodes(graph)
    assert len(layers) == len(convs) == 26
    for la, n in zip(layers, convs, strict=True):
        assert la.onnx_name == n.name
        # the ONNX model is the .net decoded to float32: exactly equal, no tolerance
        assert np.array_equal(la.weight, n.params["W"]), la.name
        assert np.array_equal(la.bias, n.params["B"]), la.name
        assert la.codebook[0] == 0 and la.bits == 8
        assert (la.stride, la.pad) == (n.attrs["stride"], n.attrs["pads"][0])
    assert sum(int(np.count_nonzero(la.indices)) for la in layers) == sum(
        int(np.count_nonzero(n.params["W"])) for n in convs)


def test_both_sources_give_the_same_shared_weight_structure(tmp_path):
    _needs_shared()
    graph = api.import_model(ONNX)
    a = compress.read_shared_weights(graph)
    b = compress.read_shared_weights(graph, NET)
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.k == y.k == 8
        assert np.array_equal(x.centroids, y.centroids) and np.array_equal(x.indices, y.indices)
        assert np.array_equal(x.w, y.w) and np.array_equal(x.b, y.b)
    # a .net that does not match the model is refused, naming the layer
    other = tmp_path / "other.prototxt"
    other.write_text(dcnet.DEFAULT_PROTOTXT.read_text().replace("num_output: 96", "num_output: 95",
                                                                1))
    with pytest.raises(ValueError, match=r"conv1.*expected"):
        compress.read_shared_weights(graph, NET, other)
