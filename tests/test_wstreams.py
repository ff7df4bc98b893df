"""The per-column weight-stream format (compiler/wstreams.py): round trips and errors."""

import numpy as np
import pytest
from wstream_support import fire_contexts

from compiler.wstreams import (
    DENSE,
    MASK,
    Segment,
    SegmentSpec,
    context_bits,
    context_words,
    decode_context,
    encode_context,
    max_record_bits,
    record_bits,
)
from hw.config import get_config


def random_segments(rng, cols, lanes, nseg, density, modes=(DENSE, MASK), rows=(1, 6)):
    segs = []
    for _ in range(nseg):
        k = int(rng.integers(1, 9))
        r = int(rng.integers(*rows))
        codes = rng.integers(1, 1 << k, size=(r, cols, lanes)) * (rng.random((r, cols, lanes))
                                                                   < density)
        segs.append(Segment(codes, k, int(rng.choice(modes))))
    return segs


def roundtrip(segs, cols, lanes, word_bits):
    words = encode_context(segs, word_bits)
    assert [len(w) for w in words] == context_words(segs, word_bits).tolist()
    back = decode_context(words, [s.spec for s in segs], cols, lanes, word_bits)
    for s, b in zip(segs, back, strict=True):
        assert np.array_equal(s.codes, b)
    return words


@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("nseg", [1, 2])
@pytest.mark.parametrize("mode", [DENSE, MASK, None])
def test_roundtrip_random(density, nseg, mode):
    rng = np.random.default_rng(int(density * 10) + 7 * nseg + 31 * (mode or 0))
    for _ in range(20):
        cols, lanes = int(rng.integers(1, 6)), int(rng.integers(1, 12))
        modes = (DENSE, MASK) if mode is None else (mode,)
        segs = random_segments(rng, cols, lanes, nseg, density, modes)
        roundtrip(segs, cols, lanes, int(rng.choice([lanes, 16, 36, 72])))


def test_layout_by_hand():
    # one column, 3 lanes, row 0 MASK (k=2) codes [0, 3, 1], row 1 DENSE (k=1) codes [1, 0, 1]
    segs = [Segment(np.array([[[0, 3, 1]]]), 2, MASK), Segment(np.array([[[1, 0, 1]]]), 1, DENSE)]
    # header mask_0 = 0b110; record 0: (row 1 DENSE, no mask) codes 3, 1; record 1: mask_0, 1 0 1
    bits = [0, 1, 1] + [1, 1, 1, 0] + [0, 1, 1] + [1, 0, 1]
    value = sum(b << i for i, b in enumerate(bits))
    assert encode_context(segs, 8) == [[value & 0xFF, value >> 8]]
    assert context_bits(segs).tolist() == [len(bits)]
    assert max_record_bits(segs) == 6
    assert record_bits(np.array([0, 1, 1]), 2, MASK, DENSE, 3) == 4
    assert record_bits(None, 1, DENSE, MASK, 3) == 6


def test_errors_name_the_problem():
    good = np.zeros((2, 2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match=r"segment 0: code 4 out of range 0\.\.3 \(k = 2\)"):
        encode_context([Segment(good + 4, 2, MASK)], 8)
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.8, not 9"):
        encode_context([Segment(good, 9, MASK)], 8)
    with pytest.raises(ValueError, match=r"codes must be \[rows, C, L\], not shape \(2, 6\)"):
        encode_context([Segment(good.reshape(2, 6), 2, MASK)], 8)
    with pytest.raises(ValueError, match=r"segment 1: codes of shape"):
        encode_context([Segment(good, 2, MASK), Segment(np.zeros((1, 3, 3), int), 2, MASK)], 8)
    with pytest.raises(ValueError, match=r"mode must be DENSE"):
        encode_context([Segment(good, 2, 5)], 8)
    with pytest.raises(ValueError, match=r"word_bits must be an integer of at least L = 3"):
        encode_context([Segment(good, 2, MASK)], 2)
    rng = np.random.default_rng(3)
    segs = [Segment(rng.integers(0, 4, size=(4, 2, 3)), 2, DENSE)]
    words = encode_context(segs, 8)
    cut = [w[:-1] for w in words]
    with pytest.raises(ValueError, match=r"column 0: stream truncated reading the code of row"):
        decode_context(cut, [SegmentSpec(4, 2, DENSE)], 2, 3, 8)
    with pytest.raises(ValueError, match=r"expected words for 2 columns, got 1"):
        decode_context(words[:1], [SegmentSpec(4, 2, DENSE)], 2, 3, 8)
    with pytest.raises(ValueError, match=r"column 0: word 0 = 256 does not fit 8 bits"):
        decode_context([[256] + words[0][1:], words[1]], [(4, 2, DENSE)], 2, 3, 8)


@pytest.mark.parametrize("fire", ["fire2", "fire9"])
def test_roundtrip_real_fire(fire):
    squeeze, expand = fire_contexts(fire)
    cfg = get_config("ulx3s-85f")
    for segs in (squeeze, expand):
        words = roundtrip(segs, cfg.pe_columns, cfg.pe_lanes, cfg.wstream_word_bits)
        assert all(len(w) > 0 for w in words)
    # the bitmask expand 3x3 compresses: fewer bits than dense codes
    e3 = expand[1]
    if e3.mode == MASK:
        dense = Segment(e3.codes, e3.k, DENSE)
        assert context_bits([e3]).sum() < context_bits([dense]).sum()
