"""``boards.netlist``: registers on ECP5 block RAMs' read data move into the RAMs' output
registers, and only plain ones do."""

import copy
import json
import os
import subprocess

import pytest
from amaranth import Module, Signal
from amaranth.back import rtlil
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from boards.netlist import absorb_ebr_output_registers
from boards.ulx3s import ACCEL_SYNTH
from sim import toolchain

W = 72


class Banks(wiring.Component):
    """Three 512 x 72 memories (two ECP5 block RAMs each) read into registers: ``plain`` (no
    collision check, a register without reset: it moves), ``reset`` (the same with a reset:
    it stays) and ``checked`` (a register without reset after a memory whose collisions yosys
    resolves with logic behind the RAM: it stays)."""

    def __init__(self):
        super().__init__({"addr": In(9), "en": In(1), "w_en": In(3), "w_addr": In(9),
                          "w_data": In(W), "o": Out(W).array(3)})

    def elaborate(self, platform):
        m = Module()
        for k, (name, attrs, reset_less) in enumerate((
                ("plain", {"no_rw_check": 1}, True), ("reset", {"no_rw_check": 1}, False),
                ("checked", {}, True))):
            mem = Memory(shape=W, depth=512, init=[i * 7919 + k for i in range(512)],
                         attrs=attrs)
            m.submodules[name] = mem
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.en.eq(self.w_en[k]), wp.addr.eq(self.w_addr),
                         wp.data.eq(self.w_data), rp.addr.eq(self.addr), rp.en.eq(self.en)]
            q = Signal(W, name=f"q_{name}", reset_less=reset_less)
            m.d.sync += q.eq(rp.data)
            m.d.comb += self.o[k].eq(q)
        return m


@pytest.fixture(scope="module")
def synthesised(tmp_path_factory):
    """yosys's netlist of :class:`Banks` through the ULX3S accelerator's synthesis script."""
    toolchain.yowasp_env()
    path = tmp_path_factory.mktemp("netlist")
    dut = Banks()
    (path / "top.il").write_text(rtlil.convert(dut, name="top"))
    script = (f"read_rtlil top.il\nsynth_ecp5 {ACCEL_SYNTH[0]} -top top\n{ACCEL_SYNTH[1]}\n"
              f"write_json top.json\n")
    (path / "top.ys").write_text(script)
    result = subprocess.run([os.environ["YOSYS"], "-q", "-s", "top.ys"], cwd=path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads((path / "top.json").read_text())


def _top(netlist):
    return netlist["modules"]["top"]


def _drivers(module):
    out = {}
    for name, cell in module["cells"].items():
        for pin, bits in cell["connections"].items():
            if cell["port_directions"][pin] == "output":
                for b in bits:
                    out[b] = (name, cell["type"], pin)
    return out


def _port_drivers(module, k):
    """The cell types driving the bits of output ``o[k]``."""
    drivers = _drivers(module)
    bits = module["ports"][f"o__{k}"]["bits"] if f"o__{k}" in module["ports"] \
        else module["ports"]["o"]["bits"][k * W:(k + 1) * W]
    return {drivers[b][1] for b in bits if isinstance(b, int)}


@pytest.mark.yosys
def test_plain_registers_move_into_the_block_rams(synthesised):
    netlist = copy.deepcopy(synthesised)
    module = _top(netlist)
    before = sum(c["type"] == "TRELLIS_FF" for c in module["cells"].values())
    assert _port_drivers(module, 0) == {"TRELLIS_FF"}
    report = absorb_ebr_output_registers(netlist)
    # the plain memory's two RAMs, their 72 flip-flops
    assert (report.rams, report.flip_flops) == (2, W)
    assert sum(c["type"] == "TRELLIS_FF" for c in module["cells"].values()) == before - W
    # o[0] now comes straight from block RAMs with their output register on
    assert _port_drivers(module, 0) == {"DP16KD"}
    drivers = _drivers(module)
    rams = {drivers[b][0] for b in (module["ports"].get("o__0") or module["ports"]["o"])["bits"]
            if isinstance(b, int)}
    for name in rams:
        ram = module["cells"][name]
        assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
        assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == ["1"]
    # the others keep their registers: the reset is logic before them, and the collision
    # logic stands between the checked memory and its register
    assert _port_drivers(module, 1) == {"TRELLIS_FF"}
    assert _port_drivers(module, 2) == {"TRELLIS_FF"}
    others = [c for n, c in module["cells"].items() if c["type"] == "DP16KD" and n not in rams]
    assert len(others) == 4
    assert all(c["parameters"]["REGMODE_B"] == "NOREG" for c in others)
    assert len(report.skipped) == 4
    # a second pass finds nothing more to move
    again = absorb_ebr_output_registers(netlist)
    assert (again.rams, again.flip_flops) == (0, 0)


def _ram_ff_netlist(**ff):
    """A RAM (36-bit PDP) whose DOB0 drives a flip-flop with settings ``ff`` and whose other
    outputs are unused; the flip-flop drives the module's output."""
    params = {"CEMUX": "1 ", "CLKMUX": "CLK", "GSR": "DISABLED", "LSRMUX": "LSR",
              "REGSET": "RESET"}
    params.update(ff.pop("params", {}))
    conn = {"CLK": [2], "DI": [10], "LSR": ["0"], "Q": [11]}
    conn.update(ff.pop("conn", {}))
    ram = {"type": "DP16KD", "parameters": {"DATA_WIDTH_A": f"{36:032b}", "REGMODE_A": "NOREG",
                                            "REGMODE_B": "NOREG"},
           "port_directions": {"CLKA": "input", "CLKB": "input", "DOB0": "output",
                               "RSTA": "input", "RSTB": "input", "OCEA": "input",
                               "OCEB": "input"},
           "connections": {"CLKA": [2], "CLKB": [2], "DOB0": [10], "RSTA": ["0"],
                           "RSTB": ["0"], "OCEA": ["0"], "OCEB": ["1"]}}
    flop = {"type": "TRELLIS_FF", "parameters": params,
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input",
                                "Q": "output"},
            "connections": conn}
    cells = {"ram": ram, "ff": flop}
    cells.update(ff.pop("extra", {}))
    return {"modules": {"top": {"attributes": {"top": "1"}, "cells": cells,
                                "ports": {"clk": {"direction": "input", "bits": [2]},
                                          "q": {"direction": "output", "bits": [11]}},
                                "netnames": {"q": {"bits": [11]}, "do": {"bits": [10]}}}}}


