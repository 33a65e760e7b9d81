"""STC on a trained ANN: weights rescaled from calibration data so spike trains cover each layer's range."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import biosnn  # noqa: E402
from biosnn.codings.stc.torch_model import STCNet, theta_table  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402


@pytest.fixture(scope="module")
def big_activations(digits):
    """A random CNN whose activations (up to ~10) exceed what a default STEB encodes (sum(theta) ~ 2.5)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 10)).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(4.0)
    x, _, xt, _ = digits
    with torch.no_grad():
        ann = model(torch.from_numpy(xt[:150])).argmax(1).numpy()
    return model, x[:200], xt[:150], ann


def test_convert_rescales_a_plain_ann_from_the_calibration_data(big_activations):
    model, x, xt, ann = big_activations
    fixed = biosnn.convert(model, "stc", calibration=x, input_shape=(1, 8, 8), theta0=1.0)
    scaled = biosnn.convert(model, "stc", calibration=x, input_shape=(1, 8, 8))
    assert max(fixed.saturation.values()) > 0.01                # the defaults saturate
    assert max(scaled.saturation.values()) <= 0.002             # the 99.9th percentile fits the train
    agree_fixed = np.mean(fixed.reference(xt)["predictions"] == ann)
    agree_scaled = np.mean(scaled.reference(xt)["predictions"] == ann)
    assert agree_scaled >= 0.9 and agree_scaled > agree_fixed
    top = float(np.sum(theta_table(8, 1.0, 2.0)))
    # the graph computes the ANN's logits with every hidden layer divided by lambda / sum(theta)
    from biosnn.frontends.torch_graph import forward_numpy
    acts = forward_numpy(scaled.graph, x)
    for name in ("0", "4"):
        pos = acts[name][acts[name] > 0]
        assert np.percentile(pos, 99.9) == pytest.approx(top, rel=1e-9)
    with torch.no_grad():
        logits = copy.deepcopy(model).double()(torch.from_numpy(xt).double()).numpy()
    np.testing.assert_allclose(forward_numpy(scaled.graph, xt)[scaled.graph.output], logits, rtol=1e-9, atol=1e-9)


def test_prepare_with_calibration_starts_fine_tuning_at_the_ann(big_activations):
    model, x, xt, ann = big_activations
    plain = biosnn.prepare(model, "stc")
    scaled = biosnn.prepare(model, "stc", calibration=x)
    assert isinstance(scaled, STCNet)
    with torch.no_grad():
        agree_plain = np.mean(plain(torch.from_numpy(xt)).argmax(1).numpy() == ann)
        agree_scaled = np.mean(scaled(torch.from_numpy(xt)).argmax(1).numpy() == ann)
    assert agree_scaled >= 0.9 and agree_scaled > agree_plain
    # the prepared model converts to an SNN equal to it (STCNet path: its own settings, no rescaling)
    snn = biosnn.convert(scaled, "stc", calibration=x[:20], input_shape=(1, 8, 8))
    with torch.no_grad():
        out = scaled.double()(torch.from_numpy(xt[:20]).double()).numpy()
    np.testing.assert_allclose(snn.reference(xt[:20])["scores"], out, rtol=1e-9, atol=1e-9)


def test_calibration_at_prepare_is_refused_where_it_means_nothing(big_activations):
    model, x, _, _ = big_activations
    with pytest.raises(ConversionError, match="prepare\\(..., 'rate'\\) takes no calibration data"):
        biosnn.prepare(model, "rate", calibration=x)
    with pytest.raises(ConversionError, match="already an STCNet"):
        biosnn.prepare(biosnn.prepare(model, "stc"), "stc", calibration=x)
