"""Black-box methods on onnxruntime alone: Occlusion, FeatureAblation, KernelSHAP and LIME equal Captum's
when Captum's forward runs the same onnxruntime session (so only the method differs); RISE's masks
follow the paper's code; fixed-batch files, files that do not convert, and a torch-free interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
from captum._utils.models.linear_model import SkLearnLasso
from captum.attr import FeatureAblation as CaptumFeatureAblation
from captum.attr import KernelShap as CaptumKernelShap
from captum.attr import Lime as CaptumLime
from captum.attr import Occlusion as CaptumOcclusion
from onnx import TensorProto, helper

import onnxxai
from onnxxai import FeatureAblation, KernelSHAP, LIME, Occlusion, RISE, column_mask, grid_mask, load_runtime
from onnxxai.blackbox.rise import linear_upsample_matrix
from onnxxai.errors import AnalyzerError
from onnxxai.testing import WITHOUT_TORCH, export

LENET = "models/lenet5_mnist.onnx"


@pytest.fixture(scope="module")
def lenet():
    return load_runtime(LENET)


@pytest.fixture(scope="module")
def digits():
    return np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)


def forward_of(runtime):
    """Captum's forward: the same onnxruntime session."""
    return lambda t: torch.from_numpy(runtime(t.detach().numpy()))


def replay(rows: np.ndarray):
    """A Captum perturb_func generator yielding the given coalitions in order."""
    def generator(original_inp, **kwargs):
        for row in rows:
            yield torch.from_numpy(row[None].astype(np.int64))
    return generator


