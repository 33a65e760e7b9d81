"""Expand projection descriptions into explicit synapse lists.

Every builder in this module returns a :class:`Connections`: flat arrays of
presynaptic indices ``i`` and postsynaptic indices ``j`` (plus optional
per-synapse ``weights`` and ``kernel_index``) that a backend can hand straight
to e.g. ``brian2.Synapses.connect(i=..., j=...)``.

Conventions
-----------
* Neurons of a layer with shape ``(C, H, W)`` are numbered in C order, i.e.
  flat index ``c * H * W + y * W + x`` -- the same order as
  ``torch.flatten``.
* Synapses are sorted by ``(i, j)`` with a stable sort, so the targets of one
  presynaptic neuron are contiguous (see :meth:`Connections.pre_indptr`) and
  duplicate pairs keep the order in which they were given.
* ``kernel_index`` (when not ``None``) indexes the flattened weight tensor a
  synapse's weight came from, so a backend may share one weight variable per
  kernel entry instead of storing one per synapse.

All functions are pure numpy and vectorised: the only Python loops run over
kernel offsets (``kh * kw``) or over chunks of random draws, never over
synapses or output pixels.  Bad input raises :class:`biosnn.errors.SpecError`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from biosnn.errors import SpecError

__all__ = [
    "Connections",
    "all_to_all",
    "one_to_one",
    "random_p",
    "explicit",
    "dense",
    "conv2d",
    "ConvConnections",
    "DenseConnections",
    "out_degree",
    "avgpool2d",
    "maxpool2d_groups",
    "replicated",
    "to_dense_matrix",
]

_INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------------------
# The result type
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Connections:
    """An explicit list of synapses between two neuron groups.

    On construction the arrays are converted (``int64`` indices, ``float64``
    weights), validated, sorted by ``(i, j)`` (stable) and exposed as
    read-only views, so a ``Connections`` cannot be modified in place.

    Parameters
    ----------
    i : array_like of int, shape (n_synapses,)
        Presynaptic flat indices, each in ``[0, n_pre)``.
    j : array_like of int, shape (n_synapses,)
        Postsynaptic flat indices, each in ``[0, n_post)``.
    weights : array_like of float, shape (n_synapses,), or None
        Per-synapse weights; ``None`` if the projection carries no weights
        (e.g. max-pooling groups) or the weight is left to the backend.
    kernel_index : array_like of int, shape (n_synapses,), or None
        Index into the flattened weight tensor (kernel) each synapse's weight
        was taken from, so ``weights == kernel.ravel()[kernel_index]``.
    n_pre : int
        Size of the presynaptic group.
    n_post : int
        Size of the postsynaptic group.
    pre_shape : tuple of int, optional
        Shape of the presynaptic layer, e.g. ``(C, H, W)``; its product must
        equal ``n_pre``.
    post_shape : tuple of int, optional
        Shape of the postsynaptic layer; its product must equal ``n_post``.
    window_shape : tuple of int, optional
        ``(kh, kw)`` of the pooling window for pooling projections.

    Raises
    ------
    SpecError
        If the arrays have the wrong dtype, length or dimensionality, an index
        is out of range, or a shape does not match its size.
    """

    i: np.ndarray
    j: np.ndarray
    weights: np.ndarray | None
    kernel_index: np.ndarray | None
    n_pre: int
    n_post: int
    pre_shape: tuple[int, ...] | None = None
    post_shape: tuple[int, ...] | None = None
    window_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        n_pre = _check_size(self.n_pre, "n_pre")
        n_post = _check_size(self.n_post, "n_post")
        i = _index_array(self.i, "i")
        j = _index_array(self.j, "j")
        if i.shape != j.shape:
            raise SpecError(
                f"i has {i.size} entries but j has {j.size}.", field="j",
                fix="Give exactly one presynaptic and one postsynaptic index per synapse.")
        _check_bounds(i, n_pre, "i", "n_pre")
        _check_bounds(j, n_post, "j", "n_post")

        weights = self.weights
        if weights is not None:
            weights = _float_array(weights, "weights")
            if weights.shape != i.shape:
                raise SpecError(
                    f"weights has shape {weights.shape} but there are {i.size} synapses.",
                    field="weights", fix="Give one weight per synapse, or weights=None.")
        kernel_index = self.kernel_index
        if kernel_index is not None:
            kernel_index = _index_array(kernel_index, "kernel_index")
            if kernel_index.shape != i.shape:
                raise SpecError(
                    f"kernel_index has shape {kernel_index.shape} but there are "
                    f"{i.size} synapses.", field="kernel_index",
                    fix="Give one kernel index per synapse, or kernel_index=None.")
            if kernel_index.size and kernel_index.min() < 0:
                raise SpecError("kernel_index contains negative entries.",
                                field="kernel_index",
                                fix="Use indices into the flattened kernel (>= 0).")

        pre_shape = _check_shape_product(self.pre_shape, n_pre, "pre_shape", "n_pre")
        post_shape = _check_shape_product(self.post_shape, n_post, "post_shape", "n_post")
        window_shape = self.window_shape
        if window_shape is not None:
            window_shape = _pair(window_shape, "window_shape", minimum=1)

        order = _sort_order(i, j, n_post)
        if order is not None:
            i, j = i[order], j[order]
            if weights is not None:
                weights = weights[order]
            if kernel_index is not None:
                kernel_index = kernel_index[order]

        set_ = object.__setattr__
        set_(self, "n_pre", n_pre)
        set_(self, "n_post", n_post)
        set_(self, "i", _readonly(i))
        set_(self, "j", _readonly(j))
        set_(self, "weights", None if weights is None else _readonly(weights))
        set_(self, "kernel_index", None if kernel_index is None else _readonly(kernel_index))
        set_(self, "pre_shape", pre_shape)
        set_(self, "post_shape", post_shape)
        set_(self, "window_shape", window_shape)

    @property
    def n_synapses(self) -> int:
        """int: Number of synapses."""
        return int(self.i.size)

    def __len__(self) -> int:
        return self.n_synapses

    @property
    def window_size(self) -> int | None:
        """int or None: Number of taps ``kh * kw`` of a pooling window."""
        if self.window_shape is None:
            return None
        return self.window_shape[0] * self.window_shape[1]

    def pre_indptr(self) -> np.ndarray:
        """Offsets of each presynaptic neuron's contiguous target list.

        Returns
        -------
        numpy.ndarray of int64, shape (n_pre + 1,)
            The targets of presynaptic neuron ``k`` are
            ``j[indptr[k]:indptr[k + 1]]`` (CSR layout).
        """
        indptr = np.zeros(self.n_pre + 1, dtype=np.int64)
        np.cumsum(np.bincount(self.i, minlength=self.n_pre), out=indptr[1:])
        return indptr

    def __repr__(self) -> str:
        extra = ""
        if self.pre_shape is not None or self.post_shape is not None:
            extra += f", pre_shape={self.pre_shape}, post_shape={self.post_shape}"
        if self.window_shape is not None:
            extra += f", window_shape={self.window_shape}"
        return (f"Connections(n_pre={self.n_pre}, n_post={self.n_post}, "
                f"n_synapses={self.n_synapses}, "
                f"weights={'None' if self.weights is None else 'per-synapse'}, "
                f"kernel_index={'None' if self.kernel_index is None else 'per-synapse'}"
                f"{extra})")


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(
        value, (bool, np.bool_))


def _check_size(value: Any, name: str) -> int:
    """Return ``value`` as a Python int, requiring a non-negative integer."""
    if not _is_int(value):
        raise SpecError(f"{name} must be an integer, got {value!r}.", field=name,
                        fix=f"Pass {name} as a non-negative int.")
    if value < 0:
        raise SpecError(f"{name} must be >= 0, got {value}.", field=name,
                        fix=f"Pass a non-negative {name}.")
    return int(value)


def _to_numpy(value: Any) -> Any:
    """Turn a torch tensor (or anything array-like) into something numpy reads."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return value


