"""``python -m boards``: build a board's bitstream, load it, talk to the bring-up design.

    python -m boards build ulx3s-85f [--model M.onnx] [--json report.json] [--build-dir DIR]
                                     [--clock-mhz F] [--seed N] [--[no-]tmg-ripup]
                                     [--program]
    python -m boards build icebreaker [--design accel|memtest] [--model M.onnx] ...
    python -m boards memtest --port /dev/ttyUSB0 [--words N]

``build`` exits with 1 when a tool fails, the design does not fit or it misses timing (the
JSON report is written in every case), with 2 when the model or the clock cannot be used, with 3
when ``--program`` finds no programming tool. ``--design`` chooses what goes on the board: the
accelerator (``accel``, the default: :mod:`boards.accel`, carrying ``--model`` or the board's
default model, compiled for the board's configuration) or the bring-up memory test
(``memtest``). With ``--model`` the build first checks that the model's weight image fits the
block RAM the board gives the weights (compressed for the ULX3S, dense int8 elsewhere) and
refuses it before synthesis, naming the bytes needed and available. ``--clock-mhz`` builds the
same design for another system clock (the timing target; PLL, UART divisor and SDRAM timings
are derived from it). ``--seed`` and ``--tmg-ripup`` choose nextpnr's seed and router2's
timing-driven rip-up; at the configuration's own clock the accelerator gets the board's checked
pair (``Board.accel_seed``, ``Board.accel_tmg_ripup``: on the ULX3S the seed its tree was seen
to meet 100 MHz with).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from . import BOARDS, get_board
from .common import BuildError, MemTestClient, pattern_words, run_build


def weight_image_check(board, config, model) -> dict:
    """How many block-RAM bytes ``model``'s weight image needs on ``board`` and whether they fit:
    ``{"model", "weight_bytes", "weight_capacity", "weight_format", "fits_weights"}``."""
    from compiler.ir import IRError

    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model file {str(model)!r} does not exist")
    need, fmt = None, f"dense, {config.weight_bits}-bit weights of configuration {config.name!r}"
    if board.weight_target:
        from compiler.compress import load_target_model
        try:
            _, rep = load_target_model(model, board.weight_target)
            need, fmt = rep["weight_bytes"], f"compressed ({board.weight_target})"
        except (ValueError, IRError):
            need = None          # not a shared-weight model: it can only go dense
    if need is None:
        from compiler import wimage
        from compiler.api import load_model

        qm = load_model(model, config=config)
        img = wimage.build_image(config, qm)
        need = img.weight_bytes + img.param_bytes
    return {"model": str(model), "weight_bytes": int(need),
            "weight_capacity": board.weight_capacity_bytes, "weight_format": fmt,
            "fits_weights": need <= board.weight_capacity_bytes}


def _accel_top(board, args, config):
    """The board's top level with the accelerator of ``config`` carrying ``--model`` (or the
    board's default model); None (after an error message) when the model cannot be used."""
    from compiler.ir import IRError

    from .accel import classifier_factory, compile_model

    if args.model is None and board.default_model is None:
        print(f"error: {board.name} carries no default model; give --model", file=sys.stderr)
        return None
    model = args.model or board.default_model
    if not Path(model).is_file():
        print(f"error: model file {str(model)!r} does not exist", file=sys.stderr)
        return None
    try:
        qm, image, sched = compile_model(model, config)
    except (IRError, ValueError) as exc:
        print(f"error: {Path(model).name} does not compile for configuration "
              f"{config.name!r}: {exc}", file=sys.stderr)
        return None
    top = board.top(classifier_factory(qm, image, sched), config=config)
    if image.streams is not None:
        st = image.streams
        weight_bytes = (st.stream_bytes + -(-len(st.codebook) * config.weight_bits // 8)
                        + image.param_bytes)
        form = (f"compressed: {st.stream_bytes:,} bytes of streams in {len(st.words)} columns "
                f"(at most {max(len(w) for w in st.words):,} of {config.wstream_depth:,} words "
                f"each), {len(st.codebook)} codebook entries")
    else:
        weight_bytes = image.weight_bytes + image.param_bytes
        form = f"{len(image.weight_rows)} weight rows"
    print(f"model: {Path(model).name}, input {tuple(int(v) for v in qm.input_shape)}, "
          f"{len(sched.entries)} steps, weights {weight_bytes:,} bytes ({form}), feature maps "
          f"{sched.fmap_bytes:,} bytes")
    return top, {"model": str(model), "weight_bytes": int(weight_bytes)}


def _build_opts(board, design: str) -> dict:
    """The tool options of ``run_build`` for ``design`` on ``board``: its ``synth_opts``, and
    for the accelerator its ``accel_build`` added."""
    opts = {"synth_opts": board.synth_opts}
    if design == "accel":
        for key, value in board.accel_build.items():
            opts[key] = f"{opts.get(key, '')} {value}".strip() if isinstance(value, str) \
                else value
    return opts


def _build(args) -> int:
    board = get_board(args.board)
    build_dir = Path(args.build_dir or f"build/{board.name}")
    design = args.design or board.default_design
    if board.config is None and (design == "accel" or args.clock_mhz):
        print(f"error: {board.name} has no accelerator design yet; use --design memtest",
              file=sys.stderr)
        return 2
    config = board.config() if board.config is not None else None
    if args.clock_mhz:
        # the same design at another system clock (PLL, UART divisor, SDRAM timings follow)
        config = dataclasses.replace(config, clk_hz=round(args.clock_mhz * 1e6))
    if args.model and board.weight_capacity_bytes:
        # the weight image must fit the block RAM the board gives it: refused before any tool
        try:
            check = weight_image_check(board, config, args.model)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"error: {Path(args.model).name} does not compile for configuration "
                  f"{config.name!r}: {exc}", file=sys.stderr)
            return 2
        if not check["fits_weights"]:
            print(f"REFUSED before synthesis: {Path(args.model).name} needs "
                  f"{check['weight_bytes']:,} bytes of block RAM for its weights "
                  f"({check['weight_format']}); the {board.description} has "
                  f"{check['weight_capacity']:,} for them", file=sys.stderr)
            if args.json:
                Path(args.json).write_text(json.dumps({
                    "board": board.name, "fits": False, "timing_met": False, **check,
                    "error": "weight image does not fit the block RAM"}, indent=2) + "\n")
            return 1
        print(f"weights: {check['weight_bytes']:,} of {check['weight_capacity']:,} bytes "
              f"({check['weight_format']})"
              + ("; note: the memory test does not carry the model" if design == "memtest"
                 else ""))
    carried = {}
    try:
        if design == "accel":
            made = _accel_top(board, args, config)
            if made is None:
                return 2
            top, carried = made
        else:
            top = board.top() if config is None else board.top(config=config)
    except ValueError as exc:     # a clock the PLL, the UART or the SDRAM cannot have
        print(f"error: {board.name} at {config.clk_hz / 1e6:g} MHz: {exc}", file=sys.stderr)
        return 2
    config = top.config
    print(f"Building {board.description}: {type(top.design).__name__} at "
          f"{config.clk_hz / 1e6:g} MHz (configuration {config.name!r}) in {build_dir}")
    opts = _build_opts(board, design)
    # the board's checked seed and rip-up hold for the accelerator at its own clock only
    own = design == "accel" and not args.clock_mhz
    seed = args.seed if args.seed is not None else (board.accel_seed if own else None)
    ripup = args.tmg_ripup if args.tmg_ripup is not None else (board.accel_tmg_ripup and own)
    if seed is not None:
        opts["nextpnr_opts"] = f"{opts.get('nextpnr_opts', '')} --seed {seed}".strip()
        carried["seed"] = seed
    if ripup:
        opts["nextpnr_opts"] = f"{opts.get('nextpnr_opts', '')} --tmg-ripup".strip()
        carried["tmg_ripup"] = True
    try:
        report = run_build(board.platform(), top, name="top", build_dir=build_dir,
                           board=board.name, target_hz=config.clk_hz,
                           resources=board.resources, bitstream_ext=board.bitstream_ext,
                           **opts)
    except BuildError as exc:
        print(f"BUILD FAILED: {exc}", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "board": board.name, "fits": False, "timing_met": False, "error": str(exc),
            }, indent=2) + "\n")
        return 1
    report = dataclasses.replace(report, **carried)
    if args.json:
        Path(args.json).write_text(report.to_json())
    print(f"fits: {report.fits}   timing met: {report.timing_met}   fmax: {report.fmax_mhz} "
          f"MHz (target {report.target_mhz} MHz)")
    print(f"LUTs: {report.luts}   FFs: {report.ffs}   MULT18: {report.mult18}   "
          f"EBR: {report.ebr}   build: {report.build_s} s {report.steps}")
    print(f"bitstream: {report.bitstream}")
    if report.critical_path:
        start, end = report.critical_path[0], report.critical_path[-1]
        total = sum(seg["delay_ns"] for seg in report.critical_path)
        routing = sum(seg["delay_ns"] for seg in report.critical_path
                      if seg["type"] == "routing")
        print(f"critical path: {total:.2f} ns ({routing:.2f} ns routing), {start['cell']} -> "
              f"{end['cell']}.{end['port']}")
    if report.slow_paths:
        print("slowest paths by the net that ends them (the JSON's slow_paths):")
        for row in report.slow_paths[:5]:
            print(f"  {row['delay_ns']:5.2f} ns  {row['net']} -> {row['endpoint']} "
                  f"({row['endpoints']} endpoints)")
    if not report.fits:
        print("FAILED: the design does not fit the device", file=sys.stderr)
        return 1
    if not report.timing_met:
        failing = {k: v for k, v in report.clocks.items()
                   if v["achieved_mhz"] < v["constraint_mhz"]}
        print(f"FAILED: timing not met: {failing}", file=sys.stderr)
        return 1
    if args.program:
        command = board.program_command(report.bitstream)
        if command is None:
            print(f"No programming tool found for {board.name}. Install {board.install_hint}",
                  file=sys.stderr)
            return 3
        print("$ " + " ".join(command))
        return subprocess.run(command, check=False).returncode
    return 0


