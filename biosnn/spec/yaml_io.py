"""Read and write network specs as YAML files (arrays in a side ``.npz`` file).

The file layout mirrors :class:`~biosnn.spec.model.NetworkSpec`; named parts
(populations, inputs, projections, models) are mappings keyed by name.  An
array is written as ``{file: <name>.npz, key: <key>, unit: <unit>}`` with the
``.npz`` next to the YAML file (relative path); on reading, arrays may also be
given inline as ``{values: [...], unit: mV}``.  ``load -> save -> load`` gives an
equal spec.

Every error names the file and the field and says what to do; a file with any
error yields no spec at all.
"""

from __future__ import annotations

import difflib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from biosnn.errors import SpecError
from biosnn.spec import model as m
from biosnn.spec.files import SideFiles, read_yaml
from biosnn.spec.grammar import check_identifier
from biosnn.spec.values import ArrayValue

__all__ = ["load_spec", "save_spec", "spec_to_dict", "spec_from_dict"]

_INPUT_TYPES = {"poisson": m.PoissonInput, "spike_times": m.SpikeTimesInput, "current": m.CurrentInput}
_CONNECT_TYPES = {"all_to_all": m.AllToAll, "one_to_one": m.OneToOne, "random": m.RandomP,
                  "explicit": m.Explicit, "conv2d": m.Conv2D, "pool2d": m.Pool2D,
                  "condition": m.Condition}
_DTYPES = {f"{k}{b}" for k, bits in (("int", (8, 16, 32, 64)), ("uint", (8, 16, 32, 64)),
                                      ("float", (16, 32, 64))) for b in bits} | {"bool"}
_MONITOR_TYPES = {"spikes": m.SpikeMonitor, "state": m.StateMonitor, "rate": m.RateMonitor}


# ---------------------------------------------------------------------------
# reading


