"""Brian2 runs of converted networks equal their exact references: long runs, signed inputs, bigger networks."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import biosnn  # noqa: E402
from biosnn.codings.rate.reference import simulate_rate  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402

#: (coding, prepare/convert parameters); every window length is not a power of two
CODINGS = [("rate", {"T": 100}), ("tdsnn", {}), ("tsc", {}), ("tpc", {"bits": 9, "steps": 9}), ("stc", {"T": 9})]


def _mlp(seed=0, n_in=64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 12), nn.ReLU(), nn.Linear(12, 10)).eval()


def _convert(model, coding, params, calibration, input_shape):
    prepare_params = {k: v for k, v in params.items() if coding in ("tpc", "stc")}
    ann = model if coding in ("rate", "tsc") else biosnn.prepare(model, coding, **prepare_params)
    convert_params = params if coding in ("rate", "tpc") else {}
    return biosnn.convert(ann, coding, calibration=calibration, input_shape=input_shape, **convert_params)


def _reference(snn, x) -> tuple[np.ndarray, dict]:
    """The coding's exact reference on ``x``: scores and spike counts per layer and sample."""
    if snn.coding == "rate":
        ref = simulate_rate(snn.graph, x, snn.T, thresholds=snn.thresholds, readout=snn.readout,
                            input_mode=snn.input_mode, batch_size=len(x))
        return ref.scores, {name: c.sum(axis=1) for name, c in ref.counts.items()}
    ref = snn.reference(x)
    if isinstance(ref, dict):
        return np.asarray(ref["scores"]), ref["layer_spikes"]
    return np.asarray(ref.scores), getattr(ref, "layer_spikes", {})


def _reference_scores(snn, x) -> np.ndarray:
    return _reference(snn, x)[0]


# ---------------------------------------------------------------------------
# 1. long runs: the window clock ticks with the step it belongs to, however long the run


