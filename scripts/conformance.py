"""Run ONNX's node conformance cases through onnxxai's conversion and report the pass rate.

    python scripts/conformance.py [--raw] [--failures FILE] [--write-readme]

Each case (from ``onnx.backend.test.case.node.collect_testcases``) is a one-node model with inputs
and expected outputs computed by ONNX's reference implementation. A case passes when the converted
torch graph reproduces every expected output within the case's own rtol/atol. ``--raw`` measures
plain ``onnx2torch.convert`` instead, for comparison. "Float-tensor cases" are those whose inputs
and outputs are all float16/32/64 tensors: the graphs gradient methods can explain.
"""

from __future__ import annotations

import argparse
import warnings
from collections import Counter
from pathlib import Path

from readme_tables import write_block

from onnxxai.testing import is_float_case, run_case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", action="store_true", help="measure plain onnx2torch.convert")
    parser.add_argument("--failures", type=Path, help="write every failing case with its reason here")
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    args = parser.parse_args()
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = [c for c in collect_testcases(None) if args.filter in c.name]
        results = []
        for case in cases:
            reason, detail = run_case(case, args.raw)
            results.append((case.name, is_float_case(case.model), reason, detail))
    loadable = [r for r in results if r[2] != "no data"]
    floats = [r for r in loadable if r[1]]
    passed = sum(r[2] == "pass" for r in loadable)
    passed_f = sum(r[2] == "pass" for r in floats)
    who = "raw onnx2torch" if args.raw else "onnxxai"
    lines = [
        f"{who}: {passed} of {len(loadable)} cases with data pass ({passed / len(loadable):.1%}); "
        f"float-tensor cases: {passed_f} of {len(floats)} ({passed_f / max(len(floats), 1):.1%}).",
        "",
        "| failure reason | all cases | float-tensor cases |",
        "|---|---|---|",
    ]
    reasons = Counter(r[2] for r in loadable if r[2] != "pass")
    reasons_f = Counter(r[2] for r in floats if r[2] != "pass")
    for reason, count in reasons.most_common():
        lines.append(f"| {reason} | {count} | {reasons_f.get(reason, 0)} |")
    text = "\n".join(lines)
    print(text)
    if args.failures:
        args.failures.write_text("\n".join(f"{n}\t{'float' if f else 'other'}\t{r}\t{d}" for n, f, r, d in results if r != "pass") + "\n")
    if args.write_readme:
        write_block("conformance-raw" if args.raw else "conformance", text)


if __name__ == "__main__":
    main()
