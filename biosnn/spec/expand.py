"""Expand a projection's connectivity into explicit synapse lists.

All backends (Brian2 and NEST) build synapses from these lists, so every
backend gets exactly the same connectivity, random connectivity included
(drawn in numpy from the spec's seed and the projection's name).
"""

from __future__ import annotations

import zlib

import numpy as np

from biosnn import connectivity as cx
from biosnn.errors import SpecError
from biosnn.spec.model import AllToAll, Condition, Conv2D, Explicit, OneToOne, Pool2D, RandomP
from biosnn.spec.values import parse_quantity

__all__ = ["convolution_of", "expand_projection", "expand_condition", "condition_estimate", "generator_targets",
           "projection_rng", "projection_size"]

CONDITION_BLOCK = 1 << 18
"""Pairs evaluated at once by :func:`expand_condition` (rows of the ``i x j`` grid per block; part of the
expansion's definition: the random numbers are drawn block by block)."""


def projection_rng(spec, proj) -> np.random.Generator:
    """The random generator of a projection: seeded by the spec seed and the projection name."""
    return np.random.default_rng([spec.seed or 0, zlib.crc32(proj.name.encode())])


def _replicas_and_shape(node, field_: str, what: str) -> tuple[int, tuple[int, int, int]]:
    """``(R, (C, H, W))``: a shape ``(R, C, H, W)`` is ``R`` replicas (:func:`biosnn.spec.replicas.replicate`)."""
    shape = getattr(node, "shape", None)
    if shape is not None and len(shape) == 4:
        return int(shape[0]), tuple(shape[1:])
    return 1, _shape_of(node, field_, what)


def _shape_of(node, field_: str, what: str):
    shape = getattr(node, "shape", None)
    if shape is None:
        raise SpecError(f"the {what} '{node.name}' needs a shape (C, H, W) for this projection",
                        field=field_, fix=f"add 'shape: [C, H, W]' to '{node.name}'")
    if len(shape) == 2:
        shape = (1,) + tuple(shape)
    if len(shape) != 3:
        raise SpecError(f"'{node.name}' has shape {shape}, expected (C, H, W)", field=field_,
                        fix="give a 3-D shape")
    return shape


def _convolution(src, tgt, c: Conv2D, f: str) -> tuple[int, cx.ConvConnections]:
    """``(replicas, one copy's synapses, unexpanded)`` of a Conv2D projection, the target's size checked."""
    replicas, in_shape = _replicas_and_shape(src, f"{f}.kernel", "source")
    one = cx.conv2d(np.asarray(c.kernel.data, dtype=np.float64), in_shape, stride=c.stride, padding=c.padding,
                    groups=c.groups, lazy=True)
    post = ((replicas,) if replicas > 1 else ()) + one.post_shape
    if int(np.prod(post)) != tgt.size:
        raise SpecError(f"the convolution gives {post} = {int(np.prod(post))} "
                        f"neurons but target '{tgt.name}' has {tgt.size}", field=f,
                        fix=f"give '{tgt.name}' size {int(np.prod(post))} (shape {list(post)})")
    return replicas, one


def convolution_of(spec, proj) -> tuple[int, cx.ConvConnections]:
    """``(replicas, one copy's synapses)`` of a :class:`~biosnn.spec.Conv2D` projection, without synapse lists.

    Raises
    ------
    SpecError
        For a kernel, shape or target size that does not fit (the field named).
    """
    f = f"projections.{proj.name}.connect"
    try:
        return _convolution(spec.node(proj.source), spec.node(proj.target), proj.connect, f)
    except SpecError as exc:
        if exc.field and exc.field.startswith("projections."):
            raise
        raise exc.located(prefix=f) from None


def projection_size(spec, proj) -> int:
    """The number of synapses of a projection; a convolution's from its geometry, an all-to-all one
    from the sizes (no synapse lists)."""
    if isinstance(proj.connect, Conv2D):
        replicas, one = convolution_of(spec, proj)
        return replicas * len(one)
    if isinstance(proj.connect, AllToAll):  # counted, not expanded
        from biosnn.spec.budget import synapse_count
        n = synapse_count(spec, proj, exact=True)
        if n is not None:
            return n
    return len(expand_projection(spec, proj).i)


