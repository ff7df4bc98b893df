"""The weight-stream decoder (hw/wdecode.py) in Amaranth's simulator, against the codes given to
compiler.wstreams.encode_parts: exact rows, two alternating contexts, rate, restart, load."""

import json
import random

import numpy as np
import pytest
from amaranth.sim import Simulator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wstream_support import fire_contexts
from yosys_support import synth_ecp5

from compiler.wstreams import DENSE, MASK, Segment, encode_parts, max_record_bits
from hw.config import get_config
from hw.wdecode import ColumnStreamDecoder

LANES = 9
#: cycles from a restart to the first row at most (hw/wdecode.py's docstring)
LATENCY = 17


def make_segments(rng, cols, specs, density):
    """Segments of random codes: ``specs`` = [(rows, k, mode)]."""
    segs = []
    for rows, k, mode in specs:
        codes = rng.integers(1, 1 << k, size=(rows, cols, LANES))
        codes *= rng.random((rows, cols, LANES)) < density
        segs.append(Segment(codes, k, mode))
    return segs


class Layout:
    """Contexts placed one after the other (after a random gap) in every column memory."""

    def __init__(self, contexts, cols, word_bits, rng=None, depth=None):
        self.cols, self.word_bits = cols, word_bits
        self.init = [[] for _ in range(cols)]
        self.cfg = [self.place(segs, rng) for segs in contexts]
        used = max(len(w) for w in self.init)
        self.depth = depth or max(16, used + 8)

    def place(self, segs, rng=None):
        """Append a context's streams; returns its configuration and expected rows."""
        parts = encode_parts(segs, self.word_bits)
        starts, ends = [], []
        for c in range(self.cols):
            gap = int(rng.integers(0, 3)) if rng is not None else 0
            self.init[c] += [random.Random(gap).getrandbits(self.word_bits) for _ in range(gap)]
            starts.append(len(self.init[c]))
            code, masks = parts[c]
            self.init[c] += code
            ends.append(len(self.init[c]) - 1)
            self.init[c] += masks
        s0, s1 = segs[0], segs[-1]
        return {
            "start": starts, "end": ends,
            "n_rows": sum(len(s.codes) for s in segs), "n0": len(s0.codes),
            "k0": s0.k, "dense0": int(s0.mode == DENSE), "k1": s1.k,
            "dense1": int(s1.mode == DENSE),
            "rows": np.concatenate([s.codes for s in segs]),
            "seg": np.concatenate([np.full(len(s.codes), i) for i, s in enumerate(segs)]),
        }


def configure(ctx, dut, x, cfg):
    for c in range(len(cfg["start"])):
        ctx.set(dut.start[x][c], cfg["start"][c])
        ctx.set(dut.end[x][c], cfg["end"][c])
    for name in ("n_rows", "n0", "k0", "dense0", "k1", "dense1"):
        ctx.set(getattr(dut, name)[x], cfg[name])


async def restart(ctx, dut, x):
    ctx.set(dut.restart[x], 1)
    await ctx.tick()
    ctx.set(dut.restart[x], 0)


def unpack(raw, cols, kmax):
    mask = (1 << kmax) - 1
    rows = np.array([[(raw >> ((c * LANES + lane) * kmax)) & mask for lane in range(LANES)]
                     for c in range(cols)])
    return rows, (raw >> (cols * LANES * kmax)) & 1


