"""The accelerator configuration: the single source of truth for widths, array sizes and depths.

Everything in ``hw/``, ``compiler/``, ``sim/``, ``host/`` and ``boards/`` derives its numbers from
one :class:`AccelConfig`. This module imports nothing from Amaranth so that the compiler and the
host can use it without the HDL toolchain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["AccelConfig", "CONFIGS", "get_config"]


@dataclass(frozen=True)
class AccelConfig:
    """One accelerator configuration.

    The numeric fields are the contract of ``docs/numerics.md``; the compiler refuses a model
    that needs more than they allow.
    """

    name: str = "default"
    description: str = ("SqueezeNet v1.1 dense int8 on a device with more block RAM than the "
                        "ECP5-85F")

    # -- numerics (docs/numerics.md) ---------------------------------------------------------
    #: bits of an activation (unsigned, after ReLU)
    act_bits: int = 8
    #: bits of the network input (signed: mean-subtracted 8-bit pixels, exact at scale 1)
    input_bits: int = 9
    #: bits of a weight (signed, symmetric per output channel)
    weight_bits: int = 8
    #: bits of a bias (signed, in accumulator units)
    bias_bits: int = 32
    #: bits of an accumulator (signed)
    acc_bits: int = 32
    #: bits of a requantisation multiplier (unsigned)
    requant_mult_bits: int = 16
    #: largest requantisation right shift
    requant_max_shift: int = 47
    #: bits of the classifier layer's requantised output (unsigned) that the global pool sums
    score_bits: int = 16

    # -- clock and host link -------------------------------------------------------------------
    clk_hz: int = 100_000_000
    uart_baud: int = 3_000_000
    #: low bits of the frame cycle counter the host link reports (the reply's field is 64 bits
    #: wide; the rest reads 0): a small device spares the counter's upper half
    cycle_bits: int = 64

    # -- feature-map memory port (a model of it in simulation) --------------------------------
    #: bytes per beat of the feature-map memory port
    fmap_port_bytes: int = 8
    #: cycles from a read request to its first data beat
    fmap_read_latency: int = 20
    #: what serves the port in simulation: "model" (hw.memport.ModelMemory: the width and
    #: latency above, one beat per cycle) or "sdram" (the SDR SDRAM controller in front of the
    #: checking chip model, as on the ULX3S)
    fmap_memory: str = "model"
    #: bytes of one burst of the top level's feature-map reader and writer (a multiple of the
    #: port width; the schedule aligns every tensor to 256 bytes, so a burst never straddles one)
    fmap_burst_bytes: int = 256
    #: bits of a word address on the feature-map port (2**bits words of fmap_port_bytes)
    fmap_addr_bits: int = 24
    #: steps the top level's schedule memory holds
    schedule_depth: int = 32

    # -- engine geometry (hw/engine.py, docs/engine.md) ------------------------------------------
    #: extra pipeline registers for 100 MHz on the ECP5 (the sequencer's step choice, the
    #: global sum's read-modify-write); False keeps the shorter pipelines, a few hundred fewer
    #: flip-flops for a small, slow device (the iCEBreaker at 12 MHz)
    fast_pipeline: bool = True
    #: multipliers per dot-product column: the input values one column multiplies per cycle
    pe_lanes: int = 9
    #: dot-product columns, each one output channel at a time (multipliers = lanes x columns)
    pe_columns: int = 16
    #: requantisation units (each a acc_bits x requant_mult_bits multiply: 2 MULT18X18D)
    requant_units: int = 6
    #: finished column groups that may wait for requantisation: covers the pipeline latency
    #: (``issue_latency + pass_latency``, 12 cycles with ``fast_pipeline``) plus the drain of a
    #: group, so that v1.1's 3-pass groups (conv1) do not wait: with 4 banks conv1 took 204,732
    #: cycles after the buffers' two extra stages, with 6 153,660 (153,228 ideal)
    result_banks: int = 6
    #: banks of every line buffer and pool memory (a power of two, at least pe_lanes)
    buffer_banks: int = 16
    #: values held by the squeeze-input buffer (power of two; at least two input pixels)
    in_buffer_depth: int = 2048
    #: values held by the window buffer (squeeze output, or a plain convolution's input)
    window_buffer_depth: int = 8192
    #: rows of the weight memory (each pe_columns x pe_lanes weights)
    weight_depth: int = 9216
    #: rows of the per-channel parameter memory (each pe_columns x (bias, multiplier, shift))
    param_depth: int = 512
    #: largest feature-map height or width
    max_dim: int = 512
    #: largest convolution kernel (height and width)
    max_kernel: int = 7
    #: largest number of channels of any tensor
    max_channels: int = 1024
    #: values held by the max pool's row memory (output width x channels)
    pool_row_depth: int = 8192
    #: input values per beat of the engine's input stream
    in_lanes: int = 4
    #: beats of the output FIFO
    out_fifo_depth: int = 16
    #: bits of the global-pool class scores
    sum_bits: int = 32

    # -- compressed weights on the weight-read path (hw/wdecode.py, docs/compression.md) ------
    #: the engine reads its weights as codebook indices from compressed per-column bit streams
    #: (``compiler/wstreams.py``) through the stream decoder and a codebook lookup, not as dense
    #: rows of a weight memory (the fields below are used only then)
    weight_streams: bool = False
    #: bits of a word of a column's stream memory (a record of a row must fit one for a row per
    #: cycle: a lane mask of pe_lanes bits plus pe_lanes codes of wstream_kmax bits)
    wstream_word_bits: int = 72
    #: widest codebook index (code) the decoder delivers: codebooks of up to 2**kmax entries
    wstream_kmax: int = 7
    #: words of each column's stream memory (all layers' streams of that column)
    wstream_depth: int = 4096
    #: words of a bank of a column's stream memory (a power of two; 2048: eight ECP5 block
    #: RAMs of 2048 x 9 bits, five banks for the ULX3S's 10,240 words): each bank's word is
    #: registered before the column's word is chosen, a cycle more per read. On the ECP5 that
    #: register is the block RAMs' own output register (boards/netlist.py), and five banks
    #: leave a 5:1 multiplexer to the word register (board build b40: a block RAM's
    #: clock-to-out, across the chip, then the multiplexer over 20 banks of 512 words;
    #: ``python -m boards.timing decoder``: 85.12 MHz with 20 banks, 102.71 with 5); 0: one
    #: memory, read straight into the word register
    wstream_bank_depth: int = 2048
    #: entries of the central codebook memory: per layer one block, the image of the lane
    #: tables (the codebooks of its convolutions packed one after another)
    codebook_depth: int = 4096
    #: entries of each lane's lookup table (LUT RAM; a power of two): a layer's codebooks, all
    #: together, must fit it (copied in from the central memory at the layer's start)
    lookup_depth: int = 256

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"AccelConfig.{field.name} must be a positive integer, "
                                 f"not {value!r}")
        if not 2 <= self.act_bits <= 16:
            raise ValueError(f"AccelConfig.act_bits must be in 2..16, not {self.act_bits!r}")
        if self.cycle_bits > 64:
            raise ValueError(f"AccelConfig.cycle_bits must be at most 64, not {self.cycle_bits!r}")
        if self.input_bits < self.act_bits:
            raise ValueError(f"AccelConfig.input_bits ({self.input_bits}) must be at least "
                             f"act_bits ({self.act_bits})")
        self._check_geometry()

    def _check_geometry(self):
        if self.fmap_memory not in ("model", "sdram"):
            raise ValueError(f"AccelConfig.fmap_memory must be 'model' or 'sdram', not "
                             f"{self.fmap_memory!r}")
        if self.fmap_burst_bytes % self.fmap_port_bytes or 256 % self.fmap_burst_bytes:
            raise ValueError(f"AccelConfig.fmap_burst_bytes must be a multiple of "
                             f"fmap_port_bytes ({self.fmap_port_bytes}) dividing 256, not "
                             f"{self.fmap_burst_bytes!r}")
        for name in ("buffer_banks", "in_buffer_depth", "window_buffer_depth"):
            value = getattr(self, name)
            if value & (value - 1):
                raise ValueError(f"AccelConfig.{name} must be a power of two, not {value!r}")
        if self.buffer_banks < max(self.pe_lanes, self.requant_units):
            raise ValueError(f"AccelConfig.buffer_banks ({self.buffer_banks}) must be at least "
                             f"pe_lanes ({self.pe_lanes}) and requant_units "
                             f"({self.requant_units})")
        if self.in_lanes > self.buffer_banks:
            raise ValueError(f"AccelConfig.in_lanes ({self.in_lanes}) must not exceed "
                             f"buffer_banks ({self.buffer_banks})")
        if self.requant_units > self.pe_columns:
            raise ValueError(f"AccelConfig.requant_units ({self.requant_units}) must not exceed "
                             f"pe_columns ({self.pe_columns})")
        for name in ("in_buffer_depth", "window_buffer_depth", "pool_row_depth"):
            if getattr(self, name) % self.buffer_banks:
                raise ValueError(f"AccelConfig.{name} must be a multiple of buffer_banks "
                                 f"({self.buffer_banks}), not {getattr(self, name)!r}")
        if self.weight_streams:
            if not self.fast_pipeline:
                raise ValueError("AccelConfig.weight_streams needs fast_pipeline: the stream "
                                 "reader's weights come 3 cycles after an issue, the lanes "
                                 "only 2 without it (buffer_latency)")
            if not 1 <= self.wstream_kmax <= 8:
                raise ValueError(f"AccelConfig.wstream_kmax must be in 1..8, not "
                                 f"{self.wstream_kmax!r}")
            if self.wstream_word_bits < self.pe_lanes:
                raise ValueError(f"AccelConfig.wstream_word_bits ({self.wstream_word_bits}) must "
                                 f"be at least pe_lanes ({self.pe_lanes})")
            b = self.wstream_bank_depth
            if b < 0 or b & (b - 1):
                raise ValueError(f"AccelConfig.wstream_bank_depth must be 0 or a power of two, "
                                 f"not {b!r}")
            if self.lookup_depth & (self.lookup_depth - 1):
                raise ValueError(f"AccelConfig.lookup_depth must be a power of two (the "
                                 f"entries of a lane's lookup table), not "
                                 f"{self.lookup_depth!r}")
        if self.out_fifo_depth <= self.drain_go_margin:
            raise ValueError(f"AccelConfig.out_fifo_depth ({self.out_fifo_depth}) must exceed the "
                             f"{self.drain_go_margin} beats the engine keeps free for chunks in "
                             f"flight, or no result ever leaves the engine")
        if self.max_channels % self.buffer_banks:
            raise ValueError(f"AccelConfig.max_channels must be a multiple of buffer_banks "
                             f"({self.buffer_banks}), not {self.max_channels!r}")

    @property
    def multipliers(self) -> int:
        """Multiply-accumulate multipliers of the engine (the ideal-cycle divisor)."""
        return self.pe_lanes * self.pe_columns

    @property
    def dsp_multipliers(self) -> int:
        """18x18 hardware multipliers the engine needs: MAC multipliers plus requantisers.

        A requantiser multiplies an ``acc_bits`` accumulator by a ``requant_mult_bits``
        multiplier: two 18x18 blocks for the default 32 x 16 bits.
        """
        pieces = -(-(self.acc_bits + 1) // 18) * -(-(self.requant_mult_bits + 1) // 18)
        return self.multipliers + self.requant_units * pieces

    @property
    def drain_go_margin(self) -> int:
        """Output-FIFO beats the engine keeps free for requantised chunks it cannot see yet
        (``hw/engine.py``: the drain issues while ``level + in flight + margin <
        out_fifo_depth``); one more with ``fast_pipeline``, whose decision is a register."""
        return 4 if self.fast_pipeline else 3

    @property
    def requant_latency(self) -> int:
        """Cycles from the requantiser's inputs to its outputs (``hw.requant.Requantizer``):
        the product (with ``fast_pipeline`` the multipliers' own registers and the sum of their
        pieces, ``hw.dsp.WideMult``: 3 cycles, else 1), the rounding add, the shift, the
        clamp."""
        return 6 if self.fast_pipeline else 4

    @property
    def array_latency(self) -> int:
        """Cycles from the column array's inputs to its accumulators (``hw.pe.ColumnArray``):
        products, partial sums, column sums, accumulate; with ``fast_pipeline`` a register
        before the multipliers too, and the multipliers' own input registers (``hw.dsp``)."""
        return 6 if self.fast_pipeline else 4

    @property
    def buffer_latency(self) -> int:
        """Cycles from a pass's issue to its lanes and weights (``hw.lbuf.SegmentBuffer``): the
        block RAM, then the rotation into lanes; with ``fast_pipeline`` a register straight
        after the block RAMs too (their 5.8 ns clock-to-out, then the rotation: board build
        b23), each buffer's own register of the request before its banks (b59: the
        sequencer's register through each bank's add into its address, 11.4 ns) and the
        rotation into lanes in two registered steps (b60: a block RAM across the chip into a
        lane's 16-to-1 multiplexer, 12.0 ns)."""
        return 5 if self.fast_pipeline else 2

    @property
    def buffer_write_latency(self) -> int:
        """Cycles from a write into the in- or window buffer to its values in their RAMs
        (``hw.lbuf.SegmentBuffer``'s ``write_latency``): with ``fast_pipeline`` each bank's
        write is registered before its RAM (board builds b48 and b51: the write's selection,
        then 7-10 ns of routing to a bank across the chip), and the sequencer counts the values
        written a cycle later; and the write registered once more as it comes in, before the
        rotation and the banks' adds (b59: 10.5 ns), and counted a cycle later again."""
        return 3 if self.fast_pipeline else 1

    @property
    def issue_latency(self) -> int:
        """Cycles from the sequencer's issue of a pass to the engine's t0, from which
        ``pass_latency`` counts: with ``fast_pipeline`` the engine takes the sequencer's
        registers of the issue and its pass (board build b34: the pass slice's head, pulled
        towards the buffers' address logic, put 47 columns between the issue and the slice's
        enables)."""
        return 1 if self.fast_pipeline else 0

    @property
    def pass_latency(self) -> int:
        """Cycles from a pass's issue to its group landing in a result bank (``hw/engine.py``:
        ``buffer_latency`` to read the lanes and weights, then the column array)."""
        return self.buffer_latency + self.array_latency

    @property
    def pool_banks(self) -> int:
        """Banks of the pools' memories: the smallest power of two that takes a beat of
        ``requant_units`` lanes (fewer banks than the line buffers' ``buffer_banks``, which serve
        ``pe_lanes``: each bank is a block RAM of its own however shallow, so on the ECP5 8
        banks instead of 16 save 8 of the max pool's EBR and 5 of the global sum's)."""
        return max(2, 1 << (self.requant_units - 1).bit_length())

    @property
    def act_max(self) -> int:
        """Largest activation value."""
        return (1 << self.act_bits) - 1

    @property
    def weight_max(self) -> int:
        """Largest weight magnitude (symmetric range, -weight_max..weight_max)."""
        return (1 << (self.weight_bits - 1)) - 1

    @property
    def input_min(self) -> int:
        return -(1 << (self.input_bits - 1))

    @property
    def input_max(self) -> int:
        return (1 << (self.input_bits - 1)) - 1

    @property
    def score_max(self) -> int:
        return (1 << self.score_bits) - 1


