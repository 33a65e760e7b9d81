"""Sphinx directive ``.. spec-reference::``: the spec format, generated from ``biosnn/spec/model.py``.

Every dataclass of :mod:`biosnn.spec.model` gets a table of its fields -- YAML key, type,
default, description -- from ``dataclasses.fields`` and the numpydoc ``Parameters`` of its
docstring, so the page cannot drift from the code.  A field without a description is an
error of the build (and of ``tests/test_docs.py``).
"""

from __future__ import annotations

import dataclasses
import inspect

from docutils import nodes
from docutils.statemachine import StringList
from numpydoc.docscrape import NumpyDocString
from sphinx.util.docutils import SphinxDirective

#: Where each class appears in a YAML spec file (the classes are listed in this order).
PLACES = {
    "NetworkSpec": "the top level of the file",
    "NeuronModel": "``neuron_models.<name>``, or inline as a population's ``model``",
    "SynapseModel": "``synapse_models.<name>``, or inline as a projection's ``model``",
    "Population": "``populations.<name>``",
    "PoissonInput": "``inputs.<name>`` with ``type: poisson``",
    "SpikeTimesInput": "``inputs.<name>`` with ``type: spike_times``",
    "CurrentInput": "``inputs.<name>`` with ``type: current``",
    "TimedArraySpec": "``timed_arrays.<name>`` (``values``, ``dt``)",
    "Projection": "``projections.<name>``",
    "AllToAll": "a projection's ``connect: {type: all_to_all}`` (or ``connect: all_to_all``, or no ``connect``)",
    "OneToOne": "a projection's ``connect: one_to_one``",
    "RandomP": "a projection's ``connect: {type: random, ...}``",
    "Explicit": "a projection's ``connect: {type: explicit, i: ..., j: ...}``",
    "Conv2D": "a projection's ``connect: {type: conv2d, ...}``",
    "Pool2D": "a projection's ``connect: {type: pool2d, ...}``",
    "Condition": "a projection's ``connect: {type: condition, condition: ..., p: ...}``",
    "NodeRef": "the text ``name`` or ``name[start:stop]`` of a projection's ``source``/``target`` or a "
               "monitor's ``population``",
    "Operation": "an entry of a population's or projection's ``operations``",
    "SpikeMonitor": "an entry of ``monitors`` with ``type: spikes``",
    "StateMonitor": "an entry of ``monitors`` with ``type: state``",
    "RateMonitor": "an entry of ``monitors`` with ``type: rate``",
    "Segment": "an entry of the top-level ``protocol`` list",
}

#: Fields that the YAML file gives as the key of a mapping rather than as a field.
KEY_FIELDS = {"name"}


def spec_classes():
    """The dataclasses of ``biosnn.spec.model.__all__``, in the order of ``PLACES`` (others after)."""
    import biosnn.spec.model as m
    classes = [getattr(m, n) for n in m.__all__ if dataclasses.is_dataclass(getattr(m, n))]
    order = {name: k for k, name in enumerate(PLACES)}
    return sorted(classes, key=lambda c: (order.get(c.__name__, len(order)), c.__name__))


def field_docs(cls) -> dict[str, tuple[str, str]]:
    """``{field: (type, description)}`` from the numpydoc Parameters/Attributes of ``cls``."""
    doc = NumpyDocString(inspect.getdoc(cls) or "")
    out = {}
    for p in list(doc["Parameters"]) + list(doc["Attributes"]):
        for name in p.name.split(","):
            out[name.strip()] = (p.type, " ".join(line.strip() for line in p.desc))
    return out


def default_of(f: dataclasses.Field) -> str:
    """The default of a field as text (``required`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return "``None``" if f.default is None else f"``{f.default!r}``"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return f"``{value!r}``" if not isinstance(value, dict) else "``{}``"
    return "required"


def undocumented() -> list[str]:
    """``Class.field`` for every field that its class docstring does not describe."""
    return [f"{cls.__name__}.{f.name}" for cls in spec_classes() for f in dataclasses.fields(cls)
            if not field_docs(cls).get(f.name, ("", ""))[1]]


def reference_rst() -> list[str]:
    """The reStructuredText of the reference (one section per class)."""
    lines = []
    for cls in spec_classes():
        docs = field_docs(cls)
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        lines += [cls.__name__, "~" * len(cls.__name__), "",
                  f"{summary} (:class:`biosnn.spec.model.{cls.__name__}`)", "",
                  f"In a YAML file: {PLACES.get(cls.__name__, 'not written to YAML directly')}.", ""]
        flds = dataclasses.fields(cls)
        if not flds:
            lines += ["No fields.", ""]
            continue
        lines += [".. list-table::", "   :header-rows: 1", "   :widths: 18 22 14 46", "",
                  "   * - field", "     - type", "     - default", "     - description"]
        for f in flds:
            typ, desc = docs.get(f.name, ("", ""))
            if not desc:
                raise ValueError(f"{cls.__name__}.{f.name} has no description in the class docstring "
                                 "(numpydoc Parameters section of biosnn/spec/model.py)")
            key = f"``{f.name}``" + (" (the mapping key)" if f.name in KEY_FIELDS and cls.__name__ in
                                     ("Population", "PoissonInput", "SpikeTimesInput", "CurrentInput",
                                      "Projection", "TimedArraySpec") else "")
            lines += [f"   * - {key}", f"     - {typ or f.type}", f"     - {default_of(f)}", f"     - {desc}"]
        lines.append("")
    return lines


class SpecReference(SphinxDirective):
    """``.. spec-reference::`` -- the tables of every spec dataclass."""

    has_content = False

    def run(self):
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(reference_rst(), source="biosnn/spec/model.py"), self.content_offset, node,
                                match_titles=True)
        return node.children


def setup(app):
    app.add_directive("spec-reference", SpecReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