def _index_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(_to_numpy(value))
    if arr.ndim != 1:
        raise SpecError(f"{name} must be 1-D, got an array of shape {arr.shape}.",
                        field=name, fix=f"Pass {name} as a flat sequence of indices.")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise SpecError(f"{name} must hold integers, got dtype {arr.dtype}.", field=name,
                        fix=f"Pass {name} as integer indices (e.g. np.int64).")
    return arr.astype(np.int64, copy=False)


def _float_array(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(_to_numpy(value))
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating)
                                     or np.issubdtype(arr.dtype, np.integer)):
        raise SpecError(f"{name} must be real numbers, got dtype {arr.dtype}.", field=name,
                        fix=f"Pass {name} as a float array.")
    arr = arr.astype(np.float64, copy=False)
    if arr.size and not np.isfinite(arr).all():
        raise SpecError(f"{name} contains NaN or infinite values.", field=name,
                        fix=f"Replace the non-finite entries of {name} with finite numbers.")
    return arr


def _check_bounds(idx: np.ndarray, n: int, name: str, n_name: str) -> None:
    if idx.size == 0:
        return
    lo, hi = idx.min(), idx.max()
    if lo < 0 or hi >= n:
        bad = int(lo) if lo < 0 else int(hi)
        raise SpecError(
            f"{name} contains index {bad}, outside [0, {n}) ({n_name}={n}).", field=name,
            fix=f"Keep every {name} index in 0..{n_name}-1, or enlarge {n_name}.")


def _check_shape_product(shape: Any, n: int, name: str, n_name: str) -> tuple[int, ...] | None:
    if shape is None:
        return None
    try:
        shape = tuple(shape)
    except TypeError:
        raise SpecError(f"{name} must be a tuple of ints, got {shape!r}.", field=name,
                        fix=f"Pass {name} as e.g. (C, H, W).") from None
    if not all(_is_int(s) and s >= 0 for s in shape):
        raise SpecError(f"{name} must hold non-negative ints, got {shape!r}.", field=name,
                        fix=f"Pass {name} as e.g. (C, H, W).")
    shape = tuple(int(s) for s in shape)
    if math.prod(shape) != n:
        raise SpecError(f"{name}={shape} has {math.prod(shape)} elements but {n_name}={n}.",
                        field=name, fix=f"Make the product of {name} equal {n_name}.")
    return shape


def _pair(value: Any, name: str, *, minimum: int) -> tuple[int, int]:
    """Normalise an int-or-pair argument, as torch does for conv/pool sizes."""
    if _is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(value)
        except TypeError:
            pair = ()
        if len(pair) != 2 or not all(_is_int(v) for v in pair):
            raise SpecError(f"{name} must be an int or a pair of ints, got {value!r}.",
                            field=name, fix=f"Pass {name} as e.g. 2 or (2, 2).")
        pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise SpecError(f"{name} must be >= {minimum}, got {value!r}.", field=name,
                        fix=f"Pass a {name} of at least {minimum}.")
    return pair


