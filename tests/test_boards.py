"""Board support (boards/): PLL settings, the bring-up memory test in simulation (through the
UART, driven by the host client), elaboration and toolchain-free smoke builds of every board,
the build report parsers; and, marked slow, real builds with the YoWASP tools."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from streams import stream_get, stream_put

from boards import BOARDS, get_board
from boards.common import (
    MemTest,
    MemTestClient,
    MemTestCore,
    Status,
    check_design,
    critical_path,
    parse_nextpnr_report,
    parse_yosys_cells,
    pattern_words,
    slow_paths,
)
from boards.icebreaker import BlockRAMMemory, ICEBreakerTop, ice40_pll_params, icebreaker_config
from boards.ulx3s import ULX3STop, ecp5_pll_params
from hw.config import get_config
from hw.memport import MemPortSignature, ModelMemory

ROOT = Path(__file__).resolve().parent.parent

# -- PLLs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("f_out, phase", [(100e6, 180.0), (125e6, 90.0), (50e6, 0.0),
                                          (75e6, 270.0)])
def test_ecp5_pll_exact(f_out, phase):
    p = ecp5_pll_params(25e6, f_out, phase_deg=phase)
    assert p.f_out == f_out
    assert 400e6 <= p.f_vco <= 800e6
    assert p.f_vco == p.f_out * p.clkop_div == 25e6 / p.clki_div * p.clkfb_div * p.clkop_div
    assert abs(p.phase_deg - phase) <= 360 / p.clkop_div / 8 / 2 + 1e-9


def test_ecp5_pll_100mhz_dividers():
    p = ecp5_pll_params(25e6, 100e6, phase_deg=180.0)
    assert (p.clki_div, p.clkfb_div, p.clkop_div) == (1, 4, 6)
    assert (p.clkop_cphase, p.clkos_cphase, p.clkos_fphase) == (5, 8, 0)


def test_ecp5_pll_rejects():
    with pytest.raises(ValueError, match="nearest EHXPLLL"):
        ecp5_pll_params(25e6, 99.99e6)
    assert abs(ecp5_pll_params(25e6, 99.99e6, tolerance=0.01).f_out - 99.99e6) < 1e6
    with pytest.raises(ValueError, match="phase"):
        ecp5_pll_params(25e6, 100e6, phase_deg=360.0)


@pytest.mark.parametrize("f_out", [24e6, 48e6, 36e6, 96e6])
def test_ice40_pll_exact(f_out):
    p = ice40_pll_params(12e6, f_out)
    assert p.f_out == f_out == 12e6 * (p.divf + 1) / ((p.divr + 1) * 2 ** p.divq)
    assert 533e6 <= p.f_vco <= 1066e6
    assert 1 <= p.filter_range <= 6


def test_ice40_pll_rejects():
    with pytest.raises(ValueError, match="16-275"):
        ice40_pll_params(12e6, 8e6)
    with pytest.raises(ValueError, match="nearest SB_PLL40"):
        ice40_pll_params(12e6, 25e6)


# -- the memory test design ----------------------------------------------------------------------

class _StuckBit(wiring.Component):
    """A faulty memory for the self test: read data bit ``bit`` stuck at 1."""

    def __init__(self, memory: ModelMemory, bit: int):
        self._memory = memory
        self._bit = bit
        super().__init__({"bus": In(memory.bus.signature.flip())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = mem = self._memory
        wiring.connect(m, wiring.flipped(self.bus.cmd), mem.bus.cmd)
        wiring.connect(m, wiring.flipped(self.bus.wdata), mem.bus.wdata)
        m.d.comb += [
            self.bus.rdata.valid.eq(mem.bus.rdata.valid),
            mem.bus.rdata.ready.eq(self.bus.rdata.ready),
            self.bus.rdata.payload.data.eq(mem.bus.rdata.payload.data | (1 << self._bit)),
        ]
        return m


class _CoreBench(wiring.Component):
    """A MemTestCore on a memory, its byte streams and status exposed."""

    def __init__(self, memory, mem_signature):
        self._memory = memory
        self.core = MemTestCore(mem_signature, clk_hz=12_345_678)
        super().__init__({
            "rx": In(self.core.rx.signature.flip()),
            "tx": Out(self.core.tx.signature),
            "status": Out(Status),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.memory = mem = self._memory
        wiring.connect(m, core.mem, mem.bus)
        wiring.connect(m, wiring.flipped(self.rx), core.rx)
        wiring.connect(m, core.tx, wiring.flipped(self.tx))
        m.d.comb += [core.mem_ready.eq(1), self.status.eq(core.status)]
        return m


def _run_core(memory, requests: list[tuple[bytes, int]], *, stall=0.3, seed=0):
    """Send each request's bytes, collect its reply bytes; returns the replies and the status
    sampled after each."""
    sig = memory.bus.signature.flip()
    bench = _CoreBench(memory, sig)
    sim = Simulator(bench)
    sim.add_clock(1e-6)
    rng = random.Random(seed)
    replies, statuses = [], []

    async def testbench(ctx):
        for request, reply_len in requests:
            for byte in request:
                await stream_put(ctx, bench.rx, {"data": byte}, rng=rng, stall=stall)
            reply = []
            for _ in range(reply_len):
                reply.append(await stream_get(ctx, bench.tx, rng=rng, stall=stall))
            replies.append(bytes(int(b) for b in reply))
            await ctx.tick().repeat(3)
            statuses.append({k: ctx.get(getattr(bench.status, k))
                             for k in ("idle", "busy", "error")})

    sim.add_testbench(testbench)
    sim.run()
    return replies, statuses


def _req(op: str, addr: int, n: int, nbytes: int = 2, body: bytes = b"") -> bytes:
    return op.encode() + addr.to_bytes(4, "little") + n.to_bytes(nbytes, "little") + body


def test_memtest_core_protocol():
    memory = ModelMemory(data_bytes=2, latency=5, depth=256, max_len=16)
    words = [0x1234, 0xABCD, 0x0001, 0xFFFF, 0x8000]
    body = b"".join(w.to_bytes(2, "little") for w in words)
    replies, statuses = _run_core(memory, [
        (b"I", 10),
        (_req("W", 40, len(words), body=body), 1),
        (_req("R", 39, 7), 1 + 14),
        (b"x", 1),
        (_req("R", 0, 17), 1),          # longer than max_len: refused
        (_req("T", 100, 150, 4), 13),
    ])
    assert replies[0] == (b"I" + bytes([2, 8]) + (16).to_bytes(2, "little")
                          + (12_345_678).to_bytes(4, "little") + bytes([1]))
    assert replies[1] == b"K"
    got = [int.from_bytes(replies[2][1 + 2 * i:3 + 2 * i], "little") for i in range(7)]
    assert replies[2][:1] == b"D" and got == [0, *words, 0]
    assert replies[3] == b"?" and statuses[3]["error"]
    assert replies[4] == b"?"
    assert replies[5][:1] == b"T"
    errors, wcyc, rcyc = (int.from_bytes(replies[5][i:i + 4], "little") for i in (1, 5, 9))
    assert errors == 0 and not statuses[5]["error"] and statuses[5]["idle"]
    # one word per cycle plus the pipeline: the self test runs at the port's full speed
    assert 150 <= wcyc <= 160 and 150 <= rcyc <= 150 + 5 + 10


def test_memtest_self_test_finds_a_stuck_bit():
    memory = _StuckBit(ModelMemory(data_bytes=2, latency=4, depth=512, max_len=64), bit=5)
    replies, statuses = _run_core(memory, [(_req("T", 0, 300, 4), 13)], stall=0.0)
    errors = int.from_bytes(replies[0][1:5], "little")
    expected = sum(1 for w in pattern_words(300, 2) if not w >> 5 & 1)
    assert errors == expected > 0
    assert statuses[0]["error"]


def test_pattern_words_match_hardware_for_wide_ports():
    """The 8-byte port of the default configuration: the hardware pattern is the host's."""
    cfg = get_config("default")
    memory = ModelMemory(cfg, depth=64, max_len=8)
    replies, _ = _run_core(memory, [(_req("T", 3, 20, 4), 13), (_req("R", 3, 8), 1 + 64)],
                           stall=0.0)
    assert int.from_bytes(replies[0][1:5], "little") == 0
    got = [int.from_bytes(replies[1][1 + 8 * i:9 + 8 * i], "little") for i in range(8)]
    assert got == pattern_words(8, 8)


