"""The accelerator's top level: the engine running a whole network from its layer schedule.

:class:`Accelerator` holds one :class:`hw.engine.Engine`, whose weight and parameter memories
hold the whole model (from the weight image, ``compiler/wimage.py``), a schedule memory (the
layer schedule, ``compiler/schedule.py``) and a sequencer that runs its steps one after the
other. Feature maps go through one memory port (:class:`hw.memport.MemPortSignature`):

- the first step reads the network input straight from the input stream ``i`` (pixels row by
  row, channels interleaved), the last step sends the class scores straight to ``o``; neither
  ever touches the memory (schedule flags ``in_stream`` / ``out_stream``);
- every other step's input is read from the memory by a :class:`FmapReader`, its output written
  by a :class:`FmapWriter` (ping-pong regions, docs/schedule.md); a Fire module's squeeze output
  never leaves the chip and pools are fused into the producing step (docs/engine.md).

The reader and the writer share the port through a :class:`CommandArbiter`. The port serves
commands in order, so neither may issue a command it cannot finish on its own: the reader asks
for a burst only when its FIFO has room for all of it, the writer only when it holds all the
burst's data. Neither ever waits for the other, so the engine's back-pressure cannot deadlock
the port.

The memories start with the contents given to the constructor (``image``, ``schedule``: block
RAM initial values, as on the board) and can be (re)written through ``load`` (as the Verilator
harness does, so that one build serves every model of a configuration).
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from .config import AccelConfig
from .engine import Engine, InBeat, LayerCmd, LoadBeat
from .fifo import BlockFIFO
from .link import Score
from .memport import MemCmd, MemPortSignature, MemRead, MemWrite
from .pool import Beat
from .program import cmd_fields
from .skid import RegisterSlice

__all__ = ["LOAD_SCHEDULE", "StepLayout", "pack_step", "pack_schedule", "FmapReader",
           "FmapWriter", "CommandArbiter", "ScoreSerializer", "Accelerator", "MAX_LEN"]

#: ``LoadBeat.target`` of a schedule-memory row (0..2 are the engine's memories, 4..6 its
#: compressed weight path's with ``weight_streams``)
LOAD_SCHEDULE = 3

#: longest burst the top level's port declares
MAX_LEN = 256

_COUNT_BITS = 32


def _port_bytes(cfg: AccelConfig) -> int:
    p = cfg.fmap_port_bytes
    if p & (p - 1):
        raise ValueError(f"The top level needs a power-of-two fmap_port_bytes, not {p}")
    return p


def _burst_words(cfg: AccelConfig) -> int:
    return cfg.fmap_burst_bytes // _port_bytes(cfg)


class StepLayout(data.StructLayout):
    """One row of the schedule memory: a schedule entry as the sequencer needs it.

    Addresses are *word* addresses of the memory port (byte address / ``fmap_port_bytes``);
    ``in_vb``/``out_vb`` are bytes per value; ``last`` marks the network's final step.
    """

    def __init__(self, cfg: AccelConfig):
        super().__init__({
            "cmd": LayerCmd(cfg),
            "in_addr": unsigned(cfg.fmap_addr_bits),
            "in_values": unsigned(_COUNT_BITS),
            "in_vb": unsigned(3),
            "out_addr": unsigned(cfg.fmap_addr_bits),
            "out_vb": unsigned(3),
            "in_stream": 1,
            "out_stream": 1,
            "last": 1,
        })


def pack_step(cfg: AccelConfig, entry, *, last: bool) -> int:
    """The schedule-memory row (an integer) of one ``compiler.schedule.ScheduleEntry``.

    Raises ``ValueError`` for what the top level cannot run: an address that is not a whole
    word, a value width it cannot read or write, a tensor beyond the port's address range.
    """
    p = _port_bytes(cfg)
    words = 1 << cfg.fmap_addr_bits
    for what, addr, nbytes, streamed in (("input", entry.in_addr, entry.in_bytes,
                                          entry.in_stream),
                                         ("output", entry.out_addr, entry.out_bytes,
                                          entry.out_stream)):
        if streamed:
            continue
        if addr % p:
            raise ValueError(f"step {entry.name!r}: {what} address {addr} is not a multiple of "
                             f"the {p}-byte port word")
        if -(-(addr + nbytes) // p) > words:
            raise ValueError(f"step {entry.name!r}: {what} ends at byte {addr + nbytes}, beyond "
                             f"the port's {words * p} bytes ({cfg.fmap_addr_bits}-bit word "
                             f"addresses)")
    if entry.in_value_bytes not in (1, 2):
        raise ValueError(f"step {entry.name!r}: {entry.in_value_bytes}-byte input values, "
                         f"expected 1 or 2")
    if entry.out_value_bytes not in (1, 2, 4):
        raise ValueError(f"step {entry.name!r}: {entry.out_value_bytes}-byte output values, "
                         f"expected 1, 2 or 4")
    if entry.in_values >> _COUNT_BITS:
        raise ValueError(f"step {entry.name!r}: {entry.in_values} input values exceed "
                         f"{_COUNT_BITS} bits")
    cmd = {name: entry.cmd[name] for name, _, _ in cmd_fields(cfg)}
    row = StepLayout(cfg).const({
        "cmd": cmd,
        "in_addr": 0 if entry.in_stream else entry.in_addr // p,
        "in_values": entry.in_values, "in_vb": entry.in_value_bytes,
        "out_addr": 0 if entry.out_stream else entry.out_addr // p,
        "out_vb": entry.out_value_bytes,
        "in_stream": int(entry.in_stream), "out_stream": int(entry.out_stream),
        "last": int(last),
    })
    return row.as_value().value


def pack_schedule(cfg: AccelConfig, sched) -> list[int]:
    """The schedule memory's rows for a ``compiler.schedule.Schedule``."""
    n = len(sched.entries)
    if not 0 < n <= cfg.schedule_depth:
        raise ValueError(f"A schedule of {n} steps does not fit the schedule memory "
                         f"(1..{cfg.schedule_depth} steps)")
    streamed = [(e.in_stream, e.out_stream) for e in sched.entries]
    expected = [(i == 0, i == n - 1) for i in range(n)]
    if streamed != expected:
        raise ValueError("The top level runs schedules whose first step reads the input stream "
                         "and whose last step writes the output stream (build_schedule(..., "
                         "stream_io=True)); this one streams "
                         f"{[e.name for e in sched.entries if e.in_stream or e.out_stream]}")
    return [pack_step(cfg, e, last=i == n - 1) for i, e in enumerate(sched.entries)]


