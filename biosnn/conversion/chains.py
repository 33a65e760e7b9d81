"""Checks that a torch model is a chain of layers, for the codings that run layers one after another."""

from __future__ import annotations

import operator

from biosnn.errors import ConversionError

__all__ = ["refuse_residual_additions"]


def _adds_two_tensors(node) -> bool:
    """Is this torch.fx node ``a + b`` (``operator.add``/``iadd``, ``torch.add``, ``Tensor.add``/``add_``) of two
    computed values (not a tensor plus a constant)?"""
    import torch
    if node.op == "call_function" and node.target in (operator.add, operator.iadd, torch.add):
        operands = node.args[:2]
    elif node.op == "call_method" and node.target in ("add", "add_"):
        operands = node.args[:2]
    else:
        return False
    return len(operands) == 2 and all(hasattr(a, "op") for a in operands)


def refuse_residual_additions(gm, coding: str, what: str) -> None:
    """Raise :class:`ConversionError` if the traced model ``gm`` adds two branches (a residual connection).

    ``prepare`` calls it so that a model ``convert`` would refuse is refused before the user fine-tunes it,
    with the message ``convert`` gives.

    Parameters
    ----------
    gm : torch.fx.GraphModule
        The traced model.
    coding : str
        The coding's name for the message, e.g. ``"TPC"``.
    what : str
        What the coding converts, e.g. ``"pipelines a feed-forward chain of layers (one window per layer)"``.
    """
    for node in gm.graph.nodes:
        if _adds_two_tensors(node):
            raise ConversionError(
                f"the operation '{node.name}' in forward() adds two branches (a residual connection); {coding} "
                f"{what} and does not support residual connections. Fix: convert a network without skip "
                "connections (e.g. a VGG-style chain), or use rate or TSC coding, which convert residual networks.")
