"""The designs that ``python -m sim.run`` compiles with Verilator.

:class:`SimAccelerator` is :class:`hw.top.Accelerator` with its feature-map memory behind the
port, as the configuration describes it: :class:`hw.memport.ModelMemory` (width, latency and
one beat per cycle of the configuration), and counters of the words that cross the port, so the
harness can report the feature-map traffic per step.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AccelConfig
from hw.engine import InBeat, LoadBeat
from hw.link import Score
from hw.memport import ModelMemory
from hw.pool import Beat
from hw.top import MAX_LEN, Accelerator

__all__ = ["SimAccelerator", "SimBoardDesign", "memory_words"]

#: the feature-map memory the simulated designs carry, in bytes (a schedule may use up to this)
SIM_FMAP_BYTES = 1 << 21


def memory_words(cfg: AccelConfig, fmap_bytes: int = SIM_FMAP_BYTES) -> int:
    """Words of the simulated feature-map memory: ``fmap_bytes`` rounded up to a power of two."""
    words = -(-fmap_bytes // cfg.fmap_port_bytes)
    return 1 << max(0, (words - 1).bit_length())


class SimAccelerator(wiring.Component):
    """:class:`~hw.top.Accelerator` plus its memory model; ``rd_words``/``wr_words`` count the
    words read and written through the port."""

    def __init__(self, cfg: AccelConfig, *, mem_words: int | None = None):
        self._cfg = cfg
        self._mem_words = memory_words(cfg) if mem_words is None else mem_words
        super().__init__({
            "load": In(stream.Signature(LoadBeat(cfg))),
            "i": In(stream.Signature(InBeat(cfg))),
            "o": Out(stream.Signature(Score)),
            "busy": Out(1),
            "step": Out(range(cfg.schedule_depth)),
            "cycles": Out(64),
            "frames": Out(32),
            "rd_words": Out(64),
            "wr_words": Out(64),
            "tap_valid": Out(1),
            "tap": Out(Beat(width=cfg.sum_bits, lanes=cfg.requant_units)),
        })

    @property
    def mem_bytes(self) -> int:
        return self._mem_words * self._cfg.fmap_port_bytes

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.acc = acc = Accelerator(cfg)
        m.submodules.mem = mem = ModelMemory(cfg, depth=self._mem_words,
                                             addr_bits=cfg.fmap_addr_bits, max_len=MAX_LEN)
        wiring.connect(m, acc.mem, mem.bus)
        wiring.connect(m, wiring.flipped(self.load), acc.load)
        wiring.connect(m, wiring.flipped(self.i), acc.i)
        wiring.connect(m, acc.o, wiring.flipped(self.o))
        m.d.comb += [self.busy.eq(acc.busy), self.step.eq(acc.step), self.cycles.eq(acc.cycles),
                     self.frames.eq(acc.frames), self.tap_valid.eq(acc.tap_valid),
                     self.tap.eq(acc.tap)]
        with m.If(mem.bus.rdata.valid & mem.bus.rdata.ready):
            m.d.sync += self.rd_words.eq(self.rd_words + 1)
        with m.If(mem.bus.wdata.valid & mem.bus.wdata.ready):
            m.d.sync += self.wr_words.eq(self.wr_words + 1)
        return m


class SimBoardDesign(wiring.Component):
    """A simulated board: :class:`hw.soc.Classifier` (UART link + accelerator) and its
    feature-map memory model. The memories are filled through ``load``."""

    def __init__(self, cfg: AccelConfig, *, info: bytes, image_shape, n_scores: int,
                 divisor: int | None = None, mem_words: int | None = None):
        from hw.soc import Classifier

        self._cfg = cfg
        self._mem_words = memory_words(cfg) if mem_words is None else mem_words
        self._classifier = Classifier(cfg, info=info, image_shape=image_shape,
                                      n_scores=n_scores, divisor=divisor)
        super().__init__({
            "rxd": In(1, init=1),
            "txd": Out(1, init=1),
            "load": In(stream.Signature(LoadBeat(cfg))),
            "busy": Out(1),
            "frames": Out(32),
        })

    @property
    def divisor(self) -> int:
        return self._classifier.divisor

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.soc = soc = self._classifier
        m.submodules.mem = mem = ModelMemory(cfg, depth=self._mem_words,
                                             addr_bits=cfg.fmap_addr_bits, max_len=MAX_LEN)
        wiring.connect(m, soc.mem, mem.bus)
        wiring.connect(m, wiring.flipped(self.load), soc.load)
        m.d.comb += [soc.rxd.eq(self.rxd), self.txd.eq(soc.txd), self.busy.eq(soc.busy),
                     self.frames.eq(soc.frames)]
        return m
