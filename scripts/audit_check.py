"""The audit metrics' acceptance figures on the shipped LeNet-5 and 100 held-out digits.

Prints, for Integrated Gradients, LRP and GradCAM: deletion and insertion AUC against random
attributions (acceptance: deletion at most half of random's, insertion at least 1.5x random's, judged by
the audit report's own rule, which says N/A when the scores' bound makes 1.5x unreachable for any
explanation -- with ``--peers``, GradCAM's deletion is recomputed by pytorch-grad-cam on onnx2torch's
module and scored by Quantus's PixelFlipping, independently of onnxxai); the
cascading model-parameter randomisation of Gradient (Spearman once every layer is randomised, must be
below 0.3; SSIM and the absolute-value Spearman beside it); the random-logit test's mean SSIM (below
0.5); and the deployment shift of LeNet float32 vs its int8 QDQ file (onnxruntime's quantize_static,
calibrated on 32 other held-out digits).

    python scripts/audit_check.py [--digits 100] [--json out.json] [--peers] [--subsets 4]

``--subsets K`` repeats the deletion ratios of IG and GradCAM and random attributions' insertion AUC
on K further disjoint sets of ``--digits`` held-out digits (how much the figures depend on the digits).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import onnxxai
from onnxxai import metrics
from onnxxai.audit import verdict_of
from onnxxai.methods import MethodOptions
from onnxxai.testing import balanced_held_out_digits, make_deployment_variant

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    parser.add_argument("--subsets", type=int, default=0, help="disjoint further digit sets to repeat deletion on")
    parser.add_argument("--peers", action="store_true",
                        help="also score pytorch-grad-cam's GradCAM with Quantus's PixelFlipping (needs grad-cam, quantus)")
    args = parser.parse_args()
    model = onnxxai.load(LENET)
    x, y = balanced_held_out_digits(ROOT, args.digits)
    out: dict = {"digits": len(y)}
    print(f"LeNet-5 ({LENET.name}), {len(y)} held-out digits, explained for their true class\n")

    print("method               deletion AUC (random)  ratio   insertion AUC (random)  ratio   verdict")
    analyzers = {"integrated-gradients": onnxxai.IntegratedGradients(model, n=32), "lrp": onnxxai.LRP(model),
                 "gradcam": onnxxai.GradCAM(model)}
    random = None
    for name, analyzer in analyzers.items():
        expl = onnxxai.analyze(x, analyzer, y)
        random = random or metrics.random_explanation(expl, seed=0)
        d, i = metrics.deletion(model, expl), metrics.insertion(model, expl)
        rd, ri = metrics.deletion(model, random), metrics.insertion(model, random)
        verdicts = {r.name: verdict_of({"name": r.name, "value": r.value, "params": r.params}, c.value)
                    for r, c in ((d, rd), (i, ri))}
        words = {k: "N/A" if v["passed"] is None else "PASS" if v["passed"] else "FAIL" for k, v in verdicts.items()}
        print(f"{name:20s} {d.value:.4f} ({rd.value:.4f})       {d.value / rd.value:.3f}   "
              f"{i.value:.4f} ({ri.value:.4f})        {i.value / ri.value:.3f}   "
              f"deletion {words['deletion_auc']}, insertion {words['insertion_auc']}")
        if verdicts["insertion_auc"]["passed"] is None:
            print(f"{'':20s} insertion N/A: {verdicts['insertion_auc']['reason']}")
        out[name] = {"deletion": d.value, "deletion_random": rd.value, "insertion": i.value, "insertion_random": ri.value,
                     "verdicts": words}
        for label, kwargs in {"insertion, logit scores": {"scores": "raw"}, "insertion from zeros": {"start": 0.0}}.items():
            a, b = metrics.insertion(model, expl, **kwargs), metrics.insertion(model, random, **kwargs)
            print(f"{'':20s} {label}: {a.value:.4f} ({b.value:.4f}) ratio {a.value / b.value:.3f}")
            out[name][label] = [a.value, b.value]

    if args.peers:
        out["peers_gradcam_deletion"] = _peers_gradcam_deletion(x, y)
    if args.subsets:
        out["subsets"] = _subsets(model, args.digits, args.subsets)

    expl = onnxxai.analyze(x, onnxxai.Gradient(model), y)
    start = time.perf_counter()
    mprt = metrics.model_parameter_randomisation(model, expl, "gradient", mode="cascading")
    absolute = metrics.model_parameter_randomisation(model, expl, "gradient", mode="cascading", absolute=True,
                                                     similarities=("spearman",))
    s = mprt["spearman"]
    print(f"\ncascading MPRT of Gradient ({s.details['randomised_nodes']} of {s.details['parameterised_nodes']} "
          f"parameterised nodes randomised, {time.perf_counter() - start:.1f} s):")
    for label, sp, ss, sa in zip(s.curve.x, s.curve.y, mprt["ssim"].curve.y, absolute["spearman"].curve.y):
        print(f"  {label:40s} Spearman {sp:+.3f}  SSIM {ss:.3f}  Spearman(|a|) {sa:+.3f}")
    print(f"  all layers randomised: Spearman {s.value:+.3f} (acceptance < 0.3: {'PASS' if s.value < 0.3 else 'FAIL'})")
    out["mprt_gradient"] = {"spearman": s.value, "ssim": mprt["ssim"].value, "spearman_abs": absolute["spearman"].value,
                            "curve": s.curve.y, "randomised": s.details["randomised_nodes"],
                            "parameterised": s.details["parameterised_nodes"]}

    print("\nrandom-logit test (mean SSIM, acceptance < 0.5; Spearman beside it):")
    out["random_logit"] = {}
    for name, analyzer in {"gradient": onnxxai.Gradient(model), **analyzers}.items():
        base = onnxxai.analyze(x, analyzer, y)
        rl = metrics.random_logit(analyzer, base, seed=0)
        verdict = "PASS" if rl["ssim"].value < 0.5 else "FAIL"
        print(f"  {name:20s} SSIM {rl['ssim'].value:.3f}  Spearman {rl['spearman'].value:+.3f}  {verdict}")
        out["random_logit"][name] = {"ssim": rl["ssim"].value, "spearman": rl["spearman"].value}

    calib, _ = balanced_held_out_digits(ROOT, 32, offset=args.digits)
    with tempfile.TemporaryDirectory() as folder:
        qdq_path = make_deployment_variant(LENET, "int8 QDQ", Path(folder),
                                           [{"image": calib[i:i + 1]} for i in range(len(calib))])
        qdq = onnxxai.load(qdq_path)
        shift = metrics.deployment_shift(qdq, model, x, ["gradient", "integrated-gradients", "lrp", "gradcam"],
                                         options=MethodOptions(samples=32))
    print(f"\ndeployment shift, LeNet int8 QDQ ({qdq.artifact}) vs float32: prediction agreement "
          f"{shift.agreement:.1%}, largest output difference {max(shift.output_max_abs_difference):.3g}")
    for name, why in shift.errors.items():
        print(f"  {name:20s} not compared: {why}")
    for name, sims in shift.similarity.items():
        moved = ", ".join(f"#{i} ({v:+.2f})" for i, v in shift.most_moved[name][:3])
        print(f"  {name:20s} Spearman {sims['spearman'].value:.3f}  top-10% IoU {sims['top_k_iou'].value:.3f}  "
              f"SSIM {sims['ssim'].value:.3f}   moved most: {moved}")
        constant = sims["spearman"].details["constant_maps"]
        if constant["model"] or constant["reference"]:
            print(f"  {'':20s} constant (all-zero) explanations: {len(constant['model'])} of {len(y)} inputs on the int8 "
                  f"file, {len(constant['reference'])} on the float32 file (scored 0)")
    out["deployment_shift"] = shift.to_dict()
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def _subsets(model: onnxxai.Model, digits: int, count: int) -> list[dict]:
    """Deletion ratios of IG and GradCAM, and random attributions' insertion AUC, on further disjoint digit sets."""
    print(f"\nfurther disjoint sets of {digits} held-out digits:")
    rows = []
    for k in range(1, count + 1):
        x, y = balanced_held_out_digits(ROOT, digits, offset=k * digits)
        if len(y) < digits:
            print(f"  only {k - 1} further sets of {digits} held-out digits")
            break
        ig = onnxxai.analyze(x, onnxxai.IntegratedGradients(model, n=32), y)
        cam = onnxxai.analyze(x, onnxxai.GradCAM(model), y)
        random = metrics.random_explanation(ig, seed=0)
        rd = metrics.deletion(model, random).value
        row = {"offset": k * digits, "integrated-gradients": metrics.deletion(model, ig).value / rd,
               "gradcam": metrics.deletion(model, cam).value / rd, "random_deletion": rd,
               "random_insertion": metrics.insertion(model, random).value}
        print(f"  digits {row['offset']}-{row['offset'] + digits - 1}: deletion ratio IG {row['integrated-gradients']:.3f}, "
              f"GradCAM {row['gradcam']:.3f} (random AUC {rd:.3f}); random insertion AUC {row['random_insertion']:.3f}")
        rows.append(row)
    return rows


