"""YAML + .npz files of network specs: lossless round trips and located load errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from biosnn.errors import SpecError
from biosnn.spec.model import Operation
from biosnn.spec import (AllToAll, ArrayValue, Conv2D, CurrentInput, Explicit, NetworkSpec,
                         NeuronModel, OneToOne, PoissonInput, Pool2D, Population, Projection,
                         RandomP, SpikeMonitor, SpikeTimesInput, StateMonitor, SynapseModel,
                         TimedArraySpec, load_spec, save_spec)

SPECS = Path(__file__).resolve().parents[1] / "network_specs"


def every_kind_spec() -> NetworkSpec:
    """Every input kind, every connectivity kind, several dtypes, inline models."""
    rng = np.random.default_rng(0)
    decay = NeuronModel("dv/dt = -v/tau : volt\nI : amp", threshold="v > 1*mV", reset="v = 0*mV",
                        refractory="1*ms", parameters={"tau": "10*ms"}, method="euler",
                        description="decaying potential")
    jump = SynapseModel("w : volt", on_pre="v_post += w", description="voltage jump")
    stdp = SynapseModel("w : 1\ndapre/dt = -apre/taupre : 1 (event-driven)",
                        on_pre="v_post += w*mV\napre += 1\nw = clip(w - 0.01, 0, 1)",
                        on_post="w = clip(w + apre, 0, 1)", parameters={"taupre": "20*ms"})
    kernel = ArrayValue(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "mV")
    return NetworkSpec(
        name="every_kind",
        description="one of everything\nover two lines",
        dt="0.1*ms", duration="20*ms", seed=7,
        namespace={"w0": "0.5*mV", "rate0": "5*Hz"},
        neuron_models={"dec": decay},
        synapse_models={"jump": jump},
        timed_arrays=(TimedArraySpec("stim", ArrayValue(rng.random((3, 16)).astype(np.float32), "Hz"), "5*ms"),
                      TimedArraySpec("gain", ArrayValue(np.array([1.0, 0.5, 0.25]), "1"), "2*ms")),
        populations=(
            Population("img", 16, "dec", shape=(1, 4, 4),
                       initial={"v": ArrayValue(rng.random(16), "mV"), "I": "0*nA"}),
            Population("fmap", 8, "dec", shape=(2, 2, 2), parameters={"tau": "5*ms"}, order=1,
                       operations=(Operation("v = 0*mV", dt="5*ms", when="end", order=2),
                                   Operation("I = 0*nA"))),
            Population("pool", 4, decay, initial={"v": "rand()*mV"}),
            Population("lifs", 4, "lif", parameters={"tau_m": "10*ms"},
                       initial={"v": ArrayValue(np.array([-65, -60, -55, -52], dtype=np.int32), "mV")})),
        inputs=(
            PoissonInput("rates_arr", 16, ArrayValue(np.arange(16, dtype=np.float64), "Hz"), shape=(1, 4, 4)),
            PoissonInput("rates_expr", 16, "stim(t, i)*gain(t) + rate0"),
            SpikeTimesInput("times", 3, ArrayValue(np.array([0, 2, 1, 0], dtype=np.int64)),
                            ArrayValue(np.array([1.0, 1.5, 2.0, 4.0]), "ms"), period="10*ms"),
            CurrentInput("drive", "lifs", "I", ArrayValue(np.linspace(0, 0.3, 12).reshape(3, 4), "nA"), "1*ms"),
            CurrentInput("drive1d", "img", "I", ArrayValue(np.array([0.1, 0.2], dtype=np.float32), "nA"),
                         "2*ms")),
        projections=(
            Projection("a2a", "rates_expr", "img", "jump", connect=AllToAll(), weights="rand()*w0",
                       delay="1*ms"),
            Projection("self", "img", "img", "jump", connect=AllToAll(allow_autapses=False),
                       weights=ArrayValue(np.full(16 * 15, 0.01, dtype=np.float32), "mV")),
            Projection("o2o", "rates_arr", "img", "jump", connect=OneToOne(),
                       weights=ArrayValue(np.arange(16, dtype=np.int16), "mV"),
                       delay=ArrayValue(np.linspace(0, 2, 16), "ms")),
            Projection("rnd", "times", "pool", stdp, connect=RandomP(0.5, allow_autapses=False),
                       weights="0.5", initial={"apre": "0"}, order=1,
                       operations=(Operation("apre = 0", dt="2*ms"),)),
            Projection("expl", "fmap", "lifs", "jump",
                       connect=Explicit(ArrayValue(np.array([0, 3, 7], dtype=np.int32)),
                                        ArrayValue(np.array([1, 2, 3], dtype=np.uint8))),
                       weights=ArrayValue(np.array([1.0, 2.0, 3.0]), "mV")),
            Projection("conv", "img", "fmap", "jump", connect=Conv2D(kernel, stride=(1, 1), padding=0)),
            Projection("pooling", "fmap", "pool", "jump", weight_var="w",
                       connect=Pool2D(kernel_size=(2, 1), stride=(2, 1), weight="0.25"), weights="0.25*mV"),
        ),
        monitors=(SpikeMonitor("img"), SpikeMonitor("times"),
                  StateMonitor("lifs", ("v", "I"), indices=(0, 3), dt="0.5*ms"),
                  StateMonitor("pool", "v"), StateMonitor("img", ("v",), indices=5, when="start", order=3)))


def test_every_kind_spec_is_valid_and_complete():
    spec = every_kind_spec()
    kinds = {type(i).__name__ for i in spec.inputs}
    assert kinds == {"PoissonInput", "SpikeTimesInput", "CurrentInput"}
    connects = {type(p.connect).__name__ for p in spec.projections}
    assert connects == {"AllToAll", "OneToOne", "RandomP", "Explicit", "Conv2D", "Pool2D"}
    assert spec.population("fmap").operations[0].when == "end"
    assert spec.monitors[-1].indices == (5,) and spec.monitors[-1].when == "start"


def _round_trip(spec, tmp_path, name="net.yaml"):
    path = save_spec(spec, tmp_path / name)
    return path, load_spec(path)


def test_round_trip_every_kind(tmp_path):
    spec = every_kind_spec()
    path, back = _round_trip(spec, tmp_path)
    assert back == spec
    # field by field, so a failure says where
    for f in ("populations", "inputs", "projections", "monitors", "timed_arrays", "neuron_models",
              "synapse_models", "namespace", "description", "seed", "dt", "duration"):
        assert getattr(back, f) == getattr(spec, f), f
    # dtypes survive (equality already checks them; be explicit)
    assert back.projection("conv").connect.kernel.data.dtype == np.float32
    assert back.projection("o2o").weights.data.dtype == np.int16
    assert back.projection("self").weights.data.dtype == np.float32
    assert back.projection("expl").connect.j.data.dtype == np.uint8
    assert back.population("lifs").initial["v"].data.dtype == np.int32
    assert back.timed_arrays[0].values.data.dtype == np.float32
    assert back.inputs[2].indices.data.dtype == np.int64
    # arrays live in the side file, referenced by a relative path
    text = path.read_text()
    assert (tmp_path / "net.npz").exists()
    assert "file: net.npz" in text and str(tmp_path) not in text
    # saving again gives the same file
    path2, back2 = _round_trip(back, tmp_path / "again")
    assert path2.read_text() == text and back2 == spec


def test_round_trip_cuba(tmp_path):
    spec = load_spec(SPECS / "cuba.yaml")
    path, back = _round_trip(spec, tmp_path, "cuba.yaml")
    assert back == spec
    assert not (tmp_path / "cuba.npz").exists()  # no arrays, no side file
    assert back.namespace["we"] == "(60*0.27/10)*mV"
    assert back.neuron_models["cuba_lif"].equations == spec.neuron_models["cuba_lif"].equations


def test_round_trip_of_loaded_spec_is_stable(tmp_path):
    """load -> save -> load -> save gives identical files."""
    spec = every_kind_spec()
    p1 = save_spec(spec, tmp_path / "one" / "s.yaml")
    p2 = save_spec(load_spec(p1), tmp_path / "two" / "s.yaml")
    assert p1.read_text() == p2.read_text()
    a, b = np.load(p1.with_suffix(".npz")), np.load(p2.with_suffix(".npz"))
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])


def test_npz_is_referenced_relative_to_the_yaml(tmp_path):
    spec = every_kind_spec()
    path = save_spec(spec, tmp_path / "orig" / "net.yaml")
    moved = tmp_path / "elsewhere" / "deeper"
    moved.mkdir(parents=True)
    shutil.move(str(path), moved / "net.yaml")
    shutil.move(str(path.with_suffix(".npz")), moved / "net.npz")
    assert not (tmp_path / "orig" / "net.npz").exists()
    assert load_spec(moved / "net.yaml") == spec


def test_save_requires_yaml_suffix(tmp_path):
    with pytest.raises(SpecError, match=r"spec files end in \.yaml"):
        save_spec(every_kind_spec(), tmp_path / "net.json")


def test_inline_arrays(tmp_path):
    text = """
