"""The compiled chunk network of Diehl & Cook (2015) training: many presentations in one run.

:func:`chunk_spec` turns a Diehl & Cook network spec (populations ``Ae``,
``Ai``, input ``X``, projections ``XeAe``, ``AeAi``, ``AiAe``, as in
``network_specs/diehl_cook_2015.yaml``) into a spec that presents ``K``
samples one after another inside a single simulation, so one standalone
binary, compiled once, trains (or evaluates) a whole chunk of the data set:

* ``X`` becomes a population of Poisson sources ``rate : Hz`` (threshold
  ``rand() < rate*dt``, written ``(rand() + phase) % 1 < rate*dt`` so that a
  per-run random ``phase`` in ``[0, 1)`` changes the spike trains of every
  run although the compiled seed is fixed; ``(u + phase) mod 1`` is uniform
  for uniform ``u``, so each source is still Poisson);
* a one-neuron controller ``ctl`` holds the sample pointer ``k`` and the input
  ``intensity``; an ``Ae -> ctl`` projection counts the excitatory spikes of
  the current slot (``count``);
* at the start of every slot (``slot = presentation + rest``), in this order:
  ``ctl`` decides -- ``count >= min_spikes``: advance ``k`` and reset the
  intensity; else raise the intensity by ``intensity_step`` and show the
  same sample again (the paper's rule) -- and spikes; its spike reaches the
  ``ctl -> X`` synapses, which load the rates ``stim(k*slot, i) * intensity /
  intensity0`` (``stim`` holds one row per sample, ``pixel/4`` Hz) before
  ``X`` draws its spikes (``ctl``, ``ctl -> X`` and ``X`` run in that order
  in the ``groups`` slot); ``Ae`` and ``Ai`` are reset to rest
  (``v = v_rest``, ``ge = gi = 0``) and the STDP traces to 0 (instead of
  simulating the paper's 150 ms rest, unless ``rest > 0``: then ``X`` is
  silent for ``rest`` after each presentation); every excitatory neuron's
  incoming weights are scaled to sum ``weight_total`` (the paper normalises
  before every presentation too);
* plasticity is switched by the per-neuron flag ``Ae.plastic`` (1 training,
  0 testing), so training and testing run the *same* binary: with
  ``plastic = 0`` every weight change of the STDP rule is undone, the
  normalisation leaves ``w`` unchanged and ``theta`` is held at
  ``theta_fix`` before every threshold test (no growth, no decay);
* Diehl & Cook's STDP rule runs in an equivalent cheaper form
  (:func:`neuron_trace_rule`, ``ChunkConfig.traces``): the postsynaptic
  traces live on ``Ae`` and the presynaptic trace is the synapse's last
  spike-arrival time, so an input spike costs no ``exp()``; any other rule
  runs as written, its weight changes undone by ``w = plastic*w + (1 -
  plastic)*w_fix`` after its statements (``w_fix`` = the weights of the run);
* a Poisson source with rate 0 (a blank pixel, or any source during a rest)
  draws no random number.

The run lasts ``K*slot + dt``: the extra step lets the controller decide on
the last slot, so ``ctl.k`` at the end is the number of samples consumed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from biosnn.errors import SpecError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["ChunkConfig", "chunk_spec", "check_parts", "event_driven_variables", "run_values", "slot_steps",
           "REQUIRED_PARTS", "is_diehl_cook_rule", "neuron_trace_rule", "TRACE_FORMS"]

#: Values of :attr:`ChunkConfig.traces`.
TRACE_FORMS = ("auto", "neuron", "synapse")

#: Parts a Diehl & Cook spec must have (populations, input, projections).
REQUIRED_PARTS = {"populations": ("Ae", "Ai"), "inputs": ("X",), "projections": ("XeAe", "AeAi", "AiAe")}

_REST_CODE = "v = v_rest\nge = 0\ngi = 0"
_EVENT_DRIVEN = re.compile(r"^\s*d(\w+)\s*/\s*dt\s*=.*\(\s*[^)]*event-driven[^)]*\)\s*$")


@dataclass(frozen=True)
class ChunkConfig:
    """Sizes and presentation protocol of the chunk network.

    ``n_exc``, ``n_in``, ``slots``, ``presentation``, ``rest`` and
    ``input_shape`` shape the compiled network (changing one recompiles);
    ``min_spikes``, ``intensity0``, ``intensity_step`` and ``weight_total``
    are variables of the network (``ctl.*``, ``Ae.wtotal``) given per run.

    Parameters
    ----------
    n_exc : int
        Excitatory (and inhibitory) neurons.
    n_in : int
        Input sources (pixels).
    slots : int
        Presentation slots per run (``K``).
    presentation : float
        Presentation time per slot, seconds (the paper: 0.35).
    rest : float
        Zero-input time after each presentation, seconds (the paper: 0.15;
        0 = reset the state instantly instead).
    min_spikes : int
        A presentation with fewer excitatory spikes is repeated (the paper: 5).
    intensity0 : float
        Starting input intensity; ``stim`` is the rate at this intensity (the paper: 2).
    intensity_step : float
        Intensity added per repetition (the paper: 1).
    weight_total : float
        Sum of each excitatory neuron's input weights after normalisation
        (the paper: 78 for 784 inputs).
    input_shape : tuple of int
        ``(C, H, W)`` of the input.
    traces : {"auto", "neuron", "synapse"}
        Where the STDP traces of ``XeAe`` live (see :func:`neuron_trace_rule`):
        ``"neuron"`` -- Diehl & Cook's rule rewritten with the postsynaptic
        traces on ``Ae`` and the presynaptic trace as the last arrival time
        (the same rule, about 2.5 times less CPU time); ``"synapse"`` -- the spec's rule
        as written (event-driven traces on every synapse); ``"auto"`` (default)
        -- ``"neuron"`` when the spec's rule is Diehl & Cook's, else ``"synapse"``.
    """

    n_exc: int
    n_in: int
    slots: int
    presentation: float = 0.35
    rest: float = 0.0
    min_spikes: int = 5
    intensity0: float = 2.0
    intensity_step: float = 1.0
    weight_total: float = 78.0
    input_shape: tuple = (1, 28, 28)
    traces: str = "auto"

    @property
    def slot(self) -> float:
        """Length of one slot, seconds."""
        return self.presentation + self.rest


def run_values(cfg: ChunkConfig) -> dict:
    """The controller's protocol variables (``ctl.<name>``) of ``cfg``; arrays, so not part of the build."""
    return {"intensity": cfg.intensity0, "intensity0": cfg.intensity0, "min_spikes": cfg.min_spikes,
            "intensity_step": cfg.intensity_step}


