"""Run one layer of a real network on the Verilated engine.

    python -m sim.layer --model M.onnx --image IMG --layer NAME [--json OUT] [--pool]

The layer's input comes from the golden model (``QModel.run`` on the preprocessed image); the
engine (``hw.engine.Engine``, compiled with Verilator and the C++ harness
``sim/harness/engine_layer.cpp``) runs the layer and its output is compared with the golden
model's output of that layer. Prints (and with ``--json`` writes) ``bit_exact``, ``cycles``,
``ideal_cycles`` (layer MACs / multipliers), ``multipliers`` and ``predicted_cycles``
(``compiler.cycles``). ``--pool`` fuses the pool that follows the layer in the network (if any)
into the engine's output and compares with the pool's golden output instead.

The harness engine has the default geometry with memories deep enough for any single SqueezeNet
layer (:func:`harness_config`); it is built once and cached by content hash.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from compiler.cycles import ideal_cycles
from hw.config import AccelConfig
from hw.program import LayerProgram, layer_program, pack_cmd, pack_weight_rows

from .jobs import beat_values, input_beats, load_rows, n_words, words

__all__ = ["harness_config", "build_harness", "run_program", "LayerRun", "run_layer", "main"]

ROOT = Path(__file__).resolve().parent.parent
HARNESS_CPP = Path(__file__).resolve().parent / "harness" / "engine_layer.cpp"
TOP = "engine_top"
_MAGIC, _VERSION = 0x454E474E, 1


def harness_config(base: AccelConfig | None = None) -> AccelConfig:
    """The engine configuration of the layer harness: ``base`` (default: the default
    configuration) with weight and parameter memories for one layer (conv10: 3591 rows)."""
    import dataclasses

    base = AccelConfig() if base is None else base
    return dataclasses.replace(base, weight_depth=4096, param_depth=128)


def build_harness(cfg: AccelConfig, build_dir=None) -> Path:
    """Export the engine for ``cfg`` and compile the C++ harness; the executable (cached)."""
    from hw.engine import Engine
    from sim.verilate import build_cpp_harness, export_verilog

    text = export_verilog(Engine(cfg), TOP, emit_src=False)
    work = Path(tempfile.mkdtemp(prefix="engine-verilog-"))
    vpath = work / f"{TOP}.v"
    vpath.write_text(text)
    return build_cpp_harness([vpath], TOP, [HARNESS_CPP], build_dir, opt_fast="-O2")

def _load_words(cfg: AccelConfig, prog: LayerProgram) -> np.ndarray:
    """The ``LoadBeat`` payloads [n, words] of a program's weight, bias and requant rows."""
    from hw.engine import LOAD_BIAS, LOAD_REQUANT, LOAD_WEIGHTS
    from hw.program import pack_bias_rows, pack_requant_rows

    return load_rows(cfg, [(LOAD_WEIGHTS, pack_weight_rows(cfg, prog.weight_rows)),
                           (LOAD_BIAS, pack_bias_rows(cfg, prog.bias_rows)),
                           (LOAD_REQUANT, pack_requant_rows(cfg, prog.mult_rows,
                                                            prog.shift_rows))])


class LayerRun:
    """The result of one engine run: the output tensor and the cycle counts."""

    def __init__(self, output: np.ndarray, cycles: int, in_done: int, beats: int):
        self.output = output
        self.cycles = cycles
        self.in_done = in_done
        self.beats = beats


