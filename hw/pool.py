"""Pools on the engine's output stream: max pool 3x3/2 (ceil mode) and the global sum.

Both consume *beats*: up to ``requant_units`` values of consecutive channels of one pixel, in
row-major pixel order with channels interleaved (the engine's output order), and produce beats
in the same order, so they sit on the way out of the producing layer (fused pooling).

- :class:`MaxPool`: ``P[c, j, k] = max A[c, 2j + dy, 2k + dx]`` over the positions inside the
  map, with the ceil-mode output size of ``compiler.golden.pool_out_size`` (no padding). A
  horizontal stage keeps one pixel of partial maxima per channel, a vertical stage one output row
  per channel; both are banked by ``index mod pool_banks`` (``AccelConfig.pool_banks``, the
  fewest banks a beat of ``requant_units`` lanes needs) so a beat is one read and one write
  per bank, with read-modify-write in consecutive cycles (transparent read ports).
- :class:`GlobalSum`: ``S[c] = sum A[c, y, x]``; the sums leave with the last pixel's beats.

Both take their shape on plain input signals that must be stable while a layer runs, and reset
their position after the beat flagged ``last``. Back-pressure: input ``ready`` promises room for
everything inside (an output FIFO with credits), so nothing inside ever stalls.
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .lbuf import bank_row

__all__ = ["Beat", "MaxPool", "GlobalSum"]


class Beat(data.StructLayout):
    """Up to ``lanes`` values of consecutive channels of one pixel; ``last`` ends a layer."""

    def __init__(self, *, width: int, lanes: int):
        super().__init__({
            "data": data.ArrayLayout(unsigned(width), lanes),
            "count": unsigned(lanes.bit_length()),
            "last": 1,
        })


def _advance_cursor(m, beat, c, w, c0, x, y):
    """After taking ``beat``, move the input cursor (channel ``c0`` of pixel ``x``, row ``y``
    of a ``w``-wide map of ``c`` channels) past its ``count`` values; back to 0 after ``last``.
    A beat never crosses a pixel."""
    with m.If(beat.last):
        m.d.sync += [x.eq(0), y.eq(0), c0.eq(0)]
    with m.Elif(c0 + beat.count >= c):
        m.d.sync += c0.eq(0)
        with m.If(x + 1 >= w):
            m.d.sync += [x.eq(0), y.eq(y + 1)]
        with m.Else():
            m.d.sync += x.eq(x + 1)
    with m.Else():
        m.d.sync += c0.eq(c0 + beat.count)


def _log2(n):
    return n.bit_length() - 1


class _BankedRMW:
    """``banks`` memories; lane ``i`` of a beat touches index ``base + i`` (bank ``(base+i)%B``).

    ``read(m, en, base)`` issues the reads; ``value(lane)`` is the old value one cycle later;
    ``write(m, en, base, count, values)`` writes lanes ``< count``. Reads see a write to the same
    row in the same cycle (transparent ports), so back-to-back updates of a row are exact.
    """

    def __init__(self, m, name, *, banks, depth, width, lanes):
        self.banks, self.lanes = banks, lanes
        self.lb = _log2(banks)
        self.ibits = max(1, _log2(depth // banks))
        self.rps, self.wps = [], []
        for b in range(banks):
            mem = memory.Memory(shape=unsigned(width), depth=depth // banks, init=[])
            m.submodules[f"{name}{b}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="sync", transparent_for=(wp,))
            self.rps.append(rp)
            self.wps.append(wp)
        self.lo_q = Signal(self.lb, name=f"{name}_lo")
        self.raddr_q = [Signal(self.ibits, name=f"{name}_ra{b}") for b in range(banks)]

    def _index(self, base, b):
        return bank_row(base, b, self.lb, self.ibits)

    def read(self, m, en, base):
        for b, rp in enumerate(self.rps):
            m.d.comb += [rp.en.eq(en), rp.addr.eq(self._index(base, b))]
        with m.If(en):
            m.d.sync += self.lo_q.eq(base[: self.lb])
            m.d.sync += [ra.eq(self._index(base, b)) for b, ra in enumerate(self.raddr_q)]

    def value(self, lane):
        return Array(rp.data for rp in self.rps)[(self.lo_q + lane)[: self.lb]]

    def value_bypass(self, m, lane):
        """``value(lane)``, but a write to the same row in this cycle (the read was issued the
        cycle before it) is seen: for a pipeline that writes two cycles after it reads."""
        banks = []
        for b, (rp, wp) in enumerate(zip(self.rps, self.wps)):
            v = Signal.like(rp.data, name=f"byp{b}_{lane}_{id(self) % 997}")
            m.d.comb += v.eq(Mux(wp.en & (wp.addr == self.raddr_q[b]), wp.data, rp.data))
            banks.append(v)
        return Array(banks)[(self.lo_q + lane)[: self.lb]]

    def write(self, m, en, base, count, values):
        lo = base[: self.lb]
        for b, wp in enumerate(self.wps):
            lane = Signal(self.lb, name=f"wl{b}_{id(self) % 997}")
            m.d.comb += lane.eq(b - lo)
            m.d.comb += [
                wp.addr.eq(self._index(base, b)),
                wp.data.eq(Array(values)[lane[: max(1, (self.lanes - 1).bit_length())]]
                           if self.lanes > 1 else values[0]),
                wp.en.eq(en & (lane < count)),
            ]


class _Credit:
    """An output FIFO and the credit rule that keeps a stall-free pipeline from overflowing it."""

    def __init__(self, m, layout, depth, stages):
        self.fifo = fifo.SyncFIFOBuffered(width=layout.size, depth=depth)
        m.submodules.fifo = self.fifo
        self.stages = stages
        self.layout = layout
        self.depth = depth

    def room(self, m, inflight):
        ok = Signal()
        m.d.comb += ok.eq(self.fifo.level + inflight + 1 < self.depth)
        return ok


class MaxPool(wiring.Component):
    """Max pool 3x3, stride 2, ceil mode, no padding, on a stream of beats.

    Shape inputs ``c`` (channels), ``h``/``w`` (input size), ``ho``/``wo`` (output size from
    ``compiler.golden.pool_out_size``). ``wo * c`` must fit ``pool_row_depth``; ``c`` must fit
    ``max_channels``.
    """

    def __init__(self, cfg: AccelConfig, *, width: int | None = None):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"MaxPool needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        self._width = cfg.score_bits if width is None else width
        beat = Beat(width=self._width, lanes=cfg.requant_units)
        dim = range(cfg.max_dim + 1)
        super().__init__({
            "i": In(stream.Signature(beat)),
            "o": Out(stream.Signature(beat)),
            "c": In(range(cfg.max_channels + 1)),
            "h": In(dim), "w": In(dim), "ho": In(dim), "wo": In(dim),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        lanes, banks = cfg.requant_units, cfg.pool_banks
        beat = Beat(width=self._width, lanes=lanes)
        out = _Credit(m, beat, cfg.out_fifo_depth, 4)

        hp = _BankedRMW(m, "hp", banks=banks, depth=cfg.max_channels, width=self._width,
                        lanes=lanes)
        vp = _BankedRMW(m, "vp", banks=banks, depth=cfg.pool_row_depth, width=self._width,
                        lanes=lanes)
        chan_bits = (cfg.max_channels).bit_length()
        dim_bits = (cfg.max_dim + 1).bit_length()
        row_bits = (cfg.pool_row_depth).bit_length()

        # -- horizontal stage: 1 (read) and 2 (update, emit) ------------------------------
        x = Signal(dim_bits)
        y = Signal(dim_bits)
        c0 = Signal(chan_bits)
        v1 = Signal()      # stage 1 holds a beat
        b1 = Signal(beat)
        x1, y1, c1 = Signal(dim_bits), Signal(dim_bits), Signal(chan_bits)
        h_valid = Signal()  # stage 2 result (a horizontal maximum beat)
        h_beat = Signal(beat)
        h_y = Signal(dim_bits)
        h_k = Signal(dim_bits)

        # inflight: stage-1 beat, horizontal result, vertical stage 1, vertical result
        v3 = Signal()
        v4 = Signal()
        room = out.room(m, v1 + h_valid + v3 + v4)
        m.d.comb += self.i.ready.eq(room)
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        hp.read(m, take, c0)
        m.d.sync += v1.eq(take)
        with m.If(take):
            m.d.sync += [b1.eq(self.i.payload), x1.eq(x), y1.eq(y), c1.eq(c0)]
            _advance_cursor(m, self.i.payload, self.c, self.w, c0, x, y)

        emit_a, emit_b, half, hnew, hvals = _pool_axis(
            m, x1, self.w, self.wo, [hp.value(lane) for lane in range(lanes)], b1.data, lanes)
        hp.write(m, v1, c1, b1.count, hnew)
        m.d.sync += h_valid.eq(v1 & (emit_a | emit_b))
        with m.If(v1):
            m.d.sync += [h_beat.count.eq(b1.count), h_beat.last.eq(b1.last), h_y.eq(y1),
                         h_k.eq(Mux(emit_a, half - 1, half))]
            for lane in range(lanes):
                m.d.sync += h_beat.data[lane].eq(hvals[lane])

        # -- vertical stage: 3 (read) and 4 (update, emit) --------------------------------
        kc = Signal(row_bits)    # k * c + channel offset of the next horizontal beat
        vc0 = Signal(chan_bits)
        vk = Signal(dim_bits)
        b3 = Signal(beat)
        y3 = Signal(dim_bits)
        a3 = Signal(row_bits)
        vp.read(m, h_valid, kc)
        m.d.sync += v3.eq(h_valid)
        with m.If(h_valid):
            m.d.sync += [b3.eq(h_beat), y3.eq(h_y), a3.eq(kc)]
            with m.If(h_beat.last):
                m.d.sync += [kc.eq(0), vc0.eq(0), vk.eq(0)]
            with m.Elif(vc0 + h_beat.count >= self.c):
                m.d.sync += vc0.eq(0)
                with m.If(vk + 1 >= self.wo):
                    m.d.sync += [vk.eq(0), kc.eq(0)]
                with m.Else():
                    m.d.sync += [vk.eq(vk + 1), kc.eq(kc + h_beat.count)]
            with m.Else():
                m.d.sync += [vc0.eq(vc0 + h_beat.count), kc.eq(kc + h_beat.count)]

        vemit_a, vemit_b, _, vnew, vvals = _pool_axis(
            m, y3, self.h, self.ho, [vp.value(lane) for lane in range(lanes)], b3.data, lanes)
        vp.write(m, v3, a3, b3.count, vnew)
        o_beat = Signal(beat)
        m.d.sync += v4.eq(v3 & (vemit_a | vemit_b))
        with m.If(v3):
            m.d.sync += [o_beat.count.eq(b3.count), o_beat.last.eq(b3.last)]
            for lane in range(lanes):
                m.d.sync += o_beat.data[lane].eq(vvals[lane])
        m.d.comb += [out.fifo.w_en.eq(v4), out.fifo.w_data.eq(o_beat)]
        r = data.View(beat, out.fifo.r_data)
        m.d.comb += [self.o.valid.eq(out.fifo.r_rdy), self.o.payload.eq(r),
                     out.fifo.r_en.eq(self.o.ready)]
        return m


def _pool_axis(m, pos, size, out_size, olds, news, lanes):
    """One axis of the 3x3/2 ceil-mode max pool, shared by the horizontal and vertical stages.

    ``pos`` is the input position along the axis of the values ``news`` (one per lane), ``olds``
    the partial maxima kept for them. An even position starts a window (and, from 2 on, closes
    the one before: ``emit_a``); the last position closes the final ceil-mode window
    (``emit_b``). Returns ``(emit_a, emit_b, pos >> 1, kept, emitted)``: the partial maxima to
    store and the values to emit.
    """
    even = ~pos[0]
    half = pos >> 1
    emit_a = Signal()
    emit_b = Signal()
    m.d.comb += [
        emit_a.eq(even & (pos >= 2) & (half - 1 < out_size)),
        emit_b.eq((pos + 1 == size) & (half < out_size) & ~emit_a),
    ]
    kept, emitted = [], []
    for lane in range(lanes):
        old, new = olds[lane], news[lane]
        mx = Mux(old > new, old, new)
        kept.append(Mux(even, new, mx))
        emitted.append(Mux(even & ~emit_a, new, mx))
    return emit_a, emit_b, half, kept, emitted


class GlobalSum(wiring.Component):
    """``S[c] = sum over pixels of A[c, y, x]``; the sums leave as the last pixel's beats.

    Shape inputs ``c`` (channels), ``h``/``w`` (map size). Output values are ``sum_bits`` wide.
    """

    def __init__(self, cfg: AccelConfig, *, width: int | None = None):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"GlobalSum needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        self._width = cfg.score_bits if width is None else width
        dim = range(cfg.max_dim + 1)
        super().__init__({
            "i": In(stream.Signature(Beat(width=self._width, lanes=cfg.requant_units))),
            "o": Out(stream.Signature(Beat(width=cfg.sum_bits, lanes=cfg.requant_units))),
            "c": In(range(cfg.max_channels + 1)),
            "h": In(dim), "w": In(dim),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        lanes, banks = cfg.requant_units, cfg.pool_banks
        obeat = Beat(width=cfg.sum_bits, lanes=lanes)
        # fast_pipeline: read (take), old sums registered (v2), add and write; otherwise the
        # add and the write follow the read's cycle directly (52 MHz on the ECP5 that way,
        # ``python -m boards.timing gsum``; a small, slow device spares the registers)
        staged = cfg.fast_pipeline
        out = _Credit(m, obeat, cfg.out_fifo_depth, 3 if staged else 2)
        acc = _BankedRMW(m, "sum", banks=banks, depth=cfg.max_channels, width=cfg.sum_bits,
                         lanes=lanes)
        chan_bits = (cfg.max_channels).bit_length()
        dim_bits = (cfg.max_dim + 1).bit_length()
        x = Signal(dim_bits)
        y = Signal(dim_bits)
        c0 = Signal(chan_bits)
        v1 = Signal()
        b1 = Signal(self.i.payload.shape())
        c1 = Signal(chan_bits)
        first1 = Signal()
        last1 = Signal()
        o_valid = Signal()
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        acc.read(m, take, c0)
        m.d.sync += v1.eq(take)
        with m.If(take):
            m.d.sync += [b1.eq(self.i.payload), c1.eq(c0),
                         first1.eq((x == 0) & (y == 0)),
                         last1.eq((x + 1 == self.w) & (y + 1 == self.h))]
            _advance_cursor(m, self.i.payload, self.c, self.w, c0, x, y)
        if staged:
            v, b, c = Signal(), Signal.like(b1), Signal.like(c1)
            first, last = Signal(), Signal()
            old = [Signal(cfg.sum_bits, name=f"old{lane}") for lane in range(lanes)]
            m.d.sync += v.eq(v1)
            with m.If(v1):
                m.d.sync += [b.eq(b1), c.eq(c1), first.eq(first1), last.eq(last1)]
                # a row written this cycle by the beat before (read one cycle earlier) is seen
                m.d.sync += [old[lane].eq(acc.value_bypass(m, lane)) for lane in range(lanes)]
            m.d.comb += self.i.ready.eq(out.room(m, v1 + v + o_valid))
        else:
            v, b, c, first, last = v1, b1, c1, first1, last1
            old = [acc.value(lane) for lane in range(lanes)]
            m.d.comb += self.i.ready.eq(out.room(m, v1 + o_valid))
        sums = [Signal(cfg.sum_bits, name=f"sum{lane}") for lane in range(lanes)]
        for lane in range(lanes):
            m.d.comb += sums[lane].eq(Mux(first, 0, old[lane]) + b.data[lane])
        acc.write(m, v, c, b.count, sums)
        o_beat = Signal(obeat)
        m.d.sync += o_valid.eq(v & last)
        with m.If(v):
            m.d.sync += [o_beat.count.eq(b.count), o_beat.last.eq(b.last)]
            for lane in range(lanes):
                m.d.sync += o_beat.data[lane].eq(sums[lane])
        m.d.comb += [out.fifo.w_en.eq(o_valid), out.fifo.w_data.eq(o_beat)]
        r = data.View(obeat, out.fifo.r_data)
        m.d.comb += [self.o.valid.eq(out.fifo.r_rdy), self.o.payload.eq(r),
                     out.fifo.r_en.eq(self.o.ready)]
        return m
