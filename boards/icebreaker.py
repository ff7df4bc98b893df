"""The iCEBreaker (Lattice iCE40UP5K, 12 MHz oscillator, FT2232H UART, no SDRAM).

A small second target for the open flow: the board has no external RAM, so the design's memory
port is served by :class:`BlockRAMMemory` (``2**fmap_addr_bits`` words of the configuration:
512 bytes for ``icebreaker``). The default design is the accelerator (:mod:`boards.accel`) with
the tiny Fire model; the bring-up memory test is the other one. Clocks: the configuration's
``clk_hz`` is 12 MHz, the oscillator itself (3 Mbaud = 4 clocks per bit; the accelerator
reaches ~18 MHz on the UP5K); any other ``clk_hz`` comes from an SB_PLL40_PAD
(:func:`ice40_pll_params`, e.g. 24 MHz for 8 clocks per bit). LEDs: green = idle, red = error
(busy shows as both off).
"""

from __future__ import annotations

import dataclasses

from amaranth import ClockDomain, Elaboratable, Instance, Module, Mux, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In
from amaranth.utils import ceil_log2

from hw.config import AccelConfig, get_config
from hw.memport import MemPortSignature, serve_commands

from .accel import TINY_MODEL
from .common import Board, DesignFactory, check_design, make_memtest

__all__ = ["ICE40PLLParams", "ice40_pll_params", "BlockRAMMemory", "ICEBreakerTop", "BOARD",
           "DEFAULT_CLK_HZ"]

OSC_HZ = 12_000_000
#: The clock of the ``icebreaker`` configuration (12 MHz: the oscillator, no PLL).
DEFAULT_CLK_HZ = get_config("icebreaker").clk_hz


@dataclasses.dataclass(frozen=True)
class ICE40PLLParams:
    """SB_PLL40 dividers (``SIMPLE`` feedback): ``f_out = f_in * (divf + 1) / ((divr + 1) *
    2**divq)``."""

    divr: int
    divf: int
    divq: int
    filter_range: int
    f_in: float
    f_out: float
    f_vco: float


def ice40_pll_params(f_in: float, f_out: float, *, tolerance: float = 0.0) -> ICE40PLLParams:
    """The SB_PLL40 setting nearest ``f_out`` (phase detector 10-133 MHz, VCO 533-1066 MHz,
    output 16-275 MHz); rejects an error above ``tolerance`` (relative)."""
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"An iCE40 PLL output must be 16-275 MHz, not {f_out / 1e6} MHz")
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / (1 << divq)
                key = abs(out - f_out)
                if best is None or key < best[0]:
                    best = (key, divr, divf, divq, out, vco, pfd)
    if best is None:
        raise ValueError(f"No SB_PLL40 setting makes {f_out / 1e6} MHz from {f_in / 1e6} MHz")
    _, divr, divf, divq, out, vco, pfd = best
    if abs(out - f_out) > tolerance * f_out:
        raise ValueError(f"The nearest SB_PLL40 output to {f_out / 1e6} MHz is "
                         f"{out / 1e6:.4f} MHz; allow a tolerance or choose another frequency")
    # The loop filter range by phase detector frequency (iCE40 sysCLOCK PLL guide).
    filter_range = next(i for i, top in enumerate((17e6, 26e6, 44e6, 66e6, 101e6, 1e12), 1)
                        if pfd < top)
    return ICE40PLLParams(divr=divr, divf=divf, divq=divq, filter_range=filter_range,
                          f_in=f_in, f_out=out, f_vco=vco)


def icebreaker_config(clk_hz: int = DEFAULT_CLK_HZ) -> AccelConfig:
    """The configuration the iCEBreaker runs: ``hw.config``'s ``icebreaker`` (the smallest
    engine), at ``clk_hz``."""
    cfg = get_config("icebreaker")
    return cfg if clk_hz == cfg.clk_hz else dataclasses.replace(cfg, clk_hz=clk_hz)


