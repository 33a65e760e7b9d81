"""NIR graph -> :class:`~biosnn.spec.NetworkSpec`: one population per NIR node, one projection per edge."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from biosnn import connectivity as cx
from biosnn.errors import ConversionError
from biosnn.frontends.nir.flavors import resolve
from biosnn.frontends.nir.graph import NEURON_TYPES, FlatGraph, _arr, flatten, population_names, read_graph
from biosnn.frontends.nir.models import PARAMETERS, SPIKING, delay_model, node_model
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["from_nir", "build", "Imported", "INPUT_TABLE"]

INPUT_TABLE = "x_in"
_SYNAPSES = {
    "spike": m.SynapseModel("w : 1", on_pre="x_post += w", description="a spike adds w to the target's input"),
    "value": m.SynapseModel("w : 1", on_pre="x_post += w*y_pre",
                            description="adds w times the source's sent value y to the target's input"),
    "spike_identity": m.SynapseModel("", on_pre="x_post += 1", description="a spike adds 1 to the target's input"),
    "value_identity": m.SynapseModel("", on_pre="x_post += y_pre",
                                     description="adds the source's sent value y to the target's input"),
}


@dataclass
class Imported:
    """What :func:`build` made: the spec, NIR node name -> population, the flat graph and the settings."""

    spec: m.NetworkSpec
    populations: dict
    graph: FlatGraph
    flavor: str
    discretisation: object
    steps: int


def from_nir(graph_or_path, dt: float | None = None, flavor: str = "auto", *, x=None, steps: int | None = None,
             **choices) -> m.NetworkSpec:
    """A network spec that runs a NIR graph step for step as its producer does.

    Parameters
    ----------
    graph_or_path : nir.NIRGraph or str or Path
        The graph, or a ``.nir`` file.
    dt : float, optional
        Time step in seconds; default: the flavor's (``None`` for plain NIR: then required).
    flavor : str
        ``"auto"`` (the producer named in the file, else plain NIR), ``"nir"``, ``"snntorch"``,
        ``"norse"``, ``"spikingjelly"``, ``"sinabs"`` or ``"rockpool"``
        (see :mod:`biosnn.frontends.nir.flavors`).
    x : array_like, optional
        Input, shape ``(T, *input_shape)``: one row per step (spikes or currents); it becomes the
        timed array ``x_in`` (override it per run).  Default zeros.
    steps : int, optional
        Number of steps when ``x`` is not given (default 100).
    **choices
        Overrides of the :class:`~biosnn.frontends.nir.flavors.Discretisation` fields
        (``method``, ``reset``, ``threshold``, ``current``, ``integrator_input``, ``tau_stored``).

    Returns
    -------
    NetworkSpec
        Populations named after the NIR nodes (``1.lif`` -> ``n1_lif``), the input population
        ``input`` fed from ``x_in``; spike monitors on every spiking node.
    """
    return build(graph_or_path, dt=dt, flavor=flavor, x=x, steps=steps, **choices).spec


def build(graph_or_path, dt=None, flavor="auto", x=None, steps=None, **choices) -> Imported:
    """As :func:`from_nir`, returning an :class:`Imported` (the spec with its name map)."""
    graph = read_graph(graph_or_path)
    flavor, disc = resolve(graph, flavor, dt, **choices)
    g = flatten(graph)
    n_in = int(np.prod(g.shapes[g.input]))
    if x is None:
        steps = 100 if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ConversionError(f"steps must be a positive integer, got {steps!r}")
        x = np.zeros((int(steps), n_in))
    else:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim < 1 or x[0].size != n_in or x.shape[1:] not in (g.shapes[g.input], (n_in,), g.file_input_shape):
            raise ConversionError(f"input x has shape {x.shape}; the graph's Input '{g.input}' needs "
                                  f"(T, {', '.join(map(str, g.shapes[g.input]))})")
        x = x.reshape(len(x), n_in)
    names = population_names([k for k in g.nodes if k not in (g.input, g.output)])
    names[g.input] = "input"
    if "input" in [v for k, v in names.items() if k != g.input]:
        raise ConversionError("a NIR node other than the Input is called 'input'; rename it")
    tau_factor = 1.0 / disc.dt if disc.tau_stored == "tau*dt" else 1.0
    pops, projections, monitors = [], [], []
    biases = {k: np.zeros(int(np.prod(g.shapes[k]))) for k in g.nodes}
    for d in g.nodes:  # a static node adds its bias once, however many edges come in (NIR sums the inputs)
        first = next((s for s, t in g.edges if t == d), None)
        if first is not None and d != g.output:
            biases[d] = biases[d] + _edge(g, first, d)[2]
    # a recurrent edge delivers in step n what its source sent in step n - 1; in step 0 a static
    # source (e.g. snnTorch's recurrent Affine) sends its bias, as the tools compute W*0 + b
    x0 = {k: np.zeros(int(np.prod(g.shapes[k]))) for k in g.nodes}
    for s, d in g.back:
        if type(g.nodes[s]).__name__ not in NEURON_TYPES and np.any(biases[s]):
            x0[d] = x0[d] + _apply(g, s, d, biases[s])
    for s, d in g.edges:
        if d == g.output:
            continue
        connect, weights, bias = _edge(g, s, d)
        src_kind = type(g.nodes[s]).__name__
        model = ("spike" if src_kind in SPIKING else "value") + ("_identity" if weights is None and
                                                                  isinstance(connect, m.OneToOne) else "")
        projections.append(m.Projection(f"{names[s]}__{names[d]}", names[s], names[d], model, connect=connect,
                                        weights=weights, order=g.depth[s]))
    for k, node in g.nodes.items():
        if k == g.output:
            continue
        kind = type(node).__name__
        size = int(np.prod(g.shapes[k]))
        shape = g.shapes[k] if len(g.shapes[k]) == 3 else None
        meta = {"name": k, "type": kind, "shape": list(g.shapes[k]), **_attributes(node, kind)}
        if k == g.input and g.file_input_shape != g.shapes[k]:
            meta["file_shape"] = list(g.file_input_shape)
        desc = "NIR node " + json.dumps(meta, sort_keys=True)
        if k == g.input:
            model, _ = node_model("input", disc, desc)
            pops.append(m.Population("input", size, model, shape=shape, order=0,
                                     operations=[m.Operation(f"y = {INPUT_TABLE}(t, i)", when="groups", order=0)]))
            continue
        initial = {"b": ArrayValue(biases[k])}
        if kind == "Delay":
            steps_k = _delay_steps(g, k, disc.dt)
            model, code = delay_model(int(steps_k.max(initial=0)), desc)
            initial["k"] = ArrayValue(steps_k)
        else:
            model, code = node_model(kind if kind in NEURON_TYPES else "relay", disc, desc)
        if np.any(x0[k]):
            initial["x"] = ArrayValue(x0[k])
        if kind in PARAMETERS:
            for p, unit in PARAMETERS[kind].items():
                v = np.broadcast_to(_arr(getattr(node, p)), g.shapes[k]).ravel()
                if unit == "second":
                    v = v * tau_factor
                initial[p] = ArrayValue(np.array(v), unit)
        pops.append(m.Population(names[k], size, model, initial=initial, shape=shape, order=g.depth[k],
                                 operations=[m.Operation(code, when="groups", order=10 * g.depth[k] + 1)]))
        if kind in SPIKING:
            monitors.append(m.SpikeMonitor(names[k]))
    out_src = [s for s, d in g.edges if d == g.output]
    for s in out_src:
        kind = type(g.nodes[s]).__name__
        if kind not in SPIKING and s != g.input:
            monitors.append(m.StateMonitor(names[s], ("y",), when="end"))
    steps = len(x)
    desc = (f"Imported from NIR (flavor {flavor}); discretisation {json.dumps(asdict(disc), sort_keys=True)}; "
            f"output node {g.output!r} <- {out_src}; graph metadata {json.dumps(_plain(g.metadata), sort_keys=True)}")
    spec = m.NetworkSpec("nir_graph", populations=pops, projections=projections, monitors=monitors,
                         dt=f"{disc.dt!r}*second", duration=f"{steps * disc.dt!r}*second",
                         synapse_models=_SYNAPSES, description=desc,
                         timed_arrays=[m.TimedArraySpec(INPUT_TABLE, ArrayValue(x), f"{disc.dt!r}*second")])
    return Imported(spec, names, g, flavor, disc, steps)


def _plain(meta):
    out = {}
    for k, v in (meta or {}).items():
        if isinstance(v, bytes):
            v = v.decode()
        if isinstance(v, np.ndarray):
            v = v.tolist()
        if isinstance(v, np.generic):
            v = v.item()
        try:
            json.dumps(v)
        except TypeError:
            v = str(v)
        out[str(k)] = v
    return out


def _attributes(node, kind) -> dict:
    """The non-array attributes of a NIR node (kept in the model description for the way back)."""
    def ints(v):  # as written: a string, an int or a list of ints
        if isinstance(v, str):
            return v
        a = np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        return int(a) if a.ndim == 0 else [int(x) for x in a.ravel()]
    if kind in ("Conv1d", "Conv2d"):
        out = {"stride": ints(node.stride), "padding": ints(node.padding), "dilation": ints(node.dilation),
               "groups": int(node.groups), "kernel_shape": list(_arr(node.weight).shape)}
        if kind == "Conv2d" and node.input_shape is not None:
            out["input_shape"] = ints(node.input_shape)
        elif kind == "Conv1d" and node.input_shape is not None:
            out["input_shape"] = int(node.input_shape)
        return out
    if kind in ("SumPool2d", "AvgPool2d"):
        return {"kernel_size": ints(node.kernel_size), "stride": ints(node.stride), "padding": ints(node.padding)}
    if kind == "Flatten":
        return {"start_dim": int(node.start_dim), "end_dim": int(node.end_dim)}
    if kind in ("Affine", "Linear", "Scale", "Delay"):
        return {}
    return {}


def _edge(g: FlatGraph, s, d):
    """``(connect, weights, bias)`` of the projection for edge ``s -> d`` (the weights of a static ``d``)."""
    node, kind = g.nodes[d], type(g.nodes[d]).__name__
    n_pre, n_post = int(np.prod(g.shapes[s])), int(np.prod(g.shapes[d]))
    where = f"NIR edge ({s!r}, {d!r})"
    if kind in ("Affine", "Linear"):
        w = _arr(node.weight)
        if w.shape[1] != n_pre:
            raise ConversionError(f"{where}: {kind} '{d}' has weight {w.shape} but its input has {n_pre} values")
        bias = _arr(node.bias) if kind == "Affine" else np.zeros(n_post)
        return m.AllToAll(), ArrayValue(np.ascontiguousarray(w.T).ravel()), bias
    if kind == "Scale":
        _same(where, n_pre, n_post)
        return m.OneToOne(), ArrayValue(np.broadcast_to(_arr(node.scale), g.shapes[d]).ravel().copy()), 0.0
    if kind in ("Conv2d", "Conv1d"):
        return _conv(g, s, d, node, kind, where)
    if kind in ("SumPool2d", "AvgPool2d"):
        k, st, p = (tuple(int(a) for a in np.atleast_1d(np.asarray(v)).ravel()[:2])
                    for v in (node.kernel_size, node.stride, node.padding))
        k, st, p = (v * 2 if len(v) == 1 else v for v in (k, st, p))
        if len(g.shapes[s]) != 3:
            raise ConversionError(f"{where}: {kind} needs a (C, H, W) input, got shape {g.shapes[s]}")
        return m.Pool2D(k, st, p, weight="1" if kind == "SumPool2d" else None), None, 0.0
    _same(where, n_pre, n_post)  # identity: neurons, Flatten, Delay
    return m.OneToOne(), None, 0.0


def _apply(g, s, d, values):
    """What edge ``s -> d`` adds to ``d``'s input when ``s`` sends ``values`` (identity, Scale, Affine, Linear)."""
    kind = type(g.nodes[d]).__name__
    if kind in ("Affine", "Linear"):
        return _arr(g.nodes[d].weight) @ values
    if kind == "Scale":
        return np.broadcast_to(_arr(g.nodes[d].scale), g.shapes[d]).ravel() * values
    if kind in NEURON_TYPES + ("Flatten", "Delay"):
        return values
    raise ConversionError(f"recurrent NIR edge ({s!r}, {d!r}): a {kind} behind a biased static node is not "
                          "supported on a recurrent path")