def test_occlusion_equals_captum(lenet, digits):
    expl = onnxxai.analyze(digits, Occlusion(lenet, (1, 5, 5), (1, 3, 3), baseline=0.25))
    ref = CaptumOcclusion(forward_of(lenet)).attribute(
        torch.from_numpy(digits), sliding_window_shapes=(1, 5, 5), strides=(1, 3, 3), baselines=0.25,
        target=torch.from_numpy(expl.output_selection), perturbations_per_eval=64)
    np.testing.assert_allclose(expl.val, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(expl.val).max() > 0.1
    assert expl.extras["n_windows"] == 81 and expl.extras["forwards"] == 2 + 2 * 81
    assert expl.extras["n_calls"] == 1 + 3  # clean run, then 162 rows in chunks of 64
    # image shorthand: (height, width) windows span the channels
    short = Occlusion(lenet, 5, 3, baseline=0.25)(digits)
    np.testing.assert_array_equal(short.val, expl.val)


def test_feature_ablation_equals_captum_on_grid_and_columns(lenet, digits):
    mask = grid_mask(digits.shape, 4)
    assert mask.shape == (1, 1, 28, 28) and mask.max() == 48
    expl = FeatureAblation(lenet, mask, baseline=0.5)(digits, 3)
    ref = CaptumFeatureAblation(forward_of(lenet)).attribute(
        torch.from_numpy(digits), baselines=0.5, feature_mask=torch.from_numpy(mask), target=3, perturbations_per_eval=50)
    np.testing.assert_allclose(expl.val, ref.numpy(), rtol=1e-5, atol=1e-5)
    assert (expl.output_selection == 3).all()


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    return load_runtime(export(net, torch.randn(2, 6), tmp_path_factory.mktemp("bb") / "mlp.onnx"))


def test_tabular_columns_and_groups(tabular):
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    mask = column_mask(6, [["a", "c"], [4, 5]], columns=list("abcdef"))
    np.testing.assert_array_equal(mask, [0, 1, 0, 2, 3, 3])
    base = x.mean(0)
    expl = FeatureAblation(tabular, mask, baseline=base)(x)
    ref = CaptumFeatureAblation(forward_of(tabular)).attribute(
        torch.from_numpy(x), baselines=torch.from_numpy(base[None]), feature_mask=torch.from_numpy(mask[None]),
        target=torch.from_numpy(expl.output_selection))
    np.testing.assert_allclose(expl.val, ref.numpy(), rtol=1e-5, atol=1e-6)
    # default mask: one feature per column; KernelSHAP with every coalition of 6 features is exact Shapley
    ks = KernelSHAP(tabular, n=400, baseline=base, seed=0)(x)
    fx = tabular(x)[np.arange(4), ks.output_selection]
    f0 = tabular(np.broadcast_to(base, x.shape))[np.arange(4), ks.output_selection]
    np.testing.assert_allclose(ks.val.sum(1), fx - f0, atol=1e-4)


def test_kernelshap_equals_captum_with_the_same_coalitions(lenet, digits):
    x = digits[:1]
    mask = grid_mask(x.shape, 7)  # 16 features
    ks = KernelSHAP(lenet, n=150, feature_mask=mask, baseline=0.1, seed=3)
    expl = ks(x)
    coalitions = ks.sample(16, np.random.default_rng([3, 0]))  # what the analyzer drew for sample 0
    assert coalitions[0].all() and not coalitions[1].any()
    results = {}
    for weight in (1e6, 1e8):  # Captum's soft endpoint constraint (weight 1e6 by default) tends to ours
        captum = CaptumKernelShap(forward_of(lenet))
        captum.perturb_func, captum.inf_weight = replay(coalitions), weight
        results[weight] = captum.attribute(torch.from_numpy(x), baselines=0.1, feature_mask=torch.from_numpy(mask),
                                           target=int(expl.output_selection[0]), n_samples=150,
                                           perturbations_per_eval=64).numpy()
    scale = np.abs(expl.val).max()
    np.testing.assert_allclose(expl.val, results[1e8], atol=1e-5 * scale)
    np.testing.assert_allclose(expl.val, results[1e6], atol=1e-4 * scale)
    # efficiency: the attributions of the 16 features sum to f(x) - f(baseline)
    phi = expl.val[0, 0, ::7, ::7].sum()
    fx = lenet(x)[0, expl.output_selection[0]]
    f0 = lenet(np.full_like(x, 0.1))[0, expl.output_selection[0]]
    assert abs(phi - (fx - f0)) < 1e-4
    assert abs(expl.extras["efficiency_gap"][0]) < 1e-9 and abs(expl.extras["expected_value"][0] - f0) < 1e-5


def test_lime_equals_captum_with_the_same_coalitions(lenet, digits):
    x = digits[1:]
    mask = grid_mask(x.shape, 7)
    lime = LIME(lenet, n=200, kernel_width=0.75, feature_mask=mask, seed=5)
    expl = lime(x)
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    captum = CaptumLime(forward_of(lenet), interpretable_model=SkLearnLasso(alpha=0.01, tol=1e-7, max_iter=100_000),
                        similarity_func=get_exp_kernel_similarity_function("cosine", 0.75))
    captum.perturb_func = replay(lime.sample(16, np.random.default_rng([5, 0])))
    ref = captum.attribute(torch.from_numpy(x), baselines=0, feature_mask=torch.from_numpy(mask),
                           target=int(expl.output_selection[0]), n_samples=200, perturbations_per_eval=64)
    np.testing.assert_allclose(expl.val, ref.numpy(), atol=1e-5 * np.abs(expl.val).max())
    assert np.count_nonzero(expl.val[0, 0, ::7, ::7]) > 3  # not all shrunk to zero


def test_rise_masks_follow_the_paper_code():
    from skimage.transform import resize

    for size, out in [(7, 32), (5, 24), (1, 6)]:  # one axis of resize(order=1, mode="reflect")
        grid = np.random.default_rng(size).random((size, size))
        ref = resize(grid, (out, out), order=1, mode="reflect", anti_aliasing=False)
        a = linear_upsample_matrix(size, out)
        np.testing.assert_allclose(a @ grid @ a.T, ref, atol=1e-12)
    rt = load_runtime(LENET)
    rise = RISE(rt, n=20, cell=7, p=0.4, seed=2)
    grids, shifts, _, _ = rise.plan(28, 28)
    masks = rise.masks(28, 28)
    cell = 4  # ceil(28 / 7)
    for i in range(20):  # the paper's generate_masks, line by line
        up = resize(grids[i], (8 * cell, 8 * cell), order=1, mode="reflect", anti_aliasing=False)
        np.testing.assert_allclose(masks[i], up[shifts[i, 0]:shifts[i, 0] + 28, shifts[i, 1]:shifts[i, 1] + 28], atol=1e-12)
    assert (shifts >= 0).all() and (shifts < cell).all()
    np.testing.assert_array_equal(RISE(rt, n=20, cell=7, p=0.4, seed=2).masks(28, 28), masks)  # deterministic
    assert not np.array_equal(RISE(rt, n=20, cell=7, p=0.4, seed=3).masks(28, 28), masks)


def test_rise_saliency_is_the_weighted_mask_mean(lenet, digits):
    rise = RISE(lenet, n=50, cell=4, p=0.5, seed=1)
    expl = rise(digits, [2, 7])
    masks = rise.masks(28, 28)
    for b, cls in enumerate([2, 7]):
        scores = lenet(digits[b] * masks[:, None].astype(np.float32))[:, cls]
        want = np.tensordot(scores, masks, axes=1) / (50 * 0.5)
        np.testing.assert_allclose(expl.val[b, 0], want, rtol=1e-5, atol=1e-6)
    assert expl.heatmap == "cam"


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 7, stride=4)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class Pooled(torch.nn.Module):
    """A cheap 224x224 classifier: 16x16 average pooling, then a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 14 * 14, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.nn.functional.avg_pool2d(x, 16).flatten(1))


def test_rise_4000_masks_on_224_take_few_session_calls(tmp_path):
    torch.manual_seed(0)
    rt = load_runtime(export(Pooled(), torch.randn(1, 3, 224, 224), tmp_path / "pooled224.onnx"))
    assert rt.batch_mode == "dynamic"
    x = np.random.default_rng(0).random((1, 3, 224, 224)).astype(np.float32)
    expl = RISE(rt, n=4000, seed=0)(x)
    assert expl.extras["forwards"] == 4001
    assert expl.extras["n_calls"] < 4000 / 32, expl.extras
    assert expl.val.shape == x.shape and np.isfinite(expl.val).all()


class BakedLinear(torch.nn.Module):
    """Per-sample outputs, but a Reshape bakes the export's batch of 2 into the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(2, -1))


