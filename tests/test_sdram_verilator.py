"""The SDRAM controller and chip model under Verilator: a long random workload (hundreds of
thousands of cycles, many refreshes) from a compiled C++ harness, against a reference memory in
the harness; the model must see no protocol violation."""

from __future__ import annotations

import re
import subprocess

import pytest
from test_sdram import SDRAMBench

from hw.sdram import SDRAMParams
from sim.verilate import build_cpp_harness, export_verilog, verilator_name

TOP = "sdram_bench"

HARNESS = r"""
// Random memory-port traffic with random stalls on all three streams; a std::vector is the
// reference memory. Prints one line of key=value results.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <random>
#include <vector>
#include <verilated.h>
#include "V@TOP@.h"

int main(int argc, char **argv) {
    Verilated::commandArgs(argc, argv);
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s SEED OPS STALL\n", argv[0]);
        return 2;
    }
    const uint64_t seed = std::strtoull(argv[1], nullptr, 10);
    const long n_ops = std::strtol(argv[2], nullptr, 10);
    const double stall = std::strtod(argv[3], nullptr);
    const uint32_t words = @WORDS@u, max_len = @MAX_LEN@u;
    const int addr_bits = @ADDR_BITS@, len_bits = @LEN_BITS@;

    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> coin(0.0, 1.0);
    std::vector<uint16_t> mem(words, 0);
    std::deque<uint64_t> cmds, wbeats;
    std::deque<uint16_t> expected;
    uint64_t write_words = 0;
    for (long i = 0; i < n_ops; i++) {
        uint32_t len = 1 + rng() % max_len;
        uint32_t addr = rng() % words;
        bool write = coin(rng) < 0.5;
        cmds.push_back(uint64_t(addr) | uint64_t(len) << addr_bits
                       | uint64_t(write) << (addr_bits + len_bits));
        for (uint32_t k = 0; k < len; k++) {
            uint32_t a = (addr + k) % words;
            if (write) {
                uint16_t data = rng();
                uint16_t mask = coin(rng) < 0.7 ? 3 : rng() % 4;
                uint16_t old = mem[a];
                if (mask & 1) old = (old & 0xFF00) | (data & 0x00FF);
                if (mask & 2) old = (old & 0x00FF) | (data & 0xFF00);
                mem[a] = old;
                wbeats.push_back(uint64_t(data) | uint64_t(mask) << 16);
                write_words++;
            } else {
                expected.push_back(mem[a]);
            }
        }
    }
    const uint64_t read_words = expected.size();

    V@TOP@ *top = new V@TOP@;
    top->clk = 0;
    top->rst = 1;
    for (int i = 0; i < 4; i++) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }
    top->rst = 0;

    bool cmd_valid = false, w_valid = false;
    uint64_t cycles = 0, mismatches = 0, busy_cycles = 0, beats = 0;
    const uint64_t limit = 200000000ull;
    while ((!cmds.empty() || !wbeats.empty() || !expected.empty()) && cycles < limit) {
        if (!cmd_valid && !cmds.empty() && coin(rng) >= stall) cmd_valid = true;
        if (!w_valid && !wbeats.empty() && coin(rng) >= stall) w_valid = true;
        bool r_ready = coin(rng) >= stall;
        top->@CMD_VALID@ = cmd_valid;
        top->@CMD_PAYLOAD@ = cmd_valid ? cmds.front() : 0;
        top->@W_VALID@ = w_valid;
        top->@W_PAYLOAD@ = w_valid ? wbeats.front() : 0;
        top->@R_READY@ = r_ready;
        top->clk = 0;
        top->eval();
        bool cmd_fire = cmd_valid && top->@CMD_READY@;
        bool w_fire = w_valid && top->@W_READY@;
        bool r_fire = r_ready && top->@R_VALID@;
        if (r_fire) {
            if (expected.empty() || top->@R_PAYLOAD@ != expected.front()) {
                if (mismatches < 5)
                    std::fprintf(stderr, "cycle %llu: read %#x, expected %#x\n",
                                 (unsigned long long)cycles, (unsigned)top->@R_PAYLOAD@,
                                 expected.empty() ? 0u : (unsigned)expected.front());
                mismatches++;
            }
            if (!expected.empty()) expected.pop_front();
        }
        top->clk = 1;
        top->eval();
        if (cmd_fire) { cmds.pop_front(); cmd_valid = false; }
        if (w_fire) { wbeats.pop_front(); w_valid = false; }
        if (top->@INIT_DONE@) busy_cycles++;
        beats += w_fire + r_fire;
        cycles++;
    }
    std::printf("cycles=%llu busy_cycles=%llu beats=%llu read_words=%llu write_words=%llu "
                "left=%llu mismatches=%llu violations=%u code=%u refreshes=%u\n",
                (unsigned long long)cycles, (unsigned long long)busy_cycles,
                (unsigned long long)beats, (unsigned long long)read_words,
                (unsigned long long)write_words,
                (unsigned long long)(cmds.size() + wbeats.size() + expected.size()),
                (unsigned long long)mismatches, (unsigned)top->violations,
                (unsigned)top->code, (unsigned)top->refreshes);
    top->final();
    delete top;
    return 0;
}
"""


