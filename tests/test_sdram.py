"""The SDRAM controller (hw/sdram.py) with the chip model (hw/sdram_model.py), in Amaranth's
simulator: random memory-port traffic against a dict, the model's own checks driven wrongly on
purpose, and the sustained bandwidth of sequential bursts."""

from __future__ import annotations

import random

import pytest
from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from test_memport import add_traffic, expected_reads, random_ops

from hw.config import get_config
from hw.memport import MemPortSignature
from hw.sdram import (
    A10,
    CMD_ACTIVE,
    CMD_BURST_STOP,
    CMD_MODE,
    CMD_NOP,
    CMD_PRECHARGE,
    CMD_READ,
    CMD_REFRESH,
    CMD_WRITE,
    SDRAMController,
    SDRAMParams,
    mode_register,
)
from hw.sdram_model import SDRAMChipModel, SDRAMError

PIN_OUTPUTS = ("cke", "cs", "ras", "cas", "we", "ba", "a", "dqm", "dq_o", "dq_oe")


class SDRAMBench(wiring.Component):
    """Controller + chip model, the port exposed for a testbench (or a C++ harness) to drive.

    ``phy_stages``: registers between controller and chip in each direction (as the board's
    I/O registers); the controller is told to expect ``2 * phy_stages`` extra read cycles.
    """

    def __init__(self, params: SDRAMParams, *, phy_stages: int = 0, max_len: int = 256,
                 check_refresh: bool = True):
        self._params = params
        self._phy_stages = phy_stages
        self._check_refresh = check_refresh
        self.controller = SDRAMController(params, max_len=max_len,
                                          phy_read_delay=2 * phy_stages)
        self.chip = SDRAMChipModel(params, check_refresh=check_refresh)
        super().__init__({
            "port": In(MemPortSignature(params.data_bytes, params.addr_bits, max_len=max_len)),
            "error": Out(1),
            "code": Out(5),
            "violations": Out(16),
            "init_done": Out(1),
            "refreshes": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.controller = ctrl = self.controller
        m.submodules.chip = chip = self.chip
        wiring.connect(m, wiring.flipped(self.port), ctrl.bus)
        for name in PIN_OUTPUTS:
            value = getattr(ctrl.sdram, name)
            for stage in range(self._phy_stages):
                reg = Signal.like(value, name=f"phy_{name}_{stage}")
                m.d.sync += reg.eq(value)
                value = reg
            m.d.comb += getattr(chip.pins, name).eq(value)
        value = chip.pins.dq_i
        for stage in range(self._phy_stages):
            reg = Signal.like(value, name=f"phy_dq_i_{stage}")
            m.d.sync += reg.eq(value)
            value = reg
        m.d.comb += [
            ctrl.sdram.dq_i.eq(value),
            self.error.eq(chip.error),
            self.code.eq(chip.code),
            self.violations.eq(chip.violations),
            self.init_done.eq(ctrl.init_done),
            self.refreshes.eq(chip.refreshes),
        ]
        return m


# -- parameters ----------------------------------------------------------------------------------

def test_ulx3s_timing_at_100mhz():
    p = SDRAMParams.ulx3s(100_000_000)
    assert p.addr_bits == 24 and p.words * p.data_bytes == 32 * 1024 * 1024
    assert p.timing_table() == {
        "CL": 3, "tRCD": 3, "tRP": 3, "tRC": 7, "tRAS": 5, "tWR": 2, "tRRD": 2, "tRFC": 7,
        "tMRD": 2, "tREFI": 781, "init_wait": 20_000,
    }
    assert mode_register(p) == 0b0110000
    assert p.pin_addr_bits == 13


def test_timing_rounds_up_at_125mhz():
    p = SDRAMParams.ulx3s(125_000_000)
    assert (p.t_rcd_cycles, p.t_rp_cycles, p.t_rc_cycles, p.t_ras_cycles) == (3, 3, 9, 6)
    assert p.refresh_interval_cycles == 976


@pytest.mark.parametrize("kwargs, message", [
    ({"clk_hz": 150_000_000}, "above the chip"),
    ({"clk_hz": 100_000_000, "cas_latency": 1}, "cas_latency"),
    ({"clk_hz": 100_000_000, "banks": 3}, "power of two"),
    ({"clk_hz": 100_000_000, "col_bits": 11}, "col_bits"),
    ({"clk_hz": 100_000_000, "data_bits": 12}, "multiple of 8"),
    ({"clk_hz": 100_000_000, "t_rcd_ns": -1.0}, "t_rcd_ns"),
    ({"clk_hz": 100_000_000, "t_refi_ns": 50.0}, "t_refi_ns"),
])
def test_params_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SDRAMParams(**kwargs)


def test_controller_rejects_bad_arguments():
    p = SDRAMParams.simulation()
    with pytest.raises(TypeError, match="SDRAMParams"):
        SDRAMController("sdram")
    with pytest.raises(ValueError, match="phy_read_delay"):
        SDRAMController(p, phy_read_delay=-1)
    with pytest.raises(ValueError, match="read_buffer"):
        SDRAMController(p, read_buffer=1)


# -- controller + model ------------------------------------------------------------------------

def _run_bench(bench: SDRAMBench, ops, *, seed: int, stall: float, initial=None,
               extra_cycles: int = 0):
    p = bench._params
    want = expected_reads(ops, data_bytes=p.data_bytes, space=p.words, initial=initial)
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    result = {}
    add_traffic(sim, bench.port, ops, rng=random.Random(seed), stall=stall, expected=want,
                result=result)
    status = {}

    async def watch(ctx):
        # Wait until the traffic is done, let refreshes run a little longer, then report.
        async for _ in ctx.tick():
            if "reads" in result:
                break
        await ctx.tick().repeat(extra_cycles + 1)
        status.update(error=ctx.get(bench.error), code=ctx.get(bench.code),
                      violations=ctx.get(bench.violations),
                      refreshes=ctx.get(bench.refreshes))

    sim.add_testbench(watch)
    sim.run()
    assert result["reads"] == len(want)
    return status


@pytest.mark.parametrize("cl, phy_stages, stall, seed", [
    (3, 0, 0.0, 1),
    (3, 0, 0.4, 2),
    (2, 0, 0.3, 3),
    (3, 1, 0.3, 4),
    (2, 1, 0.6, 5),
])
def test_controller_random_traffic(cl, phy_stages, stall, seed):
    """Random reads and writes (random lengths, masks and stalls on all streams), over the
    whole of a small chip so that rows and banks change often; the chip model sees no
    violation and refreshes happen."""
    p = SDRAMParams.simulation(cas_latency=cl, row_bits=3, col_bits=4)
    rng = random.Random(seed)
    ops = random_ops(rng, 40, data_bytes=p.data_bytes, space=p.words, max_len=40)
    bench = SDRAMBench(p, phy_stages=phy_stages, max_len=64)
    status = _run_bench(bench, ops, seed=seed, stall=stall, extra_cycles=300)
    assert status["violations"] == 0, SDRAMError(status["code"])
    assert status["refreshes"] >= p.init_refreshes + 1


def test_controller_read_your_writes_across_rows_and_banks():
    """Write a pattern over every row of every bank in long bursts, read it back in bursts
    that start at other offsets (every burst crosses a row or a bank)."""
    p = SDRAMParams.simulation(row_bits=2, col_bits=5)
    rng = random.Random(11)
    words = [rng.getrandbits(16) for _ in range(p.words)]
    ops = []
    for start in range(0, p.words, 48):
        n = min(48, p.words - start)
        ops.append((True, start, n, [(w, 3) for w in words[start:start + n]]))
    for start in range(7, p.words - 50, 50):
        ops.append((False, start, 50, None))
    bench = SDRAMBench(p, phy_stages=1, max_len=64)
    status = _run_bench(bench, ops, seed=12, stall=0.2)
    assert status["violations"] == 0, SDRAMError(status["code"])


def _slow_chip(**kw) -> SDRAMParams:
    """A small chip whose timings are several times the ULX3S's: its banks' timers run long
    enough that a command decided from the wrong bank's timer breaks one of them."""
    return SDRAMParams.simulation(t_rcd_ns=45.0, t_rp_ns=45.0, t_rc_ns=250.0, t_ras_ns=200.0,
                                  t_wr_ns=35.0, t_rrd_ns=35.0, **kw)


@pytest.mark.parametrize("cl, stall, seed", [(2, 0.3, 2), (3, 0.3, 2), (3, 0.0, 1)])
def test_controller_random_traffic_slow_chip_short_rows(cl, stall, seed):
    """Random traffic over rows of 4 words on a slow chip: bursts cross into the next bank
    every few words, while that bank's timers still run (the flags of the next word's bank
    are taken from the next bank's timers at the end of a row, not the current one's)."""
    p = _slow_chip(cas_latency=cl, row_bits=2, col_bits=2)
    rng = random.Random(seed)
    ops = random_ops(rng, 40, data_bytes=p.data_bytes, space=p.words, max_len=12)
    bench = SDRAMBench(p, max_len=16)
    status = _run_bench(bench, ops, seed=seed, stall=stall, extra_cycles=100)
    assert status["violations"] == 0, SDRAMError(status["code"])


def _read_beat_cycles(p: SDRAMParams, reads) -> tuple[list[int], int]:
    """``reads``: ``(addr, length, delay)``, each read command offered ``delay`` cycles after
    the one before was taken, on a master that takes every beat at once. Returns the cycle of
    every read beat (counted from the first command) and the chip model's violations."""
    bench = SDRAMBench(p, max_len=32)
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    port = bench.port
    beats = []
    status = {}
    total = sum(n for _, n, _ in reads)

    async def master(ctx):
        await ctx.tick().until(bench.init_done)
        for addr, n, delay in reads:
            if delay:
                await ctx.tick().repeat(delay)
            ctx.set(port.cmd.payload, {"addr": addr, "len": n, "write": False})
            ctx.set(port.cmd.valid, 1)
            await ctx.tick().until(port.cmd.ready)
            ctx.set(port.cmd.valid, 0)

    async def reader(ctx):
        await ctx.tick().until(bench.init_done)
        ctx.set(port.rdata.ready, 1)
        cycle = 0
        while len(beats) < total:
            _, _, valid = await ctx.tick().sample(port.rdata.valid)
            cycle += 1
            if valid:
                beats.append(cycle)
        await ctx.tick().repeat(30)
        status["violations"] = ctx.get(bench.violations)
        status["code"] = ctx.get(bench.code)

    sim.add_testbench(master)
    sim.add_testbench(reader)
    sim.run()
    return beats, status


def test_next_burst_waits_for_its_own_banks_timer():
    """A burst that ends in the bank after the one it began in (bank 1's last column, then
    bank 2's open row), followed by a burst to another row of bank 1, whose tRAS still runs:
    its PRECHARGE waits for bank 1's timer, not bank 2's (long since ready). The next burst
    is taken as the last word is read (offered at once) or after the controller has gone idle
    (offered later: delays of 32-43 cycles catch a pop from idle that reads the timer of the
    last word's bank)."""
    p = _slow_chip(row_bits=2, col_bits=4)
    col = 1 << p.col_bits

    def addr(row, bank, column):
        return (row << p.bank_bits | bank) * col + column

    for delay in range(0, 48):
        reads = [(addr(0, 2, 0), 1, 0),          # opens bank 2's row 0
                 (addr(0, 0, 0), col, 0),        # a whole row elsewhere: bank 2's tRAS ends
                 (addr(0, 1, col - 1), 2, 0),    # bank 1 (ACTIVE), then into bank 2
                 (addr(1, 1, 0), 1, delay)]      # another row of bank 1: PRECHARGE first
        beats, status = _read_beat_cycles(p, reads)
        assert status["violations"] == 0, (delay, SDRAMError(status["code"]))
        assert len(beats) == 3 + col + 1


def test_bursts_in_an_open_row_follow_without_a_gap():
    """Read bursts queued one after another in the same open row come back as one unbroken
    run of beats: the next burst is taken in the cycle of the last READ of the one before."""
    p = SDRAMParams.simulation(row_bits=2, col_bits=6)
    beats, status = _read_beat_cycles(p, [(0, 4, 0), (4, 8, 0), (12, 3, 0), (15, 5, 0)])
    assert status["violations"] == 0, SDRAMError(status["code"])
    assert len(beats) == 20
    assert beats[1:] == [b + 1 for b in beats[:-1]], beats


def _bandwidth(p: SDRAMParams, *, write: bool, bursts: int, length: int) -> float:
    """Bytes per cycle of back-to-back sequential bursts with a master that never stalls,
    from the first command's transfer to the last beat's."""
    bench = SDRAMBench(p, phy_stages=1, max_len=length)
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    port = bench.port
    measured = {}

    async def master(ctx):
        await ctx.tick().until(bench.init_done)
        ctx.set(port.rdata.ready, 1)
        ctx.set(port.wdata.valid, 1)
        ctx.set(port.wdata.payload, {"data": 0x1234, "mask": 3})
        cmds = [(i * length, length) for i in range(bursts)]
        beats = 0
        cycles = 0
        started = False
        while beats < bursts * length:
            if cmds:
                addr, n = cmds[0]
                ctx.set(port.cmd.payload, {"addr": addr, "len": n, "write": write})
                ctx.set(port.cmd.valid, 1)
            else:
                ctx.set(port.cmd.valid, 0)
            _, _, cmd_ready, w_ready, r_valid = await ctx.tick().sample(
                port.cmd.ready, port.wdata.ready, port.rdata.valid)
            if cmds and cmd_ready:
                cmds.pop(0)
                started = True
            if started:
                cycles += 1
            beats += int(w_ready) if write else int(r_valid)
        measured["cycles"] = cycles
        measured["error"] = ctx.get(bench.error)

    sim.add_testbench(master)
    sim.run()
    assert not measured["error"]
    return bursts * length * p.data_bytes / measured["cycles"]


@pytest.mark.parametrize("write", [False, True], ids=["read", "write"])
def test_sequential_bandwidth(write, capsys):
    """Sequential 256-word bursts at the real refresh interval (7.8 us) and row length (512
    words): close to the 2 bytes/cycle of a 16-bit SDR bus."""
    p = SDRAMParams(clk_hz=100_000_000, row_bits=3, init_wait_ns=500.0, init_refreshes=2)
    rate = _bandwidth(p, write=write, bursts=12, length=256)
    with capsys.disabled():
        print(f"\nSDRAM sequential {'write' if write else 'read'} bandwidth: {rate:.3f} "
              f"bytes/cycle ({rate * p.clk_hz / 1e6:.1f} MB/s at {p.clk_hz / 1e6:.0f} MHz)")
    assert rate >= 1.9


def _read_latencies(p: SDRAMParams, reads) -> list[int]:
    """Cycles from each read command's transfer to its first beat, one read at a time on an
    otherwise idle controller (an always-ready master, the board's PHY delay)."""
    bench = SDRAMBench(p, phy_stages=1, max_len=16)
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    port = bench.port
    out = []

    async def master(ctx):
        await ctx.tick().until(bench.init_done)
        ctx.set(port.rdata.ready, 1)
        for addr, n in reads:
            await ctx.tick().repeat(20)
            ctx.set(port.cmd.payload, {"addr": addr, "len": n, "write": False})
            ctx.set(port.cmd.valid, 1)
            await ctx.tick().until(port.cmd.ready)
            ctx.set(port.cmd.valid, 0)
            cycles, beats = 0, 0
            while beats < n:
                _, _, valid = await ctx.tick().sample(port.rdata.valid)
                cycles += 1
                if valid:
                    beats += 1
                    if beats == 1:
                        out.append(cycles)
        out.append(ctx.get(bench.error))

    sim.add_testbench(master)
    sim.run()
    assert out.pop() == 0
    return out


def test_read_latency():
    """A read from an idle controller: to a closed bank (ACTIVE first), then to the row just
    opened, then to another row of that bank (PRECHARGE, ACTIVE). The row hit is the latency the
    ``ulx3s-85f`` configuration's cycle models assume for its memory port."""
    p = SDRAMParams(clk_hz=100_000_000, row_bits=3, init_wait_ns=500.0, init_refreshes=2)
    row = 1 << (p.col_bits + p.bank_bits)
    closed, hit, other = _read_latencies(p, [(0, 4), (8, 4), (row, 4)])
    assert hit <= get_config("ulx3s-85f").fmap_read_latency
    assert closed == hit + p.t_rcd_cycles
    assert other == closed + p.t_rp_cycles


# -- the chip model's checks -----------------------------------------------------------------------

class _Pins:
    """Drives the chip model's pins from a testbench, one command per cycle."""

    def __init__(self, ctx, model: SDRAMChipModel):
        self.ctx = ctx
        self.model = model
        self.p = model.params
        ctx.set(model.pins.cke, 1)

    async def cmd(self, command, *, ba=0, a=0, dq=None, dqm=0, cycles=1):
        pins = self.model.pins
        ras, cas, we = command
        self.ctx.set(pins.cs, int(command != CMD_NOP))
        self.ctx.set(pins.ras, ras)
        self.ctx.set(pins.cas, cas)
        self.ctx.set(pins.we, we)
        self.ctx.set(pins.ba, ba)
        self.ctx.set(pins.a, a)
        self.ctx.set(pins.dqm, dqm)
        self.ctx.set(pins.dq_oe, int(dq is not None))
        self.ctx.set(pins.dq_o, dq or 0)
        await self.ctx.tick()
        for name in ("cs", "ras", "cas", "we", "dq_oe"):
            self.ctx.set(getattr(pins, name), 0)
        if cycles > 1:
            await self.ctx.tick().repeat(cycles - 1)

    async def nop(self, cycles=1):
        if cycles > 0:
            await self.ctx.tick().repeat(cycles)

    async def init(self):
        p = self.p
        await self.nop(p.init_wait_cycles)
        await self.cmd(CMD_PRECHARGE, a=1 << A10, cycles=p.t_rp_cycles)
        for _ in range(p.init_refreshes):
            await self.cmd(CMD_REFRESH, cycles=p.t_rfc_cycles)
        await self.cmd(CMD_MODE, a=mode_register(p), cycles=p.t_mrd_cycles)
        assert self.ctx.get(self.model.initialized)


def _check_model(sequence, *, params=None, check_refresh=False, init=True):
    """Run ``sequence(pins)`` against a fresh model; its error code afterwards."""
    p = params or SDRAMParams.simulation()
    model = SDRAMChipModel(p, check_refresh=check_refresh)
    sim = Simulator(model)
    sim.add_clock(1e-8)
    out = {}

    async def bench(ctx):
        pins = _Pins(ctx, model)
        if init:
            await pins.init()
        await sequence(pins)
        await pins.nop(2)
        out["code"] = ctx.get(model.code)
        out["error"] = ctx.get(model.error)
        out["violations"] = ctx.get(model.violations)

    sim.add_testbench(bench)
    sim.run()
    assert bool(out["error"]) == (out["code"] != SDRAMError.NONE)
    return out["code"]


P = SDRAMParams.simulation()


def _act_then(command, gap, **kw):
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=1, a=3, cycles=gap)
        await pins.cmd(command, ba=1, **kw)
    return seq


def _act_pre_act(gap):
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=2, a=1, cycles=P.t_rc_cycles)
        await pins.cmd(CMD_PRECHARGE, ba=2, cycles=gap)
        await pins.cmd(CMD_ACTIVE, ba=2, a=1)
    return seq


