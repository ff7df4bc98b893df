"""The memory port (hw/memport.py) and its behavioural memory, against a Python dict.

Also the traffic generator and checker that ``tests/test_sdram.py`` reuses: random reads and
writes of random lengths, random masks, random stalls on all three streams.
"""

from __future__ import annotations

import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from streams import stream_get, stream_put

from hw.config import CONFIGS, get_config
from hw.memport import MIN_MODEL_LATENCY, MemPortSignature, ModelMemory


def random_ops(rng: random.Random, n: int, *, data_bytes: int, space: int, max_len: int,
               region: tuple[int, int] | None = None, read_share: float = 0.5):
    """``n`` random commands: ``(write, addr, len, beats)``; ``beats`` are ``(data, mask)`` for
    writes, ``None`` for reads. Addresses fall in ``region`` (``(start, size)``, default the
    whole ``space``); bursts stay inside it."""
    start, size = region if region is not None else (0, space)
    ops = []
    full = (1 << data_bytes) - 1
    for _ in range(n):
        length = rng.randint(1, min(max_len, size))
        addr = start + rng.randrange(size - length + 1)
        if rng.random() < read_share:
            ops.append((False, addr, length, None))
        else:
            beats = [(rng.getrandbits(8 * data_bytes),
                      full if rng.random() < 0.7 else rng.getrandbits(data_bytes))
                     for _ in range(length)]
            ops.append((True, addr, length, beats))
    return ops


def expected_reads(ops, *, data_bytes: int, space: int, initial=None) -> list[int]:
    """The read beats a correct memory returns for ``ops``, in order (a dict memory).
    Words never written read as ``initial[addr]`` (default: 0)."""
    mem = dict(initial or {})
    out = []
    for write, addr, length, beats in ops:
        for i in range(length):
            a = (addr + i) % space
            if write:
                data, mask = beats[i]
                old = mem.get(a, 0)
                for b in range(data_bytes):
                    if mask >> b & 1:
                        sel = 0xFF << (8 * b)
                        old = (old & ~sel) | (data & sel)
                mem[a] = old
            else:
                out.append(mem.get(a, 0))
    return out


def add_traffic(sim: Simulator, port, ops, *, rng: random.Random, stall: float,
                expected: list[int], result: dict):
    """Add three testbenches to ``sim`` that drive ``port`` (a memory's ``bus``, from the
    master's side) with ``ops`` and check the read data against ``expected``. ``result``
    receives ``"reads"``, the number of beats received and checked."""
    cmd_rng, w_rng, r_rng = (random.Random(rng.random()) for _ in range(3))

    async def send_cmds(ctx):
        for write, addr, length, _ in ops:
            await stream_put(ctx, port.cmd, {"addr": addr, "len": length, "write": write},
                             rng=cmd_rng, stall=stall)

    async def send_writes(ctx):
        for write, _, _, beats in ops:
            if write:
                for data, mask in beats:
                    await stream_put(ctx, port.wdata, {"data": data, "mask": mask},
                                     rng=w_rng, stall=stall)

    async def check_reads(ctx):
        got = []
        for index, want in enumerate(expected):
            beat = await stream_get(ctx, port.rdata, rng=r_rng, stall=stall)
            got.append(int(beat.data))
            assert got[-1] == want, (f"read beat {index}: got {got[-1]:#x}, expected "
                                     f"{want:#x}")
        result["reads"] = len(got)

    sim.add_testbench(send_cmds)
    sim.add_testbench(send_writes)
    sim.add_testbench(check_reads)


