"""Whole-network validation of a :class:`~biosnn.spec.model.NetworkSpec`.

References between parts, sizes, array shapes and -- with Brian2's own unit
checker (:func:`brian2.equations.unitcheck.check_dimensions`) -- the units of
every equation, threshold, reset, synaptic statement and initial value.  No
Brian2 object or device is created: the checks run on parsed equations and
``Variable``/``Constant`` descriptions only, so they are fast and safe to run
whenever a spec is built.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from biosnn.errors import SpecError
from biosnn.spec import grammar
from biosnn.spec.values import ArrayValue, parse_quantity, unit_namespace, unit_of

__all__ = ["check_network", "resolve_neuron_model", "resolve_synapse_model",
           "evaluate_namespace", "parse_equations"]

_KEYWORDS = {"and", "or", "not", "True", "False", "true", "false"}


def _resolve_model(ref, cls, named, library, kind: str, field_: str):
    if isinstance(ref, cls):
        return ref
    if ref in named:
        return named[ref]
    if ref in library:
        return library[ref]()
    known = sorted(set(named) | set(library))
    raise SpecError(f"unknown {kind} model '{ref}'", field=field_,
                    fix=f"define it under {kind}_models or use one of {known}")


def resolve_neuron_model(spec, pop):
    """The :class:`NeuronModel` a population uses (spec-defined first, then the library)."""
    from biosnn.models import library
    from biosnn.spec.model import NeuronModel
    return _resolve_model(pop.model, NeuronModel, spec.neuron_models, library.NEURON_MODELS, "neuron",
                          f"populations.{pop.name}.model")


def resolve_synapse_model(spec, proj):
    """The :class:`SynapseModel` a projection uses (spec-defined first, then the library).

    A library model named with the projection's ``target_var`` is built with it
    (``stdp_trace`` delivering to ``ge`` instead of its default ``v``).
    """
    import inspect
    from biosnn.models import library
    from biosnn.spec.model import SynapseModel
    target_var = getattr(proj, "target_var", None)
    if target_var is not None:
        factory = library.SYNAPSE_MODELS.get(proj.model) if isinstance(proj.model, str) \
            and proj.model not in spec.synapse_models else None
        if factory is None or "target_var" not in inspect.signature(factory).parameters:
            takes = sorted(k for k, f in library.SYNAPSE_MODELS.items()
                           if "target_var" in inspect.signature(f).parameters)
            raise SpecError(f"target_var '{target_var}' is given, but model {proj.model!r} is not a library "
                            "synapse model that takes a target variable", field=f"projections.{proj.name}.target_var",
                            fix=f"use it with one of {takes}, or write the delivery into the model's on_pre")
        return factory(target_var=target_var)
    return _resolve_model(proj.model, SynapseModel, spec.synapse_models, library.SYNAPSE_MODELS, "synapse",
                          f"projections.{proj.name}.model")


def evaluate_namespace(layers: list[tuple[str, Mapping[str, str]]]) -> dict:
    """Evaluate constants given as quantity strings, later layers overriding earlier ones.

    A constant may refer to other constants (``we: "(60*0.27/10)*mV"``,
    ``v_reset: "v_rest - 5*mV"``).

    Parameters
    ----------
    layers : list of (field prefix, mapping)
        E.g. ``[("namespace", spec.namespace), ("neuron_models.x.parameters", ...)]``.

    Returns
    -------
    dict
        Name to Brian2 quantity (or float).
    """
    merged: dict[str, tuple[str, str]] = {}
    for prefix, mapping in layers:
        for k, v in mapping.items():
            merged[k] = (f"{prefix}.{k}", v)
    values: dict = {}
    pending = dict(merged)
    while pending:
        progress = False
        for name, (field_, text) in list(pending.items()):
            try:
                values[name] = parse_quantity(text, what="constant", field=field_, names=values)
            except SpecError as exc:
                if "unknown unit" in exc.message and any(n in text for n in pending if n != name):
                    continue  # depends on a constant not evaluated yet
                raise
            del pending[name]
            progress = True
        if not progress:
            name, (field_, text) = next(iter(pending.items()))
            raise SpecError(f"constant '{name}' = '{text}' refers to itself or to an undefined name",
                            field=field_, fix="define every constant it uses, without cycles")
    return values


def parse_equations(text: str, field_: str, functions=None):
    """Parse Brian2 equations, turning Brian2's errors into a :class:`SpecError`.

    The text passes the whitelist grammar (:func:`biosnn.spec.grammar.check_equations`)
    first; ``functions`` are the names it may call (``None``: any name, for
    equations of a spec that was already validated).
    """
    from brian2 import Equations
    from brian2.equations.equations import EquationError
    grammar.check_equations(text, field=field_, functions=functions, units=unit_namespace())
    try:
        return Equations(text)
    except (EquationError, SyntaxError, ValueError, TypeError, KeyError) as exc:
        msg = str(exc).strip().replace("\n", " ")
        line = _error_line(text, msg)
        where = f" (line {line[0]}: '{line[1]}')" if line else ""
        raise SpecError(f"equations do not parse{where}: {msg}", field=field_,
                        fix="write one equation per line as 'dx/dt = expr : unit', 'x = expr : unit' "
                            "or 'x : unit', in Brian2 syntax") from None


def _error_line(text: str, msg: str):
    lines = [ln for ln in text.splitlines()]
    m = re.search(r"\(line:(\d+)", msg)  # pyparsing's position; Python's "line 1" is within one expression
    if m:
        k = int(m.group(1))
        if 1 <= k <= len(lines):
            return k, lines[k - 1].strip()
    from brian2 import Equations
    for k, ln in enumerate(lines, 1):  # otherwise the first line that fails on its own
        if ln.strip() and not ln.strip().startswith("#"):
            try:
                Equations(ln)
            except Exception:
                return k, ln.strip()
    return None


# ---------------------------------------------------------------------------


def _functions(variables: Mapping | None = None) -> set[str]:
    """Names an expression may call: Brian2's functions and (in ``variables``) the spec's timed arrays."""
    from brian2.core.functions import DEFAULT_FUNCTIONS, Function
    names = set(DEFAULT_FUNCTIONS)
    if variables is not None:
        names |= {k for k, v in variables.items() if isinstance(v, Function)}
    return names


def _base_variables():
    from brian2.core.functions import DEFAULT_CONSTANTS, DEFAULT_FUNCTIONS
    from brian2.core.namespace import DEFAULT_UNITS
    from brian2.core.variables import Constant
    from brian2.units.fundamentalunits import get_dimensions
    out: dict = {}
    for name, unit in DEFAULT_UNITS.items():
        out[name] = Constant(name, dimensions=get_dimensions(unit), value=float(np.asarray(unit)))
    out.update(DEFAULT_FUNCTIONS)
    out.update(DEFAULT_CONSTANTS)
    return out


def _var(name, dim, dtype=float):
    from brian2.core.variables import Variable
    return Variable(name, dimensions=dim, dtype=np.dtype(dtype))


def _constants(values: dict) -> dict:
    from brian2.core.variables import Constant
    from brian2.units.fundamentalunits import get_dimensions
    return {k: Constant(k, dimensions=get_dimensions(v), value=float(np.asarray(v)))
            for k, v in values.items()}


def _timed_functions(spec) -> dict:
    from brian2 import second
    from brian2.core.functions import Function
    from brian2.units.fundamentalunits import get_dimensions
    funcs = {}
    items = [(ta.name, ta.values) for ta in spec.timed_arrays]
    from biosnn.spec.model import CurrentInput
    items += [(inp.name, inp.values) for inp in spec.inputs if isinstance(inp, CurrentInput)]
    for name, values in items:
        unit = unit_of(values.unit)
        arg_units = [second] if values.data.ndim == 1 else [second, 1]
        arg_names = ["t"] if values.data.ndim == 1 else ["t", "i"]
        funcs[name] = Function(lambda *a: 0.0, arg_units=arg_units, arg_names=arg_names,
                               return_unit=unit if get_dimensions(unit) is not None else 1,
                               arg_types=["float"] * len(arg_units) if len(arg_units) == 1 else ["float", "integer"])
    return funcs


_CPP_KEYWORDS = frozenset("""alignas alignof asm auto bool break case catch char class const constexpr
const_cast continue decltype default delete do double dynamic_cast else enum explicit export extern float
for friend goto if inline int long mutable namespace new noexcept nullptr operator private protected public
register reinterpret_cast return short signed sizeof static static_assert static_cast struct switch template
this thread_local throw try typedef typeid typename union unsigned using virtual void volatile wchar_t
while""".split())


def _check_cpp_names(eqs, field_: str):
    bad = sorted(set(eqs.names) & _CPP_KEYWORDS)
    if bad:
        raise SpecError(f"variable name(s) {bad} are C++ keywords, so the standalone backends cannot compile them",
                        field=field_, fix=f"rename them, e.g. '{bad[0]}_'")


def _eq_variables(eqs) -> dict:
    from brian2.equations.equations import BOOLEAN, INTEGER
    out = {}
    for name, eq in eqs.items():
        dtype = {BOOLEAN: bool, INTEGER: np.int32}.get(eq.var_type, float)
        out[name] = _var(name, eqs.dimensions[name], dtype)
    for name in eqs.stochastic_variables:
        from brian2 import second
        out[name] = _var(name, (second ** -0.5).dim)
    return out


def _check_identifiers(code: str, variables: dict, field_: str, what: str, *, statements=False):
    from brian2.utils.stringtools import get_identifiers
    ids = get_identifiers(code) - _KEYWORDS
    if statements:
        # names assigned in the code are temporaries
        assigned = set(re.findall(r"^\s*([A-Za-z_]\w*)\s*=(?!=)", code, flags=re.M))
        ids -= assigned
    unknown = sorted(i for i in ids if i not in variables)
    if unknown:
        raise SpecError(f"{what} uses undefined name(s) {unknown}: '{code.strip()}'", field=field_,
                        fix="define them as parameters (with units) of the model or the spec namespace, "
                            "or correct the spelling")


def _check_expr(expr: str, dim, variables: dict, field_: str, what: str):
    from brian2.equations.unitcheck import check_dimensions
    from brian2.units.fundamentalunits import DimensionMismatchError
    grammar.check_expression(expr, field=field_, what=what, functions=_functions(variables))
    _check_identifiers(expr, variables, field_, what)
    try:
        if dim is None:
            from brian2.parsing.expressions import parse_expression_dimensions
            parse_expression_dimensions(expr, variables)
        else:
            check_dimensions(expr, dim, variables)
    except DimensionMismatchError as exc:
        raise SpecError(f"unit mismatch in {what} '{expr.strip()}': {exc}", field=field_,
                        fix="make both sides have the same physical dimensions") from None
    except (SyntaxError, TypeError, ValueError) as exc:
        raise SpecError(f"{what} '{expr.strip()}' is not a valid expression: {exc}", field=field_,
                        fix="write it in Brian2 syntax") from None


def _check_statements(code: str, variables: dict, field_: str, what: str):
    from brian2.equations.unitcheck import check_units_statements
    from brian2.units.fundamentalunits import DimensionMismatchError
    grammar.check_statements(code, field=field_, what=what, functions=_functions(variables))
    _check_identifiers(code, variables, field_, what, statements=True)
    from brian2.utils.stringtools import get_identifiers
    used = get_identifiers(code)  # Brian2 hashes the whole dict for its cache: pass only what the code uses
    variables = {k: v for k, v in variables.items() if k in used}
    try:
        check_units_statements(code, variables)
    except DimensionMismatchError as exc:
        raise SpecError(f"unit mismatch in {what} '{code.strip()}': {exc}", field=field_,
                        fix="make both sides of every assignment have the same dimensions") from None
    except (SyntaxError, TypeError, ValueError, AssertionError, KeyError) as exc:
        raise SpecError(f"{what} '{code.strip()}' is not valid: {exc}", field=field_,
                        fix="write statements in Brian2 syntax, e.g. 'v = v_reset'") from None


def _check_values(initial: Mapping, variables: dict, eq_names, size, field_: str, what_size: str):
    from brian2.units.fundamentalunits import get_dimensions, have_same_dimensions
    for var, value in initial.items():
        f = f"{field_}.{var}"
        if var not in eq_names:
            raise SpecError(f"'{var}' is not a variable of the model", field=f,
                            fix=f"set one of {sorted(eq_names)}")
        dim = variables[var].dim
        if isinstance(value, ArrayValue):
            if size is not None and value.shape != (size,):
                raise SpecError(f"array has shape {value.shape}, expected ({size},) ({what_size})",
                                field=f, fix="give one value per element")
            if not have_same_dimensions(unit_of(value.unit), 1 * _unit_from_dim(dim)):
                raise SpecError(f"array unit '{value.unit}' does not match the unit of '{var}' "
                                f"({_unit_from_dim(dim)!r})", field=f,
                                fix=f"give the values in a unit of dimension {_unit_from_dim(dim)!r}")
        else:
            _check_expr(value, dim, variables, f, "initial value")


def _unit_from_dim(dim):
    from brian2 import get_unit
    return get_unit(dim)


# ---------------------------------------------------------------------------


def _population_variables(spec, pop, base, namespace_layers):
    model = resolve_neuron_model(spec, pop)
    field_ = f"populations.{pop.name}"
    name = pop.model if isinstance(pop.model, str) else None
    mfield = f"neuron_models.{name}" if name in spec.neuron_models else f"{field_}.model"
    eqs = parse_equations(model.equations, f"{mfield}.equations", _functions(base))
    _check_cpp_names(eqs, f"{mfield}.equations")
    _check_flags(eqs, "neuron", f"{mfield}.equations")
    consts = evaluate_namespace(namespace_layers + [(f"{mfield}.parameters", model.parameters),
                                                    (f"{field_}.parameters", pop.parameters)])
    from brian2 import second
    from brian2.units.fundamentalunits import DIMENSIONLESS
    variables = dict(base)
    variables.update(_constants(consts))
    variables.update({"t": _var("t", second.dim), "dt": _var("dt", second.dim),
                      "t_in_timesteps": _var("t_in_timesteps", DIMENSIONLESS, np.int64),
                      "i": _var("i", DIMENSIONLESS, np.int32), "N": _var("N", DIMENSIONLESS, np.int32)})
    if model.refractory is not None:
        variables["lastspike"] = _var("lastspike", second.dim)
        variables["not_refractory"] = _var("not_refractory", DIMENSIONLESS, bool)
    clash = sorted(set(consts) & set(eqs.names))
    if clash:
        raise SpecError(f"{clash} are both parameters and model variables", field=f"{field_}.parameters",
                        fix="rename the parameter or drop it from the equations")
    variables.update(_eq_variables(eqs))
    return model, eqs, variables, field_


def _check_population(spec, pop, base, namespace_layers):
    from brian2 import second
    from brian2.units.fundamentalunits import DimensionMismatchError
    model, eqs, variables, field_ = _population_variables(spec, pop, base, namespace_layers)
    texts = [model.equations, model.threshold, model.reset] + [op.code for op in pop.operations] + \
        [v for v in pop.initial.values() if isinstance(v, str)]
    _check_table_columns(spec, "\n".join(t for t in texts if t), pop.size, field_)
    name = pop.model if isinstance(pop.model, str) else None
    mfield = f"neuron_models.{name}" if name in spec.neuron_models else f"{field_}.model"
    try:
        for name, eq in eqs.items():
            if eq.type == "differential equation":
                _check_expr(str(eq.expr), eqs.dimensions[name] / second.dim, variables,
                            f"{mfield}.equations", f"equation for d{name}/dt")
            elif eq.type == "subexpression":
                _check_expr(str(eq.expr), eqs.dimensions[name], variables,
                            f"{mfield}.equations", f"subexpression '{name}'")
    except DimensionMismatchError as exc:  # pragma: no cover - converted in _check_expr
        raise SpecError(str(exc), field=f"{mfield}.equations") from None
    _check_method(model, mfield)
    if model.threshold:
        _check_expr(model.threshold, None, variables, f"{mfield}.threshold", "threshold")
        from brian2.parsing.expressions import is_boolean_expression
        try:
            boolean = is_boolean_expression(model.threshold, variables)
        except (SyntaxError, TypeError, ValueError, KeyError):
            boolean = False
        if not boolean:
            raise SpecError(f"threshold '{model.threshold}' is not a condition", field=f"{mfield}.threshold",
                            fix="write a comparison such as 'v > v_th'")
    if model.reset:
        if not model.threshold:
            raise SpecError("a reset needs a threshold", field=f"{mfield}.reset",
                            fix="add a threshold condition or remove the reset")
        _check_statements(model.reset, variables, f"{mfield}.reset", "reset")
    if model.refractory:
        try:
            q = parse_quantity(model.refractory, what="refractory period")
            from brian2.units.fundamentalunits import have_same_dimensions
            if not have_same_dimensions(q, second):
                raise SpecError(f"refractory period '{model.refractory}' is not a time",
                                field=f"{mfield}.refractory", fix="give e.g. '2*ms'")
        except SpecError as exc:
            if "is not a time" in exc.message:
                raise
            _check_expr(model.refractory, None, variables, f"{mfield}.refractory",
                        "refractory condition")
    _check_values(pop.initial, variables, eqs.names, pop.size, f"{field_}.initial", "one per neuron")
    _check_operations(pop.operations, variables, f"{field_}.operations")
    return variables


def _check_operations(ops, variables, field_: str):
    for k, op in enumerate(ops):
        f = f"{field_}[{k}]"
        _check_statements(op.code, variables, f"{f}.code", "operation")
        if op.dt is not None:
            check_time(op.dt, f"{f}.dt", "operation dt")


def _input_variables(inp, base):
    from brian2 import Hz, second
    from brian2.units.fundamentalunits import DIMENSIONLESS
    v = dict(base)
    v.update({"t": _var("t", second.dim), "dt": _var("dt", second.dim),
              "i": _var("i", DIMENSIONLESS, np.int32), "N": _var("N", DIMENSIONLESS, np.int32),
              "lastspike": _var("lastspike", second.dim)})
    from biosnn.spec.model import PoissonInput
    if isinstance(inp, PoissonInput):
        v["rates"] = _var("rates", Hz.dim)
    return v


def _check_projection(spec, proj, node_vars, base, namespace_layers, nodes, proj_variables=None):
    from brian2 import second
    from brian2.units.fundamentalunits import DIMENSIONLESS
    from biosnn.spec.model import AllToAll, Condition, Conv2D, NodeRef, Pool2D, Population
    field_ = f"projections.{proj.name}"
    sref, tref = NodeRef.parse(proj.source, f"{field_}.source"), NodeRef.parse(proj.target, f"{field_}.target")
    src, tgt = nodes.get(sref.name), nodes.get(tref.name)
    if src is None:
        raise SpecError(f"unknown source '{proj.source}'", field=f"{field_}.source",
                        fix=f"use a population or input: {sorted(nodes)}")
    onto_synapses = tgt is None and tref.whole and tref.name in (proj_variables or {})
    if onto_synapses:  # Synapses(source, other_synapses): the target's synapses are the postsynaptic side
        if not isinstance(proj.connect, (AllToAll, Condition)):
            raise SpecError("a projection onto the synapses of another projection connects with a condition or "
                            "all_to_all (the number of target synapses is Brian2's to draw)",
                            field=f"{field_}.connect", fix="write e.g. {type: condition, condition: 'j < 4'}")
    elif tgt is None or not isinstance(tgt, Population):
        pops = sorted(n for n, x in nodes.items() if isinstance(x, Population))
        later = [p.name for p in spec.projections].index(tref.name) if tref.name in \
            [p.name for p in spec.projections] else None
        raise SpecError(f"unknown target population '{proj.target}'"
                        + (" (a projection defined after this one)" if later is not None else ""),
                        field=f"{field_}.target",
                        fix=f"use one of the populations {pops}, or a projection defined before this one")
    sref.bounds(src.size, f"{field_}.source")
    if not onto_synapses:
        tref.bounds(tgt.size, f"{field_}.target")
    if isinstance(proj.connect, (Conv2D, Pool2D)) and not (sref.whole and tref.whole):
        raise SpecError("convolution and pooling connect whole layers, not subgroups", field=f"{field_}.source",
                        fix="connect the whole populations (their shapes define the geometry)")
    model = resolve_synapse_model(spec, proj)
    name = proj.model if isinstance(proj.model, str) else None
    mfield = f"synapse_models.{name}" if name in spec.synapse_models else f"{field_}.model"
    eqs = parse_equations(model.equations, f"{mfield}.equations", _functions(base))
    _check_cpp_names(eqs, f"{mfield}.equations")
    _check_flags(eqs, "synapse", f"{mfield}.equations")
    consts = evaluate_namespace(namespace_layers + [(f"{mfield}.parameters", model.parameters),
                                                    (f"{field_}.parameters", proj.parameters)])
    variables = dict(base)
    variables.update(_constants(consts))
    pre_vars = node_vars[sref.name]
    post_vars = proj_variables[tref.name] if onto_synapses else node_vars[tref.name]
    skip = set(base) | {"t", "dt", "N"}
    for k, v in post_vars.items():
        if k in skip or k in consts:
            continue
        variables[f"{k}_post"] = v
        variables.setdefault(k, v)
    for k, v in pre_vars.items():
        if k in skip:
            continue
        variables[f"{k}_pre"] = v
    variables.update({"t": _var("t", second.dim), "dt": _var("dt", second.dim),
                      "i": _var("i", DIMENSIONLESS, np.int32), "j": _var("j", DIMENSIONLESS, np.int32),
                      "N": _var("N", DIMENSIONLESS, np.int32),
                      "N_incoming": _var("N_incoming", DIMENSIONLESS, np.int32),
                      "N_outgoing": _var("N_outgoing", DIMENSIONLESS, np.int32),
                      "delay": _var("delay", second.dim),
                      "lastupdate": _var("lastupdate", second.dim)})
    variables.update(_eq_variables(eqs))
    _check_method(model, mfield)
    for name_, eq in eqs.items():
        if eq.type == "differential equation":
            _check_expr(str(eq.expr), eqs.dimensions[name_] / second.dim, variables,
                        f"{mfield}.equations", f"equation for d{name_}/dt")
        elif eq.type == "subexpression":
            target_name = name_[:-5] if name_.endswith("_post") else name_[:-4] if name_.endswith("_pre") else name_
            _check_expr(str(eq.expr), eqs.dimensions[name_], variables, f"{mfield}.equations",
                        f"subexpression '{target_name}'")
    for which in ("on_pre", "on_post"):
        for f, code in _codes(getattr(model, which), f"{mfield}.{which}"):
            _check_statements(code, variables, f, which)
    if not model.on_pre and not model.on_post and not any("summed" in eq.flags for eq in eqs.values()):
        raise SpecError("the synapse model has no on_pre, on_post or summed variable, so it does nothing",
                        field=f"{mfield}", fix="add e.g. on_pre: 'v_post += w'")
    if isinstance(proj.connect, Condition):
        _check_condition(proj, base, consts, field_)
        if proj.connect.j is not None and not onto_synapses:  # every target exists
            from biosnn.spec.expand import generator_targets
            generator_targets(spec, proj, spec.node_size(proj.source), spec.node_size(proj.target))
    if onto_synapses:
        arrays = [k for k, v in [("weights", proj.weights), ("delay", proj.delay), *proj.initial.items()]
                  if isinstance(v, ArrayValue)]
        if arrays:
            raise SpecError(f"'{arrays[0]}' is an array, but a projection onto synapses has no fixed number of "
                            "synapses", field=f"{field_}.{arrays[0]}", fix="give an expression such as '0.1*mV'")
    syn_size = _n_synapses(spec, proj, src, tgt) if _needs_count(proj) and not onto_synapses else None
    if proj.weights is not None or isinstance(proj.connect, Conv2D):
        if proj.weight_var not in eqs.names:
            raise SpecError(f"the synapse model has no variable '{proj.weight_var}' to hold the weights",
                            field=f"{field_}.weight_var",
                            fix=f"declare it in the synapse equations (e.g. '{proj.weight_var} : volt') "
                                "or set weight_var to one of " + str(sorted(eqs.names)))
    if isinstance(proj.connect, Pool2D) and proj.weights is None and proj.weight_var in eqs.names:
        _check_expr(proj.connect.weight or "1", variables[proj.weight_var].dim, variables,
                    f"{field_}.connect.weight", "pooling weight")
    if proj.weights is not None:
        try:
            _check_values({proj.weight_var: proj.weights}, variables, eqs.names, syn_size,
                          f"{field_}", "one per synapse")
        except SpecError as exc:  # name the spec field 'weights', not the model variable
            raise SpecError(exc.message.replace("initial value", "weights"), field=f"{field_}.weights",
                            fix=exc.fix) from None
    delays = _pathway_delays(proj, model, field_)
    for f, delay in delays:
        if isinstance(delay, ArrayValue):
            if syn_size is not None and delay.shape != (syn_size,):
                raise SpecError(f"delay array has shape {delay.shape}, expected ({syn_size},)",
                                field=f, fix="give one delay per synapse")
            from brian2.units.fundamentalunits import have_same_dimensions
            if not have_same_dimensions(unit_of(delay.unit), second):
                raise SpecError(f"delay unit '{delay.unit}' is not a time", field=f,
                                fix="give delays in ms or second")
        else:
            _check_expr(delay, second.dim, variables, f, "delay")
    _check_values(proj.initial, variables, eqs.names, syn_size, f"{field_}.initial", "one per synapse")
    _check_operations(proj.operations, variables, f"{field_}.operations")
    return set(eqs.names), variables


def _codes(code, field_: str) -> list:
    """``[(field, statements)]`` of an ``on_pre``/``on_post``: one entry, or one per pathway."""
    if code is None:
        return []
    if isinstance(code, Mapping):
        return [(f"{field_}.{k}", v) for k, v in code.items()]
    return [(field_, code)]


def _pathway_delays(proj, model, field_: str) -> list:
    """``[(field, delay)]`` of a projection; a per-pathway mapping must name pathways of the model."""
    if proj.delay is None:
        return []
    if not isinstance(proj.delay, Mapping):
        return [(f"{field_}.delay", proj.delay)]
    pathways = model.pathways()
    unknown = sorted(set(proj.delay) - set(pathways))
    if unknown:
        raise SpecError(f"delay names pathway(s) {unknown}, which the synapse model does not have",
                        field=f"{field_}.delay.{unknown[0]}", fix=f"name pathways of the model: {sorted(pathways)}")
    return [(f"{field_}.delay.{k}", v) for k, v in proj.delay.items()]


def condition_variables(base: dict, consts: dict) -> dict:
    """What a connection condition or probability may use: ``i``, ``j``, ``N_pre``, ``N_post``, constants."""
    from brian2.units.fundamentalunits import DIMENSIONLESS
    variables = dict(base)
    variables.update(_constants(consts))
    variables.update({k: _var(k, DIMENSIONLESS, np.int32) for k in ("i", "j", "N_pre", "N_post")})
    return variables


def _check_condition(proj, base: dict, consts: dict, field_: str) -> None:
    """A :class:`~biosnn.spec.model.Condition`: a boolean of ``i, j``, a dimensionless ``p``, no per-synapse arrays."""
    from brian2.parsing.expressions import is_boolean_expression
    from brian2.units.fundamentalunits import DIMENSIONLESS
    c, f = proj.connect, f"{field_}.connect"
    variables = condition_variables(base, consts)
    for key in ("condition", "p", "j"):
        text = getattr(c, key)
        if text is None:
            continue
        names = set(_identifiers(text)) - _KEYWORDS
        bad = sorted(n for n in names if n not in variables or (key == "j" and n in ("j", "rand", "randn")))
        if key == "j" and bad:
            raise SpecError(f"connection target j = '{text}' uses {bad}: it may only use i, N_pre, N_post and "
                            "constants", field=f"{f}.j", fix="write the target index as a function of i, e.g. 'i'")
        if bad:
            raise SpecError(f"connection {key} '{text}' uses {bad}: a condition may only use i, j, N_pre, N_post "
                            "and constants", field=f"{f}.{key}",
                            fix="write it with the source index i, the target index j and constants, "
                                "e.g. 'i != j' or '0.1*exp(-abs(i - j)/10)'")
        _check_expr(text, None if key == "condition" else DIMENSIONLESS, variables, f"{f}.{key}",
                    f"connection {key}")
        if key == "condition" and not is_boolean_expression(text, variables):
            raise SpecError(f"connection condition '{text}' is not a condition", field=f"{f}.condition",
                            fix="write a comparison such as 'i != j' or 'abs(i - j) < 3'")
    arrays = [k for k, v in [("weights", proj.weights), ("delay", proj.delay), *proj.initial.items()]
              if isinstance(v, ArrayValue)]
    if arrays:
        raise SpecError(f"'{arrays[0]}' is an array, but a condition connectivity has no fixed number of synapses",
                        field=f"{field_}.{arrays[0]}" if arrays[0] in ("weights", "delay")
                        else f"{field_}.initial.{arrays[0]}",
                        fix="give an expression (e.g. '0.5*mV', 'rand()*w_max'), or explicit i/j connectivity")


def _identifiers(text: str) -> set:
    from brian2.utils.stringtools import get_identifiers
    return get_identifiers(text)


def _needs_count(proj) -> bool:
    values = list(proj.initial.values()) + [proj.weights, proj.delay]
    return True if not hasattr(proj.connect, "p") else any(isinstance(v, ArrayValue) for v in values)


def _n_synapses(spec, proj, src, tgt) -> int:
    from biosnn.spec.model import AllToAll
    if isinstance(proj.connect, AllToAll):  # counted, not expanded (n_pre x n_post lists)
        from biosnn.spec.budget import synapse_count
        return synapse_count(spec, proj, exact=True)
    from biosnn.spec.expand import projection_size
    return projection_size(spec, proj)


MAX_TIME_S = 1e7
"""Longest time step, duration or period a spec may give (seconds, about 116 days)."""


def check_time(text, field_: str, what: str) -> float:
    """A positive time of at most :data:`MAX_TIME_S` seconds, in seconds; else a :class:`SpecError`."""
    from brian2 import second
    from brian2.units.fundamentalunits import have_same_dimensions
    q = parse_quantity(text, what="time", field=field_)
    if not have_same_dimensions(q, second) or not 0 < float(q) <= MAX_TIME_S:
        raise SpecError(f"{what} must be a positive time of at most {MAX_TIME_S:g} s, got '{text}'", field=field_,
                        fix="give e.g. '0.1*ms' for dt or '1*second' for a duration")
    return float(q)


def _check_spike_times(inp, dt: float) -> None:
    """What Brian2's SpikeGeneratorGroup refuses at build: two spikes of a source in one step, times past the period."""
    times = inp.times.si()
    if times.size == 0:
        return
    f = f"inputs.{inp.name}"
    if inp.period is not None:
        period = check_time(inp.period, f"{f}.period", "period")
        if times.max() >= period:
            raise SpecError(f"spike times reach {times.max():g} s, not below the period {period:g} s",
                            field=f"{f}.period", fix="give a period longer than the last spike time")
    steps = np.floor((times + 1e-3 * dt) / dt).astype(np.int64)  # as Brian2 bins them
    pairs = np.stack([np.asarray(inp.indices.data, dtype=np.int64), steps], axis=1)
    if len(np.unique(pairs, axis=0)) < len(pairs):
        raise SpecError(f"a source fires twice within one time step of {dt:g} s", field=f"{f}.times",
                        fix="remove the duplicate spikes or use a smaller dt")