def event_driven_variables(equations: str) -> list[str]:
    """Names of the ``(event-driven)`` variables of synaptic equations (the STDP traces)."""
    return [mt.group(1) for line in equations.splitlines() if (mt := _EVENT_DRIVEN.match(line))]


def check_parts(spec: m.NetworkSpec) -> None:
    """Raise :class:`SpecError` unless ``spec`` has the parts of a Diehl & Cook network."""
    names = {"populations": spec.population_names, "inputs": [i.name for i in spec.inputs],
             "projections": [p.name for p in spec.projections]}
    for kind, required in REQUIRED_PARTS.items():
        missing = [n for n in required if n not in names[kind]]
        if missing:
            raise SpecError(f"a Diehl & Cook network needs {kind} {list(required)}; '{spec.name}' lacks "
                            f"{missing}", field=kind,
                            fix="start from network_specs/diehl_cook_2015.yaml and keep its part names")
    if "theta" not in spec.neuron_model(spec.population("Ae")).equations:
        raise SpecError("population 'Ae' has no adaptive threshold 'theta'", field="populations.Ae.model",
                        fix="use the adaptive_lif_dc model (or a model with a 'theta : volt' threshold)")


def _lines(code: str | None) -> list[str]:
    return [" ".join(line.split()) for line in (code or "").splitlines() if line.strip()]


