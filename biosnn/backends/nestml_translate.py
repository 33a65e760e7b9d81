"""Translate a Brian2-equation :class:`~biosnn.spec.NeuronModel` into a NESTML neuron model.

The translation keeps Brian2's semantics step by step (biosnn's reference
semantics), so a translated model reproduces the Brian2 runtime's spike trains:

* differential equations become ODEs (``v' = ...``) that NESTML solves exactly
  for ``method`` ``exact``/``linear`` (or unset where Brian2's ``exact`` applies);
  with ``euler``, explicit forward-Euler statements; with any other method
  (``exponential_euler``, ``rk4``, ``heun``, noise ``xi`` with ``euler`` or
  ``milstein``, Brian2's default for nonlinear models) Brian2's own state-update
  statements, copied one by one (``randn()`` -> ``random_normal``; NEST's random
  numbers are other draws), so NEST takes the same steps; subexpressions are
  substituted where they are used, Brian2 parameters (``I : amp``) NESTML parameters
  (state variables when the reset assigns them or synapses add to them), spec
  constants parameters;
* every value is declared in a NEST-style unit (mV, pA, ms, pF, nS, MOhm, kHz
  or SI) and converted at the interface (:class:`NestmlModel.scale`); rates are
  in kHz, not NEST's usual Hz, because NESTML multiplies magnitudes inside
  functions without converting units (``sin(2*pi*freq*t)`` with ``freq`` in Hz
  and ``t`` in ms would be off by 1000), and kHz times ms is exactly 1;
* synaptic input to a variable ``x`` (``x_post += ...`` in a synapse model)
  arrives on a spike port ``x__in`` whose weights are added to ``x`` *before*
  the ODEs are integrated, as Brian2 applies ``on_pre`` at the end of the
  previous step; the NEST connection delay is the Brian2 delay plus one step;
* a refractoriness *condition* (``refractory: v > -40*mV``) becomes a flag set at
  the spike and cleared before a step's integration when the condition is
  false, as Brian2's ``not_refractory = not_refractory or not (condition)``;
* ``refractory`` with ``(unless refractory)`` becomes a step counter: during
  the first ``round(refractory/dt) - 1`` steps after a spike the flagged
  variables are neither integrated nor changed by synaptic input and the
  threshold is off, as in Brian2;
* Brian2's ``t`` (the start of the step) becomes ``(t - dt__)`` with
  ``dt__ = resolution()`` because NESTML's ``t`` is the end of the step;
* a variable set by a :class:`~biosnn.spec.CurrentInput` stays a parameter;
  the backend sets it between ``nest.Run`` segments (NESTML 9's analytic
  solver adds a continuous input port without the factor ``dt``, so ports are
  not used for currents).

What cannot be translated (``i``/``N``, functions NESTML lacks) raises
:class:`~biosnn.errors.BackendError` naming the model and the line.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import numpy as np

from biosnn.errors import BackendError

__all__ = ["NestmlModel", "translate_neuron", "nest_unit", "NestmlTranslationError"]

# dimension name (Brian2's get_unit repr) -> (NESTML unit, SI value of one such unit)
_CONVENTIONAL = {"volt": ("mV", 1e-3), "amp": ("pA", 1e-12), "second": ("ms", 1e-3),
                 "farad": ("pF", 1e-12), "siemens": ("nS", 1e-9), "ohm": ("MOhm", 1e6),
                 "hertz": ("kHz", 1e3), "coulomb": ("pC", 1e-12)}
_SI_BASE = ("m", "kg", "s", "A", "K", "mol", "cd")
_FUNCTIONS = {"exp": "exp", "log": "ln", "log10": "log10", "abs": "abs",
              "sin": "sin", "cos": "cos", "tan": "tan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh",
              "clip": "clip", "floor": "floor", "ceil": "ceil", "expm1": "expm1",
              "min": "min", "max": "max"}
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.Mod: "%"}
_CMP = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*([-+*/]?=)\s*(.+?)\s*$")
_NEST_ALTERNATIVES = ("NEST's built-in models (iaf_psc_delta, iaf_psc_exp, iaf_cond_exp, aeif_*, ...: "
                      "nest.node_models) or a model whose equations NESTML accepts")


class NestmlTranslationError(BackendError):
    """A neuron model cannot be translated to NESTML."""


def _fail(model_name: str, line: str, why: str):
    raise NestmlTranslationError(
        f"neuron model '{model_name}' cannot be translated to NESTML: {why} (in '{line.strip()}'). "
        f"NEST can run {_NEST_ALTERNATIVES}; or run this model with a Brian2 backend")


def nest_unit(dim) -> tuple[str, float]:
    """The NESTML unit for a Brian2 dimension and the SI value of one such unit.

    Returns ``("real", 1.0)`` for dimensionless quantities.
    """
    from brian2 import get_unit
    from brian2.units.fundamentalunits import DIMENSIONLESS
    if dim is DIMENSIONLESS or getattr(dim, "is_dimensionless", False):
        return "real", 1.0
    name = repr(get_unit(dim))
    if name in _CONVENTIONAL:
        return _CONVENTIONAL[name]
    parts = [f"{base}**{int(e) if float(e).is_integer() else e}" if e != 1 else base
             for base, e in zip(_SI_BASE, dim._dims) if e != 0]
    return "(" + " * ".join(parts) + ")", 1.0


@dataclass
class NestmlModel:
    """A NESTML neuron model translated from a spec model.

    Attributes
    ----------
    name : str
        NESTML/NEST model name.
    text : str
        The NESTML source.
    units : dict
        Variable or parameter name -> SI value of one unit of its NESTML
        declaration (divide SI values by it before handing them to NEST).
    dims : dict
        Name -> Brian2 dimension.
    ports : dict
        Target variable -> spike input port name (``x__in``).
    states, parameters : list of str
        Names declared in the ``state`` / ``parameters`` blocks.
    """

    name: str
    text: str
    units: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    ports: dict = field(default_factory=dict)
    states: list = field(default_factory=list)
    parameters: list = field(default_factory=list)

    def scale(self, name: str) -> float:
        """SI value of one NEST unit of ``name``."""
        return self.units[name]


class _Expr:
    """Renders Brian2 expressions (Python syntax) as NESTML expressions."""

    def __init__(self, model_name: str, known: set, replace: dict, float_literals: bool = False, fail=None):
        from biosnn.spec.values import unit_namespace
        self.model_name = model_name
        self.known = known          # model variables, parameters, constants
        self.replace = replace      # name -> NESTML text (t, dt, subexpressions)
        self.units = unit_namespace()
        self.float_literals = float_literals  # 0 -> 0.0 (C++'s std::max(int, double) does not compile)
        self.fail = fail or _fail

    def __call__(self, text: str) -> str:
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError:
            self.fail(self.model_name, text, "the expression does not parse")
        self.line = text
        return self.render(tree.body)

    def _int(self, node) -> str:
        """Brian2's ``int(condition)`` as NESTML's ternary ``(condition ? 1 : 0)``."""
        arg = node.args[0] if len(node.args) == 1 else None
        boolean = isinstance(arg, (ast.Compare, ast.BoolOp)) or \
            (isinstance(arg, ast.UnaryOp) and isinstance(arg.op, ast.Not))
        if not boolean:
            self.fail(self.model_name, self.line, "int() is translated only for conditions "
                                                  "(int(a < b) -> 1 or 0), not for numbers")
        one, zero = ("1.0", "0.0") if self.float_literals else ("1", "0")
        return f"({self.render(arg)} ? {one} : {zero})"

    def render(self, node) -> str:
        r = self.render
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return f"({r(node.left)} {_OPS[type(node.op)]} {r(node.right)})"
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return f"(-{r(node.operand)})"
            if isinstance(node.op, ast.UAdd):
                return r(node.operand)
            if isinstance(node.op, ast.Not):
                return f"(not {r(node.operand)})"
        if isinstance(node, ast.BoolOp):
            op = " and " if isinstance(node.op, ast.And) else " or "
            return "(" + op.join(r(v) for v in node.values) + ")"
        if isinstance(node, ast.Compare):
            if len(node.ops) != 1 or type(node.ops[0]) not in _CMP:
                self.fail(self.model_name, self.line, "chained comparisons are not supported; use 'and'")
            return f"({r(node.left)} {_CMP[type(node.ops[0])]} {r(node.comparators[0])})"
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return "true" if node.value else "false"
            if isinstance(node.value, (int, float)):
                float_value = isinstance(node.value, float) or self.float_literals
                return repr(float(node.value)) if float_value else str(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            fname = node.func.id
            if fname == "rand" and not node.args:
                return "random_uniform(0.0, 1.0)" if self.float_literals else "random_uniform(0, 1)"
            if fname == "randn" and not node.args:
                return "random_normal(0.0, 1.0)" if self.float_literals else "random_normal(0, 1)"
            if fname == "int":
                return self._int(node)
            if fname == "sqrt" and len(node.args) == 1:  # NESTML has no sqrt()
                return f"({r(node.args[0])} ** 0.5)"
            if fname == "exprel" and len(node.args) == 1:  # Brian2's (exp(x) - 1)/x, 1 at x = 0
                x = r(node.args[0])
                return f"((abs({x}) < 1e-16) ? 1.0 : (expm1({x}) / {x}))"
            if fname in _FUNCTIONS:
                return f"{_FUNCTIONS[fname]}(" + ", ".join(r(a) for a in node.args) + ")"
            self.fail(self.model_name, self.line, f"the function '{fname}' has no NESTML counterpart here")
        self.fail(self.model_name, self.line, f"'{ast.unparse(node)}' is not supported by the translation")

    def name(self, ident: str) -> str:
        if ident in self.replace:
            return self.replace[ident]
        if ident in self.known:
            return ident
        if ident in ("true", "True"):
            return "true"
        if ident in ("false", "False"):
            return "false"
        if ident == "pi":
            return repr(float(np.pi))
        if ident == "e":
            return repr(float(np.e))
        if ident == "inf":
            return "inf"
        if ident in ("i", "N", "xi") or ident.startswith("xi_"):
            what = {"i": "the neuron index 'i'", "N": "the group size 'N'"}.get(ident, "noise terms (xi)")
            self.fail(self.model_name, self.line, f"NESTML models cannot use {what}")
        if ident in self.units:
            q = self.units[ident]
            from brian2.units.fundamentalunits import get_dimensions
            unit, scale = nest_unit(get_dimensions(q))
            value = float(np.asarray(q)) / scale
            return repr(value) if unit == "real" else f"({value!r} * 1 {unit})"
        self.fail(self.model_name, self.line, f"unknown name '{ident}'")


def _decl_value(unit: str) -> str:
    return "1.0" if unit == "real" else f"1 {unit}"


def _zero(unit: str) -> str:
    return "0.0" if unit == "real" else f"0 {unit}"


def _statements(code: str | None, model_name: str, what: str) -> list[tuple[str, str, str]]:
    out = []
    for line in (code or "").replace(";", "\n").splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        m = _ASSIGN.match(line)
        if not m:
            _fail(model_name, line, f"the {what} must be assignments 'x = expr' or 'x += expr'")
        out.append(m.groups())
    return out


def _euler_step(diff, unit_of, expr, frozen, free_when: str = "refr_count__ == 0") -> list[str]:
    """Brian2's ``euler`` as explicit NESTML statements: all derivatives at the old state, then assign.

    NESTML would integrate linear ODEs exactly (and others with its own solver),
    which differs from Brian2's forward Euler step by step; writing the step out
    keeps the two identical.  Variables in ``frozen`` only change when not
    refractory.
    """
    lines = []
    for eq in diff:
        unit = unit_of[eq.varname]
        lines.append(f"        {eq.varname}__next {unit} = {eq.varname} + dt__ * {expr(str(eq.expr.code))}")
    for eq in diff:
        if eq.varname in frozen:
            lines.append(f"        if {free_when}:")
            lines.append(f"            {eq.varname} = {eq.varname}__next")
        else:
            lines.append(f"        {eq.varname} = {eq.varname}__next")
    return lines


def _dimension_of(expr: str, dims: dict, constants: dict):
    """Brian2 dimension of ``expr`` given the dimensions of names (``dims``) and constants.

    Raises
    ------
    Exception
        Brian2's unit errors.
    """
    from brian2 import Quantity, second
    from brian2.core.functions import DEFAULT_CONSTANTS, DEFAULT_FUNCTIONS
    from brian2.parsing.expressions import parse_expression_dimensions
    from biosnn.spec.values import unit_namespace
    variables = dict(unit_namespace())
    variables.update(DEFAULT_FUNCTIONS)
    variables.update(DEFAULT_CONSTANTS)  # pi, e, inf
    variables.update(constants)
    variables.update({k: Quantity(1.0, dim=d) for k, d in dims.items()})
    variables.update({"t": Quantity(1.0, dim=second.dim), "dt": Quantity(1.0, dim=second.dim)})
    return parse_expression_dimensions(expr, variables)


def _declared_unit(dim) -> str:
    """NESTML unit of a temporary: :func:`nest_unit`, with ``ms**0.5`` for Brian2's noise increments."""
    from brian2 import second
    if dim == second.dim ** 0.5:
        return "ms**0.5"
    return nest_unit(dim)[0]


