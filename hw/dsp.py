"""Multipliers with registered inputs and products: the ECP5's MULT18X18D with its own registers.

An ECP5 multiplier used as yosys maps it (``$mul`` to a combinational ``MULT18X18D``) puts
3.9 ns of the block's logic between two fabric flip-flops, on top of the routing to and from
the DSP row (board builds b50-b51: the column array's product registers ended paths of
12.1 ns; ``python -m boards.timing array``: 85 MHz on its own). The block has input and output
registers of its own, which yosys does not use; with them the multiply is inside the block and
each fabric path ends or starts at its ports.

- :class:`Mult18`: ``p = a * b`` two cycles after ``a`` and ``b``, for ``a`` and ``b`` that
  fit 18-bit signed. On an ECP5 platform it is one ``MULT18X18D`` with ``REG_INPUTA_CLK``,
  ``REG_INPUTB_CLK`` and ``REG_OUTPUT_CLK`` on the design clock; elsewhere (simulation, other
  FPGAs) :func:`mult18x18d_model` builds the same block from the same ports and parameters, so
  Verilator simulates what the board's netlist carries, wiring and all.
- :class:`WideMult`: ``p = a * b`` for a wider ``a``: ``a`` cut into 17-bit pieces (the top one
  signed), one :class:`Mult18` each, the shifted products added in a registered stage:
  ``latency`` 3.

The model follows Lattice's ECP5 sysDSP usage guide (TN1267, MULT18X18D): with ``SIGNEDA``
and ``SIGNEDB`` high, ``P`` is the 36-bit two's-complement product of ``A`` and ``B``; each
register enabled by ``CE0`` and reset synchronously by ``RST0`` (here 1 and 0).
"""

from __future__ import annotations

from amaranth import ClockSignal, Const, Instance, Module, Signal, signed, unsigned
from amaranth.hdl import Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MULT18X18D_PARAMS", "uses_ecp5_dsp", "mult18x18d_model", "Mult18", "WideMult"]

#: the registers and modes of every MULT18X18D we instantiate: inputs and product registered
#: on CLK0 (the pipeline register unused), synchronous reset, not on the global set/reset
MULT18X18D_PARAMS = {
    "REG_INPUTA_CLK": "CLK0",
    "REG_INPUTB_CLK": "CLK0",
    "REG_PIPELINE_CLK": "NONE",
    "REG_OUTPUT_CLK": "CLK0",
    "RESETMODE": "SYNC",
    "GSR": "DISABLED",
}

#: the pieces :class:`WideMult` cuts ``a`` into: 17 unsigned bits (an 18-bit signed operand
#: with its top bit 0), the last piece signed
PIECE_BITS = 17


def uses_ecp5_dsp(platform) -> bool:
    """Whether ``platform`` builds for a Lattice ECP5 (``platform.family == "ecp5"``)."""
    return getattr(platform, "family", None) == "ecp5"


def mult18x18d_model(m: Module, params: dict, ports: dict) -> None:
    """What a ``MULT18X18D`` with ``params`` does with ``ports`` (names as the primitive's:
    ``A0``..``A17``, ``B0``..``B17``, ``SIGNEDA``, ``SIGNEDB``, ``CE0``, ``RST0``,
    ``P0``..``P35``), for the registered, signed configuration :data:`MULT18X18D_PARAMS`."""
    if dict(params) != MULT18X18D_PARAMS:
        raise ValueError(f"The MULT18X18D model covers {MULT18X18D_PARAMS}, not {params!r}")
    if not (isinstance(ports["SIGNEDA"], Const) and ports["SIGNEDA"].value == 1
            and isinstance(ports["SIGNEDB"], Const) and ports["SIGNEDB"].value == 1):
        raise ValueError("The MULT18X18D model covers signed operands (SIGNEDA, SIGNEDB 1)")
    a = Signal(signed(18), name="dsp_a")
    b = Signal(signed(18), name="dsp_b")
    m.d.comb += [a[i].eq(ports[f"A{i}"]) for i in range(18)]
    m.d.comb += [b[i].eq(ports[f"B{i}"]) for i in range(18)]
    # the input registers and the product register (the pipeline register is bypassed)
    a_q = Signal(signed(18), name="dsp_a_q")
    b_q = Signal(signed(18), name="dsp_b_q")
    p_q = Signal(signed(36), name="dsp_p_q")
    with m.If(ports["RST0"]):
        m.d.sync += [a_q.eq(0), b_q.eq(0), p_q.eq(0)]
    with m.Elif(ports["CE0"]):
        m.d.sync += [a_q.eq(a), b_q.eq(b), p_q.eq(a_q * b_q)]
    m.d.comb += [ports[f"P{i}"].eq(p_q[i]) for i in range(36)]


