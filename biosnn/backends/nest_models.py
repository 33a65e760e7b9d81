"""How spec neuron and synapse models become NEST models.

A population's model is either mapped onto a built-in NEST model (the library
``lif`` -> ``iaf_psc_delta``) or translated to NESTML
(:mod:`biosnn.backends.nestml_translate`).  Either way the result is a
:class:`NeuronPlan`: the NEST model name, its parameters in NEST units, how
each spec variable is named and scaled in NEST, and which receptor each
synaptic target variable uses.

Synapses: a synapse model whose ``on_pre`` is one statement ``x_post += expr``
(no ``on_post``, no synaptic ODEs) becomes NEST's ``static_synapse`` with
weight ``expr`` (evaluated per synapse) on the receptor of ``x``; every plastic
synapse model (the library's pair STDP, Diehl & Cook's STDP, stochastic binary
STDP, ...) is translated to a NESTML synapse co-generated with its target's
NESTML neuron.  NEST's built-in ``stdp_synapse`` is not used for the library's
pair STDP: it transmits the weight *after* the depression of the arriving
presynaptic spike, where Brian2 (``x_post += w`` first) transmits the weight
before it; on Brian2's STDP example (Song, Miller & Abbott 2000) that alone
lowered the postsynaptic rate by ~10 % (and the weights' drift by more).  NEST
updates a weight at presynaptic spikes only, so potentiation by postsynaptic
spikes after a synapse's last presynaptic spike is missing from weights read
at the end of a run
(:mod:`biosnn.backends.nestml_synapses`; the target population then runs its
model through NESTML even if a built-in model exists); what cannot be
translated raises :class:`~biosnn.errors.BackendError` naming the statement.

Semantics follow Brian2's runtime (biosnn's reference): see
:mod:`biosnn.backends.nest` for the timing conventions.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

import numpy as np

from biosnn.errors import BackendError
from biosnn.spec import model as m
from biosnn.spec.check import evaluate_namespace
from biosnn.spec.values import ArrayValue, unit_namespace

__all__ = ["NeuronPlan", "plan_neuron", "StaticSynapse", "plan_synapse", "name_paired_synapses", "evaluate",
           "namespace_layers"]

_NUMPY_FUNCS = {"exp": np.exp, "log": np.log, "log10": np.log10, "sqrt": np.sqrt, "abs": np.abs,
                "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh, "sinh": np.sinh, "cosh": np.cosh,
                "clip": np.clip,
                "floor": np.floor, "ceil": np.ceil, "int": lambda x: np.asarray(x).astype(np.int64)}
_SAFE = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call,
         ast.Mult, ast.Div, ast.Add, ast.Sub, ast.Pow, ast.USub, ast.UAdd, ast.Mod,
         ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def evaluate(value, n: int, names: dict, rng: np.random.Generator, what: str) -> np.ndarray:
    """Evaluate a spec value (expression string or :class:`ArrayValue`) for ``n`` elements, in SI.

    Parameters
    ----------
    value : str or ArrayValue
        E.g. ``"Vr + rand()*(Vt - Vr)"`` or ``ArrayValue(w, "mV")``.
    n : int
        Number of neurons or synapses.
    names : dict
        Constants (Brian2 quantities) and per-element arrays (``i``, ``j``,
        synaptic variables) the expression may use.
    rng : numpy.random.Generator
        Source of ``rand()`` / ``randn()`` (NEST's values differ from Brian2's).
    what : str
        What is evaluated, for error messages.

    Returns
    -------
    numpy.ndarray
        ``n`` floats in SI units.
    """
    if isinstance(value, ArrayValue):
        data = np.asarray(value.si(), dtype=np.float64).reshape(-1)
        if data.size not in (1, n):
            raise BackendError(f"{what} has {data.size} values for {n} elements")
        return np.broadcast_to(data, (n,)).astype(np.float64)
    text = str(value).strip()
    from biosnn.errors import SpecError
    from biosnn.spec.grammar import check_expression
    try:
        callables = {k for k, v in names.items() if callable(v)}  # timed arrays (Poisson rates of stim(t, i))
        tree = check_expression(text, what=what, functions=set(_NUMPY_FUNCS) | {"rand", "randn"} | callables)
    except SpecError as exc:
        raise BackendError(f"{what} '{text}' is not an expression: {exc.message}") from None
    env = dict(unit_namespace())
    env.update(names)
    env.update({"rand": lambda: rng.random(n), "randn": lambda: rng.standard_normal(n)})
    env.update(_NUMPY_FUNCS)
    for node in ast.walk(tree):
        if not isinstance(node, _SAFE) or (isinstance(node, ast.Call) and not isinstance(node.func, ast.Name)) \
                or (isinstance(node, ast.Compare) and len(node.ops) != 1):
            raise BackendError(f"{what} '{text}': the NEST backend evaluates only arithmetic, single "
                               "comparisons (int(i != j)), constants, rand(), randn(), i and numpy-like functions")
        if isinstance(node, ast.Name) and node.id not in env:
            raise BackendError(f"{what} '{text}' uses '{node.id}', which the NEST backend cannot evaluate "
                               "(only constants, i, j and synaptic variables set before it)")
    try:
        out = eval(compile(tree, "<value>", "eval"), {"__builtins__": {}}, env)
    except Exception as exc:  # unit mismatches, bad calls
        raise BackendError(f"{what} '{text}' could not be evaluated: {exc}") from None
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)).astype(np.float64)


def namespace_layers(spec, part, model, kind: str) -> dict:
    """Constants visible to a population's or projection's model (spec, model, part), evaluated."""
    mname = part.model if isinstance(part.model, str) else part.name
    plural = "populations" if kind == "neuron" else "projections"
    return evaluate_namespace([("namespace", spec.namespace),
                               (f"{kind}_models.{mname}.parameters", model.parameters),
                               (f"{plural}.{part.name}.parameters", part.parameters)])


@dataclass
class NeuronPlan:
    """A population as NEST sees it.

    Attributes
    ----------
    nest_model : str
        NEST model name.
    params : dict
        NEST status values (NEST units) set at creation.
    names : dict
        Spec variable -> NEST status / recordable name.
    scales : dict
        Spec variable -> SI value of one NEST unit.
    dims : dict
        Spec variable -> Brian2 dimension.
    receptors : dict
        Synaptic target variable -> NEST receptor type.
    weight_factor : dict
        Target variable -> factor applied to weights (built-in models add input
        after the step's propagation; the factor restores Brian2's order).
    settable : set
        Spec variables that may be set between run segments (current inputs).
    nestml : NestmlModel or None
        The translation, for NESTML models.
    builtin : bool
        Whether ``nest_model`` is a built-in NEST model.
    paired : list of NestmlSynapse
        NESTML synapses co-generated with this neuron (``nest_model`` is then
        ``<neuron>__with_<synapse>...``).
    """

    nest_model: str
    params: dict = field(default_factory=dict)
    names: dict = field(default_factory=dict)
    scales: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    receptors: dict = field(default_factory=dict)
    weight_factor: dict = field(default_factory=dict)
    settable: set = field(default_factory=set)
    nestml: object = None
    builtin: bool = False
    paired: list = field(default_factory=list)

    def module_texts(self) -> tuple[dict, dict]:
        """NESTML texts of this population's module and the code generator options (empty for built-ins)."""
        from biosnn.backends.nestml_synapses import codegen_options
        if self.nestml is None:
            return {}, {}
        texts = {self.nestml.name: self.nestml.text}
        texts.update({syn.name: syn.text for syn in self.paired})
        return texts, (codegen_options(self.nestml.name, self.paired) if self.paired else {})


