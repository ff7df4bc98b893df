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
    description: str = "SqueezeNet v1.1 dense int8 on a device with more block RAM than the ECP5-85F"

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

    # -- feature-map memory port (a model of it in simulation) --------------------------------
    #: bytes per beat of the feature-map memory port
    fmap_port_bytes: int = 8
    #: cycles from a read request to its first data beat
    fmap_read_latency: int = 20

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int) and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"AccelConfig.{field.name} must be a positive integer, "
                                 f"not {value!r}")
        if not 2 <= self.act_bits <= 16:
            raise ValueError(f"AccelConfig.act_bits must be in 2..16, not {self.act_bits!r}")
        if self.input_bits < self.act_bits:
            raise ValueError(f"AccelConfig.input_bits ({self.input_bits}) must be at least "
                             f"act_bits ({self.act_bits})")

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
    ),
}


def get_config(name: str) -> AccelConfig:
    """The named configuration; a wrong name lists the valid ones."""
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"Unknown configuration {name!r}; expected one of "
                         f"{', '.join(sorted(CONFIGS))}") from None
