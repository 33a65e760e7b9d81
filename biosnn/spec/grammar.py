"""The whitelist grammar of every piece of text in a spec (specs are data, never code).

Brian2 hands expressions to sympy (whose parser ``eval``\\ s text) and
evaluates equation units with ``eval``; a spec from a stranger must therefore
never reach Brian2 unless it is made only of harmless pieces.  Every
expression, statement, equation, unit and quantity of a spec is checked here
*before* Brian2, sympy or biosnn evaluate it:

- characters: ASCII letters, digits, white space and the operators
  ``+ - * / % ( ) , < > = ! :`` (``.`` only inside numbers); ``#`` starts a
  comment in equations and statements.  No quotes (string literals), no
  ``[ ]`` (subscripts), no ``.`` after a name (attribute access), no ``\\``;
- names: identifiers that do not start with ``_`` (no dunders);
- calls: only to Brian2's documented functions (``exp``, ``rand``, ...) and
  the functions the spec defines itself (timed arrays), positional arguments only;
- numbers: at most :data:`MAX_NUMBER_CHARS` characters; ``**`` exponents are
  bounded (:data:`MAX_EXPONENT`; no power towers); constant sub-expressions
  must stay finite; nesting depth at most :data:`MAX_DEPTH`; text length at
  most :data:`MAX_CODE_CHARS`.

Quantities (``"20*ms"``) are evaluated by :func:`evaluate_quantity`, a small
interpreter over floats and Brian2 units -- never ``eval``.
"""

from __future__ import annotations

import ast
import keyword
import math
import re
from typing import Any, Callable, Iterable, Mapping

from biosnn.errors import SpecError

__all__ = ["check_identifier", "check_expression", "check_statements", "check_equations", "check_unit",
           "evaluate_quantity", "parse_tree", "MAX_CODE_CHARS", "MAX_DEPTH", "MAX_EXPONENT",
           "MAX_NUMBER_CHARS"]

MAX_CODE_CHARS = 20_000
"""Longest expression, statement block or equation block (characters)."""
MAX_DEPTH = 60
"""Deepest nesting of an expression tree (parentheses, operators, calls)."""
MAX_EXPONENT = 1024
"""Largest ``|exponent|`` of ``**`` with a constant exponent (units: :data:`MAX_UNIT_EXPONENT`)."""
MAX_UNIT_EXPONENT = 16
MAX_NUMBER_CHARS = 40
"""Longest number literal."""
MAX_NAME_CHARS = 100

_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOKEN = re.compile(r"""
    (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\*\*|//|<=|>=|==|!=|\+=|-=|\*=|/=|[-+*/%(),<>=:;])
  | (?P<space>[ \t\r\n]+)
""", re.VERBOSE)
# integer-valued Brian2 variables: an exponent made of them could make Python build huge integers
_INTEGER_NAMES = frozenset({"i", "j", "N", "N_incoming", "N_outgoing", "N_pre", "N_post", "t_in_timesteps"})
_EXPR_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name,
               ast.Constant, ast.Load, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow,
               ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq,
               ast.NotEq)
_FIX = ("use only names, numbers, the operators + - * / % ** < > <= >= == != and/or/not, parentheses and "
        "calls of Brian2 functions such as exp(x) or rand()")


def _err(message: str, field: str | None, fix: str = _FIX) -> SpecError:
    return SpecError(message, field=field, fix=fix)


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def check_identifier(name: Any, *, field: str | None = None, what: str = "name") -> str:
    """``name`` if it is an identifier (letters, digits, ``_``; starting with a letter; no keyword).

    Raises
    ------
    SpecError
        Naming ``field``.
    """
    if (not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not _IDENT.match(name)
            or keyword.iskeyword(name)):
        shown = _short(repr(name)) if isinstance(name, str) else f"{name!r}"[:60]
        raise SpecError(f"{what} {shown} is not a valid identifier", field=field,
                        fix="use letters, digits and underscores, starting with a letter "
                            f"(at most {MAX_NAME_CHARS} characters)")
    return name


