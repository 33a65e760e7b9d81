"""NIR graphs on NEST: feed-forward IF/LIF graphs as a spec without operations, layers shifted by a step each.

The Brian2 form of an imported graph (:func:`~biosnn.frontends.nir.from_nir`) steps every node with an
operation and passes a spike through all layers within one step; NEST has no operations and delivers a
spike one step later at the earliest.  A feed-forward graph whose spiking nodes are ``IF`` or ``LIF`` still
runs there step for step, shifted: neuron layer ``k`` (``k`` = the most neuron nodes on a path from the Input
to it, itself included) computes NIR step ``n`` in simulation step ``n + k - 1``:

* the static nodes between two neuron layers (Affine, Linear, Scale, Conv, pooling, Flatten) are composed
  into one weight matrix per (source layer, target layer), a :class:`~biosnn.spec.Explicit` projection of
  ``delta`` synapses (``v_post += w``) delayed by ``k_target - k_source - 1`` steps;
* what reaches a layer from the Input through static nodes, plus the static nodes' biases, is precomputed
  per step and written into the layer's ``x_ext`` by a :class:`~biosnn.spec.CurrentInput` (zero before the
  layer's first step, as is ``v_leak``, so every neuron starts its first step at ``v = 0``);
* a spike added before the step's update enters as NIR's input does when the weight carries the update's
  factor on its input: IF ``dt r`` (``integrator_input="dt"``) or ``r``; LIF forward Euler
  ``(dt/tau) r / (1 - dt/tau)``, exact ``(1 - a) r / a`` with ``a = exp(-dt/tau)`` (the step multiplies the jump
  by ``1 - dt/tau`` or ``a``); snnTorch's reset one step late (``subtract_next_step``) is a self-projection
  adding ``-v_threshold`` divided by the same multiplier;
* the models are equation strings (``dv/dt = (v_leak - v + r (x_ext))/tau``, ``euler`` or ``exact``) that the
  NEST backend translates to NESTML; spikes are shifted back, and an ``Output`` fed through static nodes is
  computed from the shifted spikes.

The spec is for NEST: NEST adds a jump that arrives in the step of a reset-to-``v_reset`` spike after that
reset, as NIR's next step does, where Brian2 applies it before its reset and loses it (so on Brian2 this spec
differs for ``reset="value"``; the Brian2 form of the graph is :func:`~biosnn.frontends.nir.from_nir`'s).
On NEST the results equal the Brian2 form's up to floating-point rounding (the weights carry the factors, composed
static maps sum in another order), so a membrane within ~1e-15 of its threshold could differ.  Refused,
with the node and the reason: recurrent edges, Delay, CubaLIF/LI/CubaLI/I/Threshold nodes, Rockpool's
discretisation (``method="rockpool"``) and non-spiking nodes feeding the Output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biosnn.errors import ConversionError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["nest_build", "NestImported", "nest_spikes", "NEST_NEURONS"]

#: NIR neuron node types that run on NEST
NEST_NEURONS = ("IF", "LIF")


@dataclass
class NestImported:
    """What :func:`nest_build` made: the spec, the imported graph (:class:`~biosnn.frontends.nir.importer.Imported`),
    the neuron layer of every neuron node and the linear forms of the Output's inputs."""

    spec: m.NetworkSpec
    imported: object
    layer: dict
    output_form: tuple


def _refuse(why: str):
    raise ConversionError(f"this NIR graph cannot run on NEST: {why}. Run it on a Brian2 backend ('runtime', "
                          "'cython', 'cpp_standalone', 'cuda_standalone')")


def _matrix(spec, proj, n_pre, n_post):
    import scipy.sparse as sp
    from biosnn.spec.expand import expand_projection
    conn = expand_projection(spec, proj)
    if proj.weights is not None:  # per synapse, in the order of the expanded synapses
        w = np.broadcast_to(np.asarray(proj.weights.data, dtype=np.float64), (len(conn.i),))
    else:  # a kernel's or a pool's own weights, or identity
        w = np.ones(len(conn.i)) if conn.weights is None else np.asarray(conn.weights, dtype=np.float64)
    return sp.csr_matrix((w, (np.asarray(conn.j), np.asarray(conn.i))), shape=(n_post, n_pre))


