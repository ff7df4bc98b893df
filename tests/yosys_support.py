"""A small design synthesised by yosys for the ECP5, for the tests that check which flip-flops
yosys keeps apart (the copies it would otherwise merge: hw/fanout.py, the line buffers' lane
selects, the decoder's running flags)."""

from __future__ import annotations

import json
import os
import subprocess

from amaranth.back import rtlil

from sim import toolchain


def synth_ecp5(dut, tmp_path, then: str, *, run: str | None = ":map_luts",
               platform=None) -> None:
    """``dut`` (as module ``top``, elaborated for ``platform``) through ``synth_ecp5`` in
    ``tmp_path`` (up to ``run``, the LUT mapping by default: the flip-flops are mapped, and
    merged, by then; None: all of it), then the yosys commands ``then``."""
    toolchain.yowasp_env()
    (tmp_path / "t.il").write_text(rtlil.convert(dut, name="top", platform=platform))
    steps = f" -run {run}" if run else ""
    script = f"read_rtlil t.il; synth_ecp5 -top top{steps}; {then}"
    result = subprocess.run([os.environ["YOSYS"], "-q", "-p", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr


def flip_flops(dut, tmp_path, *, run: str | None = ":map_luts") -> int:
    """The ``TRELLIS_FF`` cells of ``dut`` after :func:`synth_ecp5`."""
    synth_ecp5(dut, tmp_path, "tee -q -o stat.json stat -json", run=run)
    stat = json.loads((tmp_path / "stat.json").read_text())
    return stat["design"]["num_cells_by_type"]["TRELLIS_FF"]
