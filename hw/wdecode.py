"""The weight-stream decoder: rows of codebook indices from compressed per-column bit streams.

The engine reads one weight row (``columns x lanes`` codebook indices) per cycle, cyclically per
*context* (rows ``0 .. n-1`` of a step, again for every step). :class:`ColumnStreamDecoder`
decodes each context's rows ahead into a small FIFO from the per-column streams of
``compiler/wstreams.py`` (that module's docstring is the format: per column a code part and,
after it, a part of fixed-stride masks).

The columns run independently (a row leaves when every column's FIFO has it). Per column and
context three units, each a short pipeline with no data-dependent position in a loop:

- **fetch**: two word pointers, the codes cycling ``start .. end`` and the masks from ``end + 1``
  (wrapping after the pass's last mask word, counted from the rows), each reading the column
  memory when its word FIFO will have room (decided a cycle ahead; the requests of all contexts
  share the memory's one read port: ``prio``'s first; a context's codes before its masks,
  unless it has no mask word buffered or on its way);
- **lengths**: a row walker takes each row's mask (the low ``L`` bits of a mask word register
  that shifts by ``L``; all ones for a DENSE row), then its popcount, then the record's length
  from a table (``popcount * k`` per segment), into an entry FIFO (mask, length, segment, last
  row of the pass); credits keep it at most ``entry_fifo`` rows ahead;
- **cursor**: ``o`` and ``e``, start and end of the head record in bits from window word 0,
  over ``window`` word registers that only ever load from the next one. Every cycle drops
  window word 0 if it lies wholly before the head (``o >= W``, a registered flag: the window's
  shift never waits for ``go``). When the head advances (``go``), ``o' = e`` (after the pass's
  last row the start of the next word), less a word if one is dropped, and ``e' = o' +
  length`` of the next entry (held in registers after the entry FIFO): an add, its candidates
  summed beside the comparisons that choose one.

The contexts of a column share the extraction (X1 the window and ``o``; X1B and X2 the
record's codes, a logarithmic shifter in two steps; X3 codes spread to ``kmax`` bits per field
and the prefix popcounts of the mask; X4 the lane multiplexers: lane ``l`` takes field
``popcount(mask[:l])``, 0 where the mask bit is clear) and so one advance per cycle: the context
that may advance is registered a cycle ahead (``prio`` if it may start a row, else another). A
row starts only when its row-FIFO entry is certain (credits), so nothing stalls inside the
pipeline.

Timing: after ``restart`` the first row is valid 17 cycles later (the first mask word is
fetched, walked and measured first; a read's address is registered on its way to the column
memory's block RAMs, and the word once more after them); then one row per cycle while every
record of a column is at most ``word_bits`` bits and the memory keeps up, across the wrap too.
Longer records only slow it. While ``prio`` is drained at full rate the other context only
decodes in the cycles ``prio`` cannot use, so right after restarting both, the first step of the
other context starts with a bubble of about the latency; afterwards switching ``prio`` between
whole steps costs nothing.
"""

from __future__ import annotations

from amaranth.hdl import (
    Array,
    Cat,
    Const,
    Module,
    Mux,
    ResetInserter,
    Signal,
    Value,
    signed,
    unsigned,
)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .fanout import fanout_tree, tree_depth
from .fifo import CreditFIFO
from .program import wdesc_bits, wdesc_fields

__all__ = ["ColumnStreamDecoder", "StreamWeightReader", "pending_counts", "row_layout",
           "row_ok", "row_ok_counted"]


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


def row_layout(columns: int, lanes: int, kmax: int) -> data.StructLayout:
    """A decoded row: ``codes[c][l]`` (``kmax`` bits, 0 for a zero weight) and ``seg``."""
    return data.StructLayout({
        "codes": data.ArrayLayout(data.ArrayLayout(kmax, lanes), columns),
        "seg": 1,
    })


def _shift_right(value, amount, width: int):
    """``(value >> amount)[:width]`` as a logarithmic shifter that only keeps the bits the later
    stages can still reach (a plain ``bit_select`` shifts the whole value)."""
    cur = value
    for b in reversed(range(len(amount))):
        step = 1 << b
        keep = width + step - 1          # bits the remaining (lower) stages can reach
        hi = cur[step:]
        cur = Mux(amount[b], Cat(hi, Const(0, max(0, keep - len(hi))))[:keep],
                  Cat(cur, Const(0, max(0, keep - len(cur))))[:keep])
    return cur[:width]


def _times(value, k):
    """``value * k`` for a small unsigned ``k`` by shifts and adds (no multiplier block)."""
    total = Const(0, 1)
    for j in range(len(k)):
        total = total + Mux(k[j], value << j, 0)
    return total


def _any(signals):
    out = Const(0)
    for v in signals:
        out = out | v
    return out


def _all(signals):
    out = Const(1)
    for v in signals:
        out = out & v
    return out


def _arbitrate(m, prio, requests, name):
    """One grant among ``requests``: ``prio`` first, else the lowest index."""
    grants = []
    for x, req in enumerate(requests):
        g = Signal(name=f"{name}_{x}")
        blocked = _any([requests[y] & (prio == y) for y in range(len(requests)) if y != x])
        blocked = blocked | (_any(requests[:x]) & (prio != x))
        m.d.comb += g.eq(req & ~blocked)
        grants.append(g)
    return grants


def _arbitrate_reads(m, prio, requests, name):
    """One grant among ``requests[x][kind]`` (per context, in its order of precedence): the
    context ``prio`` first, then the lower context."""
    grants = [[Signal(name=f"{name}_{x}_{kd}") for kd in range(len(r))]
              for x, r in enumerate(requests)]
    for x, r in enumerate(requests):
        for kd, req in enumerate(r):
            higher = []
            for y, ry in enumerate(requests):
                for ke, other in enumerate(ry):
                    if (y, ke) == (x, kd):
                        continue
                    if y == x:
                        if ke < kd:
                            higher.append(other)
                    else:
                        higher.append(other & ((prio == y) | ((prio != x) & (y < x))))
            m.d.comb += grants[x][kd].eq(req & ~_any(higher))
    return grants


def row_ok(ctx, oks, pends) -> Value:
    """Whether context ``ctx``'s next weight row is ready to issue, for a consumer that pops
    some cycles after it issues (:class:`StreamWeightReader`: two): ``oks[k]`` (a bit per
    context, such as :attr:`StreamWeightReader.ok1` .. ``ok4``) says ``k + 1`` rows or more
    wait in the FIFO, and each of ``pends``, ``(valid, context)``, a row issued since those
    flags were formed that may still be in it (at most ``len(oks) - 1`` of them)."""
    assert len(pends) < len(oks)
    # per context, the flag of 1 + (the pending rows of that context)
    f = [Array(ok[x] for ok in oks)[sum(valid & (pctx == x) for valid, pctx in pends)]
         for x in (0, 1)]
    return Mux(ctx, f[1], f[0])


def pending_counts(m, issue, ctx, pends, name: str) -> list[Signal]:
    """Per context (0, 1), how many of ``pends`` (``(valid, context)``: a delay line of
    ``(issue, ctx)``, newest first, one register a cycle) are that context's: registers counting
    each issue in as it is made and out as it leaves the line's end, equal in every cycle to
    the sum :func:`row_ok` forms from ``pends`` (a few LUTs fewer in front of the issue)."""
    counts = []
    last_valid, last_ctx = pends[-1]
    for x in (0, 1):
        n = Signal(range(len(pends) + 1), name=f"{name}{x}")
        into = issue & (ctx if x else ~ctx)
        out = last_valid & (last_ctx if x else ~last_ctx)
        m.d.sync += n.eq(n + into - out)
        counts.append(n)
    return counts


def row_ok_counted(ctx, oks, counts) -> Value:
    """:func:`row_ok` with the pending rows of each context already counted
    (:func:`pending_counts` of at most ``len(oks) - 1`` pending rows)."""
    f = [Array(ok[x] for ok in oks)[counts[x]] for x in (0, 1)]
    return Mux(ctx, f[1], f[0])


def _at_least(value, n) -> Value:
    """``value >= n``, a constant 1 for ``n <= 0`` (Verilator's lint rejects a constant
    comparison)."""
    return Const(1) if n <= 0 else value >= n


def _le_const(value, k: int) -> Value:
    """``value <= k`` for an unsigned ``value`` and a constant ``k >= 0``, as a zero test of the
    high bits and a table of the low ones: LUT logic, not a carry chain (yosys maps a
    comparison to one, and one after an add is a second chain in series)."""
    b = _bits(k)
    if len(value) <= b:
        return value <= k
    return (value[b:] == 0) & (value[:b] <= k)