def is_diehl_cook_rule(model: m.SynapseModel) -> bool:
    """Whether ``model``'s equations and statements are those of Diehl & Cook's STDP rule.

    The rule of :func:`biosnn.models.plasticity.stdp_diehl_cook` (traces
    ``pre``, ``post1``, ``post2``, weight ``w``), with at most one delivery
    statement ``<var>_post += w`` before it; constants may differ.
    """
    from biosnn.models.plasticity import stdp_diehl_cook
    ref = stdp_diehl_cook(target_var=None)
    if not all(isinstance(code, (str, type(None))) for code in (model.on_pre, model.on_post)):
        return False  # pathways
    pre = _lines(model.on_pre)
    delivery = [line for line in pre if re.fullmatch(r"\w+_post \+= w", line)]
    return (len(delivery) <= 1 and pre[len(delivery):] == _lines(ref.on_pre)
            and _lines(model.on_post) == _lines(ref.on_post)
            and sorted(_lines(model.equations)) == sorted(_lines(ref.equations)))


def neuron_trace_rule(model: m.SynapseModel, parameters: dict | None = None):
    """Diehl & Cook's STDP rule with its traces moved off the synapses (the same rule).

    The spec's form (:func:`biosnn.models.plasticity.stdp_diehl_cook`) keeps
    three event-driven traces on each of the ``n_in * n_exc`` synapses, so
    every input spike arriving at a synapse evaluates three ``exp()`` (pre,
    post1, post2).  Here:

    * ``post1``, ``post2`` depend only on the spikes of the postsynaptic
      neuron, so they are variables of ``Ae``: set to 1 by its reset,
      multiplied by ``exp(-dt/tc)`` once per step before the synapses act
      (the exact solution of ``dpost/dt = -post/tc`` on the grid); the
      synapses read ``post1_post``, ``post2_post``.  The reset runs after the
      synaptic pathways, so ``on_post`` reads ``post2`` before this spike sets
      it, as the original's ``post2before``.
    * ``pre`` cannot move to the input neuron: the inputs have per-synapse
      delays (0-10 ms), and the trace is set when the spike *arrives*.  The
      synapse keeps the arrival time ``lastpre`` instead (``pre = 1.0``
      becomes ``lastpre = t``) and ``on_post`` evaluates
      ``pre = exp((lastpre - t)/tc_pre_ee)``, the value of the event-driven
      trace (which is only ever reset to 1, never incremented); "no arrival
      yet" is ``lastpre = -1e9 s`` (``pre = 0``).
    * The plasticity gate (``Ae.plastic``; 1 learn, 0 frozen) is folded into
      each weight update, ``w = plastic*clip(...) + (1 - plastic)*w``, exact
      for 0 and 1, so no copy ``w_fix`` of the weights is needed.

    Values differ from the per-synapse form only by floating-point rounding
    (a product of per-step factors instead of per-event ``exp()``), see
    ``tests/test_diehl_cook.py``.

    Parameters
    ----------
    model : SynapseModel
        A rule for which :func:`is_diehl_cook_rule` holds.
    parameters : dict, optional
        The projection's parameter overrides (time constants).

    Returns
    -------
    synapse : SynapseModel
        The synaptic part (``w``, ``lastpre``); reads ``plastic_post``.
    neuron : dict
        ``equations``, ``reset`` (statements to append to the postsynaptic
        model), ``decay`` (code of a per-step operation), ``rest`` (code for
        the slot start) and ``parameters`` (the two post time constants).
    """
    if not is_diehl_cook_rule(model):
        raise SpecError("the XeAe rule is not Diehl & Cook's STDP rule, so its traces cannot be moved to the "
                        "neurons", field="projections.XeAe.model",
                        fix="use traces='synapse' (the rule as written) or the stdp_diehl_cook statements")
    delivery = _lines(model.on_pre)[:-2]
    params = {**model.parameters, **(parameters or {})}
    gate = "plastic_post*clip({}, 0, wmax_ee) + (1 - plastic_post)*w"
    synapse = m.SynapseModel(
        equations="w : 1\nlastpre : second",
        on_pre="\n".join(delivery + ["lastpre = t", "w = " + gate.format("w - nu_ee_pre*post1_post")]),
        on_post="w = " + gate.format("w + nu_ee_post*exp((lastpre - t)/tc_pre_ee)*post2_post"),
        parameters=model.parameters, method=model.method,
        description=model.description + " Post traces on the neurons, pre trace as arrival time; gated by "
                                        "Ae.plastic.")
    neuron = {"equations": "post1 : 1\npost2 : 1", "reset": "post1 = 1.0\npost2 = 1.0",
              "decay": "post1 = post1*exp(-dt/tc_post_1_ee)\npost2 = post2*exp(-dt/tc_post_2_ee)",
              "rest": "post1 = 0\npost2 = 0",
              "parameters": {k: params[k] for k in ("tc_post_1_ee", "tc_post_2_ee")}}
    return synapse, neuron