def test_fixed_batch_files(tmp_path, lenet):
    torch.manual_seed(0)
    fixed = load_runtime(export(BakedLinear(), torch.randn(2, 3, 4), tmp_path / "baked.onnx", dynamic_batch=False))
    assert fixed.batch_mode == "fixed" and fixed.fixed_batch == 2
    x = np.random.default_rng(0).standard_normal((3, 3, 4)).astype(np.float32)
    expl = Occlusion(fixed, (2, 2), (1, 2))(x)
    ref = CaptumOcclusion(forward_of(fixed)).attribute(torch.from_numpy(x), sliding_window_shapes=(2, 2),
                                                       strides=(1, 2), target=torch.from_numpy(expl.output_selection),
                                                       perturbations_per_eval=7)
    np.testing.assert_allclose(expl.val, ref.numpy(), rtol=1e-5, atol=1e-6)
    # a relaxable fixed-batch export (LeNet-like CNN with batch 1) is run at the runtime's batch
    relaxed = load_runtime(export(SmallNet(), torch.randn(1, 3, 32, 32), tmp_path / "b1.onnx", dynamic_batch=False))
    assert relaxed.batch_mode == "relaxed"
    img = np.random.default_rng(1).random((1, 3, 32, 32)).astype(np.float32)
    ks = KernelSHAP(relaxed, n=64, seed=0)(img)
    assert ks.extras["batch_mode"] == "relaxed" and ks.extras["n_calls"] == 2


