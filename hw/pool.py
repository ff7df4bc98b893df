"""Pools on the engine's output stream: max pool 3x3/2 (ceil mode) and the global sum.

Both consume *beats*: up to ``requant_units`` values of consecutive channels of one pixel, in
row-major pixel order with channels interleaved (the engine's output order), and produce beats
in the same order, so they sit on the way out of the producing layer (fused pooling).

- :class:`MaxPool`: ``P[c, j, k] = max A[c, 2j + dy, 2k + dx]`` over the positions inside the
  map, with the ceil-mode output size of ``compiler.golden.pool_out_size`` (no padding). A
  horizontal stage keeps one pixel of partial maxima per channel, a vertical stage one output row
  per channel; both are banked by ``index mod pool_banks`` (``AccelConfig.pool_banks``, the
  fewest banks a beat of ``requant_units`` lanes needs) so a beat is one read and one write
  per bank.
- :class:`GlobalSum`: ``S[c] = sum A[c, y, x]``; the sums leave with the last pixel's beats.

Two pipelines, chosen by ``AccelConfig.fast_pipeline``; both take a beat every cycle and give
the same values:

- ``False`` (small devices): :class:`_BankedRMW`, read-modify-write in consecutive cycles
  (transparent read ports): block-RAM output, lane rotation, compare or add, lane rotation and
  block-RAM input in one cycle (44 MHz max pool, 52 MHz global sum on the ECP5).
- ``True``: :class:`_PipedRMW` (global sum), four cycles a stage: registered addresses, a
  register straight after each block RAM, the update computed bank by bank (the lanes are
  rotated into bank order before and back after it), a registered write, and forwarding of the
  three newer results a read cannot see yet (``python -m boards.timing maxpool gsum``,
  docs/boards.md section 6). The max pool's stages are :class:`_PipedMax`: the same with a
  cursor cycle before the read and one more cycle, so that at most a compare's carry chain and
  one LUT sit between registers (four newer results forwarded); a result reaches the output
  FIFO 11 cycles after its beat is taken.

Both take their shape on plain input signals that must be stable while a layer runs, and reset
their position after the beat flagged ``last``. Back-pressure: input ``ready`` promises room for
everything inside (an output FIFO with credits), so nothing inside ever stalls.
"""

from __future__ import annotations

from amaranth import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .lbuf import _after, bank_row

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


def _gt(m, a, b):
    """``a > b`` (unsigned) as the borrow of ``b - a``: yosys maps it to one carry chain (its
    ``$gt`` on the ECP5: a shorter chain and LUTs after it)."""
    d = Signal(max(len(a), len(b)) + 1)
    m.d.comb += d.eq(b - a)
    return d[-1]


def _log2(n):
    return n.bit_length() - 1


class _BankedRMW:
    """``banks`` memories; lane ``i`` of a beat touches index ``base + i`` (bank ``(base+i)%B``).

    ``read(m, en, base)`` issues the reads; ``value(lane)`` is the old value one cycle later;
    ``write(m, en, base, count, values)`` writes lanes ``< count``. Reads see a write to the same
    row in the same cycle (transparent ports), so back-to-back updates of a row are exact.
    """

    def __init__(self, m, name, *, banks, depth, width, lanes):
        self.name, self.banks, self.lanes = name, banks, lanes
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

    def _index(self, base, b):
        return bank_row(base, b, self.lb, self.ibits)

    def read(self, m, en, base):
        for b, rp in enumerate(self.rps):
            m.d.comb += [rp.en.eq(en), rp.addr.eq(self._index(base, b))]
        with m.If(en):
            m.d.sync += self.lo_q.eq(base[: self.lb])

    def value(self, lane):
        return Array(rp.data for rp in self.rps)[(self.lo_q + lane)[: self.lb]]

    def write(self, m, en, base, count, values):
        lo = base[: self.lb]
        for b, wp in enumerate(self.wps):
            lane = Signal(self.lb, name=f"{self.name}_wl{b}")
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


def _delay(m, sig, n, name):
    """``sig`` delayed by ``n`` cycles (a chain of registers ``name_1`` ... ``name_n``)."""
    for i in range(n):
        q = Signal(len(sig), name=f"{name}_{i + 1}")
        m.d.sync += q.eq(sig)
        sig = q
    return sig


def _group_end(m, take, count, last, c, name):
    """Whether the beat taken now (``count`` values) completes a group of ``c`` values (a
    pixel's channels), as ``offset + count >= c`` but with neither an add nor ``c`` on the path:
    a register keeps the values ``rem`` still missing from the group, another whether its high
    bits are zero. Between groups (``fresh``) ``rem`` follows ``c``, so ``c`` must be stable from
    at least one cycle before a layer's first beat. Board build b37: the zero test of ``c``,
    shared by both pools, ran on into the read addresses."""
    k = len(count)
    rem = Signal(len(c), name=f"{name}_rem")
    rem_small = Signal(name=f"{name}_rem_small")        # rem[k:] == 0
    rem_next = Signal(len(c), name=f"{name}_rem_next")
    fresh = Signal(init=1, name=f"{name}_fresh")
    end = Signal(name=f"{name}_end")
    m.d.comb += [end.eq(rem_small & (rem[:k] <= count)),
                 rem_next.eq(Mux(take, Mux(end | last, c, rem - count), Mux(fresh, c, rem)))]
    m.d.sync += [rem.eq(rem_next), rem_small.eq(rem_next[k:] == 0)]
    with m.If(take):
        m.d.sync += fresh.eq(end | last)
    return end