def integration_code(model, eqs, model_name: str) -> str | None:
    """Brian2's own state-update statements for a model NESTML would integrate differently, else ``None``.

    ``None`` (NESTML integrates the ODEs itself) for models without noise whose
    ``method`` is ``exact``/``linear``, or unset and Brian2's ``exact`` applies
    (NESTML's analytic solver gives the same propagators); ``euler`` without
    noise is written out by :func:`_euler_step`.  Every other method
    (``exponential_euler``, ``rk2``, ``rk4``, ``heun``, ``milstein``, ``euler``
    with ``xi``, or Brian2's default choice for nonlinear or stochastic models)
    returns Brian2's abstract code, which the translation copies statement by
    statement, so NEST integrates exactly as Brian2 does.
    """
    from brian2.stateupdaters.base import StateUpdateMethod
    method = (model.method or "").strip()
    diff = [eq for eq in eqs.values() if eq.type == "differential equation"]
    stochastic = any(eq.stochastic_variables for eq in diff)
    if not diff or (method == "euler" and not stochastic) or (method in ("exact", "linear") and not stochastic):
        return None
    if not method and not stochastic:
        try:
            StateUpdateMethod.apply_stateupdater(eqs, {}, "exact")
            return None
        except Exception:  # nonlinear: Brian2 falls back to its other default methods
            pass
    try:
        return StateUpdateMethod.apply_stateupdater(eqs, {}, method or ("euler", "heun"))
    except Exception as exc:  # the method does not apply to these equations
        _fail(model_name, model.equations.strip().splitlines()[0], f"Brian2's integration method "
              f"'{method or 'default'}' does not apply to the equations ({exc})")