async def drain(ctx, dut, x, n, *, rng=None, stall=0.0, limit=100_000):
    """Pop ``n`` rows of context ``x`` (``ready`` low with probability ``stall``); returns the
    rows [(codes [C, L], seg)] and the cycles taken."""
    out, cycles, promised = [], 0, 0
    stream = dut.rows[x]
    while len(out) < n:
        ready = not (rng is not None and rng.random() < stall)
        ctx.set(stream.ready, ready)
        _, _, valid, raw, ok, ok2, ok3, ok4 = await ctx.tick().sample(
            stream.valid, stream.payload.as_value(), dut.rows_ok[x], dut.rows_ok2[x],
            dut.rows_ok3[x], dut.rows_ok4[x])
        assert ok == valid, f"context {x}: rows_ok {ok} while valid {valid}"
        assert ok >= ok2 >= ok3 >= ok4, \
            f"context {x}: rows_ok {ok}, rows_ok2 {ok2}, rows_ok3 {ok3}, rows_ok4 {ok4}"
        # rows_okK promised K rows: after the pops since, the rest are still there
        assert not promised or valid, f"context {x}: {promised} rows promised, none valid"
        promised = max(promised, ok + ok2 + ok3 + ok4) - (valid and ready)
        cycles += 1
        if valid and ready:
            out.append(unpack(raw, dut.columns, dut.kmax))
        assert cycles < limit, f"context {x}: only {len(out)} of {n} rows in {cycles} cycles"
    ctx.set(stream.ready, 0)
    return out, cycles


def check_rows(got, cfg, first=0):
    n = cfg["n_rows"]
    for i, (rows, seg) in enumerate(got):
        r = (first + i) % n
        assert np.array_equal(rows, cfg["rows"][r]), f"row {i} (context row {r}) differs"
        assert seg == cfg["seg"][r], f"row {i}: segment {seg}, expected {cfg['seg'][r]}"


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def decoder(layout, kmax, **kw):
    return ColumnStreamDecoder(columns=layout.cols, lanes=LANES, word_bits=layout.word_bits,
                               kmax=kmax, depth=layout.depth, init=layout.init, **kw)


RANDOM_CASES = [
    # (seed, word_bits, kmax, segment specs (rows, k, mode), density)
    (1, 36, 7, [(3, 5, MASK), (2, 3, DENSE)], 0.3),
    (2, 72, 7, [(4, 7, DENSE), (3, 6, MASK)], 0.5),
    (3, 36, 8, [(5, 8, MASK)], 1.0),
    (4, 16, 4, [(2, 4, DENSE), (4, 2, MASK)], 0.0),
    (5, 72, 8, [(1, 1, MASK)], 0.6),
    (6, 24, 6, [(3, 6, MASK), (1, 6, MASK)], 0.3),
    (7, 72, 7, [(6, 4, MASK), (2, 7, DENSE)], 0.0),
]


def decode_one(dut, cfg, n, *, seed, stall):
    """Configure and restart context 0 from ``cfg``, then pop ``n`` rows with random stalls."""
    got = []

    async def bench(ctx):
        configure(ctx, dut, 0, cfg)
        await restart(ctx, dut, 0)
        got.extend((await drain(ctx, dut, 0, n, rng=random.Random(seed), stall=stall))[0])

    run(dut, bench)
    return got


async def start_both(ctx, dut, lay):
    """Configure both contexts from ``lay`` and restart them together."""
    for x in (0, 1):
        configure(ctx, dut, x, lay.cfg[x])
    ctx.set(dut.restart[0], 1)
    ctx.set(dut.restart[1], 1)
    await ctx.tick()
    ctx.set(dut.restart[0], 0)
    ctx.set(dut.restart[1], 0)


@pytest.mark.parametrize("bank_depth", [None, 4], ids=["one", "banks"])
@pytest.mark.parametrize("seed,word_bits,kmax,specs,density", RANDOM_CASES)
def test_random_contexts_exact(seed, word_bits, kmax, specs, density, bank_depth):
    """Random streams under stalls; also with the column memories built as banks of 4 words
    (``bank_depth``: the board's form, a cycle more per read)."""
    rng = np.random.default_rng(seed)
    cols = 4
    segs = make_segments(rng, cols, specs, density)
    lay = Layout([segs], cols, word_bits, rng)
    dut = decoder(lay, kmax, bank_depth=bank_depth)
    assert (dut.banks > 1) == (bank_depth is not None)
    cfg = lay.cfg[0]
    n = 3 * cfg["n_rows"] + 2
    got = decode_one(dut, cfg, n, seed=seed, stall=0.3)
    assert len(got) == n
    check_rows(got, cfg)


