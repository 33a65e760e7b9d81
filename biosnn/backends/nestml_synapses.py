"""Translate a plastic Brian2-equation :class:`~biosnn.spec.SynapseModel` into a NESTML synapse model.

NEST runs plastic synapses as *connection* objects that are updated only when
a presynaptic spike is delivered: the postsynaptic spikes since the previous
presynaptic spike are read from the target neuron's spike history and handled
first.  NESTML generates such a connection from a ``model`` with a
``pre_spikes`` and a ``post_spikes`` port, *co-generated* with the target
neuron model (``codegen_opts["neuron_synapse_pairs"]``), which keeps that
history (:func:`codegen_options`).

The translation keeps Brian2's semantics (biosnn's reference):

* every synaptic variable (``w : 1``, event-driven traces, times of last
  spikes) is a state variable of the NESTML synapse; event-driven ODEs become
  NESTML ODEs, integrated exactly between events as Brian2 does; all of them
  stay in the synapse (``strictly_synaptic_vars``), so NESTML moves no trace
  into the neuron;
* ``on_pre`` and ``on_post`` become ``onReceive(pre_spikes)`` and
  ``onReceive(post_spikes)``, statement by statement; undeclared names
  assigned there are Brian2 temporaries and become local declarations; the one
  statement ``x_post += expr`` becomes ``emit_spike(expr)`` at the same place
  (the value is sent in the NESTML unit of the target variable ``x``);
* a pre and a post spike in the same step: the presynaptic handler runs first,
  as with Brian2's default order of the pathways (``priority``);
* Brian2's ``t`` becomes ``(clock__ - dt)``, a synaptic clock
  (``clock__' = 1``) integrated to the time at which NEST handles the event
  (NEST stamps a spike at the end of its step); the connection has the
  minimal delay (one step) and the projection's delay is carried by
  ``parrot_neuron`` relays (:mod:`biosnn.backends.nest`), so the presynaptic
  handler runs at the spike's arrival, and the generated C++ pairs it with
  the postsynaptic spikes up to that step (no dendritic delay:
  :data:`biosnn.backends.nestml_build.DENDRITIC_DELAY_PATCH`): every pairing
  and every delivery is the one Brian2 makes.

What NEST does not offer raises :class:`~biosnn.errors.BackendError` naming the
model and the statement: summed variables, clock-driven synaptic ODEs, reading
or writing neuron variables other than the one delivery, more than one
delivery, ``int()`` of non-boolean values, noise.

Weights read back at the end of a run miss the changes that postsynaptic
spikes after a synapse's last presynaptic spike would make (NEST applies them
at the next presynaptic spike).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from biosnn.backends.nestml_translate import (NestmlTranslationError, _decl_value, _dimension_of, _Expr,
                                              _zero, nest_unit)

__all__ = ["NestmlSynapse", "translate_synapse", "codegen_options", "merge_codegen_options",
           "paired_neuron_name", "PRE_PORT", "POST_PORT"]

PRE_PORT, POST_PORT = "pre_spikes", "post_spikes"
_STATEMENT = re.compile(r"^\s*([A-Za-z_]\w*)\s*([-+*/]?=)\s*(.+?)\s*$")
_NEST_INSTEAD = ("its built-in plastic synapses (stdp_synapse, stdp_triplet_synapse, stdp_nn_*, "
                 "stdp_pl_synapse_hom: nest.synapse_models) or a synapse model whose statements use only "
                 "synaptic variables, constants, t, rand() and one 'x_post += expr'")


def _fail(model_name: str, line: str, why: str):
    raise NestmlTranslationError(
        f"synapse model '{model_name}' cannot be translated to NESTML: {why} (in '{line.strip()}'). "
        f"NEST can run {_NEST_INSTEAD}; or run this model with a Brian2 backend")


@dataclass
class NestmlSynapse:
    """A NESTML synapse model translated from a spec synapse model.

    Attributes
    ----------
    name : str
        NESTML model name (NEST's name is ``<name>__with_<paired neuron>``, where the
        paired neuron's name is ``<neuron>__with_<synapse>_and_...``).
    text : str
        The NESTML source.
    target_var : str
        The postsynaptic variable the emitted value is added to.
    weight_var : str
        The synaptic variable that is NEST's connection ``weight``.
    units : dict
        Variable or constant -> SI value of one unit of its NESTML declaration.
    dims : dict
        Name -> Brian2 dimension.
    states, parameters : list of str
        Names declared in the ``state`` / ``parameters`` blocks (without the
        internal ``clock__``).
    """

    name: str
    text: str
    target_var: str
    weight_var: str
    units: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    states: list = field(default_factory=list)
    parameters: list = field(default_factory=list)

    def nest_name(self, neuron_name: str, paired: list) -> str:
        """NEST's name of this synapse co-generated with the NESTML neuron ``neuron_name`` and ``paired``.

        NESTML names a synapse that is the only one paired with its neuron
        ``<synapse>__with_<neuron>``, and each of several
        ``<synapse>__with_<neuron>__with_<syn1>_and_<syn2>...`` (the paired neuron's name).

        Parameters
        ----------
        neuron_name : str
            The NESTML neuron model's own (unpaired) name.
        paired : list of NestmlSynapse
            All synapses co-generated with that neuron (this one among them).
        """
        if len(paired) == 1:
            return f"{self.name}__with_{neuron_name}"
        return f"{self.name}__with_{paired_neuron_name(neuron_name, paired)}"


def codegen_options(neuron_name: str, synapses: list[NestmlSynapse]) -> dict:
    """NESTML code generator options that co-generate ``synapses`` with the neuron ``neuron_name``.

    The neuron's NEST name becomes ``<neuron>__with_<syn1>_and_<syn2>...``.
    """
    return {"neuron_synapse_pairs": [{"neuron": neuron_name,
                                      "synapses": {s.name: {"post_ports": [POST_PORT]} for s in synapses}}],
            "synapse_models": [s.name for s in synapses],
            "weight_variable": {s.name: s.weight_var for s in synapses},
            "strictly_synaptic_vars": {s.name: list(s.states) + ["clock__"] for s in synapses}}


def merge_codegen_options(options: list[dict]) -> dict:
    """One set of code generator options from those of several neurons (:func:`codegen_options`)."""
    out: dict = {}
    for opts in options:
        out.setdefault("neuron_synapse_pairs", []).extend(opts["neuron_synapse_pairs"])
        out["synapse_models"] = sorted(set(out.get("synapse_models", [])) | set(opts["synapse_models"]))
        for key in ("weight_variable", "strictly_synaptic_vars"):
            out.setdefault(key, {}).update(opts[key])
    return out


def paired_neuron_name(neuron_name: str, synapses: list[NestmlSynapse]) -> str:
    """NEST's name of the NESTML neuron ``neuron_name`` co-generated with ``synapses``."""
    return f"{neuron_name}__with_" + "_and_".join(s.name for s in synapses)


def _statements(code: str | None, model_name: str) -> list[tuple[str, str, str, str]]:
    out = []
    for line in (code or "").replace(";", "\n").splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        match = _STATEMENT.match(line)
        if not match:
            _fail(model_name, line, "statements must be assignments 'x = expr' or 'x += expr'")
        out.append((*match.groups(), line))
    return out


def _names(text: str) -> set:
    return {n.id for n in ast.walk(ast.parse(text.strip() or "0", mode="eval")) if isinstance(n, ast.Name)}


def _dimension(expr: str, dims: dict, constants: dict, model_name: str, line: str):
    try:
        return _dimension_of(expr, dims, constants)
    except Exception as exc:  # Brian2's unit errors
        _fail(model_name, line, f"its units could not be determined ({exc})")


def translate_synapse(model, model_name: str, nestml_name: str, constants: dict, weight_var: str = "w",
                      post_variables=(), pre_variables=()) -> NestmlSynapse:
    """Translate a plastic :class:`~biosnn.spec.SynapseModel` to a NESTML synapse model.

    Parameters
    ----------
    model : SynapseModel
        Brian2 equations (synaptic variables, event-driven ODEs), ``on_pre``,
        ``on_post``.
    model_name : str
        Its name in the spec (for error messages).
    nestml_name : str
        Name of the NESTML model.
    constants : dict
        Evaluated constants (name -> Brian2 quantity or float): only their
        dimensions enter the text; values are set per connection.
    weight_var : str
        The projection's weight variable (NEST's connection ``weight``).
    post_variables, pre_variables : iterable of str
        Variables of the target and source neuron models: ``x_post`` / ``x_pre``
        refers to a neuron variable when ``x`` is one of them (otherwise it is
        a Brian2 temporary such as ``lag_post_pre``).

    Returns
    -------
    NestmlSynapse

    Raises
    ------
    NestmlTranslationError
        For constructs NESTML synapses cannot express (see the module docstring).
    """
    from brian2.units.fundamentalunits import get_dimensions
    from biosnn.spec.check import parse_equations
    eqs = parse_equations(model.equations or "", f"synapse_models.{model_name}.equations")
    source_lines = [ln for ln in (model.equations or "").splitlines() if ln.strip()]

    def line_of(var):
        return next((ln for ln in source_lines if re.match(rf"^\s*(d{var}/dt|{var})\b", ln)), var)

    diff, subexpr, params = [], [], []
    for eq in eqs.values():
        if "summed" in eq.flags:
            _fail(model_name, line_of(eq.varname), "NEST has no summed variables (a sum over a neuron's "
                  "synapses); normalise weights between runs with biosnn.models.plasticity.normalize_incoming")
        if eq.varname.endswith(("_post", "_pre")):
            _fail(model_name, line_of(eq.varname), "NESTML synapses cannot write neuron variables")
        if eq.type == "differential equation":
            if "event-driven" not in eq.flags:
                _fail(model_name, line_of(eq.varname), "clock-driven synaptic ODEs have no NEST counterpart "
                      "(NEST updates a synapse only at its events); mark the ODE '(event-driven)'")
            if eq.stochastic_variables:
                _fail(model_name, line_of(eq.varname), "noise terms (xi) are not translated")
            diff.append(eq)
        elif eq.type == "subexpression":
            subexpr.append(eq)
        else:
            params.append(eq)
    if weight_var not in {eq.varname for eq in params}:
        _fail(model_name, weight_var, f"the weight '{weight_var}' must be a synaptic variable "
                                      f"('{weight_var} : unit')")
    neuron_vars = {f"{v}_post" for v in post_variables} | {f"{v}_pre" for v in pre_variables}
    pre = _statements(model.on_pre, model_name)
    post = _statements(model.on_post, model_name)
    deliveries = [s for s in pre if s[0] in neuron_vars]
    for statement in pre + post:
        var, op, _, line = statement
        if statement is (deliveries[0] if deliveries else None) and var.endswith("_post") and op in ("+=", "-="):
            continue
        if var in neuron_vars:
            what = "more than one statement changes a neuron variable" if statement in deliveries[1:] else \
                "a NESTML synapse changes its target only by the value it sends ('x_post += expr' in on_pre)"
            _fail(model_name, line, what)
    if not deliveries:
        _fail(model_name, model.on_pre or "(no on_pre)", "on_pre must send a value with 'x_post += expr'")
    target_var = deliveries[0][0][:-len("_post")]

    declared = {eq.varname for eq in diff + params}
    out = NestmlSynapse(name=nestml_name, text="", target_var=target_var, weight_var=weight_var)
    for eq in diff + params:
        out.dims[eq.varname] = eq.dim
    identifiers = set()
    for text in [str(eq.expr.code) for eq in diff + subexpr] + [s[2] for s in pre + post]:
        identifiers |= _names(text)
    used_consts = sorted(k for k in constants if k in identifiers and k not in eqs.names)
    for k in used_consts:
        out.dims[k] = get_dimensions(constants[k])
    for name, dim in out.dims.items():
        out.units[name] = nest_unit(dim)[1]
    unit_of = {name: nest_unit(dim)[0] for name, dim in out.dims.items()}
    for name in sorted(identifiers):
        if name in neuron_vars:
            _fail(model_name, next((s[3] for s in pre + post if name in _names(s[2])), name),
                  f"it reads the neuron variable '{name}'; the translation passes only postsynaptic "
                  "*spikes* to NESTML synapses")
        if name == "lastupdate" or name.startswith("lastspike"):
            _fail(model_name, name, f"Brian2's '{name}' has no NESTML counterpart")

    replace = {"t": "(clock__ - dt__)", "dt": "dt__"}
    expr = _Expr(model_name, set(out.dims), replace, float_literals=True, fail=_fail)
    pending = {eq.varname: eq for eq in subexpr}
    while pending:  # subexpressions are substituted where they are used, in dependency order
        ready = [n for n, eq in pending.items() if not (eq.identifiers & set(pending))]
        if not ready:
            _fail(model_name, line_of(next(iter(pending))), "the subexpressions refer to each other in a cycle")
        for n in ready:
            replace[n] = expr(str(pending.pop(n).expr.code))

    st = ["    state:"]
    for eq in params + diff:
        st.append(f"        {eq.varname} {unit_of[eq.varname]} = {_zero(unit_of[eq.varname])}")
        out.states.append(eq.varname)
    st.append("        clock__ ms = 0 ms")
    pa = ["    parameters:"] + [f"        {k} {unit_of[k]} = {_decl_value(unit_of[k])}" for k in used_consts]
    out.parameters = list(used_consts)
    odes = ["    equations:"] + [f"        {eq.varname}' = {expr(str(eq.expr.code))}" for eq in diff]
    odes.append("        clock__' = 1")

    def handler(port, statements, priority):
        body, local_dims = [f"    onReceive({port}, priority={priority}):"], {}
        for var, op, rhs, line in statements:
            known = dict(out.dims, **local_dims)
            if statements is pre and var == target_var + "_post" and (var, op, rhs, line) == deliveries[0]:
                unit = nest_unit(_dimension(rhs, known, constants, model_name, line))[0]
                value = expr(rhs) if unit == "real" else f"({expr(rhs)} / (1 {unit}))"
                body.append(f"        emit_spike({'-' if op == '-=' else ''}{value})")
                continue
            if var in ("t", "dt") or var in constants and var not in declared:
                _fail(model_name, line, f"'{var}' is a constant and cannot be assigned")
            if var not in declared and var not in local_dims:
                if op != "=":
                    _fail(model_name, line, f"'{var}' is neither a synaptic variable nor assigned before")
                dim = _dimension(rhs, known, constants, model_name, line)
                local_dims[var] = dim
                expr.known.add(var)
                body.append(f"        {var} {nest_unit(dim)[0]} = {expr(rhs)}")
                continue
            body.append(f"        {var} {op} {expr(rhs)}")
        if len(body) == 1:
            body.append("        clock__ += 0 ms")
        for var in local_dims:  # Brian2 temporaries live for one statement block
            expr.known.discard(var)
        return body

    # pre before post at equal times: NESTML 9 gives the handler with the lower priority value precedence
    # here (its NEST generator sets pre_before_post_update); the Dt = 0 pairing test checks it
    on_pre = handler(PRE_PORT, pre, 1)
    on_post = handler(POST_PORT, post, 2)
    blocks = [st, pa if len(pa) > 1 else [], ["    internals:", "        dt__ ms = resolution()"], odes,
              ["    input:", f"        {PRE_PORT} <- spike", f"        {POST_PORT} <- spike"],
              ["    output:", "        spike"], on_pre, on_post, ["    update:", "        integrate_odes()"]]
    out.text = f"# translated by biosnn from the Brian2 synapse model '{model_name}'\n" + \
        f"model {nestml_name}:\n" + "\n\n".join("\n".join(b) for b in blocks if b) + "\n"
    return out
