"""Test support: drive and drain ``amaranth.lib.stream`` interfaces with random back-pressure.

Used by every Amaranth-simulator unit test. ``stream_put`` holds ``valid`` low for a random number
of cycles before each transfer, ``stream_get`` holds ``ready`` low likewise, so every stream sees
both stalls; the transfer rules of Amaranth's stream documentation are kept (``valid`` and the
payload stay put until ``ready``).
"""

from __future__ import annotations

import random

__all__ = ["simulate", "stream_put", "stream_get", "put_all", "get_n", "get_until", "beats_of",
           "in_beats", "values_of"]


def simulate(dut, *benches):
    """Run ``benches`` (testbenches) against ``dut`` on a 1 MHz clock until they all return."""
    from amaranth.sim import Simulator

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for b in benches:
        sim.add_testbench(b)
    sim.run()


async def _idle(ctx, rng: random.Random | None, stall: float):
    if rng is not None and stall > 0:
        while rng.random() < stall:
            await ctx.tick()


async def stream_put(ctx, stream, payload, *, rng: random.Random | None = None,
                     stall: float = 0.0):
    """Send one payload on ``stream`` (valid/ready), after random idle cycles."""
    await _idle(ctx, rng, stall)
    ctx.set(stream.payload, payload)
    ctx.set(stream.valid, 1)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng: random.Random | None = None, stall: float = 0.0):
    """Receive one payload from ``stream``, after random cycles with ``ready`` low."""
    await _idle(ctx, rng, stall)
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def put_all(ctx, stream, payloads, **kw):
    for p in payloads:
        await stream_put(ctx, stream, p, **kw)


async def get_n(ctx, stream, n: int, **kw) -> list:
    return [await stream_get(ctx, stream, **kw) for _ in range(n)]


async def get_until(ctx, stream, done, **kw) -> list:
    """Receive payloads until ``done(payload)`` is true for one (it is included)."""
    out = []
    while True:
        p = await stream_get(ctx, stream, **kw)
        out.append(p)
        if done(p):
            return out


def beats_of(values, pixel: int, lanes: int, rng: random.Random | None = None) -> list[dict]:
    """Cut a flat value list into beats (``data``/``count``/``last``) that never cross a pixel.

    ``pixel`` values form a pixel; a beat carries 1..``lanes`` consecutive values (random sizes
    with ``rng``, else full ones). The last beat has ``last`` set.
    """
    values = [int(v) for v in values]
    beats = []
    for start in range(0, len(values), pixel):
        px = values[start : start + pixel]
        i = 0
        while i < len(px):
            n = min(lanes, len(px) - i) if rng is None else rng.randint(1, min(lanes,
                                                                              len(px) - i))
            chunk = px[i : i + n]
            beats.append({"data": chunk + [0] * (lanes - n), "count": n, "last": 0})
            i += n
    if beats:
        beats[-1]["last"] = 1
    return beats


def values_of(beats) -> list[int]:
    """The values of received beats (payload views or dicts), in order."""
    out = []
    for b in beats:
        n = int(b["count"] if isinstance(b, dict) else b.count)
        data = b["data"] if isinstance(b, dict) else b.data
        out.extend(int(data[i]) for i in range(n))
    return out


def in_beats(values, lanes: int, rng: random.Random | None = None) -> list[dict]:
    """Pack values into ``data``/``count`` beats of 1..``lanes`` values (random sizes with
    ``rng``, else full ones), crossing pixel boundaries freely."""
    values = [int(v) for v in values]
    out, i = [], 0
    while i < len(values):
        n = min(lanes, len(values) - i) if rng is None else rng.randint(1, min(lanes,
                                                                           len(values) - i))
        out.append({"data": values[i : i + n] + [0] * (lanes - n), "count": n})
        i += n
    return out
