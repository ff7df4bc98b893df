"""``host``: talk to the board from the command line (docs/protocol.md, "Host driver").

    host classify IMG [--top K] [--json OUT|-] [--port P] [--baud N] [--model M.onnx]
                      [--timeout S] [--progress | --no-progress]
    host info [--port P] [--baud N] [--timeout S] [--json [OUT|-]]

Exit status 0 on success, 2 with one line on stderr for anything that stops it (bad input, no
device, timeout, device error, model mismatch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from host import driver
from host.driver import DEFAULT_BAUD, HostError, ModelMismatchError

__all__ = ["main"]

PROG = "host"


class UsageError(Exception):
    """Bad input from the user (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG, description="Classify images on the SqueezeNet FPGA board (or its "
        "simulation) over the serial link of docs/protocol.md.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="{classify,info}")

    def link_options(p, what_timeout):
        p.add_argument("--port", help="serial port or pyserial URL; 'sim' starts a simulated "
                       "board; default: the one USB serial port of this machine")
        p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                       help=f"UART baud rate (default {DEFAULT_BAUD})")
        p.add_argument("--timeout", type=float, metavar="S", help=what_timeout)
        p.add_argument("--config", default="default",
                       help="accelerator configuration of --port sim (default: default)")

    c = sub.add_parser("classify", help="classify an image on the device",
                       description="Send an image to the device and print its top classes.")
    c.add_argument("image", metavar="IMG", help="image file (anything Pillow reads)")
    c.add_argument("--top", type=int, default=5, metavar="K", help="classes to print (5)")
    c.add_argument("--json", metavar="OUT", help="write the result as JSON to OUT ('-': stdout)")
    c.add_argument("--model", metavar="M.onnx",
                   help="the local model the device must run (default: the default model of "
                   "the device's configuration: the bundled SqueezeNet v1.1, or the "
                   "Deep-Compression v1.0 on ulx3s-85f); its hash is checked against the "
                   "device's")
    link_options(c, f"seconds to wait for the result once the image is sent (default "
                    f"{driver.COMPUTE_TIMEOUT:g} + 1.5 x the image's wire time; "
                    f"{driver.SIM_TIMEOUT:g} on --port sim)")
    bar = c.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="progress bar on stderr while the image is sent (default: when "
                     "stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")

    i = sub.add_parser("info", help="ask the device what it is",
                       description="Print the device's info reply.")
    i.add_argument("--json", metavar="OUT", nargs="?", const="-",
                   help="print JSON (to OUT, default stdout)")
    link_options(i, f"seconds to wait for the reply (default {driver.INFO_TIMEOUT:g})")
    return ap