def test_a_plain_register_moves():
    netlist = _ram_ff_netlist()
    report = absorb_ebr_output_registers(netlist)
    assert (report.rams, report.flip_flops, report.skipped) == (1, 1, ())
    module = netlist["modules"]["top"]
    assert "ff" not in module["cells"]
    assert module["ports"]["q"]["bits"] == [10]
    assert module["netnames"]["q"]["bits"] == [10]
    assert module["cells"]["ram"]["parameters"]["REGMODE_B"] == "OUTREG"


@pytest.mark.parametrize("settings,reason", [
    ({"params": {"CEMUX": "CE"}, "conn": {"CE": [5]}}, "a clock enable"),
    ({"conn": {"LSR": [5]}}, "a reset"),
    ({"params": {"REGSET": "SET"}}, "an initial value of 1"),
    ({"conn": {"CLK": [3]}}, "a different clock"),
    ({"params": {"CLKMUX": "INV"}}, "a different clock"),
    ({"extra": {"lut": {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input"},
                        "connections": {"A": [10]}}}}, "drives 2 input(s)"),
])
def test_registers_that_differ_stay(settings, reason):
    netlist = _ram_ff_netlist(**settings)
    before = copy.deepcopy(netlist)
    report = absorb_ebr_output_registers(netlist)
    assert (report.rams, report.flip_flops) == (0, 0)
    assert len(report.skipped) == 1 and reason in report.skipped[0][1], report.skipped
    assert netlist == before


def test_a_ram_with_its_output_reset_stays():
    netlist = _ram_ff_netlist()
    netlist["modules"]["top"]["cells"]["ram"]["connections"]["RSTB"] = [7]
    report = absorb_ebr_output_registers(netlist)
    assert report.rams == 0 and "RSTB is connected" in report.skipped[0][1]


def test_a_netlist_without_a_top_is_refused():
    with pytest.raises(ValueError, match="no single top"):
        absorb_ebr_output_registers({"modules": {"a": {"cells": {}}, "b": {"cells": {}}}})
    with pytest.raises(ValueError, match="no module 'x'"):
        absorb_ebr_output_registers({"modules": {"a": {"cells": {}}}}, top="x")
