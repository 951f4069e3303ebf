"""`onnxxai audit`: the report's numbers against the metrics computed directly, a byte-identical JSON twin
on a second run, a self-contained page rendered by headless Chromium without a network, CSV inputs,
the progress display and one-line user errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import onnxxai
from onnxxai import metrics
from onnxxai.audit.browser import dump_dom, find_chromium, screenshot
from onnxxai.cli import main
from onnxxai.preprocess import image_spec, load_images
from onnxxai.testing import export, make_deployment_variant

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5_mnist.onnx"
DIGITS = [ROOT / "examples" / f"digit_{d}.png" for d in (3, 7)]
STEPS = 8


def _chromium() -> str:
    """Chromium, or a skip; under CI (env CI set) its absence fails the test (.ci/run installs it)."""
    found = find_chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def int8(tmp_path_factory) -> Path:
    model = onnxxai.load_runtime(LENET)
    x = load_images([ROOT / "examples" / f"digit_{d}.png" for d in range(10)], image_spec(model.input_spec()))
    return make_deployment_variant(LENET, "int8 QDQ", tmp_path_factory.mktemp("int8"),
                                   [{"image": x[i:i + 1]} for i in range(len(x))])


@pytest.fixture(scope="module")
def audited(tmp_path_factory, int8) -> tuple[Path, Path]:
    """The same audit run twice into two folders (quiet)."""
    outs = []
    for run in range(2):
        out = tmp_path_factory.mktemp(f"audit{run}")
        rc = main(["audit", str(LENET), *map(str, DIGITS), "--reference", str(int8), "--methods", "gradient",
                   "--metrics", "deletion", "insertion", "random_logit", "mprt_cascading", "--steps", str(STEPS),
                   "--out", str(out), "--quiet"])
        assert rc == 0
        outs.append(out)
    return outs[0], outs[1]


def test_audit_json_is_reproducible_and_matches_the_metrics(audited, int8):
    first, second = audited
    assert (first / "audit.json").read_bytes() == (second / "audit.json").read_bytes()
    for csv in sorted((first / "metrics").glob("*.csv")):
        assert csv.read_bytes() == (second / "metrics" / csv.name).read_bytes()
    report = json.loads((first / "audit.json").read_text())
    env = json.loads((first / "audit-env.json").read_text())
    assert "timings_s" in env and env["versions"]["onnxruntime"] == ort.__version__
    assert "timings" not in (first / "audit.json").read_text()
    assert report["model"]["sha256"] == hashlib.sha256(LENET.read_bytes()).hexdigest()
    assert report["model"]["parity"]["ok"] and report["model"]["gradient"]["ok"]
    assert report["reference"]["artifact"]["name"] == "int8 static QDQ"

    # the numbers, computed directly with the library for the same inputs and outputs
    model = onnxxai.load(LENET)
    x = load_images(DIGITS, image_spec(model.input_spec()))
    session = ort.InferenceSession(str(LENET), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": x})[0]
    assert [i["prediction"] for i in report["inputs"]] == logits.argmax(1).tolist() == [3, 7]
    expl = onnxxai.analyze(x, onnxxai.Gradient(model), logits.argmax(1))
    results = {r["name"]: r for r in report["results"]}
    assert results["deletion_auc"]["value"] == metrics.deletion(model, expl, steps=STEPS).value
    assert results["insertion_auc"]["value"] == metrics.insertion(model, expl, steps=STEPS).value
    rl = metrics.random_logit(onnxxai.Gradient(model), expl, seed=0)
    assert results["random_logit_ssim"]["value"] == rl["ssim"].value
    chance = metrics.deletion(model, metrics.random_explanation(expl, seed=0), steps=STEPS).value
    assert results["deletion_auc"]["chance"] == chance
    verdict = results["deletion_auc"]["verdict"]
    assert verdict["passed"] == (results["deletion_auc"]["value"] / chance <= 0.5)
    assert results["random_logit_ssim"]["verdict"]["passed"] == (rl["ssim"].value < 0.5)
    # insertion of probabilities: AUC <= 1, so 1.5x random's is reachable only while random's is below 2/3
    ins, ins_chance = results["insertion_auc"], results["insertion_auc"]["chance"]
    assert ins["params"]["scores"] == "softmax" and ins["params"]["score_bound"] == 1.0
    assert ins["verdict"]["passed"] == (None if ins_chance > 1 / 1.5 else ins["value"] / ins_chance >= 1.5)
    assert ins["verdict"]["decidable"] == (ins_chance <= 1 / 1.5)
    assert results["mprt_cascading_spearman"]["details"]["randomised_nodes"] == \
        results["mprt_cascading_spearman"]["details"]["parameterised_nodes"] > 0
    assert results["deletion_auc"]["direction"] == "↓" and results["insertion_auc"]["direction"] == "↑"

    # deployment shift: agreement of the two files' top predictions, by onnxruntime directly
    ref = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    shift = report["deployment_shift"]
    assert shift["agreement"] == float((ref.argmax(1) == logits.argmax(1)).mean())
    assert set(shift["similarity"]["gradient"]) == {"spearman", "top_k_iou", "ssim"}

    # the CSV per metric holds the per-sample values of the JSON
    rows = (first / "metrics" / "deletion_auc.csv").read_text().splitlines()
    assert rows[0] == "input,name,gradient,random"
    assert [float(r.split(",")[2]) for r in rows[1:]] == results["deletion_auc"]["per_sample"]


@pytest.mark.parametrize("params, value, chance, passed", [
    ({"scores": "softmax", "score_bound": 1.0}, 0.95, 0.80, None),   # at most 1.25x random: no method can pass
    ({"scores": "softmax", "score_bound": 1.0}, 0.95, 0.60, True),   # 1.58x
    ({"scores": "softmax", "score_bound": 1.0}, 0.80, 0.60, False),  # 1.33x, and 1.67x was reachable
    ({"scores": "raw", "score_bound": None}, 12.0, 8.0, True),       # logits: unbounded, always decidable
    ({"scores": "raw", "score_bound": None}, 9.0, 8.0, False),
])
def test_insertion_verdict_is_na_only_when_no_explanation_could_pass(params, value, chance, passed):
    from onnxxai.audit import verdict_of

    verdict = verdict_of({"name": "insertion_auc", "value": value, "params": params}, chance)
    assert verdict["passed"] is passed and verdict["decidable"] == (passed is not None)
    assert verdict["compared"] == pytest.approx(value / chance)
    if passed is None:
        assert f"at most {1 / chance:.3g}x" in verdict["reason"]
    deletion = verdict_of({"name": "deletion_auc", "value": value, "params": params}, chance)
    assert deletion["passed"] is (value / chance <= 0.5)  # deletion's rule is always reachable (AUC >= 0)


def test_audit_page_is_self_contained_and_renders_offline(audited, tmp_path):
    _chromium()
    first, _ = audited
    page = first / "audit.html"
    text = page.read_text()
    report = json.loads((first / "audit.json").read_text())
    assert "<script" not in text.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", text), "a resource outside the page"
    assert not re.search(r"https?://|url\(", text)
    for row in report["results"]:  # the page shows the JSON's numbers
        assert f'data-value="{row["value"]!r}"' in text
    dom = dump_dom(page)
    assert len(re.findall(r"<img\b", dom)) >= 1 + len(DIGITS) * 2  # curves + input and overlay per digit
    rows = re.findall(r'<tr class="metric-row" data-metric="([^"]+)"', dom)
    assert rows == list(dict.fromkeys(r["name"] for r in report["results"]))
    assert 'id="verdicts"' in dom and 'id="shift"' in dom and 'id="explanations"' in dom
    assert dom.count('class="verdict-row"') == sum(r["verdict"] is not None for r in report["results"])
    png = screenshot(page, tmp_path / "audit.png", height=1600)
    from PIL import Image

    with Image.open(png) as shot:
        assert shot.size == (1280, 1600)
        assert len(np.unique(np.asarray(shot.convert("L")))) > 8  # drawn, not blank


def test_audit_of_csv_rows_with_progress(tmp_path, capsys):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    path = export(net, torch.randn(2, 4), tmp_path / "mlp.onnx")
    rows = np.random.default_rng(0).normal(size=(3, 4))
    table = tmp_path / "rows.csv"
    table.write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows) + "\n")
    rc = main(["audit", str(path), str(table), "--methods", "gradient", "input-x-gradient", "--metrics", "deletion",
               "infidelity", "--steps", "5", "--out", str(tmp_path / "out")])
    assert rc == 0
    err = capsys.readouterr().err
    total = 3 * (2 * (1 + 2) + 2)  # inputs × (methods × (explain + metrics) + random attributions' metrics)
    assert f"{total}/{total} units" in err
    report = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert report["input_kind"] == "table" and report["columns"] == ["a", "b", "c", "d"]
    assert [i["name"] for i in report["inputs"]] == ["rows.csv row 0", "rows.csv row 1", "rows.csv row 2"]
    assert {(r["method"], r["name"]) for r in report["results"]} == {
        (m, n) for m in ("gradient", "input-x-gradient") for n in ("deletion_auc", "infidelity")}
    html = (tmp_path / "out" / "audit.html").read_text()
    assert html.count("<img") == 3 * 2 + 1  # a bar chart per row and method, the deletion curve


@pytest.mark.parametrize("argv, message", [
    (["--metrics", "nosuch"], "unknown metric(s) nosuch"),
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--steps", "1"], "--steps must be at least 2"),
])
def test_audit_user_errors_are_one_line(argv, message, tmp_path, capsys):
    assert main(["audit", str(LENET), str(DIGITS[0]), "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("onnxxai: error:")


def test_audit_missing_inputs_is_a_user_error(tmp_path, capsys):
    assert main(["audit", str(LENET), str(tmp_path / "none.png"), "--methods", "gradient", "--metrics", "deletion",
                 "--out", str(tmp_path), "--quiet"]) == 2
    assert "none.png: no such file or directory" in capsys.readouterr().err


def test_metric_csv_reads_back_with_any_input_name():
    """Input names with commas or quotes stay one field (csv.reader gets the names and values back)."""
    import csv
    import io

    from onnxxai.audit.render import metric_tables

    names = ["a.png", "b, c.png", 'q"x.png']
    report = {"inputs": [{"name": n} for n in names],
              "results": [{"name": "deletion_auc", "method": "gradient", "per_sample": [0.1, None, 1 / 3]}],
              "random": [{"name": "deletion_auc", "per_sample": [1e-20, 2.0, 0.5]}]}
    rows = list(csv.reader(io.StringIO(metric_tables(report)["deletion_auc"])))
    assert rows == [["input", "name", "gradient", "random"], ["0", "a.png", "0.1", "1e-20"], ["1", "b, c.png", "", "2.0"],
                    ["2", 'q"x.png', repr(1 / 3), "0.5"]]
