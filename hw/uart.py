"""UART: 8 data bits, no parity, 1 stop bit, LSB first; bytes in and out as streams.

The bit period is ``divisor`` clock cycles, given explicitly or derived from an
:class:`~hw.config.AccelConfig` (``clk_hz / uart_baud``, rounded). The receiver synchronises the
line with two flip-flops, confirms a start bit at its middle (so glitches shorter than half a bit
are ignored), samples each bit in its middle and flags a missing stop bit as a framing error.
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from hw.config import AccelConfig

__all__ = ["RxByte", "baud_divisor", "resolve_divisor", "UARTTransmitter", "UARTReceiver", "UART"]


#: A received byte. ``framing_error``: the stop bit was low, ``data`` is unreliable.
#: ``overrun``: at least one byte was lost before this one because the consumer was not ready.
RxByte = data.StructLayout({"data": 8, "framing_error": 1, "overrun": 1})

#: The smallest divisor the receiver can sample in the middle of a bit with.
MIN_DIVISOR = 4


def baud_divisor(clk_hz: int, baud: int, *, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``, rounded; rejects a rate error above
    ``tolerance`` (the two ends of a UART link together tolerate about 4 %)."""
    for name, value in (("clk_hz", clk_hz), ("baud", baud)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{clk_hz} Hz is too slow for {baud} baud: {clk_hz / baud:.2f} clocks "
                         f"per bit, at least {MIN_DIVISOR} needed")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"{baud} baud at {clk_hz} Hz: divisor {divisor} is off by "
                         f"{error:.1%}, more than {tolerance:.0%}")
    return divisor


def resolve_divisor(divisor: int | None, config: AccelConfig | None) -> int:
    """The bit period of a UART component: ``divisor`` itself (checked), or the
    :func:`baud_divisor` of ``config``; exactly one of them must be given."""
    if (divisor is None) == (config is None):
        raise TypeError("Give exactly one of divisor and config")
    if config is not None:
        if not isinstance(config, AccelConfig):
            raise TypeError(f"config must be an AccelConfig, not {type(config).__name__}")
        return baud_divisor(config.clk_hz, config.uart_baud)
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"Divisor must be an integer of at least {MIN_DIVISOR} clocks per bit, "
                         f"not {divisor!r}")
    return divisor


class UARTTransmitter(wiring.Component):
    """Sends each byte of ``i`` on ``txd``: a start bit, 8 data bits LSB first, a stop bit.

    A byte taken from ``i`` waits in a register of its own until the line is free (idle, or
    the last cycle of a stop bit), so back-to-back bytes leave no gap; ``i.ready`` is that
    register being empty, a flip-flop. The shift register then loads from flip-flops only
    (board build b60: the link's encoder through ``i.valid`` into its load, 11.6 ns).
    ``txd`` comes from a flip-flop and idles high.
    """

    def __init__(self, divisor: int | None = None, *, config: AccelConfig | None = None):
        self._divisor = resolve_divisor(divisor, config)
        super().__init__({"i": In(stream.Signature(8)), "txd": Out(1, init=1)})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)
        bits = Signal(range(11))
        timer = Signal(range(self._divisor))

        pend = Signal()
        pbyte = Signal(8)
        load = Signal()
        m.d.comb += [
            self.txd.eq(shreg[0]),
            self.i.ready.eq(~pend),
            # loaded in the last cycle of a stop bit already, so bytes follow without a gap
            load.eq(pend & ((bits == 0) | ((bits == 1) & (timer == 0)))),
        ]
        with m.If(self.i.valid & ~pend):
            m.d.sync += [pend.eq(1), pbyte.eq(self.i.payload)]
        with m.If(load):
            m.d.sync += [
                pend.eq(0),
                shreg.eq(Cat(Const(0, 1), pbyte, Const(1, 1))),
                bits.eq(10),
                timer.eq(self._divisor - 1),
            ]
        with m.Elif((bits != 0) & (timer == 0)):
            m.d.sync += [
                shreg.eq(Cat(shreg[1:], Const(1, 1))),
                bits.eq(bits - 1),
                timer.eq(self._divisor - 1),
            ]
        with m.Elif(bits != 0):
            m.d.sync += timer.eq(timer - 1)
        return m


class UARTReceiver(wiring.Component):
    """Receives bytes from ``rxd`` into ``o`` (payload :data:`RxByte`).

    A byte with a low stop bit is delivered with ``framing_error`` set; the receiver then waits
    for the line to go high before it looks for the next start bit, so a held-low line (break)
    gives one flagged byte, not a stream of zeros. ``o`` holds one byte: a byte completed while
    the previous one is still waiting is dropped, and the next delivered byte has ``overrun``
    set.
    """

    def __init__(self, divisor: int | None = None, *, config: AccelConfig | None = None):
        self._divisor = resolve_divisor(divisor, config)
        super().__init__({"rxd": In(1, init=1), "o": Out(stream.Signature(RxByte))})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rxd = FFSynchronizer(self.rxd, line, init=1, stages=2)

        timer = Signal(range(self._divisor))
        shreg = Signal(8)
        bit = Signal(range(8))
        lost = Signal()

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    # The middle of the start bit is half a bit after its (synchronised) edge.
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    m.next = "IDLE"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(self._divisor - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], line)),
                        bit.eq(bit + 1),
                        timer.eq(self._divisor - 1),
                    ]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.sync += lost.eq(1)
                    with m.Else():
                        m.d.sync += [
                            self.o.valid.eq(1),
                            self.o.payload.data.eq(shreg),
                            self.o.payload.framing_error.eq(~line),
                            self.o.payload.overrun.eq(lost),
                            lost.eq(0),
                        ]
                    # Leave in the middle of the stop bit, half a bit before the next start
                    # edge can come; after a framing error the line may still be low (break).
                    m.next = "WAIT_HIGH"
            with m.State("WAIT_HIGH"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UART(wiring.Component):
    """A :class:`UARTReceiver` and a :class:`UARTTransmitter` sharing one bit period.

    Ports: ``rxd`` (line in, idles high), ``txd`` (line out), ``rx`` (received bytes,
    :data:`RxByte`), ``tx`` (bytes to send).
    """

    def __init__(self, divisor: int | None = None, *, config: AccelConfig | None = None):
        self._divisor = resolve_divisor(divisor, config)
        super().__init__({
            "rxd": In(1, init=1),
            "txd": Out(1, init=1),
            "rx": Out(stream.Signature(RxByte)),
            "tx": In(stream.Signature(8)),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = UARTReceiver(self._divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(self._divisor)
        m.d.comb += [receiver.rxd.eq(self.rxd), self.txd.eq(transmitter.txd)]
        wiring.connect(m, wiring.flipped(self.tx), transmitter.i)
        wiring.connect(m, receiver.o, wiring.flipped(self.rx))
        return m
