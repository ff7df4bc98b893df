"""A simulated board: the Verilated classifier with its UART on a local TCP socket.

``host classify IMG --port sim`` uses :class:`SimBoard`: it compiles the model (cached), builds
the Verilator model of ``sim.design.SimBoardDesign`` (``hw.soc.Classifier``: UART host link +
accelerator, with the configuration's feature-map memory model; cached per configuration and
model) with the harness ``sim/harness/board.cpp``, loads the weight image and the schedule and
serves the UART lines on ``127.0.0.1``. :attr:`SimBoard.url` is a pyserial URL
(``socket://127.0.0.1:PORT``), so the host's serial transport talks to it exactly as to a
board; the bytes cross the design's UART bit by bit at the configuration's divisor.

    with SimBoard() as board:             # the bundled SqueezeNet v1.1, configuration default
        port = serial.serial_for_url(board.url, baudrate=3_000_000, timeout=1)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

from hw.config import get_config

__all__ = ["SimBoard", "SimBoardError", "build_board"]

ROOT = Path(__file__).resolve().parent.parent
HARNESS_CPP = Path(__file__).resolve().parent / "harness" / "board.cpp"
TOP = "board_top"
_MAGIC, _VERSION = 0x44524F42, 1


class SimBoardError(RuntimeError):
    """The simulated board could not be started."""


def build_board(cfg, comp, *, divisor: int | None = None, progress: bool = False):
    """``(exe, divisor)``: the compiled board harness for ``comp`` (a ``sim.run.Compiled``)."""
    from hw.soc import device_info
    from sim.design import SimBoardDesign
    from sim.verilate import build_cpp_harness, cached_verilog

    qm = comp.qmodel
    info = device_info(cfg, qm)
    shape = tuple(int(v) for v in qm.input_shape)
    n_scores = int(np.prod(qm.shapes()[qm.layers[-1].name]))

    from hw.uart import resolve_divisor

    div = resolve_divisor(divisor, None if divisor else cfg)

    def factory():
        return SimBoardDesign(cfg, info=info, image_shape=shape, n_scores=n_scores,
                              divisor=div)

    if progress:
        print(f"preparing the simulated board ({cfg.name}, {Path(qm.name).name}; first time: "
              f"several minutes) ...", file=sys.stderr, flush=True)
    vpath = cached_verilog(factory, TOP, [repr(cfg), info.hex(), repr(shape), str(n_scores),
                                          str(div)],
                           sources=[ROOT / "sim" / "design.py", ROOT / "host" / "protocol.py"])
    exe = build_cpp_harness([vpath], TOP, [HARNESS_CPP], opt_fast="-O2")
    return exe, div


class SimBoard:
    """A running simulated board (module docstring). ``config``: configuration name;
    ``model``: ONNX file (default: the configuration's default model); ``divisor``: UART clock
    divisor (default: the configuration's baud rate); ``startup_timeout``: seconds to wait for
    the harness to listen (after the build)."""

    def __init__(self, config: str = "default", model=None, *, divisor: int | None = None,
                 progress: bool = False, startup_timeout: float = 120.0):
        from compiler.api import default_model
        from sim.run import compile_model, load_rows

        self.config = get_config(config)
        self.model = Path(default_model(self.config) if model is None else model)
        self._comp = compile_model(self.model, self.config, progress=progress)
        self._exe, self.divisor = build_board(self.config, self._comp, divisor=divisor,
                                              progress=progress)
        loads = load_rows(self.config, self._comp)
        self._tmp = tempfile.TemporaryDirectory(prefix="sim-board-")
        job = Path(self._tmp.name) / "job.bin"
        header = np.array([_MAGIC, _VERSION, loads.shape[0], loads.shape[1], self.divisor, 0],
                          dtype=np.uint32)
        job.write_bytes(header.tobytes() + loads.tobytes())
        self._proc = subprocess.Popen([str(self._exe), str(job)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.port = self._wait_listening(startup_timeout)
        self.url = f"socket://127.0.0.1:{self.port}"
        self.summary = ""

    @property
    def compiled(self):
        """The compiled model the board carries (``sim.run.Compiled``)."""
        return self._comp

    def _wait_listening(self, timeout: float) -> int:
        line: list[str] = []

        def read():
            line.append(self._proc.stdout.readline())

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout)
        text = line[0] if line else ""
        if not text.startswith("listening "):
            self._proc.kill()
            err = self._proc.stderr.read() if self._proc.poll() is not None else ""
            self._tmp.cleanup()
            raise SimBoardError(f"the simulated board did not start within {timeout:g} s "
                                f"({text.strip() or 'no output'}; {err.strip()})")
        return int(text.split()[1])

    def close(self, timeout: float = 10.0):
        """Stop the board (it also stops by itself when its client disconnects)."""
        if self._proc.poll() is None:
            try:
                out, _ = self._proc.communicate(timeout=timeout)
                self.summary = out.strip()
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.communicate()
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._proc.poll() is None:
            # unblock a harness still waiting for its client
            import socket
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                pass
        self.close()
        return False
