"""The compressed weight path on the engine (``AccelConfig.weight_streams``): the stream image
of ``compiler/wstream_image.py`` and the accelerator reading its weights through the stream
decoder and the codebook lookup (``hw.wdecode.StreamWeightReader``), bit-exact with the golden
model over a whole tiny network (several layers: the decoder's contexts restart per layer)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from amaranth.sim import Simulator
from test_top_amaranth import CFG, check_steps, run_tiny, tiny_model
from wstream_support import IMAGE, MODEL

from compiler import wformat, wimage
from compiler import wstream_image as wsi
from compiler.qmodel import QConv, QFire
from compiler.wstreams import DENSE, MASK, branch_codes, max_record_bits
from hw.config import get_config
from hw.fanout import tree_depth
from hw.program import wdesc_fields
from hw.wdecode import StreamWeightReader

#: a small array (4 columns of 3 lanes) keeps Amaranth's simulator quick; streams of 24-bit
#: words (a mask of 3 lanes and 3 codes of 7 bits fit one); lane tables of 64 entries (the
#: tiny network's layers need at most 48)
SCFG = dataclasses.replace(CFG, weight_streams=True, pe_columns=4, pe_lanes=3, requant_units=2,
                           wstream_word_bits=24, wstream_depth=512, codebook_depth=1024,
                           lookup_depth=64, wstream_bank_depth=16)   # many banks


def shared_weights(qm, seed):
    """``qm`` with every convolution's weights rounded to few distinct values (a different
    step and sparsity per layer, so codes of 2..7 bits, DENSE and MASK segments)."""
    rng = np.random.default_rng(seed)
    convs = []
    for la in qm.layers:
        if isinstance(la, QFire):
            convs += [la.squeeze, la.expand1x1, la.expand3x3]
        elif isinstance(la, QConv):
            convs.append(la)
    for cv in convs:
        step = int(rng.choice([2, 8, 24, 64]))
        w = np.round(cv.weight / step).astype(np.int64) * step
        w[rng.random(w.shape) < rng.choice([0.0, 0.3, 0.8])] = 0
        cv.weight = np.clip(w, -127, 127)
    return qm


def stream_image(cfg, qm):
    progs = wimage.place_programs(cfg, qm)
    return progs, wsi.build_stream_image(cfg, progs, wsi.codes_of_model(qm, cfg.wstream_kmax))


@pytest.mark.parametrize("seed,stall,word_bits", [(0, 0.2, 24), (3, 0.0, 24), (4, 0.0, 12)])
def test_tiny_network_bit_exact_through_streams(seed, stall, word_bits):
    """Bit-exact through the stream decoder; with 12-bit words a row's record spans words and
    the decoder falls behind the sequencer, which must wait for each row (``w_ok1``..``4``)."""
    cfg = dataclasses.replace(SCFG, wstream_word_bits=word_bits)
    qm = shared_weights(tiny_model(cfg), seed)
    progs, streams = stream_image(cfg, qm)
    modes = {s.mode for la in streams.layers for c in la.contexts.values() for s in c.segments}
    assert modes == {DENSE, MASK}, "both segment modes should be exercised"
    img = wimage.build_image(cfg, qm)
    img.streams = streams
    rng = np.random.default_rng(5 + seed)
    x = rng.integers(-123, 152, qm.input_shape).astype(np.int16)
    outs = qm.run(x)
    progs, scores, taps = run_tiny(cfg, qm, x, seed=seed, stall=stall, image=img)
    check_steps(qm, outs, progs, scores, taps)


def test_tiny_streams_decode_to_the_weight_rows():
    cfg = SCFG
    qm = shared_weights(tiny_model(cfg), 1)
    progs, img = stream_image(cfg, qm)
    for i, p in enumerate(progs):
        got = wsi.decode_layer_rows(cfg, img, i)
        parts = {0: [p.squeeze]} if p.squeeze is not None else {}
        parts[1] = p.branches
        assert sorted(got) == sorted(parts)
        for x, brs in parts.items():
            assert np.array_equal(got[x][1], np.concatenate([b.weights for b in brs])), p.name


def test_real_product_streams_exact_every_layer():
    """The shipped ulx3s-85f product: every layer's streams decode (an independent reader) to
    exactly the code rows laid out like the weight rows, and codebook[codes] to exactly the
    dense weight rows of the layer programs; everything fits the configuration's memories."""
    from compiler.api import import_model
    from compiler.compress import qmodel_from_image

    cfg = get_config("ulx3s-85f")
    # the shipped weight image and its golden model (qmodel_from_image: codebook[index])
    data = IMAGE.read_bytes()
    qm = qmodel_from_image(data, import_model(MODEL), cfg)
    layers, _ = wformat.read_image(data)
    codes = wsi.codes_of_image(layers)
    progs = wimage.place_programs(cfg, qm)
    img = wsi.build_stream_image(cfg, progs, codes)
    assert len(img.layers) == len(progs) == 10
    # the compressor laid the image out for exactly these column memories
    rep = json.loads(IMAGE.with_suffix(".json").read_text())
    assert [len(w) for w in img.words] == rep["column_words"]
    for i, p in enumerate(progs):
        got = wsi.decode_layer_rows(cfg, img, i)
        parts = ([(0, p.squeeze)] if p.squeeze is not None else []) + \
            [(1, b) for b in p.branches]
        for x in (0, 1):
            brs = [b for cx, b in parts if cx == x]
            if not brs:
                assert x not in got
                continue
            want = np.concatenate([branch_codes(codes[b.conv.name].indices, cfg.pe_columns,
                                                    cfg.pe_lanes) for b in brs])
            assert np.array_equal(got[x][0], want), (p.name, x)
            assert np.array_equal(got[x][1], np.concatenate([b.weights for b in brs])), \
                (p.name, x)
        assert p.cmd["wdesc"] == i
    assert max(img.column_words) <= cfg.wstream_depth
    assert len(img.codebook) <= cfg.codebook_depth
    # every record fits a word: the decoder can deliver a row per cycle
    for la in img.layers:
        for ctx in la.contexts.values():
            assert max_record_bits(ctx.segments) <= cfg.wstream_word_bits, la.name


