"""The layer schedule: the one module that writes and reads it (``docs/schedule.md``).

A layer schedule is the program of the sequencer that runs a whole network on one engine: one
entry per engine step (a convolution or Fire module, any pool fused into it; a Fire module's
squeeze output never leaves the chip), each with the engine's command word
(``hw.program.cmd_fields``: operation, shapes, weight and parameter base rows of the weight
image of ``compiler/wimage.py``, clamps, fused pool) and where the step's input is read from and
its output written to in the one external feature-map memory.

Feature maps use a ping-pong of two regions of ``region_bytes`` each, sized from the largest
tensor that goes off chip: the network input is at region 0, step ``i`` reads region ``i % 2``
and writes region ``(i + 1) % 2``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

from hw.config import AccelConfig
from hw.program import cmd_fields, cmd_width, pack_cmd, unpack_cmd

from .qmodel import QModel
from .wimage import NAME_BYTES, check_preamble, place_programs, sha_bytes

__all__ = [
    "MAGIC", "FORMAT_VERSION", "HEADER_BYTES", "ENTRY_FIXED_BYTES", "REGION_ALIGN",
    "ScheduleFormatError", "ScheduleEntry", "Schedule", "cmd_layout_id", "value_bytes",
    "build_schedule", "write_schedule", "read_schedule",
]

MAGIC = b"SQSC"
FORMAT_VERSION = 2
#: ping-pong regions start on multiples of this many bytes
REGION_ALIGN = 256

# magic, version, n_steps, cmd_bits, cmd_bytes, entry_bytes, reserved, region_bytes, fmap_bytes,
# input_addr, input_bytes, output_addr, output_bytes, cmd layout id, model sha256
_HEADER = struct.Struct("<4sHHHHHHIIIIII8s32s")
_ENTRY = struct.Struct(f"<{NAME_BYTES}sIIIIBBH")  # name, in/out addr and values, value bytes
HEADER_BYTES = _HEADER.size
ENTRY_FIXED_BYTES = _ENTRY.size


class ScheduleFormatError(ValueError):
    """Bytes that are not a layer schedule of this version, or are truncated or corrupt."""


def cmd_layout_id(cfg: AccelConfig) -> bytes:
    """8 bytes naming the command word's field list: the first 8 bytes of the SHA-256 of
    ``"name:bits:s|..."`` (``s`` is 1 for a signed field) over ``cmd_fields(cfg)`` in order."""
    text = "|".join(f"{n}:{b}:{int(s)}" for n, b, s in cmd_fields(cfg))
    return hashlib.sha256(text.encode()).digest()[:8]


def value_bytes(bits: int) -> int:
    """Bytes of one value of ``bits`` bits in the feature-map memory."""
    return -(-bits // 8)


@dataclass(frozen=True)
class ScheduleEntry:
    """One engine step: its command fields (all of ``cmd_fields``) and its feature-map I/O."""

    name: str
    cmd: dict[str, int]
    in_addr: int
    in_values: int
    in_value_bytes: int
    out_addr: int
    out_values: int
    out_value_bytes: int
    #: the input comes from the top level's input stream, not from the memory (``in_addr`` 0)
    in_stream: bool = False
    #: the output goes to the top level's output stream, not to the memory (``out_addr`` 0)
    out_stream: bool = False

    @property
    def in_bytes(self) -> int:
        return self.in_values * self.in_value_bytes

    @property
    def out_bytes(self) -> int:
        return self.out_values * self.out_value_bytes


@dataclass
class Schedule:
    """A whole network's sequencer program (see the module docstring)."""

    model_sha256: str
    cmd_bits: int
    cmd_layout: bytes
    region_bytes: int
    entries: list[ScheduleEntry] = field(default_factory=list)

    @property
    def fmap_bytes(self) -> int:
        return 2 * self.region_bytes


def _out_value_bytes(cfg: AccelConfig, prog) -> int:
    if prog.pool == 2:  # POOL_SUM: class-score sums
        return value_bytes(cfg.sum_bits)
    ymax = max(prog.cmd[f"g{k}_ymax"] for k in range(1 + prog.cmd["b_two"]))
    return value_bytes(cfg.act_bits if ymax <= cfg.act_max else cfg.score_bits)


