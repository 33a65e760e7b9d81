"""Tracing torch models into a LayerGraph (biosnn.frontends.torch_graph)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from biosnn.frontends.torch_graph import Layer, LayerGraph, forward_numpy, snn_roles, trace  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small tensors: one thread avoids OpenMP oversubscription on busy machines
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.bias.data.copy_(torch.rand(n, generator=g) * 2 - 1)
    return model


def _assert_reproduces(model: nn.Module, input_shape: tuple, n: int = 6, seed: int = 1) -> LayerGraph:
    graph = trace(model, input_shape)
    x = torch.randn((n,) + input_shape, generator=torch.Generator().manual_seed(seed))
    ref = model.eval().double()(x.double()).detach().numpy().reshape(n, -1)
    acts = forward_numpy(graph, x)
    out = acts[graph.output].reshape(n, -1)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    assert out.reshape((n,) + graph.output_shape).shape == (n,) + graph.output_shape
    for layer in graph.layers:
        assert acts[layer.name].shape == (n,) + layer.out_shape
        assert acts[layer.name].dtype == np.float64
    return graph


def lenet5(pool=nn.AvgPool2d, bn=False) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), *([nn.BatchNorm2d(6)] if bn else []), nn.ReLU(), pool(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), pool(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )


@pytest.mark.parametrize("pool", [nn.AvgPool2d, nn.MaxPool2d])
def test_lenet5_structure_and_forward(pool):
    torch.manual_seed(0)
    model = _randomize_bn(lenet5(pool, bn=True))
    graph = _assert_reproduces(model, (1, 28, 28))
    op = "avgpool2d" if pool is nn.AvgPool2d else "maxpool2d"
    assert [layer.op for layer in graph] == ["input", "conv2d", op, "conv2d", op, "linear", "linear", "linear"]
    assert graph.names == ("input", "0", "3", "4", "6", "8", "11", "13")
    assert [layer.relu for layer in graph] == [False, True, False, True, False, True, True, False]
    assert graph["0"].in_shape == (1, 28, 28) and graph["0"].out_shape == (6, 28, 28)
    assert graph["3"].out_shape == (6, 14, 14)
    assert graph["4"].out_shape == (16, 10, 10)
    assert graph["8"].in_shape == (400,) and graph["8"].inputs == ("6",)
    assert graph.output == "13" and graph.output_shape == (10,)
    assert dict(graph["0"].params) == dict(kernel_size=(5, 5), stride=(1, 1), padding=(2, 2),
                                          dilation=(1, 1), groups=1)
    assert graph["3"].params["kernel_size"] == (2, 2) and graph["3"].params["stride"] == (2, 2)
    assert "BatchNorm2d" in graph["0"].module            # folded, and named in the module label
    assert graph["8"].weight.shape == (120, 400) and graph["8"].weight.dtype == np.float64
    assert snn_roles(graph)["3"] == ("maxpool" if op == "maxpool2d" else "if")


def test_batchnorm_is_folded_exactly():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3)
    model = _randomize_bn(nn.Sequential(conv, bn, nn.ReLU()))
    graph = _assert_reproduces(model, (2, 5, 5))
    assert len(graph) == 2
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    np.testing.assert_allclose(graph["0"].weight, conv.weight.detach().double().numpy() * scale[:, None, None, None])
    np.testing.assert_allclose(graph["0"].bias, (-bn.running_mean.double().numpy()) * scale
                               + bn.bias.detach().double().numpy())


def test_mlp_with_bn1d_dropout_identity():
    torch.manual_seed(0)
    model = _randomize_bn(nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Identity(),
        nn.Linear(32, 16, bias=False), nn.ReLU(), nn.Linear(16, 10)))
    graph = _assert_reproduces(model, (1, 8, 8))
    assert [layer.op for layer in graph] == ["input", "linear", "linear", "linear"]
    assert graph["1"].in_shape == (64,)
    np.testing.assert_array_equal(graph["6"].bias, np.zeros(16))   # bias=False -> zeros


def test_trace_does_not_modify_the_model():
    torch.manual_seed(0)
    model = _randomize_bn(lenet5(bn=True)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trace(model, (1, 28, 28))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class BasicBlock(nn.Module):
    """ResNet basic block; 1x1-conv shortcut when the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block1 = BasicBlock(4, 4, 1)      # identity shortcut
        self.block2 = BasicBlock(4, 8, 2)      # 1x1-conv shortcut
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.block2(self.block1(x))
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))


