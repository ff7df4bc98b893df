"""The ULX3S (Lattice ECP5 LFE5U-85F, 25 MHz oscillator, 32 MB SDR SDRAM, FT231X UART).

- Clocks: one EHXPLLL makes the system clock (``config.clk_hz``, 100 MHz by default) from the
  25 MHz oscillator, and a second output of the same frequency shifted by ``sdram_phase_deg``
  that clocks the SDRAM's CLK pin through an ODDR (:func:`ecp5_pll_params` finds the dividers).
- Reset: ``locked`` of the PLL, synchronised by two flip-flops, drives the ECP5's global
  set/reset (the GSR primitive, its own network to every flip-flop), not the fabric: the design's
  asynchronous reset is its inverse, which yosys (``ecp5_gsr``) replaces by GSR, so no reset net
  is routed or timed. The SDRAM controller, which starts its power-up sequence by itself, also
  takes a synchronous reset that ends a few cycles after GSR (a small local net).
- SDRAM: :class:`hw.sdram.SDRAMController` behind the design's memory port, every pin through
  an I/O register (:class:`SDRAMPHY`), so the controller sees two extra cycles of read latency.
- LEDs 0-2: the design's idle / busy / error; LED 3: SDRAM initialised; LED 7: a 1 Hz heartbeat.

:class:`ULX3STop` is the top level for the platform; ``make_design`` (a
:data:`~boards.common.DesignFactory`) says what runs on it, the bring-up memory test by default.
"""

from __future__ import annotations

import dataclasses

from amaranth import (
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Instance,
    Module,
    ResetInserter,
    ResetSignal,
    Signal,
)
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from compiler.api import DEFAULT_MODELS
from compiler.compress import TARGETS
from hw.config import AccelConfig, get_config
from hw.memport import MemPortSignature
from hw.sdram import SDRAMController, SDRAMParams, SDRAMPinsSignature

from .common import Board, DesignFactory, check_design, make_memtest

__all__ = ["ECP5PLLParams", "ecp5_pll_params", "ECP5PLL", "SDRAMPHY", "ULX3STop", "BOARD"]

OSC_HZ = 25_000_000
#: Register stages of the SDRAM PHY that the read path must allow for (output + input).
PHY_READ_DELAY = 2
#: CLKOS lag behind the system clock for the SDRAM's CLK pin: 180 degrees puts the SDRAM's
#: sampling edge in the middle of the command and write-data eye. Untested on a board yet.
DEFAULT_SDRAM_PHASE = 180.0


@dataclasses.dataclass(frozen=True)
class ECP5PLLParams:
    """Dividers of an EHXPLLL with feedback from CLKOP, and the CLKOS phase settings."""

    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_in: float
    f_out: float
    f_vco: float
    clkop_cphase: int
    clkos_cphase: int
    clkos_fphase: int

    @property
    def phase_deg(self) -> float:
        """The CLKOS phase behind CLKOP, in degrees, as set (1/8 VCO cycle steps)."""
        steps = (self.clkos_cphase - self.clkop_cphase) + self.clkos_fphase / 8
        return 360.0 * steps / self.clkop_div


def ecp5_pll_params(f_in: float, f_out: float, *, phase_deg: float = 0.0,
                    tolerance: float = 0.0) -> ECP5PLLParams:
    """The EHXPLLL dividers that give ``f_out`` from ``f_in`` most exactly (VCO 400-800 MHz,
    phase detector 3.125-400 MHz; among equal errors the VCO nearest 600 MHz), and the CLKOS
    phase settings for ``phase_deg`` behind CLKOP. Rejects an error above ``tolerance``
    (relative)."""
    if f_in <= 0 or f_out <= 0:
        raise ValueError(f"PLL frequencies must be positive, not {f_in!r} -> {f_out!r}")
    if not 0 <= phase_deg < 360:
        raise ValueError(f"PLL phase must be in [0, 360) degrees, not {phase_deg!r}")
    best = None
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                if not 400e6 <= vco <= 800e6:
                    continue
                key = (abs(out - f_out), abs(vco - 600e6))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, out, vco)
    if best is None:
        raise ValueError(f"No EHXPLLL setting makes {f_out / 1e6} MHz from {f_in / 1e6} MHz")
    _, clki_div, clkfb_div, clkop_div, out, vco = best
    if abs(out - f_out) > tolerance * f_out:
        raise ValueError(f"The nearest EHXPLLL output to {f_out / 1e6} MHz from {f_in / 1e6} "
                         f"MHz is {out / 1e6:.4f} MHz; allow a tolerance or choose another "
                         f"frequency")
    steps = phase_deg / 360 * clkop_div
    coarse = int(steps)
    fine = round((steps - coarse) * 8)
    if fine == 8:
        coarse, fine = coarse + 1, 0
    clkop_cphase = clkop_div - 1
    return ECP5PLLParams(clki_div=clki_div, clkfb_div=clkfb_div, clkop_div=clkop_div,
                         f_in=f_in, f_out=out, f_vco=vco, clkop_cphase=clkop_cphase,
                         clkos_cphase=clkop_cphase + coarse, clkos_fphase=fine)


