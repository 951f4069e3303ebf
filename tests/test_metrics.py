"""onnxxai.metrics against independent references: Quantus 0.6.0 fed the same inputs, attributions and
random draws (PixelFlipping, ROAD, FaithfulnessCorrelation, Infidelity, MaxSensitivity, RandomLogit),
Captum's infidelity(normalize=True), scipy's Spearman and scikit-image's SSIM; the cost bound of
deletion + insertion counted in onnxruntime session calls; and the randomisation and deployment
tests on a real exported CNN.

Deliberate differences from Quantus (the tests set the shared convention explicitly):
* Curves: our deletion/insertion curve includes the clean point (0 features removed) and its AUC is
  the trapezoid over the fraction of features (0..1); Quantus's PixelFlipping curve starts after the
  first step and its AUC is ``np.trapz(dx=1)``. The curve points after the first are equal.
* Image features are pixels (channels together); Quantus flips single channel values. Same on 1-channel images.
* Infidelity defaults to Gaussian perturbations with Captum's normalization; ``perturbation="patches",
  normalize=False`` is Quantus's scheme.
* Random logit draws the other class uniformly among all other classes (Quantus never draws the last
  one: ``randint(0, C - 1)``); here Quantus's draw is fed to ours. SSIM compares 2-D heatmaps, each
  scaled by its own max |a| (Quantus: flattened 1-D vectors, scaled by the batch's max); the Quantus
  side gets the same 2-D SSIM and per-sample scaling.
* Attribution normalisation (Quantus's ``normalise=True`` divides by the batch's max |a|) is off on
  both sides; ranking metrics do not change under it.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import onnxxai
from conftest import ReluCNN
from onnxxai import metrics
from onnxxai.testing import export

SIZE, CLASSES = 16, 10


@pytest.fixture(scope="module")
def quantus():
    """Quantus without TensorFlow (CI has none; here it would only slow the import)."""
    with pytest.MonkeyPatch.context() as mp:
        if "tensorflow" not in sys.modules:
            mp.setitem(sys.modules, "tensorflow", None)  # importlib.util.find_spec("tensorflow") -> None
        import quantus

        yield quantus


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A seeded ReLU CNN on 1x16x16 images, its ONNX export (dynamic batch) and the loaded Model."""
    torch.manual_seed(0)
    module = ReluCNN(channels=1, width=4, classes=CLASSES, size=SIZE).eval()
    path = export(module, torch.randn(1, 1, SIZE, SIZE), tmp_path_factory.mktemp("metrics") / "cnn.onnx")
    return module, path, onnxxai.load(path)


@pytest.fixture(scope="module")
def batch(net):
    """Six blob images in [0, 1], explained by Gradient for the model's predicted class."""
    _, _, model = net
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    x = np.stack([np.exp(-((yy - rng.uniform(3, 12)) ** 2 + (xx - rng.uniform(3, 12)) ** 2) / rng.uniform(6, 20))
                  + 0.1 * rng.random((SIZE, SIZE)) for _ in range(6)])[:, None].astype(np.float32)
    expl = onnxxai.analyze(x, onnxxai.Gradient(model), None)
    return x, expl


def test_pixel_flipping_equals_quantus(quantus, net, batch):
    module, _, model = net
    x, expl = batch
    y, a = expl.output_selection, expl.val
    ours = metrics.deletion(model, expl, steps=17, baseline="black", scores="softmax")  # 16 features a step
    theirs = quantus.PixelFlipping(features_in_step=16, perturb_baseline="black", normalise=False,
                                   disable_warnings=True)(module, x, y, a_batch=a, channel_first=True, device="cpu")
    np.testing.assert_allclose(np.array(ours.curve.per_sample)[:, 1:], np.array(theirs), rtol=1e-5, atol=1e-6)
    assert ours.details["onnxruntime_calls"] == 2  # 6 samples x 17 points in chunks of 64