def test_resnet_blocks_with_identity_and_conv_shortcut():
    torch.manual_seed(0)
    graph = _assert_reproduces(_randomize_bn(TinyResNet()), (1, 8, 8))
    adds = [layer for layer in graph if layer.op == "add"]
    assert len(adds) == 2 and all(a.relu for a in adds)
    assert adds[0].inputs == ("block1.conv2", "stem")
    assert adds[1].inputs == ("block2.conv2", "block2.shortcut.0")
    np.testing.assert_array_equal(adds[0].weight, [1.0, 1.0])
    assert graph["pool"].op == "avgpool2d" and graph["pool"].params["kernel_size"] == (4, 4)
    roles = snn_roles(graph)
    assert roles["block1.conv2"] == "virtual" and roles["block2.shortcut.0"] == "virtual"
    assert roles["stem"] == roles["block1.conv1"] == roles[adds[0].name] == "if"
    assert graph.consumers("stem") == ("block1.conv1", adds[0].name)


def test_functional_relu_flatten_view_and_pools():
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding="same")
            self.c2 = nn.Conv2d(4, 6, 3, dilation=2, padding=2, groups=2)
            self.act = nn.ReLU(inplace=True)
            self.f1 = nn.Linear(24, 12)
            self.f2 = nn.Linear(12, 5)

        def forward(self, x):
            x = F.relu(self.c1(x))
            x = F.max_pool2d(x, 2)                   # 8x8 -> 4x4
            x = self.act(self.c2(x))
            unused = x.mean((2, 3))                  # dead branch: pruned  # noqa: F841
            a = F.avg_pool2d(x, 2)                   # (6, 2, 2)
            a = a.view(a.size(0), -1)
            h = F.relu(self.f1(a)).relu()
            h = torch.flatten(h, 1)
            return self.f2(h.reshape(h.shape[0], -1))

    graph = _assert_reproduces(Net(), (1, 8, 8))
    assert [layer.op for layer in graph] == ["input", "conv2d", "maxpool2d", "conv2d", "avgpool2d",
                                            "linear", "linear"]
    assert graph["c1"].params["padding"] == (1, 1)
    assert graph["c2"].params["groups"] == 2 and graph["c2"].params["dilation"] == (2, 2)
    assert graph["c2"].relu and graph["f1"].relu and not graph["f2"].relu
    assert graph["f1"].in_shape == (24,) and graph["avg_pool2d"].out_shape == (6, 2, 2)


def test_global_mean_and_adaptive_pool():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(2, 3, 3, padding=1)
            self.f = nn.Linear(3 + 3 * 2 * 2, 4)
            self.g = nn.Linear(3, 4)

        def forward(self, x):
            y = F.relu(self.c(x))
            return self.g(y.mean((2, 3))) + self.g(F.adaptive_avg_pool2d(y, 1).flatten(1))

    torch.manual_seed(0)
    graph = _assert_reproduces(Net(), (2, 6, 6))
    pools = [layer for layer in graph if layer.op == "avgpool2d"]
    assert [p.params["kernel_size"] for p in pools] == [(6, 6), (6, 6)]
    assert graph["g"].in_shape == (3,) and graph["g_1"].in_shape == (3,)   # module used twice
    assert graph[graph.output].op == "add"


def test_relu_after_maxpool_is_moved_before_it():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    torch.manual_seed(0)
    graph = _assert_reproduces(model, (1, 6, 6))
    assert graph["0"].relu and graph["1"].relu
    assert snn_roles(graph)["1"] == "maxpool"


def test_layer_graph_is_immutable():
    torch.manual_seed(0)
    graph = trace(lenet5(), (1, 28, 28))
    layer = graph["0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.relu = False
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.output = "0"
    with pytest.raises(ValueError):
        layer.weight[0, 0, 0, 0] = 1.0
    with pytest.raises(TypeError):
        layer.params["stride"] = (2, 2)
    assert isinstance(graph.layers, tuple) and isinstance(layer, Layer)
    changed = layer.replace(relu=False)
    assert not changed.relu and layer.relu


def test_graph_rejects_inconsistent_layers():
    inp = Layer("input", "input", (), (2,), (2,))
    with pytest.raises(ValueError, match="not an earlier layer"):
        LayerGraph((inp, Layer("a", "linear", ("b",), (2,), (1,), np.ones((1, 2)), np.zeros(1))), "a", (1,))
    with pytest.raises(ValueError, match="unknown layer op"):
        Layer("a", "softmax", ("input",), (2,), (2,))


# --------------------------------------------------------------------------- errors


def test_sigmoid_is_rejected_with_position_and_supported_list():
    model = nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))
    with pytest.raises(ConversionError, match=r"module '1' \(Sigmoid\) at fx node '_1' \(#2") as exc:
        trace(model, (4,))
    assert "Supported layers" in str(exc.value) and "nn.Linear" in str(exc.value)