@pytest.mark.parametrize("word_bits,specs", [
    (72, [(3, 5, MASK), (12, 3, DENSE)]),
    (16, [(2, 4, DENSE), (11, 2, MASK)]),      # a mask per word
    (24, [(9, 6, MASK), (1, 6, MASK)]),
    (36, [(1, 7, MASK)]),
])
def test_registered_flags_hold_their_definitions(word_bits, specs):
    """The flags the decoder keeps as registers for timing (the mask walker's ``running &
    mcredit != 0``, its last row of a mask word, ...) equal what they stand for in every cycle,
    across restarts and stalls."""
    rng = np.random.default_rng(word_bits)
    prng = random.Random(word_bits)
    segs = make_segments(rng, 2, specs, 0.5)
    lay = Layout([segs, segs], 2, word_bits, rng)
    dut = decoder(lay, 7)
    got = []

    async def check(ctx):
        names = [name for name, _, _ in dut._invariants]
        values = [v for _, reg, definition in dut._invariants for v in (reg, definition)]
        async for _, _, *got in ctx.tick().sample(*values):
            for i, name in enumerate(names):
                assert got[2 * i] == got[2 * i + 1], name

    async def bench(ctx):
        await start_both(ctx, dut, lay)
        for step in range(6):
            x = step % 2
            ctx.set(dut.prio, x)
            n = prng.randint(1, 3 * lay.cfg[x]["n_rows"])
            rows, _ = await drain(ctx, dut, x, n, rng=prng, stall=0.4)
            got.append((x, rows))
            if step == 3:
                await restart(ctx, dut, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(check)
    sim.add_testbench(bench)
    sim.run()
    assert dut._invariants
    check_rows(got[1][1], lay.cfg[1])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 100_000))
def test_random_geometry_exact(seed):
    """Random columns, word width, kmax, segments, FIFO depths and stalls: rows stay exact."""
    rng = np.random.default_rng(seed)
    cols = int(rng.integers(1, 5))
    kmax = int(rng.integers(1, 9))
    word_bits = int(rng.integers(LANES, 81))
    specs = [(int(rng.integers(1, 6)), int(rng.integers(1, kmax + 1)), int(rng.integers(0, 2)))
             for _ in range(int(rng.integers(1, 3)))]
    segs = make_segments(rng, cols, specs, float(rng.choice([0.0, 0.2, 0.5, 1.0])))
    lay = Layout([segs], cols, word_bits, rng)
    dut = decoder(lay, kmax, fifo_depth=int(rng.integers(1, 7)),
                  word_fifo=int(rng.integers(3, 6)))
    cfg = lay.cfg[0]
    got = decode_one(dut, cfg, 3 * cfg["n_rows"] + 1, seed=seed, stall=0.2)
    check_rows(got, cfg)