class FmapReader(wiring.Component):
    """Reads ``n`` values of ``vb`` (1 or 2) bytes from word ``addr`` on, as engine input beats.

    ``start`` (one cycle) takes ``addr``, ``n`` and ``vb``; ``busy`` stays high until the last
    value has left on ``o``. One-byte values are unsigned activations, two-byte values signed
    (two's complement, little-endian). Reads go out in bursts of ``fmap_burst_bytes``, each only
    when the FIFO has room for the whole burst, so ``rdata`` is always ready. With
    ``fast_pipeline`` ``o`` comes from a :class:`hw.skid.RegisterSlice` (its valid, payload and
    ready are flip-flops).
    """

    def __init__(self, cfg: AccelConfig):
        self._cfg = cfg
        super().__init__({
            "start": In(1),
            "addr": In(cfg.fmap_addr_bits),
            "n": In(_COUNT_BITS),
            "vb": In(3),
            "busy": Out(1),
            "cmd": Out(stream.Signature(MemCmd(cfg.fmap_addr_bits, MAX_LEN))),
            "rdata": In(stream.Signature(MemRead(cfg.fmap_port_bytes))),
            "o": Out(stream.Signature(InBeat(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        p, lanes, burst = _port_bytes(cfg), cfg.in_lanes, _burst_words(cfg)
        depth = 2 * burst
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=8 * p, depth=depth)

        addr = Signal(cfg.fmap_addr_bits)
        req_left = Signal(_COUNT_BITS + 1)          # words still to ask for
        outstanding = Signal(range(depth + 1))     # asked for, not yet arrived
        vals_left = Signal(_COUNT_BITS)
        two = Signal()                              # 2-byte values
        k = Signal(range(max(2, -(-p // lanes))))   # beat within the current word

        # -- requests ------------------------------------------------------------------------
        # A request's length, whether words remain and whether the FIFO has room are
        # registers, computed from registers; after a request (or a start) they are
        # recomputed for two cycles (``hold``) before the next may go. A burst takes far
        # longer than that to arrive, so the gap costs nothing.
        length = Signal(range(burst + 1))           # min(burst, req_left), a cycle late
        want = Signal()                             # req_left != 0, a cycle late
        room = Signal()                             # the FIFO can take `length` more words
        hold = Signal(2)
        asked = Signal()
        m.d.sync += [
            length.eq(Mux(req_left >= burst, burst, req_left)),
            want.eq(req_left != 0),
            room.eq(buf.level + outstanding + length <= depth),
            hold.eq(Mux(asked | self.start, 0b11, hold >> 1)),
        ]
        m.d.comb += [
            self.cmd.payload.addr.eq(addr),
            self.cmd.payload.len.eq(length),
            self.cmd.payload.write.eq(0),
            self.cmd.valid.eq(want & room & (hold == 0)),
            self.rdata.ready.eq(1),
            buf.w_en.eq(self.rdata.valid),
            buf.w_data.eq(self.rdata.payload.data),
            asked.eq(self.cmd.valid & self.cmd.ready),
        ]
        with m.If(asked):
            m.d.sync += [addr.eq(addr + length), req_left.eq(req_left - length)]
        m.d.sync += outstanding.eq(outstanding + Mux(asked, length, 0) - self.rdata.valid)

        # -- unpacking words into beats ------------------------------------------------------
        # fast_pipeline: the beats leave through a register slice, so the engine's ready (a
        # count compared against a limit) ends at the slice's flip-flops instead of running on
        # into this FIFO's read enable and level (board build b14)
        o = self.o
        if cfg.fast_pipeline:
            m.submodules.slice = out_slice = RegisterSlice(InBeat(cfg))
            wiring.connect(m, out_slice.o, wiring.flipped(self.o))
            o = out_slice.i
        vpw = Signal(range(p + 1))                  # values per word
        m.d.comb += vpw.eq(Mux(two, p // 2 if p > 1 else 1, p))
        in_word = Signal(range(p + 1))              # values of this word from beat k on
        m.d.comb += in_word.eq(vpw - k * lanes)
        count = Signal(range(lanes + 1))
        # vals_left, clamped to a few bits: the comparisons below stay short. With
        # fast_pipeline the clamped count (one bit wider, so that its top value is above any
        # beat's count and ``count == vals_low`` means the last values) and ``vals_left != 0``
        # are registers, formed from the next count as ``vals_left`` is (b60: the OR of the
        # count's high bits into the clamp, the beat's count and the subtraction into
        # ``vals_left``, and the FIFO's read enable, 11.1 ns)
        low = bits_for(max(lanes, p))
        if cfg.fast_pipeline:
            low += 1
        vals_low = Signal(low)
        vals_nz = Signal()
        last_vals = Signal()

        def clamp(v):
            return Mux(v[low:] == 0, v[:low], 2 ** low - 1)

        vals_next = Signal.like(vals_left)
        if cfg.fast_pipeline:
            m.d.comb += last_vals.eq(count == vals_low)
            # both from the count's low bits and an OR of its high bits, not from the wide
            # subtraction (b62: through it into these registers, 11.3 ns). A beat's count is
            # below 2**(low - 1), so the next count is 0 only if it is the beat's, and with a
            # high bit set it is 2**(low - 1) or more: ``vals_low`` is then the top value, and
            # it is exact whenever the count is below 2**(low - 1), all the comparisons
            # above need
            hi_nz = vals_left[low:] != 0
            small = Signal(low, name="vals_small")
            m.d.comb += small.eq(vals_left[:low] - count)
            with m.If(self.start):
                m.d.sync += [vals_low.eq(clamp(self.n)), vals_nz.eq(self.n != 0)]
            with m.Elif(o.valid & o.ready):
                m.d.sync += [vals_low.eq(Mux(hi_nz, 2 ** low - 1, small)),
                             vals_nz.eq(hi_nz | (vals_left[:low] != count))]
        else:
            m.d.comb += [vals_low.eq(clamp(vals_left)), vals_nz.eq(vals_left != 0),
                         last_vals.eq(count == vals_left)]
        m.d.comb += vals_next.eq(vals_left - count)
        m.d.comb += count.eq(lanes)
        with m.If(in_word < lanes):
            m.d.comb += count.eq(in_word)
        with m.If((vals_low < lanes) & (vals_low < in_word)):
            m.d.comb += count.eq(vals_low)
        word = buf.r_data
        with m.Switch(k):
            for kk in range(-(-p // lanes)):
                with m.Case(kk):
                    for lane in range(lanes):
                        v = kk * lanes + lane
                        byte = word[8 * v: 8 * v + 8] if v < p else 0
                        half = word[16 * v: 16 * v + 16].as_signed() if 2 * v + 1 < p else 0
                        m.d.comb += o.payload.data[lane].eq(Mux(two, half, byte))
        m.d.comb += [
            o.payload.count.eq(count),
            o.valid.eq(buf.r_rdy & vals_nz),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += vals_left.eq(vals_next)
            with m.If((count == in_word) | last_vals):
                m.d.comb += buf.r_en.eq(1)
                m.d.sync += k.eq(0)
            with m.Else():
                m.d.sync += k.eq(k + 1)

        with m.If(self.start):
            nbytes = Mux(self.vb == 2, self.n << 1, self.n)
            m.d.sync += [addr.eq(self.addr), vals_left.eq(self.n), two.eq(self.vb == 2),
                         k.eq(0),
                         req_left.eq((nbytes + (p - 1)) >> ceil_log2(p))]
        held = out_slice.level != 0 if cfg.fast_pipeline else 0
        m.d.comb += self.busy.eq((vals_left != 0) | (req_left != 0) | (outstanding != 0) | held)
        return m


class FmapWriter(wiring.Component):
    """Writes the engine's output beats, values of ``vb`` (1, 2 or 4) bytes, from word ``addr``.

    ``start`` (one cycle) takes ``addr`` and ``vb``; the tensor ends with the beat marked
    ``last``; ``busy`` stays high until the memory has taken every word. Values are packed
    little-endian, back to back; the final word's unused bytes are masked. A write burst is
    issued only when all its words are in the FIFO, so ``wdata`` never starves the port.
    """

    def __init__(self, cfg: AccelConfig):
        self._cfg = cfg
        super().__init__({
            "start": In(1),
            "addr": In(cfg.fmap_addr_bits),
            "vb": In(3),
            "busy": Out(1),
            "i": In(stream.Signature(Beat(width=cfg.sum_bits, lanes=cfg.requant_units))),
            "cmd": Out(stream.Signature(MemCmd(cfg.fmap_addr_bits, MAX_LEN))),
            "wdata": Out(stream.Signature(MemWrite(cfg.fmap_port_bytes))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        p, r, burst = _port_bytes(cfg), cfg.requant_units, _burst_words(cfg)
        vmax = 4
        nb_bytes = r * vmax
        cap = p - 1 + nb_bytes
        depth = max(2 * burst, 4)
        # fast_pipeline: the block RAM is read through its own output register (b87: its 5.8
        # ns clock-to-out into the words' slice, 10.6 ns, the critical path)
        if cfg.fast_pipeline:
            m.submodules.fifo = buf = BlockFIFO(width=9 * p, depth=depth)
        else:
            m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=9 * p, depth=depth)

        addr = Signal(cfg.fmap_addr_bits)
        vb = Signal(3)
        acc = Signal(8 * cap)
        level = Signal(range(cap + 1))
        ending = Signal()
        active = Signal()
        uncommitted = Signal(range(depth + 1))

        # -- the beat's bytes ------------------------------------------------------------------
        beat = self.i.payload
        pk = Signal(data.StructLayout({"nb": 8 * nb_bytes, "n": range(nb_bytes + 1),
                                       "last": 1}))
        with m.Switch(vb):
            for width in (1, 2, 4):
                with m.Case(width):
                    m.d.comb += pk.n.eq(beat.count * width)
                    for lane in range(r):
                        m.d.comb += pk.nb[8 * width * lane: 8 * width * (lane + 1)].eq(
                            Mux(lane < beat.count, beat.data[lane][:8 * width], 0))
        m.d.comb += pk.last.eq(beat.last)
        # With fast_pipeline the packed bytes go through a register slice of their own before
        # the shift into ``acc`` (board build b66: the beat's count through the byte selection,
        # the shift and the take into ``acc``, 9.9 ns); ``vb`` is set at ``start``, before any
        # beat of the tensor arrives
        i_valid, i_ready = Signal(), Signal()
        if cfg.fast_pipeline:
            m.submodules.pack = pack = RegisterSlice(pk.shape())
            m.d.comb += [pack.i.valid.eq(self.i.valid), pack.i.payload.eq(pk),
                         self.i.ready.eq(pack.i.ready),
                         i_valid.eq(pack.o.valid), pack.o.ready.eq(i_ready)]
            pk = pack.o.payload
        else:
            m.d.comb += [i_valid.eq(self.i.valid), self.i.ready.eq(i_ready)]
        nb, n = pk.nb, pk.n

        # -- emit a word / take a beat -----------------------------------------------------
        full = Signal()
        partial = Signal()
        emit = Signal()
        base = Signal(range(cap + 1))
        mask = Signal(p)
        # With fast_pipeline the FIFO's room is a register, decided a cycle ahead (``room``:
        # at most one word enters this cycle, so a level of depth - 3 now leaves the FIFO's
        # inner memory, depth - 1 words, room for one more next cycle). Board build b38:
        # ``w_rdy``, from the FIFO's level across the chip, ran through ``emit`` and ``base``
        # into the shift of ``acc``.
        room2 = buf.level <= depth - 3
        # With fast_pipeline ``full``, ``partial`` and ``level - p`` are registers too, each
        # formed from the next level as ``level`` is (b59: the level through both comparisons,
        # ``emit`` and ``base`` into the add of the next level and on into ``ready``, eight
        # LUTs and two carry chains, 11.7 ns)
        level_next = Signal.like(level)
        ending_next = Signal()
        level_mp = Signal(range(cap + 1))
        ob = ceil_log2(p)
        if cfg.fast_pipeline:
            room = Signal()
            full_n, partial_n = Signal(), Signal()
            m.d.comb += [full_n.eq(Mux(self.start, 0, level_next >= p)),
                         partial_n.eq(Mux(self.start, 0, ending_next & (level_next != 0) &
                                          (level_next < p)))]
            m.d.sync += [room.eq(room2), full.eq(full_n), partial.eq(partial_n),
                         level_mp.eq(level_next - p)]
            # the shift of ``acc`` (hundreds of multiplexers) steered by copies of its own of
            # the flags and of the level's low bits, which start at the other value so that
            # yosys keeps them apart (every bit: it merges flip-flops bit by bit): the level's
            # loop stays among its own registers (b71: ``full`` into ``partial``, 12.8 ns, 10.4
            # of routing). A copy's first cycle only moves ``acc``, which ``start`` clears.
            full_d, partial_d, room_d = (Signal(init=1, name=f"{k}_d")
                                         for k in ("full", "partial", "room"))
            lob = max(ob, 1)
            lvl_d = Signal(lob, init=(1 << lob) - 1, name="level_lo_d")
            lmp_d = Signal(lob, init=(1 << lob) - 1, name="level_mp_lo_d")
            m.d.sync += [full_d.eq(full_n), partial_d.eq(partial_n), room_d.eq(room2),
                         lvl_d.eq(level_next[:lob]), lmp_d.eq((level_next - p)[:lob])]
        else:
            room = buf.w_rdy
            m.d.comb += [full.eq(level >= p), partial.eq(ending & (level != 0) & (level < p)),
                         level_mp.eq(level - p)]
        m.d.comb += [
            emit.eq((full | partial) & room),
            base.eq(Mux(emit, Mux(full, level_mp, 0), level)),
            mask.eq(Mux(full, (1 << p) - 1, (Const(1, p + 1) << level) - 1)),
            buf.w_en.eq(emit),
            buf.w_data.eq(acc[:8 * p] | (mask << (8 * p))),
        ]
        # A beat is taken only when the bytes left after this cycle's word (``base``) leave room
        # for a whole beat, base < p. With fast_pipeline ``ready`` is a register, decided a
        # cycle ahead from the next level: a word is sure to leave next cycle when the level
        # will be p or more and the FIFO has room for two words now (it takes at most one this
        # cycle). Board build b28: the comparison behind the FIFO's level ran on into the
        # engine's output slice. Without fast_pipeline ``ready`` is that comparison itself: the
        # iCEBreaker, at its placement limit, did not place with the register (5,323 cells of
        # 5,280).
        ready = Signal()
        take = Signal()
        m.d.comb += [i_ready.eq(ready), take.eq(i_valid & ready),
                     level_next.eq(base + Mux(take, n, 0)),
                     ending_next.eq(ending | (take & pk.last))]
        # A beat is taken only with base < p (above), so the beat's bytes go in at one of p
        # byte offsets: the shift reads only base's low bits.
        shifted = Signal(8 * cap)
        if cfg.fast_pipeline:
            ready_n = Signal()
            m.d.comb += ready_n.eq(Mux(self.start, 1,
                                       active & ~ending_next & Mux(room2, level_next < 2 * p,
                                                                   level_next < p)))
            ready_d = Signal(init=1, name="ready_d")
            m.d.sync += [ready.eq(ready_n), ready_d.eq(ready_n)]
            emit_d = (full_d | partial_d) & room_d
            take_d = i_valid & ready_d
            offset = Mux(emit_d, Mux(full_d, lmp_d, 0), lvl_d)[:ob] if p > 1 else Const(0)
        else:
            m.d.comb += ready.eq(active & ~ending & (base < p))
            emit_d, take_d = emit, take
            offset = base[:ob] if p > 1 else Const(0)
        m.d.comb += shifted.eq(Mux(emit_d, acc >> (8 * p), acc))
        m.d.sync += [
            acc.eq(Mux(take_d, shifted | (nb << (offset * 8)), shifted)),
            level.eq(level_next),
        ]
        with m.If(take & pk.last):
            m.d.sync += ending.eq(1)

        # -- write commands ------------------------------------------------------------------
        finished = Signal()
        length = Signal(range(burst + 1))
        whole = Signal()                # a whole burst is in the FIFO
        m.d.comb += [
            finished.eq(ending & (level == 0)),
            whole.eq(uncommitted >= burst),
            length.eq(Mux(whole, burst, uncommitted)),
            self.cmd.payload.addr.eq(addr),
            self.cmd.payload.len.eq(length),
            self.cmd.payload.write.eq(1),
            self.cmd.valid.eq(whole | (finished & (uncommitted != 0))),
        ]
        # With fast_pipeline the words leave through a register slice: the FIFO's word ran on
        # across the chip into the memory controller's write FIFO (board builds b75/b76: 12.1
        # and 13.2 ns, the critical paths, when the FIFO was SyncFIFOBuffered). The controller
        # writes only words it holds.
        wdata = self.wdata
        drained = ~buf.r_rdy
        if cfg.fast_pipeline:
            # (words are on their way out of the block RAM while ``r_rdy`` is low)
            drained = buf.level == 0
            m.submodules.wslice = wslice = RegisterSlice(self.wdata.payload.shape())
            wiring.connect(m, wslice.o, wiring.flipped(self.wdata))
            wdata = wslice.i
            drained = drained & (wslice.level == 0)
        m.d.comb += [
            wdata.valid.eq(buf.r_rdy),
            wdata.payload.data.eq(buf.r_data[:8 * p]),
            wdata.payload.mask.eq(buf.r_data[8 * p:]),
            buf.r_en.eq(wdata.ready),
        ]
        issued = Signal()
        m.d.comb += issued.eq(self.cmd.valid & self.cmd.ready)
        with m.If(issued):
            m.d.sync += addr.eq(addr + length)
        # a burst shorter than a whole one goes out only once the tensor is finished (no word
        # is emitted any more): it takes every word left. So the count only ever adds the word
        # emitted and takes a whole burst, or is cleared (b61: the count through the burst's
        # length into a subtraction and on into itself, 12.1 ns)
        with m.If(issued & ~whole):
            m.d.sync += uncommitted.eq(0)
        with m.Else():
            m.d.sync += uncommitted.eq(uncommitted + Mux(issued, emit - burst, emit))

        with m.If(active & finished & (uncommitted == 0) & drained):
            m.d.sync += active.eq(0)
        with m.If(self.start):
            m.d.sync += [addr.eq(self.addr), vb.eq(self.vb), active.eq(1), ending.eq(0),
                         level.eq(0)]
            # fast_pipeline: ``acc`` is not cleared. It holds zeros above ``level`` (from its
            # initial value on: a beat's bytes above its count are zeros, and a word's emission
            # shifts zeros in), so at a tensor's end it is all zeros. ``start`` comes from the
            # top level's state, across the chip, and its clear of ``acc`` was the critical
            # path (b88: into the enables of its 136 flip-flops, 11.6 ns, 6.2 of it one route).
            if not cfg.fast_pipeline:
                m.d.sync += acc.eq(0)
        m.d.comb += self.busy.eq(active)
        return m


class CommandArbiter(wiring.Component):
    """Two command streams onto one (``a`` first); a command, once offered, keeps its grant
    until it is taken, so the output obeys the stream rules."""

    def __init__(self, cmd_layout):
        sig = stream.Signature(cmd_layout)
        super().__init__({"a": In(sig), "b": In(sig), "o": Out(sig)})

    def elaborate(self, platform):
        m = Module()
        locked = Signal()
        lock_b = Signal()
        use_b = Signal()
        m.d.comb += use_b.eq(Mux(locked, lock_b, ~self.a.valid))
        m.d.comb += [
            self.o.valid.eq(Mux(use_b, self.b.valid, self.a.valid)),
            self.o.payload.eq(Mux(use_b, self.b.payload.as_value(), self.a.payload.as_value())),
            self.a.ready.eq(~use_b & self.o.ready),
            self.b.ready.eq(use_b & self.o.ready),
        ]
        m.d.sync += [locked.eq(self.o.valid & ~self.o.ready), lock_b.eq(use_b)]
        return m


class ScoreSerializer(wiring.Component):
    """Engine output beats (up to ``requant_units`` values) to one :data:`~hw.link.Score` per
    beat; ``last`` on the final value of the beat marked ``last``."""

    def __init__(self, cfg: AccelConfig):
        self._cfg = cfg
        super().__init__({
            "i": In(stream.Signature(Beat(width=cfg.sum_bits, lanes=cfg.requant_units))),
            "o": Out(stream.Signature(Score)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        r = self._cfg.requant_units
        j = Signal(range(r))
        beat = self.i.payload
        at_end = Signal()
        m.d.comb += [
            at_end.eq(j + 1 >= beat.count),
            self.o.valid.eq(self.i.valid),
            self.o.payload.data.eq(beat.data[j]),
            self.o.payload.last.eq(beat.last & at_end),
            self.i.ready.eq(self.o.ready & at_end),
            self.busy.eq(self.i.valid),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += j.eq(Mux(at_end, 0, j + 1))
        return m


class _State(enum.Enum, shape=3):
    IDLE = 0
    FETCH = 1       # the schedule row's address is on the read port
    LOAD = 2        # its data is: register it
    LAUNCH = 3
    RUN = 4


class Accelerator(wiring.Component):
    """The whole network on one engine (module docstring).

    Parameters: ``cfg``; ``image`` (an object with ``weight_rows``, ``bias_rows``,
    ``requant_rows``, e.g. a ``compiler.wimage.WeightImage``; with ``weight_streams`` its
    ``streams`` instead of ``weight_rows``) and ``schedule`` (a
    ``compiler.schedule.Schedule``) as the memories' initial contents (optional: ``load`` can
    write them); ``weight_depth``/``param_depth`` override the engine's memory depths.

    Ports:

    - ``load``: rows for the engine's memories (``LoadBeat.target`` 0..2, or 1, 2 and 4..6
      with ``weight_streams``: ``hw.engine.LOAD_WSTREAM`` ...) and the schedule
      memory (:data:`LOAD_SCHEDULE`, rows of :func:`pack_schedule`); always ready. Load only
      while idle.
    - ``i``: the network input, :class:`hw.engine.InBeat` (1..``in_lanes`` values per beat), in
      the engine's order (rows, pixels, channels). A frame starts when the first beat arrives.
    - ``o``: one :data:`~hw.link.Score` per beat, ``last`` on the final one.
    - ``mem``: the feature-map memory port.
    - ``busy``: a frame is in progress; ``step``: the step running (or next); ``cycles``: the
      cycles of the last complete frame, from its first step's start to its last score;
      ``frames``: frames completed.
    - ``tap_valid``/``tap``: observation only: every beat the engine hands on (to the writer or
      the score serializer), so a simulation can check each step's output against the golden
      model; a board leaves them unconnected and synthesis removes them.
    """

    def __init__(self, cfg: AccelConfig, *, image=None, schedule=None,
                 weight_depth: int | None = None, param_depth: int | None = None):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"Accelerator needs an AccelConfig, not {cfg!r}")
        _port_bytes(cfg)
        self._cfg = cfg
        self._image = image
        self._sched_init = [] if schedule is None else pack_schedule(cfg, schedule)
        self._weight_depth = weight_depth
        self._param_depth = param_depth
        load = LoadBeat(cfg)
        if schedule is None and StepLayout(cfg).size > load.members["data"].width:
            # a small engine's weight rows (hence load beats) can be narrower than a schedule
            # row; such an accelerator takes its schedule as initial contents only (a board)
            raise ValueError(f"A schedule row ({StepLayout(cfg).size} bits) is wider than a "
                             f"load beat ({load.members['data'].width} bits): give the "
                             f"schedule as initial contents (schedule=)")
        super().__init__({
            "load": In(stream.Signature(load)),
            "i": In(stream.Signature(InBeat(cfg))),
            "o": Out(stream.Signature(Score)),
            "mem": Out(MemPortSignature(cfg.fmap_port_bytes, cfg.fmap_addr_bits,
                                        max_len=MAX_LEN)),
            "busy": Out(1),
            "step": Out(range(cfg.schedule_depth)),
            "cycles": Out(64),
            "frames": Out(32),
            "tap_valid": Out(1),
            "tap": Out(Beat(width=cfg.sum_bits, lanes=cfg.requant_units)),
        })

    @property
    def config(self) -> AccelConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.engine = eng = Engine(cfg, weight_depth=self._weight_depth,
                                           param_depth=self._param_depth, init=self._image)
        m.submodules.reader = rd = FmapReader(cfg)
        m.submodules.writer = wr = FmapWriter(cfg)
        m.submodules.arbiter = arb = CommandArbiter(MemCmd(cfg.fmap_addr_bits, MAX_LEN))
        m.submodules.scores = ser = ScoreSerializer(cfg)
        # the scores' ready depends on the beat's count (the serializer's last value): with
        # fast_pipeline a register slice takes the beats first, so that the engine's output
        # slice sees a register (board build b50: the beat's count, through the serializer's
        # ready, onto the enables of the engine's output registers, 12.3 ns)
        ser_i, ser_busy = ser.i, ser.busy
        # and the writer's beats through one as well (b61: the engine's output beat across the
        # chip, through the beat's byte selection and the shift into the writer's ``acc``,
        # 13.1 ns)
        wr_i, wr_busy = wr.i, wr.busy
        if cfg.fast_pipeline:
            m.submodules.score_slice = score_slice = RegisterSlice(ser.i.payload.shape())
            wiring.connect(m, score_slice.o, ser.i)
            ser_i, ser_busy = score_slice.i, ser.busy | (score_slice.level != 0)
            m.submodules.wr_in_slice = wr_in_slice = RegisterSlice(wr.i.payload.shape())
            wiring.connect(m, wr_in_slice.o, wr.i)
            wr_i, wr_busy = wr_in_slice.i, wr.busy | (wr_in_slice.level != 0)
        layout = StepLayout(cfg)
        m.submodules.sched = sched = Memory(shape=unsigned(layout.size),
                                            depth=cfg.schedule_depth, init=self._sched_init)
        sw = sched.write_port()
        sr = sched.read_port()

        # -- loading -------------------------------------------------------------------------
        ld = self.load.payload
        m.d.comb += [
            self.load.ready.eq(1),
            eng.load.valid.eq(self.load.valid & (ld.target != LOAD_SCHEDULE)),
            eng.load.payload.eq(ld),
            sw.en.eq(self.load.valid & (ld.target == LOAD_SCHEDULE)),
            sw.addr.eq(ld.addr),
            sw.data.eq(ld.data[:layout.size]),
        ]

        # -- memory port: the writer goes first, the reader takes the rest -------------------
        # fast_pipeline: the commands reach the port through register slices, one after each
        # source and one after the arbiter, so the reader's and the writer's request logic
        # end at flip-flops, neither in the memory controller's command FIFO (board build b53:
        # the writer's level, through the arbiter and the controller's bypass, onto the FIFO's
        # write enables, 12.85 ns) nor in each other (b55: the writer's request, through the
        # arbiter's grant, into the reader's count of words asked for, 12.0 ns)
        if cfg.fast_pipeline:
            shape = arb.o.payload.shape()
            m.submodules.wr_cmd_slice = wr_slice = RegisterSlice(shape)
            m.submodules.rd_cmd_slice = rd_slice = RegisterSlice(shape)
            m.submodules.cmd_slice = cmd_slice = RegisterSlice(shape)
            for src, sl, dst in ((wr.cmd, wr_slice, arb.a), (rd.cmd, rd_slice, arb.b),
                                 (arb.o, cmd_slice, wiring.flipped(self.mem.cmd))):
                wiring.connect(m, src, sl.i)
                wiring.connect(m, sl.o, dst)
        else:
            wiring.connect(m, wr.cmd, arb.a)
            wiring.connect(m, rd.cmd, arb.b)
            wiring.connect(m, arb.o, wiring.flipped(self.mem.cmd))
        wiring.connect(m, wr.wdata, wiring.flipped(self.mem.wdata))
        wiring.connect(m, wiring.flipped(self.mem.rdata), rd.rdata)

        # -- the step sequencer ----------------------------------------------------------------
        state = Signal(_State)
        step = Signal(range(cfg.schedule_depth))
        cur = Signal(layout)
        counter = Signal(64)
        running = Signal()
        m.d.comb += [sr.addr.eq(step), self.step.eq(step), self.busy.eq(state != _State.IDLE),
                     running.eq(state == _State.RUN), self.cycles.eq(counter)]
        with m.If(state != _State.IDLE):
            m.d.sync += counter.eq(counter + 1)

        m.d.comb += [
            eng.cmd.payload.eq(cur.cmd),
            rd.addr.eq(cur.in_addr), rd.n.eq(cur.in_values), rd.vb.eq(cur.in_vb),
            wr.addr.eq(cur.out_addr), wr.vb.eq(cur.out_vb),
        ]
        # every part idle: with fast_pipeline a register (wide OR-reductions of four modules'
        # counts ahead of the state's enables), a cycle late: it only counts from the second
        # cycle of RUN, when the step's parts have taken their start
        idle = Signal()
        everything_idle = ~eng.busy & ~rd.busy & ~wr_busy & ~ser_busy & ~eng.cmd.valid
        if cfg.fast_pipeline:
            m.d.sync += idle.eq(everything_idle & running)
        else:
            m.d.comb += idle.eq(everything_idle)
        with m.Switch(state):
            with m.Case(_State.IDLE):
                with m.If(self.i.valid):
                    m.d.sync += [state.eq(_State.FETCH), step.eq(0), counter.eq(1)]
            with m.Case(_State.FETCH):
                m.d.sync += state.eq(_State.LOAD)
            with m.Case(_State.LOAD):
                # the schedule row of `step` is on the read port's output now
                m.d.sync += [cur.eq(sr.data), state.eq(_State.LAUNCH)]
            with m.Case(_State.LAUNCH):
                m.d.comb += [eng.cmd.valid.eq(1), rd.start.eq(~cur.in_stream),
                             wr.start.eq(~cur.out_stream)]
                m.d.sync += state.eq(_State.RUN)
            with m.Case(_State.RUN):
                with m.If(idle):
                    with m.If(cur.last):
                        m.d.sync += [state.eq(_State.IDLE), self.frames.eq(self.frames + 1),
                                     step.eq(0)]
                    with m.Else():
                        m.d.sync += [state.eq(_State.FETCH), step.eq(step + 1)]

        # -- engine input: the input stream (first step) or the reader --------------------
        with m.If(cur.in_stream):
            m.d.comb += [eng.i.valid.eq(self.i.valid & running), eng.i.payload.eq(self.i.payload),
                         self.i.ready.eq(eng.i.ready & running)]
        with m.Else():
            m.d.comb += [eng.i.valid.eq(rd.o.valid), eng.i.payload.eq(rd.o.payload),
                         rd.o.ready.eq(eng.i.ready)]

        # -- engine output: the scores (last step) or the writer ---------------------------
        with m.If(cur.out_stream):
            m.d.comb += [ser_i.valid.eq(eng.o.valid), ser_i.payload.eq(eng.o.payload),
                         eng.o.ready.eq(ser_i.ready)]
        with m.Else():
            m.d.comb += [wr_i.valid.eq(eng.o.valid), wr_i.payload.eq(eng.o.payload),
                         eng.o.ready.eq(wr_i.ready)]
        wiring.connect(m, ser.o, wiring.flipped(self.o))
        m.d.comb += [self.tap_valid.eq(eng.o.valid & eng.o.ready), self.tap.eq(eng.o.payload)]
        return m
