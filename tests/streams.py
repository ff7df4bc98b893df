"""Test support: drive and drain ``amaranth.lib.stream`` interfaces with random back-pressure.

Used by every Amaranth-simulator unit test. ``stream_put`` holds ``valid`` low for a random number
of cycles before each transfer, ``stream_get`` holds ``ready`` low likewise, so every stream sees
both stalls; the transfer rules of Amaranth's stream documentation are kept (``valid`` and the
payload stay put until ``ready``).
"""

from __future__ import annotations

import random

__all__ = ["stream_put", "stream_get", "put_all", "get_n"]


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
