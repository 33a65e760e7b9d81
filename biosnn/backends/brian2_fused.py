"""Fused neuron steps on ``cpp_standalone``: a group's operations, threshold and reset in one loop.

Brian2 runs a neuron group's step as separate code objects, each a loop over the neurons: the
operations scheduled in the ``groups`` slot (a converted layer's ``v += I + b``), the thresholder (a
second loop that writes the spike space) and the resetter (a loop over the spikes).  In a rate-coded
LeNet-5 these three loops took about half of the binary's time; none was vectorised.

:func:`fuse_neuron_steps` replaces them, where that cannot change a result, by one code object
(``templates/biosnn_fused_step.cpp``, in the place of the thresholder): per neuron the operations, the
threshold condition and the reset of a spiking neuron, each block with the statements and the order of
floating-point operations of its own code object; with AVX-512, 64 neurons at a time in a loop the
compiler vectorises, the spike indices written with a compress per 16 (no branch per spike or per 16),
a scalar loop otherwise.  Spikes, state variables and the spike space are the same bit for bit.  On the
rate-coded LeNet-5 the neuron steps took 2.4 times fewer cycles, the binary 1.34 times less CPU time
(``benchmarks/fused_steps.py``).

What is fused, per :class:`~brian2.NeuronGroup` with a ``spike`` threshold and no refractoriness:

* operations of the group (``run_regularly``, Brian2's ``stateupdate`` template) on the thresholder's
  clock, scheduled before the thresholder, when every code object scheduled between the operation and the
  thresholder (any clock) leaves the operation's variables alone (:func:`commute`);
* the resetter, when every code object between the thresholder and the resetter leaves the reset's
  variables alone (a propagation that adds into ``I`` passes a reset of ``v``; a spike monitor recording
  ``v``, or Brian2's ``Synapses`` onto or from the group (they can read any variable of it) do not);
* only blocks whose scalar code declares constants (no shared variable written), whose temporaries have
  names of their own, and of which at most one calls a function with a state (``rand()``: the draws
  stay in the order of the neurons).

A state updater with differential equations stays a code object of its own (a fused operation cannot
move past it).  Not on brian2cuda, and not with OpenMP threads (the separate code objects run in
parallel there); :class:`~biosnn.backends.brian2_standalone.CppStandaloneBackend` has
``fused_steps=False`` for the stock code objects.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["FusedStep", "fuse_neuron_steps", "commute", "FUSED_TEMPLATE"]

#: The template of a fused step (``biosnn/backends/templates/biosnn_fused_step.cpp``).
FUSED_TEMPLATE = "biosnn_fused_step"

_TARGET = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?[-+*/%]?=(?!=)")


@dataclass(frozen=True)
class FusedStep:
    """What one fused code object does: ``group``'s thresholder with the ``updates`` (object names, in
    order) before it and, if ``reset``, its resetter."""

    group: str
    updates: tuple[str, ...]
    reset: bool


@functools.lru_cache(maxsize=None)
def _code_object_class():
    from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject

    class FusedCodeObject(CPPStandaloneCodeObject):
        templater = CPPStandaloneCodeObject.templater.derive("biosnn.backends", templates_dir="templates")

    return FusedCodeObject


def _identifiers(group, code: str) -> set[str]:
    """Identifiers of ``code`` and, through ``group``'s subexpressions, of what they use."""
    from brian2.core.variables import Subexpression
    from brian2.utils.stringtools import get_identifiers
    todo, seen = set(get_identifiers(code)), set()
    while todo:
        name = todo.pop()
        seen.add(name)
        var = group.variables.get(name) if name in group.variables else None
        if isinstance(var, Subexpression):
            todo |= set(get_identifiers(var.expr)) - seen
    return seen


def _state_of(group, names) -> dict:
    """``group``'s variables among ``names`` that code can change during a run: ``{id: Variable}``."""
    from brian2.core.clocks import Clock
    from brian2.core.variables import ArrayVariable
    out = {}
    for name in names:
        var = group.variables.get(name) if name in group.variables else None
        if isinstance(var, ArrayVariable) and not var.constant and not isinstance(var.owner, Clock) \
                and name != "_spikespace":
            out[id(var)] = var
    return out


def _touched(runner) -> set[int] | None:
    """Ids of every variable a code object may read or write (its group's and its own), ``None``: unknown."""
    from brian2.groups.group import CodeRunner
    if not isinstance(runner, CodeRunner):
        return None
    out = set()
    for variables in (getattr(runner.group, "variables", None), getattr(runner, "variables", None)):
        if variables is not None:
            out |= {id(v) for v in variables.values()}
    return out


def commute(runner, state: dict) -> bool:
    """Whether code object ``runner`` touches none of ``state`` (variables, ``{id: Variable}``).

    Conservative: every variable of the runner's group counts as read and written (Brian2's ``Synapses``
    reach all variables of their source and target), and an object of unknown kind touches everything.
    """
    touched = _touched(runner)
    return touched is not None and not (touched & set(state))


def _runs_code(obj) -> bool:
    """Whether ``obj`` generates a code object that runs every step (groups themselves do not; their
    runners do; a state updater without differential equations has no code)."""
    from brian2.groups.group import CodeRunner, Group
    from brian2.groups.neurongroup import StateUpdater
    if isinstance(obj, StateUpdater):
        return bool(getattr(obj.group, "equations", None) and obj.group.equations.diff_eq_names)
    return isinstance(obj, CodeRunner) or not isinstance(obj, Group)


