"""Construction-time validation of the network spec (frozen dataclasses).

Every error a user can hit must be a :class:`SpecError` whose message says
what is wrong and whose ``field`` names the offending dotted field.
"""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from biosnn.errors import SpecError
from biosnn.spec import (AllToAll, ArrayValue, Conv2D, CurrentInput, Explicit, NetworkSpec,
                         NeuronModel, OneToOne, PoissonInput, Pool2D, Population, Projection,
                         RandomP, SpikeMonitor, SpikeTimesInput, StateMonitor, SynapseModel,
                         TimedArraySpec)

# ---------------------------------------------------------------------------
# helpers


def decay_model(**kw) -> NeuronModel:
    args = {"equations": "dv/dt = -v/tau : volt", "parameters": {"tau": "10*ms"}}
    args.update(kw)
    return NeuronModel(**args)


def pop(name="a", size=3, model="lif", **kw) -> Population:
    return Population(name=name, size=size, model=model, **kw)


def proj(source="a", target="a", model="delta_voltage", name="p", **kw) -> Projection:
    return Projection(name=name, source=source, target=target, model=model, **kw)


def net(**kw) -> NetworkSpec:
    return NetworkSpec(name=kw.pop("name", "n"), **kw)


def raises(build, match: str, field: str | None):
    """Assert ``build()`` raises a SpecError matching ``match`` that names ``field``."""
    with pytest.raises(SpecError, match=match) as info:
        build()
    assert info.value.field == field, f"field {info.value.field!r}, expected {field!r}"
    assert info.value.fix, "every spec error must say how to fix it"
    return info.value


KERNEL = ArrayValue(np.ones((2, 1, 3, 3), dtype=np.float32), "mV")


def full_spec() -> NetworkSpec:
    """A spec using most features (arrays, inline models, inputs, monitors)."""
    return net(
        name="full",
        seed=3,
        namespace={"w0": "0.5*mV"},
        neuron_models={"dec": decay_model(threshold="v > 1*mV", reset="v = 0*mV")},
        synapse_models={"jump": SynapseModel(equations="w : volt", on_pre="v_post += w")},
        timed_arrays=(TimedArraySpec("stim", ArrayValue(np.arange(8.0).reshape(2, 4), "Hz"), "5*ms"),),
        populations=(pop("a", 16, "dec", shape=(1, 4, 4),
                         initial={"v": ArrayValue(np.linspace(0, 1, 16), "mV")}),
                     pop("b", 8, decay_model(threshold="v > 1*mV", reset="v = 0*mV")),
                     pop("c", 4, "lif", parameters={"tau_m": "10*ms"})),
        inputs=(PoissonInput("x", 4, "stim(t, i)"),
                SpikeTimesInput("s", 2, ArrayValue([0, 1, 0]), ArrayValue([1.0, 2.0, 3.0], "ms")),
                CurrentInput("cur", "c", "I", ArrayValue(np.ones((3, 4)), "nA"), "1*ms")),
        projections=(proj("a", "b", "jump", name="conv", connect=Conv2D(KERNEL)),
                     proj("x", "c", "jump", name="xc", connect=OneToOne(), weights="w0", delay="1*ms"),
                     proj("s", "a", "jump", name="sa", connect=RandomP(0.5), weights="0.1*mV"),
                     proj("b", "c", "jump", name="bc",
                          connect=Explicit(ArrayValue([0, 1, 7]), ArrayValue([3, 2, 1])),
                          weights=ArrayValue(np.array([1.0, 2.0, 3.0]), "mV"))),
        monitors=(SpikeMonitor("a"), StateMonitor("c", ("v",), indices=(0, 2), dt="1*ms")),
        description="test spec")


# ---------------------------------------------------------------------------
# error paths: references


def test_unknown_target_population_in_projection():
    e = raises(lambda: net(populations=(pop(),), projections=(proj(target="zz", weights="1*mV"),)),
               r"unknown target population 'zz'", "projections.p.target")
    assert "'a'" in e.fix


def test_unknown_source_in_projection():
    raises(lambda: net(populations=(pop(),), projections=(proj(source="zz", weights="1*mV"),)),
           r"unknown source 'zz'", "projections.p.source")


