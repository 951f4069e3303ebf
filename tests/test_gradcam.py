"""GradCAM and graph splitting against independent references: GradCAM computed with hooks on the
native torch model (and Captum's LayerGradCam, pytorch-grad-cam), onnxruntime on the split graphs,
the data-flow rules (cuts, bypass paths, token grids) on small real models."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

import onnxxai
from onnxxai.testing import export
from onnxxai import graph
from onnxxai.analyzers.gradcam import GradCAM


def _rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a, dtype=np.float64)), torch.as_tensor(np.asarray(b, dtype=np.float64))
    return float((a - b).abs().max() / b.abs().max())


def native_gradcam(net: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, target=None, prefix: int | None = None):
    """GradCAM with a forward hook on ``layer`` of the native model: (low-res map, upsampled map, target)."""
    store = {}
    handle = layer.register_forward_hook(lambda module, args, out: store.__setitem__("a", out))
    try:
        out = net(x)
    finally:
        handle.remove()
    act = store["a"]
    target = out.argmax(1) if target is None else torch.as_tensor(target).expand(x.shape[0])
    (grad,) = torch.autograd.grad(out.gather(1, target.view(-1, 1)).sum(), act)
    act = act.detach()
    if act.dim() == 3:  # ViT tokens: drop the class tokens, patches row-major on the grid
        n, t, c = act.shape
        side = int(round((t - prefix) ** 0.5))
        act, grad = (v[:, prefix:].reshape(n, side, side, c).permute(0, 3, 1, 2) for v in (act, grad))
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(1))
    up = torch.nn.functional.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)
    return cam, up, target


class DeiTLike(torch.nn.Module):
    """A tiny ViT with a class and a distillation token (DeiT's layout: cls, dist, patches)."""

    def __init__(self, dim: int = 16, patch: int = 8, size: int = 32) -> None:
        super().__init__()
        self.patchify = torch.nn.Conv2d(3, dim, patch, stride=patch)
        self.tokens = torch.nn.Parameter(torch.randn(1, 2, dim))
        self.pos = torch.nn.Parameter(torch.randn(1, 2 + (size // patch) ** 2, dim) * 0.1)
        self.blocks = torch.nn.Sequential(*[torchvision.models.vision_transformer.EncoderBlock(2, dim, 32, 0.0, 0.0)
                                            for _ in range(2)])
        self.head = torch.nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patchify(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.tokens.expand(x.shape[0], -1, -1), p], dim=1) + self.pos
        h = self.blocks(h)
        return self.head((h[:, 0] + h[:, 1]) / 2)


def _tiny_vit() -> torch.nn.Module:
    net = torchvision.models.VisionTransformer(32, 8, 2, 2, 16, 32, num_classes=10)
    torch.nn.init.normal_(net.heads.head.weight, std=0.5)  # torchvision zero-initialises the head
    return net


def _vgg11() -> torch.nn.Module:
    net = torchvision.models.vgg11()
    net.classifier = torch.nn.Linear(512 * 7 * 7, 10)  # the 400 MB classifier is not what is tested
    return net


# name -> (builder, input size, practitioner's layer, token prefix, expected default boundary)
ARCHS = {
    "resnet18": (torchvision.models.resnet18, 64, lambda n: n.layer4, None, "/layer4/layer4.1/relu_1/Relu_output_0"),
    "squeezenet1_1": (torchvision.models.squeezenet1_1, 64, lambda n: n.features, None, "/features/features.12/Concat_output_0"),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, 64, lambda n: n.features, None,
                           "/features/features.12/features.12.2/HardSwish_output_0"),
    "vgg11": (_vgg11, 224, lambda n: n.features, None, "/avgpool/AveragePool_output_0"),  # avgpool(7) of 7×7: identity
    "tiny_vit": (_tiny_vit, 32, lambda n: n.encoder.layers[-2], 1, "/encoder/layers/encoder_layer_0/Add_1_output_0"),
    "deit_like": (DeiTLike, 32, lambda n: n.blocks[0], 2, "/blocks/blocks.0/Add_1_output_0"),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Each architecture built lazily once: (native net, path, loaded model)."""
    cache: dict[str, tuple] = {}

    def get(name: str):
        if name not in cache:
            builder, size, *_ = ARCHS[name]
            torch.manual_seed(0)
            net = builder().eval()
            path = export(net, torch.randn(1, 3, size, size), tmp_path_factory.mktemp(name) / f"{name}.onnx")
            cache[name] = (net, path, onnxxai.load(path))
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(ARCHS))
def test_gradcam_equals_native_hooks_on_the_practitioners_layer(built, name):
    net, path, model = built(name)
    _, size, layer, prefix, expected = ARCHS[name]
    analyzer = GradCAM(model)
    assert analyzer.boundary == expected
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    expl = onnxxai.analyze(x.numpy(), analyzer)
    cam, up, target = native_gradcam(net, layer(net), x, prefix=prefix)
    assert float(cam.max()) > 0
    np.testing.assert_array_equal(expl.output_selection, target.numpy())
    assert _rel(expl.extras["cam"], cam) < 1e-4
    assert _rel(expl.val, up) < 1e-4
    assert expl.val.shape == (3, 1, size, size) and isinstance(expl.val, np.ndarray)
    assert expl.heatmap == "cam" and expl.extras["boundary"] == expected and expl.extras["one_pass"]


def test_captum_layer_gradcam_and_pytorch_grad_cam_agree(built):
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as PGCGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net, _, model = built("resnet18")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    expl = onnxxai.analyze(x, GradCAM(model), 7)
    captum = LayerGradCam(net, net.layer4).attribute(x, target=7, relu_attributions=True)
    assert _rel(expl.extras["cam"], captum[:, 0].detach()) < 1e-4
    with PGCGradCAM(model=net, target_layers=[net.layer4[-1]]) as cam:
        scaled = cam(input_tensor=x, targets=[ClassifierOutputTarget(7)] * 2)  # min-max scaled, resized by cv2
    ours = expl.val[:, 0].numpy().astype(np.float64)
    flat = ours.reshape(2, -1)
    ours = (ours - flat.min(1)[:, None, None]) / (1e-7 + np.ptp(flat, 1)[:, None, None])
    assert np.abs(ours - scaled).max() < 1e-3
    assert isinstance(expl.val, torch.Tensor)


def test_split_is_verified_and_runs_in_onnxruntime(built, rng):
    _, path, model = built("resnet18")
    features, head, name = onnxxai.graph.split(path)
    assert name == ARCHS["resnet18"][4]
    assert [o.name for o in features.graph.output] == [name] and [i.name for i in head.graph.input] == [name]
    onnx.checker.check_model(features)
    onnx.checker.check_model(head)
    x = rng.standard_normal((2, 3, 64, 64)).astype(np.float32)
    run = lambda m, feeds: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    (act,) = run(features, {"x": x})
    (y,) = run(head, {name: act})
    (ref,) = run(onnx.load(str(path)), {"x": x})
    assert _rel(y, ref) < 1e-5 and act.shape == (2, 512, 2, 2)
    # an explicit boundary by node name, and from a loaded Model
    f2, h2, name2 = onnxxai.graph.split(model, "/layer3/layer3.1/relu_1/Relu")
    assert name2 == "/layer3/layer3.1/relu_1/Relu_output_0" and len(h2.graph.node) > len(head.graph.node)


def test_split_of_a_token_model_carries_no_side_inputs(built):
    _, path, _ = built("tiny_vit")
    features, head, name = onnxxai.graph.split(path)
    assert name == ARCHS["tiny_vit"][4]
    assert [i.name for i in head.graph.input] == [name]
    assert any(n.op_type == "Shape" for n in head.graph.node)  # the head's own shape computations stay in the head


def test_a_tensor_that_is_not_a_cut_names_the_bypassing_path(built):
    _, path, model = built("resnet18")
    with pytest.raises(graph.BoundaryError) as info:
        graph.split(path, "/layer4/layer4.1/conv1/Conv_output_0")
    message = str(info.value)
    assert "not a cut" in message and "path(s) bypass it" in message
    assert "Add '/layer4/layer4.1/Add'" in message and "/layer4/layer4.0/relu_1/Relu_output_0" in message
    with pytest.raises(graph.BoundaryError, match="weight"):
        GradCAM(model, "fc.weight")
    with pytest.raises(graph.BoundaryError, match="no tensor"):
        GradCAM(model, "nope")
    with pytest.raises(onnxxai.OnnxxaiError, match="the analyzed input"):
        GradCAM(model, "x")


def test_candidate_listing_marks_the_default(built):
    _, path, _ = built("squeezenet1_1")
    found = graph.boundaries(path)
    assert [b.name for b in found if b.default] == [ARCHS["squeezenet1_1"][4]]
    by_name = {b.name: b for b in found}
    relu = by_name["/classifier/classifier.2/Relu_output_0"]  # the 1000-channel class map
    assert relu.kind == "spatial" and "per-class" in relu.note and relu.shape[1:] == (1000, 3, 3)
    assert by_name["/classifier/classifier.3/GlobalAveragePool_output_0"].kind == "other"
    table = graph.format_boundaries(found)
    assert table.splitlines()[0].split()[:3] == ["tensor", "shape", "kind"]
    (marked,) = [line for line in table.splitlines() if line.startswith("*")]
    assert ARCHS["squeezenet1_1"][4] in marked and "[batch, 512, 3, 3]" in marked


def test_vit_final_layernorm_is_skipped_because_patch_tokens_do_not_reach_the_head(built):
    _, path, model = built("tiny_vit")
    found = {b.name: b for b in graph.boundaries(model)}
    ln = found["/encoder/ln/LayerNormalization_output_0"]
    assert ln.kind == "tokens" and "do not influence" in ln.note and not ln.default
    # explaining at that boundary anyway gives the zero map it predicts
    expl = GradCAM(model, ln.name)(torch.randn(2, 3, 32, 32), 0)
    assert float(expl.extras["cam"].abs().max()) == 0.0


def test_token_grid_rule():
    assert graph.token_grid(197, 224, 224) == (1, 14, 14)  # ViT-B/16: class token
    assert graph.token_grid(198, 224, 224) == (2, 14, 14)  # DeiT: class + distillation tokens
    assert graph.token_grid(49, 224, 224) == (0, 7, 7)  # Swin's last stage: no class token
    assert graph.token_grid(33, 32, 64) == (1, 4, 8)  # non-square input, 8×8 patches
    assert graph.token_grid(1 + 4 + 196, 224, 224) == (5, 14, 14)  # class + 4 register tokens
    assert graph.token_grid(1000, 8, 8) is None


def test_mlp_has_no_spatial_boundary(tmp_path):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    model = onnxxai.load(export(mlp, torch.randn(1, 1, 8, 8), tmp_path / "mlp.onnx"))
    with pytest.raises(graph.BoundaryError, match="no cut .* is a spatial feature map") as info:
        GradCAM(model)
    assert "Gradient" in str(info.value)  # says what to use instead


def test_one_pass_equals_split_graphs_batches_and_leaves_the_model_alone(built):
    _, _, model = built("resnet18")
    code, children = model.torch_module.code, dict(model.torch_module.named_children())
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    calls = []
    handle = model.torch_module.get_submodule(next(n for n in children if "conv1" in n)).register_forward_hook(
        lambda *a: calls.append(1))
    try:
        chunked = GradCAM(model, batch_size=2)(x, 4)
    finally:
        handle.remove()
    assert len(calls) == 3  # one forward per chunk (and one backward)
    whole = GradCAM(model)(x, 4)
    two_pass = GradCAM(model, one_pass=False)(x, 4)
    assert not two_pass.extras["one_pass"]
    assert _rel(chunked.val, whole.val) < 1e-6 and _rel(two_pass.val, whole.val) < 1e-5
    np.testing.assert_array_equal(whole.output_selection.numpy(), [4] * 5)
    assert model.torch_module.code == code and dict(model.torch_module.named_children()) == children
    assert not model.torch_module._forward_hooks and all(not m._forward_hooks for m in model.torch_module.modules())
    img = onnxxai.heatmap(whole)
    assert img.shape == (5, 64, 64, 3)


class ChannelsLastBranchy(torch.nn.Module):
    """NHWC input; the convolution's output is split in two (a two-output ONNX node), the second half
    reaches the output only through a boolean mask; the head also reshapes with the input's batch size
    (a shape path from the input)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(4, 5)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        first, second = self.conv(x.permute(0, 3, 1, 2)).split([4, 4], dim=1)
        return torch.relu(first), second > 0

    def head(self, a: torch.Tensor, mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (self.fc(a.mean(dim=(2, 3))) + 0.5 * mask.float().mean()).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(*self.features(x), x)


def test_channels_last_input_multi_output_producer_and_shape_side_inputs(tmp_path):
    torch.manual_seed(0)
    net = ChannelsLastBranchy().eval()
    path = export(net, torch.randn(1, 16, 16, 3), tmp_path / "branchy.onnx")
    model = onnxxai.load(path)
    x = torch.randn(2, 16, 16, 3, generator=torch.Generator().manual_seed(4))
    a, mask = net.features(x)
    (grad,) = torch.autograd.grad(net.head(a, mask, x)[:, 2].sum(), a)
    ref = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * a).sum(1)).detach()

    expl = GradCAM(model)(x, 2)  # default: the ReLU after the split
    assert expl.val.shape == (2, 16, 16, 1)  # the input's layout
    assert _rel(expl.extras["cam"], ref) < 1e-5

    (half,) = [b.name for b in graph.boundaries(model) if b.op_type == "Split"]
    at_split = GradCAM(model, half)(x, 2)  # captured through getitem of a multi-output fx node
    assert at_split.extras["one_pass"] and float(at_split.extras["cam"].max()) > 0
    assert _rel(at_split.val, GradCAM(model, half, one_pass=False)(x, 2).val) < 1e-5

    features, head, name = graph.split(path, half)  # the head needs the mask and the input's batch size
    sides = [o.name for o in features.graph.output]
    assert sides[0] == name and len(sides) == 3 and [i.name for i in head.graph.input] == sides


def test_gradcam_reads_onnxruntime_blocked_nchwc_tensors_in_channel_order(tmp_path):
    """onnxruntime's ALL level keeps a Conv+Relu output in NCHWc memory order ([N][C/B][H][W][B]) under its
    (N, C, H, W) shape; GradCAM there equals GradCAM at the float32 file's Relu output (read as NCHW it mixed
    channels and positions: cosine 0.34, silently)."""
    from onnxxai.convert.contrib_fused import blocked_tensors
    from onnxxai.testing import make_deployment_variant

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 24, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 5)).eval()
    x = torch.rand(2, 3, 16, 16)
    path = export(net, x, tmp_path / "cnn.onnx")
    optimized = onnxxai.load(make_deployment_variant(path, "onnxruntime ALL", tmp_path, []))
    first = next(n for n in optimized.onnx_model.graph.node if n.op_type == "Conv")
    if "nchwc" not in first.domain:
        pytest.skip("onnxruntime writes no NCHWc nodes on this CPU")
    assert first.output[0] in blocked_tensors(optimized.onnx_model)  # the fused Conv+Relu's blocked output
    want = onnxxai.analyze(x.numpy(), GradCAM(onnxxai.load(path), "/1/Relu_output_0"), [1, 2]).val
    got = onnxxai.analyze(x.numpy(), GradCAM(optimized, first.output[0]), [1, 2]).val
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-7)
