// Compiled Verilator harness for sim.design.SimAccelerator: loads a model, streams one image in,
// collects the class scores and the cycle counts of every step.
//
// usage: accel JOB OUT [TRACE_FILE TRACE_CYCLES]
//   (a trace covers the first TRACE_CYCLES cycles of the frame, after the memories are loaded)
//
// JOB (little-endian uint32 words, written by sim/run.py):
//   magic 0x4c434341 ("ACCL"), version 1,
//   n_load, load_words, n_in, in_words, max_cycles, in_stall_permille, out_stall_permille,
//   seed, tap_words, 0,
//   n_load x load_words (packed LoadBeat payloads: weights, parameters, schedule rows),
//   n_in x in_words (packed InBeat payloads: the image).
// OUT (little-endian):
//   uint32 status (0 done, 3 no last score within max_cycles), uint32 n_scores,
//   uint64 device_cycles (the design's own count of the frame), uint64 cycles (first input
//   beat offered .. last score taken, inclusive), uint64 rd_words, uint64 wr_words,
//   uint32 mem_error (the memory model saw a protocol violation: SDRAM timing),
//   uint32 n_records, then per record: uint32 step, uint64 cycles, uint64 rd_words,
//   uint64 wr_words (a record per step, in order; on a timeout the last one is unfinished),
//   then n_scores x uint32 scores, then uint32 n_taps and n_taps x tap_words (every beat the
//   engine handed on: the tap port's payload).
// Progress on stdout: "step <index> <cycle>" as a step starts, "done <cycle>" at the end.
//
// Streams keep Amaranth's rules: valid and payload stay put until ready; a stall probability
// holds input valid / output ready low on random cycles (xorshift generator).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "Vaccel_top.h"
#include "verilated.h"
#include "harness_io.h"

using harness::fail;
using harness::get_words;
using harness::set_words;
using harness::stall;
#if VM_TRACE_FST
#include "verilated_fst_c.h"
typedef VerilatedFstC Trace;
#elif VM_TRACE
#include "verilated_vcd_c.h"
typedef VerilatedVcdC Trace;
#endif

namespace {

struct Record {
    uint32_t step;
    uint64_t start, rd0, wr0;
    uint64_t cycles, rd, wr;
};

}  // namespace