def _group_end_signed(m, take, count, last, c_early, name):
    """:func:`_group_end` with the values still missing kept as ``r = rem - 2**k`` (``k``:
    ``count``'s width), signed: ``rem < 2**k`` is ``r``'s sign bit and ``rem``'s low bits are
    ``r``'s, so the update is a subtraction and a multiplexer with no zero test after it.
    ``c_early``: the group size one cycle before it applies (``c - 2**k`` is registered)."""
    k = len(count)
    width = len(c_early) + 1
    r = Signal(signed(width), name=f"{name}_r")
    cm = Signal(signed(width), name=f"{name}_cm")
    fresh = Signal(init=1, name=f"{name}_fresh")
    end = Signal(name=f"{name}_end")
    load = Signal(name=f"{name}_load")
    m.d.sync += cm.eq(c_early - (1 << k))
    m.d.comb += [end.eq(r[-1] & (r[:k] <= count)),
                 load.eq(Mux(take, end | last, fresh))]
    with m.If(load):
        m.d.sync += r.eq(cm)
    with m.Elif(take):
        m.d.sync += r.eq(r - count)
    with m.If(take):
        m.d.sync += fresh.eq(end | last)
    return end


def _advance_xy(m, take, end, last, w, x, y, x1, y1, wrap=None):
    """:func:`_advance_cursor`'s pixel position, given the end of the pixel ``end``; ``x1`` and
    ``y1`` are registers that hold ``x + 1`` and ``y + 1`` (no adder before a compare);
    ``wrap``: ``x1 >= w`` if the caller has it."""
    with m.If(take):
        with m.If(last):
            m.d.sync += [x.eq(0), y.eq(0), x1.eq(1), y1.eq(1)]
        with m.Elif(end):
            with m.If(x1 >= w if wrap is None else wrap):
                m.d.sync += [x.eq(0), x1.eq(1), y.eq(y1), y1.eq(y1 + 1)]
            with m.Else():
                m.d.sync += [x.eq(x1), x1.eq(x1 + 1)]


def _bank_memories(m, name, rows, depth, width, attrs=None):
    """A memory of ``depth`` ``width``-bit rows per read address in ``rows`` (``name`` + its
    index), read synchronously there; returns their read and write ports."""
    rps, wps = [], []
    for b, row in enumerate(rows):
        mem = memory.Memory(shape=unsigned(width), depth=depth, init=[], attrs=attrs)
        m.submodules[f"{name}{b}"] = mem
        wps.append(mem.write_port())
        rp = mem.read_port(domain="sync")
        m.d.comb += rp.addr.eq(row)
        rps.append(rp)
    return rps, wps