def test_road_equals_quantus(quantus, net, batch):
    module, _, model = net
    x, expl = batch
    y, a = expl.output_selection, expl.val
    image = x[0].astype(np.float64)
    pixels = np.argsort(-a[0].ravel())[:60]
    np.random.seed(3)
    want = quantus.functions.perturb_func.noisy_linear_imputation(image, pixels, noise=0.01)
    got = metrics.noisy_linear_imputation(image, pixels, 0.01, np.random.RandomState(3))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)

    percentages = [10, 30, 50, 70, 90]
    np.random.seed(5)
    theirs = quantus.ROAD(percentages=percentages, noise=0.2, normalise=False, disable_warnings=True)(
        module, x, y, a_batch=a, channel_first=True, device="cpu")
    ours = metrics.road(model, expl, percentages=percentages, noise=0.2, seed=5)
    np.testing.assert_allclose(ours.curve.y, [theirs[p] for p in percentages], atol=1e-12)
    assert not ours.higher_is_better and metrics.road(model, expl, order="lerf").higher_is_better


def test_faithfulness_correlation_equals_quantus(quantus, net, batch):
    module, _, model = net
    x, expl = batch
    drawn = []

    def replace(arr, indices, **kwargs):  # Quantus's own perturbation, its subsets recorded
        drawn.append(indices.copy())
        return quantus.functions.perturb_func.batch_baseline_replacement_by_indices(arr, indices, **kwargs)

    np.random.seed(7)
    theirs = quantus.FaithfulnessCorrelation(nr_runs=30, subset_size=40, perturb_func=replace, perturb_baseline="black",
                                             normalise=False, return_aggregate=False, disable_warnings=True)(
        module, x, expl.output_selection, a_batch=expl.val, channel_first=True, device="cpu", softmax=False)
    ours = metrics.faithfulness_correlation(model, expl, subsets=np.stack(drawn, axis=1), baseline="black", scores="raw")
    np.testing.assert_allclose(ours.per_sample, theirs, rtol=1e-5, atol=1e-5)
    assert ours.higher_is_better


def test_infidelity_equals_quantus_and_captum(quantus, net, batch):
    module, _, model = net
    x, expl = batch
    theirs = quantus.Infidelity(perturb_patch_sizes=[4], n_perturb_samples=1, perturb_baseline="black",
                                normalise=False, disable_warnings=True)(
        module, x, expl.output_selection, a_batch=expl.val, channel_first=True, device="cpu", softmax=False)
    ours = metrics.infidelity(model, expl, perturbation="patches", patch_size=4, baseline="black", normalize=False,
                              scores="raw")
    np.testing.assert_allclose(ours.per_sample, theirs, rtol=1e-5)

    # Captum's normalize=True on the same Gaussian draws (ours: sample by sample, repeat_interleave layout)
    from captum.metrics import infidelity

    n, std, seed = 16, 0.1, 2
    rng = np.random.RandomState(seed)
    noise = np.concatenate([rng.standard_normal((n, 1, SIZE, SIZE)) * std for _ in range(len(x))])
    perturbed = (np.repeat(x, n, axis=0).astype(np.float64) - noise).astype(np.float32)
    shift = torch.from_numpy(np.repeat(x, n, axis=0).astype(np.float64) - perturbed.astype(np.float64)).float()

    def perturb(inputs):
        return shift, torch.from_numpy(perturbed)

    want = infidelity(module, perturb, torch.from_numpy(x), torch.from_numpy(expl.val),
                      target=torch.as_tensor(expl.output_selection), n_perturb_samples=n, normalize=True)
    got = metrics.infidelity(model, expl, samples=n, std=std, seed=seed, scores="raw")
    np.testing.assert_allclose(got.per_sample, want.numpy(), rtol=1e-4)
    scaled = metrics.infidelity(model, metrics.explanation_of(x, 7.0 * expl.val, expl.output_selection),
                                samples=n, std=std, seed=seed, scores="raw")
    np.testing.assert_allclose(scaled.per_sample, got.per_sample, rtol=1e-6)  # normalized: scale-free


def test_max_sensitivity_equals_quantus(quantus, net, batch):
    module, _, model = net
    x, expl = batch
    analyzer = onnxxai.Gradient(model)

    def explain(model, inputs, targets, **kwargs):
        return onnxxai.analyze(np.asarray(inputs, dtype=np.float32), analyzer, np.asarray(targets)).val

    np.random.seed(11)
    theirs = quantus.MaxSensitivity(nr_samples=4, lower_bound=0.05, normalise=False, disable_warnings=True)(
        module, x, expl.output_selection, a_batch=expl.val, explain_func=explain, channel_first=True, device="cpu")
    ours = metrics.max_sensitivity(analyzer, expl, samples=4, radius=0.05, seed=11)
    np.testing.assert_allclose(ours.per_sample, theirs, rtol=1e-5)
    assert min(ours.per_sample) > 0


