"""LRP on converted ONNX graphs, checked against axioms (conservation, LRP-0 = input × gradient),
hand-computed relevance, and Zennit on the native torch model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torchvision

import onnxxai
from onnxxai.analyzers.lrp import (
    LINEAR_OPS,
    LRP,
    AlphaBeta,
    Composite,
    Epsilon,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    Flat,
    Gamma,
    LRPModelError,
    Pass,
    WSquare,
    ZBox,
    Zero,
    ZPlus,
    base_rules,
    fold_batchnorm,
)
from conftest import BiasFreeNet
from onnxxai.testing import export

import zennit
from zennit.attribution import Gradient as ZennitGradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonGammaBox as ZennitEpsilonGammaBox  # noqa: E402
from zennit.composites import EpsilonPlusFlat as ZennitEpsilonPlusFlat  # noqa: E402
from zennit.torchvision import ResNetCanonizer  # noqa: E402

LOW = torch.tensor([-2.1, -2.0, -1.8]).view(1, 3, 1, 1)
HIGH = torch.tensor([2.2, 2.4, 2.6]).view(1, 3, 1, 1)


def rel_l2(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float((a - b).norm() / b.norm())


class BiasedResNet(BiasFreeNet):
    """The same with biases everywhere (LRP-0 must still equal input × gradient)."""

    def __init__(self) -> None:
        super().__init__()
        for layer in (self.conv1, self.conv2, self.conv3):
            layer.bias = torch.nn.Parameter(torch.randn(layer.out_channels) * 0.1)
        self.fc.bias = torch.nn.Parameter(torch.randn(5) * 0.1)


class ReusedReLU(torch.nn.Module):
    """One ReLU module called twice: a hook-based LRP would see it once."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 16)
        self.fc2 = torch.nn.Linear(16, 12)
        self.fc3 = torch.nn.Linear(12, 4)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