def test_token_ids_are_ablated_to_the_pad_id(tmp_path):
    vocab, dim = 20, 4
    table = np.random.default_rng(0).standard_normal((vocab, dim)).astype(np.float32)
    weights = np.random.default_rng(1).standard_normal((dim, 2)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["emb"]),
             helper.make_node("ReduceSum", ["emb", "axis"], ["pooled"], keepdims=0),
             helper.make_node("MatMul", ["pooled", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "tokens", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])],
        [helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.ravel()),
         helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
         helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())])
    rt = load_runtime(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    ids = np.array([[3, 7, 7, 1, 0], [5, 2, 9, 9, 9]], dtype=np.int64)
    expl = FeatureAblation(rt, baseline=0)(ids, 1)
    # the model is additive over tokens: ablating token t to pad 0 removes (table[t] - table[0]) @ w
    want = (table[ids] - table[0]) @ weights[:, 1]
    np.testing.assert_allclose(expl.val, want, rtol=1e-5, atol=1e-5)
    assert expl.val.dtype == np.float32 and expl.val.shape == ids.shape
    ks = KernelSHAP(rt, n=100, baseline=0, seed=0)(ids, 1)
    np.testing.assert_allclose(ks.val, want, rtol=1e-4, atol=1e-4)  # exact for an additive model
    with pytest.raises(AnalyzerError, match="pad or mask id"):
        FeatureAblation(rt, baseline=0.5)(ids)


def test_torch_model_and_torch_tensors(digits):
    model = onnxxai.load(LENET)
    t = torch.from_numpy(digits)
    expl = onnxxai.analyze(t, Occlusion(model, 7, 7))
    assert isinstance(expl.val, torch.Tensor) and expl.val.shape == t.shape
    ref = Occlusion(load_runtime(LENET), 7, 7)(digits)
    np.testing.assert_allclose(expl.val.numpy(), ref.val, rtol=1e-6)


def unconvertible_model() -> onnx.ModelProto:
    """An image model with GlobalLpPool, an op onnxruntime runs and no converter handles."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalLpPool", ["c"], ["p"], p=2),
             helper.make_node("Flatten", ["p"], ["y"])]
    graph = helper.make_graph(nodes, "lp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_file_that_does_not_convert_gets_black_box_explanations(tmp_path):
    path = tmp_path / "lp.onnx"
    onnx.save(unconvertible_model(), path)
    with pytest.raises(onnxxai.UnsupportedOpError, match="GlobalLpPool"):
        onnxxai.load(path)
    model = onnxxai.load_any(path)
    assert isinstance(model, onnxxai.RuntimeModel) and "GlobalLpPool" in model.conversion_error
    x = np.random.default_rng(0).random((1, 3, 16, 16)).astype(np.float32)
    expl = Occlusion(model, 4, 4)(x)
    assert np.abs(expl.val).max() > 0 and "GlobalLpPool" in expl.extras["conversion_error"]
    with pytest.raises(AnalyzerError, match="GlobalLpPool.*Occlusion, FeatureAblation, RISE, KernelSHAP, LIME, TreeSHAP"):
        onnxxai.IntegratedGradients(model)
    assert isinstance(onnxxai.load_any(LENET), onnxxai.Model)


def test_black_box_methods_work_without_torch():
    code = textwrap.dedent(f"""
        import numpy as np
        import onnxxai
        model = onnxxai.load_any({LENET!r})
        assert isinstance(model, onnxxai.RuntimeModel) and "torch" in model.conversion_error
        x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
        for analyzer in [onnxxai.Occlusion(model, 7, 7), onnxxai.FeatureAblation(model), onnxxai.RISE(model, n=64),
                         onnxxai.KernelSHAP(model, n=40), onnxxai.LIME(model, n=40)]:
            expl = onnxxai.analyze(x, analyzer, 3)
            assert expl.val.shape == x.shape and isinstance(expl.val, np.ndarray), analyzer
            assert list(expl.output_selection) == [3, 3]
        assert "torch" not in sys.modules
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", WITHOUT_TORCH + code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_bad_arguments_are_named(lenet, digits, tabular):
    with pytest.raises(AnalyzerError, match="does not fit"):
        FeatureAblation(lenet, np.zeros((5, 5), np.int64))(digits)
    with pytest.raises(AnalyzerError, match="strides"):
        Occlusion(lenet, 3, 5)(digits)
    with pytest.raises(AnalyzerError, match="RuntimeModel"):
        Occlusion(object(), 3)
    with pytest.raises(onnxxai.InputError, match="rank-4 image"):
        RISE(tabular, n=4)(np.zeros((1, 6), np.float32))


def test_cli_explains_csv_rows_and_files_that_do_not_convert(tmp_path, tabular, capsys):
    from onnxxai.cli import main

    model = tmp_path / "mlp.onnx"
    onnx.save(tabular.onnx_model, model)
    table = tmp_path / "rows.csv"
    x = np.random.default_rng(3).standard_normal((3, 6)).astype(np.float32)
    table.write_text("a,b,c,d,e,f\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in x) + "\n")
    out = tmp_path / "out"
    assert main(["run", str(model), str(table), "--method", "kernelshap", "--samples", "200", "--out", str(out), "--quiet"]) == 0
    lines = (out / "rows_kernelshap.csv").read_text().splitlines()
    assert lines[0] == "row,target,a,b,c,d,e,f" and len(lines) == 4
    written = np.array([[float(v) for v in line.split(",")[2:]] for line in lines[1:]])
    want = KernelSHAP(load_runtime(model), n=200, seed=0)(x)
    np.testing.assert_allclose(written, want.val, rtol=1e-6, atol=1e-7)
    assert all((out / f"rows_kernelshap_row{i}.png").stat().st_size > 1000 for i in range(3))

    lp = tmp_path / "lp.onnx"
    onnx.save(unconvertible_model(), lp)
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(image)
    for name in ("occlusion", "rise", "kernelshap", "lime"):
        assert main(["run", str(lp), str(image), "--method", name, "--samples", "64", "--out", str(out), "--quiet"]) == 0
        assert (out / f"img_{name}_overlay.png").exists()
    capsys.readouterr()
    assert main(["run", str(lp), str(image), "--method", "gradient", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GlobalLpPool" in err and "occlusion|feature-ablation|rise|kernelshap|lime" in err
