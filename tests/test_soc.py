"""The classifier a board carries (hw.soc.Classifier: UART host link in front of the whole
accelerator) in Amaranth's simulator, on a tiny generated SqueezeNet: an info request and a
classify over the UART (host side: our own UART at the same divisor), the scores bit-exact with
the golden model, the info reply describing the model."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from test_top_amaranth import CFG, tiny_model

import host.protocol as p
from compiler import schedule, wimage
from hw.memport import ModelMemory
from hw.soc import PREPROCESS_MEANS, Classifier, device_info
from hw.top import MAX_LEN
from hw.uart import UART, RxByte

DIVISOR = 4


class _Board(wiring.Component):
    """Classifier + memory model + a host-side UART on its lines."""

    def __init__(self, cfg, qm):
        self.info = device_info(cfg, qm)
        self.soc = Classifier(cfg, info=self.info, image_shape=qm.input_shape,
                              n_scores=int(np.prod(qm.shapes()[qm.layers[-1].name])),
                              image=wimage.build_image(cfg, qm),
                              schedule=schedule.build_schedule(cfg, qm), divisor=DIVISOR,
                              weight_depth=cfg.weight_depth, param_depth=cfg.param_depth)
        self.host = UART(DIVISOR)
        self.cfg = cfg
        super().__init__({"host_tx": In(stream.Signature(8)),
                          "host_rx": Out(stream.Signature(RxByte))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self.soc
        m.submodules.host = host = self.host
        m.submodules.mem = mem = ModelMemory(self.cfg, depth=1024,
                                             addr_bits=self.cfg.fmap_addr_bits, max_len=MAX_LEN)
        wiring.connect(m, soc.mem, mem.bus)
        m.d.comb += [soc.rxd.eq(host.txd), host.rxd.eq(soc.txd)]
        wiring.connect(m, wiring.flipped(self.host_tx), host.tx)
        wiring.connect(m, host.rx, wiring.flipped(self.host_rx))
        return m


@pytest.mark.slow
def test_classify_over_the_uart_is_bit_exact():
    qm = tiny_model(CFG)
    rng = np.random.default_rng(11)
    c, h, w = qm.input_shape
    pixels_hwc = rng.integers(0, 256, (h, w, c)).astype(np.uint8)
    # the network input the device computes: means subtracted, [C, H, W]
    x = (pixels_hwc.astype(np.int16) - np.array(PREPROCESS_MEANS, dtype=np.int16)).transpose(
        2, 0, 1)
    golden = np.asarray(qm.run(x)[qm.layers[-1].name]).reshape(-1)
    dut = _Board(CFG, qm)
    parser = p.FrameParser()
    replies = []

    async def send(ctx, wire):
        ctx.set(dut.host_tx.valid, 1)
        for b in wire:
            ctx.set(dut.host_tx.payload, b)
            await ctx.tick().until(dut.host_tx.ready)
        ctx.set(dut.host_tx.valid, 0)

    async def reader(ctx):
        ctx.set(dut.host_rx.ready, 1)
        async for _clk, _rst, valid, payload in ctx.tick().sample(dut.host_rx.valid,
                                                                 dut.host_rx.payload):
            if valid:
                parser.feed(bytes([payload.data]))
                while (frame := parser.pop()) is not None:
                    replies.append(frame)

    async def hostbench(ctx):
        await send(ctx, p.encode_message(p.InfoRequest(), 7))
        while len(replies) < 1:
            await ctx.tick()
        await send(ctx, p.encode_message(p.ClassifyRequest(pixels_hwc.tobytes()), 8))
        while len(replies) < 2:
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(reader)
    sim.add_testbench(hostbench)
    sim.run()
    assert len(replies) == 2, replies
    info = p.decode_message(replies[0])
    assert replies[0].seq == 7 and info == p.InfoReply.from_payload(dut.info)
    assert info.input_shape == tuple(qm.input_shape) and info.num_classes == golden.size
    assert info.model_hash.hex() == qm.source_sha256
    reply = p.decode_message(replies[1])
    assert replies[1].seq == 8 and isinstance(reply, p.ClassifyReply)
    assert np.array_equal(np.array(reply.scores), golden)
    # the frame's cycles: at least the image's time on the wire (10 bits per byte)
    assert reply.cycles >= x.size * 10 * DIVISOR * 0.9