_FLAGS = {"neuron": ({"differential equation": ("unless refractory",), "parameter": ("constant", "shared", "linked"),
                      "subexpression": ("shared", "constant over dt")}, None),
          "synapse": ({"differential equation": ["event-driven", "clock-driven"],
                       "subexpression": ["summed", "shared", "constant over dt"],
                       "parameter": ["constant", "shared", "linked"]},
                      [("event-driven", "clock-driven"), ("summed", "shared", "constant over dt")])}


def _check_flags(eqs, kind: str, field_: str) -> None:
    """The equation flags Brian2's NeuronGroup / Synapses accept (checked there only at build)."""
    allowed, incompatible = _FLAGS[kind]
    try:
        eqs.check_flags(allowed, incompatible_flags=incompatible)
    except ValueError as exc:
        raise SpecError(f"bad equation flag: {' '.join(str(exc).split())}", field=field_,
                        fix="use Brian2's flags, e.g. (unless refractory), (constant), (event-driven), "
                            "(summed)") from None


def _check_table_columns(spec, text: str, size: int, field_: str) -> None:
    """A 2-D timed array read as ``name(t, i)`` needs a column for every neuron ``i`` (Brian2 fails at run)."""
    for ta in spec.timed_arrays:
        values = ta.values.data
        if values.ndim == 2 and values.shape[1] < size and re.search(rf"\b{ta.name}\s*\(\s*t\s*,\s*i\s*\)", text):
            raise SpecError(f"'{ta.name}(t, i)' is read by {size} neurons but timed array '{ta.name}' has "
                            f"{values.shape[1]} columns", field=field_,
                            fix=f"give timed_arrays.{ta.name} {size} columns or index it within its columns")


