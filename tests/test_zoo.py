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


#: codings whose reference computes the prepared ANN exactly (TPC: the quantised model; STC: the STCNet;
#: TDSNN: the G-network, up to spike steps clipped at T_il - 1)
EXACT = ("tpc", "stc", "tdsnn")


def _prepared_scores(res, x):
    with torch.no_grad():
        return res["prepared"].double()(torch.as_tensor(x, dtype=torch.float64)).reshape(len(x), -1).numpy()


@pytest.mark.parametrize("name, coding", [(n, c) for n in ZOO for c in codings_for(n)])
def test_zoo_model_converts(name, coding):
    """Every model converts with every coding that allows its layers; where the coding is exact the reference
    equals the prepared ANN (scores and classes), else random-weight networks predict (nearly) the same class
    as their prepared ANN on random images."""
    model = build(name, SMALL[name])
    x = _images(name, 4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(model, coding, _images(name, 12, 2), x, (1,) + (INPUT_SIZE[name],) * 2,
                       **({"T": 32} if coding == "rate" else {}))
        if coding == "rate":   # and the QCFS-prepared model (Bu et al. 2022), thresholds set from the data
            qcfs = evaluate(model, coding, _images(name, 12, 2), x,
                            (1,) + (INPUT_SIZE[name],) * 2, T=32, levels=8)
            assert qcfs["snn"].v_init == 0.5 and qcfs["agreement"] >= 0.75
    if coding in EXACT:
        ref = res["snn"].reference(x.numpy())
        scores = ref["scores"] if isinstance(ref, dict) else ref.scores
        ann = _prepared_scores(res, x)
        if name == "mnist_example":   # its forward ends with log_softmax, which the conversion drops
            scores = torch.log_softmax(torch.as_tensor(scores), 1).numpy()
        if coding == "tdsnn":    # the reference clips spike steps at T_il - 1 (none on these inputs)
            assert all(int(s.sum()) == 0 for s in ref.saturated.values())
        np.testing.assert_allclose(scores, ann, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(res["snn_predictions"], ann.argmax(1))
    else:
        assert res["agreement"] >= 0.75
    assert res["spikes"] > 0


def test_zoo_codings_table():
    assert set(STC_CHAINS) <= set(CHAINS) and "resnet20" not in CHAINS
    assert codings_for("mobilenet") == ("rate", "tsc", "tpc", "tdsnn", "stc")
    assert codings_for("vgg11") == ("rate", "tsc", "tpc", "tdsnn")       # max pooling: no stc
    assert codings_for("densenet") == codings_for("resnet20") == ("rate", "tsc", "tpc")


@pytest.mark.parametrize("name, coding", [(n, c) for n in ZOO for c in ("tdsnn", "stc")
                                          if c not in codings_for(n) and n not in ("resnet20", "densenet")])
def test_every_coding_codings_for_leaves_out_is_refused(name, coding):
    """codings_for lists exactly the codings that convert a zoo model: each one it leaves out raises a
    ConversionError naming what it cannot realise (benchmarks/zoo.py turns it into a "refused" row; ResNet-20
    and the DenseNet: the next test)."""
    what = "MaxPool2d" if name in CHAINS else "iadd"
    s = INPUT_SIZE[name]
    with warnings.catch_warnings(), pytest.raises(ConversionError, match=what):
        warnings.simplefilter("ignore")
        evaluate(build(name, 2), coding, _images(name, 8, 2), _images(name, 2, 3), (1, s, s))


@pytest.mark.parametrize("name", ["resnet20", "densenet"])
@pytest.mark.parametrize("coding, what", [("tdsnn", "TDSNN converts chains"), ("stc", "stc coding")])
def test_chain_codings_refuse_residual_and_concatenating_zoo_models(name, coding, what):
    """prepare refuses them as convert does, naming the addition or concatenation."""
    kind = "add" if name == "resnet20" else "cat"
    with pytest.raises(ConversionError, match=rf"(?=.*'i?{kind}')(?=.*{what})"):
        biosnn.prepare(build(name, 2), coding)
    with pytest.raises(ConversionError, match=rf"(?=.*{kind}.*)(?=.*{what})"):
        evaluate(build(name, 2), coding, _images(name, 8, 2), _images(name, 2, 3), (1, 32, 32))


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "densenet"])
def test_tpc_brian2_equals_reference_on_residual_and_concatenating_models(name):
    """TPC on ResNet-20 (identity and 1x1 shortcuts), ResNet-18 (max pool, shortcuts) and a DenseNet
    (torch.cat): the shorter branch's synapses delay it by whole windows; Brian2's scores, spikes and
    synaptic operations per layer equal the reference's, which equals the prepared (quantised) ANN."""
    model = build(name, 2)
    x = _images(name, 2, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(model, "tpc", _images(name, 16, 5), x, (1,) + (INPUT_SIZE[name],) * 2)
    snn = res["snn"]
    assert any(si.delay > 0 for s in snn.plan.stages for si in s.inputs)
    ref = snn.reference(x.numpy())
    np.testing.assert_allclose(ref.scores, _prepared_scores(res, x), rtol=0, atol=1e-9)
    run = snn.run(x.numpy(), progress=False)
    np.testing.assert_array_equal(run.scores, ref.scores)
    assert set(run.layer_spikes) == set(ref.layer_spikes)
    for k in ref.layer_spikes:
        np.testing.assert_array_equal(run.layer_spikes[k], ref.layer_spikes[k])
        np.testing.assert_array_equal(run.layer_synops[k], ref.layer_synops[k])


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


@pytest.mark.parametrize("name", list(ZOO))
def test_bursts_make_the_rate_reference_compute_the_qcfs_model_on_every_zoo_model(name):
    """Issue 21's rate target on every zoo model: signed neurons with ``match_levels`` and bursts of up to ``L``
    spikes (T = L = 8) compute the QCFS-prepared ANN itself; the potential readout's scores are its logits
    times one constant (the output layer's scale), so the classes agree on every image."""
    model = build(name, SMALL[name])
    x = _images(name, 4, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(model, "rate", _images(name, 12, 2), x, (1,) + (INPUT_SIZE[name],) * 2, T=8, levels=8,
                       signed=True, match_levels=True, burst=8)
    scores, ann = res["snn"].reference(x.numpy()).scores, _prepared_scores(res, x)
    # mnist_example's forward ends with log_softmax (dropped by the conversion): logits up to a shift per image
    scores, ann = scores - scores.mean(1, keepdims=True), ann - ann.mean(1, keepdims=True)
    scale = float((scores * ann).sum() / (ann * ann).sum())
    np.testing.assert_allclose(scores, scale * ann, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(res["snn_predictions"], ann.argmax(1))