class ECP5PLL(wiring.Component):
    """An EHXPLLL: ``clk_in`` to ``clkop`` and ``clkos`` (same frequency, shifted), ``locked``.
    """

    def __init__(self, params: ECP5PLLParams):
        self._params = params
        super().__init__({"clk_in": In(1), "clkop": Out(1), "clkos": Out(1), "locked": Out(1)})

    @property
    def params(self) -> ECP5PLLParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            a_FREQUENCY_PIN_CLKI=f"{p.f_in / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{p.f_out / 1e6:g}",
            a_FREQUENCY_PIN_CLKOS=f"{p.f_out / 1e6:g}",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_FEEDBK_PATH="CLKOP",
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_cphase, p_CLKOP_FPHASE=0,
            p_CLKOS_ENABLE="ENABLED", p_CLKOS_DIV=p.clkop_div,
            p_CLKOS_CPHASE=p.clkos_cphase, p_CLKOS_FPHASE=p.clkos_fphase,
            i_CLKI=self.clk_in, i_CLKFB=self.clkop, i_RST=0, i_STDBY=0,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0,
            o_CLKOP=self.clkop, o_CLKOS=self.clkos, o_LOCK=self.locked,
        )
        return m


class SDRAMPHY(wiring.Component):
    """The controller's pins (``sdram``, the chip side of :class:`~hw.sdram.SDRAMPinsSignature`)
    onto the board's SDRAM resource: every signal through an I/O register in ``sync``, the data
    bus through input and output registers, and the CLK pin from an ODDR in the ``sdram_clk``
    domain (high in the first half of each of its cycles)."""

    def __init__(self, params: SDRAMParams, resource):
        self._resource = resource
        super().__init__({"sdram": In(SDRAMPinsSignature(params))})

    def elaborate(self, platform):
        m = Module()
        res = self._resource
        pins = self.sdram
        m.submodules.clk = clk = io.DDRBuffer("o", res.clk, o_domain="sdram_clk")
        m.d.comb += [clk.o[0].eq(1), clk.o[1].eq(0)]
        for name, value in (("clk_en", pins.cke), ("cs", pins.cs), ("ras", pins.ras),
                            ("cas", pins.cas), ("we", pins.we), ("ba", pins.ba),
                            ("dqm", pins.dqm)):
            m.submodules[name] = buf = io.FFBuffer("o", getattr(res, name))
            m.d.comb += buf.o.eq(value)
        m.submodules.a = a = io.FFBuffer("o", res.a)
        m.d.comb += a.o.eq(pins.a[:len(res.a)])
        m.submodules.dq = dq = io.FFBuffer("io", res.dq)
        m.d.comb += [dq.o.eq(pins.dq_o), dq.oe.eq(pins.dq_oe), pins.dq_i.eq(dq.i)]
        return m