def test_input_cannot_be_a_projection_target():
    raises(lambda: net(populations=(pop(),), inputs=(PoissonInput("x", 3, "10*Hz"),),
                       projections=(proj(source="a", target="x", weights="1*mV"),)),
           r"unknown target population 'x'", "projections.p.target")


def test_unknown_neuron_model():
    e = raises(lambda: net(populations=(pop(model="lifx"),)), r"unknown neuron model 'lifx'",
               "populations.a.model")
    assert "lif" in e.fix and "neuron_models" in e.fix


def test_unknown_synapse_model():
    e = raises(lambda: net(populations=(pop(),), projections=(proj(model="nope"),)),
               r"unknown synapse model 'nope'", "projections.p.model")
    assert "delta_voltage" in e.fix


def test_unknown_monitor_population_and_variable():
    raises(lambda: net(populations=(pop(),), monitors=(SpikeMonitor("zz"),)),
           r"unknown population 'zz'", "monitors[0].population")
    raises(lambda: net(populations=(pop(),), monitors=(SpikeMonitor("a"), StateMonitor("a", ("u",)))),
           r"no variable\(s\) \['u'\]", "monitors[1].variables")
    raises(lambda: net(populations=(pop(),), monitors=(StateMonitor("a", ("v",), indices=(3,)),)),
           r"indices must be < 3", "monitors[0].indices")
    raises(lambda: net(populations=(pop(),), inputs=(PoissonInput("x", 3, "1*Hz"),),
                       monitors=(StateMonitor("x", ("rates",)),)),
           r"state monitors record populations", "monitors[0].population")


def test_current_input_errors():
    values = ArrayValue(np.ones((2, 3)), "nA")
    raises(lambda: net(populations=(pop(),), inputs=(CurrentInput("c", "zz", "I", values, "1*ms"),)),
           r"unknown target population 'zz'", "inputs.c.target")
    raises(lambda: net(populations=(pop(),), inputs=(CurrentInput("c", "a", "v", values, "1*ms"),)),
           r"'v' is not a parameter", "inputs.c.variable")
    raises(lambda: net(populations=(pop(),),
                       inputs=(CurrentInput("c", "a", "I", ArrayValue(np.ones((2, 3)), "mV"), "1*ms"),)),
           r"values unit 'mV' does not match 'I'", "inputs.c.values")
    raises(lambda: net(populations=(pop(),),
                       inputs=(CurrentInput("c", "a", "I", ArrayValue(np.ones((2, 4)), "nA"), "1*ms"),)),
           r"values have 4 columns, target has 3", "inputs.c.values")


# ---------------------------------------------------------------------------
# error paths: units (Brian2's unit checker)


def test_unit_mismatch_in_equations():
    raises(lambda: net(populations=(pop(model=decay_model(equations="dv/dt = -v : volt")),)),
           r"unit mismatch in equation for dv/dt '-v'", "populations.a.model.equations")


def test_errors_in_named_neuron_models_name_the_model():
    raises(lambda: net(neuron_models={"m": decay_model(equations="dv/dt = -v : volt")},
                       populations=(pop(model="m"),)),
           r"unit mismatch in equation for dv/dt", "neuron_models.m.equations")
    raises(lambda: net(neuron_models={"m": decay_model(threshold="v > 1*second")}, populations=(pop(model="m"),)),
           r"unit mismatch in threshold", "neuron_models.m.threshold")
    raises(lambda: net(neuron_models={"m": decay_model(reset="v = 0*mV")}, populations=(pop(model="m"),)),
           r"a reset needs a threshold", "neuron_models.m.reset")
    raises(lambda: net(neuron_models={"m": decay_model(equations="dv/dt = -v/tau : volt\nbad line")},
                       populations=(pop(model="m"),)),
           r"equations do not parse \(line 2: 'bad line'\)", "neuron_models.m.equations")


def test_unit_mismatch_in_named_synapse_model_equations():
    bad = SynapseModel(equations="dx/dt = -x : 1\nw : volt", on_pre="v_post += w")
    raises(lambda: net(populations=(pop(),), synapse_models={"s": bad},
                       projections=(proj(model="s", weights="1*mV"),)),
           r"unit mismatch in equation for dx/dt", "synapse_models.s.equations")


def test_unit_mismatch_in_threshold():
    raises(lambda: net(populations=(pop(model=decay_model(threshold="v > 1*second")),)),
           r"unit mismatch in threshold 'v > 1\*second'", "populations.a.model.threshold")


