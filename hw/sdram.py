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
- For the clock (about 130 MHz alone on the ECP5, 5 LUT levels at most), the command decision
  reads flip-flops only: what the current word needs (READ/WRITE, PRECHARGE or ACTIVE; the
  comparisons with the open rows are made a cycle ahead, for the current word, the next row and
  the next command), the ready of its bank's timers (for the next cycle's bank), the refresh's
  two commands (decided a cycle ahead). A read that hits an open row of an idle controller has
  its first beat 10 cycles after the command (CL 3, the board's PHY delay); the price is a cycle
  per refresh and at least 3 cycles between the starts of two bursts.

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
    """A countdown of cycles until a command is allowed again, with a registered ``ready``.

    :meth:`load` (from the command issued in a cycle) makes the command allowed ``cycles``
    cycles later, unless the timer already forbids it for longer. Each load amount is a
    constant, so "longer" is a comparison of the register with that constant, which does not
    wait for the command decision: only the final multiplexer does (for timing). ``ready``
    (``value == 0``) is a flip-flop of its own: the next value is zero exactly when no load
    fires and the register is at most 1 (a load always leaves at least 1), so the decision reads
    a flip-flop and not a comparison.
    """

    def __init__(self, m: Module, name: str, limit: int):
        self.value = Signal(range(max(2, limit)), name=name)
        self.ready = Signal(init=1, name=f"{name}_ready")
        self._m = m
        self._name = name
        self._fire = {}

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
        fired = Cat(*self._fire.values()).any() if self._fire else 0
        self._m.d.sync += [value.eq(nxt), self.ready.eq(~fired & (value <= 1))]


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
        # The command at the head of the queue is a register (``head``) in front of a small
        # FIFO; a command that finds both empty goes straight into it, so it is at the head the
        # cycle after it is written, which leaves a cycle to compare its row with the open ones
        # before it is popped (through the FIFO's own output register it would be two).
        m.submodules.cmd_fifo = cmd_fifo = fifo.SyncFIFO(
            width=bus.cmd.payload.shape().size, depth=2)
        m.submodules.w_fifo = w_fifo = fifo.SyncFIFOBuffered(
            width=bus.wdata.payload.shape().size, depth=4)
        m.d.comb += [
            bus.cmd.ready.eq(cmd_fifo.w_rdy),
            w_fifo.w_data.eq(bus.wdata.payload.as_value()),
            w_fifo.w_en.eq(bus.wdata.valid),
            bus.wdata.ready.eq(w_fifo.w_rdy),
        ]
        head_data = Signal(bus.cmd.payload.shape().size)
        head_valid = Signal()
        head_words = Signal()    # head.len != 0
        head_one = Signal()      # head.len == 1
        head = bus.cmd.payload.shape()(head_data)
        wbeat = bus.wdata.payload.shape()(w_fifo.r_data)

        def split(address):
            # (column, bank, row) of a word address
            return (address[:p.col_bits], address[p.col_bits:p.col_bits + p.bank_bits],
                    address[p.col_bits + p.bank_bits:])

        # -- timers ------------------------------------------------------------------------------
        limit = max(p.t_rc_cycles, p.t_rfc_cycles, p.t_rp_cycles, p.t_ras_cycles,
                    p.t_wr_cycles, p.t_rcd_cycles, p.t_rrd_cycles, p.cas_latency + 2) + 1
        act_ok = [_Timer(m, f"act_t{b}", limit) for b in range(nb)]   # tRC, tRP, tRFC
        pre_ok = [_Timer(m, f"pre_t{b}", limit) for b in range(nb)]   # tRAS, tWR
        rw_ok = [_Timer(m, f"rw_t{b}", limit) for b in range(nb)]     # tRCD
        rrd_ok = _Timer(m, "rrd_t", limit)                             # tRRD
        turn_ok = _Timer(m, "turn_t", limit)                           # read -> write bus turn

        open_ = Signal(nb)
        rows = [Signal(p.row_bits, name=f"row{b}") for b in range(nb)]

        # -- refresh timer -----------------------------------------------------------------------
        # Refresh early enough that a precharge waiting for tRAS/tWR and tRP still fits.
        # ``ref_pending`` is only raised once initialised (``run``).
        margin = p.t_ras_cycles + p.t_wr_cycles + p.t_rp_cycles + 4
        interval = p.refresh_interval_cycles - margin
        ref_timer = Signal(range(interval + 1), init=interval)
        ref_pending = Signal()
        run = Signal()           # initialised: the command decision below is on
        with m.If(ref_timer == 0):
            m.d.sync += [ref_timer.eq(interval), ref_pending.eq(run)]
        with m.Else():
            m.d.sync += ref_timer.eq(ref_timer - 1)

        # -- the current burst -----------------------------------------------------------------
        # ``addr`` is the next word's address; ``last``: it is the burst's last word (a register
        # beside ``left``, so that the FIFO's pop does not wait for a comparison).
        addr = Signal(p.addr_bits)
        left = Signal(head.len.shape())
        last = Signal()
        writing = Signal()
        active = Signal()
        col, bank, row = split(addr)
        head_col, head_bank, head_row = split(head.addr)
        # the word is its row's last (column all ones), a register kept with ``addr`` (the
        # column's comparison was in front of ``row_end`` and the flags' enables)
        col_end = Signal()
        last_col = (1 << p.col_bits) - 1

        # -- what the current word needs, registered -------------------------------------------
        # One flag of four: its row is open and it is a read (READ) or a write (WRITE), another
        # row of its bank is open (PRECHARGE), its bank is closed (ACTIVE); none while there is
        # no burst, before initialisation, or while not known. The comparison with the open rows
        # takes several LUT levels, so it is made from registers into registers, one cycle
        # ahead, for three addresses: the current one (``cmp_cur``), the first of the next row
        # (``cmp_inc``, taken over at the end of a row) and the head of the command FIFO
        # (``cmp_head``, taken over when it is popped). A comparison made in a cycle is good in
        # the next if that cycle's command changed no bank and the address did not change row
        # (``cmp_ok``), or for the head, if the head did not change (``head_ok``; the head is
        # only popped then). Between those, the flags follow the commands: ACTIVE opens the row,
        # PRECHARGE closes it.
        st_rd = Signal()
        st_wr = Signal()
        st_pre = Signal()
        st_act = Signal()
        st = Cat(st_rd, st_wr, st_pre, st_act)
        ST_RD, ST_WR, ST_ACT = 0b0001, 0b0010, 0b1000

        def bank_state(b_sel, same, write):
            # ``same[b]``: the row is bank b's open row. A sum of products over the banks (the
            # bank's decode beside the row compare, not a multiplexer after it: fewer levels).
            def over_banks(term):
                return Cat(term(b) for b in range(nb)).any()
            mine = [(b_sel == b) & open_[b] for b in range(nb)]
            return Cat(over_banks(lambda b: mine[b] & ~write & same[b]),
                       over_banks(lambda b: mine[b] & write & same[b]),
                       over_banks(lambda b: mine[b] & ~same[b]),
                       over_banks(lambda b: (b_sel == b) & ~open_[b]))

        same_cur = [rows[b] == row for b in range(nb)]
        same_head = [rows[b] == head_row for b in range(nb)]
        bank_inc = (bank + 1)[:p.bank_bits]
        # the next row: the same row of the next bank, or the next row of bank 0 (against bank
        # 0's open row less one, a register beside it, so that no adder precedes the compare)
        row0_less1 = Signal(p.row_bits)
        same_inc = [row0_less1 == row, *same_cur[1:]]
        cmp_cur = Signal(4)
        cmp_inc = Signal(4)
        cmp_head = Signal(4)
        cmp_ok = Signal()
        head_ok = Signal()
        m.d.sync += [
            cmp_cur.eq(bank_state(bank, same_cur, writing)),
            cmp_inc.eq(bank_state(bank_inc, same_inc, writing)),
            cmp_head.eq(bank_state(head_bank, same_head, head.write)),
        ]

        # -- read data ----------------------------------------------------------------------------
        m.submodules.rbuf = rbuf = fifo.SyncFIFO(width=p.data_bits, depth=self._read_buffer)
        do_rd = Signal()
        pipe = Signal(self.read_pipeline)
        m.d.sync += pipe.eq(Cat(do_rd, pipe[:-1]))
        outstanding = Signal(range(self._read_buffer + 1))
        room = Signal(init=1)    # outstanding != read_buffer, registered
        popped = Signal()
        m.d.comb += [
            rbuf.w_en.eq(pipe[-1]),
            rbuf.w_data.eq(pins.dq_i),
            bus.rdata.valid.eq(rbuf.r_rdy),
            bus.rdata.payload.data.eq(rbuf.r_data),
            rbuf.r_en.eq(bus.rdata.ready),
            popped.eq(bus.rdata.valid & bus.rdata.ready),
        ]
        with m.If(do_rd & ~popped):
            m.d.sync += [outstanding.eq(outstanding + 1),
                         room.eq(outstanding != self._read_buffer - 1)]
        with m.Elif(~do_rd & popped):
            m.d.sync += [outstanding.eq(outstanding - 1), room.eq(1)]

        # -- power-up sequence --------------------------------------------------------------------
        # ``wait_done`` is ``init_wait == 0``, registered. ``run`` rises tMRD after LOAD MODE
        # REGISTER, so the command decision needs no tMRD timer.
        init_wait = Signal(range(max(p.init_wait_cycles, p.t_rp_cycles, p.t_rfc_cycles,
                                     p.t_mrd_cycles) + 1), init=p.init_wait_cycles)
        wait_done = Signal()
        refreshes = Signal(range(p.init_refreshes + 1))
        init_cmd = Signal(3)     # (ras, cas, we) of the power-up sequence's command this cycle
        init_a = Signal(p.pin_addr_bits)

        def wait_for(cycles):
            # the next step ``cycles`` cycles after this one
            m.d.sync += [init_wait.eq(cycles - 1), wait_done.eq(cycles <= 1)]

        def issue_init(command, *, a=0):
            ras, cas, we = command
            m.d.comb += [init_cmd.eq(ras << 2 | cas << 1 | we), init_a.eq(a)]

        with m.If(~wait_done):
            m.d.sync += [init_wait.eq(init_wait - 1), wait_done.eq(init_wait == 1)]
        with m.FSM(name="sdram_init"):
            with m.State("POWER_UP"):
                with m.If(wait_done):
                    issue_init(CMD_PRECHARGE, a=1 << A10)
                    wait_for(p.t_rp_cycles)
                    m.next = "INIT_REFRESH"
            with m.State("INIT_REFRESH"):
                with m.If(wait_done & (refreshes != p.init_refreshes)):
                    issue_init(CMD_REFRESH)
                    wait_for(p.t_rfc_cycles)
                    m.d.sync += refreshes.eq(refreshes + 1)
                with m.Elif(wait_done):
                    issue_init(CMD_MODE, a=mode_register(p))
                    wait_for(p.t_mrd_cycles - 1)     # ``run`` rises a cycle after the wait
                    m.d.sync += [ref_timer.eq(interval), ref_pending.eq(0)]
                    m.next = "MODE_WAIT"
            with m.State("MODE_WAIT"):
                with m.If(wait_done):
                    m.d.sync += run.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                pass
        m.d.comb += self.init_done.eq(run)

        # -- the command decision -------------------------------------------------------------
        # Every input is a flip-flop: the flags above, the global timers' ready, and the ready of
        # the current bank's timers (``*_cur``, below).
        do_wr = Signal()
        do_pre = Signal()
        do_act = Signal()
        do_pall = Signal()
        do_ref = Signal()
        rw_cur = Signal(init=1)
        pre_cur = Signal(init=1)
        act_cur = Signal(init=1)
        # The refresh's two commands are decided a cycle ahead, into flip-flops: while
        # ``ref_pending`` holds no burst command is issued, so only these two change the banks
        # and the timers, and what held in the cycle before still holds (PRECHARGE ALL comes a
        # cycle after ``ref_pending`` rises, AUTO REFRESH as soon as tRP/tRC/tRFC allow).
        any_open = open_.any()
        pall_ok = Signal()
        ref_ok = Signal()
        m.d.sync += [
            pall_ok.eq(ref_pending & any_open & ~pall_ok
                       & Cat(pre_ok[b].ready | ~open_[b] for b in range(nb)).all()),
            ref_ok.eq(ref_pending & ~any_open & ~ref_ok
                      & Cat(t.value <= 1 for t in act_ok).all()),
        ]
        m.d.comb += [
            do_rd.eq(~ref_pending & st_rd & rw_cur & room),
            do_wr.eq(~ref_pending & st_wr & rw_cur & turn_ok.ready & w_fifo.r_rdy),
            do_pre.eq(~ref_pending & st_pre & pre_cur),
            do_act.eq(~ref_pending & st_act & act_cur & rrd_ok.ready),
            # refresh: close every bank (once tRAS/tWR allow), then AUTO REFRESH
            do_pall.eq(pall_ok),
            do_ref.eq(ref_ok),
        ]

        # -- command outputs (registered) -------------------------------------------------------
        # The address pins need no decision: the row while the bank is closed (ACTIVE), else the
        # column (READ, WRITE, PRECHARGE of one bank: A10 low); A10 high for PRECHARGE ALL.
        ras = do_act | do_pre | do_pall | do_ref | init_cmd[2]
        cas = do_rd | do_wr | do_ref | init_cmd[1]
        we = do_wr | do_pre | do_pall | init_cmd[0]
        run_a = Signal(p.pin_addr_bits)
        m.d.comb += run_a.eq(Mux(st_act, row, col) | Mux(do_pall, 1 << A10, 0))
        m.d.sync += [
            pins.cke.eq(1),
            pins.cs.eq(ras | cas | we),
            pins.ras.eq(ras),
            pins.cas.eq(cas),
            pins.we.eq(we),
            pins.ba.eq(Mux(run, bank, 0)),
            pins.a.eq(Mux(run, run_a, init_a)),
            pins.dq_oe.eq(do_wr),
            pins.dq_o.eq(wbeat.data),
            pins.dqm.eq(Mux(do_wr, ~wbeat.mask, 0)),
        ]
        m.d.comb += w_fifo.r_en.eq(do_wr)

        # -- the burst advances, the next command is popped ------------------------------------
        advance = do_rd | do_wr
        row_end = advance & col_end
        bank_change = do_act | do_pre | do_pall
        pop = Signal()           # head_ok: the head was there in the cycle before
        m.d.comb += pop.eq(head_ok & ((~active & ~ref_pending) | (advance & last)))
        # The head register refills while it is empty (the cycle after a pop, so that the pop
        # drives neither the FIFO nor the head's 30-odd enables): from the FIFO, or when that is
        # empty too, straight from the port.
        bypass = ~head_valid & ~cmd_fifo.r_rdy
        m.d.comb += [
            cmd_fifo.w_data.eq(bus.cmd.payload.as_value()),
            cmd_fifo.w_en.eq(bus.cmd.valid & ~bypass),
            cmd_fifo.r_en.eq(~head_valid),
        ]
        with m.If(~head_valid):
            incoming = Mux(cmd_fifo.r_rdy, cmd_fifo.r_data, bus.cmd.payload.as_value())
            m.d.sync += [
                head_data.eq(incoming),
                head_valid.eq(cmd_fifo.r_rdy | bus.cmd.valid),
                head_words.eq(bus.cmd.payload.shape()(incoming).len != 0),
                head_one.eq(bus.cmd.payload.shape()(incoming).len == 1),
            ]
        with m.Elif(pop):
            m.d.sync += head_valid.eq(0)
        with m.If(advance):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1), last.eq(left == 2),
                         col_end.eq(col == last_col - 1)]
            with m.If(last):
                m.d.sync += active.eq(0)
        with m.If(pop):
            m.d.sync += [
                addr.eq(head.addr), col_end.eq(head_col == last_col),
                left.eq(head.len),
                last.eq(head_one),
                writing.eq(head.write),
                active.eq(head_words),
            ]
        m.d.sync += [
            cmp_ok.eq(~(pop | row_end | bank_change)),
            head_ok.eq(run & head_valid & ~pop & ~bank_change),
        ]
        with m.If(pop):
            m.d.sync += st.eq(Mux(head_words, cmp_head, 0))
        with m.Elif(advance & last):
            m.d.sync += st.eq(0)
        with m.Elif(row_end):
            m.d.sync += st.eq(Mux(cmp_ok, cmp_inc, 0))
        with m.Elif(do_act):
            m.d.sync += st.eq(Mux(writing, ST_WR, ST_RD))
        with m.Elif(do_pre):
            m.d.sync += st.eq(ST_ACT)
        with m.Elif(do_pall):
            m.d.sync += st.eq(0)
        with m.Elif(run & active & cmp_ok):
            m.d.sync += st.eq(cmp_cur)

        # -- bank state and timers ------------------------------------------------------------
        with m.If(do_pall):
            m.d.sync += open_.eq(0)
            for timer in act_ok:
                timer.load(p.t_rp_cycles)
        with m.If(do_ref):
            m.d.sync += ref_pending.eq(0)
            for timer in act_ok:
                timer.load(p.t_rfc_cycles)
        with m.If(do_act):
            rrd_ok.load(p.t_rrd_cycles)
        with m.If(do_rd):
            # The chip drives the bus CL cycles on; leave one cycle for it to let go before a
            # WRITE drives it.
            turn_ok.load(p.cas_latency + 2)
        for b in range(nb):
            with m.If(bank == b):
                with m.If(do_wr):
                    pre_ok[b].load(p.t_wr_cycles)
                with m.If(do_pre):
                    m.d.sync += open_[b].eq(0)
                    act_ok[b].load(p.t_rp_cycles)
                with m.If(do_act):
                    m.d.sync += [open_[b].eq(1), rows[b].eq(row)]
                    if b == 0:
                        m.d.sync += row0_less1.eq(row - 1)
                    act_ok[b].load(p.t_rc_cycles)
                    pre_ok[b].load(p.t_ras_cycles)
                    rw_ok[b].load(p.t_rcd_cycles)
        for timer in (*act_ok, *pre_ok, *rw_ok, rrd_ok, turn_ok):
            timer.finish()

        # The ready of the current bank's timers, for the next cycle, as flip-flops: the timer
        # of the bank of the next cycle's word (the head's bank if it is popped, the next bank
        # at the end of a row) at most 1 and not loaded by this cycle's command.
        same_bank = head_bank == bank

        def current(flag, timers, this_bank, every_bank):
            # ``this_bank``/``every_bank``: (command, cycles) loading the current bank's timer
            # or all of them
            le1 = Cat(t.value <= 1 for t in timers)
            here = Cat(c for c, cycles in this_bank if cycles > 1).any()
            anywhere = Cat(c for c, cycles in every_bank if cycles > 1).any()
            m.d.sync += flag.eq(~anywhere & Mux(
                pop, le1.bit_select(head_bank, 1) & ~(here & same_bank),
                Mux(row_end, le1.bit_select(bank_inc, 1) & ~(here & (nb == 1)),
                    le1.bit_select(bank, 1) & ~here)))

        current(rw_cur, rw_ok, [(do_act, p.t_rcd_cycles)], [])
        current(pre_cur, pre_ok, [(do_wr, p.t_wr_cycles), (do_act, p.t_ras_cycles)], [])
        current(act_cur, act_ok, [(do_pre, p.t_rp_cycles), (do_act, p.t_rc_cycles)],
                [(do_pall, p.t_rp_cycles), (do_ref, p.t_rfc_cycles)])
        return m