def _peers_gradcam_deletion(x: np.ndarray, y: np.ndarray) -> dict:
    """GradCAM's deletion AUC against random attributions computed by the peers alone: onnx2torch's module
    of the file, pytorch-grad-cam's GradCAM at the last MaxPool (the boundary onnxxai picks), Quantus's
    PixelFlipping (baseline 0, softmax, 28 pixels per step) on both."""
    import warnings

    import onnx
    import onnx2torch
    import quantus
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    net = onnx2torch.convert(onnx.load(LENET)).eval()
    cam = GradCAM(model=net, target_layers=[dict(net.named_modules())["features/features/5/MaxPool"]])
    attributions = cam(input_tensor=torch.tensor(x), targets=[ClassifierOutputTarget(int(t)) for t in y])[:, None]
    random = np.random.RandomState(0).uniform(size=attributions.shape).astype(np.float32)
    flipping = quantus.PixelFlipping(features_in_step=28, perturb_baseline=0.0, return_auc_per_sample=True,
                                     disable_warnings=True, display_progressbar=False)
    patched = not hasattr(np, "trapz")
    if patched:  # Quantus 0.6 calls numpy's pre-2.0 name; given for these two calls only
        np.trapz = np.trapezoid
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            auc = {k: float(np.mean(flipping(model=net, x_batch=x, y_batch=y, a_batch=a, device="cpu", softmax=True)))
                   for k, a in (("gradcam", attributions), ("random", random))}
    finally:
        if patched:
            del np.trapz
    print(f"\npeers only (pytorch-grad-cam GradCAM on onnx2torch's module, Quantus PixelFlipping): deletion AUC "
          f"{auc['gradcam']:.3f} vs random {auc['random']:.3f}: ratio {auc['gradcam'] / auc['random']:.3f}")
    return {**auc, "ratio": auc["gradcam"] / auc["random"]}


if __name__ == "__main__":
    main()
