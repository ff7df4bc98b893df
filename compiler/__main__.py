"""Command line of the compiler.

    python -m compiler run  [--model M.onnx] [--image IMG] [--top K] [--json OUT]
    python -m compiler eval [--model M.onnx] [--images DIR] [--limit N] [--json OUT]
                            [--target ulx3s-85f]
    python -m compiler calibrate [--model M.onnx] [--images DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import api
from .labels import class_of_filename, label
from .preprocess import ImageError, load_image


def _model_arg(p: argparse.ArgumentParser):
    p.add_argument("--model", default=str(api.DEFAULT_MODEL),
                   help="ONNX SqueezeNet-family model (default: the bundled SqueezeNet v1.1)")
    p.add_argument("--calib", default=None,
                   help="folder of calibration images (default: the bundled calibration of the "
                        "bundled model, else ../shared/images/imagenet-dev)")
    p.add_argument("--config", default="default", help="accelerator configuration name")


def cmd_run(args) -> int:
    qm = api.load_model(args.model, calib_dir=args.calib, config=args.config, progress=True)
    x = load_image(args.image, qm.input_shape[1:])
    t = time.perf_counter()
    scores = qm.scores(x)
    dt = time.perf_counter() - t
    top = api.softmax_top(qm, scores, args.top)
    print(f"{Path(args.image).name}: golden model of {qm.name} ({dt * 1000:.0f} ms)")
    for rank, (i, p) in enumerate(top, 1):
        print(f"  {rank}. {i:4d}  {p:6.3f}  {label(i)}")
    if args.json:
        doc = {"model": qm.name, "image": str(args.image), "golden_s": dt,
               "top5": [[i, label(i), p] for i, p in top],
               "scores_sha256": _sha(scores)}
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


def _sha(a: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(a, dtype=np.int64).tobytes()).hexdigest()


#: per-layer keys of ``eval --target`` (from the compression report)
TARGET_LAYER_KEYS = ("name", "bits", "codebook_size", "entry_bits", "encoding", "density",
                     "stream_bytes")


def evaluate(model: str, images: str, limit: int | None = None, calib: str | None = None,
             config: str = "default", progress: bool = True, target: str | None = None) -> dict:
    """Float (onnxruntime) vs integer golden model over a folder of ImageNet-named images.

    With ``target`` the integer model is exactly what that board carries (the golden model of
    the compressed weight image, :func:`compiler.compress.load_target_model`; ``config`` is then
    the target's) and the result adds its size report: ``weight_bytes``, ``weight_ebr``,
    ``fits`` and ``layers``. The ``int8_*`` keys keep their names so results stay comparable.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise SystemExit("eval needs onnxruntime for the float reference: "
                         "pip install onnxruntime (or the project's [test] extra)") from None
    rep = None
    if target is not None:
        from . import compress
        qm, rep = compress.load_target_model(model, target, calib_dir=calib, progress=progress)
    else:
        qm = api.load_model(model, calib_dir=calib, config=config, progress=progress)
    files = api.calibration_files(images, limit)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    n = 0
    hits = {"float_top1": 0, "float_top5": 0, "int8_top1": 0, "int8_top5": 0, "agree": 0}
    labelled = 0
    golden_s = 0.0
    per_image = []
    for i, f in enumerate(files, 1):
        x = load_image(f, qm.input_shape[1:])
        fl = sess.run(None, {in_name: x[None].astype(np.float32)})[0].reshape(-1)
        t = time.perf_counter()
        sc = qm.scores(x)
        golden_s += time.perf_counter() - t
        f5 = np.argsort(-fl, kind="stable")[:5]
        i5 = np.lexsort((np.arange(sc.size), -sc))[:5]
        truth = class_of_filename(f.name)
        hits["agree"] += int(f5[0] == i5[0])
        if truth is not None:
            labelled += 1
            hits["float_top1"] += int(f5[0] == truth)
            hits["float_top5"] += int(truth in f5)
            hits["int8_top1"] += int(i5[0] == truth)
            hits["int8_top5"] += int(truth in i5)
        per_image.append({"image": f.name, "truth": truth, "float": int(f5[0]),
                          "int8": int(i5[0])})
        n += 1
        if progress:
            api._bar("evaluating", i, len(files))
    denom = max(labelled, 1)
    out = {
        "model": Path(model).name, "images": str(images), "n": n, "labelled": labelled,
        "float_top1": hits["float_top1"] / denom, "float_top5": hits["float_top5"] / denom,
        "int8_top1": hits["int8_top1"] / denom, "int8_top5": hits["int8_top5"] / denom,
        "agreement": hits["agree"] / max(n, 1), "golden_s_per_image": golden_s / max(n, 1),
        "per_image": per_image,
    }
    if rep is not None:
        out.update({
            "target": rep["target"], "weight_bytes": rep["weight_bytes"],
            "weight_budget": rep["weight_budget"], "weight_ebr": rep["weight_ebr"],
            "ebr_available": rep["ebr_available"], "fits": rep["fits"],
            "stream_bytes": rep["stream_bytes"], "param_bytes": rep["param_bytes"],
            "method": rep.get("method"), "method_version": rep.get("method_version"),
            "calib_images": rep.get("calib_images"), "shipped": bool(rep.get("shipped")),
            "image_sha256": rep["image_sha256"],
            "layers": [{k: la[k] for k in TARGET_LAYER_KEYS} for la in rep["layers"]],
        })
    return out


def print_target_table(r: dict) -> None:
    """The per-layer table of ``eval --target``."""
    print(f"{r['target']}: {r['weight_bytes']} weight bytes (budget {r['weight_budget']}), "
          f"{r['weight_ebr']} EBR of {r['ebr_available']}, fits: {r['fits']}; "
          f"{r['method']}, calibrated on {r['calib_images']} images"
          f"{' (shipped product)' if r['shipped'] else ''}")
    print(f"  {'layer':18s} {'k':>2s} {'codebook':>8s} {'entry':>5s} {'encoding':9s} "
          f"{'density':>7s} {'stream B':>9s}")
    for la in r["layers"]:
        print(f"  {la['name']:18s} {la['bits']:2d} {la['codebook_size']:8d} "
              f"{la['entry_bits']:5d} {la['encoding']:9s} {la['density']:7.3f} "
              f"{la['stream_bytes']:9.1f}")


def cmd_eval(args) -> int:
    r = evaluate(args.model, args.images, args.limit, args.calib, args.config,
                 target=args.target)
    if args.target:
        print_target_table(r)
    print(f"{r['model']} on {r['n']} images of {r['images']}")
    print(f"{'':10s} {'top-1':>7s} {'top-5':>7s}")
    print(f"{'float':10s} {r['float_top1']:7.3f} {r['float_top5']:7.3f}")
    name = args.target or "int8"
    print(f"{name:10s} {r['int8_top1']:7.3f} {r['int8_top5']:7.3f}")
    print(f"agreement ({name} top-1 == float top-1): {r['agreement']:.3f}")
    print(f"golden model: {r['golden_s_per_image'] * 1000:.1f} ms per image")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


def cmd_calibrate(args) -> int:
    graph = api.import_model(args.model)
    ranges = api.load_ranges(graph, args.images or api.DEFAULT_CALIB_DIR, progress=True)
    files = api.calibration_files(args.images or api.DEFAULT_CALIB_DIR)
    doc = {"method": api.CALIB_METHOD, "model_sha256": graph.source_sha256,
           "images": f"{Path(args.images or api.DEFAULT_CALIB_DIR).name} ({len(files)} images)",
           "ranges": ranges}
    out = Path(args.out) if args.out else api._bundled_ranges_file(graph)
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compiler", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="golden model's top-K for one image")
    _model_arg(p)
    p.add_argument("--image", default=str(api.DEFAULT_IMAGE))
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("eval", help="float vs int8 accuracy over a folder of images")
    _model_arg(p)
    p.add_argument("--images", default=str(api.DEFAULT_CALIB_DIR))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--target", default=None,
                   help="evaluate what this board carries: the compressed weight image of a "
                        "Deep-Compression model (e.g. ulx3s-85f); adds weight_bytes, "
                        "weight_ebr, fits and the per-layer table")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("calibrate", help="compute activation ranges and write them as JSON")
    p.add_argument("--model", default=str(api.DEFAULT_MODEL))
    p.add_argument("--images", default=None)
    p.add_argument("--out", default=None, help="default: the bundled calibration file")
    p.set_defaults(func=cmd_calibrate)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ImageError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
