"""cocotb bench for the stream accumulator of ``tests/test_toolchain.py`` (top ``stream_acc``).

Run by ``run_cocotb`` inside Verilator, not collected by pytest. Both streams see random stalls
and every output is compared with a plain-integer reference. Settings come from the
environment:

* ``TOOLCHAIN_BENCH_WORDS``: input words to send (default 3000), ``TOOLCHAIN_BENCH_SEED``
  (default 1), ``TOOLCHAIN_BENCH_STALL``: per-cycle stall probability of each side (0.25).
* ``TOOLCHAIN_BENCH_STATS``: path of a JSON file that receives the cycles, transfers and wall
  seconds of the run.
* ``TOOLCHAIN_BENCH_CORRUPT=1`` flips one bit of the reference, so that the bench must fail;
  the toolchain tests use it to check that a failing cocotb test is reported.
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

DATA_BITS = 8
ACC_BITS = 16
LAST_BIT = 1 << DATA_BITS


def make_words(rng: random.Random, n: int) -> list[int]:
    """``n`` input words (data | last << 8); the first packet is long enough to wrap 16 bits."""
    words = [rng.randrange(200, 256) for _ in range(min(n, 400))]
    words[-1] |= LAST_BIT
    while len(words) < n:
        words.append(rng.randrange(1 << DATA_BITS) | (LAST_BIT if rng.random() < 0.05 else 0))
    return words


def reference(words: list[int]) -> list[int]:
    """Running sum of each packet's data, including the current word, modulo 2**16."""
    out = []
    acc = 0
    for word in words:
        total = (acc + (word & (LAST_BIT - 1))) % (1 << ACC_BITS)
        out.append(total)
        acc = 0 if word & LAST_BIT else total
    return out


@cocotb.test()
async def accumulates_packets_under_backpressure(dut):
    n = int(os.environ.get("TOOLCHAIN_BENCH_WORDS", "3000"))
    rng = random.Random(int(os.environ.get("TOOLCHAIN_BENCH_SEED", "1")))
    stall = float(os.environ.get("TOOLCHAIN_BENCH_STALL", "0.25"))
    words = make_words(rng, n)
    expected = reference(words)
    assert sum(w & (LAST_BIT - 1) for w in words[:400]) >= 1 << ACC_BITS, "no wrap exercised"
    if os.environ.get("TOOLCHAIN_BENCH_CORRUPT") == "1":
        expected[len(expected) // 2] ^= 1

    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    got = []
    sent = 0
    valid = False
    cycles = 0
    limit = 20 * n + 100
    start = time.perf_counter()
    while len(got) < n:
        assert cycles < limit, f"stalled: {sent} words in, {len(got)} out after {cycles} cycles"
        if not valid and sent < n and rng.random() >= stall:
            valid = True
            dut.i__payload.value = words[sent]
        dut.i__valid.value = int(valid)
        dut.o__ready.value = int(rng.random() >= stall)
        # Sample the handshakes once this cycle's inputs and combinational outputs settled.
        await ReadOnly()
        in_fire = valid and int(dut.i__ready.value)
        if int(dut.o__valid.value) and int(dut.o__ready.value):
            got.append(dut.o__payload.value.to_unsigned())
        await RisingEdge(dut.clk)
        cycles += 1
        if in_fire:
            sent += 1
            valid = False
    seconds = time.perf_counter() - start

    stats_path = os.environ.get("TOOLCHAIN_BENCH_STATS")
    if stats_path:
        with open(stats_path, "w") as f:
            json.dump({"cycles": cycles, "inputs": sent, "outputs": len(got),
                       "seconds": seconds}, f)
    mismatches = [k for k, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b]
    assert not mismatches, (f"{len(mismatches)} outputs differ, first at {mismatches[0]}: "
                            f"got {got[mismatches[0]]}, expected {expected[mismatches[0]]}")