def test_random_logit_equals_quantus(quantus, net, batch):
    from skimage.metrics import structural_similarity

    module, _, model = net
    x, expl = batch
    analyzer = onnxxai.Gradient(model)
    asked = []

    def explain(model, inputs, targets, **kwargs):
        asked.append(np.asarray(targets))
        return onnxxai.analyze(np.asarray(inputs, dtype=np.float32), analyzer, np.asarray(targets)).val

    def ssim_2d(a, b, batched=True, **kwargs):
        out = []
        for aa, bb in zip(a, b):
            both = np.concatenate([aa, bb])
            out.append(structural_similarity(aa.reshape(SIZE, SIZE).astype(np.float64), bb.reshape(SIZE, SIZE).astype(np.float64),
                                             data_range=float(both.max() - both.min())))
        return out

    theirs = quantus.RandomLogit(num_classes=CLASSES, seed=13, similarity_func=ssim_2d,
                                 normalise_func_kwargs={"normalise_axes": (1, 2, 3)}, disable_warnings=True)(
        module, x, expl.output_selection, a_batch=expl.val, explain_func=explain, channel_first=True, device="cpu")
    (off,) = asked
    ours = metrics.random_logit(analyzer, expl, off_target=off)
    np.testing.assert_allclose(ours["ssim"].per_sample, theirs, rtol=1e-5, atol=1e-6)
    drawn = metrics.random_logit(analyzer, expl, seed=0)["ssim"].details["off_target"]
    assert all(o != t for o, t in zip(drawn, expl.output_selection))


def test_similarities_match_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 1, 12, 10))
    b = a + rng.standard_normal(a.shape)
    b[0, 0, :4] = 0.0  # ties
    a[0, 0, :3] = 1.0
    rho = metrics.spearman(a, b)
    for i in range(3):
        assert rho[i] == pytest.approx(spearmanr(a[i].ravel(), b[i].ravel())[0], abs=1e-12)
    s = metrics.ssim(a, b)
    for i in range(3):
        ma, mb = a[i, 0] / np.abs(a[i, 0]).max(), b[i, 0] / np.abs(b[i, 0]).max()
        both = np.concatenate([ma.ravel(), mb.ravel()])
        want = structural_similarity(ma, mb, data_range=float(both.max() - both.min()))
        assert s[i] == pytest.approx(want, abs=1e-12)
    assert metrics.ssim(a, a) == pytest.approx(np.ones(3))
    assert metrics.top_k_iou(a, a).tolist() == [1.0, 1.0, 1.0]
    assert metrics.top_k_iou(a, -a).max() < 0.2


def test_deletion_and_insertion_cost_on_a_224_image(tmp_path):
    """Acceptance: one 224x224 RGB image, one method: both curves in at most 64 forward passes and
    at most 4 onnxruntime calls on a dynamic-batch file."""
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 7, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                 torch.nn.Flatten(), torch.nn.Linear(4, 5)).eval()
    path = export(module, torch.randn(1, 3, 224, 224), tmp_path / "wide.onnx")
    runtime = onnxxai.load_runtime(path)
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    expl = metrics.explanation_of(x, np.random.default_rng(1).random((1, 1, 224, 224)), [2], output=runtime(x))
    before = runtime.calls
    d = metrics.deletion(runtime, expl)
    i = metrics.insertion(runtime, expl)
    passes = d.details["forward_passes"] + i.details["forward_passes"]
    assert passes <= 64 and runtime.calls - before <= 4, (passes, runtime.calls - before)
    assert len(d.curve.x) == 32 and d.curve.x[0] == 0.0 and d.curve.x[-1] == 1.0