name: inline
populations:
  a:
    size: 3
    model: lif
    initial:
      v: {values: [-65, -60, -55], unit: mV, dtype: float32}
inputs:
  s:
    type: spike_times
    size: 2
    indices: [0, 1, 1]
    times: {values: [1.0, 2.0, 3.5], unit: ms}
projections:
  p:
    source: s
    target: a
    model: delta_voltage
    connect: {type: explicit, i: [0, 1], j: {values: [2, 0]}}
    weights: {values: [0.5, 1.5], unit: mV}
    delay: {values: [1, 2], unit: ms}
"""
    path = tmp_path / "inline.yaml"
    path.write_text(text)
    spec = load_spec(path)
    v = spec.population("a").initial["v"]
    assert v == ArrayValue(np.array([-65, -60, -55], dtype=np.float32), "mV")
    times = spec.inputs[0].times
    assert times.unit == "ms" and np.allclose(times.si(), [1e-3, 2e-3, 3.5e-3])
    assert spec.inputs[0].indices == ArrayValue(np.array([0, 1, 1]))
    p = spec.projection("p")
    assert p.weights == ArrayValue([0.5, 1.5], "mV")
    assert p.delay == ArrayValue([1, 2], "ms")
    assert p.connect.j.data.tolist() == [2, 0]
    # and the inline spec round-trips through a side file
    _, back = _round_trip(spec, tmp_path / "out")
    assert back == spec


# ---------------------------------------------------------------------------
# load errors: the file, the field and the fix


def load_text(tmp_path, text, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path, load_spec(path)


def load_error(tmp_path, text, match, field, fix=None, name="bad.yaml") -> SpecError:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(path)
    e = info.value
    assert e.file == str(path), e
    assert e.field == field, f"field {e.field!r}, expected {field!r}"
    assert e.fix, "a load error must say how to fix it"
    if fix is not None:
        assert fix in e.fix, e.fix
    assert str(path) in str(e)  # the rendered message names the file too
    return e


BASE = "name: t\npopulations:\n  a: {size: 3, model: lif}\n"


def test_yaml_syntax_error_names_the_line(tmp_path):
    text = "name: t\npopulations:\n  a:\n    size: 3\n   model: lif\n"
    e = load_error(tmp_path, text, r"YAML syntax error at line 5", None)
    assert "indentation" in e.fix
    load_error(tmp_path, "name: t\npopulations:\n  a: {size: 3, model: lif\n  b: 2\n",
               r"YAML syntax error at line 4", None)


def test_unknown_field_suggests_the_closest(tmp_path):
    load_error(tmp_path, "name: t\npopulations:\n  a: {sise: 3, model: lif}\n", r"unknown field 'sise'",
               "populations.a.sise", fix="did you mean 'size'?")
    load_error(tmp_path, "name: t\npopulation:\n  a: {size: 3, model: lif}\n", r"unknown field 'population'",
               "population", fix="did you mean 'populations'?")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: {equations: 'w : volt', "
               "on_pree: 'v_post += w'}}\n", r"unknown field 'on_pree'", "projections.p.model.on_pree",
               fix="did you mean 'on_pre'?")
    load_error(tmp_path, BASE + "inputs:\n  x: {type: poisson, size: 3, rate: 1*Hz}\n",
               r"unknown field 'rate'", "inputs.x.rate", fix="did you mean 'rates'?")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: 1*mV, connect: {type: random, prob: 0.1}}\n", r"unknown field 'prob'",
               "projections.p.connect.prob")


def test_missing_required_field(tmp_path):
    load_error(tmp_path, "name: t\npopulations:\n  a: {size: 3}\n", r"missing field 'model'",
               "populations.a.model", fix="add 'model: ...'")
    load_error(tmp_path, "populations:\n  a: {size: 3, model: lif}\n", r"missing field 'name'", "name")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, model: delta_voltage}\n",
               r"missing field 'target'", "projections.p.target")
    load_error(tmp_path, BASE + "monitors:\n  - {type: spikes}\n", r"missing field 'population'",
               "monitors[0].population")
    load_error(tmp_path, BASE + "timed_arrays:\n  s: {values: [1, 2]}\n", r"missing field 'dt'",
               "timed_arrays.s.dt")


def test_missing_npz_file(tmp_path):
    e = load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
                   "weights: {file: nope.npz, key: w, unit: mV}}\n",
                   r"array file 'nope.npz' not found", "projections.p.weights", fix="relative path")
    assert str(tmp_path / "nope.npz") in e.message


def test_missing_key_in_npz(tmp_path):
    np.savez(tmp_path / "k.npz", other=np.ones(9))
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: {file: k.npz, key: w, unit: mV}}\n",
               r"array 'w' is not in 'k.npz'", "projections.p.weights", fix="other")


def test_unreadable_npz(tmp_path):
    (tmp_path / "junk.npz").write_text("not a zip file")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: {file: junk.npz, key: w, unit: mV}}\n",
               r"cannot read array file", "projections.p.weights")


def test_unknown_types(tmp_path):
    load_error(tmp_path, BASE + "inputs:\n  x: {type: poison, size: 3, rates: 1*Hz}\n",
               r"unknown input type 'poison'", "inputs.x.type", fix="poisson")
    load_error(tmp_path, BASE + "inputs:\n  x: {size: 3, rates: 1*Hz}\n", r"an input needs a 'type'",
               "inputs.x.type")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: 1*mV, connect: {type: full}}\n",
               r"unknown connectivity type 'full'", "projections.p.connect.type", fix="all_to_all")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: 1*mV, connect: full}\n", r"unknown connectivity 'full'", "projections.p.connect")
    load_error(tmp_path, BASE + "monitors:\n  - {type: spike, population: a}\n",
               r"a monitor needs 'type: spikes' or 'type: state'", "monitors[0].type")


def test_spec_errors_are_located_in_the_file(tmp_path):
    """Validation errors of the dataclasses get the file and the full dotted field."""
    load_error(tmp_path, "name: t\npopulations:\n  a: {size: -3, model: lif}\n", r"must be positive",
               "populations.a.size")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: 1*mV, connect: {type: random, p: 2}}\n",
               r"connection probability", "projections.p.connect.p")
    load_error(tmp_path, "name: t\nneuron_models:\n  m: {equations: 'dv/dt = -v : volt'}\n"
               "populations:\n  a: {size: 3, model: m}\n", r"unit mismatch in equation for dv/dt",
               "neuron_models.m.equations")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: b, model: delta_voltage, weights: 1*mV}\n",
               r"unknown target population 'b'", "projections.p.target")
    load_error(tmp_path, BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
               "weights: {values: [1, 2], unit: mV}}\n", r"expected \(9,\)", "projections.p.weights")


MALFORMED = {
    "empty": "",
    "list": "- a\n- b\n",
    "scalar": "just text\n",
    "populations_int": "name: t\npopulations: 3\n",
    "populations_list": "name: t\npopulations:\n  - a\n",
    "population_none": "name: t\npopulations:\n  a:\n",
    "size_text": "name: t\npopulations:\n  a: {size: three, model: lif}\n",
    "shape_text": "name: t\npopulations:\n  a: {size: 3, model: lif, shape: abc}\n",
    "initial_list": "name: t\npopulations:\n  a: {size: 3, model: lif, initial: [1]}\n",
    "parameters_list": "name: t\npopulations:\n  a: {size: 3, model: lif, parameters: [1]}\n",
    "models_list": "name: t\nneuron_models: [1]\n",
    "synapse_models_text": "name: t\nsynapse_models: abc\n",
    "monitors_map": BASE + "monitors: {a: 1}\n",
    "monitors_int": BASE + "monitors: [3]\n",
    "ragged_inline": BASE.replace("lif}", "lif, initial: {v: {values: [[1, 2], [3]], unit: mV}}}"),
    "bad_dtype": BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
                        "weights: {values: [1, 2, 3, 4, 5, 6, 7, 8, 9], unit: mV, dtype: floaty}}\n",
    "array_no_key": BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
                           "weights: {file: x.npz, unit: mV}}\n",
    "array_scalar": BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
                           "connect: {type: explicit, i: 3, j: [0]}}\n",
    "bad_unit": BASE + "projections:\n  p: {source: a, target: a, model: delta_voltage, "
                       "weights: {values: [1, 2, 3, 4, 5, 6, 7, 8, 9], unit: furlong}}\n",
    "seed_text": "name: t\nseed: abc\n",
    "name_number": "name: 5\n",
    "tab_indent": "name: t\npopulations:\n\ta: {size: 3, model: lif}\n",
    "duplicate_anchor": "name: t\npopulations: *missing\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_never_yields_a_spec(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(MALFORMED[name])
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.file == str(path)
    assert info.value.fix


def test_every_truncation_of_cuba_is_a_spec_or_a_spec_error(tmp_path):
    """Dropping any one line from a valid file gives a valid spec or a SpecError, never a crash."""
    lines = (SPECS / "cuba.yaml").read_text().splitlines(keepends=True)
    outcomes = {"spec": 0, "error": 0}
    for k in range(len(lines)):
        path = tmp_path / f"cut{k}.yaml"
        path.write_text("".join(lines[:k] + lines[k + 1:]))
        try:
            spec = load_spec(path)
        except SpecError as e:
            assert e.file == str(path)
            outcomes["error"] += 1
        else:
            assert isinstance(spec, NetworkSpec)
            outcomes["spec"] += 1
    assert outcomes["error"] > 0 and outcomes["spec"] > 0


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match="spec file not found") as info:
        load_spec(tmp_path / "none.yaml")
    assert info.value.file == str(tmp_path / "none.yaml")


def test_saved_yaml_is_plain_yaml(tmp_path):
    """The file is readable by any YAML parser and mirrors the spec layout."""
    path = save_spec(every_kind_spec(), tmp_path / "net.yaml")
    data = yaml.safe_load(path.read_text())
    assert data["name"] == "every_kind"
    assert list(data["populations"]) == ["img", "fmap", "pool", "lifs"]
    assert data["inputs"]["rates_expr"] == {"type": "poisson", "size": 16,
                                            "rates": "stim(t, i)*gain(t) + rate0"}
    assert data["projections"]["conv"]["connect"]["type"] == "conv2d"
    assert data["monitors"][2] == {"type": "state", "population": "lifs", "variables": ["v", "I"],
                                   "indices": [0, 3], "dt": "0.5*ms"}


LIBRARY_TARGET_YAML = """
name: tv
dt: 0.1*ms
duration: 5*ms
neuron_models:
  n:
    equations: |
      dv/dt = -v/(10*ms) : volt
      dge/dt = -ge/(5*ms) : 1
    threshold: v > 10*mV
    reset: v = 0*mV
