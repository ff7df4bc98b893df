"""host/driver.py against the fake board of host/fakedev.py: the happy path, every fault the
driver must survive or report, and the retry rules."""

import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from compiler.preprocess import ImageError, resize_rgb
from host import driver
from host import protocol as p
from host.driver import (
    Device,
    DeviceBusyError,
    DeviceReplyError,
    DeviceTimeoutError,
    GarbageError,
    ModelMismatchError,
    NoDeviceError,
    ReplyError,
)
from host.fakedev import FakeDevice, Fault, make_info
from host.transport import read_frame

SHAPE = (3, 8, 8)
N_PIX = 3 * 8 * 8


@pytest.fixture
def fake():
    with FakeDevice(make_info(shape=SHAPE, classes=10)) as f:
        yield f


def open_dev(fake, **kw):
    args = dict(info_timeout=0.15, timeout=0.3, busy_wait=0.01)
    args.update(kw)
    return Device(fake.loopback(), port="fake", **args)


@pytest.fixture
def dev(fake):
    with open_dev(fake) as d:
        yield d


def classify_frames(fake):
    return [f for f in fake.requests if f.type == p.MsgType.CLASSIFY]


# -- happy path --------------------------------------------------------------------------------

def test_info_is_the_devices_and_cached(fake, dev):
    assert dev.info() == fake.info
    assert dev.info() == fake.info
    assert len(fake.requests) == 1
    dev.info(refresh=True)
    assert [f.type for f in fake.requests] == [p.MsgType.INFO] * 2
    assert fake.errors == []  # the host's frames are valid


def test_classify_returns_the_devices_scores_and_cycles(fake, dev):
    fake.scores = lambda px: [sum(px) % 1000 + i for i in range(10)]
    fake.cycles = 987_654_321_012
    pixels = bytes((7 * i) % 256 for i in range(N_PIX))
    r = dev.classify(pixels)
    assert r.scores == tuple(sum(pixels) % 1000 + i for i in range(10))
    assert all(type(s) is int for s in r.scores)
    assert r.cycles == 987_654_321_012
    assert r.device_s == pytest.approx(987_654_321_012 / 100e6)
    assert 0 < r.wall_s < 1
    assert r.attempts == 1 and r.notes == ()
    (frame,) = classify_frames(fake)
    assert frame.payload == pixels and frame.seq == r.seq
    assert fake.errors == []


def test_top_k_order_and_ties(fake, dev):
    fake.scores = lambda px: [5, 9, 9, 1, 9, 0, 7, 7, 2, 9]
    r = dev.classify(bytes(N_PIX))
    assert r.top(5) == [(1, 9), (2, 9), (4, 9), (9, 9), (6, 7)]
    assert r.top(1) == [(1, 9)]
    assert len(r.top(100)) == 10
    assert r.top(0) == []


def test_scores_are_unsigned_32_bit(fake, dev):
    fake.scores = lambda px: [0xFFFFFFFF, 0, 1 << 31] + [3] * 7
    r = dev.classify(bytes(N_PIX))
    assert r.scores[:3] == (0xFFFFFFFF, 0, 1 << 31)
    assert r.top(1) == [(0, 0xFFFFFFFF)]


def _png(tmp_path, h=20, w=30):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.mark.parametrize("layout", [p.Layout.HWC, p.Layout.CHW])
def test_image_file_is_sent_as_8_bit_bgr_in_the_devices_layout(tmp_path, layout):
    path = _png(tmp_path)
    with FakeDevice(make_info(shape=(3, 6, 5), classes=4, layout=layout)) as fake, \
            open_dev(fake) as dev:
        dev.classify(path)
        (frame,) = classify_frames(fake)
    bgr = resize_rgb(Image.open(path), (6, 5))[:, :, ::-1]  # the compiler's resize, BGR
    expected = bgr.transpose(2, 0, 1) if layout == p.Layout.CHW else bgr
    assert frame.payload == np.ascontiguousarray(expected).tobytes()
    # and the device subtracts the compiler's means to get the network input
    from compiler.preprocess import MEAN_BGR, load_image
    net = np.frombuffer(frame.payload, np.uint8).astype(np.int16)
    if layout == p.Layout.CHW:
        net = net.reshape(3, 6, 5)
    else:
        net = net.reshape(6, 5, 3).transpose(2, 0, 1)
    assert (net - np.array(MEAN_BGR)[:, None, None] == load_image(path, (6, 5))).all()