def test_unit_mismatch_in_reset():
    raises(lambda: net(populations=(pop(model=decay_model(threshold="v > 1*mV", reset="v = 1*ms")),)),
           r"unit mismatch in reset 'v = 1\*ms'", "populations.a.model.reset")


def test_unit_mismatch_in_on_pre():
    bad = SynapseModel(equations="w : siemens", on_pre="v_post += w")
    raises(lambda: net(populations=(pop(),), projections=(proj(model=bad),)),
           r"unit mismatch in on_pre 'v_post \+= w'", "projections.p.model.on_pre")


def test_refractory_must_be_a_time():
    raises(lambda: net(populations=(pop(model=decay_model(threshold="v > 1*mV", refractory="2*mV")),)),
           r"refractory period '2\*mV' is not a time", "populations.a.model.refractory")


def test_unit_mismatch_in_initial_value():
    raises(lambda: net(populations=(pop(model=decay_model(), initial={"v": "3*ms"}),)),
           r"unit mismatch in initial value '3\*ms'", "populations.a.initial.v")
    raises(lambda: net(populations=(pop(model=decay_model(), initial={"v": ArrayValue([1, 2, 3], "ms")}),)),
           r"array unit 'ms' does not match the unit of 'v'", "populations.a.initial.v")


def test_initial_value_of_unknown_variable():
    raises(lambda: net(populations=(pop(model=decay_model(), initial={"u": "0*mV"}),)),
           r"'u' is not a variable of the model", "populations.a.initial.u")


def test_unit_mismatch_in_weights():
    raises(lambda: net(populations=(pop(),), projections=(proj(weights="1*nS"),)),
           r"unit mismatch .*'1\*nS'", "projections.p.weights")
    raises(lambda: net(populations=(pop(),), projections=(proj(weights=ArrayValue(np.ones(9), "nS")),)),
           r"array unit 'nS' does not match the unit of 'w'", "projections.p.weights")


def test_unit_mismatch_in_delay_and_rates():
    raises(lambda: net(populations=(pop(),), projections=(proj(weights="1*mV", delay="1*mV"),)),
           r"unit mismatch in delay", "projections.p.delay")
    raises(lambda: net(populations=(pop(),),
                       projections=(proj(weights="1*mV", delay=ArrayValue(np.ones(9), "mV")),)),
           r"delay unit 'mV' is not a time", "projections.p.delay")
    raises(lambda: net(populations=(pop(),), inputs=(PoissonInput("x", 3, "10*mV"),)),
           r"unit mismatch in rate", "inputs.x.rates")
    raises(lambda: net(populations=(pop(),), inputs=(PoissonInput("x", 3, ArrayValue([1, 2, 3], "ms")),)),
           r"rates unit 'ms' is not a rate", "inputs.x.rates")


def test_unknown_unit_suggests_the_right_one():
    raises(lambda: net(populations=(pop(parameters={"tau_m": "20*MS"}),)),
           r"unknown unit 'MS' in '20\*MS' \(did you mean 'ms'\?\)", "populations.a.parameters.tau_m")
    raises(lambda: net(namespace={"x": "1*mv"}, populations=(pop(),)), r"did you mean 'mV'", "namespace.x")


def test_dt_and_duration_must_be_positive_times():
    raises(lambda: net(dt="-0.1*ms"), r"dt must be a positive time", "dt")
    raises(lambda: net(duration="1*mV"), r"duration must be a positive time", "duration")


# ---------------------------------------------------------------------------
# error paths: names and syntax


def test_undefined_identifier_in_equations():
    raises(lambda: net(populations=(pop(model=decay_model(equations="dv/dt = -v/taux : volt")),)),
           r"undefined name\(s\) \['taux'\]", "populations.a.model.equations")


def test_undefined_identifier_in_threshold_and_on_pre():
    raises(lambda: net(populations=(pop(model=decay_model(threshold="v > v_thx")),)),
           r"threshold uses undefined name\(s\) \['v_thx'\]", "populations.a.model.threshold")
    bad = SynapseModel(equations="w : volt", on_pre="u_post += w")
    raises(lambda: net(populations=(pop(),), projections=(proj(model=bad),)),
           r"on_pre uses undefined name\(s\) \['u_post'\]", "projections.p.model.on_pre")


