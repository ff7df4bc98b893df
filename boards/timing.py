"""``python -m boards.timing [COMPONENT ...] [--config NAME] [--json OUT]``: the ECP5 fmax of one
gateware component at a time.

A whole-accelerator place and route on the LFE5U-85F takes tens of minutes and names one
critical path; this places and routes each component on its own (a few minutes each) so the
paths that keep the design from ``config.clk_hz`` are found one component at a time. Every input
port of the component is driven from a shift register fed by one pin and every output is
registered and folded into one pin, so nothing is optimised away and the I/O pins add no paths
of their own. Prints, per component, fmax against the configuration's clock, LUT4s, flip-flops,
EBR and multipliers, and where the critical path starts and ends (nextpnr's report, with the
source lines it passes through).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
from pathlib import Path

from amaranth import Cat, ClockDomain, Elaboratable, Module, Signal, Value
from amaranth.lib import io, wiring

from hw.config import get_config

from .common import BuildError

__all__ = ["COMPONENTS", "make_component", "Harness", "component_timing", "main"]


#: name -> (module, class, what it is); the engine gets a 64-row weight memory; the ones below
#: the engine are built by :func:`make_component` from the configuration
COMPONENTS = {
    "sequencer": ("hw.engine", "Sequencer", "pixel cursors, pass loop, flow control"),
    "drain": ("hw.requant", "ResultDrain", "result banks to requantiser lanes"),
    "requantizer": ("hw.requant", "Requantizer", "multiply, round, shift, clamp"),
    "array": ("hw.pe", "ColumnArray", "the multipliers, adder trees, accumulators"),
    "maxpool": ("hw.pool", "MaxPool", "max pool 3x3/2"),
    "gsum": ("hw.pool", "GlobalSum", "global sum"),
    "engine": ("hw.engine", "Engine", "the whole engine (slow: ~30 min)"),
    "weights": ("hw.wdecode", "StreamWeightReader", "stream decoder and lane tables (streams)"),
    "decoder": ("hw.wdecode", "ColumnStreamDecoder", "one column of the stream decoder"),
    "reader": ("hw.top", "FmapReader", "feature-map reads into the engine's input"),
    "writer": ("hw.top", "FmapWriter", "the engine's results out to the feature-map port"),
    "link": ("hw.link", "SerialBridge", "UART, frame decoder and encoder, request bridge"),
    "sdram": ("hw.sdram", "SDRAMController", "the ULX3S's SDRAM controller"),
}


def make_component(name: str, cfg):
    """Component ``name`` of :data:`COMPONENTS` for configuration ``cfg``."""
    module, cls, _ = COMPONENTS[name]
    kind = getattr(importlib.import_module(module), cls)
    if name == "engine":
        return kind(cfg, weight_depth=64, param_depth=16)
    if name == "link":
        from host.protocol import InfoReply, Layout
        from hw.soc import PREPROCESS_MEANS
        shape, classes = (3, 227, 227), 1000
        info = InfoReply(config_name=cfg.name, model_hash=bytes(32), clk_hz=cfg.clk_hz,
                         uart_baud=cfg.uart_baud, input_shape=shape, num_classes=classes,
                         layout=Layout.HWC).payload()
        return kind(config=cfg, image_shape=shape, n_scores=classes, info=info,
                    pixel_width=cfg.input_bits, means=PREPROCESS_MEANS, layout=Layout.HWC,
                    pipelined=cfg.fast_pipeline)
    if name == "decoder":
        # a whole column memory (the ULX3S: 5 banks of eight 2048 x 9 block RAMs each)
        return kind(columns=1, lanes=cfg.pe_lanes, word_bits=cfg.wstream_word_bits,
                    kmax=cfg.wstream_kmax, depth=cfg.wstream_depth, contexts=2,
                    max_rows=cfg.weight_depth, bank_depth=cfg.wstream_bank_depth or None)
    if name == "sdram":
        from hw.sdram import SDRAMParams

        from .ulx3s import PHY_READ_DELAY
        return kind(SDRAMParams.ulx3s(cfg.clk_hz), phy_read_delay=PHY_READ_DELAY)
    return kind(cfg)


class Harness(Elaboratable):
    """``component`` between a serial input chain and a folded, registered output pin."""

    def __init__(self, component: wiring.Component, clk_hz: float):
        self.component = component
        self.clk_hz = clk_hz

    def elaborate(self, platform):
        m = Module()
        m.submodules.clk = clk = io.Buffer("i", platform.request("clk25", dir="-"))
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += sync.clk.eq(clk.i)
        m.submodules.dut = dut = self.component
        ins, outs = [], []
        for _, member, value in dut.signature.flatten(dut):
            (ins if member.flow == wiring.In else outs).append(Value.cast(value))
        m.submodules.pin_i = pin_i = io.Buffer("i", platform.request("button_fire", 0, dir="-"))
        m.submodules.pin_o = pin_o = io.Buffer("o", platform.request("led", 0, dir="-"))
        chain = Signal(max(1, sum(len(v) for v in ins)))
        m.d.sync += chain.eq(Cat(pin_i.i, chain[:-1]))
        pos = 0
        for v in ins:
            m.d.comb += v.eq(chain[pos:pos + len(v)])
            pos += len(v)
        out = Cat(*outs)
        held = Signal(len(out))
        fold = Signal()
        m.d.sync += [held.eq(out), fold.eq(held.xor())]
        m.d.comb += pin_o.o.eq(fold)
        return m


def _critical_path(tim: Path) -> dict:
    """Start, end and the source lines (``hw/...py:N``) of the clock's critical path in
    nextpnr's log (its last report for the clock, after routing)."""
    text = tim.read_text(errors="replace")
    # the clock's own report (posedge -> posedge), not the cross-domain ones to and from the
    # harness's pins (unconstrained) that follow it
    reports = re.split(r"Critical path report for ", text)[1:]
    clock = [r for r in reports if r.startswith("clock ")]
    if not clock:
        return {}
    body = re.split(r"\n\n|Max frequency", clock[-1])[0]
    cells = re.findall(r"(?:Source|Sink) (\S+)", body)
    lines = []
    for src in re.findall(r"(hw/\w+\.py:\d+)", body):
        if src not in lines:
            lines.append(src)
    return {"from": cells[0] if cells else None, "to": cells[-1] if cells else None,
            "source_lines": lines}


