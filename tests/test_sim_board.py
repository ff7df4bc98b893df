"""The simulated board (``--port sim``): the Verilated classifier behind its UART, on a socket.

- device-side fuzz: 1,000 bad frames (line noise, corrupt CRCs, truncated, oversized, unknown
  types, bad lengths, wrong versions) in batches, each batch followed by a valid info request
  that must be answered correctly; nothing hangs, no bad frame ever gets a result; then a
  classify on the same line whose scores are the golden model's, bit for bit;
- ``host classify IMG --port sim`` end to end (the installed driver and command line).

Building the board's Verilator model takes several minutes the first time (cached), a classify
over the simulated 3 Mbaud UART about a minute and a half: ``slow``.
"""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest

from compiler.api import DATA
from compiler.preprocess import load_image
from host.protocol import (
    ErrorReply,
    Frame,
    FrameParser,
    InfoReply,
    InfoRequest,
    MsgType,
    ProtocolError,
    cobs_encode,
    crc32,
    decode_body,
    decode_message,
    encode_body,
    encode_message,
)

pytestmark = [pytest.mark.verilator, pytest.mark.slow]

PELICAN = DATA / "photos" / "pelican.jpeg"


@pytest.fixture(scope="module")
def board():
    from sim.board import SimBoard

    with SimBoard() as b:
        yield b


def _wire(body: bytes) -> bytes:
    return b"\x00" + cobs_encode(body) + b"\x00"


def bad_frames(rng: random.Random, n: int, image_bytes: int) -> list[tuple[str, bytes]]:
    """``n`` wire byte strings, none of which is a valid request."""
    out = []
    kinds = ["noise", "crc", "truncated", "oversized_decl", "oversized_body", "unknown_type",
             "bad_length", "version", "short", "empty"]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        seq = rng.randrange(256)
        good = encode_body(Frame(type=int(MsgType.INFO), seq=seq))
        if kind == "noise":
            data = bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 40)))
            wire = data + b"\x00"
        elif kind == "crc":
            body = bytearray(good)
            k = rng.randrange(len(body))
            body[k] ^= 1 << rng.randrange(8)
            wire = _wire(bytes(body))
        elif kind == "truncated":
            wire = _wire(good[:rng.randint(1, len(good) - 1)])
        elif kind == "oversized_decl":
            head = struct.pack("<BBBI", 1, int(MsgType.CLASSIFY), seq,
                               image_bytes + rng.randint(1, 1 << 20))
            wire = _wire(head + struct.pack("<I", crc32(head)))
        elif kind == "oversized_body":
            body = good + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            wire = _wire(body)
        elif kind == "unknown_type":
            t = rng.choice([0x00, 0x03, 0x55, 0x81, 0x82, 0xFE, 0xFF])
            wire = _wire(encode_body(Frame(type=t, seq=seq)))
        elif kind == "bad_length":
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
            mtype = rng.choice([MsgType.INFO, MsgType.CLASSIFY])
            wire = _wire(encode_body(Frame(type=int(mtype), seq=seq, payload=payload)))
        elif kind == "version":
            wire = _wire(encode_body(Frame(type=int(MsgType.INFO), seq=seq,
                                           version=rng.choice([0, 2, 7, 255]))))
        elif kind == "short":
            wire = _wire(bytes(rng.randrange(1, 256) for _ in range(rng.randint(1, 10))))
        else:
            wire = b"\x00\x00"
        # a bad frame must really be bad for the host's own checker too
        body = wire.strip(b"\x00")
        if body:
            from host.protocol import cobs_decode

            try:
                frame = decode_body(cobs_decode(body))
                decode_message(frame)
                # (a classify payload is only valid at exactly C*H*W bytes: the host's decoder
                # does not know the image size, the device does)
                if frame.type == MsgType.INFO or (frame.type == MsgType.CLASSIFY
                                                  and len(frame.payload) == image_bytes):
                    raise AssertionError(f"{kind} frame {wire!r} is valid")
            except ProtocolError:
                pass
        out.append((kind, wire))
    return out


def _receive(transport, parser, wait: float) -> tuple[bool, list]:
    """One read, waiting up to ``wait`` s: (whether any byte came, the frames and parser
    errors now complete, in order)."""
    got = []
    data = transport.read(4096, wait)
    if data:
        parser.feed(data)
    while True:
        try:
            frame = parser.pop()
        except ProtocolError as e:
            got.append(e)
            continue
        if frame is None:
            return bool(data), got
        got.append(frame)


