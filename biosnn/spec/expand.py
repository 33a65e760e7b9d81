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
from biosnn.spec.model import AllToAll, Conv2D, Explicit, OneToOne, Pool2D, RandomP
from biosnn.spec.values import parse_quantity

__all__ = ["convolution_of", "expand_projection", "projection_rng", "projection_size"]


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
    """The number of synapses of a projection; a convolution's from its geometry (no synapse lists)."""
    if isinstance(proj.connect, Conv2D):
        replicas, one = convolution_of(spec, proj)
        return replicas * len(one)
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
    src = spec.node(proj.source)
    tgt = spec.node(proj.target)
    n_pre, n_post = src.size, tgt.size
    c = proj.connect
    f = f"projections.{proj.name}.connect"
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
        elif isinstance(c, Explicit):
            conn = cx.explicit(np.asarray(c.i.data), np.asarray(c.j.data), n_pre, n_post)
        elif isinstance(c, Conv2D):
            replicas, one = _convolution(src, tgt, c, f)
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