def _note(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


class _Bar:
    def __init__(self, stream, width: int = 30):
        self.stream = stream
        self.width = width
        self.last = -1

    def __call__(self, sent: int, total: int) -> None:
        fill = self.width * sent // max(total, 1)
        if fill == self.last and sent < total:
            return
        self.last = fill
        self.stream.write(f"\rsending  [{'#' * fill}{'.' * (self.width - fill)}] "
                          f"{sent * 100 // max(total, 1):3d}% of {total} bytes")
        if sent >= total:
            self.stream.write("\n")
        self.stream.flush()


def _label_fn(num_classes: int):
    from compiler.labels import label, labels

    if num_classes == len(labels()):
        return label
    return lambda i: f"class {i}"


def _write_json(doc: dict, out: str) -> None:
    text = json.dumps(doc, indent=1) + "\n"
    if out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as e:
        raise UsageError(f"cannot write {out!r}: {e.strerror or e}") from None


def _device_args(args, timeout_name: str) -> dict:
    kw = {"log": _note}
    if args.timeout is not None:
        if not args.timeout > 0:
            raise UsageError(f"--timeout must be positive, not {args.timeout}")
        kw[timeout_name] = args.timeout
    if args.baud <= 0:
        raise UsageError(f"--baud must be positive, not {args.baud}")
    return kw


def _info_doc(info, port: str) -> dict:
    return {"port": port, "config": info.config_name,
            "protocol_version": info.protocol_version, "layout": info.layout.name,
            "input_shape": list(info.input_shape), "num_classes": info.num_classes,
            "clk_hz": info.clk_hz, "uart_baud": info.uart_baud,
            "model_sha256": info.model_hash.hex()}


def _check_model(dev: driver.Device, model: Path) -> str:
    """Compare the device's model hash with ``model``'s: the SHA-256 of the ONNX file (what the
    weight image records and the device reports). Returns a note for the JSON."""
    info = dev.info()
    if not any(info.model_hash):
        return "device reports no model hash"
    onnx = driver.file_sha256(model)
    try:
        dev.check_model([onnx], what=f"local model {str(model)!r}")
    except ModelMismatchError as e:
        raise ModelMismatchError(
            f"the device runs model {info.model_hash.hex()}, the local model {str(model)!r} is "
            f"{onnx.hex()} (ONNX file): program the board with this model or pass --model with "
            f"the device's", device_hash=e.device_hash, local_hashes=e.local_hashes) from None
    return "ok"


def _open(args, **kw):
    model = getattr(args, "model", None)
    return driver.open_device(args.port, args.baud, model=model, config=args.config, **kw)


def cmd_info(args) -> int:
    kw = _device_args(args, "info_timeout")
    with _open(args, **kw) as dev:
        info = dev.info()
        port = dev.port
    if args.json is not None:
        _write_json(_info_doc(info, port), args.json)
        if args.json == "-":
            return 0
    c, h, w = info.input_shape
    print(f"port          {port}")
    print(f"config        {info.config_name}")
    print(f"protocol      {info.protocol_version}")
    print(f"input         {c}x{h}x{w} ({info.layout.name}), {info.image_size} bytes")
    print(f"classes       {info.num_classes}")
    print(f"clock         {info.clk_hz / 1e6:g} MHz")
    print(f"uart          {info.uart_baud} baud")
    print(f"model sha256  {info.model_hash.hex() if any(info.model_hash) else 'unknown'}")
    return 0


def cmd_classify(args) -> int:
    from compiler.preprocess import ImageError

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, not {args.top}")
    image = Path(args.image)
    if not image.exists():
        raise UsageError(f"image {str(image)!r} does not exist")
    if args.model is None:
        model = None            # the device's configuration's default, once it has said
    else:
        model = Path(args.model)
        if not model.is_file():
            raise UsageError(f"model {str(model)!r} does not exist")
    kw = _device_args(args, "timeout")
    show_bar = args.progress if args.progress is not None else sys.stderr.isatty()
    with _open(args, **kw) as dev:
        info = dev.info()
        try:
            from host.driver import image_pixels
            pixels = image_pixels(image, info)  # bad images fail before the model check
        except ImageError as e:
            raise UsageError(str(e)) from None
        if model is None:
            from compiler.api import default_model
            model = default_model(info.config_name)
        model_check = _check_model(dev, model)
        result = dev.classify(pixels, progress=_Bar(sys.stderr) if show_bar else None)
        port = dev.port
    name = _label_fn(info.num_classes)
    top = [[i, name(i), s] for i, s in result.top(args.top)]
    doc = {"image": str(image), "port": port, "config": info.config_name,
           "model": str(model), "model_sha256": info.model_hash.hex(),
           "model_check": model_check, "cycles": result.cycles,
           "device_s": result.device_s, "wall_s": round(result.wall_s, 6),
           "attempts": result.attempts,
           "top5": [[i, name(i), s] for i, s in result.top(5)], "top": top,
           "scores": list(result.scores)}
    if args.json is not None:
        _write_json(doc, args.json)
    if args.json != "-":
        c, h, w = info.input_shape
        print(f"{image.name} on {port} ({info.config_name}, {c}x{h}x{w}, "
              f"{info.num_classes} classes)")
        width = max(len(t[1]) for t in top)
        for rank, (i, label, score) in enumerate(top, 1):
            print(f"{rank:3d}. {i:5d}  {label:<{width}}  {score:>10d}")
        dev_s = f" ({result.device_s * 1e3:.1f} ms at {info.clk_hz / 1e6:g} MHz)" \
            if result.device_s is not None else ""
        print(f"cycles {result.cycles}{dev_s}, wall {result.wall_s:.3f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        return {"classify": cmd_classify, "info": cmd_info}[args.command](args)
    except (UsageError, HostError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
