# amaranth: UnusedElaboratable=no
"""host/protocol.py and host/transport.py, and the cross-check of the Python reference against
the gateware frame decoder and encoder of hw/link.py."""

import random
import re
import struct
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streams import get_n, put_all, simulate

from host import protocol as p
from host.transport import LoopbackTransport, SerialTransport, TransportClosed, read_frame
from hw.link import FrameDecoder, FrameEncoder

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def crc32_bitwise(data: bytes) -> int:
    """An independent CRC-32 (non-reflected form, bits reversed on the way in and out)."""
    def rev(x, n):
        return int(f"{x:0{n}b}"[::-1], 2)

    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= rev(byte, 8) << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return rev(crc, 32) ^ 0xFFFFFFFF


def parse_all(data: bytes, parser=None) -> list:
    parser = parser or p.FrameParser()
    parser.feed(data)
    out = []
    while True:
        try:
            frame = parser.pop()
        except p.ProtocolError as e:
            out.append(e)
            continue
        if frame is None:
            return out
        out.append(frame)


def body(version=p.VERSION, mtype=p.MsgType.INFO, seq=1, payload=b"", length=None):
    length = len(payload) if length is None else length
    b = struct.pack("<BBBI", version, mtype, seq, length) + payload
    return b + struct.pack("<I", p.crc32(b))


def wire(b: bytes) -> bytes:
    return b"\x00" + p.cobs_encode(b) + b"\x00"


# -- CRC -----------------------------------------------------------------------------------------

def test_crc_check_value_and_residue():
    assert p.crc32(b"123456789") == 0xCBF43926
    assert crc32_bitwise(b"123456789") == 0xCBF43926
    frame = body(payload=b"abc")
    reg = 0xFFFFFFFF ^ p.crc32(frame)  # the shift register before the final inversion
    assert reg == p.CRC32_RESIDUE


@FUZZ
@given(st.binary(max_size=200))
def test_crc_matches_bitwise_reference(data):
    assert p.crc32(data) == crc32_bitwise(data)


# -- COBS ----------------------------------------------------------------------------------------

COBS_VECTORS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(2, 256)) + b"\x00", b"\xff" + bytes(range(2, 256)) + b"\x01\x01"),
    (bytes(range(3, 256)) + b"\x00\x01", b"\xfe" + bytes(range(3, 256)) + b"\x02\x01"),
]


@pytest.mark.parametrize("raw, encoded", COBS_VECTORS)
def test_cobs_known_vectors(raw, encoded):
    assert p.cobs_encode(raw) == encoded
    assert p.cobs_decode(encoded) == raw


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=300), st.just(b"\x00"),
                          st.integers(1, 255).map(lambda b: bytes([b]) * 254)), max_size=6))
def test_cobs_roundtrip(parts):
    raw = b"".join(parts)
    encoded = p.cobs_encode(raw)
    assert 0 not in encoded
    assert len(encoded) <= p.max_encoded_size(len(raw))
    assert p.cobs_decode(encoded) == raw


def test_cobs_decode_errors():
    with pytest.raises(p.TruncatedFrameError, match=r"code 0x05\) needs 4 bytes, only 2"):
        p.cobs_decode(b"\x05\x11\x22")
    with pytest.raises(p.ProtocolError, match="zero byte at offset 2"):
        p.cobs_decode(b"\x03\x11\x00")


# -- messages ------------------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
messages = st.one_of(
    st.just(p.InfoRequest()),
    st.builds(p.ClassifyRequest, pixels=st.binary(min_size=1, max_size=600)),
    st.builds(p.InfoReply,
              config_name=st.text(max_size=40),
              model_hash=st.binary(min_size=32, max_size=32),
              clk_hz=u32, uart_baud=u32,
              input_shape=st.tuples(*[st.integers(1, 0xFFFF)] * 3),
              num_classes=st.integers(1, 0xFFFF),
              layout=st.sampled_from(p.Layout)),
    st.builds(p.ClassifyReply, scores=st.lists(u32, min_size=1, max_size=80).map(tuple),
              cycles=st.integers(0, 2**64 - 1)),
    st.builds(p.ErrorReply, code=st.one_of(st.sampled_from(p.ErrorCode), st.integers(0, 255)),
              request_type=st.integers(0, 255), detail=u32, reason=st.text(max_size=40)),
)