@pytest.mark.parametrize("bad_line", ["this is not an equation", "dw/dt = (( : 1", "x = 2 +* : 1"])
def test_equation_syntax_error_names_the_line(bad_line):
    eqs = f"dv/dt = -v/tau : volt\n{bad_line}\ndu/dt = -u/tau : 1"
    e = raises(lambda: net(populations=(pop(model=decay_model(equations=eqs)),)),
               r"equations do not parse", "populations.a.model.equations")
    assert f"line 2: '{bad_line}'" in e.message


def test_invalid_names():
    raises(lambda: pop(name="2a"), r"population name '2a' is not a valid identifier", "name")
    raises(lambda: pop(name="class"), r"not a valid identifier", "name")
    raises(lambda: net(name="my net"), r"network name 'my net'", "name")
    raises(lambda: proj(weight_var="w-x"), r"weight variable name", "weight_var")


def test_weight_var_missing_in_model():
    raises(lambda: net(populations=(pop(),), projections=(proj(weights="1*mV", weight_var="g"),)),
           r"no variable 'g' to hold the weights", "projections.p.weight_var")


def test_synapse_model_that_does_nothing():
    raises(lambda: net(populations=(pop(),), projections=(proj(model=SynapseModel("w : volt")),)),
           r"does nothing", "projections.p.model")


# ---------------------------------------------------------------------------
# error paths: sizes and shapes


@pytest.mark.parametrize("size, match", [(-1, "must be positive, got -1"), (0, "must be positive, got 0"),
                                         (2.5, "expected an integer"), (True, "expected an integer")])
def test_bad_sizes(size, match):
    raises(lambda: pop(size=size), match, "size")
    raises(lambda: PoissonInput("x", size, "1*Hz"), match, "size")


def test_shape_size_mismatch():
    raises(lambda: pop(size=3, shape=(1, 2, 2)), r"shape \(1, 2, 2\) has 4 neurons but size is 3", "shape")
    raises(lambda: pop(size=4, shape=(1, 0, 4)), r"must be positive", "shape")
    raises(lambda: PoissonInput("x", 5, "1*Hz", shape=(1, 2, 2)), r"does not match size 5", "shape")
    raises(lambda: PoissonInput("x", 5, ArrayValue(np.ones(4), "Hz")), r"rates has shape \(4,\)", "rates")


def test_weight_array_shape_mismatch():
    raises(lambda: net(populations=(pop(),), projections=(proj(weights=ArrayValue(np.ones(8), "mV")),)),
           r"array has shape \(8,\), expected \(9,\) \(one per synapse\)", "projections.p.weights")
    raises(lambda: net(populations=(pop(), pop("b", 3)),
                       projections=(proj(target="b", connect=OneToOne(), weights=ArrayValue(np.ones(9), "mV")),)),
           r"expected \(3,\)", "projections.p.weights")
    raises(lambda: net(populations=(pop(),), projections=(proj(weights="1*mV", delay=ArrayValue(np.ones(2), "ms")),)),
           r"delay array has shape \(2,\), expected \(9,\)", "projections.p.delay")


def test_initial_array_shape_mismatch():
    raises(lambda: net(populations=(pop(model=decay_model(), initial={"v": ArrayValue([1, 2], "mV")}),)),
           r"array has shape \(2,\), expected \(3,\) \(one per neuron\)", "populations.a.initial.v")


def test_conv2d_target_size_mismatch():
    e = raises(lambda: net(populations=(pop("a", 16, shape=(1, 4, 4)), pop("b", 9)),
                           projections=(proj("a", "b", connect=Conv2D(KERNEL)),)),
               r"the convolution gives \(2, 2, 2\) = 8 neurons but target 'b' has 9", "projections.p.connect")
    assert "size 8" in e.fix
    # the matching size is accepted
    spec = net(populations=(pop("a", 16, shape=(1, 4, 4)), pop("b", 8)),
               projections=(proj("a", "b", connect=Conv2D(KERNEL)),))
    assert spec.projection("p").connect.kernel.data.dtype == np.float32


