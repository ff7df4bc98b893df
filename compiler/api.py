"""The compiler's front door: ONNX file -> lowered IR -> calibrated, quantised :class:`QModel`.

Calibration ranges are cached by content hash (model bytes, calibration image bytes, method), and
the bundled SqueezeNet v1.1 ships its ranges from the 200 shared ImageNet images, so the default
model works on a machine without ``../shared``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from hw.config import AccelConfig, get_config

from . import quant
from .ir import Graph
from .onnx_import import import_onnx
from .passes import lower
from .preprocess import load_image
from .qmodel import QModel

__all__ = ["DATA", "DEFAULT_MODEL", "DEFAULT_MODELS", "default_model", "DEFAULT_IMAGE",
           "DEFAULT_CALIB_DIR", "cache_dir", "import_model", "calibration_files", "load_ranges",
           "load_model", "carried_model", "stream_image", "softmax_top"]

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL = DATA / "squeezenet1.1.onnx"
DEFAULT_IMAGE = DATA / "photos" / "pelican.jpeg"
#: the model a configuration runs when none is named (others: DEFAULT_MODEL)
DEFAULT_MODELS = {"ulx3s-85f": DATA / "squeezenet1.0-deepcompression.onnx"}
#: the shared calibration images, beside the project checkout
DEFAULT_CALIB_DIR = Path(__file__).resolve().parents[2] / "shared" / "images" / "imagenet-dev"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
#: bump when calibration changes meaning, so old cache entries are not reused
CALIB_METHOD = (f"topk-percentile-v1:{quant.DEFAULT_PERCENTILE}:{quant.CLASSIFIER_PERCENTILE}"
                f"+refine-v1:{','.join(map(str, quant.REFINE_FACTORS))}")
#: calibration images (every other one, at most this many) that choose each tensor's range
REFINE_IMAGES = 100


def default_model(config: AccelConfig | str = "default") -> Path:
    """The model ``config`` (a configuration or its name) runs by default: the compressed
    Deep-Compression v1.0 on the ULX3S, else the bundled SqueezeNet v1.1."""
    name = config.name if isinstance(config, AccelConfig) else str(config)
    return DEFAULT_MODELS.get(name, DEFAULT_MODEL)


def cache_dir() -> Path:
    d = Path(os.environ.get("SQUEEZENET_FPGA_CACHE", Path.home() / ".cache" / "squeezenet-fpga"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def import_model(path: str | Path = DEFAULT_MODEL) -> Graph:
    """Import and lower an ONNX SqueezeNet-family model to a chain of layers."""
    return lower(import_onnx(path))


def calibration_files(directory: str | Path, limit: int | None = None) -> list[Path]:
    """Image files of a folder in name order (the first ``limit`` of them)."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"calibration image folder {str(d)!r} does not exist")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"calibration image folder {str(d)!r} holds no images "
                                f"(expected files ending in {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files[:limit] if limit else files


def _calib_key(graph: Graph, files: list[Path]) -> str:
    h = hashlib.sha256(f"{CALIB_METHOD}\n{graph.source_sha256}\n".encode())
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _bundled_ranges_file(graph: Graph) -> Path:
    return DATA / f"calibration-{graph.source_sha256[:16]}.json"


