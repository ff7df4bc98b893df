"""A synchronous FIFO whose writes are not refused: for producers that hold credits for its room.

``amaranth.lib.fifo.SyncFIFO`` refuses a write while it is full: its memory's write enable and
its level's add are ``w_en & (level != depth)``, a LUT after the level register, and then the
enable's fan-out to every LUT-RAM slice of a wide FIFO and back into the level (board build b66:
the weight decoder's row FIFO, 10.8 ns, the critical path of the chip). A producer that keeps
count of the room it was given (the decoder's credits) never writes into a full FIFO, so the
check is dead logic on the slowest path. :class:`CreditFIFO` leaves it out: ``w_en`` drives the
memory and the pointers as it comes, and the level is ``level + w_en - do_read``.

Reads are checked as in ``SyncFIFO`` (``r_en`` while empty does nothing) unless the consumer
promises to read only what is there (``checked_reads=False``: a pop formed from its own copy of
``r_rdy``). ``overflow`` is a sticky flag, set by a write into a full FIFO (or a trusted read of
an empty one): a broken promise, for the tests.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["CreditFIFO"]


class CreditFIFO(wiring.Component):
    """``depth`` words of ``width`` bits, first in first out, read asynchronously (LUT RAM).

    Ports as ``SyncFIFO``'s: ``w_en``/``w_data``; ``r_en``/``r_data``/``r_rdy`` (``level !=
    0``); ``level``. There is no ``w_rdy``: the writer must know there is room."""

    def __init__(self, *, width: int, depth: int, checked_reads: bool = True):
        if width < 1 or depth < 1:
            raise ValueError(f"CreditFIFO needs width and depth of at least 1, not "
                             f"width={width!r}, depth={depth!r}")
        self.width, self.depth, self.checked_reads = width, depth, checked_reads
        super().__init__({
            "w_en": In(1), "w_data": In(width),
            "r_en": In(1), "r_data": Out(width), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
            "overflow": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        D = self.depth
        storage = m.submodules.storage = Memory(shape=self.width, depth=D, init=[])
        wp = storage.write_port()
        rp = storage.read_port(domain="comb")
        produce = Signal(range(D), name="produce")
        consume = Signal(range(D), name="consume")

        def incr(p):      # p + 1 modulo D
            return (p + 1)[:len(p)] if D & (D - 1) == 0 else Mux(p == D - 1, 0, p + 1)

        do_read = self.r_en & self.r_rdy if self.checked_reads else self.r_en
        m.d.comb += [
            self.r_rdy.eq(self.level != 0),
            wp.en.eq(self.w_en), wp.addr.eq(produce), wp.data.eq(self.w_data),
            rp.addr.eq(consume), self.r_data.eq(rp.data),
        ]
        with m.If(self.w_en):
            m.d.sync += produce.eq(incr(produce))
        with m.If(do_read):
            m.d.sync += consume.eq(incr(consume))
        m.d.sync += self.level.eq(self.level + self.w_en - do_read)
        broken = (self.w_en & ~do_read & (self.level == D))
        if not self.checked_reads:
            broken = broken | (self.r_en & (self.level == 0))
        with m.If(broken):
            m.d.sync += self.overflow.eq(1)
        return m