def test_real_fire_expand_exact_and_rate():
    """fire2's expand context (expand 1x1 DENSE, expand 3x3 MASK, the product's code widths)
    and its squeeze context on the real geometry (``ulx3s-85f``: its columns, 72-bit words,
    kmax 7); 3 wraps at full rate."""
    cfg = get_config("ulx3s-85f")
    squeeze, expand = fire_contexts("fire2")
    wb = cfg.wstream_word_bits
    lay = Layout([expand, squeeze], cfg.pe_columns, wb)
    assert max_record_bits(expand) <= wb and max_record_bits(squeeze) <= wb
    dut = decoder(lay, cfg.wstream_kmax)
    cfg = lay.cfg[0]
    n = 3 * cfg["n_rows"]
    res = {}

    async def bench(ctx):
        configure(ctx, dut, 0, cfg)
        configure(ctx, dut, 1, lay.cfg[1])
        ctx.set(dut.prio, 0)
        ctx.set(dut.restart[1], 1)      # the other context runs too (fills its FIFO)
        await restart(ctx, dut, 0)
        ctx.set(dut.restart[1], 0)
        res["a"] = await drain(ctx, dut, 0, n)
        ctx.set(dut.prio, 1)
        res["b"] = await drain(ctx, dut, 1, 2 * lay.cfg[1]["n_rows"])

    run(dut, bench)
    got, cycles = res["a"]
    check_rows(got, cfg)
    check_rows(res["b"][0], lay.cfg[1])
    assert cycles <= n + LATENCY, f"{n} rows took {cycles} cycles"


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_two_contexts_alternating(seed):
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    cols = 4
    a = make_segments(rng, cols, [(int(rng.integers(1, 6)), 5, MASK)], 0.4)
    b = make_segments(rng, cols, [(int(rng.integers(1, 4)), 7, DENSE),
                                  (int(rng.integers(1, 6)), 6, MASK)], 0.3)
    lay = Layout([a, b], cols, 36, rng)
    dut = decoder(lay, 7)
    got = [[], []]

    async def bench(ctx):
        await start_both(ctx, dut, lay)
        for step in range(16):
            x = step % 2
            ctx.set(dut.prio, x)
            n = lay.cfg[x]["n_rows"] if prng.random() < 0.7 else prng.randint(1, 9)
            rows, _ = await drain(ctx, dut, x, n, rng=prng, stall=0.25)
            got[x] += rows
            for _ in range(prng.choice([0, 0, 1, 3])):
                await ctx.tick()

    run(dut, bench)
    for x in (0, 1):
        assert len(got[x]) > lay.cfg[x]["n_rows"]
        check_rows(got[x], lay.cfg[x])


def test_alternating_whole_steps_full_rate():
    """Like the engine: prio follows the drained context, whole steps, ready always high. After
    the first step of each context (the second context starts after a bubble: it decodes only
    when prio cannot), every step of n rows takes n cycles."""
    rng = np.random.default_rng(4)
    cols = 4
    a = make_segments(rng, cols, [(5, 5, MASK)], 0.5)
    b = make_segments(rng, cols, [(3, 7, DENSE), (6, 6, MASK)], 0.5)
    lay = Layout([a, b], cols, 72, rng)
    dut = decoder(lay, 7)
    steps = []

    async def bench(ctx):
        await start_both(ctx, dut, lay)
        for step in range(10):
            x = step % 2
            ctx.set(dut.prio, x)
            rows, cycles = await drain(ctx, dut, x, lay.cfg[x]["n_rows"])
            steps.append((x, rows, cycles))

    run(dut, bench)
    for x in (0, 1):
        check_rows([r for sx, rows, _ in steps if sx == x for r in rows], lay.cfg[x])
    assert steps[0][2] <= lay.cfg[0]["n_rows"] + LATENCY
    assert steps[1][2] <= lay.cfg[1]["n_rows"] + LATENCY
    for _x, rows, cycles in steps[2:]:
        assert cycles == len(rows), f"a step of {len(rows)} rows took {cycles} cycles"


@pytest.mark.parametrize("word_bits,kmax,specs,density", [
    (72, 7, [(5, 6, DENSE), (7, 7, MASK)], 0.5),
    (36, 4, [(9, 3, DENSE)], 1.0),
    (72, 8, [(1, 7, DENSE)], 1.0),          # every record exactly one word
    # the wrap leaves the cursor a word behind (the last record ends in the stream's second-last
    # word) and the next record needs three words of window: still a row per cycle
    (72, 7, [(2, 7, MASK), (5, 5, DENSE)], 1.0),
])
@pytest.mark.parametrize("bank_depth", [None, 8], ids=["one", "banks"])
def test_rate_one_row_per_cycle(word_bits, kmax, specs, density, bank_depth):
    rng = np.random.default_rng(21)
    cols = 4
    segs = make_segments(rng, cols, specs, density)
    assert max_record_bits(segs) <= word_bits
    lay = Layout([segs], cols, word_bits, rng)
    dut = decoder(lay, kmax, bank_depth=bank_depth)
    cfg = lay.cfg[0]
    n = max(40, 4 * cfg["n_rows"])
    res = {}

    async def bench(ctx):
        configure(ctx, dut, 0, cfg)
        await restart(ctx, dut, 0)
        first, c0 = await drain(ctx, dut, 0, 1)
        rest, c1 = await drain(ctx, dut, 0, n - 1)
        res["latency"], res["rest"] = c0, c1
        res["rows"] = first + rest

    run(dut, bench)
    check_rows(res["rows"], cfg)
    # banks: a cycle more from a read to its word
    latency = LATENCY + (dut.read_stages - 3)
    assert res["latency"] <= latency, f"first row after {res['latency']} cycles"
    assert res["rest"] == n - 1, f"{n - 1} rows after the first took {res['rest']} cycles"