def _memtest(args) -> int:
    import serial

    with serial.Serial(args.port, args.baud, timeout=args.timeout) as port:
        port.reset_input_buffer()
        client = MemTestClient(port)
        info = client.info()
        print(f"board: {info}")
        if not info["mem_ready"]:
            print("memory not ready (SDRAM not initialised)", file=sys.stderr)
            return 1
        n = min(args.words, 1 << info["addr_bits"])
        result = client.self_test(0, n)
        print(f"self test over {n} words: {result}")
        words = pattern_words(min(n, 64), info["data_bytes"])
        got = client.read(0, len(words))
        print(f"read back over the UART: {'OK' if got == words else 'MISMATCH'}")
        return 0 if result["errors"] == 0 and got == words else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boards", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="synthesise, place and route, pack (and program)")
    build.add_argument("board", choices=sorted(BOARDS))
    build.add_argument("--json", help="write the build report (JSON) here")
    build.add_argument("--design", choices=("accel", "memtest"),
                       help="the accelerator or the bring-up memory test (default: the board's, "
                       "accel on the iCEBreaker, memtest on the ULX3S)")
    build.add_argument("--model", help="ONNX model the accelerator carries; with the memory "
                       "test, a model whose weight image must fit the board's block RAM "
                       "(checked before synthesis)")
    build.add_argument("--build-dir", help="build folder (default build/BOARD)")
    build.add_argument("--clock-mhz", type=float, default=None,
                       help="system clock in MHz instead of the configuration's (the timing "
                            "target; the PLL, UART divisor and SDRAM timings follow)")
    build.add_argument("--seed", type=int, default=None,
                       help="nextpnr's seed for placement and routing (default: the board's "
                            "checked seed at its own clock, else nextpnr's own); a build is "
                            "reproducible for a given tree, clock and seed")
    build.add_argument("--tmg-ripup", action=argparse.BooleanOptionalAction, default=None,
                       help="nextpnr's timing-driven rip-up (router2; default: on for the "
                            "ULX3S's accelerator at its own clock): it ends soon when the "
                            "placement can meet the clock and may then gain several MHz; when "
                            "it cannot, the router tries for up to 1,500 iterations (most of "
                            "an hour on the ULX3S)")
    build.add_argument("--program", action="store_true",
                       help="load the bitstream with openFPGALoader (or iceprog)")
    memtest = sub.add_parser("memtest", help="run the bring-up memory test on a board")
    memtest.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    memtest.add_argument("--baud", type=int, default=3_000_000)
    memtest.add_argument("--words", type=int, default=1 << 24)
    memtest.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "build":
        return _build(args)
    return _memtest(args)


if __name__ == "__main__":
    sys.exit(main())