class MiniVGG(torch.nn.Module):
    """torchvision's VGG-11 feature extractor with batch norm, and a small head (fast test)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["A"], batch_norm=True)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = torch.nn.Sequential(torch.nn.Linear(512, 64), torch.nn.ReLU(True), torch.nn.Dropout(), torch.nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _randomize_batchnorm(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)


def _frozen(net: torch.nn.Module) -> torch.nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def zennit_lrp(net, composite, x, index):
    """Zennit's relevance with the explained output's score as starting relevance."""
    with torch.no_grad():
        out = net(x)
    start = torch.zeros_like(out)
    start[torch.arange(len(x)), index] = out[torch.arange(len(x)), index]
    with ZennitGradient(model=net, composite=composite) as attributor:
        _, relevance = attributor(x.clone(), start)
    return relevance


@pytest.fixture(scope="module")
def bias_free(tmp_path_factory):
    torch.manual_seed(0)
    net = _frozen(BiasFreeNet())
    path = export(net, torch.randn(1, 3, 8, 8), tmp_path_factory.mktemp("lrp") / "biasfree.onnx")
    return net, onnxxai.load(path)


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory):
    torch.manual_seed(0)
    net = _frozen(torchvision.models.resnet18())
    path = export(net, torch.randn(1, 3, 64, 64), tmp_path_factory.mktemp("lrp") / "resnet18.onnx")
    return net, onnxxai.load(path)


@pytest.fixture(scope="module")
def mini_vgg(tmp_path_factory):
    torch.manual_seed(0)
    net = MiniVGG()
    _randomize_batchnorm(net)
    net = _frozen(net)
    # without constant folding the exporter keeps BatchNormalization nodes: our canonizer folds them
    path = export(net, torch.randn(1, 3, 32, 32), tmp_path_factory.mktemp("lrp") / "vgg.onnx", do_constant_folding=False)
    return net, onnxxai.load(path)


# -- axioms -------------------------------------------------------------------------------------
def test_epsilon_conserves_relevance_on_bias_free_relu_net(bias_free):
    _, model = bias_free
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    eps = Composite({**base_rules(1e-9), **{op: Epsilon(1e-9) for op in LINEAR_OPS}})
    expl = LRP(model, eps)(x, 2)
    score = model(x)[:, 2]
    np.testing.assert_allclose(expl.val.reshape(3, -1).sum(1), score, rtol=1e-4)
    np.testing.assert_allclose(expl.extras["relevance_sum"], score, rtol=1e-4)
    assert expl.heatmap == "attribution" and expl.analyzer == "LRP" and expl.val.shape == x.shape
    # one chunk per row gives the same as the whole batch
    np.testing.assert_allclose(LRP(model, eps, batch_size=1)(x, 2).val, expl.val, rtol=1e-5, atol=1e-8)


def test_zero_rule_equals_input_times_gradient(tmp_path):
    torch.manual_seed(1)
    net = _frozen(BiasedResNet())
    model = onnxxai.load(export(net, torch.randn(1, 3, 8, 8), tmp_path / "biased.onnx"))
    zero = Composite({**base_rules(), **{op: Zero() for op in (*LINEAR_OPS, "Add", "AveragePool")}})
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    lrp = LRP(model, zero)(x, [1, 4])
    ixg = onnxxai.InputTimesGradient(model)(x, [1, 4])
    assert rel_l2(lrp.val, ixg.val) < 1e-5


def test_pooling_max_takes_all_average_is_proportional(tmp_path):
    class Pools(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(8, 1, bias=False)

        def forward(self, x):  # x: (B, 1, 4, 4) -> max branch (4) and average branch (4)
            a = torch.nn.functional.max_pool2d(x, 2).flatten(1)
            b = torch.nn.functional.avg_pool2d(x, 2).flatten(1)
            return self.fc(torch.cat([a, b], 1))

    torch.manual_seed(2)
    net = _frozen(Pools())
    model = onnxxai.load(export(net, torch.rand(1, 1, 4, 4) + 0.1, tmp_path / "pools.onnx"))
    x = torch.rand(2, 1, 4, 4) + 0.1
    expl = LRP(model, Composite({**base_rules(1e-9), **{op: Epsilon(1e-9) for op in LINEAR_OPS}}))(x, 0)
    w = net.fc.weight[0]
    windows = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(2, 1, 2, 2, 4)  # (B, 1, i, j, window)
    r_max = windows.amax(-1).flatten(1) * w[:4]  # relevance of each max-pool output
    r_avg = windows.mean(-1).flatten(1) * w[4:]
    expected = (windows == windows.amax(-1, keepdim=True)) * r_max.view(2, 1, 2, 2, 1)
    expected = expected + windows / windows.sum(-1, keepdim=True) * r_avg.view(2, 1, 2, 2, 1)
    expected = expected.reshape(2, 1, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(2, 1, 4, 4)
    torch.testing.assert_close(expl.val, expected, rtol=1e-4, atol=1e-7)


def test_reused_relu_module_gets_correct_lrp(tmp_path):
    torch.manual_seed(3)
    net = _frozen(ReusedReLU())
    model = onnxxai.load(export(net, torch.randn(1, 8), tmp_path / "reused.onnx"))
    assert sum(n.op_type == "Relu" for n in model.onnx_model.graph.node) == 2
    x = torch.randn(3, 8)
    eps = 0.1
    expl = LRP(model, EpsilonPlus(epsilon=eps))(x, 2)
    # LRP-epsilon by hand, layer by layer
    a = [x]
    for fc in (net.fc1, net.fc2):
        a.append(torch.relu(fc(a[-1])))
    z = net.fc3(a[-1])
    relevance = torch.zeros_like(z)
    relevance[:, 2] = z[:, 2]
    for fc, act in zip((net.fc3, net.fc2, net.fc1), reversed(a)):
        zz = fc(act)
        s = relevance / (zz + eps * torch.where(zz >= 0, 1.0, -1.0))
        relevance = act * (s @ fc.weight)
    torch.testing.assert_close(expl.val, relevance, rtol=1e-4, atol=1e-7)


# -- agreement with Zennit on the native torch models ----------------------------------------------
@pytest.mark.parametrize("preset", ["EpsilonPlusFlat", "EpsilonGammaBox"])
def test_resnet18_matches_zennit(resnet18, preset):
    net, model = resnet18
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    if preset == "EpsilonPlusFlat":
        ours, theirs = EpsilonPlusFlat(), ZennitEpsilonPlusFlat(canonizers=[ResNetCanonizer()])
    else:
        ours, theirs = EpsilonGammaBox(LOW, HIGH), ZennitEpsilonGammaBox(low=LOW, high=HIGH, canonizers=[ResNetCanonizer()])
    expl = LRP(model, ours)(x, [3, 7])
    reference = zennit_lrp(net, theirs, x, torch.tensor([3, 7]))
    assert rel_l2(expl.val, reference) < 1e-3
    assert expl.extras["rules"]["/conv1/Conv"].startswith("Flat" if preset == "EpsilonPlusFlat" else "ZBox")
    assert expl.extras["rules"]["/layer1/layer1.0/Add"].startswith("Epsilon")


@pytest.mark.parametrize("preset", ["EpsilonPlusFlat", "EpsilonGammaBox"])
def test_vgg_with_batchnorm_matches_zennit(mini_vgg, preset):
    net, model = mini_vgg
    assert any(n.op_type == "BatchNormalization" for n in model.onnx_model.graph.node)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    if preset == "EpsilonPlusFlat":
        ours, theirs = EpsilonPlusFlat(), ZennitEpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])
    else:
        ours, theirs = EpsilonGammaBox(LOW, HIGH), ZennitEpsilonGammaBox(low=LOW, high=HIGH, canonizers=[SequentialMergeBatchNorm()])
    analyzer = LRP(model, ours)
    assert len(analyzer.canonization) == 8 and not any(n.op_type == "BatchNormalization" for n in analyzer.graph.graph.node)
    expl = analyzer(x, [1, 6])
    reference = zennit_lrp(net, theirs, x, torch.tensor([1, 6]))
    assert rel_l2(expl.val, reference) < 1e-3


# -- canonization, model check, untouched model ------------------------------------------------------
def test_batchnorm_folding_into_conv_and_gemm(tmp_path):
    torch.manual_seed(6)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 5), torch.nn.BatchNorm1d(5),
    )
    _randomize_batchnorm(net)
    net = _frozen(net)
    model = onnxxai.load(export(net, torch.randn(1, 3, 8, 8), tmp_path / "bn.onnx", do_constant_folding=False))
    proto = onnx.ModelProto()
    proto.CopyFrom(model.onnx_model)
    changes = fold_batchnorm(proto)
    assert len(changes) == 2 and "Conv" in changes[0] and "Gemm" in changes[1]
    assert [n.op_type for n in proto.graph.node] == ["Conv", "Relu", "Flatten", "Gemm"]
    x = np.random.default_rng(6).standard_normal((3, 3, 8, 8)).astype(np.float32)
    folded = onnxxai.load(proto)
    np.testing.assert_allclose(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # LRP on the BN model is LRP on the folded one, reported in extras
    expl = LRP(model, EpsilonPlus())(x, 0)
    assert expl.extras["canonization"] == changes
    np.testing.assert_allclose(expl.val, LRP(folded, EpsilonPlus())(x, 0).val, rtol=1e-4, atol=1e-6)
    assert len(model.onnx_model.graph.node) == 6  # the user's graph still has its BatchNormalization nodes


def test_batchnorm_folding_matches_onnxruntime_for_gemm_attributes_and_conv_transpose():
    from onnx import TensorProto, helper, numpy_helper

    from onnxxai.parity import run_onnxruntime

    rng = np.random.default_rng(10)

    def const(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    def bn_params(prefix, n):
        var = numpy_helper.from_array(rng.uniform(0.5, 2.0, n).astype(np.float32), prefix + "var")
        return [const(prefix + "g", n), const(prefix + "b", n), const(prefix + "m", n), var]

    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["t"], name="up", strides=[2, 2]),
        helper.make_node("BatchNormalization", ["t", "bn1g", "bn1b", "bn1m", "bn1var"], ["u"], name="bn1", epsilon=1e-3),
        helper.make_node("Relu", ["u"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "wg", "cg"], ["g"], name="gemm", alpha=0.5, beta=2.0, transB=1),
        helper.make_node("BatchNormalization", ["g", "bn2g", "bn2b", "bn2m", "bn2var"], ["y"], name="bn2"),
    ]
    inits = [const("wt", 2, 3, 2, 2), *bn_params("bn1", 3), const("wg", 4, 3 * 6 * 6), const("cg", 4), *bn_params("bn2", 4)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    assert fold_batchnorm(folded) == ["folded BatchNormalization 'bn1' into ConvTranspose 'up'",
                                      "folded BatchNormalization 'bn2' into Gemm 'gemm'"]
    onnx.checker.check_model(folded)
    x = {"x": rng.standard_normal((2, 2, 3, 3)).astype(np.float32)}
    np.testing.assert_allclose(run_onnxruntime(folded, x)[0], run_onnxruntime(model, x)[0], rtol=1e-5, atol=1e-5)


def test_model_check_names_nodes_and_skip_checks_runs(tmp_path):
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 8)
            self.norm = torch.nn.LayerNorm(8)
            self.fc2 = torch.nn.Linear(8, 3)

        def forward(self, x):
            h = torch.sigmoid(self.fc1(x))
            return torch.softmax(self.fc2(self.norm(h)), -1)

    torch.manual_seed(7)
    model = onnxxai.load(export(_frozen(Odd()), torch.randn(1, 6), tmp_path / "odd.onnx"))
    with pytest.raises(LRPModelError) as info:
        LRP(model)
    message = str(info.value)
    for name, op in [("/Sigmoid", "Sigmoid"), ("/norm/LayerNormalization", "LayerNormalization"), ("/Softmax", "Softmax")]:
        assert f"'{name}' ({op})" in message
    assert "skip_checks=True" in message and "non-ReLU-like" in message and "no rule" in message
    assert {p.op_type for p in info.value.problems} == {"Sigmoid", "LayerNormalization", "Softmax"}
    assert isinstance(info.value, onnxxai.AnalyzerError)
    expl = LRP(model, skip_checks=True)(np.ones((2, 6), np.float32))
    assert np.isfinite(expl.val).all() and expl.extras["rules"]["/Softmax"] == "gradient"


def test_rules_by_node_name_and_first_layer(bias_free):
    _, model = bias_free
    composite = EpsilonPlusFlat(nodes={"/fc/MatMul": Epsilon(0.5)})
    analyzer = LRP(model, composite)
    assert repr(analyzer.rules["/fc/MatMul"]) == "Epsilon(epsilon=0.5, zero_params=None)"
    assert isinstance(analyzer.rules["/conv1/Conv"], Flat)  # first layer
    assert isinstance(analyzer.rules["/conv2/Conv"], ZPlus) and isinstance(analyzer.rules["/conv3/Conv"], ZPlus)
    assert isinstance(analyzer.rules["/MaxPool"], Pass) and isinstance(analyzer.rules["/Add"], Epsilon)
    gamma_box = LRP(model, EpsilonGammaBox(-3.0, 3.0))
    assert isinstance(gamma_box.rules["/conv1/Conv"], ZBox) and isinstance(gamma_box.rules["/conv2/Conv"], Gamma)
    assert isinstance(LRP(model, EpsilonAlpha2Beta1()).rules["/conv1/Conv"], AlphaBeta)
    assert isinstance(LRP(model, EpsilonAlpha2Beta1Flat()).rules["/conv1/Conv"], Flat)


@pytest.mark.parametrize("rule", [Epsilon(0.1), Gamma(0.5), ZPlus(), AlphaBeta(2, 1), AlphaBeta(1, 0), Flat(), WSquare(),
                                  ZBox(-3.0, 3.0), Zero()])
def test_every_rule_runs_and_first_rules_conserve(bias_free, rule):
    _, model = bias_free
    composite = Composite({**base_rules(1e-9), **{op: Epsilon(1e-9) for op in LINEAR_OPS}}, first_layer={"Conv": rule})
    x = np.abs(np.random.default_rng(8).standard_normal((2, 3, 8, 8))).astype(np.float32)
    expl = LRP(model, composite)(x, 1)
    assert np.isfinite(expl.val).all()
    if not isinstance(rule, (Epsilon, ZBox)):  # on positive inputs without biases these conserve exactly
        np.testing.assert_allclose(expl.val.reshape(2, -1).sum(1), model(x)[:, 1], rtol=1e-3)


def test_user_model_is_left_untouched(resnet18):
    _, model = resnet18
    module = model.torch_module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    children = dict(module.named_children())
    code = module.code
    graph_bytes = model.onnx_model.SerializeToString()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    gradient_before = onnxxai.Gradient(model)(x, 0).val
    LRP(model, EpsilonGammaBox(-3.0, 3.0))(x, 0)
    with pytest.raises(ZeroDivisionError):  # an error inside the modified backward leaves nothing behind

        class Broken(Epsilon):
            def gradients(self, relevance, outputs, output):
                raise ZeroDivisionError

        LRP(model, EpsilonPlus(rules={"Gemm": Broken()}))(x, 0)
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert dict(module.named_children()) == children and module.code == code
    assert all(type(m).__module__ != "onnxxai.analyzers.lrp.apply" for m in module.modules())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules()) == 0
    assert model.onnx_model.SerializeToString() == graph_bytes
    assert not module.training and all(not p.requires_grad for p in module.parameters())
    torch.testing.assert_close(onnxxai.Gradient(model)(x, 0).val, gradient_before)


def test_bad_arguments(bias_free):
    _, model = bias_free
    with pytest.raises(onnxxai.AnalyzerError, match="Composite"):
        LRP(model, {"Conv": Epsilon()})
    with pytest.raises(onnxxai.AnalyzerError, match="batch_size"):
        LRP(model, batch_size=0)
    with pytest.raises(TypeError, match="not an LRP rule"):
        Composite({"Conv": "epsilon"})
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2, 2)
