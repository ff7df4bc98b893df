"""The streaming layer engine: Fire modules, conv1 and conv10 on one column array.

One :class:`Engine` runs one layer per command (docs/engine.md):

- a Fire module: the **squeeze** (stage A) reads input pixels from the input buffer and writes
  its 8-bit results into the window buffer, which never leaves the chip; the **expand 1x1 and
  expand 3x3** (stage B, two branches over the same window) read 3x3 windows of it, with zero
  padding, and stream the concatenated output out;
- a plain convolution (conv1 3x3/2 or 7x7/2, conv10 1x1 512 -> 1000 ...): stage B only, its
  input streamed straight into the window buffer.

Both stages run on the same :class:`hw.pe.ColumnArray`, whose columns take the role of squeeze,
expand 1x1 or expand 3x3 pixel by pixel, so every multiplier works in every layer. A fused max
pool or global sum (:mod:`hw.pool`) can sit on the output.

Components: :class:`Sequencer` (the pixel cursors, the pass loop and the flow control of both
buffers), :class:`Engine` (the whole datapath). ``LayerCmd`` is derived from
:func:`hw.program.cmd_fields`, the single list of runtime fields.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .lbuf import SegmentBuffer
from .pe import ColumnArray, RowStore, WeightReader
from .pool import Beat, GlobalSum, MaxPool
from .program import (
    POOL_MAX,
    POOL_SUM,
    bias_row_bits,
    cmd_fields,
    field_widths,
    requant_row_bits,
    shift_bits,
    wdesc_bits,
    weight_row_bits,
)
from .requant import DrainMeta, Requantizer, ResultDrain
from .skid import PointerQueue, RegisterSlice
from .wdecode import StreamWeightReader, pending_counts, row_ok_counted

__all__ = ["LayerCmd", "LoadBeat", "InBeat", "PassLayout", "Sequencer", "Engine",
           "LOAD_WEIGHTS", "LOAD_BIAS", "LOAD_REQUANT", "LOAD_WSTREAM", "LOAD_WDESC",
           "LOAD_CODEBOOK", "wstream_load_addr"]

LOAD_WEIGHTS, LOAD_BIAS, LOAD_REQUANT = 0, 1, 2
#: ``LoadBeat.target`` of the compressed weight path (``weight_streams``; 3 is the top level's
#: schedule memory): a column stream word (``addr``: :func:`wstream_load_addr`), a layer's
#: descriptor row (``addr``: the layer), an entry of the central codebook memory (``addr``: its
#: index; a layer's block is copied into the lane tables at its start)
LOAD_WSTREAM, LOAD_WDESC, LOAD_CODEBOOK = 4, 5, 6


def wstream_load_addr(cfg: AccelConfig, column: int, word: int) -> int:
    """The ``LoadBeat.addr`` of word ``word`` of column ``column``'s stream memory."""
    return (column << max(1, (cfg.wstream_depth - 1).bit_length())) | word


class LayerCmd(data.StructLayout):
    """The runtime fields of one layer (:func:`hw.program.cmd_fields`, in that bit order)."""

    def __init__(self, cfg: AccelConfig):
        super().__init__({name: (signed(bits) if sgn else unsigned(bits))
                          for name, bits, sgn in cmd_fields(cfg)})


class LoadBeat(data.StructLayout):
    """One row for the weight (``LOAD_WEIGHTS``), bias or requantisation memory (or, with
    ``weight_streams``, the stream, descriptor and codebook memories), or for the top level's
    schedule memory (a row as wide as the widest of these)."""

    def __init__(self, cfg: AccelConfig):
        if cfg.weight_streams:
            from .top import StepLayout  # the top level's schedule rows (it imports this module)

            # no dense weight memory: the stream words, descriptors and codebooks instead; and
            # the top level's schedule rows, wider than all of these at few columns
            width = max(bias_row_bits(cfg), requant_row_bits(cfg), cfg.wstream_word_bits,
                        wdesc_bits(cfg), cfg.weight_bits, StepLayout(cfg).size)
            abits = max(1, (max(cfg.param_depth, cfg.codebook_depth, cfg.schedule_depth) - 1)
                        .bit_length(), wstream_load_addr(cfg, cfg.pe_columns - 1, 0)
                        .bit_length())
            super().__init__({"target": 3, "addr": unsigned(abits), "data": unsigned(width)})
            return
        width = max(weight_row_bits(cfg), bias_row_bits(cfg), requant_row_bits(cfg))
        abits = max(1, (max(cfg.weight_depth, cfg.param_depth) - 1).bit_length())
        super().__init__({"target": 2, "addr": unsigned(abits), "data": unsigned(width)})


class InBeat(data.StructLayout):
    """``count`` (1..``in_lanes``) consecutive input values of the layer's input tensor."""

    def __init__(self, cfg: AccelConfig):
        super().__init__({
            "data": data.ArrayLayout(signed(cfg.input_bits), cfg.in_lanes),
            "count": unsigned(cfg.in_lanes.bit_length()),
        })


class PassLayout(data.StructLayout):
    """One pass of the column array: a segment read, a weight row and its group's bookkeeping."""

    def __init__(self, cfg: AccelConfig):
        w = field_widths(cfg)
        super().__init__({
            "stage_a": 1,                       # read the input buffer (squeeze) else the window
            "addr": signed(w["abs"] + 1),       # absolute index of lane 0
            "off": signed(w["row"] + 1),        # offset of lane 0 inside its row
            "row_len": unsigned(w["row"]),
            "row_ok": 1,
            "wrow": unsigned(w["wrow"]),
            "prow": unsigned(w["prow"]),
            "first": 1,
            "last": 1,
            "meta": DrainMeta(cfg),
        })