populations:
  a: {size: 2, model: n}
inputs:
  s: {type: spike_times, size: 1, indices: {values: [0]}, times: {values: [1.0], unit: ms}}
projections:
  p: {source: s, target: a, model: MODEL, target_var: ge, weights: "0.5"}
monitors:
  - {type: state, population: a, variables: [ge, v], indices: [0]}
"""


def test_library_synapse_named_in_yaml_delivers_to_its_target_var(tmp_path):
    from biosnn import get_backend
    path = tmp_path / "tv.yaml"
    path.write_text(LIBRARY_TARGET_YAML.replace("MODEL", "stdp_trace"))
    spec = load_spec(path)
    assert spec.synapse_model(spec.projections[0]).on_pre.startswith("ge_post += w")
    assert load_spec(save_spec(spec, tmp_path / "back.yaml")) == spec
    rec = get_backend("runtime").build(spec).run(progress=False)
    ge, v = rec.states["a"]["ge"].values[:, 0], rec.states["a"]["v"].values[:, 0]
    assert ge.max() == pytest.approx(0.5) and v.max() == 0.0  # ge jumped, v did not
    path.write_text(LIBRARY_TARGET_YAML.replace("MODEL", "conductance_exc"))
    with pytest.raises(SpecError, match=r"projections.p.target_var.*not a library synapse model that takes a "
                                        r"target variable.*stdp_trace"):
        load_spec(path)