def _check_method(model, field_: str) -> None:
    if model.method is None:
        return
    from brian2.stateupdaters.base import StateUpdateMethod
    known = list(StateUpdateMethod.stateupdaters)
    if model.method not in known:
        raise SpecError(f"unknown integration method {str(model.method)[:60]!r}", field=f"{field_}.method",
                        fix=f"use one of {known}, or omit it to let Brian2 choose")


def _check_unused_models(spec, base) -> None:
    """Models nobody uses are checked too: their text passes the grammar and Brian2's parser."""
    used_n = {p.model for p in spec.populations if isinstance(p.model, str)}
    used_s = {p.model for p in spec.projections if isinstance(p.model, str)}
    functions = _functions(base)
    for kind, named, used, texts in (("neuron", spec.neuron_models, used_n, ("threshold", "reset")),
                                     ("synapse", spec.synapse_models, used_s, ("on_pre", "on_post"))):
        for name, model in named.items():
            if name in used:
                continue
            f = f"{kind}_models.{name}"
            _check_flags(parse_equations(model.equations, f"{f}.equations", functions), kind, f"{f}.equations")
            _check_method(model, f)
            for attr in texts:
                for field_, code in _codes(getattr(model, attr), f"{f}.{attr}"):
                    if attr == "threshold":
                        grammar.check_expression(code, field=field_, what=attr, functions=functions)
                    else:
                        grammar.check_statements(code, field=field_, what=attr, functions=functions)


