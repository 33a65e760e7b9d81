"""Spec -> NIR graph: the way back for specs made by :func:`~biosnn.frontends.nir.from_nir`.

Every population of an imported spec names its NIR node (type, name, shape and non-array
attributes, as JSON in its model's description); parameters are the population's per-neuron
values, static weights sit on the projections into the node.  So NIR -> spec -> NIR gives the
same nodes, parameters and edges (nested graphs come back flat, with ``outer.inner`` names).
Rate-coded converted networks go through :mod:`biosnn.frontends.nir.snn_export`.  Specs with
other models are refused with the population, its model and the reason: NIR has no node for
refractory periods, time-varying thresholds, conductances or plasticity.
"""

from __future__ import annotations

import json
import re

import numpy as np

from biosnn.errors import ConversionError
from biosnn.frontends.nir.flavors import METADATA_KEY
from biosnn.frontends.nir.models import PARAMETERS
from biosnn.spec import model as m

__all__ = ["to_nir"]

_DESC = re.compile(r"^NIR node (\{.*?\})(;|$)")


#: Why a spec population with a library model has no NIR node (model name -> reason).
LIBRARY_REASONS = {
    "if_subtract": "maps only in a spec whose populations are all if_subtract (biosnn.frontends.nir.library_export)",
    "lif": "a LIF neuron with a refractory period (tau_ref), which NIR's LIF does not have; and Brian2 adds a "
           "jump arriving in the step of a reset-to-value spike before that reset (it is lost), where NIR's next "
           "step keeps it",
    "if_decaying_threshold": "its threshold decays in time (theta0 exp(-(t - t0)/tau_theta)); NIR's thresholds "
                             "are constant",
    "ticking": "a clock-driven neuron (fires every step between t_start and t_stop); NIR has no such node",
    "adaptive_lif_dc": "a conductance-based LIF with an adaptive threshold; NIR has neither",
    "inhibitory_lif_dc": "a conductance-based LIF with a refractory period; NIR has neither",
}


def _meta(spec, pop):
    model = spec.neuron_model(pop)
    found = _DESC.match(model.description or "")
    if not found:
        name = pop.model if isinstance(pop.model, str) else "inline"
        why = LIBRARY_REASONS.get(name, f"{model.description or model.equations!r}")
        raise ConversionError(
            f"population '{pop.name}' (model {name}: {why}) has no NIR counterpart: to_nir writes specs made by "
            "from_nir, specs whose populations are all the library's if_subtract, and the networks "
            "biosnn.convert(model, 'rate', ...) returns (pass the SNN object, not its spec: the export needs its "
            "layers)")
    return json.loads(found.group(1))


def _values(pop, name):
    v = pop.initial.get(name)
    if v is None:
        raise ConversionError(f"population '{pop.name}' has no per-neuron value '{name}'")
    return np.asarray(v.si() if v.unit not in ("1", "") else v.data, dtype=np.float64)