def _tokens(text: str, field: str | None, what: str) -> list[tuple[str, str]]:
    """Split ``text`` (comments already removed) into whitelisted tokens."""
    if len(text) > MAX_CODE_CHARS:
        raise _err(f"{what} is {len(text)} characters long (at most {MAX_CODE_CHARS})", field,
                   "split it or shorten it")
    out, pos, depth = [], 0, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            ch = text[pos]
            kind = ("string literals" if ch in "'\"" else "attribute access" if ch == "." else
                    "subscripts" if ch in "[]" else f"the character {ch!r}")
            raise _err(f"{what} '{_short(text)}' contains {kind}, which a spec may not use", field)
        kind = m.lastgroup
        tok = m.group(kind)
        if kind == "number":
            if len(tok) > MAX_NUMBER_CHARS:
                raise _err(f"number '{tok[:20]}...' in {what} has more than {MAX_NUMBER_CHARS} characters",
                           field, "write it in exponent notation, e.g. 1e50")
            nxt = text[m.end():m.end() + 1]
            if nxt and (nxt.isalnum() or nxt in "_."):
                raise _err(f"{what} '{_short(text)}' has a number directly followed by '{nxt}'", field,
                           "separate numbers from names with an operator, e.g. 2*ms")
        elif kind == "name":
            if tok.startswith("_"):
                raise _err(f"name '{tok}' in {what} starts with '_' (reserved)", field,
                           "start names with a letter")
            if len(tok) > MAX_NAME_CHARS:
                raise _err(f"a name in {what} has more than {MAX_NAME_CHARS} characters", field,
                           "use shorter names")
        elif kind == "op":
            depth += tok == "("
            depth -= tok == ")"
            if depth > MAX_DEPTH:
                raise _err(f"{what} nests parentheses more than {MAX_DEPTH} deep", field,
                           "simplify the expression")
        if kind != "space":
            out.append((kind, tok))
        pos = m.end()
    return out


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.split("\n"))


def parse_tree(text: str, mode: str, field: str | None, what: str):
    """``ast.parse`` of whitelisted text, with parse failures and depth turned into :class:`SpecError`."""
    _tokens(text, field, what)
    try:
        tree = ast.parse(text.strip() if mode == "eval" else text, mode=mode)
    except (RecursionError, MemoryError):
        raise _err(f"{what} '{_short(text)}' is nested more than {MAX_DEPTH} levels deep", field,
                   "split it into subexpressions") from None
    except (SyntaxError, ValueError) as exc:
        msg = getattr(exc, "msg", None) or type(exc).__name__
        raise _err(f"{what} '{_short(text)}' is not valid: {msg}", field,
                   "write it in Brian2 syntax, e.g. '(E_L - v)/tau'") from None
    stack = [(tree, 0)]
    while stack:
        node, d = stack.pop()
        if d > MAX_DEPTH:
            raise _err(f"{what} '{_short(text)}' is nested more than {MAX_DEPTH} levels deep", field,
                       "split it into subexpressions")
        stack.extend((child, d + 1) for child in ast.iter_child_nodes(node))
    return tree


def _names(node) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _const_value(node) -> float:
    """The float value of a name-free constant expression (OverflowError/ZeroDivisionError pass through)."""
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.UnaryOp):
        v = _const_value(node.operand)
        return -v if isinstance(node.op, ast.USub) else float(not v) if isinstance(node.op, ast.Not) else v
    if isinstance(node, ast.BinOp):
        a, b = _const_value(node.left), _const_value(node.right)
        op = type(node.op)
        if op is ast.Pow:
            if abs(b) > MAX_EXPONENT:
                raise OverflowError
            r = a ** b
            if isinstance(r, complex):
                raise ValueError("complex result")
            return r
        return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(op) if op in (ast.Add, ast.Sub, ast.Mult) \
            else (a / b if op is ast.Div else a // b if op is ast.FloorDiv else a % b)
    if isinstance(node, ast.Compare):
        return 0.0  # a boolean: bounded
    if isinstance(node, ast.BoolOp):
        return 0.0
    raise ValueError("not a constant")


def _check_tree(tree, text: str, field: str | None, what: str, functions: Iterable[str] | None) -> None:
    functions = None if functions is None else set(functions)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Module)):
            continue  # statements: targets and values are checked by check_statements
        if not isinstance(node, _EXPR_NODES):
            raise _err(f"{what} '{_short(text)}' uses {type(node).__name__.lower()} syntax, which a spec "
                       "may not use", field)
        if isinstance(node, ast.Constant) and (isinstance(node.value, complex)
                                               or not isinstance(node.value, (bool, int, float))):
            raise _err(f"{what} '{_short(text)}' contains a non-numeric literal", field)
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name is None or (functions is not None and name not in functions):
                shown = name or type(node.func).__name__
                raise _err(f"{what} '{_short(text)}' calls '{shown}', which is not a Brian2 function or a "
                           "timed array of the spec", field,
                           f"call one of {sorted(functions or ())[:30]}")
            if node.keywords:
                raise _err(f"{what} '{_short(text)}' passes keyword arguments to '{name}'", field,
                           "pass arguments by position")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            _check_power(node, text, field, what)
    for node in ast.walk(tree):  # constant sub-expressions stay finite (sympy computes them exactly)
        if isinstance(node, (ast.BinOp, ast.UnaryOp)) and not _names(node):
            try:
                value = _const_value(node)
                bad = not math.isfinite(value)
            except (OverflowError, ValueError):
                bad = True
            except ZeroDivisionError:
                raise _err(f"{what} '{_short(text)}' divides by zero", field, "correct the expression") from None
            if bad:
                raise _err(f"{what} '{_short(text)}' has a constant too large to compute", field,
                           "write large numbers in exponent notation (e.g. 1e300) or reduce them")