def _stateful(group, names) -> bool:
    from brian2.core.functions import DEFAULT_FUNCTIONS, Function
    for name in names:
        obj = group.variables.get(name) if name in group.variables else \
            (group.namespace or {}).get(name, DEFAULT_FUNCTIONS.get(name))
        if isinstance(obj, Function) and not obj.stateless:
            return True
    return False


@dataclass
class _Block:
    name: str
    code: str
    names: set
    state: dict

    @classmethod
    def of(cls, name, group, code):
        names = _identifiers(group, code)
        return cls(name, code, names, _state_of(group, names))

    def targets(self) -> set[str]:
        return {mo.group(1) for line in self.code.splitlines() if (mo := _TARGET.match(line.split("#")[0]))}


def _blocks_fuse(group, blocks) -> bool:
    """The blocks' scalar code only declares constants, their temporaries are their own, at most one draws
    random numbers."""
    temporaries = []
    for block in blocks:
        for target in block.targets():
            var = group.variables.get(target) if target in group.variables else None
            if var is None:
                temporaries.append(target)
            elif var.scalar:
                return False  # a shared variable written: scalar code that is not a declaration
    if len(temporaries) != len(set(temporaries)):
        return False
    return sum(_stateful(group, b.names) for b in blocks) <= 1


def _uses_idle(group, block) -> bool:
    from brian2.core.variables import Subexpression
    var = group.variables.get("biosnn_idle") if "biosnn_idle" in group.variables else None
    return "biosnn_idle" in block.names and isinstance(var, Subexpression) and var.scalar


def fuse_neuron_steps(network) -> list[FusedStep]:
    """Fuse the neuron steps of ``network`` (Brian2 objects, before their first run) where results cannot
    change; return what was fused.  The fused operations and resetters are made inactive, the thresholder
    gets :data:`FUSED_TEMPLATE` (its code object keeps its name)."""
    from brian2.groups.group import CodeRunner
    from brian2.groups.neurongroup import NeuronGroup, Resetter, Thresholder
    order = [obj for obj in network.sorted_objects if obj.active and _runs_code(obj)]
    fused = []
    for p, thr in enumerate(order):
        group = getattr(thr, "group", None)
        if not isinstance(thr, Thresholder) or thr.event != "spike" or thr.template != "threshold" \
                or not isinstance(group, NeuronGroup) or group._refractory is not False \
                or "spike" not in group.events:
            continue
        threshold = _Block.of("threshold", group, group.events["spike"])
        blocks = [threshold]
        updates, between = [], []
        for obj in reversed(order[:p]):
            candidate = isinstance(obj, CodeRunner) and type(obj) is CodeRunner and obj.group is group \
                and obj.template == "stateupdate" and obj.clock is thr.clock and isinstance(obj.abstract_code, str)
            if not candidate:
                between.append(obj)
                continue
            block = _Block.of(f"update{len(updates)}", group, obj.abstract_code)
            if not all(commute(x, block.state) for x in between) or not _blocks_fuse(group, [block] + blocks):
                break
            updates.insert(0, obj)
            blocks.insert(0, block)
        resetter = group.resetter.get("spike") if hasattr(group, "resetter") else None
        if isinstance(resetter, Resetter) and resetter.active and resetter.clock is thr.clock \
                and isinstance(group.event_codes.get("spike"), str) and resetter in order[p + 1:]:
            block = _Block.of("reset", group, group.event_codes["spike"])
            if all(commute(x, block.state) for x in order[p + 1:order.index(resetter)]) \
                    and _blocks_fuse(group, blocks + [block]):
                blocks.append(block)
            else:
                resetter = None
        else:
            resetter = None
        _fuse(thr, updates, resetter, blocks, group)
        fused.append(FusedStep(group.name, tuple(u.name for u in updates), resetter is not None))
    return fused


def _fuse(thr, updates, resetter, blocks, group):
    """Give ``thr`` the fused template and code blocks; deactivate ``updates`` and ``resetter``."""
    from brian2.groups.neurongroup import Thresholder
    names = [f"update{k}" for k in range(len(updates))]
    idle = [b.name for b in blocks if b.name != "reset" and _uses_idle(group, b)]
    kwds = dict(thr.template_kwds or {})
    kwds.update(biosnn_blocks=names + ["threshold"] + (["reset"] if resetter is not None else []),
                biosnn_updates=names, biosnn_reset=resetter is not None, biosnn_idle_blocks=idle,
                biosnn_all_idle=len(idle) == len(names) + 1)
    needed = list(thr.needed_variables)
    for obj in updates + ([resetter] if resetter is not None else []):
        needed += [v for v in obj.needed_variables if v not in needed]
        obj.active = False

    def update_abstract_code(run_namespace):
        Thresholder.update_abstract_code(thr, run_namespace)
        code, user = {}, {}
        for name, obj in zip(names, updates):
            obj.update_abstract_code(run_namespace)
            code[name] = obj.abstract_code
            user[name] = obj.user_code if obj.user_code is not None else obj.abstract_code
        code["threshold"], user["threshold"] = thr.abstract_code, thr.user_code
        if resetter is not None:
            resetter.update_abstract_code(run_namespace)
            code["reset"] = user["reset"] = resetter.abstract_code
        thr.abstract_code, thr.user_code = code, user

    thr.update_abstract_code = update_abstract_code
    thr.template = FUSED_TEMPLATE
    thr.template_kwds = kwds
    thr.needed_variables = needed
    thr.codeobj_class = _code_object_class()
