"""The engine's cycle model: expected cycles of a layer from its shapes and the configuration.

The engine (docs/engine.md) runs a layer as a sequence of *steps* on one column array: a step
is one pixel of the squeeze (stage A) or one output pixel of the expand/convolution (stage B);
a step is a list of column *groups*, each ``passes`` cycles long (one pass per cycle). A
finished group waits in one of ``result_banks`` banks until the requantisers have drained it,
``requant_units`` channels per cycle, and the next group can only start when a bank is free, so
short groups (a 1x1 expand over 16 squeeze channels: 2 passes, 3 drain cycles) can stall the
array. The input stream brings ``in_lanes`` values per cycle. The model:

    cycles = max(array time, input time) + fill + tail

- *array time*: the steady-state time of every step, from a small event simulation of the
  group sequence through the banks and the drain;
- *input time*: input values / ``in_lanes``, plus the time the array spends waiting for the
  first window (fill: the values before the first output pixel can start);
- *tail*: pipeline latency after the last pass (buffer read, multipliers, adder tree,
  accumulate, drain, requantise, output FIFO).

``ideal_cycles`` is the bound of the issue: layer MACs / all multipliers.
"""

from __future__ import annotations

import math

from hw.config import AccelConfig

__all__ = ["TAIL_CYCLES", "step_groups", "steady_cycles", "layer_cycles",
           "ideal_cycles", "layer_macs", "utilisation", "STEP_OVERHEAD", "step_cycles",
           "network_cycles"]

#: cycles from the final group's bank to the last output beat (drain, requantiser, FIFO)
TAIL_CYCLES = 9