def _forms(imp):
    """Linear form of every node's input: node -> ({source neuron or input: matrix}, bias vector)."""
    import scipy.sparse as sp
    g, spec, names = imp.graph, imp.spec, imp.populations
    pops = {p.name: p for p in spec.populations}
    size = {k: int(np.prod(g.shapes[k])) for k in g.nodes}
    projs = {(p.source, p.target): p for p in spec.projections}
    kinds = {k: type(n).__name__ for k, n in g.nodes.items()}
    out_of = {}  # what a node sends, as a linear form of sources
    into = {}
    for k in sorted((k for k in g.nodes if k != g.output), key=lambda k: g.depth[k]):
        if k == g.input or kinds[k] in NEST_NEURONS:
            out_of[k] = ({k: sp.identity(size[k], format="csr")}, np.zeros(size[k]))
        if k == g.input:
            continue
        terms, bias = {}, np.asarray(pops[names[k]].initial["b"].data, dtype=np.float64).copy()
        for s, d in g.edges:
            if d != k:
                continue
            P = _matrix(spec, projs[(names[s], names[k])], size[s], size[k])
            src_terms, src_bias = out_of[s]
            for src, M in src_terms.items():
                terms[src] = terms[src] + P @ M if src in terms else P @ M
            bias = bias + P @ src_bias
        into[k] = (terms, bias)
        if kinds[k] not in NEST_NEURONS:
            out_of[k] = into[k]
    return into, out_of


def _check(imp):
    g, disc = imp.graph, imp.discretisation
    if g.back:
        _refuse(f"recurrent edges {sorted(g.back)} deliver within the loop's next step, which the layer shift "
                "(one step per neuron layer) cannot keep")
    for k, node in g.nodes.items():
        kind = type(node).__name__
        if kind in ("Input", "Output") or kind in NEST_NEURONS:
            continue
        if kind in ("CubaLIF", "LI", "CubaLI", "I", "Threshold", "Delay"):
            _refuse(f"node '{k}' is a {kind}; NEST runs NIR's {' and '.join(NEST_NEURONS)} nodes with static "
                    "nodes between them")
    if disc.method == "rockpool" and any(type(n).__name__ == "LIF" for n in g.nodes.values()):
        _refuse("Rockpool's LIF steps (method='rockpool') are not mapped; its LIF runs with method 'euler' or "
                "'exact' only")


def _model(kind, disc, next_step_reset):
    eqs = ["x_ext : 1", "v_threshold : 1 (constant)", "v_reset : 1 (constant)"]
    if kind == "IF":
        eqs = ["dv/dt = k*x_ext/second : 1", "k : 1 (constant)"] + eqs
        method = "euler"
    else:
        eqs = ["dv/dt = (v_leak_ext - v + r*x_ext)/tau : 1", "v_leak_ext : 1", "r : 1 (constant)",
               "tau : second (constant)"] + eqs
        method = disc.method
    reset = {"value": "v = v_reset", "subtract": "v = v - v_threshold"}.get(disc.reset, "")
    if next_step_reset:
        reset = ""
    return m.NeuronModel("\n".join(eqs), threshold=f"v {disc.threshold} v_threshold", reset=reset or None,
                         method=method, description=f"NIR {kind} for NEST: the graph's step with inputs as jumps")