def _chw(in_shape: Any, name: str = "in_shape") -> tuple[int, int, int]:
    try:
        shape = tuple(in_shape)
    except TypeError:
        shape = ()
    if len(shape) != 3 or not all(_is_int(s) for s in shape):
        raise SpecError(f"{name} must be (C, H, W), got {in_shape!r}.", field=name,
                        fix="Give the input layer shape as three ints (channels, height, width), "
                            "without a batch dimension.")
    if min(shape) <= 0:
        raise SpecError(f"{name} must be positive, got {shape}.", field=name,
                        fix="Every dimension of the input layer must be at least 1.")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _readonly(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _sort_order(i: np.ndarray, j: np.ndarray, n_post: int) -> np.ndarray | None:
    """Stable permutation that sorts synapses by (i, j); None if already sorted."""
    if i.size < 2:
        return None
    if n_post == 0 or (i.max() + 1) <= _INT64_MAX // max(n_post, 1):
        key = i * n_post + j
        if np.all(key[1:] >= key[:-1]):
            return None
        return np.argsort(key, kind="stable")
    order = np.lexsort((j, i))  # lexsort is stable
    if np.all(order[1:] > order[:-1]):
        return None
    return order


def synapse_order(i: np.ndarray, j: np.ndarray) -> np.ndarray | None:
    """The stable permutation that sorts synapse lists by ``(i, j)``, as :class:`Connections` stores them.

    Returns None if the lists are already sorted (or hold negative indices, which validation refuses).
    """
    i, j = np.asarray(i), np.asarray(j)
    if j.size == 0 or min(i.min(), j.min()) < 0:
        return None
    return _sort_order(i, j, int(j.max()) + 1)


def _empty(n_pre: int, n_post: int, *, weights: bool, **extra: Any) -> Connections:
    z = np.zeros(0, dtype=np.int64)
    return Connections(z, z, np.zeros(0) if weights else None, extra.pop("kernel_index", None),
                       n_pre, n_post, **extra)


# ---------------------------------------------------------------------------
# Simple projections
# ---------------------------------------------------------------------------

def all_to_all(n_pre: int, n_post: int, weights: Any = None) -> Connections:
    """Connect every presynaptic neuron to every postsynaptic neuron.

    Parameters
    ----------
    n_pre, n_post : int
        Group sizes (>= 0).
    weights : float or array_like of shape (n_pre, n_post), optional
        A scalar weight for all synapses, or ``weights[i, j]`` per pair.
        ``None`` (default) gives ``Connections.weights = None``.

    Returns
    -------
    Connections
        ``n_pre * n_post`` synapses, ``i``-major.

    Raises
    ------
    SpecError
        If a size is negative or ``weights`` has the wrong shape.
    """
    n_pre = _check_size(n_pre, "n_pre")
    n_post = _check_size(n_post, "n_post")
    i = np.repeat(np.arange(n_pre, dtype=np.int64), n_post)
    j = np.tile(np.arange(n_post, dtype=np.int64), n_pre)
    w = None
    if weights is not None:
        w = _float_array(weights, "weights")
        if w.ndim == 0:
            w = np.full(i.size, float(w))
        elif w.shape == (n_pre, n_post):
            w = w.ravel()
        else:
            raise SpecError(
                f"weights has shape {w.shape}; all_to_all({n_pre}, {n_post}) needs a scalar "
                f"or shape ({n_pre}, {n_post}).", field="weights",
                fix="Pass one number, or a (n_pre, n_post) matrix indexed [pre, post]. "
                    "For a torch Linear weight of shape (out, in) use dense().")
    return Connections(i, j, w, None, n_pre, n_post)


def one_to_one(n: int, weights: Any = None) -> Connections:
    """Connect neuron ``k`` of one group to neuron ``k`` of another.

    Parameters
    ----------
    n : int
        Size of both groups (>= 0).
    weights : float or array_like of shape (n,), optional
        Scalar or per-synapse weight; ``None`` leaves weights unset.

    Returns
    -------
    Connections
        ``n`` synapses with ``i == j``.

    Raises
    ------
    SpecError
        If ``n`` is negative or ``weights`` has the wrong shape.
    """
    n = _check_size(n, "n")
    idx = np.arange(n, dtype=np.int64)
    w = None
    if weights is not None:
        w = _float_array(weights, "weights")
        if w.ndim == 0:
            w = np.full(n, float(w))
        elif w.shape != (n,):
            raise SpecError(f"weights has shape {w.shape}; one_to_one({n}) needs a scalar "
                            f"or shape ({n},).", field="weights",
                            fix="Pass one number, or one weight per neuron.")
    return Connections(idx, idx.copy(), w, None, n, n)


def random_p(n_pre: int, n_post: int, p: float, rng: np.random.Generator | int,
             allow_autapses: bool = True) -> Connections:
    """Connect each (pre, post) pair independently with probability ``p``.

    The pairs are visited in flat order ``i * n_post + j`` and the gaps
    between successive synapses are drawn from a geometric distribution, which
    is exactly a Bernoulli(``p``) trial per pair but costs time and memory
    proportional to the number of synapses drawn, not to ``n_pre * n_post``.

    Parameters
    ----------
    n_pre, n_post : int
        Group sizes (>= 0).
    p : float
        Connection probability in ``[0, 1]``.
    rng : numpy.random.Generator or int
        Source of randomness; an int is used as a seed for
        ``numpy.random.default_rng``.  The same generator state gives the same
        synapses.
    allow_autapses : bool, default True
        If False, pairs with ``i == j`` are never connected (use this when
        both sides are the same population).

    Returns
    -------
    Connections
        Unique ``(i, j)`` pairs, sorted, with ``weights=None``.

    Raises
    ------
    SpecError
        If a size is negative, ``p`` is outside ``[0, 1]`` or ``rng`` is not a
        generator or seed.
    """
    n_pre = _check_size(n_pre, "n_pre")
    n_post = _check_size(n_post, "n_post")
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (numbers.Real, np.floating,
                                                             np.integer)):
        raise SpecError(f"p must be a number, got {p!r}.", field="p",
                        fix="Pass the connection probability as a float in [0, 1].")
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise SpecError(f"p must be in [0, 1], got {p}.", field="p",
                        fix="Pass a connection probability between 0 and 1 "
                            "(e.g. 0.1 for 10 % of pairs).")
    if _is_int(rng):
        rng = np.random.default_rng(int(rng))
    if not isinstance(rng, np.random.Generator):
        raise SpecError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}.",
                        field="rng", fix="Pass rng=np.random.default_rng(seed) so the "
                                         "connectivity is reproducible.")
    n_pairs = n_pre * n_post
    if n_pairs == 0 or p == 0.0:
        return _empty(n_pre, n_post, weights=False)
    if p == 1.0:
        flat = np.arange(n_pairs, dtype=np.int64)
    else:
        if n_pairs > _INT64_MAX // 4:
            raise SpecError(f"n_pre * n_post = {n_pairs} is too large to index with int64.",
                            field="n_pre", fix="Split the projection into smaller groups.")
        flat = _bernoulli_positions(n_pairs, p, rng)
    i, j = np.divmod(flat, n_post)
    if not allow_autapses:
        keep = i != j
        i, j = i[keep], j[keep]
    return Connections(i, j, None, None, n_pre, n_post)


