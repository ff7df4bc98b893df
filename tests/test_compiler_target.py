"""Compressed targets: the shipped product and ``python -m compiler eval --target``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_compress import TINY, make_images, make_model

from compiler import api, compress, wformat
from hw.config import get_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
# the bundled copy of ../shared/models/squeezenet1.0-deepcompression.onnx (same bytes)
DC = ROOT / "compiler" / "data" / "squeezenet1.0-deepcompression.onnx"
DC_SHA = "aa6442292a40d29b408b5be1023651f560c0c45157416dca70efcded1a731d30"


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZENET_FPGA_CACHE", str(tmp_path / "cache"))


def _no_compress(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("recompressed instead of using the shipped product")

    monkeypatch.setattr(compress, "compress", boom)


def test_shipped_product_is_in_the_package_and_consistent():
    img, js = compress.shipped_files(DC_SHA, "ulx3s-85f")
    assert img.name == "compress-aa6442292a40d29b-ulx3s-85f.sqwi"
    data, rep = img.read_bytes(), json.loads(js.read_text())
    assert 300_000 < len(data) < 500_000  # the whole image, tables included
    assert rep["image_sha256"] == wformat.image_sha256(data)
    assert rep["model_sha256"] == DC_SHA and rep["method_version"] == compress.METHOD_VERSION
    assert rep["seed"] == compress.SHIPPED_SEED and rep["method"] == "gptq+distill"
    tgt = compress.get_target("ulx3s-85f")
    assert rep["calib_images"] == 200 and rep["budget"] == tgt.weight_bytes
    assert rep["fits"] and rep["weight_bytes"] <= tgt.weight_bytes
    assert rep["weight_ebr"] <= tgt.ebr_max
    # every column of the engine's stream memories holds its share (hw.config ulx3s-85f)
    cfg = get_config("ulx3s-85f")
    assert len(rep["column_words"]) == cfg.pe_columns
    assert max(rep["column_words"]) <= cfg.wstream_depth == rep["wstream_depth"]
    assert rep["hardware"]["lookup_depth"] == cfg.lookup_depth
    layers, header = wformat.read_image(data)
    assert header["model_sha256"] == DC_SHA and len(layers) == 26
    # the report describes exactly this image
    assert compress.image_report(data, "ulx3s-85f")["weight_bytes"] == rep["weight_bytes"]
    assert all(la.entry_bits <= 16 for la in layers)


def test_fresh_machine_uses_the_shipped_product(monkeypatch, tmp_path):
    # no PyTorch, no calibration images, empty cache: nothing may be recompressed
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setattr(api, "DEFAULT_CALIB_DIR", tmp_path / "no-images")
    _no_compress(monkeypatch)
    qm, rep = compress.load_target_model(DC, "ulx3s-85f")
    img, _ = compress.shipped_files(DC_SHA, "ulx3s-85f")
    assert rep["shipped"] and rep["image_path"] == str(img)
    layers, _ = wformat.read_image(img.read_bytes())
    convs = {c.name: c for c in _convs(qm)}
    for la in layers:
        assert np.array_equal(convs[la.name].weight, la.codebook[la.indices])
    assert not any((tmp_path / "cache").rglob("*.sqwi"))


def _convs(qm):
    from compiler.qmodel import QConv, QFire
    for la in qm.layers:
        if isinstance(la, QConv):
            yield la
        elif isinstance(la, QFire):
            yield from (la.squeeze, la.expand1x1, la.expand3x3)


def test_shipped_product_is_the_cache_entry_of_the_default_inputs(monkeypatch):
    if not api.DEFAULT_CALIB_DIR.is_dir():
        pytest.fail(f"the shared calibration images are missing: {api.DEFAULT_CALIB_DIR} "
                    f"(../shared must be beside the checkout)")
    graph = api.import_model(DC)
    files = api.calibration_files(api.DEFAULT_CALIB_DIR)
    tgt = compress.get_target("ulx3s-85f")
    key = compress._cache_key(graph, files, tgt, tgt.weight_bytes, 0, True, None,
                              compress.DEFAULT_ENTRY_BITS)
    _, js = compress.shipped_files(DC_SHA, "ulx3s-85f")
    assert json.loads(js.read_text())["cache_key"] == key
    _no_compress(monkeypatch)
    # the same images passed explicitly hit it too (by cache key) ...
    data, rep = compress.compress_cached(graph, files, tgt, use_torch=True)
    assert rep["shipped"]
    # ... but other inputs do not: another seed would recompress
    with pytest.raises(AssertionError, match="recompressed"):
        compress.compress_cached(graph, files, tgt, seed=1, use_torch=True)
    with pytest.raises(AssertionError, match="recompressed"):
        compress.compress_for_target(DC, "ulx3s-85f", use_torch=False)


def test_shipping_rule_for_any_model(tmp_path, monkeypatch):
    """The rule on a tiny model: shipped when model SHA-256 and method version match."""
    monkeypatch.setitem(compress.TARGETS, "tiny", TINY)
    monkeypatch.setattr(api, "DATA", tmp_path / "data")
    (tmp_path / "data").mkdir()
    model = make_model(tmp_path / "tiny.onnx")
    images = make_images(tmp_path / "images")
    graph = api.import_model(model)
    files = api.calibration_files(images)
    data, rep = compress.compress(graph, files, TINY, use_torch=False, sens_images=2)
    key = compress._cache_key(graph, files, TINY, TINY.weight_bytes, 0, False, None,
                              compress.DEFAULT_ENTRY_BITS)
    img, js = compress.ship_product(graph, data, rep, key)
    assert img.name == f"compress-{graph.source_sha256[:16]}-tiny.sqwi"
    real = compress.compress
    _no_compress(monkeypatch)
    monkeypatch.setattr(api, "DEFAULT_CALIB_DIR", tmp_path / "no-images")
    qm, rep2 = compress.compress_for_target(model, "tiny")
    assert rep2["shipped"] and rep2["image_sha256"] == rep["image_sha256"]
    # another method version: the shipped file is ignored (and here there are no images)
    monkeypatch.setattr(compress, "METHOD_VERSION", "compress-test")
    assert compress.shipped_product(graph, "tiny") is None
    with pytest.raises(FileNotFoundError, match="no-images"):
        compress.compress_for_target(model, "tiny")
    monkeypatch.setattr(compress, "METHOD_VERSION", rep["method_version"])
    # a corrupt shipped image is refused, naming the file
    raw = bytearray(img.read_bytes())
    raw[-1] ^= 1
    img.write_bytes(bytes(raw))
    with pytest.raises(wformat.FormatError, match=img.name):
        compress.compress_for_target(model, "tiny")
    # explicit calibration images bypass the shipped product (content-hash cache as before)
    monkeypatch.setattr(compress, "compress", real)
    qm3, rep3 = compress.compress_for_target(model, "tiny", images, seed=1, use_torch=False)
    assert "shipped" not in rep3


def test_shared_weight_check_names_model_layer_and_count(tmp_path):
    graph = api.import_model(api.DEFAULT_MODEL)
    with pytest.raises(ValueError, match=r"squeezenet1\.1\.onnx.*not a Deep-Compression.*"
                                         r"'conv1' has \d+ distinct.*at most 255"):
        compress.check_shared_weight_model(graph, api.DEFAULT_MODEL)
    compress.check_shared_weight_model(api.import_model(make_model(tmp_path / "t.onnx")))
    with pytest.raises(ValueError, match=r"Unknown target 'nope'; expected one of .*ulx3s-85f"):
        compress.load_target_model(api.DEFAULT_MODEL, "nope")


def _cli(*args, home):
    env = {"SQUEEZENET_FPGA_CACHE": str(home / "cache"), "HOME": str(home),
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "compiler", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.onnxruntime
def test_eval_target_reports_what_the_board_carries(tmp_path):
    out = tmp_path / "e.json"
    r = _cli("eval", "--model", str(DC), "--target", "ulx3s-85f", "--limit", "3",
             "--json", str(out), home=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    for k in ("n", "float_top1", "float_top5", "int8_top1", "int8_top5", "agreement",
              "weight_bytes", "weight_ebr", "fits", "layers"):
        assert k in doc
    assert doc["n"] == 3 and doc["target"] == "ulx3s-85f" and doc["shipped"]
    assert doc["fits"] and doc["weight_bytes"] <= 409_600 and doc["weight_ebr"] <= 188
    assert len(doc["layers"]) == 26
    for la in doc["layers"]:
        assert set(la) == {"name", "bits", "codebook_size", "entry_bits", "encoding",
                           "density", "stream_bytes"}
        assert la["codebook_size"] == 2 ** la["bits"] and la["entry_bits"] <= 16
        assert 0 < la["density"] <= 1
    assert doc["layers"][-1]["name"] == "conv10"
    assert "conv10" in r.stdout and "fits: True" in r.stdout and "agreement" in r.stdout
    assert not any((tmp_path / "cache").rglob("*.sqwi"))  # nothing was recompressed


@pytest.mark.onnxruntime
@pytest.mark.parametrize("model,target,words", [
    (str(api.DEFAULT_MODEL), "ulx3s-85f", ["squeezenet1.1.onnx", "Deep-Compression",
                                           "ulx3s-85f"]),
    (str(DC), "icebreaker", ["icebreaker", "ulx3s-85f"]),
])
def test_eval_target_refuses_bad_input(tmp_path, model, target, words):
    assert Path(model).is_file(), model
    r = _cli("eval", "--model", model, "--target", target, "--limit", "1", home=tmp_path)
    assert r.returncode == 2 and r.stderr.startswith("error:")
    for w in words:
        assert w in r.stderr

