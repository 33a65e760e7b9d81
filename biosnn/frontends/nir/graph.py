"""Reading a NIR graph: files, nested graphs flattened, shapes, layers (schedule depth) and recurrent edges."""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from biosnn.errors import ConversionError

__all__ = ["FlatGraph", "flatten", "read_graph", "NEURON_TYPES", "STATIC_TYPES", "SUPPORTED"]

NEURON_TYPES = ("IF", "LIF", "CubaLIF", "LI", "CubaLI", "I", "Threshold")
STATIC_TYPES = ("Affine", "Linear", "Scale", "Conv1d", "Conv2d", "Flatten", "SumPool2d", "AvgPool2d", "Delay")
SUPPORTED = ("Input", "Output", "NIRGraph") + STATIC_TYPES + NEURON_TYPES


def read_graph(graph_or_path):
    """A ``nir.NIRGraph`` from a graph or a ``.nir`` (HDF5) file path."""
    import nir
    if isinstance(graph_or_path, (str, Path)):
        path = Path(graph_or_path)
        if not path.is_file():
            raise ConversionError(f"NIR file '{path}' does not exist")
        try:
            return nir.read(str(path), type_check=False)  # shapes are inferred here
        except Exception as exc:  # h5py/nir raise many kinds
            raise ConversionError(f"cannot read NIR file '{path}': {exc}") from None
    if not isinstance(graph_or_path, nir.NIRGraph):
        raise ConversionError(f"expected a nir.NIRGraph or a path to a .nir file, got {type(graph_or_path).__name__}")
    return graph_or_path


@dataclass
class FlatGraph:
    """A NIR graph without nesting: ``nodes`` (name -> node), ``edges``, ``shapes`` (output shape per node),
    ``depth`` (schedule layer), ``back`` (recurrent edges), ``input`` and ``output`` node names."""

    nodes: dict
    edges: list
    shapes: dict
    depth: dict
    back: set
    input: str
    output: str
    metadata: dict
    file_input_shape: tuple = ()


def _type(node) -> str:
    return type(node).__name__


def flatten(graph) -> FlatGraph:
    """Flatten nested graphs (inner names ``outer.inner``), infer shapes and schedule depths.

    Raises
    ------
    ConversionError
        Unsupported node types (naming node, type and the supported ones), not exactly one
        Input and one Output, edges to unknown nodes, cycles without a neuron.
    """
    nodes, edges = {}, []
    _flatten_into(graph, "", nodes, edges)
    inputs = [k for k, n in nodes.items() if _type(n) == "Input"]
    outputs = [k for k, n in nodes.items() if _type(n) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(f"the NIR graph has inputs {inputs} and outputs {outputs}; biosnn runs graphs with "
                              "exactly one Input and one Output node")
    flat = FlatGraph(nodes, edges, {}, {}, set(), inputs[0], outputs[0], dict(getattr(graph, "metadata", {}) or {}))
    _infer_shapes(flat)
    _schedule(flat)
    return flat


def _flatten_into(graph, prefix, nodes, edges):
    import nir
    inner_in, inner_out = {}, {}
    for name, node in graph.nodes.items():
        full = prefix + name
        kind = _type(node)
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = {}, []
            _flatten_into(node, full + ".", sub_nodes, sub_edges)
            ins = [k for k, n in sub_nodes.items() if _type(n) == "Input" and k.count(".") == full.count(".") + 1]
            outs = [k for k, n in sub_nodes.items() if _type(n) == "Output" and k.count(".") == full.count(".") + 1]
            if len(ins) != 1 or len(outs) != 1:
                raise ConversionError(f"nested NIR graph '{full}' has inputs {ins} and outputs {outs}; biosnn needs "
                                      "one of each")
            # the nested Input/Output become identity (Flatten-free) pass-throughs: contracted below
            inner_in[full], inner_out[full] = ins[0], outs[0]
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
            continue
        if kind not in SUPPORTED:
            raise ConversionError(f"NIR node '{full}' has type {kind}, which biosnn does not import; supported: "
                                  f"{', '.join(SUPPORTED)}")
        nodes[full] = node
    for src, dst in graph.edges:
        src, dst = prefix + str(src), prefix + str(dst)
        src = inner_out.get(src, src)
        dst = inner_in.get(dst, dst)
        for end in (src, dst):
            if end not in nodes:
                raise ConversionError(f"NIR edge ({src!r}, {dst!r}) names node '{end}', which is not in the graph")
        edges.append((src, dst))
    # contract the nested graphs' own Input/Output nodes
    for full in list(inner_in):
        for io in (inner_in[full], inner_out[full]):
            preds = [s for s, d in edges if d == io]
            succs = [d for s, d in edges if s == io]
            edges[:] = [(s, d) for s, d in edges if io not in (s, d)] + [(p, q) for p in preds for q in succs]
            del nodes[io]


def _arr(x):
    return np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)


