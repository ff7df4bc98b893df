"""The accelerator as a board design: :class:`hw.soc.Classifier` behind the board design interface.

:func:`classifier_factory` turns a compiled model (its integer ``QModel``, weight image and
schedule) into a :data:`~boards.common.DesignFactory`; the board puts the design on its clocks,
UART pins, LEDs and feature-map memory. The weight, parameter and schedule memories are sized
to the model and carry it as block-RAM initial contents, so the bitstream classifies from
configuration on (the load stream is tied off).

Status LEDs: ``idle`` when the memory is ready and no request runs, ``busy`` while a request is
received, computed or answered, ``error`` while the memory is not ready.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.config import AccelConfig
from hw.memport import MemPortSignature
from hw.soc import Classifier, device_info

from .common import DesignFactory, Status

__all__ = ["BoardClassifier", "classifier_factory"]


class BoardClassifier(wiring.Component):
    """A :class:`~hw.soc.Classifier` for ``qmodel`` with the board design interface."""

    def __init__(self, cfg: AccelConfig, mem_signature: MemPortSignature, *, qmodel, image,
                 schedule):
        c, h, w = (int(v) for v in qmodel.input_shape)
        n_scores = 1
        for d in qmodel.shapes()[qmodel.layers[-1].name]:
            n_scores *= int(d)
        self.classifier = Classifier(
            cfg, info=device_info(cfg, qmodel), image_shape=(c, h, w), n_scores=n_scores,
            image=image, schedule=schedule,
            # memories exactly as deep as the model needs (block RAM is the scarce resource)
            weight_depth=max(2, len(image.weight_rows)),
            param_depth=max(2, len(image.bias_rows)))
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
