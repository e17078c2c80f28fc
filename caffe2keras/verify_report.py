"""How a verify report is shown: the text table, the summary line, and the HTML/SVG/PNG
plot of each blob's error against the criterion."""
from __future__ import annotations

import html
import math
from pathlib import Path

from .criterion import ATOL, RTOL
from .errors import CaffeFormatError

# --- output ---------------------------------------------------------------------------

def _fmt(v, spec=".2e"):
    return "-" if v is None else format(v, spec)


def format_table(report, limit=None):
    """The per-blob table and a summary, as text."""
    rows = [("blob", "layer type", "shape", "max|ref|", "max abs err", "rel err", "result")]
    shown = report.checks if limit is None else report.checks[:limit]
    for c in shown:
        shape = "x".join(str(d) for d in c.shape) if c.shape else "-"
        result = {"ok": "ok", "input": "ok (input)"}.get(c.status, c.status)
        if c.note:
            result += f"  {c.note}"
        rows.append((c.blob, c.layer_type, shape, _fmt(c.ref_max, ".3g"), _fmt(c.max_abs),
                     _fmt(c.max_rel), result))
    widths = [min(max(len(r[i]) for r in rows), 40) for i in range(6)]
    lines = [f"{report.net}: {report.subject} vs {report.reference}",
             f"input: {report.input_desc}",
             (f"criterion: |ours - ref| <= {ATOL:g} * max(1, |ref|max) + {RTOL:g} * |ref| "
             f"(rel err = max abs err / max(1, |ref|max))"), ""]
    for r in rows:
        lines.append("  ".join(r[i][:40].ljust(widths[i]) for i in range(6)) + "  " + r[6])
    if limit is not None and len(report.checks) > limit:
        lines.append(f"... {len(report.checks) - limit} more blobs")
    lines += ["", summary(report)]
    return "\n".join(lines)


def summary(report):
    n = report.counts()
    total = len(report.checks)
    agree = n.get("ok", 0) + n.get("input", 0)
    worst = max((c.max_rel for c in report.checks if c.status in ("ok", "input")
                 and c.max_rel is not None), default=0.0)
    text = f"{agree}/{total} blobs agree (worst rel err {worst:.2e})"
    if n.get("deviation"):
        origins = ", ".join(f"'{k}': {v}" for k, v in report.deviations.items())
        verb = "differs" if n["deviation"] == 1 else "differ"
        text += (f"; {n['deviation']} {verb} only where the reference is known to deviate "
                 f"from Caffe ({origins}) - not a conversion error; check those with "
                 f"--reference pycaffe or a dumped file")
    bad = report.failed
    if bad:
        first = bad[0]
        text += (f"; {len(bad)} FAIL, first at blob '{first.blob}' (layer '{first.layer}', "
                 f"{first.layer_type}): {first.note or f'rel err {_fmt(first.max_rel)}'}")
    for note in report.notes:
        text += f"\nnote: {note}"
    return text


_COLOURS = {"ok": "#2a9d4b", "input": "#2a9d4b", "deviation": "#e09b1a", "FAIL": "#d62828",
            "missing": "#d62828"}


def _plot_points(report):
    pts = []
    for i, c in enumerate(report.checks):
        v = c.max_rel if c.max_rel is not None else None
        y = -12.0 if v is None or v <= 0 else max(-12.0, math.log10(v))
        if c.status in ("FAIL", "missing") and v is None:
            y = 0.0
        pts.append((i, y, c))
    return pts


def write_report(report, path):
    """An HTML page (table + SVG plot of the error per layer) or a PNG plot."""
    from .files import atomic_output

    path = str(path)
    if path.endswith(".png"):
        with atomic_output(path, suffix=".png") as tmp:
            _png(report, tmp)
    elif path.endswith((".html", ".htm")):
        with atomic_output(path, suffix=".html") as tmp:
            Path(tmp).write_text(_html(report), encoding="utf-8")
    else:
        raise CaffeFormatError("report must end in .html or .png", path=path)
    return path


def _geometry(n):
    width = max(640, min(2400, 40 + 8 * n))
    return width, 360, 60, 20, 30, 40   # width, height, left, right, top, bottom