def _pair(v):
    v = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return (int(v[0]), int(v[-1])) if v.size else (0, 0)


def conv_out(size, k, stride, pad, dil):
    """Output length of a convolution (torch's formula)."""
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def _infer_shapes(g: FlatGraph):
    preds = {k: [s for s, d in g.edges if d == k] for k in g.nodes}
    inp = g.nodes[g.input]
    shape = inp.input_type.get("input") if isinstance(inp.input_type, dict) else None
    if shape is None:
        raise ConversionError(f"NIR Input node '{g.input}' has no shape")
    g.shapes[g.input] = g.file_input_shape = tuple(int(s) for s in np.asarray(shape).ravel())
    needs = {"Affine": 1, "Linear": 1, "Conv1d": 2, "Conv2d": 3, "SumPool2d": 3, "AvgPool2d": 3}
    first = [type(g.nodes[d]).__name__ for s, d in g.edges if s == g.input]
    shape = g.shapes[g.input]
    if len(shape) >= 2 and shape[0] == 1 and first and all(needs.get(k) == len(shape) - 1 for k in first):
        g.shapes[g.input] = shape[1:]  # a batch dimension of 1 in the Input (Norse, Rockpool exporters)
    pending = [k for k in g.nodes if k != g.input]
    for _ in range(len(g.nodes) + 1):
        progress = False
        for k in list(pending):
            known = [g.shapes[p] for p in preds[k] if p in g.shapes]
            node, kind = g.nodes[k], _type(g.nodes[k])
            if not known and kind not in ("Affine", "Linear") and kind not in NEURON_TYPES + ("Scale", "Delay"):
                continue
            s_in = known[0] if known else None
            try:
                out = _out_shape(node, kind, s_in, k)
            except ConversionError:
                raise
            if out is None:
                continue
            g.shapes[k] = out
            pending.remove(k)
            progress = True
        if not pending or not progress:
            break
    if pending:
        raise ConversionError(f"cannot infer the shapes of NIR nodes {pending}: they are not reached from the Input "
                              "or lack shape information")


def _param_shape(node, kind):
    field = {"IF": "v_threshold", "LIF": "v_threshold", "CubaLIF": "v_threshold", "LI": "tau", "CubaLI": "tau_mem",
             "I": "r", "Threshold": "threshold", "Scale": "scale", "Delay": "delay"}[kind]
    return _arr(getattr(node, field)).shape


