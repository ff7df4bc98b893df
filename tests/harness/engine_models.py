"""Real models and real activations for the engine tests, cached between runs.

Quantising a model takes a minute or more, so the quantised :class:`QModel` and the golden
model's per-layer outputs for a photo are pickled under the cache folder, keyed by the bytes of
the model, the photo, every source file of ``compiler/``, the bundled calibrations and
``hw/config.py`` (a change to the quantiser, the calibration or the configuration retires the
cache).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
V11 = ROOT / "compiler" / "data" / "squeezenet1.1.onnx"
V10_DC = ROOT.parent / "shared" / "models" / "squeezenet1.0-deepcompression.onnx"
PHOTOS = ROOT / "compiler" / "data" / "photos"
#: not a calibration image: the "unseen image" of the efficiency targets
UNSEEN = PHOTOS / "red_panda.jpg"

__all__ = ["V11", "V10_DC", "UNSEEN", "model_and_outputs"]


def _cache_dir() -> Path:
    base = os.environ.get("SQUEEZENET_FPGA_CACHE", Path.home() / ".cache" / "squeezenet-fpga")
    d = Path(base) / "engine-tests"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _key(*files: Path) -> str:
    h = hashlib.sha256()
    sources = (sorted((ROOT / "compiler").glob("*.py"))
               + sorted((ROOT / "compiler" / "data").glob("calibration-*.json"))
               + [ROOT / "hw" / "config.py"])
    for f in [*files, *sources]:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:32]


def model_and_outputs(model: Path, image: Path):
    """``(qmodel, x, outputs)``: the quantised model, the preprocessed image and every layer's
    golden output on it."""
    path = _cache_dir() / f"{_key(model, image)}.pkl"
    if path.is_file():
        with open(path, "rb") as f:
            return pickle.load(f)
    from compiler.api import load_model
    from compiler.preprocess import load_image

    qm = load_model(model)
    x = load_image(image, tuple(qm.input_shape[1:]))
    result = (qm, x, qm.run(x))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(result, f)
    tmp.replace(path)
    return result
