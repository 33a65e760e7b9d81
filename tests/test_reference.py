"""Reference IF simulation, calibration/normalisation and operation counts."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
nn = torch.nn
F = torch.nn.functional

from biosnn import metrics  # noqa: E402
from biosnn.conversion.calibrate import (activation_scales, calibrate, normalize,  # noqa: E402
                                      spike_norm_thresholds)
from biosnn.frontends.torch_graph import forward_numpy, linear_map, snn_roles, trace  # noqa: E402
from biosnn.codings.rate.reference import poisson_trains, simulate_rate  # noqa: E402
from biosnn.datasets import load_digits, train_classifier  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _linear(w, b=None) -> nn.Linear:
    w = torch.as_tensor(w, dtype=torch.float32)
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
    return lin


# --------------------------------------------------------------------------- hand-computed dynamics


def test_single_if_neuron_by_hand():
    # I = 0.5 * 1 + 0.25 * 0.8 = 0.7 per step; v: .7, 1.4>=1 spike (.4), 1.1 spike (.1), .8,
    # 1.5 spike (.5), 1.2 spike (.2), .9, 1.6 spike (.6), 1.3 spike (.3)
    graph = trace(nn.Sequential(_linear([[0.5, 0.25]])), (2,))
    x = np.array([[1.0, 0.8]])
    res = simulate_rate(graph, x, T=9, record_trains=True)
    assert res.counts["0"].tolist() == [[6]]
    assert res.spike_times("0").tolist() == [2, 3, 5, 6, 8, 9]
    np.testing.assert_allclose(res.scores, [[6 / 9]])
    # threshold 2: v reaches 2.1 at t=3, 2.2 at t=6, 2.3 at t=9
    res2 = simulate_rate(graph, x, T=9, thresholds={"0": 2.0}, record_trains=True)
    assert res2.spike_times("0").tolist() == [3, 6, 9]
    # potential readout: no threshold, score = v(T) / T = 0.7
    res3 = simulate_rate(graph, x, T=9, readout="potential")
    np.testing.assert_allclose(res3.scores, [[0.7]])
    assert res3.counts["0"].tolist() == [[0]]


def test_spike_travels_through_all_layers_in_one_step():
    # two layers with weight 1: input 1 -> layer0 spikes every step -> layer1 spikes every step
    graph = trace(nn.Sequential(_linear([[1.0]]), nn.ReLU(), _linear([[1.0]])), (1,))
    res = simulate_rate(graph, np.ones((1, 1)), T=3, record_trains=True)
    assert res.spike_times("0").tolist() == [1, 2, 3]
    assert res.spike_times("2").tolist() == [1, 2, 3]


def test_maxpool_gate_by_hand():
    # input (1, 1, 2) -> MaxPool2d((1, 2)); hand-made spike trains, 7 steps
    graph = trace(nn.Sequential(nn.MaxPool2d((1, 2))), (1, 1, 2))
    assert snn_roles(graph)["0"] == "maxpool"
    a = [1, 1, 0, 0, 1, 0, 0]
    b = [1, 0, 1, 1, 0, 1, 1]
    trains = np.stack([a, b], axis=-1).reshape(1, 7, 1, 1, 2).astype(float)
    res = simulate_rate(graph, trains, T=7, input_mode="spikes", record_trains=True)
    # running counts C_a = 1,2,2,2,3,3,3 and C_b = 1,1,2,3,3,4,5; M = max = 1,2,2,3,3,4,5;
    # the gate spikes when M increases: 1,1,0,1,0,1,1 (b's spike at t=3 only ties a: blocked,
    # a's spike at t=5 only ties b: blocked)
    assert res.trains["0"][0, :, 0].astype(int).tolist() == [1, 1, 0, 1, 0, 1, 1]
    assert res.counts["input"].tolist() == [[3, 5]]
    assert res.counts["0"].tolist() == [[5]]


def test_maxpool_rate_equals_max_rate_for_regular_trains():
    # conv 1x1 (weight 1) turns analog pixels into regular IF trains; the gate's count is exactly
    # the largest count in its window (padding excluded)
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    graph = trace(nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2, padding=1)), (1, 3, 3))
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 1, 3, 3))
    T = 200
    res = simulate_rate(graph, x, T=T)
    counts = res.counts["0"].reshape(4, 1, 3, 3)
    expected = F.max_pool2d(torch.from_numpy(counts.astype(float)), 2, padding=1).numpy().reshape(4, -1)
    np.testing.assert_array_equal(res.counts["2"], expected)


# --------------------------------------------------------------------------- convergence


def test_rates_approach_clipped_relu_activations():
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(0, 0.6, (20, 6)), rng.normal(0.2, 0.3, 20)
    w2, b2 = rng.normal(0, 0.3, (5, 20)), rng.normal(0.2, 0.2, 5)
    graph = trace(nn.Sequential(_linear(w1, b1), nn.ReLU(), _linear(w2, b2)), (6,))
    graph = graph.replace_layers({"0": graph["0"].replace(weight=w1, bias=b1),
                                  "2": graph["2"].replace(weight=w2, bias=b2)})
    x = rng.uniform(0, 1, (8, 6))
    a1 = np.clip(x @ w1.T + b1, 0, 1)                  # the "clipped ANN"
    a2 = np.clip(a1 @ w2.T + b2, 0, 1)
    assert (x @ w1.T + b1 > 1).any() and (x @ w1.T + b1 < 0).any()   # both clips are exercised
    errors = []
    for T in (10, 100, 1000):
        res = simulate_rate(graph, x, T=T)
        r1, r2 = res.counts["0"] / T, res.counts["2"] / T
        assert np.abs(r1 - a1).max() <= 1 / T + 1e-9      # exact bound for the first layer
        errors.append(np.abs(r2 - a2).mean())
    assert errors[2] < 0.01 and errors[2] < errors[0] / 5


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.b1 = Block(4, 4, 1)
        self.b2 = Block(4, 8, 2)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.b2(self.b1(F.relu(self.stem(x))))
        return self.fc(x.view(x.size(0), -1))


def _resnet():
    torch.manual_seed(0)
    model = ResNet()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_normalize_divides_every_activation_by_its_scale(method):
    graph = trace(_resnet(), (1, 8, 8))
    x = np.random.default_rng(0).uniform(0, 1, (32, 1, 8, 8))
    scales = activation_scales(graph, x, method=method, percentile=99.0)
    roles = snn_roles(graph)
    norm = normalize(graph, scales)
    before, after = forward_numpy(graph, x), forward_numpy(norm, x)
    for name, role in roles.items():
        if role != "virtual":
            np.testing.assert_allclose(after[name], before[name] / scales[name], rtol=1e-9, atol=1e-12)
    if method == "max":
        for name in ("stem", "b1.conv1", "add", "add_1"):
            assert after[name].max() == pytest.approx(1.0)
    assert norm.input_scale == pytest.approx(scales["input"])
    assert scales["b1.conv2"] == scales["add"]                        # branch shares the add's scale
    adds = [norm[n] for n in ("add", "add_1")]
    np.testing.assert_allclose(adds[0].weight, [1.0, scales["stem"] / scales["add"]])   # identity path
    np.testing.assert_allclose(adds[1].weight, [1.0, 1.0])                               # conv shortcut
    assert graph["add"].weight.tolist() == [1.0, 1.0]                                    # unchanged


def test_residual_snn_tracks_the_normalised_ann():
    graph = trace(_resnet(), (1, 8, 8))
    x = np.random.default_rng(0).uniform(0, 1, (16, 1, 8, 8))
    norm = normalize(graph, activation_scales(graph, x, method="max"))
    ann = forward_numpy(norm, x)
    T = 400
    res = simulate_rate(norm, x, T=T, readout="potential")
    for name in ("stem", "add", "add_1"):
        assert np.abs(res.counts[name] / T - ann[name].reshape(16, -1)).mean() < 0.02, name
    assert np.abs(res.scores - ann[norm.output]).max() < 0.1
    assert (res.predictions == ann[norm.output].argmax(1)).mean() >= 0.9


# --------------------------------------------------------------------------- Poisson input


def test_poisson_trains_are_seeded_and_batch_independent():
    x = np.linspace(0, 1, 12).reshape(3, 1, 2, 2)
    t1 = poisson_trains(x, 50, seed=7)
    t2 = np.concatenate([poisson_trains(x[:1], 50, seed=7), poisson_trains(x[1:], 50, seed=7, offset=1)])
    np.testing.assert_array_equal(t1, t2)
    assert t1.shape == (3, 50, 1, 2, 2) and t1.dtype == bool
    assert not np.array_equal(t1, poisson_trains(x, 50, seed=8))
    long = poisson_trains(x, 4000, seed=0)
    np.testing.assert_allclose(long.mean(axis=1), x, atol=0.03)
    assert not long[0, :, 0, 0, 0].any() and long[2, :, 0, 1, 1].all()   # p = 0 and p = 1

    graph = trace(nn.Sequential(nn.Flatten(), _linear(np.full((3, 4), 0.3)), nn.ReLU()), (1, 2, 2))
    r1 = simulate_rate(graph, x, T=50, input_mode="poisson", seed=7, batch_size=1)
    r2 = simulate_rate(graph, x, T=50, input_mode="poisson", seed=7, batch_size=3)
    for name in r1.counts:
        np.testing.assert_array_equal(r1.counts[name], r2.counts[name])
    np.testing.assert_array_equal(r1.counts["input"], t1.sum(axis=1).reshape(3, -1))


def test_recorded_trains_match_counts():
    graph = trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                nn.Linear(8, 3)), (1, 6, 6))
    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 6, 6))
    res = simulate_rate(graph, x, T=20, input_mode="poisson", seed=1, record_trains=True)
    assert set(res.trains) == set(res.counts) == {"input", "0", "2", "4"}
    for name, tr in res.trains.items():
        assert tr.shape == (3, 20, res.counts[name].shape[1])
        np.testing.assert_array_equal(tr.sum(axis=1), res.counts[name])
    assert res.scores.shape == (3, 3) and res.predictions.shape == (3,)


# --------------------------------------------------------------------------- digits end to end


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


def _digits_lenet(pool, digits):
    (xtr, ytr), _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), pool(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), pool(2), nn.Flatten(),
                          nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return train_classifier(model, xtr, ytr, epochs=20, lr=3e-3, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def avg_lenet(digits):
    return _digits_lenet(nn.AvgPool2d, digits)


@pytest.mark.parametrize("pool, readout", [("avg", "spikes"), ("max", "potential")])
def test_converted_lenet_agrees_with_ann_on_digits(pool, readout, digits, avg_lenet):
    (xtr, _), (xte, yte) = digits
    model = avg_lenet if pool == "avg" else _digits_lenet(nn.MaxPool2d, digits)
    graph = trace(model, (1, 8, 8))
    ann_pred = forward_numpy(graph, xte)[graph.output].argmax(1)
    assert (ann_pred == yte).mean() > 0.85
    snn_graph, thresholds = calibrate(graph, xtr[:500], normalization="percentile", percentile=99.9)
    assert set(thresholds.values()) == {1.0}
    res = simulate_rate(snn_graph, xte, T=64, thresholds=thresholds, readout=readout)
    assert (res.predictions == ann_pred).mean() >= 0.95


def test_spike_norm_on_digits(digits, avg_lenet):
    (xtr, _), (xte, _) = digits
    graph = trace(avg_lenet, (1, 8, 8))
    calib = xtr[:128]
    snn_graph, thresholds = calibrate(graph, calib, normalization="spike-norm", T=64)
    roles = snn_roles(graph)
    assert set(thresholds) == {n for n, r in roles.items() if r == "if"}
    # the first layer sees the analog input directly: theta = max_t,n,j (W x + b)
    first = graph.consumers("input")[0]
    expected = float(linear_map(graph[first])(torch.from_numpy(calib.astype(np.float64))).max())
    assert thresholds[first] == pytest.approx(expected)
    # average pools of spikes receive at most 1
    assert all(0 < thresholds[n] <= 1 + 1e-12 for n in thresholds if graph[n].op == "avgpool2d")
    ann_pred = forward_numpy(graph, xte)[graph.output].argmax(1)
    res = simulate_rate(snn_graph, xte, T=64, thresholds=thresholds, readout="potential")
    assert (res.predictions == ann_pred).mean() >= 0.85


def test_spike_norm_keeps_bias_free_weights_and_matches_sengupta():
    rng = np.random.default_rng(3)
    w1, w2 = rng.uniform(-0.2, 0.8, (6, 4)), rng.uniform(-0.3, 0.7, (3, 6))
    graph = trace(nn.Sequential(_linear(w1), nn.ReLU(), _linear(w2)), (4,))
    x = rng.uniform(0, 1, (10, 4))
    thr, scales = spike_norm_thresholds(graph, x, T=30, return_scales=True)
    w1_64 = graph["0"].weight
    assert thr["0"] == pytest.approx((x @ w1_64.T).max())
    # layer 2: max over steps of W2 s1(t) with s1 from layer 1 at threshold thr["0"]
    res = simulate_rate(graph, x, T=30, thresholds={"0": thr["0"]}, record_trains=True)
    s1 = res.trains["0"].astype(float)                       # (N, T, 6)
    assert thr["2"] == pytest.approx((s1 @ graph["2"].weight.T).max())
    assert scales["2"] == pytest.approx(thr["0"] * thr["2"])
    out = normalize(graph, scales, thr)
    for name in ("0", "2"):
        np.testing.assert_allclose(out[name].weight, graph[name].weight, rtol=1e-12)
    # Poisson input is deterministic with a seed
    a = spike_norm_thresholds(graph, x, T=30, input_mode="poisson", seed=5)
    b = spike_norm_thresholds(graph, x, T=30, input_mode="poisson", seed=5, batch_size=3)
    assert a == pytest.approx(b)


# --------------------------------------------------------------------------- argument errors


def test_bad_arguments_raise_conversion_errors():
    graph = trace(nn.Sequential(_linear([[0.5, 0.25]])), (2,))
    x = np.ones((1, 2))
    with pytest.raises(ConversionError, match="T must be a positive"):
        simulate_rate(graph, x, T=0)
    with pytest.raises(ConversionError, match="input_mode must be one of"):
        simulate_rate(graph, x, T=5, input_mode="rate")
    with pytest.raises(ConversionError, match="readout must be one of"):
        simulate_rate(graph, x, T=5, readout="softmax")
    with pytest.raises(ConversionError, match=r"thresholds given for unknown layers \['fc'\]"):
        simulate_rate(graph, x, T=5, thresholds={"fc": 1.0})
    with pytest.raises(ConversionError, match="threshold of layer '0' must be a positive"):
        simulate_rate(graph, x, T=5, thresholds={"0": 0.0})
    with pytest.raises(ConversionError, match=r"needs trains of shape \(N, T=5\)"):
        simulate_rate(graph, x, T=5, input_mode="spikes")
    with pytest.raises(ConversionError, match="does not match the graph's input shape"):
        simulate_rate(graph, np.ones((1, 3)), T=5)
    with pytest.raises(ConversionError, match="normalization must be one of"):
        calibrate(graph, x, normalization="layer")
    with pytest.raises(ConversionError, match="needs the number of time steps"):
        calibrate(graph, x, normalization="spike-norm")
    with pytest.raises(ConversionError, match="calibration data is empty"):
        activation_scales(graph, np.ones((0, 2)))
    with pytest.raises(ConversionError, match="percentile must be in"):
        activation_scales(graph, x, percentile=0)
    with pytest.raises(ConversionError, match="no scale given for layer '0'"):
        normalize(graph, {"input": 1.0})


# --------------------------------------------------------------------------- metrics


def _brute_force_fanout(layer):
    """Connections from a dense Jacobian of the layer's map with all-ones weights."""
    ones = layer.replace(weight=np.ones_like(layer.weight) if layer.weight is not None else None,
                         bias=np.zeros_like(layer.bias) if layer.bias is not None else None)
    jac = linear_map(ones)(torch.eye(layer.in_size, dtype=torch.float64)).numpy()   # (in, out)
    return (jac != 0).sum(axis=1)