def load_ranges(graph: Graph, calib_dir: str | Path | None = None, limit: int | None = None,
                progress: bool = False) -> dict[str, float]:
    """Calibration ranges for ``graph``: bundled ones when ``calib_dir`` is None and the model
    ships them, else computed over the images of ``calib_dir`` (default: ../shared's 200 ImageNet
    images) and cached by content hash."""
    if calib_dir is None:
        bundled = _bundled_ranges_file(graph)
        if bundled.is_file():
            data = json.loads(bundled.read_text())
            if data.get("method") == CALIB_METHOD:
                return data["ranges"]
        if not DEFAULT_CALIB_DIR.is_dir():
            raise FileNotFoundError(
                f"model {graph.name!r} has no bundled calibration and the default calibration "
                f"folder {str(DEFAULT_CALIB_DIR)!r} does not exist; pass a folder of images")
        calib_dir = DEFAULT_CALIB_DIR
    files = calibration_files(calib_dir, limit)
    key = _calib_key(graph, files)
    cached = cache_dir() / "calib" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())["ranges"]
    size = tuple(graph.input_shape[1:])

    def report(i):
        if progress:
            _bar("calibrating", i, len(files))

    ranges = quant.calibrate(graph, (load_image(f, size) for f in files), len(files),
                             progress=report)
    subset = files[::2][:REFINE_IMAGES] if len(files) > 1 else files

    def report_refine(i, n):
        if progress:
            _bar("choosing ranges", i, n)

    ranges = quant.refine_ranges(graph, ranges, [load_image(f, size) for f in subset],
                                 progress=report_refine)
    cached.parent.mkdir(parents=True, exist_ok=True)
    doc = {"method": CALIB_METHOD, "model_sha256": graph.source_sha256,
           "images": f"{Path(calib_dir).name} ({len(files)} images)", "ranges": ranges}
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(cached)
    return ranges


def load_model(path: str | Path = DEFAULT_MODEL, *, calib_dir: str | Path | None = None,
               config: AccelConfig | str = "default", progress: bool = False) -> QModel:
    """Import, lower, calibrate and quantise an ONNX model into the integer golden model."""
    cfg = get_config(config) if isinstance(config, str) else config
    graph = import_model(path)
    ranges = load_ranges(graph, calib_dir, progress=progress)
    return quant.quantize(graph, ranges, cfg)


def carried_model(path: str | Path, cfg: AccelConfig) -> tuple[QModel, dict | None]:
    """``(qmodel, report)``: the integer model ``cfg``'s hardware carries. For a configuration
    that is also a compression target (``ulx3s-85f``) the compressed model
    (``compiler.compress.load_target_model``: shared codebooks in the board's block RAM) and the
    compressor's report, else int8 (:func:`load_model`) and None."""
    from .compress import TARGETS, load_target_model
    if cfg.name in TARGETS:
        return load_target_model(path, cfg.name)
    return load_model(path, config=cfg), None


def stream_image(cfg: AccelConfig, qm: QModel, report: dict | None = None):
    """The compressed weight path's memories (``compiler/wstream_image.py``) for ``qm``: the
    codebooks and indices of the compressed weight image the compressor's ``report`` names,
    else the distinct weights of ``qm`` (``ValueError`` if a layer has too many)."""
    from . import wformat, wimage, wstream_image

    if report and report.get("image_path"):
        layers, _ = wformat.read_image(Path(report["image_path"]).read_bytes())
        codes = wstream_image.codes_of_image(layers)
    else:
        codes = wstream_image.codes_of_model(qm, cfg.wstream_kmax)
    return wstream_image.build_stream_image(cfg, wimage.place_programs(cfg, qm), codes)


def softmax_top(qm: QModel, scores: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    """Top-``k`` classes of integer ``scores`` as (index, probability): argmax on the integers
    (lowest index first on ties), probabilities from softmax of the dequantised logits."""
    scores = np.asarray(scores, dtype=np.int64)
    order = np.lexsort((np.arange(scores.size), -scores))[:k]
    logits = scores.astype(np.float64) * qm.score_scale
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return [(int(i), float(p[i])) for i in order]


def _bar(what: str, i: int, n: int):
    if not sys.stderr.isatty() and i not in (n,) and i % max(1, n // 10):
        return
    width = 30
    fill = int(width * i / max(n, 1))
    sys.stderr.write(f"\r{what} [{'#' * fill}{'.' * (width - fill)}] {i}/{n}")
    if i >= n:
        sys.stderr.write("\n")
    sys.stderr.flush()