def test_conv2d_source_needs_a_shape_and_no_weights():
    raises(lambda: net(populations=(pop("a", 16), pop("b", 8)),
                       projections=(proj("a", "b", connect=Conv2D(KERNEL)),)),
           r"needs a shape \(C, H, W\)", "projections.p.connect.kernel")
    raises(lambda: proj(connect=Conv2D(KERNEL), weights="1*mV"), r"takes its weights from the kernel", "weights")
    raises(lambda: Conv2D(ArrayValue(np.ones((3, 3)))), r"kernel must be a 4-D array", "connect.kernel")
    raises(lambda: Conv2D(KERNEL, stride=0), r"must be positive", "connect.stride")


def test_pool2d_target_size_mismatch():
    raises(lambda: net(populations=(pop("a", 16, shape=(1, 4, 4)), pop("b", 3)),
                       projections=(proj("a", "b", connect=Pool2D(2), weights="1*mV"),)),
           r"pooling gives \(1, 2, 2\) = 4 neurons but target 'b' has 3", "projections.p.connect")


def test_one_to_one_size_mismatch():
    raises(lambda: net(populations=(pop(), pop("b", 4)),
                       projections=(proj(target="b", connect=OneToOne(), weights="1*mV"),)),
           r"one_to_one needs equal sizes, got 3 -> 4", "projections.p.connect")


def test_explicit_and_spike_times_errors():
    raises(lambda: Explicit(ArrayValue([0, 1]), ArrayValue([0])), r"i has 2 entries but j has 1", "connect.j")
    raises(lambda: Explicit(ArrayValue([0.5]), ArrayValue([0])), r"i must be a 1-D integer array", "connect.i")
    raises(lambda: net(populations=(pop(),),
                       projections=(proj(connect=Explicit(ArrayValue([0, 5]), ArrayValue([0, 1])), weights="1*mV"),)),
           r"\b5\b", "projections.p.connect.i")
    raises(lambda: SpikeTimesInput("s", 2, ArrayValue([0, 2]), ArrayValue([1.0, 2.0], "ms")),
           r"indices must be integers in \[0, 2\)", "indices")
    raises(lambda: SpikeTimesInput("s", 2, ArrayValue([0, 1]), ArrayValue([1.0], "ms")),
           r"must be 1-D of equal length", "times")
    raises(lambda: SpikeTimesInput("s", 2, ArrayValue([0]), ArrayValue([-1.0], "ms")),
           r"non-negative", "times")


def test_duplicate_names():
    raises(lambda: net(populations=(pop(), pop())), r"population 'a' is defined twice", "populations.a")
    raises(lambda: net(populations=(pop(),), projections=(proj(weights="1*mV"), proj(weights="2*mV"))),
           r"projection 'p' is defined twice", "projections.p")
    raises(lambda: net(populations=(pop(),), inputs=(PoissonInput("a", 3, "1*Hz"),)),
           r"\['a'\] name both a population and an input", "inputs.a")
    raises(lambda: net(inputs=(PoissonInput("x", 3, "1*Hz"), PoissonInput("x", 3, "2*Hz"))),
           r"input 'x' is defined twice", "inputs.x")


@pytest.mark.parametrize("p", [1.5, -0.1, "0.5", True, float("nan")])
def test_connection_probability_outside_unit_interval(p):
    raises(lambda: RandomP(p), r"connection probability must be a number in \[0, 1\]", "connect.p")


@pytest.mark.parametrize("p", [0, 0.0, 0.25, 1])
def test_connection_probability_inside_unit_interval(p):
    assert RandomP(p).p == float(p)
    assert isinstance(RandomP(p).p, float)


def test_seed_must_be_non_negative_integer():
    raises(lambda: net(seed=-1), r"seed must be a non-negative integer", "seed")
    raises(lambda: net(seed=1.5), r"seed must be a non-negative integer", "seed")


# ---------------------------------------------------------------------------
# frozenness, equality, hashing


def test_spec_is_frozen():
    spec = full_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.populations[0].size = 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.neuron_models["dec"].threshold = "v > 2*mV"
    assert isinstance(spec.populations, tuple) and isinstance(spec.projections, tuple)
    assert isinstance(spec.monitors, tuple)


@pytest.mark.parametrize("get", [lambda s: s.namespace, lambda s: s.neuron_models,
                                 lambda s: s.synapse_models, lambda s: s.populations[0].initial,
                                 lambda s: s.populations[2].parameters,
                                 lambda s: s.neuron_models["dec"].parameters])