def _y_of(y, top, plot_h):
    return top + (0 - y) / 12.0 * plot_h     # 1e0 at the top, 1e-12 at the bottom


def _svg(report):
    pts = _plot_points(report)
    width, height, left, right, top, bottom = _geometry(len(pts))
    plot_w, plot_h = width - left - right, height - top - bottom
    step = plot_w / max(1, len(pts))
    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">'),
           (f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
           f'stroke="#ccc"/>')]
    for e in range(0, -13, -2):
        y = _y_of(e, top, plot_h)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="#e4e4e4"/><text x="{left - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">1e{e}</text>')
    y = _y_of(math.log10(ATOL), top, plot_h)
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
               f'stroke="#d62828" stroke-dasharray="4 3"/><text x="{width - right - 4}" '
               f'y="{y - 4:.1f}" text-anchor="end" fill="#d62828">tolerance</text>')
    for i, yv, c in pts:
        x = left + (i + 0.5) * step
        title = html.escape(f"{c.blob} ({c.layer_type}): rel err {_fmt(c.max_rel)} {c.status}"
                            f" {c.note}")
        out.append(f'<circle cx="{x:.1f}" cy="{_y_of(yv, top, plot_h):.1f}" r="3" '
                   f'fill="{_COLOURS.get(c.status, "#555")}"><title>{title}</title></circle>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">blobs in '
               f'net order ({len(pts)})</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
               f'transform="rotate(-90 14 {top + plot_h / 2})">max abs err / max(1, |ref|max)'
               f'</text></svg>')
    return "\n".join(out)


def _html(report):
    rows = []
    for c in report.checks:
        colour = _COLOURS.get(c.status, "#555")
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            c.blob, c.layer, c.layer_type, "x".join(map(str, c.shape)), _fmt(c.ref_max, ".3g"),
            _fmt(c.max_abs), _fmt(c.max_rel))) +
            f'<td style="color:{colour}">{html.escape(c.status)}</td>'
            f"<td>{html.escape(c.note)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("blob", "layer", "type", "shape", "max|ref|",
                                               "max abs err", "rel err", "result", "note"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>caffe2keras verify: "
            f"{html.escape(report.net)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            f"table{{border-collapse:collapse;font-size:12px}}td,th{{border-bottom:1px solid "
            f"#ddd;padding:2px 8px;text-align:left}}</style></head><body>"
            f"<h1>{html.escape(report.net)}: {html.escape(report.subject)} vs "
            f"{html.escape(report.reference)}</h1>"
            f"<p>input: {html.escape(report.input_desc)}</p>"
            f"<p><b>{html.escape(summary(report))}</b></p>{_svg(report)}"
            f"<table><tr>{head}</tr>{''.join(rows)}</table></body></html>")


def _png(report, path):
    from PIL import Image, ImageDraw

    pts = _plot_points(report)
    width, height, left, right, top, bottom = _geometry(len(pts))
    plot_w, plot_h = width - left - right, height - top - bottom
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([left, top, width - right, top + plot_h], fill="#fafafa", outline="#cccccc")
    for e in range(0, -13, -2):
        y = _y_of(e, top, plot_h)
        d.line([left, y, width - right, y], fill="#e4e4e4")
        d.text((4, y - 6), f"1e{e}", fill="black")
    y = _y_of(math.log10(ATOL), top, plot_h)
    for x in range(left, width - right, 8):
        d.line([x, y, min(x + 4, width - right), y], fill="#d62828")
    d.text((width - right - 60, y - 14), "tolerance", fill="#d62828")
    step = plot_w / max(1, len(pts))
    for i, yv, c in pts:
        x = left + (i + 0.5) * step
        yy = _y_of(yv, top, plot_h)
        d.ellipse([x - 3, yy - 3, x + 3, yy + 3], fill=_COLOURS.get(c.status, "#555555"))
    d.text((left, 8), f"{report.net}: max abs err / max(1, |ref|max) per blob vs "
                      f"{report.reference}", fill="black")
    d.text((left, height - 20), summary(report).splitlines()[0][:int(width / 6)], fill="black")
    img.save(path, format="PNG")