@pytest.mark.parametrize("coding, params", CODINGS, ids=[c for c, _ in CODINGS])
def test_one_run_past_64_s_equals_reference_on_cpp_standalone(coding, params, digits, build_cache):
    """One compiled run of more than 64 s of simulated time (Brian2's standalone clocks used to drift
    apart there: 0.4-2 % of the samples differed from the reference after 64 s, in every coding)."""
    x, _, _, _ = digits
    snn = _convert(_mlp(), coding, params, x[:200], (1, 8, 8))
    assert snn.window_steps & (snn.window_steps - 1) != 0
    n = -(-66_000 // snn.window_steps)  # windows of 66 s
    xs = x[np.arange(n) % len(x)]
    res = snn.run(xs, backend="cpp_standalone", batch_size=n, progress=False, cache_dir=build_cache)
    assert res.runs == 1
    np.testing.assert_allclose(res.scores, _reference_scores(snn, xs), rtol=0, atol=1e-9)


def test_standalone_network_templates_compare_clock_times_relative_to_dt():
    """Both standalone devices' network templates get the fix (brian2cuda's only where it is installed)."""
    from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject

    from biosnn.backends.brian2_templates import SAME_TIME_FIXES, patched_templater
    classes = [(CPPStandaloneCodeObject, "network.cpp")]
    try:
        from brian2cuda.codeobject import CUDAStandaloneCodeObject
        classes.append((CUDAStandaloneCodeObject, "network.cu"))
    except ImportError:
        pass
    for cls, name in classes:
        templater = patched_templater(cls.templater, SAME_TIME_FIXES)
        src = templater.env.loader.get_source(templater.env, name)[0]
        assert "fabs(s-t)<=Clock_epsilon)" not in src.replace(" : fabs(s-t)<=Clock_epsilon))", "")
        assert "fabs(s-t) < 1e-4*dynamic_cast<Clock*>(minclock)->dt[0]" in src
        assert templater.network is not None  # parses


def test_rate_run_of_an_hour_equals_reference_on_cpp_standalone(build_cache):
    """A tiny network over 36,010 windows of T = 100 steps of 1 ms: one run of more than an hour."""
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = rng.random((36_010, 3))
    snn = biosnn.convert(model, "rate", calibration=x[:100], input_shape=(3,), T=100)
    res = snn.run(x, backend="cpp_standalone", batch_size=len(x), progress=False, cache_dir=build_cache)
    assert res.runs == 1 and len(x) * snn.T * 1e-3 > 3600
    np.testing.assert_allclose(res.scores, _reference_scores(snn, x), rtol=0, atol=1e-9)


def test_rate_windows_an_hour_into_a_run_equal_reference_on_runtime():
    """Runtime mode, the last windows of a run whose clocks start an hour in (the network's time set ahead)."""
    from brian2 import second

    from biosnn.backends.base import apply_overrides
    from biosnn.backends.brian2_network import build_objects
    from biosnn.backends.brian2_runtime import brian2_prefs, runtime_device
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = rng.random((12, 3))
    snn = biosnn.convert(model, "rate", calibration=x, input_shape=(3,), T=100)
    skip = 36_007  # windows not simulated: the run starts at 3600.7 s
    table = np.zeros((skip + len(x), 3))
    table[skip:] = x / snn.graph.input_scale
    spec = apply_overrides(snn.spec_for(skip + len(x)), {"x_in": table})
    # the numpy target of the runtime backend (Brian2's default 'auto' compiled Cython here: 145 s in CI)
    with runtime_device(), brian2_prefs(codegen__target="numpy"):
        objs = build_objects(spec)
        objs.network.t_ = skip * snn.T * 1e-3
        objs.network.run((len(x) * snn.T + 1) * 1e-3 * second, namespace={})
        monitor = next(mon for sm, mon in objs.state_monitors if sm.variables == ("v_last",))
        v_last = np.asarray(monitor.v_last[:]).T
    assert len(v_last) == len(x) + 1  # the first row: the window before the run (not simulated)
    np.testing.assert_allclose(snn._scores_from_potential(v_last[1:]), _reference_scores(snn, x),
                               rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------
# 2. signed (normalised) inputs: kept where the coding takes them, refused where it cannot


def _normalised(x):
    return (x - x.mean()) / x.std()


@pytest.mark.parametrize("coding, params", [("rate", {"T": 20}), ("stc", {"T": 5})])
def test_normalised_inputs_keep_their_sign(coding, params, digits):
    """(x - mean) / std inputs: Brian2 equals the reference, which equals the ANN on the signed input
    (rate: the first layer receives W x every step; the Brian2 network used to drop negative values)."""
    x, _, xt, _ = digits
    xn, xtn = _normalised(x[:200]), _normalised(xt[:8])
    snn = _convert(_mlp(3), coding, params, xn, (1, 8, 8))
    res = snn.run(xtn, batch_size=8, progress=False)
    ref = _reference_scores(snn, xtn)
    np.testing.assert_allclose(res.scores, ref, rtol=0, atol=1e-9)
    clamped = snn.run(np.maximum(xtn, 0), batch_size=8, progress=False)
    assert np.abs(clamped.scores - res.scores).max() > 1e-3  # the negative values matter
    if coding == "rate":  # input events: every non-zero input value
        np.testing.assert_array_equal(res.input_events, np.count_nonzero(xtn.reshape(8, -1), axis=1))


@pytest.mark.parametrize("coding, params", [("tdsnn", {}), ("tsc", {}), ("tpc", {"bits": 5}),
                                            ("stc", {"first_layer": "spiking"}),
                                            ("rate", {"input_mode": "poisson"})])
def test_codings_without_signed_inputs_refuse_them(coding, params, digits):
    """Convert refuses negative calibration data and run negative inputs, instead of treating them as 0."""
    x, _, xt, _ = digits
    model = _mlp(4)
    ann = biosnn.prepare(model, coding, **params) if coding in ("tpc", "stc", "tdsnn") else model
    convert_params = {k: v for k, v in params.items() if coding in ("rate", "tpc")}
    with pytest.raises(ConversionError, match="calibration data has negative values.*>= 0"):
        biosnn.convert(ann, coding, calibration=_normalised(x[:100]), input_shape=(1, 8, 8), **convert_params)
    snn = biosnn.convert(ann, coding, calibration=x[:100], input_shape=(1, 8, 8), **convert_params)
    with pytest.raises(ConversionError, match="the input has negative values.*>= 0"):
        snn.run(_normalised(xt[:3]), progress=False)


# ---------------------------------------------------------------------------
# 4. internal errors


@pytest.mark.parametrize("head", ["AvgPool2d(1, 1)", "AdaptiveAvgPool2d((1, 1))"])
def test_tpc_identity_pooling_after_max_pool(head, digits):
    """A VGG head: max pool to 1x1, then an identity average pooling (each quantiser keeps its own scale)."""
    x, _, xt, _ = digits
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(), nn.MaxPool2d(4), eval(f"nn.{head}"), nn.Flatten(), nn.Linear(6, 10)).eval()
    qat = biosnn.prepare(model, "tpc", bits=5)
    from biosnn.codings.tpc import calibrate
    calibrate(qat, x[:100])
    pool_quant = [q for n, q in qat.quantizers() if q.after_pool]
    assert len(pool_quant) == 1
    pool_quant[0].scale.fill_(0.75 * float(pool_quant[0].scale))  # differs from the ReLU quantiser before it
    snn = biosnn.convert(qat, "tpc", calibration=x[:100], input_shape=(1, 8, 8))
    ref = snn.reference(xt[:20])
    with torch.no_grad():
        ann = qat.double().eval()(torch.as_tensor(xt[:20], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ref.scores, ann, rtol=0, atol=1e-9)
    res = snn.run(xt[:6], batch_size=6, progress=False)
    np.testing.assert_array_equal(res.scores, ref.scores[:6])


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.c1 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        return self.fc(torch.relu(self.c1(h) + h).flatten(1))


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.c0, self.c1 = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.c0(x))
        return self.fc(torch.cat([h, torch.relu(self.c1(h))], 1).flatten(1))


@pytest.mark.parametrize("model, what", [(_Residual, r"adds two branches \(a residual connection\)"),
                                         (_Concat, r"concatenates branches \(torch.cat\)")])
def test_tdsnn_prepare_refuses_the_branches_that_convert_refuses(model, what, digits):
    """One rule (biosnn.conversion.chains.branch_error) for prepare and convert, naming the reason."""
    x = digits[0]
    why = rf"{what}; TDSNN converts chains of Linear, .* a sum of branches needs both branches' spikes in the same " \
          "inhibitory period"
    with pytest.raises(ConversionError, match=rf"the operation '(add|cat)' in forward\(\) {why}"):
        biosnn.prepare(model(), "tdsnn")
    with pytest.raises(ConversionError, match=rf"layer '.*' \(.*\) {why}"):
        biosnn.convert(model(), "tdsnn", calibration=x[:50], input_shape=(1, 8, 8))


@pytest.mark.parametrize("model", [_Residual, _Concat])
def test_tpc_prepare_and_convert_accept_residual_and_concatenating_networks(model, digits):
    x = digits[0][:50]
    from biosnn.codings.tpc.coding import calibrate
    prepared = calibrate(biosnn.prepare(model(), "tpc", bits=6).eval(), x)
    snn = biosnn.convert(prepared, "tpc", calibration=x, input_shape=(1, 8, 8))
    assert any(s.op == "add" and len(s.inputs) == 2 for s in snn.plan.stages)
    with torch.no_grad():
        ann = prepared.double()(torch.as_tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(snn.reference(x).scores, ann, rtol=0, atol=1e-9)


class _MnistExample(nn.Module):
    """PyTorch's examples/mnist network (functional ReLU, pooling, dropout, flatten), scaled to 8x8 digits."""

    def __init__(self, flatten="torch.flatten", pool="max"):
        super().__init__()
        self.flatten, self.pool = flatten, getattr(nn.functional, f"{pool}_pool2d")
        self.conv1, self.conv2 = nn.Conv2d(1, 4, 3, 1), nn.Conv2d(4, 8, 3, 1)
        self.dropout1, self.fc1, self.fc2 = nn.Dropout(0.25), nn.Linear(8 * 2 * 2, 16), nn.Linear(16, 10)

    def forward(self, x):
        x = nn.functional.relu(self.conv1(x))
        x = self.pool(nn.functional.relu(self.conv2(x)), 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1) if self.flatten == "torch.flatten" else x.view(x.size(0), -1)
        return self.fc2(nn.functional.relu(self.fc1(x)))


@pytest.mark.parametrize("flatten", ["torch.flatten", "view"])
def test_stc_prepares_a_module_that_is_a_chain(flatten, digits):
    """STC prepare takes a non-Sequential model whose forward is a chain (average pooling: STC converts no
    max pooling); the prepared model computes the same as the model, and its conversion equals it."""
    x, _, xt, _ = digits
    torch.manual_seed(6)
    model = _MnistExample(flatten, pool="avg").eval()
    model.dropout1 = nn.Identity()  # STC takes dropout only right after a ReLU, not after the pooling of spikes
    stc_net = biosnn.prepare(model, "stc", T=6)
    assert isinstance(stc_net.ann, nn.Sequential) and not stc_net.training
    xt64 = torch.as_tensor(xt[:20], dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(stc_net.ann.double()(xt64).numpy(), model.double()(xt64).numpy(), rtol=0,
                                   atol=1e-12)
        prepared = stc_net.double()(xt64).numpy()
    snn = biosnn.convert(stc_net, "stc", calibration=x[:50], input_shape=(1, 8, 8))
    np.testing.assert_allclose(snn.reference(xt[:20])["scores"], prepared, rtol=0, atol=1e-9)
    res = snn.run(xt[:5], batch_size=5, progress=False)
    np.testing.assert_allclose(res.scores, prepared[:5], rtol=0, atol=1e-9)


def test_stc_prepare_refuses_what_stc_cannot_do():
    with pytest.raises(ConversionError, match=r"'add' in _Residual.forward\(\) does not continue a simple chain"):
        biosnn.prepare(_Residual(), "stc")

    class Sigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(x))

    with pytest.raises(ConversionError, match=r"'sigmoid' \(sigmoid\) in forward\(\) has no equivalent in the stc"):
        biosnn.prepare(Sigmoid(), "stc")


# ---------------------------------------------------------------------------
# 3. bigger networks: every layer's spike count and the scores equal the reference


class _BasicBlock(nn.Module):
    """The CIFAR ResNet basic block (conv-BN-ReLU-conv-BN + shortcut, ReLU), projection shortcut when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        return nn.functional.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _CifarResNet(nn.Module):
    """A ResNet-20-style network (two stages of two blocks) for 8x8 inputs, global average pooling head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4)
        self.layer1 = nn.Sequential(_BasicBlock(4, 4, 1), _BasicBlock(4, 4, 1))
        self.layer2 = nn.Sequential(_BasicBlock(4, 8, 2), _BasicBlock(8, 8, 1))
        self.linear = nn.Linear(8, 10)

    def forward(self, x):
        out = nn.functional.relu(self.bn1(self.conv1(x)))
        out = nn.functional.avg_pool2d(self.layer2(self.layer1(out)), 4)
        return self.linear(out.view(out.size(0), -1))


def _vgg_bn():
    def cbr(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*cbr(1, 4), *cbr(4, 4), nn.MaxPool2d(2), *cbr(4, 8), *cbr(8, 8), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32, 16), nn.ReLU(inplace=True), nn.Linear(16, 10))


