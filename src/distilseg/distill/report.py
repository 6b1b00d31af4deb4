"""``compress`` reports: ``report.md`` and a self-contained ``report.html`` (pictures embedded as base64).

Why both: the Markdown reads well in a terminal or a repository; the HTML is one file that can be mailed or
opened anywhere without the PNGs next to it.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write_text

__all__ = ["format_rows_markdown", "per_class_table", "write_reports", "ROW_COLUMNS"]

# (key, header, format)
ROW_COLUMNS: list[tuple[str, str, str]] = [
    ("label", "model", "{}"),
    ("architecture", "architecture", "{}"),
    ("params", "params", "{:,}"),
    ("size_mb", "size MB", "{:.2f}"),
    ("gflops", "GFLOPs", "{:.3f}"),
    ("latency_ms", "latency ms", "{:.2f}"),
    ("fps", "FPS", "{:.1f}"),
    ("mIoU", "mIoU", "{:.4f}"),
]


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def _table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def format_rows_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The model comparison table (one row per model) as Markdown."""
    headers = [h for _, h, _ in ROW_COLUMNS]
    body = [[_fmt(row.get(k), f) for k, _, f in ROW_COLUMNS] for row in rows]
    return _table(headers, body)


def per_class_table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per-class IoU of every model, with each student's difference to the teacher (first row)."""
    if not rows:
        return [], []
    names = [c["name"] for c in rows[0].get("per_class") or []]
    iou = [{c["name"]: c.get("iou") for c in (r.get("per_class") or [])} for r in rows]
    headers = ["class"] + [str(r["label"]) for r in rows] + [f"{r['label']} - teacher" for r in rows[1:]]
    body = []
    for name in names:
        t = iou[0].get(name)
        line = [name] + [_fmt(m.get(name), "{:.4f}") for m in iou]
        for m in iou[1:]:
            v = m.get(name)
            line.append("n/a" if v is None or t is None else f"{v - t:+.4f}")
        body.append(line)
    return headers, body


def _notes(summary: dict[str, Any]) -> list[str]:
    notes = []
    rows = {r["name"]: r for r in summary.get("rows", [])}
    base, kd = rows.get("student"), rows.get("kd_student")
    if base and kd and base.get("mIoU") is not None and kd.get("mIoU") is not None:
        diff = kd["mIoU"] - base["mIoU"]
        notes.append(f"KD changed the student's validation mIoU by {diff:+.4f} ({base['mIoU']:.4f} -> {kd['mIoU']:.4f}).")
    t = rows.get("teacher")
    q = rows.get("int8_kd_student")
    if t and q and t.get("latency_ms") and q.get("latency_ms"):
        notes.append(f"INT8 KD student latency is {t['latency_ms'] / q['latency_ms']:.1f}x lower than the teacher's.")
    return notes


def _schedule(settings: dict[str, Any]) -> str:
    students = f"{settings.get('epochs')} epochs for each student"
    if settings.get("teacher"):
        return f"teacher given ({settings['teacher']}), {students}"
    if settings.get("teacher_epochs") is not None:
        return f"{settings['teacher_epochs']} epochs for the teacher, {students}"
    return students


def write_reports(out: Path, summary: dict[str, Any], pareto_png: Path | None, title: str | None = None,
                  sections: Sequence[tuple[str, str, Path | None]] = ()) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out`` from the ``compress.json`` summary.

    ``sections`` are appended as ``(heading, text, picture or None)``; a picture inside ``out`` is linked from the
    Markdown by its relative path and embedded in the HTML, like the Pareto plot.
    """
    out = Path(out)
    rows = summary.get("rows", [])
    title = title or f"distilseg compress: {summary.get('dataset')} ({summary.get('preset')} preset)"
    settings = summary.get("settings", {})
    kd = settings.get("kd")
    setting_line = (
        f"Dataset `{summary.get('dataset')}`, validation split with {summary.get('num_val_images', 'n/a')} images; "
        f"input {settings.get('img_size')}; {_schedule(settings)}; KD spec `{kd}` "
        f"with hard weight {settings.get('hard_weight')}; latency: {settings.get('bench')}."
    )
    ph, pb = per_class_table(rows)
    md = [f"# {title}", "", setting_line, "", format_rows_markdown(rows), ""]
    md += [f"- {n}" for n in _notes(summary)] + [""]
    if pareto_png is not None and Path(pareto_png).is_file():
        md += ["## Accuracy vs latency", "", f"![pareto]({Path(pareto_png).name})", ""]
    if ph:
        md += ["## Per-class IoU", "", _table(ph, pb), ""]
    for heading, text, picture in sections:
        md += [f"## {heading}", "", text, ""]
        if picture is not None and Path(picture).is_file():
            md += [f"![{heading}]({Path(picture).resolve().relative_to(out.resolve()).as_posix()})", ""]
    md_path = atomic_write_text(out / "report.md", "\n".join(md))

    def h(s: Any) -> str:
        return html.escape(str(s))

    def table_html(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{h(x)}</th>" for x in headers)
        trs = "".join("<tr>" + "".join(f"<td>{h(c)}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>"

    main_body = [[_fmt(r.get(k), f) for k, _, f in ROW_COLUMNS] for r in rows]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{h(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #bbb;padding:.3em .6em;text-align:right}th{background:#eee}"
        "td:first-child{text-align:left}</style></head><body>",
        f"<h1>{h(title)}</h1>",
        f"<p>{h(setting_line)}</p>",
        table_html([hh for _, hh, _ in ROW_COLUMNS], main_body),
        "<ul>" + "".join(f"<li>{h(n)}</li>" for n in _notes(summary)) + "</ul>",
    ]
    def img_html(alt: str, png: Path) -> str:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        return f"<img alt='{h(alt)}' style='max-width:100%' src='data:image/png;base64,{data}'>"

    if pareto_png is not None and Path(pareto_png).is_file():
        parts += ["<h2>Accuracy vs latency</h2>", img_html("pareto", pareto_png)]
    if ph:
        parts += ["<h2>Per-class IoU</h2>", table_html(ph, pb)]
    for heading, text, picture in sections:
        parts += [f"<h2>{h(heading)}</h2>", f"<p>{h(text)}</p>"]
        if picture is not None and Path(picture).is_file():
            parts.append(img_html(heading, picture))
    parts.append("</body></html>")
    html_path = atomic_write_text(out / "report.html", "\n".join(parts))
    return md_path, html_path