def _same(where, a, b):
    if a != b:
        raise ConversionError(f"{where}: {a} values go into a node of {b}")


def _conv(g, s, d, node, kind, where):
    w = _arr(node.weight)
    in_shape = g.shapes[s]
    if kind == "Conv1d":
        if len(in_shape) != 2:
            raise ConversionError(f"{where}: Conv1d needs a (C, L) input, got {in_shape}")
        kernel, shape3 = w[:, :, None, :], (in_shape[0], 1, in_shape[1])
        pad = node.padding if isinstance(node.padding, str) else (0, int(np.ravel(node.padding)[0]))
        stride, dil = (1, int(np.ravel(node.stride)[0])), (1, int(np.ravel(node.dilation)[0]))
    else:
        if len(in_shape) != 3:
            raise ConversionError(f"{where}: Conv2d needs a (C, H, W) input, got {in_shape}")
        kernel, shape3 = w, tuple(in_shape)
        pad = node.padding if isinstance(node.padding, str) else tuple(int(a) for a in np.broadcast_to(node.padding, 2))
        stride = tuple(int(a) for a in np.broadcast_to(node.stride, 2))
        dil = tuple(int(a) for a in np.broadcast_to(node.dilation, 2))
    bias = np.repeat(_arr(node.bias), int(np.prod(g.shapes[d][1:])))
    if kind == "Conv2d" and dil == (1, 1) and not isinstance(pad, str):
        return m.Conv2D(ArrayValue(kernel), stride=stride, padding=pad, groups=int(node.groups)), None, bias
    conn = cx.conv2d(kernel, shape3, stride=stride, padding=pad, dilation=dil, groups=int(node.groups))
    if int(np.prod(conn.post_shape)) != int(np.prod(g.shapes[d])):
        raise ConversionError(f"{where}: the convolution gives {conn.post_shape}, the graph says {g.shapes[d]}")
    return (m.Explicit(ArrayValue(np.asarray(conn.i)), ArrayValue(np.asarray(conn.j))),
            ArrayValue(np.asarray(conn.weights)), bias)


def _delay_steps(g, name, dt) -> np.ndarray:
    """The delays of NIR Delay node ``name`` in whole steps of ``dt`` (an error if they are not whole steps)."""
    delay = np.broadcast_to(_arr(g.nodes[name].delay), g.shapes[name]).ravel()
    steps = np.round(delay / dt)
    if np.any(steps < 0) or not np.allclose(steps * dt, delay, rtol=1e-9, atol=1e-12 * dt):
        raise ConversionError(f"NIR Delay '{name}' has delays {delay[:4].tolist()}... s that are not whole steps of "
                              f"dt={dt} s; choose a dt that divides them")
    return steps.astype(np.int64)
