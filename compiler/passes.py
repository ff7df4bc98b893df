"""Small named passes over the IR, each ``apply(graph) -> graph`` (the input is not modified).

:func:`lower` runs them in order and can check the graph after each one. After lowering, a graph
is a chain: ``Conv`` (ReLU fused) or ``Fire`` or ``MaxPool`` nodes, ending with the classifier
``Conv`` and a ``GlobalAveragePool``.
"""

from __future__ import annotations

from collections.abc import Callable

from .ir import Graph, IRError, Node

__all__ = ["RemoveIdentities", "FuseRelu", "LowerFire", "StripSoftmaxHead", "CheckChain",
           "PASSES", "lower"]


class RemoveIdentities:
    """Drop Dropout and Identity nodes (identities at inference)."""

    def apply(self, graph: Graph) -> Graph:
        g = graph.copy()
        for n in [n for n in g.nodes if n.op in ("Dropout", "Identity")]:
            g.nodes.remove(n)
            g.rename_tensor(n.output, n.inputs[0])
        return g


class FuseRelu:
    """Fold a Relu that is the only consumer of a Conv into the Conv (``attrs['relu']``)."""

    def apply(self, graph: Graph) -> Graph:
        g = graph.copy()
        for relu in [n for n in g.nodes if n.op == "Relu"]:
            conv = g.producer(relu.inputs[0])
            if (conv is None or conv.op != "Conv" or conv.attrs.get("relu")
                    or len(g.consumers(conv.output)) != 1 or conv.output == g.output):
                continue
            conv.attrs["relu"] = True
            g.nodes.remove(relu)
            g.rename_tensor(relu.output, conv.output)
        return g


def _is_conv(n: Node | None, kernel: int, pad: int) -> bool:
    return (n is not None and n.op == "Conv" and n.attrs["kernel"] == kernel
            and n.attrs["stride"] == 1 and n.attrs["pads"] == (pad,) * 4
            and bool(n.attrs.get("relu")))


def _fire_name(squeeze: Node, concat: Node) -> str:
    return squeeze.name.split("/")[0] if "/" in squeeze.name else concat.name


class LowerFire:
    """Recognise squeeze 1x1 -> (expand 1x1 | expand 3x3 pad 1) -> Concat as one ``Fire`` node.

    Needs ReLUs fused first. The squeeze output must feed only the two expands, each expand only
    the Concat, and the Concat must take the 1x1 branch first (the numerics' channel order).
    """

    def apply(self, graph: Graph) -> Graph:
        g = graph.copy()
        for cat in [n for n in g.nodes if n.op == "Concat"]:
            if len(cat.inputs) != 2:
                continue
            e1, e3 = (g.producer(t) for t in cat.inputs)
            if not (_is_conv(e1, 1, 0) and _is_conv(e3, 3, 1)):
                continue
            if e1.inputs != e3.inputs:
                continue
            sq = g.producer(e1.inputs[0])
            if not _is_conv(sq, 1, 0):
                continue
            if ({n.name for n in g.consumers(sq.output)} != {e1.name, e3.name}
                    or len(g.consumers(e1.output)) != 1 or len(g.consumers(e3.output)) != 1):
                continue
            fire = Node("Fire", _fire_name(sq, cat), list(sq.inputs), cat.output, {},
                        {"squeeze": sq, "expand1x1": e1, "expand3x3": e3})
            idx = g.nodes.index(cat)
            g.nodes[idx] = fire
            for n in (sq, e1, e3):
                g.nodes.remove(n)
        return g


class StripSoftmaxHead:
    """Remove a trailing Flatten/Softmax after the global pool: argmax does not change and the
    host applies softmax to the dequantised scores for display."""

    def apply(self, graph: Graph) -> Graph:
        g = graph.copy()
        while g.nodes and g.nodes[-1].op in ("Softmax", "Flatten") and \
                g.nodes[-1].output == g.output:
            n = g.nodes.pop()
            g.output = n.inputs[0]
        return g


class CheckChain:
    """Refuse any graph that is not a chain of Fire-family layers (the message says why)."""

    LAYER_OPS = ("Conv", "Fire", "MaxPool")

    def apply(self, graph: Graph) -> Graph:
        g = graph
        if not g.nodes:
            raise IRError("the graph has no nodes")
        prev = g.input_name
        for i, n in enumerate(g.nodes):
            if n.inputs != [prev]:
                raise IRError(
                    f"node {n.name!r} ({n.op}) reads {n.inputs}, expected the previous layer's "
                    f"output {prev!r}: the graph is not a chain of Fire-family layers (conv, "
                    f"fire, maxpool, ..., conv, global average pool)")
            last = i == len(g.nodes) - 1
            if n.op == "Relu":
                raise IRError(f"node {n.name!r} (Relu) does not follow a convolution; ReLU is "
                              f"supported only directly after a Conv")
            if n.op == "Conv" and not n.attrs.get("relu"):
                raise IRError(f"node {n.name!r} (Conv) is not followed by a Relu; every "
                              f"convolution must be followed by ReLU")
            if n.op == "Concat":
                raise IRError(f"node {n.name!r} (Concat) is not the concat of a Fire module "
                              f"(squeeze 1x1 -> expand 1x1 + expand 3x3 pad 1, ReLU after each, "
                              f"1x1 branch first)")
            if n.op == "GlobalAveragePool" and not last:
                raise IRError(f"node {n.name!r} (GlobalAveragePool) must be the last layer")
            if last and n.op != "GlobalAveragePool":
                raise IRError(f"the network must end with Conv -> Relu -> GlobalAveragePool "
                              f"[-> Flatten -> Softmax]; it ends with {n.name!r} ({n.op})")
            if n.op not in self.LAYER_OPS + ("GlobalAveragePool",):
                raise IRError(f"node {n.name!r} ({n.op}) is not supported at this place in a "
                              f"Fire-family chain")
            prev = n.output
        if len(g.nodes) < 2 or g.nodes[-2].op != "Conv":
            raise IRError("the global average pool must follow the classifier convolution")
        if g.nodes[0].op != "Conv":
            raise IRError(f"the first layer must be a convolution, not {g.nodes[0].op}")
        return g


PASSES = [RemoveIdentities(), FuseRelu(), LowerFire(), StripSoftmaxHead(), CheckChain()]


def lower(graph: Graph, passes=None, verify: Callable[[str, Graph, Graph], None] | None = None
          ) -> Graph:
    """Run ``passes`` (default :data:`PASSES`) in order; ``verify(pass_name, before, after)``
    is called after each one (tests execute both graphs and compare)."""
    for p in passes or PASSES:
        after = p.apply(graph)
        if verify is not None:
            verify(type(p).__name__, graph, after)
        graph = after
    return graph