@FUZZ
@given(messages, st.integers(0, 255))
def test_every_message_roundtrips(message, seq):
    data = p.encode_message(message, seq)
    assert data[0] == 0 and data[-1] == 0 and 0 not in data[1:-1]
    (frame,) = parse_all(data)
    assert (frame.type, frame.seq, frame.version) == (message.TYPE, seq, p.VERSION)
    assert p.decode_message(frame) == message


def test_message_layouts():
    info = p.InfoReply(config_name="ulx3s", model_hash=bytes(range(32)), clk_hz=25_000_000,
                       uart_baud=3_000_000, input_shape=(3, 227, 227), num_classes=1000)
    payload = info.payload()
    assert payload[:18] == bytes([1, 0, 3, 0, 227, 0, 227, 0, 0xE8, 3]) + \
        (25_000_000).to_bytes(4, "little") + (3_000_000).to_bytes(4, "little")
    assert payload[18:50] == bytes(range(32))
    assert payload[50:] == b"\x05ulx3s"
    assert info.image_size == 3 * 227 * 227
    reply = p.ClassifyReply(scores=(1, 0xFFFFFFFF), cycles=0x0102030405060708)
    assert reply.payload() == bytes.fromhex("01000000ffffffff0807060504030201")
    err = p.ErrorReply(p.ErrorCode.BUSY, 2, 0x11223344, "busy")
    assert err.payload() == bytes.fromhex("0602443322 11".replace(" ", "")) + b"busy"
    assert p.encode_body(p.Frame(p.MsgType.INFO, 7)) == \
        bytes.fromhex("01010700000000") + p.crc32(bytes.fromhex("01010700000000")).to_bytes(
            4, "little")


def test_info_request_wire_example_in_docs():
    # docs/protocol.md quotes this frame
    assert p.encode_message(p.InfoRequest(), 1).hex(" ") == \
        "00 04 01 01 01 01 01 01 05 df 2e 27 cd 00"


@pytest.mark.parametrize("cls, payload, message", [
    (p.InfoRequest, b"x", r"InfoRequest payload of 1 bytes; expected 0"),
    (p.ClassifyRequest, b"", r"expected at least 1"),
    (p.InfoReply, bytes(50), r"expected at least 51"),
    (p.InfoReply, bytes(50) + b"\x03ab", r"expected 54 \(name of 3 bytes\)"),
    (p.InfoReply, bytes(50) + b"\x02\xff\xfe", r"malformed InfoReply"),
    (p.ClassifyReply, bytes(10), r"expected 4\*N \+ 8"),
    (p.ClassifyReply, bytes(8), r"expected 4\*N \+ 8"),
    (p.ErrorReply, bytes(5), r"expected at least 6"),
])
def test_bad_payloads(cls, payload, message):
    with pytest.raises(p.BadLengthError, match=message) as info:
        cls.from_payload(payload)
    assert (info.value.type, info.value.length) == (cls.TYPE, len(payload))


def test_constructors_check_values():
    with pytest.raises(ValueError, match="seq must be an integer in 0..255, not 256"):
        p.Frame(1, 256)
    with pytest.raises(TypeError, match="payload must be bytes"):
        p.Frame(1, 0, "abc")
    with pytest.raises(ValueError, match="model hash must be 32 bytes"):
        p.InfoReply("x", b"", 1, 1, (1, 1, 1), 1)
    with pytest.raises(ValueError, match=r"input shape must be \(C, H, W\)"):
        p.InfoReply("x", bytes(32), 1, 1, (1, 1), 1)
    with pytest.raises(ValueError, match="scores must be a non-empty sequence"):
        p.ClassifyReply((), 0)
    with pytest.raises(ValueError, match="cycles must be an unsigned 64-bit"):
        p.ClassifyReply((1,), -1)
    with pytest.raises(ValueError, match="error code must be an integer"):
        p.ErrorReply(256)
    with pytest.raises(TypeError, match="ClassifyRequest pixels must be bytes"):
        p.ClassifyRequest([1, 2])
    with pytest.raises(TypeError, match="expected a Message"):
        p.encode_message(b"raw", 0)


