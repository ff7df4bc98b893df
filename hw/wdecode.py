"""The weight-stream decoder: rows of codebook indices from compressed per-column bit streams.

The engine reads one weight row (``columns x lanes`` codebook indices) per cycle, cyclically per
*context* (rows ``0 .. n-1`` of a step, again for every step). :class:`ColumnStreamDecoder`
decodes each context's rows ahead into a small FIFO from the per-column streams of
``compiler/wstreams.py`` (that module's docstring is the format).

The columns run independently (a row leaves when every column's FIFO has it). Per column:

- **per context**: a word pointer cycling ``start .. end`` that reads the column memory when the
  context's word FIFO will have room (decided a cycle ahead, ``want``; the contexts share the
  memory's one read port, ``prio`` wins); a word FIFO (``word_fifo`` words, LUT RAM); the
  window, ``window`` word registers that only ever load from the next one (no data
  multiplexer); the cursor: ``o`` and ``e`` (start and end of the head record, bits from window
  word 0), ``M`` (the ``L`` bits at ``o``: the next row's mask when the head record starts with
  one), the head row's mask, ``k``, mode and segment, the rows ``r+1``, ``r+2`` (mod ``n``)
  and their segments, and a credit of free row-FIFO entries;
- **one cursor datapath shared by the contexts**: the context it serves is registered a cycle
  ahead (``prio`` if it may start a row, else the other). When the head record advances, the
  next record's length is ``[L] + popcount(M) * k`` (a table per context and segment, or
  ``L * k`` for DENSE) and ``M`` is cut from the window at ``e``, the next record's start: the
  format puts the next mask first so that ``M`` is known a row ahead. A cycle holds either
  ``e -> select -> M`` or ``M -> popcount -> table -> + base -> e``, never offset -> extract
  -> popcount -> multiply -> offset. After the last row it skips the rest of the word and the
  header (``o`` may then run up to a word ahead of window word 0: one word is dropped per
  cycle, and a cycle without an advance drops a word owed), so the wrap costs no cycle;
- **extraction** (shared, no feedback): X1 holds the window and ``o``; X2 the record's codes
  (a logarithmic shifter); X3 the codes spread to ``kmax`` bits per field (by ``k``) and the
  prefix popcounts of the mask; the lane multiplexers (lane ``l`` takes field
  ``popcount(mask[:l])``, 0 where the mask bit is clear; a DENSE row takes a full mask) write
  the context's row FIFO;
- **credit**: a row starts only when its FIFO entry is certain (free entries minus rows in
  flight), so nothing stalls inside the pipeline.

Timing: after ``restart`` the first row is valid 9-12 cycles later; then one row per cycle
while every record of a column is at most ``word_bits`` bits and the memory keeps up, across
the wrap too (``fifo_depth`` >= 5 covers the credit loop). Longer records only slow it. The
datapath serves one context per cycle: while ``prio`` is drained at full rate the other context
only decodes in the cycles ``prio`` cannot use, so right after restarting both, the first step
of the other context starts with a bubble of about the latency; afterwards switching ``prio``
between whole steps costs nothing.
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
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .program import wdesc_bits, wdesc_fields

__all__ = ["ColumnStreamDecoder", "StreamWeightReader", "row_layout"]


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


def _select(m, value, amount, width: int, limit: int, name: str):
    """``value[amount : amount + width]`` for ``amount < limit``: a coarse multiplexer (16-bit
    steps, one case per step) and a fine one (4 stages), a short path: the record-length loop
    goes through it."""
    span = width + 15
    blocks = -(-limit // 16)
    pad = Cat(value, Const(0, max(0, 16 * blocks + span - len(value))))
    coarse = Signal(span, name=name)
    with m.Switch(amount[4:]):
        for q in range(blocks):
            with m.Case(q):
                m.d.comb += coarse.eq(pad[16 * q: 16 * q + span])
    return _shift_right(coarse, amount[:4], width)


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
    decoded ahead per context), ``init`` (initial words per column), ``max_rows`` (largest
    ``n_rows``), ``word_fifo`` (words fetched ahead per column and context, >= 3).

    Ports (all in the ``sync`` domain):

    - ``w_en``, ``w_col``, ``w_addr``, ``w_data``: write one word of a column memory;
    - per context ``i``: ``start[i][c]``, ``end[i][c]`` (first and last word of column ``c``'s
      stream, inclusive), ``n_rows[i]``, ``n0[i]`` (rows of segment 0, >= 1), ``k0[i]``,
      ``dense0[i]``, ``k1[i]``, ``dense1[i]``: held stable while the context runs;
      ``restart[i]``: a one-cycle strobe that takes the configuration, discards everything and
      begins at row 0 (a context is idle from reset until its first restart);
    - ``rows[i]``: stream of :func:`row_layout` rows, 0 .. n-1, 0 .. n-1, ...;
    - ``prio``: the context the consumer drains now: it wins a column memory's read and the
      cursor datapath when both contexts want them (taken into account a cycle later).

    ``k0``/``k1`` must not exceed ``kmax``; ``word_bits`` >= ``lanes``; a row's record may be
    any length up to ``lanes * (kmax + 1)`` bits.
    """

    def __init__(self, columns: int = 16, lanes: int = 9, word_bits: int = 72, kmax: int = 7,
                 depth: int = 512, contexts: int = 2, fifo_depth: int = 5,
                 init: list[list[int]] | None = None, max_rows: int = 4096,
                 word_fifo: int = 4):
        if not 1 <= kmax <= 8:
            raise ValueError(f"kmax must be in 1..8, not {kmax!r}")
        if word_bits < lanes:
            raise ValueError(f"word_bits ({word_bits}) must be at least lanes ({lanes})")
        if contexts < 1 or columns < 1 or depth < 1 or fifo_depth < 1:
            raise ValueError("columns, depth, contexts and fifo_depth must be positive")
        if init is not None and len(init) > columns:
            raise ValueError(f"init has {len(init)} columns, the decoder {columns}")
        self.columns, self.lanes, self.word_bits, self.kmax = columns, lanes, word_bits, kmax
        self.depth, self.contexts, self.fifo_depth = depth, contexts, fifo_depth
        self.max_rows = max_rows
        self.init = [list(w) for w in init] if init is not None else None
        #: the largest record: the next row's mask and L codes of kmax bits
        self.record_max = lanes + lanes * kmax
        #: words of the window: offsets below 2 W plus a whole record
        self.window = -(-(2 * word_bits - 1 + self.record_max) // word_bits)
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
            "rows": Out(stream.Signature(row_layout(columns, lanes, kmax))).array(contexts),
        })

    def elaborate(self, platform):
        m = Module()
        C, L, K = self.columns, self.lanes, self.kmax
        NX, D = self.contexts, self.fifo_depth
        abits = _bits(self.depth - 1)

        pops = []
        for x in range(NX):
            pop = Signal(name=f"pop{x}")
            m.d.comb += pop.eq(self.rows[x].valid & self.rows[x].ready)
            pops.append(pop)

        # per context and segment: the code bits of a row by its popcount (L * k if DENSE),
        # from the configuration (registered: first used a few cycles after a restart)
        lbits = _bits(self.record_max)
        self._prod = []
        for x in range(NX):
            ks, ds = (self.k0[x], self.k1[x]), (self.dense0[x], self.dense1[x])
            prod = [[Signal(lbits, name=f"prod{x}_{sg}_{p}") for p in range(L + 1)]
                    for sg in (0, 1)]
            for sg in (0, 1):
                for p in range(L + 1):
                    m.d.sync += prod[sg][p].eq(_times(Const(L if p == L else p, 4), ks[sg]))
                    if p < L:
                        with m.If(ds[sg]):
                            m.d.sync += prod[sg][p].eq(_times(Const(L, 4), ks[sg]))
            self._prod.append(prod)

        fifos = [[None] * C for _ in range(NX)]
        for c in range(C):
            init = self.init[c] if self.init is not None and c < len(self.init) else []
            mem = Memory(shape=self.word_bits, depth=self.depth, init=init)
            m.submodules[f"mem{c}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="sync")
            m.d.comb += [wp.en.eq(self.w_en & (self.w_col == c)), wp.addr.eq(self.w_addr),
                         wp.data.eq(self.w_data)]
            wants = [Signal(name=f"want_{x}_{c}") for x in range(NX)]
            fas = [Signal(abits, name=f"fa_{x}_{c}") for x in range(NX)]
            issues = _arbitrate(m, self.prio, wants, f"issue_{c}")
            addr = fas[0]
            for x in range(1, NX):
                addr = Mux(issues[x], fas[x], addr)
            m.d.comb += [rp.addr.eq(addr), rp.en.eq(_any(issues))]

            for x in range(NX):
                fifo = ResetInserter(self.restart[x])(SyncFIFO(width=L * K + 1, depth=D))
                m.submodules[f"fifo_{x}_{c}"] = fifo
                fifos[x][c] = fifo
            self._column(m, c, rp.data, wants, fas, issues, pops,
                         [fifos[x][c] for x in range(NX)])

        for x in range(NX):
            ok = Const(1)
            for c in range(C):
                ok = ok & fifos[x][c].r_rdy
            m.d.comb += self.rows[x].valid.eq(ok)
            m.d.comb += self.rows[x].payload.seg.eq(fifos[x][0].r_data[L * K])
            for c in range(C):
                m.d.comb += [
                    self.rows[x].payload.codes[c].eq(fifos[x][c].r_data[: L * K]),
                    fifos[x][c].r_en.eq(pops[x]),
                ]
        return m

    def _column(self, m, c, rdata, wants, fas, issues, pops, fifos):
        """Column ``c``: per context the fetch, the bit buffer, the cursor state and the two
        loops below (each context computes its next ``e``, ``M`` and ``mv`` from its own
        registers); one shared datapath for the rest of the context selected this cycle
        (registered a cycle ahead: ``prio`` if it may start a row, else another).

        The cursor keeps ``o`` (start of the head record) and ``e`` (its end) as registers and
        ``M``, the mask at ``o`` (the next row's mask when the head record starts with one),
        taken a cycle early: when the head advances, ``M`` is cut from the window at ``e`` (the
        next record's start) while ``len_{r+1}`` is computed from the old ``M``. So one cycle
        holds either ``e -> select -> M`` or ``M -> popcount -> table -> + o' -> e'``."""
        L, W, NX = self.lanes, self.word_bits, self.contexts
        R, NW, WD, D = self.record_max, self.window, self.word_fifo, self.fifo_depth
        obits = _bits(2 * NW * W + 2 * W + R)
        sbits = _bits(2 * W - 1)
        rbits = _bits(self.max_rows)
        sync, comb = m.d.sync, m.d.comb
        st = []
        for x in range(NX):
            n = f"_{x}_{c}"
            s = {
                "running": Signal(name="running" + n),
                "pend": Signal(name="pend" + n),        # read issued last cycle: word in rdata
                "slot": [Signal(W, name=f"slot{i}" + n) for i in range(NW)],
                "sv": [Signal(name=f"sv{i}" + n) for i in range(NW)],
                "o": Signal(obits, name="o" + n),        # head record: start (from slot 0)
                "e": Signal(obits, name="e" + n),        # head record: end
                "M": Signal(L, name="M" + n),            # the L bits at o, if mv
                "mv": Signal(name="mv" + n),
                "hmask": Signal(L, name="hmask" + n),    # head row: mask, k, dense, seg
                "hk": Signal(len(self.k0[x]), name="hk" + n),
                "hdense": Signal(name="hdense" + n),
                "hhdr": Signal(name="hhdr" + n),         # head record starts with the next mask
                "hseg": Signal(name="hseg" + n),
                "pseudo": Signal(name="pseudo" + n),     # the head is the header (no row)
                "r1": Signal(rbits, name="r1" + n),      # (head row + 1) mod n
                "r2": Signal(rbits, name="r2" + n),      # (head row + 2) mod n
                "s1": Signal(name="s1" + n),             # segment of row r1
                "s2": Signal(name="s2" + n),             # segment of row r2
                "z1": Signal(name="z1" + n),             # r1 == 0 (the head is the last row)
                "credit": Signal(range(D + 1), name="credit" + n),
                "sel": Signal(name="sel" + n),           # this context uses the datapath
                "go": Signal(name="go" + n),             # its head record advances
                "drop": Signal(name="drop" + n),         # its slot 0 is consumed
                "avail": Signal(range(NW + 1), name="avail" + n),
                "fits": Signal(name="fits" + n),
            }
            st.append(s)
            restart = self.restart[x]
            # -- words: memory -> word FIFO (LUT RAM) -> window registers -------------------
            wfifo = ResetInserter(restart)(SyncFIFO(width=W, depth=WD))
            m.submodules["wfifo" + n] = wfifo
            comb += [wfifo.w_en.eq(s["pend"]), wfifo.w_data.eq(rdata)]
            slot, sv = s["slot"], s["sv"]
            free = s["drop"] | ~sv[0]
            for i in range(NW):
                if i > 0:
                    free = free | ~sv[i]
                with m.If(free):
                    if i + 1 < NW:
                        sync += [slot[i].eq(slot[i + 1]), sv[i].eq(sv[i + 1])]
                    else:
                        sync += [slot[i].eq(wfifo.r_data), sv[i].eq(wfifo.r_rdy)]
                        comb += wfifo.r_en.eq(1)
            # room for a word read next cycle, ignoring this cycle's FIFO read (a short path)
            sync += [
                wants[x].eq(s["running"] & (wfifo.level + s["pend"] + issues[x] + 1 <= WD)),
                s["pend"].eq(issues[x]),
            ]
            with m.If(issues[x]):
                sync += fas[x].eq(Mux(fas[x] == self.end[x][c], self.start[x][c], fas[x] + 1))
            run, acc = Const(1), Const(0, range(NW + 1))
            for i in range(NW):
                run = run & sv[i]
                acc = acc + run
            comb += s["avail"].eq(acc)
            # the head record is in the window (and, if it starts with a mask, M holds it)
            fits_at = Cat(*[s["e"] <= i * W for i in range(NW + 1)])
            comb += s["fits"].eq(s["running"] & ~restart & (s["o"] < 2 * W) &
                                 fits_at.bit_select(s["avail"], 1) & (s["mv"] | ~s["hhdr"]))

        # -- the shared datapath: the selected context's record -----------------------------
        def pick(f):
            v = f(0)
            for x in range(1, NX):
                v = Mux(st[x]["sel"], f(x), v)
            return v

        seg1 = pick(lambda x: st[x]["s1"])
        seg2 = pick(lambda x: st[x]["s2"])
        k0, k1 = pick(lambda x: self.k0[x]), pick(lambda x: self.k1[x])
        dense0, dense1 = pick(lambda x: self.dense0[x]), pick(lambda x: self.dense1[x])
        o = Signal(obits, name=f"o_{c}")
        e = Signal(obits, name=f"e_{c}")
        pseudo = Signal(name=f"pseudo_{c}")
        M = Signal(L, name=f"M_{c}")
        comb += [o.eq(pick(lambda x: st[x]["o"])), e.eq(pick(lambda x: st[x]["e"])),
                 pseudo.eq(pick(lambda x: st[x]["pseudo"])), M.eq(pick(lambda x: st[x]["M"]))]
        wrapnow = pick(lambda x: st[x]["z1"]) & ~pseudo
        k_1 = Mux(seg1, k1, k0)
        dense_1 = Mux(seg1, dense1, dense0)
        hdr_1 = ~Mux(seg2, dense1, dense0)
        go = Signal(name=f"go_{c}")
        comb += go.eq(_any([s["sel"] & s["fits"] for s in st]))

        window = Signal(NW * W, name=f"window_{c}")
        wsel = Const(0, NW * W)
        for x in range(NX):
            wsel = wsel | Mux(st[x]["sel"], Cat(*st[x]["slot"]), 0)
        comb += window.eq(wsel)

        # the next head's start, in the window before this cycle's drop (wrap: the word after
        # the one holding e, past row 0's mask in the header) and after it (o_next)
        past = [e > i * W for i in range(NW + 1)]      # past[i]: e is beyond word i's start
        skip = Mux(dense0, 0, L)
        o_next = Signal(obits, name=f"o_next_{c}")
        wrap_o = Const(0, obits)                        # (q - 1) * W (0 for q = 0)
        for i in range(1, NW):
            wrap_o = Mux(past[i], i * W, wrap_o)
        with m.If(wrapnow):
            comb += o_next.eq(wrap_o + skip)
        with m.Elif(e >= W):
            comb += o_next.eq(e - W)
        with m.Else():
            comb += o_next.eq(e)
        # base = o_next + [L if row r+2 is MASK], per context from its registers
        for x, s in enumerate(st):
            ex = s["e"]
            hdr_lx = Mux(s["s2"], Mux(self.dense1[x], 0, L), Mux(self.dense0[x], 0, L))
            skip_x = Mux(self.dense0[x], 0, L)
            wrap_x = Const(0, obits)
            for i in range(1, NW):
                wrap_x = Mux(ex > i * W, i * W, wrap_x)
            s["base"] = Signal(obits, name=f"base_{x}_{c}")
            with m.If(s["z1"] & ~s["pseudo"]):
                comb += s["base"].eq(wrap_x + skip_x + hdr_lx)
            with m.Elif(ex >= W):
                comb += s["base"].eq(ex - W + hdr_lx)
            with m.Else():
                comb += s["base"].eq(ex + hdr_lx)

        # M of the next head: cut at e (or at the wrap position: a start word + skip), per
        # context from its own window (the selection's fan-out stays out of this loop); one
        # selector: at e, or at o while the head still waits for its M (mv low only then)
        span = (NW + 1) * W + L
        for x, s in enumerate(st):
            padded = Cat(*s["slot"], Const(0, span - NW * W))
            at = Signal(obits, name=f"at_{x}_{c}")
            comb += at.eq(Mux(s["mv"], s["e"], s["o"]))
            s["m_at"] = _select(m, padded, at, L, NW * W + 1, f"coarse_{x}_{c}")
            q_x = Const(0, range(NW + 1))
            for i in range(NW):
                q_x = q_x + (s["e"] > i * W)
            m_wrap = Const(0, L)
            for qq in range(NW + 1):
                m_wrap = Mux(q_x == qq, Mux(self.dense0[x], padded[qq * W: qq * W + L],
                                            padded[qq * W + L: qq * W + 2 * L]), m_wrap)
            s["q"] = q_x
            s["m_next"] = Mux(s["z1"] & ~s["pseudo"], m_wrap, s["m_at"])

        # Per context, from its own registers (the record-length loop does not go through the
        # selection of the shared datapath): len_{r+1} = [L if row r+2 is MASK] +
        # product[seg(r+1)][popcount(M)], so e' = base + product; and whether the window holds
        # the next M (mv', the L bits at the next head's start): at the wrap that is q W + skip,
        # and with 2 L <= W it fits exactly when q < avail; else it is e. (Registering the
        # popcount with M moves its three levels into the M loop, already as long: 52.8 MHz.)
        for x, s in enumerate(st):
            pop = Signal(range(L + 1), name=f"pop_{x}_{c}")
            comb += pop.eq(_popcount(s["M"]))
            prod = Signal(_bits(R), name=f"prod_{x}_{c}")
            with m.Switch(pop):
                for p in range(L + 1):
                    with m.Case(p):
                        comb += prod.eq(Mux(s["s1"], self._prod[x][1][p], self._prod[x][0][p]))
            s["e_next"] = Signal(obits, name=f"e_next_{x}_{c}")
            comb += s["e_next"].eq(s["base"] + prod)
            ex, avail = s["e"], s["avail"]
            e_fits = _any([(avail == i) & (ex <= i * W - L) for i in range(1, NW + 1)])
            if 2 * L <= W:
                wrap_fits = s["q"] < avail
            else:   # the wrap position q W + skip, compared in full
                wrap_fits = s["q"] * W + Mux(self.dense0[x], 0, L) + L <= avail * W
            hdr_x = ~Mux(s["s2"], self.dense1[x], self.dense0[x])
            s["mv_next"] = Signal(name=f"mv_next_{x}_{c}")
            comb += s["mv_next"].eq(Mux(s["z1"] & ~s["pseudo"], wrap_fits, e_fits) | ~hdr_x)

        # -- per context: the state update ---------------------------------------------------
        elig = []
        for x, s in enumerate(st):
            n_rows = self.n_rows[x]

            def inc(r, n_rows=n_rows):
                return Mux(r == n_rows - 1, 0, r + 1)

            comb += s["go"].eq(go & s["sel"])
            catch = (s["o"] >= W) & s["sv"][0]
            # the word drop from this context's registers (no path through the shared datapath)
            last = s["z1"] & ~s["pseudo"]
            drop_go = Mux(last, s["e"] != 0, s["e"] >= W)
            comb += s["drop"].eq(Mux(s["sel"] & s["fits"], drop_go, catch))
            avail_bits = Const(0, range(NW * W + 1))     # bits in the window
            for i in range(1, NW + 1):
                avail_bits = Mux(s["avail"] == i, i * W, avail_bits)
            with m.If(s["go"]):
                sync += [
                    s["o"].eq(o_next), s["e"].eq(s["e_next"]), s["hmask"].eq(M),
                    s["hk"].eq(k_1), s["hdense"].eq(dense_1), s["hhdr"].eq(hdr_1),
                    s["hseg"].eq(seg1), s["pseudo"].eq(0),
                    s["r1"].eq(inc(s["r1"])), s["r2"].eq(inc(s["r2"])),
                    s["s1"].eq(s["s2"]), s["s2"].eq(inc(s["r2"]) >= self.n0[x]),
                    s["z1"].eq(s["r1"] == n_rows - 1),
                    s["M"].eq(s["m_next"]), s["mv"].eq(s["mv_next"]),
                ]
            with m.Else():
                with m.If(catch):
                    sync += [s["o"].eq(s["o"] - W), s["e"].eq(s["e"] - W)]
                with m.If(~s["mv"] & s["sel"]):
                    sync += [s["M"].eq(s["m_at"]), s["mv"].eq(s["o"] + L <= avail_bits)]
            # credit: both outcomes ready before ``go`` (a late select)
            c_keep = Signal(range(D + 2), name=f"ckeep_{x}_{c}")
            c_take = Signal(range(D + 2), name=f"ctake_{x}_{c}")
            comb += [c_keep.eq(s["credit"] + pops[x]), c_take.eq(s["credit"] + pops[x] - 1)]
            sync += s["credit"].eq(Mux(s["go"] & ~s["pseudo"], c_take, c_keep))
            # the next selection assumes the selected context starts its row (if it does
            # not, it was waiting for words anyway): no path from ``go`` to the selection
            c_pess = Mux(s["sel"] & ~s["pseudo"], c_take, c_keep)
            e_next_x = Signal(name=f"elig_next_{x}_{c}")
            comb += e_next_x.eq(self.restart[x] |
                                s["running"] & ((c_pess != 0) | s["pseudo"]))
            elig.append(e_next_x)
            with m.If(self.restart[x]):
                sync += [
                    s["running"].eq(1), s["pend"].eq(0), wants[x].eq(1),
                    fas[x].eq(self.start[x][c]), s["o"].eq(0),
                    s["e"].eq(Mux(self.dense0[x], 0, L)), s["pseudo"].eq(1),
                    s["hhdr"].eq(~self.dense0[x]), s["mv"].eq(self.dense0[x]),
                    s["r1"].eq(0), s["r2"].eq(Mux(n_rows == 1, 0, 1)), s["credit"].eq(D),
                    s["s1"].eq(0), s["s2"].eq((n_rows != 1) & (self.n0[x] <= 1)),
                    s["z1"].eq(1),
                ]
                sync += [v.eq(0) for v in s["sv"]]
        for x, g in enumerate(_arbitrate(m, self.prio, elig, f"selnext_{c}")):
            sync += st[x]["sel"].eq(g)

        # -- the record's row to the extraction ------------------------------------------------
        sel_x = Const(0, range(max(NX, 2)))
        for x in range(1, NX):
            sel_x = Mux(st[x]["sel"], x, sel_x)
        start = {
            "v": go & ~pseudo, "x": sel_x, "window": window, "o": o[:sbits],
            "m": pick(lambda x: Mux(st[x]["hdense"], (1 << L) - 1, st[x]["hmask"])),
            "k": pick(lambda x: st[x]["hk"]), "hdr": pick(lambda x: st[x]["hhdr"]),
            "seg": pick(lambda x: st[x]["hseg"]),
        }
        self._extract(m, c, start, fifos)

    def _extract(self, m, c, start, fifos):
        """The shared extraction of column ``c``: X1 (the window and the record's offset), X2
        (the record's codes), X3 (codes spread to kmax bits per field, prefix popcounts of the
        mask), lane multiplexers -> the context's row FIFO."""
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

        keep = ("x", "m", "k", "hdr", "seg")
        x1v, x1 = stage("x1", {k: start[k] for k in keep + ("window", "o")}, start["v"])
        rec = _shift_right(x1["window"], x1["o"], self.record_max)
        codes = Mux(x1["hdr"], rec[L:], rec[: L * K])
        x2v, x2 = stage("x2", {**{k: x1[k] for k in keep}, "codes": codes}, x1v)
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
        lanes_out = []
        for lane in range(L):
            p_l = x3["p"][lane * pbits: (lane + 1) * pbits]
            v = x3["f"][0:K]
            for p in range(1, lane + 1):
                v = Mux(p_l == p, x3["f"][p * K: p * K + K], v)
            lanes_out.append(Mux(x3["m"][lane], v, 0))
        row = Cat(*lanes_out, x3["seg"])
        for x in range(NX):
            comb += [fifos[x].w_en.eq(x3v & (x3["x"] == x)), fifos[x].w_data.eq(row)]


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

    Per layer: ``layer`` (one cycle T, the cycle the engine takes the command) with ``desc``
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
    decoded (and the tables are loaded); ``issue`` (only with ``ok``) takes it at t0: at t1 the
    row's codes and the base of its (context, segment) codebook are registered, every lane
    reads its table at ``base + code`` (asynchronously) and at t2 ``r_data`` holds the signed
    weights, until the next issue: the latency of the dense ``WeightReader``.

    ``init``: an object with ``words`` (per column), ``desc_rows`` and ``codebook`` (signed
    entries of the central memory), such as ``compiler.wstream_image.StreamImage``.
    """

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
            "ctx": In(1), "ok": Out(1), "issue": In(1),
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
                                  init=None if init is None else init.words,
                                  max_rows=cfg.weight_depth)
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
        # a copy per column of the write (the fanout of each register: one column's tables)
        col_we = [Signal(name=f"tw_en_{c}") for c in range(cols)]
        col_addr = [Signal(tbits, name=f"tw_addr_{c}") for c in range(cols)]
        col_data = [Signal(signed(cfg.weight_bits), name=f"tw_data_{c}") for c in range(cols)]
        for c in range(cols):
            m.d.sync += [col_we[c].eq(rd_v), col_addr[c].eq(rd_dst), col_data[c].eq(crp.data)]
        loading = Signal()
        m.d.comb += loading.eq(got | (left != 0) | rd_v)

        # -- the rows: gate, pop, look up ------------------------------------------------------
        m.d.comb += [
            dec.prio.eq(self.ctx),
            self.ok.eq(Mux(self.ctx, dec.rows[1].valid, dec.rows[0].valid) & ~loading),
            dec.rows[0].ready.eq(self.issue & ~self.ctx),
            dec.rows[1].ready.eq(self.issue & self.ctx),
        ]
        head = Mux(self.ctx, dec.rows[1].payload.as_value(), dec.rows[0].payload.as_value())
        rowv = data.View(row_layout(cols, lanes, kmax), head)
        base = Mux(self.ctx, Mux(rowv.seg, regs["c1_base1"], regs["c1_base0"]),
                   Mux(rowv.seg, regs["c0_base1"], regs["c0_base0"]))
        codes_q = Signal(row_layout(cols, lanes, kmax))
        base_q = Signal(tbits)
        issue_q = Signal()
        m.d.sync += [codes_q.eq(head), base_q.eq(base), issue_q.eq(self.issue)]
        for c in range(cols):
            for lane in range(lanes):
                # LUT RAM: yosys folds r_data into a synchronous read port and would rather
                # spend a block RAM per lane (ECP5: 208 in all)
                table = Memory(shape=signed(cfg.weight_bits), depth=cfg.lookup_depth, init=[],
                               attrs={"ram_style": "distributed"})
                m.submodules[f"table_{c}_{lane}"] = table
                twp, trp = table.write_port(), table.read_port(domain="comb")
                addr = Signal(tbits, name=f"taddr_{c}_{lane}")
                m.d.comb += [twp.en.eq(col_we[c]), twp.addr.eq(col_addr[c]),
                             twp.data.eq(col_data[c]),
                             addr.eq(base_q + codes_q.codes[c][lane]), trp.addr.eq(addr)]
                with m.If(issue_q):
                    m.d.sync += self.r_data[c][lane].eq(trp.data)
        return m
