// Shared helpers of the compiled Verilator harnesses in this folder: moving packed stream
// payloads (little-endian uint32 words) in and out of Verilator ports of any width, the
// xorshift generator behind random stalls, and a fatal-error exit.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "verilated.h"

namespace harness {

//: the program name printed before fatal errors
inline const char* name = "harness";

inline uint32_t rng_state = 1;
inline uint32_t next_rand() {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}
// true on a random share of `permille` / 1000 of the calls
inline bool stall(uint32_t permille) { return permille && (next_rand() % 1000) < permille; }

template <std::size_t N>
void set_words(VlWide<N>& port, const uint32_t* words, uint32_t n) {
    for (std::size_t i = 0; i < N; ++i) port[i] = i < n ? words[i] : 0;
}
template <typename T>
void set_words(T& port, const uint32_t* words, uint32_t n) {
    uint64_t v = n > 0 ? words[0] : 0;
    if (n > 1 && sizeof(T) > 4) v |= static_cast<uint64_t>(words[1]) << 32;
    port = static_cast<T>(v);
}
template <std::size_t N>
void get_words(const VlWide<N>& port, uint32_t* words, uint32_t n) {
    for (uint32_t i = 0; i < n; ++i) words[i] = i < N ? port[i] : 0;
}
template <typename T>
void get_words(const T& port, uint32_t* words, uint32_t n) {
    uint64_t v = port;
    for (uint32_t i = 0; i < n; ++i) words[i] = i < 2 ? static_cast<uint32_t>(v >> (32 * i)) : 0;
}

[[noreturn]] inline void fail(const char* msg) {
    std::fprintf(stderr, "%s: %s\n", name, msg);
    std::exit(2);
}

// the whole file as little-endian uint32 words
inline std::vector<uint32_t> read_words(const char* path) {
    FILE* f = std::fopen(path, "rb");
    if (!f) fail("cannot open the job file");
    std::vector<uint32_t> words;
    uint32_t word;
    while (std::fread(&word, 4, 1, f) == 1) words.push_back(word);
    std::fclose(f);
    return words;
}

// one clock cycle of a model whose clock is `clk`
template <typename Top>
void tick(Top* top) {
    top->clk = 0;
    top->eval();
    top->clk = 1;
    top->eval();
}

// two cycles of reset, then `n` rows (of `words` words each) on the always-ready `load` stream
template <typename Top>
void reset_and_load(Top* top, const uint32_t* rows, uint32_t n, uint32_t words) {
    top->rst = 1;
    top->clk = 0;
    top->eval();
    tick(top);
    tick(top);
    top->rst = 0;
    top->load___05Fvalid = 1;
    for (uint32_t b = 0; b < n; ++b) {
        set_words(top->load___05Fpayload, rows + std::size_t(b) * words, words);
        tick(top);
    }
    top->load___05Fvalid = 0;
}

}  // namespace harness
