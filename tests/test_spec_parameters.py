"""Setting model parameters by name (``--param OWNER.PARAMETER=VALUE``)."""

from __future__ import annotations

import pytest

from biosnn.errors import SpecError
from biosnn.spec import load_spec
from biosnn.spec.parameters import parse_assignment, set_parameters


def test_set_projection_and_population_parameters():
    spec = load_spec("network_specs/diehl_cook_2015.yaml")
    new = set_parameters(spec, ["XeAe.nu_ee_post=0.03", "Ae.theta_plus = 0.1*mV"])
    assert new.projection("XeAe").parameters["nu_ee_post"] == "0.03"
    assert new.node("Ae").parameters["theta_plus"] == "0.1*mV"
    assert spec.projection("XeAe").parameters.get("nu_ee_post") != "0.03"  # the original is unchanged
    assert set_parameters(spec, []) == spec
    assert parse_assignment("a.b=c=d") == ("a", "b", "c=d")


def test_wrong_settings_name_the_choices():
    spec = load_spec("network_specs/diehl_cook_2015.yaml")
    with pytest.raises(SpecError, match=r"'XeAe' has no parameter 'nu'.*nu_ee_post"):
        set_parameters(spec, ["XeAe.nu=1"])
    with pytest.raises(SpecError, match=r"no population or projection named 'X1'.*'Ae'"):
        set_parameters(spec, ["X1.nu=1"])
    with pytest.raises(SpecError, match=r"cannot read the parameter setting 'XeAe=1'"):
        set_parameters(spec, ["XeAe=1"])
    with pytest.raises(SpecError, match=r"theta_plus"):  # a wrong unit is caught by the spec's validation
        set_parameters(spec, ["Ae.theta_plus=5*ms"])