class BlockRAMMemory(wiring.Component):
    """Block RAM behind a memory port (:mod:`hw.memport`), as small as the port allows.

    ``depth`` words of ``data_bytes`` (a power of two; the port's word address has
    ``log2(depth)`` bits). Commands are served in order, one word per cycle; a read's data
    comes two cycles after its command is accepted and waits in the block RAM's output register
    while ``rdata.ready`` is low (the next read is issued only as the previous word is taken),
    so there is no output buffer: :class:`hw.memport.ModelMemory` keeps ``latency + 4`` words of
    flip-flops for it, 250 logic cells the UP5K cannot spare.
    """

    def __init__(self, *, data_bytes: int, depth: int, max_len: int = 256, init=()):
        if depth < 2 or depth & (depth - 1):
            raise ValueError(f"BlockRAMMemory depth must be a power of two, not {depth!r}")
        self._data_bytes, self._depth, self._init = data_bytes, depth, list(init)
        super().__init__({"bus": In(MemPortSignature(data_bytes, ceil_log2(depth),
                                                     max_len=max_len))})

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        m.submodules.mem = mem = Memory(shape=8 * self._data_bytes, depth=self._depth,
                                        init=self._init)
        wr = mem.write_port(granularity=8)
        rd = mem.read_port()

        held = Signal()        # the read port's output holds a word not yet taken
        advance = Signal()     # the read port may load a new word (its output is free)
        issue = Signal()       # one word of the current command is served this cycle
        addr, writing, active, last = serve_commands(m, bus, issue)
        m.d.comb += [
            advance.eq(~held | bus.rdata.ready),
            bus.wdata.ready.eq(active & writing),
            issue.eq(active & Mux(writing, bus.wdata.valid, advance)),
            wr.addr.eq(addr),
            wr.data.eq(bus.wdata.payload.data),
            rd.addr.eq(addr),
            rd.en.eq(advance),
            bus.rdata.valid.eq(held),
            bus.rdata.payload.data.eq(rd.data),
        ]
        with m.If(active & writing & bus.wdata.valid):
            m.d.comb += wr.en.eq(bus.wdata.payload.mask)
        with m.If(advance):
            m.d.sync += held.eq(issue & ~writing)
        return m


class ICEBreakerTop(Elaboratable):
    """The iCEBreaker top level: clock (PLL), reset, a block-RAM memory, LEDs, UART, and the
    design made by ``make_design(config, mem_signature)``."""

    def __init__(self, make_design: DesignFactory = make_memtest, *,
                 config: AccelConfig | None = None):
        self._config = icebreaker_config() if config is None else config
        self._pll = (None if self._config.clk_hz == OSC_HZ
                     else ice40_pll_params(OSC_HZ, self._config.clk_hz))
        self.memory = BlockRAMMemory(data_bytes=self._config.fmap_port_bytes,
                                     depth=1 << self._config.fmap_addr_bits)
        self.mem_signature = self.memory.bus.signature.flip()
        self.design = make_design(self._config, self.mem_signature)
        check_design(self.design, self.mem_signature)

    @property
    def config(self) -> AccelConfig:
        return self._config

    @property
    def pll(self) -> ICE40PLLParams | None:
        return self._pll

    def elaborate(self, platform):
        m = Module()
        osc = platform.request(platform.default_clk, dir="-")
        m.domains.sync = sync = ClockDomain("sync")
        locked = Signal()
        if self._pll is None:
            m.submodules.osc = osc_buf = io.Buffer("i", osc)
            m.d.comb += [sync.clk.eq(osc_buf.i), locked.eq(1)]
        else:
            p = self._pll
            clk = Signal()
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq,
                p_FILTER_RANGE=p.filter_range,
                i_PACKAGEPIN=osc.io, i_RESETB=1, i_BYPASS=0,
                o_PLLOUTGLOBAL=clk, o_LOCK=locked,
            )
            m.d.comb += sync.clk.eq(clk)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(sync.clk, self._config.clk_hz)

        m.submodules.memory = memory = self.memory
        m.submodules.design = design = self.design
        wiring.connect(m, design.mem, memory.bus)
        m.d.comb += design.mem_ready.eq(1)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [design.rxd.eq(uart_rx.i), uart_tx.o.eq(design.txd)]
        for name, value in (("led_g", design.status.idle), ("led_r", design.status.error)):
            m.submodules[name] = led = io.Buffer("o", platform.request(name, 0, dir="-"))
            m.d.comb += led.o.eq(value)
        return m


def _resources(util: dict, cells: dict) -> dict:
    ffs = sum(n for name, n in cells.items() if name.startswith("SB_DFF"))
    return {"luts": cells.get("SB_LUT4", util.get("ICESTORM_LC", (None,))[0]),
            "ffs": ffs if cells else None,
            "mult18": util.get("ICESTORM_DSP", (0,))[0],
            "ebr": util.get("ICESTORM_RAM", (0,))[0]}


def _platform():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


BOARD = Board(
    name="icebreaker",
    description="iCEBreaker, Lattice iCE40UP5K, block-RAM memory port",
    platform=_platform,
    top=ICEBreakerTop,
    resources=_resources,
    bitstream_ext="bin",
    program=(("iceprog", ("{bitstream}",)),
             ("openFPGALoader", ("-b", "ice40_generic", "{bitstream}"))),
    install_hint="iceprog: apt install fpga-icestorm; or openFPGALoader: apt install "
                 "openfpgaloader, or the OSS CAD Suite "
                 "(https://github.com/YosysHQ/oss-cad-suite-build)",
    # the four 32 KiB SPRAMs; the 30 EBR (15 KiB) are the buffers'. (The accelerator design
    # keeps its weights in EBR today: yosys does not infer SB_SPRAM256KA for them.)
    weight_capacity_bytes=4 * 32 * 1024,
    default_design="accel",
    default_model=str(TINY_MODEL),
    config=icebreaker_config,
    # the multipliers into the SB_MAC16 DSPs (without it yosys builds them from LUTs)
    synth_opts="-dsp",
)