def _brian2_step(code: str, model_name: str, out, constants: dict, known: set, replace: dict,
                 frozen, free_when: str = "refr_count__ == 0") -> list[str]:
    """Brian2's state-update statements (:func:`integration_code`) as NESTML ``update`` statements.

    Temporaries become local declarations in their NESTML units (``xi``, Brian2's
    ``dt**0.5 * randn()``, in ``ms**0.5``); assignments to variables in ``frozen``
    only happen when not refractory.
    """
    temps = dict(replace)
    dims = dict(out.dims)
    expr = _Expr(model_name, set(known), temps, float_literals=True)
    lines = []
    for statement in code.strip().splitlines():
        var, rhs = (part.strip() for part in statement.split("=", 1))
        if var in out.states:
            if var in frozen:
                lines += [f"        if {free_when}:", f"            {var} = {expr(rhs)}"]
            else:
                lines.append(f"        {var} = {expr(rhs)}")
            continue
        try:
            dim = _dimension_of(rhs, dims, constants)
        except Exception as exc:  # Brian2's unit errors
            _fail(model_name, statement, f"its units could not be determined ({exc})")
        local = var.strip("_") + "__b2"
        lines.append(f"        {local} {_declared_unit(dim)} = {expr(rhs)}")
        dims[var] = dim
        temps[var] = local
    return lines