def _same_structure(a: m.NeuronModel, b: m.NeuronModel) -> bool:
    return all(_norm(getattr(a, f)) == _norm(getattr(b, f))
               for f in ("equations", "threshold", "reset", "refractory"))


def _si(value) -> float:
    return float(np.asarray(value))


def _plan_lif(consts: dict, dt_s: float) -> NeuronPlan:
    """The library ``lif`` as ``iaf_psc_delta``: C_m = tau_m / R_m, I -> I_e, t_ref = tau_ref - dt.

    Brian2 counts the spike step into the refractory period (the neuron may
    fire again ``tau_ref`` after a spike); ``iaf_psc_delta`` clamps ``t_ref``
    *further* steps, hence ``t_ref = tau_ref - dt``.  Input arriving during the
    refractory period is dropped by NEST (Brian2 adds it to the held ``v``).
    """
    from brian2 import amp, volt
    tau_m, r_m = _si(consts["tau_m"]), _si(consts["R_m"])
    params = {"E_L": _si(consts["E_L"]) * 1e3, "V_th": _si(consts["v_th"]) * 1e3,
              "V_reset": _si(consts["v_reset"]) * 1e3, "tau_m": tau_m * 1e3,
              "C_m": tau_m / r_m * 1e12, "t_ref": max(_si(consts["tau_ref"]) - dt_s, 0.0) * 1e3,
              "I_e": 0.0, "V_m": 0.0, "V_min": -np.inf}
    return NeuronPlan(nest_model="iaf_psc_delta", params=params, names={"v": "V_m", "I": "I_e"},
                      scales={"v": 1e-3, "I": 1e-12}, dims={"v": volt.dim, "I": amp.dim},
                      receptors={"v": 0}, weight_factor={"v": float(np.exp(-dt_s / tau_m))},
                      settable={"I"}, builtin=True)