def expand_projection(spec, proj) -> cx.Connections:
    """Synapse lists of a projection.

    Parameters
    ----------
    spec : NetworkSpec
        The network (for node sizes and the seed).
    proj : Projection
        The projection.

    Returns
    -------
    biosnn.connectivity.Connections
        ``i``, ``j`` (sorted by ``(i, j)``), per-synapse ``weights`` for
        convolution and pooling (in the unit of the synapse's weight variable)
        or ``None``, and ``kernel_index`` for convolutions.
    """
    f = f"projections.{proj.name}.connect"
    src, a, b = spec.node_bounds(proj.source, f"projections.{proj.name}.source")
    tgt, c_, d = spec.node_bounds(proj.target, f"projections.{proj.name}.target")
    n_pre, n_post = b - a, d - c_
    c = proj.connect
    try:
        if isinstance(c, AllToAll):
            conn = cx.all_to_all(n_pre, n_post)
            if not c.allow_autapses and proj.source == proj.target:
                keep = conn.i != conn.j
                conn = cx.explicit(conn.i[keep], conn.j[keep], n_pre, n_post)
        elif isinstance(c, OneToOne):
            if n_pre != n_post:
                raise SpecError(f"one_to_one needs equal sizes, got {n_pre} -> {n_post}", field=f,
                                fix="use all_to_all or explicit i/j")
            conn = cx.one_to_one(n_pre)
        elif isinstance(c, RandomP):
            conn = cx.random_p(n_pre, n_post, c.p, projection_rng(spec, proj),
                               allow_autapses=c.allow_autapses or proj.source != proj.target)
        elif isinstance(c, Condition):
            i, j = expand_condition(spec, proj, n_pre, n_post)
            conn = cx.explicit(i, j, n_pre, n_post)
        elif isinstance(c, Explicit):
            conn = cx.explicit(np.asarray(c.i.data), np.asarray(c.j.data), n_pre, n_post)
        elif isinstance(c, Conv2D):
            replicas, one = _convolution(src, tgt, c, f)
            from biosnn.spec.budget import BYTES_PER_SYNAPSE, check_bytes
            check_bytes(replicas * len(one) * BYTES_PER_SYNAPSE,
                        f"the synapse lists of convolution '{proj.name}' ({replicas * len(one)} synapses)", f)
            conn = cx.replicated(one.expanded(), replicas)
        elif isinstance(c, Pool2D):
            replicas, in_shape = _replicas_and_shape(src, f"{f}.kernel_size", "source")
            conn = cx.replicated(cx.avgpool2d(in_shape, c.kernel_size, stride=c.stride, padding=c.padding), replicas)
            if int(np.prod(conn.post_shape)) != n_post:
                raise SpecError(f"pooling gives {conn.post_shape} = {int(np.prod(conn.post_shape))} neurons "
                                f"but target '{tgt.name}' has {n_post}", field=f,
                                fix=f"give '{tgt.name}' size {int(np.prod(conn.post_shape))}")
            if c.weight is not None:
                w = float(parse_quantity(c.weight, field=f"{f}.weight"))
                conn = cx.Connections(i=conn.i, j=conn.j, weights=np.full(len(conn.i), w),
                                      kernel_index=None, n_pre=n_pre, n_post=n_post,
                                      pre_shape=conn.pre_shape, post_shape=conn.post_shape)
        else:  # pragma: no cover - excluded by Projection validation
            raise SpecError(f"unknown connectivity {c!r}", field=f)
    except SpecError as exc:
        if exc.field and exc.field.startswith("projections."):
            raise
        raise exc.located(prefix=f) from None
    return conn


def _condition_names(spec, proj, n_pre: int, n_post: int) -> dict:
    """Constants a condition may use (namespace, model and projection parameters; SI floats) and the sizes."""
    from biosnn.spec.check import evaluate_namespace
    smodel = spec.synapse_model(proj)
    consts = evaluate_namespace([("namespace", spec.namespace), ("synapse_model.parameters", smodel.parameters),
                                 (f"projections.{proj.name}.parameters", proj.parameters)])
    from brian2.core.functions import DEFAULT_CONSTANTS
    names = {k: float(v.value) for k, v in DEFAULT_CONSTANTS.items()}
    names.update({k: float(np.asarray(v)) for k, v in consts.items()})
    names.update(N_pre=n_pre, N_post=n_post)
    return names


def _condition_block(c: Condition, names: dict, i, j, rng, f: str) -> np.ndarray:
    """The kept pairs of one block: condition true, then a uniform draw below ``p``."""
    from biosnn.spec.index_expressions import evaluate_index_expression
    shape = (len(i), len(j))
    scope = dict(names, i=i[:, None], j=j[None, :])
    keep = np.ones(shape, dtype=bool)
    if c.condition is not None:
        keep &= np.broadcast_to(np.asarray(evaluate_index_expression(c.condition, scope, shape, rng,
                                                                     f"{f}.condition"), dtype=bool), shape)
    if c.p is not None:
        p = np.broadcast_to(np.asarray(evaluate_index_expression(c.p, scope, shape, rng, f"{f}.p"),
                                       dtype=np.float64), shape)
        keep &= rng.random(shape) < p
    return keep


