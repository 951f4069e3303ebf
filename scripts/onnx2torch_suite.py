"""Run onnx2torch's own node-converter test suite twice: plain onnx2torch, then through onnxxai.

    python scripts/onnx2torch_suite.py [--repo GIT_DIR] [--keep DIR] [-k EXPR] [--json FILE]

The suite (``tests/node_converters/`` of onnx2torch's repository, about 1,100 cases) is extracted
from a git snapshot of that repository into a temporary directory at run time; none of its code
lives in this repository. ``--repo`` names the bare git directory (default: the snapshot at
``/work/.mirror/ENOT-AutoDL+onnx2torch/repo``, or ``$ONNX2TORCH_REPO``).

Each case builds a one-node model, runs it in onnxruntime and compares the converted torch module's
outputs. Two run modes, each a separate pytest process with a plugin written beside the suite at run
time:

* ``raw``: the suite as written, on onnx2torch's ``convert``;
* ``onnxxai``: ``tests.utils.common.convert`` replaced by :func:`onnxxai.convert.pipeline.convert`
  (normalization, onnx2torch plus onnxxai's converters).

In both, ``onnx.mapping`` (removed from newer onnx) is shimmed with
``onnx.helper.np_dtype_to_tensor_dtype``, and the suite's torch -> ONNX re-export stage (it exports
the converted module back to ONNX and compares that too) is skipped: it tests onnx2torch's export
hooks, not conversion. The script prints pass/fail counts for both modes and every case that
passes raw but fails through onnxxai (the goal: none), and exits 1 if there is any such case.

Last run (onnx2torch snapshot of the mirror, CPU, about 15 minutes per mode on 2 cores): raw 1109 of
1111 passed (2 GatherND cases skipped by the suite itself), onnxxai 1111 of 1111, none passing raw
but failing through onnxxai.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

DEFAULT_REPO = os.environ.get("ONNX2TORCH_REPO", "/work/.mirror/ENOT-AutoDL+onnx2torch/repo")
ROOT = Path(__file__).resolve().parents[1]

#: The pytest plugin (``-p onnxxai_suite_plugin``); reads ONNXXAI_SUITE_MODE and ONNXXAI_SUITE_OUT.
PLUGIN = '''
import json
import os
import sys
import types

import numpy as np
import onnx.helper

_shim = types.ModuleType("onnx.mapping")


class _NpToTensor(dict):
    """np.dtype -> ONNX element type, answered by onnx.helper (onnx.mapping's table is gone)."""

    def __missing__(self, dtype):
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


_shim.NP_TYPE_TO_TENSOR_TYPE = _NpToTensor()
sys.modules.setdefault("onnx.mapping", _shim)
onnx.mapping = sys.modules["onnx.mapping"]

_RESULTS = {}


def pytest_configure(config):
    import tests.utils.common as common

    original = common._check_onnx_model

    def without_reexport(*args, **kwargs):
        kwargs["onnx_torch2onnx_check_function"] = None  # the torch -> ONNX re-export is not compared
        return original(*args, **kwargs)

    common._check_onnx_model = without_reexport
    if os.environ["ONNXXAI_SUITE_MODE"] == "onnxxai":
        from onnxxai.convert.pipeline import convert as onnxxai_convert

        def convert(model, *args, **kwargs):
            return onnxxai_convert(model, "onnx2torch suite case")[2]

        common.convert = convert


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _RESULTS[report.nodeid] = report.outcome


def pytest_sessionfinish(session, exitstatus):
    with open(os.environ["ONNXXAI_SUITE_OUT"], "w") as f:
        json.dump(_RESULTS, f, indent=0, sort_keys=True)
'''


def extract_suite(repo: str, target: Path) -> Path:
    """Write the repository's ``tests/`` tree (HEAD) under ``target`` and our plugin beside it."""
    archive = subprocess.run(["git", f"--git-dir={repo}", "archive", "HEAD", "tests"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    (target / "onnxxai_suite_plugin.py").write_text(PLUGIN)
    return target


def run_suite(suite: Path, mode: str, keyword: str | None) -> dict[str, str]:
    """Run the node-converter tests in one mode; nodeid -> passed/failed/skipped."""
    out = suite / f"results-{mode}.json"
    env = dict(os.environ, ONNXXAI_SUITE_MODE=mode, ONNXXAI_SUITE_OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(suite), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "onnxxai_suite_plugin", "-o", "log_cli=false",
               "--rootdir", str(suite), "-c", str(suite / "tests" / "pytest.ini"), "tests/node_converters"]
    if keyword:
        command += ["-k", keyword]
    done = subprocess.run(command, cwd=suite, env=env, capture_output=True, text=True)
    if not out.exists():
        raise SystemExit(f"the {mode} run wrote no results (pytest exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def summary(results: dict[str, str]) -> str:
    counts = {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "skipped")}
    return f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped of {len(results)}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=DEFAULT_REPO, help="onnx2torch's git directory (bare is fine)")
    parser.add_argument("--keep", type=Path, help="extract the suite here and keep it (default: a temporary directory)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression, to run a subset")
    parser.add_argument("--json", type=Path, help="write both modes' per-case outcomes here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="onnx2torch-suite-") as tmp:
        suite = args.keep or Path(tmp)
        suite.mkdir(parents=True, exist_ok=True)
        extract_suite(args.repo, suite)
        raw = run_suite(suite, "raw", args.keyword)
        ours = run_suite(suite, "onnxxai", args.keyword)
    print(f"raw onnx2torch: {summary(raw)}")
    print(f"onnxxai:        {summary(ours)}")
    regressions = sorted(k for k, v in raw.items() if v == "passed" and ours.get(k) != "passed")
    gains = sorted(k for k, v in ours.items() if v == "passed" and raw.get(k) != "passed")
    print(f"pass through onnxxai but not raw: {len(gains)}")
    print(f"pass raw but not through onnxxai: {len(regressions)}")
    for case in regressions:
        print(f"  {case}")
    failing = sorted(k for k, v in ours.items() if v != "passed")
    if failing:
        print("not passing through onnxxai:")
        for case in failing:
            print(f"  {case} ({ours[case]}; raw: {raw.get(case, 'absent')})")
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "onnxxai": ours}, indent=0, sort_keys=True))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