class ULX3STop(Elaboratable):
    """The ULX3S top level: clocks and reset, SDRAM controller and PHY, LEDs, UART, and the
    design made by ``make_design(config, mem_signature)``.

    ``config``: the accelerator configuration (default ``ulx3s-85f``); its ``clk_hz`` is the
    system clock. ``sdram_phase_deg``: the SDRAM clock's lag behind the system clock.
    """

    def __init__(self, make_design: DesignFactory = make_memtest, *,
                 config: AccelConfig | None = None,
                 sdram_phase_deg: float = DEFAULT_SDRAM_PHASE):
        self._config = get_config("ulx3s-85f") if config is None else config
        self._sdram = SDRAMParams.ulx3s(self._config.clk_hz)
        if self._config.fmap_port_bytes != self._sdram.data_bytes:
            raise ValueError(f"The ULX3S's SDRAM is {self._sdram.data_bytes} bytes wide; the "
                             f"configuration {self._config.name!r} wants a "
                             f"{self._config.fmap_port_bytes}-byte memory port")
        self._pll = ecp5_pll_params(OSC_HZ, self._config.clk_hz, phase_deg=sdram_phase_deg)
        self.mem_signature = MemPortSignature(self._sdram.data_bytes, self._sdram.addr_bits)
        self.design = make_design(self._config, self.mem_signature)
        check_design(self.design, self.mem_signature)

    @property
    def config(self) -> AccelConfig:
        return self._config

    @property
    def sdram_params(self) -> SDRAMParams:
        return self._sdram

    @property
    def pll(self) -> ECP5PLLParams:
        return self._pll

    def elaborate(self, platform):
        m = Module()
        osc = platform.request(platform.default_clk, dir="-")
        m.submodules.osc = osc_buf = io.Buffer("i", osc)
        m.submodules.pll = pll = ECP5PLL(self._pll)
        m.d.comb += pll.clk_in.eq(osc_buf.i)

        m.domains.sync = sync = ClockDomain("sync", async_reset=True)
        m.domains.sdram_clk = sdram_clk = ClockDomain("sdram_clk", reset_less=True)
        m.d.comb += [sync.clk.eq(pll.clkop), sdram_clk.clk.eq(pll.clkos)]
        # the reset: the PLL's lock through two flip-flops that GSR leaves alone (they start at
        # 0 from configuration), into the GSR primitive (active low). Every other flip-flop is
        # set to its initial value by GSR: the domain's asynchronous reset is ``~ready``, which
        # yosys's ecp5_gsr removes from the flip-flops in favour of GSR. Through the fabric the
        # reset was a timed net to every flip-flop, 16-19 ns across the 85F (b17: the critical
        # path); through a DCCA router2 could not route it (docs/boards.md, section 6).
        # GSR's release is not timed; the design waits for the UART and the SDRAM controller,
        # the one part that starts by itself, waits for its own synchronous reset below.
        ready = Signal()
        sync1 = Signal()
        for d, q in ((pll.locked, sync1), (sync1, ready)):
            m.submodules += Instance(
                "TRELLIS_FF", p_GSR="DISABLED", p_CEMUX="1", p_CLKMUX="CLK", p_LSRMUX="LSR",
                p_REGSET="RESET", p_SRMODE="LSR_OVER_CE",
                i_CLK=ClockSignal("sync"), i_LSR=Const(0), i_DI=d, o_Q=q)
        m.submodules.gsr = Instance("GSR", i_GSR=ready)
        m.d.comb += ResetSignal("sync").eq(~ready)
        platform.add_clock_constraint(pll.clkop, self._pll.f_out)
        platform.add_clock_constraint(pll.clkos, self._pll.f_out)

        # the SDRAM controller's synchronous reset: high from GSR on (initial value 1) until 4
        # cycles after it, so the whole controller leaves reset in one cycle
        ctrl_rst = Signal(4, init=0b1111)
        m.d.sync += ctrl_rst.eq(ctrl_rst >> 1)
        ctrl = SDRAMController(self._sdram, phy_read_delay=PHY_READ_DELAY)
        m.submodules.controller = ResetInserter(ctrl_rst[0])(ctrl)
        sdram = platform.request("sdram", 0, dir="-")
        m.submodules.phy = phy = SDRAMPHY(self._sdram, sdram)
        wiring.connect(m, ctrl.sdram, phy.sdram)

        m.submodules.design = design = self.design
        wiring.connect(m, design.mem, ctrl.bus)
        m.d.comb += design.mem_ready.eq(ctrl.init_done)

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [design.rxd.eq(uart_rx.i), uart_tx.o.eq(design.txd)]

        heartbeat = Signal(range(self._config.clk_hz // 2))
        blink = Signal()
        with m.If(heartbeat == self._config.clk_hz // 2 - 1):
            m.d.sync += [heartbeat.eq(0), blink.eq(~blink)]
        with m.Else():
            m.d.sync += heartbeat.eq(heartbeat + 1)
        # each LED from a flip-flop of its own: the status logic's nets run to the pins from a
        # register, not through LUTs across the chip (b66-b69: up to 15 ns, unconstrained
        # pin paths on top of the report's list)
        for i, value in ((0, design.status.idle), (1, design.status.busy),
                         (2, design.status.error), (3, ctrl.init_done), (7, blink)):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            shown = Signal(name=f"led{i}_q")
            m.d.sync += shown.eq(value)
            m.d.comb += led.o.eq(shown)
        return m


def _resources(util: dict, cells: dict) -> dict:
    def used(name):
        return util[name][0] if name in util else None
    return {"luts": used("TRELLIS_COMB") if "TRELLIS_COMB" in util else cells.get("LUT4"),
            "ffs": used("TRELLIS_FF") if "TRELLIS_FF" in util else cells.get("TRELLIS_FF"),
            "mult18": used("MULT18X18D") or 0, "ebr": used("DP16KD") or 0}


#: ``(synth_opts, script_after_synth)`` that map the LUTs with yosys's classic ABC instead of
#: abc9: ``synth_ecp5`` up to its LUT mapping, ``abc -lut 4``, then the rest of ``synth_ecp5``.
#: yosys 0.70's abc9 stops on an assertion in ``ABC_OPS_REINTEGRATE`` for some netlists of the
#: accelerator (the 45 MHz build; the component harness of the column array); the classic
#: mapping has no such pass (docs/boards.md, section 6)
CLASSIC_ABC = ("-run :map_luts",
               "techmap -map +/lattice/latches_map.v\nabc -lut 4\nclean\n"
               "synth_ecp5 -top top -run map_cells:")


#: ``(synth_opts, script_after_synth)`` of the accelerator: :data:`CLASSIC_ABC`, and before the
#: block RAMs are mapped, a memory marked ``no_rw_check`` (the stream decoder's column
#: memories, hw/wdecode.py, and the line buffers' block-RAM banks, hw/lbuf.py: a word read in
#: the cycle it is written is never used) lets a collision of its read and write port give any
#: word. Without this yosys keeps the old word on a collision
#: with a copy of each write and a multiplexer after the block RAM's data
#: (``emulate_read_first``), which also stands between the RAM and a register that could move
#: into it (:mod:`boards.netlist`)
ACCEL_SYNTH = ("-run :map_ram",
               "setparam -set RD_COLLISION_X_MASK 1'b1 t:$mem_v2 a:no_rw_check %i\n"
               "synth_ecp5 -top top -run map_ram:map_luts\n" + CLASSIC_ABC[1])


def _platform():
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


BOARD = Board(
    name="ulx3s-85f",
    description="ULX3S, Lattice ECP5 LFE5U-85F, 32 MB SDR SDRAM",
    platform=_platform,
    top=ULX3STop,
    resources=_resources,
    bitstream_ext="bit",
    program=(("openFPGALoader", ("-b", "ulx3s", "{bitstream}")),),
    install_hint="openFPGALoader: apt install openfpgaloader, or the OSS CAD Suite "
                 "(https://github.com/YosysHQ/oss-cad-suite-build)",
    # the compress target's budget (streams and parameters; compiler/compress.py TARGETS)
    weight_capacity_bytes=TARGETS["ulx3s-85f"].weight_bytes,
    weight_target="ulx3s-85f",
    # the accelerator carrying the compressed Deep-Compression SqueezeNet v1.0
    default_design="accel",
    default_model=str(DEFAULT_MODELS["ulx3s-85f"]),
    config=lambda: get_config("ulx3s-85f"),
    # the accelerator: router2 routes it in ~4 minutes where router1 had not converged after
    # 21 (16 columns); router2's timing-driven rip-up (``--tmg-ripup``) had not converged on
    # the 16 columns after 40, and on today's 4 it ends in minutes only when the placement can
    # meet the target (b89: 99.7 MHz where the same netlist without it reached 85.9, b88), else
    # it rips up for up to 1,500 iterations (b90, b91: ~800 after 30 minutes): so it is on
    # only with the seed checked on this tree at the configuration's 100 MHz (``accel_seed``,
    # below; docs/boards.md, sections 3 and 6);
    # nextpnr's static (electrostatic) placer placed b14's netlist to 63.9 MHz in 11.4
    # minutes of place and route where HeAP gave 55.9 MHz in 14.3; yosys's abc9 asserts on some
    # of its builds, the classic ABC maps it (docs/boards.md, section 6); the stream decoder's
    # bank registers and the window buffer's word registers move into the block RAMs' output
    # registers (boards/netlist.py)
    accel_build={"nextpnr_opts": "--router router2 --placer static",
                 "synth_opts": ACCEL_SYNTH[0], "script_after_synth": ACCEL_SYNTH[1],
                 "absorb_ebr_registers": True},
    # the seed this tree met the configuration's 100 MHz with, rip-up on (docs/boards.md,
    # section 6: b103); another tree (any change to the design) needs its seed found again
    accel_seed=9,
    accel_tmg_ripup=True,
)
