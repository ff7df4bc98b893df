"""The processing elements: the column array and the memories that feed it.

The engine multiplies with one array of ``pe_columns`` dot-product columns of ``pe_lanes``
multipliers each (docs/engine.md). Every cycle all columns take the same ``pe_lanes`` input
values (a segment from a line buffer) and each column its own ``pe_lanes`` weights (one row of
the weight memory holds the weights of all columns); each column adds its dot product to its
accumulator. A column therefore computes one output channel of one pixel over several passes; a
*group* of ``pe_columns`` output channels finishes together.

- :class:`RowStore`: a block RAM of wide rows with a register after it (two cycles of latency;
  the register is what lets the ECP5 reach 100+ MHz, see DESIGN.md).
- :class:`WeightReader`: the weight-read path: a :class:`RowStore` whose rows are unpacked into
  ``pe_columns x pe_lanes`` signed weights. With ``weight_streams`` the stream decoder and
  codebook lookup of :class:`hw.wdecode.StreamWeightReader` replace it.
- :class:`ColumnArray`: the multipliers, adder trees and accumulators.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .dsp import Mult18
from .program import weight_row_bits

__all__ = ["RowStore", "WeightReader", "ColumnArray"]


class RowStore(wiring.Component):
    """A ``depth x width`` memory: one write and one registered read per cycle.

    ``r_data`` holds row ``r_addr`` two cycles after ``r_en`` and keeps it until the next read.
    ``init``: initial rows (packed integers), e.g. a weight image's, so that the memory holds
    them from configuration on (block RAM initial contents).
    """

    def __init__(self, *, width: int, depth: int, init=()):
        if not isinstance(width, int) or width <= 0:
            raise TypeError(f"RowStore width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth <= 0:
            raise TypeError(f"RowStore depth must be a positive integer, not {depth!r}")
        init = [int(v) for v in init]
        if len(init) > depth:
            raise ValueError(f"RowStore init has {len(init)} rows, more than its depth {depth}")
        if any(v < 0 or v >> width for v in init):
            raise ValueError(f"RowStore init rows must be unsigned {width}-bit integers")
        self._width, self._depth, self._init = width, depth, init
        abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "w_en": In(1), "w_addr": In(abits), "w_data": In(width),
            "r_en": In(1), "r_addr": In(abits), "r_data": Out(width),
        })

    @property
    def width(self):
        return self._width

    @property
    def depth(self):
        return self._depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=unsigned(self._width), depth=self._depth,
                                               init=self._init)
        wp = mem.write_port()
        rp = mem.read_port(domain="sync")
        m.d.comb += [wp.en.eq(self.w_en), wp.addr.eq(self.w_addr), wp.data.eq(self.w_data),
                     rp.en.eq(self.r_en), rp.addr.eq(self.r_addr)]
        en_q = Signal()
        m.d.sync += en_q.eq(self.r_en)
        with m.If(en_q):
            m.d.sync += self.r_data.eq(rp.data)
        return m


class WeightReader(wiring.Component):
    """The weight-read path: row ``r_addr`` as ``pe_columns x pe_lanes`` signed weights.

    Latency two cycles (block RAM, register). ``w_*`` load packed rows
    (``hw.program.pack_weight_rows``); ``init`` gives the rows it holds from configuration on.
    """

    #: cycles from ``r_en`` to the weights on ``r_data``
    latency = 2

    def __init__(self, cfg: AccelConfig, depth: int | None = None, init=()):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"WeightReader needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        self._depth = cfg.weight_depth if depth is None else depth
        self._store = RowStore(width=weight_row_bits(cfg), depth=self._depth, init=init)
        row = data.ArrayLayout(data.ArrayLayout(signed(cfg.weight_bits), cfg.pe_lanes),
                               cfg.pe_columns)
        abits = max(1, (self._depth - 1).bit_length())
        super().__init__({
            "w_en": In(1), "w_addr": In(abits), "w_data": In(weight_row_bits(cfg)),
            "r_en": In(1), "r_addr": In(abits), "r_data": Out(row),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.store = st = self._store
        m.d.comb += [st.w_en.eq(self.w_en), st.w_addr.eq(self.w_addr),
                     st.w_data.eq(self.w_data), st.r_en.eq(self.r_en),
                     st.r_addr.eq(self.r_addr), self.r_data.as_value().eq(st.r_data)]
        return m


class ColumnArray(wiring.Component):
    """``pe_columns`` dot-product columns of ``pe_lanes`` multipliers with accumulators.

    Every cycle with ``en``: column ``c`` computes ``sum_l x[l] * w[c][l]`` and, ``latency``
    cycles later, ``acc[c]`` becomes ``bias[c] + that`` if the pass was ``first`` of its group,
    else ``acc[c] + that``. ``bias`` must be presented ``latency - 1`` cycles after the
    ``first`` pass (the accumulate stage). ``done`` pulses for one cycle, ``latency`` cycles
    after a ``last`` pass, while ``acc`` holds the finished group.

    Stages: with ``cfg.fast_pipeline`` the inputs ``x`` and ``w`` (registered: the input
    buffers' and the weight decoder's outputs reach the multipliers from flip-flops, not across
    the chip from block RAM, board build b13), then the multipliers' own input registers and
    products (:class:`hw.dsp.Mult18`: two cycles, the multiply inside the ECP5's DSP block);
    without it the products (registered). Then partial sums of three lanes (registered), column
    sums (registered), accumulators. ``latency`` is :attr:`AccelConfig.array_latency`: 6, or 4
    without ``fast_pipeline``.
    """

    def __init__(self, cfg: AccelConfig):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"ColumnArray needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        self.latency = cfg.array_latency
        cols, lanes = cfg.pe_columns, cfg.pe_lanes
        super().__init__({
            "en": In(1), "first": In(1), "last": In(1),
            "x": In(data.ArrayLayout(signed(cfg.input_bits), lanes)),
            "w": In(data.ArrayLayout(data.ArrayLayout(signed(cfg.weight_bits), lanes), cols)),
            "bias": In(data.ArrayLayout(signed(cfg.bias_bits), cols)),
            "acc": Out(data.ArrayLayout(signed(cfg.acc_bits), cols)),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        cols, lanes = cfg.pe_columns, cfg.pe_lanes
        pbits = cfg.input_bits + cfg.weight_bits
        chunks = [list(range(i, min(i + 3, lanes))) for i in range(0, lanes, 3)]

        n = self.latency
        en = [Signal(name=f"en{i}") for i in range(n)]
        first = [Signal(name=f"first{i}") for i in range(n)]
        last = [Signal(name=f"last{i}") for i in range(n)]
        m.d.sync += [en[0].eq(self.en), first[0].eq(self.first), last[0].eq(self.last)]
        for i in range(1, n):
            m.d.sync += [en[i].eq(en[i - 1]), first[i].eq(first[i - 1]), last[i].eq(last[i - 1])]

        x, w = self.x, self.w
        if self._cfg.fast_pipeline:     # the input stage
            x, w = Signal.like(self.x, name="x_q"), Signal.like(self.w, name="w_q")
            m.d.sync += [x.eq(self.x), w.eq(self.w)]

        for c in range(cols):
            prods = [Signal(signed(pbits), name=f"p{c}_{lane}") for lane in range(lanes)]
            for lane in range(lanes):
                if self._cfg.fast_pipeline:
                    # the multiplier's own input and product registers (hw/dsp.py)
                    mul = Mult18(signed(cfg.input_bits), signed(cfg.weight_bits))
                    m.submodules[f"mul{c}_{lane}"] = mul
                    m.d.comb += [mul.a.eq(x[lane]), mul.b.eq(w[c][lane]),
                                 prods[lane].eq(mul.p)]
                else:
                    m.d.sync += prods[lane].eq(x[lane] * w[c][lane])
            parts = [Signal(signed(pbits + 2), name=f"s{c}_{k}") for k in range(len(chunks))]
            for k, ch in enumerate(chunks):
                m.d.sync += parts[k].eq(sum(prods[lane] for lane in ch))
            total = Signal(signed(pbits + 2 + (len(chunks) - 1).bit_length()), name=f"t{c}")
            m.d.sync += total.eq(sum(parts))
            # en[n - 2]: total holds a valid column sum; accumulate
            with m.If(en[n - 2]):
                with m.If(first[n - 2]):
                    m.d.sync += self.acc[c].eq(self.bias[c] + total)
                with m.Else():
                    m.d.sync += self.acc[c].eq(self.acc[c] + total)
        m.d.comb += self.done.eq(en[n - 1] & last[n - 1])
        return m
