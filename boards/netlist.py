"""Passes over yosys's JSON netlist between synthesis and place and route.

:func:`absorb_ebr_output_registers`: an ECP5 block RAM (``DP16KD``) has a register on its read
data of its own (``REGMODE`` ``OUTREG``), whose clock-to-out is far shorter than the RAM's
(nextpnr's timing database). yosys never uses it: its ECP5 memory mapping writes ``NOREG``. A
design that reads a block RAM into a plain register (no reset, no enable, the RAM's clock) gets
that register moved into the RAM here: the RAM's ``REGMODE`` becomes ``OUTREG``, the
flip-flops go, and their output nets are driven by the RAM. The behaviour is the same cycle for
cycle: the output register samples the RAM's read latch every cycle, as the flip-flops did.
What is not carried over is the flip-flops' global reset (GSR, which the ULX3S holds while its
PLL locks): the RAM's register takes whatever the RAM reads meanwhile. On the ULX3S a
register with a reset looks the same after yosys as one without (the sync domain's reset
becomes GSR), so the design keeps registers whose reset matters away from a RAM's data; the
ones that sit there have no reset (``reset_less``: the stream decoder's banks, the line
buffers' words), their value before the first read is never used.

:func:`absorb_file` applies it to a file (the board build's step after yosys,
:func:`boards.common.run_build`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AbsorbReport", "absorb_ebr_output_registers", "absorb_file"]

_PORT_BITS = 18


@dataclass(frozen=True)
class AbsorbReport:
    """What :func:`absorb_ebr_output_registers` did: ``rams`` whose output register it used
    (per read port), ``flip_flops`` it removed, ``skipped`` read ports with a register
    that could not move (name, reason)."""

    rams: int
    flip_flops: int
    skipped: tuple[tuple[str, str], ...] = ()


def _param(cell, name, default=""):
    value = cell["parameters"].get(name, default)
    return value.strip() if isinstance(value, str) else value


def _is_pdp(cell) -> bool:
    """A 36-bit simple dual-port RAM (yosys's ``$__PDPW16KD_``): port A writes, port B reads
    all 36 bits (``DOA`` the upper 18, ``DOB`` the lower), on ``CLKB``."""
    width = _param(cell, "DATA_WIDTH_A", 0)
    if isinstance(width, str):      # yosys writes an integer parameter as 32 binary digits
        try:
            width = int(width, 2 if len(width) == 32 else 10)
        except ValueError:
            return False
    return width == 36


def _read_groups(cell):
    """``(outputs, clock, ports)`` per read port of ``cell``: its data output pins, its clock
    pin, the letters of the ``REGMODE``/``OCE``/``RST`` settings that govern them."""
    if _is_pdp(cell):
        outs = [f"DO{p}{i}" for p in "AB" for i in range(_PORT_BITS)]
        return [(outs, "CLKB", "AB")]
    return [([f"DO{p}{i}" for i in range(_PORT_BITS)], f"CLK{p}", p) for p in "AB"]


def _plain_ff(ff, clock_bit) -> str | None:
    """Why flip-flop ``ff`` cannot be a RAM's output register clocked by ``clock_bit``, or
    None: it must be clocked on the rising edge by the same net, always enabled, never reset
    and start at 0."""
    conn = ff["connections"]
    if conn.get("CLK") != [clock_bit] or _param(ff, "CLKMUX", "CLK") != "CLK":
        return "a different clock"
    ce = _param(ff, "CEMUX", "CE")
    if not (ce == "1" or (ce == "CE" and conn.get("CE") == ["1"])):
        return "a clock enable"
    lsr = _param(ff, "LSRMUX", "LSR")
    if not (lsr == "0" or (lsr == "LSR" and conn.get("LSR", ["0"]) == ["0"])):
        return "a reset"
    if _param(ff, "REGSET", "RESET") != "RESET":
        return "an initial value of 1"
    if "keep" in ff.get("attributes", {}):
        return "a keep attribute"
    return None


def absorb_ebr_output_registers(netlist: dict, top: str | None = None) -> AbsorbReport:
    """Move plain registers on ECP5 block RAMs' read data into the RAMs (module docstring).

    ``netlist``: yosys's JSON netlist (``write_json``) after ``synth_ecp5``, changed in place;
    ``top``: its top module (default: the module with the ``top`` attribute, else the only
    one). A read port is changed only if every data output it drives goes to exactly one
    flip-flop's data input and every such flip-flop qualifies (:func:`_plain_ff`); its RAM's
    register settings must be ``NOREG`` and its output reset tied to 0.
    """
    modules = netlist["modules"]
    if top is None:
        tops = [n for n, m in modules.items() if "top" in m.get("attributes", {})]
        if len(tops) != 1 and len(modules) == 1:
            tops = list(modules)
        if len(tops) != 1:
            raise ValueError(f"the netlist has {len(modules)} modules and no single top "
                             f"(name it: top=...)")
        top = tops[0]
    if top not in modules:
        raise ValueError(f"the netlist has no module {top!r}; it has {sorted(modules)}")
    module = modules[top]
    cells = module["cells"]
    loads = defaultdict(list)
    for name, cell in cells.items():
        dirs = cell.get("port_directions", {})
        for pin, bits in cell["connections"].items():
            if dirs.get(pin) != "output":
                for bit in bits:
                    if isinstance(bit, int):
                        loads[bit].append((name, pin))
    port_bits = {bit for port in module.get("ports", {}).values() for bit in port["bits"]
                 if isinstance(bit, int)}

    rename = {}           # flip-flop output bit -> RAM output bit
    removed = []
    rams = 0
    skipped = []
    for name, cell in list(cells.items()):
        if cell["type"] != "DP16KD":
            continue
        conn = cell["connections"]
        for outs, clock_pin, letters in _read_groups(cell):
            used = [(pin, conn[pin][0]) for pin in outs
                    if pin in conn and isinstance(conn[pin][0], int) and loads[conn[pin][0]]]
            if not used:
                continue
            targets, why = [], None
            for pin, bit in used:
                users = loads[bit]
                ff = cells[users[0][0]] if len(users) == 1 else None
                if ff is None or ff["type"] != "TRELLIS_FF" or users[0][1] != "DI":
                    why = f"{pin} drives {len(users)} input(s), not one flip-flop"
                    break
                if bit in port_bits:
                    why = f"{pin} is a port of the module"
                    break
                why = _plain_ff(ff, conn.get(clock_pin, [None])[0])
                if why is not None:
                    why = f"the flip-flop on {pin} has {why}"
                    break
                targets.append((bit, users[0][0], ff["connections"]["Q"][0]))
            if why is None:
                for x in letters:
                    if _param(cell, f"REGMODE_{x}", "NOREG") != "NOREG":
                        why = f"REGMODE_{x} is already {_param(cell, f'REGMODE_{x}')}"
                    elif conn.get(f"RST{x}", ["0"]) != ["0"]:
                        why = f"RST{x} is connected"
            if why is not None:
                skipped.append((name, why))
                continue
            for x in letters:
                cell["parameters"][f"REGMODE_{x}"] = "OUTREG"
                conn[f"OCE{x}"] = ["1"]
            for bit, ff_name, q in targets:
                rename[q] = bit
                removed.append(ff_name)
            rams += 1
    for ff_name in removed:
        del cells[ff_name]
    if rename:
        def sub(bits):
            return [rename.get(b, b) if isinstance(b, int) else b for b in bits]
        for cell in cells.values():
            cell["connections"] = {p: sub(b) for p, b in cell["connections"].items()}
        for port in module.get("ports", {}).values():
            port["bits"] = sub(port["bits"])
        for net in module.get("netnames", {}).values():
            net["bits"] = sub(net["bits"])
    return AbsorbReport(rams=rams, flip_flops=len(removed), skipped=tuple(skipped))


def absorb_file(path) -> AbsorbReport:
    """:func:`absorb_ebr_output_registers` on the JSON netlist at ``path``, rewritten in
    place."""
    path = Path(path)
    netlist = json.loads(path.read_text())
    report = absorb_ebr_output_registers(netlist)
    path.write_text(json.dumps(netlist))
    return report