def test_errors_name_the_value():
    cfg = SCFG
    qm = tiny_model(cfg)             # int8 weights: too many distinct values for 7 bits
    with pytest.raises(ValueError, match=r"conv1: \d+ distinct non-zero weights need 8-bit "
                                         r"codes, more than wstream_kmax = 7"):
        wsi.codes_of_model(qm, cfg.wstream_kmax)
    qm = shared_weights(qm, 0)
    progs = wimage.place_programs(cfg, qm)
    codes = wsi.codes_of_model(qm, cfg.wstream_kmax)
    with pytest.raises(ValueError, match=r"column 0's streams need \d+ words, more than "
                                         r"wstream_depth 4"):
        wsi.build_stream_image(dataclasses.replace(cfg, wstream_depth=4), progs, codes)
    name = progs[0].branches[0].conv.name
    bad = dict(codes)
    book = codes[name].codebook.copy()
    book[0] = 5
    bad[name] = wsi.LayerCodes(codes[name].indices, book)
    with pytest.raises(ValueError, match=f"{name}: a codebook needs 2\\*\\*k >= 2 entries with "
                                         f"entry 0 = 0, got {book.size} entries starting \\[5\\]"):
        wsi.build_stream_image(cfg, progs, bad)
    bad[name] = wsi.LayerCodes(codes[name].indices + (codes[name].indices == 1),
                               codes[name].codebook)
    with pytest.raises(ValueError, match=f"{name}: codebook\\[indices\\] laid out as rows "
                                         f"differs from the layer program's weight rows"):
        wsi.build_stream_image(cfg, progs, bad)
    with pytest.raises(ValueError, match="reads dense weight rows"):
        wsi.build_stream_image(CFG, progs, codes)
    assert len(wdesc_fields(cfg)) == 2 + 2 * (2 * cfg.pe_columns + 8)


def test_codebook_blocks_are_the_lane_tables():
    """Every layer's block of the codebook memory is its codebooks packed in (context, segment)
    order, each of its own 2**k entries, the blocks one after another; each segment's base is
    its codebook's offset in the block, and ``decode_layer_rows`` looks up ``block[base + code]``
    (the weight rows, checked above)."""
    cfg = SCFG
    qm = shared_weights(tiny_model(cfg), 0)
    progs, img = stream_image(cfg, qm)
    codes = wsi.codes_of_model(qm, cfg.wstream_kmax)
    pos = 0
    for p, la in zip(progs, img.layers):
        parts = ([(0, p.squeeze)] if p.squeeze is not None else []) + \
            [(1, b) for b in p.branches]
        books = [codes[b.conv.name].codebook for _x, b in parts]
        assert (la.cb_start, la.cb_len) == (pos, sum(b.size for b in books)), la.name
        assert np.array_equal(img.codebook[pos: pos + la.cb_len], np.concatenate(books))
        offsets = np.cumsum([0] + [b.size for b in books])[:-1].tolist()
        assert [b for x in sorted(la.contexts) for b in la.contexts[x].bases] == offsets
        pos += la.cb_len
    assert len(img.codebook) == pos


def test_layout_refuses_codebooks_beyond_the_tables():
    """A layer whose codebooks do not fit a lane's table (``lookup_depth``), and a model whose
    blocks do not fit the codebook memory (``codebook_depth``), are refused by name."""
    cfg = SCFG
    qm = shared_weights(tiny_model(cfg), 0)          # blocks 8, 16+8+16, 4+8+16, 8
    progs = wimage.place_programs(cfg, qm)
    codes = wsi.codes_of_model(qm, cfg.wstream_kmax)
    with pytest.raises(ValueError, match=r"fire2: its codebooks need 40 lookup-table entries "
                                         r"\(16 \+ 8 \+ 16\), more than lookup_depth 32"):
        wsi.build_stream_image(dataclasses.replace(cfg, lookup_depth=32), progs, codes)
    with pytest.raises(ValueError, match=r"fire3: the codebooks of the layers up to this one "
                                         r"need 76 entries, more than codebook_depth 64"):
        wsi.build_stream_image(dataclasses.replace(cfg, codebook_depth=64), progs, codes)
    # exactly full fits: 84 entries in all
    img = wsi.build_stream_image(dataclasses.replace(cfg, codebook_depth=84), progs, codes)
    assert len(img.codebook) == 84
    with pytest.raises(ValueError, match=r"AccelConfig.lookup_depth must be a power of two "
                                         r"\(the entries of a lane's lookup table\), not 48"):
        dataclasses.replace(cfg, lookup_depth=48)
    # the stream reader's weights come at t3, the lanes at t2 without fast_pipeline
    with pytest.raises(ValueError, match=r"weight_streams needs fast_pipeline"):
        dataclasses.replace(cfg, fast_pipeline=False)