def _out_shape(node, kind, s_in, name):
    if kind in ("Affine", "Linear"):
        w = _arr(node.weight)
        if w.ndim != 2:
            raise ConversionError(f"NIR node '{name}' ({kind}) has a {w.ndim}-D weight; biosnn imports 2-D weights")
        return (w.shape[0],)
    if kind in NEURON_TYPES + ("Scale", "Delay"):
        ps = _param_shape(node, kind)
        if s_in is not None and int(np.prod(ps)) in (0, 1) and int(np.prod(s_in)) != int(np.prod(ps)):
            return tuple(s_in)  # scalar parameters broadcast over the layer (sinabs, norse)
        if ps == () and s_in is None:
            return None
        return tuple(ps) if ps != () else tuple(s_in)
    if kind in ("Output",):
        return tuple(s_in)
    if kind == "Flatten":
        s = list(s_in)
        a = node.start_dim % len(s)
        b = node.end_dim % len(s)
        return tuple(s[:a] + [int(np.prod(s[a:b + 1]))] + s[b + 1:])
    if kind in ("Conv2d", "Conv1d"):
        w = _arr(node.weight)
        nd = 2 if kind == "Conv2d" else 1
        if len(s_in) != nd + 1:
            want = "(C, H, W)" if nd == 2 else "(C, L)"
            raise ConversionError(f"NIR node '{name}' ({kind}) receives shape {s_in}; expected {want}")
        spatial = s_in[1:]
        stride, dil = _tuple(node.stride, nd), _tuple(node.dilation, nd)
        if isinstance(node.padding, str):
            pads = (0,) * nd if node.padding == "valid" else None
            if pads is None:
                return (w.shape[0], *spatial)
        else:
            pads = _tuple(node.padding, nd)
        return (w.shape[0], *(conv_out(spatial[d], w.shape[2 + d], stride[d], pads[d], dil[d]) for d in range(nd)))
    if kind in ("SumPool2d", "AvgPool2d"):
        k, st, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        return (s_in[0], conv_out(s_in[1], k[0], st[0], p[0], 1), conv_out(s_in[2], k[1], st[1], p[1], 1))
    raise ConversionError(f"NIR node '{name}' has type {kind}, which biosnn does not import")  # pragma: no cover


def _tuple(v, n):
    v = np.atleast_1d(np.asarray(v)).astype(int).ravel()
    return tuple(int(v[0]) for _ in range(n)) if v.size == 1 else tuple(int(x) for x in v[:n])


def _schedule(g: FlatGraph):
    """Depth of each node (layers of one time step) and the back (recurrent) edges, by DFS from the Input."""
    succ = {k: [d for s, d in g.edges if s == k] for k in g.nodes}
    color, order = {}, []

    def visit(k):
        color[k] = 1
        for d in succ[k]:
            if color.get(d) == 1:
                g.back.add((k, d))
            elif d not in color:
                visit(d)
        color[k] = 2
        order.append(k)

    visit(g.input)
    unreached = [k for k in g.nodes if k not in color]
    if unreached:
        raise ConversionError(f"NIR nodes {unreached} are not reached from the Input node '{g.input}'")
    for k in reversed(order):
        preds = [s for s, d in g.edges if d == k and (s, d) not in g.back]
        g.depth[k] = 0 if k == g.input else 1 + max(g.depth[p] for p in preds)
    fwd = {k: [d for s, d in g.edges if s == k and (s, d) not in g.back] for k in g.nodes}
    for s, d in g.back:
        # nodes on a path d -> ... -> s: the loop the back edge closes
        reach, stack = set(), [d]
        while stack:
            k = stack.pop()
            if k not in reach:
                reach.add(k)
                stack.extend(fwd[k])
        loop = [k for k in reach if _reaches(fwd, k, s)]
        if not any(_type(g.nodes[k]) in NEURON_TYPES for k in loop):
            raise ConversionError(f"recurrent NIR edge ({s!r}, {d!r}) closes a loop of static nodes {sorted(loop)} "
                                  "without a neuron; such a loop has no time step to cross")


def _reaches(fwd, a, b) -> bool:
    seen, stack = set(), [a]
    while stack:
        k = stack.pop()
        if k == b:
            return True
        if k not in seen:
            seen.add(k)
            stack.extend(fwd[k])
    return False


_NAME = re.compile(r"[^A-Za-z0-9_]")


def population_names(names) -> dict:
    """Brian2-safe, unique population names for NIR node names (``1.lif`` -> ``n1_lif``)."""
    out, used = {}, set()
    for k in names:
        base = _NAME.sub("_", k)
        if not base or not base[0].isalpha():
            base = "n" + base
        if keyword.iskeyword(base):
            base += "_"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        out[k] = name
    return out