def translate_neuron(model, model_name: str, nestml_name: str, constants: dict,
                     targets=()) -> NestmlModel:
    """Translate a :class:`~biosnn.spec.NeuronModel` to NESTML.

    Parameters
    ----------
    model : NeuronModel
        The model (Brian2 equations, threshold, reset, refractory).
    model_name : str
        Its name in the spec (for error messages).
    nestml_name : str
        Name of the NESTML model.
    constants : dict
        Evaluated constants the model uses (name -> Brian2 quantity or float):
        only their dimensions enter the text; values are set per population.
    targets : iterable of str
        Variables that receive synaptic input (one spike port each).

    Returns
    -------
    NestmlModel
    """
    from brian2.units.fundamentalunits import get_dimensions
    from biosnn.spec.check import parse_equations
    eqs = parse_equations(model.equations or "", f"neuron_models.{model_name}.equations")
    lines = {eq.varname: ln for eq in eqs.values() for ln in (model.equations or "").splitlines()
             if re.match(rf"^\s*(d{eq.varname}/dt|{eq.varname})\b", ln)}
    reset = _statements(model.reset, model_name, "reset")
    assigned = {var for var, _, _ in reset}
    diff = [eq for eq in eqs.values() if eq.type == "differential equation"]
    subexpr = [eq for eq in eqs.values() if eq.type == "subexpression"]
    params = [eq for eq in eqs.values() if eq.type == "parameter"]
    code = integration_code(model, eqs, model_name)
    identifiers = set()
    for text in [str(eq.expr.code) for eq in diff + subexpr] + [model.threshold or ""] + \
            [rhs for _, _, rhs in reset] + [model.refractory or ""]:
        identifiers |= {n.id for n in ast.walk(ast.parse(text.strip() or "0", mode="eval"))
                        if isinstance(n, ast.Name)}
    used_consts = sorted(k for k in constants if k in identifiers and k not in eqs.names)
    out = NestmlModel(name=nestml_name, text="")
    for eq in diff + subexpr + params:
        out.dims[eq.varname] = eq.dim
    for k in used_consts:
        out.dims[k] = get_dimensions(constants[k])
    for name, dim in out.dims.items():
        out.units[name] = nest_unit(dim)[1]
    unit_of = {name: nest_unit(dim)[0] for name, dim in out.dims.items()}

    targets = sorted(set(targets))
    for var in targets:
        if var not in out.dims or var in [eq.varname for eq in subexpr]:
            raise NestmlTranslationError(f"synapses add to '{var}' of neuron model '{model_name}', which "
                                         "is not a state variable or parameter of it")
    replace = {"t": "(t - dt__)", "dt": "dt__"}
    known = set(out.dims) - {eq.varname for eq in subexpr}
    expr = _Expr(model_name, known, replace)

    # NESTML assigns parameters only in their block: Brian2 parameters that the reset or synapses change are states
    state_params = [eq for eq in params if eq.varname in assigned or eq.varname in targets]
    plain_params = [eq for eq in params if eq not in state_params]
    refractory, condition, free_when = None, None, "refr_count__ == 0"
    if model.refractory:
        from brian2 import second
        from biosnn.errors import SpecError
        from biosnn.spec.values import parse_quantity
        try:
            ok = get_dimensions(parse_quantity(model.refractory, names=constants)) == second.dim
        except SpecError:  # a condition such as 'v > v_th', not a period
            ok = False
        refractory = expr(model.refractory)
        if not ok:  # Brian2: refractory from a spike on until the condition is false before a step
            condition, free_when = refractory, "(not refr_cond__)"

    st = ["    state:"]
    for eq in diff + state_params:
        st.append(f"        {eq.varname} {unit_of[eq.varname]} = {_zero(unit_of[eq.varname])}")
        out.states.append(eq.varname)
    if condition is not None:
        st.append("        refr_cond__ boolean = false")
    elif refractory is not None:
        st.append("        refr_count__ integer = 0")
    if len(st) == 1:
        st.append("        unused__ real = 0.0")
    # subexpressions are substituted where they are used, as Brian2 does (NESTML's ``inline``
    # getters cannot refer to ``t``), in the order of their dependencies
    pending = {eq.varname: eq for eq in subexpr}
    while pending:
        ready = [n for n, eq in pending.items() if not (eq.identifiers & set(pending))]
        if not ready:
            _fail(model_name, lines.get(next(iter(pending)), ""),
                  "the subexpressions refer to each other in a cycle")
        for n in ready:
            replace[n] = expr(str(pending.pop(n).expr.code))
    euler = (model.method or "").strip() == "euler" and code is None
    eq_lines = ["    equations:"]
    if not euler and code is None:
        for eq in diff:
            eq_lines.append(f"        {eq.varname}' = {expr(str(eq.expr.code))}")
    pa = ["    parameters:"]
    for name in [eq.varname for eq in plain_params] + used_consts:
        pa.append(f"        {name} {unit_of[name]} = {_decl_value(unit_of[name])}")
        out.parameters.append(name)
    internals = ["    internals:", "        dt__ ms = resolution()"]
    if refractory is not None and condition is None:
        internals.append(f"        refr_steps__ integer = steps({refractory})")
    inp = ["    input:"]
    for var in targets:
        out.ports[var] = f"{var}__in"
        inp.append(f"        {var}__in <- spike")
    if len(inp) == 1:
        inp.append("        unused__in <- spike")
    upd = ["    update:"]
    frozen = [eq.varname for eq in diff if "unless refractory" in eq.flags]
    free = [eq.varname for eq in diff if "unless refractory" not in eq.flags]
    for var in targets:
        factor = "1 s" if unit_of[var] == "real" else f"1 {unit_of[var]} * 1 s"
        if refractory is not None and var in frozen:  # Brian2 drops input to clamped variables
            upd.append(f"        if {free_when}:")
            upd.append(f"            {var} += {var}__in * {factor}")
        else:
            upd.append(f"        {var} += {var}__in * {factor}")
    if condition is not None:  # Brian2's not_refractory = not_refractory or not (condition), before integrating
        upd.append(f"        if not {condition}:")
        upd.append("            refr_cond__ = false")
    elif refractory is not None:
        upd.append("        if refr_count__ > 0:")
        upd.append("            refr_count__ -= 1")
    if code is not None:
        upd.extend(_brian2_step(code, model_name, out, constants, known, replace,
                                frozen if refractory is not None else [], free_when))
    elif diff and euler:
        upd.extend(_euler_step(diff, unit_of, expr, frozen if refractory is not None else [], free_when))
    elif diff:
        if refractory is not None and frozen:
            upd.append(f"        if {free_when}:")
            upd.append("            integrate_odes()")
            if free:
                upd.append("        else:")
                upd.append(f"            integrate_odes({', '.join(free)})")
        else:
            upd.append("        integrate_odes()")
    if len(upd) == 1:
        upd.append("        unused__ = 0.0")
    body = []
    if model.threshold:
        cond = expr(model.threshold)
        if refractory is not None:
            cond = f"{free_when} and {cond}"
        body.append(f"    onCondition({cond}):")
        for var, op, rhs in reset:
            if var not in out.states:
                _fail(model_name, f"{var} {op} {rhs}", f"the reset assigns '{var}', which is not a state "
                                                       "variable or parameter of the model")
            body.append(f"        {var} {op} {expr(rhs)}")
        if condition is not None:
            body.append("        refr_cond__ = true")
        elif refractory is not None:
            body.append("        refr_count__ = refr_steps__")
        body.append("        emit_spike()")
    blocks = [st, eq_lines if len(eq_lines) > 1 else [], pa if len(pa) > 1 else [], internals, inp,
              ["    output:", "        spike"], upd, body]
    out.text = f"# translated by biosnn from the Brian2 model '{model_name}'\nmodel {nestml_name}:\n" + \
        "\n\n".join("\n".join(b) for b in blocks if b) + "\n"
    return out
