"""Fuzzing the host's receive path: host.protocol.FrameParser and decode_message, and the
driver's reply wait on top of them. Whatever bytes arrive, they raise nothing but
ProtocolError subclasses, finish, stay within their memory bound, and every valid frame mixed
into garbage is recovered (resynchronisation on the 0x00 delimiter)."""

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import protocol as p
from host.driver import Device, DeviceTimeoutError, GarbageError
from host.transport import LoopbackTransport

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

frames = st.builds(
    p.Frame,
    type=st.sampled_from([int(t) for t in p.MsgType]),
    seq=st.integers(0, 255),
    payload=st.binary(max_size=600),
)
#: garbage biased towards what confuses a COBS parser: zeros, 0xFF codes, valid-looking heads
garbage = st.one_of(
    st.binary(max_size=700),
    st.lists(st.sampled_from([0x00, 0x01, 0x02, 0xFF, 0xFE, 0x07, 0x81]), max_size=300)
    .map(bytes),
    frames.map(lambda f: p.encode_frame(f)[1:-1]).flatmap(
        lambda enc: st.integers(0, len(enc)).map(lambda k: enc[:k])),  # a frame cut short
)


def drain(parser, limit):
    """Pop until empty; returns (frames, errors). Fails if pop does not finish."""
    got, errors = [], []
    for _ in range(limit):
        try:
            frame = parser.pop()
        except p.ProtocolError as e:
            errors.append(e)
            continue
        if frame is None:
            return got, errors
        got.append(frame)
    raise AssertionError(f"parser.pop() did not run dry within {limit} calls")


def chunked(data, cuts):
    cuts = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@FUZZ
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=20),
       max_payload=st.integers(0, 2000))
def test_arbitrary_bytes_raise_only_protocol_errors(data, cuts, max_payload):
    parser = p.FrameParser(max_payload=max_payload)
    limit = max_payload + p.MIN_BODY_SIZE
    for piece in chunked(data, cuts):
        parser.feed(piece)
        # memory bound: a partial frame never exceeds the longest legal encoding
        assert len(parser._buffer) <= p.max_encoded_size(limit)
        got, _ = drain(parser, len(data) + 2)
        for frame in got:
            assert len(frame.payload) <= max_payload
            try:
                p.decode_message(frame)
            except p.ProtocolError:
                pass


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bodies_decode_or_raise_protocol_errors(data):
    try:
        frame = p.decode_body(data)
    except p.ProtocolError:
        return
    try:
        p.decode_message(frame)
    except p.ProtocolError:
        pass
    try:
        p.cobs_decode(data)
    except p.ProtocolError:
        pass


@FUZZ
@given(items=st.lists(st.tuples(garbage, frames), min_size=1, max_size=6), tail=garbage,
       cuts=st.lists(st.integers(0, 8000), max_size=12))
def test_valid_frames_between_garbage_are_all_recovered(items, tail, cuts):
    stream = b"".join(g + p.encode_frame(f) for g, f in items) + tail
    parser = p.FrameParser()
    got = []
    for piece in chunked(stream, cuts):
        parser.feed(piece)
        got += drain(parser, len(stream) + 2)[0]
    parser.feed(b"\x00")  # flushes whatever the tail left open
    got += drain(parser, 4)[0]
    expected = [f for _, f in items]
    # every valid frame, in order (garbage could in principle form a frame of its own)
    it = iter(got)
    assert all(any(g == f for g in it) for f in expected), (expected, got)


@FUZZ
@given(data=st.binary(max_size=1000))
def test_garbage_then_a_frame_parses_the_frame(data):
    """Bytes without a delimiter before a frame are one (bad) frame; the next frame is intact."""
    frame = p.Frame(type=p.MsgType.INFO_REPLY, seq=5, payload=b"abc")
    parser = p.FrameParser()
    parser.feed(data + p.encode_frame(frame))
    got, errors = drain(parser, len(data) + 4)
    assert got[-1] == frame


class Scripted(LoopbackTransport):
    """The host end of a loopback pair whose peer has already sent ``data``."""

    def __init__(self, data):
        host, dev = LoopbackTransport.pair()
        super().__init__(host._in, host._out)
        dev.write(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(noise=garbage, after=st.booleans())
def test_driver_finds_its_reply_in_noise(noise, after):
    """The driver's wait takes the reply with its seq out of any noise, and with only noise
    fails with a HostError within its timeout."""
    info = p.InfoReply(config_name="x", model_hash=bytes(32), clk_hz=1, uart_baud=1,
                       input_shape=(1, 2, 2), num_classes=2)
    reply = p.encode_message(info, 1)
    stream = noise + reply if after else reply + noise
    dev = Device(Scripted(stream), info_timeout=0.05, retries=0)
    assert dev.info() == info
    dev = Device(Scripted(noise), info_timeout=0.05, retries=0)
    t = time.monotonic()
    try:
        dev.info()
    except (DeviceTimeoutError, GarbageError):
        pass
    else:  # noise that happens to hold a valid reply with seq 1
        assert any(f.seq == 1 for f in drain_all(noise))
    assert time.monotonic() - t < 2


def drain_all(data):
    parser = p.FrameParser()
    parser.feed(data + b"\x00")
    return drain(parser, len(data) + 4)[0]
