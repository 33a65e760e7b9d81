"""biosnn's own code generation for static projections on cpp_standalone (C++) and cuda_standalone (CUDA).

A *static* projection only adds its weight to post-synaptic variables when a
presynaptic neuron spikes: no plasticity, no delay, no synaptic state besides
the weight.  Converted ANNs consist almost entirely of such projections.
Brian2's ``Synapses`` handle them with its general machinery: a spike queue
that collects the spiking synapses, per-synapse arrays of pre- and
post-synaptic indices and weights (about 56 bytes per synapse in practice), and
serial execution whenever post-synaptic variables are written.

:class:`StaticProjection` replaces such a ``Synapses`` object on the
``cpp_standalone`` device by one code object from biosnn's templates (a
derived Brian2 templater, the way brian2cuda extends Brian2):

* ``templates/biosnn_static_propagate.cpp``, per-synapse weights: synapses
  stored by presynaptic neuron (CSR), a row pointer per neuron, one ``int32``
  target and one weight in the simulation's float type per synapse (8 bytes
  per synapse with ``float32``, 12 with ``float64``);
* ``templates/biosnn_static_dense.cpp``, all-to-all projections: no target
  list, the weights as a row-major matrix (4 bytes per synapse with
  ``float32``, 8 with ``float64``), added row by row in a vectorised loop
  (a matrix larger than :data:`DENSE_PREFETCH_MIN_BYTES`: the row of a later
  spike prefetched);
* ``templates/biosnn_static_conv.cpp``, convolutions
  (:class:`~biosnn.spec.Conv2D`): no per-synapse array at all.  The targets of
  a spiking input neuron and their kernel entries are computed from the
  convolution's geometry (:class:`ConvGeometry`); only the kernel is stored;
* ``templates/biosnn_static_conv_hwc.cpp``, convolutions whose kernel rows
  make long enough runs of additions (:func:`channels_last`): per replica
  with spikes in a step, the target variable is copied into a scratch
  buffer with the output channels last (group-major), each spike adds the
  contiguous rows of a transposed kernel copy (made from ``w`` at the first
  step of each run) in vectorised loops, and the buffer is copied back
  (both copies in tiles of 8 positions);
  replicas with few spikes add in place as the channel-major template does.
  Every target still gets its additions in the order of the spike space
  onto its own value, so the sums are the same bit for bit;
* ``templates/biosnn_static_reduce.cpp``, projections of every source neuron
  onto one target neuron (:func:`all_to_one`: the rate coding's meters): one
  running sum per statement through the spikes, stored once, a constant per
  spike added as ``n * c`` where that is exact;
* ``templates/biosnn_static_gate.cpp``, the max-pool gates of the rate coding
  (:mod:`biosnn.codings.rate.spec`), CSR on one thread: the unsigned gate's
  per-synapse spike counter (:class:`CountGate`, :func:`count_gate`: the
  counter stays a variable of the projection, reset by its operation), and
  the signed gate's statements selected by the synapse's window position
  (``c<k>_post += sgn_pre * int(pos == k)``: :attr:`StaticStatement.select`,
  one ``int32`` statement index per synapse); brian2cuda keeps Brian2's
  ``Synapses`` for them;
* one copy of each array in the binary: targets and weights are read from
  files straight into their arrays in ``main`` (:func:`write_static_files`),
  where Brian2's ``values=`` would keep a second, static copy for the whole
  run;
* no spike queue and no delay array: spikes are propagated straight from the
  source's spike space in the same step;
* OpenMP: threads own blocks of targets (all-to-all and CSR projections: a
  binary search finds a block's synapses in a row), the output channels of a
  convolution, or its replicas (channels last: replicas, or blocks of output
  rows with one replica); each thread takes the spikes in order, so no
  addition is atomic and the sums are bit-identical to one thread's.  CSR
  projections with short rows (fewer than 32 synapses per source on average:
  pooling, meters) run on one thread; atomic additions only onto shared,
  one-value target variables;
* brian2cuda (``cuda_standalone``): the same three layouts as CUDA kernels
  (``templates/biosnn_static_*.cu`` on ``biosnn_static_common.cu``): a block
  per spiking source neuron, its threads over that neuron's synapses, atomic
  additions; the arrays read in ``main`` are copied to the GPU there.
* Replicas: a convolution between populations of shape ``(R, C, H, W)``
  (:func:`biosnn.spec.replicas.replicate`) keeps one kernel for all ``R``
  copies (:class:`ConvGeometry`).

Each target gets at most one addition per spiking source neuron, and the
spiking neurons are taken in the order of the spike space, as Brian2's own
``Synapses`` do, so on the CPU the results are bit-identical to the stock
templates (tested); on the GPU up to the order of atomic additions.  The
weights stay run-time values: ``run_args`` overrides of ``"<projection>.w"``
work as for ``Synapses`` (for a convolution, ``w`` is the kernel).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["ConvGeometry", "StaticStatement", "CountGate", "count_gate", "is_dense", "static_statements",
           "make_static_projection", "static_memory_bytes", "write_static_files", "cuda_launch", "CUDA_MAX_THREADS",
           "CHANNELS_LAST_MIN_RUN", "channels_last", "all_to_one", "DENSE_PREFETCH_MIN_BYTES", "on_cuda"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_LINE = re.compile(rf"^({_NAME})_post\s*\+=\s*(.+)$")


@dataclass(frozen=True)
class StaticStatement:
    """One ``<target>_post += [w] [* <pre>_pre | * constant] [* int(P == k)]`` statement of a static projection.

    ``select``: ``(P, k)`` where the statement has the factor ``int(P == k)``
    of a per-synapse constant ``P`` (the signed max-pool gate's window
    position): only the synapses whose ``P`` equals ``k`` make it.
    """

    target: str
    weight: bool
    pre: str | None = None
    const: str | None = None
    select: tuple[str, float] | None = None


_SELECT = re.compile(rf"^int\(\s*({_NAME})\s*==\s*({_NUMBER})\s*\)$")


def _rhs(rhs: str, weight_var: str) -> StaticStatement | None:
    factors = [f.strip() for f in rhs.split("*")]
    selects = [sel for f in factors if (sel := _SELECT.fullmatch(f))]
    if len(selects) > 1:
        return None
    if selects:
        factors = [f for f in factors if not _SELECT.fullmatch(f)] or ["1"]
        st = _rhs(" * ".join(factors), weight_var)
        return None if st is None else StaticStatement("", st.weight, st.pre, st.const,
                                                       (selects[0].group(1), float(selects[0].group(2))))
    if not 1 <= len(factors) <= 2 or any(not f for f in factors):
        return None
    weight = weight_var in factors
    rest = [f for f in factors if f != weight_var]
    if len(rest) > 1 or (not weight and not rest):
        return None
    if not rest:
        return StaticStatement("", True)
    other = rest[0]
    if re.fullmatch(rf"({_NAME})_pre", other):
        return StaticStatement("", weight, pre=other[:-4])
    if re.fullmatch(_NUMBER, other):
        return StaticStatement("", weight, const=repr(float(other)))
    return None


def static_statements(spec: m.NetworkSpec, proj: m.Projection) -> tuple[StaticStatement, ...] | None:
    """The statements of ``proj`` if it is a static projection, else ``None``.

    Static: no delay, no operations, no ``on_post``, no initial values, a
    model whose only variable is the weight, and ``on_pre`` made of statements
    ``X_post += w``, ``X_post += w * Y_pre``, ``X_post += Y_pre``,
    ``X_post += w * c`` or ``X_post += c`` (``c`` a number).

    Selected statements (the signed max-pool gate, :mod:`biosnn.codings.rate.spec`):
    every statement also has a factor ``int(P == k)``, with one per-synapse
    constant ``P`` (declared ``P : 1 (constant)``, given as an array in the
    projection's ``initial``) and a distinct number ``k`` per statement.  A
    synapse makes only the statement whose ``k`` equals its ``P`` (none if
    none does); the others would add ``0`` (``factor * 0``), which changes no
    value that is not ``-0.0`` (``-0.0 + 0.0`` is ``+0.0``) for finite factors.
    """
    smodel = spec.synapse_model(proj)
    if proj.delay is not None or proj.operations or smodel.on_post or not isinstance(smodel.on_pre, str):
        return None
    decl = [ln.strip() for ln in (smodel.equations or "").splitlines() if ln.strip()]
    weight_decl = [d for d in decl if re.fullmatch(rf"{re.escape(proj.weight_var)}\s*:\s*[^()]+", d)]
    selectors = {match.group(1) for d in decl
                 if (match := re.fullmatch(rf"({_NAME})\s*:\s*1\s*\(\s*constant\s*\)", d))}
    if len(weight_decl) > 1 or len(decl) > len(weight_decl) + len(selectors) or len(selectors) > 1:
        return None
    if not weight_decl and proj.weights is not None:
        return None
    out = []
    for line in smodel.on_pre.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            return None
        st = _rhs(match.group(2), proj.weight_var)
        if st is None or (st.weight and not weight_decl):
            return None
        out.append(StaticStatement(match.group(1), st.weight, st.pre, st.const, st.select))
    chosen = {st.select for st in out}
    if not out:
        return None
    if selectors or chosen != {None}:  # selected statements: all of them, one variable P given per synapse
        names = {sel[0] for sel in chosen if sel is not None}
        if None in chosen or names != selectors or len(chosen) != len(out) or set(proj.initial) != selectors \
                or not isinstance(proj.initial[next(iter(selectors))], ArrayValue):
            return None
    elif proj.initial:
        return None
    return tuple(out)


@dataclass(frozen=True)
class CountGate:
    """A projection onto max-pool gates with a per-synapse spike counter (the rate coding's unsigned gate).

    Its synapse model declares only ``C : 1``, its one operation is ``C = 0``, and
    its ``on_pre`` is::

        C += 1
        F_post = F_post + (1 - F_post) * int(C > N_post)
        N_post = N_post + int(C > N_post)

    (``counter`` ``C``, ``fire`` ``F``, ``count`` ``N``): the gate's count ``N``
    is the running maximum of its inputs' counts, and ``F`` flags a rise.
    """

    counter: str
    fire: str
    count: str


_COUNT_GATE = re.compile(
    rf"(?P<c>{_NAME})\+=1\n"
    rf"(?P<f>{_NAME})_post=(?P=f)_post\+\(1-(?P=f)_post\)\*int\((?P=c)>(?P<n>{_NAME})_post\)\n"
    rf"(?P=n)_post=(?P=n)_post\+int\((?P=c)>(?P=n)_post\)")


def count_gate(spec: m.NetworkSpec, proj: m.Projection) -> CountGate | None:
    """The :class:`CountGate` form of ``proj``, or ``None`` if it has another model (or a delay, weights, ...).

    Such projections propagate with ``templates/biosnn_static_gate.cpp``
    (no spike queue); the counter stays a per-synapse variable of the
    projection, reset by its operation.
    """
    smodel = spec.synapse_model(proj)
    if proj.delay is not None or proj.initial or proj.weights is not None or smodel.on_post \
            or not isinstance(smodel.on_pre, str) or len(proj.operations) != 1:
        return None
    lines = [re.sub(r"\s+", "", ln.split("#", 1)[0]) for ln in smodel.on_pre.splitlines()]
    match = _COUNT_GATE.fullmatch("\n".join(ln for ln in lines if ln))
    decl = [re.sub(r"\s+", "", ln) for ln in (smodel.equations or "").splitlines() if ln.strip()]
    if match is None or decl != [f"{match['c']}:1"] or match["f"] == match["n"] \
            or re.sub(r"\s+", "", proj.operations[0].code) != f"{match['c']}=0":
        return None
    return CountGate(match["c"], match["f"], match["n"])


def static_memory_bytes(n_synapses: int, n_pre: int, float_bytes: int, kernel_size: int | None,
                        dense: bool = False) -> int:
    """Bytes a static projection stores in the binary.

    Per-synapse weights: a target and a weight per synapse plus a row pointer
    per presynaptic neuron; all-to-all (``dense``): the weights only.  A
    convolution (``kernel_size`` given): its kernel only.

    >>> static_memory_bytes(1000, 10, 4, None), static_memory_bytes(1000, 10, 4, None, dense=True)
    (8044, 4000)
    >>> static_memory_bytes(1000, 10, 4, 150)
    600
    """
    if kernel_size is not None:
        return kernel_size * float_bytes
    if dense:
        return n_synapses * float_bytes
    return n_synapses * (4 + float_bytes) + 4 * (n_pre + 1)


_READ_FILE = """{{
    std::ifstream _biosnn_f("static_arrays/biosnn_{array}", std::ios::in | std::ios::binary);
    if (!_biosnn_f.read(reinterpret_cast<char*>(brian::{array}), (std::streamsize){size} * sizeof({ctype}))) {{
        std::cerr << "biosnn: cannot read static_arrays/biosnn_{array}" << std::endl;
        std::exit(1);
    }}{copy}
}}"""
#: brian2cuda: the kernels read the device copy of an array.
_TO_DEVICE = """
    CUDA_SAFE_CALL(cudaMemcpy(brian::dev{array}, brian::{array}, (size_t){size} * sizeof({ctype}),
                              cudaMemcpyHostToDevice));"""
#: threads per block of the CUDA kernels (a multiple of the warp size, 32).
CUDA_MAX_THREADS = 256


def c_type(dtype) -> str:
    """The C type of a numpy dtype, as Brian2's C++ code names it."""
    from brian2.devices.cpp_standalone.codeobject import c_data_type
    return c_data_type(np.dtype(dtype))


def write_static_files(objects, directory) -> int:
    """Write the arrays that static projections read in ``main`` into ``directory/static_arrays``.

    Parameters
    ----------
    objects : iterable
        Brian2 objects; those without ``files`` (not static projections) are skipped.
    directory : path-like
        The standalone project directory.

    Returns
    -------
    int
        Bytes written.
    """
    from pathlib import Path
    out = Path(directory) / "static_arrays"
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for obj in objects:
        for name, values in getattr(obj, "files", {}).items():
            values.tofile(out / name)
            written += values.nbytes
    return written


@dataclass(frozen=True)
class ConvGeometry:
    """What the implicit-convolution template needs: shapes, kernel, stride, padding, groups, replicas.

    Input neuron ``(c, y, x)`` is index ``(c * H + y) * W + x``, output ``(o, oy, ox)``
    is ``(o * Ho + oy) * Wo + ox`` (the spec's channel-major layout).  With ``R``
    replicas (populations of shape ``(R, C, H, W)``, :func:`biosnn.spec.replicas.replicate`),
    replica ``r`` is a block of its own: input ``r * C * H * W + (c * H + y) * W + x``
    reaches only outputs ``r * O * Ho * Wo + ...``, through the same kernel.
    """

    C: int
    H: int
    W: int
    Ho: int
    Wo: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    cin_g: int
    cout_g: int
    R: int = 1

    @property
    def O(self) -> int:  # noqa: E743 (the output channels, as in the docstring)
        """Output channels (all groups)."""
        return self.cout_g * (self.C // self.cin_g)

    @classmethod
    def of(cls, conv: m.Conv2D, in_shape, out_shape) -> "ConvGeometry":
        """The geometry of ``conv`` from the source's ``(C, H, W)`` to the target's ``(O, Ho, Wo)``.

        Shapes with a leading replica axis, ``(R, C, H, W)`` and ``(R, O, Ho, Wo)``,
        give ``R`` replicas.

        >>> from biosnn.spec import Conv2D
        >>> g = ConvGeometry.of(Conv2D(np.ones((4, 1, 3, 3))), (2, 1, 5, 5), (2, 4, 3, 3))
        >>> g.R, g.O, g.n_synapses()
        (2, 4, 648)
        """
        out_c, cin_g, kh, kw = conv.kernel.data.shape
        in_shape, out_shape = tuple(int(v) for v in in_shape), tuple(int(v) for v in out_shape)
        R = 1
        if len(in_shape) == 4 and len(out_shape) == 4 and in_shape[0] == out_shape[0]:
            R, in_shape, out_shape = in_shape[0], in_shape[1:], out_shape[1:]
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise ValueError(f"a convolution needs (C, H, W) or (R, C, H, W) shapes with the same R, got "
                             f"{in_shape} -> {out_shape}")
        C, H, W = in_shape
        O, Ho, Wo = out_shape
        return cls(C, H, W, Ho, Wo, int(kh), int(kw), *conv.stride, *conv.padding, int(cin_g),
                   int(out_c) // conv.groups, R)

    def n_synapses(self) -> int:
        """The number of synapses the convolution makes (taps inside the input only)."""
        def taps(n_in, n_out, k, stride, pad):
            pos = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :]
            return int(np.count_nonzero((pos >= 0) & (pos < n_in)))
        return (self.R * self.C * self.cout_g * taps(self.H, self.Ho, self.kh, self.sh, self.ph)
                * taps(self.W, self.Wo, self.kw, self.sw, self.pw))


def make_static_projection(source, target, conn, statements, *, name: str, clock, when: str, order: int,
                           kernel_size: int | None = None, conv: ConvGeometry | None = None, dense: bool = False,
                           select=None, gate: CountGate | None = None):
    """A Brian2 object propagating a static projection (see the module docstring).

    Parameters
    ----------
    source, target : brian2 groups
        Pre- and post-synaptic groups (the source needs a spike space).
    conn : biosnn.connectivity.Connections or None
        Synapses, sorted by ``(i, j)``; ``None`` with ``conv`` (the geometry
        gives everything) or ``dense``.
    statements : sequence of StaticStatement
    name : str
        Brian2 name (the projection's name: overrides and final values use it).
    clock, when, order
        Schedule of the propagation.
    kernel_size : int, optional
        Weights are a shared convolution kernel of this many entries
        (default: one weight per synapse).
    conv : ConvGeometry, optional
        With ``kernel_size``: the convolution whose synapses the propagation
        loop computes (``templates/biosnn_static_conv.cpp``) instead of
        storing a target per synapse.
    dense : bool
        All-to-all (every source to every target, weights in row-major
        ``(i, j)`` order): no synapse lists needed.
    select : array_like, optional
        Selected statements (every statement has a ``select``, see
        :func:`static_statements`): the per-synapse values of the selector
        variable, in the order of ``conn``.
    gate : CountGate, optional
        A max-pool gate projection (``statements`` empty, ``conn`` given).

    Returns
    -------
    StaticProjection
        Set its weights with :meth:`set_weights` (per synapse, or the kernel).
    """
    if (conv is None) != (kernel_size is None):
        raise ValueError("a shared kernel (kernel_size) goes with a convolution's geometry (conv)")
    if (select is not None or gate is not None) and (conn is None or dense):
        raise ValueError("selected statements and gates need the synapse lists (conn)")
    return _classes()[1](source, target, conn, statements, name, clock, when, order, kernel_size, conv, dense,
                         select, gate)


#: a convolution propagates with the channels last (``templates/biosnn_static_conv_hwc.cpp``, see
#: :func:`channels_last`) when one kernel row of a spike makes at least this many contiguous additions.
CHANNELS_LAST_MIN_RUN = 8


#: an all-to-all projection prefetches the weight row of the spike 4 spikes ahead when its weights take at least
#: this many bytes (more than a core's L2 cache: 1 MiB on the machine measured, where a 9.4 MB matrix ran ~5 %
#: faster with it and a 384 kB one the same).
DENSE_PREFETCH_MIN_BYTES = 1 << 20


def channels_last(conv: ConvGeometry, statements, rendered, recurrent: bool, cuda: bool) -> bool:
    """Whether a convolution propagates with the output channels innermost (vectorised loops).

    ``templates/biosnn_static_conv_hwc.cpp`` handles one statement
    ``X_post += w [* factor]`` onto a per-neuron variable ``X``, between two
    distinct groups (``recurrent`` False: a presynaptic factor cannot be the
    variable being written), on the CPU, when its loops are long enough to pay
    for the copies: a kernel row adds ``cout_g * kw`` contiguous values with
    stride 1 along the width, ``cout_g`` otherwise, at least
    :data:`CHANNELS_LAST_MIN_RUN` (depthwise 3x3: 3, channel-major).
    Everything else keeps ``templates/biosnn_static_conv.cpp``.

    Parameters
    ----------
    conv : ConvGeometry
    statements : sequence of StaticStatement
    rendered : list of dict
        The statements as the templates get them (``target_index``: ``"_j"``
        per neuron, ``"0"`` for a shared variable).
    recurrent : bool
        Source and target are the same group.
    cuda : bool
        On brian2cuda (its ``.cu`` templates have one convolution layout).

    >>> g = ConvGeometry(C=32, H=8, W=8, Ho=8, Wo=8, kh=3, kw=3, sh=1, sw=1, ph=1, pw=1, cin_g=1, cout_g=1)
    >>> channels_last(g, [StaticStatement("v", True)], [{"target_index": "_j"}], False, False)
    False
    >>> from dataclasses import replace
    >>> channels_last(replace(g, cout_g=6), [StaticStatement("v", True)], [{"target_index": "_j"}], False, False)
    True
    """
    run = conv.cout_g * (conv.kw if conv.sw == 1 else 1)
    return (not cuda and not recurrent and len(statements) == 1 and statements[0].weight
            and rendered[0]["target_index"] == "_j" and run >= CHANNELS_LAST_MIN_RUN)


def all_to_one(conn, n_pre: int, statements) -> int | None:
    """The one target of ``conn`` if it connects every source neuron ``i`` (synapse ``i``) to it, else ``None``.

    Such projections (the meters of the rate coding: spikes and synaptic
    operations per layer) propagate with ``templates/biosnn_static_reduce.cpp``:
    one running sum per statement instead of a row lookup and a load and store
    per spike.  Statements must write distinct variables (the sums of two
    statements onto one variable would interleave).

    >>> from types import SimpleNamespace as C
    >>> one = [StaticStatement("spk", False, const="1.0"), StaticStatement("ops", False, pre="fanout")]
    >>> all_to_one(C(i=np.arange(4), j=np.full(4, 2)), 4, one), all_to_one(C(i=np.arange(4), j=np.arange(4)), 4, one)
    (2, None)
    >>> all_to_one(C(i=np.arange(4), j=np.full(4, 2)), 4, one[:1] * 2) is None
    True
    """
    i, j = np.asarray(conn.i), np.asarray(conn.j)
    if n_pre == 0 or len(i) != n_pre or len(j) != n_pre or len({st.target for st in statements}) != len(statements):
        return None
    if not (np.array_equal(i, np.arange(n_pre)) and (j == j[0]).all()):
        return None
    return int(j[0])


def is_dense(conn, n_pre: int, n_post: int) -> bool:
    """Whether ``conn`` is every pair ``(i, j)`` once, in row-major order (all-to-all)."""
    if len(conn.i) != n_pre * n_post or n_pre * n_post == 0:
        return False
    j = np.asarray(conn.j).reshape(n_pre, n_post)
    i = np.asarray(conn.i).reshape(n_pre, n_post)
    return bool((j == np.arange(n_post)).all() and (i == np.arange(n_pre)[:, None]).all())


@functools.lru_cache(maxsize=None)
def _classes():
    """The Brian2 classes, made once (module-level classes would import Brian2 with biosnn)."""
    from brian2 import Group
    from brian2.core.variables import Variables
    from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject
    from brian2.groups.group import CodeRunner

    class StaticCodeObject(CPPStandaloneCodeObject):
        templater = CPPStandaloneCodeObject.templater.derive("biosnn.backends", templates_dir="templates")

    def codeobj_class(cuda: bool):
        return _cuda_code_object() if cuda else StaticCodeObject

    class StaticProjection(Group):
        add_to_magic_network = False

        def __init__(self, source, target, conn, statements, name, clock, when, order, kernel_size, conv, dense,
                     select, gate):
            Group.__init__(self, clock=clock, when=when, order=order, name=name)
            self._cuda = on_cuda()
            n_syn = conv.n_synapses() if conv is not None else len(source) * len(target) if dense else len(conn.i)
            self._n_synapses = n_syn
            self.variables = Variables(self)
            # N: the entries of w, which Brian2 loops over to set w from an expression (a protocol's
            # "<projection>.w": "2*w"): the kernel's for a convolution
            self.variables.add_constant("N", n_syn if kernel_size is None else int(kernel_size))
            self.files = {}
            self.variables.add_reference("_source_spikespace", source, "_spikespace")
            needed = ["_source_spikespace", "N"]
            gated = select is not None or gate is not None  # CSR layout, biosnn_static_gate.cpp
            dense = dense or (conv is None and not gated and is_dense(conn, len(source), len(target)))
            reduce_to = None if conv is not None or dense or gated or self._cuda or source is target \
                else all_to_one(conn, len(source), statements)
            if conv is None and not dense and reduce_to is None:
                i = np.asarray(conn.i, dtype=np.int64)
                rowptr = np.zeros(len(source) + 1, dtype=np.int32)
                np.cumsum(np.bincount(i, minlength=len(source)), out=rowptr[1:])
                self.variables.add_array("_rowptr", size=len(rowptr), dtype=np.int32, values=rowptr,
                                         read_only=True, constant=True)
                self.variables.add_array("_post", size=n_syn, dtype=np.int32, read_only=True, constant=True)
                self._load_from_file("_post", conn.j)
                needed += ["_rowptr", "_post"]
            if select is not None:
                needed.append(self._selection(select, statements))
            kernel = kernel_size is not None
            kw = {"kernel": kernel, "statements": [], "conv": conv, "n_post": len(target), "reduce_target": reduce_to}
            weight_dims = None
            for k, st in enumerate(statements):
                tname = f"_target_{k}"
                self.variables.add_reference(tname, target, st.target)
                needed.append(tname)
                pname = None
                if st.pre is not None:
                    pname = f"_pre_{k}"
                    self.variables.add_reference(pname, source, st.pre)
                    needed.append(pname)
                if st.weight:
                    weight_dims = target.variables[st.target].dim
                    if st.pre is not None:
                        weight_dims = weight_dims / source.variables[st.pre].dim
                kw["statements"].append({
                    "target": tname, "weight": st.weight, "pre": pname, "const": st.const,
                    # (shared) variables have one value: index 0, not the neuron index
                    "target_index": "0" if target.variables[st.target].scalar else "_j",
                    "pre_index": "0" if pname is not None and source.variables[st.pre].scalar else "_i"})
            kw["gate"] = None if gate is None else self._gate(gate, source, target, n_syn, needed)
            if weight_dims is not None:
                size = int(kernel_size) if kernel else n_syn
                self.variables.add_array("w", size=size, dimensions=weight_dims, constant=True)
                needed.append("w")
            self._enable_group_attributes()
            kw["blocked"] = all(st["target_index"] == "_j" for st in kw["statements"])
            if conv is not None:
                work = conv.cout_g * conv.kh * conv.kw
            elif dense:
                work = len(target)
            elif reduce_to is not None:
                work = 1
            else:
                work = int(np.diff(rowptr).max(initial=0))
            kw.update(cuda_launch(len(source), work))
            # OpenMP, CSR: threads own blocks of targets (at least 256, at most 16 blocks) when rows are long
            kw["target_block"] = max(256, -(-len(target) // 16))
            kw["long_rows"] = reduce_to is None and n_syn >= 32 * max(len(source), 1)  # read by the CSR template only
            kw["prefetch_rows"] = dense and n_syn * np.dtype(target.variables[statements[0].target].dtype).itemsize \
                >= DENSE_PREFETCH_MIN_BYTES
            kw["one_per_source"] = conv is None and not dense and reduce_to is None and bool(
                n_syn == len(source) and (np.diff(rowptr) == 1).all())
            if conv is not None and channels_last(conv, statements, kw["statements"], source is target, self._cuda):
                self.variables.add_array("_wT_made", size=1, dtype=np.int32)  # 0: transpose w at the next step
                needed.append("_wT_made")
                template = "biosnn_static_conv_hwc"
            elif gated:
                if self._cuda:
                    raise ValueError("selected statements and gates have no CUDA template: build them as Synapses")
                template = "biosnn_static_gate"
            else:
                template = ("biosnn_static_conv" if conv is not None else "biosnn_static_dense" if dense
                            else "biosnn_static_reduce" if reduce_to is not None else "biosnn_static_propagate")
            self.runner = CodeRunner(self, template, code="", clock=clock, when=when,
                                     order=order, name=f"{name}_propagate", needed_variables=needed,
                                     template_kwds=kw, codeobj_class=codeobj_class(self._cuda))
            self.contained_objects.append(self.runner)

        def __len__(self):
            return self._n_synapses

        def _selection(self, select, statements) -> str:
            """The per-synapse statement index ``_sel`` (-1: none) from the selector's values; its name."""
            from brian2 import prefs
            values = np.asarray(select).astype(prefs.core.default_float_dtype).astype(np.float64).reshape(-1)
            if values.shape != (self._n_synapses,):
                raise ValueError(f"{self.name}: {values.size} selector values for {self._n_synapses} synapses")
            sel = np.full(values.shape, -1, dtype=np.int32)
            for k, st in enumerate(statements):
                sel[values == st.select[1]] = k
            self.variables.add_array("_sel", size=len(sel), dtype=np.int32, read_only=True, constant=True)
            self._load_from_file("_sel", sel)
            return "_sel"

        def _gate(self, gate: CountGate, source, target, n_syn: int, needed: list) -> dict:
            """The per-synapse counter and the gate's variables of a :class:`CountGate`: the template's keywords."""
            self.variables.add_array(gate.counter, size=n_syn)
            self.variables.add_reference("_gate_fire", target, gate.fire)
            self.variables.add_reference("_gate_count", target, gate.count)
            needed += [gate.counter, "_gate_fire", "_gate_count"]
            return {name: "0" if target.variables[var].scalar else "_j"
                    for name, var in (("fire_index", gate.fire), ("count_index", gate.count))} | {
                "counter": gate.counter}

        def _load_from_file(self, name, values):
            """Make the binary read ``name`` from its own file, straight into the array.

            Brian2's ``values=`` path keeps a second, static copy of the
            array for the whole run; reading the file in ``main`` keeps one.
            The file is written by :func:`write_static_files` next to Brian2's
            static arrays.
            """
            from brian2 import get_device
            var = self.variables[name]
            array = get_device().get_array_name(var)
            self.files[f"biosnn_{array}"] = np.ascontiguousarray(values, dtype=var.dtype)
            if self.files[f"biosnn_{array}"].shape != (var.size,):
                raise ValueError(f"{self.name}.{name}: {len(values)} values for {var.size} entries")
            fmt = {"array": array, "size": var.size, "ctype": c_type(var.dtype)}
            get_device().insert_code("main", _READ_FILE.format(
                copy=_TO_DEVICE.format(**fmt) if self._cuda else "", **fmt))

        def set_weights(self, values, unit: str = "1"):
            """Set ``w`` (per synapse, or the shared kernel, flattened) from numbers in ``unit``, without a copy.

            Float64 numbers in a unit of scale 1 (``"1"``, ``"volt"``) are
            kept as they are (a view) until :func:`write_static_files`
            writes them; other units are scaled to SI once.
            """
            from brian2.units.fundamentalunits import fail_for_dimension_mismatch
            from biosnn.spec.values import unit_of
            var = self.variables["w"]
            q = unit_of(unit)
            fail_for_dimension_mismatch(q, var.dim, f"weights of {self.name}")
            values = np.asarray(values, dtype=np.float64).reshape(-1)
            scale = float(np.asarray(q))
            self._load_from_file("w", values if scale == 1.0 else values * scale)

    return StaticCodeObject, StaticProjection


def cuda_launch(n_source: int, work: int) -> dict:
    """Grid of the CUDA kernels: a block per source neuron (at most 65535), threads for ``work`` synapses.

    ``work`` is the most synapses one spike reaches; the threads are that many
    rounded up to a multiple of 32, at most :data:`CUDA_MAX_THREADS`.

    >>> cuda_launch(784, 150), cuda_launch(10**6, 5000)
    ({'cuda_blocks': 784, 'cuda_threads': 160}, {'cuda_blocks': 65535, 'cuda_threads': 256})
    """
    threads = min(CUDA_MAX_THREADS, max(32, -(-int(work) // 32) * 32))
    return {"cuda_blocks": max(1, min(int(n_source), 65535)), "cuda_threads": threads}


def on_cuda() -> bool:
    """Whether the active Brian2 device is brian2cuda's ``cuda_standalone``."""
    from brian2 import get_device
    return type(get_device()).__module__.startswith("brian2cuda")


@functools.lru_cache(maxsize=None)
def _cuda_code_object():
    """brian2cuda's code object class with biosnn's ``.cu`` templates (made when first needed)."""
    from brian2cuda.codeobject import CUDAStandaloneCodeObject

    class StaticCudaCodeObject(CUDAStandaloneCodeObject):
        templater = CUDAStandaloneCodeObject.templater.derive("biosnn.backends", templates_dir="templates")

    return StaticCudaCodeObject
