"""The audit's files: one self-contained HTML page (styles inline, images and plots as ``data:`` URIs,
no script, no external URL), its JSON twin (the same numbers, byte-identical for the same inputs and
seed), a CSV per metric (one row per input, one column per method) and the environment file
(package versions, platform, timings: what changes from run to run)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from onnxxai.audit.core import THRESHOLDS, Audit

__all__ = ["write_report", "render_html", "png_bytes", "REPORT_FILES"]

#: file names written into the output folder
REPORT_FILES = {"html": "audit.html", "json": "audit.json", "env": "audit-env.json", "csv": "metrics"}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#1d232a;
background:#fff;font-size:14px;line-height:1.45}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d6dbe1;padding-bottom:4px}
h3{font-size:14px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d6dbe1;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f2f4f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0b7a35;font-weight:600}.fail{color:#b42318;font-weight:600}.na{color:#667085;font-weight:600}.muted{color:#667085}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.grid td{text-align:center;padding:4px}.grid img{width:112px;height:auto;image-rendering:pixelated;display:block;margin:auto}
.plots img{max-width:560px;margin:4px 8px 4px 0;border:1px solid #eef0f3}.chart img{width:300px}
.summary{background:#f7f9fb;border:1px solid #e3e7ec;padding:8px 12px;border-radius:4px}
"""