CONFIGS: dict[str, AccelConfig] = {
    "default": AccelConfig(),
    "ulx3s-85f": AccelConfig(
        name="ulx3s-85f",
        description="ULX3S (ECP5 LFE5U-85F): Deep-Compression SqueezeNet v1.0, 16-bit SDR SDRAM",
        fmap_port_bytes=2,
        fmap_read_latency=10,
        fmap_memory="sdram",
        # the board builds b59-b64 were made with 4 (its 3-pass conv1 groups are few: 7x7
        # kernels take 21 passes a group)
        result_banks=4,
        # the compressor's codebook entries are 12-bit signed (compiler/compress.py); an ECP5
        # multiplier takes 18 x 18 bits, so they cost no more multipliers than int8
        weight_bits=12,
        # the product's largest bias needs 15 bits (docs/boards.md: 9 instead of 12 EBR)
        bias_bits=18,
        # 4 columns: what the 85F's distributed RAM holds (36 lane lookup tables of
        # lookup_depth entries, the stream decoder, the engine) and what place and route closes
        # timing on; 16 columns need 4x the tables (docs/boards.md, section 6)
        pe_columns=4,
        requant_units=4,
        # 4 columns of 994 parameter rows in all
        param_depth=1024,
        # the row numbers of the 4-column layout (35,338 rows; with weight_streams the engine
        # builds no weight memory, the rows only number the decoder's output)
        weight_depth=36864,
        # the weights reach the column array from the compressed streams (docs/compression.md)
        weight_streams=True,
        # 4 columns x 20 x 2 EBR (512 words of 72 bits): 160 of the 208 EBR for the streams,
        # the compressor keeps every column within it (compiler/compress.py, column_words)
        wstream_depth=10240,
        # the blocks of 26 convolutions in 10 steps of at most 128 entries
        codebook_depth=2048,
        # a Fire module's three codebooks together (the compressor's allocation bounds them)
        lookup_depth=128,
    ),
    # The smallest engine for the iCE40UP5K (5280 LUT4, 8 SB_MAC16, 30 EBR): 2 lanes x 1 column,
    # narrow numerics, buffers and limits sized for boards.accel's tiny Fire model; the feature
    # maps live in 512 bytes of block RAM behind the memory port (docs/boards.md).
    "icebreaker": AccelConfig(
        name="icebreaker",
        description="iCEBreaker (iCE40UP5K): the smallest engine, a tiny Fire model, block-RAM "
                    "feature maps",
        clk_hz=12_000_000,           # the board's oscillator, no PLL; 3 Mbaud = 4 clocks per bit
        cycle_bits=32,
        fast_pipeline=False,
        fmap_port_bytes=2,
        fmap_read_latency=3,         # the simulation model's least (the board's memory: 2)
        fmap_addr_bits=8,            # 256 words x 2 bytes: the board's block-RAM memory
        schedule_depth=4,
        pe_lanes=2,
        pe_columns=1,
        requant_units=1,
        result_banks=1,
        buffer_banks=2,
        in_lanes=1,
        in_buffer_depth=32,
        # the compiler accepts 128 for the tiny model, but the engine then stalls in conv1
        window_buffer_depth=256,
        weight_depth=128,
        param_depth=32,
        max_dim=15,
        max_kernel=3,
        max_channels=4,
        pool_row_depth=32,
        out_fifo_depth=4,            # the least the short pipeline allows (drain_go_margin + 1)
        acc_bits=20,
        bias_bits=20,
        requant_mult_bits=10,
        requant_max_shift=31,
        score_bits=8,
        sum_bits=16,
    ),
}


def get_config(name: str) -> AccelConfig:
    """The named configuration; a wrong name lists the valid ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"Unknown configuration {name!r}; expected one of "
                         f"{', '.join(sorted(CONFIGS))}") from None