def _act_act(gap, ba2):
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=0, a=1, cycles=gap)
        await pins.cmd(CMD_ACTIVE, ba=ba2, a=2)
    return seq


def _write_pre(gap):
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=0, a=1, cycles=P.t_ras_cycles)
        await pins.cmd(CMD_WRITE, ba=0, a=5, dq=0xBEEF, cycles=gap)
        await pins.cmd(CMD_PRECHARGE, ba=0)
    return seq


def _ref_then_act(gap):
    async def seq(pins):
        await pins.cmd(CMD_REFRESH, cycles=gap)
        await pins.cmd(CMD_ACTIVE, ba=0, a=1)
    return seq


def _read_then_write(gap):
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=0, a=1, cycles=P.t_rcd_cycles)
        await pins.cmd(CMD_READ, ba=0, a=2, cycles=gap)
        await pins.cmd(CMD_WRITE, ba=0, a=3, dq=1)
    return seq


def _single(command, **kw):
    async def seq(pins):
        await pins.cmd(command, **kw)
    return seq


def _open_then(command, **kw):
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=3, a=1, cycles=P.t_ras_cycles + 2)
        await pins.cmd(command, **kw)
    return seq


# (name, legal sequence, illegal sequence, the code the illegal one must give)
RULES = [
    ("tRCD", _act_then(CMD_READ, P.t_rcd_cycles, a=0),
     _act_then(CMD_READ, P.t_rcd_cycles - 1, a=0), SDRAMError.TRCD),
    ("tRAS", _act_then(CMD_PRECHARGE, P.t_ras_cycles),
     _act_then(CMD_PRECHARGE, P.t_ras_cycles - 1), SDRAMError.TRAS),
    ("tRP", _act_pre_act(P.t_rp_cycles), _act_pre_act(P.t_rp_cycles - 1), SDRAMError.TRP),
    ("active to open bank", _act_pre_act(P.t_rp_cycles), _act_act(P.t_rc_cycles, 0),
     SDRAMError.BANK_OPEN),
    ("tRRD", _act_act(P.t_rrd_cycles, 1), _act_act(P.t_rrd_cycles - 1, 1), SDRAMError.TRRD),
    ("tWR", _write_pre(P.t_wr_cycles), _write_pre(P.t_wr_cycles - 1), SDRAMError.TWR),
    ("tRFC", _ref_then_act(P.t_rfc_cycles), _ref_then_act(P.t_rfc_cycles - 1),
     SDRAMError.TRFC),
    ("bus turnaround", _read_then_write(P.cas_latency + 2),
     _read_then_write(P.cas_latency + 1), SDRAMError.BUS_CONFLICT),
    ("closed bank", _act_then(CMD_WRITE, P.t_rcd_cycles, dq=1),
     _single(CMD_READ, ba=2), SDRAMError.BANK_CLOSED),
    ("open bank refresh", _single(CMD_REFRESH), _open_then(CMD_REFRESH),
     SDRAMError.REFRESH_OPEN),
    ("mode register", _single(CMD_MODE, a=mode_register(P)), _single(CMD_MODE, a=0b0100011),
     SDRAMError.MODE),
    ("burst stop", _single(CMD_NOP), _single(CMD_BURST_STOP), SDRAMError.UNSUPPORTED),
    ("auto precharge", _act_then(CMD_READ, P.t_rcd_cycles, a=1),
     _act_then(CMD_READ, P.t_rcd_cycles, a=1 << A10), SDRAMError.UNSUPPORTED),
]