def check_network(spec) -> None:
    """Validate a whole network; raise :class:`SpecError` naming the field and the fix."""
    from biosnn.spec.model import CurrentInput, NodeRef, Population, SpikeMonitor
    from biosnn.errors import quiet_brian2_banner
    for k in ("dt", "duration"):
        check_time(getattr(spec, k), k, "dt" if k == "dt" else "duration")
    quiet_brian2_banner()  # brian2 is imported by now
    names = [p.name for p in spec.populations] + [i.name for i in spec.inputs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"{dup} name both a population and an input", field=f"inputs.{dup[0]}",
                        fix="give populations and inputs distinct names")
    for ta in spec.timed_arrays:
        check_time(ta.dt, f"timed_arrays.{ta.name}.dt", "dt")
    for inp in spec.inputs:
        for attr in ("dt", "period"):
            if isinstance(getattr(inp, attr, None), str):
                check_time(getattr(inp, attr), f"inputs.{inp.name}.{attr}", attr)
        if isinstance(getattr(inp, "times", None), ArrayValue):
            _check_spike_times(inp, check_time(spec.dt, "dt", "dt"))
    for k, mon in enumerate(spec.monitors):
        if getattr(mon, "dt", None) is not None:
            check_time(mon.dt, f"monitors[{k}].dt", "dt")
    from biosnn.spec.budget import check_spec_size
    check_spec_size(spec)
    base = _base_variables()
    base.update(_timed_functions(spec))
    ns_layers = [("namespace", spec.namespace)]
    evaluate_namespace(ns_layers)  # every constant is checked, used or not
    nodes = {p.name: p for p in spec.populations}
    nodes.update({i.name: i for i in spec.inputs if not isinstance(i, CurrentInput)})
    node_vars, proj_vars, proj_variables = {}, {}, {}
    for pop in spec.populations:
        node_vars[pop.name] = _check_population(spec, pop, base, ns_layers)
    for inp in spec.inputs:
        if isinstance(inp, CurrentInput):
            f = f"inputs.{inp.name}"
            tref = NodeRef.parse(inp.target, f"{f}.target")
            tgt = nodes.get(tref.name)
            if not isinstance(tgt, Population):
                raise SpecError(f"unknown target population '{inp.target}'", field=f"{f}.target",
                                fix=f"use one of {spec.population_names}")
            start, stop = tref.bounds(tgt.size, f"{f}.target")
            tv = node_vars[tref.name]
            model = resolve_neuron_model(spec, tgt)
            eqs = parse_equations(model.equations, f"populations.{tgt.name}.model.equations")
            if inp.variable not in eqs or eqs[inp.variable].type != "parameter":
                raise SpecError(f"'{inp.variable}' is not a parameter of population '{inp.target}'",
                                field=f"{f}.variable",
                                fix=f"declare it in the model equations, e.g. '{inp.variable} : amp'")
            from brian2.units.fundamentalunits import have_same_dimensions
            if not have_same_dimensions(unit_of(inp.values.unit), 1 * _unit_from_dim(tv[inp.variable].dim)):
                raise SpecError(f"values unit '{inp.values.unit}' does not match '{inp.variable}' "
                                f"({_unit_from_dim(tv[inp.variable].dim)!r})", field=f"{f}.values",
                                fix="give the values in the variable's unit")
            if inp.values.data.ndim == 2 and inp.values.shape[1] != stop - start:
                raise SpecError(f"values have {inp.values.shape[1]} columns, target has {stop - start} neurons",
                                field=f"{f}.values", fix="give one column per target neuron")
        else:
            node_vars[inp.name] = _input_variables(inp, base)
            if hasattr(inp, "rates") and isinstance(inp.rates, str):
                _check_table_columns(spec, inp.rates, inp.size, f"inputs.{inp.name}.rates")
                from brian2 import Hz
                _check_expr(inp.rates, Hz.dim, {**node_vars[inp.name], **_constants(
                    evaluate_namespace(ns_layers))}, f"inputs.{inp.name}.rates", "rate")
            elif hasattr(inp, "rates"):
                from brian2 import Hz
                from brian2.units.fundamentalunits import have_same_dimensions
                if not have_same_dimensions(unit_of(inp.rates.unit), Hz):
                    raise SpecError(f"rates unit '{inp.rates.unit}' is not a rate", field=f"inputs.{inp.name}.rates",
                                    fix="give rates in Hz")
    for proj in spec.projections:
        proj_vars[proj.name], proj_variables[proj.name] = _check_projection(spec, proj, node_vars, base, ns_layers,
                                                                            nodes, proj_variables)
    _check_unused_models(spec, base)
    consts = evaluate_namespace(ns_layers)
    spike_vars: dict = {}
    for k, mon in enumerate(spec.monitors):
        _check_monitor(spec, mon, f"monitors[{k}]", nodes, node_vars, proj_vars, consts)
        if isinstance(mon, SpikeMonitor):
            first = spike_vars.setdefault(mon.population, (k, mon.variables))
            if first[1] != mon.variables:
                raise SpecError(f"monitors[{first[0]}] and monitors[{k}] record the spikes of '{mon.population}' "
                                f"with other variables ({list(first[1])} and {list(mon.variables)})",
                                field=f"monitors[{k}].variables", fix="use one spike monitor with all the variables")
    _check_protocol(spec, node_vars, proj_variables)