class _Reader:
    def __init__(self, path: Path | None, allow_outside: bool = False):
        self.path = path
        self.base = path.parent if path else Path(".")
        self.files = SideFiles(self.base, str(path) if path else None, allow_outside)

    def err(self, message, field_, fix=None):
        return SpecError(message, field=field_, file=str(self.path) if self.path else None, fix=fix)

    def mapping(self, data, field_, allowed, required=()):
        if not isinstance(data, dict):
            raise self.err(f"expected a mapping, got {type(data).__name__}", field_,
                           "write 'key: value' pairs here")
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise self.err(f"unknown field '{key}'", f"{field_}.{key}" if field_ else str(key),
                               f"{hint}allowed fields are {sorted(allowed)}")
        for key in required:
            if key not in data:
                raise self.err(f"missing field '{key}'", f"{field_}.{key}" if field_ else key,
                               f"add '{key}: ...'")
        return data

    def array_value(self, values, unit, field_):
        try:
            return ArrayValue(np.asarray(values), unit)
        except (ValueError, TypeError) as exc:
            raise self.err(f"not a rectangular array of numbers: {exc}", field_,
                           "give numbers only, with equal row lengths") from None
        except SpecError as exc:  # bad unit or non-numeric values: say where
            raise exc.located(file=str(self.path) if self.path else None, prefix=field_) from None

    def array(self, data, field_):
        if isinstance(data, dict):
            self.mapping(data, field_, {"file", "key", "unit", "values", "dtype"})
            unit = str(data.get("unit", "1"))
            if "values" in data:
                try:
                    values = np.asarray(data["values"])
                    if "dtype" in data:
                        if data["dtype"] not in _DTYPES:
                            raise TypeError(f"dtype must be one of {sorted(_DTYPES)}")
                        values = values.astype(data["dtype"])
                except (ValueError, TypeError) as exc:
                    raise self.err(f"inline values are not a rectangular array of numbers: {exc}", field_,
                                   "give numbers only, with equal row lengths (and a numpy dtype "
                                   "such as float32)") from None
                if values.dtype == object:
                    raise self.err("inline values must be a rectangular list of numbers", field_,
                                   "give numbers only, with equal row lengths")
                return self.array_value(values, unit, field_)
            if "file" not in data or "key" not in data:
                raise self.err("an array needs 'file' and 'key' (or inline 'values')", field_,
                               "write {file: weights.npz, key: name, unit: mV}")
            return self.array_value(self.files.array(data["file"], data["key"], field_), unit, field_)
        if isinstance(data, list):
            return self.array_value(data, "1", field_)
        raise self.err(f"expected an array, got {data!r}", field_,
                       "write {values: [...], unit: ...} or {file: x.npz, key: k, unit: ...}")

    def value(self, data, field_):
        if isinstance(data, (dict, list)):
            return self.array(data, field_)
        if isinstance(data, bool):
            return "True" if data else "False"
        if isinstance(data, (int, float, str)):
            return data if isinstance(data, str) else repr(data)
        raise self.err(f"expected a value or an array, got {data!r}", field_, "write e.g. '20*ms'")

    def values(self, data, field_):
        if data is None:
            return {}
        self.mapping(data, field_, set(data) if isinstance(data, dict) else set())
        return {k: self.value(v, f"{field_}.{k}") for k, v in data.items()}

    def build(self, cls, kwargs, field_):
        try:
            return cls(**kwargs)
        except SpecError as exc:
            raise exc.located(file=str(self.path) if self.path else None, prefix=field_) from None
        except TypeError:  # a required field is missing (mapping() names unknown ones)
            missing = [f.name for f in fields(cls) if f.name not in kwargs
                       and f.default is MISSING and f.default_factory is MISSING]
            raise self.err(f"missing field(s) {missing}", f"{field_}.{missing[0]}" if missing else field_,
                           f"add {', '.join(missing) or 'the required fields'}") from None

    # -- parts -------------------------------------------------------------
    def neuron_model(self, data, field_):
        allowed = [f.name for f in fields(m.NeuronModel)]
        self.mapping(data, field_, allowed, required=("equations",))
        return self.build(m.NeuronModel, dict(data), field_)

    def synapse_model(self, data, field_):
        allowed = [f.name for f in fields(m.SynapseModel)]
        self.mapping(data, field_, allowed)
        return self.build(m.SynapseModel, dict(data), field_)

    def population(self, name, data, field_):
        self.mapping(data, field_, ["size", "model", "parameters", "initial", "shape", "operations", "order"],
                     required=("size", "model"))
        kw = dict(data, name=name)
        if isinstance(kw["model"], dict):
            kw["model"] = self.neuron_model(kw["model"], f"{field_}.model")
        kw["initial"] = self.values(data.get("initial"), f"{field_}.initial")
        return self.build(m.Population, kw, field_)

    def input(self, name, data, field_):
        if not isinstance(data, dict) or "type" not in data:
            raise self.err("an input needs a 'type'", f"{field_}.type",
                           f"use one of {sorted(_INPUT_TYPES)}")
        kind = data["type"]
        if not isinstance(kind, str) or kind not in _INPUT_TYPES:
            raise self.err(f"unknown input type '{kind}'", f"{field_}.type",
                           f"use one of {sorted(_INPUT_TYPES)}")
        cls = _INPUT_TYPES[kind]
        allowed = ["type"] + [f.name for f in fields(cls) if f.name != "name"]
        self.mapping(data, field_, allowed)
        kw = {k: v for k, v in data.items() if k != "type"}
        for key in ("rates", "indices", "times", "values"):
            if key in kw:
                kw[key] = self.value(kw[key], f"{field_}.{key}")
        return self.build(cls, dict(kw, name=name), field_)

    def connect(self, data, field_):
        if data is None or data == "all_to_all":
            return m.AllToAll()
        if data == "one_to_one":
            return m.OneToOne()
        if not isinstance(data, dict) or "type" not in data:
            raise self.err(f"unknown connectivity {data!r}", f"{field_}",
                           f"write {{type: ...}} with type one of {sorted(_CONNECT_TYPES)}")
        kind = data["type"]
        if not isinstance(kind, str) or kind not in _CONNECT_TYPES:
            raise self.err(f"unknown connectivity type '{kind}'", f"{field_}.type",
                           f"use one of {sorted(_CONNECT_TYPES)}")
        cls = _CONNECT_TYPES[kind]
        self.mapping(data, field_, ["type"] + [f.name for f in fields(cls)])
        kw = {k: v for k, v in data.items() if k != "type"}
        for key in ("i", "j", "kernel"):
            if key in kw and cls is not m.Condition:  # a condition's j is an expression
                kw[key] = self.array(kw[key], f"{field_}.{key}")
        try:
            return cls(**kw)
        except SpecError as exc:
            field_root = field_.rsplit(".connect", 1)[0]
            raise exc.located(file=str(self.path) if self.path else None, prefix=field_root) from None
        except TypeError:
            return self.build(cls, kw, field_)  # names the missing field

    def projection(self, name, data, field_):
        allowed = [f.name for f in fields(m.Projection) if f.name != "name"]
        self.mapping(data, field_, allowed, required=("source", "target", "model"))
        kw = dict(data, name=name)
        if isinstance(kw["model"], dict):
            kw["model"] = self.synapse_model(kw["model"], f"{field_}.model")
        kw["connect"] = self.connect(data.get("connect"), f"{field_}.connect")
        for key in ("weights", "delay"):
            if key == "delay" and isinstance(data.get(key), dict) and not set(data[key]) & {"file", "key", "values"}:
                kw[key] = self.values(data[key], f"{field_}.{key}")  # per pathway
            elif data.get(key) is not None:
                kw[key] = self.value(data[key], f"{field_}.{key}")
        kw["initial"] = self.values(data.get("initial"), f"{field_}.initial")
        return self.build(m.Projection, kw, field_)

    def monitor(self, data, field_):
        if not isinstance(data, dict) or not isinstance(data.get("type"), str) or data["type"] not in _MONITOR_TYPES:
            raise self.err("a monitor needs 'type: spikes' or 'type: state' or 'type: rate'", f"{field_}.type",
                           "write e.g. {type: spikes, population: exc}")
        cls = _MONITOR_TYPES[data["type"]]
        self.mapping(data, field_, ["type"] + [f.name for f in fields(cls)], required=("population",))
        return self.build(cls, {k: v for k, v in data.items() if k != "type"}, field_)

    def named(self, data, field_, fn):
        if data is None:
            return []
        if not isinstance(data, dict):
            raise self.err(f"expected a mapping of names to definitions, got {type(data).__name__}",
                           field_, "write 'name: {...}' entries")
        for k in data:
            try:
                check_identifier(k, field=f"{field_}.{str(k)[:60]}", what="name")
            except SpecError as exc:
                raise exc.located(file=str(self.path) if self.path else None) from None
        return [fn(k, v, f"{field_}.{k}") for k, v in data.items()]

    def network(self, data):
        allowed = [f.name for f in fields(m.NetworkSpec)]
        self.mapping(data, "", allowed, required=("name", "populations"))
        kw = dict(data)
        kw["neuron_models"] = dict(self.named(data.get("neuron_models"), "neuron_models",
                                              lambda k, v, f: (k, self.neuron_model(v, f))))
        kw["synapse_models"] = dict(self.named(data.get("synapse_models"), "synapse_models",
                                               lambda k, v, f: (k, self.synapse_model(v, f))))
        kw["populations"] = self.named(data.get("populations"), "populations", self.population)
        kw["inputs"] = self.named(data.get("inputs"), "inputs", self.input)
        kw["projections"] = self.named(data.get("projections"), "projections", self.projection)
        kw["timed_arrays"] = self.named(
            data.get("timed_arrays"), "timed_arrays",
            lambda n, d, f: self.build(m.TimedArraySpec, dict(
                self.mapping(d, f, ["values", "dt"], required=("values", "dt")), name=n,
                values=self.array(d["values"], f"{f}.values")), f))
        mons = data.get("monitors") or []
        if not isinstance(mons, list):
            raise self.err("monitors must be a list", "monitors", "write '- {type: spikes, population: x}'")
        kw["monitors"] = [self.monitor(d, f"monitors[{k}]") for k, d in enumerate(mons)]
        if data.get("protocol") is not None:
            kw["protocol"] = self.protocol(data["protocol"])
            if "duration" not in data and kw["protocol"]:  # the segments' total
                kw["duration"] = " + ".join(f"({seg.duration})" for seg in kw["protocol"])
        return self.build(m.NetworkSpec, kw, "")

    def protocol(self, data):
        if not isinstance(data, list):
            raise self.err("protocol must be a list of segments", "protocol",
                           "write '- {duration: 100*ms}' then '- {duration: 200*ms, set: {exc.I: 2*nA}}'")
        out = []
        for k, d in enumerate(data):
            f = f"protocol[{k}]"
            self.mapping(d, f, ["duration", "set"], required=("duration",))
            values = d.get("set") or {}
            if not isinstance(values, dict):
                raise self.err("set must be a mapping '<part>.<variable>: value'", f"{f}.set", "write {exc.I: 2*nA}")
            out.append(self.build(m.Segment, {"duration": d["duration"],
                                              "set": {k2: self.value(v, f"{f}.set.{k2}") for k2, v in values.items()}},
                                  f))
        return out