def nest_build(graph_or_path, x, dt=None, flavor="auto", **choices) -> NestImported:
    """The NEST form of a feed-forward IF/LIF NIR graph for input ``x`` (see the module docstring).

    Raises
    ------
    ConversionError
        A graph or node that does not map, naming it and why.
    """
    import scipy.sparse as sp
    from biosnn.frontends.nir.importer import build
    from biosnn.frontends.nir.graph import _arr
    imp = build(graph_or_path, dt=dt, flavor=flavor, x=x, **choices)
    _check(imp)
    g, disc, names = imp.graph, imp.discretisation, imp.populations
    T, dt = imp.steps, disc.dt
    x = np.asarray(imp.spec.timed_arrays[0].values.data)
    into, out_of = _forms(imp)
    kinds = {k: type(n).__name__ for k, n in g.nodes.items()}
    neurons = [k for k in sorted(g.nodes, key=lambda k: g.depth[k]) if kinds[k] in NEST_NEURONS]
    layer = {g.input: 0}
    for k in neurons:
        layer[k] = 1 + max(layer[s] for s in into[k][0])
    steps = T + max(layer.values(), default=1) - 1
    tau_factor = 1.0 / dt if disc.tau_stored == "tau*dt" else 1.0
    pops, projs, inputs, monitors = [], [], [], []
    for k in neurons:
        node, kind, n, lay = g.nodes[k], kinds[k], int(np.prod(g.shapes[k])), layer[k]

        def per(field, node=node, k=k):
            return np.broadcast_to(_arr(getattr(node, field)), g.shapes[k]).ravel().astype(np.float64)
        theta, r = per("v_threshold"), per("r")
        initial = {"v_threshold": ArrayValue(theta), "v_reset": ArrayValue(per("v_reset"))}
        if kind == "IF":
            k_rate = r if disc.integrator_input == "dt" else r / dt
            gain, mult = dt * k_rate, np.ones(n)
            initial["k"] = ArrayValue(k_rate)
        else:
            tau = per("tau") * tau_factor
            a = dt / tau if disc.method == "euler" else 1.0 - np.exp(-dt / tau)
            mult = 1.0 - a  # what the step multiplies a jump by
            gain = a * r / mult
            initial.update(r=ArrayValue(r), tau=ArrayValue(tau, "second"))
        late = disc.reset == "subtract_next_step"
        pops.append(m.Population(names[k], n, _model(kind, disc, late), initial=initial))
        monitors.append(m.SpikeMonitor(names[k]))
        terms, bias = into[k]
        drive = np.zeros((steps, n))
        drive[lay - 1:lay - 1 + T] = bias
        for src, M in terms.items():
            if src == g.input:
                drive[lay - 1:lay - 1 + T] += (M @ x.T).T
                continue
            C = sp.coo_matrix(M)
            keep = np.flatnonzero(C.data != 0)
            keep = keep[np.lexsort((C.row[keep], C.col[keep]))]  # synapses sorted by (pre, post)
            delay = layer[k] - layer[src] - 1
            projs.append(m.Projection(
                f"{names[src]}__{names[k]}", names[src], names[k], "delta",
                connect=m.Explicit(ArrayValue(C.col[keep].astype(np.int64)), ArrayValue(C.row[keep].astype(np.int64))),
                weights=ArrayValue(C.data[keep] * gain[C.row[keep]]),
                delay=f"{delay * dt!r}*second" if delay else None))
        if late:
            projs.append(m.Projection(f"{names[k]}__reset", names[k], names[k], "delta", connect=m.OneToOne(),
                                      weights=ArrayValue(-theta / mult)))
        inputs.append(m.CurrentInput(f"x_{names[k]}", names[k], "x_ext", ArrayValue(drive), f"{dt!r}*second"))
        if kind == "LIF":
            leak = np.zeros((steps, n))
            leak[lay - 1:lay - 1 + T] = per("v_leak")
            inputs.append(m.CurrentInput(f"leak_{names[k]}", names[k], "v_leak_ext", ArrayValue(leak),
                                         f"{dt!r}*second"))
    out_terms, out_bias = {}, np.zeros(int(np.prod(g.shapes[g.output])))
    for s, d in g.edges:
        if d == g.output:
            terms, bias = out_of[s]
            for src, M in terms.items():
                out_terms[src] = out_terms[src] + M if src in out_terms else M
            out_bias = out_bias + bias
    spec = m.NetworkSpec(f"{imp.spec.name}_nest", populations=pops, projections=projs, inputs=inputs,
                         monitors=monitors, dt=f"{dt!r}*second", duration=f"{steps * dt!r}*second",
                         description=f"NEST form of a NIR graph (layers shifted by a step each): "
                                     f"{imp.spec.description}")
    return NestImported(spec, imp, layer, (out_terms, out_bias))


def nest_spikes(nimp: NestImported, rec) -> dict:
    """The :func:`~biosnn.frontends.nir.run_nir` dictionary from a run of :func:`nest_build`'s spec."""
    imp = nimp.imported
    g, T, dt = imp.graph, imp.steps, imp.discretisation.dt
    out = {}
    for k, lay in nimp.layer.items():
        if k == g.input:
            continue
        trains = rec.spikes[imp.populations[k]]
        step = np.rint(np.asarray(trains.times) / dt).astype(np.int64) - (lay - 1)
        keep = (step >= 0) & (step < T)
        r = np.zeros((T, int(np.prod(g.shapes[k]))), dtype=np.uint8)
        r[step[keep], np.asarray(trains.indices)[keep]] = 1
        out[k] = r.reshape((T, *g.shapes[k]))
    terms, bias = nimp.output_form
    x = np.asarray(imp.spec.timed_arrays[0].values.data)
    total = np.tile(bias, (T, 1))
    for src, M in terms.items():
        val = x if src == g.input else out[src].reshape(T, -1).astype(np.float64)
        total = total + (M @ val.T).T
    direct = all(s in out for s, d in g.edges if d == g.output) and len(terms) == 1 and not np.any(bias)
    if direct and total.max(initial=0) <= 1:
        total = total.astype(np.uint8)
    out["output"] = total.reshape((T, *g.shapes[g.output]))
    return out
