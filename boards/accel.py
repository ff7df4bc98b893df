"""The accelerator as a board design: :class:`hw.soc.Classifier` behind the board design interface.

:func:`classifier_factory` turns a compiled model (its integer ``QModel``, weight image and
schedule) into a :data:`~boards.common.DesignFactory`; the board puts the design on its clocks,
UART pins, LEDs and feature-map memory. The weight, parameter and schedule memories are sized
to the model and carry it as block-RAM initial contents, so the bitstream classifies from
configuration on (the load stream is tied off).

Status LEDs: ``idle`` when the memory is ready and no request runs, ``busy`` while a request is
received, computed or answered, ``error`` while the memory is not ready.

:func:`compile_model` compiles an ONNX model for a board without calibration images (seeded
random inputs choose the ranges, so a build is reproducible); :data:`TINY_MODEL` is the small
Fire-family model the iCEBreaker carries by default (``compiler/data/fire-tiny-15.onnx``, made
by ``tests/netgen.py``'s ``squeezenet(**TINY_MODEL_PARAMS)``).
"""

from __future__ import annotations

from pathlib import Path

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.config import AccelConfig
from hw.memport import MemPortSignature
from hw.soc import Classifier, device_info
from hw.top import Accelerator

from .common import DesignFactory, Status

__all__ = ["TINY_MODEL", "TINY_MODEL_PARAMS", "CALIBRATION_SEED", "compile_model",
           "BoardClassifier", "classifier_factory"]

#: The iCEBreaker's default model: a Fire-family network small enough for the smallest engine.
TINY_MODEL = Path(__file__).resolve().parent.parent / "compiler" / "data" / "fire-tiny-15.onnx"
#: ``tests/netgen.py`` ``squeezenet(**TINY_MODEL_PARAMS)`` makes :data:`TINY_MODEL`: conv1 3x3/2
#: (3 -> 4 channels, 15x15 -> 7x7), max pool 3x3/2 (3x3), two Fire modules (squeeze 1, expand
#: 2 + 2), conv10 (4 classes), global average pool; random weights (seeded).
TINY_MODEL_PARAMS = dict(size=15, conv1_out=4, n_fire=2, base_e=4, incr_e=0, pools_after=(),
                         classes=4, seed=0)
#: Seed of the random calibration inputs of :func:`compile_model`.
CALIBRATION_SEED = 0


def compile_model(path, config: AccelConfig, *, seed: int = CALIBRATION_SEED,
                  n_inputs: int = 8):
    """``(qmodel, image, schedule)`` of the ONNX model ``path`` for ``config`` (with
    ``weight_streams``, ``image.streams`` holds the compressed weight path's memories).

    A shared-weight model (Deep Compression) on a configuration that is a compression target
    (``ulx3s-85f``) is the compressed model the board carries, exactly what ``python -m sim.run
    --config`` simulates (``compiler.api.carried_model``: the shipped product, no images
    needed). Any other model is calibrated on ``n_inputs`` random mean-subtracted images
    (seeded), not on photos: enough to set the integer ranges of a board build without the
    calibration image folder. Raises ``ValueError`` (``compiler.ir.IRError``) when the model
    exceeds the configuration.
    """
    import numpy as np

    from compiler import quant, schedule, wimage
    from compiler.api import carried_model, import_model, stream_image
    from compiler.compress import TARGETS

    graph = import_model(path)
    report = None
    if config.name in TARGETS and _shared_weights(graph, path):
        qm, report = carried_model(path, config)
    else:
        rng = np.random.default_rng(seed)
        xs = [rng.integers(-123, 152, graph.input_shape) for _ in range(n_inputs)]
        qm = quant.quantize(graph, quant.calibrate(graph, xs, len(xs)), config)
    image = wimage.build_image(config, qm)
    if config.weight_streams:
        # the engine reads compressed streams: the compressor's codebooks, or those of the
        # layers' distinct weights (ValueError for a layer with more than 2**wstream_kmax - 1
        # of them, or whose codebooks together exceed the lane tables' lookup_depth entries)
        image.streams = stream_image(config, qm, report)
    return qm, image, schedule.build_schedule(config, qm)


def _shared_weights(graph, path) -> bool:
    """Whether ``graph`` is a shared-weight (Deep-Compression) model the compressor takes."""
    from compiler.compress import check_shared_weight_model

    try:
        check_shared_weight_model(graph, path)
    except ValueError:
        return False
    return True


class BoardClassifier(wiring.Component):
    """A :class:`~hw.soc.Classifier` for ``qmodel`` with the board design interface."""

    def __init__(self, cfg: AccelConfig, mem_signature: MemPortSignature, *, qmodel, image,
                 schedule):
        c, h, w = (int(v) for v in qmodel.input_shape)
        n_scores = 1
        for d in qmodel.shapes()[qmodel.layers[-1].name]:
            n_scores *= int(d)
        # memories exactly as deep as the model needs (block RAM is the scarce resource)
        acc = Accelerator(cfg, image=image, schedule=schedule,
                               weight_depth=max(2, len(image.weight_rows)),
                               param_depth=max(2, len(image.bias_rows)))
        self.classifier = Classifier(
            cfg, info=device_info(cfg, qmodel), image_shape=(c, h, w), n_scores=n_scores,
            accelerator=acc)
        super().__init__({
            "rxd": In(1, init=1), "txd": Out(1, init=1), "mem": Out(mem_signature),
            "mem_ready": In(1), "status": Out(Status),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.classifier = cls = self.classifier
        m.d.comb += [cls.rxd.eq(self.rxd), self.txd.eq(cls.txd)]
        wiring.connect(m, cls.mem, wiring.flipped(self.mem))
        m.d.comb += [
            self.status.busy.eq(cls.busy),
            self.status.idle.eq(self.mem_ready & ~cls.busy),
            self.status.error.eq(~self.mem_ready),
        ]
        return m


def classifier_factory(qmodel, image, schedule) -> DesignFactory:
    """The design factory of a compiled model: ``image`` a ``compiler.wimage.WeightImage``,
    ``schedule`` the ``compiler.schedule`` rows, both for the board's configuration."""
    def make(cfg: AccelConfig, mem_signature: MemPortSignature) -> BoardClassifier:
        return BoardClassifier(cfg, mem_signature, qmodel=qmodel, image=image,
                               schedule=schedule)
    return make