def _bernoulli_positions(n: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of successes in ``n`` Bernoulli(p) trials (0 < p < 1).

    Draws geometric gaps in chunks sized to the expected number of remaining
    successes, so memory stays O(successes).
    """
    chunks = []
    last = -1  # position of the last success so far
    # Keep cumulative sums of clipped gaps within int64.
    max_chunk = max(1, min(1 << 22, (_INT64_MAX // 2) // (n + 1)))
    while True:
        remaining = n - 1 - last
        expected = remaining * p
        size = int(expected + 6.0 * math.sqrt(expected * (1.0 - p)) + 16)
        size = min(size, max_chunk)
        gaps = rng.geometric(p, size=size)
        np.minimum(gaps, remaining + 1, out=gaps)
        pos = last + np.cumsum(gaps)
        if pos[-1] >= n:
            chunks.append(pos[:np.searchsorted(pos, n)])
            break
        chunks.append(pos)
        last = int(pos[-1])
    return np.concatenate(chunks).astype(np.int64, copy=False)


def explicit(i: Any, j: Any, n_pre: int, n_post: int, weights: Any = None) -> Connections:
    """Build connections from explicit index lists.

    Parameters
    ----------
    i, j : array_like of int, shape (n_synapses,)
        Presynaptic and postsynaptic indices.  Duplicated pairs are kept
        (they act as parallel synapses; :func:`to_dense_matrix` sums them).
    n_pre, n_post : int
        Group sizes; every index must lie in range.
    weights : float or array_like of shape (n_synapses,), optional
        Scalar or per-synapse weights.

    Returns
    -------
    Connections
        The synapses sorted by ``(i, j)`` (stable: duplicates keep their
        given order, and weights travel with their synapse).

    Raises
    ------
    SpecError
        If an index is out of range or not an integer, or lengths differ.
    """
    n_pre = _check_size(n_pre, "n_pre")
    n_post = _check_size(n_post, "n_post")
    i = _index_array(i, "i").copy()
    j = _index_array(j, "j").copy()
    w = None
    if weights is not None:
        w = _float_array(weights, "weights")
        if w.ndim == 0:
            w = np.full(i.size, float(w))
        else:
            w = w.copy()
    return Connections(i, j, w, None, n_pre, n_post)


def dense(weight_matrix: Any, drop_zeros: bool = False, lazy: bool = False) -> "Connections | DenseConnections":
    """Synapses of a fully connected (``torch.nn.Linear``) layer.

    Parameters
    ----------
    weight_matrix : array_like or torch.Tensor, shape (out_features, in_features)
        Weight in torch's layout: ``y = W @ x``.
    drop_zeros : bool, default False
        If True, entries equal to zero produce no synapse (e.g. for pruned
        layers).
    lazy : bool, default False
        Return a :class:`DenseConnections` (the matrix only; the synapse lists
        are made if read).  Not with ``drop_zeros``.

    Returns
    -------
    Connections or DenseConnections
        Presynaptic index = input feature, postsynaptic index = output
        feature, ``weights = W[j, i]`` and ``kernel_index = j * in + i`` (the
        flat index into ``W``).

    Raises
    ------
    SpecError
        If the matrix is not 2-D or holds non-finite values.
    """
    w = _float_array(weight_matrix, "weight_matrix")
    if w.ndim != 2:
        raise SpecError(f"weight_matrix must be 2-D (out_features, in_features), "
                        f"got shape {w.shape}.", field="weight_matrix",
                        fix="Pass a torch.nn.Linear weight, e.g. layer.weight.")
    n_post, n_pre = w.shape
    if lazy and not drop_zeros:
        return DenseConnections(w)
    # Pre-major order: synapse (i, j) for i in range(n_pre), j in range(n_post).
    i = np.repeat(np.arange(n_pre, dtype=np.int64), n_post)
    j = np.tile(np.arange(n_post, dtype=np.int64), n_pre)
    kidx = j * n_pre + i
    weights = w.T.ravel()
    if drop_zeros:
        keep = weights != 0.0
        i, j, kidx, weights = i[keep], j[keep], kidx[keep], weights[keep]
    return Connections(i, j, weights, kidx, n_pre, n_post)


# ---------------------------------------------------------------------------
# Convolution and pooling
# ---------------------------------------------------------------------------

def _out_size(size: int, pad_total: int, k: int, stride: int, dilation: int,
              dim: str, what: str) -> int:
    out = (size + pad_total - dilation * (k - 1) - 1) // stride + 1
    if out <= 0:
        raise SpecError(
            f"{what} output {dim} would be {out}: input {dim} {size} + padding {pad_total} is "
            f"smaller than the dilated kernel extent {dilation * (k - 1) + 1}.",
            field="in_shape",
            fix="Use a larger input, more padding, a smaller kernel or less dilation.")
    return out


def _window_synapses(c_in: int, h: int, w: int, out_c: int, groups: int,
                     kh: int, kw: int, stride: tuple[int, int], pad_before: tuple[int, int],
                     dilation: tuple[int, int], h_out: int, w_out: int,
                     window_index: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised (i, j, kernel_index) of a grouped 2-D sliding window.

    Loops only over the ``kh * kw`` kernel offsets; each offset contributes
    the broadcast product (out channel x in channel of its group x valid
    output rows x valid output columns).  With ``window_index`` the kernel
    index is the offset within the window (``ky * kw + kx``) rather than the
    index into the full (out_c, in_c/groups, kh, kw) kernel.
    """
    sh, sw = stride
    ph, pw = pad_before
    dh, dw = dilation
    cin_g = c_in // groups
    cout_g = out_c // groups

    oc = np.arange(out_c, dtype=np.int64)
    icg = np.arange(cin_g, dtype=np.int64)
    # Global input channel of (oc, icg): shape (out_c, cin_g, 1).
    pre_ch = ((oc // cout_g) * cin_g)[:, None, None] + icg[None, :, None]
    post_ch = oc[:, None, None]
    # Index of kernel[oc, icg, 0, 0] in the flattened kernel.
    k_base = ((oc[:, None, None] * cin_g + icg[None, :, None]) * (kh * kw))
    block = (out_c, cin_g)

    oy_all = np.arange(h_out, dtype=np.int64)
    ox_all = np.arange(w_out, dtype=np.int64)
    i_parts, j_parts, k_parts = [], [], []
    for ky in range(kh):
        iy = oy_all * sh - ph + ky * dh
        my = (iy >= 0) & (iy < h)
        oy, iy = oy_all[my], iy[my]
        for kx in range(kw):
            ix = ox_all * sw - pw + kx * dw
            mx = (ix >= 0) & (ix < w)
            ox, ixv = ox_all[mx], ix[mx]
            if oy.size == 0 or ox.size == 0:
                continue
            pre_sp = (iy[:, None] * w + ixv[None, :]).ravel()
            post_sp = (oy[:, None] * w_out + ox[None, :]).ravel()
            shape = block + (pre_sp.size,)
            i_parts.append((pre_ch * (h * w) + pre_sp).ravel())
            j_parts.append(np.broadcast_to(post_ch * (h_out * w_out) + post_sp, shape).ravel())
            offset = ky * kw + kx
            if window_index:
                k_parts.append(np.full(int(np.prod(shape)), offset, dtype=np.int64))
            else:
                k_parts.append(np.broadcast_to(k_base + offset, shape).ravel())
    if not i_parts:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    return np.concatenate(i_parts), np.concatenate(j_parts), np.concatenate(k_parts)


def conv2d(kernel: Any, in_shape: Any, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, drop_zeros: bool = False,
           lazy: bool = False) -> "Connections | ConvConnections":
    """Synapses of a 2-D convolution, matching ``torch.nn.functional.conv2d``.

    Output neuron ``(o, oy, ox)`` receives from input neuron
    ``(c, oy * sh - ph + ky * dh, ox * sw - pw + kx * dw)`` with weight
    ``kernel[o, c - g * in_c/groups, ky, kx]`` for every kernel tap whose
    input position lies inside the input; taps that fall into the zero
    padding produce no synapse.

    Parameters
    ----------
    kernel : array_like or torch.Tensor, shape (out_c, in_c / groups, kh, kw)
        Convolution weight in torch's layout (e.g. ``layer.weight``).
    in_shape : tuple of int
        Input layer shape ``(C, H, W)`` (no batch dimension).
    stride : int or (int, int), default 1
    padding : int, (int, int), 'valid' or 'same', default 0
        Implicit zero padding on both sides, as in torch.  ``'same'``
        (stride 1 only) pads so the output has the input's size, putting the
        extra row/column at the bottom/right like torch.
    dilation : int or (int, int), default 1
    groups : int, default 1
        Input and output channels are split into ``groups`` blocks; each
        output block sees only its input block.
    drop_zeros : bool, default False
        If True, synapses whose weight is exactly zero are omitted.
    lazy : bool, default False
        Return a :class:`ConvConnections`: the kernel and the geometry, the
        synapse lists made only when read (``drop_zeros`` makes them at once).

    Returns
    -------
    Connections
        With ``weights = kernel.ravel()[kernel_index]``,
        ``pre_shape = in_shape`` and ``post_shape = (out_c, H_out, W_out)``
        where ``H_out = (H + 2 ph - dh (kh - 1) - 1) // sh + 1``.

    Raises
    ------
    SpecError
        If the kernel is not 4-D, its channels do not match ``in_shape`` and
        ``groups``, a size is not positive, or the output would be empty.
    """
    k = _float_array(kernel, "kernel")
    if k.ndim != 4:
        raise SpecError(f"kernel must be 4-D (out_c, in_c/groups, kh, kw), got shape {k.shape}.",
                        field="kernel", fix="Pass a torch Conv2d weight, e.g. layer.weight.")
    out_c, cin_g, kh, kw = k.shape
    c_in, h, w = _chw(in_shape)
    if not _is_int(groups) or groups < 1:
        raise SpecError(f"groups must be a positive int, got {groups!r}.", field="groups",
                        fix="Pass groups=1 for an ordinary convolution.")
    groups = int(groups)
    if min(k.shape) == 0:
        raise SpecError(f"kernel has an empty dimension: shape {k.shape}.", field="kernel",
                        fix="Every kernel dimension must be at least 1.")
    if c_in % groups or out_c % groups:
        raise SpecError(f"groups={groups} must divide both the input channels ({c_in}) and the "
                        f"output channels ({out_c}).", field="groups",
                        fix="Choose groups that divides in_shape[0] and kernel.shape[0].")
    if cin_g * groups != c_in:
        raise SpecError(
            f"kernel expects {cin_g * groups} input channels ({cin_g} per group x {groups} "
            f"groups) but in_shape has {c_in}.", field="kernel",
            fix="Make kernel.shape[1] * groups equal in_shape[0]; check that in_shape is "
                "(C, H, W) and that the kernel belongs to this layer.")
    stride_ = _pair(stride, "stride", minimum=1)
    dil = _pair(dilation, "dilation", minimum=1)
    if isinstance(padding, str):
        if padding == "valid":
            pad_b = pad_a = (0, 0)
        elif padding == "same":
            if stride_ != (1, 1):
                raise SpecError("padding='same' needs stride 1.", field="padding",
                                fix="Use stride=1, or give the padding as numbers.")
            tot = (dil[0] * (kh - 1), dil[1] * (kw - 1))
            pad_b = (tot[0] // 2, tot[1] // 2)
            pad_a = (tot[0] - pad_b[0], tot[1] - pad_b[1])
        else:
            raise SpecError(f"padding must be an int, a pair, 'valid' or 'same'; got {padding!r}.",
                            field="padding", fix="Pass e.g. padding=1 or padding='same'.")
    else:
        pad_b = pad_a = _pair(padding, "padding", minimum=0)
    h_out = _out_size(h, pad_b[0] + pad_a[0], kh, stride_[0], dil[0], "height", "conv2d")
    w_out = _out_size(w, pad_b[1] + pad_a[1], kw, stride_[1], dil[1], "width", "conv2d")

    if lazy and not drop_zeros:
        return ConvConnections(k, (c_in, h, w), (out_c, h_out, w_out), stride_, pad_b, dil, groups)
    i, j, kidx = _window_synapses(c_in, h, w, out_c, groups, kh, kw, stride_, pad_b, dil,
                                  h_out, w_out, window_index=False)
    weights = k.ravel()[kidx]
    if drop_zeros:
        keep = weights != 0.0
        i, j, kidx, weights = i[keep], j[keep], kidx[keep], weights[keep]
    return Connections(i, j, weights, kidx, c_in * h * w, out_c * h_out * w_out,
                       pre_shape=(c_in, h, w), post_shape=(out_c, h_out, w_out))


def _taps(n_in: int, n_out: int, k: int, stride: int, pad: int, dilation: int) -> np.ndarray:
    """``(k, n_in)`` counts: how many outputs input position ``y`` reaches through kernel tap ``ky``."""
    pos = np.arange(n_out)[:, None] * stride - pad + np.arange(k)[None, :] * dilation
    out = np.zeros((k, n_in), dtype=np.int64)
    ok = (pos >= 0) & (pos < n_in)
    np.add.at(out, (np.broadcast_to(np.arange(k), pos.shape)[ok], pos[ok]), 1)
    return out


class _LazyLists:
    """``i``, ``j``, ``weights`` and ``kernel_index`` of :meth:`expanded` (made when first read)."""

    i = property(lambda self: self.expanded().i, doc="Presynaptic indices (expands).")
    j = property(lambda self: self.expanded().j, doc="Postsynaptic indices (expands).")
    weights = property(lambda self: self.expanded().weights, doc="Per-synapse weights (expands).")
    kernel_index = property(lambda self: self.expanded().kernel_index,
                            doc="Kernel (matrix) entry per synapse (expands).")


class ConvConnections(_LazyLists):
    """The synapses of a 2-D convolution as its kernel and geometry (:func:`conv2d` with ``lazy=True``).

    Sizes, shapes, the number of synapses and the fan-out of every input
    neuron are computed from the geometry (memory grows with neurons and the
    kernel, not with synapses).  ``i``, ``j``, ``weights`` and
    ``kernel_index`` are those of :func:`conv2d`, made when first read and
    kept (per-synapse memory from then on).

    Examples
    --------
    >>> c = conv2d(np.ones((2, 1, 3, 3)), (1, 4, 4), padding=1, lazy=True)
    >>> len(c), len(c.i), c.fanout().tolist() == np.bincount(c.i, minlength=16).tolist()
    (200, 200, True)
    """

    def __init__(self, kernel: np.ndarray, pre_shape, post_shape, stride, pad_before, dilation, groups: int):
        self.kernel = kernel
        self.pre_shape, self.post_shape = tuple(pre_shape), tuple(post_shape)
        self.n_pre, self.n_post = math.prod(self.pre_shape), math.prod(self.post_shape)
        self.stride, self.padding, self.dilation, self.groups = stride, pad_before, dilation, groups
        self.window_shape = None
        self._expanded = None

    def _tap_counts(self) -> tuple[np.ndarray, np.ndarray]:
        _, h, w = self.pre_shape
        _, h_out, w_out = self.post_shape
        kh, kw = self.kernel.shape[2:]
        return (_taps(h, h_out, kh, self.stride[0], self.padding[0], self.dilation[0]),
                _taps(w, w_out, kw, self.stride[1], self.padding[1], self.dilation[1]))

    @property
    def n_synapses(self) -> int:
        """int: Number of synapses (taps inside the input)."""
        ty, tx = self._tap_counts()
        return int(self.pre_shape[0] * (self.post_shape[0] // self.groups) * ty.sum() * tx.sum())

    def __len__(self) -> int:
        return self.n_synapses

    def fanout(self) -> np.ndarray:
        """Synapses leaving each input neuron, int64 ``(n_pre,)`` (``bincount(i)`` without the lists)."""
        ty, tx = self._tap_counts()
        per_pixel = np.outer(ty.sum(axis=0), tx.sum(axis=0)).ravel()
        return np.tile(per_pixel * (self.post_shape[0] // self.groups), self.pre_shape[0])

    def used_taps(self) -> np.ndarray:
        """bool ``(kh, kw)``: kernel taps that make at least one synapse."""
        ty, tx = self._tap_counts()
        return np.outer(ty.sum(axis=1) > 0, tx.sum(axis=1) > 0)

    def expanded(self) -> Connections:
        """The explicit :class:`Connections` (made once, then kept)."""
        if self._expanded is None:
            c, h, w = self.pre_shape
            out_c, h_out, w_out = self.post_shape
            kh, kw = self.kernel.shape[2:]
            i, j, kidx = _window_synapses(c, h, w, out_c, self.groups, kh, kw, self.stride, self.padding,
                                          self.dilation, h_out, w_out, window_index=False)
            self._expanded = Connections(i, j, self.kernel.ravel()[kidx], kidx, self.n_pre, self.n_post,
                                         pre_shape=self.pre_shape, post_shape=self.post_shape)
        return self._expanded

    def pre_indptr(self) -> np.ndarray:
        """CSR offsets of each presynaptic neuron's targets (see :meth:`Connections.pre_indptr`)."""
        indptr = np.zeros(self.n_pre + 1, dtype=np.int64)
        np.cumsum(self.fanout(), out=indptr[1:])
        return indptr

    def __repr__(self) -> str:
        return (f"ConvConnections(n_pre={self.n_pre}, n_post={self.n_post}, kernel={self.kernel.shape}, "
                f"pre_shape={self.pre_shape}, post_shape={self.post_shape})")


class DenseConnections(_LazyLists):
    """All-to-all synapses of a fully connected layer as its weight matrix (:func:`dense` with ``lazy=True``).

    Memory grows with the matrix, not with index lists: ``i``, ``j``,
    ``weights`` and ``kernel_index`` are those of :func:`dense`, made when
    first read and kept.

    Examples
    --------
    >>> d = dense(np.arange(6.0).reshape(2, 3), lazy=True)
    >>> len(d), d.fanout().tolist(), d.pre_major_weights(2.0).tolist() == (2.0 * d.weights).tolist()
    (6, [2, 2, 2], True)
    """

    def __init__(self, weight_matrix: np.ndarray):
        self.weight_matrix = weight_matrix
        self.n_post, self.n_pre = weight_matrix.shape
        self.pre_shape, self.post_shape, self.window_shape = None, None, None
        self._expanded = None

    @property
    def n_synapses(self) -> int:
        """int: ``n_pre * n_post``."""
        return self.n_pre * self.n_post

    def __len__(self) -> int:
        return self.n_synapses

    def fanout(self) -> np.ndarray:
        """Synapses leaving each input neuron (``n_post`` each), int64 ``(n_pre,)``."""
        return np.full(self.n_pre, self.n_post, dtype=np.int64)

    def pre_major_weights(self, scale: float = 1.0) -> np.ndarray:
        """``weights * scale`` in the synapse order of :func:`dense` (pre-major), one read-only copy."""
        flat = self.weight_matrix.T.flatten()
        if scale != 1.0:
            flat *= scale
        flat.setflags(write=False)
        return flat

    def expanded(self) -> Connections:
        """The explicit :class:`Connections` (made once, then kept)."""
        if self._expanded is None:
            self._expanded = dense(self.weight_matrix)
        return self._expanded

    def pre_indptr(self) -> np.ndarray:
        """CSR offsets of each presynaptic neuron's targets (see :meth:`Connections.pre_indptr`)."""
        return np.arange(self.n_pre + 1, dtype=np.int64) * self.n_post

    def __repr__(self) -> str:
        return f"DenseConnections(n_pre={self.n_pre}, n_post={self.n_post})"


def out_degree(conn) -> np.ndarray:
    """Synapses leaving each presynaptic neuron, int64 ``(n_pre,)``; lazy connections stay unexpanded."""
    if isinstance(conn, (ConvConnections, DenseConnections)):
        return conn.fanout()
    return np.bincount(np.asarray(conn.i), minlength=conn.n_pre)[:conn.n_pre].astype(np.int64)


def _pool_synapses(in_shape: Any, kernel_size: Any, stride: Any, padding: Any,
                   dilation: Any, what: str):
    c, h, w = _chw(in_shape)
    kh, kw = _pair(kernel_size, "kernel_size", minimum=1)
    stride_ = (kh, kw) if stride is None else _pair(stride, "stride", minimum=1)
    pad = _pair(padding, "padding", minimum=0)
    dil = _pair(dilation, "dilation", minimum=1)
    if pad[0] > kh // 2 or pad[1] > kw // 2:
        raise SpecError(
            f"{what} padding {padding!r} is more than half the window "
            f"(kernel_size={kernel_size!r}); windows near the border would pool mostly "
            f"padding.", field="padding",
            fix="Use padding <= kernel_size // 2, as torch requires.")
    h_out = _out_size(h, 2 * pad[0], kh, stride_[0], dil[0], "height", what)
    w_out = _out_size(w, 2 * pad[1], kw, stride_[1], dil[1], "width", what)
    i, j, kidx = _window_synapses(c, h, w, c, c, kh, kw, stride_, pad, dil, h_out, w_out,
                                  window_index=True)
    return i, j, kidx, (c, h, w), (c, h_out, w_out), (kh, kw)


def avgpool2d(in_shape: Any, kernel_size: Any, stride: Any = None,
              padding: Any = 0) -> Connections:
    """Synapses of average pooling, matching ``torch.nn.functional.avg_pool2d``.

    Each output channel pools its own input channel.  Every synapse has weight
    ``1 / (kh * kw)``; taps that fall into the padding produce no synapse, so
    border outputs are divided by the full window size, as with torch's
    default ``count_include_pad=True`` (``ceil_mode=False``).

    Parameters
    ----------
    in_shape : tuple of int
        Input layer shape ``(C, H, W)``.
    kernel_size : int or (int, int)
        Window size ``(kh, kw)``.
    stride : int or (int, int), optional
        Defaults to ``kernel_size``, as in torch.
    padding : int or (int, int), default 0
        Implicit zero padding; at most ``kernel_size // 2``.

    Returns
    -------
    Connections
        With ``weights = 1 / (kh * kw)``, ``kernel_index = ky * kw + kx``
        (offset within the window), ``pre_shape``, ``post_shape`` and
        ``window_shape = (kh, kw)``.

    Raises
    ------
    SpecError
        On non-positive sizes, padding over half the window, or an empty
        output.
    """
    i, j, kidx, pre, post, win = _pool_synapses(in_shape, kernel_size, stride, padding, 1,
                                                "avgpool2d")
    weights = np.full(i.size, 1.0 / (win[0] * win[1]))
    return Connections(i, j, weights, kidx, math.prod(pre), math.prod(post),
                       pre_shape=pre, post_shape=post, window_shape=win)


def maxpool2d_groups(in_shape: Any, kernel_size: Any, stride: Any = None,
                     padding: Any = 0, dilation: Any = 1) -> Connections:
    """Pooling groups of max pooling, matching ``torch.nn.functional.max_pool2d``.

    Has the same ``(i, j)`` structure as :func:`avgpool2d` but no weights:
    each postsynaptic neuron's presynaptic set is one pooling window, and a
    backend implements the max (e.g. by letting only the first / strongest
    input of each window through).  Padding taps produce no synapse
    (torch pads max pooling with ``-inf``).

    Parameters
    ----------
    in_shape : tuple of int
        Input layer shape ``(C, H, W)``.
    kernel_size : int or (int, int)
        Window size ``(kh, kw)``.
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        At most ``kernel_size // 2``, as torch requires.
    dilation : int or (int, int), default 1

    Returns
    -------
    Connections
        With ``weights=None``, ``kernel_index = ky * kw + kx``,
        ``window_shape = (kh, kw)`` (``window_size = kh * kw``; border windows
        with padding have fewer synapses), ``pre_shape`` and ``post_shape``.

    Raises
    ------
    SpecError
        On non-positive sizes, padding over half the window, or an empty
        output.
    """
    i, j, kidx, pre, post, win = _pool_synapses(in_shape, kernel_size, stride, padding,
                                                dilation, "maxpool2d")
    return Connections(i, j, None, kidx, math.prod(pre), math.prod(post),
                       pre_shape=pre, post_shape=post, window_shape=win)


def replicated(conn: Connections, replicas: int) -> Connections:
    """``replicas`` independent copies of a projection (block-diagonal synapses).

    Copy ``r`` connects presynaptic neurons ``r * n_pre + i`` to postsynaptic
    neurons ``r * n_post + j`` for every synapse ``(i, j)`` of ``conn``, with the
    same weight and kernel index; shapes get a leading replica axis
    ``(replicas, *shape)``.  The synapses stay sorted by ``(i, j)``: copy after
    copy, each in the order of ``conn``.

    Parameters
    ----------
    conn : Connections
        The synapses of one copy.
    replicas : int
        Number of copies (>= 1).

    Returns
    -------
    Connections

    Examples
    --------
    >>> c = replicated(explicit([0, 1], [1, 0], 2, 2, weights=[0.5, 2.0]), 3)
    >>> c.i.tolist(), c.j.tolist(), c.weights.tolist()
    ([0, 1, 2, 3, 4, 5], [1, 0, 3, 2, 5, 4], [0.5, 2.0, 0.5, 2.0, 0.5, 2.0])
    """
    replicas = _check_size(replicas, "replicas")
    if replicas < 1:
        raise SpecError(f"replicas must be at least 1, got {replicas}.", field="replicas", fix="Give 1 or more.")
    if replicas == 1:
        return conn
    r = np.repeat(np.arange(replicas, dtype=np.int64), len(conn.i))

    def tile(a):
        return None if a is None else np.tile(a, replicas)

    def shape(s):
        return None if s is None else (replicas,) + tuple(s)
    return Connections(np.tile(conn.i, replicas) + r * conn.n_pre, np.tile(conn.j, replicas) + r * conn.n_post,
                       tile(conn.weights), tile(conn.kernel_index), conn.n_pre * replicas, conn.n_post * replicas,
                       pre_shape=shape(conn.pre_shape), post_shape=shape(conn.post_shape),
                       window_shape=conn.window_shape)


# ---------------------------------------------------------------------------
# Testing helper
# ---------------------------------------------------------------------------

def to_dense_matrix(conn: Connections) -> np.ndarray:
    """Dense ``(n_post, n_pre)`` weight matrix of a projection.

    Duplicate ``(i, j)`` pairs are summed; with ``weights=None`` every synapse
    counts as 1, giving the (multi-)adjacency matrix.  Then
    ``to_dense_matrix(conn) @ x`` is the postsynaptic input for presynaptic
    activity ``x``.  Meant for tests and small networks.

    Parameters
    ----------
    conn : Connections

    Returns
    -------
    numpy.ndarray of float64, shape (n_post, n_pre)

    Raises
    ------
    SpecError
        If ``conn`` is not a :class:`Connections`.
    """
    if isinstance(conn, (ConvConnections, DenseConnections)):
        conn = conn.expanded()
    if not isinstance(conn, Connections):
        raise SpecError(f"to_dense_matrix needs a Connections, got {type(conn).__name__}.",
                        fix="Pass the result of one of the biosnn.connectivity builders.")
    flat = conn.j * conn.n_pre + conn.i
    w = None if conn.weights is None else conn.weights
    m = np.bincount(flat, weights=w if w is not None else np.ones(flat.size),
                    minlength=conn.n_post * conn.n_pre)
    return m.reshape(conn.n_post, conn.n_pre)