def _seconds_text(value: float) -> str:
    return f"{value * 1e3!r}*ms"


def _gate(code: str | None, weight: str) -> str | None:
    """Plasticity statements followed by the gate that undoes the weight change when ``plastic = 0``."""
    if not code or not re.search(rf"\b{weight}\s*=", code):
        return code
    return f"{code}\n{weight} = plastic_post*{weight} + (1 - plastic_post)*{weight}_fix"


def _ae_population(spec, pop: m.Population, cfg: ChunkConfig, slot: str, traces: dict | None) -> m.Population:
    model = spec.neuron_model(pop)
    traces = traces or {"equations": "", "reset": "", "rest": "", "parameters": {}}
    gated = m.NeuronModel(
        equations=model.equations + "\nplastic : 1 (constant)\ntheta_fix : volt (constant)\nwsum : 1\n"
                                   "wtotal : 1 (constant)\n" + traces["equations"],
        threshold=model.threshold, reset="\n".join(filter(None, [model.reset, traces["reset"]])),
        refractory=model.refractory, parameters=model.parameters, method=model.method,
        description=model.description + " Plasticity switch 'plastic' (1 learn, 0 frozen theta).")
    initial = {**pop.initial, "theta": ArrayValue(np.zeros(cfg.n_exc), "mV"),
               "theta_fix": ArrayValue(np.zeros(cfg.n_exc), "mV"),
               "plastic": ArrayValue(np.ones(cfg.n_exc)), "wtotal": ArrayValue(np.full(cfg.n_exc, float(cfg.weight_total)))}
    rest = "\n".join(filter(None, [_REST_CODE, "wsum = 0", traces["rest"]]))
    ops = (m.Operation(rest, dt=slot, when="start", order=1),
           m.Operation("theta = plastic*theta + (1 - plastic)*theta_fix", when="before_thresholds"))
    if traces.get("decay"):   # every step, after the slot reset, before the synapses
        ops += (m.Operation(traces["decay"], when="start", order=2),)
    return m.Population("Ae", cfg.n_exc, gated, parameters={**pop.parameters, **traces["parameters"]},
                        initial=initial, operations=ops)


