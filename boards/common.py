"""What every board shares: the design interface, the bring-up design and the build runner.

**The board design interface.** A board module (``boards/ulx3s.py``, ``boards/icebreaker.py``)
supplies clocks, reset, LEDs, the UART pins and the feature-map memory (SDRAM, or block RAM on
a board without it), and puts one *design* on top of them. The design is built by a factory
``make_design(config, mem_signature) -> wiring.Component`` whose component has these members
(:func:`check_design`):

- ``rxd``: ``In(1)``, ``txd``: ``Out(1)``: the host UART lines;
- ``mem``: ``Out(mem_signature)``: master of the memory port (:mod:`hw.memport`);
- ``mem_ready``: ``In(1)``: the memory has finished its power-up (SDRAM initialised);
- ``status``: ``Out(Status)``: ``idle``, ``busy``, ``error``, shown on LEDs.

The bring-up design here is :class:`MemTest` (:func:`make_memtest`); the accelerator's top level
will be another factory with the same interface.

**The memory test protocol** (UART, bytes, integers little-endian; ``docs/boards.md``):

=========================  ==============================  ==================================
request                    reply                           what
=========================  ==============================  ==================================
``I``                      ``I`` dbytes abits maxlen(2)    port geometry, clock, status bits
                           clk_hz(4) status(1)             (bit 0 memory ready, 1 error)
``W`` addr(4) n(2) words   ``K``                           write ``n`` words (1..maxlen)
``R`` addr(4) n(2)         ``D`` words                     read ``n`` words (1..maxlen)
``T`` addr(4) n(4)         ``T`` errors(4) wcyc(4) rcyc(4) self test at full speed
anything else, bad ``n``   ``?``                           (and the error LED)
=========================  ==============================  ==================================

The self test writes :func:`pattern_words` over ``n`` words from ``addr`` in bursts of
``maxlen``, reads them back, counts mismatching words and reports the cycles each half took,
so ``n * dbytes / cycles`` is the port's measured bandwidth on the board.

**Building** (:func:`run_build`): Amaranth prepares the files, then yosys, nextpnr and the packer
(the YoWASP tools from PyPI) run one step at a time with progress lines, and the result is a
:class:`BuildReport` parsed from nextpnr's JSON report and yosys's log.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from amaranth import Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.config import AccelConfig
from hw.memport import MemPortSignature
from hw.uart import UART, RxByte, resolve_divisor

__all__ = [
    "Board", "Status", "DesignFactory", "check_design", "MemTestCore", "MemTest", "make_memtest",
    "pattern_words", "PATTERN_SEED", "MemTestClient", "BuildReport", "BuildError",
    "run_build", "parse_nextpnr_report", "parse_yosys_cells", "critical_path", "slow_paths",
]

#: The status a design shows on the board's LEDs.
Status = data.StructLayout({"idle": 1, "busy": 1, "error": 1})

#: ``make_design(config, mem_signature) -> wiring.Component`` (see the module documentation).
DesignFactory = Callable[[AccelConfig, MemPortSignature], wiring.Component]

#: The self test's first pattern word (xorshift32 state).
PATTERN_SEED = 0x2545F491


def check_design(design, mem_signature: MemPortSignature):
    """Reject a design that does not have the board design interface; name what is wrong."""
    if not isinstance(design, wiring.Component):
        raise TypeError(f"The board design must be a wiring.Component, not "
                        f"{type(design).__name__}")
    members = design.signature.members
    wanted = {
        "rxd": In(1), "txd": Out(1), "mem_ready": In(1), "status": Out(Status),
        "mem": Out(mem_signature),
    }
    for name, member in wanted.items():
        if name not in members:
            raise TypeError(f"The board design {type(design).__name__} has no member {name!r}; "
                            f"a board design needs {', '.join(wanted)}")
        got = members[name]
        if got.flow != member.flow:
            raise TypeError(f"Member {name!r} of {type(design).__name__} must be "
                            f"{member.flow.name}, not {got.flow.name}")
        if member.is_signature and got.signature.flip() != member.signature.flip():
            raise TypeError(f"Member {name!r} of {type(design).__name__} is {got.signature!r}; "
                            f"the board's memory port is {member.signature!r}")
        if member.is_port and Shape.cast(got.shape).width != Shape.cast(member.shape).width:
            raise TypeError(f"Member {name!r} of {type(design).__name__} is "
                            f"{Shape.cast(got.shape).width} bits wide, not "
                            f"{Shape.cast(member.shape).width}")


def _xorshift32(state: int) -> int:
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


def pattern_words(n: int, data_bytes: int) -> list[int]:
    """The self test's words: an xorshift32 sequence from :data:`PATTERN_SEED`, each word its
    state repeated (every second copy inverted) and cut to ``8 * data_bytes`` bits."""
    state = PATTERN_SEED
    bits = 8 * data_bytes
    out = []
    for _ in range(n):
        word = 0
        for k in range(0, bits, 32):
            part = state if (k // 32) % 2 == 0 else state ^ 0xFFFFFFFF
            word |= part << k
        out.append(word & ((1 << bits) - 1))
        state = _xorshift32(state)
    return out


def _hw_xorshift32(state):
    a = state ^ (state << 13)[:32]
    b = a ^ (a >> 17)
    return b ^ (b << 5)[:32]


def _hw_pattern(state, bits: int):
    parts = [state if (k // 32) % 2 == 0 else ~state for k in range(0, bits, 32)]
    return Cat(*parts)[:bits]


_REPLY_BYTES = 13


class MemTestCore(wiring.Component):
    """The memory test behind byte streams (the protocol of the module documentation).

    ``mem_signature``: the memory port it masters; ``clk_hz``: reported by ``I``. Ports:
    ``rx`` (received bytes, :data:`~hw.uart.RxByte`: a byte with a framing error sets
    ``status.error`` and is dropped), ``tx`` (bytes to send), ``mem``, ``mem_ready``, ``status``.
    """

    def __init__(self, mem_signature: MemPortSignature, *, clk_hz: int):
        if not isinstance(mem_signature, MemPortSignature):
            raise TypeError(f"mem_signature must be a MemPortSignature, not "
                            f"{type(mem_signature).__name__}")
        if mem_signature.addr_bits > 32:
            raise ValueError(f"The memory test addresses at most 32 bits, not "
                             f"{mem_signature.addr_bits}")
        self._mem_signature = mem_signature
        self._clk_hz = clk_hz
        super().__init__({
            "rx": In(stream.Signature(RxByte)),
            "tx": Out(stream.Signature(8)),
            "mem": Out(mem_signature),
            "mem_ready": In(1),
            "status": Out(Status),
        })

    def elaborate(self, platform):
        m = Module()
        sig = self._mem_signature
        dbytes, bits, max_len = sig.data_bytes, sig.data_bits, sig.max_len
        mem = self.mem

        opcode = Signal(8)
        args = Signal(64)
        index = Signal(range(max(_REPLY_BYTES, 8, dbytes) + 1))
        reply = Signal(8 * _REPLY_BYTES)
        reply_len = Signal(range(_REPLY_BYTES + 1))
        error = Signal()
        addr = args[:32]
        count16 = args[32:48]
        count32 = args[32:64]

        word = Signal(bits)
        left = Signal(32)         # words still to write, read or check

        # the self test's command generator and pattern
        cmd_addr = Signal(32)
        cmd_left = Signal(32)
        cmd_len = Signal(range(max_len + 1))
        lfsr = Signal(32, init=PATTERN_SEED)
        errors = Signal(32)
        cycles_w = Signal(32)
        cycles_r = Signal(32)
        if max_len & (max_len - 1) == 0:
            at_least_max = cmd_left[max_len.bit_length() - 1:] != 0
        else:
            at_least_max = cmd_left >= max_len
        m.d.comb += cmd_len.eq(Mux(at_least_max, max_len, cmd_left))
        full_mask = (1 << dbytes) - 1

        m.d.comb += [
            self.status.error.eq(error),
            mem.wdata.payload.mask.eq(full_mask),
        ]

        def send(*fields):
            # Queue a reply: (value, bytes) pairs, little-endian.
            parts, total_bytes = [], 0
            for value, nbytes in fields:
                parts.append(Const(value, 8 * nbytes) if isinstance(value, int)
                             else value[:8 * nbytes])
                total_bytes += nbytes
            m.d.sync += [reply.eq(Cat(*parts)), reply_len.eq(total_bytes), index.eq(0)]
            m.next = "SEND"

        def bad_request():
            m.d.sync += error.eq(1)
            send((ord("?"), 1))

        def valid_len(n):
            return (n != 0) & (n <= max_len)

        rx_ok = self.rx.valid & ~self.rx.payload.framing_error
        with m.If(self.rx.valid & self.rx.ready & self.rx.payload.framing_error):
            m.d.sync += error.eq(1)

        with m.FSM(name="memtest"):
            with m.State("IDLE"):
                m.d.comb += [self.rx.ready.eq(1), self.status.idle.eq(self.mem_ready)]
                with m.If(rx_ok):
                    m.d.sync += [opcode.eq(self.rx.payload.data), index.eq(0), args.eq(0)]
                    with m.Switch(self.rx.payload.data):
                        with m.Case(ord("I")):
                            send((ord("I"), 1), (dbytes, 1), (sig.addr_bits, 1), (max_len, 2),
                                 (self._clk_hz, 4), (Cat(self.mem_ready, error), 1))
                        with m.Case(ord("W"), ord("R"), ord("T")):
                            m.next = "ARGS"
                        with m.Default():
                            bad_request()
            with m.State("ARGS"):
                m.d.comb += [self.rx.ready.eq(1), self.status.busy.eq(1)]
                nargs = Mux(opcode == ord("T"), 8, 6)
                with m.If(rx_ok):
                    m.d.sync += [args.word_select(index[:3], 8).eq(self.rx.payload.data),
                                 index.eq(index + 1)]
                    with m.If(index == nargs - 1):
                        m.d.sync += index.eq(0)
                        with m.Switch(opcode):
                            with m.Case(ord("W")):
                                m.next = "W_CMD"
                            with m.Case(ord("R")):
                                m.next = "R_CMD"
                            with m.Default():
                                m.next = "T_START"
            # -- write: command, then the words as they arrive ------------------------------------
            with m.State("W_CMD"):
                m.d.comb += self.status.busy.eq(1)
                with m.If(~valid_len(count16)):
                    bad_request()
                with m.Else():
                    m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.addr.eq(addr),
                                 mem.cmd.payload.len.eq(count16), mem.cmd.payload.write.eq(1)]
                    with m.If(mem.cmd.ready):
                        m.d.sync += left.eq(count16)
                        m.next = "W_BYTES"
            with m.State("W_BYTES"):
                m.d.comb += [self.rx.ready.eq(1), self.status.busy.eq(1)]
                with m.If(rx_ok):
                    m.d.sync += [word.word_select(index, 8).eq(self.rx.payload.data),
                                 index.eq(index + 1)]
                    with m.If(index == dbytes - 1):
                        m.d.sync += index.eq(0)
                        m.next = "W_BEAT"
            with m.State("W_BEAT"):
                m.d.comb += [self.status.busy.eq(1), mem.wdata.valid.eq(1),
                             mem.wdata.payload.data.eq(word)]
                with m.If(mem.wdata.ready):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        send((ord("K"), 1))
                    with m.Else():
                        m.next = "W_BYTES"
            # -- read: command, header, then each word's bytes ------------------------------------
            with m.State("R_CMD"):
                m.d.comb += self.status.busy.eq(1)
                with m.If(~valid_len(count16)):
                    bad_request()
                with m.Else():
                    m.d.comb += [mem.cmd.valid.eq(1), mem.cmd.payload.addr.eq(addr),
                                 mem.cmd.payload.len.eq(count16), mem.cmd.payload.write.eq(0)]
                    with m.If(mem.cmd.ready):
                        m.d.sync += left.eq(count16)
                        m.next = "R_HEADER"
            with m.State("R_HEADER"):
                m.d.comb += [self.status.busy.eq(1), self.tx.valid.eq(1),
                             self.tx.payload.eq(ord("D"))]
                with m.If(self.tx.ready):
                    m.next = "R_WORD"
            with m.State("R_WORD"):
                m.d.comb += [self.status.busy.eq(1), mem.rdata.ready.eq(1)]
                with m.If(mem.rdata.valid):
                    m.d.sync += [word.eq(mem.rdata.payload.data), index.eq(0)]
                    m.next = "R_BYTES"
            with m.State("R_BYTES"):
                m.d.comb += [self.status.busy.eq(1), self.tx.valid.eq(1),
                             self.tx.payload.eq(word.word_select(index, 8))]
                with m.If(self.tx.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == dbytes - 1):
                        m.d.sync += left.eq(left - 1)
                        with m.If(left == 1):
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "R_WORD"
            # -- self test: write the pattern, read it back, count mismatches ---------------------
            with m.State("T_START"):
                m.d.comb += self.status.busy.eq(1)
                m.d.sync += [cmd_addr.eq(addr), cmd_left.eq(count32), left.eq(count32),
                             lfsr.eq(PATTERN_SEED), errors.eq(0), cycles_w.eq(0),
                             cycles_r.eq(0), error.eq(0)]
                m.next = "T_WRITE"
            for phase in ("T_WRITE", "T_READ"):
                writing = phase == "T_WRITE"
                with m.State(phase):
                    m.d.comb += self.status.busy.eq(1)
                    counter = cycles_w if writing else cycles_r
                    m.d.sync += counter.eq(counter + 1)
                    m.d.comb += [
                        mem.cmd.valid.eq(cmd_left != 0),
                        mem.cmd.payload.addr.eq(cmd_addr),
                        mem.cmd.payload.len.eq(cmd_len),
                        mem.cmd.payload.write.eq(int(writing)),
                    ]
                    with m.If(mem.cmd.valid & mem.cmd.ready):
                        m.d.sync += [cmd_addr.eq(cmd_addr + cmd_len),
                                     cmd_left.eq(cmd_left - cmd_len)]
                    pattern = _hw_pattern(lfsr, bits)
                    if writing:
                        m.d.comb += [mem.wdata.valid.eq(left != 0),
                                     mem.wdata.payload.data.eq(pattern)]
                        step = mem.wdata.valid & mem.wdata.ready
                    else:
                        m.d.comb += mem.rdata.ready.eq(left != 0)
                        step = mem.rdata.valid & mem.rdata.ready
                        with m.If(step & (mem.rdata.payload.data != pattern)):
                            m.d.sync += errors.eq(errors + 1)
                    with m.If(step):
                        m.d.sync += [lfsr.eq(_hw_xorshift32(lfsr)), left.eq(left - 1)]
                    # Both counters are registers: the phase ends one cycle after its last
                    # transfer, which the cycle count includes.
                    with m.If((cmd_left == 0) & (left == 0)):
                        if writing:
                            m.d.sync += [cmd_addr.eq(addr), cmd_left.eq(count32),
                                         left.eq(count32), lfsr.eq(PATTERN_SEED)]
                            m.next = "T_READ"
                        else:
                            m.next = "T_REPORT"
            with m.State("T_REPORT"):
                m.d.comb += self.status.busy.eq(1)
                m.d.sync += error.eq(errors != 0)
                send((ord("T"), 1), (errors, 4), (cycles_w, 4), (cycles_r, 4))
            with m.State("SEND"):
                m.d.comb += [self.status.busy.eq(1), self.tx.valid.eq(1),
                             self.tx.payload.eq(reply.word_select(index, 8))]
                with m.If(self.tx.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == reply_len - 1):
                        m.next = "IDLE"
        return m


class MemTest(wiring.Component):
    """The bring-up design: a :class:`~hw.uart.UART` and a :class:`MemTestCore`, with the board
    design interface (``rxd``, ``txd``, ``mem``, ``mem_ready``, ``status``).

    The bit period comes from ``config`` (``clk_hz / uart_baud``) or ``divisor``.
    """

    def __init__(self, config: AccelConfig, mem_signature: MemPortSignature, *,
                 divisor: int | None = None):
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        self._divisor = resolve_divisor(divisor, None if divisor is not None else config)
        self._config = config
        self._mem_signature = mem_signature
        super().__init__({
            "rxd": In(1, init=1),
            "txd": Out(1, init=1),
            "mem": Out(mem_signature),
            "mem_ready": In(1),
            "status": Out(Status),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart = uart = UART(self._divisor)
        m.submodules.core = core = MemTestCore(self._mem_signature,
                                               clk_hz=self._config.clk_hz)
        m.d.comb += [uart.rxd.eq(self.rxd), self.txd.eq(uart.txd),
                     core.mem_ready.eq(self.mem_ready)]
        wiring.connect(m, uart.rx, core.rx)
        wiring.connect(m, core.tx, uart.tx)
        wiring.connect(m, core.mem, wiring.flipped(self.mem))
        m.d.comb += self.status.eq(core.status)
        return m


def make_memtest(config: AccelConfig, mem_signature: MemPortSignature) -> MemTest:
    """The :data:`DesignFactory` of the bring-up design."""
    return MemTest(config, mem_signature)


# -- host side ------------------------------------------------------------------------------------

class MemTestClient:
    """The host end of the memory test, over any byte transport with ``write(bytes)`` and
    ``read(n) -> bytes`` (a ``serial.Serial``, or a simulated board)."""

    def __init__(self, transport):
        self._t = transport
        self.data_bytes = None
        self.max_len = None

    def _read(self, n: int) -> bytes:
        got = self._t.read(n)
        if len(got) != n:
            raise TimeoutError(f"The board sent {len(got)} of {n} expected bytes")
        return got

    def _expect(self, tag: bytes):
        got = self._read(1)
        if got != tag:
            raise RuntimeError(f"The board answered {got!r}, expected {tag!r}")

    def info(self) -> dict:
        self._t.write(b"I")
        self._expect(b"I")
        raw = self._read(9)
        self.data_bytes = raw[0]
        self.max_len = int.from_bytes(raw[2:4], "little")
        return {"data_bytes": raw[0], "addr_bits": raw[1], "max_len": self.max_len,
                "clk_hz": int.from_bytes(raw[4:8], "little"),
                "mem_ready": bool(raw[8] & 1), "error": bool(raw[8] & 2)}

    def _geometry(self):
        if self.data_bytes is None:
            self.info()

    def write(self, addr: int, words) -> None:
        self._geometry()
        words = list(words)
        for start in range(0, len(words), self.max_len):
            chunk = words[start:start + self.max_len]
            body = b"".join(w.to_bytes(self.data_bytes, "little") for w in chunk)
            self._t.write(b"W" + (addr + start).to_bytes(4, "little")
                          + len(chunk).to_bytes(2, "little") + body)
            self._expect(b"K")

    def read(self, addr: int, n: int) -> list[int]:
        self._geometry()
        out = []
        for start in range(0, n, self.max_len):
            k = min(self.max_len, n - start)
            self._t.write(b"R" + (addr + start).to_bytes(4, "little") + k.to_bytes(2, "little"))
            self._expect(b"D")
            raw = self._read(k * self.data_bytes)
            out += [int.from_bytes(raw[i:i + self.data_bytes], "little")
                    for i in range(0, len(raw), self.data_bytes)]
        return out

    def self_test(self, addr: int, n: int) -> dict:
        self._geometry()
        self._t.write(b"T" + addr.to_bytes(4, "little") + n.to_bytes(4, "little"))
        self._expect(b"T")
        raw = self._read(12)
        errors, wcyc, rcyc = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
        return {"errors": errors, "write_cycles": wcyc, "read_cycles": rcyc,
                "write_bytes_per_cycle": n * self.data_bytes / wcyc if wcyc else 0.0,
                "read_bytes_per_cycle": n * self.data_bytes / rcyc if rcyc else 0.0}


# -- building -------------------------------------------------------------------------------------

class BuildError(RuntimeError):
    """A tool of the build failed; the message has the end of its log."""


@dataclasses.dataclass
class BuildReport:
    """What a build produced (the JSON of ``python -m boards build --json``)."""

    board: str
    device: str
    fits: bool
    timing_met: bool
    fmax_mhz: float | None
    target_mhz: float
    luts: int | None
    ffs: int | None
    mult18: int | None
    ebr: int | None
    bitstream: str | None
    build_s: float
    #: block-RAM bytes of the weights the design carries (streams, codebooks and parameters
    #: when compressed; dense rows and parameters otherwise; 0 for the memory test)
    weight_bytes: int = 0
    #: the model the design carries (None: the memory test)
    model: str | None = None
    #: nextpnr's seed (``--seed``; None: nextpnr's own)
    seed: int | None = None
    #: router2's timing-driven rip-up (``--tmg-ripup``)
    tmg_ripup: bool = False
    steps: dict = dataclasses.field(default_factory=dict)
    utilization: dict = dataclasses.field(default_factory=dict)
    clocks: dict = dataclasses.field(default_factory=dict)
    #: block-RAM read ports whose output register holds a register of the design
    #: (:mod:`boards.netlist`; None: the build does not look for them)
    ebr_output_registers: int | None = None
    #: the main clock's critical path (:func:`critical_path`)
    critical_path: list = dataclasses.field(default_factory=list)
    #: the slowest paths, one per net that ends them (:func:`slow_paths`)
    slow_paths: list = dataclasses.field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"


def parse_nextpnr_report(report: dict) -> tuple[dict, dict]:
    """``(utilization, clocks)`` from nextpnr's ``--report`` JSON: ``{cell type: (used,
    available)}`` and ``{clock: (achieved MHz, constraint MHz)}``."""
    util = {name: (int(v["used"]), int(v["available"]))
            for name, v in report.get("utilization", {}).items()}
    clocks = {name: (float(v["achieved"]), float(v["constraint"]))
              for name, v in report.get("fmax", {}).items()}
    return util, clocks


def critical_path(report: dict, clock: str) -> list[dict]:
    """The critical path from ``clock`` to ``clock`` (its nextpnr name, such as
    ``$glbnet$clk``) in nextpnr's ``--report`` JSON: a list of ``{"type", "delay_ns", "cell",
    "port"}`` per segment (``clk-to-q``, ``logic``, ``routing``, ``setup``; for routing the
    sink and ``net``), empty when the report has none."""
    for entry in report.get("critical_paths", []):
        if entry.get("from") == f"posedge {clock}" and entry.get("to") == f"posedge {clock}":
            path = []
            for seg in entry.get("path", []):
                end = seg["from"] if seg.get("type") == "clk-to-q" else seg["to"]
                row = {"type": seg.get("type"), "delay_ns": round(float(seg["delay"]), 2),
                       "cell": end.get("cell"), "port": end.get("port")}
                if seg.get("net"):
                    row["net"] = seg["net"]
                path.append(row)
            return path
    return []


def slow_paths(report: dict, limit: int = 20) -> list[dict]:
    """The ``limit`` slowest paths of a build, one per net that ends them, from nextpnr's
    ``--report`` JSON written with ``--detailed-timing-report`` (empty without it). nextpnr
    lists, per net that drives timing endpoints (flip-flop and RAM inputs), each endpoint's
    arrival time: the delay of the longest path from a launching register to it. Each row:
    ``{"net", "driver", "endpoints", "delay_ns", "endpoint"}``, the net's worst endpoint and
    its arrival, longest first. The critical path names one path per clock; these name every
    slow one of a build at once (those above the clock's period are the ones that fail)."""
    rows = []
    for net in report.get("detailed_net_timings", []):
        ends = net.get("endpoints") or []
        if not ends:
            continue
        worst = max(ends, key=lambda e: float(e["delay"][-1]))
        rows.append({"net": net.get("net"), "driver": net.get("driver"),
                     "endpoints": len(ends), "delay_ns": round(float(worst["delay"][-1]), 2),
                     "endpoint": f"{worst.get('cell')}.{worst.get('port')}"})
    rows.sort(key=lambda r: -r["delay_ns"])
    return rows[:limit]


_CELLS_HEADER = re.compile(r"^\s+\d+ cells\s*$|^\s+Number of cells:?\s+\d+\s*$", re.M)
_CELL_LINE = re.compile(r"^\s+(\d+)\s+(\$?[A-Za-z_][\w$]*)\s*$"
                        r"|^\s+(\$?[A-Za-z_][\w$]*)\s+(\d+)\s*$")


def parse_yosys_cells(log: str) -> dict[str, int]:
    """Cell counts of the last statistics block of a yosys log (``stat``), by cell type.

    Both layouts are read: ``   123   SB_LUT4`` (yosys 0.4x and later) and ``   SB_LUT4   123``.
    """
    headers = list(_CELLS_HEADER.finditer(log))
    if not headers:
        return {}
    cells = {}
    for line in log[headers[-1].end():].splitlines()[1:]:
        match = _CELL_LINE.match(line)
        if match is None:
            break
        if match.group(1) is not None:
            cells[match.group(2)] = int(match.group(1))
        else:
            cells[match.group(3)] = int(match.group(4))
    return cells


_TOOL_VARS = {"yosys": "YOSYS", "nextpnr-ecp5": "NEXTPNR_ECP5", "ecppack": "ECPPACK",
              "nextpnr-ice40": "NEXTPNR_ICE40", "icepack": "ICEPACK"}
_STEP_NAMES = {"yosys": "synthesis (yosys)", "nextpnr-ecp5": "place and route (nextpnr-ecp5)",
               "nextpnr-ice40": "place and route (nextpnr-ice40)",
               "ecppack": "bitstream packing (ecppack)", "icepack": "bitstream packing (icepack)"}


def _log_tail(path: Path, lines: int = 30) -> str:
    if not path.is_file():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def run_build(platform, top, *, name: str, build_dir, board: str, target_hz: float,
              resources: Callable[[dict, dict], dict], bitstream_ext: str,
              synth_opts: str = "", nextpnr_opts: str = "", script_after_synth: str = "",
              absorb_ebr_registers: bool = False,
              progress=print) -> BuildReport:
    """Synthesise, place and route, and pack ``top`` for ``platform`` in ``build_dir``.

    Amaranth writes the files and the command list; each command then runs here, with a
    progress line per step, the YoWASP tools standing in for the native ones (through
    :func:`sim.toolchain.yowasp_env`). nextpnr runs with ``--timing-allow-fail`` so that a
    design that misses timing still gives a report (``timing_met`` false). ``resources(util,
    cells)`` maps nextpnr's utilisation and yosys's cell counts to ``luts``, ``ffs``, ``mult18``
    and ``ebr``; ``synth_opts``: extra options of yosys's ``synth_*`` command (``-dsp`` on the
    iCE40UP5K); ``script_after_synth``: yosys commands after it (with ``synth_opts`` ``-run
    :map_luts`` the ULX3S maps the LUTs with the classic ABC, :data:`boards.ulx3s.CLASSIC_ABC`);
    ``nextpnr_opts``: extra options of nextpnr (``--router router2`` for the ULX3S's
    accelerator); ``absorb_ebr_registers``: after synthesis, plain registers on ECP5 block
    RAMs' read data move into the RAMs' output registers (:mod:`boards.netlist`;
    ``steps["absorb"]``, and the ``ebr_output_registers`` of the report). Raises
    :class:`BuildError` when a tool fails (the design does not fit, ...).
    """
    from sim.toolchain import yowasp_env

    yowasp_env()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    steps = {}
    ebr_regs = None
    progress(f"[{board}] elaborating {type(top).__name__} ...")
    t0 = time.monotonic()
    extra = {k: v for k, v in (("synth_opts", synth_opts),
                               ("script_after_synth", script_after_synth)) if v}
    plan = platform.prepare(top, name=name,
                            nextpnr_opts=f"--report {name}.report.json --detailed-timing-report "
                                         f"--timing-allow-fail {nextpnr_opts}".strip(),
                            **extra)
    plan.extract(build_dir)
    steps["elaborate"] = round(time.monotonic() - t0, 1)
    commands = json.loads((build_dir / f"build_{name}.json").read_text())["commands"]
    for number, command in enumerate(commands, 1):
        tool, args = command[0], command[1:]
        var = _TOOL_VARS.get(tool)
        exe = os.environ.get(var, tool) if var else tool
        label = _STEP_NAMES.get(tool, tool)
        progress(f"[{board}] step {number}/{len(commands)}: {label} ...")
        t0 = time.monotonic()
        log = build_dir / f"{name}.{tool}.log"
        with open(log, "w") as out:
            status = subprocess.run([exe, *args], cwd=build_dir, stdout=out,
                                    stderr=subprocess.STDOUT, check=False).returncode
        elapsed = time.monotonic() - t0
        steps[tool] = round(elapsed, 1)
        if status != 0:
            # the tools' own logs: nextpnr's top.tim, yosys's top.rpt (its stdout is quiet)
            extra = build_dir / (f"{name}.tim" if tool.startswith("nextpnr")
                                 else f"{name}.rpt" if tool == "yosys" else log.name)
            raise BuildError(f"{label} failed with exit code {status} after {elapsed:.0f} s; "
                             f"end of {extra}:\n{_log_tail(extra)}\n{_log_tail(log, 10)}")
        progress(f"[{board}] step {number}/{len(commands)}: {label} done in {elapsed:.1f} s")
        if tool == "yosys" and absorb_ebr_registers:
            from .netlist import absorb_file

            t0 = time.monotonic()
            absorbed = absorb_file(build_dir / f"{name}.json")
            steps["absorb"] = round(time.monotonic() - t0, 1)
            ebr_regs = absorbed.rams
            progress(f"[{board}] {absorbed.flip_flops} flip-flops moved into the output "
                     f"registers of {absorbed.rams} block-RAM read ports"
                     + (f" ({len(absorbed.skipped)} left: {absorbed.skipped[0][1]}, ...)"
                        if absorbed.skipped else ""))
    report = json.loads((build_dir / f"{name}.report.json").read_text())
    util, clocks = parse_nextpnr_report(report)
    rpt = build_dir / f"{name}.rpt"
    cells = parse_yosys_cells(rpt.read_text(errors="replace")) if rpt.is_file() else {}
    res = resources(util, cells)
    target_mhz = target_hz / 1e6
    main_clocks = {k: v for k, v in clocks.items() if abs(v[1] - target_mhz) < 0.01 * target_mhz}
    fmax = min((v[0] for v in main_clocks.values()), default=None)
    worst_clock = min(main_clocks, key=lambda k: main_clocks[k][0], default=None)
    timing_met = bool(clocks) and all(a >= c for a, c in clocks.values())
    bitstream = build_dir / f"{name}.{bitstream_ext}"
    fits = all(used <= avail for used, avail in util.values())
    return BuildReport(
        board=board, device=f"{platform.device}-{platform.package}", fits=fits,
        timing_met=timing_met, fmax_mhz=None if fmax is None else round(fmax, 2),
        target_mhz=round(target_mhz, 3), bitstream=str(bitstream) if bitstream.is_file()
        else None, build_s=round(time.monotonic() - start, 1), steps=steps,
        utilization={k: {"used": u, "available": a} for k, (u, a) in util.items()},
        clocks={k: {"achieved_mhz": round(a, 2), "constraint_mhz": round(c, 2)}
                for k, (a, c) in clocks.items()},
        ebr_output_registers=ebr_regs,
        critical_path=critical_path(report, worst_clock) if worst_clock else [],
        slow_paths=slow_paths(report), **res)


@dataclasses.dataclass(frozen=True)
class Board:
    """A board: how to make its platform and top level, and how to read and load its builds.

    ``top(make_design, config=None)`` is the top-level elaboratable; ``resources(util, cells)``
    maps nextpnr's utilisation and yosys's cell counts to ``luts``, ``ffs``, ``mult18`` and
    ``ebr``; ``program`` lists programming tools as ``(command, arguments)``, ``{bitstream}``
    standing for the file, the first one installed being used.
    """

    name: str
    description: str
    platform: Callable
    top: Callable
    resources: Callable[[dict, dict], dict]
    bitstream_ext: str
    program: tuple
    install_hint: str
    #: block RAM bytes the board gives the weight image (the rest holds the engine's buffers)
    weight_capacity_bytes: int = 0
    #: compression target of ``compiler.compress`` whose image the board carries (None: dense)
    weight_target: str | None = None
    #: what ``python -m boards build`` puts on the board unless ``--design`` says: "accel" (the
    #: accelerator with ``default_model``, :mod:`boards.accel`) or "memtest" (the bring-up test)
    default_design: str = "memtest"
    #: the ONNX model the accelerator design carries unless ``--model`` names another (None:
    #: the board has no accelerator design)
    default_model: str | None = None
    #: the configuration ``top`` uses by default (needed to compile a model before the top
    #: level exists)
    config: Callable[[], AccelConfig] | None = None
    #: extra options of yosys's ``synth_*`` command (:func:`run_build`)
    synth_opts: str = ""
    #: extra options of :func:`run_build` for the accelerator design (``nextpnr_opts``,
    #: ``synth_opts``, ``script_after_synth``; the small bring-up design keeps the defaults)
    accel_build: dict = dataclasses.field(default_factory=dict)
    #: nextpnr's seed and router2's timing-driven rip-up for the accelerator at its
    #: configuration's clock, unless ``--seed`` / ``--no-tmg-ripup`` say otherwise: the
    #: placement that a build of this tree was seen to meet the clock with (a build is
    #: reproducible for a given tree, clock and seed; another tree places differently)
    accel_seed: int | None = None
    accel_tmg_ripup: bool = False

    def program_command(self, bitstream) -> list[str] | None:
        """The command that loads ``bitstream`` with the first installed tool, or None."""
        for tool, args in self.program:
            path = shutil.which(tool)
            if path is not None:
                return [path, *(a.format(bitstream=bitstream) for a in args)]
        return None
