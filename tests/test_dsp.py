"""The multipliers with their own registers (hw/dsp.py): exact products at their latency, in
Amaranth's simulator, and on the ECP5 the MULT18X18D blocks yosys keeps with their registers."""

import json
import random

import pytest
from amaranth import signed, unsigned
from streams import simulate
from yosys_support import synth_ecp5

from hw.dsp import MULT18X18D_PARAMS, Mult18, WideMult, mult18x18d_model, uses_ecp5_dsp


def _extremes(shape):
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    return lo, hi


def _products(dut, a_shape, b_shape, n, seed):
    """``n`` operand pairs (the extremes first, then random), one a cycle; the products as
    ``p`` shows them ``dut.latency`` cycles after each pair, and the pairs."""
    rng = random.Random(seed)
    alo, ahi = _extremes(a_shape)
    blo, bhi = _extremes(b_shape)
    pairs = [(alo, blo), (alo, bhi), (ahi, blo), (ahi, bhi), (0, bhi), (alo, 0)]
    pairs += [(rng.randint(alo, ahi), rng.randint(blo, bhi)) for _ in range(n)]
    got = []

    async def bench(ctx):
        for t in range(len(pairs) + dut.latency):
            if t < len(pairs):
                ctx.set(dut.a, pairs[t][0])
                ctx.set(dut.b, pairs[t][1])
            if t >= dut.latency:
                got.append(ctx.get(dut.p))
            await ctx.tick()

    simulate(dut, bench)
    return got, pairs


@pytest.mark.parametrize("a_shape,b_shape", [
    (signed(9), signed(12)),      # the column array's input and weight (ulx3s-85f)
    (signed(18), signed(18)),
    (unsigned(17), unsigned(16)),
    (signed(18), unsigned(17)),
])
def test_mult18_products_at_two_cycles(a_shape, b_shape):
    dut = Mult18(a_shape, b_shape)
    assert dut.latency == 2
    got, pairs = _products(dut, a_shape, b_shape, 40, seed=1)
    assert got == [a * b for a, b in pairs]


@pytest.mark.parametrize("a_shape,b_shape,pieces", [
    (signed(32), unsigned(16), 2),    # the requantiser's accumulator and multiplier
    (signed(18), unsigned(16), 1),
    (signed(36), signed(18), 3),
    (unsigned(40), unsigned(17), 3),
    (signed(20), signed(10), 2),      # icebreaker's accumulator width
])
def test_wide_mult_products_at_three_cycles(a_shape, b_shape, pieces):
    dut = WideMult(a_shape, b_shape)
    assert dut.latency == 3
    assert len(dut.pieces) == pieces
    got, pairs = _products(dut, a_shape, b_shape, 60, seed=2)
    assert got == [a * b for a, b in pairs]


@pytest.mark.parametrize("shape", [signed(19), unsigned(18)])
def test_operands_too_wide_for_the_block_are_refused(shape):
    with pytest.raises(ValueError, match=r"Mult18 operand a must be signed of at most 18 bits "
                                         r"or unsigned of at most 17"):
        Mult18(shape, signed(8))
    with pytest.raises(ValueError, match=r"WideMult operand b"):
        WideMult(signed(32), shape)


def test_the_model_covers_only_the_registered_signed_block():
    from amaranth import Const, Module
    ports = {"SIGNEDA": Const(1, 1), "SIGNEDB": Const(1, 1)}
    with pytest.raises(ValueError, match="The MULT18X18D model covers"):
        mult18x18d_model(Module(), {**MULT18X18D_PARAMS, "REG_OUTPUT_CLK": "NONE"}, ports)
    with pytest.raises(ValueError, match="signed operands"):
        mult18x18d_model(Module(), MULT18X18D_PARAMS, {**ports, "SIGNEDB": Const(0, 1)})


class _ECP5:
    """Enough of a platform for hw.dsp to choose the ECP5's block."""
    family = "ecp5"


@pytest.mark.yosys
def test_on_the_ecp5_each_piece_is_one_registered_block(tmp_path):
    """Through yosys's ECP5 flow a WideMult of 32 x 16 bits is two MULT18X18D with the input
    and product registers on, and no flip-flops of the fabric besides the sum's."""
    assert uses_ecp5_dsp(_ECP5()) and not uses_ecp5_dsp(None)
    dut = WideMult(signed(32), unsigned(16))
    synth_ecp5(dut, tmp_path, "write_json t.json", run=None, platform=_ECP5())
    net = json.loads((tmp_path / "t.json").read_text())
    cells = [c for mod in net["modules"].values() for c in mod.get("cells", {}).values()]
    dsps = [c for c in cells if c["type"] == "MULT18X18D"]
    assert len(dsps) == 2
    for c in dsps:
        for k, v in MULT18X18D_PARAMS.items():
            assert c["parameters"][k] == v, (k, c["parameters"])
    ffs = sum(c["type"] == "TRELLIS_FF" for c in cells)
    assert ffs == len(dut.p)       # the registered sum, nothing else

