"""Bounded work: size and memory estimates of a spec before anything is allocated.

Every spec is sized at validation -- neurons, synapses counted from the
connectivity rule *without expanding it*, state-monitor recordings -- and
refused when the estimate exceeds the memory budget: by default the memory the
machine has available now (``MemAvailable``), or the user's limit
(``BIOSNN_MEMORY_LIMIT`` in bytes, ``biosnn.load(path, memory_limit=...)`` or
``--memory-limit`` on the command line; ``inf`` switches the check off).

The estimates are deliberately coarse (bytes per neuron, per synapse and per
recorded sample, see the constants); they guard against specs that could
never run here, not against tight fits.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os

import numpy as np

from biosnn.errors import SpecError

__all__ = ["available_memory", "memory_limit", "check_bytes", "synapse_count", "check_spec_size",
           "BYTES_PER_NEURON_VARIABLE", "BYTES_PER_SYNAPSE", "BYTES_PER_SAMPLE"]

BYTES_PER_NEURON_VARIABLE = 8 * 3
"""Per neuron and state variable (value, generated-code copies)."""
BYTES_PER_SYNAPSE = 8 * 4
"""Per synapse: the expanded ``i``/``j`` lists and Brian2's index arrays (variables come on top)."""
BYTES_PER_SAMPLE = 8
"""Per recorded state-monitor value."""

_LIMIT: contextvars.ContextVar[float | None] = contextvars.ContextVar("biosnn_memory_limit", default=None)


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable`` of ``/proc/meminfo``, else physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 2 ** 34


def _limit() -> tuple[float, str]:
    value = _LIMIT.get()
    if value is not None:
        return float(value), "the given memory limit"
    env = os.environ.get("BIOSNN_MEMORY_LIMIT")
    if env:
        try:
            return float(env), "BIOSNN_MEMORY_LIMIT"
        except ValueError:
            raise SpecError(f"BIOSNN_MEMORY_LIMIT must be a number of bytes, got '{env[:40]}'",
                            fix="set e.g. BIOSNN_MEMORY_LIMIT=8e9, or inf to switch the check off") from None
    return float(available_memory()), "the memory available on this machine"


@contextlib.contextmanager
def memory_limit(limit: float | None):
    """Within the block, specs are sized against ``limit`` bytes (``None``: the default, ``inf``: no check)."""
    token = _LIMIT.set(limit)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def _gib(n: float) -> str:
    return f"{n / 2 ** 30:.3g} GiB"


def check_bytes(nbytes: float, what: str, field: str | None = None, file: str | None = None) -> None:
    """Refuse ``nbytes`` if it exceeds the memory budget, naming ``what`` and the estimate."""
    limit, source = _limit()
    if nbytes > limit:
        raise SpecError(f"{what} needs about {_gib(nbytes)}, more than {source} ({_gib(limit)})", field=field,
                        file=file, fix="make the network smaller, or raise the limit (biosnn.load(path, "
                                       "memory_limit=...), --memory-limit BYTES or BIOSNN_MEMORY_LIMIT; "
                                       "inf switches the check off)")


def synapse_count(spec, proj, *, exact: bool = False, _seen: tuple = ()) -> int | None:
    """The number of synapses of ``proj`` from its rule, without expanding it.

    Exact for all-to-all, one-to-one and explicit lists; for random
    connectivity the expected count plus six standard deviations; for
    convolution and pooling the upper bound ``targets x kernel size``.  With
    ``exact=True``, ``None`` where only a bound is known.
    """
    from biosnn.spec import model as m
    c = proj.connect
    try:
        n_pre = spec_node_size(spec, proj.source)
        target = next((p for p in spec.projections if p.name == proj.target), None)
        if target is not None and not any(n.name == proj.target for n in spec.populations):
            if target.name in _seen + (proj.name,):
                return None  # a cycle: validation refuses it
            # synapses onto synapses: at most every (source, synapse) pair
            n_target = synapse_count(spec, target, _seen=_seen + (proj.name,))
            return None if exact or n_target is None else n_pre * n_target
        n_post = spec_node_size(spec, proj.target)
    except KeyError:
        return None
    same = proj.source == proj.target
    if isinstance(c, m.AllToAll):
        return n_pre * n_post - (min(n_pre, n_post) if same and not c.allow_autapses else 0)
    if isinstance(c, m.OneToOne):
        return n_pre
    if isinstance(c, m.Explicit):
        return int(c.i.data.size)
    if exact:
        return None
    if isinstance(c, m.RandomP):
        mean = c.p * n_pre * n_post
        return int(math.ceil(mean + 6 * math.sqrt(mean * (1 - c.p)) + 1))
    if isinstance(c, m.Conv2D):
        k = c.kernel.data.shape
        return n_post * int(np.prod(k[1:], dtype=np.int64))
    if isinstance(c, m.Pool2D):
        return n_post * c.kernel_size[0] * c.kernel_size[1]
    if isinstance(c, m.Condition):
        from biosnn.spec.expand import condition_estimate
        try:
            return condition_estimate(spec, proj, n_pre, n_post)
        except SpecError:  # an invalid expression: validation names it
            return None
    return n_pre * n_post  # any other rule: at most every pair