#: entry flags (the u16 at entry offset 50)
FLAG_IN_STREAM, FLAG_OUT_STREAM = 1, 2


def build_schedule(cfg: AccelConfig, qm: QModel, *, stream_io: bool = True) -> Schedule:
    """The schedule of ``qm`` for ``cfg``, its base rows those of ``wimage.build_image``.

    With ``stream_io`` (the default) the first step reads the network input straight from the
    top level's input stream and the last step sends the scores straight to its output stream,
    so neither ever goes through the feature-map memory; without it the host puts the input at
    address 0 and reads the scores from the memory.

    Raises ``ValueError`` when a step other than the last produces values wider than an
    activation (the next step could not read them).
    """
    progs = place_programs(cfg, qm)
    in_vb = value_bytes(cfg.input_bits)
    ios = []
    for i, p in enumerate(progs):
        out_vb = _out_value_bytes(cfg, p)
        if i + 1 < len(progs) and out_vb > value_bytes(cfg.act_bits):
            raise ValueError(f"{p.name}: its {out_vb}-byte outputs cannot feed the next step "
                             f"({cfg.input_bits}-bit engine input)")
        ios.append((p, in_vb, out_vb))
        in_vb = out_vb
    last = len(ios) - 1
    sizes = [0]
    for i, (p, ivb, ovb) in enumerate(ios):
        if not (stream_io and i == 0):
            sizes.append(p.cmd["in_total"] * ivb)
        if not (stream_io and i == last):
            sizes.append(p.out_values * ovb)
    region = max(REGION_ALIGN, -(-max(sizes) // REGION_ALIGN) * REGION_ALIGN)
    sched = Schedule(qm.source_sha256, cmd_width(cfg), cmd_layout_id(cfg), region)
    for i, (p, ivb, ovb) in enumerate(ios):
        cmd = unpack_cmd(cfg, pack_cmd(cfg, p.cmd))
        in_s, out_s = stream_io and i == 0, stream_io and i == last
        sched.entries.append(ScheduleEntry(
            p.name, cmd, 0 if in_s else (i % 2) * region, p.cmd["in_total"], ivb,
            0 if out_s else ((i + 1) % 2) * region, p.out_values, ovb, in_s, out_s))
    return sched


def write_schedule(cfg: AccelConfig, sched: Schedule) -> bytes:
    """The bytes of ``sched`` (docs/schedule.md); deterministic. ``cfg`` gives the command
    word's layout, which must be the one ``sched`` was built for."""
    if sched.cmd_layout != cmd_layout_id(cfg) or sched.cmd_bits != cmd_width(cfg):
        raise ScheduleFormatError(f"schedule built for command layout {sched.cmd_layout.hex()} "
                                  f"({sched.cmd_bits} bits), expected {cmd_layout_id(cfg).hex()} "
                                  f"({cmd_width(cfg)} bits) of configuration {cfg.name!r}")
    if not sched.entries:
        raise ScheduleFormatError("a schedule needs at least one step")
    cmd_bytes = value_bytes(sched.cmd_bits)
    body = b""
    for e in sched.entries:
        name = e.name.encode()
        if len(name) > NAME_BYTES:
            raise ScheduleFormatError(f"step name {e.name!r} is longer than {NAME_BYTES} bytes")
        for addr, nbytes, streamed in ((e.in_addr, e.in_bytes, e.in_stream),
                                       (e.out_addr, e.out_bytes, e.out_stream)):
            if streamed and addr:
                raise ScheduleFormatError(f"step {e.name!r}: a streamed tensor has address "
                                          f"{addr}, expected 0")
            if not streamed and addr + nbytes > sched.fmap_bytes:
                raise ScheduleFormatError(f"step {e.name!r}: {nbytes} bytes at {addr} exceed "
                                          f"the {sched.fmap_bytes} feature-map bytes")
        body += _ENTRY.pack(name, e.in_addr, e.in_values, e.out_addr, e.out_values,
                            e.in_value_bytes, e.out_value_bytes,
                            FLAG_IN_STREAM * e.in_stream + FLAG_OUT_STREAM * e.out_stream)
        body += pack_cmd(cfg, e.cmd).to_bytes(cmd_bytes, "little")
    first, last = sched.entries[0], sched.entries[-1]
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, len(sched.entries), sched.cmd_bits, cmd_bytes,
                        ENTRY_FIXED_BYTES + cmd_bytes, 0, sched.region_bytes, sched.fmap_bytes,
                        first.in_addr, first.in_bytes, last.out_addr, last.out_bytes,
                        sched.cmd_layout, sha_bytes(sched.model_sha256, ScheduleFormatError))
    return head + body


def read_schedule(data: bytes, cfg: AccelConfig) -> Schedule:
    """The :class:`Schedule` of ``data``, its command words unpacked with ``cfg``'s fields.

    Raises :class:`ScheduleFormatError` for a wrong magic or version, a truncated or over-long
    file, a command layout other than ``cfg``'s, or inconsistent sizes.
    """
    data = bytes(data)
    check_preamble(data, MAGIC, FORMAT_VERSION, HEADER_BYTES, "layer schedule",
                   ScheduleFormatError)
    (_, _, n, cmd_bits, cmd_bytes, entry_bytes, _, region, fmap, in_addr, in_bytes, out_addr,
     out_bytes, layout, sha) = _HEADER.unpack_from(data)
    if layout != cmd_layout_id(cfg) or cmd_bits != cmd_width(cfg):
        raise ScheduleFormatError(f"command layout {layout.hex()} ({cmd_bits} bits), expected "
                                  f"{cmd_layout_id(cfg).hex()} ({cmd_width(cfg)} bits) of "
                                  f"configuration {cfg.name!r}")
    if cmd_bytes != value_bytes(cmd_bits) or entry_bytes != ENTRY_FIXED_BYTES + cmd_bytes:
        raise ScheduleFormatError(f"entry sizes {cmd_bytes}/{entry_bytes} bytes, expected "
                                  f"{value_bytes(cmd_bits)}/{ENTRY_FIXED_BYTES + cmd_bytes}")
    total = HEADER_BYTES + n * entry_bytes
    if len(data) != total:
        raise ScheduleFormatError(f"{'truncated' if len(data) < total else 'over-long'} layer "
                                  f"schedule: {len(data)} bytes, expected {total} for {n} steps")
    if n == 0 or fmap != 2 * region:
        raise ScheduleFormatError(f"{n} steps and {fmap} feature-map bytes, expected at least "
                                  f"one step and {2 * region} (two regions of {region})")
    sched = Schedule("" if sha == bytes(32) else sha.hex(), cmd_bits, layout, region)
    for i in range(n):
        off = HEADER_BYTES + i * entry_bytes
        name, ia, iv, oa, ov, ivb, ovb, flags = _ENTRY.unpack_from(data, off)
        if flags & ~(FLAG_IN_STREAM | FLAG_OUT_STREAM):
            raise ScheduleFormatError(f"step {i}: unknown flags {flags:#06x}, expected only bits "
                                      f"0 (input stream) and 1 (output stream)")
        word = int.from_bytes(data[off + ENTRY_FIXED_BYTES: off + entry_bytes], "little")
        if word >> cmd_bits:
            raise ScheduleFormatError(f"step {i}: command word has bits set above bit "
                                      f"{cmd_bits - 1}")
        sched.entries.append(ScheduleEntry(name.rstrip(b"\0").decode(), unpack_cmd(cfg, word),
                                           ia, iv, ivb, oa, ov, ovb,
                                           bool(flags & FLAG_IN_STREAM),
                                           bool(flags & FLAG_OUT_STREAM)))
    first, last = sched.entries[0], sched.entries[-1]
    if (in_addr, in_bytes, out_addr, out_bytes) != (first.in_addr, first.in_bytes,
                                                    last.out_addr, last.out_bytes):
        raise ScheduleFormatError(f"header input/output {in_addr}+{in_bytes} / "
                                  f"{out_addr}+{out_bytes} disagree with the first and last "
                                  f"steps")
    return sched