class Sequencer(wiring.Component):
    """Pixel cursors, pass loop and buffer flow control of one layer.

    ``start`` (one cycle, with ``cmd`` stable from then on until ``idle``) begins a layer.
    Every cycle with ``issue`` the sequencer presents one pass on ``pass_``. It only issues a
    pass whose input values are written (``in_written``/``win_written``, counts of values written
    to the input and window buffers), and the last pass of a group only when a result bank is
    free (``release`` returns one). ``in_free``/``win_free`` are the absolute indices of the
    oldest values still needed: writers may write index ``i`` only while
    ``i < free + depth``. After the final pass, ``issued_all`` is set until the next ``start``.
    With ``weight_streams`` it issues a pass only when the weight row of the step's context is
    decoded: ``w_ok1``..``w_ok4`` are ``hw.wdecode.StreamWeightReader``'s ``ok1``..``ok4``;
    the sequencer registers them and forms ``hw.wdecode.row_ok_counted`` from those and its
    counts of its last three issues per context (``hw.wdecode.pending_counts``; the reader pops
    a row two cycles after its issue); ``issued_b``: whether the pass
    issued a cycle before was stage B. With ``fast_pipeline`` the passes wait in a two-entry
    queue (:class:`~hw.skid.PointerQueue`) between the loops that generate them and ``issue``,
    which looks at the queue's head only, and the free counts follow the passes as they
    issue; ``issued`` and ``pass_q`` are the issue and its pass a cycle later, from flip-flops
    without an enable: the engine takes them as its issue, so that ``issue`` drives nothing
    outside the sequencer.
    """

    def __init__(self, cfg: AccelConfig):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"Sequencer needs an AccelConfig, not {cfg!r}")
        self._cfg = cfg
        w = field_widths(cfg)
        ab = w["abs"] + 1
        ports = {
            "cmd": In(LayerCmd(cfg)),
            "start": In(1),
            "in_written": In(unsigned(ab)),
            "win_written": In(unsigned(ab)),
            "release": In(1),
            "issue": Out(1),
            "pass_": Out(PassLayout(cfg)),
            "in_free": Out(signed(ab + 1)),
            "win_free": Out(signed(ab + 1)),
            "issued_all": Out(1),
        }
        if cfg.fast_pipeline:
            ports["issued"] = Out(1)
            ports["pass_q"] = Out(PassLayout(cfg))
        if cfg.weight_streams:
            ports["w_ok1"] = In(2)
            ports["w_ok2"] = In(2)
            ports["w_ok3"] = In(2)
            ports["w_ok4"] = In(2)
            ports["issued_b"] = Out(1)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        cmd = self.cmd
        w = field_widths(cfg)
        ab = w["abs"] + 2
        lanes, cols = cfg.pe_lanes, cfg.pe_columns

        # -- cursor A (squeeze pixels) --------------------------------------------------------
        q = Signal(ab)
        q_abs = Signal(signed(ab))     # q * Cin: first input value of pixel q
        qm_abs = Signal(signed(ab))    # q * S: first squeeze value of pixel q

        # -- cursor B (output pixels) ------------------------------------------------------
        by = Signal(w["dim"] + 1)
        bx = Signal(w["dim"] + 1)
        b_done = Signal()
        ys = Signal(signed(w["dim"] + 2))      # top row of the union window
        ys_abs = Signal(signed(ab))            # ys * W * C
        xb = Signal(signed(w["row"] + 1))      # left value offset of the union window

        need_rows = Signal(signed(ab))
        need_start = Signal(signed(ab))
        xend = Signal(signed(w["row"] + 2))
        # the window reaches the last row (ys_hi): with fast_pipeline a flag set where ys is
        ys_hi = Signal()
        # the row from which the next output row's window reaches the last row (a register:
        # the command is stable from start on, and the first row step comes cycles later)
        ys_thr = Signal(signed(w["dim"] + 4))
        if cfg.fast_pipeline:
            m.d.sync += ys_thr.eq(cmd.b_h - cmd.b_win_rows - cmd.b_stride)
        else:
            m.d.comb += ys_hi.eq(ys + cmd.b_win_rows >= cmd.b_h)
        m.d.comb += [
            need_rows.eq(Mux(ys_hi, cmd.b_hlast, ys_abs + cmd.b_win_last)),
            xend.eq(xb + cmd.b_win_bytes),
            # while the window's top row is padding, the first real row is still wholly needed
            # by the next output row (regression: v1.0 conv10, a 1x1 kernel with pad 1)
            need_start.eq(Mux(ys < 0, 0, ys_abs + Mux(xb < 0, 0, xb))),
        ]
        b_last_pixel = Signal()
        # the cursor's last column and last row: with fast_pipeline registers, set where bx
        # and by are (an add and a compare in front of the step choice's enables)
        bx_last = Signal()
        by_last = Signal()
        if cfg.fast_pipeline:
            m.d.comb += b_last_pixel.eq(by_last & bx_last)
            # (against the command's width and height less 2, registered in every cycle: a
            # counter compared with a register, not a sum)
            wo_m2 = Signal(signed(len(cmd.b_wo) + 1), name="b_wo_m2")
            ho_m2 = Signal(signed(len(cmd.b_ho) + 1), name="b_ho_m2")
            m.d.sync += [wo_m2.eq(cmd.b_wo - 2), ho_m2.eq(cmd.b_ho - 2)]
        else:
            m.d.comb += [bx_last.eq(bx + 1 == cmd.b_wo), by_last.eq(by + 1 == cmd.b_ho),
                         b_last_pixel.eq(by_last & bx_last)]

        # Everything the step choice looks at is registered, in three stages: (1) sums of the
        # cursors, (2) the window's end, (3) comparisons; ``cur_ok`` is low for the three
        # cycles after a cursor moved, and no step is chosen then. The choice itself only ANDs
        # flags, where it used to add and compare in series (46 MHz on the ECP5 before:
        # ``python -m boards.timing sequencer``). A real layer's steps are many passes long, so
        # the wait never shows.
        staged = cfg.fast_pipeline
        # a small, slow device spares these registers: the same values combinationally
        d = m.d.sync if staged else m.d.comb
        cur_ok = Signal(init=0 if staged else 1)
        cur_ok1 = Signal()
        cur_ok2 = Signal()

        # fast_pipeline: the choice itself is registered too (sel_*), a cycle after the flags
        # (``python -m boards.timing sequencer``: the flags' ANDs into the pass state's
        # enables were the critical path, 83 MHz)
        sel_ok = Signal()
        sel_a = Signal()
        sel_b = Signal()

        def moved():
            """Statements for a cycle in which a cursor moves (the staged values go stale)."""
            return [cur_ok2.eq(0), cur_ok1.eq(0), cur_ok.eq(0),
                    sel_ok.eq(0), sel_a.eq(0), sel_b.eq(0)] if staged else []
        win_free = Signal(signed(ab))
        need_rows_q = Signal(signed(ab))
        xend_q = Signal(signed(w["row"] + 2))
        need_start_q = Signal(signed(ab))
        a_in_end_q = Signal(signed(ab + 1))
        a_win_end_q = Signal(signed(ab + 1))
        win_lim_q = Signal(signed(ab + 1))
        qm_lead_q = Signal(signed(ab + 1))
        q_more_q = Signal()
        # the branch starts of the pixel at the cursor: first value, its row offset, first row
        b_base_q = [Signal(signed(ab), name=f"b_base{k}_q") for k in (0, 1)]
        b_off_q = [Signal(signed(w["row"] + 2), name=f"b_off{k}_q") for k in (0, 1)]
        b_r0_q = [Signal(signed(w["dim"] + 2), name=f"b_r0{k}_q") for k in (0, 1)]
        b_col_q = [Signal(signed(ab), name=f"b_col{k}_q") for k in (0, 1)]
        if staged:
            m.d.sync += [cur_ok2.eq(1), cur_ok1.eq(cur_ok2), cur_ok.eq(cur_ok1)]
        d += [
            need_rows_q.eq(need_rows), xend_q.eq(xend),
            need_start_q.eq(need_start),
            a_in_end_q.eq(q_abs + cmd.a_cin), a_win_end_q.eq(qm_abs + cmd.a_out),
            win_lim_q.eq(win_free + cfg.window_buffer_depth), q_more_q.eq(q < cmd.a_pixels),
            qm_lead_q.eq(qm_abs - cmd.a_lead),
        ]
        for k in (0, 1):
            d += [
                b_col_q[k].eq(ys_abs + getattr(cmd, f"g{k}_dabs")),
                b_off_q[k].eq(xb + getattr(cmd, f"g{k}_dbyte")),
                b_base_q[k].eq(b_col_q[k] + b_off_q[k]),
                b_r0_q[k].eq(ys + getattr(cmd, f"g{k}_drow")),
            ]
        # the window's end is need_rows + min(xend, b_rb): both sums are formed, and the
        # comparisons below pick theirs (an add after a compare was a critical path)
        need_end_q = Signal(signed(ab + 1))     # with xend
        need_rb_q = Signal(signed(ab + 1))      # with b_rb
        clip_q = Signal()                       # xend > b_rb
        d += [need_end_q.eq(need_rows_q + xend_q), need_rb_q.eq(need_rows_q + cmd.b_rb),
              clip_q.eq(xend_q > cmd.b_rb)]
        # the comparisons use the buffers' write counts of the cycle before (they only grow, so
        # an older count is a safe one)
        in_ok_q = Signal()
        win_room_q = Signal()
        # both ends' comparisons registered, and the choice between them made after the
        # registers, by ``clip_d`` (``clip_q`` a cycle later, as the values compared are) (b85,
        # b87: the write count through the comparison and the choice, 10.1-10.2 ns)
        win_ok_rb_q, win_ok_end_q = Signal(), Signal()
        lead_rb_q, lead_end_q = Signal(), Signal()
        clip_d = Signal()
        d += [
            clip_d.eq(clip_q),
            in_ok_q.eq(self.in_written >= a_in_end_q),
            win_room_q.eq(a_win_end_q <= win_lim_q),
            win_ok_rb_q.eq(self.win_written >= need_rb_q),
            win_ok_end_q.eq(self.win_written >= need_end_q),
            lead_rb_q.eq(qm_lead_q < need_rb_q),
            lead_end_q.eq(qm_lead_q < need_end_q),
        ]
        ready_a = Signal()
        ready_b = Signal()
        prefer_a = Signal()
        m.d.comb += [
            ready_a.eq(cmd.fire & q_more_q & in_ok_q & win_room_q),
            ready_b.eq(~b_done & Mux(clip_d, win_ok_rb_q, win_ok_end_q)),
            prefer_a.eq(ready_a & Mux(clip_d, lead_rb_q, lead_end_q)),
        ]
        if staged:
            m.d.sync += [
                sel_ok.eq(cur_ok),
                sel_a.eq(cur_ok & (prefer_a | (ready_a & ~ready_b))),
                sel_b.eq(cur_ok & ~prefer_a & ready_b),
            ]

        # -- the step (one pixel of one stage) and its pass loop ---------------------------
        active = Signal()
        is_a = Signal()
        br = Signal()
        g = Signal(w["groups"])
        ky = Signal(w["kernel"])
        j = Signal(w["nseg"])
        abs_g0 = Signal(signed(ab))
        abs_ky = Signal(signed(ab))
        abs_cur = Signal(signed(ab))
        off0 = Signal(signed(w["row"] + 2))
        off_cur = Signal(signed(w["row"] + 2))
        row0 = Signal(signed(w["dim"] + 2))
        row = Signal(signed(w["dim"] + 2))
        wrow = Signal(w["wrow"])
        prow = Signal(w["prow"])
        s_base1 = Signal(signed(ab))
        s_off1 = Signal(signed(w["row"] + 2))
        s_r01 = Signal(signed(w["dim"] + 2))
        s_last = Signal()
        in_free = Signal(signed(ab))
        # fast_pipeline: set from reset too, so nothing is generated before the first command (a
        # pass generated from the idle command would wait in the queue and issue after start);
        # the small device's form keeps its netlist (an iCE40 flip-flop that starts at 1 costs a
        # LUT): without credits it issues no group's last pass then, so it finishes no group
        issued_all = Signal(init=1 if staged else 0)
        credits = Signal(range(cfg.result_banks + 1))

        # the loop bounds of the stage or branch being issued: registered when it is loaded
        # (fast_pipeline: multiplexing them from the command every cycle was the next critical
        # path), else multiplexed
        names = ("groups", "kh", "nseg", "nlast", "ymax")
        widths = {"groups": w["groups"], "kh": w["kernel"], "nseg": w["nseg"],
                  "nlast": w["ncol"], "ymax": w["ymax"]}
        bound = {n: Signal(widths[n], name=f"{n}_b") for n in names}
        groups, kh, nseg, nlast, ymax = (bound[n] for n in names)

        def field(prefix, n):
            return 1 if (prefix, n) == ("a", "kh") else getattr(cmd, f"{prefix}_{n}")

        # fast_pipeline: the pass loop's last-pass flags are registers, set where the counters
        # are set (a compare of j + 1 with nseg in front of issue was the next critical path)
        j_last = Signal()
        ky_last = Signal()
        g_last = Signal()
        # their next values (comb, default: held) and ``last`` itself as a register too
        j_last_n = Signal()
        ky_last_n = Signal()
        g_last_n = Signal()
        last_q = Signal()
        # and the pass loop's end (last pass of the last group) and the branch's, so that the
        # enables of the pass state (some 90 registers: b79, 11.3 ns) are formed from few
        # flip-flops: ``end_q`` = last & last_group, ``lastbr_q`` = last_branch
        end_q = Signal()
        lastbr_q = Signal()
        if staged:
            m.d.comb += [j_last_n.eq(j_last), ky_last_n.eq(ky_last), g_last_n.eq(g_last)]
            m.d.sync += [j_last.eq(j_last_n), ky_last.eq(ky_last_n), g_last.eq(g_last_n),
                         last_q.eq(j_last_n & ky_last_n),
                         end_q.eq(j_last_n & ky_last_n & g_last_n)]
        credits_nz = Signal()

        # fast_pipeline: whether a stage's or branch's loop bound is 1, registered from the
        # command in every cycle (it is stable while a layer runs, and the first step is chosen
        # several cycles after the start), and kept with the bounds when they load: the
        # last-pass flags take a flip-flop where they took the command's field through a
        # comparison (b82: ``sel_a`` through the bound's comparison into ``end_q``, 10.7 ns)
        one = {}
        one_b = {}
        if staged:
            for prefix in ("a", "g0", "g1"):
                for n in ("nseg", "kh", "groups"):
                    one[prefix, n] = Signal(name=f"{prefix}_{n}_is1")
                    m.d.sync += one[prefix, n].eq(field(prefix, n) == 1)
            for n in ("nseg", "kh"):
                one_b[n] = Signal(name=f"{n}_is1_b")
        # and likewise each bound less 2, so that the next last-pass flags compare a counter
        # with a register (``j == nseg - 2``), not a sum with the bound (``j + 2 == nseg``: a
        # carry chain ahead of the comparison; b85, b87: into ``last_q``, ``end_q``, 9.7 ns)
        m2 = {}
        m2_b = {}
        if staged:
            for prefix in ("a", "g0", "g1"):
                for n in ("nseg", "kh", "groups"):
                    m2[prefix, n] = Signal(signed(widths[n] + 1), name=f"{prefix}_{n}_m2")
                    m.d.sync += m2[prefix, n].eq(field(prefix, n) - 2)
            for n in ("nseg", "kh", "groups"):
                m2_b[n] = Signal(signed(widths[n] + 1), name=f"{n}_m2_b")

        def load_bounds(prefix):
            if staged:
                m.d.sync += [bound[n].eq(field(prefix, n)) for n in names]
                m.d.sync += [one_b[n].eq(one[prefix, n]) for n in ("nseg", "kh")]
                m.d.sync += [m2_b[n].eq(m2[prefix, n]) for n in ("nseg", "kh", "groups")]
                m.d.comb += [j_last_n.eq(one[prefix, "nseg"]),
                             ky_last_n.eq(one[prefix, "kh"]),
                             g_last_n.eq(one[prefix, "groups"])]

        if not staged:
            m.d.comb += [bound[n].eq(Mux(is_a, field("a", n),
                                         Mux(br, field("g1", n), field("g0", n))))
                         for n in names]

        first = Signal()
        last = Signal()
        last_group = Signal()
        last_branch = Signal()
        step_end = Signal()
        if staged:
            m.d.comb += [last.eq(last_q), last_group.eq(g_last)]
        else:
            m.d.comb += [last.eq((ky + 1 == kh) & (j + 1 == nseg)),
                         last_group.eq(g + 1 == groups)]
        # the pass the generator (the loops above and below) presents, and whether it moves on
        gen = Signal(PassLayout(cfg))
        adv = Signal()
        m.d.comb += [
            first.eq((ky == 0) & (j == 0)),
            last_branch.eq(is_a | ~cmd.b_two | br),
            step_end.eq(last & last_group & last_branch),
            gen.stage_a.eq(is_a),
            gen.addr.eq(abs_cur),
            gen.off.eq(off_cur),
            gen.row_len.eq(cmd.b_rb),
            gen.row_ok.eq((row >= 0) & (row < cmd.b_h)),
            gen.wrow.eq(wrow),
            gen.prow.eq(prow),
            gen.first.eq(first),
            gen.last.eq(last),
            gen.meta.nvalid.eq(Mux(last_group, nlast, cols)),
            gen.meta.dest.eq(is_a),
            gen.meta.ymax.eq(ymax),
            gen.meta.last.eq(~is_a & s_last & last_group & last_branch),
            self.issued_all.eq(issued_all),
        ]
        # -- issue: the pass at hand goes out (``issue``) when its group's last pass has a free
        # result bank and, with weight streams, its weight row is decoded. fast_pipeline: the
        # generator's passes wait in a two-entry queue, and ``issue`` looks at the queue's head
        # only; the generator moves on while the queue has room (a flip-flop). Its wide pass
        # state then no longer hangs on the issue's credits and row flags (board build b32, 66
        # MHz: the reader's flags -> issue -> the step choice -> the cursor's enables, across
        # 30 columns), and the queue's registers drive the buffers' addresses and the delay
        # lines. The buffers' free counts go with the passes: a writer may overwrite a value
        # only once every pass that reads it has issued, not when the generator moved on.
        if staged:
            qpass = data.StructLayout({"p": PassLayout(cfg), "in_free": signed(ab),
                                       "win_free": signed(ab)})
            # a pointer queue, not a register slice: ``issue`` (its ready) moves a read pointer
            # instead of enabling the ~150 payload registers (b39: 4.2 ns from the issue
            # logic to those enables)
            # its head's stage and last-pass bits also in registers of their own (``o_flags``),
            # which the issue logic reads (b81: the read pointer through the entries'
            # multiplexer into the issue and the credits, 11.35 ns)
            m.submodules.queue = queue = PointerQueue(
                qpass, flags=lambda e: Cat(e.p.stage_a, e.p.last))
            head = queue.o.payload
            m.d.comb += [
                queue.i.valid.eq(active),
                queue.i.payload.p.eq(gen),
                queue.i.payload.in_free.eq(in_free),
                queue.i.payload.win_free.eq(win_free),
                adv.eq(active & queue.i.ready),
                queue.o.ready.eq(self.issue),
                self.pass_.eq(head.p),
                self.in_free.eq(Mux(queue.o.valid, head.in_free, in_free)),
                self.win_free.eq(Mux(queue.o.valid, head.win_free, win_free)),
            ]
            at_valid, at_a, at_last = queue.o.valid, queue.o_flags[0], queue.o_flags[1]
        else:
            m.d.comb += [adv.eq(self.issue), self.pass_.eq(gen),
                         self.in_free.eq(in_free), self.win_free.eq(win_free)]
            at_valid, at_a, at_last = active, is_a, last
        if staged:
            # a group's last pass takes its bank from ``credits`` a cycle after its issue
            # (``took``, a flip-flop), and ``has_credit`` counts that pass from registers: the
            # issue then feeds one flip-flop here, not the credits' sum and zero test (b85:
            # the pending counts -> issue -> ``credits_nz``, 10.6 ns, 4.8 of it routing from
            # the issue)
            took = Signal()
            credits_ge2 = Signal()
            has_credit = Mux(took, credits_ge2, credits_nz)
        else:
            has_credit = credits != 0
        if staged:
            # the issue a cycle later and its pass, from flip-flops without an enable, for the
            # weight reader and the engine, which takes them as its own issue: ``issue`` and
            # the queue's pointer stay inside the sequencer (b30), and the queue's head
            # registers only drive these (b34: the head, pulled towards the buffers' address
            # logic, put 47 columns between the issue and the enables of what was then a
            # register slice). The issue logic here has its own register of the issue,
            # ``no_pend1``, held inverted so that yosys keeps it apart (b35: one register for
            # both sat between them, 34 columns from that logic)
            no_pend1 = Signal(init=1)
            m.d.sync += [self.issued.eq(self.issue), no_pend1.eq(~self.issue),
                         self.pass_q.eq(self.pass_)]
        w_ok = 1
        if cfg.weight_streams:
            # the reader's flags registered once more here, and the issues of the last three
            # cycles (a row leaves the reader's FIFO two cycles after its issue): ``issue`` is
            # formed from the sequencer's own flip-flops only (board build b29: with the
            # reader's flags as inputs it was placed by the decoder, 4 ns from here).
            oks = [Signal(2, name=f"w_ok{k}_q") for k in (1, 2, 3, 4)]
            m.d.sync += [q.eq(v) for q, v in zip(oks, (self.w_ok1, self.w_ok2, self.w_ok3,
                                                       self.w_ok4))]
            no_pend2, no_pend3 = Signal(init=1), Signal(init=1)
            # the stages of the last three issues, held as "was stage B" and starting at 1 (their
            # value matters only after an issue): ``pass_q.stage_a`` is the same register of
            # the head's stage, the decoder's register of its priority (``ctx``) the same of
            # its inverse, and yosys merges flip-flops of the same input and initial value; a
            # merged one is pulled towards the buffers (b35) or the decoder (b36)
            was_b1, was_b2, was_b3 = Signal(init=1), Signal(init=1), Signal(init=1)
            m.d.sync += [no_pend2.eq(no_pend1), no_pend3.eq(no_pend2), was_b1.eq(~at_a),
                         was_b2.eq(was_b1), was_b3.eq(was_b2)]
            # ``hw.wdecode.row_ok`` of those issues, with the issues of each context among them
            # counted in a register (``pend_n``, kept as the issues come and go) instead of
            # added up from the three in front of ``issue`` (b70: 10.9 ns into the credits and
            # the queue's flags)
            pend_n = pending_counts(m, self.issue, ~at_a, [(~no_pend1, was_b1),
                                                           (~no_pend2, was_b2),
                                                           (~no_pend3, was_b3)], "pend_n")
            w_ok = row_ok_counted(~at_a, oks, pend_n)
            m.d.comb += self.issued_b.eq(was_b1)
        # a group's last pass needs a free result bank (reserved here, released by the drain):
        # the bank is written PIPELINE cycles later; with weight streams, also its decoded
        # weight row
        m.d.comb += self.issue.eq(at_valid & (~at_last | has_credit) & w_ok)
        credits_next = Signal.like(credits)
        release = self.release
        if staged:
            # a bank released is counted a cycle later, from a register (b68: the drain's head
            # entry through its chunk count into ``release``, across to the credits, 12.7 ns)
            release = Signal(name="release_q")
            m.d.sync += release.eq(self.release)
        if staged:
            m.d.sync += took.eq(self.issue & at_last)
            m.d.comb += credits_next.eq(credits - took + release)
            m.d.sync += credits_ge2.eq(credits_next >= 2)
        else:
            m.d.comb += credits_next.eq(credits - (self.issue & at_last) + release)
        m.d.sync += [credits.eq(credits_next), credits_nz.eq(credits_next != 0)]

        # loading a step or a branch sets the whole pass state
        def load_a():
            load_bounds("a")
            if staged:
                m.d.sync += lastbr_q.eq(1)
            m.d.sync += [
                active.eq(1), is_a.eq(1), br.eq(0), g.eq(0), ky.eq(0), j.eq(0),
                abs_g0.eq(q_abs), abs_ky.eq(q_abs), abs_cur.eq(q_abs),
                off0.eq(0), off_cur.eq(0), row0.eq(0), row.eq(0),
                wrow.eq(cmd.a_wbase), prow.eq(cmd.a_pbase),
                in_free.eq(q_abs),
                q.eq(q + 1), q_abs.eq(q_abs + cmd.a_cin), qm_abs.eq(qm_abs + cmd.a_out),
                *moved(),
            ]

        def load_branch(k, base, off, r0):
            load_bounds(f"g{k}")
            if staged:
                m.d.sync += lastbr_q.eq(1 if k else ~cmd.b_two)
            m.d.sync += [
                active.eq(1), is_a.eq(0), br.eq(k), g.eq(0), ky.eq(0), j.eq(0),
                abs_g0.eq(base), abs_ky.eq(base), abs_cur.eq(base),
                off0.eq(off), off_cur.eq(off), row0.eq(r0), row.eq(r0),
                wrow.eq(getattr(cmd, f"g{k}_wbase")), prow.eq(getattr(cmd, f"g{k}_pbase")),
            ]

        def load_b():
            load_branch(0, b_base_q[0], b_off_q[0], b_r0_q[0])
            m.d.sync += [s_base1.eq(b_base_q[1]), s_off1.eq(b_off_q[1]), s_r01.eq(b_r0_q[1]),
                         s_last.eq(b_last_pixel), win_free.eq(need_start_q), *moved()]
            with m.If(b_last_pixel):
                m.d.sync += b_done.eq(1)
            with m.If(bx_last):
                m.d.sync += [bx.eq(0), xb.eq(cmd.b_left), by.eq(by + 1),
                             ys.eq(ys + cmd.b_stride), ys_abs.eq(ys_abs + cmd.b_rowstep)]
                if cfg.fast_pipeline:
                    m.d.sync += [bx_last.eq(cmd.b_wo == 1), by_last.eq(by == ho_m2),
                                 ys_hi.eq(ys >= ys_thr)]
            with m.Else():
                m.d.sync += [bx.eq(bx + 1), xb.eq(xb + cmd.b_pix)]
                if cfg.fast_pipeline:
                    m.d.sync += bx_last.eq(bx == wo_m2)

        def choose():
            if not staged:
                # the small device's form: the flags straight from the comparisons (the same
                # choice; the iCEBreaker is at its placement limit, 5,219 of 5,280 cells, and
                # the registered form's enables did not place there)
                with m.If(~cur_ok):
                    m.d.sync += active.eq(0)
                with m.Elif(prefer_a):
                    load_a()
                with m.Elif(ready_b):
                    load_b()
                with m.Elif(ready_a):
                    load_a()
                with m.Else():
                    m.d.sync += active.eq(0)
                    with m.If(b_done):
                        m.d.sync += issued_all.eq(1)
                return
            with m.If(sel_a):
                load_a()
            with m.Elif(sel_b):
                load_b()
            with m.Else():
                m.d.sync += active.eq(0)
                with m.If(sel_ok & b_done):
                    m.d.sync += issued_all.eq(1)

        def advance(tail):
            """A pass within the step: the next segment, row or group; with ``tail`` (the
            small device's form) the step's end as well, in the same chain."""
            with m.If(~last):
                with m.If(j_last if staged else j + 1 == nseg):
                    m.d.sync += [j.eq(0), ky.eq(ky + 1), abs_ky.eq(abs_ky + cmd.b_rb),
                                 abs_cur.eq(abs_ky + cmd.b_rb), off_cur.eq(off0),
                                 row.eq(row + 1)]
                    if staged:
                        m.d.comb += [j_last_n.eq(one_b["nseg"]), ky_last_n.eq(ky == m2_b["kh"])]
                with m.Else():
                    m.d.sync += [j.eq(j + 1), abs_cur.eq(abs_cur + lanes),
                                 off_cur.eq(off_cur + lanes)]
                    if staged:
                        m.d.comb += j_last_n.eq(j == m2_b["nseg"])
            with m.Elif(~last_group):
                m.d.sync += [g.eq(g + 1), ky.eq(0), j.eq(0), abs_ky.eq(abs_g0),
                             abs_cur.eq(abs_g0), off_cur.eq(off0), row.eq(row0),
                             prow.eq(prow + 1)]
                if staged:
                    m.d.comb += g_last_n.eq(g == m2_b["groups"])
                    m.d.comb += [ky_last_n.eq(one_b["kh"]), j_last_n.eq(one_b["nseg"])]
            if tail:
                with m.Elif(~last_branch):
                    load_branch(1, s_base1, s_off1, s_r01)
                with m.Else():
                    choose()

        with m.If(self.start):
            m.d.sync += [
                active.eq(0), issued_all.eq(0), credits.eq(cfg.result_banks), credits_nz.eq(1),
                q.eq(0), q_abs.eq(0), qm_abs.eq(0), in_free.eq(0), win_free.eq(0),
                by.eq(0), bx.eq(0), b_done.eq(0), ys.eq(cmd.b_top), ys_abs.eq(cmd.b_top_abs),
                xb.eq(cmd.b_left), *moved(),
            ]
            if staged:
                m.d.sync += [took.eq(0), credits_ge2.eq(cfg.result_banks >= 2)]
                m.d.sync += [bx_last.eq(cmd.b_wo == 1), by_last.eq(cmd.b_ho == 1),
                             # b_top + b_win_rows >= b_h, from the compiler (b55: the add and
                             # the compare on the command register, 12.1 ns)
                             ys_hi.eq(cmd.b_top_hi)]
        with m.Elif(~active):
            with m.If(~issued_all):
                choose()
        with m.Elif(adv):
            m.d.sync += wrow.eq(wrow + 1)
            if staged:
                # the step's end first, from its own flip-flops (``end_q``, ``lastbr_q``)
                with m.If(end_q):
                    with m.If(~lastbr_q):
                        load_branch(1, s_base1, s_off1, s_r01)
                    with m.Else():
                        choose()
                with m.Else():
                    advance(False)
            else:
                advance(True)
        return m