def _groups(cfg: AccelConfig, branch) -> list[tuple[int, int]]:
    """(passes, drain cycles) of every group of a branch for one pixel."""
    out = []
    o = branch.conv.out_channels
    for g in range(branch.groups):
        nvalid = min(cfg.pe_columns, o - g * cfg.pe_columns)
        out.append((branch.passes, -(-nvalid // cfg.requant_units)))
    return out


def step_groups(cfg: AccelConfig, prog) -> tuple[list, list]:
    """The group lists of a stage-A step and of a stage-B step."""
    a = _groups(cfg, prog.squeeze) if prog.squeeze is not None else []
    b = [grp for br in prog.branches for grp in _groups(cfg, br)]
    return a, b


def steady_cycles(cfg: AccelConfig, groups: list[tuple[int, int]], repeat: int = 8) -> float:
    """Cycles per repetition of ``groups`` issued back to back, in steady state.

    Event model of the result banks: a group's last pass needs a free bank; the bank is freed
    when the drain has issued the group's last chunk; the drain takes one chunk per cycle, in
    order, once the group is finished ``cfg.issue_latency + cfg.pass_latency`` cycles after
    its last pass.
    """
    if not groups:
        return 0.0
    seq = groups * repeat
    banks = cfg.result_banks
    issue_free = 0       # first cycle the array can issue
    drain_free = 0       # first cycle the drain can take a chunk
    freed = []           # cycle each group's bank becomes free again
    starts = []
    for i, (passes, chunks) in enumerate(seq):
        start = issue_free
        starts.append(start)
        last = start + passes - 1
        if i >= banks:
            last = max(last, freed[i - banks])
        end = last + 1                       # the cycle after the last pass
        ready = last + cfg.issue_latency + cfg.pass_latency      # finished in its bank
        d0 = max(ready, drain_free)
        drain_free = d0 + chunks
        # the credit is back the cycle after the last chunk; with fast_pipeline a cycle later
        # still (v1.1's conv1, credit-bound: 166,366 cycles simulated, 166,352 predicted so)
        freed.append(drain_free + cfg.issue_latency)
        issue_free = end
    n = len(groups)
    half = repeat // 2
    return (starts[n * (repeat - 1)] - starts[n * half]) / (repeat - 1 - half)


def layer_macs(prog) -> int:
    parts = ([prog.squeeze] if prog.squeeze is not None else []) + prog.branches
    return sum(br.conv.macs(br.in_shape) for br in parts)


def ideal_cycles(cfg: AccelConfig, prog) -> float:
    """Layer MACs / all multipliers of the engine."""
    return layer_macs(prog) / cfg.multipliers


def _fill_values(prog) -> int:
    """Input values that must arrive before the first output pixel can be computed."""
    cmd = prog.cmd
    c_in, _, w_in = prog.in_shape
    if prog.squeeze is not None:
        # the squeeze must have produced the first window: rows 0..win_rows-1-top of it
        s_rows = max(0, cmd["b_win_rows"] + cmd["b_top"])
        s_cols = max(0, cmd["b_win_bytes"] // prog.squeeze.conv.out_channels + cmd["b_left"]
                     // max(1, prog.squeeze.conv.out_channels))
        return (s_rows * w_in + s_cols) * c_in
    return max(0, cmd["b_win_rows"] + cmd["b_top"]) * w_in * c_in + max(
        0, cmd["b_win_bytes"] + cmd["b_left"])


def layer_cycles(cfg: AccelConfig, prog) -> int:
    """Expected cycles of one layer program, command accepted to last output beat."""
    a_groups, b_groups = step_groups(cfg, prog)
    c_in, h_in, w_in = prog.in_shape
    _, ho, wo = prog.conv_shape
    b_step = steady_cycles(cfg, b_groups)
    a_step = steady_cycles(cfg, a_groups)
    a_pixels = h_in * w_in if prog.squeeze is not None else 0
    array = ho * wo * b_step + a_pixels * a_step
    in_time = math.ceil(c_in * h_in * w_in / cfg.in_lanes)
    fill = math.ceil(_fill_values(prog) / cfg.in_lanes)
    if prog.squeeze is not None:
        # squeeze steps can only run as input pixels arrive: per input pixel the array needs
        # max(compute, arrival) when the input is the bottleneck
        per_pixel_in = c_in / cfg.in_lanes
        per_pixel_compute = array / a_pixels
        body = a_pixels * max(per_pixel_in, per_pixel_compute)
        total = body + fill // 4
    else:
        total = max(array + fill, in_time + b_step * wo)
    last_group = b_groups[-1] if b_groups else (1, 1)
    return int(round(total + last_group[1] + TAIL_CYCLES))


def utilisation(cfg: AccelConfig, prog) -> float:
    """Ideal cycles / predicted cycles: the share of the multipliers kept busy."""
    return ideal_cycles(cfg, prog) / layer_cycles(cfg, prog)


#: cycles the top level spends between two steps: fetch, load and launch of a schedule row,
#: and the final cycle of the step (hw/top.py)
STEP_OVERHEAD = 4


def step_cycles(cfg: AccelConfig, prog, entry) -> int:
    """Expected cycles of one step of the top level (``entry``: its schedule entry): the layer,
    bounded below by the memory port's time for the bytes it reads and writes (one word per
    cycle), plus the memory's first-read latency and the writer's final burst."""
    p = cfg.fmap_port_bytes
    words = 0
    if not entry.in_stream:
        words += math.ceil(entry.in_bytes / p)
    if not entry.out_stream:
        words += math.ceil(entry.out_bytes / p)
    body = max(layer_cycles(cfg, prog), words)
    extra = STEP_OVERHEAD
    if not entry.in_stream:
        extra += cfg.fmap_read_latency + 3          # first burst: latency, FIFO, unpacking
    if not entry.out_stream:
        extra += 4 + min(math.ceil(entry.out_bytes / p), cfg.fmap_burst_bytes // p)
    return int(body + extra)


def network_cycles(cfg: AccelConfig, progs, sched) -> int:
    """Expected cycles of a whole network on the top level (one frame, input at full rate)."""
    return sum(step_cycles(cfg, p, e) for p, e in zip(progs, sched.entries))
