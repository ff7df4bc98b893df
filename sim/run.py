"""Run a whole SqueezeNet on the Verilated accelerator and check it against the golden model.

    python -m sim.run [--model M.onnx] [--image IMG] [--config NAME] [--json OUT]
                      [--vcd FILE | --fst FILE] [--trace-cycles N] [--report DIR]

The model is compiled (quantised, weight image and layer schedule; cached by content hash), the
accelerator (``sim.design.SimAccelerator``: ``hw.top.Accelerator`` with the configuration's
feature-map memory model) is built once per configuration with Verilator and the C++ harness
``sim/harness/accel.cpp`` (cached), the harness loads the weight image and the schedule into
the design's memories, streams the image in and collects the scores. Every step's output (seen
on the design's tap) and the scores are compared bit for bit with the golden model; the first
step that differs is named and the exit status is 1.

Defaults: the ``default`` configuration runs the bundled SqueezeNet v1.1 on the bundled photo.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hw.config import AccelConfig, get_config

from . import jobs

__all__ = ["Compiled", "compile_model", "load_rows", "build", "simulate", "run", "write_report",
           "main", "SimError"]

ROOT = Path(__file__).resolve().parent.parent
HARNESS_CPP = Path(__file__).resolve().parent / "harness" / "accel.cpp"
TOP = "accel_top"
_MAGIC, _VERSION = 0x4C434341, 1


class SimError(RuntimeError):
    """The simulation could not run (harness failure, timeout) — not a mismatch."""


# -- compiling the model -----------------------------------------------------------------------

@dataclasses.dataclass
class Compiled:
    """A model compiled for a configuration: the golden model and what the hardware carries."""

    qmodel: object          # compiler.qmodel.QModel
    image: object           # compiler.wimage.WeightImage
    schedule: object        # compiler.schedule.Schedule
    image_bytes: bytes
    schedule_bytes: bytes
    #: for a compressed target: the compressor's report (weight_bytes, weight_ebr, fits, ...)
    target_report: dict | None = None

    @property
    def steps(self):
        from compiler.wimage import engine_steps
        return engine_steps(self.qmodel)


def _cache_dir() -> Path:
    from compiler.api import cache_dir
    d = cache_dir() / "sim-run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _compile_key(model: Path, cfg: AccelConfig) -> str:
    h = hashlib.sha256(repr(cfg).encode())
    files = (sorted((ROOT / "compiler").glob("*.py"))
             + sorted((ROOT / "compiler" / "data").glob("calibration-*.json"))
             + [ROOT / "hw" / "program.py", ROOT / "hw" / "config.py"])
    h.update(hashlib.sha256(model.read_bytes()).digest())
    for f in files:
        h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:32]


def default_model(cfg: AccelConfig) -> Path:
    from compiler.api import default_model as _default
    return _default(cfg)


def compile_model(model, cfg: AccelConfig, *, progress: bool = False) -> Compiled:
    """Quantise ``model`` for ``cfg`` and lower it to a weight image and a schedule (cached by
    the content of the model, the compiler and the configuration)."""
    from compiler import schedule, wimage
    from compiler.api import carried_model, stream_image

    model = Path(model)
    if not model.is_file():
        raise FileNotFoundError(f"model file {str(model)!r} does not exist")
    path = _cache_dir() / f"{_compile_key(model, cfg)}.pkl"
    if path.is_file():
        with open(path, "rb") as f:
            return pickle.load(f)
    if progress:
        print(f"compiling {model.name} for {cfg.name} ...", file=sys.stderr, flush=True)
    qm, report = carried_model(model, cfg)
    img = wimage.build_image(cfg, qm)
    if cfg.weight_streams:
        img.streams = stream_image(cfg, qm, report)
    sched = schedule.build_schedule(cfg, qm)
    result = Compiled(qm, img, sched, wimage.write_image(img),
                      schedule.write_schedule(cfg, sched), report)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump(result, f)
    tmp.replace(path)
    return result


# -- building the simulator ----------------------------------------------------------------------

def build(cfg: AccelConfig, *, trace: str | None = None, progress: bool = False) -> Path:
    """The compiled Verilator harness of ``cfg``'s accelerator (cached); ``trace``: None, "vcd"
    or "fst"."""
    from sim.design import SimAccelerator
    from sim.verilate import build_cpp_harness, cached_verilog

    if progress:
        print(f"preparing the Verilator model of configuration {cfg.name!r} (first time: "
              f"several minutes) ...", file=sys.stderr, flush=True)
    vpath = cached_verilog(lambda: SimAccelerator(cfg), TOP, [repr(cfg)],
                           sources=[ROOT / "sim" / "design.py"])
    return build_cpp_harness([vpath], TOP, [HARNESS_CPP], trace=trace, opt_fast="-O2")


# -- running ----------------------------------------------------------------------------------

def load_rows(cfg: AccelConfig, comp: Compiled) -> np.ndarray:
    """The ``load`` stream of a compiled model: weight, bias and requantisation rows (the weight
    image) and the schedule rows, as harness payload words [n, words]."""
    from hw.engine import (
        LOAD_BIAS,
        LOAD_CODEBOOK,
        LOAD_REQUANT,
        LOAD_WDESC,
        LOAD_WEIGHTS,
        LOAD_WSTREAM,
        wstream_load_addr,
    )
    from hw.top import LOAD_SCHEDULE, pack_schedule

    if cfg.weight_streams:
        st = comp.image.streams
        words = [(wstream_load_addr(cfg, c, i), w) for c, col in enumerate(st.words)
                 for i, w in enumerate(col)]
        weights = [(LOAD_WSTREAM, [w for _, w in words], [a for a, _ in words]),
                   (LOAD_WDESC, st.desc_rows),
                   (LOAD_CODEBOOK, st.codebook_rows(cfg.weight_bits))]
    else:
        weights = [(LOAD_WEIGHTS, comp.image.weight_rows)]
    return jobs.load_rows(cfg, [*weights,
                                (LOAD_BIAS, comp.image.bias_rows),
                                (LOAD_REQUANT, comp.image.requant_rows),
                                (LOAD_SCHEDULE, pack_schedule(cfg, comp.schedule))])


@dataclasses.dataclass
class StepRecord:
    name: str
    cycles: int
    rd_bytes: int
    wr_bytes: int
    ideal_cycles: float
    predicted_cycles: int
    bit_exact: bool


@dataclasses.dataclass
class SimResult:
    scores: np.ndarray
    cycles: int
    harness_cycles: int
    fmap_bytes_moved: int
    steps: list[StepRecord]
    first_mismatch: str | None
    sim_s: float


def simulate(cfg: AccelConfig, comp: Compiled, x: np.ndarray, exe: Path, *,
             trace_file: str | None = None, trace_cycles: int = 200_000,
             in_stall: float = 0.0, out_stall: float = 0.0, seed: int = 1,
             progress: bool = False) -> SimResult:
    """Run the compiled model on input ``x`` ([C, H, W] integers) in the harness ``exe``."""
    from compiler import cycles as cycle_model
    from compiler.wimage import place_programs
    from hw.pool import Beat

    qm = comp.qmodel
    progs = place_programs(cfg, qm)
    steps = comp.steps
    outs = qm.run(x)
    loads = load_rows(cfg, comp)
    inputs = jobs.input_beats(cfg, progs[0].input_stream(x))
    tap_words = jobs.n_words(Beat(width=cfg.sum_bits, lanes=cfg.requant_units).size)
    ideal = [cycle_model.ideal_cycles(cfg, p) for p in progs]
    max_cycles = min(int(4 * sum(ideal) + 20 * inputs.shape[0] + 1_000_000), 0xFFFFFFFF)
    header = np.array([_MAGIC, _VERSION, loads.shape[0], loads.shape[1], inputs.shape[0],
                       inputs.shape[1], max_cycles, int(in_stall * 1000), int(out_stall * 1000),
                       seed & 0xFFFFFFFF, tap_words, 0, 0], dtype=np.uint32)
    names = [s.name for s in steps]
    with tempfile.TemporaryDirectory(prefix="sim-run-") as tmp:
        job, out = Path(tmp) / "job.bin", Path(tmp) / "out.bin"
        with open(job, "wb") as f:
            f.write(header.tobytes())
            f.write(loads.tobytes())
            f.write(inputs.tobytes())
        cmd = [str(exe), str(job), str(out)]
        if trace_file:
            cmd += [str(Path(trace_file).resolve()), str(trace_cycles)]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in proc.stdout:
            parts = line.split()
            if progress and parts and parts[0] == "step":
                k = int(parts[1])
                name = names[k] if k < len(names) else f"step {k}"
                _progress(f"step {k + 1}/{len(names)} {name:<8} cycle {int(parts[2]):,}")
        err = proc.stderr.read()
        status = proc.wait()
        sim_s = time.monotonic() - t0
        if progress:
            _progress("", end=True)
        if status not in (0, 3) or not out.is_file():
            raise SimError(f"the accelerator harness failed (exit {status}): {err.strip()}")
        raw = out.read_bytes()

    off = 0

    def take(dtype, n=1):
        nonlocal off
        arr = np.frombuffer(raw, dtype=dtype, count=n, offset=off)
        off += arr.nbytes
        return arr

    st, n_scores = (int(v) for v in take(np.uint32, 2))
    dev_cycles, h_cycles, rd_words, wr_words = (int(v) for v in take(np.uint64, 4))
    mem_error = int(take(np.uint32)[0])
    n_rec = int(take(np.uint32)[0])
    recs = []
    for _ in range(n_rec):
        step = int(take(np.uint32)[0])
        c, r, w = (int(v) for v in take(np.uint64, 3))
        recs.append((step, c, r, w))
    scores = take(np.uint32, n_scores).astype(np.int64)
    n_taps = int(take(np.uint32)[0])
    taps = take(np.uint32, n_taps * tap_words).reshape(n_taps, tap_words)

    # each step's output, from the tap beats (a step ends with its `last` beat)
    counts, lasts, data = jobs.beat_fields(cfg, taps)
    ends = list(np.flatnonzero(lasts))
    step_vals, start = [], 0
    for e in ends:
        sel = data[start:e + 1]
        cnt = counts[start:e + 1]
        mask = np.arange(cfg.requant_units)[None, :] < cnt[:, None]
        step_vals.append(sel[mask])
        start = e + 1
    first_mismatch = None
    records = []
    p = cfg.fmap_port_bytes
    for i, (s, prog) in enumerate(zip(steps, progs)):
        ok = False
        if i < len(step_vals) and step_vals[i].size == prog.out_values:
            got = prog.output_from_stream(step_vals[i])
            ok = bool(np.array_equal(got, outs[s.out_name]))
        if not ok and first_mismatch is None:
            first_mismatch = s.name
        rec = next((r for r in recs if r[0] == i), (i, 0, 0, 0))
        records.append(StepRecord(s.name, rec[1], rec[2] * p, rec[3] * p, ideal[i],
                                  cycle_model.step_cycles(cfg, prog, comp.schedule.entries[i]),
                                  ok))
    ref_scores = np.asarray(outs[steps[-1].out_name]).reshape(-1).astype(np.int64)
    if st == 3:
        stuck = names[recs[-1][0]] if recs and recs[-1][0] < len(names) else "?"
        raise SimError(f"no last score within {max_cycles:,} cycles (running step {stuck}; "
                       f"{n_scores} scores out); the design hangs")
    if first_mismatch is None and not np.array_equal(scores, ref_scores):
        first_mismatch = "scores"
    if mem_error:
        raise SimError("the feature-map memory model reported a protocol violation (SDRAM "
                       "command timing): the controller broke the datasheet's rules")
    return SimResult(scores, dev_cycles, h_cycles, (rd_words + wr_words) * p, records,
                     first_mismatch, sim_s)


def _progress(text: str, end: bool = False):
    if sys.stderr.isatty():
        sys.stderr.write("\r" + text.ljust(60) + ("\n" if end else ""))
    elif text:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def buffer_bytes(cfg: AccelConfig) -> int:
    """On-chip buffer memory of the design besides the weights, in bytes (line buffers, pool row
    memory, output FIFO, the feature-map reader's and writer's FIFOs)."""
    from hw.pool import Beat

    bits = (cfg.in_buffer_depth + cfg.window_buffer_depth) * cfg.input_bits
    bits += cfg.pool_row_depth * cfg.act_bits * 2
    bits += cfg.out_fifo_depth * Beat(width=cfg.score_bits, lanes=cfg.requant_units).size
    burst_words = cfg.fmap_burst_bytes // cfg.fmap_port_bytes
    bits += 2 * burst_words * cfg.fmap_port_bytes * 8 + 2 * burst_words * cfg.fmap_port_bytes * 9
    return -(-bits // 8)


def run(model=None, image=None, config: str = "default", *, trace: str | None = None,
        trace_file: str | None = None, trace_cycles: int = 200_000,
        progress: bool = False) -> dict:
    """The whole flow; the report as a dict (keys of the module docstring)."""
    from compiler import labels
    from compiler.api import DEFAULT_IMAGE
    from compiler.preprocess import load_image
    from sim.design import memory_bytes

    t0 = time.monotonic()
    cfg = get_config(config)
    model = Path(default_model(cfg) if model is None else model)
    image = Path(DEFAULT_IMAGE if image is None else image)
    if not image.is_file():
        raise FileNotFoundError(f"image file {str(image)!r} does not exist")
    comp = compile_model(model, cfg, progress=progress)
    if comp.schedule.fmap_bytes > memory_bytes(cfg):
        raise ValueError(f"{model.name} needs {comp.schedule.fmap_bytes:,} bytes of feature-map "
                         f"memory; the simulated memory of {cfg.name} has "
                         f"{memory_bytes(cfg):,}")
    x = load_image(image, tuple(comp.qmodel.input_shape[1:]))
    exe = build(cfg, trace=trace, progress=progress)
    res = simulate(cfg, comp, x, exe, trace_file=trace_file, trace_cycles=trace_cycles,
                   progress=progress)
    order = np.lexsort((np.arange(res.scores.size), -res.scores))[:5]
    ideal = sum(r.ideal_cycles for r in res.steps)
    img = comp.image
    return {
        "model": str(model),
        "image": str(image),
        "config": cfg.name,
        "bit_exact": res.first_mismatch is None,
        "first_mismatch": res.first_mismatch,
        "top5": [[int(i), labels.label(int(i)), int(res.scores[i])] for i in order],
        "cycles": res.cycles,
        "ideal_cycles": round(ideal, 1),
        "predicted_cycles": sum(r.predicted_cycles for r in res.steps),
        "multipliers": cfg.multipliers,
        "utilization": round(ideal / res.cycles, 4) if res.cycles else 0.0,
        "clk_mhz": cfg.clk_hz / 1e6,
        "ms_per_frame": round(1e3 * res.cycles / cfg.clk_hz, 3),
        "weight_bytes": (comp.target_report["weight_bytes"] if comp.target_report
                         else img.weight_bytes + img.param_bytes),
        "weight_format": ("compressed streams, decoded on chip" if cfg.weight_streams
                          else "compressed (the simulated design holds the decoded dense rows)"
                          if comp.target_report else "dense"),
        "buffer_bytes": buffer_bytes(cfg),
        "fmap_bytes_moved": res.fmap_bytes_moved,
        "fmap_port_bytes": cfg.fmap_port_bytes,
        "fmap_read_latency": cfg.fmap_read_latency,
        "sim_cycles_per_s": round(res.harness_cycles / res.sim_s) if res.sim_s else 0,
        "sim_s": round(res.sim_s, 2),
        "wall_s": round(time.monotonic() - t0, 2),
        "layers": [{
            "name": r.name, "cycles": r.cycles, "ideal_cycles": round(r.ideal_cycles, 1),
            "predicted_cycles": r.predicted_cycles,
            "utilization": round(r.ideal_cycles / r.cycles, 4) if r.cycles else 0.0,
            "fmap_read_bytes": r.rd_bytes, "fmap_write_bytes": r.wr_bytes,
            "bit_exact": r.bit_exact,
        } for r in res.steps],
    }


# -- the per-layer report ------------------------------------------------------------------------

def _table(report: dict) -> str:
    head = (f"{'layer':<8} {'cycles':>10} {'ideal':>10} {'util':>6} {'fmap read':>10} "
            f"{'fmap write':>10} {'exact':>5}")
    lines = [head, "-" * len(head)]
    for la in report["layers"]:
        lines.append(f"{la['name']:<8} {la['cycles']:>10,} {la['ideal_cycles']:>10,.0f} "
                     f"{la['utilization']:>6.1%} {la['fmap_read_bytes']:>10,} "
                     f"{la['fmap_write_bytes']:>10,} {'yes' if la['bit_exact'] else 'NO':>5}")
    lines.append("-" * len(head))
    moved = report["fmap_bytes_moved"]
    lines.append(f"{'total':<8} {report['cycles']:>10,} {report['ideal_cycles']:>10,.0f} "
                 f"{report['utilization']:>6.1%} {moved:>21,}")
    return "\n".join(lines) + "\n"


def _chart(report: dict, path: Path):
    """A horizontal bar chart of cycles (and ideal cycles) per layer, with Pillow."""
    from PIL import Image, ImageDraw

    layers = report["layers"]
    row, left, width = 28, 90, 560
    top = 50
    h = top + row * len(layers) + 60
    im = Image.new("RGB", (left + width + 170, h), "white")
    d = ImageDraw.Draw(im)
    d.text((10, 10), f"{Path(report['model']).name} on {report['config']}: cycles per layer "
           f"(total {report['cycles']:,}, utilisation {report['utilization']:.1%})", fill="black")
    d.text((10, 26), "bar: cycles; dark part: ideal (MACs / multipliers); right: fmap bytes "
           "moved", fill="gray")
    biggest = max(la["cycles"] for la in layers) or 1
    for k, la in enumerate(layers):
        y = top + k * row
        d.text((10, y + 6), la["name"], fill="black")
        wc = int(width * la["cycles"] / biggest)
        wi = int(width * la["ideal_cycles"] / biggest)
        d.rectangle([left, y + 4, left + wc, y + row - 4], fill=(160, 190, 230))
        d.rectangle([left, y + 4, left + wi, y + row - 4], fill=(40, 90, 170))
        d.text((left + wc + 6, y + 6), f"{la['cycles']:,}  {la['utilization']:.0%}  "
               f"{(la['fmap_read_bytes'] + la['fmap_write_bytes']) / 1024:,.0f} KiB",
               fill="black")
    d.text((10, h - 30), f"ideal total {report['ideal_cycles']:,.0f}; fmap bytes moved "
           f"{report['fmap_bytes_moved']:,}; {report['multipliers']} multipliers", fill="gray")
    im.save(path)


def write_report(report: dict, directory) -> list[Path]:
    """Write ``layers.txt`` (table), ``layers.json`` and ``layers.png`` (chart) to
    ``directory``; the paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / "layers.txt", d / "layers.json", d / "layers.png"]
    paths[0].write_text(_table(report))
    paths[1].write_text(json.dumps({k: report[k] for k in
                                    ("model", "config", "cycles", "ideal_cycles", "utilization",
                                     "fmap_bytes_moved", "layers")}, indent=2) + "\n")
    _chart(report, paths[2])
    return paths