def png_bytes(image: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` uint8 image as PNG bytes (no timestamps: the same pixels give the same bytes)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _img(png: bytes, alt: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<img{klass} alt="{html.escape(alt)}" src="{_data_uri(png)}">'


def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(width: float = 5.6, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _curve_plot(report: dict[str, Any], name: str) -> bytes | None:
    """Mean curve of metric result ``name`` for every method (random attributions dashed)."""
    rows = [r for r in report["results"] if r["name"] == name and r.get("curve")]
    rows += [dict(r, method="random") for r in report.get("random", []) if r["name"] == name and r.get("curve")]
    if not rows:
        return None
    fig, ax = _new_figure()
    for row in rows:
        c = row["curve"]
        y = [np.nan if v is None else v for v in c["y"]]
        label = f"{row['method']} ({row['value']:.3f})" if row["value"] is not None else row["method"]
        if all(isinstance(v, (int, float)) for v in c["x"]):
            ax.plot(c["x"], y, label=label, linestyle="--" if row["method"] == "random" else "-")
        else:  # layer names
            ax.plot(range(len(y)), y, marker="o", label=row["method"])
            ax.set_xticks(range(len(y)), [str(v)[:18] for v in c["x"]], rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(c["x_label"])
        ax.set_ylabel(c["y_label"], fontsize=8)
    ax.set_title(f"{name} {rows[0]['direction']} (legend: mean over inputs)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_png(fig)


def _bar_chart(values: np.ndarray, columns: list[str], title: str) -> bytes:
    fig, ax = _new_figure(3.2, 0.22 * len(values) + 1.0)
    order = np.arange(len(values))[::-1]
    ax.barh([columns[i] for i in order], values[order], color=["#c0392b" if v > 0 else "#2e5fa8" for v in values[order]])
    ax.axvline(0, color="black", linewidth=0.8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _figure_png(fig)


def _num(value: Any, digits: str = ".4g") -> str:
    if value is None:
        return '<span class="muted">n/a</span>'
    if isinstance(value, float):
        return format(value, digits)
    return html.escape(str(value))


def _cell(value: Any, extra: str = "") -> str:
    data = "" if value is None else f' data-value="{value!r}"'
    return f'<td class="num"{data}{extra}>{_num(value)}</td>'


def _verdict_html(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return ""
    word = _verdict_word(verdict)
    title = verdict["rule"] + (f" -- {verdict['reason']}" if verdict.get("reason") else "")
    return f' <span class="{_verdict_class(word)}" title="{html.escape(title)}">{word}</span>'


def _verdict_word(verdict: dict[str, Any]) -> str:
    """PASS, FAIL, or N/A for a rule no explanation could meet on these inputs (``decidable`` False)."""
    return "N/A" if verdict["passed"] is None else "PASS" if verdict["passed"] else "FAIL"


def _verdict_class(word: str) -> str:
    """The CSS class of a verdict word (pass, fail, na)."""
    return "na" if word == "N/A" else word.lower()


def _kv_table(rows: list[tuple[str, str]], table_id: str) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="{table_id}">{body}</table>'


def _model_section(facts: dict[str, Any], title: str, table_id: str) -> str:
    art = facts["artifact"]
    rows = [("file", f'<span class="mono">{html.escape(facts["file"])}</span>'),
            ("SHA-256", f'<span class="mono">{facts["sha256"]}</span>'),
            ("producer", html.escape(facts["producer"] or "(unknown)")),
            ("IR / opsets", html.escape(f"IR {facts['ir_version']}; " + ", ".join(f"{d} {v}" for d, v in facts["opsets"].items()))),
            ("nodes", str(facts["nodes"])),
            ("artifact", html.escape(art["name"])),
            ("inputs", html.escape("; ".join(facts["inputs"]))),
            ("outputs", html.escape("; ".join(facts["outputs"])))]
    if "parity" in facts:
        ok = facts["parity"]["ok"]
        rows.append(("parity", f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span> '
                               + html.escape(facts["parity"]["summary"])))
    if "gradient" in facts:
        ok = facts["gradient"].get("ok")
        rows.append(("gradient check", f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span> '
                                       + html.escape(facts["gradient"]["summary"])))
    if "runtime" in facts:
        rows.append(("runtime", html.escape(facts["runtime"]["summary"])))
    return f"<h2>{html.escape(title)}</h2>" + _kv_table(rows, table_id)


def _metric_table(report: dict[str, Any]) -> str:
    methods = [m for m in report["methods"] if "error" not in report["methods"][m]]
    names: list[str] = []
    for row in report["results"]:
        if row["name"] not in names:
            names.append(row["name"])
    by = {(r["name"], r["method"]): r for r in report["results"]}
    random = {r["name"]: r for r in report.get("random", [])}
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    lines = [f'<table id="metrics"><thead><tr><th>metric</th><th>dir.</th>{head}<th>random attributions</th>'
             f"<th>what it measures</th></tr></thead><tbody>"]
    for name in names:
        first = next(r for r in report["results"] if r["name"] == name)
        cells = []
        for m in methods:
            row = by.get((name, m))
            if row is None:
                cells.append('<td class="num muted">n/a</td>')
            else:
                cells.append(_cell(row["value"]).replace("</td>", _verdict_html(row.get("verdict")) + "</td>"))
        chance = random.get(name)
        cells.append(_cell(chance["value"]) if chance else '<td class="num muted">–</td>')
        lines.append(f'<tr class="metric-row" data-metric="{html.escape(name)}"><th>{html.escape(name)}</th>'
                     f'<td title="{"higher is better" if first["higher_is_better"] else "lower is better"}">'
                     f'{first["direction"]}</td>{"".join(cells)}<td class="muted">{html.escape(first["description"])} '
                     f'({html.escape(first["reference"])})</td></tr>')
    lines.append("</tbody></table>")
    return "".join(lines)


def _verdict_table(report: dict[str, Any]) -> str:
    rows = []
    for r in report["results"]:
        v = r.get("verdict")
        if v:
            word = _verdict_word(v)
            rule = html.escape(v["rule"]) + (f'<br><span class="muted">{html.escape(v["reason"])}</span>'
                                             if v.get("reason") else "")
            rows.append(f'<tr class="verdict-row"><td>{html.escape(r["method"])}</td><td>{html.escape(r["name"])}</td>'
                        f'{_cell(v["compared"])}<td>{rule}</td><td class="{_verdict_class(word)}">'
                        f'{word}</td></tr>')
    if not rows:
        return '<p class="muted">No metric with a documented pass rule was run.</p>'
    return ('<table id="verdicts"><thead><tr><th>method</th><th>check</th><th>value</th><th>rule</th><th>verdict</th>'
            '</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _plain(sample: np.ndarray, layout: str) -> np.ndarray:
    """One input image as RGB uint8, its values stretched min..max (what the overlays are drawn on)."""
    from onnxxai.heatmap import to_image_layout

    img = to_image_layout(sample[None], layout)[0]
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
    lo, hi = float(img.min()), float(img.max())
    return ((img - lo) / (hi - lo if hi > lo else 1.0) * 255).round().astype(np.uint8)


def _grid(audit: Audit) -> str:
    report = audit.report
    methods = [m for m in report["methods"] if m in audit.attributions]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    lines = [f'<table class="grid" id="explanations"><thead><tr><th>input</th>{"" if audit.inputs.kind != "image" else "<th>image</th>"}'
             f"{head}</tr></thead><tbody>"]
    x = audit.inputs.x
    for i, item in enumerate(report["inputs"]):
        label = (f'{html.escape(item["name"])}<br><span class="muted">prediction {item["prediction"]}, '
                 f'explained {item["target"]}</span>')
        cells = []
        name = item["name"]
        if audit.inputs.kind == "image":
            cells.append(f"<td>{_img(png_bytes(_plain(x[i], audit.inputs.layout)), name)}</td>")
            for m in methods:
                cells.append(f"<td>{_img(png_bytes(audit.overlays[m][i]), f'{name} {m}')}</td>")
        else:
            for m in methods:
                values = np.asarray(audit.attributions[m][i], dtype=np.float64).reshape(-1)
                chart = _bar_chart(values, audit.inputs.columns or [str(j) for j in range(len(values))], f"{name}: {m}")
                cells.append(f'<td class="chart">{_img(chart, f"{name} {m}")}</td>')
        lines.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    lines.append("</tbody></table>")
    return "".join(lines)


def _shift_section(report: dict[str, Any]) -> str:
    shift = report.get("deployment_shift")
    if shift is None:
        return ""
    names = [item["name"] for item in report["inputs"]]
    agree = shift["agreement"]
    diff = max((v for v in shift["output_max_abs_difference"] if v is not None), default=None)
    parts = ["<h2>Deployment shift</h2>",
             f'<p class="summary" id="shift-summary">{html.escape(report["model"]["name"])} '
             f'({html.escape(shift["model_artifact"])}) against reference {html.escape(report["reference"]["name"])} '
             f'({html.escape(shift["reference_artifact"])}): prediction agreement <b data-value="{agree!r}">{agree:.1%}</b> '
             f'over {len(names)} inputs; largest output difference {_num(diff)}. Both files explain the reference\'s '
             f"prediction; similarities are ↑ (1 = the same explanation).</p>",
             '<table id="shift"><thead><tr><th>method</th><th>Spearman ↑</th><th>top-10% IoU ↑</th><th>SSIM ↑</th>'
             "<th>inputs that moved most (Spearman)</th></tr></thead><tbody>"]
    for m, sims in shift["similarity"].items():
        moved = ", ".join(f"{html.escape(names[i])} ({_num(v, '+.2f')})" for i, v in shift["most_moved"].get(m, []))
        cells = "".join(_cell(sims[k]["value"]) if k in sims else '<td class="muted">–</td>'
                        for k in ("spearman", "top_k_iou", "ssim"))
        constant = next(iter(sims.values()), {}).get("details", {}).get("constant_maps", {})
        if constant.get("model"):
            moved += (f'<br><span class="fail">{len(constant["model"])} of {len(names)} inputs: the audited file\'s '
                      f"explanation is constant (no ranking; scored 0)</span>")
        parts.append(f'<tr class="shift-row"><th>{html.escape(m)}</th>{cells}<td>{moved}</td></tr>')
    for m, why in shift["errors"].items():
        parts.append(f'<tr class="shift-row"><th>{html.escape(m)}</th><td colspan="4" class="muted">not compared: '
                     f"{html.escape(why)}</td></tr>")
    parts.append("</tbody></table>")
    parts.append(_model_section(report["reference"], "Reference file", "reference"))
    return "".join(parts)


def render_html(audit: Audit) -> str:
    """The report page: every number comes from ``audit.report`` (the JSON twin); ``data-value``
    attributes hold the exact values the cells show rounded."""
    report, env = audit.report, audit.env
    s = report["settings"]
    title = f"onnxxai audit: {report['model']['name']}"
    plots = [p for p in (_curve_plot(report, n) for n in ("deletion_auc", "insertion_auc", "road_morf", "road_lerf",
                                                           "mprt_cascading_spearman", "mprt_independent_spearman"))
             if p is not None]
    settings_rows = [
        ("methods", html.escape(", ".join(f"{m} ({report['methods'][m]['description']})" for m in s["methods"]))),
        ("metrics", html.escape(", ".join(s["metrics"]))),
        ("seeds", html.escape(", ".join(f"{k} {v}" for k, v in report["seeds"].items()))),
        ("samples / steps", html.escape(f"sampled methods {s['method_samples']}; deletion/insertion steps {s['steps']}; "
                                        f"faithfulness-correlation runs {s['correlation_runs']}; infidelity samples "
                                        f"{s['infidelity_samples']}; max-sensitivity samples {s['sensitivity_samples']}")),
        ("inputs", html.escape(f"{len(report['inputs'])} {report['input_kind']}(s); {report['preprocessing']}")),
        ("explained output", html.escape("each input's top prediction" if s["target"] is None else f"output {s['target']}")),
        ("packages", html.escape(", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()))),
        ("platform", html.escape(f"{env.get('platform', '')}; CPU integer kernels {env.get('cpu_integer_isa', '')}")),
        ("time", html.escape(f"{sum(env.get('timings_s', {}).values()):.1f} s in all")),
    ]
    errors = "".join(f"<li>{html.escape(e['method'])}{' / ' + html.escape(e['metric']) if e['metric'] else ''}: "
                     f"{html.escape(e['error'])}</li>" for e in report["errors"])
    rules = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(what)} {op} {t:g}</li>"
                    for k, (op, t, what) in THRESHOLDS.items())
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">{len(report["inputs"])} inputs × {len(s["methods"])} methods × {len(s["metrics"])} metrics; '
        "the JSON twin (audit.json) holds every number of this page; per-sample values are in metrics/*.csv.</p>",
        _model_section(report["model"], "Model", "model"),
        "<h2>Sanity checks and faithfulness verdicts</h2>", _verdict_table(report),
        f'<div class="muted">Rules (documented thresholds): <ul>{rules}</ul></div>',
        "<h2>Metrics</h2>",
        '<p class="muted">Mean over inputs; ↑ higher is better, ↓ lower is better. “random attributions”: the same metric '
        "of seeded uniform noise for the same outputs (chance level).</p>",
        _metric_table(report),
        "<h2>Explanations</h2>", _grid(audit),
        '<h2>Curves</h2><div class="plots" id="curves">'
        + "".join(_img(p, "metric curve") for p in plots) + "</div>",
        _shift_section(report),
        "<h2>Settings and environment</h2>", _kv_table(settings_rows, "settings"),
        f'<h2>Not computed</h2><ul id="errors">{errors}</ul>' if errors else "",
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def metric_tables(report: dict[str, Any]) -> dict[str, str]:
    """CSV text per metric result name: one row per input, one column per method (and random)."""
    tables: dict[str, str] = {}
    rows_by: dict[str, list[dict[str, Any]]] = {}
    for row in report["results"] + [dict(r, method="random") for r in report.get("random", [])]:
        rows_by.setdefault(row["name"], []).append(row)
    for name, rows in rows_by.items():
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")  # None -> empty field, floats as repr
        writer.writerow(["input", "name"] + [r["method"] for r in rows])
        writer.writerows([i, item["name"]] + [r["per_sample"][i] for r in rows] for i, item in enumerate(report["inputs"]))
        tables[name] = text.getvalue()
    return tables


def write_report(audit: Audit, out_dir: str | Path) -> dict[str, Path]:
    """Write audit.html, audit.json, audit-env.json and metrics/<name>.csv into ``out_dir``."""
    out = Path(out_dir)
    (out / REPORT_FILES["csv"]).mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in REPORT_FILES.items()}
    paths["json"].write_text(json.dumps(audit.report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["env"].write_text(json.dumps(audit.env, indent=1) + "\n", encoding="utf-8")
    for name, text in metric_tables(audit.report).items():
        (paths["csv"] / f"{name}.csv").write_text(text, encoding="utf-8")
    paths["html"].write_text(render_html(audit), encoding="utf-8")
    return paths
