"""The dense weight image and the layer schedule: round trips, refusals, snapshots, real v1.1."""

import dataclasses
import hashlib
import struct

import numpy as np
import pytest
from harness.engine_cases import load_beats
from harness.engine_models import UNSEEN, V11, model_and_outputs
from netgen import squeezenet

from compiler import quant, schedule, wimage
from compiler.onnx_import import import_onnx
from compiler.passes import lower
from hw.config import AccelConfig, get_config
from hw.engine import LOAD_BIAS, LOAD_REQUANT, LOAD_WEIGHTS
from hw.program import layer_program, pack_cmd

CFG = get_config("default")

#: pinned bytes of the small model's image and schedule: a change here is a format change (bump
#: the version and update docs/weight-image.md / docs/schedule.md) or a compiler change
IMAGE_SHA256 = "271201c12d6ac55b55ab20bf5fde8e09b5d870159594fa4690c981875e55036f"
# (the command word gained b_top_hi: its layout id, in the header, changed with it)
SCHEDULE_SHA256 = "357f334e87532057397cc7d88b6102e83ddad51d8e0a17ffa5aa42787160ade9"


def _small():
    g = lower(import_onnx(squeezenet(seed=0)))
    rng = np.random.default_rng(0)
    xs = [rng.integers(-123, 152, g.input_shape) for _ in range(4)]
    return quant.quantize(g, quant.calibrate(g, xs, len(xs)), CFG)


@pytest.fixture(scope="module")
def small():
    return _small()


def test_image_round_trip_and_layout(small):
    img = wimage.build_image(CFG, small)
    data = wimage.write_image(img)
    assert wimage.read_image(data, CFG) == img
    assert img.model_sha256 == small.source_sha256 and len(img.model_sha256) == 64
    # every layer follows the one before it, from row 0
    w = p = 0
    for la in img.layers:
        assert (la.wbase, la.pbase) == (w, p)
        w, p = w + la.wrows, p + la.prows
    assert (w, p) == (len(img.weight_rows), len(img.bias_rows))
    assert [la.name for la in img.layers] == ["conv1", "fire2", "fire3", "fire4", "fire5",
                                              "conv10"]
    assert len(data) == (wimage.HEADER_BYTES + len(img.layers) * wimage.ENTRY_BYTES
                         + img.weight_bytes + img.param_bytes)


def test_image_and_schedule_are_deterministic_snapshots(small):
    again = _small()
    data = wimage.write_image(wimage.build_image(CFG, small))
    sdata = schedule.write_schedule(CFG, schedule.build_schedule(CFG, small))
    assert data == wimage.write_image(wimage.build_image(CFG, again))
    assert hashlib.sha256(data).hexdigest() == IMAGE_SHA256
    assert hashlib.sha256(sdata).hexdigest() == SCHEDULE_SHA256


def _refused(read, data, match):
    with pytest.raises(ValueError, match=match):
        read(data)


def test_image_reader_refuses_bad_input(small):
    data = wimage.write_image(wimage.build_image(CFG, small))
    read = wimage.read_image
    with pytest.raises(wimage.ImageFormatError, match=r"magic b'SQWI', expected b'SQDW'"):
        read(b"SQWI" + data[4:])
    _refused(read, data[:4] + struct.pack("<H", 7) + data[6:], r"version 7, expected 1")
    _refused(read, data[:-1], rf"truncated .*{len(data) - 1} bytes, expected {len(data)}")
    _refused(read, data + b"\0", r"over-long")
    _refused(read, data[:20], r"header alone is")
    _refused(read, b"SQ", r"shorter than the magic")
    other = dataclasses.replace(CFG, pe_columns=8)
    _refused(lambda d: read(d, other), data, r"laid out for .*pe_columns=16.*expected.*"
                                             r"pe_columns=8")