class _Master(wiring.Component):
    """Test top: the memory under test behind a port the testbench drives as its master."""

    def __init__(self, memory):
        self._memory = memory
        super().__init__({"port": wiring.In(memory.bus.signature.flip())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self._memory
        wiring.connect(m, wiring.flipped(self.port), self._memory.bus)
        return m


def test_signature_fields():
    sig = MemPortSignature(2, 24)
    assert sig.data_bytes == 2 and sig.addr_bits == 24 and sig.max_len == 256
    cmd = sig.members["cmd"].signature.members["payload"].shape
    assert cmd.size == 24 + 9 + 1
    assert {name for name, _ in cmd} == {"addr", "len", "write"}
    assert sig.members["wdata"].signature.members["payload"].shape.size == 16 + 2
    assert sig.members["rdata"].signature.members["payload"].shape.size == 16
    assert sig == MemPortSignature(2, 24) and sig != MemPortSignature(2, 24, max_len=8)
    cfg = get_config("ulx3s-85f")
    assert MemPortSignature.for_config(cfg, 24).data_bytes == cfg.fmap_port_bytes


@pytest.mark.parametrize("kwargs, message", [
    ({"depth": 100, "data_bytes": 2, "latency": 5}, "power of two"),
    ({"depth": 64, "data_bytes": 0, "latency": 5}, "data_bytes"),
    ({"depth": 64, "data_bytes": 2, "latency": 2}, "latency"),
    ({"depth": 64, "data_bytes": 2}, "latency"),
    ({"depth": 4, "data_bytes": 1, "latency": 5, "init": [0] * 5}, "init"),
])
def test_model_memory_rejects(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ModelMemory(**kwargs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_memory_follows_config(name):
    cfg = get_config(name)
    mem = ModelMemory(cfg, depth=64)
    assert mem.data_bytes == cfg.fmap_port_bytes
    assert mem.latency == cfg.fmap_read_latency
    assert mem.bus.signature.data_bytes == cfg.fmap_port_bytes


def _latency_and_rate(mem: ModelMemory, burst: int):
    dut = _Master(mem)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    seen = {}

    async def bench(ctx):
        port = dut.port
        ctx.set(port.rdata.ready, 1)
        ctx.set(port.cmd.payload, {"addr": 5, "len": burst, "write": 0})
        ctx.set(port.cmd.valid, 1)
        await ctx.tick().until(port.cmd.ready)
        ctx.set(port.cmd.valid, 0)
        # Count clock edges from the command's transfer to the first data beat's transfer.
        cycles = 1
        while not ctx.get(port.rdata.valid):
            await ctx.tick()
            cycles += 1
        seen["latency"] = cycles
        beats = 0
        start = cycles
        while beats < burst:
            if ctx.get(port.rdata.valid):
                beats += 1
            await ctx.tick()
            cycles += 1
        seen["beat_cycles"] = cycles - start

    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_memory_latency_and_bandwidth(name):
    """First beat transferred exactly ``latency`` edges after the command, then one per cycle."""
    cfg = get_config(name)
    mem = ModelMemory(cfg, depth=1024)
    seen = _latency_and_rate(mem, 64)
    assert seen["latency"] == cfg.fmap_read_latency
    assert seen["beat_cycles"] == 64
    assert ModelMemory(data_bytes=1, latency=MIN_MODEL_LATENCY, depth=8)


@pytest.mark.parametrize("data_bytes, latency, stall, seed", [
    (2, 10, 0.0, 1),
    (2, 10, 0.4, 2),
    (8, 20, 0.3, 3),
    (1, MIN_MODEL_LATENCY, 0.5, 4),
])
def test_model_memory_random_traffic(data_bytes, latency, stall, seed):
    rng = random.Random(seed)
    depth = 256
    init = [rng.getrandbits(8 * data_bytes) for _ in range(depth)]
    mem = ModelMemory(data_bytes=data_bytes, latency=latency, depth=depth, max_len=32,
                      init=init)
    check_random_traffic(mem, rng, data_bytes=data_bytes, depth=depth, init=init, stall=stall)


def check_random_traffic(mem, rng, *, data_bytes, depth, init, stall):
    """60 random bursts (max 32 words) through ``mem``; every read returns what was written."""
    ops = random_ops(rng, 60, data_bytes=data_bytes, space=depth, max_len=32)
    want = expected_reads(ops, data_bytes=data_bytes, space=depth, initial=dict(enumerate(init)))
    assert want, "the random program must read something"
    dut = _Master(mem)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    result = {}
    add_traffic(sim, dut.port, ops, rng=rng, stall=stall, expected=want, result=result)
    sim.run()
    assert result["reads"] == len(want)


def test_model_memory_wraps_addresses():
    """Addresses wider than the depth wrap; a burst over the top continues at word 0."""
    rng = random.Random(7)
    mem = ModelMemory(data_bytes=2, latency=4, depth=16, addr_bits=6, max_len=8)
    ops = [(True, 60, 8, [(0x1000 + i, 3) for i in range(8)]), (False, 12, 8, None)]
    want = [0x1000 + i for i in range(8)]  # words 12..15 then 0..3
    dut = _Master(mem)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    result = {}
    add_traffic(sim, dut.port, ops, rng=rng, stall=0.2, expected=want, result=result)
    sim.run()
    assert result["reads"] == 8


def test_checker_catches_a_wrong_memory():
    """The traffic checker itself must fail when the data is wrong."""
    rng = random.Random(9)
    mem = ModelMemory(data_bytes=2, latency=4, depth=64, max_len=8, init=[1] * 64)
    ops = [(False, 0, 4, None)]
    dut = _Master(mem)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    add_traffic(sim, dut.port, ops, rng=rng, stall=0.0, expected=[1, 1, 2, 1], result={})
    with pytest.raises(AssertionError, match="read beat 2"):
        sim.run()
