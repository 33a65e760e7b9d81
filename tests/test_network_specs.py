"""The network specs shipped in network_specs/: they load, round-trip and run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from biosnn.backends.registry import get_backend
from biosnn.spec import NetworkSpec, load_spec, save_spec
from biosnn.spec.expand import expand_projection

SPEC_DIR = Path(__file__).resolve().parents[1] / "network_specs"
SPEC_FILES = sorted(SPEC_DIR.glob("*.yaml"))


def test_the_shipped_specs_are_found():
    names = {p.name for p in SPEC_FILES}
    assert {"cuba.yaml", "diehl_cook_2015.yaml"} <= names


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_spec_file_loads_and_round_trips(path, tmp_path):
    spec = load_spec(path)
    assert isinstance(spec, NetworkSpec)
    assert spec.name == path.stem
    assert spec.description.strip(), "every shipped spec documents what it is"
    assert spec.populations and any(m for m in spec.monitors)
    back = load_spec(save_spec(spec, tmp_path / path.name))
    assert back == spec


@pytest.fixture(scope="module")
def runtime():
    return get_backend("runtime")


def test_cuba_runs_and_spikes(runtime):
    spec = load_spec(SPEC_DIR / "cuba.yaml")
    rec = runtime.build(spec).run(duration=0.01, progress=False)
    assert rec.duration == pytest.approx(0.01)
    exc, inh = rec.spikes["exc"], rec.spikes["inh"]
    assert exc.size == 3200 and inh.size == 800
    # v starts uniformly between Vr and Vt and drifts towards El > Vt: both populations fire
    assert len(exc) > 0 and len(inh) > 0
    assert exc.times.max() < 0.01
    v = rec.states["exc"]["v"]
    assert v.unit == "volt" and list(v.indices) == [0, 1, 2]
    assert v.values.max() <= -50e-3 + 1e-12 and v.values.min() >= -60e-3 - 5e-3


# ---------------------------------------------------------------------------
# Diehl & Cook 2015


@pytest.fixture(scope="module")
def dc_spec():
    return load_spec(SPEC_DIR / "diehl_cook_2015.yaml")


def test_diehl_cook_layout(dc_spec):
    spec = dc_spec
    x = spec.node("X")
    assert x.size == 784 and x.shape == (1, 28, 28) and x.rates == "stim(t, i)"
    assert spec.population("Ae").size == 400 and spec.population("Ae").model == "adaptive_lif_dc"
    assert spec.population("Ai").size == 400 and spec.population("Ai").model == "inhibitory_lif_dc"
    stim = spec.timed_arrays[0]
    assert stim.name == "stim" and stim.values.shape == (10, 784) and stim.values.unit == "Hz"
    assert stim.values.shape[0] * float(spec.timed_arrays[0].dt.split("*")[0]) == 500  # 350 + 150 ms
    assert np.all(stim.values.data == 0)
    xeae, aeai, aiae = (spec.projection(n) for n in ("XeAe", "AeAi", "AiAe"))
    assert len(expand_projection(spec, xeae).i) == 784 * 400
    assert xeae.weights == "rand()*0.3" and xeae.delay == "rand()*10*ms"
    stdp = spec.synapse_model(xeae)
    assert "ge_post += w" in stdp.on_pre and "post1" in stdp.on_post and "post2" in stdp.on_post
    assert stdp.parameters["nu_ee_pre"] == "0.0001" and stdp.parameters["nu_ee_post"] == "0.01"
    assert stdp.parameters["tc_post_2_ee"] == "40*ms" and stdp.parameters["wmax_ee"] == "1.0"
    assert len(expand_projection(spec, aeai).i) == 400 and aeai.weights == "10.4"
    assert spec.synapse_model(aeai).on_pre == "ge_post += w"
    assert spec.synapse_model(aiae).on_pre == "gi_post += w" and "17.0" in aiae.weights
    assert {m.population for m in spec.monitors} == {"Ae", "Ai"}


def test_diehl_cook_is_silent_without_stimulus(dc_spec, runtime):
    rec = runtime.build(dc_spec).run(duration=0.02, progress=False)
    assert len(rec.spikes["Ae"]) == 0 and len(rec.spikes["Ai"]) == 0


def test_diehl_cook_stimulus_gives_excitatory_spikes(dc_spec, runtime):
    stim = np.zeros((10, 784))
    stim[:7] = 255 / 4  # a white image at the paper's rate, pixel/4 Hz; rest rows stay 0
    rec = runtime.build(dc_spec).run(duration=0.03, overrides={"stim": stim}, progress=False)
    ae, ai = rec.spikes["Ae"], rec.spikes["Ai"]
    assert len(ae) > 0
    assert ae.size == 400 and ai.size == 400
    # Ai is driven only by Ae (one-to-one), so it cannot fire before Ae
    assert len(ai) > 0 and ai.times.min() >= ae.times.min()
    # the neurons start 40 mV below rest: no spike in the first few ms
    assert ae.times.min() > 0.005
