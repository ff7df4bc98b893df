"""A model of an SDR SDRAM chip, in Amaranth, that holds data and checks the command protocol.

:class:`SDRAMChipModel` sits where the chip would be: on the pins of :class:`hw.sdram.
SDRAMController` (``wiring.connect(m, controller.sdram, model.pins)``), in the Amaranth
simulator or inside a Verilated board design. It stores every word written (with the byte mask)
and answers READs after the CAS latency, and it checks the rules of the datasheet, cycle by
cycle, with the timing of the same :class:`~hw.sdram.SDRAMParams`:

- power-up: only NOPs during ``init_wait``, then PRECHARGE ALL, at least ``init_refreshes``
  AUTO REFRESH commands and a LOAD MODE REGISTER before the first ACTIVE, READ or WRITE;
- the mode register: burst length 1 and the CAS latency of ``params`` (the only mode modelled);
- ACTIVE to an open bank, READ or WRITE to a closed one, REFRESH or LOAD MODE REGISTER with a bank
  open;
- tRCD, tRP, tRC, tRAS, tWR, tRRD, tRFC, tMRD minimums;
- the refresh interval: no gap longer than ``params.refresh_interval_cycles`` between AUTO
  REFRESH commands once initialised;
- the data bus: the controller must not drive it while the chip does or in the cycle after
  (turnaround);
- CKE low, BURST TERMINATE and auto precharge (not modelled).

The first violation sets ``error`` (sticky) and ``code`` (:class:`SDRAMError`); ``violations``
counts all of them (saturating). A smaller geometry (``SDRAMParams.simulation``) keeps the
memory small.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .sdram import (
    A10,
    CMD_ACTIVE,
    CMD_BURST_STOP,
    CMD_MODE,
    CMD_PRECHARGE,
    CMD_READ,
    CMD_REFRESH,
    CMD_WRITE,
    SDRAMParams,
    SDRAMPinsSignature,
)

__all__ = ["SDRAMError", "SDRAMChipModel"]


class SDRAMError(enum.Enum, shape=5):
    """What :class:`SDRAMChipModel` found wrong first."""

    NONE = 0
    #: a command other than NOP during the power-up wait, or out of the init sequence's order
    INIT = 1
    #: a mode register value the model does not support (burst length, CAS latency ...)
    MODE = 2
    #: ACTIVE to a bank that has a row open
    BANK_OPEN = 3
    #: READ or WRITE to a bank with no open row
    BANK_CLOSED = 4
    TRCD = 5
    TRP = 6
    TRC = 7
    TRAS = 8
    TWR = 9
    TRRD = 10
    TRFC = 11
    TMRD = 12
    #: AUTO REFRESH or LOAD MODE REGISTER while a bank is open
    REFRESH_OPEN = 13
    #: more than the refresh interval since the last AUTO REFRESH
    REFRESH_LATE = 14
    #: the controller drove the data bus while the chip drove it or had just driven it
    BUS_CONFLICT = 15
    #: CKE low, BURST TERMINATE or auto precharge: not modelled
    UNSUPPORTED = 16


class SDRAMChipModel(wiring.Component):
    """An SDR SDRAM with protocol and timing checks (see the module documentation).

    ``params``: geometry and timing (the memory holds ``params.words`` words).
    ``check_refresh``: check the refresh interval (off for tests that stop the clock of
    refreshes on purpose). ``init``: initial words (Python ints, by word address
    ``{row, bank, column}`` as the controller maps them).

    Ports: ``pins`` (the chip side of :class:`~hw.sdram.SDRAMPinsSignature`), ``error``,
    ``code``, ``violations``, ``initialized`` and ``refreshes`` (AUTO REFRESH commands seen,
    16 bits, wrapping).
    """

    def __init__(self, params: SDRAMParams, *, check_refresh: bool = True, init=()):
        if not isinstance(params, SDRAMParams):
            raise TypeError(f"params must be SDRAMParams, not {type(params).__name__}")
        init = [int(v) for v in init]
        if len(init) > params.words:
            raise ValueError(f"SDRAMChipModel init has {len(init)} words, more than the "
                             f"{params.words} of the chip")
        self._params = params
        self._check_refresh = bool(check_refresh)
        self._init = init
        super().__init__({
            "pins": In(SDRAMPinsSignature(params)),
            "error": Out(1),
            "code": Out(SDRAMError),
            "violations": Out(16),
            "initialized": Out(1),
            "refreshes": Out(16),
        })

    @property
    def params(self) -> SDRAMParams:
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        pins = self.pins
        nb = p.banks

        # The memory is indexed like the controller's word address: {row, bank, column}.
        m.submodules.mem = mem = Memory(shape=p.data_bits, depth=p.words, init=self._init)
        wr = mem.write_port(granularity=8)
        rd = mem.read_port(transparent_for=[wr])

        def is_cmd(command):
            ras, cas, we = command
            return pins.cs & (pins.ras == ras) & (pins.cas == cas) & (pins.we == we)

        act, read, write = is_cmd(CMD_ACTIVE), is_cmd(CMD_READ), is_cmd(CMD_WRITE)
        pre, ref, mode = is_cmd(CMD_PRECHARGE), is_cmd(CMD_REFRESH), is_cmd(CMD_MODE)
        bst = is_cmd(CMD_BURST_STOP)
        any_cmd = pins.cs & (pins.ras | pins.cas | pins.we)
        ba = pins.ba
        all_banks = pins.a[A10]

        # -- violation recording ---------------------------------------------------------------
        flags = []  # (condition, code): the first in this list wins within a cycle

        def violation(cond, code):
            flags.append((cond, code))

        # -- counters: cycles since an event, saturating ---------------------------------------
        top = max(p.t_rc_cycles, p.t_rfc_cycles, p.t_rp_cycles, p.t_ras_cycles,
                  p.t_wr_cycles, p.t_rcd_cycles, p.t_rrd_cycles, p.t_mrd_cycles) + 1

        def since(name, event, limit=top):
            counter = Signal(range(limit + 1), init=limit, name=name)
            with m.If(event):
                m.d.sync += counter.eq(0)
            with m.Elif(counter != limit):
                m.d.sync += counter.eq(counter + 1)
            return counter

        def too_soon(counter, cycles):
            # The counter is 0 in the cycle after the event's edge: ``k`` edges later it reads
            # ``k - 1``.
            return counter < cycles - 1

        open_ = Signal(nb)
        rows = [Signal(p.row_bits, name=f"row{b}") for b in range(nb)]
        this_bank = Signal()          # the bank addressed by ``ba`` is open
        m.d.comb += this_bank.eq(open_.bit_select(ba, 1))

        def bank_is(b):
            return ba == b

        s_act, s_pre, s_wr = [], [], []
        for b in range(nb):
            s_act.append(since(f"since_act{b}", act & bank_is(b)))
            closes = pre & (all_banks | bank_is(b)) & open_[b]
            s_pre.append(since(f"since_pre{b}", closes))
            s_wr.append(since(f"since_write{b}", write & bank_is(b)))
        s_act_any = since("since_act_any", act)
        s_ref = since("since_ref", ref)
        s_mrs = since("since_mrs", mode)

        def of_bank(counters):
            value = Signal.like(counters[0], name=f"{counters[0].name}_sel")
            with m.Switch(ba):
                for b in range(nb):
                    with m.Case(b):
                        m.d.comb += value.eq(counters[b])
            return value

        # -- power-up and initialisation ----------------------------------------------------------
        powerup = Signal(range(p.init_wait_cycles + 1), init=p.init_wait_cycles)
        with m.If(powerup != 0):
            m.d.sync += powerup.eq(powerup - 1)
        phase = Signal(range(4))       # 0: wait, 1: precharged, 2: refreshing, 3: initialised
        init_refs = Signal(range(p.init_refreshes + 1))
        m.d.comb += self.initialized.eq(phase == 3)
        waiting = phase == 0
        initialising = (phase == 1) | (phase == 2)
        violation(waiting & any_cmd & (powerup != 0), SDRAMError.INIT)
        violation(waiting & any_cmd & ~(pre & all_banks), SDRAMError.INIT)
        violation(initialising & (act | read | write), SDRAMError.INIT)
        violation(initialising & mode & (init_refs != p.init_refreshes), SDRAMError.INIT)
        with m.If(waiting & pre & all_banks & (powerup == 0)):
            m.d.sync += phase.eq(1)
        with m.If(initialising & ref):
            m.d.sync += phase.eq(2)
            with m.If(init_refs != p.init_refreshes):
                m.d.sync += init_refs.eq(init_refs + 1)
        with m.If(initialising & mode & (init_refs == p.init_refreshes)):
            m.d.sync += phase.eq(3)

        # -- command checks -----------------------------------------------------------------------
        violation(~pins.cke, SDRAMError.UNSUPPORTED)
        violation(bst, SDRAMError.UNSUPPORTED)
        violation((read | write) & pins.a[A10], SDRAMError.UNSUPPORTED)

        cl_field = pins.a[4:7]
        violation(mode & ((pins.a[0:3] != 0) | (cl_field != p.cas_latency)
                          | (pins.a[7:9] != 0)), SDRAMError.MODE)
        violation((mode | ref) & (open_ != 0), SDRAMError.REFRESH_OPEN)
        violation(mode & too_soon(s_mrs, p.t_mrd_cycles), SDRAMError.TMRD)

        violation(act & this_bank, SDRAMError.BANK_OPEN)
        violation(act & too_soon(of_bank(s_act), p.t_rc_cycles), SDRAMError.TRC)
        violation(act & too_soon(of_bank(s_pre), p.t_rp_cycles), SDRAMError.TRP)
        violation(act & too_soon(s_act_any, p.t_rrd_cycles), SDRAMError.TRRD)
        violation((act | ref) & too_soon(s_ref, p.t_rfc_cycles), SDRAMError.TRFC)
        violation((act | ref | read | write | pre) & too_soon(s_mrs, p.t_mrd_cycles),
                  SDRAMError.TMRD)

        violation((read | write) & ~this_bank, SDRAMError.BANK_CLOSED)
        violation((read | write) & too_soon(of_bank(s_act), p.t_rcd_cycles), SDRAMError.TRCD)

        ref_trp = Cat(too_soon(s_pre[b], p.t_rp_cycles) for b in range(nb)).any()
        violation(ref & ref_trp, SDRAMError.TRP)

        for b in range(nb):
            closes = pre & (all_banks | bank_is(b)) & open_[b]
            violation(closes & too_soon(s_act[b], p.t_ras_cycles), SDRAMError.TRAS)
            violation(closes & too_soon(s_wr[b], p.t_wr_cycles), SDRAMError.TWR)

        # -- refresh interval ---------------------------------------------------------------------
        if self._check_refresh:
            gap_limit = p.refresh_interval_cycles
            gap = Signal(range(gap_limit + 2))
            with m.If(ref | (phase != 3)):
                m.d.sync += gap.eq(0)
            with m.Elif(gap != gap_limit + 1):
                m.d.sync += gap.eq(gap + 1)
            # ``gap`` edges after the last refresh without a new one: late.
            violation((phase == 3) & (gap == gap_limit), SDRAMError.REFRESH_LATE)
        with m.If(ref):
            m.d.sync += self.refreshes.eq(self.refreshes + 1)

        # -- bank state ---------------------------------------------------------------------------
        for b in range(nb):
            with m.If(act & bank_is(b)):
                m.d.sync += [open_[b].eq(1), rows[b].eq(pins.a[:p.row_bits])]
            with m.If(pre & (all_banks | bank_is(b))):
                m.d.sync += open_[b].eq(0)

        # -- data ---------------------------------------------------------------------------------
        row_sel = Signal(p.row_bits)
        with m.Switch(ba):
            for b in range(nb):
                with m.Case(b):
                    m.d.comb += row_sel.eq(rows[b])
        word = Cat(pins.a[:p.col_bits], ba, row_sel)
        m.d.comb += [
            wr.addr.eq(word),
            wr.data.eq(pins.dq_o),
            wr.en.eq(Mux(write & this_bank, ~pins.dqm, 0)),
            rd.addr.eq(word),
            rd.en.eq(1),
        ]
        # The read port's data is there one cycle after the READ's edge (CAS latency 1); the
        # rest of the latency is a delay line. ``drive`` marks the cycles the chip drives dq.
        valid, payload = Signal(), rd.data
        m.d.sync += valid.eq(read & this_bank)
        for i in range(p.cas_latency - 1):
            next_valid = Signal(name=f"cl{i}_valid")
            next_payload = Signal(p.data_bits, name=f"cl{i}_data")
            m.d.sync += [next_valid.eq(valid), next_payload.eq(payload)]
            valid, payload = next_valid, next_payload
        drove = Signal()
        m.d.sync += drove.eq(valid)
        m.d.comb += pins.dq_i.eq(Mux(valid, payload, 0))
        violation(pins.dq_oe & (valid | drove), SDRAMError.BUS_CONFLICT)

        # -- reporting ---------------------------------------------------------------------------
        any_flag = Signal()
        first_code = Signal(SDRAMError)
        m.d.comb += any_flag.eq(Cat(cond for cond, _ in flags).any())
        for cond, code in reversed(flags):
            with m.If(cond):
                m.d.comb += first_code.eq(code)
        with m.If(any_flag):
            m.d.sync += self.error.eq(1)
            with m.If(self.violations != 0xFFFF):
                m.d.sync += self.violations.eq(self.violations + 1)
            with m.If(~self.error):
                m.d.sync += self.code.eq(first_code)
        return m