def _frames_until(transport, parser, want_seq: int, timeout: float) -> tuple[list, Frame]:
    """Frames received until one with ``want_seq`` that is not an error reply; (others, it)."""
    import time

    others = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for frame in _receive(transport, parser, 0.2)[1]:
            if (isinstance(frame, Frame) and frame.seq == want_seq
                    and frame.type != MsgType.ERROR):
                return others, frame
            others.append(frame)
    raise AssertionError(f"no reply with seq {want_seq} within {timeout} s; got {others!r}")


def _drain(transport, parser, quiet: float, limit: float = 60.0, first: bool = False) -> list:
    """Frames (and parser errors) received until the line has been quiet for ``quiet`` s (or,
    with ``first``, until the first frame)."""
    import time

    got = []
    end = time.monotonic() + limit
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        assert time.monotonic() < end, f"the device never went quiet; got {got!r}"
        came, new = _receive(transport, parser, 0.05)
        if came or new:
            last = time.monotonic()
        got += new
        if first and got:
            break
    return got


def _check_not_results(frames) -> int:
    """Bad frames get error replies or nothing, never a result; the number of error replies."""
    errors = 0
    for o in frames:
        assert not isinstance(o, ProtocolError), f"the device sent a malformed frame: {o}"
        assert o.type == MsgType.ERROR, f"a bad frame got {o!r}"
        ErrorReply.from_payload(o.payload)
        errors += 1
    return errors


def test_device_fuzz_then_classify(board):
    """1,000 bad frames, one at a time (as a host would send requests), a valid info request
    after every 50 and after a final flood of 50 sent at once; then a classify."""
    from host.driver import Device
    from host.transport import SerialTransport

    info_expected = None
    rng = random.Random(2024)
    qm = board.compiled.qmodel
    image_bytes = int(np.prod(qm.input_shape))
    frames = bad_frames(rng, 1050, image_bytes)
    transport = SerialTransport(board.url, board.config.uart_baud)
    parser = FrameParser()
    errors = 0
    try:
        for start in range(0, len(frames), 50):
            batch = frames[start:start + 50]
            if start < 1000:
                for _, wire in batch:
                    transport.write(wire)
                    # one error reply (or silence) per bad frame
                    errors += _check_not_results(_drain(transport, parser, 0.15, first=True))
            else:
                # a flood: all 50 at once; the device may overrun (LINE_ERROR) but recovers
                transport.write(b"".join(w for _, w in batch))
                _check_not_results(_drain(transport, parser, 1.0))
            seq = 200 + start // 50
            transport.write(encode_message(InfoRequest(), seq))
            others, reply = _frames_until(transport, parser, seq, timeout=60)
            assert not others, others
            info = decode_message(reply)
            assert isinstance(info, InfoReply)
            info_expected = info_expected or info
            assert info == info_expected
            assert info.input_shape == tuple(int(v) for v in qm.input_shape)
            assert info.model_hash.hex() == qm.source_sha256
        assert errors >= 800, f"only {errors} error replies to 1000 bad frames"
        # a classify after all that: the golden model's scores, bit for bit
        dev = Device(transport, port=board.url, baud=board.config.uart_baud, timeout=900)
        result = dev.classify(PELICAN)
        x = load_image(PELICAN, tuple(qm.input_shape[1:]))
        golden = np.asarray(qm.run(x)[qm.layers[-1].name]).reshape(-1)
        assert np.array_equal(np.asarray(result.scores), golden)
        assert result.top(1)[0][0] == 144
    finally:
        transport.close()


def test_host_classify_port_sim(tmp_path, capsys):
    """The command line a user types: ``host classify IMG --port sim --json OUT``."""
    from host.cli import main

    out = tmp_path / "r.json"
    image = DATA / "photos" / "bald_eagle.jpeg"
    assert main(["classify", str(image), "--port", "sim", "--json", str(out),
                 "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["top5"][0][0] == 22 and "eagle" in r["top5"][0][1]
    from hw.config import get_config
    from sim.run import compile_model

    comp = compile_model(DATA / "squeezenet1.1.onnx", get_config("default"))
    qm = comp.qmodel
    golden = np.asarray(qm.run(load_image(image, tuple(qm.input_shape[1:])))[
        qm.layers[-1].name]).reshape(-1)
    order = np.lexsort((np.arange(golden.size), -golden))[:5]
    assert [t[0] for t in r["top5"]] == [int(i) for i in order]
    assert [t[2] for t in r["top5"]] == [int(golden[i]) for i in order]
    assert r["cycles"] > 0
    assert "eagle" in capsys.readouterr().out


