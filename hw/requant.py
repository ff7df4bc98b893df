"""Requantisation: finished accumulators to activations, exactly as docs/numerics.md says.

    Y = clamp((acc * M + (1 << (SH - 1))) >> SH, 0, Ymax)

- :class:`ResultDrain`: holds up to ``result_banks`` finished column groups (their
  accumulators, multipliers and shifts) and hands them to the requantiser
  ``requant_units`` channels per cycle.
- :class:`Requantizer`: ``requant_units`` parallel multiply / round / shift / clamp pipelines.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .dsp import WideMult
from .program import shift_bits

__all__ = ["DrainMeta", "ChunkMeta", "ResultDrain", "Requantizer"]


class DrainMeta(data.StructLayout):
    """What travels with a finished group: valid channels, destination, clamp, layer end."""

    def __init__(self, cfg: AccelConfig):
        super().__init__({
            "nvalid": unsigned(cfg.pe_columns.bit_length()),
            "dest": 1,          # 0: output stream, 1: window buffer (a squeeze result)
            "ymax": unsigned(cfg.score_bits),
            "last": 1,          # the layer's final group
        })


class ChunkMeta(data.StructLayout):
    """What travels with a chunk of up to ``requant_units`` channels."""

    def __init__(self, cfg: AccelConfig):
        super().__init__({
            "count": unsigned(cfg.requant_units.bit_length()),
            "dest": 1,
            "ymax": unsigned(cfg.score_bits),
            "last": 1,          # the layer's final chunk
        })


class ResultDrain(wiring.Component):
    """A queue of finished groups, drained ``requant_units`` channels per cycle.

    ``push`` stores ``acc``/``mult``/``shift``/``meta`` of a finished group; the caller
    guarantees a free entry (it reserves one per group, and gets it back with ``release``).
    Every cycle with ``go`` and an entry present, the next chunk of the oldest entry appears on
    ``q_*`` one cycle later with ``q_valid`` (``q_*`` follow the head entry every cycle: read
    them only with ``q_valid``); ``release`` pulses when an entry's last chunk left.
    """

    def __init__(self, cfg: AccelConfig):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"ResultDrain needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        cols, r = cfg.pe_columns, cfg.requant_units
        sb = shift_bits(cfg)
        super().__init__({
            "push": In(1),
            "acc": In(data.ArrayLayout(signed(cfg.acc_bits), cols)),
            "mult": In(data.ArrayLayout(unsigned(cfg.requant_mult_bits), cols)),
            "shift": In(data.ArrayLayout(unsigned(sb), cols)),
            "meta": In(DrainMeta(cfg)),
            "go": In(1),
            "release": Out(1),
            "q_valid": Out(1),
            "q_acc": Out(data.ArrayLayout(signed(cfg.acc_bits), r)),
            "q_mult": Out(data.ArrayLayout(unsigned(cfg.requant_mult_bits), r)),
            "q_shift": Out(data.ArrayLayout(unsigned(sb), r)),
            "q_meta": Out(ChunkMeta(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        cols, r, nb = cfg.pe_columns, cfg.requant_units, cfg.result_banks
        nchunks_max = -(-cols // r)
        sb = shift_bits(cfg)

        e_acc = [Signal(data.ArrayLayout(signed(cfg.acc_bits), cols), name=f"e_acc{i}")
                 for i in range(nb)]
        e_mult = [Signal(data.ArrayLayout(unsigned(cfg.requant_mult_bits), cols),
                         name=f"e_mult{i}") for i in range(nb)]
        e_shift = [Signal(data.ArrayLayout(unsigned(sb), cols), name=f"e_shift{i}")
                   for i in range(nb)]
        e_meta = [Signal(DrainMeta(cfg), name=f"e_meta{i}") for i in range(nb)]
        pbits = max(1, (nb - 1).bit_length())
        wr = Signal(pbits)
        rd = Signal(pbits)
        count = Signal(range(nb + 1))
        # (one bit at least: with as many requantisers as columns there is a single chunk)
        chunk = Signal(range(max(2, nchunks_max)))

        def bump(p):
            return Mux(p == nb - 1, 0, p + 1)

        with m.If(self.push):
            for i in range(nb):
                with m.If(wr == i):
                    m.d.sync += [e_acc[i].eq(self.acc), e_mult[i].eq(self.mult),
                                 e_shift[i].eq(self.shift), e_meta[i].eq(self.meta)]
            m.d.sync += wr.eq(bump(wr))

        head_meta = Array(e_meta)[rd]
        nchunks = Signal(range(nchunks_max + 1))
        m.d.comb += nchunks.eq(Array(Const(-(-n // r), range(nchunks_max + 1))
                                     for n in range(cols + 1))[head_meta.nvalid])
        final = Signal()
        m.d.comb += final.eq(chunk == nchunks - 1)
        issue = Signal()
        m.d.comb += issue.eq(self.go & (count != 0))

        m.d.sync += self.q_valid.eq(issue)
        # the head chunk is registered every cycle, issued or not (q_* are read only with
        # q_valid): ``issue`` then enables a few counters, not the hundreds of q_* flip-flops,
        # a net that spanned the ECP5-85F and limited the whole design to 48 MHz
        # index by Cat(chunk, rd), not rd * nchunks + chunk: a multiplier here would take one of
        # the device's MULT18X18D blocks, all of which the columns need
        cpad = 1 << len(chunk)
        sel = Cat(chunk, rd)
        for lane in range(r):
            accs, mults, shifts = [], [], []
            for i in range(nb):
                for k in range(cpad):
                    col = min(min(k, nchunks_max - 1) * r + lane, cols - 1)
                    accs.append(e_acc[i][col])
                    mults.append(e_mult[i][col])
                    shifts.append(e_shift[i][col])
            m.d.sync += [self.q_acc[lane].eq(Array(accs)[sel]),
                         self.q_mult[lane].eq(Array(mults)[sel]),
                         self.q_shift[lane].eq(Array(shifts)[sel])]
        left = Signal(range(cols + 1))
        done_cols = Array(Const(k * r, range(cols + 1)) for k in range(nchunks_max))
        m.d.comb += left.eq(head_meta.nvalid - done_cols[chunk])
        m.d.sync += [
            self.q_meta.count.eq(Mux(left > r, r, left)),
            self.q_meta.dest.eq(head_meta.dest),
            self.q_meta.ymax.eq(head_meta.ymax),
            self.q_meta.last.eq(head_meta.last & final),
        ]
        with m.If(issue):
            with m.If(final):
                m.d.sync += [chunk.eq(0), rd.eq(bump(rd))]
            with m.Else():
                m.d.sync += chunk.eq(chunk + 1)
        m.d.comb += self.release.eq(issue & final)
        m.d.sync += count.eq(count + self.push - (issue & final))
        return m


class Requantizer(wiring.Component):
    """``requant_units`` lanes of ``clamp((acc * M + 2**(SH-1)) >> SH, 0, ymax)``.

    Inputs are sampled every cycle; ``y``/``meta``/``valid`` follow :attr:`latency` cycles
    later (:attr:`AccelConfig.requant_latency`): the product, then the rounding add, the shift
    and the clamp, each registered. With ``cfg.fast_pipeline`` the product is a
    :class:`hw.dsp.WideMult` (the ECP5's multipliers with their own registers: three cycles),
    else one registered multiply. No back-pressure: the caller only feeds it what the consumer
    can take.
    """

    def __init__(self, cfg: AccelConfig):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"Requantizer needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        self.latency = cfg.requant_latency
        r = cfg.requant_units
        sb = shift_bits(cfg)
        super().__init__({
            "valid": In(1),
            "acc": In(data.ArrayLayout(signed(cfg.acc_bits), r)),
            "mult": In(data.ArrayLayout(unsigned(cfg.requant_mult_bits), r)),
            "shift": In(data.ArrayLayout(unsigned(sb), r)),
            "meta": In(ChunkMeta(cfg)),
            "out_valid": Out(1),
            "y": Out(data.ArrayLayout(unsigned(cfg.score_bits), r)),
            "out_meta": Out(ChunkMeta(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        r, n = cfg.requant_units, self.latency
        pbits = cfg.acc_bits + cfg.requant_mult_bits + 1
        sb = shift_bits(cfg)
        mul_lat = n - 3         # the product's cycles; the add, the shift, the clamp follow
        valid = [Signal(name=f"v{i}") for i in range(n)]
        meta = [Signal(ChunkMeta(cfg), name=f"meta{i}") for i in range(n)]
        m.d.sync += [valid[0].eq(self.valid), meta[0].eq(self.meta)]
        for i in range(1, n):
            m.d.sync += [valid[i].eq(valid[i - 1]), meta[i].eq(meta[i - 1])]
        for lane in range(r):
            prod = Signal(signed(pbits), name=f"prod{lane}")
            if cfg.fast_pipeline:
                mul = WideMult(signed(cfg.acc_bits), unsigned(cfg.requant_mult_bits))
                assert mul.latency == mul_lat
                m.submodules[f"mul{lane}"] = mul
                m.d.comb += [mul.a.eq(self.acc[lane]), mul.b.eq(self.mult[lane]),
                             prod.eq(mul.p)]
            else:
                m.d.sync += prod.eq(self.acc[lane] * self.mult[lane])
            # the shift travels with the product: sh[k] is the shift of the value k + 1 cycles
            # after the input
            sh = [Signal(sb, name=f"sh{k}_{lane}") for k in range(mul_lat + 1)]
            m.d.sync += sh[0].eq(self.shift[lane])
            for k in range(1, mul_lat + 1):
                m.d.sync += sh[k].eq(sh[k - 1])
            tot = Signal(signed(pbits + 1), name=f"tot{lane}")
            res = Signal(signed(pbits + 1), name=f"res{lane}")
            m.d.sync += [
                # round half up: add 2**(SH-1) before the floor shift (SH >= 1)
                tot.eq(prod + ((Const(1, 1) << sh[mul_lat - 1]) >> 1)[:pbits]),
                res.eq(tot >> sh[mul_lat]),
            ]
            # the clamp: res > ymax as "a bit set above ymax's width, or the low bits above
            # ymax" (an OR and a short compare, not a compare of all of res's 50 bits: 10.2 ns,
            # python -m boards.timing requantizer)
            ymax = meta[n - 2].ymax
            yb = len(ymax)
            over = (res[yb:-1] != 0) | (res[:yb] > ymax)
            m.d.sync += self.y[lane].eq(Mux(res[-1], 0, Mux(over, ymax, res[:yb])))
        m.d.comb += [self.out_valid.eq(valid[n - 1]), self.out_meta.eq(meta[n - 1])]
        return m