# -- command line ------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sim.run",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="ONNX SqueezeNet (default: the bundled SqueezeNet v1.1; "
                    "for ulx3s-85f the bundled Deep-Compression v1.0, compressed)")
    ap.add_argument("--image", help="photo to classify (default: the bundled pelican.jpeg)")
    ap.add_argument("--config", default="default",
                    help="accelerator configuration (default, ulx3s-85f)")
    ap.add_argument("--json", help="write the report as JSON to this file")
    tr = ap.add_mutually_exclusive_group()
    tr.add_argument("--vcd", help="write a VCD waveform of the first --trace-cycles cycles")
    tr.add_argument("--fst", help="write an FST waveform of the first --trace-cycles cycles")
    ap.add_argument("--trace-cycles", type=int, default=200_000,
                    help="cycles to trace (default 200000)")
    ap.add_argument("--report", help="write the per-layer table, JSON and PNG chart here")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = ap.parse_args(argv)
    from compiler.ir import IRError
    from compiler.preprocess import ImageError

    trace = "vcd" if args.vcd else "fst" if args.fst else None
    try:
        report = run(args.model, args.image, args.config, trace=trace,
                     trace_file=args.vcd or args.fst, trace_cycles=args.trace_cycles,
                     progress=not args.quiet)
    except (FileNotFoundError, ImageError, IRError, ValueError, SimError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model     {report['model']} ({report['config']})")
    print(f"image     {report['image']}")
    print("top-5     " + "\n          ".join(f"{i:>4} {label:<40} {score}"
                                             for i, label, score in report["top5"]))
    verdict = ("yes" if report["bit_exact"]
               else f"NO: first differing step {report['first_mismatch']}")
    print(f"bit-exact {verdict}")
    print(f"cycles    {report['cycles']:,} (ideal {report['ideal_cycles']:,.0f}, model "
          f"{report['predicted_cycles']:,}); {report['ms_per_frame']} ms per frame at "
          f"{report['clk_mhz']:g} MHz")
    print(f"MACs      {report['multipliers']} multipliers, utilisation "
          f"{report['utilization']:.1%}")
    print(f"on chip   weights {report['weight_bytes']:,} bytes ({report['weight_format']}), "
          f"buffers {report['buffer_bytes']:,} bytes")
    print(f"fmap      {report['fmap_bytes_moved']:,} bytes moved ({report['fmap_port_bytes']}-byte "
          f"port, read latency {report['fmap_read_latency']} cycles)")
    print(f"time      simulation {report['sim_s']} s ({report['sim_cycles_per_s']:,} cycles/s), "
          f"wall {report['wall_s']} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.report:
        for p in write_report(report, args.report):
            print(f"report    {p}")
    return 0 if report["bit_exact"] else 1


if __name__ == "__main__":
    # run the imported module, not __main__, so that pickled results name sim.run's classes
    from sim.run import main as _main

    sys.exit(_main())
