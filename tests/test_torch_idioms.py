"""Common PyTorch idioms the tracer converts exactly or refuses with a clear error (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from biosnn.frontends.torch_graph import forward_numpy, snn_roles, trace  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402


def _exact(model: nn.Module, input_shape: tuple, n: int = 5, positive: bool = False):
    """Trace ``model`` and check that the graph computes exactly what the model computes."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 2)
            m.bias.data.uniform_(-1, 1)
    graph = trace(model, input_shape)
    x = torch.randn((n,) + input_shape, generator=torch.Generator().manual_seed(1))
    if positive:
        x = x.abs()
    ref = model.eval().double()(x.double()).detach().numpy().reshape(n, -1)
    out = forward_numpy(graph, x)[graph.output].reshape(n, -1)
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
    return graph


# ---------------------------------------------------------------- in-place operations on aliases


class AliasAdd(nn.Module):
    """``skip = h; h += f(h); ... h + skip``: ``skip`` is the same tensor as ``h``."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        skip = h
        h += F.relu(self.b(h))
        return self.c(h + skip)


class AliasView(nn.Module):
    """``v`` is a view of ``h``; ``h += ...`` changes ``v`` too; ``h *= 2`` as well."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(self.conv(x))
        v = h.view(h.size(0), -1)
        h += F.relu(self.conv2(h))
        h *= 2.0
        return self.fc(v)


@pytest.mark.parametrize("model, shape", [(AliasAdd(), (8,)), (AliasView(), (1, 4, 4))])
def test_inplace_update_of_an_alias_is_traced_as_torch_computes_it(model, shape):
    graph = _exact(model, shape)
    assert any(layer.op == "add" for layer in graph)


def test_in_place_add_of_alias_graph_structure():
    graph = _exact(AliasAdd(), (8,))
    # h + skip reads the updated h twice: 2 * (a + b)
    out_add = graph[graph["c"].inputs[0]]
    assert out_add.op == "add" and out_add.inputs[0] == out_add.inputs[1]


# ---------------------------------------------------------------- shape arithmetic as pooling sizes


class AkamasterHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        out = F.relu(self.conv(x))
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.fc(out)


class ShapeMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.max_pool2d(x, x.shape[2:])
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("model, op", [(AkamasterHead(), "avgpool2d"), (ShapeMaxPool(), "maxpool2d")])
def test_pool_sizes_from_the_tensor_shape(model, op):
    graph = _exact(model, (3, 6, 6))
    pool = [layer for layer in graph if layer.op == op][0]
    assert pool.params["kernel_size"] == (6, 6) and pool.out_shape == (4, 1, 1)


def test_flatten_without_start_dim_is_a_clear_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(torch.flatten(x))

    with pytest.raises(ConversionError, match=r"torch.flatten\(x\) without start_dim flattens the batch "
                                              r".* Fix: flatten from dim 1: torch.flatten\(x, 1\)"):
        trace(Net(), (3, 2, 2))

    class View(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(x.view(-1))

    with pytest.raises(ConversionError, match=r"runs on a batch of 1 but not on a batch of 2"):
        trace(View(), (3, 2, 2))


# ---------------------------------------------------------------- concatenation along channels


class DenseBlock(nn.Module):
    """DenseNet-style: every conv reads the concatenation of all earlier feature maps."""

    def __init__(self, c0=3, growth=2, layers=3):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        c = c0
        for _ in range(layers):
            self.convs.append(nn.Conv2d(c, growth, 3, padding=1, bias=False))
            self.bns.append(nn.BatchNorm2d(growth))
            c += growth
        self.stem = nn.Conv2d(1, c0, 3, padding=1)
        self.trans = nn.Conv2d(c, 4, 1)
        self.fc = nn.Linear(c + 4 * 2 * 2, 5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for conv, bn in zip(self.convs, self.bns):
            x = torch.cat([x, F.relu(bn(conv(x)))], 1)
        pooled = F.avg_pool2d(x, 2)                       # pooling a concatenation: part by part
        t = F.relu(self.trans(pooled))
        g = torch.cat((x.mean((2, 3)), torch.flatten(t, 1)), dim=1)
        return self.fc(g)


def test_channel_concatenation_dense_block():
    graph = _exact(DenseBlock(), (1, 4, 4))
    roles = snn_roles(graph)
    parts = [layer for layer in graph if "_p" in layer.name and layer.op == "conv2d"]
    assert parts and all(roles[p.name] == "virtual" for p in parts)
    assert graph[graph.output].op == "add"


def test_concatenation_errors():
    class Spatial(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(64, 2)

        def forward(self, x):
            y = F.relu(self.c(x))
            return self.fc(torch.cat([y, y], dim=2).flatten(1))

    with pytest.raises(ConversionError, match=r"along dim 2 .* only the concatenation along channels"):
        trace(Spatial(), (1, 4, 4))

    class Output(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 2), nn.Linear(4, 3)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    with pytest.raises(ConversionError, match=r"the model output reads a concatenation"):
        trace(Output(), (4,))


# ---------------------------------------------------------------- softmax heads


@pytest.mark.parametrize("head", [nn.Softmax(dim=1), nn.LogSoftmax(dim=-1), "F.softmax", "log_softmax"])
def test_final_softmax_is_dropped_with_a_warning(head):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 4)
            self.head = head if isinstance(head, nn.Module) else nn.Identity()

        def forward(self, x):
            z = self.fc2(F.relu(self.fc1(x)))
            if head == "F.softmax":
                return F.softmax(z, dim=1)
            if head == "log_softmax":
                return z.log_softmax(-1)
            return self.head(z)

    model = Net().eval()
    with pytest.warns(UserWarning, match=r"softmax .* outputs the scores before it; the prediction .* is the same"):
        graph = trace(model, (6,))
    x = torch.randn(7, 6)
    logits = forward_numpy(graph, x)[graph.output]
    np.testing.assert_array_equal(np.argmax(logits, 1), model(x).argmax(1).numpy())
    out = model.double()(x.double()).detach()
    probs = out.exp() if out.max() < 0 else out        # log-softmax or softmax
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(logits), 1).numpy(), probs.numpy(), atol=1e-12)