def test_error_reply_as_exception():
    err = p.ErrorReply.from_payload(bytes([p.ErrorCode.BAD_CRC, 2, 59, 0, 0, 0]) + b"bad CRC")
    assert err.code is p.ErrorCode.BAD_CRC
    exc = err.exception()
    assert isinstance(exc, p.DeviceError) and exc.reply is err
    assert str(exc) == "device error BAD_CRC: 'bad CRC' (request type 0x02, detail 59)"
    assert "code 99" in str(p.ErrorReply(99).exception())
    assert set(p.ERROR_REASONS) == set(p.ErrorCode)


def test_image_to_pixels():
    img = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)  # H=2, W=3, C=4
    assert p.image_to_pixels(img, (4, 2, 3)) == bytes(range(24))
    chw = p.image_to_pixels(img, (4, 2, 3), p.Layout.CHW)
    assert chw == img.transpose(2, 0, 1).tobytes()
    assert chw[:6] == bytes([0, 4, 8, 12, 16, 20])
    with pytest.raises(ValueError, match=r"shape \(H, W, C\) = \(2, 3, 3\), not \(2, 3, 4\)"):
        p.image_to_pixels(img, (3, 2, 3))
    with pytest.raises(TypeError, match="uint8 pixels, not int16"):
        p.image_to_pixels(img.astype(np.int16), (4, 2, 3))


# -- the stream parser: errors ---------------------------------------------------------------------

GOOD = wire(body(seq=77))


def _bad_then_good(bad: bytes, **parser_args):
    """Parse a bad frame followed by a good one; return the error, check the good frame."""
    results = parse_all(bad + GOOD, p.FrameParser(**parser_args))
    assert len(results) == 2, results
    assert results[1] == p.Frame(p.MsgType.INFO, 77)
    assert isinstance(results[0], p.ProtocolError)
    return results[0]


def test_bad_crc():
    good = body(seq=3, payload=b"xyz", mtype=p.MsgType.CLASSIFY)
    bad = good[:8] + b"X" + good[9:]
    err = _bad_then_good(wire(bad))
    assert isinstance(err, p.CRCError)
    assert err.received == int.from_bytes(good[-4:], "little")
    assert err.computed == p.crc32(bad[:-4])
    assert f"0x{err.received:08x}" in str(err) and f"0x{err.computed:08x}" in str(err)


@pytest.mark.parametrize("bad, expected, received, message", [
    (wire(body()[:5]), 11, 5, "5 bytes is shorter than the 7-byte header"),
    (wire(body(payload=b"abcd")[:-1]), 15, 14, "14 bytes is shorter than the 15 bytes"),
    (b"\x00\x05\x01\x01\x00", None, None, r"COBS block at offset 0 \(code 0x05\)"),
    (b"\x00\x01\x00", 11, 0, "0 bytes is shorter"),
])
def test_truncated(bad, expected, received, message):
    err = _bad_then_good(bad)
    assert isinstance(err, p.TruncatedFrameError)
    assert (err.expected, err.received) == (expected, received)
    assert re.search(message, str(err)), str(err)


def test_oversized():
    err = _bad_then_good(wire(body(length=5000)), max_payload=4096)
    assert isinstance(err, p.OversizedFrameError)
    assert (err.size, err.limit) == (5000, 4096)
    assert "declared payload length 5000 exceeds the limit of 4096" in str(err)

    err = _bad_then_good(wire(body(payload=b"ab") + b"\x01\x02"))
    assert isinstance(err, p.OversizedFrameError)
    assert (err.size, err.limit) == (15, 13)

    # a long run without a delimiter is dropped as it arrives, not buffered without bound
    parser = p.FrameParser(max_payload=100)
    parser.feed(b"\x00" + b"\x55" * 300)
    with pytest.raises(p.OversizedFrameError, match="without a delimiter") as info:
        parser.pop()
    assert info.value.limit == p.max_encoded_size(111)
    parser.feed(b"\x55" * 1000)
    assert parser.pop() is None
    assert parser.pop() is None
    assert parse_all(GOOD, parser) == [p.Frame(p.MsgType.INFO, 77)]


def test_unknown_type_and_version():
    err = _bad_then_good(wire(body(mtype=0x33)))
    assert isinstance(err, p.UnknownTypeError) and err.type == 0x33
    assert "unknown message type 0x33" in str(err)
    err = _bad_then_good(wire(body(version=9)))
    assert isinstance(err, p.VersionError) and err.version == 9
    assert "version 9, expected 1" in str(err)
    with pytest.raises(p.UnknownTypeError, match="0x44"):
        p.decode_message(p.Frame(0x44, 0))


