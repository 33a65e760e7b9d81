"""A rate-coded converted network as a :class:`~biosnn.spec.NetworkSpec`.

One copy of the network runs many samples one after another, each in a window
of ``T`` time steps (batching in time, the fast route on a CPU): the samples'
inputs are the rows of a 2-D timed array ``x_in`` (one row per window), and
every layer's state is reset at the start of each window.  All layers sit in
one schedule slot in topological order (``Population.order``), so a spike
crosses every layer within one step, exactly like the reference
(:mod:`biosnn.codings.rate.reference`) and a torch layer-by-layer forward pass.

Per layer (``L`` with threshold ``theta_L``; dimensionless potentials):

* input, analog: at each window start the input neurons load ``x = x_in(t, i)``
  and emit one event if ``x != 0`` (inputs keep their sign), which adds ``w * x`` to the first layer's
  constant current ``I`` (so the first layer receives ``W x`` every step,
  computed once per sample);
* input, poisson: a Bernoulli spike with probability ``x`` per step;
* IF layer: every step ``v += I + b``, incoming spikes add ``w``; a spike
  when ``v >= theta_L``, then ``v -= theta_L``;
* signed IF layer (``signed=True``): also a spike count ``n``; a spike when
  ``v >= theta_L`` or (``v < 0`` and ``n > 0``), then ``sgn = int(v >= theta_L) - int(v < 0)``
  (+1 or -1), ``v -= sgn * theta_L``, ``n += sgn``; its synapses add ``w * sgn`` (the
  neuron of :mod:`biosnn.codings.rate.reference`, "Signed IF layer"; with ``max_count``
  a positive spike also needs ``n < n_max``); with ``burst=B`` (``B >= 2``) one event carries up to
  ``B`` spikes of one sign, ``sgn = int(v >= theta) * clip(floor(v / theta), 1, B') - int(v < 0) *
  clip(ceil(-v / theta), 1, clip(n, 1, B))`` (``B' = B``, or ``clip(n_max - n, 1, B)`` with ``n_max``),
  and the same ``v -= sgn * theta``, ``n += sgn``, ``w * sgn`` (reference, "Burst");
* max pooling (gate): the unit spikes when one of its inputs' running spike
  count exceeds the unit's own count, so its count is the running maximum of
  the input counts;
* signed max pooling (``signed=True``): the unit keeps one count ``c<k>`` per
  position ``k`` of its pooling window (``K`` positions, the largest window of
  the network's max pools); each synapse carries its position ``pos`` and adds
  ``sgn_pre`` (+1 or -1) to ``c<pos>``.  Once all inputs of the step have
  arrived, ``m`` becomes the largest count, and the unit spikes when
  ``m != n_out`` with ``sgn = m - n_out`` (-1 or +1: each count moves by at most 1
  per step; with ``burst`` up to ``B`` of one sign, one event), ``n_out = m`` (the
  reference's ``s_pool(t) = M(t) - M(t - 1)``).  Counts
  never fall below 0 (a signed neuron only takes back spikes it sent), so the
  counts of positions without a synapse (padding, smaller windows) stay 0
  without changing the maximum; its readers' synapses add ``w * sgn``;
* output: ``readout="potential"`` integrates without threshold and hands
  ``v`` to ``v_last`` at the next window start (monitored);
  ``readout="spikes"`` is an IF layer and is monitored by spikes.

A one-neuron-per-layer ``meter`` population receives one event per spike
(``spk += 1``, ``ops += fanout``; a signed layer's event ``|sgn|`` times), so spikes and synaptic
operations per layer and sample come out of a tiny state monitor, not from recording every spike.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from biosnn import connectivity as cx
from biosnn.conversion.connect import scaled_connect
from biosnn.frontends.torch_graph import Layer, LayerGraph, snn_roles
from biosnn.errors import ConversionError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["rate_network_spec", "layer_connections", "layer_populations", "synaptic_inputs", "SynapticInput",
           "meter_parts", "METER_SYNAPSE", "METER_SIGNED_SYNAPSE", "DT_MS", "first_maxpool"]

#: Neuron models of max-pool gates (no membrane, no bias; the analog input cannot feed them).
_GATES = ("max_gate", "max_gate_signed")

DT_MS = 1.0  # nominal time step; a converted network's time is counted in steps


def layer_connections(layer) -> cx.Connections:
    """Synapses of one synaptic layer (linear, conv2d, avgpool2d, maxpool2d) with its weights.

    A convolution's are a :class:`~biosnn.connectivity.ConvConnections` (kernel
    and geometry), a linear layer's a :class:`~biosnn.connectivity.DenseConnections`
    (its matrix); their synapse lists are made only if read."""
    p = layer.params
    if layer.op == "linear":
        return cx.dense(layer.weight, lazy=True)
    if layer.op == "conv2d":
        return cx.conv2d(layer.weight, layer.in_shape, stride=p["stride"], padding=p["padding"],
                         dilation=p["dilation"], groups=p["groups"], lazy=True)
    if layer.op == "avgpool2d":
        if not p.get("count_include_pad", True) and any(p["padding"]):
            raise ConversionError(f"layer '{layer.name}': avg pooling with padding and "
                                  "count_include_pad=False is not supported; use count_include_pad=True")
        return cx.avgpool2d(layer.in_shape, p["kernel_size"], stride=p["stride"], padding=p["padding"])
    if layer.op == "maxpool2d":
        return cx.maxpool2d_groups(layer.in_shape, p["kernel_size"], stride=p["stride"],
                                   padding=p["padding"], dilation=p.get("dilation", 1))
    raise ConversionError(f"layer '{layer.name}' ({layer.op}) has no synapses")


def layer_populations(graph: LayerGraph) -> dict[str, str]:
    """Torch layer name -> population name of its neurons: ``input``, then ``L1, L2, ...`` in
    topological order (residual branches without neurons, role ``virtual``, have none)."""
    roles = snn_roles(graph)
    names = {graph.layers[0].name: "input"}
    for layer in graph.layers[1:]:
        if roles[layer.name] != "virtual":
            names[layer.name] = f"L{len(names)}"
    return names


def _fanout(conns: list[tuple[int, cx.Connections]], size: int) -> np.ndarray:
    out = np.zeros(size)
    for _, c in conns:
        out += cx.out_degree(c)[:size]
    return out


@dataclasses.dataclass(frozen=True)
class SynapticInput:
    """Synapses from one spiking layer onto a layer with neurons (see :func:`synaptic_inputs`).

    Attributes
    ----------
    source : str
        The spiking layer the synapses start from.
    layer : Layer
        The layer whose map they realise (a virtual branch's linear/conv
        layer, or the ``add`` layer itself for a shortcut).
    conns : Connections
        The synapses with the layer's own weights (shortcuts: the add's
        coefficient).
    scale : float
        Factor on the weights: the product of the residual coefficients on
        the way (1 for sequential layers).
    tag : str
        Suffix that makes projection names unique.
    """

    source: str
    layer: Layer
    conns: cx.Connections
    scale: float
    tag: str


def synaptic_inputs(graph: LayerGraph, name: str, roles: dict) -> tuple[list[SynapticInput], np.ndarray]:
    """The synapses and the bias of non-virtual layer ``name``, looking through virtual branches.

    Parameters
    ----------
    graph : LayerGraph
    name : str
        A layer that has neurons (not the input, not a virtual branch).
    roles : dict
        Layer roles (:func:`~biosnn.frontends.torch_graph.snn_roles` or
        :attr:`~biosnn.codings.tsc.reference.TSCSchedule.roles`; only
        ``"virtual"`` is looked at).

    Returns
    -------
    inputs : list of SynapticInput
    bias : ndarray (size,)
        Summed bias per target unit, residual coefficients applied (float64).
    """
    out = []
    bias = np.zeros(graph[name].size)

    def visit(layer, scale: float, tag: str):
        nonlocal bias
        if layer.op == "add":
            for k, (c, src) in enumerate(zip(layer.weight, layer.inputs)):
                if roles[src] == "virtual":
                    visit(graph[src], scale * float(c), f"{tag}_{k}")
                else:
                    n = graph[src].size
                    out.append(SynapticInput(src, layer, cx.one_to_one(n, weights=np.full(n, scale * float(c))),
                                             1.0, f"{tag}_{k}"))
            return
        out.append(SynapticInput(layer.inputs[0], layer, layer_connections(layer), scale, tag))
        if layer.bias is not None:
            b = np.asarray(layer.bias, dtype=np.float64)
            if layer.op == "conv2d":
                b = np.repeat(b, int(np.prod(layer.out_shape[1:])))
            bias = bias + scale * b

    visit(graph[name], 1.0, "")
    return out, bias


#: Synapse model of the meter projections (``synapse_models["meter"]`` of a spec using :func:`meter_parts`).
METER_SYNAPSE = m.SynapseModel("", on_pre="spk_post += 1\nops_post += fanout_pre",
                               description="counts spikes and synaptic operations per layer")
#: Meter synapse model of signed IF layers (``synapse_models["meter_signed"]``): an event is ``|sgn|`` spikes.
METER_SIGNED_SYNAPSE = m.SynapseModel("", on_pre="spk_post += abs(sgn_pre)\nops_post += abs(sgn_pre) * fanout_pre",
                                      description="counts the spikes of signed (burst) events and their operations")


def meter_parts(metered: list[tuple[str, int]], window: str,
                signed: frozenset = frozenset()) -> tuple[m.Population, list, m.StateMonitor]:
    """A ``meter`` population with one neuron per metered population, its synapses and its monitor.

    Each spike of a metered population adds 1 to ``spk`` and the spiking
    unit's ``fanout`` to ``ops`` of its meter neuron; at every window start
    the sums move to ``spk_last``/``ops_last`` (monitored) and restart from 0.
    The projections use the synapse model ``"meter"`` (:data:`METER_SYNAPSE`).

    Parameters
    ----------
    metered : list of (str, int)
        Population names and sizes, in meter order.
    window : str
        The window length (a Brian2 quantity string).
    signed : set of str
        Populations of signed IF neurons: their projections use ``"meter_signed"``
        (:data:`METER_SIGNED_SYNAPSE`, ``|sgn|`` spikes per event).
    """
    meter = m.Population("meter", len(metered), m.NeuronModel("spk : 1\nops : 1\nspk_last : 1\nops_last : 1"),
                         operations=[m.Operation("spk_last = spk\nops_last = ops\nspk = 0\nops = 0", dt=window)])
    projs = [m.Projection(f"{pname}_meter", pname, "meter", "meter_signed" if pname in signed else "meter",
                          m.Explicit(ArrayValue(np.arange(size)), ArrayValue(np.full(size, k))))
             for k, (pname, size) in enumerate(metered)]
    monitor = m.StateMonitor("meter", ("spk_last", "ops_last"), dt=window, when="start", order=2)
    return meter, projs, monitor


_IF_EQS = "v : 1\nI : 1\nb : 1 (constant)\nfanout : 1 (constant)"
_OUT_EQS = "v : 1\nI : 1\nv_last : 1\nb : 1 (constant)\nfanout : 1 (constant)"
_GATE_EQS = "n_out : 1\nfire : 1\nfanout : 1 (constant)"
_SIGNED_EQS = _IF_EQS + "\nn : 1\nsgn : 1"


def _signed_gate_models(K: int) -> tuple[m.NeuronModel, m.SynapseModel, m.SynapseModel, str, str]:
    """The signed max-pool gate with ``K`` window positions (module docstring).

    Returns the neuron model, the synapse models from a signed source (``+= sgn_pre``) and from
    the Poisson input (``+= 1``), the per-step code that sets ``m`` (the largest count and 0, which
    is the largest count as counts never fall below 0; Brian2 has no ``max``: ``m + (c - m) * int(c > m)``)
    and the window-start reset.
    """
    counts = [f"c{k}" for k in range(K)]
    eqs = "n_out : 1\nsgn : 1\nm : 1\nfanout : 1 (constant)\n" + "\n".join(f"{c} : 1" for c in counts)
    neuron = m.NeuronModel(eqs, threshold="abs(m - n_out) > 0.5", reset="sgn = m - n_out\nn_out = m",
                           description="signed max-pooling gate: sends the change of the largest of its "
                                       "inputs' signed counts (-1/+1, a burst with burst inputs)")

    def synapse(add: str, what: str) -> m.SynapseModel:
        return m.SynapseModel("pos : 1 (constant)", on_pre="\n".join(
            f"{c}_post += {add}int(pos == {k})" for k, c in enumerate(counts)),
            description=f"signed max-pool gate input from {what}: counts at the synapse's window position")

    # from 0, not "m = c0": Brian2's numpy target would make m a view of c0 and raise c0 with m
    peak = "\n".join(["m = 0"] + [f"m = m + ({c} - m) * int({c} > m)" for c in counts])
    reset = "\n".join(["n_out = 0", "sgn = 0", "m = 0"] + [f"{c} = 0" for c in counts])
    return neuron, synapse("sgn_pre * ", "signed spikes"), synapse("", "Poisson spikes"), peak, reset


def first_maxpool(graph: LayerGraph, roles: dict) -> Layer | None:
    """The first layer realised as a max-pool gate (role ``"maxpool"``), or ``None``."""
    return next((layer for layer in graph.layers if roles[layer.name] == "maxpool"), None)


def _check_signed(graph: LayerGraph, roles: dict, readout: str) -> None:
    """Refuse what signed IF neurons cannot do in the Brian2 network (a max-pool output, spike readout)."""
    if roles[graph.output] == "maxpool":
        raise ConversionError(f"layer '{graph.output}' is a max pool as the output layer: signed=True needs an "
                              "integrating output layer; end the network with a linear or conv layer")
    if readout != "potential":
        raise ConversionError(f"signed=True needs readout='potential' (got readout={readout!r}): the output "
                              "spikes would need their signs recorded; use the default potential readout")


def rate_network_spec(graph: LayerGraph, *, T: int, windows: int, thresholds: dict | None = None,
                      input_mode: str = "analog", readout: str = "potential", seed: int | None = None,
                      name: str = "converted", x: np.ndarray | None = None, v_init: float = 0.0,
                      signed: bool = False, max_count: int | None = None,
                      burst: int | None = None) -> m.NetworkSpec:
    """Build the batched SNN spec of a (normalised) graph.

    Parameters
    ----------
    graph : LayerGraph
        Normalised network (thresholds 1 unless ``thresholds`` says otherwise).
    T : int
        Time steps per sample window.
    windows : int
        Sample windows simulated per run (the batch size of the compiled network).
    thresholds : dict, optional
        Threshold per layer name (default 1).
    input_mode : {"analog", "poisson"}
    readout : {"potential", "spikes"}
    seed : int, optional
        Seed for Poisson inputs.
    name : str
        Spec name.
    x : ndarray, optional
        ``(windows, n_in)`` inputs already divided by ``graph.input_scale``
        (default zeros: pass real inputs per run through ``overrides={"x_in": ...}``).
    v_init : float
        Potential of every spiking IF neuron at each window start, as a
        fraction of its threshold (0; 0.5 for QCFS-prepared models).
    signed : bool
        Signed IF neurons and signed max-pool gates (module docstring); refused with
        ``readout="spikes"`` and a max pool as the output layer.
    max_count : int, optional
        Signed neurons: at most this many net spikes per neuron and window (``n_max``).
    burst : int, optional
        Signed neurons: up to this many spikes per neuron and step in one event (module docstring);
        ``None`` or 1: one.  Max-pool gates pass bursts on as one event too.

    Returns
    -------
    NetworkSpec
        Populations are named ``L0, L1, ...`` in topological order (``input``
        for the input) plus ``meter``; ``layer_names`` maps them back in the
        description.
    """
    if input_mode not in ("analog", "poisson"):
        raise ConversionError(f"input_mode must be 'analog' or 'poisson', got '{input_mode}'")
    if readout not in ("potential", "spikes"):
        raise ConversionError(f"readout must be 'potential' or 'spikes', got '{readout}'")
    if not isinstance(T, (int, np.integer)) or T < 1:
        raise ConversionError(f"T (time steps per sample) must be a positive integer, got {T!r}")
    thresholds = dict(thresholds or {})
    roles = snn_roles(graph)
    from biosnn.codings.rate.reference import check_burst
    burst = check_burst(burst, signed)
    if signed:
        _check_signed(graph, roles, readout)
    elif max_count is not None:
        raise ConversionError("max_count needs signed=True")
    cap = "" if max_count is None else " and n < n_max"
    if burst is None:
        signed_reset = "sgn = int(v >= theta) - int(v < 0)"
    else:
        top = "burst" if max_count is None else "clip(n_max - n, 1, burst)"
        signed_reset = (f"sgn = int(v >= theta) * clip(floor(v / theta), 1, {top}) "
                        "- int(v < 0) * clip(ceil(-v / theta), 1, clip(n, 1, burst))")
    window = f"{T * DT_MS!r}*ms"
    inp_layer = graph.layers[0]
    n_in = inp_layer.size
    if x is None:
        x = np.zeros((windows, n_in))
    x = np.asarray(x, dtype=np.float64).reshape(windows, n_in)

    pop_of = layer_populations(graph)   # layer name -> population name
    order_of = {name: 0 if p == "input" else int(p[1:]) for name, p in pop_of.items()}
    pops: list[m.Population] = []
    projs: list[m.Projection] = []
    out_conns: dict[str, list] = {}     # population -> [(k, conns)] for fan-out
    biases: dict[str, np.ndarray] = {}
    metered: list[str] = []

    neuron_models = {
        "if_layer": m.NeuronModel(_IF_EQS, threshold="v >= theta", reset="v -= theta",
                                  description="IF neuron, reset by subtraction, constant current I + bias b"),
        "if_readout": m.NeuronModel(_OUT_EQS, description="integrating readout (no threshold)"),
        "if_signed": m.NeuronModel(_SIGNED_EQS, threshold=f"(v >= theta{cap}) or (v < 0 and n > 0)",
                                   reset=signed_reset + "\nv -= sgn * theta\nn += sgn",
                                   description="signed IF neuron: a negative spike undoes an earlier spike when "
                                               "v falls below 0"),
        "max_gate": m.NeuronModel(_GATE_EQS, threshold="fire > 0.5", reset="fire = 0",
                                  description="max-pooling gate: running max of the input spike counts"),
    }
    gates = [layer for layer in graph.layers if roles[layer.name] == "maxpool"]
    K = max((int(np.prod(np.broadcast_to(layer.params["kernel_size"], 2))) for layer in gates),
            default=0) if signed else 0
    if K:
        gate_neuron, gate_from_signed, gate_from_input, gate_peak, gate_reset = _signed_gate_models(K)
        neuron_models["max_gate_signed"] = gate_neuron
    if input_mode == "analog":
        neuron_models["analog_input"] = m.NeuronModel(
            "x : 1\npending : 1\nfanout : 1 (constant)", threshold="pending > 0.5", reset="pending = 0",
            description="loads x at each window start and sends it once")
    else:
        neuron_models["poisson_input"] = m.NeuronModel(
            "x : 1\nfanout : 1 (constant)", threshold="rand() < x",
            description="Bernoulli spike with probability x per step")
    synapse_models = {
        "current": m.SynapseModel("w : 1", on_pre="I_post += w * x_pre", description="analog input current"),
        "jump": m.SynapseModel("w : 1", on_pre="v_post += w", description="potential jump"),
        "signed_jump": m.SynapseModel("w : 1", on_pre="v_post += w * sgn_pre",
                                      description="potential jump of the spike's sign"),
        "gate": m.SynapseModel(
            "c : 1", on_pre="c += 1\nfire_post = fire_post + (1 - fire_post) * int(c > n_out_post)\n"
                            "n_out_post = n_out_post + int(c > n_out_post)",
            description="max-pool gate input: per-synapse spike counter"),
        "meter": METER_SYNAPSE,
        **({"meter_signed": METER_SIGNED_SYNAPSE} if signed else {}),
    }
    if K:
        synapse_models["gate_signed"] = gate_from_signed
        synapse_models["gate_signed_input"] = gate_from_input

    # input population
    pops_ops = [m.Operation("x = x_in(t, i)" + ("\npending = int(x != 0)" if input_mode == "analog" else ""),
                            dt=window, when="start", order=1)]
    specs_by_pop: dict[str, dict] = {"input": dict(
        name="input", size=n_in, model="analog_input" if input_mode == "analog" else "poisson_input",
        shape=inp_layer.out_shape if len(inp_layer.out_shape) == 3 else None,
        operations=pops_ops, order=0)}

    for layer in graph.layers[1:]:
        role = roles[layer.name]
        if role == "virtual":
            continue
        pname, layer_order = pop_of[layer.name], order_of[layer.name]
        is_out = layer.name == graph.output
        theta = float(thresholds.get(layer.name, 1.0))
        shape = layer.out_shape if len(layer.out_shape) == 3 else None
        if role == "maxpool" and signed:
            specs_by_pop[pname] = dict(name=pname, size=layer.size, model="max_gate_signed", shape=shape,
                                       operations=[m.Operation(gate_reset, dt=window),
                                                   m.Operation(gate_peak, when="groups", order=10 * layer_order)],
                                       order=layer_order)
        elif role == "maxpool":
            specs_by_pop[pname] = dict(name=pname, size=layer.size, model="max_gate", shape=shape,
                                       operations=[m.Operation("n_out = 0\nfire = 0", dt=window)],
                                       order=layer_order)
        elif is_out and readout == "potential":
            specs_by_pop[pname] = dict(name=pname, size=layer.size, model="if_readout", shape=shape, operations=[
                m.Operation("v_last = v\nv = 0\nI = 0", dt=window),
                m.Operation("v += I + b", when="groups", order=10 * layer_order)], order=layer_order)
        else:
            start = f"v = {float(v_init) * theta!r}\nI = 0" if v_init else "v = 0\nI = 0"
            specs_by_pop[pname] = dict(name=pname, size=layer.size, model="if_signed" if signed else "if_layer",
                                       shape=shape, parameters={"theta": repr(theta), **(
                                           {} if max_count is None else {"n_max": repr(float(max_count))}), **(
                                           {} if burst is None else {"burst": repr(float(burst))})},
                                       operations=[
                                           m.Operation(start + ("\nn = 0\nsgn = 0" if signed else ""), dt=window),
                                           m.Operation("v += I + b", when="groups", order=10 * layer_order)],
                                       order=layer_order)
        biases[pname] = np.zeros(layer.size)

    def add_projection(src_layer_name, tgt_pop, conns: cx.Connections, scale=1.0, tag="", conv=None):
        src_pop = pop_of[src_layer_name]
        if src_pop == "input" and input_mode == "analog":
            model = "current"
        else:
            model = "signed_jump" if specs_by_pop[src_pop]["model"] in ("if_signed", "max_gate_signed") else "jump"
        pname = f"{src_pop}_{tgt_pop}{tag}"
        if specs_by_pop[tgt_pop]["model"] in _GATES and src_pop == "input" \
                and input_mode == "analog":
            raise ConversionError(f"layer '{src_layer_name}' (the analog input) is read by a max pool: the gate "
                                  "counts spikes, and the analog input sends none; put a conv or linear layer "
                                  "first, or use input_mode='poisson'")
        if specs_by_pop[tgt_pop]["model"] == "max_gate_signed":
            proj = m.Projection(pname, src_pop, tgt_pop, "gate_signed_input" if src_pop == "input" else "gate_signed",
                                m.Explicit(ArrayValue(conns.i), ArrayValue(conns.j)),
                                initial={"pos": ArrayValue(np.asarray(conns.kernel_index, dtype=np.float64))},
                                order=order_of[src_layer_name])
        elif specs_by_pop[tgt_pop]["model"] == "max_gate":
            proj = m.Projection(pname, src_pop, tgt_pop, "gate",
                                m.Explicit(ArrayValue(conns.i), ArrayValue(conns.j)),
                                operations=[m.Operation("c = 0", dt=window)], order=order_of[src_layer_name])
        else:
            # a convolution keeps its kernel: backends may share it instead of storing a weight per synapse
            connect, values = scaled_connect(conv, conns, scale,
                                             shaped=conv is not None and specs_by_pop[src_pop].get("shape") is not None)
            proj = m.Projection(pname, src_pop, tgt_pop, model, connect, weights=values,
                                order=order_of[src_layer_name])
        projs.append(proj)
        out_conns.setdefault(src_pop, []).append((0, conns))

    for layer in graph.layers[1:]:
        if layer.name in pop_of:
            tgt_pop = pop_of[layer.name]
            inputs, bias = synaptic_inputs(graph, layer.name, roles)
            for si in inputs:
                add_projection(si.source, tgt_pop, si.conns, si.scale, si.tag,
                               conv=si.layer if si.layer.op == "conv2d" else None)
            biases[tgt_pop] += bias

    # fan-out for synaptic-operation counting; meter population
    populations = []
    for pname, kw in specs_by_pop.items():
        size = kw["size"]
        initial = {"fanout": ArrayValue(_fanout(out_conns.get(pname, []), size))}
        if pname in biases and kw["model"] not in _GATES:
            initial["b"] = ArrayValue(biases[pname])
        populations.append(m.Population(**kw, initial=initial))
        if kw["model"] != "if_readout":  # the integrating readout never spikes
            metered.append(pname)
    meter, meter_projs, meter_monitor = meter_parts(
        [(p, specs_by_pop[p]["size"]) for p in metered], window,
        frozenset(p for p in metered if specs_by_pop[p]["model"] in ("if_signed", "max_gate_signed")))
    populations.append(meter)
    projs.extend(meter_projs)
    out_pop = pop_of[graph.output]
    monitors = [meter_monitor]
    if readout == "potential" and specs_by_pop[out_pop]["model"] == "if_readout":
        monitors.append(m.StateMonitor(out_pop, ("v_last",), dt=window, when="start", order=2))
    else:
        monitors.append(m.SpikeMonitor(out_pop))
    layer_map = ", ".join(f"{p}={l}" for l, p in pop_of.items())
    return m.NetworkSpec(
        name, populations=populations, projections=projs, monitors=monitors,
        dt=f"{DT_MS!r}*ms", duration=f"{(windows * T + 1) * DT_MS!r}*ms", seed=seed,
        neuron_models=neuron_models,
        synapse_models=synapse_models,
        timed_arrays=[m.TimedArraySpec("x_in", ArrayValue(x), window)],
        description=f"Rate-coded SNN converted from a torch model: T={T} steps per sample, {windows} "
                    f"sample windows per run, input {input_mode}, readout {readout}. Layers: {layer_map}.")
