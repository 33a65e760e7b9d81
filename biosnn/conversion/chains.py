"""Checks that a torch model is a chain of layers, for the codings that run layers one after another."""

from __future__ import annotations

import operator

from biosnn.errors import ConversionError

__all__ = ["refuse_residual_additions", "branch_error"]


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


def _concatenates(node) -> bool:
    """Is this torch.fx node a ``torch.cat`` / ``torch.concat`` of several computed values?"""
    import torch
    if node.op != "call_function" or node.target not in (torch.cat, torch.concat):
        return False
    tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
    return isinstance(tensors, (tuple, list)) and sum(hasattr(a, "op") for a in tensors) > 1


def branch_error(where: str, kind: str, coding: str, why: str) -> ConversionError:
    """The refusal of a residual addition (``kind="add"``) or a concatenation (``kind="cat"``) by a coding
    that converts chains only: the one message of ``prepare`` and ``convert``.

    Parameters
    ----------
    where : str
        The operation or layer, e.g. ``"the operation 'add' in forward()"`` or ``"layer 'add' (...)"``.
    kind : {"add", "cat"}
    coding : str
        The coding's name, e.g. ``"TDSNN"``.
    why : str
        Why the coding cannot convert it (a sentence fragment after ``coding``).
    """
    what = ("adds two branches (a residual connection)" if kind == "add"
            else "concatenates branches (torch.cat)")
    return ConversionError(
        f"{where} {what}; {coding} {why}. Fix: convert a network without skip connections or concatenations "
        "(e.g. a VGG-style chain), or use the rate, TSC or TPC coding, which convert residual and "
        "concatenating networks.")


def refuse_residual_additions(gm, coding: str, what: str) -> None:
    """Raise :class:`ConversionError` if the traced model ``gm`` adds two branches (a residual connection)
    or concatenates several (``torch.cat``).

    ``prepare`` calls it so that a model ``convert`` would refuse is refused before the user fine-tunes it,
    with the message ``convert`` gives (:func:`branch_error`).

    Parameters
    ----------
    gm : torch.fx.GraphModule
        The traced model.
    coding : str
        The coding's name for the message, e.g. ``"TDSNN"``.
    what : str
        Why the coding cannot convert branches (see :func:`branch_error`).
    """
    for node in gm.graph.nodes:
        if _adds_two_tensors(node) or _concatenates(node):
            raise branch_error(f"the operation '{node.name}' in forward()", "add" if _adds_two_tensors(node)
                               else "cat", coding, what)