def _builtin_plan(model: m.NeuronModel, consts: dict, dt_s: float):
    from biosnn.models import neurons
    if _same_structure(model, neurons.lif()):
        return _plan_lif(consts, dt_s)
    return None


def plan_neuron(spec, pop: m.Population, targets, current_vars, dt_s: float, paired=()) -> NeuronPlan:
    """Map a population onto a built-in NEST model or translate its model to NESTML.

    Parameters
    ----------
    spec : NetworkSpec
    pop : Population
    targets : iterable of str
        Variables that synapses add to.
    current_vars : iterable of str
        Variables set by current inputs (must be parameters of the model).
    dt_s : float
        Time step (seconds).
    paired : iterable of NestmlSynapse
        NESTML synapses of projections onto this population; the neuron is then
        translated to NESTML and co-generated with them.

    Returns
    -------
    NeuronPlan
    """
    from biosnn.backends.nestml_synapses import paired_neuron_name
    from biosnn.backends.nestml_translate import translate_neuron
    model = spec.neuron_model(pop)
    consts = namespace_layers(spec, pop, model, "neuron")
    targets, current_vars = set(targets), set(current_vars)
    paired = list({syn.name: syn for syn in paired}.values())
    plan = _builtin_plan(model, consts, dt_s)
    if plan is not None and not paired and targets <= set(plan.receptors) and current_vars <= plan.settable:
        return plan
    mname = pop.model if isinstance(pop.model, str) else pop.name
    tr = translate_neuron(model, mname, _nestml_name(mname), consts, targets)
    unsettable = sorted(current_vars - set(tr.parameters))
    if unsettable:
        raise BackendError(f"a current input of population '{pop.name}' sets {unsettable}, which NEST can set "
                           f"only when it is a parameter of model '{mname}' (declare e.g. "
                           f"'{unsettable[0]} : amp' in its equations)")
    params = {}
    for name in tr.parameters:
        params[name] = _si(consts[name]) / tr.units[name] if name in consts else 0.0
    return NeuronPlan(nest_model=paired_neuron_name(tr.name, paired) if paired else tr.name, params=params,
                      names={k: k for k in tr.dims}, scales=dict(tr.units), dims=dict(tr.dims),
                      receptors={v: 0 for v in tr.ports}, weight_factor={v: 1.0 for v in tr.ports},
                      settable=set(tr.parameters), nestml=tr, paired=paired)