def test_check_order_matches_device():
    # too short for its declared length and with a bad CRC: truncation wins, as on the device
    bad = body(payload=b"abcdef")[:-3]
    assert isinstance(_bad_then_good(wire(bad)), p.TruncatedFrameError)
    # oversized declared length and unknown type: oversized wins
    assert isinstance(_bad_then_good(wire(body(mtype=0x99, length=10**9))),
                      p.OversizedFrameError)
    # bad CRC and unknown type: the CRC wins
    bad = body(mtype=0x99)
    assert isinstance(_bad_then_good(wire(bad[:-1] + bytes([bad[-1] ^ 1]))), p.CRCError)


# -- the stream parser: fuzzing ------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_random_bytes_only_raise_protocol_errors(data, cuts):
    parser = p.FrameParser(max_payload=64)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        parser.feed(data[lo:hi])
        while True:
            try:
                if parser.pop() is None:
                    break
            except p.ProtocolError:
                pass
        assert len(parser._buffer) <= p.max_encoded_size(p.MIN_BODY_SIZE + 64)


@FUZZ
@given(st.binary(max_size=200), messages, st.integers(0, 255), st.binary(max_size=200),
       st.integers(0, 1000))
def test_frame_in_garbage_is_recovered(before, message, seq, after, cut):
    data = before + p.encode_message(message, seq) + after
    cut = min(cut, len(data))
    parser = p.FrameParser()
    results = parse_all(data[:cut], parser) + parse_all(data[cut:], parser)
    frames = [r for r in results if isinstance(r, p.Frame)]
    assert p.Frame(int(message.TYPE), seq, message.payload()) in frames
    assert all(isinstance(r, p.Frame | p.ProtocolError) for r in results)


@FUZZ
@given(st.lists(st.tuples(messages, st.integers(0, 255)), min_size=1, max_size=5),
       st.integers(1, 50))
def test_byte_by_byte_feeding_gives_same_frames(items, chunk):
    data = b"".join(p.encode_message(m, s) for m, s in items)
    parser = p.FrameParser()
    got = []
    for i in range(0, len(data), chunk):
        got += parse_all(data[i:i + chunk], parser)
    assert [(f.type, f.seq, p.decode_message(f)) for f in got] == \
        [(m.TYPE, s, m) for m, s in items]


# -- transports ----------------------------------------------------------------------------------

def test_loopback_transport():
    a, b = LoopbackTransport.pair()
    a.write(b"hello")
    assert b.read(3, 0.1) == b"hel"
    assert b.read(10, 0.1) == b"lo"
    assert b.read(10, 0.01) == b""
    assert a.read(1, 0) == b""

    def later():
        b.write(p.encode_message(p.InfoRequest(), 5))

    timer = threading.Timer(0.05, later)
    timer.start()
    frame = read_frame(a, p.FrameParser(), 5.0)
    timer.join()
    assert (frame.type, frame.seq) == (p.MsgType.INFO, 5)
    with pytest.raises(TimeoutError, match="no complete frame within 0.02 s"):
        read_frame(a, p.FrameParser(), 0.02)
    with pytest.raises(ValueError, match="read size must be a positive integer"):
        a.read(0, 1)
    b.write(b"tail")
    with b:
        pass
    assert a.read(10, 1) == b"tail"  # buffered bytes survive the close
    with pytest.raises(TransportClosed):
        a.read(10, 1)
    with pytest.raises(TransportClosed):
        a.write(b"x")


def test_serial_transport_over_pyserial_loop():
    with SerialTransport("loop://", 3_000_000) as t:
        data = p.encode_message(p.ClassifyRequest(bytes(range(256)) * 4), 9)
        t.write(data)
        frame = read_frame(t, p.FrameParser(), 2.0)
        assert p.decode_message(frame) == p.ClassifyRequest(bytes(range(256)) * 4)
        assert t.read(10, 0.01) == b""
    with pytest.raises(TransportClosed, match="cannot open serial port '/nonexistent/tty'"):
        SerialTransport("/nonexistent/tty")
    with pytest.raises(ValueError, match="baud must be a positive integer"):
        SerialTransport("loop://", 0)


# -- cross-check with the gateware -----------------------------------------------------------------