def spec_from_dict(data: dict, path: str | Path | None = None, *, allow_outside: bool = False,
                   memory_limit: float | None = None) -> m.NetworkSpec:
    """Build a spec from the parsed YAML structure (arrays relative to ``path``; see :func:`load_spec`)."""
    from biosnn.spec.budget import memory_limit as limit
    reader = _Reader(Path(path) if path else None, allow_outside)
    try:
        with limit(memory_limit):
            return reader.network(data)
    finally:
        reader.files.close()


def load_spec(path: str | Path, *, allow_outside: bool = False, memory_limit: float | None = None) -> m.NetworkSpec:
    """Read a network spec from a YAML file.

    A spec is data: reading it never runs code from it (see
    :mod:`biosnn.spec.grammar`), reads only regular files inside the spec's
    folder (:mod:`biosnn.spec.files`) and refuses networks larger than the
    memory budget (:mod:`biosnn.spec.budget`).

    Parameters
    ----------
    path : str or Path
        The ``.yaml`` file; relative array files are resolved next to it.
    allow_outside : bool
        Also read array files outside the spec's folder (absolute paths,
        ``..``, symlinks leaving it).  Only for specs you trust.
    memory_limit : float, optional
        Bytes the network may need (default: the memory available now, or
        ``$BIOSNN_MEMORY_LIMIT``; ``float("inf")``: no limit).

    Returns
    -------
    NetworkSpec

    Raises
    ------
    SpecError
        Naming the file, the field and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise SpecError(f"spec file not found: {path}", file=str(path),
                        fix="check the path (network specs live in network_specs/)")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError("the file does not contain a mapping", file=str(path),
                        fix="start the file with 'name: <network name>'")
    return spec_from_dict(data, path, allow_outside=allow_outside, memory_limit=memory_limit)


# ---------------------------------------------------------------------------
# writing


class _Writer:
    def __init__(self, npz_name: str):
        self.npz_name = npz_name
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, a: ArrayValue, key: str):
        key = key.replace("/", ".")
        self.arrays[key] = np.asarray(a.data)
        return {"file": self.npz_name, "key": key, "unit": a.unit}

    def value(self, v, key):
        return self.array(v, key) if isinstance(v, ArrayValue) else v

    def values(self, mapping, key):
        return {k: self.value(v, f"{key}.{k}") for k, v in mapping.items()}

    @staticmethod
    def model(model, optional: tuple[str, ...]) -> dict:
        """A neuron or synapse model as YAML data: equations, the optional fields that are set."""
        d = {"equations": model.equations}
        d.update({k: dict(v) if isinstance(v, Mapping) else v for k in optional
                  if (v := getattr(model, k)) is not None})
        if model.parameters:
            d["parameters"] = dict(model.parameters)
        if model.description:
            d["description"] = model.description
        return d

    def neuron_model(self, nm: m.NeuronModel):
        return self.model(nm, ("threshold", "reset", "refractory", "method"))

    def synapse_model(self, sm: m.SynapseModel):
        return self.model(sm, ("on_pre", "on_post", "method"))

    @staticmethod
    def schedule(part, e):
        if part.operations:
            e["operations"] = [{"code": op.code, **({"dt": op.dt} if op.dt else {}), "when": op.when,
                                "order": op.order} for op in part.operations]
        if part.order is not None:
            e["order"] = part.order

    def connect(self, c, key):
        kind = {v: k for k, v in _CONNECT_TYPES.items()}[type(c)]
        d = {"type": kind}
        for f in fields(c):
            v = getattr(c, f.name)
            if isinstance(v, ArrayValue):
                v = self.array(v, f"{key}.{f.name}")
            elif isinstance(v, tuple):
                v = list(v)
            if v is not None:
                d[f.name] = v
        return d

    def network(self, spec: m.NetworkSpec) -> dict:
        d: dict[str, Any] = {"name": spec.name}
        if spec.description:
            d["description"] = spec.description
        d.update({"dt": spec.dt, "duration": spec.duration})
        if spec.seed is not None:
            d["seed"] = spec.seed
        if spec.namespace:
            d["namespace"] = dict(spec.namespace)
        if spec.neuron_models:
            d["neuron_models"] = {k: self.neuron_model(v) for k, v in spec.neuron_models.items()}
        if spec.synapse_models:
            d["synapse_models"] = {k: self.synapse_model(v) for k, v in spec.synapse_models.items()}
        if spec.timed_arrays:
            d["timed_arrays"] = {t.name: {"values": self.array(t.values, f"timed_arrays.{t.name}"),
                                          "dt": t.dt} for t in spec.timed_arrays}
        pops = {}
        for p in spec.populations:
            e: dict[str, Any] = {"size": p.size,
                                 "model": p.model if isinstance(p.model, str) else self.neuron_model(p.model)}
            if p.shape is not None:
                e["shape"] = list(p.shape)
            if p.parameters:
                e["parameters"] = dict(p.parameters)
            if p.initial:
                e["initial"] = self.values(p.initial, f"populations.{p.name}.initial")
            self.schedule(p, e)
            pops[p.name] = e
        d["populations"] = pops
        if spec.inputs:
            inputs = {}
            for inp in spec.inputs:
                kind = {v: k for k, v in _INPUT_TYPES.items()}[type(inp)]
                e = {"type": kind}
                for f in fields(inp):
                    if f.name == "name":
                        continue
                    v = getattr(inp, f.name)
                    if v is None:
                        continue
                    e[f.name] = self.value(v, f"inputs.{inp.name}.{f.name}") if not isinstance(v, tuple) else list(v)
                inputs[inp.name] = e
            d["inputs"] = inputs
        if spec.projections:
            projs = {}
            for pr in spec.projections:
                key = f"projections.{pr.name}"
                e = {"source": pr.source, "target": pr.target,
                     "model": pr.model if isinstance(pr.model, str) else self.synapse_model(pr.model),
                     "connect": self.connect(pr.connect, f"{key}.connect")}
                if pr.weights is not None:
                    e["weights"] = self.value(pr.weights, f"{key}.weights")
                if pr.weight_var != "w":
                    e["weight_var"] = pr.weight_var
                if pr.target_var is not None:
                    e["target_var"] = pr.target_var
                if isinstance(pr.delay, Mapping):
                    e["delay"] = self.values(pr.delay, f"{key}.delay")
                elif pr.delay is not None:
                    e["delay"] = self.value(pr.delay, f"{key}.delay")
                if pr.initial:
                    e["initial"] = self.values(pr.initial, f"{key}.initial")
                if pr.parameters:
                    e["parameters"] = dict(pr.parameters)
                self.schedule(pr, e)
                projs[pr.name] = e
            d["projections"] = projs
        if spec.monitors:
            mons = []
            for mon in spec.monitors:
                if isinstance(mon, m.SpikeMonitor):
                    mons.append({"type": "spikes", "population": mon.population,
                                 **({"variables": list(mon.variables)} if mon.variables else {})})
                elif isinstance(mon, m.RateMonitor):
                    mons.append({"type": "rate", "population": mon.population})
                else:
                    e = {"type": "state", "population": mon.population, "variables": list(mon.variables)}
                    if mon.indices is not None:
                        e["indices"] = list(mon.indices)
                    if mon.dt is not None:
                        e["dt"] = mon.dt
                    if mon.when != "start" or mon.order != 0:
                        e["when"], e["order"] = mon.when, mon.order
                    mons.append(e)
            d["monitors"] = mons
        if spec.protocol:
            d["protocol"] = [{"duration": seg.duration, **({"set": dict(seg.set)} if seg.set else {})}
                             for seg in spec.protocol]
        return d


def _str_presenter(dumper, data):
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _str_presenter)


def spec_to_dict(spec: m.NetworkSpec, npz_name: str = "arrays.npz") -> tuple[dict, dict]:
    """The YAML structure of a spec and the arrays (key -> ndarray) for its side file."""
    w = _Writer(npz_name)
    return w.network(spec), w.arrays


def save_spec(spec: m.NetworkSpec, path: str | Path) -> Path:
    """Write a spec to ``path`` (YAML) and its arrays to ``<stem>.npz`` beside it.

    Returns
    -------
    Path
        The YAML file written.
    """
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise SpecError(f"spec files end in .yaml, got '{path.name}'", file=str(path),
                        fix="save to e.g. network_specs/my_net.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    npz_name = f"{path.stem}.npz"
    data, arrays = spec_to_dict(spec, npz_name)
    if arrays:
        np.savez_compressed(path.parent / npz_name, **arrays)
    path.write_text(yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=100))
    return path
