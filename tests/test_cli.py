"""`onnxxai check` through a subprocess, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "onnxxai.cli", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_check_reports_parity_and_ops(smooth_cnn_path):
    proc = _run("check", smooth_cnn_path, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["converted"] and report["parity"]["ok"]
    assert report["ops"]["Conv"] == 2 and report["opsets"]["ai.onnx"] == 17
    assert report["inputs"] == ["x: float32[batch, 1, 7, 7]"]


def test_check_missing_file_is_one_line_and_nonzero(tmp_path):
    proc = _run("check", tmp_path / "missing.onnx")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
