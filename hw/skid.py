"""A register slice for streams: every output, and ``ready`` back to the source, from flip-flops.

:class:`RegisterSlice` cuts a valid/ready stream's combinational paths in both directions and
still passes a beat every cycle: the classic two-entry skid buffer. The sink's ``ready`` only
reaches the slice's own registers, so a long ``ready`` (a count compared against a limit) no
longer runs on into the source's FIFO and counters across the chip (board build b14).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["RegisterSlice"]


class RegisterSlice(wiring.Component):
    """Beats of ``shape`` from ``i`` to ``o`` in order, one cycle later at the earliest.

    ``o.valid``, ``o.payload`` and ``i.ready`` are flip-flops. A beat taken while ``o`` is
    stalled waits in a second (skid) register; ``i.ready`` falls only while that one is full,
    so a sink that is always ready sees one beat every cycle. ``level``: beats held (0..2).
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "level": Out(range(3)),
        })

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