class _SimTransport:
    """A byte transport into a simulated :class:`MemTest` through its UART lines."""

    def __init__(self, design: MemTest, memory: ModelMemory):
        self._top = _Board(design, memory)
        self.sim = Simulator(self._top)
        self.sim.add_clock(1e-6)
        self._to_device = []
        self._from_device = []
        self._divisor = design.divisor
        self.sim.add_testbench(self._uart, background=True)

    async def _uart(self, ctx):
        top, d = self._top, self._divisor
        ctx.set(top.rxd, 1)
        rx_bits = []
        busy = 0
        while True:
            if self._to_device:
                byte = self._to_device.pop(0)
                for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                    ctx.set(top.rxd, bit)
                    for _ in range(d):
                        await ctx.tick()
                        rx_bits, busy = self._sample(ctx, rx_bits, busy)
            else:
                await ctx.tick()
                rx_bits, busy = self._sample(ctx, rx_bits, busy)

    def _sample(self, ctx, bits, busy):
        # A UART receiver in Python: ``busy`` counts cycles since the start bit's falling
        # edge (0: idle); each bit is sampled in its middle.
        line = ctx.get(self._top.txd)
        d = self._divisor
        if busy == 0:
            return ([], 1) if line == 0 else (bits, 0)
        pos = busy - 1
        if pos >= d // 2 and (pos - d // 2) % d == 0:
            bits = [*bits, line]
            if len(bits) == 10:
                self._from_device.append(sum(b << i for i, b in enumerate(bits[1:9])))
                return [], 0
        return bits, busy + 1

    def write(self, data: bytes):
        self._to_device.extend(data)

    def read(self, n: int) -> bytes:
        cycles = 0
        while len(self._from_device) < n:
            self.sim.advance()
            cycles += 1
            if cycles > 2_000_000:
                break
        out, self._from_device = self._from_device[:n], self._from_device[n:]
        return bytes(out)


