"""The `host` command line, in-process (host.cli.main) and as the installed script, against the
fake board of host/fakedev.py served on a local socket (pyserial's socket:// URL)."""

import hashlib
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from compiler.api import DEFAULT_IMAGE, DEFAULT_MODEL
from compiler.labels import label
from host import driver
from host import protocol as p
from host.cli import main
from host.fakedev import FakeDevice, Fault, make_info

ONNX_SHA = hashlib.sha256(DEFAULT_MODEL.read_bytes()).digest()
#: scores with ties: classes 3 and 500 tie for first, 7 and 999 for third
SCORES = [10] * 1000
SCORES[3] = SCORES[500] = 900
SCORES[7] = SCORES[999] = 800
SCORES[42] = 700


def squeezenet_info(**kw):
    return make_info(shape=(3, 227, 227), classes=1000, name="default", **kw)


@pytest.fixture
def board():
    with FakeDevice(squeezenet_info(model_hash=ONNX_SHA), scores=lambda px: SCORES,
                    cycles=2_400_000) as fake:
        fake.url = fake.serve_socket()
        yield fake


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def one_line_error(err):
    lines = err.strip().splitlines()
    assert lines[-1].startswith("host: error: ")
    return lines[-1]


# -- classify ---------------------------------------------------------------------------------

def test_classify_prints_top_k(board, capsys):
    status, out, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url, "--top", 4)
    assert status == 0, err
    lines = out.splitlines()
    assert "pelican.jpeg" in lines[0] and board.url in lines[0]
    ranked = lines[1:5]
    for line, (i, score) in zip(ranked, [(3, 900), (500, 900), (7, 800), (999, 800)],
                                strict=True):
        assert line.split()[1] == str(i) and line.split()[-1] == str(score)
        assert label(i) in line
    assert "cycles 2400000 (24.0 ms at 100 MHz)" in out
    assert err == ""  # not a terminal: no progress bar


def test_classify_json(board, capsys, tmp_path):
    out_file = tmp_path / "r.json"
    status, out, _ = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url,
                         "--json", out_file)
    assert status == 0
    doc = json.loads(out_file.read_text())
    assert doc["top5"] == [[3, label(3), 900], [500, label(500), 900], [7, label(7), 800],
                           [999, label(999), 800], [42, label(42), 700]]
    assert doc["cycles"] == 2_400_000
    assert doc["port"] == board.url
    assert doc["model_sha256"] == ONNX_SHA.hex()
    assert doc["model_check"] == "ok"
    assert 0 < doc["wall_s"] < 10
    assert doc["scores"] == SCORES
    assert "jackfruit" not in out and label(3) in out  # text output still printed


def test_classify_json_to_stdout_is_only_json(board, capsys):
    status, out, _ = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url, "--json", "-",
                         "--top", 2)
    assert status == 0
    doc = json.loads(out)
    assert [t[0] for t in doc["top"]] == [3, 500]
    assert len(doc["top5"]) == 5


def test_classify_sends_the_compiler_preprocessed_image(board, capsys):
    from compiler.preprocess import MEAN_BGR, load_image
    assert run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url)[0] == 0
    (frame,) = [f for f in board.requests if f.type == p.MsgType.CLASSIFY]
    import numpy as np
    hwc = np.frombuffer(frame.payload, np.uint8).reshape(227, 227, 3).astype(np.int16)
    net = hwc.transpose(2, 0, 1) - np.array(MEAN_BGR, np.int16)[:, None, None]
    assert (net == load_image(DEFAULT_IMAGE)).all()


def test_progress_bar(board, capsys):
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url, "--progress")
    assert status == 0
    assert err.count("\r") > 5 and "100% of 155" in err and err.endswith("\n")
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url,
                         "--no-progress")
    assert status == 0 and err == ""


def test_model_hash_mismatch_names_both(board, capsys, tmp_path):
    board.info = squeezenet_info(model_hash=b"\x5a" * 32)
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url)
    assert status == 2
    line = one_line_error(err)
    assert "5a" * 32 in line and ONNX_SHA.hex() in line
    assert not [f for f in board.requests if f.type == p.MsgType.CLASSIFY]


def test_model_option(board, capsys, tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(b"not the bundled model")
    board.info = squeezenet_info(model_hash=hashlib.sha256(other.read_bytes()).digest())
    status, out, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url,
                           "--model", other, "--json", "-")
    assert status == 0, err
    assert json.loads(out)["model_check"] == "ok"
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url,
                         "--model", tmp_path / "missing.onnx")
    assert status == 2 and "missing.onnx" in one_line_error(err)


def test_device_without_model_hash_is_accepted(board, capsys):
    board.info = squeezenet_info()
    status, out, _ = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url, "--json", "-")
    assert status == 0
    assert json.loads(out)["model_check"] == "device reports no model hash"


# -- errors -----------------------------------------------------------------------------------

def test_missing_image(board, capsys, tmp_path):
    missing = tmp_path / "no" / "such.jpg"
    status, _, err = run(capsys, "classify", missing, "--port", board.url)
    assert status == 2
    assert str(missing) in one_line_error(err)