def test_softmax_inside_the_network_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 4)

        def forward(self, x):
            return self.fc2(F.softmax(self.fc1(x), 1))

    with pytest.raises(ConversionError, match=r"reads the output of a softmax .* only as the last operation"):
        trace(Net(), (6,))


# ---------------------------------------------------------------- preprocessing inside forward


class Normalised(nn.Module):
    def __init__(self, padding=0, buffers=True):
        super().__init__()
        if buffers:
            self.register_buffer("mean", torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1))
        self.buffers_ = buffers
        self.conv = nn.Conv2d(3, 4, 3, padding=padding, groups=1)
        self.fc = nn.Linear(4 * (4 + 2 * padding - 2) ** 2, 3)

    def forward(self, x):
        x = x / 255
        if self.buffers_:
            x = (x - self.mean) / self.std
        else:
            x = (x - 0.5) * 2.0
        x = F.relu(self.conv(x))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("buffers", [True, False])
def test_input_normalisation_folds_into_the_first_layer(buffers):
    graph = _exact(Normalised(buffers=buffers), (3, 4, 4), positive=True)
    assert [layer.op for layer in graph] == ["input", "conv2d", "linear"]
    assert "affine" in graph["conv"].module


def test_input_normalisation_before_a_padded_convolution_is_refused():
    with pytest.raises(ConversionError, match=r"zero-pads an input shifted by a constant .* Fix: normalise "
                                              r"the data outside the model"):
        trace(Normalised(padding=1), (3, 4, 4))
    # a pure scale (x / 255) commutes with zero padding
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.conv(x / 255.0).flatten(1)

    _exact(Scaled(), (1, 4, 4))


@pytest.mark.parametrize("model, shape", [
    (nn.Sequential(nn.BatchNorm2d(2), nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)), (2, 4, 4)),
    (nn.Sequential(nn.Flatten(), nn.BatchNorm1d(8), nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)), (8,)),
    (nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2)), (8,)),
])
def test_batchnorm_on_the_input_or_after_a_relu_folds_into_the_next_layer(model, shape):
    graph = _exact(model, shape)
    assert all(layer.op in ("input", "linear", "conv2d") for layer in graph)


def test_scaled_output_folds_into_the_last_layer():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return (self.fc(x) + 1.0) / 2.0 - 0.25

    graph = _exact(Net(), (4,))
    assert len(graph) == 2


# ---------------------------------------------------------------- activations and pooling variants


class Variants(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)           # 8x8: ceil == floor
        self.avg = nn.AvgPool2d(2, count_include_pad=False)   # no padding: every window full
        self.gmax = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(4 + 4, 3)

    def forward(self, x):
        x = self.c1(x).clamp(min=0)
        x = self.pool(x)
        x = self.avg(torch.clamp_min(self.c2(x), 0.0))
        y = F.relu(self.c3(x))
        a = self.gmax(y).squeeze()                  # (N, 4)
        b = y.amax((2, 3))
        return self.fc(torch.cat([a, b], 1)).unsqueeze(1).squeeze(1)


def test_clamp_min_zero_global_max_pool_squeeze_ceil_and_count_include_pad():
    graph = _exact(Variants(), (1, 8, 8))
    ops = [layer.op for layer in graph]
    assert ops.count("maxpool2d") == 3 and ops.count("avgpool2d") == 1
    assert graph["c1"].relu and graph["c2"].relu
    assert graph["avg"].params["count_include_pad"] is True


def test_pooling_variants_without_an_exact_meaning_are_refused():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))
    with pytest.raises(ConversionError, match=r"ceil_mode=True makes \(3, 3\) windows .* \(2, 2\)"):
        trace(model, (1, 7, 7))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(2))
    with pytest.raises(ConversionError, match=r"maps \(5, 5\) to \(2, 2\), which is not a uniform pooling"):
        trace(model, (1, 7, 7))


def test_difference_of_two_branches():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.c(F.relu(self.a(x) - torch.sub(self.b(x), self.a(x), alpha=0.5)))

    graph = _exact(Net(), (4,))
    adds = [layer for layer in graph if layer.op == "add"]
    assert sorted(tuple(a.weight) for a in adds) == [(1.0, -1.0), (1.0, -0.5)]
