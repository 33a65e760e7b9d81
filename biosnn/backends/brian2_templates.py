"""Fixes to the code templates of Brian2's standalone devices, served from a copy of a templater.

Nothing installed is changed: :func:`patched_templater` copies a device's
templater and puts the fixed templates ahead of the package's (``{% extends %}``
still finds the originals); :func:`templater_scope` lets a code object class use
the copy while a project is generated.

:data:`SAME_TIME_FIXES` make the standalone devices decide which clocks tick
together the way Brian2's runtime does.  Brian2's ``network.cpp`` (and
brian2cuda's ``network.cu``) count two clocks as simultaneous when their times
differ by at most ``1e-14`` s.  A clock's time is ``timestep * dt`` in double
precision, so a window clock of ``T`` ms and the 1 ms step clock, meant to tick
together every ``T`` steps, differ by one rounding error of ``t``; past 64 s
that error exceeds ``1e-14`` s, and whenever ``T * dt`` is not a power of two
times ``dt`` the window clock then runs alone, before or after the step it
belongs to.  Runtime mode compares relative to the earliest clock's ``dt``
(``|t1 - t2| / dt < Clock.epsilon_dt = 1e-4``), which stays exact while the
rounding error of ``t`` (``t * 2**-52``) is below ``1e-4 dt``: for ``dt = 1``
ms, for runs up to about 14 years of simulated time.  The fixed templates use
the same rule.

:func:`sorted_clocks` makes the generated code independent of where the clock
objects happen to lie in memory, so that a network of the same structure
regenerates the same sources (and compiles nothing).
"""

from __future__ import annotations

import re
from contextlib import contextmanager

__all__ = ["SAME_TIME_FIXES", "patched_templater", "templater_scope", "sorted_clocks"]

_SAME_TIME = (r"if\(s==t \|\| fabs\(s-t\)<=Clock_epsilon\)",
              "if(s==t || (dynamic_cast<Clock*>(minclock) ? "
              "fabs(s-t) < 1e-4*dynamic_cast<Clock*>(minclock)->dt[0] : fabs(s-t)<=Clock_epsilon))",
              "clocks count as simultaneous within 1e-14 s, less than one rounding error of t past 64 s "
              "of simulated time: use Brian2 runtime's rule, |t1 - t2| < 1e-4 dt of the earliest clock")

#: (template, regex, replacement, why) for Brian2's ``network.cpp`` and brian2cuda's ``network.cu``.
SAME_TIME_FIXES = (("network.cpp", *_SAME_TIME), ("network.cu", *_SAME_TIME))

_PATCHED: dict[tuple, tuple] = {}


def patched_templater(templater, fixes):
    """A copy of ``templater`` whose templates have ``fixes`` applied (cached per templater and fixes).

    Parameters
    ----------
    templater : brian2.codegen.templates.Templater
        A code object class's templater (e.g. ``CPPStandaloneCodeObject.templater``).
    fixes : tuple of (str, str, str, str)
        ``(template name, regex, replacement, why)``; fixes of templates the
        templater does not have, or whose pattern no longer occurs, are skipped.

    Returns
    -------
    brian2.codegen.templates.Templater
    """
    key = (id(templater), fixes)
    cached = _PATCHED.get(key)
    if cached is not None and cached[0] is templater:
        return cached[1]
    from brian2.codegen.templates import Templater
    from jinja2 import ChoiceLoader, DictLoader, TemplateNotFound
    new = Templater(templater.package_names, templater.extension, env_globals=templater.env_globals,
                    templates_dir=templater.templates_dir)
    sources = {}
    for name, pattern, replacement, _why in fixes:
        try:
            text = sources.get(name) or templater.env.loader.get_source(templater.env, name)[0]
        except TemplateNotFound:
            continue
        sources[name] = re.sub(pattern, lambda _m, r=replacement: r, text)
    new.env.loader = ChoiceLoader([DictLoader(sources), new.env.loader])
    _PATCHED[key] = (templater, new)
    return new


@contextmanager
def templater_scope(codeobject_class, fixes):
    """Let ``codeobject_class`` (and the device generating its project) use :func:`patched_templater` for a block."""
    original = codeobject_class.__dict__["templater"]
    codeobject_class.templater = patched_templater(original, fixes)
    try:
        yield
    finally:
        codeobject_class.templater = original


def _clocks_get(net):
    return net.__dict__["_clocks"]


def _clocks_set(net, clocks):
    net.__dict__["_clocks"] = tuple(sorted(clocks, key=lambda clock: clock.name))


@contextmanager
def sorted_clocks():
    """Let a network's clocks be iterated in the order of their names for a block.

    Brian2 and brian2cuda keep a network's clocks in a set (``net._clocks``) and
    write one line per clock into ``main.cpp`` (``main.cu``) in the set's order, which follows
    the clocks' memory addresses: with several clocks, the generated code (and
    so the binary's fingerprint) changed from process to process.  In this
    block ``Network._clocks`` stores a tuple sorted by name (the same objects).
    """
    from brian2.core.network import Network
    previous = Network.__dict__.get("_clocks")
    Network._clocks = property(_clocks_get, _clocks_set)
    try:
        yield
    finally:
        if previous is None:
            del Network._clocks
        else:
            Network._clocks = previous