def _bodies(rng: random.Random) -> list[bytes]:
    """Frame bodies without their CRC that exercise every COBS case: zeros at the ends, runs of
    253..255 and 508 non-zero bytes, a lone zero, and two real messages."""
    nz = [rng.randrange(1, 256) for _ in range(600)]
    pixels = bytes(rng.randrange(256) for _ in range(48))
    return [
        p.encode_body(p.Frame(p.MsgType.INFO, 1))[:-p.CRC_SIZE],
        p.encode_body(p.Frame(p.MsgType.CLASSIFY, 200, pixels))[:-p.CRC_SIZE],
        bytes(nz[:253]),
        bytes(nz[:254]),
        bytes(nz[:255]),
        bytes(nz[:508]),
        bytes(nz[:254]) + b"\x00",
        b"\x00" + bytes(nz[:300]) + b"\x00\x00",
        b"\x00",
        bytes([1]),
    ]



@pytest.mark.parametrize("pipelined", [False, True], ids=["plain", "pipelined"])
def test_gateware_encoder_matches_python_byte_for_byte(pipelined):
    rng = random.Random(1)
    bodies = _bodies(rng)
    expected = b"".join(b"\x00" + p.cobs_encode(b + p.crc32(b).to_bytes(4, "little")) + b"\x00"
                        for b in bodies)
    dut = FrameEncoder(pipelined=pipelined)
    got = []

    async def producer(ctx):
        for b in bodies:
            await put_all(ctx, dut.i, [{"data": x, "last": i == len(b) - 1}
                                       for i, x in enumerate(b)], rng=rng, stall=0.3)

    async def consumer(ctx):
        got.extend(await get_n(ctx, dut.o, len(expected), rng=random.Random(2), stall=0.3))

    simulate(dut, producer, consumer)
    assert bytes(got) == expected
    # and the host parser reads every one of them back
    frames = parse_all(bytes(got), p.FrameParser())
    assert sum(isinstance(f, p.Frame) for f in frames) == 2  # the two real messages


def _lenient_cobs_decode(chunk: bytes) -> tuple[bytes, bool]:
    """What the gateware decoder emits for a chunk, and whether its last block was cut short."""
    out = bytearray()
    i = 0
    while i < len(chunk):
        code = chunk[i]
        block = chunk[i + 1:i + code]
        out += block
        i += code
        if code != 0xFF and i < len(chunk):
            out.append(0)
    return bytes(out), i > len(chunk)


@pytest.mark.parametrize("pipelined", [False, True], ids=["plain", "pipelined"])
def test_gateware_decoder_accepts_python_frames(pipelined):
    rng = random.Random(3)
    bodies = [b + p.crc32(b).to_bytes(4, "little") for b in _bodies(rng)]
    corrupt = bytearray(bodies[1])
    corrupt[20] ^= 0x04
    if corrupt[20] == 0:  # keep the COBS structure: only the CRC may catch this one
        corrupt[20] = 0x80
    cut = p.cobs_encode(bodies[0])[:-2]
    garbage = bytes([0x00, 0x00, 0x00])
    chunks = [p.cobs_encode(b) for b in bodies] + [p.cobs_encode(bytes(corrupt)), cut]
    data = garbage + b"".join(b"\x00" + c + b"\x00" for c in chunks)
    expected = []
    for c in chunks:
        decoded, truncated = _lenient_cobs_decode(c)
        expected.append((decoded, truncated))
    n_tokens = sum(len(d) + 1 for d, _ in expected)
    dut = FrameDecoder(pipelined=pipelined)
    tokens = []

    async def producer(ctx):
        await put_all(ctx, dut.i, [{"data": x} for x in data], rng=rng, stall=0.3)

    async def consumer(ctx):
        tokens.extend(await get_n(ctx, dut.o, n_tokens, rng=random.Random(4), stall=0.3))

    simulate(dut, producer, consumer)
    frames = []
    current = bytearray()
    for t in tokens:
        if t.end:
            frames.append((bytes(current), t.truncated, t.crc_ok, t.line_error))
            current = bytearray()
        else:
            current.append(t.data)
    assert [(f[0], bool(f[1])) for f in frames] == expected
    assert [f[2] for f in frames[:len(bodies)]] == [1] * len(bodies)
    assert frames[len(bodies)][2] == 0  # the corrupted body fails the CRC check
    assert not any(f[3] for f in frames)
    assert frames[-1][1] == 1