def test_reader_looks_up_only_copied_entries():
    """``StreamWeightReader`` alone, layer after layer, each command taken the cycle after the
    previous layer's last issue (sooner than the engine takes one): ``ok`` stays low until the
    layer's block is in the lane tables (``cb_len + 2`` cycles after the command plus the depth
    of the registers that copy the writes to every column, ``hw.fanout.tree_depth``), every row
    of both contexts, issued whenever ``ok``, gives exactly ``decode_layer_rows``'s weights
    ``latency`` (5) cycles later, held until the next issue (the previous layer's last row
    too, while the next layer's copy overwrites the tables). A Fire module's expands go first: their
    codebooks are at the end of the block, so a lookup before the copy ends reads stale
    entries."""
    cfg = SCFG
    qm = shared_weights(tiny_model(cfg), 0)
    progs, img = stream_image(cfg, qm)
    want = [wsi.decode_layer_rows(cfg, img, i) for i in range(len(progs))]
    dut = StreamWeightReader(cfg, init=img)

    def weights(view):
        return np.array([[view[c][lane] for lane in range(cfg.pe_lanes)]
                         for c in range(cfg.pe_columns)], dtype=np.int64)

    async def bench(ctx):
        held, due = None, []            # the weights r_data holds; (cycle, row) in flight
        cycle = 0
        first_ok = []

        async def tick(issue=False, x=0):
            nonlocal cycle, held
            await ctx.tick()
            cycle += 1
            # the reader takes the issue registered, as the engine's sequencer gives it
            ctx.set(dut.issued, issue)
            ctx.set(dut.issued_ctx, x)
            if due and due[0][0] == cycle:
                held = due.pop(0)[1]
            if held is not None:
                got = weights(ctx.get(dut.r_data))
                assert np.array_equal(got, held), f"cycle {cycle}: r_data {got}, want {held}"

        for i, p in enumerate(progs):
            ctx.set(dut.layer, 1)
            ctx.set(dut.desc, i)
            ctx.set(dut.fire, p.squeeze is not None)
            start = cycle
            await tick()
            ctx.set(dut.layer, 0)
            seen = False
            for x in sorted(want[i], reverse=True):
                ctx.set(dut.ctx, x)
                rows = want[i][x][1]
                for r in range(len(rows)):
                    while not ctx.get(dut.ok):
                        await tick()
                        assert cycle - start < 200, f"{p.name}: no row of context {x}"
                    if not seen:
                        first_ok.append(cycle - start)
                        seen = True
                    due.append((cycle + dut.latency, rows[r]))
                    await tick(issue=True, x=x)
        for _ in range(dut.latency):
            await tick()
        assert not due
        for la, t in zip(img.layers, first_ok):
            assert t >= la.cb_len + 2 + tree_depth(cfg.pe_columns), (la.name, t, la.cb_len)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_streams_cost_only_the_restarts():
    """The same tiny network with dense weight rows and with streams (no back-pressure): the
    arrays never wait for the decoder once a layer runs, only each layer's start costs cycles:
    the decoder's restart (at most 8 cycles more than dense rows) or the copy of the layer's
    ``cb_len`` codebook entries into the lane tables, whichever ends later. The copy makes
    ``ok`` rise ``cb_len + 2`` cycles plus the copy tree's depth after the command is taken,
    and the dense engine's own first pass comes at the earliest 5 cycles after it (the
    sequencer's start and its staged step choice), so the copy costs at most ``cb_len``
    cycles a layer (here 8, 40, 28 and 8
    entries; a loader of one entry every two cycles fails the bound)."""
    cfg = SCFG
    qm = shared_weights(tiny_model(cfg), 0)
    x = np.random.default_rng(5).integers(-123, 152, qm.input_shape).astype(np.int16)
    progs, streams = stream_image(cfg, qm)
    img = wimage.build_image(cfg, qm)
    img.streams = streams
    got, dense = {}, {}
    run_tiny(cfg, qm, x, stall=0.0, image=img, info=got)
    run_tiny(dataclasses.replace(cfg, weight_streams=False), qm, x, stall=0.0, info=dense)
    bound = sum(max(8, la.cb_len) for la in streams.layers)
    assert dense["cycles"] <= got["cycles"] <= dense["cycles"] + bound, (got, dense, bound)