@pytest.mark.parametrize("name, legal, illegal, code", RULES, ids=[r[0] for r in RULES])
def test_model_flags_violation(name, legal, illegal, code):
    """Each rule: the sequence at the limit passes, one cycle short (or plainly wrong) is
    flagged with the rule's code."""
    assert _check_model(legal) == SDRAMError.NONE
    assert _check_model(illegal) == code


def test_model_trc_after_refresh_of_other_rows():
    """tRC itself: ACTIVE, PRECHARGE at tRAS, ACTIVE again before tRC has passed."""
    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=0, a=1, cycles=P.t_ras_cycles)
        await pins.cmd(CMD_PRECHARGE, ba=0, cycles=P.t_rc_cycles - P.t_ras_cycles - 1)
        await pins.cmd(CMD_ACTIVE, ba=0, a=1)
    p = SDRAMParams.simulation(t_rp_ns=10.0)   # so that tRP is met and only tRC is violated
    assert P.t_rc_cycles - P.t_ras_cycles - 1 >= p.t_rp_cycles
    assert _check_model(seq, params=p) == SDRAMError.TRC


def test_model_flags_commands_during_power_up():
    async def early(pins):
        await pins.nop(3)
        await pins.cmd(CMD_PRECHARGE, a=1 << A10)
    assert _check_model(early, init=False) == SDRAMError.INIT

    async def no_refresh(pins):
        await pins.nop(P.init_wait_cycles)
        await pins.cmd(CMD_PRECHARGE, a=1 << A10, cycles=P.t_rp_cycles)
        await pins.cmd(CMD_MODE, a=mode_register(P))
    assert _check_model(no_refresh, init=False) == SDRAMError.INIT

    async def active_before_mode(pins):
        await pins.nop(P.init_wait_cycles)
        await pins.cmd(CMD_PRECHARGE, a=1 << A10, cycles=P.t_rp_cycles)
        await pins.cmd(CMD_ACTIVE, ba=0, a=0)
    assert _check_model(active_before_mode, init=False) == SDRAMError.INIT


@pytest.mark.parametrize("late", [False, True])
def test_model_flags_late_refresh(late):
    interval = P.refresh_interval_cycles

    async def seq(pins):
        await pins.cmd(CMD_REFRESH, cycles=interval + int(late))
        await pins.cmd(CMD_REFRESH)
    code = _check_model(seq, check_refresh=True)
    assert code == (SDRAMError.REFRESH_LATE if late else SDRAMError.NONE)


def test_model_stores_data_with_mask():
    """WRITE with a byte mask, READ back after the CAS latency."""
    seen = {}

    async def seq(pins):
        await pins.cmd(CMD_ACTIVE, ba=1, a=2, cycles=P.t_rcd_cycles)
        await pins.cmd(CMD_WRITE, ba=1, a=7, dq=0xA1B2)
        await pins.cmd(CMD_WRITE, ba=1, a=7, dq=0xFFCC, dqm=0b10)   # upper byte masked
        await pins.cmd(CMD_READ, ba=1, a=7)
        await pins.nop(P.cas_latency - 1)
        seen["data"] = pins.ctx.get(pins.model.pins.dq_i)
    assert _check_model(seq) == SDRAMError.NONE
    assert seen["data"] == 0xA1CC
