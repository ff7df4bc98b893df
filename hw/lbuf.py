"""Line buffers: a circular buffer of a feature map that reads a window segment per cycle.

A feature map streams in as values in row-major pixel order with channels interleaved (the
order of ``docs/engine.md``), so the ``i``-th value of the tensor has the *absolute index* ``i``.
A :class:`SegmentBuffer` keeps the last ``depth`` values, spread over ``banks`` memories by
``index mod banks``; any ``lanes <= banks`` consecutive values therefore sit in distinct banks
and are read in one cycle. A kernel row of a convolution (``KW x C`` consecutive values of one
input row) is a run of consecutive indices, so a window is read one ``lanes``-wide segment at a
time, and zero padding is a lane mask: a lane whose value lies outside its row (left/right
padding) or whose row lies outside the map (top/bottom padding) reads 0.

Nothing here multiplies: the caller gives absolute indices, row offsets and row lengths.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SegmentWrite", "SegmentRead", "SegmentBuffer", "bank_row", "LUTRAM_MAX_DEPTH"]

#: deepest bank that yosys maps to LUT RAM rather than block RAM on the ECP5 (the input buffer's
#: 128-row banks are LUT RAM in the board builds; the window buffer's 512 block RAM)
LUTRAM_MAX_DEPTH = 128


def _log2(n: int) -> int:
    return n.bit_length() - 1


def bank_row(base, bank: int, lb: int, ibits: int):
    """Row inside bank ``bank`` of the value of a run starting at ``base`` that lands there."""
    return (base[lb:] + _after(bank, base[:lb], 1 << lb))[:ibits]


def _after(bank: int, lo, banks: int):
    """1 when ``bank`` comes before the start bank ``lo``: its value is in the next bank row."""
    return (bank < lo) if bank < banks - 1 else 0


class SegmentWrite(data.StructLayout):
    """Up to ``lanes`` values written at consecutive absolute indices ``addr ...``."""

    def __init__(self, *, addr_bits: int, width: int, lanes: int):
        super().__init__({
            "addr": unsigned(addr_bits),
            "data": data.ArrayLayout(signed(width), lanes),
            "count": unsigned(lanes.bit_length()),
        })


class SegmentRead(data.StructLayout):
    """A read request: ``lanes`` values from ``addr`` on, masked by their row.

    Lane ``l`` is the value at ``addr + l``; it reads as 0 unless ``row_ok`` and
    ``0 <= off + l < row_len`` (``off`` is the offset of lane 0 inside its row), or ``nomask``.
    """

    def __init__(self, *, addr_bits: int, row_bits: int):
        super().__init__({
            "addr": unsigned(addr_bits),
            "off": signed(row_bits),
            "row_len": unsigned(row_bits),
            "row_ok": 1,
            "nomask": 1,
        })


class SegmentBuffer(wiring.Component):
    """A banked circular buffer: one segment write and one segment read per cycle.

    Ports:

    - ``w`` (stream, always ready): a :class:`SegmentWrite`; ``addr`` is the absolute index
      modulo ``depth``. The caller guarantees that it never overwrites values still to be read.
    - ``r_en``/``r_req``: a :class:`SegmentRead`; ``r_data`` holds the masked lanes two cycles
      after ``r_en`` (one for the block RAM, one register after it) and keeps them otherwise.
      With ``hold=False`` every cycle is a read (``r_en`` is ignored) and ``r_data`` follows:
      no enable reaches the block RAMs and the read registers (for a consumer that takes the
      lanes exactly two cycles after its request). ``latency=3`` (only with ``hold=False``)
      registers the banks' words straight after the block RAMs and rotates them a cycle later:
      ``r_data`` three cycles after the request. Banks of at most :data:`LUTRAM_MAX_DEPTH` rows
      (LUT RAM) then register the row address instead and read asynchronously a cycle later,
      so such a read also sees a write made in its request's cycle; the engine never writes a
      slot that a request of that cycle reads (a writer only overwrites values older than the
      oldest one still needed). With ``latency=3`` the block-RAM banks are ``no_rw_check``
      for the same reason, and their word registers have no reset: the ULX3S build moves them
      into the block RAMs' output registers (boards/netlist.py); each lane's bank select is a
      register of its own, ``select_init`` its initial value (two buffers read at the same
      addresses need values that differ in every bit, 0 and ``banks - 1``, or yosys merges
      their select registers, one for both: board build b45). ``latency=4`` registers the
      request first, in a register of the buffer's own (``select_init`` again keeps two
      buffers' copies apart), so that the add of each bank's row and the lane mask start from
      it and not from the requester's register across the chip (board build b59: 11.4 ns into
      the banks' address registers); ``latency=5`` also rotates the words in two steps, by the
      start bank's low bits into a register per bank and then by its high bits into the
      lanes, and forms the lane mask in two stages (b60: a block RAM's output register,
      across the chip into a lane's 16-to-1 multiplexer, 12.0 ns).

    ``write_latency=2`` registers each bank's write (its row, value and enable, after the
    lane rotation) before the RAM: a write lands a cycle later, so a read sees it only when
    requested two cycles after the write, not one, and the caller counts it written a cycle
    later (the engine's in- and window buffers: board builds b48 and b51, the write's
    selection then 7-10 ns of routing to a bank's RAM across the chip). ``write_latency=3``
    registers the write once more as it comes in, before the rotation (b59: the writer's
    address register through each bank's add into its row register, 10.5 ns).
    """

    def __init__(self, *, depth: int, banks: int, lanes: int, wlanes: int, width: int,
                 row_bits: int, hold: bool = True, latency: int = 2, select_init: int = 0,
                 write_latency: int = 1):
        for name, v in (("depth", depth), ("banks", banks), ("lanes", lanes),
                        ("wlanes", wlanes), ("width", width), ("row_bits", row_bits)):
            if not isinstance(v, int) or v <= 0:
                raise TypeError(f"SegmentBuffer {name} must be a positive integer, not {v!r}")
        if banks & (banks - 1) or depth & (depth - 1):
            raise ValueError(f"SegmentBuffer banks ({banks}) and depth ({depth}) must be powers "
                             f"of two")
        if lanes > banks or wlanes > banks or depth < banks:
            raise ValueError(f"SegmentBuffer needs lanes ({lanes}) and wlanes ({wlanes}) <= "
                             f"banks ({banks}) <= depth ({depth})")
        self._depth, self._banks, self._lanes = depth, banks, lanes
        self._wlanes, self._width = wlanes, width
        self._hold = bool(hold)
        if latency not in (2, 3, 4, 5) or (latency > 2 and hold):
            raise ValueError(f"SegmentBuffer latency must be 2, or 3 to 5 with hold=False, not "
                             f"{latency!r} (hold={hold!r})")
        self._latency = latency
        if write_latency not in (1, 2, 3):
            raise ValueError(f"SegmentBuffer write_latency must be 1, 2 or 3, not "
                             f"{write_latency!r}")
        self._write_latency = write_latency
        self._select_init = select_init % banks
        abits = _log2(depth)
        super().__init__({
            "w": In(stream.Signature(SegmentWrite(addr_bits=abits, width=width, lanes=wlanes),
                                     always_ready=True)),
            "r_en": In(1),
            "r_req": In(SegmentRead(addr_bits=abits, row_bits=row_bits)),
            "r_data": Out(data.ArrayLayout(signed(width), lanes)),
        })

    @property
    def depth(self):
        return self._depth

    @property
    def banks(self):
        return self._banks

    @property
    def lanes(self):
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        nb, lb = self._banks, _log2(self._banks)
        bdepth = self._depth // nb
        ibits = max(1, _log2(bdepth))

        # registers of the buffer's own start at all ones in a buffer whose lane selects do
        # (``select_init``), so that yosys keeps two buffers' copies of a signal apart
        def own(value, name):
            reg = Signal(len(value), name=name,
                         init=(1 << len(value)) - 1 if self._select_init else 0)
            m.d.sync += reg.eq(value)
            return reg

        w_valid, w = self.w.valid, self.w.payload
        if self._write_latency == 3:
            # the write as it comes in, registered before the rotation and the banks' adds
            w_valid = own(w_valid, "w_valid_q")
            w = w.shape()(own(w.as_value(), "w_q"))
        wlo = w.addr[:lb]
        whi = w.addr[lb:]
        req = self.r_req
        if self._latency >= 4:
            req = req.shape()(own(req.as_value(), "req_q"))
        lo = req.addr[:lb]
        hi = req.addr[lb:]
        lo_q = Signal(lb)
        mask_q = Signal(self._lanes)
        r_en = self.r_en if self._hold else Const(1)
        # latency 5: the mask in two stages (the offset and its distance to the row's end
        # registered, then compared with each lane's constant) and the rotation in two (below)
        split = self._latency == 5
        with m.If(r_en):
            m.d.sync += lo_q.eq(lo)
            # lane l is inside its row when 0 <= off + l < row_len
            if split:
                off_a = Signal.like(req.off, name="off_a")
                end_a = Signal(signed(len(req.off) + 2), name="end_a")  # off - row_len
                ok_a, nomask_a = Signal(name="row_ok_a"), Signal(name="nomask_a")
                m.d.sync += [off_a.eq(req.off), end_a.eq(req.off - req.row_len),
                             ok_a.eq(req.row_ok), nomask_a.eq(req.nomask)]
                m.d.sync += mask_q.eq(Cat(
                    nomask_a | (ok_a & (off_a >= -lane) & (end_a < -lane))
                    for lane in range(self._lanes)))
            else:
                m.d.sync += mask_q.eq(Cat(
                    req.nomask | (req.row_ok & (req.off + lane >= 0) &
                                  (req.off + lane < req.row_len))
                    for lane in range(self._lanes)))

        rdata = []
        # latency 3: a bank small enough for LUT RAM (asynchronous reads) gets its row address
        # registered before it and its word after it; a block RAM registers the address itself,
        # and its word is registered after it (b24: the address's add and a LUT RAM read in
        # one cycle after the sequencer's register)
        lutram = self._latency >= 3 and bdepth <= LUTRAM_MAX_DEPTH
        for b in range(nb):
            mem = memory.Memory(shape=signed(self._width), depth=bdepth, init=[],
                                attrs={"no_rw_check": 1}
                                if self._latency >= 3 and not lutram else None)
            m.submodules[f"bank{b}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(domain="comb" if lutram else "sync")
            # the write lane that lands in bank b, and its row inside the bank
            wsel = Signal(lb, name=f"wsel{b}")
            m.d.comb += wsel.eq(b - wlo)
            wdom = m.d.sync if self._write_latency >= 2 else m.d.comb
            wdom += [
                wp.addr.eq((whi + _after(b, wlo, nb))[:ibits] if bdepth > 1 else 0),
                wp.data.eq(w.data[wsel[: (self._wlanes - 1).bit_length() or 1]]
                           if self._wlanes > 1 else w.data[0]),
                wp.en.eq(w_valid & (wsel < w.count)),
            ]
            raddr = (hi + _after(b, lo, nb))[:ibits] if bdepth > 1 else 0
            if lutram:
                raddr_q = Signal(ibits, name=f"raddr{b}")
                m.d.sync += raddr_q.eq(raddr)
                m.d.comb += rp.addr.eq(raddr_q)
            else:
                m.d.comb += [rp.addr.eq(raddr), rp.en.eq(r_en)]
            word = rp.data
            # latency 3 to 5: a register after the RAM
            if self._latency >= 3:
                word = Signal.like(rp.data, name=f"word{b}", reset_less=True)
                m.d.sync += word.eq(rp.data)
            rdata.append(word)
        if self._latency >= 3:
            # the rotation and the mask with the words (``latency - 2`` cycles after the
            # request that reaches the banks, which is a cycle late with ``latency`` 4 and 5,
            # and the mask a cycle later again with 5)
            late = 1 if self._latency >= 4 else 0
            lo_bank = lo_q          # with the banks' words a cycle later (latency 5)
            for k in range(self._latency - 2 - late - split):
                mask_d = Signal.like(mask_q, name=f"mask_d{k}")
                m.d.sync += mask_d.eq(mask_q)
                mask_q = mask_d
            for k in range(self._latency - 3 - late):
                lo_d = Signal.like(lo_q, name=f"lo_d{k}")
                m.d.sync += lo_d.eq(lo_q)
                lo_q = lo_d

        load = Const(1)                 # hold=False: the lanes follow every read
        if self._hold:
            load = Signal(name="en_q")
            m.d.sync += load.eq(self.r_en)
        if split:
            # latency 5: the banks rotated by the start bank's low bits into a register per bank
            # (``mid[i]`` is bank ``i + lo_lo``), then by its high bits into the lanes (lane l
            # is ``mid[l + lo_hi * 2**k1]``): two multiplexers of a few inputs a cycle each,
            # where one of ``banks`` inputs took the logic and the routing of b61's 11.4 ns
            # (the in-buffer's lanes). The selects are registers, a few copies each, told apart by
            # their initial values (each drives fewer multiplexers). yosys merges flip-flops bit
            # by bit, so of each bit two copies remain, initial 0 and initial 1 (the decoder's
            # row copies, 1e0d62f): each drives half of the multiplexers.
            k1 = lb // 2
            k2 = lb - k1
            # selects: with the words (s1), and with ``mid`` a cycle later (s2)
            s1 = [Signal(k1, name=f"rsel1_{c}", init=c) for c in range(1 << k1)]
            s2 = [Signal(k2, name=f"rsel2_{c}", init=c) for c in range(1 << k2)]
            m.d.sync += [sel.eq(lo_bank[:k1]) for sel in s1]
            m.d.sync += [sel.eq(lo_q[k1:]) for sel in s2]
            mid = [Signal(signed(self._width), name=f"mid{i}", reset_less=True)
                   for i in range(nb)]
            for i in range(nb):
                options = Array(rdata[(i + d) % nb] for d in range(1 << k1))
                m.d.sync += mid[i].eq(options[s1[i % len(s1)]])
            for lane in range(self._lanes):
                options = Array(mid[(lane + (d << k1)) % nb] for d in range(1 << k2))
                m.d.sync += self.r_data[lane].eq(
                    Mux(mask_q[lane], options[s2[lane % len(s2)]], 0))
            return m

        # each lane's bank select a register of its own (b45: one register, then the add for
        # every lane, fanned out to all lanes' multiplexers of both buffers, 7.7 ns of routing)
        sels = [Signal(lb, name=f"rsel{lane}", init=self._select_init)
                for lane in range(self._lanes)]
        sel_domain = m.d.sync if self._latency >= 3 else m.d.comb
        sel_domain += [sel.eq(lo_q + lane) for lane, sel in enumerate(sels)]

        # rotate the banks into lanes (lane l reads bank lo + l), then mask: one register stage
        bank_data = Array(rdata)
        with m.If(load):
            for lane in range(self._lanes):
                m.d.sync += self.r_data[lane].eq(Mux(mask_q[lane], bank_data[sels[lane]], 0))
        return m
