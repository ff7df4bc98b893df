// Compiled Verilator harness for hw.engine.Engine: runs one layer job, writes the output beats.
//
// usage: engine_layer JOB OUT
//
// JOB (little-endian uint32 words, written by sim/layer.py):
//   magic 0x454e474e, version 1,
//   n_load, load_words, cmd_words, n_in, in_words, out_words, last_bit,
//   max_cycles, in_stall_permille, out_stall_permille, seed, 0, 0,
//   n_load x load_words (packed LoadBeat payloads), cmd_words (packed LayerCmd),
//   n_in x in_words (packed InBeat payloads).
// OUT: uint32 n_beats, uint64 cycles (command accepted .. last beat taken, inclusive),
//      uint64 in_done_cycle (relative: cycle the last input beat was taken),
//      then n_beats x out_words (raw Beat payloads).
//
// The streams keep Amaranth's rules: valid and payload stay put until ready; a stall
// probability holds input valid / output ready low on random cycles (xorshift generator).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "Vengine_top.h"
#include "verilated.h"
#include "harness_io.h"

using harness::fail;
using harness::get_words;
using harness::set_words;
using harness::stall;


int main(int argc, char** argv) {
    harness::name = "engine_layer";
    if (argc != 3) fail("usage: engine_layer JOB OUT");
    const std::vector<uint32_t> job = harness::read_words(argv[1]);
    if (job.size() < 15 || job[0] != 0x454e474eu || job[1] != 1) fail("not a version-1 job");
    const uint32_t n_load = job[2], load_words = job[3], cmd_words = job[4], n_in = job[5];
    const uint32_t in_words = job[6], out_words = job[7], last_bit = job[8];
    const uint32_t max_cycles = job[9], in_stall = job[10], out_stall = job[11];
    harness::rng_state = job[12] ? job[12] : 1;
    const std::size_t need = 15 + std::size_t(n_load) * load_words + cmd_words +
                             std::size_t(n_in) * in_words;
    if (job.size() != need) fail("job file has the wrong length");
    const uint32_t* loads = job.data() + 15;
    const uint32_t* cmd = loads + std::size_t(n_load) * load_words;
    const uint32_t* in = cmd + cmd_words;

    Verilated::commandArgs(argc, argv);
    auto* top = new Vengine_top;
    // reset, then load the memories (the load stream is always ready)
    harness::reset_and_load(top, loads, n_load, load_words);

    set_words(top->cmd___05Fpayload, cmd, cmd_words);
    top->cmd___05Fvalid = 1;
    std::vector<uint32_t> beats;
    std::vector<uint32_t> beat(out_words);
    uint32_t idx = 0, n_beats = 0;
    uint64_t cycles = 0, started = 0, in_done = 0;
    bool running = false, done = false;
    bool in_valid = false, out_ready = false;
    for (uint64_t cycle = 0; cycle < max_cycles && !done; ++cycle) {
        if (!in_valid && idx < n_in && !stall(in_stall)) {
            in_valid = true;
            set_words(top->i___05Fpayload, in + std::size_t(idx) * in_words, in_words);
        }
        top->i___05Fvalid = in_valid;
        out_ready = !stall(out_stall);
        top->o___05Fready = out_ready;
        top->clk = 0;
        top->eval();
        const bool cmd_fire = top->cmd___05Fvalid && top->cmd___05Fready;
        const bool in_fire = in_valid && top->i___05Fready;
        const bool out_fire = top->o___05Fvalid && out_ready;
        if (out_fire) {
            get_words(top->o___05Fpayload, beat.data(), out_words);
            beats.insert(beats.end(), beat.begin(), beat.end());
            ++n_beats;
            if ((beat[last_bit / 32] >> (last_bit % 32)) & 1) done = true;
        }
        top->clk = 1;
        top->eval();
        if (cmd_fire) {
            running = true;
            started = cycle;
            top->cmd___05Fvalid = 0;
        }
        if (in_fire) {
            in_valid = false;
            if (++idx == n_in) in_done = cycle;
        }
        if (done) cycles = cycle - started + 1;
    }
    top->final();
    delete top;
    if (!running) fail("the engine never took the command");
    if (!done) {
        std::fprintf(stderr, "engine_layer: no last beat after %u cycles (%u beats, %u of %u "
                     "inputs taken)\n", max_cycles, n_beats, idx, n_in);
        return 3;
    }
    FILE* o = std::fopen(argv[2], "wb");
    if (!o) fail("cannot write the output file");
    in_done -= started;
    std::fwrite(&n_beats, 4, 1, o);
    std::fwrite(&cycles, 8, 1, o);
    std::fwrite(&in_done, 8, 1, o);
    std::fwrite(beats.data(), 4, beats.size(), o);
    std::fclose(o);
    return 0;
}