def test_schedule_round_trip_and_ping_pong(small):
    sched = schedule.build_schedule(CFG, small)
    data = schedule.write_schedule(CFG, sched)
    assert schedule.read_schedule(data, CFG) == sched
    img = wimage.build_image(CFG, small)
    shapes = small.shapes()
    region = sched.region_bytes
    assert region % schedule.REGION_ALIGN == 0
    assert [e.name for e in sched.entries] == [la.name for la in img.layers]
    n = len(sched.entries)
    for i, (e, la) in enumerate(zip(sched.entries, img.layers)):
        # the network input and the scores never touch the memory: they are streamed
        assert (e.in_stream, e.out_stream) == (i == 0, i == n - 1)
        assert e.in_addr == (0 if i == 0 else (i % 2) * region)
        assert e.out_addr == (0 if i == n - 1 else ((i + 1) % 2) * region)
        assert (e.in_stream or e.in_bytes <= region) and (e.out_stream or e.out_bytes <= region)
        assert e.cmd["g0_wbase"] >= la.wbase and e.cmd["g0_wbase"] < la.wbase + la.wrows
        if e.cmd["fire"]:
            assert (e.cmd["a_wbase"], e.cmd["a_pbase"]) == (la.wbase, la.pbase)
        else:
            assert (e.cmd["g0_wbase"], e.cmd["g0_pbase"]) == (la.wbase, la.pbase)
        if i:
            prev = sched.entries[i - 1]
            assert (e.in_addr, e.in_values, e.in_value_bytes) == \
                (prev.out_addr, prev.out_values, prev.out_value_bytes)
    first, last = sched.entries[0], sched.entries[-1]
    assert (first.in_values, first.in_value_bytes) == (int(np.prod(small.input_shape)), 2)
    assert (last.out_values, last.out_value_bytes) == (shapes["pool10"][0], 4)
    # pools are fused: conv1 streams the pooled map
    assert sched.entries[0].out_values == int(np.prod(shapes["pool1"]))
    assert sched.entries[0].cmd["pool"] == 1 and last.cmd["pool"] == 2
    # the region is the largest off-chip tensor, rounded up
    biggest = max([e.in_bytes for e in sched.entries[1:]]
                  + [e.out_bytes for e in sched.entries[:-1]])
    assert biggest <= region < biggest + schedule.REGION_ALIGN
    # without stream I/O the input is at address 0 and the scores in the memory
    staged = schedule.build_schedule(CFG, small, stream_io=False)
    assert not any(e.in_stream or e.out_stream for e in staged.entries)
    assert staged.entries[0].in_addr == 0 and staged.region_bytes >= region
    assert schedule.read_schedule(schedule.write_schedule(CFG, staged), CFG) == staged


def test_schedule_reader_refuses_bad_input(small):
    data = schedule.write_schedule(CFG, schedule.build_schedule(CFG, small))

    def read(d):
        return schedule.read_schedule(d, CFG)

    with pytest.raises(schedule.ScheduleFormatError, match=r"magic b'SQDW', expected b'SQSC'"):
        read(b"SQDW" + data[4:])
    _refused(read, data[:4] + struct.pack("<H", 1) + data[6:], r"version 1, expected 2")
    # flags other than the two stream bits (entry offset 50 of the first entry)
    off = schedule.HEADER_BYTES + 50
    _refused(read, data[:off] + struct.pack("<H", 4) + data[off + 2:], r"unknown flags 0x0004")
    _refused(read, data[:-3], r"truncated .*expected")
    _refused(read, data + b"\0", r"over-long")
    other = AccelConfig(max_dim=256)
    _refused(lambda d: schedule.read_schedule(d, other), data,
             r"command layout .*, expected .* of configuration")


def test_standalone_pool_is_refused(small):
    bad = dataclasses.replace(small, layers=[small.layers[0], small.layers[1],
                                             small.layers[1]])
    bad.layers[2] = dataclasses.replace(bad.layers[1], name="pool1b")
    with pytest.raises(ValueError, match=r"pool 'pool1b' does not follow"):
        wimage.engine_steps(bad)


def test_real_v11_image_matches_what_the_engine_tests_load():
    qm, _, _ = model_and_outputs(V11, UNSEEN)
    img = wimage.build_image(CFG, qm)
    data = wimage.write_image(img)
    back = wimage.read_image(data, CFG)
    assert back == img and back.model_sha256 == qm.source_sha256
    # sizes (docs/weight-image.md): 8746 weight rows, 247 parameter rows
    assert (len(back.weight_rows), len(back.bias_rows)) == (8746, 247)
    assert (back.weight_bytes, back.param_bytes, len(data)) == (1259424, 26676, 1286660)
    ins = qm.input_shapes()
    names = [la.name for la in qm.layers]
    sched = schedule.read_schedule(schedule.write_schedule(CFG, schedule.build_schedule(
        CFG, qm)), CFG)
    assert len(sched.entries) == 10
    for la, entry in zip(back.layers, sched.entries):
        layer = qm.layer(la.name)
        nxt = qm.layers[names.index(la.name) + 1] if names.index(la.name) + 1 < len(names) \
            else None
        pool = nxt if nxt is not None and nxt.name.startswith("pool") else None
        # what tests/test_engine_verilator.py feeds the engine for this layer, at the image's rows
        prog = layer_program(CFG, layer, ins[la.name], pool=pool, wbase=la.wbase,
                             pbase=la.pbase)
        beats = load_beats(CFG, prog, la.wbase, la.pbase)
        got = {LOAD_WEIGHTS: back.weight_rows, LOAD_BIAS: back.bias_rows,
               LOAD_REQUANT: back.requant_rows}
        for beat in beats:
            assert got[beat["target"]][beat["addr"]] == beat["data"], (la.name, beat["target"],
                                                                       beat["addr"])
        assert sum(b["target"] == LOAD_WEIGHTS for b in beats) == la.wrows
        assert sum(b["target"] == LOAD_BIAS for b in beats) == la.prows
        assert pack_cmd(CFG, entry.cmd) == pack_cmd(CFG, prog.cmd), la.name
        # the compiler's start-of-layer window flag is what the sequencer used to work out
        # from the command (b_top + b_win_rows >= b_h)
        cmd = prog.cmd
        assert cmd["b_top_hi"] == int(cmd["b_top"] + cmd["b_win_rows"] >= cmd["b_h"]), la.name
