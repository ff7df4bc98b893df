"""The per-column weight-stream format (compiler/wstreams.py): round trips and errors."""

import numpy as np
import pytest
from wstream_support import fire_contexts

from compiler.wstreams import (
    DENSE,
    MASK,
    Segment,
    SegmentSpec,
    code_words,
    context_bits,
    context_words,
    decode_context,
    encode_context,
    encode_parts,
    mask_words,
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
    # codes: record 0 (the set lanes of 0b110) 3, 1; record 1 (DENSE) 1 0 1; one word.
    # masks: mask_0 = 0b110, two masks of 3 bits to an 8-bit word
    bits = [1, 1, 1, 0] + [1, 0, 1]
    value = sum(b << i for i, b in enumerate(bits))
    assert encode_context(segs, 8) == [[value, 0b110]]
    assert encode_parts(segs, 8) == [([value], [0b110])]
    assert code_words(segs, 8).tolist() == [1]
    assert context_bits(segs).tolist() == [len(bits) + 3]
    assert max_record_bits(segs) == 4
    assert record_bits(np.array([0, 1, 1]), 2, MASK, 3) == 4
    assert record_bits(None, 1, DENSE, 3) == 3


def test_masks_pack_whole_to_a_word_and_empty_codes_take_a_word():
    # 5 MASK rows of 3 lanes, all codes 0: one zero code word; masks 2 to an 8-bit word
    # (bits 6, 7 stay 0): 3 words, the last with one mask
    segs = [Segment(np.zeros((5, 1, 3), dtype=np.int64), 1, MASK)]
    assert encode_context(segs, 8) == [[0, 0, 0, 0]]
    codes = np.zeros((5, 1, 3), dtype=np.int64)
    codes[:, 0, 0] = 1                    # lane 0 set in every row: masks 0b001
    segs = [Segment(codes, 1, MASK)]
    assert encode_parts(segs, 8) == [([0b11111], [0b001001, 0b001001, 0b001])]
    assert mask_words([s.spec for s in segs], 3, 8) == 3
    back = decode_context(encode_context(segs, 8), [s.spec for s in segs], 1, 3, 8)
    assert np.array_equal(back[0], codes)
    with pytest.raises(ValueError, match=r"column 0: mask word 2 has bits set after its 1 masks"):
        decode_context([[0b11111, 0b001001, 0b001001, 0b1001]], [(5, 1, MASK)], 1, 3, 8)


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
