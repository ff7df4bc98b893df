"""A register slice for streams: every output, and ``ready`` back to the source, from flip-flops.

:class:`RegisterSlice` cuts a valid/ready stream's combinational paths in both directions and
still passes a beat every cycle: the classic two-entry skid buffer. The sink's ``ready`` only
reaches the slice's own registers, so a long ``ready`` (a count compared against a limit) no
longer runs on into the source's FIFO and counters across the chip (board build b14).

:class:`PointerQueue` holds two beats as well, for the opposite case: a wide payload whose
``ready`` is formed far away. In a slice ``ready`` enables every payload register; in the queue
it moves only a read pointer and two flags, and the payload is a 2:1 multiplexer of the
entries (board build b39: the sequencer's issue, as the ready of its pass slice, fanned out to
the enables of some 150 payload registers, 4.2 ns of routing).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice", "PointerQueue"]


class _TwoBeats(wiring.Component):
    """The interface both hold two beats behind: ``i``, ``o`` and ``level`` (beats held)."""

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(3)),
        })


class RegisterSlice(_TwoBeats):
    """Beats of ``shape`` from ``i`` to ``o`` in order, one cycle later at the earliest.

    ``o.valid``, ``o.payload`` and ``i.ready`` are flip-flops. A beat taken while ``o`` is
    stalled waits in a second (skid) register; ``i.ready`` falls only while that one is full,
    so a sink that is always ready sees one beat every cycle. ``level``: beats held (0..2).
    """

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self._shape)
        skid_valid = Signal()
        take_in = Signal()
        out_free = Signal()
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            take_in.eq(self.i.valid & ~skid_valid),
            out_free.eq(~self.o.valid | self.o.ready),
            self.level.eq(self.o.valid + skid_valid),
        ]
        with m.If(out_free):
            # the output register takes the oldest beat: the skid's, else the input's
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), self.o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload), self.o.valid.eq(take_in)]
        with m.Elif(take_in):
            # the output is stalled: the new beat waits in the skid register
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class PointerQueue(_TwoBeats):
    """Beats of ``shape`` from ``i`` to ``o`` in order, one cycle later at the earliest, through
    two entry registers written at a write pointer and read at a read pointer.

    ``o.valid``, ``i.ready`` and ``level`` are flip-flops, ``o.payload`` is the entry at the
    read pointer (a flip-flop through one multiplexer). ``o.ready`` drives only the read pointer
    and the flags, never the payload's registers, whose enables are the queue's own flip-flops
    (the free entry at the write pointer loads ``i.payload`` whether or not it is valid). A
    sink that is always ready sees one beat every cycle.

    ``flags``: a function from a payload (a view of ``shape``) to a few of its bits. The queue
    then also has ``o_flags``, those bits of ``o.payload`` in a register of their own (set from
    the next entries and read pointer), for a sink whose ``ready`` depends on them: its logic
    starts from a flip-flop, not from the read pointer through the entries' multiplexer (board
    build b81: the sequencer's queue pointer through the head's stage and last-pass bits into
    the issue and the result-bank credits, 11.35 ns, the critical path).
    """

    def __init__(self, shape, flags=None):
        self._flags = flags
        super().__init__(shape)
        if flags is not None:
            width = len(Value.cast(flags(self.i.payload)))
            self.o_flags = Signal(width, name="o_flags")

    def elaborate(self, platform):
        m = Module()
        entries = [Signal(self._shape, name=f"entry{k}") for k in range(2)]
        wptr = Signal()
        rptr = Signal()
        nonempty = Signal()
        notfull = Signal(init=1)
        take_in = Signal()
        take_out = Signal()
        level_next = Signal(range(3))
        m.d.comb += [
            take_in.eq(self.i.valid & notfull),
            take_out.eq(nonempty & self.o.ready),
            level_next.eq(self.level + take_in - take_out),
            self.i.ready.eq(notfull),
            self.o.valid.eq(nonempty),
            self.o.payload.eq(Mux(rptr, Value.cast(entries[1]), Value.cast(entries[0]))),
        ]
        # the entry at the write pointer is free while the queue is not full, and loads
        # whatever ``i`` carries: its enable is a gate of two flip-flops, not ``i.valid``
        # (board build b78: the engine's output multiplexer, chosen by the pool's flag,
        # into the output queue's entry enables, 11.7 ns, the critical path of the chip)
        for k, entry in enumerate(entries):
            with m.If(notfull & (wptr == k)):
                m.d.sync += entry.eq(self.i.payload)
        if self._flags is not None:
            f_in = Value.cast(self._flags(self.i.payload))
            f_next = [Mux(notfull & (wptr == k), f_in, Value.cast(self._flags(entry)))
                      for k, entry in enumerate(entries)]
            m.d.sync += self.o_flags.eq(Mux(rptr ^ take_out, f_next[1], f_next[0]))
        m.d.sync += [
            wptr.eq(wptr ^ take_in),
            rptr.eq(rptr ^ take_out),
            self.level.eq(level_next),
            nonempty.eq(level_next != 0),
            notfull.eq(level_next != 2),
        ]
        return m
