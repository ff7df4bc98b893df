"""``python -m boards``: build a board's bitstream, load it, talk to the bring-up design.

    python -m boards build ulx3s-85f [--json report.json] [--build-dir DIR] [--program]
    python -m boards build icebreaker
    python -m boards memtest --port /dev/ttyUSB0 [--words N]

``build`` exits with 1 when a tool fails, the design does not fit or it misses timing (the
JSON report is written in every case), with 3 when ``--program`` finds no programming tool.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from . import BOARDS, get_board
from .common import BuildError, MemTestClient, pattern_words, run_build


def _build(args) -> int:
    board = get_board(args.board)
    build_dir = Path(args.build_dir or f"build/{board.name}")
    top = board.top()
    config = top.config
    print(f"Building {board.description}: {type(top.design).__name__} at "
          f"{config.clk_hz / 1e6:g} MHz (configuration {config.name!r}) in {build_dir}")
    try:
        report = run_build(board.platform(), top, name="top", build_dir=build_dir,
                           board=board.name, target_hz=config.clk_hz,
                           resources=board.resources, bitstream_ext=board.bitstream_ext)
    except BuildError as exc:
        print(f"BUILD FAILED: {exc}", file=sys.stderr)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "board": board.name, "fits": False, "timing_met": False, "error": str(exc),
            }, indent=2) + "\n")
        return 1
    if args.json:
        Path(args.json).write_text(report.to_json())
    print(f"fits: {report.fits}   timing met: {report.timing_met}   fmax: {report.fmax_mhz} "
          f"MHz (target {report.target_mhz} MHz)")
    print(f"LUTs: {report.luts}   FFs: {report.ffs}   MULT18: {report.mult18}   "
          f"EBR: {report.ebr}   build: {report.build_s} s {report.steps}")
    print(f"bitstream: {report.bitstream}")
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
    build.add_argument("--build-dir", help="build folder (default build/BOARD)")
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