_READ_ONLY = frozenset({"t", "dt", "i", "j", "N", "N_pre", "N_post", "N_incoming", "N_outgoing", "t_in_timesteps",
                        "lastupdate", "not_refractory"})


def _check_protocol(spec, node_vars: dict, proj_variables: dict) -> None:
    """Segments: positive durations adding up to the spec's duration; assignments to existing variables, in unit."""
    from brian2.core.variables import Constant, Variable
    if not spec.protocol:
        return
    total = sum(check_time(seg.duration, f"protocol[{k}].duration", "segment duration")
                for k, seg in enumerate(spec.protocol))
    duration = check_time(spec.duration, "duration", "duration")
    if abs(total - duration) > 1e-9 * max(1.0, duration):
        raise SpecError(f"the protocol's segments last {total:g} s but duration is {duration:g} s", field="duration",
                        fix=f"set duration to the sum of the segments ('{total:g}*second') or change the segments")
    for k, seg in enumerate(spec.protocol):
        for key, value in seg.set.items():
            f = f"protocol[{k}].set.{key}"
            part, _, var = key.partition(".")
            variables = node_vars.get(part) if part in spec.population_names else proj_variables.get(part)
            if variables is None:
                raise SpecError(f"'{part}' is not a population or projection", field=f,
                                fix=f"use one of {spec.population_names + sorted(proj_variables)}")
            v = variables.get(var)
            if not isinstance(v, Variable) or isinstance(v, Constant) or var in _READ_ONLY:
                settable = sorted(n for n, x in variables.items() if isinstance(x, Variable)
                                  and not isinstance(x, Constant) and n not in _READ_ONLY
                                  and not n.endswith(("_pre", "_post")))
                raise SpecError(f"'{var}' is not a variable of '{part}' that a protocol can set", field=f,
                                fix=f"set one of {settable} (constants are fixed: declare e.g. 'I : amp' "
                                    "in the equations to change it between segments)")
            _check_expr(value, v.dim, variables, f, "protocol value")