class _PipedRMW:
    """The ``fast_pipeline`` read-modify-write of ``banks`` memories (as :class:`_BankedRMW`:
    lane ``i`` of a beat touches index ``base + i``, bank ``(base + i) % banks``), with every
    block-RAM port registered and the update computed bank by bank (~120 MHz on the ECP5).

    A beat passes four cycles, ``t0`` to ``t3``:

    - t0 (``run``'s ``valid``): each bank reads its row of the beat; the row addresses are
      registers (``ra``) that follow the base cursor (``advance``), so the block RAMs' address
      inputs come straight from flip-flops.
    - t1: the block RAMs' outputs; the beat's lane values are rotated into bank order and the
      forwarding hits are found (below).
    - t2: the outputs registered (``raw``, nothing between the block RAM and the register); the
      old value is the newest of: the result computed in t1 (``wq``), a result computed in the
      two cycles before (``byp``, chosen in t1), the memory (``raw``); ``update(old, new, bank)``
      gives the value to keep (registered in ``wq``: the memory's write port is written from
      flip-flops, in t3) and the value to emit (``er``).
    - t3: ``value(lane)``: the emitted values rotated back into lane order; ``valid3``.

    A read at t0 sees every write of a clock edge before its own (no transparency), so the
    writes of results computed in the three cycles before a beat's t2 are forwarded: the
    back-to-back updates of one row (a pixel of at most ``lanes`` channels, a one-column output
    row) and updates two or three cycles apart (beats of random sizes, stalls) are exact.
    """

    def __init__(self, m, name, *, banks, depth, width, lanes):
        self.name, self.banks, self.lanes, self.width = name, banks, lanes, width
        self.lb = _log2(banks)
        self.ibits = max(1, _log2(depth // banks))
        self.ra = [Signal(self.ibits, name=f"{name}_ra{b}") for b in range(banks)]
        self.lo = Signal(self.lb, name=f"{name}_lo")
        self.hi = Signal(self.ibits, name=f"{name}_hi")
        self.rps, self.wps = _bank_memories(m, name, self.ra, depth // banks, width)

    def advance(self, m, take, count, zero):
        """The base cursor (``lo``: its bank, the low bits): on ``take`` it moves on by
        ``count`` (at most ``banks``), or back to 0 with ``zero``. The read addresses follow it
        without an adder on their path: a row is ``hi``, ``hi + 1`` or ``hi + 2``."""
        lb = self.lb
        s = Signal(lb + 1, name=f"{self.name}_s")
        m.d.comb += s.eq(self.lo + count)
        lo_n = s[:lb]
        his = [self.hi + k for k in range(3)]
        with m.If(take):
            with m.If(zero):
                m.d.sync += [self.lo.eq(0), self.hi.eq(0)]
                m.d.sync += [ra.eq(0) for ra in self.ra]
            with m.Else():
                m.d.sync += [self.lo.eq(lo_n), self.hi.eq(self.hi + s[lb])]
                for b, ra in enumerate(self.ra):
                    d = Signal(2, name=f"{self.name}_d{b}")
                    m.d.comb += d.eq(s[lb] + (_after(b, lo_n, self.banks)))
                    m.d.sync += ra.eq(Array(his)[d][: self.ibits])

    def run(self, m, valid, base_lo, data, count, update):
        """A beat at t0: ``valid``, its base's low bits ``base_lo``, ``data`` (one value per
        lane), ``count``; ``update(old, new, bank)`` -> ``(kept, emitted)`` is evaluated in t2
        (signals it uses must be delayed to t2 by the caller)."""
        n, B, lb, w = self.name, self.banks, self.lb, self.width
        lanes = self.lanes
        # t0 -> t1
        v1 = Signal(name=f"{n}_v1")
        lo1 = Signal(lb, name=f"{n}_lo1")
        d1 = [Signal(len(data[0]), name=f"{n}_d1_{i}") for i in range(lanes)]
        n1 = Signal(len(count), name=f"{n}_n1")
        ra1 = [Signal(self.ibits, name=f"{n}_ra1_{b}") for b in range(B)]
        m.d.sync += [v1.eq(valid), lo1.eq(base_lo), n1.eq(count)]
        m.d.sync += [q.eq(v) for q, v in zip(d1, data)]
        m.d.sync += [q.eq(v) for q, v in zip(ra1, self.ra)]
        # t1 -> t2
        v2 = Signal(name=f"{n}_v2")
        lo2 = Signal(lb, name=f"{n}_lo2")
        nb2 = [Signal(len(data[0]), name=f"{n}_new{b}") for b in range(B)]
        we2 = [Signal(name=f"{n}_we{b}") for b in range(B)]
        ra2 = [Signal(self.ibits, name=f"{n}_ra2_{b}") for b in range(B)]
        raw = [Signal(w, name=f"{n}_raw{b}") for b in range(B)]
        wq_d = [Signal(w, name=f"{n}_wd{b}") for b in range(B)]
        wq_a = [Signal(self.ibits, name=f"{n}_wa{b}") for b in range(B)]
        wq_en = [Signal(name=f"{n}_wen{b}") for b in range(B)]
        h1_d = [Signal(w, name=f"{n}_h1d{b}") for b in range(B)]
        h1_a = [Signal(self.ibits, name=f"{n}_h1a{b}") for b in range(B)]
        h1_en = [Signal(name=f"{n}_h1en{b}") for b in range(B)]
        hit_new = [Signal(name=f"{n}_hitq{b}") for b in range(B)]
        hit_old = [Signal(name=f"{n}_hitb{b}") for b in range(B)]
        byp = [Signal(w, name=f"{n}_byp{b}") for b in range(B)]
        m.d.sync += [v2.eq(v1), lo2.eq(lo1)]
        lane_bits = max(1, (lanes - 1).bit_length())
        for b in range(B):
            lane = Signal(lb, name=f"{n}_lane{b}")
            m.d.comb += lane.eq(b - lo1)
            m.d.sync += [
                nb2[b].eq(Array(d1)[lane[:lane_bits]] if lanes > 1 else d1[0]),
                we2[b].eq(v1 & (lane < n1)),
                ra2[b].eq(ra1[b]),
                raw[b].eq(self.rps[b].data),
            ]
            hb = Signal(name=f"{n}_hb{b}")
            hc = Signal(name=f"{n}_hc{b}")
            m.d.comb += [hb.eq(wq_en[b] & (wq_a[b] == ra1[b])),
                         hc.eq(h1_en[b] & (h1_a[b] == ra1[b]))]
            m.d.sync += [
                # the beat in t2 now writes its result in t3: newest
                hit_new[b].eq(we2[b] & (ra2[b] == ra1[b])),
                # written in t1 (wq) or at the edge of this beat's read (h1)
                hit_old[b].eq(hb | hc),
                byp[b].eq(Mux(hb, wq_d[b], h1_d[b])),
            ]
        # t2: update; t2 -> t3
        self.valid3 = v3 = Signal(name=f"{n}_v3")
        lo3 = Signal(lb, name=f"{n}_lo3")
        m.d.sync += [v3.eq(v2), lo3.eq(lo2)]
        er = []
        for b in range(B):
            old = Signal(w, name=f"{n}_old{b}")
            m.d.comb += old.eq(Mux(hit_new[b], wq_d[b], Mux(hit_old[b], byp[b], raw[b])))
            kept, emitted = update(old, nb2[b], b)
            m.d.sync += [wq_d[b].eq(kept), wq_a[b].eq(ra2[b]), wq_en[b].eq(we2[b]),
                         h1_d[b].eq(wq_d[b]), h1_a[b].eq(wq_a[b]), h1_en[b].eq(wq_en[b])]
            if emitted is kept:
                er.append(wq_d[b])
            else:
                e = Signal(w, name=f"{n}_er{b}")
                m.d.sync += e.eq(emitted)
                er.append(e)
            wp = self.wps[b]
            m.d.comb += [wp.addr.eq(wq_a[b]), wp.data.eq(wq_d[b]), wp.en.eq(wq_en[b])]
        self._er, self._lo3 = er, lo3

    def value(self, lane):
        """Emitted value of ``lane`` of the beat in t3."""
        return Array(self._er)[(self._lo3 + lane)[: self.lb]]


class _PipedMax:
    """The max pool's ``fast_pipeline`` read-modify-write of ``banks`` memories (as
    :class:`_PipedRMW`: lane ``i`` of a beat touches index ``base + i``, bank
    ``(base + i) % banks``), with at most one LUT level (or a compare's carry chain and one LUT
    level) between registers.

    ``advance`` runs a cycle before the beat's read (``P``); the beat then passes five cycles,
    ``t0`` to ``t4``:

    - P: the row addresses of the beat are registered from the base cursor (``hi`` or
      ``hi + 1``, both registers, chosen by the bank's place against ``lo``), so the block RAMs'
      address inputs come from flip-flops fed by one LUT; the cursor moves on by the beat's
      ``count`` (or back to 0).
    - t0: each bank reads its row; the row is compared with the rows of the beats in t1, t2
      and t3 and with the last write (the results a read cannot see yet), registered.
    - t1: the beat's lane values are rotated into bank order; of the results computed in the
      cycle before and the one before that, the newer one that hits (``byp``).
    - t2: the block RAMs' outputs registered (``raw``, in the block RAM's own output register
      on the ULX3S); the old value of each bank is the newest of: the result computed in t1's
      cycle (``wq``), ``byp``, ``raw``, registered (``old``), and whether it beats the new
      value: each candidate compared as ``Cat(value, flag) > Cat(new, 1)`` (the flag: it is
      the old value; a compare with a flag of 0 is false), ORed, with the flags of whether
      the old value counts for the value kept and the one emitted (``ko``, ``eo``).
    - t3: the newest result (computed in the cycle before, ``wq``), if it hits and counts,
      against the new value (``Cat(wq, flag) > Cat(new, 1)``), then one 3-way multiplexer
      per bit (``wq``, ``old`` if ``ko``, else the new value) into ``wq`` (the value to keep,
      written in t4), the same into ``er`` (the value to emit). The loop through ``wq`` is
      one compare and one LUT.
    - t4: ``value(lane)``: the emitted values rotated back into lane order; ``valid4``.
    """

    def __init__(self, m, name, *, banks, depth, width, lanes):
        self.name, self.banks, self.lanes, self.width = name, banks, lanes, width
        self.lb = lb = _log2(banks)
        self.ibits = ib = max(1, _log2(depth // banks))
        # the beat in t0: its rows, write enables, base bank, valid
        self.ra = [Signal(ib, name=f"{name}_ra{b}") for b in range(banks)]
        self.we0 = [Signal(name=f"{name}_we0_{b}") for b in range(banks)]
        self.lo0 = Signal(lb, name=f"{name}_lo0")
        self.v0 = Signal(name=f"{name}_v0")
        # the base cursor of the next beat: index ``hi * banks + lo``, and ``hi + 1``
        self.lo = Signal(lb, name=f"{name}_lo")
        self.hi = Signal(ib, name=f"{name}_hi")
        self.hi1 = Signal(ib, name=f"{name}_hi1", init=1 % (1 << ib))
        # ``no_rw_check``: a row read in the cycle it is written is the write of ``wq``,
        # forwarded (``hitw``), so the word read then is never used; yosys leaves out the copy of
        # the write and the multiplexer after the block RAM that would give it the old word
        # (boards.ulx3s.ACCEL_SYNTH), and ``raw`` can move into the block RAM
        self.rps, self.wps = _bank_memories(m, name, self.ra, depth // banks, width,
                                            attrs={"no_rw_check": 1})

    def advance(self, m, valid, count, zero):
        """Stage P: the beat in it (``valid``, ``count`` values, ``zero``: the cursor goes back
        to 0 after it), all three registers, goes on to t0 with its rows; the cursor moves."""
        B, lb = self.banks, self.lb
        lo, hi, hi1 = self.lo, self.hi, self.hi1
        for b in range(B):
            # bank_row: hi + 1 for the banks before the start bank lo
            m.d.sync += self.ra[b].eq(Mux(lo > b, hi1, hi) if b < B - 1 else hi)
            lane = Signal(lb, name=f"{self.name}_pl{b}")
            m.d.comb += lane.eq(b - lo)
            m.d.sync += self.we0[b].eq(valid & (lane < count))
        m.d.sync += [self.lo0.eq(lo), self.v0.eq(valid)]
        s = Signal(lb + 1, name=f"{self.name}_s")
        m.d.comb += s.eq(lo + count)
        with m.If(valid):
            with m.If(zero):
                m.d.sync += [lo.eq(0), hi.eq(0), hi1.eq(1)]
            with m.Else():
                m.d.sync += lo.eq(s[:lb])
                with m.If(s[lb]):
                    m.d.sync += [hi.eq(hi1), hi1.eq(hi1 + 1)]

    def run(self, m, data, even, emit_a):
        """The beat in t0: ``data`` (one value per lane); ``even`` and ``emit_a``
        (:func:`_pool_axis`) are its flags in t1 (delayed there by the caller)."""
        n, B, lb, w, lanes, ib = (self.name, self.banks, self.lb, self.width, self.lanes,
                                  self.ibits)

        def sigs(fmt, width=1, **kw):
            return [Signal(width, name=fmt.format(b), **kw) for b in range(B)]

        lane_bits = max(1, (lanes - 1).bit_length())
        # t0 -> t1
        v1, lo1 = Signal(name=f"{n}_v1"), Signal(lb, name=f"{n}_lo1")
        d1 = [Signal(len(data[0]), name=f"{n}_d1_{i}") for i in range(lanes)]
        we1, ra1 = sigs(n + "_we1_{}"), sigs(n + "_ra1_{}", ib)
        # hits of the beat's rows, found in t0: on the beats in t1, t2, t3 (results of the
        # cycles t3 + 2, t3 + 1, t3) and on the write from wq (result of cycle t3 - 1)
        h_t1, h_t2, h_t3, h_wq = (sigs(n + "_hit1_{}"), sigs(n + "_hit2_{}"),
                                  sigs(n + "_hit3_{}"), sigs(n + "_hitw_{}"))
        # t1 -> t2
        v2, lo2 = Signal(name=f"{n}_v2"), Signal(lb, name=f"{n}_lo2")
        nb2, we2, ra2 = sigs(n + "_new{}", w), sigs(n + "_we2_{}"), sigs(n + "_ra2_{}", ib)
        # no reset: the block RAMs' own output registers (boards.netlist)
        raw = sigs(n + "_raw{}", w, reset_less=True)
        byp = sigs(n + "_byp{}", w)
        # the newest result (wq in t3) counts for the value kept, emitted; else the old value
        fkw2, few2, fko2, feo2 = (sigs(n + "_fkw2_{}"), sigs(n + "_few2_{}"),
                                  sigs(n + "_fko2_{}"), sigs(n + "_feo2_{}"))
        # which of wq, byp, raw is the old value in t2
        sw2, sb2, sr2 = sigs(n + "_selw{}"), sigs(n + "_selb{}"), sigs(n + "_selr{}")
        # t2 -> t3
        v3, lo3 = Signal(name=f"{n}_v3"), Signal(lb, name=f"{n}_lo3")
        nb3, we3, ra3 = sigs(n + "_new3_{}", w), sigs(n + "_we3_{}"), sigs(n + "_ra3_{}", ib)
        old = sigs(n + "_old{}", w)
        fk_w, fe_w = sigs(n + "_fkw{}"), sigs(n + "_few{}")
        ko, eo = sigs(n + "_ko{}"), sigs(n + "_eo{}")     # old > new, and it counts
        # t3 -> t4
        self.valid4 = v4 = Signal(name=f"{n}_v4")
        lo4 = Signal(lb, name=f"{n}_lo4")
        wq_d, wq_a, wq_en = sigs(n + "_wd{}", w), sigs(n + "_wa{}", ib), sigs(n + "_wen{}")
        h1_d = sigs(n + "_h1d{}", w)
        er = sigs(n + "_er{}", w)

        m.d.sync += [v1.eq(self.v0), lo1.eq(self.lo0), v2.eq(v1), lo2.eq(lo1), v3.eq(v2),
                     lo3.eq(lo2), v4.eq(v3), lo4.eq(lo3)]
        m.d.sync += [q.eq(v) for q, v in zip(d1, data)]
        keep_new = even                 # the value kept is the new one
        emit_new = even & ~emit_a       # the value emitted is the new one
        for b in range(B):
            ra = self.ra[b]
            # t0
            m.d.sync += [
                we1[b].eq(self.we0[b]), ra1[b].eq(ra),
                h_t1[b].eq(we1[b] & (ra1[b] == ra)),
                h_t2[b].eq(we2[b] & (ra2[b] == ra)),
                h_t3[b].eq(we3[b] & (ra3[b] == ra)),
                h_wq[b].eq(wq_en[b] & (wq_a[b] == ra)),
            ]
            # t1: wq holds the result of cycle t0 (h_t3), h1 the one before (h_wq)
            lane = Signal(lb, name=f"{n}_lane{b}")
            m.d.comb += lane.eq(b - lo1)
            m.d.sync += [
                nb2[b].eq(Array(d1)[lane[:lane_bits]] if lanes > 1 else d1[0]),
                we2[b].eq(we1[b]), ra2[b].eq(ra1[b]),
                raw[b].eq(self.rps[b].data),
                byp[b].eq(Mux(h_t3[b], wq_d[b], h1_d[b])),
                fkw2[b].eq(h_t1[b] & ~keep_new), few2[b].eq(h_t1[b] & ~emit_new),
                fko2[b].eq(~h_t1[b] & ~keep_new), feo2[b].eq(~h_t1[b] & ~emit_new),
                sw2[b].eq(h_t2[b]), sb2[b].eq(~h_t2[b] & (h_t3[b] | h_wq[b])),
                sr2[b].eq(~h_t2[b] & ~h_t3[b] & ~h_wq[b]),
            ]
            # t2: wq holds the result of cycle t1 (sw2); the one of t2 is wq in t3 (h_t1).
            # The old value is registered, and whether it beats the new one: a compare of each
            # candidate, false unless it is the one (17 bits, the flag on top), ORed
            one = C(1, 1)
            gt_old = Signal(name=f"{n}_gto{b}")
            m.d.comb += gt_old.eq(_gt(m, Cat(wq_d[b], sw2[b]), Cat(nb2[b], one))
                                  | _gt(m, Cat(byp[b], sb2[b]), Cat(nb2[b], one))
                                  | _gt(m, Cat(raw[b], sr2[b]), Cat(nb2[b], one)))
            m.d.sync += [
                old[b].eq(Mux(sw2[b], wq_d[b], Mux(sb2[b], byp[b], raw[b]))),
                nb3[b].eq(nb2[b]), we3[b].eq(we2[b]), ra3[b].eq(ra2[b]),
                fk_w[b].eq(fkw2[b]), fe_w[b].eq(few2[b]),
                ko[b].eq(fko2[b] & gt_old), eo[b].eq(feo2[b] & gt_old),
            ]
            # t3: the newest result, if it hits and counts (the flag), against the new value
            kw, ew = Signal(name=f"{n}_kw{b}"), Signal(name=f"{n}_ew{b}")
            m.d.comb += [
                kw.eq(_gt(m, Cat(wq_d[b], fk_w[b]), Cat(nb3[b], one))),
                ew.eq(_gt(m, Cat(wq_d[b], fe_w[b]), Cat(nb3[b], one))),
            ]
            m.d.sync += [
                wq_d[b].eq(Mux(kw, wq_d[b], Mux(ko[b], old[b], nb3[b]))),
                er[b].eq(Mux(ew, wq_d[b], Mux(eo[b], old[b], nb3[b]))),
                wq_a[b].eq(ra3[b]), wq_en[b].eq(we3[b]), h1_d[b].eq(wq_d[b]),
            ]
            # t4
            wp = self.wps[b]
            m.d.comb += [wp.addr.eq(wq_a[b]), wp.data.eq(wq_d[b]), wp.en.eq(wq_en[b])]
        self._er, self._lo4 = er, lo4

    def value(self, lane):
        """Emitted value of ``lane`` of the beat in t4."""
        return Array(self._er)[(self._lo4 + lane)[: self.lb]]


class _CreditCounter:
    """The output FIFO of a ``fast_pipeline`` pool and its credits as registers: ``free`` =
    ``depth - 1`` minus the beats taken that will produce an output beat and have not left the
    FIFO (the short pipeline's rule, ``level + in flight + 1 < depth``), and input ``ready`` =
    ``free != 0`` registered: no sum of the pipeline's valid bits, no compare on the input's
    path."""

    def __init__(self, m, layout, depth):
        self.fifo = fifo.SyncFIFOBuffered(width=layout.size, depth=depth)
        m.submodules.fifo = self.fifo
        self.depth = depth

    def ready(self, m, take, will):
        """Input ``ready``; ``take``: a beat is taken now, ``will``: it will produce an output
        (a taken beat holds a credit for one cycle until ``will`` is known, registered)."""
        drop = Signal(name="credit_drop")
        m.d.sync += drop.eq(take & ~will)
        return self.ready_drop(m, take, drop)

    def ready_drop(self, m, take, drop):
        """:meth:`ready` with the credit handed back by ``drop``: high for one cycle, a fixed
        number of cycles after each taken beat that will not produce an output."""
        rd = Signal()
        free = Signal(range(self.depth), init=self.depth - 1, name="credit_free")
        free_next = Signal.like(free, name="credit_free_next")
        ready = Signal(init=1, name="credit_ready")
        m.d.comb += [rd.eq(self.fifo.r_en & self.fifo.r_rdy),
                     free_next.eq(free - take + drop + rd)]
        m.d.sync += [free.eq(free_next), ready.eq(free_next != 0)]
        return ready


class MaxPool(wiring.Component):
    """Max pool 3x3, stride 2, ceil mode, no padding, on a stream of beats.

    Shape inputs ``c`` (channels), ``h``/``w`` (input size), ``ho``/``wo`` (output size from
    ``compiler.golden.pool_out_size``). ``wo * c`` must fit ``pool_row_depth``; ``c`` must fit
    ``max_channels``. The shape must be stable from at least one cycle before a layer's first
    beat until its last beat is taken.
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
        if self._cfg.fast_pipeline:
            return self._elaborate_piped()
        # the short pipeline (small devices): read, then compare and write in the next cycle
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

    def _elaborate_piped(self):
        """``fast_pipeline``: both stages are :class:`_PipedMax` (a cursor cycle and five
        cycles each, one beat per cycle). Cycles after a beat is taken (T):

        - T: the beat is registered (nothing else reads the input).
        - T+1: the end of its pixel (:func:`_group_end_signed`), registered.
        - T+2: the pixel position moves on (:func:`_advance_xy`); both axes' emit flags of the
          beat are registered; the horizontal stage's cursor cycle (P).
        - T+3: the horizontal stage's t0; a beat that emits nothing hands its credit back
          (registered); the end of the output column (the vertical cursor's group), registered.
        - T+4: the end of the output row, from comparisons registered the cycle before; the
          vertical cursor's reset, registered.
        - T+6: the vertical stage's cursor cycle; T+7: its t0, with the horizontal result (t4).
        - T+11: the vertical stage's t4: the output FIFO is written.

        The shape inputs are read through registers delayed by the cycles since the beat was
        taken, so a stage sees the shape of the beat's layer (stable until its last beat is
        taken)."""
        m = Module()
        cfg = self._cfg
        lanes, banks = cfg.requant_units, cfg.pool_banks
        beat = Beat(width=self._width, lanes=lanes)
        out = _CreditCounter(m, beat, cfg.out_fifo_depth)
        hp = _PipedMax(m, "hp", banks=banks, depth=cfg.max_channels, width=self._width,
                       lanes=lanes)
        vp = _PipedMax(m, "vp", banks=banks, depth=cfg.pool_row_depth, width=self._width,
                       lanes=lanes)
        dim_bits = (cfg.max_dim + 1).bit_length()
        payload = self.i.payload
        cbits = len(payload.count)

        def delays(sig, n, name):
            out = [sig]
            for i in range(n):
                q = Signal(len(sig), name=f"{name}_d{i + 1}")
                m.d.sync += q.eq(out[-1])
                out.append(q)
            return out

        c_d = delays(self.c, 3, "c")
        w_d, h_d = delays(self.w, 2, "w"), delays(self.h, 2, "h")
        wo_d, ho_d = delays(self.wo, 3, "wo"), delays(self.ho, 2, "ho")

        # -- T: take -------------------------------------------------------------------------
        take = Signal()
        drop = Signal(name="credit_drop")
        m.d.comb += self.i.ready.eq(out.ready_drop(m, take, drop))
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        v_a, last_a = Signal(name="a_valid"), Signal(name="a_last")
        count_a = Signal(cbits, name="a_count")
        data_a = [Signal(self._width, name=f"a_data{lane}") for lane in range(lanes)]
        m.d.sync += [v_a.eq(take), last_a.eq(payload.last), count_a.eq(payload.count)]
        m.d.sync += [q.eq(payload.data[lane]) for lane, q in enumerate(data_a)]

        # -- T+1: end of the pixel -----------------------------------------------------------
        end = _group_end_signed(m, v_a, count_a, last_a, c_d[0], "px")
        v_b, last_b, end_b, zero_b = (Signal(name="b_valid"), Signal(name="b_last"),
                                      Signal(name="b_end"), Signal(name="b_zero"))
        m.d.sync += [v_b.eq(v_a), last_b.eq(last_a), end_b.eq(end), zero_b.eq(end | last_a)]
        count_b = _delay(m, count_a, 1, "b_count")
        data_b = [_delay(m, d, 1, f"b_data{lane}") for lane, d in enumerate(data_a)]

        # -- T+2: pixel position, emit flags; horizontal cursor --------------------------------
        x, y = Signal(dim_bits), Signal(dim_bits)
        x1, y1 = Signal(dim_bits, init=1), Signal(dim_bits, init=1)
        _advance_xy(m, v_b, end_b, last_b, w_d[2], x, y, x1, y1, wrap=~_gt(m, w_d[2], x1))
        h_even, h_a, h_b = _axis_flags(m, x, w_d[2], wo_d[2], x1, chains=True)
        v_even, v_a_, v_b_ = _axis_flags(m, y, h_d[2], ho_d[2], y1, chains=True)
        hp.advance(m, v_b, count_b, zero_b)
        v_c, hv_c = Signal(name="c_valid"), Signal(name="c_hvalid")   # hv: enters vp
        ve_c = Signal(name="c_vemit")
        he_c, ha_c, vev_c, va_c = (Signal(name="c_heven"), Signal(name="c_ha"),
                                   Signal(name="c_veven"), Signal(name="c_va"))
        m.d.sync += [v_c.eq(v_b), hv_c.eq(v_b & (h_a | h_b)), ve_c.eq(v_a_ | v_b_),
                     he_c.eq(h_even), ha_c.eq(h_a), vev_c.eq(v_even), va_c.eq(v_a_)]
        count_c = _delay(m, count_b, 1, "c_count")
        last_c = _delay(m, last_b, 1, "c_last")
        data_c = [_delay(m, d, 1, f"c_data{lane}") for lane, d in enumerate(data_b)]

        # -- T+3: horizontal t0; credit; end of the output column ------------------------------
        hp.run(m, data_c, _delay(m, he_c, 1, "h_even"), _delay(m, ha_c, 1, "h_a"))
        m.d.sync += drop.eq(v_c & ~(hv_c & ve_c))
        vend = _group_end_signed(m, hv_c, count_c, last_c, c_d[2], "col")
        hv_d, vend_d, last_d = (Signal(name="d_hvalid"), Signal(name="d_vend"),
                                Signal(name="d_last"))
        m.d.sync += [hv_d.eq(hv_c), vend_d.eq(vend), last_d.eq(last_c)]
        count_d = _delay(m, count_c, 1, "d_count")

        # -- T+4: end of the output row --------------------------------------------------------
        # vk1 >= wo from comparisons registered the cycle before (for vk1 kept, moved on by
        # one, or back to 1), with the shape of T+3's beat (wo_d[3] at T+3 is wo at its T)
        vk1 = Signal(dim_bits, init=1)     # output column + 1
        ge_kept, ge_next, ge_one = Signal(), Signal(), Signal()
        moved = Signal(2)
        m.d.sync += [ge_kept.eq(~_gt(m, wo_d[3], vk1)), ge_next.eq(~_gt(m, wo_d[3], vk1 + 1)),
                     ge_one.eq(wo_d[3] <= 1), moved.eq(0)]
        row_end = Signal()
        m.d.comb += row_end.eq(Mux(moved[1], ge_one, Mux(moved[0], ge_next, ge_kept)))
        with m.If(hv_d):
            with m.If(last_d):
                m.d.sync += [vk1.eq(1), moved.eq(2)]
            with m.Elif(vend_d):
                m.d.sync += [vk1.eq(Mux(row_end, 1, vk1 + 1)), moved.eq(Mux(row_end, 2, 1))]
        vzero_e = Signal(name="e_vzero")
        m.d.sync += vzero_e.eq(last_d | (vend_d & row_end))

        # -- T+6: vertical cursor; T+7: vertical t0 with the horizontal result ----------------
        vp.advance(m, _delay(m, hv_d, 2, "f_hvalid"), _delay(m, count_d, 2, "f_count"),
                   _delay(m, vzero_e, 1, "f_vzero"))
        vp.run(m, [hp.value(lane) for lane in range(lanes)], _delay(m, vev_c, 5, "v_even"),
               _delay(m, va_c, 5, "v_a"))

        # -- T+11: the output FIFO --------------------------------------------------------------
        o_beat = Signal(beat)
        m.d.comb += [o_beat.count.eq(_delay(m, count_d, 7, "count_v")),
                     o_beat.last.eq(_delay(m, last_d, 7, "last_v"))]
        m.d.comb += [o_beat.data[lane].eq(vp.value(lane)) for lane in range(lanes)]
        m.d.comb += [out.fifo.w_en.eq(vp.valid4 & _delay(m, ve_c, 8, "v_emit")),
                     out.fifo.w_data.eq(o_beat)]
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
    even, emit_a, emit_b = _axis_flags(m, pos, size, out_size)
    kept, emitted = [], []
    for lane in range(lanes):
        k, e = _axis_values(olds[lane], news[lane], even, emit_a)
        kept.append(k)
        emitted.append(e)
    return emit_a, emit_b, pos >> 1, kept, emitted


def _axis_flags(m, pos, size, out_size, pos1=None, chains=False):
    """``(even, emit_a, emit_b)`` of :func:`_pool_axis` for input position ``pos`` (``pos1``:
    ``pos + 1`` if at hand); ``chains``: the compares as :func:`_gt`."""
    even = ~pos[0]
    half = pos >> 1
    emit_a = Signal()
    emit_b = Signal()
    if chains:
        half_le, half_lt = ~_gt(m, half, out_size), _gt(m, out_size, half)
    else:
        half_le, half_lt = half <= out_size, half < out_size
    m.d.comb += [
        # half - 1 < out_size, for half >= 1, without the subtraction before the compare
        emit_a.eq(even & (pos >= 2) & half_le),
        emit_b.eq(((pos + 1 if pos1 is None else pos1) == size) & half_lt & ~emit_a),
    ]
    return even, emit_a, emit_b


def _axis_values(old, new, even, emit_a):
    """The partial maximum to keep and the value to emit, for one value of :func:`_pool_axis`."""
    mx = Mux(old > new, old, new)
    return Mux(even, new, mx), Mux(even & ~emit_a, new, mx)


class GlobalSum(wiring.Component):
    """``S[c] = sum over pixels of A[c, y, x]``; the sums leave as the last pixel's beats.

    Shape inputs ``c`` (channels), ``h``/``w`` (map size), stable from at least one cycle before
    a layer's first beat until its last beat is taken. Output values are ``sum_bits`` wide.
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
        if self._cfg.fast_pipeline:
            return self._elaborate_piped()
        # the short pipeline (small devices): read, then add and write in the next cycle (52 MHz
        # on the ECP5, ``python -m boards.timing gsum``; a small, slow device spares registers)
        m = Module()
        cfg = self._cfg
        lanes, banks = cfg.requant_units, cfg.pool_banks
        obeat = Beat(width=cfg.sum_bits, lanes=lanes)
        out = _Credit(m, obeat, cfg.out_fifo_depth, 2)
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

    def _elaborate_piped(self):
        """``fast_pipeline``: a :class:`_PipedRMW` (taken at t0, sums at t3, one beat per cycle);
        only the last pixel's beats take a credit."""
        m = Module()
        cfg = self._cfg
        lanes, banks = cfg.requant_units, cfg.pool_banks
        obeat = Beat(width=cfg.sum_bits, lanes=lanes)
        out = _CreditCounter(m, obeat, cfg.out_fifo_depth)
        acc = _PipedRMW(m, "sum", banks=banks, depth=cfg.max_channels, width=cfg.sum_bits,
                        lanes=lanes)
        dim_bits = (cfg.max_dim + 1).bit_length()
        x, y = Signal(dim_bits), Signal(dim_bits)
        x1, y1 = Signal(dim_bits, init=1), Signal(dim_bits, init=1)
        take = Signal()
        first = Signal()
        last = Signal()
        m.d.comb += [first.eq((x == 0) & (y == 0)), last.eq((x1 == self.w) & (y1 == self.h))]
        m.d.comb += self.i.ready.eq(out.ready(m, take, last))
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        payload = self.i.payload
        end = _group_end(m, take, payload.count, payload.last, self.c, "px")
        acc.advance(m, take, payload.count, end | payload.last)
        _advance_xy(m, take, end, payload.last, self.w, x, y, x1, y1)
        first2 = _delay(m, first, 2, "first")

        def update(old, new, b):
            total = Signal(cfg.sum_bits, name=f"total{b}")
            m.d.comb += total.eq(Mux(first2, 0, old) + new)
            return total, total

        acc.run(m, take, acc.lo, [payload.data[lane] for lane in range(lanes)],
                payload.count, update)
        o_beat = Signal(obeat)
        m.d.comb += [o_beat.count.eq(_delay(m, payload.count, 3, "count")),
                     o_beat.last.eq(_delay(m, payload.last, 3, "blast"))]
        m.d.comb += [o_beat.data[lane].eq(acc.value(lane)) for lane in range(lanes)]
        m.d.comb += [out.fifo.w_en.eq(acc.valid3 & _delay(m, last, 3, "last")),
                     out.fifo.w_data.eq(o_beat)]
        r = data.View(obeat, out.fifo.r_data)
        m.d.comb += [self.o.valid.eq(out.fifo.r_rdy), self.o.payload.eq(r),
                     out.fifo.r_en.eq(self.o.ready)]
        return m
