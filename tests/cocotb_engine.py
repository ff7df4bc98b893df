"""cocotb bench of hw.engine.Engine: runs the layer jobs of $ENGINE_JOBS one after another.

Each job (JSON, written by tests/test_engine_cocotb.py) holds the packed load beats, the command,
the packed input beats, the bit positions of the output beat and the expected output values.
Every stream sees random back-pressure: input valid and output ready drop on random cycles.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


async def _reset(dut):
    dut.rst.value = 1
    for name in ("load__valid", "cmd__valid", "i__valid", "o__ready"):
        getattr(dut, name).value = 0
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0


async def _send(dut, name, payloads, rng, stall):
    """Drive payloads on a stream: valid and payload stay put until a cycle with ready."""
    valid = getattr(dut, f"{name}__valid")
    payload = getattr(dut, f"{name}__payload")
    ready = getattr(dut, f"{name}__ready")
    for p in payloads:
        while rng.random() < stall:
            valid.value = 0
            await RisingEdge(dut.clk)
        payload.value = p
        valid.value = 1
        while True:
            await ReadOnly()              # settled values before the edge
            took = int(ready.value)
            await RisingEdge(dut.clk)
            if took:
                break
    valid.value = 0


async def _receive(dut, job, rng, stall):
    lanes, width = job["lanes"], job["width"]
    count_off, count_w, last_off = job["count_off"], job["count_w"], job["last_off"]
    values = []
    while True:
        ready = 0 if rng.random() < stall else 1
        dut.o__ready.value = ready
        await ReadOnly()
        fire = ready and int(dut.o__valid.value)
        beat = int(dut.o__payload.value) if fire else 0
        await RisingEdge(dut.clk)
        if fire:
            n = (beat >> count_off) & ((1 << count_w) - 1)
            assert 1 <= n <= lanes
            values.extend((beat >> (width * k)) & ((1 << width) - 1) for k in range(n))
            if (beat >> last_off) & 1:
                dut.o__ready.value = 0
                return values


@cocotb.test()
async def engine_layers(dut):
    jobs = json.loads(open(os.environ["ENGINE_JOBS"]).read())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    await _reset(dut)
    for i, job in enumerate(jobs):
        rng = random.Random(job["seed"])
        stall = job["stall"]
        await _send(dut, "load", job["loads"], rng, stall)
        await _send(dut, "cmd", [job["cmd"]], rng, 0.0)
        feeder = cocotb.start_soon(_send(dut, "i", job["inputs"], random.Random(job["seed"] + 1),
                                         stall))
        got = await _receive(dut, job, random.Random(job["seed"] + 2), stall)
        await feeder
        assert got == job["expect"], f"job {i} ({job['name']}): output differs"