def _check_monitor(spec, mon, f: str, nodes: dict, node_vars: dict, proj_vars: dict, consts: dict) -> None:
    """A monitor names an existing population, subgroup, input or (state monitors) projection and its variables."""
    from biosnn.spec.model import NodeRef, Population, RateMonitor, SpikeMonitor, StateMonitor
    if not isinstance(mon, (SpikeMonitor, StateMonitor, RateMonitor)):
        raise SpecError(f"unknown monitor {mon!r}", field=f, fix="use a spikes, state or rate monitor")
    ref = NodeRef.parse(mon.population, f"{f}.population")
    if isinstance(mon, StateMonitor) and ref.whole and ref.name in proj_vars and ref.name not in nodes:
        missing = [v for v in mon.variables if v not in proj_vars[ref.name]]
        if missing:
            raise SpecError(f"projection '{ref.name}' has no synaptic variable(s) {missing}", field=f"{f}.variables",
                            fix=f"record variables of its synapse model: {sorted(proj_vars[ref.name])}")
        from biosnn.spec.budget import synapse_count
        n = synapse_count(spec, spec.projection(ref.name), exact=True)
        if n is not None and mon.indices is not None and any(i >= n for i in mon.indices):
            raise SpecError(f"synapse indices must be < {n} (the projection's synapses)", field=f"{f}.indices",
                            fix="record synapses that exist")
        return
    if ref.name not in nodes:
        raise SpecError(f"monitor refers to unknown population '{mon.population}'", field=f"{f}.population",
                        fix=f"use one of {sorted(nodes)}" + (f" or, for a state monitor, a projection "
                                                             f"{sorted(proj_vars)}" if proj_vars else ""))
    start, stop = ref.bounds(nodes[ref.name].size, f"{f}.population")
    variables = getattr(mon, "variables", ())
    if variables:
        if not isinstance(nodes[ref.name], Population):
            what = "state monitors record populations (or projections)" if isinstance(mon, StateMonitor) else \
                "spike monitors record variables of populations"
            raise SpecError(f"{what}, not inputs", field=f"{f}.population",
                            fix=f"use one of {spec.population_names}")
        missing = [v for v in variables if v not in node_vars[ref.name] or v in consts]
        if missing:
            raise SpecError(f"population '{ref.name}' has no variable(s) {missing}",
                            field=f"{f}.variables", fix="record model variables, e.g. v")
    if isinstance(mon, StateMonitor) and mon.indices is not None and any(i >= stop - start for i in mon.indices):
        raise SpecError(f"indices must be < {stop - start}", field=f"{f}.indices", fix="record neurons that exist")