def component_timing(name: str, cfg, build_dir: Path, progress=print) -> dict:
    """Place and route component ``name`` alone; its figures (see the module docstring)."""
    from .common import run_build
    from .ulx3s import BOARD, _platform, _resources

    # the accelerator's own flow (the classic ABC, router2): its components are what it builds
    rep = run_build(_platform(), Harness(make_component(name, cfg), cfg.clk_hz), name="top",
                    build_dir=build_dir, board="ulx3s-85f", target_hz=25e6,
                    resources=_resources, bitstream_ext="bit", progress=progress,
                    **BOARD.accel_build)
    target = cfg.clk_hz / 1e6
    return {"component": name, "config": cfg.name, "fmax_mhz": rep.fmax_mhz,
            "target_mhz": target, "meets": rep.fmax_mhz is not None and rep.fmax_mhz >= target,
            "luts": rep.luts, "ffs": rep.ffs, "ebr": rep.ebr, "mult18": rep.mult18,
            "build_s": rep.build_s,
            "critical_path": _critical_path(Path(build_dir) / "top.tim")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m boards.timing", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("components", nargs="*", metavar="COMPONENT",
                    help=f"any of {', '.join(COMPONENTS)} (default: all but engine)")
    ap.add_argument("--config", default="ulx3s-85f")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--build-dir", type=Path, help="keep the build files here")
    args = ap.parse_args(argv)
    names = args.components or [n for n in COMPONENTS if n != "engine"]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        ap.error(f"unknown component(s) {', '.join(unknown)}; expected any of "
                 f"{', '.join(COMPONENTS)}")
    cfg = get_config(args.config)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = args.build_dir or Path(tmp)
        for name in names:
            try:
                r = component_timing(name, cfg, root / name, progress=lambda s: None)
            except BuildError as e:
                print(f"{name:12s} build failed: {str(e).splitlines()[0]}")
                results.append({"component": name, "config": cfg.name, "error": str(e),
                                "meets": False})
                continue
            results.append(r)
            cp = r["critical_path"]
            print(f"{name:12s} fmax {r['fmax_mhz']:7.2f} MHz / {r['target_mhz']:g} "
                  f"{'ok  ' if r['meets'] else 'FAIL'}  LUT4 {r['luts']}  FF {r['ffs']}  "
                  f"EBR {r['ebr']}  MULT18 {r['mult18']}  ({r['build_s']:.0f} s)")
            if cp.get("source_lines"):
                print(f"{'':12s} critical path through {' '.join(cp['source_lines'])}")
            sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if all(r["meets"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