def expand_condition(spec, proj, n_pre: int, n_post: int) -> tuple[np.ndarray, np.ndarray]:
    """The synapses ``(i, j)`` of a :class:`~biosnn.spec.Condition` projection, deterministic from the seed.

    The ``n_pre x n_post`` pairs are evaluated in blocks of whole rows of at
    most :data:`CONDITION_BLOCK` pairs; in each block the condition is
    evaluated first (``rand()`` in it draws one number per pair), then ``p``,
    then one uniform number per pair, all from :func:`projection_rng`.  The
    expected number of synapses (:func:`condition_estimate`) is checked
    against the memory budget (:mod:`biosnn.spec.budget`) before anything is
    allocated, and the synapses found so far after every block.

    Returns
    -------
    i, j : numpy.ndarray of int64
        Sorted by ``(i, j)``.
    """
    from biosnn.spec.budget import BYTES_PER_SYNAPSE, check_bytes
    c, f = proj.connect, f"projections.{proj.name}.connect"
    if c.j is not None:
        return np.arange(n_pre, dtype=np.int64), generator_targets(spec, proj, n_pre, n_post)
    estimate = condition_estimate(spec, proj, n_pre, n_post)
    check_bytes(estimate * BYTES_PER_SYNAPSE, f"projection '{proj.name}' (about {estimate} synapses)", f)
    names = _condition_names(spec, proj, n_pre, n_post)
    rng = projection_rng(spec, proj)
    rows = max(1, CONDITION_BLOCK // max(n_post, 1))
    j_all = np.arange(n_post, dtype=np.int64)
    out_i, out_j, found = [], [], 0
    for start in range(0, n_pre, rows):
        i = np.arange(start, min(n_pre, start + rows), dtype=np.int64)
        ii, jj = np.nonzero(_condition_block(c, names, i, j_all, rng, f))
        out_i.append(i[ii])
        out_j.append(jj.astype(np.int64))
        found += len(ii)
        check_bytes(found * BYTES_PER_SYNAPSE, f"projection '{proj.name}' ({found} synapses so far)", f)
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def generator_targets(spec, proj, n_pre: int, n_post: int) -> np.ndarray:
    """The target ``j`` of every source ``i`` of a :class:`~biosnn.spec.Condition` with ``j`` (Brian2's ``j='i'``).

    Raises
    ------
    SpecError
        When a target is not a whole number or not in ``[0, n_post)`` (naming the first such source).
    """
    from biosnn.spec.index_expressions import evaluate_index_expression
    f = f"projections.{proj.name}.connect.j"
    i = np.arange(n_pre, dtype=np.int64)
    names = dict(_condition_names(spec, proj, n_pre, n_post), i=i)
    j = np.broadcast_to(np.asarray(evaluate_index_expression(proj.connect.j, names, (n_pre,), None, f),
                                   dtype=np.float64), (n_pre,))
    bad = np.flatnonzero(~np.isfinite(j) | (j != np.round(j)) | (j < 0) | (j >= n_post))
    if bad.size:
        k = int(bad[0])
        raise SpecError(f"j = '{proj.connect.j}' gives {j[k]:g} for i = {k}, not a target index in [0, {n_post})",
                        field=f, fix="give a whole-number expression of i within the target, e.g. 'i' or "
                                     "'int(i/2)'")
    return j.astype(np.int64)


def condition_estimate(spec, proj, n_pre: int, n_post: int, samples: int = 4096) -> int:
    """An estimate of a condition projection's synapse count without expanding it.

    The condition and ``p`` are evaluated on ``samples`` pairs drawn with a
    fixed seed (all pairs when there are fewer); the estimate is the expected
    count plus six standard deviations.
    """
    import math
    pairs = n_pre * n_post
    if pairs == 0:
        return 0
    c, f = proj.connect, f"projections.{proj.name}.connect"
    if c.j is not None:
        return n_pre
    names = _condition_names(spec, proj, n_pre, n_post)
    rng = np.random.default_rng(0)
    if pairs <= samples:
        i, j = np.divmod(np.arange(pairs, dtype=np.int64), n_post)
    else:
        flat = rng.integers(0, pairs, samples, dtype=np.int64)
        i, j = np.divmod(flat, n_post)
    from biosnn.spec.index_expressions import evaluate_index_expression
    scope = dict(names, i=i, j=j)
    prob = np.ones(len(i))
    if c.condition is not None:
        prob *= np.broadcast_to(np.asarray(evaluate_index_expression(c.condition, scope, (len(i),), rng,
                                                                     f"{f}.condition"), dtype=bool), (len(i),))
    if c.p is not None:
        prob *= np.clip(np.broadcast_to(np.asarray(evaluate_index_expression(c.p, scope, (len(i),), rng, f"{f}.p"),
                                                   dtype=np.float64), (len(i),)), 0, 1)
    mean = float(np.mean(prob)) * pairs
    return int(min(pairs, math.ceil(mean + 6 * math.sqrt(max(mean, 1.0)) + 1)))