def to_nir(spec_or_snn):
    """The NIR graph of a spec made by :func:`from_nir`, or of a rate-coded converted network.

    Parameters
    ----------
    spec_or_snn : NetworkSpec or biosnn.conversion.snn.SNN
        A spec from :func:`from_nir` (or an object with such a ``.spec``), a spec of the library's
        ``if_subtract`` neurons (:mod:`biosnn.frontends.nir.library_export`), or the result of
        ``biosnn.convert(model, "rate", ...)`` (:mod:`biosnn.frontends.nir.snn_export`).

    Returns
    -------
    nir.NIRGraph
        For an imported spec: the same node names, types, parameters and edges as the imported
        graph; time constants in NIR's seconds (a ``tau*dt`` file, e.g. Norse's, comes back in
        plain seconds).

    Raises
    ------
    ConversionError
        A population whose model NIR cannot express, naming it.
    """
    import nir
    from biosnn.frontends.nir.snn_export import is_converted, snn_to_nir
    if is_converted(spec_or_snn):
        return snn_to_nir(spec_or_snn)
    spec = getattr(spec_or_snn, "spec", spec_or_snn)
    if not isinstance(spec, m.NetworkSpec):
        raise ConversionError(f"to_nir takes a NetworkSpec, got {type(spec).__name__}")
    from biosnn.frontends.nir.library_export import is_library_if_spec, library_spec_to_nir
    if is_library_if_spec(spec):
        return library_spec_to_nir(spec)
    # a refusal names a population of another model before an if_subtract one (which maps in a spec of its own)
    metas = {p.name: _meta(spec, p) for p in sorted(spec.populations, key=lambda p: p.model == "if_subtract")}
    names = {p: meta["name"] for p, meta in metas.items()}
    incoming = {}
    for proj in spec.projections:
        incoming.setdefault(proj.target, []).append(proj)
    nodes = {}
    for pop in spec.populations:
        meta, kind = metas[pop.name], metas[pop.name]["type"]
        shape = tuple(meta["shape"])
        if kind == "Input":
            nodes[meta["name"]] = nir.Input(input_type={"input": np.array(meta.get("file_shape", shape))})
            continue
        if kind in PARAMETERS:
            kw = {p: _values(pop, p).reshape(shape) for p in PARAMETERS[kind]}
            nodes[meta["name"]] = getattr(nir, kind)(**kw)
            continue
        proj = incoming[pop.name][0]
        nodes[meta["name"]] = _static(spec, pop, proj, meta, kind, shape)
    edges = [(names[p.source], names[p.target]) for p in spec.projections]
    out = re.search(r"output node '([^']*)' <- (\[.*?\])", spec.description)
    if out:
        oname, srcs = out.group(1), json.loads(out.group(2).replace("'", '"'))
        src_shape = tuple(metas[next(p for p, n in names.items() if n == srcs[0])]["shape"]) if srcs else ()
        nodes[oname] = nir.Output(output_type={"output": np.array(src_shape)})
        edges += [(s, oname) for s in srcs]
    meta = {"producer": "biosnn"}
    found = re.search(r"graph metadata (\{.*\})$", spec.description)
    if found:
        meta.update(json.loads(found.group(1)))
    disc = re.search(r"discretisation (\{.*?\});", spec.description)
    if disc:  # the time constants written are NIR's plain tau in seconds
        meta[METADATA_KEY] = json.dumps({**json.loads(disc.group(1)), "tau_stored": "tau"}, sort_keys=True)
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _static(spec, pop, proj, meta, kind, shape):
    import nir
    b = _values(pop, "b")
    c = proj.connect
    if kind in ("Affine", "Linear"):
        n_pre = spec.node(proj.source).size
        w = np.asarray(proj.weights.data, dtype=np.float64).reshape(n_pre, pop.size).T.copy()
        return nir.Affine(weight=w, bias=b) if kind == "Affine" else nir.Linear(weight=w)
    if kind == "Scale":
        return nir.Scale(scale=np.asarray(proj.weights.data, dtype=np.float64).reshape(shape))
    if kind in ("Conv1d", "Conv2d"):
        ks = tuple(meta["kernel_shape"])
        if isinstance(c, m.Conv2D):
            kernel = np.asarray(c.kernel.data, dtype=np.float64)
        else:
            kernel = _kernel_from_synapses(spec, proj, meta, kind)
        bias = b.reshape(shape[0], -1)[:, 0].copy()
        # attributes as the file had them (ints or tuples); a missing input_shape is filled in (nir.write needs it)
        attrs = {k: tuple(meta[k]) if isinstance(meta[k], list) else meta[k] for k in ("stride", "padding", "dilation")}
        src_shape = _shape_of(spec, proj.source)
        if kind == "Conv1d":
            return nir.Conv1d(input_shape=meta.get("input_shape", src_shape[-1]), weight=kernel.reshape(ks),
                              groups=meta["groups"], bias=bias, **attrs)
        in_shape = tuple(meta["input_shape"]) if "input_shape" in meta else tuple(src_shape[1:])
        return nir.Conv2d(input_shape=in_shape, weight=kernel.reshape(ks), groups=meta["groups"], bias=bias, **attrs)
    if kind in ("SumPool2d", "AvgPool2d"):
        # (height, width) pairs as NIR documents them (a tool's scalar 2 becomes [2, 2]: nir.write needs arrays)
        return getattr(nir, kind)(**{k: np.broadcast_to(np.array(meta[k]), 2).copy()
                                     for k in ("kernel_size", "stride", "padding")})
    if kind == "Flatten":
        return nir.Flatten(input_type={"input": np.array(_shape_of(spec, proj.source))}, start_dim=meta["start_dim"],
                           end_dim=meta["end_dim"])
    if kind == "Delay":
        steps = np.asarray(pop.initial["k"].data, dtype=np.float64)
        return nir.Delay(delay=(steps * spec.dt_seconds()).reshape(shape))
    raise ConversionError(f"population '{pop.name}': NIR node type {kind} cannot be written")  # pragma: no cover


def _shape_of(spec, population) -> tuple:
    return tuple(_meta(spec, spec.node(population))["shape"])


def _kernel_from_synapses(spec, proj, meta, kind):
    from biosnn import connectivity as cx
    ks = tuple(meta["kernel_shape"])
    src_shape = _shape_of(spec, proj.source)
    if kind == "Conv1d":
        kshape, shape3 = (ks[0], ks[1], 1, ks[2]), (src_shape[0], 1, src_shape[1])
        one = [int(np.ravel(meta[k])[0]) if not isinstance(meta[k], str) else meta[k]
               for k in ("padding", "stride", "dilation")]
        pad = one[0] if isinstance(one[0], str) else (0, one[0])
        stride, dil = (1, one[1]), (1, one[2])
    else:
        kshape, shape3 = ks, src_shape
        pad, stride, dil = (meta[k] if isinstance(meta[k], str) else tuple(np.broadcast_to(meta[k], 2).tolist())
                            for k in ("padding", "stride", "dilation"))
    geometry = cx.conv2d(np.ones(kshape), shape3, stride=stride, padding=pad, dilation=dil, groups=meta["groups"])
    kernel = np.zeros(int(np.prod(kshape)))
    kernel[np.asarray(geometry.kernel_index)] = np.asarray(proj.weights.data, dtype=np.float64)
    return kernel.reshape(kshape)
