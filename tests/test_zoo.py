"""The model zoo (biosnn.testing.zoo): every model traces exactly and converts with every coding that
allows its layers; Brian2 equals the reference on the new idioms (issue 21).

Fast: random weights, small widths, a few random images.  The trained-model table is
``benchmarks/zoo.py`` (BENCHMARKS.md)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import biosnn  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402
from biosnn.frontends.torch_graph import forward_numpy, trace  # noqa: E402
from biosnn.testing.zoo import CHAINS, INPUT_SIZE, STC_CHAINS, ZOO, build, codings_for, evaluate  # noqa: E402

SMALL = {"lenet5": 3, "mnist_example": 2, "vgg11": 2, "vgg16": 2, "resnet20": 2, "resnet18": 2,
         "densenet": 2, "mobilenet": 2}


def _images(name, n, seed):
    s = INPUT_SIZE[name]
    return torch.rand((n, 1, s, s), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_traces_exactly(name):
    model = build(name, SMALL[name])
    x = _images(name, 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # the MNIST example's log_softmax is dropped
        graph = trace(model, x.shape[1:])
    out = torch.from_numpy(forward_numpy(graph, x)[graph.output]).reshape(3, -1)
    ref = model.double()(x.double())
    if name == "mnist_example":
        out = torch.log_softmax(out, 1)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name, coding", [(n, c) for n in ZOO for c in codings_for(n)])
def test_zoo_model_converts(name, coding):
    """Smoke level: the conversion and the coding's exact reference run; random-weight networks predict
    (nearly) the same class as their prepared ANN on random images."""
    model = build(name, SMALL[name])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(model, coding, _images(name, 12, 2), _images(name, 4, 3), (1,) + (INPUT_SIZE[name],) * 2,
                       **({"T": 32} if coding == "rate" else {}))
        if coding == "rate":   # and the QCFS-prepared model (Bu et al. 2022), thresholds set from the data
            qcfs = evaluate(model, coding, _images(name, 12, 2), _images(name, 4, 3),
                            (1,) + (INPUT_SIZE[name],) * 2, T=32, levels=8)
            assert qcfs["snn"].v_init == 0.5 and qcfs["agreement"] >= 0.75
    assert res["agreement"] >= 0.75
    assert res["spikes"] > 0


def test_zoo_codings_table():
    assert set(STC_CHAINS) <= set(CHAINS) and "resnet20" not in CHAINS
    assert codings_for("mobilenet") == ("rate", "tsc", "tpc", "tdsnn", "stc")
    assert codings_for("vgg11") == ("rate", "tsc", "tpc", "tdsnn")       # max pooling: no stc
    assert codings_for("densenet") == ("rate", "tsc")


@pytest.mark.parametrize("coding", ["tpc", "tdsnn"])
def test_chain_codings_refuse_residual_zoo_models(coding):
    with pytest.raises(ConversionError, match="residual"):
        evaluate(build("resnet20", 2), coding, _images("resnet20", 8, 2), _images("resnet20", 2, 3), (1, 32, 32))


@pytest.mark.parametrize("name, coding, params", [("densenet", "tsc", {"T": 8}),
                                                  ("mnist_example", "rate", {"T": 16})])
def test_brian2_equals_reference_on_concatenation_and_folded_normalisation(name, coding, params):
    """torch.cat (partial layers + add) and (x - mean) / std folded into the first conv, through Brian2."""
    model = build(name, 2)
    x = _images(name, 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(model, coding, _images(name, 16, 5), x, (1,) + (INPUT_SIZE[name],) * 2, **params)
    snn = res["snn"]
    run = snn.run(x.numpy(), progress=False)
    if coding == "rate":
        from biosnn.codings.rate.reference import simulate_rate
        ref = simulate_rate(snn.graph, x.numpy(), snn.T, thresholds=snn.thresholds, input_mode=snn.input_mode,
                            seed=snn.seed, readout=snn.readout).scores
    else:
        ref = snn.reference(x.numpy()).scores
    np.testing.assert_allclose(run.scores, ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(run.predictions, res["snn_predictions"])


def test_mnist_example_prepare_keeps_the_idioms():
    """prepare() for rate returns the model; convert folds its normalisation and drops its log_softmax."""
    model = build("mnist_example", 2)
    with pytest.warns(UserWarning, match="log_softmax"):
        snn = biosnn.convert(biosnn.prepare(model, "rate"), "rate", calibration=_images("mnist_example", 8, 1),
                             input_shape=(1, 28, 28), T=8)
    assert [layer.op for layer in snn.graph] == ["input", "conv2d", "conv2d", "maxpool2d", "linear", "linear"]