def _check_power(node: ast.BinOp, text: str, field: str | None, what: str) -> None:
    exponent = node.right
    if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in ast.walk(exponent)):
        raise _err(f"{what} '{_short(text)}' has a power in an exponent", field,
                   "compute the exponent separately or write the number in exponent notation")
    names = _names(exponent)
    if not names:
        try:
            e = _const_value(exponent)
        except (OverflowError, ValueError, ZeroDivisionError):
            e = math.inf
        if not abs(e) <= MAX_EXPONENT:
            raise _err(f"{what} '{_short(text)}' has an exponent larger than {MAX_EXPONENT}", field,
                       "use a smaller exponent or exponent notation (1e300)")
    elif names & _INTEGER_NAMES:
        raise _err(f"{what} '{_short(text)}' has an exponent made of integer indices "
                   f"({sorted(names & _INTEGER_NAMES)})", field, "write the exponent as a number or a parameter")


def check_expression(text: str, *, field: str | None = None, what: str = "expression",
                     functions: Iterable[str] = ()) -> ast.Expression:
    """Check a Brian2 expression (threshold, rate, initial value, right-hand side).

    Parameters
    ----------
    text : str
        The expression.
    field : str, optional
        The spec field (for errors).
    what : str
        What the text is (for errors).
    functions : iterable of str
        Names that may be called (Brian2's functions and the spec's timed arrays).

    Returns
    -------
    ast.Expression
        The checked tree.

    Raises
    ------
    SpecError
        If the text is anything but names, numbers, operators and allowed calls.
    """
    if not isinstance(text, str):
        raise _err(f"{what} must be text, got {type(text).__name__}", field)
    tree = parse_tree(text, "eval", field, what)
    _check_tree(tree, text, field, what, functions)
    return tree


def check_statements(text: str, *, field: str | None = None, what: str = "statements",
                     functions: Iterable[str] = ()) -> list[str]:
    """Check Brian2 statements (reset, on_pre, on_post, operations): ``name = expr`` or ``name op= expr``.

    Returns
    -------
    list of str
        The assigned names.
    """
    if not isinstance(text, str):
        raise _err(f"{what} must be text, got {type(text).__name__}", field)
    body = _strip_comments(text)
    tree = parse_tree(body, "exec", field, what)
    targets = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            target = stmt.targets[0]
        elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name) and isinstance(
                stmt.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            target = stmt.target
        else:
            raise _err(f"{what} '{_short(text)}' has a line that is not an assignment", field,
                       "write one assignment per line: 'x = expr', 'x += expr', 'x -= expr', 'x *= expr' "
                       "or 'x /= expr'")
        targets.append(target.id)
        _check_tree(ast.Expression(stmt.value), text, field, what, functions)
    return targets


def check_unit(text: str, *, field: str | None = None, what: str = "unit",
               units: Mapping[str, Any] | None = None) -> None:
    """Check a unit string (``volt``, ``siemens/meter**2``, ``1``, ``boolean``, ``integer``).

    Only unit names, numbers, ``* /``, parentheses and ``**`` with a literal
    exponent of at most :data:`MAX_UNIT_EXPONENT` are allowed.
    """
    if not isinstance(text, str):
        raise _err(f"{what} must be text, got {type(text).__name__}", field)
    tree = parse_tree(text, "eval", field, what)
    known = set(units) if units is not None else None
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.Expression, ast.BinOp, ast.Name, ast.Constant, ast.Load, ast.Mult,
                               ast.Div, ast.Pow, ast.UnaryOp, ast.USub, ast.UAdd))
        if ok and isinstance(node, ast.Constant):
            ok = isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
        if not ok:
            raise _err(f"{what} '{_short(text)}' is not a unit", field,
                       "write a Brian2 unit such as volt, siemens/meter**2, 1, boolean or integer")
        if isinstance(node, ast.Name) and known is not None and node.id not in known | {"boolean", "integer"}:
            raise _err(f"unknown unit '{node.id}' in {what} '{_short(text)}'", field,
                       "use a Brian2 unit name such as volt, amp, siemens, second, hertz, 1")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            exp = node.right.operand if isinstance(node.right, ast.UnaryOp) else node.right
            if not isinstance(exp, ast.Constant) or not abs(float(exp.value)) <= MAX_UNIT_EXPONENT:
                raise _err(f"{what} '{_short(text)}' needs a number of at most {MAX_UNIT_EXPONENT} as exponent",
                           field, "write e.g. meter**2 or second**-0.5")


