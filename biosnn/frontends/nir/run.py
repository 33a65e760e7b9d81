"""``run_nir``: simulate a NIR graph on a biosnn backend and return spikes per NIR node."""

from __future__ import annotations

import numpy as np

from biosnn.errors import ConversionError
from biosnn.frontends.nir.importer import build
from biosnn.frontends.nir.models import SPIKING

__all__ = ["run_nir", "spikes_of"]


def run_nir(graph_or_path, x, dt=None, flavor="auto", backend="runtime", **options) -> dict:
    """Run a NIR graph on input ``x`` and return every spiking node's spikes.

    Parameters
    ----------
    graph_or_path : nir.NIRGraph or str or Path
    x : array_like
        Input spikes or currents of the graph's Input node, shape ``(T, *input_shape)``: one row per step.
    dt : float, optional
        Time step in seconds; ``None``: the producer's default (see
        :mod:`biosnn.frontends.nir.flavors`), else an error asks for it.
    flavor : str
        ``"auto"`` or a producer preset (``snntorch``, ``norse``, ``spikingjelly``, ``sinabs``,
        ``rockpool``, ``nir``).
    backend : str or Backend
        A backend name (``runtime``, ``cpp_standalone``, ...) or a backend object.  ``nest`` runs
        feed-forward IF/LIF graphs, each neuron layer shifted by a step
        (:mod:`biosnn.frontends.nir.nest_plan`); other graphs are refused there.
    **options
        Discretisation overrides (see :func:`biosnn.frontends.nir.from_nir`).

    Returns
    -------
    dict
        NIR node name -> ``(T, *node_shape)`` 0/1 ``uint8`` array of its spikes for every spiking node,
        and ``"output"``: what reaches the Output node in each step, ``(T, *output_shape)``.
    """
    from biosnn import get_backend
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or len(x) < 1:
        raise ConversionError(f"x must have shape (T, *input_shape) with T >= 1, got {x.shape}")
    if backend == "nest" or getattr(backend, "name", None) == "nest":  # refusals before NEST is imported
        from biosnn.frontends.nir.nest_plan import nest_build, nest_spikes
        nimp = nest_build(graph_or_path, x, dt=dt, flavor=flavor, **options)
        be = get_backend(backend) if isinstance(backend, str) else backend
        return nest_spikes(nimp, be.build(nimp.spec).run(progress=False))
    be = get_backend(backend) if isinstance(backend, str) else backend
    imp = build(graph_or_path, dt=dt, flavor=flavor, x=x, **options)
    rec = be.build(imp.spec).run(progress=False)
    return spikes_of(imp, rec)


def spikes_of(imp, rec) -> dict:
    """The :func:`run_nir` dictionary from a recording of an imported graph."""
    g, T, dt = imp.graph, imp.steps, imp.discretisation.dt
    out = {}
    for k, node in g.nodes.items():
        if type(node).__name__ in SPIKING:
            out[k] = _raster(rec.spikes[imp.populations[k]], T, dt, g.shapes[k])
    total = None
    for s, d in g.edges:
        if d != g.output:
            continue
        if s in out:
            val = out[s].astype(np.float64)
        elif s == g.input:
            val = np.asarray(imp.spec.timed_arrays[0].values.data).reshape((T, *g.shapes[s]))
        else:
            trace = rec.states[imp.populations[s]]["y"]
            val = np.zeros((T, int(np.prod(g.shapes[s]))))
            val[:, np.asarray(trace.indices)] = np.asarray(trace.values)[:T]
            val = val.reshape((T, *g.shapes[s]))
        total = val if total is None else total + val
    if total is not None and all(s in out for s, d in g.edges if d == g.output):
        total = total.astype(np.uint8) if total.max(initial=0) <= 1 else total
    out["output"] = total.reshape((T, *g.shapes[g.output]))
    return out


def _raster(trains, T, dt, shape):
    r = np.zeros((T, int(np.prod(shape))), dtype=np.uint8)
    steps = np.rint(np.asarray(trains.times) / dt).astype(np.int64)
    r[steps, np.asarray(trains.indices)] = 1
    return r.reshape((T, *shape))