def test_lstm_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 3, batch_first=True)
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[:, -1])

    with pytest.raises(ConversionError, match=r"unsupported module 'lstm' \(LSTM\)"):
        trace(Net(), (5, 4))


def test_unsupported_function_and_method():
    class Tanh(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return torch.tanh(self.fc(x))

    with pytest.raises(ConversionError, match=r"unsupported function .*tanh at fx node 'tanh'"):
        trace(Tanh(), (4,))

    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x).sigmoid()

    with pytest.raises(ConversionError, match=r"unsupported tensor method \.sigmoid\(\)"):
        trace(Sig(), (4,))


def test_relu_on_input_is_rejected():
    model = nn.Sequential(nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match=r"applied to the network input at fx node '_0'"):
        trace(model, (4,))


def test_maxpool_ceil_mode_is_rejected():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    with pytest.raises(ConversionError, match=r"module '2' \(MaxPool2d\) with ceil_mode=True"):
        trace(model, (1, 7, 7))

    class Fn(nn.Module):
        def forward(self, x):
            return F.avg_pool2d(x, 2, ceil_mode=True)

    with pytest.raises(ConversionError, match="ceil_mode=True"):
        trace(Fn(), (1, 5, 5))


@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.BatchNorm2d(2)),
    nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.BatchNorm2d(2)),
])
def test_batchnorm_without_preceding_synaptic_layer_is_rejected(model):
    with pytest.raises(ConversionError, match="reads a rescaled/shifted activation .* folded into the Linear/Conv2d layer"):
        trace(model, (1, 6, 6))


def test_adaptive_pool_that_is_not_a_plain_pool_is_rejected():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(3))
    with pytest.raises(ConversionError, match=r"maps \(4, 4\) to \(3, 3\)"):
        trace(model, (1, 6, 6))


def test_adding_a_constant_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return F.relu(self.fc(x)) + 1.0      # (fc(x) + 1.0 folds into the bias: test_torch_idioms.py)

    with pytest.raises(ConversionError, match="the model output reads a rescaled/shifted activation"):
        trace(Net(), (4,))


def test_value_used_before_and_after_relu_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x)
            return self.b(F.relu(h)) + h

    with pytest.raises(ConversionError, match="used both before its ReLU"):
        trace(Net(), (4,))


def test_untraceable_control_flow_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return self.fc(-x)

    with pytest.raises(ConversionError, match="torch.fx could not trace Net.forward"):
        trace(Net(), (4,))


def test_wrong_input_shape_and_non_module():
    with pytest.raises(ConversionError, match=r"does not run on an input of shape \(2, 5\)"):
        trace(nn.Sequential(nn.Linear(4, 2)), (5,))
    with pytest.raises(ConversionError, match="needs a torch.nn.Module"):
        trace(lambda x: x, (4,))


def test_reflect_padding_and_linear_on_image_are_rejected():
    with pytest.raises(ConversionError, match="padding_mode='reflect'"):
        trace(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")), (1, 4, 4))
    with pytest.raises(ConversionError, match=r"flatten the activations before nn.Linear"):
        trace(nn.Sequential(nn.Linear(4, 2)), (1, 4, 4))


def test_roles_reject_hidden_layer_without_relu():
    graph = trace(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), (4,))
    np.testing.assert_allclose(forward_numpy(graph, np.ones((1, 4)))["1"].shape, (1, 2))
    with pytest.raises(ConversionError, match=r"layer '0' \(0 \(Linear\)\) has no ReLU but feeds '1'"):
        snn_roles(graph)


def test_batch_dimension_mixing_and_raw_parameters_are_rejected():
    with pytest.raises(ConversionError, match=r"module '0' \(Flatten\) mixes the batch dimension"):
        trace(nn.Sequential(nn.Flatten(0), nn.Linear(8, 2)), (4,))

    class Raw(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(2, 4))

        def forward(self, x):
            return F.linear(x, self.w)

    with pytest.raises(ConversionError, match=r"unsupported function torch._C._nn.linear at fx node 'linear'"):
        trace(Raw(), (4,))