def check_equations(text: str, *, field: str | None = None, functions: Iterable[str] | None = None,
                    units: Mapping[str, Any] | None = None) -> None:
    """Check a Brian2 equations block: every unit, expression and flag, before Brian2 evaluates any.

    The block is split with Brian2's own pyparsing grammar (which evaluates
    nothing); a block that does not parse is left to Brian2's parser for its
    error message, since Brian2 then stops before evaluating anything.
    """
    if not isinstance(text, str):
        raise _err(f"equations must be text, got {type(text).__name__}", field)
    if len(text) > MAX_CODE_CHARS:
        raise _err(f"equations are {len(text)} characters long (at most {MAX_CODE_CHARS})", field,
                   "split the model or shorten it")
    lines = text.split("\n")

    def located(exc: SpecError, k: int) -> SpecError:
        return SpecError(f"equations do not parse (line {k}: '{_short(lines[k - 1])}'): {exc.message}",
                         field=field, fix=exc.fix)

    for k, line in enumerate(lines, 1):
        try:
            _tokens(line.split("#", 1)[0], field, "the line")
        except SpecError as exc:
            raise located(exc, k) from None
    from brian2.equations.equations import EQUATIONS
    from pyparsing import ParseBaseException
    try:
        parsed = EQUATIONS.parse_string(text, parse_all=True)
    except ParseBaseException:
        return
    for eq in parsed:
        content = dict(eq.items())
        name = content.get("identifier", "?")
        pattern = re.compile(rf"^\s*(d\s*{re.escape(name)}\s*/\s*dt|{re.escape(name)})\s*[=:]")
        k = next((n for n, line in enumerate(lines, 1) if pattern.match(line)), 1)
        try:
            check_identifier(name, field=field, what="variable")
            check_unit(str(content.get("unit", "")).strip(), field=field, what=f"unit of '{name}'", units=units)
            expr = content.get("expression")
            if expr is not None:
                check_expression(str(expr), field=field, what=f"equation for '{name}'", functions=functions)
        except SpecError as exc:
            raise located(exc, k) from None


# ---------------------------------------------------------------------------
# quantities


def evaluate_quantity(tree: ast.Expression, names: Mapping[str, Any], text: str, field: str | None,
                      what: str, unknown: Callable[[str], SpecError]):
    """Evaluate a checked quantity tree over numbers and ``names`` (units, constants) without ``eval``.

    Only ``+ - * / **`` and unary signs; exponents must be dimensionless
    numbers of magnitude at most :data:`MAX_EXPONENT`.  Numbers are floats, so
    nothing can grow without bound (overflow is an error).
    """
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise unknown(node.id)
            return names[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow):
                try:
                    if getattr(b, "is_dimensionless", True) is False:
                        raise TypeError
                    e = float(b)
                except TypeError:
                    raise _err(f"the exponent in {what} '{_short(text)}' must be a number", field,
                               "write e.g. meter**2") from None
                if not abs(e) <= MAX_EXPONENT:
                    raise _err(f"{what} '{_short(text)}' has an exponent larger than {MAX_EXPONENT}", field,
                               "use exponent notation, e.g. 1e300")
                return a ** e
            return {ast.Add: lambda: a + b, ast.Sub: lambda: a - b, ast.Mult: lambda: a * b,
                    ast.Div: lambda: a / b}[type(node.op)]()
        raise _err(f"'{_short(text)}' is not a plain {what}", field,
                   "use only numbers, Brian2 units and * / + - **, e.g. '0.5*nS'")

    try:
        return ev(tree)
    except OverflowError:
        raise _err(f"{what} '{_short(text)}' is too large", field, "use a smaller value") from None