class _Board(wiring.Component):
    def __init__(self, design: MemTest, memory: ModelMemory):
        self._design = design
        self._memory = memory
        super().__init__({"rxd": In(1, init=1), "txd": Out(1, init=1), "status": Out(Status)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.design = d = self._design
        m.submodules.memory = mem = self._memory
        wiring.connect(m, d.mem, mem.bus)
        m.d.comb += [d.rxd.eq(self.rxd), self.txd.eq(d.txd), d.mem_ready.eq(1),
                     self.status.eq(d.status)]
        return m


def test_memtest_over_uart_with_host_client():
    """The host client (as ``python -m boards memtest`` uses it) against the whole design,
    bit by bit through the UART."""
    memory = ModelMemory(data_bytes=2, latency=6, depth=1024, max_len=32)
    cfg = get_config("ulx3s-85f")
    design = MemTest(cfg, memory.bus.signature.flip(), divisor=4)
    client = MemTestClient(_SimTransport(design, memory))
    info = client.info()
    assert info == {"data_bytes": 2, "addr_bits": 10, "max_len": 32, "clk_hz": cfg.clk_hz,
                    "mem_ready": True, "error": False}
    rng = random.Random(3)
    words = [rng.getrandbits(16) for _ in range(45)]     # two write requests
    client.write(500, words)
    assert client.read(498, 49) == [0, 0, *words, 0, 0]
    result = client.self_test(0, 64)
    assert result["errors"] == 0 and result["read_bytes_per_cycle"] > 1.5
    assert client.read(0, 4) == pattern_words(4, 2)


def test_check_design_rejects_wrong_interface():
    sig = MemPortSignature(2, 24)

    class NoStatus(wiring.Component):
        def __init__(self):
            super().__init__({"rxd": In(1), "txd": Out(1), "mem_ready": In(1),
                              "mem": Out(sig)})

        def elaborate(self, platform):
            return Module()

    with pytest.raises(TypeError, match="no member 'status'"):
        check_design(NoStatus(), sig)
    with pytest.raises(TypeError, match="memory port"):
        check_design(MemTest(get_config("ulx3s-85f"), MemPortSignature(2, 20)), sig)
    with pytest.raises(TypeError, match="wiring.Component"):
        check_design(object(), sig)


# -- boards: elaboration and smoke builds ---------------------------------------------------------

def test_boards_registry():
    assert set(BOARDS) == {"ulx3s-85f", "icebreaker"}
    with pytest.raises(ValueError, match="icebreaker"):
        get_board("ulx3s-12f")


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_board_smoke_build(name, tmp_path):
    """Every board's bring-up design elaborates and its build files are generated (no tools
    run): the PLL, the I/O buffers and the pin constraints are all there."""
    board = get_board(name)
    top = board.top()
    plan = board.platform().build(top, name="top", build_dir=tmp_path, do_build=False)
    files = plan.files
    assert "top.il" in files and "build_top.json" in files
    rtlil = files["top.il"]
    if name == "ulx3s-85f":
        assert "EHXPLLL" in rtlil and "ODDRX1F" in rtlil and "IFS1P3DX" in rtlil
        lpf = files["top.lpf"]
        for pin in ("F19", "P20", "J16", "M1", "L4", "B2"):   # SDRAM clk/cs/dq0, UART, LED 0
            assert pin in lpf
    else:
        # 12 MHz straight from the oscillator; yosys maps the RAMs
        assert "SB_PLL40_PAD" not in rtlil and "SB_RAM40_4K" not in rtlil
        pcf = files["top.pcf"]
        for pin in ("35", "6", "9", "37"):
            assert pin in pcf


def test_ulx3s_top_uses_config():
    top = ULX3STop()
    assert top.config.name == "ulx3s-85f"
    assert top.sdram_params.clk_hz == top.config.clk_hz
    assert top.mem_signature.data_bytes == top.config.fmap_port_bytes
    with pytest.raises(ValueError, match="2 bytes wide"):
        ULX3STop(config=get_config("default"))


def test_icebreaker_top_clock():
    top = ICEBreakerTop()
    assert top.config.clk_hz == 12_000_000 and top.pll is None
    assert top.design.divisor == 4                               # 3 Mbaud
    top = ICEBreakerTop(config=icebreaker_config(24_000_000))
    assert top.config.clk_hz == 24_000_000 and top.pll.f_out == 24e6
    assert top.design.divisor == 8


def test_icebreaker_pll_smoke_build(tmp_path):
    top = ICEBreakerTop(config=icebreaker_config(24_000_000))
    plan = get_board("icebreaker").platform().build(top, name="top", build_dir=tmp_path,
                                                     do_build=False)
    assert "SB_PLL40_PAD" in plan.files["top.il"]


# -- the iCEBreaker accelerator --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_compiled():
    from boards.accel import TINY_MODEL, compile_model

    return compile_model(TINY_MODEL, get_config("icebreaker"))


def test_icebreaker_config_is_the_smallest_engine():
    from hw.uart import resolve_divisor

    cfg = get_config("icebreaker")
    top = ICEBreakerTop()
    assert top.config == cfg and cfg.clk_hz == 12_000_000
    assert resolve_divisor(None, cfg) == 4                      # 3 Mbaud
    # the board's block-RAM memory is exactly the port the configuration addresses
    assert top.memory.depth == 1 << cfg.fmap_addr_bits
    assert top.mem_signature.addr_bits == cfg.fmap_addr_bits
    assert top.mem_signature.data_bytes == cfg.fmap_port_bytes
    assert isinstance(top.memory, BlockRAMMemory)
    # every multiplier in one of the UP5K's 8 SB_MAC16 (a 22 x 12-bit requantiser takes two)
    assert cfg.multipliers + 2 * cfg.requant_units <= 8
    assert ICEBreakerTop(config=dataclasses.replace(cfg, clk_hz=48_000_000)).pll.f_out == 48e6


def test_tiny_model_compiles_for_icebreaker(tiny_compiled):
    from hw.top import pack_schedule

    cfg = get_config("icebreaker")
    qm, image, sched = tiny_compiled
    assert tuple(qm.input_shape) == (3, 15, 15)
    assert [e.name for e in sched.entries] == ["conv1", "fire2", "fire3", "conv10"]
    assert 0 < len(image.weight_rows) <= cfg.weight_depth
    assert 0 < len(image.bias_rows) <= cfg.param_depth
    assert sched.fmap_bytes <= cfg.fmap_port_bytes << cfg.fmap_addr_bits
    assert len(pack_schedule(cfg, sched)) == 4
    # the configuration's limits are tight: with fewer channels the model is refused
    from boards.accel import TINY_MODEL, compile_model

    with pytest.raises(ValueError, match="channels"):
        compile_model(TINY_MODEL, dataclasses.replace(cfg, max_channels=2))


def test_tiny_model_is_the_netgen_model():
    """compiler/data/fire-tiny-15.onnx is what tests/netgen.py makes from TINY_MODEL_PARAMS."""
    import numpy as np
    import onnx
    from netgen import squeezenet
    from onnx import numpy_helper

    from boards.accel import TINY_MODEL, TINY_MODEL_PARAMS

    shipped = onnx.load(str(TINY_MODEL))
    made = squeezenet(**TINY_MODEL_PARAMS)
    assert [n.op_type for n in shipped.graph.node] == [n.op_type for n in made.graph.node]
    a = {t.name: numpy_helper.to_array(t) for t in shipped.graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in made.graph.initializer}
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_icebreaker_accelerator_smoke_build(tiny_compiled, tmp_path):
    """The iCEBreaker's accelerator design elaborates and its build files are generated (no
    tools run): the classifier's UART link and engine, the -dsp synthesis option."""
    from boards.accel import BoardClassifier, classifier_factory

    board = get_board("icebreaker")
    assert board.default_design == "accel" and "-dsp" in board.synth_opts
    top = ICEBreakerTop(classifier_factory(*tiny_compiled))
    assert isinstance(top.design, BoardClassifier)
    plan = board.platform().prepare(top, name="top", synth_opts=board.synth_opts)
    rtlil = plan.files["top.il"]
    assert "SB_PLL40_PAD" not in rtlil                 # 12 MHz: the oscillator itself
    for name in ("design.classifier.link", "design.classifier.acc.engine.array",
                 "design.classifier.acc.engine.weights"):
        assert f"module \\top.{name}\n" in rtlil, name
    assert "synth_ice40 -dsp" in plan.files["top.ys"]


@pytest.mark.parametrize("stall, seed", [(0.0, 0), (0.4, 1), (0.8, 2)])
def test_block_ram_memory_random_traffic(stall, seed):
    """The iCEBreaker's lean block-RAM memory serves the port contract (in order, writes with
    byte masks, back-pressure on every stream) like hw.memport.ModelMemory."""
    from test_memport import check_random_traffic

    rng = random.Random(seed)
    depth = 256
    init = [rng.getrandbits(16) for _ in range(depth)]
    mem = BlockRAMMemory(data_bytes=2, depth=depth, max_len=32, init=init)
    check_random_traffic(mem, rng, data_bytes=2, depth=depth, init=init, stall=stall)


def test_block_ram_memory_under_the_memory_test():
    memory = BlockRAMMemory(data_bytes=2, depth=256, max_len=16)
    words = [0x1234, 0xABCD, 0x0001, 0xFFFF, 0x8000]
    body = b"".join(w.to_bytes(2, "little") for w in words)
    replies, statuses = _run_core(memory, [
        (_req("W", 40, len(words), body=body), 1),
        (_req("R", 39, 7), 1 + 14),
        (_req("T", 100, 150, 4), 13),
    ])
    got = [int.from_bytes(replies[1][1 + 2 * i:3 + 2 * i], "little") for i in range(7)]
    assert replies[1][:1] == b"D" and got == [0, *words, 0]
    errors, wcyc, rcyc = (int.from_bytes(replies[2][i:i + 4], "little") for i in (1, 5, 9))
    assert errors == 0 and statuses[2]["idle"]
    assert 150 <= wcyc <= 155 and 150 <= rcyc <= 155     # one word per cycle


def test_icebreaker_accelerator_is_bit_exact(tiny_compiled):
    """The iCEBreaker's engine (2 multipliers, the smallest buffers) runs the tiny model bit for
    bit like the golden model, through the board's block-RAM memory, with random stalls."""
    import numpy as np
    from streams import in_beats

    from compiler import wimage
    from hw.top import Accelerator

    cfg = get_config("icebreaker")
    qm, image, sched = tiny_compiled
    acc = Accelerator(cfg, image=image, schedule=sched,
                           weight_depth=len(image.weight_rows),
                           param_depth=len(image.bias_rows))
    m = Module()
    m.submodules.acc = acc
    m.submodules.mem = mem = BlockRAMMemory(data_bytes=cfg.fmap_port_bytes,
                                            depth=1 << cfg.fmap_addr_bits)
    wiring.connect(m, acc.mem, mem.bus)
    x = np.random.default_rng(5).integers(-123, 152, qm.input_shape).astype(np.int16)
    outs = qm.run(x)
    want = [int(v) for v in np.asarray(outs[wimage.engine_steps(qm)[-1].out_name]).ravel()]
    first = wimage.place_programs(cfg, qm)[0]
    scores = []

    async def feed(ctx):
        rng = random.Random(0)
        for beat in in_beats(first.input_stream(x), cfg.in_lanes, rng):
            await stream_put(ctx, acc.i, beat, rng=rng, stall=0.2)

    async def drain(ctx):
        rng = random.Random(1)
        while not scores or not last[0]:
            s = await stream_get(ctx, acc.o, rng=rng, stall=0.2)
            scores.append(int(s.data))
            last[0] = bool(s.last)

    async def guard(ctx):
        for _ in range(20_000):               # the frame takes ~4,300 cycles
            await ctx.tick()
            if last[0]:
                return
        raise AssertionError(f"no complete frame after 20,000 cycles: scores {scores}")

    last = [False]
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(drain, background=True)
    sim.add_testbench(guard)
    sim.run()
    assert scores == want and len(want) == 4


def test_narrow_load_beat_needs_the_schedule_as_initial_contents(tiny_compiled):
    """The iCEBreaker's load beat (a 2-weight row) is narrower than a schedule row: the
    accelerator refuses to be built without the schedule, and takes it as initial contents."""
    from compiler import wimage
    from hw.top import Accelerator

    cfg = get_config("icebreaker")
    qm, image, sched = tiny_compiled
    with pytest.raises(ValueError, match="wider than a load beat"):
        Accelerator(cfg)
    acc = Accelerator(cfg, image=image, schedule=sched)
    assert len(acc._sched_init) == len(wimage.engine_steps(qm))
    acc._MustUse__silence = True


def test_classifier_takes_an_accelerator_for_its_config(tiny_compiled):
    from hw.soc import Classifier
    from hw.top import Accelerator

    qm, image, sched = tiny_compiled
    cfg = get_config("icebreaker")
    acc = Accelerator(cfg, image=image, schedule=sched)
    acc._MustUse__silence = True                # refused below, never elaborated
    kw = dict(info=b"", image_shape=(3, 15, 15), n_scores=8)
    with pytest.raises(TypeError, match="Accelerator for configuration"):
        Classifier(get_config("default"), accelerator=acc, **kw)
    with pytest.raises(TypeError, match="not to a Classifier given an accelerator"):
        Classifier(cfg, accelerator=acc, schedule=sched, **kw)


def test_build_refuses_a_model_too_big_for_icebreaker(tmp_path, capsys):
    """``build icebreaker --model``: a model exceeding the configuration stops before any
    tool runs (exit 2, naming the limit)."""
    import onnx
    from netgen import squeezenet

    from boards.__main__ import main
    from boards.accel import TINY_MODEL_PARAMS

    model = tmp_path / "wide.onnx"
    onnx.save(squeezenet(**{**TINY_MODEL_PARAMS, "classes": 40}), str(model))
    build_dir = tmp_path / "build"
    assert main(["build", "icebreaker", "--model", str(model), "--build-dir",
                 str(build_dir)]) == 2
    assert "does not compile for configuration 'icebreaker'" in capsys.readouterr().err
    assert not build_dir.exists()


# -- build report parsing -------------------------------------------------------------------------

YOSYS_STAT = """
=== top ===
       38 cells
       17   $scopeinfo
        4   SB_IO
       16   SB_RAM40_4K
      230   SB_CARRY
       20   SB_DFF
      496   SB_DFFESR
     1169   SB_LUT4

2.51. Executing CHECK pass (checking for obvious problems).
"""


def test_parse_yosys_cells():
    cells = parse_yosys_cells("noise\n   3 cells\n     3   LUT4\n\n" + YOSYS_STAT)
    assert cells["SB_LUT4"] == 1169 and cells["SB_DFFESR"] == 496 and "LUT4" not in cells
    assert parse_yosys_cells("   Number of cells:   5\n     TRELLIS_FF   12\n     LUT4 7\n") == {
        "TRELLIS_FF": 12, "LUT4": 7}
    assert parse_yosys_cells("nothing here") == {}


def test_parse_nextpnr_report():
    report = {"utilization": {"TRELLIS_COMB": {"used": 10, "available": 83640}},
              "fmax": {"$glbnet$clk": {"achieved": 120.5, "constraint": 100.0}}}
    util, clocks = parse_nextpnr_report(report)
    assert util == {"TRELLIS_COMB": (10, 83640)}
    assert clocks == {"$glbnet$clk": (120.5, 100.0)}


def test_critical_path_and_slow_paths_from_the_report():
    """The main clock's path (not another clock's) as segments, and the nets that end paths
    ranked by the arrival time at their worst endpoint (not their first)."""
    def seg(kind, delay, cell, port, net=None):
        row = {"type": kind, "delay": delay, "from": {"cell": "src", "port": "Q"},
               "to": {"cell": cell, "port": port}}
        return {**row, "net": net} if net else row

    report = {
        "critical_paths": [
            {"from": "posedge $glbnet$clkos", "to": "posedge $glbnet$clkos",
             "path": [seg("routing", 9.0, "other", "D", "x")]},
            {"from": "posedge $glbnet$clk", "to": "posedge $glbnet$clk",
             "path": [seg("clk-to-q", 0.52, "lut", "A"), seg("routing", 8.66, "lut", "A", "n1"),
                      seg("logic", 0.24, "lut", "F"), seg("setup", 0.1, "ff", "DI")]}],
        "detailed_net_timings": [
            {"net": "a", "driver": "fa", "endpoints": [
                {"cell": "s1", "port": "A", "delay": [0.1, 1.5]},
                {"cell": "s2", "port": "B", "delay": [0.2, 7.25]}]},
            {"net": "b", "driver": "fb", "endpoints": [
                {"cell": "s3", "port": "C", "delay": [3.0, 3.0]}]},
            {"net": "c", "driver": "fc", "endpoints": []}]}
    path = critical_path(report, "$glbnet$clk")
    assert [p["type"] for p in path] == ["clk-to-q", "routing", "logic", "setup"]
    assert path[0]["cell"] == "src" and path[1] == {"type": "routing", "delay_ns": 8.66,
                                                    "cell": "lut", "port": "A", "net": "n1"}
    assert critical_path(report, "$glbnet$nope") == []
    assert slow_paths(report) == [
        {"net": "a", "driver": "fa", "endpoints": 2, "delay_ns": 7.25, "endpoint": "s2.B"},
        {"net": "b", "driver": "fb", "endpoints": 1, "delay_ns": 3.0, "endpoint": "s3.C"}]
    assert slow_paths(report, limit=1)[0]["net"] == "a"
    assert slow_paths({}) == []


# -- real builds ----------------------------------------------------------------------------------

def _build(board: str, tmp_path, *extra) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "report.json"
    run = subprocess.run([sys.executable, "-m", "boards", "build", board, "--json", str(out),
                          "--build-dir", str(tmp_path / "build"), *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800, check=False)
    return run, json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.nextpnr
@pytest.mark.parametrize("board, design", [
    ("icebreaker", None),              # the accelerator with the tiny Fire model
    ("icebreaker", "memtest"),
    ("ulx3s-85f", "memtest"),
])
def test_full_build(board, design, tmp_path, capsys):
    run, report = _build(board, tmp_path, *(("--design", design) if design else ()))
    with capsys.disabled():
        print(f"\n{board} {design}: fmax {report.get('fmax_mhz')} MHz (target "
              f"{report.get('target_mhz')}), LUTs {report.get('luts')}, FFs "
              f"{report.get('ffs')}, EBR {report.get('ebr')}, build {report.get('build_s')} s")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "step 2/3: place and route" in run.stdout
    assert report["fits"] is True and report["timing_met"] is True
    assert report["fmax_mhz"] >= report["target_mhz"]
    assert report["luts"] > 100 and report["ffs"] > 100
    assert Path(report["bitstream"]).is_file()
    # the main clock's critical path starts at a register and ends at a setup; the slowest
    # paths are listed longest first
    assert report["critical_path"][0]["type"] in ("clk-to-q", "source")
    assert report["critical_path"][-1]["type"] == "setup"
    delays = [row["delay_ns"] for row in report["slow_paths"]]
    assert delays and delays == sorted(delays, reverse=True)
    if board == "icebreaker" and design is None:
        assert "BoardClassifier" in run.stdout and report["mult18"] > 0
    if board == "ulx3s-85f":
        # the reset goes through GSR: every flip-flop but the two that synchronise the PLL's
        # lock takes GSR, and no asynchronous reset is left on an LSR pin to be routed
        netlist = json.loads((tmp_path / "build" / "top.json").read_text())
        cells = [c for mod in netlist["modules"].values() for c in mod["cells"].values()]
        assert sum(c["type"] == "GSR" for c in cells) == 1
        ffs = [c for c in cells if c["type"] == "TRELLIS_FF"]
        assert sum(c["parameters"].get("GSR") != "ENABLED" for c in ffs) == 2
        assert not [c for c in ffs if c["parameters"].get("SRMODE") == "ASYNC"
                    and c["connections"].get("LSR", ["0"]) != ["0"]]


def test_oversized_weight_image_is_refused_before_synthesis(tmp_path, capsys):
    """``build --model``: v1.1 cannot fit the ULX3S's block RAM; the build stops before any tool
    runs, naming the bytes needed and available; the compressed v1.0 fits."""
    from boards.__main__ import main, weight_image_check
    from compiler.api import DATA

    out = tmp_path / "r.json"
    build_dir = tmp_path / "build"
    code = main(["build", "ulx3s-85f", "--model", str(DATA / "squeezenet1.1.onnx"),
                 "--json", str(out), "--build-dir", str(build_dir)])
    assert code == 1
    err = capsys.readouterr().err
    board = get_board("ulx3s-85f")
    assert "REFUSED before synthesis" in err and f"{board.weight_capacity_bytes:,}" in err
    report = json.loads(out.read_text())
    assert report["fits"] is False and report["weight_bytes"] > report["weight_capacity"]
    assert not build_dir.exists()
    from hw.config import get_config

    ok = weight_image_check(board, get_config("ulx3s-85f"),
                            DATA / "squeezenet1.0-deepcompression.onnx")
    assert ok["fits_weights"] and ok["weight_bytes"] <= board.weight_capacity_bytes
    assert ok["weight_format"].startswith("compressed")


def test_build_at_another_clock_is_checked_before_synthesis(tmp_path, capsys):
    """``--clock-mhz``: a clock the SDRAM chip (133 MHz at most) or the UART (3 Mbaud needs
    enough clocks per bit) cannot have stops the build before any tool runs (exit 2, naming
    the clock); an accepted one reaches the PLL and the UART divisor."""
    import dataclasses

    from boards.__main__ import main
    from boards.accel import TINY_MODEL, classifier_factory, compile_model
    from hw.config import get_config

    build_dir = tmp_path / "build"
    assert main(["build", "ulx3s-85f", "--design", "memtest", "--clock-mhz", "150",
                 "--build-dir", str(build_dir)]) == 2
    err = capsys.readouterr().err
    assert "ulx3s-85f at 150 MHz" in err and "133000000" in err
    assert main(["build", "icebreaker", "--clock-mhz", "5", "--build-dir", str(build_dir)]) == 2
    assert "icebreaker at 5 MHz" in capsys.readouterr().err
    assert not build_dir.exists()
    board = get_board("ulx3s-85f")
    cfg = dataclasses.replace(get_config("ulx3s-85f"), clk_hz=50_000_000, weight_streams=False,
                              bias_bits=32)
    top = board.top(classifier_factory(*compile_model(TINY_MODEL, cfg)), config=cfg)
    assert top.pll.f_out == 50e6 and top.config.clk_hz == 50_000_000
    assert top.design.classifier.divisor == 17        # 3 Mbaud at 50 MHz, 2% off


def test_a_failing_tool_is_reported_with_its_own_log(tmp_path, monkeypatch):
    """yosys is quiet on stdout (``-q``) and logs to ``top.rpt``: a synthesis that fails (as
    abc9's ``ABC_OPS_REINTEGRATE`` assertion did on one configuration) is reported with the end
    of ``top.rpt``, not of an empty stdout log."""
    from boards.common import BuildError, run_build

    fake = tmp_path / "fake-yosys"
    fake.write_text("#!/bin/sh\n"
                    "echo '2.46.28.7. Executing ABC_OPS_REINTEGRATE pass' > top.rpt\n"
                    "echo 'ERROR: Assert failed in kernel/rtlil.cc' >> top.rpt\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    board = get_board("ulx3s-85f")
    with pytest.raises(BuildError, match=r"(?s)synthesis \(yosys\) failed with exit code 1 .*"
                                         r"top\.rpt.*ERROR: Assert failed"):
        run_build(board.platform(), board.top(), name="top", build_dir=tmp_path / "b",
                  board=board.name, target_hz=100e6, resources=board.resources,
                  bitstream_ext=board.bitstream_ext, progress=lambda msg: None)


def test_the_ulx3s_accelerator_maps_its_luts_with_the_classic_abc(tmp_path, monkeypatch, capsys):
    """``boards build ulx3s-85f`` synthesises the accelerator with ``synth_ecp5`` up to the block
    RAM mapping, marks the collisions of ``no_rw_check`` memories as undefined, goes on up to
    the LUT mapping, maps the LUTs with the classic ``abc -lut 4`` and runs the rest of
    ``synth_ecp5`` (yosys's abc9 asserts on some of its netlists), and routes it with router2,
    at the configuration's clock with the board's checked seed and timing-driven rip-up unless
    ``--seed`` / ``--no-tmg-ripup`` say otherwise, at another clock with neither; the memory
    test keeps the defaults. A stand-in for yosys records the script and stops the build."""
    from boards.__main__ import main

    seen = tmp_path / "scripts"
    seen.mkdir()
    fake = tmp_path / "fake-yosys"
    fake.write_text(f"#!/bin/sh\ncat top.ys >> {seen}/ys\necho ---- >> {seen}/ys\n"
                    f"cat build_top.sh >> {seen}/sh\necho ---- >> {seen}/sh\n"
                    "echo 'ERROR: stand-in' > top.rpt\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("YOSYS", str(fake))
    for design in ("accel", "memtest"):
        assert main(["build", "ulx3s-85f", "--design", design,
                     "--build-dir", str(tmp_path / design)]) == 1
        assert "ERROR: stand-in" in capsys.readouterr().err
    assert main(["build", "ulx3s-85f", "--seed", "7", "--build-dir", str(tmp_path / "s")]) == 1
    assert main(["build", "ulx3s-85f", "--no-tmg-ripup", "--build-dir", str(tmp_path / "r")]) == 1
    assert main(["build", "ulx3s-85f", "--clock-mhz", "90",
                 "--build-dir", str(tmp_path / "c")]) == 1
    accel_ys, memtest_ys = (seen / "ys").read_text().split("----\n")[:2]
    accel_sh, memtest_sh, seeded_sh, no_ripup_sh, clocked_sh = \
        (seen / "sh").read_text().split("----\n")[:5]
    seed = get_board("ulx3s-85f").accel_seed
    assert seed is not None and re.search(rf"--seed {seed}\b", accel_sh)
    assert re.search(r"--seed 7\b", seeded_sh)
    assert "--router router2" in seeded_sh
    steps = ["synth_ecp5 -run :map_ram -top top",
             "setparam -set RD_COLLISION_X_MASK 1'b1 t:$mem_v2 a:no_rw_check %i",
             "synth_ecp5 -top top -run map_ram:map_luts", "abc -lut 4",
             "synth_ecp5 -top top -run map_cells:", "write_json"]
    at = [accel_ys.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), list(zip(steps, at))
    assert "--router router2" in accel_sh and "--placer static" in accel_sh
    assert "--tmg-ripup" in accel_sh and "--tmg-ripup" in seeded_sh
    assert "--tmg-ripup" not in no_ripup_sh and re.search(rf"--seed {seed}\b", no_ripup_sh)
    assert "--tmg-ripup" not in clocked_sh and "--seed" not in clocked_sh
    assert "abc -lut 4" not in memtest_ys and "-run :map_" not in memtest_ys
    assert "setparam" not in memtest_ys
    assert "--router" not in memtest_sh and "--placer" not in memtest_sh


# the components boards.timing places and routes alone; the whole engine and the 4-column weight
# reader take long to elaborate and are left out
TIMING_COMPONENTS = ("sequencer", "drain", "requantizer", "maxpool", "gsum", "decoder", "reader",
                     "writer", "link", "sdram")


@pytest.mark.parametrize("name", TIMING_COMPONENTS)
def test_timing_components_elaborate_for_the_ulx3s(name):
    from amaranth.back import rtlil

    from boards.timing import COMPONENTS, make_component

    comp = make_component(name, get_config("ulx3s-85f"))
    assert type(comp).__name__ == COMPONENTS[name][1]
    text = rtlil.convert(comp, name="top")
    assert "module \\top" in text and "attribute \\top 1" in text


def test_timing_components_cover_the_accelerators_parts():
    from boards.timing import COMPONENTS

    assert set(TIMING_COMPONENTS) | {"engine", "weights", "array"} == set(COMPONENTS)


def test_component_timing_names_the_clocks_own_critical_path(tmp_path):
    """The path printed is the clock's (register to register), not the cross-domain reports to
    and from the harness's pins that nextpnr writes after it."""
    from boards.timing import _critical_path

    def path(src, sink, line):
        return ("Info:       type curr  total name\n"
                f"Info:   clk-to-q  0.52  0.52 Source {src}\n"
                f"Info:    routing  5.33  5.86 Net n (66,35) -> (96,34)\n"
                f"Info:                          Sink {sink}\n"
                "Info:                          Defined in:\n"
                f"Info:                               /work/main/{line}\n\n")

    (tmp_path / "top.tim").write_text(
        "Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):\n"
        + path("dut.x_q.Q", "dut.mul0.A0", "hw/pe.py:160")
        + "Info: Critical path report for cross-domain path '<async>' -> 'posedge $glbnet$clk':\n"
        + path("pin_i.buf.buf0.O", "dut.en.M", "hw/other.py:1")
        + "Info: Critical path report for cross-domain path 'posedge $glbnet$clk' -> '<async>':\n"
        + path("o.Q", "pin_o.buf.buf0.I", "hw/other.py:2")
        + "Info: Max frequency for clock '$glbnet$clk': 85.21 MHz (PASS at 25.00 MHz)\n")
    assert _critical_path(tmp_path / "top.tim") == {
        "from": "dut.x_q.Q", "to": "dut.mul0.A0", "source_lines": ["hw/pe.py:160"]}


def test_build_json_carries_the_seed_and_the_rip_up(tmp_path, monkeypatch, capsys):
    """``--seed`` and ``--tmg-ripup`` reach nextpnr's options and the report's JSON (a stand-in
    for the tools returns a report; the real build's report is a ``BuildReport`` too)."""
    import boards.__main__ as cli
    from boards.common import BuildReport

    seen = {}

    def fake_run_build(platform, top, *, name, build_dir, board, target_hz, resources,
                       bitstream_ext, **opts):
        seen.update(opts)
        return BuildReport(board=board, device="stand-in", fits=True, timing_met=True,
                           fmax_mhz=20.0, target_mhz=target_hz / 1e6, luts=1, ffs=1, mult18=0,
                           ebr=0, bitstream=None, build_s=0.0)

    monkeypatch.setattr(cli, "run_build", fake_run_build)
    out = tmp_path / "r.json"
    assert cli.main(["build", "icebreaker", "--seed", "3", "--tmg-ripup", "--json", str(out),
                     "--build-dir", str(tmp_path / "b")]) == 0
    report = json.loads(out.read_text())
    assert report["seed"] == 3 and report["tmg_ripup"] is True
    assert "--seed 3" in seen["nextpnr_opts"] and "--tmg-ripup" in seen["nextpnr_opts"]
    assert cli.main(["build", "icebreaker", "--json", str(out),
                     "--build-dir", str(tmp_path / "b")]) == 0
    report = json.loads(out.read_text())
    assert report["seed"] is None and report["tmg_ripup"] is False
