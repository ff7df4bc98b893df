"""An SDR SDRAM controller behind the feature-map memory port (:mod:`hw.memport`).

Written for the ULX3S's 32 MB chip (4 banks x 8192 rows x 512 columns x 16 bits: MT48LC16M16A2,
IS42S16160, AS4C16M16SA), but every geometry and timing number comes from :class:`SDRAMParams`,
so a smaller chip (the simulation model of :mod:`hw.sdram_model`) works the same way.
``docs/sdram.md`` explains the design and why it is our own and not LiteDRAM.

- Burst length 1, one column command per clock: a burst of the memory port becomes a run of
  READ (or WRITE) commands to consecutive columns, one per cycle, so sequential traffic moves one
  16-bit word per cycle, and a stall of the master simply leaves a NOP in the run.
- Open-row policy: a row stays open until another row of its bank is needed or a refresh
  closes every bank. Word addresses map as ``{row, bank, column}``, so a stream that runs off the
  end of a row continues in the next bank.
- Auto refresh every ``t_refi`` (less a margin), preempting a burst between two words.
- The power-up sequence: ``init_wait`` of NOPs with CKE high, PRECHARGE ALL, ``init_refreshes``
  AUTO REFRESH commands, LOAD MODE REGISTER (burst length 1, sequential, CAS latency ``cl``).

Components: :class:`SDRAMController`. Also :class:`SDRAMParams` (chip geometry and timing),
:class:`SDRAMPinsSignature` (the chip's pins, active-high) and the command encodings
(:data:`CMD_NOP` ...) that the chip model shares.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .memport import MemPortSignature

__all__ = ["SDRAMParams", "SDRAMPinsSignature", "SDRAMController", "mode_register",
           "CMD_NOP", "CMD_ACTIVE", "CMD_READ", "CMD_WRITE", "CMD_PRECHARGE", "CMD_REFRESH",
           "CMD_MODE", "CMD_BURST_STOP"]

#: Commands as ``(ras, cas, we)`` with CS asserted; all four pins active-high here (the board's
#: pins are inverted by the platform: amaranth-boards declares them ``PinsN``).
CMD_NOP = (0, 0, 0)
CMD_ACTIVE = (1, 0, 0)
CMD_READ = (0, 1, 0)
CMD_WRITE = (0, 1, 1)
CMD_PRECHARGE = (1, 0, 1)
CMD_REFRESH = (1, 1, 0)
CMD_MODE = (1, 1, 1)
CMD_BURST_STOP = (0, 0, 1)

#: The address pin that selects "all banks" for PRECHARGE and auto precharge for READ/WRITE.
A10 = 10


def _cycles(ns: float, clk_hz: int, minimum: int = 1) -> int:
    # A hair below an integer number of cycles must not round up because of float noise.
    return max(minimum, math.ceil(ns * clk_hz / 1e9 - 1e-9))


@dataclass(frozen=True)
class SDRAMParams:
    """Geometry and timing of an SDR SDRAM chip at a clock frequency.

    Times are in nanoseconds (the datasheet's minimums); the ``*_cycles`` properties round them
    up at ``clk_hz``. ``t_wr`` and ``t_mrd`` are at least 2 cycles whatever the clock (the
    datasheets' ``1 CLK + 7 ns`` or ``2 tCK``). ``init_wait_ns`` is the NOP time after power-up,
    ``t_refi_ns`` the average refresh interval (64 ms / 8192 rows), ``init_refreshes`` the AUTO
    REFRESH commands of the power-up sequence. ``max_clk_hz``: the fastest clock the chip takes
    at ``cas_latency``. :meth:`ulx3s` and :meth:`simulation` make the two used here.
    """

    clk_hz: int
    banks: int = 4
    row_bits: int = 13
    col_bits: int = 9
    data_bits: int = 16
    cas_latency: int = 3
    t_rcd_ns: float = 21.0
    t_rp_ns: float = 21.0
    t_rc_ns: float = 70.0
    t_ras_ns: float = 44.0
    t_wr_ns: float = 15.0
    t_rrd_ns: float = 15.0
    t_rfc_ns: float = 70.0
    t_mrd_ns: float = 15.0
    t_refi_ns: float = 64e6 / 8192
    init_wait_ns: float = 200_000.0
    init_refreshes: int = 8
    max_clk_hz: int = 133_000_000

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type in ("int", int):
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"SDRAMParams.{field.name} must be a positive integer, "
                                     f"not {value!r}")
            elif not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"SDRAMParams.{field.name} must be a non-negative number of "
                                 f"nanoseconds, not {value!r}")
        if self.banks & (self.banks - 1):
            raise ValueError(f"SDRAMParams.banks must be a power of two, not {self.banks!r}")
        if self.data_bits % 8:
            raise ValueError(f"SDRAMParams.data_bits must be a multiple of 8, not "
                             f"{self.data_bits!r}")
        if self.col_bits > A10:
            raise ValueError(f"SDRAMParams.col_bits must be at most {A10} (A10 is the "
                             f"auto-precharge pin), not {self.col_bits!r}")
        if self.cas_latency not in (2, 3):
            raise ValueError(f"SDRAMParams.cas_latency must be 2 or 3, not "
                             f"{self.cas_latency!r}")
        if self.clk_hz > self.max_clk_hz:
            raise ValueError(f"SDRAM clock {self.clk_hz} Hz is above the chip's "
                             f"{self.max_clk_hz} Hz at CAS latency {self.cas_latency}")
        if self.refresh_interval_cycles <= self.t_rp_cycles + self.t_rfc_cycles + 16:
            raise ValueError(f"SDRAMParams.t_refi_ns ({self.t_refi_ns}) leaves no time between "
                             f"refreshes at {self.clk_hz} Hz")

    @classmethod
    def ulx3s(cls, clk_hz: int) -> SDRAMParams:
        """The ULX3S's 32 MB chip: the slowest of the parts fitted (MT48LC16M16A2-75,
        IS42S16160G-7, AS4C16M16SA-7) at CAS latency 3."""
        return cls(clk_hz=clk_hz)

    @classmethod
    def simulation(cls, clk_hz: int = 100_000_000, *, row_bits: int = 5, col_bits: int = 6,
                   banks: int = 4, init_wait_ns: float = 500.0, t_refi_ns: float = 2_000.0,
                   init_refreshes: int = 2, **kw) -> SDRAMParams:
        """A small chip with a short power-up wait and frequent refreshes, for fast
        simulations; the timing otherwise that of :meth:`ulx3s`."""
        return cls(clk_hz=clk_hz, row_bits=row_bits, col_bits=col_bits, banks=banks,
                   init_wait_ns=init_wait_ns, t_refi_ns=t_refi_ns,
                   init_refreshes=init_refreshes, **kw)

    # -- geometry ------------------------------------------------------------------------------

    @property
    def bank_bits(self) -> int:
        return ceil_log2(self.banks)

    @property
    def addr_bits(self) -> int:
        """Bits of a word address: row, bank and column."""
        return self.row_bits + self.bank_bits + self.col_bits

    @property
    def words(self) -> int:
        return 1 << self.addr_bits

    @property
    def data_bytes(self) -> int:
        return self.data_bits // 8

    @property
    def pin_addr_bits(self) -> int:
        """Width of the address pins: the row address, and at least A0..A10."""
        return max(self.row_bits, A10 + 1)

    # -- timing in cycles ----------------------------------------------------------------------

    @property
    def t_rcd_cycles(self) -> int:
        return _cycles(self.t_rcd_ns, self.clk_hz)

    @property
    def t_rp_cycles(self) -> int:
        return _cycles(self.t_rp_ns, self.clk_hz)

    @property
    def t_rc_cycles(self) -> int:
        return _cycles(self.t_rc_ns, self.clk_hz)

    @property
    def t_ras_cycles(self) -> int:
        return _cycles(self.t_ras_ns, self.clk_hz)

    @property
    def t_wr_cycles(self) -> int:
        return _cycles(self.t_wr_ns, self.clk_hz, 2)

    @property
    def t_rrd_cycles(self) -> int:
        return _cycles(self.t_rrd_ns, self.clk_hz)

    @property
    def t_rfc_cycles(self) -> int:
        return _cycles(self.t_rfc_ns, self.clk_hz)

    @property
    def t_mrd_cycles(self) -> int:
        return _cycles(self.t_mrd_ns, self.clk_hz, 2)

    @property
    def refresh_interval_cycles(self) -> int:
        """The longest allowed gap between two AUTO REFRESH commands, in cycles (rounded
        down)."""
        return math.floor(self.t_refi_ns * self.clk_hz / 1e9 + 1e-9)

    @property
    def init_wait_cycles(self) -> int:
        return _cycles(self.init_wait_ns, self.clk_hz)

    def timing_table(self) -> dict[str, int]:
        """Every timing parameter in cycles, by name (for reports and docs)."""
        return {
            "CL": self.cas_latency, "tRCD": self.t_rcd_cycles, "tRP": self.t_rp_cycles,
            "tRC": self.t_rc_cycles, "tRAS": self.t_ras_cycles, "tWR": self.t_wr_cycles,
            "tRRD": self.t_rrd_cycles, "tRFC": self.t_rfc_cycles, "tMRD": self.t_mrd_cycles,
            "tREFI": self.refresh_interval_cycles, "init_wait": self.init_wait_cycles,
        }


def mode_register(params: SDRAMParams) -> int:
    """The mode register value the controller loads: burst length 1, sequential bursts, CAS
    latency ``params.cas_latency``, standard operation, programmed write burst length."""
    return params.cas_latency << 4


class SDRAMPinsSignature(wiring.Signature):
    """The pins of an SDR SDRAM, seen from the controller; every control is active-high.

    ``cke``, ``cs``, ``ras``, ``cas``, ``we``, ``ba``, ``a`` and ``dqm`` (1 masks a byte) go out;
    the data bus is split into ``dq_o`` and ``dq_oe`` (out) and ``dq_i`` (in).
    """

    def __init__(self, params: SDRAMParams):
        if not isinstance(params, SDRAMParams):
            raise TypeError(f"params must be SDRAMParams, not {type(params).__name__}")
        self._params = params
        super().__init__({
            "cke": Out(1, init=1),
            "cs": Out(1),
            "ras": Out(1),
            "cas": Out(1),
            "we": Out(1),
            "ba": Out(params.bank_bits),
            "a": Out(params.pin_addr_bits),
            "dqm": Out(params.data_bytes),
            "dq_o": Out(params.data_bits),
            "dq_oe": Out(1),
            "dq_i": In(params.data_bits),
        })

    @property
    def params(self) -> SDRAMParams:
        return self._params

    def __eq__(self, other):
        return type(other) is type(self) and other._params == self._params

    def __hash__(self):
        return hash((type(self), self._params))


class _Timer:
    """A countdown of cycles until a command is allowed again.

    :meth:`load` (from the command issued in a cycle) makes the command allowed ``cycles``
    cycles later, unless the timer already forbids it for longer. Each load amount is a
    constant, so "longer" is a comparison of the register with that constant, which does not
    wait for the command decision: only the final multiplexer does (for timing).
    """

    def __init__(self, m: Module, name: str, limit: int):
        self.value = Signal(range(max(2, limit)), name=name)
        self._m = m
        self._name = name
        self._fire = {}

    @property
    def ready(self):
        return self.value == 0

    def load(self, cycles: int):
        """Allow the command again ``cycles`` (>= 1) cycles after this one."""
        if cycles <= 1:
            return
        if cycles not in self._fire:
            self._fire[cycles] = Signal(name=f"{self._name}_load{cycles}")
        self._m.d.comb += self._fire[cycles].eq(1)

    def finish(self):
        """Add the register's update; call once, after every :meth:`load`."""
        value = self.value
        nxt = Mux(value != 0, value - 1, 0)
        for cycles, fire in sorted(self._fire.items()):
            nxt = Mux(fire & (value < cycles), cycles - 1, nxt)
        self._m.d.sync += value.eq(nxt)


class SDRAMController(wiring.Component):
    """A memory port (:class:`~hw.memport.MemPortSignature`, ``bus``) served by an SDR SDRAM
    (``sdram``, :class:`SDRAMPinsSignature`).

    ``params``: the chip (:class:`SDRAMParams`); the port's word is the chip's data width and
    its address is ``params.addr_bits`` wide. ``max_len``: the longest burst of the port.
    ``phy_read_delay``: register stages between the pins and ``sdram`` in each direction that
    the read path must allow for (0 when ``sdram`` is wired straight to a chip model; on a board
    with registered I/O, 2: the output and the input register). ``read_buffer``: beats of the
    read buffer (default: the read pipeline's length plus 4, enough for one beat per cycle).

    All outputs to the chip are registered. ``init_done`` rises once the power-up sequence is
    over; commands are accepted before that and wait.
    """

    def __init__(self, params: SDRAMParams, *, max_len: int = 256, phy_read_delay: int = 0,
                 read_buffer: int | None = None):
        if not isinstance(params, SDRAMParams):
            raise TypeError(f"params must be SDRAMParams, not {type(params).__name__}")
        if not isinstance(phy_read_delay, int) or phy_read_delay < 0:
            raise ValueError(f"phy_read_delay must be a non-negative integer, not "
                             f"{phy_read_delay!r}")
        pipeline = 1 + params.cas_latency + phy_read_delay
        if read_buffer is None:
            read_buffer = pipeline + 4
        if not isinstance(read_buffer, int) or read_buffer < 2:
            raise ValueError(f"read_buffer must be an integer of at least 2 beats, not "
                             f"{read_buffer!r}")
        self._params = params
        self._phy_read_delay = phy_read_delay
        self._read_buffer = read_buffer
        super().__init__({
            "bus": In(MemPortSignature(params.data_bytes, params.addr_bits, max_len=max_len)),
            "sdram": Out(SDRAMPinsSignature(params)),
            "init_done": Out(1),
        })

    @property
    def params(self) -> SDRAMParams:
        return self._params

    @property
    def phy_read_delay(self) -> int:
        return self._phy_read_delay

    @property
    def read_pipeline(self) -> int:
        """Cycles from issuing a READ to capturing its data: the output register, the CAS
        latency and the PHY's registers."""
        return 1 + self._params.cas_latency + self._phy_read_delay

    def elaborate(self, platform):
        m = Module()
        p = self._params
        bus = self.bus
        pins = self.sdram
        nb = p.banks

        # -- input FIFOs -----------------------------------------------------------------------
        # Commands and write beats pass through small FIFOs, so that the port's ready signals
        # come from FIFO levels, not from the command decision below (a long path otherwise).
        m.submodules.cmd_fifo = cmd_fifo = fifo.SyncFIFOBuffered(
            width=bus.cmd.payload.shape().size, depth=3)
        m.submodules.w_fifo = w_fifo = fifo.SyncFIFOBuffered(
            width=bus.wdata.payload.shape().size, depth=4)
        m.d.comb += [
            cmd_fifo.w_data.eq(bus.cmd.payload.as_value()),
            cmd_fifo.w_en.eq(bus.cmd.valid),
            bus.cmd.ready.eq(cmd_fifo.w_rdy),
            w_fifo.w_data.eq(bus.wdata.payload.as_value()),
            w_fifo.w_en.eq(bus.wdata.valid),
            bus.wdata.ready.eq(w_fifo.w_rdy),
        ]
        next_cmd = bus.cmd.payload.shape()(cmd_fifo.r_data)
        wbeat = bus.wdata.payload.shape()(w_fifo.r_data)

        # -- command outputs (registered) -------------------------------------------------------
        cmd = Signal(3)          # (ras, cas, we) of the command issued this cycle
        cmd_ba = Signal(p.bank_bits)
        cmd_a = Signal(p.pin_addr_bits)
        write_now = Signal()
        m.d.sync += [
            pins.cke.eq(1),
            pins.cs.eq(cmd != 0),
            pins.ras.eq(cmd[2]),
            pins.cas.eq(cmd[1]),
            pins.we.eq(cmd[0]),
            pins.ba.eq(cmd_ba),
            pins.a.eq(cmd_a),
            pins.dq_oe.eq(write_now),
            pins.dq_o.eq(wbeat.data),
            pins.dqm.eq(Mux(write_now, ~wbeat.mask, 0)),
        ]

        def issue(command, ba=0, a=0):
            ras, cas, we = command
            m.d.comb += [cmd.eq(ras << 2 | cas << 1 | we), cmd_ba.eq(ba), cmd_a.eq(a)]

        # -- timers ------------------------------------------------------------------------------
        limit = max(p.t_rc_cycles, p.t_rfc_cycles, p.t_rp_cycles, p.t_ras_cycles,
                    p.t_wr_cycles, p.t_rcd_cycles, p.t_rrd_cycles, p.t_mrd_cycles,
                    p.cas_latency + 2) + 1
        act_ok = [_Timer(m, f"act_t{b}", limit) for b in range(nb)]   # tRC, tRP, tRFC
        pre_ok = [_Timer(m, f"pre_t{b}", limit) for b in range(nb)]   # tRAS, tWR
        rw_ok = [_Timer(m, f"rw_t{b}", limit) for b in range(nb)]     # tRCD
        rrd_ok = _Timer(m, "rrd_t", limit)                             # tRRD
        mrd_ok = _Timer(m, "mrd_t", limit)                             # tMRD
        turn_ok = _Timer(m, "turn_t", limit)                           # read -> write bus turn

        open_ = Signal(nb)
        rows = [Signal(p.row_bits, name=f"row{b}") for b in range(nb)]

        # -- refresh timer -----------------------------------------------------------------------
        # Refresh early enough that a precharge waiting for tRAS/tWR and tRP still fits.
        margin = p.t_ras_cycles + p.t_wr_cycles + p.t_rp_cycles + 4
        interval = p.refresh_interval_cycles - margin
        ref_timer = Signal(range(interval + 1), init=interval)
        ref_pending = Signal()
        with m.If(ref_timer == 0):
            m.d.sync += [ref_timer.eq(interval), ref_pending.eq(1)]
        with m.Else():
            m.d.sync += ref_timer.eq(ref_timer - 1)

        # -- the current burst -----------------------------------------------------------------

        addr = Signal(p.addr_bits)
        left = Signal(next_cmd.len.shape())
        writing = Signal()
        active = Signal()
        advance = Signal()
        last = Signal()
        col = addr[:p.col_bits]
        bank = addr[p.col_bits:p.col_bits + p.bank_bits]
        row = addr[p.col_bits + p.bank_bits:]
        m.d.comb += last.eq(left == 1)

        with m.If(advance):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
            with m.If(last):
                m.d.sync += active.eq(0)
        m.d.comb += cmd_fifo.r_en.eq(~active | (advance & last))
        with m.If(cmd_fifo.r_rdy & cmd_fifo.r_en):
            m.d.sync += [
                addr.eq(next_cmd.addr),
                left.eq(next_cmd.len),
                writing.eq(next_cmd.write),
                active.eq(next_cmd.len != 0),
            ]

        # -- read data ----------------------------------------------------------------------------
        m.submodules.rbuf = rbuf = fifo.SyncFIFO(width=p.data_bits, depth=self._read_buffer)
        read_now = Signal()
        pipe = Signal(self.read_pipeline)
        m.d.sync += pipe.eq(Cat(read_now, pipe[:-1]))
        outstanding = Signal(range(self._read_buffer + 1))
        popped = Signal()
        m.d.comb += [
            rbuf.w_en.eq(pipe[-1]),
            rbuf.w_data.eq(pins.dq_i),
            bus.rdata.valid.eq(rbuf.r_rdy),
            bus.rdata.payload.data.eq(rbuf.r_data),
            rbuf.r_en.eq(bus.rdata.ready),
            popped.eq(bus.rdata.valid & bus.rdata.ready),
        ]
        with m.If(read_now & ~popped):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(~read_now & popped):
            m.d.sync += outstanding.eq(outstanding - 1)

        # -- which bank state applies to the current address -------------------------------------
        bank_open = Signal()
        row_hit = Signal()
        rw_ready = Signal()
        pre_ready = Signal()
        act_ready = Signal()
        with m.Switch(bank):
            for b in range(nb):
                with m.Case(b):
                    m.d.comb += [
                        bank_open.eq(open_[b]),
                        row_hit.eq(rows[b] == row),
                        rw_ready.eq(rw_ok[b].ready),
                        pre_ready.eq(pre_ok[b].ready),
                        act_ready.eq(act_ok[b].ready),
                    ]
        all_pre_ready = Signal()
        all_act_ready = Signal()
        m.d.comb += [
            all_pre_ready.eq(Cat(pre_ok[b].ready | ~open_[b] for b in range(nb)).all()),
            all_act_ready.eq(Cat(t.ready for t in act_ok).all()),
        ]

        def for_bank(timers, cycles, b=None):
            # Load the timer of bank ``b`` (a Python int) or of the current bank.
            for i, timer in enumerate(timers):
                if b is None:
                    with m.If(bank == i):
                        timer.load(cycles)
                elif b == i:
                    timer.load(cycles)

        init_wait = Signal(range(max(p.init_wait_cycles, p.t_rp_cycles, p.t_rfc_cycles,
                                     p.t_mrd_cycles) + 1), init=p.init_wait_cycles)
        refreshes = Signal(range(p.init_refreshes + 1))

        with m.FSM(name="sdram"):
            with m.State("POWER_UP"):
                with m.If(init_wait != 0):
                    m.d.sync += init_wait.eq(init_wait - 1)
                with m.Else():
                    issue(CMD_PRECHARGE, a=1 << A10)
                    m.d.sync += init_wait.eq(p.t_rp_cycles - 1)
                    m.next = "INIT_REFRESH"
            with m.State("INIT_REFRESH"):
                with m.If(init_wait != 0):
                    m.d.sync += init_wait.eq(init_wait - 1)
                with m.Elif(refreshes != p.init_refreshes):
                    issue(CMD_REFRESH)
                    m.d.sync += [init_wait.eq(p.t_rfc_cycles - 1), refreshes.eq(refreshes + 1)]
                with m.Else():
                    issue(CMD_MODE, a=mode_register(p))
                    mrd_ok.load(p.t_mrd_cycles)
                    m.d.sync += [ref_timer.eq(interval), ref_pending.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.init_done.eq(1)
                with m.If(ref_pending):
                    with m.If(open_ != 0):
                        with m.If(all_pre_ready):
                            issue(CMD_PRECHARGE, a=1 << A10)
                            m.d.sync += open_.eq(0)
                            for timer in act_ok:
                                timer.load(p.t_rp_cycles)
                    with m.Elif(all_act_ready & mrd_ok.ready):
                        issue(CMD_REFRESH)
                        m.d.sync += ref_pending.eq(0)
                        for timer in act_ok:
                            timer.load(p.t_rfc_cycles)
                with m.Elif(active & mrd_ok.ready):
                    with m.If(bank_open & row_hit):
                        with m.If(rw_ready & writing & turn_ok.ready):
                            with m.If(w_fifo.r_rdy):
                                issue(CMD_WRITE, ba=bank, a=col)
                                m.d.comb += [advance.eq(1), write_now.eq(1), w_fifo.r_en.eq(1)]
                                for_bank(pre_ok, p.t_wr_cycles)
                        with m.If(rw_ready & ~writing
                                  & (outstanding != self._read_buffer)):
                            issue(CMD_READ, ba=bank, a=col)
                            m.d.comb += [advance.eq(1), read_now.eq(1)]
                            # The chip drives the bus CL cycles on; leave one cycle for it
                            # to let go before a WRITE drives it.
                            turn_ok.load(p.cas_latency + 2)
                    with m.Elif(bank_open):
                        with m.If(pre_ready):
                            issue(CMD_PRECHARGE, ba=bank)
                            with m.Switch(bank):
                                for b in range(nb):
                                    with m.Case(b):
                                        m.d.sync += open_[b].eq(0)
                            for_bank(act_ok, p.t_rp_cycles)
                    with m.Else():
                        with m.If(act_ready & rrd_ok.ready):
                            issue(CMD_ACTIVE, ba=bank, a=row)
                            with m.Switch(bank):
                                for b in range(nb):
                                    with m.Case(b):
                                        m.d.sync += [open_[b].eq(1), rows[b].eq(row)]
                            for_bank(act_ok, p.t_rc_cycles)
                            for_bank(pre_ok, p.t_ras_cycles)
                            for_bank(rw_ok, p.t_rcd_cycles)
                            rrd_ok.load(p.t_rrd_cycles)
        for timer in (*act_ok, *pre_ok, *rw_ok, rrd_ok, mrd_ok, turn_ok):
            timer.finish()
        return m