def _popcount(bits) -> Value:
    """The number of set bits (4 bits wide), as a balanced tree of 3-bit table lookups: logic
    that LUT mapping can flatten, not a chain of adders."""
    groups = []
    for i in range(0, len(bits), 3):
        part = bits[i:i + 3]
        table = Array(Const(bin(v).count("1"), 2) for v in range(1 << len(part)))
        groups.append(table[part])
    while len(groups) > 1:
        groups = [groups[i] + groups[i + 1] if i + 1 < len(groups) else groups[i]
                  for i in range(0, len(groups), 2)]
    return Cat(groups[0], Const(0, 4))[:4]


class ColumnStreamDecoder(wiring.Component):
    """Decode ``contexts`` cyclic row streams from ``columns`` per-column stream memories.

    Parameters: ``columns`` C, ``lanes`` L, ``word_bits`` W (>= L), ``kmax`` (1..8, the code
    width of the output), ``depth`` (words per column memory), ``contexts``, ``fifo_depth`` (rows
    decoded ahead per context; 8 keeps a row per cycle: the selection sees a row's credit a
    cycle after it leaves), ``init`` (initial words per column), ``max_rows`` (largest
    ``n_rows``), ``word_fifo`` (words fetched ahead per column, context and part, >= 3; the
    default, 6, or 7 with banks, keeps a word per cycle),
    ``entry_fifo`` (row lengths measured ahead per column and context, >= 1; 5 keeps a row per
    cycle), ``bank_depth`` (a power of two, or None: with it a column memory is built as banks
    of that many words, each read into a register of its own before the word is chosen: a
    cycle more from a read to its word, and the block RAMs' clock-to-out no longer in series
    with the multiplexer over a column's block RAMs).

    Ports (all in the ``sync`` domain):

    - ``w_en``, ``w_col``, ``w_addr``, ``w_data``: write one word of a column memory (rows a
      context decoded from words written after its last ``restart`` are undefined: restart it
      after a load);
    - per context ``i``: ``start[i][c]``, ``end[i][c]`` (first and last word of column ``c``'s
      code part, inclusive; its mask part follows), ``n_rows[i]``, ``n0[i]`` (rows of segment
      0, >= 1), ``k0[i]``, ``dense0[i]``, ``k1[i]``, ``dense1[i]``: held stable while the
      context runs; ``restart[i]``: a one-cycle strobe that takes the configuration, discards
      everything and begins at row 0 (a context is idle from reset until its first restart);
    - ``rows[i]``: stream of :func:`row_layout` rows, 0 .. n-1, 0 .. n-1, ... (``valid`` is a
      register);
    - ``rows_ok[i]``: ``rows[i].valid`` as a register (computed a cycle early from the FIFO
      levels, this cycle's pops and writes): a consumer's logic can start from a flip-flop;
      ``rows_ok2[i]``, ``rows_ok3[i]``, ``rows_ok4[i]``: likewise, every column holds two
      (three, four) rows or more (a consumer that pops two cycles after it decides,
      :class:`StreamWeightReader`, may take the third while the first is still in the FIFO);
      all are low the cycle after ``hold`` (a consumer's own reason not to take rows, folded
      into the registers);
    - ``prio``: the context the consumer drains now: it wins a column memory's read and the
      extraction when both contexts want them (registered as it enters: taken into account a
      cycle later for the reads, two for the extraction).

    ``k0``/``k1`` must not exceed ``kmax``; ``word_bits`` >= ``lanes``; a row's record may be
    any length up to ``lanes * kmax`` bits.
    """

    def __init__(self, columns: int = 16, lanes: int = 9, word_bits: int = 72, kmax: int = 7,
                 depth: int = 512, contexts: int = 2, fifo_depth: int = 8,
                 init: list[list[int]] | None = None, max_rows: int = 4096,
                 word_fifo: int | None = None, entry_fifo: int = 5,
                 bank_depth: int | None = None):
        if not 1 <= kmax <= 8:
            raise ValueError(f"kmax must be in 1..8, not {kmax!r}")
        if word_bits < lanes:
            raise ValueError(f"word_bits ({word_bits}) must be at least lanes ({lanes})")
        if contexts < 1 or columns < 1 or depth < 1 or fifo_depth < 1 or entry_fifo < 1:
            raise ValueError("columns, depth, contexts, fifo_depth and entry_fifo must be "
                             "positive")
        if init is not None and len(init) > columns:
            raise ValueError(f"init has {len(init)} columns, the decoder {columns}")
        self.columns, self.lanes, self.word_bits, self.kmax = columns, lanes, word_bits, kmax
        self.depth, self.contexts, self.fifo_depth = depth, contexts, fifo_depth
        self.max_rows, self.entry_fifo = max_rows, entry_fifo
        self.init = [list(w) for w in init] if init is not None else None
        if bank_depth is not None and (bank_depth < 1 or bank_depth & (bank_depth - 1)):
            raise ValueError(f"bank_depth must be a power of two, not {bank_depth!r}")
        #: banks per column memory (1: one memory, read straight into the word register)
        self.banks = 1 if bank_depth is None else -(-depth // bank_depth)
        self.bank_depth = depth if self.banks == 1 else bank_depth
        #: cycles from a read's grant to its word in the word FIFO
        self.read_stages = 3 if self.banks == 1 else 5
        #: the largest record: L codes of kmax bits
        self.record_max = lanes * kmax
        #: words of the window: offsets below 2 W plus a whole record
        self.window = -(-(2 * word_bits - 1 + self.record_max) // word_bits)
        #: masks in a mask word
        self.masks_per_word = word_bits // lanes
        if word_fifo is None:
            word_fifo = 6 + self.read_stages - 3
        if word_fifo < 3:
            raise ValueError(f"word_fifo must be at least 3, not {word_fifo!r}")
        self.word_fifo = word_fifo
        abits = _bits(depth - 1)
        rbits = _bits(max_rows)
        kbits = _bits(kmax)
        super().__init__({
            "w_en": In(1), "w_col": In(range(columns)), "w_addr": In(abits),
            "w_data": In(word_bits),
            "prio": In(range(contexts)) if contexts > 1 else In(1),
            "start": In(abits).array(contexts, columns),
            "end": In(abits).array(contexts, columns),
            "n_rows": In(rbits).array(contexts),
            "n0": In(rbits).array(contexts),
            "k0": In(kbits).array(contexts),
            "dense0": In(1).array(contexts),
            "k1": In(kbits).array(contexts),
            "dense1": In(1).array(contexts),
            "restart": In(1).array(contexts),
            "hold": In(1),
            "rows": Out(stream.Signature(row_layout(columns, lanes, kmax))).array(contexts),
            "rows_ok": Out(1).array(contexts),
            "rows_ok2": Out(1).array(contexts),
            "rows_ok3": Out(1).array(contexts),
            "rows_ok4": Out(1).array(contexts),
        })

    def elaborate(self, platform):
        m = Module()
        C, L, K = self.columns, self.lanes, self.kmax
        NX, D = self.contexts, self.fifo_depth
        abits = _bits(self.depth - 1)

        # ``prio`` registered where it enters: it comes from the consumer's sequencer, across
        # the chip, and only orders the arbitration (board build b15s: its route into the
        # read arbiters and on into the fetch's room comparison was the critical path)
        prio = Signal.like(self.prio, name="prio_q")
        m.d.sync += prio.eq(self.prio)

        pops = []
        for x in range(NX):
            pop = Signal(name=f"pop{x}")
            m.d.comb += pop.eq(self.rows[x].valid & self.rows[x].ready)
            pops.append(pop)

        # per context and segment: a record's bits by its popcount (``p * k``; a DENSE row's
        # mask is all ones), from the configuration (registered: first used several cycles
        # after a restart)
        lbits = _bits(self.record_max)
        self._prod = []
        #: (name, register, what it stands for): flags kept as registers for timing, checked
        #: against their definitions in the tests
        self._invariants = []
        for x in range(NX):
            ks = (self.k0[x], self.k1[x])
            prod = [[Signal(lbits, name=f"prod{x}_{sg}_{p}") for p in range(L + 1)]
                    for sg in (0, 1)]
            for sg in (0, 1):
                for p in range(L + 1):
                    m.d.sync += prod[sg][p].eq(_times(Const(p, 4), ks[sg]))
            self._prod.append(prod)

        # per context: its MASK rows (``nm``, below) at most a mask word, from the inputs in
        # every cycle, for the cycle after a restart (the mask fetch's first wrap)
        MPW, rbits = self.masks_per_word, _bits(self.max_rows)
        self._first_le = []
        for x in range(NX):
            n_rows, n0, dense0, dense1 = self.n_rows[x], self.n0[x], self.dense0[x], self.dense1[x]
            first_le = Signal(name=f"mremfirst{x}")
            m.d.sync += first_le.eq(Mux(dense0, Mux(dense1, 1, _le_const((n_rows - n0)[:rbits],
                                                                         MPW)),
                                        Mux(dense1, _le_const(n0, MPW), _le_const(n_rows, MPW))))
            self._first_le.append(first_le)

        fifos = [[None] * C for _ in range(NX)]
        for c in range(C):
            init = self.init[c] if self.init is not None and c < len(self.init) else []
            # per context: the mask part's and the code part's request and address
            wants = [[Signal(name=f"want{kd}_{x}_{c}") for kd in "mc"] for x in range(NX)]
            fas = [[Signal(abits, name=f"fa{kd}_{x}_{c}") for kd in "mc"] for x in range(NX)]
            # a context's masks go first while it has no mask word buffered or on its way
            # (at a restart: the row lengths wait for them), else its codes first
            urgent = [Signal(name=f"urgent_{x}_{c}") for x in range(NX)]
            grants = _arbitrate_reads(m, prio, [
                [wants[x][0] & urgent[x], wants[x][1], wants[x][0] & ~urgent[x]]
                for x in range(NX)], f"issue_{c}")
            issues = [[Signal(name=f"issue{kd}_{x}_{c}") for kd in "mc"] for x in range(NX)]
            for x in range(NX):
                m.d.comb += [issues[x][0].eq(grants[x][0] | grants[x][2]),
                             issues[x][1].eq(grants[x][1])]
            addr = fas[0][0]
            for x in range(NX):
                for kd in range(2):
                    if (x, kd) != (0, 0):
                        addr = Mux(issues[x][kd], fas[x][kd], addr)
            # the read's address and enable registered: they reach the column's many block
            # RAMs from flip-flops (the word comes a cycle later, ``_fetch``)
            raddr = Signal(abits, name=f"raddr_{c}")
            ren = Signal(name=f"ren_{c}")
            m.d.sync += [raddr.eq(addr), ren.eq(_any([g for gs in issues for g in gs]))]
            rdata = self._memory(m, c, init, raddr, ren)

            for x in range(NX):
                # the credits keep a row from being written into a full FIFO, and a row is
                # popped only while ``rows.valid`` says every column has one: neither the write
                # nor the pop is checked (board build b66: ``SyncFIFO``'s ``level != depth`` into
                # the write enable of the FIFO's LUT RAM and back into its level, 10.8 ns, the
                # critical path of the chip)
                fifo = ResetInserter(self.restart[x])(
                    CreditFIFO(width=L * K + 1, depth=D, checked_reads=False))
                m.submodules[f"fifo_{x}_{c}"] = fifo
                fifos[x][c] = fifo
                self._invariants.append((f"fifo_{x}_{c}_kept", fifo.overflow, Const(0)))
            # the word registered once more after the block RAMs (their 5.6 ns clock-to-out and
            # the multiplexer over a column's EBRs, then across the chip to the word FIFOs'
            # LUT RAM was the critical path of board build b22)
            rword = Signal(self.word_bits, name=f"rword_{c}")
            m.d.sync += rword.eq(rdata)
            self._column(m, c, prio, rword, wants, urgent, fas, issues, pops,
                         [fifos[x][c] for x in range(NX)])

        for x in range(NX):
            ok = Const(1)
            early = [Const(1)] * 4
            for c in range(C):
                ok = ok & fifos[x][c].r_rdy
                lv, w = fifos[x][c].level, fifos[x][c].w_en     # w_en: from the X4 registers
                # next cycle's level is k or more: level + write - pop >= k
                early = [e & Mux(w, Mux(pops[x], _at_least(lv, k), _at_least(lv, k - 1)),
                                 Mux(pops[x], _at_least(lv, k + 1), _at_least(lv, k)))
                         for k, e in zip((1, 2, 3, 4), early)]
            # next cycle's ``valid`` (level - pop + write != 0), a cycle early: a register;
            # and whether next cycle's level is 2, 3, 4 or more
            for reg, e in zip((self.rows_ok, self.rows_ok2, self.rows_ok3, self.rows_ok4),
                              early):
                m.d.sync += reg[x].eq(e & ~self.restart[x] & ~self.hold)
            # ``valid`` itself as such a register (without ``hold``): the pop that every
            # column's FIFO and credit take is a gate from it and ``ready``, not the AND of
            # the columns' FIFO levels across the chip
            valid = Signal(name=f"rows_valid{x}")
            m.d.sync += valid.eq(early[0] & ~self.restart[x])
            m.d.comb += self.rows[x].valid.eq(valid)
            self._invariants.append((f"rows_valid{x}", valid, ok))
            m.d.comb += self.rows[x].payload.seg.eq(fifos[x][0].r_data[L * K])
            for c in range(C):
                m.d.comb += [
                    self.rows[x].payload.codes[c].eq(fifos[x][c].r_data[: L * K]),
                    fifos[x][c].r_en.eq(pops[x]),
                ]
        return m

    def _memory(self, m, c, init, raddr, ren):
        """Column ``c``'s memory, written through ``w_*``, read at the registered ``raddr``:
        the word read, a cycle after ``raddr`` (one memory) or three (banks: each bank's own
        copy of the row, then each read into its own register, chosen by the address's bank bits
        registered three times; board build b40: a block RAM's 5.6 ns clock-to-out, 5.3 ns
        across the chip to the multiplexer over the column's 20 banks, then the word
        register)."""
        B, BD = self.banks, self.bank_depth
        bb = _bits(BD - 1) if B > 1 else len(raddr)
        outs = []
        if B > 1:
            # each bank's row registered once more, next to it (a cycle more per read): one
            # register drove the column's 40 block RAMs, spread over a row of the chip (b61,
            # b62: 12.4-14.0 ns of routing and no logic). A copy loads only when the read is in
            # its bank: each has an enable of its own, so yosys keeps every bit of every copy
            # apart (distinct initial values did not: yosys merges the copies bit by bit, and a
            # bit whose initial value was the same in many copies drove all their banks; b69:
            # bank 4's row register into bank 1's block RAM, 10.9 ns, the critical path). The
            # banks read every cycle: each word is taken exactly ``read_stages`` cycles after
            # its read, and only from the bank it was read in.
            rows = [Signal(bb, name=f"row{k}_{c}") for k in range(B)]
            for k, row in enumerate(rows):
                with m.If(raddr[bb:] == k):
                    m.d.sync += row.eq(raddr[:bb])
        for k in range(B):
            words = init[k * BD:(k + 1) * BD]
            # ``no_rw_check``: a word read in the cycle it is written may be any word. Words
            # load between layers, and what a context fetched before its next ``restart`` is
            # discarded by it, so such a word is never used; the synthesis flow may leave out
            # the logic that gives a collision the old word (yosys: a copy of the write, a
            # multiplexer after the block RAM; :data:`boards.ulx3s.ACCEL_SYNTH`)
            mem = Memory(shape=self.word_bits, depth=BD if B > 1 else self.depth, init=words,
                         attrs={"no_rw_check": 1})
            m.submodules[f"mem{c}" if B == 1 else f"mem{c}_{k}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="sync")
            sel = self.w_col == c
            if B > 1:
                sel = sel & (self.w_addr[bb:] == k)
            m.d.comb += [wp.en.eq(self.w_en & sel), wp.addr.eq(self.w_addr[:bb]),
                         wp.data.eq(self.w_data)]
            if B > 1:
                m.d.comb += [rp.addr.eq(rows[k]), rp.en.eq(1)]
            else:
                m.d.comb += [rp.addr.eq(raddr[:bb]), rp.en.eq(ren)]
            outs.append(rp.data)
        if B == 1:
            return outs[0]
        # the bank bits, with the words: two cycles after the copies, three after ``raddr``
        banks = [Signal(len(raddr) - bb, name=f"bank{i}_{c}") for i in (1, 2, 3)]
        m.d.sync += [banks[0].eq(raddr[bb:]), banks[1].eq(banks[0]), banks[2].eq(banks[1])]
        regs = []
        for k, out in enumerate(outs):
            # without a reset: a plain flip-flop, which the ULX3S build moves into the block
            # RAM's own output register (boards/netlist.py)
            q = Signal(self.word_bits, name=f"bankq{k}_{c}", reset_less=True)
            m.d.sync += q.eq(out)
            regs.append(q)
        return Array(regs)[banks[2]]

    def _fetch(self, m, run, rdata, want, fa, issue, first, wrap, pend, fifo, restart, name):
        """A word pointer: while ``run`` it asks to read at ``fa`` when ``fifo`` will have room
        (``want``, registered); an ``issue`` (granted) reads: the memory takes the registered
        address a cycle later, the word is registered after it and lands in ``fifo`` a cycle
        after that, with banks three (``pend``: the reads 1 .. ``read_stages`` cycles old), and
        ``fa`` moves on, to ``first`` when ``wrap``. Returns the words held (``fifo.level +
        sum(pend)``, a register; 0 after ``restart``, which clears ``pend`` and ``fifo``)."""
        WD = self.word_fifo
        m.d.comb += [fifo.w_en.eq(pend[-1]), fifo.w_data.eq(rdata)]
        # the words held, counted in a register of their own (issued in, read out) instead of
        # added up from the FIFO's level and the reads under way (an adder ahead of ``want``
        # and ``urgent``, 9.6 ns: python -m boards.timing decoder)
        held = Signal(range(WD + len(pend) + 1), name="held" + name)
        m.d.sync += held.eq(Mux(restart, 0, held + issue - (fifo.r_en & fifo.r_rdy)))
        # room for a word read next cycle, ignoring this cycle's FIFO read (a short path);
        # both outcomes of this cycle's ``issue`` (a late arbitration) compared beforehand
        m.d.sync += [want.eq(run & Mux(issue, held <= WD - 2, held <= WD - 1)),
                     pend[0].eq(issue)]
        m.d.sync += [q.eq(p) for p, q in zip(pend, pend[1:])]
        with m.If(issue):
            m.d.sync += fa.eq(Mux(wrap, first, fa + 1))
        return held

    def _column(self, m, c, prio, rdata, wants, urgent, fas, issues, pops, fifos):
        """Column ``c``: per context the fetch of both parts, the length unit and the cursor
        (module docstring); the extraction is shared by the contexts."""
        L, W, NX = self.lanes, self.word_bits, self.contexts
        R, NW, WD, D = self.record_max, self.window, self.word_fifo, self.fifo_depth
        EF, MPW = self.entry_fifo, self.masks_per_word
        obits = _bits(NW * W + R)
        sbits = _bits(NW * W)
        rbits = _bits(self.max_rows)
        lbits = _bits(R)
        sync, comb = m.d.sync, m.d.comb
        entry = data.StructLayout({"mask": L, "len": lbits, "seg": 1, "last": 1})
        st = []
        for x in range(NX):
            n = f"_{x}_{c}"
            s = {
                "running": Signal(name="running" + n),
                # code and mask reads issued 1 .. read_stages cycles ago
                "pend": tuple(Signal(name=f"pend{i}" + n)
                              for i in range(1, self.read_stages + 1)),
                "mpend": tuple(Signal(name=f"mpend{i}" + n)
                               for i in range(1, self.read_stages + 1)),
                "slot": [Signal(W, name=f"slot{i}" + n) for i in range(NW)],
                "sv": [Signal(name=f"sv{i}" + n) for i in range(NW)],
                "o": Signal(obits, name="o" + n),        # head record: start (from slot 0)
                "e": Signal(obits, name="e" + n),        # head record: end
                "hv": Signal(name="hv" + n),             # the head entry is valid
                "head": Signal(entry, name="head" + n),
                "credit": Signal(range(D + 1), name="credit" + n),
                "sel": Signal(name="sel" + n),           # this context may advance
                "go": Signal(name="go" + n),             # its head record advances
                "drop": Signal(name="drop" + n),         # its slot 0 is consumed
                "fits": Signal(name="fits" + n),
            }
            st.append(s)
            restart = self.restart[x]
            n_rows, n0 = self.n_rows[x], self.n0[x]
            dense0, dense1 = self.dense0[x], self.dense1[x]

            # -- codes: memory -> word FIFO (LUT RAM) -> window registers ------------------
            wfifo = ResetInserter(restart)(CreditFIFO(width=W, depth=WD))
            m.submodules["wfifo" + n] = wfifo
            self._invariants.append(("wfifo_kept" + n, wfifo.overflow, Const(0)))
            fa_c = fas[x][1]
            self._fetch(m, s["running"], rdata, wants[x][1], fa_c, issues[x][1],
                        self.start[x][c], fa_c == self.end[x][c], s["pend"], wfifo, restart,
                        "c" + n)
            slot, sv = s["slot"], s["sv"]
            # slots 0 .. i all valid, registered (from the next valid flags): slot i loads
            # from slot i + 1 (the last from the word FIFO) when a slot up to it is empty or
            # word 0 is dropped, a gate of registers, not a chain through the valid flags (b77:
            # ``o >= W`` through the flags into the word FIFO's read and its count of words
            # held, 11.7 ns, the critical path of the chip)
            lead_q = [Signal(name=f"lead{i}" + n) for i in range(NW)]
            sv_next = []
            for i in range(NW):
                free = s["drop"] | ~lead_q[i]
                up = sv[i + 1] if i + 1 < NW else wfifo.r_rdy
                sv_next.append(Mux(free, up, sv[i]))
                with m.If(free):
                    if i + 1 < NW:
                        sync += [slot[i].eq(slot[i + 1]), sv[i].eq(sv[i + 1])]
                    else:
                        sync += [slot[i].eq(wfifo.r_data), sv[i].eq(wfifo.r_rdy)]
                        comb += wfifo.r_en.eq(1)
            # the bits of the window's leading valid words, registered (from the next valid
            # flags, which depend on registers only): the head fits when e <= room
            room = Signal(range(NW * W + 1), name="room" + n)
            room_next, lead = Const(0, range(NW * W + 1)), Const(1)
            for i in range(NW):
                lead = lead & sv_next[i]
                room_next = Mux(lead, (i + 1) * W, room_next)
                sync += lead_q[i].eq(lead & ~restart)
            self._invariants += [(f"lead{i}" + n, lead_q[i], _all(sv[:i + 1]))
                                 for i in range(NW)]
            sync += room.eq(Mux(restart, 0, room_next))

            # -- masks: memory -> word FIFO -> a shifting mask word --------------------------
            mfifo = ResetInserter(restart)(CreditFIFO(width=W, depth=WD))
            m.submodules["mfifo" + n] = mfifo
            self._invariants.append(("mfifo_kept" + n, mfifo.overflow, Const(0)))
            nm = Signal(rbits, name="nm" + n)            # MASK rows of a pass
            rem = Signal(rbits, name="mrem" + n)         # masks of the pass still to fetch
            # rem <= MPW (the pass's last mask word is read next) from registers (board build
            # b58: mrem's comparison ahead of the fetch's enables, 12.19 ns): ``rlast``, set
            # from comparisons of the registers, and in the cycle after a restart the context's
            # ``nm <= MPW`` from the inputs (registered in every cycle: their comparison after
            # n_rows - n0 is a path of its own, not one into every column's flag)
            rlast = Signal(name="mremlast" + n)
            fresh = Signal(name="mfresh" + n)            # the cycle after a restart
            last_w = Signal(name="mremlastw" + n)
            sync += fresh.eq(restart)
            comb += last_w.eq(Mux(fresh, self._first_le[x], rlast))
            fa_m = fas[x][0]
            mheld = self._fetch(m, s["running"] & (nm != 0), rdata, wants[x][0], fa_m,
                                issues[x][0], self.end[x][c] + 1, last_w, s["mpend"],
                                mfifo, restart, "m" + n)
            sync += rlast.eq(Mux(issues[x][0], Mux(last_w, _le_const(nm, MPW),
                                                   _le_const(rem, 2 * MPW)), last_w))
            with m.If(issues[x][0]):
                sync += rem.eq(Mux(last_w, nm, rem - MPW))
            # at most one mask word held or on its way, after this cycle's issue (the restart
            # below sets it): the next word is asked for while the walker still has one, so a
            # pass's first mask word is there when the walker wraps to it (with ``mheld == 0``,
            # the fetch started only once the walker had taken the last word, and a read a
            # cycle longer (``read_stages`` 5) then cost a row at the wrap:
            # test_rate_one_row_per_cycle's wrap case)
            sync += urgent[x].eq(Mux(issues[x][0], mheld == 0, mheld <= 1))

            # -- lengths: row walker -> popcount -> length -> entry FIFO ---------------------
            efifo = ResetInserter(restart)(CreditFIFO(width=entry.size, depth=EF))
            m.submodules["efifo" + n] = efifo
            self._invariants.append(("efifo_kept" + n, efifo.overflow, Const(0)))
            mword = Signal(W, name="mword" + n)
            mleft = Signal(range(MPW + 1), name="mleft" + n)   # masks left in mword
            mok = Signal(name="mok" + n)                       # mleft != 0
            # the walker's row r counted down twice (mod 2**rbits) instead of up and compared:
            # a comparison of a register with a constant, not an add and a comparison of two
            # values (and the inputs load as they are: no subtraction at a restart)
            mtz = Signal(rbits, name="mtz" + n)                # n - r
            mtn = Signal(rbits, name="mtn" + n)                # n0 - r
            mz = Signal(name="mz" + n)                         # r == n - 1
            mn0 = Signal(name="mn0" + n)                       # r == n0 - 1
            mseg = Signal(name="mseg" + n)                     # r >= n0
            mcredit = Signal(range(EF + 1), name="mcredit" + n)
            # the walker's row is dense (no MASK row): Mux(mseg, dense1, dense0), a register
            # set with mseg (the inputs' multiplexer began the longest path of a column on its
            # own, 10.1 ns: python -m boards.timing decoder)
            dense_row = Signal(name="mdense" + n)
            # ``take``'s and the mask word's conditions as registers, each set with the next
            # value of what it stands for (board build b60: ``mcredit != 0`` and then
            # ``mleft == 1`` or ``last_mask`` ahead of the mask word's load, 12.27 ns, the
            # critical path of the chip): ``take`` is one gate from flip-flops, and so is the
            # load of the mask word that steers its 72 bits
            can = Signal(name="mcan" + n)                      # running & (mcredit != 0)
            # the row walked now is the mask word's last (if it is a MASK row): mleft == 1,
            # or no MASK row after it
            wl = Signal(name="mwl" + n)
            take = Signal(name="take" + n)
            take_m = Signal(name="takem" + n)
            ld = Signal(name="mld" + n)                        # the mask word loads
            # not gated by ``restart``: every register ``take`` steers is set by the restart
            # below or belongs to the mask FIFO it resets (its fan-out, board build b25)
            comb += [take.eq(can & (dense_row | mok)),
                     take_m.eq(can & mok & ~dense_row),
                     ld.eq(~mok | (take_m & wl))]
            with m.If(ld):
                comb += mfifo.r_en.eq(1)
                sync += [mword.eq(mfifo.r_data), mleft.eq(Mux(mfifo.r_rdy, MPW, 0)),
                         mok.eq(mfifo.r_rdy)]
            with m.Elif(take_m):
                sync += [mword.eq(mword >> L), mleft.eq(mleft - 1), mok.eq(mleft != 1)]
            # no MASK row after this one: at the pass's last row, or at segment 0's last when
            # segment 1 is dense (this row's own mode is ``dense_row``)
            last0 = (n_rows == 1) | ((n0 == 1) & dense1)             # ... after row 0
            last_now = mz | (mn0 & dense1)
            last_next = Mux(mz, last0, (mtz == 2) | ((mtn == 2) & dense1))
            # mleft == 1 next: without ``ld`` (a wide fan-out), as ``take_m`` on a row that is not
            # the word's last leaves mleft - 1, and a load MPW or 0 (MPW > 1)
            if MPW == 1:
                m1_next = Mux(ld, mfifo.r_rdy, ~take_m & (mleft == 1))
            else:
                m1_next = Mux(take_m, ~wl & (mleft == 2), mleft == 1)
            sync += wl.eq(m1_next | Mux(take, last_next, last_now))
            with m.If(take):
                with m.If(mz):
                    sync += [mtz.eq(n_rows), mtn.eq(n0), mz.eq(n_rows == 1),
                             mn0.eq(n0 == 1), mseg.eq(0), dense_row.eq(dense0)]
                with m.Else():
                    sync += [mtz.eq(mtz - 1), mtn.eq(mtn - 1), mz.eq(mtz == 2),
                             mn0.eq(mtn == 2), mseg.eq(mseg | mn0),
                             dense_row.eq(Mux(mseg | mn0, dense1, dense0))]
            # the row's popcount is taken from the mask word as the row is (stage a), its
            # length looked up from it a cycle later (stage b), and the entry FIFO is written
            # from stage b's registers (board build b66: the popcount's register, the lookup
            # and the segment's choice into the entry FIFO's LUT RAM, 10.7 ns)
            a_v = Signal(name="av" + n)
            a = Signal(entry, name="a" + n)
            a_pop = Signal(range(L + 1), name="apop" + n)
            sync += [a_v.eq(take), a.mask.eq(Mux(dense_row, (1 << L) - 1, mword[:L])),
                     a.seg.eq(mseg), a.last.eq(mz),
                     a_pop.eq(Mux(dense_row, L, _popcount(mword[:L])))]
            b_v = Signal(name="bv" + n)
            b = Signal(entry, name="b" + n)
            alen = Signal(lbits, name="alen" + n)
            with m.Switch(a_pop):
                for p in range(L + 1):
                    with m.Case(p):
                        comb += alen.eq(Mux(a.seg, self._prod[x][1][p], self._prod[x][0][p]))
            wentry = Signal(entry, name="went" + n)
            comb += [wentry.eq(a), wentry.len.eq(alen)]
            sync += [b_v.eq(a_v), b.eq(wentry)]
            comb += [efifo.w_en.eq(b_v), efifo.w_data.eq(b)]

            # -- the cursor ------------------------------------------------------------------
            o, e, hv, head = s["o"], s["e"], s["hv"], s["head"]
            # the entry FIFO's head in registers (a LUT RAM read is too slow in the loop), and
            # a spare entry behind it (``next1``): the FIFO is read whenever the spare is empty,
            # so its read, its pointer and count and the walker's credit hang on registers, not
            # on ``go`` (b85: the head's ``e <= room`` -> ``go`` -> the FIFO's read address and
            # level, the walker's credit, 9.8-10.0 ns)
            nv = Signal(name="nv" + n)
            nxt = Signal(entry, name="next" + n)
            nv1 = Signal(name="nv1" + n)
            nxt1 = Signal(entry, name="next1" + n)
            take_n = Signal(name="taken" + n)            # the head loads the next entry
            popped = Signal(name="popped" + n)           # an entry leaves the FIFO
            comb += [take_n.eq((s["go"] | ~hv) & nv),
                     efifo.r_en.eq(~nv1), popped.eq(~nv1 & efifo.r_rdy)]
            with m.If(take_n | ~nv):
                sync += [nv.eq(nv1 | efifo.r_rdy), nxt.eq(Mux(nv1, nxt1, efifo.r_data)),
                         nv1.eq(0)]
            with m.Elif(~nv1):
                sync += [nv1.eq(efifo.r_rdy), nxt1.eq(efifo.r_data)]
            self._invariants.append(("next1" + n, nv1 & ~nv, Const(0)))
            # not gated by ``restart`` (board build b44: the restart register's fan-out to
            # every column, then ``go`` into the entry FIFO's level, 12.8 ns): a ``go`` in a
            # restart's cycle moves only registers the restart sets (below) or resets (the
            # FIFOs), and its record is killed as it enters the extraction (``_extract``)
            comb += s["fits"].eq(s["running"] & hv & (e <= room))
            comb += s["go"].eq(s["sel"] & s["fits"])
            # a word wholly before the head is dropped, one a cycle, whatever the head does:
            # the window's shift looks at registers only (``o >= W`` is kept as a flag)
            o_ge = Signal(name="oge" + n)
            comb += s["drop"].eq(o_ge & lead_q[0])
            drop = s["drop"]
            # the next head's start: e, or after the pass's last row the start of the word after
            # the one holding e (word ceil(e / W): a thermometer of e > i W), less this cycle's
            # drop; e' = that + the next entry's length, every candidate summed beside the
            # comparisons and chosen after them
            ln = nxt.len
            gt = [e > i * W for i in range(NW)] + [Const(0)]
            words = [Mux(drop, gt[i + 1], gt[i]) for i in range(NW)]
            wrap_o, wrap_e = Const(0, obits), ln + 0
            for i in range(NW):
                wrap_o = Mux(words[i], (i + 1) * W, wrap_o)
                wrap_e = Mux(words[i], ln + (i + 1) * W, wrap_e)
            e_w, o_w = Signal(obits, name="ew" + n), Signal(obits, name="ow" + n)
            comb += [e_w.eq(e - W), o_w.eq(o - W)]      # from registers: the length adds last
            o_next = Signal(obits, name="onext" + n)
            o_c = Signal(obits, name="oc" + n)
            e_less = Signal(obits, name="eless" + n)
            comb += [e_less.eq(Mux(drop, e_w, e)), o_c.eq(Mux(drop, o_w, o)),
                     o_next.eq(Mux(head.last, wrap_o, e_less))]
            e_go = Signal(obits, name="ego" + n)
            e_idle = Signal(obits, name="eidle" + n)
            comb += [e_go.eq(Mux(head.last, wrap_e, Mux(drop, e_w + ln, e + ln))),
                     e_idle.eq(Mux(drop, o_w + ln, o + ln))]
            # o' >= W, from the comparisons of the registers
            ge_go = Mux(head.last, words[0], Mux(drop, e >= 2 * W, e >= W))
            ge_stay = Mux(drop, o >= 2 * W, o >= W)
            with m.If(s["go"]):
                sync += [o.eq(o_next), e.eq(e_go), hv.eq(nv), head.eq(nxt), o_ge.eq(ge_go)]
            with m.Elif(~hv):
                sync += [o.eq(o_c), e.eq(e_idle), hv.eq(nv), head.eq(nxt), o_ge.eq(ge_stay)]
            with m.Else():
                sync += [o.eq(o_c), e.eq(e_less), o_ge.eq(ge_stay)]
            # the walker's credit: entries in its two stages and the entry FIFO
            m_keep = Signal(range(EF + 2), name="mkeep" + n)
            m_ret = Signal(range(EF + 2), name="mret" + n)
            comb += [m_keep.eq(mcredit - take), m_ret.eq(mcredit - take + 1)]
            sync += mcredit.eq(Mux(popped, m_ret, m_keep))
            # mcredit - take != 0 (``take`` implies mcredit != 0), or a credit returns
            keep_nz = (mcredit >= 2) | ((mcredit == 1) & ~take)
            sync += can.eq(s["running"] & (popped | keep_nz))
            flags = [("mcan", can, mcredit != 0), ("mwl", wl, (mleft == 1) | last_now),
                     ("mz", mz, mtz == 1), ("mn0", mn0, mtn == 1), ("mok", mok, mleft != 0),
                     ("mremlast", last_w, rem <= MPW)]
            # (from the first restart on)
            self._invariants += [(name + n, reg, Mux(s["running"], what, reg))
                                 for name, reg, what in flags]

            # -- restart ---------------------------------------------------------------------
            # ``running`` is set by the first restart and never cleared, the same in every
            # column: written as an enable (``If(restart)``), yosys merged the columns' copies
            # into one flip-flop, whose net ran 12 ns across the chip (board build b47). Its
            # own output in its input keeps each column's copy apart.
            sync += s["running"].eq(s["running"] | restart)
            with m.If(restart):
                nm_c = Mux(dense0, Mux(dense1, 0, n_rows - n0), Mux(dense1, n0, n_rows))
                any_mask = ~dense0 | (~dense1 & (n_rows != n0))     # nm_c != 0 (n0 >= 1)
                sync += [
                    *[v.eq(0) for v in s["pend"] + s["mpend"]],
                    wants[x][1].eq(1),
                    fa_c.eq(self.start[x][c]), o.eq(0), o_ge.eq(0), hv.eq(0), nv.eq(0), nv1.eq(0),
                    wants[x][0].eq(any_mask), urgent[x].eq(1),
                    fa_m.eq(self.end[x][c] + 1),
                    nm.eq(nm_c), rem.eq(nm_c), mleft.eq(0), mok.eq(0),
                    mtz.eq(n_rows), mtn.eq(n0), mz.eq(n_rows == 1),
                    mn0.eq(n0 == 1), mseg.eq(0), dense_row.eq(dense0), mcredit.eq(EF),
                    can.eq(1), wl.eq(last0), a_v.eq(0), b_v.eq(0),
                ]
                sync += [v.eq(0) for v in sv]

        # -- which context may advance next cycle ----------------------------------------------
        elig = []
        for x, s in enumerate(st):
            # credit: both outcomes ready before ``go`` (a late select)
            c_keep = Signal(range(D + 2), name=f"ckeep_{x}_{c}")
            c_take = Signal(range(D + 2), name=f"ctake_{x}_{c}")
            comb += [c_keep.eq(s["credit"] + pops[x]), c_take.eq(s["credit"] + pops[x] - 1)]
            sync += s["credit"].eq(Mux(self.restart[x], D, Mux(s["go"], c_take, c_keep)))
            # the next selection assumes the selected context starts its row (if it does
            # not, it was waiting for words anyway) and that no row leaves this cycle (its
            # credit is seen a cycle later): no path from ``go`` or from the consumer's pop
            # (its sequencer's ``issue``, across the chip: board build b19) to the selection
            c_pess = Mux(s["sel"], s["credit"] - 1, s["credit"])
            e_next_x = Signal(name=f"elig_next_{x}_{c}")
            comb += e_next_x.eq(self.restart[x] | s["running"] & (c_pess != 0))
            elig.append(e_next_x)
        for x, g in enumerate(_arbitrate(m, prio, elig, f"selnext_{c}")):
            sync += st[x]["sel"].eq(g)

        # -- the head record to the extraction -------------------------------------------------
        def pick(f):
            v = f(0)
            for x in range(1, NX):
                v = Mux(st[x]["sel"], f(x), v)
            return v

        window = Signal(NW * W, name=f"window_{c}")
        wsel = Const(0, NW * W)
        for x in range(NX):
            wsel = wsel | Mux(st[x]["sel"], Cat(*st[x]["slot"]), 0)
        comb += window.eq(wsel)
        sel_x = Const(0, range(max(NX, 2)))
        for x in range(1, NX):
            sel_x = Mux(st[x]["sel"], x, sel_x)
        start = {
            "v": _any([s["go"] for s in st]), "x": sel_x, "window": window,
            "o": pick(lambda x: st[x]["o"][:sbits]),
            "m": pick(lambda x: st[x]["head"].mask),
            "k": pick(lambda x: Mux(st[x]["head"].seg, self.k1[x], self.k0[x])),
            "seg": pick(lambda x: st[x]["head"].seg),
        }
        self._extract(m, c, start, fifos)

    def _extract(self, m, c, start, fifos):
        """The shared extraction of column ``c``: X1 (the window and the record's offset), X1B
        (the bits from the record's 16-bit step on), X2 (the record's codes), X3 (codes spread
        to kmax bits per field, prefix popcounts of the mask), X4 (the lane multiplexers) -> the
        context's row FIFO."""
        L, K, NX = self.lanes, self.kmax, self.contexts
        pbits = _bits(L)
        comb = m.d.comb
        n = f"_{c}"

        def stage(name, fields, valid):
            regs = {k: Signal(len(v), name=f"{name}{k}{n}") for k, v in fields.items()}
            m.d.sync += [regs[k].eq(v) for k, v in fields.items()]
            vreg = Signal(name=f"{name}v{n}")
            # a restart discards its context's row (the FIFO reset discards the last write)
            kill = _any([self.restart[x] & (fields["x"] == x) for x in range(NX)])
            m.d.sync += vreg.eq(valid & ~kill)
            return vreg, regs

        keep = ("x", "m", "k", "seg")
        x1v, x1 = stage("x1", {k: start[k] for k in keep + ("window", "o")}, start["v"])
        # the record's codes in two steps of the shifter: by 16-bit steps, then by bits
        o = x1["o"]
        span = self.record_max + 15
        coarse = _shift_right(x1["window"], Cat(Const(0, 4), o[4:]), span)
        x1bv, x1b = stage("x1b", {**{k: x1[k] for k in keep}, "part": coarse, "fine": o[:4]},
                          x1v)
        codes = _shift_right(x1b["part"], x1b["fine"], self.record_max)
        x2v, x2 = stage("x2", {**{k: x1b[k] for k in keep}, "codes": codes}, x1bv)
        spread = Signal(L * K, name="spread" + n)
        with m.Switch(x2["k"]):
            for k in range(1, K + 1):
                with m.Case(k):
                    comb += spread.eq(Cat(*[Cat(x2["codes"][j * k: j * k + k],
                                                Const(0, K - k)) for j in range(L)]))
        prefix = Cat(*[Const(0, pbits) if lane == 0 else _popcount(x2["m"][:lane])[:pbits]
                       for lane in range(L)])
        x3v, x3 = stage("x3", {"x": x2["x"], "m": x2["m"], "seg": x2["seg"], "f": spread,
                               "p": prefix}, x2v)
        # the write of each context's row FIFO a flip-flop of its own (not ``x3v`` and a compare
        # of ``x3["x"]``): it drives the FIFO's LUT RAM and its level
        x3w = [Signal(name=f"x3w{x}{n}") for x in range(NX)]
        m.d.sync += [x3w[x].eq(x2v & (x2["x"] == x) & ~self.restart[x]) for x in range(NX)]
        self._invariants += [(f"x3w{x}{n}", x3w[x], x3v & (x3["x"] == x)) for x in range(NX)]
        lanes_out = []
        for lane in range(L):
            p_l = x3["p"][lane * pbits: (lane + 1) * pbits]
            v = x3["f"][0:K]
            for p in range(1, lane + 1):
                v = Mux(p_l == p, x3["f"][p * K: p * K + K], v)
            lanes_out.append(Mux(x3["m"][lane], v, 0))
        # X4: the lanes registered, and the FIFOs written from those registers (board builds
        # b77-b79: the lane multiplexers into the row FIFOs' LUT-RAM data, 10.3-10.4 ns)
        row = Signal(L * K + 1, name="x4row" + n)
        m.d.sync += row.eq(Cat(*lanes_out, x3["seg"]))
        x4w = [Signal(name=f"x4w{x}{n}") for x in range(NX)]
        m.d.sync += [x4w[x].eq(x3w[x] & ~self.restart[x]) for x in range(NX)]
        for x in range(NX):
            comb += [fifos[x].w_en.eq(x4w[x]), fifos[x].w_data.eq(row)]


class StreamWeightReader(wiring.Component):
    """The engine's compressed weight-read path (``AccelConfig.weight_streams``): a
    :class:`ColumnStreamDecoder` and a codebook lookup in place of ``hw.pe.WeightReader``.

    Memories (loaded through the ``*_en``/``*_addr``/``*_data`` ports, or ``init``):

    - the per-column stream memories of the decoder (``wstream_depth`` words of
      ``wstream_word_bits``); ``s_addr`` is ``column << bits(wstream_depth - 1) | word``;
    - the descriptor memory: one row per layer (``hw.program.wdesc_fields``), ``schedule_depth``
      rows;
    - the central codebook memory: ``codebook_depth`` signed ``weight_bits`` entries (one write
      port, one read port: block RAM), per layer one block (``cb_start``, ``cb_len``), the
      image of the lane tables while the layer runs (``compiler/wstream_image.py``);
    - per lane (``pe_columns x pe_lanes``) a lookup table of ``lookup_depth`` signed entries
      with one write port and one asynchronous read port (LUT RAM: ECP5 ``TRELLIS_DPR16X4``).

    Per layer: ``layer`` (one cycle T, the engine's ``start``: the cycle after it takes the
    command, in which its sequencer issues nothing) with ``desc``
    (its descriptor row) and ``fire`` (it has a squeeze: context 0 is used too). The
    descriptor is read (on the read port at T+1), registered into the contexts the layer uses,
    and those contexts restart at T+2 (a context the layer does not use keeps its registers: it
    stays consistent, and no one reads it). Concurrently the loader copies the layer's block
    into every lane's table, one entry per cycle (``table[i] = central[cb_start + i]``): the
    central reads at T+2 .. T+1+cb_len, each entry a cycle later in every column's copy of
    (write enable, address, data) (a register per column: each drives the ``pe_lanes`` tables
    of its column), written into the tables at the clock edge after. ``ok`` is low from T+1
    until the copy's last write is in the column registers (T+3+cb_len at the earliest): an
    issue in that cycle reads the tables a cycle later, after the write. The engine takes the
    next command only after the previous layer's last output beat has left, several cycles
    after its last weight row was looked up, so the copy never overwrites an entry a lookup of
    the previous layer still reads.

    Per pass: ``ctx`` is the context of the step being issued (0 squeeze, 1 expands or a
    plain convolution; it is the decoder's ``prio``); ``ok`` says that context's next row is
    decoded (and the tables are loaded): :func:`row_ok` of ``ok1``, ``ok2``, ``ok3``
    (registers, a bit per context; ``ok4`` for a consumer that registers them once more) and
    the issues of the two cycles before. The consumer's issue (only with ``ok``) takes the row
    at t0 and reaches the reader registered, at t1: ``issued`` with its context ``issued_ctx``
    (the consumer's own flip-flops: its issue, which steers the consumer's whole pass state,
    drives nothing out here). The reader registers them once more, as a pop per context and
    the context: at t2 the row leaves the decoder's FIFO and its codes and the base of its
    (context, segment) codebook are registered; at t3 every lane registers its table address
    ``base + code``, at t4 it reads its table there (asynchronously) and at t5 ``r_data``
    holds the signed weights, until the next issue: :attr:`latency` 5, three cycles more than
    the dense ``WeightReader`` (the engine registers the dense weights twice more to meet the
    lanes, so both reach the column array in the same cycle).

    ``init``: an object with ``words`` (per column), ``desc_rows`` and ``codebook`` (signed
    entries of the central memory), such as ``compiler.wstream_image.StreamImage``.
    """

    #: cycles from the issue (``issued`` a cycle later) to the weights on ``r_data``
    latency = 5

    def __init__(self, cfg: AccelConfig, *, init=None):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"StreamWeightReader needs an AccelConfig, not {cfg!r}")
        if not cfg.weight_streams:
            raise ValueError(f"configuration {cfg.name!r} reads dense weight rows "
                             f"(weight_streams is False)")
        self._cfg = cfg
        self._init = init
        cols, lanes = cfg.pe_columns, cfg.pe_lanes
        self._abits = _bits(cfg.wstream_depth - 1)
        if init is not None:
            for what, n, limit in (("columns", len(init.words), cols),
                                   ("descriptor rows", len(init.desc_rows), cfg.schedule_depth),
                                   ("codebook entries", len(init.codebook), cfg.codebook_depth)):
                if n > limit:
                    raise ValueError(f"StreamWeightReader init has {n} {what}, the memory "
                                     f"{limit}")
        super().__init__({
            "s_en": In(1), "s_addr": In(self._abits + _bits(cols - 1)),
            "s_data": In(cfg.wstream_word_bits),
            "d_en": In(1), "d_addr": In(range(cfg.schedule_depth)), "d_data": In(wdesc_bits(cfg)),
            "c_en": In(1), "c_addr": In(range(cfg.codebook_depth)),
            "c_data": In(cfg.weight_bits),
            "layer": In(1), "desc": In(range(cfg.schedule_depth)), "fire": In(1),
            "ctx": In(1), "ok": Out(1), "issued": In(1), "issued_ctx": In(1),
            "ok1": Out(2), "ok2": Out(2), "ok3": Out(2), "ok4": Out(2),
            "r_data": Out(data.ArrayLayout(data.ArrayLayout(signed(cfg.weight_bits), lanes),
                                           cols)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        cols, lanes, kmax = cfg.pe_columns, cfg.pe_lanes, cfg.wstream_kmax
        tbits = _bits(cfg.lookup_depth - 1)
        init = self._init
        dec = ColumnStreamDecoder(columns=cols, lanes=lanes, word_bits=cfg.wstream_word_bits,
                                  kmax=kmax, depth=cfg.wstream_depth, contexts=2,
                                  # a row leaves two cycles after its issue, and the
                                  # engine sees the flags a cycle late: four more slots than
                                  # the decoder's 8 keep a row a cycle
                                  fifo_depth=12,
                                  init=None if init is None else init.words,
                                  max_rows=cfg.weight_depth,
                                  bank_depth=cfg.wstream_bank_depth or None)
        m.submodules.decoder = dec
        m.d.comb += [dec.w_en.eq(self.s_en), dec.w_col.eq(self.s_addr[self._abits:]),
                     dec.w_addr.eq(self.s_addr[:self._abits]), dec.w_data.eq(self.s_data)]

        # -- descriptors: read at the command, registered, then the contexts restart ---------
        fields = wdesc_fields(cfg)
        layout = data.StructLayout({name: unsigned(bits) for name, bits in fields})
        m.submodules.desc_mem = dmem = Memory(shape=layout.size, depth=cfg.schedule_depth,
                                              init=[] if init is None else init.desc_rows)
        dwp, drp = dmem.write_port(), dmem.read_port(domain="sync")
        m.d.comb += [dwp.en.eq(self.d_en), dwp.addr.eq(self.d_addr), dwp.data.eq(self.d_data),
                     drp.en.eq(self.layer), drp.addr.eq(self.desc)]
        row = data.View(layout, drp.data)
        got = Signal()              # the descriptor is on the read port
        use0 = Signal()
        restart = Signal(2)
        m.d.sync += [got.eq(self.layer), restart.eq(Cat(got & use0, got))]
        with m.If(self.layer):
            m.d.sync += use0.eq(self.fire)
        regs = {}
        for name, bits in fields:
            if not name.startswith("c0_") and not name.startswith("c1_"):
                continue            # the codebook block: taken by the loader below
            x = int(name[1])
            reg = Signal(bits, name=f"wd_{name}")
            regs[name] = reg
            with m.If(got & (use0 if x == 0 else 1)):
                m.d.sync += reg.eq(getattr(row, name))
        for x in (0, 1):
            for c in range(cols):
                m.d.comb += [dec.start[x][c].eq(regs[f"c{x}_start{c}"]),
                             dec.end[x][c].eq(regs[f"c{x}_end{c}"])]
            for name in ("n_rows", "n0", "k0", "dense0", "k1", "dense1"):
                m.d.comb += getattr(dec, name)[x].eq(regs[f"c{x}_{name}"])
            m.d.comb += dec.restart[x].eq(restart[x])

        # -- the loader: the layer's block of the central memory into every lane's table ------
        cb_init = [] if init is None else [int(v) for v in init.codebook]
        m.submodules.codebook = cmem = Memory(shape=signed(cfg.weight_bits),
                                              depth=cfg.codebook_depth, init=cb_init)
        cwp, crp = cmem.write_port(), cmem.read_port(domain="sync")
        m.d.comb += [cwp.en.eq(self.c_en), cwp.addr.eq(self.c_addr), cwp.data.eq(self.c_data)]
        left = Signal(range(cfg.lookup_depth + 1))       # entries still to read
        src = Signal(range(cfg.codebook_depth + 1))      # the next one's central address
        dst = Signal(tbits)                              # and its table index
        rd_v = Signal()                                  # an entry on crp.data (read last cycle)
        rd_dst = Signal(tbits)
        m.d.comb += [crp.en.eq(left != 0), crp.addr.eq(src)]
        m.d.sync += [rd_v.eq(left != 0), rd_dst.eq(dst)]
        with m.If(got):
            m.d.sync += [left.eq(row.cb_len), src.eq(row.cb_start), dst.eq(0)]
        with m.Elif(left != 0):
            m.d.sync += [left.eq(left - 1), src.eq(src + 1), dst.eq(dst + 1)]
        # a copy per column of the write (the fanout of each register: one column's tables),
        # through a tree of registers that yosys does not merge (b33: merged into one, the
        # address's net ran 15.0 ns across the chip); the copies start as ones or zeros, which
        # may write one entry at reset: every layer loads its block before it looks one up
        col_we = fanout_tree(m, rd_v, cols, name="tw_en")
        col_addr = fanout_tree(m, rd_dst, cols, name="tw_addr")
        col_data = fanout_tree(m, crp.data, cols, name="tw_data")
        # the copy is under way (``got | left != 0 | rd_v`` and the tree's registers),
        # registered: from the values a cycle before, ``layer | got | left != 0`` and that
        # for the tree's extra cycles (a layer's block is never empty: every codebook has
        # 2**k >= 2 entries), so ``ok`` is a register and a gate
        copying = Signal()
        m.d.comb += copying.eq(self.layer | got | (left != 0))
        lag = [Signal(name=f"copying_d{i}") for i in range(tree_depth(cols) - 1)]
        for i, reg in enumerate(lag):
            m.d.sync += reg.eq(lag[i - 1] if i else copying)
        loading = Signal()
        m.d.sync += loading.eq(copying | Cat(*lag).any())

        # -- the rows: gate, pop (two cycles after the issue), look up ------------------------
        # the row is popped at t2, from the reader's own registers of the consumer's registers
        # of its issue: the sequencer's pass decision does not run on across the chip into
        # every column's FIFO (board build b26), nor is it a flip-flop's input here (b30: such
        # a flip-flop, merged with the engine's first issue delay, pulled the issue logic away
        # from the sequencer), nor do the sequencer's registers of it drive the columns' pops,
        # credits and flags and the codes' multiplexer (b67: its register of the stage, pulled
        # towards the decoder, 5.9 ns from the issue logic it also feeds; 214 paths over
        # 10 ns, the columns' flags and credits and 112 bits of the codes among them). Until
        # then the issued rows are still in the FIFO: a third issue at t2 needs three rows,
        # ``rows_ok3``.
        issue_q, ctx_q = self.issued, self.issued_ctx
        pop0, pop1, ctx_2 = Signal(), Signal(), Signal()
        m.d.sync += [pop0.eq(issue_q & ~ctx_q), pop1.eq(issue_q & ctx_q), ctx_2.eq(ctx_q)]
        # ``ok1``..``ok3``: the decoder's registers, low while the tables load; the engine's
        # sequencer forms ``ok`` from them and its own registers (``row_ok``), next to its issue
        m.d.comb += [
            # the flags fall a cycle after ``loading`` (b31: ``layer``, the engine's start, into
            # every column's flags was 11.7 ns of routing); the engine's sequencer issues
            # nothing before T+5 and sees the flags a cycle late, from T+4 (docs above)
            dec.hold.eq(loading),
            self.ok1.eq(Cat(dec.rows_ok[0], dec.rows_ok[1])),
            self.ok2.eq(Cat(dec.rows_ok2[0], dec.rows_ok2[1])),
            self.ok3.eq(Cat(dec.rows_ok3[0], dec.rows_ok3[1])),
            self.ok4.eq(Cat(dec.rows_ok4[0], dec.rows_ok4[1])),
            dec.prio.eq(self.ctx),
            self.ok.eq(row_ok(self.ctx, [self.ok1, self.ok2, self.ok3],
                              [(issue_q, ctx_q), (pop0 | pop1, pop1)]) & ~loading),
            dec.rows[0].ready.eq(pop0),
            dec.rows[1].ready.eq(pop1),
        ]
        head = Mux(ctx_2, dec.rows[1].payload.as_value(), dec.rows[0].payload.as_value())
        rowv = data.View(row_layout(cols, lanes, kmax), head)
        base = Mux(ctx_2, Mux(rowv.seg, regs["c1_base1"], regs["c1_base0"]),
                   Mux(rowv.seg, regs["c0_base1"], regs["c0_base0"]))
        codes_q = Signal(row_layout(cols, lanes, kmax))
        base_q = Signal(tbits)
        look_a = Signal()           # the lanes' table addresses formed from codes_q (t3)
        look = Signal()             # the lane tables read at those addresses (t4)
        m.d.sync += [codes_q.eq(head), base_q.eq(base), look_a.eq(pop0 | pop1),
                     look.eq(look_a)]
        for c in range(cols):
            for lane in range(lanes):
                # LUT RAM: yosys folds r_data into a synchronous read port and would rather
                # spend a block RAM per lane (ECP5: 208 in all)
                table = Memory(shape=signed(cfg.weight_bits), depth=cfg.lookup_depth, init=[],
                               attrs={"ram_style": "distributed"})
                m.submodules[f"table_{c}_{lane}"] = table
                twp, trp = table.write_port(), table.read_port(domain="comb")
                # the address registered: the add, the LUT RAM's read and its multiplexer
                # into r_data were up to 11.8 ns with the routing (board build b54)
                addr = Signal(tbits, name=f"taddr_{c}_{lane}")
                m.d.sync += addr.eq(base_q + codes_q.codes[c][lane])
                m.d.comb += [twp.en.eq(col_we[c]), twp.addr.eq(col_addr[c]),
                             twp.data.eq(col_data[c]), trp.addr.eq(addr)]
                with m.If(look):
                    m.d.sync += self.r_data[c][lane].eq(trp.data)
        return m