def test_mappings_are_read_only(get):
    mapping = get(full_spec())
    before = dict(mapping)
    for mutate in (lambda: mapping.__setitem__("x", "1*mV"), lambda: mapping.update(x="1*mV"),
                   lambda: mapping.pop(next(iter(mapping))), mapping.clear, mapping.popitem,
                   lambda: mapping.setdefault("x", "1"), lambda: mapping.__delitem__(next(iter(mapping)))):
        with pytest.raises(TypeError, match="read-only"):
            mutate()
    assert dict(mapping) == before


def test_spec_copies_the_mappings_it_is_given():
    params = {"tau": "10*ms"}
    model = NeuronModel("dv/dt = -v/tau : volt", parameters=params)
    params["tau"] = "1*ms"
    assert model.parameters["tau"] == "10*ms"


def test_array_value_is_read_only_copy():
    src = np.array([1.0, 2.0, 3.0])
    a = ArrayValue(src, "mV")
    src[0] = 99.0
    assert a.data[0] == 1.0
    with pytest.raises(ValueError):
        a.data[0] = 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.unit = "V"


def test_array_value_equality_and_hash():
    a = ArrayValue(np.array([1.0, 2.0]), "mV")
    b = ArrayValue([1.0, 2.0], "mV")
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1 and {a: 1}[b] == 1
    assert a != ArrayValue([1.0, 2.0], "volt")                       # unit
    assert a != ArrayValue(np.array([1.0, 2.0], np.float32), "mV")   # dtype
    assert a != ArrayValue([1.0, 2.5], "mV")                         # values
    assert a != ArrayValue([[1.0, 2.0]], "mV")                       # shape
    assert a != [1.0, 2.0]
    nan = ArrayValue([np.nan, 1.0])
    assert nan == ArrayValue([np.nan, 1.0]) and hash(nan) == hash(ArrayValue([np.nan, 1.0]))
    assert ArrayValue([True, False]).data.dtype.kind == "i"
    with pytest.raises(SpecError, match="numeric"):
        ArrayValue(np.array(["a", 1], dtype=object))
    with pytest.raises(SpecError, match="unknown unit 'mVolt'"):
        ArrayValue([1.0], "mVolt")


def test_specs_with_equal_content_are_equal_and_hash_equal():
    a, b = full_spec(), full_spec()
    assert a is not b and a == b
    assert hash(a) == hash(b)
    assert hash(a.populations[0]) == hash(b.populations[0])
    c = a.with_population("c", parameters={"tau_m": "11*ms"})
    assert c != a


def test_values_are_normalised_to_strings():
    from brian2 import mV
    p = pop(parameters={"v_th": -50 * mV, "tau_m": " 20*ms "})
    assert p.parameters["v_th"] == "-0.05*volt"
    assert p.parameters["tau_m"] == "20*ms"
    assert NeuronModel("dv/dt = -k*v/(10*ms) : volt", parameters={"k": 2}).parameters["k"] == "2.0"
    spec = net(populations=(p,))
    assert abs(float(spec.dt_seconds()) - 1e-4) < 1e-15
    q = Population("q", 2, "lif", initial={"v": np.array([-0.07, -0.06]) * 1000 * mV})
    assert isinstance(q.initial["v"], ArrayValue) and q.initial["v"].shape == (2,)


# ---------------------------------------------------------------------------
# derived specs and pickling


def test_with_projection_returns_a_new_validated_spec():
    spec = full_spec()
    new_w = ArrayValue(np.array([4.0, 5.0, 6.0]), "mV")
    new = spec.with_projection("bc", weights=new_w)
    assert new is not spec and isinstance(new, NetworkSpec)
    assert new.projection("bc").weights == new_w
    assert spec.projection("bc").weights == ArrayValue(np.array([1.0, 2.0, 3.0]), "mV")  # unchanged
    assert new.projection("conv") is spec.projection("conv")
    assert new == spec.with_projection("bc", weights=new_w)
    # the new spec is validated like any other
    raises(lambda: spec.with_projection("bc", weights=ArrayValue(np.ones(4), "mV")),
           r"array has shape \(4,\), expected \(3,\)", "projections.bc.weights")
    raises(lambda: spec.with_projection("bc", target="zz"), r"unknown target population 'zz'",
           "projections.bc.target")
    with pytest.raises(SpecError, match="no projection named 'nope'"):
        spec.with_projection("nope", weights="1*mV")


