"""The classifier a board carries: the host link in front of the accelerator.

:class:`Classifier` is :class:`hw.link.SerialBridge` (UART, frames, ``docs/protocol.md``)
feeding :class:`hw.top.Accelerator`: the bridge hands on the pixels of a classify request
(8-bit, the means subtracted on the device, so 9-bit signed, in the engine's order: rows,
pixels, channels) and sends back the scores and the cycles the frame took. The feature-map
memory port is the board's (SDRAM) or a model's in simulation.

:func:`device_info` is the info reply's payload for a compiled model: the configuration's name,
clock and baud rate, the input shape, the number of classes and the SHA-256 of the source
model (the ONNX file, the hash the weight image records).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from host.protocol import InfoReply, Layout

from .config import AccelConfig
from .engine import LoadBeat
from .link import SerialBridge
from .memport import MemPortSignature
from .top import MAX_LEN, Accelerator

__all__ = ["PREPROCESS_MEANS", "device_info", "Classifier"]

#: per-channel means of the network input, in the order of its channels (BGR; compiler.preprocess)
PREPROCESS_MEANS = (104, 117, 123)


def device_info(cfg: AccelConfig, qmodel) -> bytes:
    """The info reply payload of a device running ``qmodel`` (a compiler ``QModel``)."""
    sha = getattr(qmodel, "source_sha256", "") or ""
    c, h, w = (int(v) for v in qmodel.input_shape)
    classes = 1
    for d in qmodel.shapes()[qmodel.layers[-1].name]:
        classes *= int(d)
    return InfoReply(config_name=cfg.name,
                     model_hash=bytes.fromhex(sha) if sha else bytes(32),
                     clk_hz=cfg.clk_hz, uart_baud=cfg.uart_baud, input_shape=(c, h, w),
                     num_classes=classes, layout=Layout.HWC).payload()


class Classifier(wiring.Component):
    """UART host link + accelerator (module docstring).

    ``info``: the info reply payload (:func:`device_info`); ``image_shape`` ``(C, H, W)`` and
    ``n_scores`` must agree with it. ``image``/``schedule`` as for :class:`Accelerator` (block
    RAM contents; a simulation may leave them out and fill the memories through ``load``).
    ``divisor`` overrides the UART divisor of the configuration. ``accelerator``: an
    :class:`Accelerator` (or subclass) for ``cfg`` built by the caller, used instead of one built
    here from ``image``, ``schedule``, ``weight_depth`` and ``param_depth`` (which must then be
    left out).

    Ports: ``rxd``/``txd`` (UART), ``mem`` (feature-map port), ``load`` (as the accelerator's),
    ``busy`` (a request is in progress or the accelerator runs), ``frames``.
    """

    def __init__(self, cfg: AccelConfig, *, info: bytes, image_shape, n_scores: int,
                 image=None, schedule=None, divisor: int | None = None,
                 weight_depth: int | None = None, param_depth: int | None = None,
                 accelerator: Accelerator | None = None):
        self._cfg = cfg
        if accelerator is None:
            accelerator = Accelerator(cfg, image=image, schedule=schedule,
                                      weight_depth=weight_depth, param_depth=param_depth)
        elif not isinstance(accelerator, Accelerator) or accelerator.config != cfg:
            raise TypeError(f"accelerator must be an Accelerator for configuration "
                            f"{cfg.name!r}, not {accelerator!r}")
        elif any(v is not None for v in (image, schedule, weight_depth, param_depth)):
            raise TypeError("Give image, schedule and the depths to the accelerator, not "
                            "to a Classifier given an accelerator")
        self._acc = accelerator
        self._bridge = SerialBridge(divisor=divisor, config=None if divisor else cfg,
                                    image_shape=image_shape, n_scores=n_scores, info=info,
                                    pixel_width=cfg.input_bits, means=PREPROCESS_MEANS,
                                    layout=Layout.HWC, pipelined=cfg.fast_pipeline)
        super().__init__({
            "rxd": In(1, init=1),
            "txd": Out(1, init=1),
            "mem": Out(MemPortSignature(cfg.fmap_port_bytes, cfg.fmap_addr_bits,
                                        max_len=MAX_LEN)),
            "load": In(stream.Signature(LoadBeat(cfg))),
            "busy": Out(1),
            "frames": Out(32),
        })

    @property
    def divisor(self) -> int:
        return self._bridge.divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc = acc = self._acc
        m.submodules.link = link = self._bridge
        m.d.comb += [link.rxd.eq(self.rxd), self.txd.eq(link.txd)]
        wiring.connect(m, acc.mem, wiring.flipped(self.mem))
        wiring.connect(m, wiring.flipped(self.load), acc.load)
        # one pixel per input beat (the UART is far slower than the engine)
        px = link.pixels
        beat = Signal(acc.i.payload.shape())
        m.d.comb += [beat.data[0].eq(px.payload.data), beat.count.eq(1)]
        if self._cfg.fast_pipeline:
            # register slices between the link and the accelerator: no path from the link's
            # decoder into the accelerator's control, or back (each side sees only flip-flops of
            # the other; the UART is far slower than the slices' half rate)
            m.submodules.px_slice = px_slice = SyncFIFOBuffered(width=beat.shape().size, depth=2)
            m.submodules.score_slice = sc_slice = SyncFIFOBuffered(
                width=acc.o.payload.shape().size, depth=2)
            m.d.comb += [
                px_slice.w_en.eq(px.valid), px_slice.w_data.eq(beat), px.ready.eq(px_slice.w_rdy),
                acc.i.valid.eq(px_slice.r_rdy), acc.i.payload.eq(px_slice.r_data),
                px_slice.r_en.eq(acc.i.ready),
                sc_slice.w_en.eq(acc.o.valid), sc_slice.w_data.eq(acc.o.payload),
                acc.o.ready.eq(sc_slice.w_rdy),
                link.scores.valid.eq(sc_slice.r_rdy), link.scores.payload.eq(sc_slice.r_data),
                sc_slice.r_en.eq(link.scores.ready),
            ]
        else:
            m.d.comb += [acc.i.valid.eq(px.valid), acc.i.payload.eq(beat),
                         px.ready.eq(acc.i.ready)]
            wiring.connect(m, acc.o, link.scores)
        m.d.comb += [link.cycles.eq(acc.cycles[:self._cfg.cycle_bits]),
                     self.busy.eq(link.busy | acc.busy),
                     self.frames.eq(acc.frames)]
        return m


