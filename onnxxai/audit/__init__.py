"""The audit: methods × metrics over inputs, a deployment-shift comparison, and the report files.

:func:`run_audit` computes (:mod:`onnxxai.audit.core`), :func:`write_report` writes one self-contained
HTML page, its JSON twin, a CSV per metric and the environment file (:mod:`onnxxai.audit.render`).
``onnxxai audit MODEL INPUTS`` is the command line of both.
"""

from onnxxai.audit.core import (
    DEFAULT_METHODS, DEFAULT_METRICS, REPORT_FORMAT, THRESHOLDS, Audit, AuditInputs, AuditSettings, read_inputs,
    run_audit, total_units, verdict_of,
)
from onnxxai.audit.render import REPORT_FILES, render_html, write_report

__all__ = ["run_audit", "verdict_of", "write_report", "render_html", "read_inputs", "total_units", "Audit", "AuditInputs",
           "AuditSettings", "DEFAULT_METHODS", "DEFAULT_METRICS", "THRESHOLDS", "REPORT_FILES", "REPORT_FORMAT"]
