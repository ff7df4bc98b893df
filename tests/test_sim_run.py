"""``python -m sim.run``: the whole network on the Verilated accelerator against the golden model.

The Verilator model of a configuration is built once and cached (several minutes the first
time), so these tests are ``slow``; CI runs them. The cycle model of the whole network
(``compiler.cycles.network_cycles``) must be within 5% of the simulation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from harness.engine_models import V10_DC

from compiler.api import DATA, DEFAULT_IMAGE, DEFAULT_MODEL
from compiler.labels import class_of_filename
from hw.config import get_config
from sim import run as simrun

SHARED = Path(__file__).resolve().parents[2] / "shared"
DEV = SHARED / "images" / "imagenet-dev"

pytestmark = [pytest.mark.verilator]


def test_cli_refuses_bad_input(tmp_path, capsys):
    assert simrun.main(["--image", str(tmp_path / "missing.jpg"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "missing.jpg" in err and "does not exist" in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert simrun.main(["--image", str(bad), "-q"]) == 2
    assert "bad.jpg" in capsys.readouterr().err
    assert simrun.main(["--config", "nosuch", "-q"]) == 2
    assert "nosuch" in capsys.readouterr().err and "default" in capsys.readouterr().err + \
        "default"
    assert simrun.main(["--model", str(tmp_path / "none.onnx"), "-q"]) == 2
    assert "none.onnx" in capsys.readouterr().err


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("simrun")
    code = simrun.main(["--json", str(out / "r.json"), "--report", str(out / "report"), "-q"])
    return code, json.loads((out / "r.json").read_text()), out


@pytest.mark.slow
def test_default_run_is_bit_exact_and_right(default_run):
    """No arguments: the bundled v1.1 on the bundled photo (pelican, class 144)."""
    code, r, _ = default_run
    assert code == 0 and r["bit_exact"] is True and r["first_mismatch"] is None
    assert all(la["bit_exact"] for la in r["layers"])
    assert r["top5"][0][0] == 144 and "pelican" in r["top5"][0][1]
    assert [t[2] for t in r["top5"]] == sorted((t[2] for t in r["top5"]), reverse=True)
    for key in ("cycles", "ideal_cycles", "multipliers", "utilization", "weight_bytes",
                "fmap_bytes_moved", "wall_s", "model", "config"):
        assert key in r
    assert r["config"] == "default" and r["multipliers"] == 144
    assert r["utilization"] >= 0.80
    assert r["ideal_cycles"] / r["cycles"] == pytest.approx(r["utilization"], abs=1e-4)
    # the cycle model of the whole network
    assert abs(r["predicted_cycles"] - r["cycles"]) <= 0.05 * r["cycles"]
    # per-step cycles add up to the frame
    assert sum(la["cycles"] for la in r["layers"]) == pytest.approx(r["cycles"], rel=1e-3)
    moved = sum(la["fmap_read_bytes"] + la["fmap_write_bytes"] for la in r["layers"])
    assert moved == r["fmap_bytes_moved"]
    # the input and the scores never touch the memory; the middle steps read what the step
    # before them wrote (whole words)
    layers = r["layers"]
    assert layers[0]["fmap_read_bytes"] == 0 and layers[-1]["fmap_write_bytes"] == 0
    for a, b in zip(layers, layers[1:]):
        if a is not layers[0] or True:
            assert b["fmap_read_bytes"] == a["fmap_write_bytes"]


@pytest.mark.slow
def test_report_files(default_run):
    _, r, out = default_run
    table = (out / "report" / "layers.txt").read_text()
    for la in r["layers"]:
        assert la["name"] in table
    data = json.loads((out / "report" / "layers.json").read_text())
    assert [la["name"] for la in data["layers"]] == [la["name"] for la in r["layers"]]
    from PIL import Image

    with Image.open(out / "report" / "layers.png") as im:
        assert im.size[0] > 300 and im.size[1] > 100


@pytest.mark.slow
def test_unseen_imagenet_image_bit_exact():
    if not DEV.is_dir():
        pytest.fail(f"the shared ImageNet images are missing: {DEV}")
    image = sorted(DEV.iterdir())[-7]          # not a calibration-only choice: any dev image
    r = simrun.run(image=image)
    assert r["bit_exact"], r["first_mismatch"]
    assert r["utilization"] >= 0.80
    assert class_of_filename(image.name) is not None


@pytest.mark.slow
def test_deep_compression_v10_dense_bit_exact():
    """SqueezeNet v1.0 (Deep Compression weights, dense int8) on the default configuration."""
    r = simrun.run(model=V10_DC, image=DATA / "photos" / "bald_eagle.jpeg")
    assert r["bit_exact"], r["first_mismatch"]
    assert r["top5"][0][0] == 22


@pytest.mark.slow
def test_a_wrong_weight_is_caught_and_named():
    """Corrupting one weight row of fire3 in what the hardware carries makes the run fail at
    fire3 (the golden model keeps the right weights)."""
    cfg = get_config("default")
    comp = simrun.compile_model(DEFAULT_MODEL, cfg)
    layer = comp.image.layer("fire3")
    rows = list(comp.image.weight_rows)
    rows[layer.wbase + 1] ^= (0x7F << 16)
    from dataclasses import replace

    bad = replace(comp, image=replace(comp.image, weight_rows=rows))
    from compiler.preprocess import load_image

    x = load_image(DEFAULT_IMAGE, tuple(comp.qmodel.input_shape[1:]))
    res = simrun.simulate(cfg, bad, x, simrun.build(cfg))
    assert res.first_mismatch == "fire3"
    assert [s.bit_exact for s in res.steps][:2] == [True, True]
    assert not np.array_equal(res.scores, np.zeros_like(res.scores))


@pytest.mark.slow
def test_ulx3s_config_runs_the_compressed_model_through_the_sdram_model():
    """``--config ulx3s-85f``: the compressed Deep-Compression v1.0 by default, feature maps
    through the SDRAM controller and the checking chip model (a protocol violation would raise
    SimError), bit-exact, and the cycle model holds with the 2-byte port."""
    r = simrun.run(config="ulx3s-85f")
    assert r["bit_exact"], r["first_mismatch"]
    assert "deepcompression" in r["model"] and r["config"] == "ulx3s-85f"
    assert r["weight_bytes"] <= 400 * 1024
    assert r["fmap_port_bytes"] == 2
    assert abs(r["predicted_cycles"] - r["cycles"]) <= 0.05 * r["cycles"]
    assert r["top5"][0][0] == 144


@pytest.mark.slow
def test_vcd_trace_of_the_frame(tmp_path):
    """``--vcd FILE --trace-cycles N``: a VCD of the first N cycles of the frame (a separate,
    cached build with tracing); the run is still checked."""
    vcd = tmp_path / "frame.vcd"
    code = simrun.main(["--vcd", str(vcd), "--trace-cycles", "300", "-q"])
    assert code == 0
    text = vcd.read_text()
    assert "$enddefinitions" in text and "i__valid" in text
    stamps = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    assert stamps and max(stamps) < 2 * 300 and len(stamps) >= 300


@pytest.mark.slow
def test_a_wrong_stream_word_is_caught_and_named():
    """ulx3s-85f reads its weights from the compressed streams: flipping code bits in one word
    of fire3's expand streams (the last column) makes the run fail at fire3, the layers before
    it stay exact; the golden model keeps the right weights."""
    import copy

    cfg = get_config("ulx3s-85f")
    comp = simrun.compile_model(V10_DC, cfg)
    bad = copy.deepcopy(comp)
    st = bad.image.streams
    i = [la.name for la in st.layers].index("fire3")
    ctx = st.layers[i].contexts[1]
    col = cfg.pe_columns - 1
    word = ctx.start[col] + 2
    st.words[col][word] ^= 0x3F << 30
    from compiler.preprocess import load_image

    x = load_image(DEFAULT_IMAGE, tuple(comp.qmodel.input_shape[1:]))
    res = simrun.simulate(cfg, bad, x, simrun.build(cfg))
    assert res.first_mismatch == "fire3"
    assert [s.bit_exact for s in res.steps][:2] == [True, True]
