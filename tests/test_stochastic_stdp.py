"""Stochastic STDP on binary synapses: the rule's switching probabilities, kernel learning, the pipeline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from biosnn.backends.registry import get_backend
from biosnn.errors import SpecError
from biosnn.learning.stochastic_stdp import (expected_pairing_switch, extract_patches, pairing_spec,
                                            train_kernels)
from biosnn.models.library import SYNAPSE_MODELS
from biosnn.models.plasticity_stochastic import stochastic_binary_stdp, switching_probability

ROOT = Path(__file__).resolve().parents[1]

# a rule with large probabilities so that few trials resolve the curve
RULE = {"gamma_pot": "0.6", "gamma_dep": "0.5", "gamma_anti": "0.4", "tau_pot": "5*ms", "t_pot": "8*ms",
        "tau_dep": "4*ms", "t_dep": "10*ms", "tau_anti": "6*ms", "t_anti": "15*ms"}
# potentiation window, dead zone [8, 15) ms, anti-Hebbian region, Hebbian depression, beyond it, no pre spike
DELTA_T_MS = np.array([-14.0, -10.0, -5.0, -1.0, 0.0, 2.0, 5.0, 7.5, 8.0, 10.0, 14.5, 16.0, 20.0, 40.0, np.inf])
TRIALS = 1500


def test_switching_probability_curve():
    d = np.array([-0.011, -0.005, 0.0, 0.004, 0.008, 0.012, 0.015, 0.021, np.inf])
    p_pot, p_dep = switching_probability(d, **RULE)
    np.testing.assert_allclose(p_pot, [0, 0, 0.6, 0.6 * np.exp(-0.8), 0, 0, 0, 0, 0])
    np.testing.assert_allclose(p_dep, [0, 0.5 * np.exp(-1.25), 0, 0, 0, 0, 0, 0.4 * (1 - np.exp(-1.0)), 0.4])
    # the dead zone [t_pot, t_anti) never switches
    dz = np.linspace(0.008, 0.01499, 50)
    assert not np.any(np.concatenate(switching_probability(dz, **RULE)))


def test_rule_parameters_are_checked():
    assert SYNAPSE_MODELS["stochastic_binary_stdp"]().parameters["gamma_pot"] == "0.1"
    with pytest.raises(SpecError, match="gamma_pot is a switching probability"):
        stochastic_binary_stdp(gamma_pot="1.5")
    with pytest.raises(SpecError, match="t_pot <= t_anti"):
        stochastic_binary_stdp(t_pot="20*ms", t_anti="10*ms")
    with pytest.raises(SpecError, match="tau_dep must be a time"):
        stochastic_binary_stdp(tau_dep="5*mV")
    with pytest.raises(SpecError, match="unknown stochastic STDP parameter"):
        stochastic_binary_stdp(A_plus="0.1")
    with pytest.raises(SpecError, match="w_min=1 must be below w_max=0"):
        stochastic_binary_stdp(w_min="1", w_max="0")


def _measured_switching(backend_name, **options):
    spec = pairing_spec(DELTA_T_MS, TRIALS, rule=RULE, seed=3)
    rec = get_backend(backend_name, **options).build(spec).run(progress=False, final_state=["pairs.w"])
    w = rec.final["pairs.w"].values.reshape(DELTA_T_MS.size, 2, TRIALS)
    return (w[:, 0] == 1).mean(axis=1), (w[:, 1] == 0).mean(axis=1)


def _assert_binomial(measured, expected):
    """Each frequency within 4.5 binomial standard deviations; exactly 0 where the probability is 0."""
    sd = np.sqrt(expected * (1 - expected) / TRIALS)
    zero = expected == 0
    assert np.all(measured[zero] == 0), (DELTA_T_MS[zero], measured[zero])
    assert np.all(np.abs(measured - expected)[~zero] <= 4.5 * sd[~zero]), np.c_[DELTA_T_MS, measured, expected]


def _check_rule(backend_name, **options):
    up, down = _measured_switching(backend_name, **options)
    exp_up, exp_down = expected_pairing_switch(DELTA_T_MS, **RULE)
    _assert_binomial(up, exp_up)
    _assert_binomial(down, exp_down)
    dead = (DELTA_T_MS >= 8) & (DELTA_T_MS < 15)
    assert dead.sum() >= 2 and not up[dead].any() and not down[dead].any()


def test_switching_probability_matches_rule_runtime():
    _check_rule("runtime")


@pytest.mark.standalone
def test_switching_probability_matches_rule_cpp_standalone(build_cache):
    _check_rule("cpp_standalone", cache_dir=build_cache)


def _bars(n, size=5, seed=0):
    c = size // 2
    templates = np.zeros((4, size, size))
    templates[0, c, :] = 1
    templates[1, :, c] = 1
    templates[2] = np.eye(size)
    templates[3] = np.fliplr(np.eye(size))
    labels = np.random.default_rng(seed).integers(0, 4, n)
    return templates[labels].reshape(n, -1), templates.reshape(4, -1)


def test_kernels_converge_to_oriented_bars():
    patches, templates = _bars(600)
    run = train_kernels(patches, 8, seed=1)
    ones = run.kernels == 1.0
    # precision: which share of a kernel's w_max synapses lie on its best bar; recall: how much of the bar
    overlap = ones.astype(float) @ templates.T
    best = overlap.argmax(axis=1)
    precision = overlap.max(axis=1) / np.maximum(ones.sum(axis=1), 1)
    recall = overlap.max(axis=1) / templates.sum(axis=1)[best]
    start = (run.initial == 1.0).astype(float) @ templates.T
    start_precision = start.max(axis=1) / np.maximum((run.initial == 1.0).sum(axis=1), 1)
    assert start_precision.mean() < 0.45           # random start: not bars
    assert np.mean(precision >= 0.8) >= 0.75, np.c_[precision, recall]
    assert np.mean(recall >= 0.6) >= 0.75, np.c_[precision, recall]
    assert len(set(best[precision >= 0.8])) >= 3    # different kernels learn different orientations


def test_extract_patches_rejects_bad_input():
    with pytest.raises(SpecError, match="kernel_size must be between 1 and 8"):
        extract_patches(np.zeros((2, 8, 8)), 9, 10)
    with pytest.raises(SpecError, match="no patch has a mean intensity"):
        extract_patches(np.zeros((2, 8, 8)), 3, 10)
    p = extract_patches(np.ones((2, 2, 8, 8)), 3, 5)
    assert p.shape == (5, 18)


def test_train_stochastic_stdp_example_on_digits(tmp_path):
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "examples/train_stochastic_stdp.py", "--arch", "8C3-2P",
                           "--patches", "300", "--train-samples", "600", "--test-samples", "300",
                           "--T", "16", "--epochs", "15", "--check", "3"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    acc = float(out.split("readout accuracy")[1].split("%")[0])
    assert acc > 60.0, out  # chance is 10 %
    equal = float(out.split("test images: ")[1].split("%")[0])
    spikes = float(out.split("max difference ")[1].split(" spike")[0])
    assert equal >= 98.0 and spikes <= 1, out  # only threshold ties broken differently (one spike)
    assert "compression 32.0x" in out


def test_feature_reference_equals_simulate_rate_and_brian2():
    from biosnn.datasets import load_digits
    from biosnn.learning.restoc_network import ConvLayer, RestocFeatures, parse_architecture
    x, _ = load_digits("test")
    layers = parse_architecture("6C3-2P-128FC-10FC")
    assert layers == [ConvLayer(6, 3, 2)]
    kernels = [(np.random.default_rng(0).random((6, 9)) < 0.5).astype(float)]
    feats = RestocFeatures.build(kernels, layers, x[:100], T=16)
    fast = feats.reference(x[:120], batch_size=50)
    assert fast.shape == (120, 6 * 3 * 3) and fast.max() > 0
    np.testing.assert_array_equal(fast, feats.simulate_rate(x[:120]))
    from biosnn.learning.restoc_network import compare_features
    check = compare_features(feats.brian2(x[:3], batch_size=3), fast[:3], feats)
    # Brian2 sums inputs in another order: exact-threshold ties may spike one step apart
    assert check["equal_fraction"] >= 0.95 and check["max_spike_diff"] <= 1, check
    with pytest.raises(SpecError, match="cannot read '36X3'"):
        parse_architecture("36X3-2P")
