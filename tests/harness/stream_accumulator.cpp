// C++ harness for the stream accumulator of tests/test_toolchain.py (top module
// "stream_acc", 8-bit data + last in, 16-bit sums out).
//
// usage: Vstream_acc CYCLES INPUT OUTPUT SEED STALL_PERCENT [TRACE]
//
// INPUT holds little-endian uint16 words (bits 0..7 data, bit 8 last); OUTPUT receives one
// little-endian uint16 per output transfer. Both streams see random stalls: the producer holds
// valid low, the consumer holds ready low, each with probability STALL_PERCENT/100 per cycle,
// from a xorshift64* generator seeded with SEED. The producer keeps valid and the payload
// steady until the transfer happens. Runs CYCLES clock cycles after two cycles of reset and
// prints one line of key=value pairs: cycles, inputs and outputs transferred, a checksum
// sum(out[k] * (2k+1)) mod 2**64 and the seconds the cycle loop took. TRACE (a .vcd or .fst
// path) is only accepted by a build with tracing.

#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "Vstream_acc.h"
#include "verilated.h"
#if VM_TRACE_FST
#include "verilated_fst_c.h"
using Tracer = VerilatedFstC;
#elif VM_TRACE_VCD
#include "verilated_vcd_c.h"
using Tracer = VerilatedVcdC;
#endif

namespace {

struct Rng {
    uint64_t state;
    uint64_t next() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return state * 0x2545F4914F6CDD1DULL;
    }
    // true with probability percent/100
    bool chance(unsigned percent) { return (next() >> 32) % 100 < percent; }
};

[[noreturn]] void fail(const char* what, const char* detail) {
    std::fprintf(stderr, "stream_accumulator: %s: %s\n", what, detail);
    std::exit(2);
}

std::vector<uint16_t> read_words(const char* path) {
    std::FILE* f = std::fopen(path, "rb");
    if (!f) fail("cannot open input", path);
    std::vector<uint16_t> words;
    uint8_t b[2];
    while (std::fread(b, 1, 2, f) == 2) words.push_back(uint16_t(b[0] | (b[1] << 8)));
    std::fclose(f);
    return words;
}

void write_words(const char* path, const std::vector<uint16_t>& words) {
    std::FILE* f = std::fopen(path, "wb");
    if (!f) fail("cannot open output", path);
    for (uint16_t w : words) {
        uint8_t b[2] = {uint8_t(w & 0xff), uint8_t(w >> 8)};
        if (std::fwrite(b, 1, 2, f) != 2) fail("cannot write output", path);
    }
    std::fclose(f);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6 && argc != 7) {
        std::fprintf(stderr, "usage: %s CYCLES INPUT OUTPUT SEED STALL_PERCENT [TRACE]\n",
                     argv[0]);
        return 2;
    }
    const uint64_t cycles = std::strtoull(argv[1], nullptr, 10);
    const std::vector<uint16_t> in = read_words(argv[2]);
    Rng rng{std::strtoull(argv[4], nullptr, 10) | 1};
    const unsigned stall = unsigned(std::strtoul(argv[5], nullptr, 10));
    if (stall >= 100) fail("STALL_PERCENT must be below 100", argv[5]);

    auto ctx = std::make_unique<VerilatedContext>();
    auto top = std::make_unique<Vstream_acc>(ctx.get());
#if VM_TRACE
    std::unique_ptr<Tracer> tracer;
    if (argc == 7) {
        ctx->traceEverOn(true);
        tracer = std::make_unique<Tracer>();
        top->trace(tracer.get(), 99);
        tracer->open(argv[6]);
    }
    auto dump = [&] { if (tracer) tracer->dump(ctx->time()); };
#else
    if (argc == 7) fail("this build has no tracing; cannot write", argv[6]);
    auto dump = [] {};
#endif
    auto tick = [&] {
        top->clk = 0;
        top->eval();
        dump();
        ctx->timeInc(1);
        top->clk = 1;
        top->eval();
        dump();
        ctx->timeInc(1);
    };

    top->rst = 1;
    top->i___05Fvalid = 0;
    top->o___05Fready = 0;
    tick();
    tick();
    top->rst = 0;

    std::vector<uint16_t> out;
    out.reserve(cycles);
    size_t next = 0;
    bool valid = false;
    uint64_t checksum = 0;
    const auto start = std::chrono::steady_clock::now();
    for (uint64_t cycle = 0; cycle < cycles; ++cycle) {
        if (!valid && next < in.size() && !rng.chance(stall)) valid = true;
        top->clk = 0;
        top->i___05Fvalid = valid;
        top->i___05Fpayload = valid ? in[next] : 0;
        top->o___05Fready = !rng.chance(stall);
        top->eval();  // settles i.ready, which depends on o.ready
        dump();
        ctx->timeInc(1);
        const bool in_fire = valid && top->i___05Fready;
        if (top->o___05Fvalid && top->o___05Fready) {
            checksum += uint64_t(top->o___05Fpayload) * (2 * out.size() + 1);
            out.push_back(top->o___05Fpayload);
        }
        top->clk = 1;
        top->eval();
        dump();
        ctx->timeInc(1);
        if (in_fire) {
            ++next;
            valid = false;
        }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    top->final();
#if VM_TRACE
    if (tracer) tracer->close();
#endif
    write_words(argv[3], out);
    std::printf("cycles=%" PRIu64 " inputs=%zu outputs=%zu checksum=%016" PRIx64
                " seconds=%.6f\n",
                cycles, next, out.size(), checksum, seconds);
    return 0;
}