def _nestml_name(model_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", model_name) + "_nestml"


@dataclass
class StaticSynapse:
    """A projection as NEST connections (``static_synapse`` or a built-in STDP synapse).

    Attributes
    ----------
    target_var : str
        The post-synaptic variable the weight is added to.
    rhs : str
        The added expression (Brian2 syntax).
    sign : float
        +1 for ``+=``, -1 for ``-=``.
    consts : dict
        Constants of the synapse model.
    nest_model : str
        NEST synapse model.
    nestml : NestmlSynapse, optional
        The NESTML translation of a plastic synapse model; ``nest_model`` is
        set by :func:`name_paired_synapses` once the target neuron is planned.
    """

    target_var: str
    rhs: str
    sign: float
    consts: dict
    nest_model: str = "static_synapse"
    nestml: object = None

    @property
    def plastic(self) -> bool:
        """Whether NEST runs this projection with a plastic synapse (relayed through parrot neurons)."""
        return self.nestml is not None

    def weight_unit(self, plan: NeuronPlan) -> float:
        """SI value of one unit of NEST's connection ``weight`` (``plan``: the target's plan)."""
        if self.nestml is not None:
            return self.nestml.units[self.nestml.weight_var]
        return self.sign * plan.scales[self.target_var] / plan.weight_factor[self.target_var]

    def nestml_values(self, values: dict, n: int) -> dict:
        """NESTML synapse status at connection: initial synaptic variables and constants, NESTML units.

        Parameters
        ----------
        values : dict
            Evaluated per-synapse values (SI) of the synaptic variables a
            projection sets (weights, ``initial``).
        n : int
            Number of synapses.
        """
        tr = self.nestml
        out = {"weight": np.asarray(values[tr.weight_var], dtype=np.float64) / tr.units[tr.weight_var]}
        for var in tr.states:
            if var != tr.weight_var and var in values:
                out[var] = np.broadcast_to(np.asarray(values[var], dtype=np.float64), (n,)) / tr.units[var]
        out.update({k: _si(self.consts[k]) / tr.units[k] for k in tr.parameters})
        return out


def _norm(text) -> str:
    return re.sub(r"\s+", " ", (text or "").strip())


_ON_PRE = re.compile(r"^\s*([A-Za-z_]\w*)_post\s*([-+])=\s*(.+?)\s*$")


def plan_synapse(spec, proj: m.Projection) -> StaticSynapse:
    """Describe a projection's synapses on NEST: static, built-in STDP or a NESTML synapse.

    Raises
    ------
    BackendError
        For plastic models that cannot be translated to NESTML, naming the
        statement and what NEST offers instead.
    """
    smodel = _with_post_suffixes(spec.synapse_model(proj), _variables(spec, proj.target))
    mname = proj.model if isinstance(proj.model, str) else proj.name
    stmts = [s for s in re.split(r"[;\n]", smodel.on_pre or "") if s.strip()]
    # plastic models, the library's pair STDP included, go to NESTML (module docstring: not stdp_synapse)
    eq_lines = [ln for ln in (smodel.equations or "").splitlines() if ln.strip()]
    dynamic = [ln for ln in eq_lines if "=" in ln.split(":")[0]]  # ODEs, subexpressions, summed variables
    if smodel.on_post or dynamic or len(stmts) != 1 or not _ON_PRE.match(stmts[0]):
        return _plan_nestml_synapse(spec, proj, smodel, mname)
    var, op, rhs = _ON_PRE.match(stmts[0]).groups()
    return StaticSynapse(target_var=var, rhs=rhs, sign=1.0 if op == "+" else -1.0,
                         consts=namespace_layers(spec, proj, smodel, "synapse"))


def _with_post_suffixes(smodel: m.SynapseModel, post_variables) -> m.SynapseModel:
    """``smodel`` with Brian2's name resolution made explicit in ``on_pre`` and ``on_post``.

    In Brian2 synapse code an unsuffixed name of a postsynaptic variable is that variable (``ge += w`` is
    ``ge_post += w``), before any constant of the same name; Brian2 refuses synaptic variables named
    like a postsynaptic one, which are left alone here (the spec check or the translation reports them).
    """
    from dataclasses import replace

    from biosnn.spec.check import parse_equations
    own = set(parse_equations(smodel.equations, "synapse equations").names) if smodel.equations else set()
    post = [v for v in post_variables if v not in own]
    if not post:
        return smodel
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, post)) + r")(?![\w(])")

    def suffixed(code):
        return code if code is None else pattern.sub(r"\1_post", code)
    return replace(smodel, on_pre=suffixed(smodel.on_pre), on_post=suffixed(smodel.on_post))


def _variables(spec, name: str) -> list:
    """Variable names of the neuron model of population ``name`` (none for inputs)."""
    from biosnn.spec.check import parse_equations
    pop = next((p for p in spec.populations if p.name == name), None)
    if pop is None:
        return []
    model = spec.neuron_model(pop)
    return list(parse_equations(model.equations or "", f"populations.{name}").names) if model.equations else []


def _plan_nestml_synapse(spec, proj: m.Projection, smodel: m.SynapseModel, mname: str) -> StaticSynapse:
    """A plastic equation-defined synapse model as a NESTML synapse (translated, not yet compiled)."""
    from biosnn.backends.nestml_synapses import translate_synapse
    consts = namespace_layers(spec, proj, smodel, "synapse")
    tr = translate_synapse(smodel, mname, _nestml_name(mname) + "_synapse", consts, weight_var=proj.weight_var,
                           post_variables=_variables(spec, proj.target),
                           pre_variables=_variables(spec, proj.source))
    return StaticSynapse(target_var=tr.target_var, rhs=tr.weight_var, sign=1.0, consts=consts, nest_model="",
                         nestml=tr)


def name_paired_synapses(spec, plans: dict, synapses: dict):
    """Set the NEST name of every NESTML synapse (:meth:`NestmlSynapse.nest_name`).

    Parameters
    ----------
    plans : dict
        Population name -> :class:`NeuronPlan` (planned with ``paired``).
    synapses : dict
        Projection name -> :class:`StaticSynapse`, changed in place.
    """
    for proj in spec.projections:
        syn = synapses[proj.name]
        if syn.nestml is not None:
            plan = plans[proj.target]
            syn.nest_model = syn.nestml.nest_name(plan.nestml.name, plan.paired)