def test_deletion_insertion_rank_a_faithful_attribution_above_random(net, batch):
    """On a linear model the exact attribution w⊙x must beat random ones; curve ends are the clean and
    fully replaced inputs (independent evaluation)."""
    _, _, model = net
    x, expl = batch
    d, r = metrics.deletion(model, expl), metrics.deletion(model, metrics.random_explanation(expl))
    assert d.curve.y[0] == pytest.approx(float(np.mean(
        torch.softmax(torch.from_numpy(model(x)), 1).numpy()[np.arange(len(x)), expl.output_selection])), rel=1e-4)
    ixg = onnxxai.analyze(x, onnxxai.InputTimesGradient(model), expl.output_selection)
    assert metrics.deletion(model, ixg).value < r.value
    assert metrics.insertion(model, ixg).value > metrics.insertion(model, metrics.random_explanation(expl)).value
    payload = d.to_dict()
    assert payload["higher_is_better"] is False and len(payload["curve"]["per_sample"]) == len(x)


def test_model_parameter_randomisation_randomises_every_parameterised_node(net, batch):
    _, _, model = net
    x, expl = batch
    nodes = metrics.parameterised_nodes(model.original)
    assert [n.op_type for n in nodes] == ["Conv", "Conv", "Gemm"]
    before = [t.SerializeToString() for t in model.original.graph.initializer]
    res = metrics.model_parameter_randomisation(model, expl, "gradient", mode="cascading")
    assert [t.SerializeToString() for t in model.original.graph.initializer] == before  # the user's model untouched
    spear = res["spearman"]
    assert spear.details["parameterised_nodes"] == spear.details["randomised_nodes"] == 3
    assert len(spear.curve.y) == 3 and spear.value == spear.curve.y[-1] and spear.value < 0.5
    changed = metrics.randomise(model.original, nodes, seed=0)
    old = {t.name: t.raw_data for t in model.original.graph.initializer}
    assert all(t.raw_data != old[t.name] for t in changed.graph.initializer if any(t.name in n.initializers for n in nodes))
    independent = metrics.model_parameter_randomisation(model, expl, "gradient", mode="independent",
                                                        similarities=("ssim",))
    assert independent["ssim"].details["randomised_nodes"] == 3 and len(independent["ssim"].curve.y) == 3
    # a test that can fail: an explanation that ignores the parameters stays identical
    same = metrics.model_parameter_randomisation(model, expl, lambda m: _Constant(expl.val), similarities=("spearman",))
    assert same["spearman"].value == pytest.approx(1.0)


class _Constant:
    """An 'analyzer' that returns the same attribution whatever the model: the sanity test must flag it."""

    def __init__(self, val):
        self.val = val

    def __call__(self, x, target):
        return onnxxai.Explanation(self.val, x, None, target, "Constant", "attribution")


def test_deployment_shift_against_itself_and_a_perturbed_copy(net, batch):
    import onnx

    _, path, model = net
    x, _ = batch
    same = metrics.deployment_shift(model, model, x, ["gradient"])
    assert same.agreement == 1.0 and same.similarity["gradient"]["spearman"].value == pytest.approx(1.0)
    assert same.similarity["gradient"]["top_k_iou"].value == pytest.approx(1.0)
    proto = onnx.load(str(path))
    nodes = metrics.parameterised_nodes(proto)
    other = onnxxai.load(metrics.randomise(proto, nodes[:1], seed=1))
    shift = metrics.deployment_shift(other, model, x, ["gradient"], top=3)
    assert shift.similarity["gradient"]["spearman"].value < 0.9
    assert len(shift.most_moved["gradient"]) == 3
    import json

    json.dumps(shift.to_dict())


def test_a_constant_map_shares_no_ranking_with_a_real_one():
    """A zero explanation (a quantized file's flat gradient) must not drop out of a mean as scipy's NaN would:
    against a real map it scores 0, against another constant map 1, and ``constant_maps`` finds it."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 1, 8, 8))
    b = a + 0.1 * rng.standard_normal(a.shape)
    b[1] = 0.0
    a[2] = b[2] = 0.5
    assert metrics.constant_maps(b).tolist() == [False, True, True]
    rho, iou = metrics.spearman(a, b), metrics.top_k_iou(a, b)
    assert rho[0] > 0.9 and rho[1] == 0.0 and rho[2] == 1.0
    assert iou[1] == 0.0 and iou[2] == 1.0
    assert metrics.ssim(a, b)[2] == 1.0