class _ModuleListNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(64, 24), nn.Linear(24, 24), nn.Linear(24, 16)])
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x)


def _random_batchnorm(model, seed):
    """Random BatchNorm statistics and affine parameters (a trained network's are not 0 / 1)."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(0.4 * torch.rand(n, generator=gen) - 0.2)
            mod.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            mod.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
            mod.bias.data.copy_(0.3 * torch.rand(n, generator=gen) - 0.1)
    return model.eval()


_NETWORKS = {"mnist_example": lambda: _MnistExample(), "cifar_resnet": _CifarResNet, "vgg_bn": _vgg_bn,
             "modulelist": _ModuleListNet}


@pytest.mark.parametrize("net, coding, params, signed", [
    ("mnist_example", "rate", {"T": 40}, True), ("modulelist", "rate", {"T": 40}, True),
    ("cifar_resnet", "rate", {"T": 24}, True), ("cifar_resnet", "tsc", {"T": 8}, False),
    ("vgg_bn", "rate", {"T": 24}, True), ("vgg_bn", "tsc", {"T": 8}, False), ("vgg_bn", "tpc", {"bits": 5}, False),
])
def test_bigger_networks_equal_reference(net, coding, params, signed, digits):
    """Small random-weight versions of the networks of issue 21 (PyTorch's MNIST example with normalised
    inputs, a ModuleList network, a CIFAR ResNet, a VGG with BatchNorm): Brian2 equals the reference in
    every layer's spike count and in the scores."""
    x, _, xt, _ = digits
    torch.manual_seed(7)
    model = _random_batchnorm(_NETWORKS[net](), 7)
    calib, xs = (_normalised(x[:200]), _normalised(xt[:6])) if signed else (x[:200], xt[:6])
    snn = _convert(model, coding, params, calib, (1, 8, 8))
    res = snn.run(xs, batch_size=len(xs), progress=False)
    scores, spikes = _reference(snn, xs)
    assert res.layer_spikes.keys() <= spikes.keys() or not spikes
    for name, counts in res.layer_spikes.items():
        np.testing.assert_array_equal(counts, spikes[name], err_msg=f"layer {name}")
    np.testing.assert_allclose(res.scores, scores, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(res.predictions, np.argmax(scores, axis=1))
    assert res.spikes_per_sample.min() > 0