def test_array_and_bad_inputs(fake, dev, tmp_path):
    img = np.arange(N_PIX, dtype=np.uint8).reshape(8, 8, 3)
    dev.classify(img)
    assert classify_frames(fake)[-1].payload == img.tobytes()
    with pytest.raises(ValueError, match="192"):
        dev.classify(bytes(10))
    with pytest.raises(ImageError, match="nope.png"):
        dev.classify(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    with pytest.raises(ImageError, match="cannot read image"):
        dev.classify(bad)
    assert len(classify_frames(fake)) == 1  # nothing sent for bad input


def test_progress_reports_every_chunk_up_to_the_whole_frame():
    with FakeDevice(make_info(shape=(3, 64, 64), classes=3)) as fake, open_dev(fake) as dev:
        calls = []
        dev.classify(bytes(range(256)) * 48, progress=lambda s, t: calls.append((s, t)))
    total = len(p.encode_message(p.ClassifyRequest(bytes(range(256)) * 48), 1))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert len(calls) >= 4
    assert all(a[0] < b[0] for a, b in zip(calls, calls[1:], strict=False))


def test_sequence_numbers_run_1_to_255_and_wrap(fake, dev):
    for _ in range(260):
        dev.info(refresh=True)
    seqs = [f.seq for f in fake.requests]
    assert seqs[:3] == [1, 2, 3]
    assert seqs[254:257] == [255, 1, 2]
    assert 0 not in seqs


# -- timeouts and retries -------------------------------------------------------------------

def test_silent_device_info_retried_then_timeout(fake, dev):
    fake.always = Fault("silent")
    t = time.monotonic()
    with pytest.raises(DeviceTimeoutError, match="not a single byte") as e:
        dev.info()
    assert e.value.silent
    assert "programmed" in str(e.value) and "baud" in str(e.value)
    assert len(fake.requests) == 1 + driver.RETRIES
    assert time.monotonic() - t >= 0.15 * (1 + driver.RETRIES)


def test_info_retried_after_one_silence(fake):
    notes = []
    with open_dev(fake, log=notes.append) as dev:
        fake.inject(Fault("silent"))
        assert dev.info() == fake.info
    assert len(fake.requests) == 2
    assert fake.requests[0].seq != fake.requests[1].seq
    assert any("resending" in n for n in notes)


def test_classify_retried_only_when_no_reply_at_all(fake, dev):
    dev.info()
    fake.inject(Fault("silent", on=p.MsgType.CLASSIFY))
    r = dev.classify(bytes(N_PIX))
    assert r.attempts == 2
    assert "no reply to classify" in r.notes[0]
    seqs = [f.seq for f in classify_frames(fake)]
    assert len(seqs) == 2 and seqs[0] != seqs[1] and r.seq == seqs[1]


def test_classify_silent_gives_up_after_retries(fake, dev):
    dev.info()
    fake.inject(*[Fault("silent", on=p.MsgType.CLASSIFY)] * 5)
    with pytest.raises(DeviceTimeoutError, match="raise --timeout"):
        dev.classify(bytes(N_PIX))
    assert len(classify_frames(fake)) == 1 + driver.RETRIES


def test_classify_damaged_reply_is_not_retried(fake, dev):
    dev.info()
    fake.inject(Fault("bad_crc", on=p.MsgType.CLASSIFY))
    with pytest.raises(GarbageError, match="damaged") as e:
        dev.classify(bytes(N_PIX))
    assert "CRC" in str(e.value)
    assert len(classify_frames(fake)) == 1


def test_info_damaged_reply_is_retried(fake, dev):
    fake.inject(Fault("bad_crc"))
    assert dev.info() == fake.info
    assert len(fake.requests) == 2


def test_garbage_means_wrong_baud(fake, dev):
    fake.always = Fault("garbage", 300)
    with pytest.raises(GarbageError, match="baud") as e:
        dev.info()
    assert "3000000" in str(e.value)
    assert len(fake.requests) == 1 + driver.RETRIES


def test_wrong_seq_is_ignored(fake, dev):
    fake.inject(Fault("wrong_seq"))
    assert dev.info() == fake.info  # the reply with the wrong seq is dropped, the retry answered
    assert len(fake.requests) == 2
    fake.inject(Fault("wrong_seq", on=p.MsgType.CLASSIFY))
    with pytest.raises(DeviceTimeoutError, match="other seq") as e:
        dev.classify(bytes(N_PIX))
    assert not e.value.silent
    assert len(classify_frames(fake)) == 1  # a reply came: classify is not resent


def test_slow_reply_within_timeout(fake, dev):
    dev.info()
    fake.inject(Fault("delay", 0.1, on=p.MsgType.CLASSIFY))
    r = dev.classify(bytes(N_PIX))
    assert r.wall_s >= 0.1 and r.attempts == 1


def test_slow_info_reply_after_timeout_is_ignored(fake):
    # wide margins (a 1 s timeout, the first reply 1.5 s late): with 0.15 s the prompt reply to
    # the resend could itself miss its timeout on a loaded machine (CI with builds alongside)
    fake.inject(Fault("delay", 1.5))
    with open_dev(fake, info_timeout=1.0) as dev:
        assert dev.info() == fake.info
    assert len(fake.requests) == 2  # the late reply to seq 1 was not taken for seq 2's


def test_default_classify_timeout_covers_the_wire_time(fake, monkeypatch):
    assert driver.wire_seconds(227 * 227 * 3, 3_000_000) == pytest.approx(0.517, abs=0.002)
    monkeypatch.setattr(driver, "COMPUTE_TIMEOUT", 0.1)
    with open_dev(fake, timeout=None, retries=0, baud=3000) as dev:
        dev.info()
        fake.inject(Fault("silent", on=p.MsgType.CLASSIFY))
        t = time.monotonic()
        with pytest.raises(DeviceTimeoutError):
            dev.classify(bytes(N_PIX))
        elapsed = time.monotonic() - t
    expected = 0.1 + 1.5 * driver.wire_seconds(N_PIX, 3000)  # 0.66 s of wire time at 3 kbaud
    assert expected - 0.05 <= elapsed < expected + 2


# -- error replies ---------------------------------------------------------------------------

@pytest.mark.parametrize("code", [p.ErrorCode.BAD_LENGTH, p.ErrorCode.UNKNOWN_TYPE,
                                  p.ErrorCode.BAD_VERSION])
def test_error_reply_becomes_exception_with_code_and_reason(fake, dev, code):
    dev.info()
    fake.inject(Fault("error", code, on=p.MsgType.CLASSIFY))
    with pytest.raises(DeviceReplyError) as e:
        dev.classify(bytes(N_PIX))
    assert e.value.code == code
    assert e.value.reason == p.ERROR_REASONS[code]
    assert e.value.request_type == p.MsgType.CLASSIFY
    assert code.name in str(e.value) and "host info" in str(e.value)
    assert isinstance(e.value, p.DeviceError)
    assert len(classify_frames(fake)) == 1


def test_line_error_reply_resends_classify(fake, dev):
    dev.info()
    fake.inject(Fault("error", p.ErrorCode.BAD_CRC, on=p.MsgType.CLASSIFY))
    r = dev.classify(bytes(N_PIX))
    assert r.attempts == 2 and "BAD_CRC" in r.notes[0]


def test_persistent_line_errors_are_reported(fake, dev):
    dev.info()
    fake.inject(*[Fault("error", p.ErrorCode.LINE_ERROR, on=p.MsgType.CLASSIFY)] * 5)
    with pytest.raises(DeviceReplyError, match="cable") as e:
        dev.classify(bytes(N_PIX))
    assert e.value.code == p.ErrorCode.LINE_ERROR
    assert len(classify_frames(fake)) == 1 + driver.RETRIES


def test_busy_once_waits_and_resends(fake, dev):
    dev.info()
    fake.inject(Fault("busy", on=p.MsgType.CLASSIFY))
    r = dev.classify(bytes(N_PIX))
    assert r.attempts == 2 and "busy" in r.notes[0]


def test_busy_device(fake, dev):
    dev.info()
    fake.inject(*[Fault("busy", on=p.MsgType.CLASSIFY)] * 5)
    with pytest.raises(DeviceBusyError, match="busy") as e:
        dev.classify(bytes(N_PIX))
    assert e.value.code == p.ErrorCode.BUSY
    assert len(classify_frames(fake)) == 1 + dev.busy_retries


def test_fake_device_checks_frames_like_the_board(fake):
    """The fake's own checks: a wrong length gets BAD_LENGTH with the request's seq, garbage
    gets TRUNCATED with seq 0, a reply type gets UNKNOWN_TYPE."""
    host = fake.loopback()
    parser = p.FrameParser()
    host.write(p.encode_frame(p.Frame(type=p.MsgType.CLASSIFY, seq=77, payload=bytes(5))))
    host.write(b"\x00\x05\x01\x02\x00")
    host.write(p.encode_frame(p.Frame(type=p.MsgType.INFO_REPLY, seq=9)))
    replies = [p.decode_message(read_frame(host, parser, 1)) for _ in range(3)]
    assert [(r.code, r.detail) for r in replies] == [
        (p.ErrorCode.BAD_LENGTH, 5), (p.ErrorCode.TRUNCATED, 0),
        (p.ErrorCode.UNKNOWN_TYPE, p.MsgType.INFO_REPLY)]
    host.close()


def test_wrong_reply_type_and_short_scores(fake, dev):
    fake.inject(Fault("wrong_type"))
    with pytest.raises(ReplyError, match="ClassifyReply"):
        dev.info()
    dev.info()
    fake.inject(Fault("short_scores", on=p.MsgType.CLASSIFY))
    with pytest.raises(ReplyError, match="9 scores.*10 classes"):
        dev.classify(bytes(N_PIX))


def test_lost_connection(fake):
    dev = open_dev(fake)
    dev.info()
    dev.transport.close()
    with pytest.raises(NoDeviceError, match="lost the connection"):
        dev.info(refresh=True)


# -- model hash -----------------------------------------------------------------------------

def test_model_hash_check(fake, dev):
    fake.info = make_info(shape=SHAPE, classes=10, model_hash=bytes(range(32)))
    assert dev.check_model(bytes(range(32))) is True
    dev2 = open_dev(fake)
    with pytest.raises(ModelMismatchError) as e:
        dev2.check_model([b"\xab" * 32, b"\xcd" * 32], what="local model 'm.onnx'")
    msg = str(e.value)
    assert bytes(range(32)).hex() in msg and "ab" * 32 in msg and "cd" * 32 in msg
    assert "m.onnx" in msg
    assert e.value.device_hash == bytes(range(32))


def test_unknown_model_hash_is_not_checked(fake, dev):
    notes = []
    dev._log = notes.append
    assert dev.check_model(b"\x11" * 32) is False
    assert "no" in notes[0] and "hash" in notes[0]


# -- ports -----------------------------------------------------------------------------------

def _port(device, vid=None, description="n/a"):
    return types.SimpleNamespace(device=device, vid=vid, description=description)


def test_find_port(monkeypatch):
    monkeypatch.setattr(driver, "_comports", lambda: [_port("/dev/ttyS0"),
                                                      _port("/dev/ttyUSB0", 0x0403, "FT231X")])
    assert driver.find_port() == "/dev/ttyUSB0"
    monkeypatch.setattr(driver, "_comports", lambda: [_port("/dev/ttyS0")])
    with pytest.raises(NoDeviceError, match=r"no USB serial port.*/dev/ttyS0.*--port"):
        driver.find_port()
    monkeypatch.setattr(driver, "_comports", lambda: [_port("/dev/ttyUSB1", 1),
                                                      _port("/dev/ttyACM0", 2)])
    with pytest.raises(NoDeviceError, match=r"2 USB serial ports.*/dev/ttyACM0, /dev/ttyUSB1"):
        driver.find_port()


def test_port_that_cannot_be_opened_names_it_and_lists_ports(monkeypatch):
    monkeypatch.setattr(driver, "_comports", lambda: [_port("/dev/ttyUSB3", 1, "FT231X")])
    with pytest.raises(NoDeviceError) as e, driver.open_device("/dev/does-not-exist"):
        pass
    msg = str(e.value)
    assert "/dev/does-not-exist" in msg and "/dev/ttyUSB3 (FT231X)" in msg


def test_open_device_over_a_socket_url(fake):
    url = fake.serve_socket()
    with driver.open_device(url, info_timeout=1) as dev:
        assert dev.info() == fake.info
        assert dev.classify(bytes(N_PIX)).scores == tuple(fake.scores(bytes(N_PIX)))
        assert dev.port == url


def test_port_sim_without_sim_board(monkeypatch):
    monkeypatch.setitem(sys.modules, "sim.board", None)  # makes the import fail
    with pytest.raises(NoDeviceError, match="sim/board.py"), driver.open_device("sim"):
        pass


def test_port_sim_uses_simboard_interface(monkeypatch, fake):
    """The contract with sim.board.SimBoard: SimBoard(config=, model=) is a context manager
    whose .url pyserial opens; the reply timeout defaults to SIM_TIMEOUT."""
    url = fake.serve_socket()
    log = []

    class SimBoard:
        def __init__(self, config="default", model=None):
            log.append(("init", config, model))
            self.url = url

        def __enter__(self):
            log.append("enter")
            return self

        def __exit__(self, *exc):
            log.append("exit")

    monkeypatch.setitem(sys.modules, "sim.board", types.SimpleNamespace(SimBoard=SimBoard))
    with driver.open_device("sim", model="m.onnx", config="tiny") as dev:
        assert dev.info() == fake.info
        assert dev.timeout == driver.SIM_TIMEOUT
        assert url in dev.port
        assert log == [("init", "tiny", "m.onnx"), "enter"]
    assert log[-1] == "exit"
