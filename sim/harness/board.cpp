// Compiled Verilator harness of a simulated board (sim.design.SimBoardDesign): the classifier
// (UART host link + accelerator + feature-map memory model) with its UART lines on a TCP socket.
//
// usage: board JOB
//
// JOB (little-endian uint32 words, written by sim/board.py):
//   magic 0x44524f42 ("BORD"), version 1, n_load, load_words, divisor, 0,
//   n_load x load_words (packed LoadBeat payloads: weights, parameters, schedule rows).
//
// The harness loads the memories, listens on 127.0.0.1 (a free port), prints
// "listening <port>" on stdout, accepts one connection and then runs the design: bytes from the
// socket go out on the design's rxd as 8N1 UART frames of `divisor` cycles per bit, the bytes
// the design sends on txd are sampled mid-bit and written to the socket. When the client
// disconnects, the harness prints "cycles <n> frames <n>" and exits. While nothing is in flight
// (no byte to send, the design idle, its txd quiet) it waits on the socket instead of spinning.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <vector>

#include "Vboard_top.h"
#include "verilated.h"
#include "harness_io.h"

namespace {

using harness::set_words;

// a fatal error of a system call: its message and errno's
[[noreturn]] void fail(const char* msg) {
    std::fprintf(stderr, "board: %s (%s)\n", msg, std::strerror(errno));
    std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) fail("usage: board JOB");
    const std::vector<uint32_t> job = harness::read_words(argv[1]);
    const std::size_t head = 6;
    if (job.size() < head || job[0] != 0x44524f42u || job[1] != 1) fail("not a version-1 job");
    const uint32_t n_load = job[2], load_words = job[3], divisor = job[4];
    if (job.size() != head + std::size_t(n_load) * load_words) fail("job has the wrong length");
    if (divisor < 2) fail("UART divisor below 2");
    const uint32_t* loads = job.data() + head;

    Verilated::commandArgs(argc, argv);
    auto* top = new Vboard_top;
    auto tick = [&]() { harness::tick(top); };
    top->rxd = 1;
    harness::reset_and_load(top, loads, n_load, load_words);
    tick();

    const int srv = socket(AF_INET, SOCK_STREAM, 0);
    if (srv < 0) fail("socket");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    if (bind(srv, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) fail("bind");
    if (listen(srv, 1) < 0) fail("listen");
    socklen_t len = sizeof addr;
    if (getsockname(srv, reinterpret_cast<sockaddr*>(&addr), &len) < 0) fail("getsockname");
    std::printf("listening %u\n", ntohs(addr.sin_port));
    std::fflush(stdout);
    const int cli = accept(srv, nullptr, nullptr);
    if (cli < 0) fail("accept");
    close(srv);
    int one = 1;
    setsockopt(cli, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(cli, F_SETFL, fcntl(cli, F_GETFL) | O_NONBLOCK);

    std::deque<uint8_t> to_device;
    std::vector<uint8_t> to_host;
    // transmitter (host -> rxd): bit index -1 = idle, 0 start, 1..8 data, 9 stop
    int tx_bit = -1;
    uint32_t tx_count = 0;
    uint8_t tx_byte = 0;
    // receiver (txd -> host)
    bool rx_active = false;
    int rx_bit = 0;
    uint32_t rx_count = 0;
    uint8_t rx_byte = 0;
    uint64_t quiet = 0;  // cycles txd has been idle
    uint64_t cycle = 0;
    bool open = true;
    uint8_t buf[4096];

    while (open) {
        // -- the socket, every 64 cycles or when there is nothing else to do -------------------
        const bool idle = to_device.empty() && tx_bit < 0 && !rx_active && !top->busy &&
                          quiet > 24ull * divisor;
        if (idle || (cycle & 63) == 0) {
            if (!to_host.empty()) {
                ssize_t n = send(cli, to_host.data(), to_host.size(), MSG_NOSIGNAL);
                if (n > 0) to_host.erase(to_host.begin(), to_host.begin() + n);
                else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) break;
            }
            if (idle && to_host.empty()) {
                pollfd p{cli, POLLIN, 0};
                poll(&p, 1, 20);
            }
            ssize_t n = recv(cli, buf, sizeof buf, 0);
            if (n > 0) to_device.insert(to_device.end(), buf, buf + n);
            else if (n == 0) open = false;
            else if (errno != EAGAIN && errno != EWOULDBLOCK) open = false;
            if (idle && to_device.empty()) continue;
        }

        // -- rxd: the next bit of the byte being sent -----------------------------------------
        if (tx_bit < 0 && !to_device.empty()) {
            tx_byte = to_device.front();
            to_device.pop_front();
            tx_bit = 0;
            tx_count = 0;
        }
        if (tx_bit < 0) top->rxd = 1;
        else if (tx_bit == 0) top->rxd = 0;
        else if (tx_bit <= 8) top->rxd = (tx_byte >> (tx_bit - 1)) & 1;
        else top->rxd = 1;
        tick();
        ++cycle;
        if (tx_bit >= 0 && ++tx_count == divisor) {
            tx_count = 0;
            if (++tx_bit == 10) tx_bit = -1;
        }

        // -- txd: sample each bit in its middle -------------------------------------------------
        const int txd = top->txd;
        if (!rx_active) {
            if (txd == 0) {
                rx_active = true;
                rx_bit = 0;
                rx_count = 0;
                rx_byte = 0;
                quiet = 0;
            } else {
                ++quiet;
            }
        } else {
            ++rx_count;
            // the start edge was seen at count 0: bit k's middle is at (k + 0.5) * divisor
            if (rx_count == divisor / 2 + uint32_t(rx_bit) * divisor) {
                if (rx_bit >= 1 && rx_bit <= 8) rx_byte |= uint8_t(txd << (rx_bit - 1));
                if (rx_bit == 9) {
                    if (txd) to_host.push_back(rx_byte);  // a framing error drops the byte
                    rx_active = false;
                }
                ++rx_bit;
            }
        }
        if (to_host.size() >= 256) {
            ssize_t n = send(cli, to_host.data(), to_host.size(), MSG_NOSIGNAL);
            if (n > 0) to_host.erase(to_host.begin(), to_host.begin() + n);
        }
    }
    std::printf("cycles %llu frames %u\n", static_cast<unsigned long long>(cycle),
                static_cast<unsigned>(top->frames));
    std::fflush(stdout);
    close(cli);
    top->final();
    delete top;
    return 0;
}
