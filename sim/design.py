"""The designs that ``python -m sim.run`` and ``sim.board`` compile with Verilator.

:class:`SimAccelerator` is :class:`hw.top.Accelerator` with its feature-map memory behind the
port, as the configuration describes it (:func:`feature_memory`): :class:`hw.memport.ModelMemory`
(width, latency and one beat per cycle of the configuration) or, for ``fmap_memory="sdram"``
(the ULX3S), :class:`SDRAMMemory`, the board's SDRAM controller in front of the checking chip
model; plus counters of the words that cross the port, so the harness can report the
feature-map traffic per step, and the memory's protocol-error flag.
"""

from __future__ import annotations

import dataclasses

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AccelConfig
from hw.engine import InBeat, LoadBeat
from hw.link import Score
from hw.memport import MemPortSignature, ModelMemory
from hw.pool import Beat
from hw.top import MAX_LEN, Accelerator

__all__ = ["SimAccelerator", "SimBoardDesign", "SDRAMMemory", "feature_memory",
           "memory_words"]

#: the feature-map memory the simulated designs carry, in bytes (a schedule may use up to this)
SIM_FMAP_BYTES = 1 << 21

#: rows per bank of the simulated SDRAM: 4 banks x 256 rows x 512 columns x 2 bytes = 1 MB
SIM_SDRAM_ROW_BITS = 8


def sdram_params(cfg: AccelConfig, row_bits: int = SIM_SDRAM_ROW_BITS):
    """The simulated chip: the ULX3S part's timing at ``cfg.clk_hz`` with ``2**row_bits`` rows."""
    from hw.sdram import SDRAMParams

    return dataclasses.replace(SDRAMParams.ulx3s(cfg.clk_hz), row_bits=row_bits)


def memory_bytes(cfg: AccelConfig, mem_words: int | None = None) -> int:
    """Bytes of the feature-map memory that :func:`feature_memory` simulates for ``cfg``."""
    if cfg.fmap_memory == "sdram":
        params = sdram_params(cfg)
        return params.words * params.data_bytes
    return (memory_words(cfg) if mem_words is None else mem_words) * cfg.fmap_port_bytes


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
            "mem_error": Out(1),
        })

    @property
    def mem_bytes(self) -> int:
        """Bytes of the simulated feature-map memory."""
        return memory_bytes(self._cfg, self._mem_words)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        m.submodules.acc = acc = Accelerator(cfg)
        m.submodules.mem = mem = feature_memory(cfg, self._mem_words)
        wiring.connect(m, acc.mem, mem.bus)
        if isinstance(mem, SDRAMMemory):
            m.d.comb += self.mem_error.eq(mem.error)
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
        m.submodules.mem = mem = feature_memory(cfg, self._mem_words)
        wiring.connect(m, soc.mem, mem.bus)
        wiring.connect(m, wiring.flipped(self.load), soc.load)
        m.d.comb += [soc.rxd.eq(self.rxd), self.txd.eq(soc.txd), self.busy.eq(soc.busy),
                     self.frames.eq(soc.frames)]
        return m


class SDRAMMemory(wiring.Component):
    """The ULX3S's feature-map memory in simulation: :class:`hw.sdram.SDRAMController` with one
    register stage each way on the pins (the board's I/O registers, ``boards/ulx3s.py``) in front
    of :class:`hw.sdram_model.SDRAMChipModel`, which holds the data and checks every command
    against the datasheet timing. ``error`` is the chip model's sticky protocol-violation flag.

    The chip has the ULX3S part's timing and row length (512 columns) with fewer rows than the
    real 8192 (``row_bits``), so that the simulation carries megabytes, not 32 MB."""

    def __init__(self, cfg: AccelConfig, *, row_bits: int = SIM_SDRAM_ROW_BITS):
        self._params = sdram_params(cfg, row_bits)
        if self._params.data_bytes != cfg.fmap_port_bytes:
            raise ValueError(f"The SDRAM has {self._params.data_bytes}-byte words, the "
                             f"configuration's port {cfg.fmap_port_bytes}")
        self._cfg = cfg
        super().__init__({
            "bus": In(MemPortSignature(cfg.fmap_port_bytes, cfg.fmap_addr_bits,
                                       max_len=MAX_LEN)),
            "error": Out(1),
        })

    @property
    def mem_bytes(self) -> int:
        return self._params.words * self._params.data_bytes

    def elaborate(self, platform):
        from hw.sdram import SDRAMController
        from hw.sdram_model import SDRAMChipModel

        m = Module()
        p = self._params
        m.submodules.ctrl = ctrl = SDRAMController(p, max_len=MAX_LEN, phy_read_delay=2)
        m.submodules.chip = chip = SDRAMChipModel(p)
        bus = self.bus
        # the port's word address is wider than this smaller chip's: its high bits must be 0
        m.d.comb += [
            ctrl.bus.cmd.valid.eq(bus.cmd.valid),
            ctrl.bus.cmd.payload.addr.eq(bus.cmd.payload.addr[:p.addr_bits]),
            ctrl.bus.cmd.payload.len.eq(bus.cmd.payload.len),
            ctrl.bus.cmd.payload.write.eq(bus.cmd.payload.write),
            bus.cmd.ready.eq(ctrl.bus.cmd.ready),
        ]
        wiring.connect(m, wiring.flipped(bus.wdata), ctrl.bus.wdata)
        wiring.connect(m, ctrl.bus.rdata, wiring.flipped(bus.rdata))
        for name in _PIN_OUTPUTS:
            reg = Signal.like(getattr(ctrl.sdram, name), name=f"phy_{name}")
            m.d.sync += reg.eq(getattr(ctrl.sdram, name))
            m.d.comb += getattr(chip.pins, name).eq(reg)
        dq = Signal.like(chip.pins.dq_i, name="phy_dq_i")
        m.d.sync += dq.eq(chip.pins.dq_i)
        m.d.comb += [ctrl.sdram.dq_i.eq(dq), self.error.eq(chip.error)]
        return m


_PIN_OUTPUTS = ("cke", "cs", "ras", "cas", "we", "ba", "a", "dqm", "dq_o", "dq_oe")


def feature_memory(cfg: AccelConfig, mem_words: int | None = None):
    """The feature-map memory of ``cfg`` in simulation: ``ModelMemory`` or ``SDRAMMemory``."""
    if cfg.fmap_memory == "sdram":
        return SDRAMMemory(cfg)
    words = memory_words(cfg) if mem_words is None else mem_words
    return ModelMemory(cfg, depth=words, addr_bits=cfg.fmap_addr_bits, max_len=MAX_LEN)
