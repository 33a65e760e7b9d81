"""Evaluate a connection condition or probability of ``i`` and ``j`` over numpy arrays, without ``eval``.

The text is first checked by the whitelist grammar (:mod:`biosnn.spec.grammar`);
the checked tree is then interpreted here node by node with numpy, with
Brian2's meaning of the operators (``/`` is true division, ``//`` and ``%``
floor towards minus infinity as in Python) and of the functions listed in
:data:`FUNCTIONS`.  ``rand()`` draws from the generator passed in, one number
per pair, so an expansion is reproducible from its seed.
"""

from __future__ import annotations

import ast
import operator

import numpy as np

from biosnn.errors import SpecError
from biosnn.spec.grammar import check_expression

__all__ = ["FUNCTIONS", "evaluate_index_expression"]

FUNCTIONS = {
    "exp": np.exp, "log": np.log, "log10": np.log10, "expm1": np.expm1, "log1p": np.log1p, "sqrt": np.sqrt,
    "sin": np.sin, "cos": np.cos, "tan": np.tan, "arcsin": np.arcsin, "arccos": np.arccos, "arctan": np.arctan,
    "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "abs": np.abs, "sign": np.sign, "floor": np.floor,
    "ceil": np.ceil, "clip": np.clip, "int": lambda x: np.trunc(x).astype(np.int64),
}
"""Functions a condition may call besides ``rand()`` (Brian2's functions of the same names)."""

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: np.true_divide,
        ast.FloorDiv: np.floor_divide, ast.Mod: np.mod, ast.Pow: np.power}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}


def evaluate_index_expression(text: str, names: dict, shape: tuple, rng: np.random.Generator,
                              field: str | None = None):
    """The value of ``text`` for every pair (broadcast to ``shape``).

    Parameters
    ----------
    text : str
        A condition (``"i != j"``) or probability (``"0.1*exp(-abs(i - j)/10)"``).
    names : dict
        Values of the names: ``i`` and ``j`` (integer arrays broadcasting to
        ``shape``), ``N_pre``, ``N_post`` and dimensionless constants (floats, SI).
    shape : tuple of int
        The shape of the pair block (for ``rand()``).
    rng : numpy.random.Generator
        The generator ``rand()`` and ``randn()`` draw from.
    field : str, optional
        The spec field (for errors).

    Returns
    -------
    numpy.ndarray or scalar

    Raises
    ------
    SpecError
        For a name or a function the expansion does not know.
    """
    tree = check_expression(text, field=field, what="connection expression",
                            functions=set(FUNCTIONS) | {"rand", "randn"})

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            if node.id in ("True", "False", "true", "false"):
                return node.id in ("True", "true")
            raise SpecError(f"'{node.id}' in '{text}' is not i, j, N_pre, N_post or a constant", field=field,
                            fix="write the condition with i, j and constants only")
        if isinstance(node, ast.BinOp):
            return _BIN[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand)
            return np.logical_not(value) if isinstance(node.op, ast.Not) else \
                -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BoolOp):
            values = [ev(v) for v in node.values]
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = values[0]
            for v in values[1:]:
                out = combine(out, v)
            return out
        if isinstance(node, ast.Compare):
            left, out = ev(node.left), True
            for op, right_node in zip(node.ops, node.comparators):
                right = ev(right_node)
                out = np.logical_and(out, _CMP[type(op)](left, right))
                left = right
            return out
        if isinstance(node, ast.Call):
            name = node.func.id
            args = [ev(a) for a in node.args]
            if name in ("rand", "randn"):
                if args:
                    raise SpecError(f"{name}() takes no arguments in '{text}'", field=field, fix=f"write {name}()")
                return rng.random(shape) if name == "rand" else rng.standard_normal(shape)
            return FUNCTIONS[name](*args)
        raise SpecError(f"'{text}' cannot be evaluated for connectivity", field=field,  # pragma: no cover
                        fix="use arithmetic, comparisons and Brian2 functions of i and j")

    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return ev(tree)
