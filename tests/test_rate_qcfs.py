"""Clipped ReLUs and QCFS-prepared models in rate coding (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import biosnn  # noqa: E402
from biosnn.codings.rate.qcfs import QCFS, qcfs_modules  # noqa: E402
from biosnn.codings.rate.reference import simulate_rate  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402
from biosnn.frontends.torch_graph import forward_numpy, trace  # noqa: E402


def _x(n, shape, scale=1.0, seed=0):
    return torch.rand((n,) + shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("act, ceiling", [(nn.ReLU6(), 6.0), (nn.Hardtanh(0.0, 1.0), 1.0), ("relu6", 6.0),
                                          ("clamp", 1.5), ("hardtanh", 0.5)])
def test_relu_with_a_ceiling_is_traced_exactly(act, ceiling):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)
            self.act = act if isinstance(act, nn.Module) else nn.Identity()

        def forward(self, x):
            h = self.a(x) * 4.0
            if act == "relu6":
                h = F.relu6(h)
            elif act == "clamp":
                h = h.clamp(0, 1.5)
            elif act == "hardtanh":
                h = F.hardtanh(F.relu(h), 0.0, 0.5)
            else:
                h = self.act(h)
            return self.b(h)

    torch.manual_seed(0)
    model = Net().eval()
    graph = trace(model, (4,))
    assert graph["a"].relu and graph["a"].ceiling == ceiling
    x = torch.randn(50, 4) * 3
    pre = (model.a(x) * 4).detach()
    assert (pre > ceiling).any() and (pre < 0).any()          # both ends are exercised
    np.testing.assert_allclose(forward_numpy(graph, x)[graph.output], model.double()(x.double()).detach().numpy(),
                               rtol=1e-10, atol=1e-10)


def test_clipped_and_unclipped_readers_of_one_value_are_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            h = F.relu(self.a(x))
            return self.b(h.clamp(0, 1)) + self.c(h)

    with pytest.raises(ConversionError, match="which other layers already read unclipped|both with and without the ceiling"):
        trace(Net(), (4,))


def _clipped_cnn():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU6(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 10)).eval()


def test_the_ceiling_is_the_rate_scale_and_other_codings_refuse_it():
    x = _x(40, (1, 8, 8), scale=20.0)
    snn = biosnn.convert(_clipped_cnn(), "rate", calibration=x, input_shape=(1, 8, 8), T=16)
    assert snn.graph["0"].ceiling == 1.0                        # 6 / lambda with lambda = 6
    for coding in ("tpc", "tdsnn", "stc"):
        with pytest.raises(ConversionError, match=f"the {coding} coding does not implement the ceiling"):
            biosnn.convert(_clipped_cnn(), coding, calibration=x, input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="spike-norm .* would not clip them"):
        biosnn.convert(_clipped_cnn(), "rate", calibration=x, input_shape=(1, 8, 8), T=16, normalization="spike-norm")


def test_qcfs_activation_values_and_gradient():
    q = QCFS(levels=4, threshold=2.0)
    x = torch.tensor([-1.0, 0.0, 0.24, 0.26, 1.0, 1.76, 2.5, 9.0], requires_grad=True)
    y = q(x)
    # lambda * clip(floor(x * 4 / 2 + 1/2) / 4, 0, 1): steps of 0.5 rounded half up
    np.testing.assert_allclose(y.detach().numpy(), [0, 0, 0, 0.5, 1.0, 2.0, 2.0, 2.0])
    y.sum().backward()
    assert q.threshold.grad is not None and float(q.threshold.grad) != 0
    with pytest.raises(ConversionError, match="levels .* positive integer"):
        QCFS(levels=0)


class _Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 10)
        self.act = nn.ReLU()

    def forward(self, x):
        h = self.act(self.c1(x))
        h = F.relu(h + self.c2(h))
        return self.fc(h.mean((2, 3)).relu() * 1.0)


def test_prepare_replaces_every_relu_and_convert_uses_the_thresholds():
    model = _Res().eval()
    q = biosnn.prepare(model, "rate", levels=4)
    assert len(qcfs_modules(q)) == 2 and not qcfs_modules(model)     # the ReLU after the mean stays
    x = _x(64, (1, 8, 8))
    with pytest.raises(ConversionError, match="levels=8 differs from the levels \\[4\\]"):
        biosnn.convert(q, "rate", calibration=x, input_shape=(1, 8, 8), levels=8)
    snn = biosnn.convert(q, "rate", calibration=x, input_shape=(1, 8, 8), T=8)
    lams = [float(m.threshold) for m in qcfs_modules(q)]
    assert all(np.isfinite(lams))                                # set from the calibration data
    assert snn.v_init == 0.5
    assert sorted(layer.ceiling for layer in snn.graph if layer.ceiling is not None) == [1.0, 1.0]


def test_a_clipped_relu_after_pooling_is_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.ReLU6(), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(ConversionError, match="is a pooling with a clipped ReLU .* pooling neurons do not clip"):
        biosnn.convert(model, "rate", calibration=_x(8, (1, 8, 8)), input_shape=(1, 8, 8), T=4)


def test_first_layer_spike_counts_equal_the_qcfs_values_at_T_equal_L():
    """Constant input current, v(0) = theta / 2, reset by subtraction: T = L steps give exactly
    floor(L z / lambda + 1/2) spikes (clipped to [0, L]), the QCFS activation."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    L = 8
    q = biosnn.prepare(model, "rate", levels=L)
    x = _x(30, (1, 4, 4), seed=4)
    snn = biosnn.convert(q, "rate", calibration=x, input_shape=(1, 4, 4), T=L)
    ref = simulate_rate(snn.graph, x.numpy(), L, thresholds=snn.thresholds, readout=snn.readout, v_init=snn.v_init)
    hidden = [n for n in snn.graph.names if snn.graph[n].ceiling is not None][0]
    qmod = qcfs_modules(q)[0]
    with torch.no_grad():
        values = qmod(q.get_submodule("1")(x.flatten(1))).numpy()
    np.testing.assert_array_equal(ref.counts[hidden], np.rint(values / float(qmod.threshold) * L))


def test_brian2_equals_reference_with_half_threshold_start():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(27, 10)).eval()
    q = biosnn.prepare(model, "rate", levels=4)
    x = _x(40, (1, 8, 8), seed=6)
    snn = biosnn.convert(q, "rate", calibration=x, input_shape=(1, 8, 8), T=8)
    res = snn.run(x[:3].numpy(), progress=False)
    ref = simulate_rate(snn.graph, x[:3].numpy(), 8, thresholds=snn.thresholds, readout=snn.readout,
                        v_init=snn.v_init, seed=snn.seed)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=1e-9)
    for name, counts in ref.counts.items():
        if name in res.layer_spikes:
            np.testing.assert_array_equal(res.layer_spikes[name], counts.reshape(3, -1).sum(1), err_msg=name)