def test_long_records_slow_but_exact():
    rng = np.random.default_rng(5)
    cols = 3
    segs = make_segments(rng, cols, [(4, 8, DENSE), (3, 8, MASK)], 0.9)
    assert max_record_bits(segs) > 36
    lay = Layout([segs], cols, 36, rng)
    dut = decoder(lay, 8)
    cfg = lay.cfg[0]
    n = 3 * cfg["n_rows"] + 1
    res = {}

    async def bench(ctx):
        configure(ctx, dut, 0, cfg)
        await restart(ctx, dut, 0)
        res["rows"], res["cycles"] = await drain(ctx, dut, 0, n)

    run(dut, bench)
    check_rows(res["rows"], cfg)
    assert res["cycles"] > n          # records of two words cannot come one per cycle


@pytest.mark.parametrize("bank_depth", [None, 16], ids=["one", "banks"])
def test_restart_and_load(bank_depth):
    rng = np.random.default_rng(9)
    cols = 4
    a = make_segments(rng, cols, [(5, 5, MASK), (2, 6, DENSE)], 0.4)
    new = make_segments(rng, cols, [(3, 3, DENSE)], 1.0)
    lay = Layout([a], cols, 36, rng, depth=64)
    dut = decoder(lay, 7, bank_depth=bank_depth)
    cfg = lay.cfg[0]
    # the new context's words, written through w_* at address 40 of every column
    load = Layout([], cols, 36)
    load.init = [[0] * 40 for _ in range(cols)]
    cfg_new = load.place(new)
    got = {}

    async def bench(ctx):
        configure(ctx, dut, 0, cfg)
        await restart(ctx, dut, 0)
        got["a"], _ = await drain(ctx, dut, 0, 4, rng=random.Random(1), stall=0.3)
        for _ in range(5):                  # let it decode ahead, then restart mid-stream
            await ctx.tick()
        await restart(ctx, dut, 0)
        got["b"], _ = await drain(ctx, dut, 0, cfg["n_rows"] + 3)
        for c in range(cols):
            for addr in range(cfg_new["start"][c], len(load.init[c])):   # codes and masks
                ctx.set(dut.w_en, 1)
                ctx.set(dut.w_col, c)
                ctx.set(dut.w_addr, addr)
                ctx.set(dut.w_data, load.init[c][addr])
                await ctx.tick()
        ctx.set(dut.w_en, 0)
        configure(ctx, dut, 0, cfg_new)
        await restart(ctx, dut, 0)
        got["c"], _ = await drain(ctx, dut, 0, 2 * cfg_new["n_rows"] + 1)
        # the first context is intact: the load wrote only its own addresses (with banks:
        # only its own bank)
        configure(ctx, dut, 0, cfg)
        await restart(ctx, dut, 0)
        got["d"], _ = await drain(ctx, dut, 0, cfg["n_rows"])

    run(dut, bench)
    check_rows(got["a"], cfg)
    check_rows(got["b"], cfg)          # row 0 again after the restart
    check_rows(got["c"], cfg_new)
    check_rows(got["d"], cfg)


def test_bad_parameters():
    with pytest.raises(ValueError, match="kmax must be in 1..8, not 9"):
        ColumnStreamDecoder(kmax=9)
    with pytest.raises(ValueError, match=r"word_bits \(8\) must be at least lanes \(9\)"):
        ColumnStreamDecoder(word_bits=8)


