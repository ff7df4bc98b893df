"""Copies of a register for a wide fan-out that yosys keeps apart.

A register that feeds sinks all over the chip (a write port of every column's tables) is one
long net: board build b33 had 15.0 ns of routing on one such net. Copies per column only help if
they survive synthesis, and yosys merges flip-flops with the same input and the same initial
value, whatever ``keep`` says (``opt_merge``). :func:`fanout_tree` builds the copies as a
binary tree of registers whose two children of a node differ in their initial value (all zeros,
all ones): no two flip-flops have both the same input and the same initial value, so every copy
stays, and each one drives only its own subtree.
"""

from __future__ import annotations

from amaranth import Module, Signal, Value

__all__ = ["fanout_tree"]


def tree_depth(n: int) -> int:
    """The registers between the source and a leaf of :func:`fanout_tree` for ``n`` copies."""
    if n < 1:
        raise ValueError(f"fanout_tree needs at least one copy, not {n}")
    return max(1, (n - 1).bit_length())


def fanout_tree(m: Module, value: Value, n: int, *, name: str) -> list[Signal]:
    """``n`` copies of ``value``, each :func:`tree_depth` ``(n)`` cycles late (``m.d.sync``).

    The initial values differ between siblings, so a copy holds all ones or all zeros until
    its first clock: use it only for signals whose first cycles do not matter (a write port
    whose contents are rewritten before they are read).
    """
    value = Value.cast(value)
    shape = value.shape()
    ones = -1 if shape.signed else (1 << shape.width) - 1
    level = [value]
    for d in range(tree_depth(n)):
        nodes = []
        for i in range(2 * len(level)):
            node = Signal(shape, name=f"{name}_l{d}_{i}", init=ones if i % 2 else 0)
            m.d.sync += node.eq(level[i // 2])
            nodes.append(node)
        level = nodes
    return level[:n]