def _operand_fits(shape: Shape) -> bool:
    """An operand the block takes as 18-bit signed: signed of <= 18 bits, unsigned of <= 17."""
    return shape.width <= (18 if shape.signed else 17)


class Mult18(wiring.Component):
    """``p = a * b``, :attr:`latency` cycles after ``a`` and ``b``: one ``MULT18X18D`` with its
    input and product registers (or, off the ECP5, :func:`mult18x18d_model` of it).

    ``a_shape``, ``b_shape``: signed of at most 18 bits or unsigned of at most 17 (both go in
    as 18-bit signed). ``p`` is signed, as wide as the product can be.
    """

    #: cycles from ``a``, ``b`` to ``p``
    latency = 2

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        for name, shape in (("a", a_shape), ("b", b_shape)):
            if not _operand_fits(shape):
                raise ValueError(f"Mult18 operand {name} must be signed of at most 18 bits or "
                                 f"unsigned of at most 17, not {shape!r}")
        self._a_shape, self._b_shape = a_shape, b_shape
        pbits = min(36, a_shape.width + b_shape.width + (not a_shape.signed)
                    + (not b_shape.signed))
        super().__init__({"a": In(a_shape), "b": In(b_shape), "p": Out(signed(pbits))})

    def elaborate(self, platform):
        m = Module()
        a18, b18, p36 = Signal(signed(18)), Signal(signed(18)), Signal(signed(36))
        # (.eq extends by the operand's own signedness: sign for signed, zeros for unsigned)
        m.d.comb += [a18.eq(self.a), b18.eq(self.b), self.p.eq(p36)]
        ports = {"CE0": Const(1, 1), "RST0": Const(0, 1),
                 "SIGNEDA": Const(1, 1), "SIGNEDB": Const(1, 1)}
        ports.update({f"A{i}": a18[i] for i in range(18)})
        ports.update({f"B{i}": b18[i] for i in range(18)})
        ports.update({f"P{i}": p36[i] for i in range(36)})
        if uses_ecp5_dsp(platform):
            outs = {f"P{i}" for i in range(36)}
            m.submodules.dsp = Instance(
                "MULT18X18D",
                *(("p", k, v) for k, v in MULT18X18D_PARAMS.items()),
                ("i", "CLK0", ClockSignal()),
                ("i", "SOURCEA", Const(0, 1)), ("i", "SOURCEB", Const(0, 1)),
                *(("i", f"C{i}", Const(0, 1)) for i in range(18)),
                *((("o" if k in outs else "i"), k, v) for k, v in ports.items()))
        else:
            mult18x18d_model(m, MULT18X18D_PARAMS, ports)
        return m


class WideMult(wiring.Component):
    """``p = a * b`` for an ``a`` wider than 18 bits, :attr:`latency` cycles later.

    ``a`` (signed or unsigned, any width) is cut into :data:`PIECE_BITS`-bit pieces from the
    bottom, the top piece keeping ``a``'s sign; each piece times ``b`` is a :class:`Mult18`,
    and the products, shifted to their places, are added in one registered stage. ``b``:
    signed of at most 18 bits or unsigned of at most 17.
    """

    #: cycles from ``a``, ``b`` to ``p``: the multipliers' two, the sum's one
    latency = Mult18.latency + 1

    def __init__(self, a_shape, b_shape):
        a_shape, b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        if not _operand_fits(b_shape):
            raise ValueError(f"WideMult operand b must be signed of at most 18 bits or unsigned "
                             f"of at most 17, not {b_shape!r}")
        self._a_shape, self._b_shape = a_shape, b_shape
        pbits = a_shape.width + b_shape.width + (not a_shape.signed) + (not b_shape.signed)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "p": Out(signed(pbits))})

    @property
    def pieces(self) -> list[tuple[int, int]]:
        """``(low bit, width)`` of each piece of ``a``; the last is the top one."""
        width, out, lo = self._a_shape.width, [], 0
        top = 18 if self._a_shape.signed else 17
        while width - lo > top:
            out.append((lo, PIECE_BITS))
            lo += PIECE_BITS
        out.append((lo, width - lo))
        return out

    def elaborate(self, platform):
        m = Module()
        pieces = self.pieces
        terms = []
        for k, (lo, n) in enumerate(pieces):
            top = k == len(pieces) - 1
            shape = signed(n) if top and self._a_shape.signed else unsigned(n)
            mul = Mult18(shape, self._b_shape)
            m.submodules[f"mul{k}"] = mul
            m.d.comb += [mul.a.eq(self.a[lo:lo + n]), mul.b.eq(self.b)]
            terms.append(mul.p << lo)
        m.d.sync += self.p.eq(sum(terms[1:], terms[0]))
        return m
