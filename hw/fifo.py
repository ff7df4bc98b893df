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

:class:`BlockFIFO` is ``amaranth.lib.fifo.SyncFIFOBuffered`` for a block RAM read through its own
output register: ``SyncFIFOBuffered`` reads the RAM straight into its consumer, and an ECP5
block RAM without its output register takes 5.8 ns from clock to data (board build b87: the
feature-map writer's FIFO, 5.8 ns of a 10.6 ns critical path). Here the RAM is read two cycles
ahead into a plain register (``boards.netlist`` moves it into the RAM) and on into a few words of
LUT RAM, which the consumer reads.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["BlockFIFO", "CreditFIFO"]


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



class BlockFIFO(wiring.Component):
    """``depth`` words of ``width`` bits in a block RAM, first word falling through, read through
    the RAM's output register into ``ahead`` words of LUT RAM.

    Ports as ``SyncFIFOBuffered``'s: ``w_en``/``w_data``/``w_rdy`` (the RAM has room),
    ``r_en``/``r_data``/``r_rdy``, ``level`` (every word held: the RAM's, those on their way out of
    it and the LUT RAM's; at most ``depth + ahead``). A word written is readable 4 cycles later,
    one a cycle after that: the RAM is read while the words in the LUT RAM and on their way
    leave room in it: the word being read and two on their way, and one more because this
    cycle's read is not counted (``ahead`` >= 4 keeps up with a read in every cycle)."""

    #: cycles from a RAM read to its word in the output register
    READ_LATENCY = 2

    def __init__(self, *, width: int, depth: int, ahead: int = 4):
        if width < 1 or depth < 2 or ahead < self.READ_LATENCY + 2:
            raise ValueError(f"BlockFIFO needs width >= 1, depth >= 2 and ahead >= "
                             f"{self.READ_LATENCY + 2}, not width={width!r}, depth={depth!r}, "
                             f"ahead={ahead!r}")
        self.width, self.depth, self.ahead = width, depth, ahead
        super().__init__({
            "w_en": In(1), "w_data": In(width), "w_rdy": Out(1),
            "r_en": In(1), "r_data": Out(width), "r_rdy": Out(1),
            "level": Out(range(depth + ahead + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        D, A = self.depth, self.ahead
        storage = m.submodules.storage = Memory(shape=self.width, depth=D, init=[])
        wp = storage.write_port()
        rp = storage.read_port(domain="sync")
        m.submodules.out = out = CreditFIFO(width=self.width, depth=A)
        produce = Signal(range(D))
        consume = Signal(range(D))
        held = Signal(range(D + 1))          # words in the RAM
        on_way = [Signal(name=f"on_way{i}") for i in range(self.READ_LATENCY)]
        word_q = Signal(self.width, reset_less=True)     # the RAM's output register

        def incr(p):
            return (p + 1)[:len(p)] if D & (D - 1) == 0 else Mux(p == D - 1, 0, p + 1)

        write = Signal()
        read = Signal()
        pop = Signal()
        # the words out of the RAM or on their way stay fewer than ``ahead`` (this cycle's pop
        # is not counted: registers only)
        room = out.level + sum(on_way) < A
        m.d.comb += [
            self.w_rdy.eq(held != D),
            write.eq(self.w_en & self.w_rdy),
            read.eq((held != 0) & room),
            wp.en.eq(write), wp.addr.eq(produce), wp.data.eq(self.w_data),
            rp.addr.eq(consume),
            out.w_en.eq(on_way[-1]), out.w_data.eq(word_q),
            out.r_en.eq(self.r_en),
            self.r_data.eq(out.r_data), self.r_rdy.eq(out.r_rdy),
            pop.eq(self.r_en & out.r_rdy),
        ]
        m.d.sync += [
            word_q.eq(rp.data),
            on_way[0].eq(read), *[b.eq(a) for a, b in zip(on_way, on_way[1:])],
            held.eq(held + write - read),
            self.level.eq(self.level + write - pop),
        ]
        with m.If(write):
            m.d.sync += produce.eq(incr(produce))
        with m.If(read):
            m.d.sync += consume.eq(incr(consume))
        return m
