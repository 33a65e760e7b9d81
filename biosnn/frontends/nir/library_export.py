"""Specs of the library's reset-by-subtraction IF neuron -> NIR (``IF`` nodes behind ``Delay`` and ``Affine``).

A spec whose populations all use :func:`biosnn.models.neurons.if_subtract` (``dv/dt = I/C_m``, a spike
when ``v >= v_th``, then ``v -= v_th``), connected by ``delta_voltage`` projections (``v_post += w``) and
driven by one :class:`~biosnn.spec.SpikeTimesInput`, is a NIR graph with the same spikes:

* every population is an ``IF`` node with ``r = 1/C_m`` and ``v_threshold = v_th`` (values in SI units);
* Brian2 applies a spike's jump after the step's update, so the target integrates it one step later: every
  projection is a ``Delay`` of one step (``dt``) on its source, then an ``Affine`` of weights
  ``w C_m / dt`` (so that ``dt r`` times them is ``w``) whose bias is the target's constant current ``I``
  (on its first projection);
* the graph's metadata holds the discretisation (``dt``, ``threshold=">="``, ``reset="subtract"``); the Input
  takes the input's spikes as a 0/1 raster, one row per step (:func:`input_raster`); the ``Output`` is the
  one population that sends no projection.

Refused with the population or projection and the reason: other models (``lif``: Brian2 adds a jump
arriving in the step of a reset-to-value spike before that reset, and loses it, where NIR's next step keeps
it; others: see :data:`~biosnn.frontends.nir.exporter.LIBRARY_REASONS`), schedule orders or operations,
synaptic delays, other synapse models, inputs other than one non-periodic spike-times input, initial
potentials, and more or fewer than one sink population.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from biosnn.errors import ConversionError
from biosnn.frontends.nir.flavors import METADATA_KEY, Discretisation
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue, parse_quantity

__all__ = ["library_spec_to_nir", "is_library_if_spec", "input_raster"]


def is_library_if_spec(spec) -> bool:
    """Whether every population of ``spec`` uses the library model ``if_subtract`` (by name)."""
    return bool(spec.populations) and all(p.model == "if_subtract" and p.model not in spec.neuron_models
                                          for p in spec.populations)


def _refuse(where: str, why: str):
    raise ConversionError(f"to_nir: {where}: {why}; NIR export of library specs takes if_subtract populations, "
                          "delta_voltage projections without delays and one spike-times input")


def _per_neuron(pop, name, params):
    if name in pop.initial:
        v = pop.initial[name]
        values = v.si() if isinstance(v, ArrayValue) else float(parse_quantity(v, field=f"{pop.name}.{name}"))
    elif name in params:
        values = float(parse_quantity(params[name], field=f"{pop.name}.{name}"))
    else:
        values = 0.0
    return np.broadcast_to(np.asarray(values, dtype=np.float64), (pop.size,)).copy()


def _weights(spec, proj) -> np.ndarray:
    """Dense ``(n_post, n_pre)`` weight matrix in volt."""
    from biosnn.spec.expand import expand_projection
    conn = expand_projection(spec, proj)
    w = proj.weights
    if w is None:
        _refuse(f"projection '{proj.name}'", "it has no weights")
    values = w.si() if isinstance(w, ArrayValue) else float(parse_quantity(w, field=f"{proj.name}.weights"))
    values = np.broadcast_to(np.asarray(values, dtype=np.float64), (len(conn.i),))
    n_pre, n_post = spec.node(proj.source).size, spec.node(proj.target).size
    W = np.zeros((n_post, n_pre))
    np.add.at(W, (np.asarray(conn.j), np.asarray(conn.i)), values)
    return W


def _check(spec):
    for pop in spec.populations:
        if pop.order is not None or pop.operations:
            _refuse(f"population '{pop.name}'", "it has a schedule order or operations")
        for var in pop.initial:
            if var != "I" and not (var == "v" and not np.any(_per_neuron(pop, "v", {}))):
                _refuse(f"population '{pop.name}'", f"initial value of '{var}' (NIR nodes start at v = 0; only the "
                        "constant current I maps)")
    if len(spec.inputs) != 1 or not isinstance(spec.inputs[0], m.SpikeTimesInput) or spec.inputs[0].period:
        _refuse("inputs", f"{[type(i).__name__ for i in spec.inputs]} (one non-periodic SpikeTimesInput needed)")
    for proj in spec.projections:
        if proj.model != "delta_voltage" or proj.model in spec.synapse_models:
            _refuse(f"projection '{proj.name}'", f"model {proj.model!r} (delta_voltage maps)")
        if proj.delay is not None and (isinstance(proj.delay, ArrayValue) or parse_quantity(proj.delay) != 0):
            _refuse(f"projection '{proj.name}'", "a synaptic delay (only Brian2's one-step latency maps)")
        if proj.order is not None:
            _refuse(f"projection '{proj.name}'", "a schedule order")


def input_raster(spec, steps: int | None = None) -> np.ndarray:
    """The 0/1 ``(steps, size)`` raster of a spec's spike-times input: the NIR Input's rows.

    ``steps`` defaults to the spec's duration in steps.
    """
    inp = spec.inputs[0]
    dt = spec.dt_seconds()
    steps = int(round(spec.duration_seconds() / dt)) if steps is None else int(steps)
    x = np.zeros((steps, inp.size))
    k = np.rint(inp.times.si() / dt).astype(np.int64)
    keep = k < steps
    x[k[keep], np.asarray(inp.indices.data)[keep]] = 1.0
    return x


def library_spec_to_nir(spec):
    """The NIR graph of an ``if_subtract`` spec (see the module docstring).

    Returns
    -------
    nir.NIRGraph
        Nodes: the input's name (Input), ``<projection>_delay`` and ``<projection>`` (Affine) per
        projection, one IF per population (its name), ``output``.

    Raises
    ------
    ConversionError
        Specs that do not map, naming the population, projection or input and why.
    """
    import nir
    _check(spec)
    dt = spec.dt_seconds()
    inp = spec.inputs[0]
    names = {p.name for p in spec.populations}
    nodes = {inp.name: nir.Input(input_type={"input": np.array([inp.size])})}
    edges = []
    params = {}
    for pop in spec.populations:
        merged = {**spec.neuron_model(pop).parameters, **pop.parameters}
        c_m, v_th = (_per_neuron(pop, k, merged) for k in ("C_m", "v_th"))
        params[pop.name] = (c_m, _per_neuron(pop, "I", merged))
        nodes[pop.name] = nir.IF(r=1.0 / c_m, v_threshold=v_th, v_reset=np.zeros(pop.size))
    fed = set()
    for proj in spec.projections:
        if proj.target not in names:
            _refuse(f"projection '{proj.name}'", f"its target '{proj.target}' is not a population")
        c_m, current = params[proj.target]
        W = _weights(spec, proj) * (c_m / dt)[:, None]
        n_pre = spec.node(proj.source).size
        delay, affine = f"{proj.name}_delay", proj.name
        nodes[delay] = nir.Delay(delay=np.full(n_pre, dt))
        nodes[affine] = nir.Affine(weight=W, bias=current if proj.target not in fed else np.zeros(len(W)))
        fed.add(proj.target)
        edges += [(proj.source, delay), (delay, affine), (affine, proj.target)]
    for pop in spec.populations:
        if pop.name not in fed:
            _refuse(f"population '{pop.name}'", "no projection reaches it")
    sinks = sorted(names - {p.source for p in spec.projections})
    if len(sinks) != 1:
        _refuse("output", f"populations {sinks} send no projection; NIR has one Output (give exactly one sink)")
    size = next(p.size for p in spec.populations if p.name == sinks[0])
    nodes["output"] = nir.Output(output_type={"output": np.array([size])})
    edges.append((sinks[0], "output"))
    disc = Discretisation(dt=dt, threshold=">=", reset="subtract")
    meta = {"producer": "biosnn", METADATA_KEY: json.dumps(asdict(disc), sort_keys=True),
            "biosnn_input": f"spikes of '{inp.name}' as a 0/1 raster, one row per step of {dt!r} s"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)
