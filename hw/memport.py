"""The feature-map memory port: one request/response stream interface to off-chip memory.

The accelerator keeps its weights on chip and moves feature maps through one memory port. On the
ULX3S the port is served by the SDRAM controller (:mod:`hw.sdram`), in simulation by
:class:`ModelMemory` or by the controller in front of the SDRAM chip model
(:mod:`hw.sdram_model`).

The port (:class:`MemPortSignature`, from the master's side) has three streams:

- ``cmd`` (master -> memory): :class:`MemCmd` ``{addr, len, write}``. ``addr`` is a *word*
  address (a word is ``data_bytes`` bytes), ``len`` the burst length in words, 1..``max_len``
  (a command with ``len == 0`` is accepted and does nothing). A burst covers the words
  ``addr .. addr + len - 1``; addresses wrap at the top of the address space.
- ``wdata`` (master -> memory): :class:`MemWrite` ``{data, mask}``: exactly ``len`` beats per
  write command, in address order. ``mask`` has one bit per byte; a byte whose bit is 0 is left
  as it was.
- ``rdata`` (memory -> master): :class:`MemRead` ``{data}``: exactly ``len`` beats per read
  command, in address order.

Commands are served strictly in order: a read after a write sees the written data, a write after
a read does not change what the read returns. The memory may take any number of cycles to accept
a command or a beat and to deliver read data, and every stream tolerates back-pressure: the
master may hold ``rdata.ready`` low for as long as it wants (the memory stops issuing reads
instead of losing data) and may deliver write beats as slowly as it wants. A master that has
sent a read command must accept its data eventually, and one that has sent a write command must
supply its beats, or the port stalls (in-order service).
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import AccelConfig

__all__ = ["MemCmd", "MemWrite", "MemRead", "MemPortSignature", "serve_commands", "ModelMemory",
           "MIN_MODEL_LATENCY"]


def _check_positive(name: str, value, what: str = "a positive integer"):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be {what}, not {value!r}")


class MemCmd(data.StructLayout):
    """A memory command: ``addr`` (word address), ``len`` (words, 0..``max_len``), ``write``."""

    def __init__(self, addr_bits: int, max_len: int):
        super().__init__({"addr": addr_bits, "len": range(max_len + 1), "write": 1})


class MemWrite(data.StructLayout):
    """A write beat: ``data`` (``8 * data_bytes`` bits) and ``mask`` (one bit per byte)."""

    def __init__(self, data_bytes: int):
        super().__init__({"data": 8 * data_bytes, "mask": data_bytes})


class MemRead(data.StructLayout):
    """A read beat: ``data`` (``8 * data_bytes`` bits)."""

    def __init__(self, data_bytes: int):
        super().__init__({"data": 8 * data_bytes})


class MemPortSignature(wiring.Signature):
    """The memory port seen from its master: ``cmd`` and ``wdata`` out, ``rdata`` in.

    ``data_bytes``: bytes per word (per beat); ``addr_bits``: bits of a word address;
    ``max_len``: longest burst in words (default 256). A memory has ``In(MemPortSignature(...))``.
    """

    def __init__(self, data_bytes: int, addr_bits: int, *, max_len: int = 256):
        _check_positive("Memory port data_bytes", data_bytes)
        _check_positive("Memory port addr_bits", addr_bits)
        _check_positive("Memory port max_len", max_len)
        self._data_bytes = data_bytes
        self._addr_bits = addr_bits
        self._max_len = max_len
        super().__init__({
            "cmd": Out(stream.Signature(MemCmd(addr_bits, max_len))),
            "wdata": Out(stream.Signature(MemWrite(data_bytes))),
            "rdata": In(stream.Signature(MemRead(data_bytes))),
        })

    @classmethod
    def for_config(cls, config: AccelConfig, addr_bits: int, *, max_len: int = 256):
        """The port of ``config``: ``config.fmap_port_bytes`` bytes per word."""
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        return cls(config.fmap_port_bytes, addr_bits, max_len=max_len)

    @property
    def data_bytes(self) -> int:
        return self._data_bytes

    @property
    def data_bits(self) -> int:
        return 8 * self._data_bytes

    @property
    def addr_bits(self) -> int:
        return self._addr_bits

    @property
    def max_len(self) -> int:
        return self._max_len

    def __eq__(self, other):
        return (type(other) is type(self) and other._data_bytes == self._data_bytes
                and other._addr_bits == self._addr_bits and other._max_len == self._max_len)

    def __hash__(self):
        return hash((type(self), self._data_bytes, self._addr_bits, self._max_len))

    def __repr__(self):
        return (f"MemPortSignature({self._data_bytes}, {self._addr_bits}, "
                f"max_len={self._max_len})")


#: The shortest read latency :class:`ModelMemory` can model (command accept -> first beat).
MIN_MODEL_LATENCY = 3


def serve_commands(m: Module, bus, issue) -> tuple[Signal, Signal, Signal, Signal]:
    """The command bookkeeping of a memory on ``bus`` (a port seen from the memory's side):
    the current command's word address, whether it writes, whether one is active and whether
    the word being served is its last. ``issue`` (the memory's own signal): one word of the
    current command is served this cycle. A new command is taken when idle or as the last
    word of the current one goes. Returns ``(addr, writing, active, last)``."""
    addr = Signal(bus.cmd.payload.addr.shape())
    left = Signal(bus.cmd.payload.len.shape())
    writing = Signal()
    active = Signal()
    last = Signal()
    m.d.comb += [last.eq(left == 1), bus.cmd.ready.eq(~active | (issue & last))]
    with m.If(issue):
        m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
        with m.If(last):
            m.d.sync += active.eq(0)
    with m.If(bus.cmd.valid & bus.cmd.ready):
        m.d.sync += [
            addr.eq(bus.cmd.payload.addr),
            left.eq(bus.cmd.payload.len),
            writing.eq(bus.cmd.payload.write),
            active.eq(bus.cmd.payload.len != 0),
        ]
    return addr, writing, active, last


class ModelMemory(wiring.Component):
    """A behavioural memory behind a memory port, for simulation (Amaranth or Verilator).

    Give an :class:`~hw.config.AccelConfig` (``data_bytes = config.fmap_port_bytes``,
    ``latency = config.fmap_read_latency``) or ``data_bytes`` and ``latency`` explicitly; an
    explicit value overrides the configuration's. ``depth``: words held (a power of two);
    ``addr_bits``: width of the port's address (default ``log2(depth)``; addresses are taken
    modulo ``depth``); ``init``: initial words (Python ints).

    Timing, the contract the engine's cycle model can rely on: a read command transferred at
    clock edge ``t`` has its first beat valid right after edge ``t + latency - 1``, so a ready
    master transfers it at edge ``t + latency``; then one beat per cycle while the master is
    ready: the bandwidth of a ``data_bytes``-wide port at one beat per cycle. Writes
    take one beat per cycle. A new command is accepted in the cycle the previous command's last
    address is issued, so back-to-back bursts leave no gap. The memory keeps issuing reads while
    ``rdata`` is stalled until its ``latency + 4``-beat output buffer would overflow.
    """

    def __init__(self, config: AccelConfig | None = None, *, depth: int,
                 data_bytes: int | None = None, latency: int | None = None,
                 addr_bits: int | None = None, max_len: int = 256, init=()):
        if config is not None and not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig or None, not "
                            f"{type(config).__name__}")
        if data_bytes is None:
            if config is None:
                raise TypeError("Give a config or data_bytes")
            data_bytes = config.fmap_port_bytes
        if latency is None:
            if config is None:
                raise TypeError("Give a config or latency")
            latency = config.fmap_read_latency
        _check_positive("ModelMemory data_bytes", data_bytes)
        _check_positive("ModelMemory depth", depth, "a positive power of two")
        if depth & (depth - 1):
            raise ValueError(f"ModelMemory depth must be a positive power of two, not {depth!r}")
        if not isinstance(latency, int) or latency < MIN_MODEL_LATENCY:
            raise ValueError(f"ModelMemory latency must be an integer of at least "
                             f"{MIN_MODEL_LATENCY} cycles, not {latency!r}")
        if addr_bits is None:
            addr_bits = max(1, ceil_log2(depth))
        _check_positive("ModelMemory addr_bits", addr_bits)
        init = [int(v) for v in init]
        if len(init) > depth:
            raise ValueError(f"ModelMemory init has {len(init)} words, more than depth {depth}")
        self._data_bytes = data_bytes
        self._depth = depth
        self._latency = latency
        self._init = init
        super().__init__({"bus": In(MemPortSignature(data_bytes, addr_bits, max_len=max_len))})

    @property
    def data_bytes(self) -> int:
        return self._data_bytes

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def latency(self) -> int:
        return self._latency

    @property
    def buffer_depth(self) -> int:
        """Beats of the read output buffer (and the most reads in flight)."""
        return self._latency + 4

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        width = 8 * self._data_bytes
        word_bits = max(1, ceil_log2(self._depth))

        m.submodules.mem = mem = Memory(shape=width, depth=self._depth, init=self._init)
        wr = mem.write_port(granularity=8)
        rd = mem.read_port(transparent_for=[wr])

        issue = Signal()    # one word of the current burst is served this cycle
        addr, writing, active, last = serve_commands(m, bus, issue)

        m.submodules.out = out = fifo.SyncFIFO(width=width, depth=self.buffer_depth)
        # Reads whose data is in the pipeline or in the buffer; at most buffer_depth.
        in_flight = Signal(range(self.buffer_depth + 1))
        popped = Signal()
        room = Signal()
        m.d.comb += [
            room.eq(in_flight != self.buffer_depth),
            popped.eq(bus.rdata.valid & bus.rdata.ready),
        ]

        with m.If(active & writing):
            m.d.comb += [bus.wdata.ready.eq(1), issue.eq(bus.wdata.valid)]
        with m.If(active & ~writing):
            m.d.comb += issue.eq(room)

        m.d.comb += [
            wr.addr.eq(addr[:word_bits]),
            wr.data.eq(bus.wdata.payload.data),
            rd.addr.eq(addr[:word_bits]),
            rd.en.eq(1),
        ]
        with m.If(active & writing & bus.wdata.valid):
            m.d.comb += wr.en.eq(bus.wdata.payload.mask)


        issued_read = Signal()
        m.d.sync += issued_read.eq(issue & ~writing)
        # The read port's data comes one cycle after its address; the delay line makes up the
        # rest of the latency: accept (t) -> address (t+1) -> data (t+2) -> delay -> buffer.
        stages = self._latency - MIN_MODEL_LATENCY
        valid, payload = issued_read, rd.data
        for i in range(stages):
            next_valid = Signal(name=f"delay{i}_valid")
            next_payload = Signal(width, name=f"delay{i}_data")
            m.d.sync += [next_valid.eq(valid), next_payload.eq(payload)]
            valid, payload = next_valid, next_payload
        m.d.comb += [
            out.w_en.eq(valid),
            out.w_data.eq(payload),
            bus.rdata.valid.eq(out.r_rdy),
            bus.rdata.payload.data.eq(out.r_data),
            out.r_en.eq(bus.rdata.ready),
        ]
        taken = Signal()
        m.d.comb += taken.eq(issue & ~writing)
        with m.If(taken & ~popped):
            m.d.sync += in_flight.eq(in_flight + 1)
        with m.Elif(~taken & popped):
            m.d.sync += in_flight.eq(in_flight - 1)
        return m