class Engine(wiring.Component):
    """The whole engine: sequencer, buffers, column array, requantisation, pools.

    Streams:

    - ``cmd``: a :class:`LayerCmd` (``hw.program.pack_cmd``); taken when the previous layer's
      last output beat has left.
    - ``load``: :class:`LoadBeat` rows for the weight, bias and requantisation memories.
    - ``i``: :class:`InBeat` of the layer's input values (``input_bits`` signed), row-major
      pixels, channels interleaved; a beat may cross pixels and rows.
    - ``o``: :class:`hw.pool.Beat` of ``sum_bits`` values: the output in the same order (after
      the fused pool, if any); ``last`` marks the layer's final beat.

    ``weight_depth``/``param_depth`` override the configuration's memory depths (tests use small
    ones); the command's base rows must fit them. ``init`` (an object with ``weight_rows``,
    ``bias_rows`` and ``requant_rows``, such as :class:`compiler.wimage.WeightImage`) gives the
    memories' initial contents, so a design can carry a whole model from configuration on.

    With ``cfg.weight_streams`` the weights come from compressed streams
    (:class:`hw.wdecode.StreamWeightReader`, loaded with ``LOAD_WSTREAM``, ``LOAD_WDESC`` and
    ``LOAD_CODEBOOK``; the command's ``wdesc`` names the layer's descriptor) instead of a dense
    weight memory; ``init`` then needs ``streams`` (a
    :class:`compiler.wstream_image.StreamImage`) instead of ``weight_rows``.
    """

    def __init__(self, cfg: AccelConfig, *, weight_depth: int | None = None,
                 param_depth: int | None = None, init=None):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"Engine needs an AccelConfig, not {cfg!r}")
        if cfg.requant_units > cfg.buffer_banks:
            raise ValueError("requant_units must not exceed buffer_banks")
        self._cfg = cfg
        self._weight_depth = cfg.weight_depth if weight_depth is None else weight_depth
        self._param_depth = cfg.param_depth if param_depth is None else param_depth
        self._init = ((), (), ()) if init is None else \
            (None if cfg.weight_streams else init.weight_rows, init.bias_rows, init.requant_rows)
        self._stream_init = None
        if cfg.weight_streams and init is not None:
            self._stream_init = getattr(init, "streams", None)
            if self._stream_init is None:
                raise ValueError("An engine with weight_streams takes init with ``streams`` "
                                 "(compiler.wstream_image.StreamImage), not dense weight rows")
        super().__init__({
            "cmd": In(stream.Signature(LayerCmd(cfg))),
            "load": In(stream.Signature(LoadBeat(cfg))),
            "i": In(stream.Signature(InBeat(cfg))),
            "o": Out(stream.Signature(Beat(width=cfg.sum_bits, lanes=cfg.requant_units))),
            "busy": Out(1),
        })

    @property
    def config(self) -> AccelConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = field_widths(cfg)
        lanes, r = cfg.pe_lanes, cfg.requant_units
        ab = w["abs"] + 1

        m.submodules.seq = seq = Sequencer(cfg)
        m.submodules.inbuf = inbuf = SegmentBuffer(
            depth=cfg.in_buffer_depth, banks=cfg.buffer_banks, lanes=lanes, wlanes=cfg.in_lanes,
            width=cfg.input_bits, row_bits=w["row"] + 2, hold=not cfg.fast_pipeline,
            latency=cfg.buffer_latency, write_latency=cfg.buffer_write_latency)
        m.submodules.winbuf = winbuf = SegmentBuffer(
            depth=cfg.window_buffer_depth, banks=cfg.buffer_banks, lanes=lanes,
            wlanes=max(r, cfg.in_lanes),
            width=cfg.input_bits, row_bits=w["row"] + 2, hold=not cfg.fast_pipeline,
            # read at the in-buffer's addresses: its lane selects start at all ones, the
            # in-buffer's at 0, so that yosys keeps them apart (SegmentBuffer)
            latency=cfg.buffer_latency, select_init=cfg.buffer_banks - 1,
            write_latency=cfg.buffer_write_latency)
        w_init, b_init, r_init = self._init
        if cfg.weight_streams:
            m.submodules.weights = weights = StreamWeightReader(cfg, init=self._stream_init)
        else:
            m.submodules.weights = weights = WeightReader(cfg, self._weight_depth, init=w_init)
        m.submodules.bias = bias = RowStore(width=bias_row_bits(cfg), depth=self._param_depth,
                                            init=b_init)
        m.submodules.rq = rq = RowStore(width=requant_row_bits(cfg), depth=self._param_depth,
                                        init=r_init)
        m.submodules.array = array = ColumnArray(cfg)
        m.submodules.drain = drain = ResultDrain(cfg)
        m.submodules.requant = requant = Requantizer(cfg)
        obeat = Beat(width=cfg.score_bits, lanes=r)
        m.submodules.ofifo = ofifo = fifo.SyncFIFOBuffered(width=obeat.size,
                                                           depth=cfg.out_fifo_depth)
        m.submodules.maxpool = maxpool = MaxPool(cfg)
        m.submodules.gsum = gsum = GlobalSum(cfg)

        # -- command -------------------------------------------------------------------------
        cmd = Signal(LayerCmd(cfg))
        busy = Signal()
        # the sequencer starts the cycle after the command register is loaded
        start = Signal()
        # fast_pipeline: the sequencer reads a copy of the command register of its own (b80:
        # ``b_two`` of the register the pools, the weight reader and the input also read, 3.9
        # ns of routing away, then the step choice into the pixel cursor's enables, 12.9 ns,
        # the critical path). It loads the command stream's payload in every idle cycle, so
        # its enable is not the register's and yosys keeps it apart (a copy told apart by its
        # initial value only was merged back, every bit: the commands come from a ROM). While
        # idle the sequencer has issued everything, and from the cycle a command is taken
        # (``busy``) the copy holds it, as ``cmd`` does.
        seq_cmd = cmd
        if cfg.fast_pipeline:
            seq_cmd = Signal(LayerCmd(cfg), name="seq_cmd")
            with m.If(~busy):
                m.d.sync += seq_cmd.eq(self.cmd.payload)
        m.d.comb += [self.cmd.ready.eq(~busy), self.busy.eq(busy), seq.cmd.eq(seq_cmd),
                     seq.start.eq(start)]
        m.d.sync += start.eq(self.cmd.valid & ~busy)
        # taken with the command, besides its register (which is read all over the chip: b48,
        # b49): the pool steering's own flags, and the weight reader's own copy of the
        # descriptor's row (b49: the command register, 8.7 ns away, then the descriptor
        # memory's read logic), all ones at first, unlike ``cmd``, so that yosys does not
        # merge it back
        is_max = Signal(name="pool_is_max")
        is_sum = Signal(name="pool_is_sum")
        if cfg.weight_streams:
            wdesc = Signal(len(cmd.wdesc), name="wdesc", init=(1 << len(cmd.wdesc)) - 1)
        # and the input's own copy of ``fire`` (b65: the command register's bit, 4.8 ns of
        # routing away, then the subtraction into the input's ``room``, 13.7 ns, the critical
        # path), taken from the register in the cycle after, with ``start``: an input and an
        # enable of its own, so that yosys keeps it apart (a copy told apart by its initial
        # value was merged with ``b_two``, whose values equal ``fire``'s in every command of the
        # ROM: b81's netlist). The input first uses it two cycles after the command is taken.
        fire_in = Signal(name="fire_in")
        with m.If(start):
            m.d.sync += fire_in.eq(cmd.fire)
        with m.If(self.cmd.valid & ~busy):
            m.d.sync += [cmd.eq(self.cmd.payload), busy.eq(1),
                         is_max.eq(self.cmd.payload.pool == POOL_MAX),
                         is_sum.eq(self.cmd.payload.pool == POOL_SUM)]
            if cfg.weight_streams:
                m.d.sync += wdesc.eq(self.cmd.payload.wdesc)
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += busy.eq(0)

        # -- loading the memories ------------------------------------------------------------
        ld = self.load.payload
        if cfg.weight_streams:
            wload = [
                weights.s_en.eq(self.load.valid & (ld.target == LOAD_WSTREAM)),
                weights.s_addr.eq(ld.addr), weights.s_data.eq(ld.data),
                weights.d_en.eq(self.load.valid & (ld.target == LOAD_WDESC)),
                weights.d_addr.eq(ld.addr), weights.d_data.eq(ld.data),
                weights.c_en.eq(self.load.valid & (ld.target == LOAD_CODEBOOK)),
                weights.c_addr.eq(ld.addr), weights.c_data.eq(ld.data),
                # a layer's descriptor is read the cycle after its command is taken, from the
                # command register (``start``: a flip-flop; the stream's valid & ~busy reached
                # the weight reader's wide fan-out in 16.4 ns, board build b18)
                weights.layer.eq(start),
                weights.desc.eq(wdesc),
                weights.fire.eq(cmd.fire),
            ]
        else:
            wload = [
                weights.w_en.eq(self.load.valid & (ld.target == LOAD_WEIGHTS)),
                weights.w_addr.eq(ld.addr), weights.w_data.eq(ld.data),
            ]
        m.d.comb += [
            self.load.ready.eq(1),
            *wload,
            bias.w_en.eq(self.load.valid & (ld.target == LOAD_BIAS)),
            bias.w_addr.eq(ld.addr), bias.w_data.eq(ld.data),
            rq.w_en.eq(self.load.valid & (ld.target == LOAD_REQUANT)),
            rq.w_addr.eq(ld.addr), rq.w_data.eq(ld.data),
        ]

        # -- input stream into the input buffer (Fire) or the window buffer ---------------
        in_w = Signal(ab)
        win_w = Signal(ab)
        in_free_d = [Signal(signed(ab + 1), name=f"in_free_d{i}") for i in range(3)]
        win_free_d = [Signal(signed(ab + 1), name=f"win_free_d{i}") for i in range(3)]
        m.d.sync += [in_free_d[0].eq(seq.in_free), win_free_d[0].eq(seq.win_free)]
        for i in range(1, 3):
            m.d.sync += [in_free_d[i].eq(in_free_d[i - 1]), win_free_d[i].eq(win_free_d[i - 1])]
        room = Signal()
        more = Signal()
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        if cfg.fast_pipeline:
            # ready is an AND of two flip-flops, both comparisons made a cycle ahead: room, that
            # the write count without this cycle's beat is at most the limit less a beat (the
            # limit: the last value a beat may end on, the buffer's free count two cycles old
            # plus its depth minus a beat), so that next cycle's count is within the limit
            # whatever this cycle's beat; and more, that next cycle's count (0 after a start,
            # plus the beat taken now) < the layer's values. The differences come from
            # registers only; for ``more`` the beat taken (``take``, late) then only chooses
            # between comparing with 0 and with its few-bit count. A start next cycle
            # (cmd.valid & ~busy now) clears both: exactly the old ``busy & ~start & ...``, as
            # no beat is wanted while idle (every layer takes all its values before it ends).
            # ``start`` inverted, a register of this logic's own (b46: ``start``, which also
            # goes to the weight reader and the sequencer, 5.5 ns away, then the carry chain
            # of ``d_room``; an inverted copy, so that yosys does not merge it back)
            nstart = Signal(init=1, name="nstart_in")
            m.d.sync += nstart.eq(~(self.cmd.valid & ~busy))
            # in the cycle after a start (``nstart`` low) the counts still hold the last layer's
            # (``seq.start`` clears them a cycle later): both flags are cleared then too, a
            # cycle more per layer, so that the differences read the counts as they are (b70:
            # ``nstart`` choosing 0 in front of the subtraction into ``room``, 12.0 ns)
            base = in_w
            # (the two sums registers: each formed a cycle earlier from the count a cycle
            # younger, the same values; b57: the add into the subtraction below into ``room``,
            # 13.1 ns)
            in_lim = Signal(signed(ab + 2), name="in_lim")
            win_lim = Signal(signed(ab + 2), name="win_lim")
            # ``room`` asks for a whole beat more than the limit: a beat of any count fits
            # after this cycle's, so ``take`` and the count are not in front of it, and the
            # comparison is the sign of one subtraction (b77/b78: the subtraction, the OR of
            # its high bits and ``take`` into ``room``, 10.5-11.2 ns); the buffer holds a beat
            # less than it could
            m.d.sync += [in_lim.eq(in_free_d[0] + (cfg.in_buffer_depth - 2 * cfg.in_lanes)),
                         win_lim.eq(win_free_d[0]
                                    + (cfg.window_buffer_depth - 2 * cfg.in_lanes))]
            # chosen by the input's own copy of the command's ``fire`` (``fire_in``, above)
            lim_next = Mux(fire_in, in_lim, win_lim)
            d_room = Signal(signed(ab + 3))
            d_more = Signal(signed(ab + 2))
            # the values still to come (in_total - in_w) counted down in a register of their
            # own, so that ``more`` compares a register, not a subtraction (b56: in_w through
            # the carry chain of in_total - in_w into ``more``, 13.1 ns)
            in_left = Signal(signed(ab + 2), name="in_left")
            m.d.comb += [d_room.eq(lim_next - base), d_more.eq(in_left)]
            count = self.i.payload.count
            cb = len(count)

            def at_least(d, n, strict):
                """``d >= n`` (``d > n`` if strict) for a wide signed ``d`` and a small
                unsigned ``n``: the sign, an OR of the high bits, a few-bit comparison."""
                low = d[:cb] > n if strict else d[:cb] >= n
                return ~d[-1] & ((d[cb:-1] != 0) | low)

            starting = self.cmd.valid & ~busy
            # the counts' sums formed from the beat's count alone, ``take`` only their enable
            # (b59: ``take`` into the adds' carry chains, then into ``in_w``, 11.4 ns)
            with m.If(seq.start):
                m.d.sync += [in_w.eq(0), in_left.eq(cmd.in_total)]
            with m.Elif(take):
                m.d.sync += [in_w.eq(in_w + count), in_left.eq(in_left - count)]
            m.d.sync += [
                room.eq(nstart & ~starting & ~d_room[-1]),
                more.eq(nstart & ~starting & Mux(take, at_least(d_more, count, True),
                                                 at_least(d_more, 0, True))),
            ]
        else:
            in_end = Signal(ab + 1)
            m.d.comb += in_end.eq(in_w + cfg.in_lanes)
            m.d.comb += room.eq(Mux(cmd.fire, in_end <= in_free_d[2] + cfg.in_buffer_depth,
                                    in_end <= win_free_d[2] + cfg.window_buffer_depth))
            m.d.comb += more.eq(in_w < cmd.in_total)
            with m.If(take):
                m.d.sync += in_w.eq(in_w + self.i.payload.count)
        if cfg.fast_pipeline:
            m.d.comb += self.i.ready.eq(more & room)
        else:
            m.d.comb += self.i.ready.eq(busy & ~seq.start & more & room)
        # what goes into the buffers: the beat taken, or (fast_pipeline) that beat a cycle
        # later from registers, so the buffers' write enables do not hang on ready; the
        # sequencer then sees the values a cycle later too (in_written)
        wr_en, wr_addr, wr_beat, written = take, in_w, self.i.payload, in_w
        if cfg.fast_pipeline:
            wr_en, wr_addr = Signal(), Signal.like(in_w, name="in_wr_addr")
            wr_beat, written = Signal.like(self.i.payload), Signal.like(in_w, name="in_written")
            m.d.sync += [wr_en.eq(take & ~seq.start), wr_addr.eq(in_w),
                         wr_beat.eq(self.i.payload), written.eq(Mux(seq.start, 0, in_w))]
        m.d.comb += [
            inbuf.w.valid.eq(wr_en & cmd.fire),
            inbuf.w.payload.addr.eq(wr_addr),
            inbuf.w.payload.data.eq(wr_beat.data),
            inbuf.w.payload.count.eq(wr_beat.count),
        ]
        # the buffers' values are in their RAMs buffer_write_latency - 1 cycles later than
        # their counts: the sequencer sees the counts as late (0 from a start on, as the
        # counts themselves)
        win_written, in_written = Mux(cmd.fire, win_w, written), written
        for i in range(cfg.buffer_write_latency - 1):
            late_win = Signal.like(win_w, name=f"win_written{i}")
            late_in = Signal.like(in_w, name=f"in_written{i}")
            m.d.sync += [late_win.eq(Mux(seq.start, 0, win_written)),
                         late_in.eq(Mux(seq.start, 0, in_written))]
            win_written, in_written = late_win, late_in
        m.d.comb += [seq.win_written.eq(win_written), seq.in_written.eq(in_written)]

        # -- pass pipeline: t0 issue, tB lanes and weights (B = cfg.buffer_latency),
        # t(pass_latency) finished group. fast_pipeline: t0 is the cycle after the sequencer's
        # issue, with its registers of the issue and the pass (see Sequencer) --
        if cfg.fast_pipeline:
            issue, ps = seq.issued, seq.pass_q
        else:
            issue, ps = seq.issue, seq.pass_
        # the weights come at t(w_lat): 2 from the dense reader, 5 from the stream reader after
        # the sequencer's issue (it pops its row two cycles after it), so 4 after t0: with the
        # buffers' 5 (fast_pipeline) one register between the stream reader and the array
        w_lat = weights.latency
        if cfg.weight_streams:
            # the step's context (0 the squeeze, stage A; 1 the expands or a plain
            # convolution) of the queue's head: the decoder's priority
            wread = [weights.ctx.eq(~seq.pass_.stage_a), seq.w_ok1.eq(weights.ok1),
                     seq.w_ok2.eq(weights.ok2), seq.w_ok3.eq(weights.ok3),
                     seq.w_ok4.eq(weights.ok4),
                     weights.issued.eq(seq.issued), weights.issued_ctx.eq(seq.issued_b)]
            w_lat -= 1
        else:
            wread = [weights.r_en.eq(issue), weights.r_addr.eq(ps.wrow)]
        # fast_pipeline: both buffers read every cycle (``hold=False``; the array takes the
        # lanes two cycles after an issue, of the stage that issued): no enable fans out from
        # ``issue`` to their many block RAMs and read registers
        m.d.comb += [
            inbuf.r_en.eq(issue & ps.stage_a),
            inbuf.r_req.addr.eq(ps.addr),
            inbuf.r_req.nomask.eq(1),
            winbuf.r_en.eq(issue & ~ps.stage_a),
            winbuf.r_req.addr.eq(ps.addr),
            winbuf.r_req.off.eq(ps.off),
            winbuf.r_req.row_len.eq(ps.row_len),
            winbuf.r_req.row_ok.eq(ps.row_ok),
            winbuf.r_req.nomask.eq(0),
            *wread,
        ]

        def delay(sig, n, name):
            regs = [Signal.like(sig, name=f"{name}_d{i + 1}") for i in range(n)]
            prev = sig
            for reg in regs:
                m.d.sync += reg.eq(prev)
                prev = reg
            return regs

        # the group is finished at t(B + L) (L = array.latency, cfg.pass_latency = B + L)
        lat, bl = cfg.pass_latency, cfg.buffer_latency
        issue_d = delay(issue, lat, "issue")
        stage_a_d = delay(ps.stage_a, bl, "stage_a")
        first_d = delay(ps.first, bl, "first")
        last_d = delay(ps.last, bl, "last")
        prow_d = delay(ps.prow, lat - 2, "prow")
        meta_d = delay(ps.meta, lat, "meta")
        # registers from the weights' t(w_lat) up to the lanes' tB
        w_row = weights.r_data
        assert w_lat <= bl, "the weights must not reach the array after the lanes"
        for i in range(bl - w_lat):
            reg = Signal.like(weights.r_data, name=f"w_row{i}")
            m.d.sync += reg.eq(w_row)
            w_row = reg

        m.d.comb += [
            array.en.eq(issue_d[bl - 1]),
            array.first.eq(first_d[bl - 1]),
            array.last.eq(last_d[bl - 1]),
            array.x.eq(Mux(stage_a_d[bl - 1], inbuf.r_data.as_value(),
                           winbuf.r_data.as_value())),
            array.w.eq(w_row),
            # parameters: bias read at t(L - 1) (ready at t(L + 1), the accumulate stage);
            # requantisation parameters read at tL (ready at t(L + 2), with the finished group)
            bias.r_en.eq(issue_d[lat - 4]), bias.r_addr.eq(prow_d[lat - 4]),
            rq.r_en.eq(issue_d[lat - 3]), rq.r_addr.eq(prow_d[lat - 3]),
            array.bias.as_value().eq(bias.r_data),
        ]

        sb = shift_bits(cfg)
        rqw = cfg.requant_mult_bits + sb
        m.d.comb += [
            drain.push.eq(array.done),
            drain.acc.eq(array.acc),
            drain.meta.eq(meta_d[lat - 1]),
        ]
        for c in range(cfg.pe_columns):
            word = rq.r_data[c * rqw: (c + 1) * rqw]
            m.d.comb += [drain.shift[c].eq(word[:sb]), drain.mult[c].eq(word[sb:])]
        m.d.comb += seq.release.eq(drain.release)

        # -- requantisation and its destinations -----------------------------------------
        inflight = Signal(range(cfg.requant_latency + 3))
        # inflight counts a chunk one cycle after the drain issued it: keep two beats of margin;
        # with fast_pipeline the decision is a register (the FIFO's level, an add and a compare
        # before the drain's enables cost 100 MHz), so it sees the counts a cycle late and keeps
        # one beat more (level + inflight grows by at most one a cycle)
        m.d["sync" if cfg.fast_pipeline else "comb"] += drain.go.eq(
            ofifo.level + inflight + cfg.drain_go_margin < cfg.out_fifo_depth)
        m.d.sync += inflight.eq(inflight + drain.q_valid - requant.out_valid)
        m.d.comb += [
            requant.valid.eq(drain.q_valid), requant.acc.eq(drain.q_acc),
            requant.mult.eq(drain.q_mult), requant.shift.eq(drain.q_shift),
            requant.meta.eq(drain.q_meta),
        ]
        ometa = requant.out_meta
        to_win = Signal()
        m.d.comb += to_win.eq(requant.out_valid & ometa.dest)
        with m.If(seq.start):
            m.d.sync += win_w.eq(0)
            if not cfg.fast_pipeline:
                m.d.sync += in_w.eq(0)
        with m.If(to_win & ~seq.start):
            m.d.sync += win_w.eq(win_w + ometa.count)
        # the window buffer is written by the squeeze results (Fire) or the input stream
        with m.If(cmd.fire):
            m.d.comb += [winbuf.w.valid.eq(to_win), winbuf.w.payload.addr.eq(win_w),
                         winbuf.w.payload.count.eq(ometa.count)]
            for lane in range(r):
                m.d.comb += winbuf.w.payload.data[lane].eq(requant.y[lane])
        with m.Else():
            m.d.comb += [winbuf.w.valid.eq(wr_en), winbuf.w.payload.addr.eq(wr_addr),
                         winbuf.w.payload.count.eq(wr_beat.count)]
            for lane in range(cfg.in_lanes):
                m.d.comb += winbuf.w.payload.data[lane].eq(wr_beat.data[lane])

        obw = Signal(obeat)
        m.d.comb += [obw.data.eq(requant.y), obw.count.eq(ometa.count), obw.last.eq(ometa.last)]
        m.d.comb += [ofifo.w_en.eq(requant.out_valid & ~ometa.dest), ofifo.w_data.eq(obw)]

        # -- output: straight, through the max pool or through the global sum ------------
        # with fast_pipeline through a two-beat queue: the sink's ready (the writer's, across
        # the chip) stops at the queue instead of running on into the pools' FIFOs (b21), and
        # moves only its read pointer and flags, not the enables of its wide payload (a
        # register slice's: b67, 10.3 ns, the ready's route and the fan-out to the enables)
        out = self.o
        if cfg.fast_pipeline:
            m.submodules.oslice = oslice = PointerQueue(out.payload.shape())
            out = oslice.i
            wiring.connect(m, oslice.o, wiring.flipped(self.o))
        ob = data.View(obeat, ofifo.r_data)
        for pool in (maxpool, gsum):
            m.d.comb += [pool.c.eq(cmd.p_c), pool.h.eq(cmd.p_h), pool.w.eq(cmd.p_w)]
        m.d.comb += [maxpool.ho.eq(cmd.p_ho), maxpool.wo.eq(cmd.p_wo)]
        # fast_pipeline: the global sum takes its beats through a register slice (b61: the
        # output FIFO's word, across the chip, through the sum's cursor add into its row
        # addresses, 12.0 ns); the max pool registers its input itself (hw/pool.py)
        gsum_i = gsum.i
        if cfg.fast_pipeline:
            m.submodules.gsum_slice = gsum_slice = RegisterSlice(gsum.i.payload.shape())
            wiring.connect(m, gsum_slice.o, gsum.i)
            gsum_i = gsum_slice.i
        for pool_i, flag in ((maxpool.i, is_max), (gsum_i, is_sum)):
            m.d.comb += [pool_i.valid.eq(ofifo.r_rdy & flag), pool_i.payload.eq(ob)]
        # the pools' outputs take the sink's ready whatever the layer's pool: a pool that the
        # layer does not use holds nothing, and a read of its empty FIFO does nothing
        # (fast_pipeline; b84: the pool flag, 11.5 ns of routing away, in front of the global
        # sum's FIFO level, 13.2 ns, the critical path)
        if cfg.fast_pipeline:
            m.d.comb += [maxpool.o.ready.eq(out.ready), gsum.o.ready.eq(out.ready)]
        with m.Switch(Cat(is_max, is_sum)):
            with m.Case(0b01):
                m.d.comb += [ofifo.r_en.eq(maxpool.i.ready), out.valid.eq(maxpool.o.valid),
                             out.payload.count.eq(maxpool.o.payload.count),
                             out.payload.last.eq(maxpool.o.payload.last)]
                if not cfg.fast_pipeline:
                    m.d.comb += maxpool.o.ready.eq(out.ready)
                for lane in range(r):
                    m.d.comb += out.payload.data[lane].eq(maxpool.o.payload.data[lane])
            with m.Case(0b10):
                m.d.comb += [ofifo.r_en.eq(gsum_i.ready), out.valid.eq(gsum.o.valid),
                             out.payload.eq(gsum.o.payload)]
                if not cfg.fast_pipeline:
                    m.d.comb += gsum.o.ready.eq(out.ready)
            with m.Default():
                m.d.comb += [ofifo.r_en.eq(out.ready), out.valid.eq(ofifo.r_rdy),
                             out.payload.count.eq(ob.count),
                             out.payload.last.eq(ob.last)]
                for lane in range(r):
                    m.d.comb += out.payload.data[lane].eq(ob.data[lane])
        return m