def test_fan_out_is_exact_at_padded_borders():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2, padding=1), nn.Conv2d(3, 4, 2, dilation=2, groups=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4, 2))
    graph = trace(model, (2, 7, 7))
    for name in ("0", "2", "3"):
        layer = graph[name]
        np.testing.assert_array_equal(metrics.connection_counts(layer)[0], _brute_force_fanout(layer))
    fo = metrics.fan_out(graph)
    assert fo["input"][0] == 3            # corner pixel (0,0): one output position x 3 channels
    assert fo["input"].reshape(2, 7, 7)[0, 1, 1].item() == 3 * 4   # 2x2 output positions
    assert (fo["6"] == 0).all() and (fo["3"] == 2).all()
    macs = metrics.ann_macs(graph)
    assert macs["6"] == 4 * 2 and macs["input"] == 0
    assert macs["0"] == int(metrics.connection_counts(graph["0"])[0].sum())
    assert metrics.ann_ops(graph) == sum(macs.values())
    assert metrics.analog_input_macs(graph) == macs["0"]
    # no padding: conv MACs = output elements x kernel volume
    plain = trace(nn.Sequential(nn.Conv2d(2, 3, 3)), (2, 7, 7))
    assert metrics.ann_macs(plain)["0"] == 3 * 5 * 5 * 2 * 3 * 3


def test_synops_and_energy():
    graph = trace(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                nn.Linear(8, 3)), (1, 4, 4))
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 4, 4))
    res = simulate_rate(graph, x, T=16, input_mode="poisson", seed=0)
    ops = metrics.synops(res.counts, graph)
    fo = metrics.fan_out(graph)
    assert (fo["2"] == 3).all() and (fo["0"] == 1).all()      # into the linear layer / one window each
    expected = sum(res.counts[n] @ fo[n] for n in res.counts)
    np.testing.assert_array_equal(ops, expected)
    assert ops.shape == (5,) and ops.dtype == np.int64
    e = metrics.energy_estimate(100.0, 50.0)
    assert e["snn_J"] == pytest.approx(100 * 0.9e-12) and e["ann_J"] == pytest.approx(50 * 4.6e-12)
    assert e["ratio"] == pytest.approx(50 * 4.6 / (100 * 0.9))
    e2 = metrics.energy_estimate(ops, 1000, e_ac=1e-12, e_mac=2e-12, snn_macs=10)
    np.testing.assert_allclose(e2["snn_J"], ops * 1e-12 + 10 * 2e-12)
    assert metrics.energy_estimate(0, 10)["ratio"] == np.inf