@pytest.mark.yosys
def test_columns_keep_their_own_running_flags(tmp_path):
    """Synthesised for the ECP5, every column keeps its own ``running`` flip-flop per context.
    The flags are equal in every column (set by the first restart, never cleared); written as
    an enable, yosys merged them into one per context, whose net ran 12 ns across the chip
    (board build b47)."""
    dut = ColumnStreamDecoder(columns=4, lanes=LANES, word_bits=36, kmax=7, depth=64)
    synth_ecp5(dut, tmp_path, "select top; write_json -noscopeinfo -selected t.json")
    nets = json.loads((tmp_path / "t.json").read_text())["modules"]["top"]["netnames"]
    for x in range(2):
        bits = {c: nets[f"running_{x}_{c}"]["bits"][0] for c in range(4)}
        assert all(isinstance(b, int) for b in bits.values()), bits     # not a constant
        assert len(set(bits.values())) == 4, f"context {x}: {bits}"


@pytest.mark.yosys
def test_banks_keep_their_own_row_copies(tmp_path):
    """Synthesised for the ECP5, each bank of a banked column reads at a row register of its
    own, every bit of it: the copies hold the same row, and yosys would merge them into one
    register driving every bank of the column (board builds b61 and b62: that register's net,
    12.4-14.0 ns of routing to the farthest of 40 block RAMs). It merges them bit by bit: copies
    told apart by their initial values alone shared the bits whose initial values were equal
    (b69: bank 4's row bit into bank 1's block RAM, 10.9 ns)."""
    dut = ColumnStreamDecoder(columns=2, lanes=LANES, word_bits=36, kmax=7, depth=64,
                              bank_depth=16)
    assert dut.banks == 4 and dut.read_stages == 5
    synth_ecp5(dut, tmp_path, "select top; write_json -noscopeinfo -selected t.json")
    nets = json.loads((tmp_path / "t.json").read_text())["modules"]["top"]["netnames"]
    for c in range(2):
        rows = [nets[f"row{k}_{c}"]["bits"] for k in range(4)]
        assert all(isinstance(b, int) for r in rows for b in r), rows   # not constants
        for bit in range(len(rows[0])):
            assert len({r[bit] for r in rows}) == 4, f"column {c}, bit {bit}: {rows}"


def test_pending_counts_equal_the_sum_row_ok_forms():
    """The sequencer's counts of the rows issued in the last three cycles per context
    (``pending_counts``, registers kept as issues come and go) equal the sum ``row_ok`` forms
    from the delay line in every cycle, and ``row_ok_counted`` gives ``row_ok``'s answer."""
    from amaranth import Module, Signal

    from hw.wdecode import pending_counts, row_ok, row_ok_counted

    m = Module()
    issue, ctx = Signal(), Signal()
    oks = [Signal(2, name=f"ok{k}") for k in range(4)]
    pends = [(Signal(name=f"v{k}"), Signal(name=f"c{k}")) for k in range(3)]
    m.d.sync += [pends[0][0].eq(issue), pends[0][1].eq(ctx)]
    for (v, c), (pv, pc) in zip(pends[1:], pends):
        m.d.sync += [v.eq(pv), c.eq(pc)]
    counts = pending_counts(m, issue, ctx, pends, "n")
    want, got = Signal(), Signal()
    m.d.comb += [want.eq(row_ok(ctx, oks, pends)), got.eq(row_ok_counted(ctx, oks, counts))]
    rng = random.Random(7)

    async def bench(ctx_):
        seen = set()
        for _ in range(2000):
            ctx_.set(issue, rng.random() < 0.7)
            ctx_.set(ctx, rng.random() < 0.5)
            for ok in oks:
                ctx_.set(ok, rng.randrange(4))
            await ctx_.delay(1e-9)
            for x in (0, 1):
                total = sum(ctx_.get(v) and ctx_.get(c) == x for v, c in pends)
                assert ctx_.get(counts[x]) == total, (x, ctx_.get(counts[x]), total)
                seen.add(total)
            assert ctx_.get(got) == ctx_.get(want)
            await ctx_.tick()
        assert seen == {0, 1, 2, 3}

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