def chunk_spec(spec: m.NetworkSpec, cfg: ChunkConfig, delay=None) -> m.NetworkSpec:
    """The training/testing network of ``cfg.slots`` presentations built from a Diehl & Cook spec.

    Parameters
    ----------
    spec : NetworkSpec
        A network with the parts of ``network_specs/diehl_cook_2015.yaml``
        (see :data:`REQUIRED_PARTS`); its models, constants, connectivity and
        STDP rule are used, its sizes are replaced by ``cfg``.
    cfg : ChunkConfig
        Sizes and the presentation protocol.
    delay : array_like, optional
        Input delays, seconds, one per ``XeAe`` synapse (default 0).  They are
        data of the build, not a run override: Brian2's standalone device
        cannot take synaptic delays as run arguments.

    Returns
    -------
    NetworkSpec
        Named ``<spec name>_chunk``.  Values to give per run (overrides):
        ``stim`` ``(slots, n_in)`` Hz, ``X.phase``, ``ctl.intensity``,
        ``XeAe.w`` and ``XeAe.w_fix``, ``Ae.theta`` and ``Ae.theta_fix``
        (volt), ``Ae.plastic``.  The weights and thresholds in the spec are
        zero placeholders, so every spec of the same sizes compiles to the
        same binary (other delays only regenerate its data files).

    Raises
    ------
    SpecError
        If a required part is missing or the configuration is invalid.
    """
    check_parts(spec)
    if cfg.slots < 1 or cfg.n_exc < 1 or cfg.n_in < 1:
        raise SpecError(f"slots, n_exc and n_in must be positive, got {cfg.slots}, {cfg.n_exc}, {cfg.n_in}",
                        fix="give at least one slot, neuron and input")
    if cfg.presentation <= 0 or cfg.rest < 0:
        raise SpecError(f"presentation must be > 0 and rest >= 0 s, got {cfg.presentation}, {cfg.rest}",
                        fix="e.g. presentation=0.35, rest=0")
    dt_s = spec.dt_seconds()
    steps = cfg.slot / dt_s
    if abs(steps - round(steps)) > 1e-6:
        raise SpecError(f"the slot ({cfg.slot} s) is not a whole number of time steps ({dt_s} s)",
                        fix="choose presentation and rest as multiples of dt")
    slot = _seconds_text(cfg.slot)
    # The slot clock runs a hair (1e-12 relative) ahead of the main clock: Brian2 treats two clocks
    # as simultaneous only within 1e-14 s, so with slot = 700*dt exactly the rounding of i*slot vs
    # 700*i*dt would put the slot operations sometimes after, sometimes before the main step; ahead,
    # they always run first, as at the start of step 700*i.
    slot_clock = f"{cfg.slot * (1 - 1e-12)!r}*second"
    n_syn = cfg.n_in * cfg.n_exc
    xeae, aeai, aiae = (spec.projection(n) for n in ("XeAe", "AeAi", "AiAe"))
    stdp = spec.synapse_model(xeae)
    wv = xeae.weight_var
    if cfg.traces not in TRACE_FORMS:
        raise SpecError(f"traces must be one of {list(TRACE_FORMS)}, got {cfg.traces!r}",
                        fix="'neuron' (fast, Diehl & Cook's rule only), 'synapse' (as written) or 'auto'")
    on_neurons = cfg.traces == "neuron" or (cfg.traces == "auto" and wv == "w" and is_diehl_cook_rule(stdp))
    if on_neurons:
        gated, neuron_traces = neuron_trace_rule(stdp, xeae.parameters)
        slot_reset = f"wsum_post += {wv}\nlastpre = -1e9*second"
    else:
        traces = event_driven_variables(stdp.equations)
        gated, neuron_traces = m.SynapseModel(
            equations=stdp.equations + f"\n{wv}_fix : 1 (constant)",
            on_pre=_gate(stdp.on_pre, wv), on_post=_gate(stdp.on_post, wv), parameters=stdp.parameters,
            method=stdp.method, description=stdp.description + " Gated by Ae.plastic."), None
        slot_reset = f"wsum_post += {wv}" + "".join(f"\n{v} = 0" for v in traces)

    pops = [
        _ae_population(spec, spec.population("Ae"), cfg, slot_clock, neuron_traces),
        m.Population("Ai", cfg.n_exc, spec.population("Ai").model, parameters=spec.population("Ai").parameters,
                     initial=spec.population("Ai").initial,
                     operations=(m.Operation(_REST_CODE, dt=slot_clock, when="start", order=1),)),
        m.Population("X", cfg.n_in, m.NeuronModel(
            "rate : Hz\nphase : 1 (constant)\nt_on : second",
            # rate and time first: a silent source (most MNIST pixels) draws no random number
            threshold="rate > 0*Hz and t - t_on < presentation and (rand() + phase) % 1.0 < rate*dt",
            parameters={"presentation": _seconds_text(cfg.presentation - dt_s / 2)},
            description="Poisson sources; the rate is loaded by the controller's spike at each slot start"),
            shape=tuple(cfg.input_shape), initial={"phase": ArrayValue(np.zeros(cfg.n_in))}, order=1),
        m.Population("ctl", 1, m.NeuronModel(
            "k : 1\nintensity : 1\ncount : 1\ncount_last : 1\nok : 1\nfail : 1\nfire : 1\n"
            "min_spikes : 1 (constant)\nintensity0 : 1 (constant)\nintensity_step : 1 (constant)",
            threshold="fire > 0.5", reset="fire = 0", parameters={"t_eps": _seconds_text(dt_s / 2)},
            description="presentation controller: sample pointer k, input intensity, spike count; "
                        "spikes once per slot to load the next input"),
            initial={name: ArrayValue([float(value)]) for name, value in run_values(cfg).items()},
            order=0,
            operations=(m.Operation(
                "ok = int(count >= min_spikes)*int(t > t_eps)\nfail = int(count < min_spikes)*int(t > t_eps)\n"
                "k = k + ok\nintensity = intensity + fail*intensity_step + ok*(intensity0 - intensity)\n"
                "count_last = count\ncount = 0\nfire = 1", dt=slot_clock, when="start", order=0),)),
    ]
    projections = [
        m.Projection("XeAe", "X", "Ae", gated, xeae.connect, weights=ArrayValue(np.zeros(n_syn)),
                     weight_var=wv, delay=ArrayValue(np.zeros(n_syn) if delay is None else np.asarray(delay, dtype=np.float64),
                                                   "second"), parameters=xeae.parameters,
                     operations=(
                         m.Operation(slot_reset, dt=slot_clock, when="start", order=2),
                         m.Operation(f"{wv} = {wv}*(plastic_post*wtotal_post/clip(wsum_post, 1e-12, inf)"
                                     " + (1 - plastic_post))", dt=slot_clock, when="start", order=3))),
        m.Projection("AeAi", "Ae", "Ai", aeai.model, aeai.connect, weights=aeai.weights,
                     weight_var=aeai.weight_var, delay=aeai.delay, initial=aeai.initial,
                     parameters=aeai.parameters),
        m.Projection("AiAe", "Ai", "Ae", aiae.model, aiae.connect, weights=aiae.weights,
                     weight_var=aiae.weight_var, delay=aiae.delay, initial=aiae.initial,
                     parameters=aiae.parameters),
        m.Projection("AeCtl", "Ae", "ctl", m.SynapseModel("", on_pre="count_post += 1"),
                     m.Explicit(ArrayValue(np.arange(cfg.n_exc)), ArrayValue(np.zeros(cfg.n_exc, dtype=np.int64)))),
        m.Projection("CtlX", "ctl", "X", m.SynapseModel(
            "", on_pre="rate_post = stim(k_pre*slot, j)*intensity_pre/intensity0_pre\nt_on_post = t",
            description="loads sample k at the current intensity into the Poisson sources"),
            m.Explicit(ArrayValue(np.zeros(cfg.n_in, dtype=np.int64)), ArrayValue(np.arange(cfg.n_in))),
            parameters={"slot": slot}, order=0),
    ]
    monitors = [m.SpikeMonitor("Ae"),
                m.StateMonitor("ctl", ("k", "intensity", "count_last"), dt=slot_clock, when="start", order=5)]
    duration = cfg.slots * cfg.slot + dt_s
    return m.NetworkSpec(
        f"{spec.name}_chunk", populations=pops, projections=projections, monitors=monitors,
        dt=spec.dt, duration=_seconds_text(duration), seed=0 if spec.seed is None else spec.seed,
        neuron_models=spec.neuron_models, synapse_models=spec.synapse_models, namespace=spec.namespace,
        timed_arrays=[m.TimedArraySpec("stim", ArrayValue(np.zeros((cfg.slots, cfg.n_in)), "Hz"), slot)],
        description=f"Diehl & Cook training/testing chunk built from '{spec.name}': {cfg.slots} slots of "
                    f"{cfg.presentation * 1e3:g} ms presentation + {cfg.rest * 1e3:g} ms rest, "
                    f"{cfg.n_in} inputs, {cfg.n_exc} excitatory neurons.")


def slot_steps(spec: m.NetworkSpec, cfg: ChunkConfig) -> int:
    """Time steps per slot."""
    return int(round(cfg.slot / spec.dt_seconds()))