def spec_node_size(spec, name: str) -> int:
    """Neurons of a population, input or subgroup (``"exc[0:800]"``); ``KeyError`` if it does not exist."""
    from biosnn.spec.model import NodeRef
    try:
        ref = NodeRef.parse(name, None)
    except SpecError:
        raise KeyError(name) from None
    for node in tuple(spec.populations) + tuple(spec.inputs):
        if node.name == ref.name:
            size = int(getattr(node, "size", 0) or 0)
            try:
                start, stop = ref.bounds(size, None)
            except SpecError:
                raise KeyError(name) from None
            return stop - start
    raise KeyError(name)


def check_spec_size(spec, duration_s: float | None = None) -> dict:
    """Estimate the memory of ``spec`` (neurons, synapses, recordings) and refuse it above the budget.

    Returns
    -------
    dict
        ``neurons``, ``synapses`` (upper bounds) and ``bytes`` (estimate).
    """
    from biosnn.spec import model as m
    neurons = sum(p.size for p in spec.populations) + sum(getattr(i, "size", 0) for i in spec.inputs)
    total = 0.0
    for p in spec.populations:
        n_vars = 4 + len(p.initial) + _n_lines(spec, p.model, spec.neuron_models)
        total += p.size * n_vars * BYTES_PER_NEURON_VARIABLE
        check_bytes(total, f"population '{p.name}' ({p.size} neurons)", f"populations.{p.name}.size")
    synapses = 0
    for proj in spec.projections:
        n = synapse_count(spec, proj) or 0
        synapses += n
        n_vars = 2 + len(proj.initial) + _n_lines(spec, proj.model, spec.synapse_models)
        if isinstance(proj.connect, m.Conv2D) and proj.weights is None and not proj.initial and proj.delay is None:
            # a shared kernel: static-projection backends store the kernel only; backends that make the
            # synapse lists check their size when they make them (biosnn.spec.expand.expand_projection)
            total += proj.connect.kernel.data.size * 8
        else:
            total += n * (BYTES_PER_SYNAPSE + 8 * n_vars)
        check_bytes(total, f"the network up to projection '{proj.name}' (about {n} synapses in it)",
                    f"projections.{proj.name}.connect")
    if duration_s is None:
        try:
            duration_s = spec.duration_seconds()
        except SpecError:
            duration_s = 0.0
    for k, mon in enumerate(spec.monitors):
        if isinstance(mon, m.StateMonitor):
            try:
                size = spec_node_size(spec, mon.population)
            except KeyError:  # a projection's synapses, or an unknown name (validation names it)
                proj = next((p for p in spec.projections if p.name == mon.population), None)
                if proj is None:
                    continue
                size = synapse_count(spec, proj) or 0
            n = size if mon.indices is None else len(mon.indices)
            try:
                from biosnn.spec.values import parse_quantity
                dt = float(parse_quantity(mon.dt or spec.dt, what="time"))
            except SpecError:
                continue
            samples = duration_s / dt if dt > 0 else 0
            total += n * len(mon.variables) * samples * BYTES_PER_SAMPLE
            check_bytes(total, f"the network with the recording of monitors[{k}] ({n} neurons x "
                               f"{len(mon.variables)} variables x {samples:.3g} samples)", f"monitors[{k}]")
    return {"neurons": neurons, "synapses": synapses, "bytes": total}


def _n_lines(spec, model, named) -> int:
    text = getattr(named.get(model), "equations", None) if isinstance(model, str) else getattr(model, "equations", "")
    return len([ln for ln in (text or "").splitlines() if ln.strip()])