def run_program(cfg: AccelConfig, prog: LayerProgram, x: np.ndarray, exe: Path, *,
                in_stall: float = 0.0, out_stall: float = 0.0, seed: int = 1,
                max_cycles: int | None = None) -> LayerRun:
    """Run ``prog`` on input ``x`` ([C, H, W]) with the compiled harness ``exe``.

    ``prog``'s rows must start at weight and parameter row 0. ``in_stall``/``out_stall`` are
    the probabilities of a cycle without input valid / output ready.
    """
    import subprocess

    from hw.engine import LayerCmd
    from hw.pool import Beat

    beat = Beat(width=cfg.sum_bits, lanes=cfg.requant_units)
    out_words = n_words(beat.size)
    loads = _load_words(cfg, prog)
    cmd = words(pack_cmd(cfg, prog.cmd), LayerCmd(cfg).size)
    inputs = prog.input_stream(x)
    packed = input_beats(cfg, inputs)
    if max_cycles is None:
        max_cycles = int(4 * ideal_cycles(cfg, prog) + 50 * inputs.size + 100_000)
    max_cycles = min(max_cycles, 0xFFFFFFFF)
    header = [_MAGIC, _VERSION, loads.shape[0], loads.shape[1], len(cmd), packed.shape[0],
              packed.shape[1], out_words, beat["last"].offset, max_cycles,
              int(in_stall * 1000), int(out_stall * 1000), seed & 0xFFFFFFFF, 0, 0]
    with tempfile.TemporaryDirectory(prefix="engine-job-") as tmp:
        job = Path(tmp) / "job.bin"
        out = Path(tmp) / "out.bin"
        with open(job, "wb") as f:
            f.write(np.array(header, dtype=np.uint32).tobytes())
            f.write(loads.tobytes())
            f.write(np.array(cmd, dtype=np.uint32).tobytes())
            f.write(packed.tobytes())
        res = subprocess.run([str(exe), str(job), str(out)], capture_output=True, text=True,
                             check=False)
        if res.returncode != 0:
            raise RuntimeError(f"engine harness failed on {prog.name} (exit {res.returncode}): "
                               f"{res.stderr.strip()}")
        raw = out.read_bytes()
    n_beats = int(np.frombuffer(raw[:4], dtype=np.uint32)[0])
    cycles, in_done = (int(v) for v in np.frombuffer(raw[4:20], dtype=np.uint64))
    values = beat_values(cfg, np.frombuffer(raw[20:], dtype=np.uint32).reshape(n_beats, out_words))
    return LayerRun(prog.output_from_stream(values), cycles, in_done, n_beats)


def run_layer(model_path, image_path, layer_name: str, *, pool: bool = False,
              cfg: AccelConfig | None = None, exe: Path | None = None, qmodel=None,
              outs=None) -> dict:
    """Run layer ``layer_name`` of the model on the image; the report as a dict."""
    from compiler import cycles as cycle_model
    from compiler.api import load_model
    from compiler.preprocess import load_image
    from compiler.qmodel import QConv, QFire

    cfg = harness_config(cfg)
    qm = load_model(model_path) if qmodel is None else qmodel
    runnable = [la.name for la in qm.layers if isinstance(la, (QConv, QFire))]
    if layer_name not in runnable:
        raise KeyError(f"no engine layer {layer_name!r} in {qm.name}; the layers are "
                       f"{', '.join(runnable)}")
    if outs is None:
        x0 = load_image(image_path, tuple(qm.input_shape[1:]))
        outs = qm.run(x0)
    names = [la.name for la in qm.layers]
    k = names.index(layer_name)
    layer = qm.layers[k]
    x = outs[names[k - 1]] if k else load_image(image_path, tuple(qm.input_shape[1:]))
    fused = None
    if pool and k + 1 < len(qm.layers) and not isinstance(qm.layers[k + 1], (QConv, QFire)):
        fused = qm.layers[k + 1]
    prog = layer_program(cfg, layer, x.shape, pool=fused)
    exe = build_harness(cfg) if exe is None else exe
    run = run_program(cfg, prog, x, exe)
    ref = outs[fused.name if fused is not None else layer_name]
    return {
        "model": str(model_path),
        "image": str(image_path),
        "layer": layer_name,
        "fused_pool": fused.name if fused is not None else None,
        "bit_exact": bool(np.array_equal(run.output, ref)),
        "cycles": run.cycles,
        "ideal_cycles": round(ideal_cycles(cfg, prog), 1),
        "multipliers": cfg.multipliers,
        "predicted_cycles": cycle_model.layer_cycles(cfg, prog),
        "efficiency": round(ideal_cycles(cfg, prog) / run.cycles, 4),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.layer", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="ONNX model (SqueezeNet v1.0/v1.1)")
    ap.add_argument("--image", required=True, help="photo to classify")
    ap.add_argument("--layer", required=True, help="layer name: conv1, fire2 ... fire9, conv10")
    ap.add_argument("--json", help="write the report to this file")
    ap.add_argument("--pool", action="store_true",
                    help="fuse the following pool into the engine's output")
    args = ap.parse_args(argv)
    try:
        report = run_layer(args.model, args.image, args.layer, pool=args.pool)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    for key, value in report.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