int main(int argc, char** argv) {
    harness::name = "accel";
    if (argc != 3 && argc != 5) fail("usage: accel JOB OUT [TRACE_FILE TRACE_CYCLES]");
    const std::vector<uint32_t> job = harness::read_words(argv[1]);
    const std::size_t head = 13;
    if (job.size() < head || job[0] != 0x4c434341u || job[1] != 1) fail("not a version-1 job");
    const uint32_t n_load = job[2], load_words = job[3], n_in = job[4], in_words = job[5];
    const uint32_t max_cycles = job[6], in_stall = job[7], out_stall = job[8];
    harness::rng_state = job[9] ? job[9] : 1;
    const uint32_t tap_words = job[10];
    std::vector<uint32_t> taps;
    std::vector<uint32_t> tap(tap_words);
    uint32_t n_taps = 0;
    const std::size_t need = head + std::size_t(n_load) * load_words +
                             std::size_t(n_in) * in_words;
    if (job.size() != need) fail("job file has the wrong length");
    const uint32_t* loads = job.data() + head;
    const uint32_t* in = loads + std::size_t(n_load) * load_words;

    Verilated::commandArgs(argc, argv);
    auto* top = new Vaccel_top;
#if VM_TRACE
    Trace* trace = nullptr;
    uint64_t trace_cycles = 0;
    if (argc == 5) {
        Verilated::traceEverOn(true);
        trace = new Trace;
        top->trace(trace, 99);
        trace->open(argv[3]);
        trace_cycles = std::strtoull(argv[4], nullptr, 10);
    }
#else
    if (argc == 5) fail("this build has no tracing; build it with trace enabled");
#endif
    // half-cycles since the frame began (the trace covers the frame, not the loading)
    uint64_t now = 0;
    bool in_frame = false;
    auto half = [&](int clk) {
        top->clk = clk;
        top->eval();
#if VM_TRACE
        if (trace && in_frame && now / 2 < trace_cycles) trace->dump(now);
#endif
        if (in_frame) ++now;
    };
    // reset, then load the memories (the load stream is always ready); not traced
    harness::reset_and_load(top, loads, n_load, load_words);
    in_frame = true;

    std::vector<uint32_t> scores;
    std::vector<Record> records;
    uint32_t idx = 0;
    uint64_t cycle = 0;
    bool in_valid = false, done = false, was_busy = false;
    uint32_t cur_step = 0;
    for (; cycle < max_cycles && !done; ++cycle) {
        if (!in_valid && idx < n_in && !stall(in_stall)) {
            in_valid = true;
            set_words(top->i___05Fpayload, in + std::size_t(idx) * in_words, in_words);
        }
        top->i___05Fvalid = in_valid;
        const bool out_ready = !stall(out_stall);
        top->o___05Fready = out_ready;
        top->clk = 0;
        top->eval();
        const bool in_fire = in_valid && top->i___05Fready;
        const bool out_fire = top->o___05Fvalid && out_ready;
        const uint64_t payload = top->o___05Fpayload;
        if (top->tap_valid) {
            get_words(top->tap, tap.data(), tap_words);
            taps.insert(taps.end(), tap.begin(), tap.end());
            ++n_taps;
        }
        half(1);
        half(0);
        if (in_fire) {
            in_valid = false;
            ++idx;
        }
        if (out_fire) {
            scores.push_back(static_cast<uint32_t>(payload));
            if ((payload >> 32) & 1) done = true;
        }
        // the step bookkeeping, on the state after this edge
        const bool busy = top->busy;
        const uint32_t step = top->step;
        const uint64_t rd = top->rd_words, wr = top->wr_words;
        if (!records.empty() && (!busy || step != cur_step)) {
            Record& r = records.back();
            if (r.cycles == 0) {
                r.cycles = cycle + 1 - r.start;
                r.rd = rd - r.rd0;
                r.wr = wr - r.wr0;
            }
        }
        if (busy && (!was_busy || step != cur_step)) {
            records.push_back(Record{step, cycle + 1, rd, wr, 0, 0, 0});
            std::printf("step %u %llu\n", step, static_cast<unsigned long long>(cycle + 1));
            std::fflush(stdout);
        }
        was_busy = busy;
        cur_step = step;
    }
    if (!records.empty() && records.back().cycles == 0) {
        Record& r = records.back();
        r.cycles = cycle - r.start;
        r.rd = top->rd_words - r.rd0;
        r.wr = top->wr_words - r.wr0;
    }
    std::printf("done %llu\n", static_cast<unsigned long long>(cycle));
    std::fflush(stdout);
    const uint32_t status = done ? 0 : 3;
    const uint64_t device_cycles = top->cycles, rd_words = top->rd_words,
                   wr_words = top->wr_words;
    const uint32_t mem_error = top->mem_error;
#if VM_TRACE
    if (trace) {
        trace->close();
        delete trace;
    }
#endif
    top->final();
    delete top;
    FILE* o = std::fopen(argv[2], "wb");
    if (!o) fail("cannot write the output file");
    const uint32_t n_scores = static_cast<uint32_t>(scores.size());
    const uint32_t n_records = static_cast<uint32_t>(records.size());
    std::fwrite(&status, 4, 1, o);
    std::fwrite(&n_scores, 4, 1, o);
    std::fwrite(&device_cycles, 8, 1, o);
    std::fwrite(&cycle, 8, 1, o);
    std::fwrite(&rd_words, 8, 1, o);
    std::fwrite(&wr_words, 8, 1, o);
    std::fwrite(&mem_error, 4, 1, o);
    std::fwrite(&n_records, 4, 1, o);
    for (const Record& r : records) {
        std::fwrite(&r.step, 4, 1, o);
        std::fwrite(&r.cycles, 8, 1, o);
        std::fwrite(&r.rd, 8, 1, o);
        std::fwrite(&r.wr, 8, 1, o);
    }
    std::fwrite(scores.data(), 4, scores.size(), o);
    std::fwrite(&n_taps, 4, 1, o);
    std::fwrite(taps.data(), 4, taps.size(), o);
    std::fclose(o);
    return status;
}