def _harness_source(params: SDRAMParams, max_len: int) -> str:
    names = {
        "CMD_VALID": "port__cmd__valid", "CMD_READY": "port__cmd__ready",
        "CMD_PAYLOAD": "port__cmd__payload", "W_VALID": "port__wdata__valid",
        "W_READY": "port__wdata__ready", "W_PAYLOAD": "port__wdata__payload",
        "R_VALID": "port__rdata__valid", "R_READY": "port__rdata__ready",
        "R_PAYLOAD": "port__rdata__payload", "INIT_DONE": "init_done",
    }
    text = HARNESS.replace("@TOP@", TOP)
    for key, name in names.items():
        text = text.replace(f"@{key}@", verilator_name(name))
    text = text.replace("@WORDS@", str(params.words)).replace("@MAX_LEN@", str(max_len))
    text = text.replace("@ADDR_BITS@", str(params.addr_bits))
    return text.replace("@LEN_BITS@", str(max_len.bit_length()))


@pytest.mark.verilator
@pytest.mark.parametrize("seed, stall", [(1, 0.3), (2, 0.0)])
def test_sdram_random_workload_verilator(tmp_path, seed, stall, capsys):
    # The real refresh interval and row length; a shortened power-up wait.
    params = SDRAMParams(clk_hz=100_000_000, row_bits=5, col_bits=9, init_wait_ns=2_000.0,
                         init_refreshes=2)
    max_len = 64
    bench = SDRAMBench(params, phy_stages=1, max_len=max_len)
    verilog = tmp_path / f"{TOP}.v"
    verilog.write_text(export_verilog(bench, TOP, emit_src=False))
    harness = tmp_path / "sdram_harness.cpp"
    harness.write_text(_harness_source(params, max_len))
    exe = build_cpp_harness([verilog], TOP, [harness])
    run = subprocess.run([str(exe), str(seed), "6000", str(stall)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    stats = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", run.stdout)}
    with capsys.disabled():
        rate = stats["beats"] * params.data_bytes / stats["busy_cycles"]
        print(f"\nVerilator SDRAM workload (stall {stall}): {stats['cycles']} cycles, "
              f"{stats['read_words']} words read, {stats['write_words']} written, "
              f"{stats['refreshes']} refreshes, {rate:.3f} bytes/cycle")
    assert stats["left"] == 0, run.stdout
    assert stats["mismatches"] == 0, run.stderr
    assert stats["violations"] == 0, run.stdout
    assert stats["read_words"] > 10_000 and stats["write_words"] > 10_000
    # One refresh per interval at least: the model would flag a late one anyway.
    assert stats["refreshes"] >= stats["cycles"] // params.refresh_interval_cycles
