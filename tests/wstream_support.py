"""Test support: contexts of the shipped compressed SqueezeNet v1.0 (``compiler/wstreams.py``).

The codes are the weight image's codebook indices laid out in the engine's row order
(``wstreams.branch_codes``); :func:`fire_contexts` checks that layout against the weight rows of
``hw.program`` (``codebook[codes]`` must equal them), so the rows are the ones the engine reads.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from compiler import wformat
from compiler.compress import load_target_model
from compiler.wimage import place_programs
from compiler.wstreams import DENSE, MASK, Segment, branch_codes
from hw.config import get_config

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "compiler" / "data" / "squeezenet1.0-deepcompression.onnx"
IMAGE = ROOT / "compiler" / "data" / "compress-aa6442292a40d29b-ulx3s-85f.sqwi"

__all__ = ["fire_contexts"]


@cache
def _model():
    cfg = get_config("ulx3s-85f")
    qm, rep = load_target_model(str(MODEL), "ulx3s-85f")
    layers, _ = wformat.read_image(IMAGE.read_bytes())
    progs = {p.name: p for p in place_programs(cfg, qm)}
    return cfg, rep, {la.name: la for la in layers}, progs


def fire_contexts(fire: str = "fire2") -> tuple[list[Segment], list[Segment]]:
    """The squeeze context (one segment) and the expand context (expand 1x1, expand 3x3) of a
    Fire module, codes ``[rows, pe_columns, pe_lanes]``; each segment DENSE or MASK as the
    layer's report encoding (dense -> DENSE, else MASK) with the layer's ``k``."""
    cfg, rep, layers, progs = _model()
    info = {la["name"]: la for la in rep["layers"]}
    prog = progs[fire]
    branches = [prog.squeeze] + prog.branches
    segs = []
    for br in branches:
        la = layers[br.conv.name]
        codes = branch_codes(la.indices, cfg.pe_columns, cfg.pe_lanes)
        weights = np.asarray(la.codebook, dtype=np.int64)[codes]
        assert np.array_equal(weights, br.weights), br.conv.name   # the engine's row layout
        assert la.k == info[la.name]["bits"]
        mode = DENSE if info[la.name]["encoding"] == "dense" else MASK
        segs.append(Segment(codes, la.k, mode))
    return segs[:1], segs[1:]
