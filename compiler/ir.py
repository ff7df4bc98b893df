"""The compiler's one small IR: a topologically ordered list of float nodes.

The importer produces op-level nodes (``Conv``, ``Relu``, ``MaxPool``, ``Concat``,
``GlobalAveragePool``, ``Flatten``, ``Softmax``, ``Dropout``); the passes in
``compiler/passes.py`` fuse and lower them until the graph is a chain of ``Conv`` (with ReLU),
``Fire``, ``MaxPool`` and ``GlobalAveragePool`` nodes, which the quantiser turns into a
:class:`compiler.qmodel.QModel`. :func:`compiler.execute.execute` runs any stage in float, so
every pass is tested by executing the graph before and after it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Node", "Graph", "IRError"]


class IRError(ValueError):
    """A graph the compiler cannot handle; the message names the node and what was expected."""


@dataclass
class Node:
    """One operation. ``params`` holds arrays (``W``, ``B``) or, for ``Fire``, sub-nodes."""

    op: str
    name: str
    inputs: list[str]
    output: str
    attrs: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        shapes = {k: getattr(v, "shape", v) for k, v in self.params.items()
                  if isinstance(v, np.ndarray)}
        return (f"Node({self.op} {self.name!r}: {self.inputs} -> {self.output!r}"
                f"{' ' + str(self.attrs) if self.attrs else ''}"
                f"{' ' + str(shapes) if shapes else ''})")


@dataclass
class Graph:
    """A network: input tensor name and shape ``(C, H, W)``, nodes in execution order."""

    name: str
    input_name: str
    input_shape: tuple[int, int, int]
    output: str
    nodes: list[Node] = field(default_factory=list)
    source_sha256: str = ""

    def copy(self) -> Graph:
        return copy.deepcopy(self)

    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if n.output == tensor:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node {name!r}")

    def ops(self) -> list[str]:
        return [n.op for n in self.nodes]

    def rename_tensor(self, old: str, new: str):
        """Make every consumer of ``old`` read ``new`` instead (and the graph output)."""
        for n in self.nodes:
            n.inputs = [new if t == old else t for t in n.inputs]
        if self.output == old:
            self.output = new
