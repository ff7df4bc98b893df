"""The compiler's commands: `run` on the bundled default, `eval` on the shared images."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler import api

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _run(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "compiler", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_run_bundled_default_prints_pelican(tmp_path):
    out = tmp_path / "r.json"
    r = _run("run", "--json", str(out))
    first = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("1.")][0]
    assert "pelican" in first and " 144 " in first
    doc = json.loads(out.read_text())
    assert doc["top5"][0][:2] == [144, "pelican"] and len(doc["top5"]) == 5


@pytest.mark.parametrize("photo,cls", [("bald_eagle.jpeg", 22), ("red_panda.jpg", 387)])
def test_run_bundled_photos(photo, cls, tmp_path):
    out = tmp_path / "r.json"
    _run("run", "--image", str(api.DATA / "photos" / photo), "--json", str(out))
    assert json.loads(out.read_text())["top5"][0][0] == cls


def test_run_refuses_unreadable_image(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(b"nope")
    r = _run("run", "--image", str(p), check=False)
    assert r.returncode == 2 and "x.png" in r.stderr and "error:" in r.stderr


@pytest.mark.onnxruntime
def test_eval_writes_the_promised_keys(tmp_path):
    out = tmp_path / "e.json"
    r = _run("eval", "--images", str(SHARED / "images" / "imagenet-dev"), "--limit", "6",
             "--json", str(out))
    doc = json.loads(out.read_text())
    for k in ("n", "float_top1", "float_top5", "int8_top1", "int8_top5", "agreement",
              "golden_s_per_image"):
        assert k in doc
    assert doc["n"] == 6 and 0 <= doc["agreement"] <= 1
    assert "agreement" in r.stdout


@pytest.mark.slow
@pytest.mark.onnxruntime
@pytest.mark.parametrize("model,min_agree,max_drop", [
    # Regression guards on the 200 calibration images (the acceptance figures are measured on
    # unseen images; see README). They fail if a change loses fidelity.
    ("squeezenet1.1.onnx", 0.95, 0.015),
    ("squeezenet1.0-deepcompression.onnx", 0.95, 0.02),
])
def test_accuracy_on_the_dev_images(model, min_agree, max_drop):
    from compiler.__main__ import evaluate
    r = evaluate(str(SHARED / "models" / model), str(SHARED / "images" / "imagenet-dev"),
                 progress=False)
    assert r["n"] == 200
    assert r["agreement"] >= min_agree
    assert r["float_top1"] - r["int8_top1"] <= max_drop
    assert r["golden_s_per_image"] < 1.0


def test_default_model_follows_the_configuration():
    from compiler.api import DEFAULT_MODEL, default_model
    from hw.config import get_config

    assert default_model("default") == DEFAULT_MODEL
    assert default_model(get_config("ulx3s-85f")).name == "squeezenet1.0-deepcompression.onnx"
    assert default_model("ulx3s-85f").is_file()
    assert default_model("some-other-board") == DEFAULT_MODEL