def test_unreadable_image(board, capsys, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    status, _, err = run(capsys, "classify", bad, "--port", board.url)
    assert status == 2
    line = one_line_error(err)
    assert "cannot read image" in line and str(bad) in line
    status, _, err = run(capsys, "classify", tmp_path, "--port", board.url)
    assert status == 2 and "not a file" in one_line_error(err)


def test_no_device_on_port(capsys, monkeypatch):
    monkeypatch.setattr(driver, "_comports", lambda: [types.SimpleNamespace(
        device="/dev/ttyUSB0", vid=0x0403, description="FT231X USB UART")])
    status, _, err = run(capsys, "info", "--port", "/dev/ttyNOPE9")
    assert status == 2
    line = one_line_error(err)
    assert "/dev/ttyNOPE9" in line and "/dev/ttyUSB0 (FT231X USB UART)" in line


@pytest.mark.parametrize("ports, expected", [
    ([], "no USB serial port"),
    ([("/dev/ttyUSB0", 1), ("/dev/ttyUSB1", 2)], "/dev/ttyUSB0, /dev/ttyUSB1"),
])
def test_default_port_needs_exactly_one(capsys, monkeypatch, ports, expected):
    monkeypatch.setattr(driver, "_comports", lambda: [
        types.SimpleNamespace(device=d, vid=v, description="n/a") for d, v in ports])
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE)
    assert status == 2 and expected in one_line_error(err)


def test_default_port_is_the_one_usb_port(board, capsys, monkeypatch):
    monkeypatch.setattr(driver, "_comports", lambda: [
        types.SimpleNamespace(device="/dev/ttyS0", vid=None, description="n/a"),
        types.SimpleNamespace(device=board.url, vid=0x0403, description="FT231X")])
    status, out, err = run(capsys, "info", "--json")
    assert status == 0, err
    assert json.loads(out)["port"] == board.url


def test_silent_device_times_out(board, capsys):
    board.inject(*[Fault("silent", on=p.MsgType.CLASSIFY)] * 3)
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url,
                         "--timeout", 0.2)
    assert status == 2
    assert "within 0.2 s" in one_line_error(err)
    assert err.count("resending") == 2  # said so, both times


def test_silent_device_info(board, capsys):
    board.always = Fault("silent")
    status, _, err = run(capsys, "info", "--port", board.url, "--timeout", 0.1)
    assert status == 2
    line = one_line_error(err)
    assert "not a single byte" in line and "programmed" in line


def test_garbage_says_baud(board, capsys):
    board.always = Fault("garbage")
    status, _, err = run(capsys, "info", "--port", board.url, "--timeout", 0.1, "--baud",
                         115200)
    assert status == 2
    assert "wrong baud rate (--baud, now 115200" in one_line_error(err)


def test_device_error_reply(board, capsys):
    board.inject(Fault("error", p.ErrorCode.BAD_LENGTH, on=p.MsgType.CLASSIFY))
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url)
    assert status == 2
    assert "BAD_LENGTH" in one_line_error(err)


def test_device_busy(board, capsys, monkeypatch):
    monkeypatch.setattr(driver.Device.__init__, "__kwdefaults__",
                        {**driver.Device.__init__.__kwdefaults__, "busy_wait": 0.01})
    board.inject(*[Fault("busy", on=p.MsgType.CLASSIFY)] * 5)
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--port", board.url)
    assert status == 2
    assert "BUSY" in one_line_error(err) and "try again" in one_line_error(err)


def test_port_sim_without_simulator(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sim.board", None)
    status, _, err = run(capsys, "info", "--port", "sim")
    assert status == 2 and "sim/board.py" in one_line_error(err)


def test_bad_arguments(capsys, board):
    with pytest.raises(SystemExit) as e:
        main(["classify"])
    assert e.value.code == 2
    status, _, err = run(capsys, "classify", DEFAULT_IMAGE, "--top", 0, "--port", board.url)
    assert status == 2 and "--top" in one_line_error(err)


# -- info -------------------------------------------------------------------------------------

def test_info(board, capsys):
    status, out, _ = run(capsys, "info", "--port", board.url)
    assert status == 0
    assert "3x227x227 (HWC), 154587 bytes" in out and ONNX_SHA.hex() in out
    status, out, _ = run(capsys, "info", "--port", board.url, "--json")
    doc = json.loads(out)
    assert doc == {"port": board.url, "config": "default", "protocol_version": 1,
                   "layout": "HWC", "input_shape": [3, 227, 227], "num_classes": 1000,
                   "clk_hz": 100_000_000, "uart_baud": 3_000_000,
                   "model_sha256": ONNX_SHA.hex()}


# -- the installed script ---------------------------------------------------------------------

def host_script():
    here = Path(sys.executable).parent / "host"
    found = here if here.exists() else shutil.which("host")
    if found is None:
        pytest.fail("the `host` console script is not installed (pip install -e .)")
    return str(found)


def test_script_help():
    r = subprocess.run([host_script(), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "classify" in r.stdout and "info" in r.stdout
    r = subprocess.run([host_script(), "classify", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--top" in r.stdout and "--json" in r.stdout


def test_script_missing_image(tmp_path):
    missing = tmp_path / "missing-photo.jpg"
    r = subprocess.run([host_script(), "classify", str(missing), "--port", "loop://"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert str(missing) in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_script_classify_end_to_end(board, tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([host_script(), "classify", str(DEFAULT_IMAGE), "--port", board.url,
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["top5"][0] == [3, label(3), 900]