def test_with_population_and_replace_validate():
    spec = full_spec()
    raises(lambda: spec.with_population("c", model="nope"), r"unknown neuron model 'nope'", "populations.c.model")
    raises(lambda: spec.replace(dt="0*ms"), r"dt must be a positive time", "dt")
    assert spec.replace(duration="2*second").duration_seconds() == 2.0


def test_lookups():
    spec = full_spec()
    assert spec.population("b").size == 8
    assert spec.node("x").size == 4
    assert spec.population_names == ["a", "b", "c"]
    assert spec.neuron_model(spec.population("c")).threshold == "v > v_th"
    assert spec.synapse_model(spec.projection("xc")).on_pre == "v_post += w"
    with pytest.raises(SpecError, match="no population named 'x'"):
        spec.population("x")


def test_pickle_round_trip():
    spec = full_spec()
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and back is not spec
    assert hash(back) == hash(spec)
    assert back.projection("conv").connect.kernel.data.dtype == np.float32
    assert not back.populations[0].initial["v"].data.flags.writeable
    with pytest.raises(TypeError, match="read-only"):
        back.namespace["w0"] = "1*mV"


def test_pickle_round_trip_of_library_spec():
    from pathlib import Path
    from biosnn.spec import load_spec
    spec = load_spec(Path(__file__).parents[1] / "network_specs" / "cuba.yaml")
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_cpp_keyword_as_variable_name_is_refused():
    from biosnn.spec import NetworkSpec, NeuronModel, Population
    with pytest.raises(SpecError, match="C\\+\\+ keywords") as info:
        NetworkSpec("n", populations=[Population("p", 1, NeuronModel("new : 1"))])
    assert info.value.field.endswith("equations")


# ---------------------------------------------------------------------------
# Explicit synapse lists given in any order (a silent weight mix-up before: synapses were numbered
# sorted by (i, j) in every backend while per-synapse arrays kept the given order)

def _unsorted_explicit_spec():
    fire_once = NeuronModel("v : 1", threshold="t > 0*ms and t < 1.5*ms")
    return NetworkSpec(
        name="unsorted", dt="1*ms", duration="10*ms",
        populations=(Population("src", 3, fire_once), Population("tgt", 3, NeuronModel("v : 1"))),
        projections=(Projection(
            "p", "src", "tgt", SynapseModel("w : 1\nd2 : 1", on_pre="v_post += w + d2"),
            connect=Explicit(i=np.array([2, 0, 1, 0]), j=np.array([2, 0, 1, 1])),
            weights=ArrayValue(np.array([30.0, 10.0, 20.0, 40.0])),
            delay=ArrayValue(np.array([3.0, 1.0, 2.0, 4.0]), "ms"),
            initial={"d2": ArrayValue(np.array([300.0, 100.0, 200.0, 400.0]))}),),
        monitors=(StateMonitor("tgt", ("v",)),))


def test_explicit_lists_are_stored_sorted_with_their_per_synapse_values():
    proj = _unsorted_explicit_spec().projections[0]
    np.testing.assert_array_equal(proj.connect.i.data, [0, 0, 1, 2])
    np.testing.assert_array_equal(proj.connect.j.data, [0, 1, 1, 2])
    np.testing.assert_array_equal(proj.weights.data, [10.0, 40.0, 20.0, 30.0])
    np.testing.assert_array_equal(proj.delay.data, [1.0, 4.0, 2.0, 3.0])
    np.testing.assert_array_equal(proj.initial["d2"].data, [100.0, 400.0, 200.0, 300.0])


def test_explicit_lists_in_any_order_deliver_each_weight_to_its_own_target(tmp_path):
    from biosnn.backends import get_backend
    from biosnn import load
    spec = _unsorted_explicit_spec()
    spec.save(tmp_path / "unsorted.yaml")
    assert load(tmp_path / "unsorted.yaml") == spec
    v = get_backend("runtime").build(spec).run().states["tgt"]["v"].values[-1]
    # target 0: (0->0) 10 + 100; target 1: (0->1) 40 + 400 and (1->1) 20 + 200; target 2: (2->2) 30 + 300
    np.testing.assert_allclose(v, [110.0, 660.0, 330.0])
