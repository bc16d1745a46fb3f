"""The QC pages: of a segmented scan, of a compared pair and of a BIDS cohort; each one HTML
file with its images and data embedded, readable offline."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
from scipy import ndimage

from brainuad.io.files import write_text
from brainuad.io.sitk import from_sitk
from brainuad.preprocessing.atlas import template
from brainuad.reporting.panels import draw_outline, mosaic_png, slice_rgb
from brainuad.reporting.viewer import (
    VIEWER_CSS,
    brain_window,
    finding_voxels,
    to_bytes,
    viewer,
)


def _png(fig) -> str:
    """A figure as a base64 PNG for an <img> that needs no other file."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, facecolor="black")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _registration_figure(registered: np.ndarray, full_fov: bool = False) -> str:
    """The scan as registered to the atlas (before skull stripping), three views, with the
    template's brain outline: a failed registration shows at a glance. Unless `full_fov`, only
    the template's brain and 10 mm around it are shown (no face in a mailed page)."""
    brain = from_sitk(template()[1])[0] > 0
    centre = [int(c) for c in np.round(np.argwhere(brain).mean(0))]
    top = float(np.percentile(registered[brain], 99.5)) or 1.0
    views = [(registered[centre[0]], brain[centre[0]], "sagittal"),
             (registered[:, centre[1]], brain[:, centre[1]], "coronal"),
             (registered[:, :, centre[2]], brain[:, :, centre[2]], "axial")]
    if not full_fov:  # the template's grid is 1 mm
        views = [(np.where(ndimage.binary_dilation(outline, iterations=10), image, 0), outline,
                  title) for image, outline, title in views]
    return mosaic_png([(draw_outline(slice_rgb(image, 0, top), outline, "#00e5ff"), title)
                       for image, outline, title in views], columns=3)


PAGE_CSS = """body{font-family:sans-serif;background:#111;color:#eee;margin:2em;max-width:1300px}
th{text-align:left;padding-right:2em;color:#aaa;font-weight:normal} img{max-width:100%}
a{color:#8cf} .warn{background:#5a3b00;padding:.5em} .note{color:#999;font-size:.9em}
""" + VIEWER_CSS
#: panels of findings in a report (beyond them, a finding's row moves the viewer to it)
PANELS = 50


def _finding_rows(rows: list[dict], name: str, columns: list[tuple[str, str]]) -> str:
    """The findings' table: each row a link to its panel (or, beyond `PANELS`, to the
    viewer at it)."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        number = row[name]
        link = (f'<a href="#{name}-{number}">{name} {number}</a>' if number <= PANELS
                else f'<a href="#viewer" data-goto="{number}">{name} {number}</a>')
        cells = "".join(f"<td>{html.escape(_cell(row[key]))}</td>" for key, _ in columns)
        body.append(f"<tr><td>{link}</td>{cells}</tr>")
    return (f'<table class="findings"><tr><th></th>{head}</tr>' + "".join(body) + "</table>"
            if rows else f"<p>No {name} found.</p>")


def _cell(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _panels(rows: list[dict], name: str, caption, views: list[tuple[str, str]]) -> str:
    """One panel per finding (the first `PANELS`, largest first), `id="{name}-N"`: `views`,
    (plane, volume) pairs, drawn by the viewer zoomed on the finding."""
    out = []
    for row in rows[:PANELS]:
        number = row[name]
        canvases = "".join(
            f'<canvas data-plane="{plane}" data-volume="{volume}" role="img" '
            f'aria-label="{name} {number}, {plane}, {volume}"></canvas>'
            for plane, volume in views)
        out.append(f'<div class="panel" id="{name}-{number}"><p>{caption(row)}</p>'
                   f'<div class="trio">{canvases}</div></div>')
    return '<div class="panels">' + "".join(out) + "</div>"


def _at_sites(sites: dict | None) -> str:
    """The summary's `at_normal_variant_sites` in words."""
    if sites is None:
        return "not looked at (the model's grid is not the template's)"
    why = ("caps at the ventricles' horn tips, the septum, around the aqueduct and on the "
           "fourth ventricle's floor are bright on healthy FLAIRs too")
    if sites.get("removed") is None:  # kept in the mask, flagged
        return f"{sites['lesions']} of the lesions" + (
            f" ({sites['volume_ml']:.2f} ml, kept in the totals): {why}" if sites["lesions"]
            else "")
    removed = sites["removed"]
    return (f"{removed['lesions']} left out of the mask and the totals "
            f"({removed['volume_ml']:.2f} ml, in normal_sites_removed.nii.gz): {why}" + (
                f"; {sites['lesions']} of the lesions kept lie mostly there on the scan's grid "
                f"({sites['volume_ml']:.2f} ml)" if sites["lesions"] else ""))


def segment_report(path: Path, summary: dict, raw, native: dict[str, np.ndarray],
                   registered: np.ndarray, table: list[dict], numbered: np.ndarray,
                   full_fov: bool = False) -> None:
    """report.html of one segmented scan: its figures; a slice viewer of the scan as acquired
    with the lesions (`numbered` as `table`, lesions.csv, numbers them); the lesions' table
    and a panel per lesion; the registration's figures and warnings. One file, readable
    offline."""
    quality = summary["registration"]
    sites = summary.get("at_normal_variant_sites")
    rows = [("lesions", summary["lesions"]),
            ("total lesion volume", f"{summary['lesion_volume_ml']:.2f} ml"),
            ("at normal-variant sites", _at_sites(sites)),
            ("brain scored", f"{summary['brain_volume_ml']:.0f} ml"),
            ("brain mask", summary["brain_mask"]["source"]),
            ("model", f"{summary['model']['name']} (version {summary['model']['version']})"),
            ("threshold", f"{summary['threshold']:.4g} ({summary['rule']})"),
            ("registration: brain overlap", f"{quality['brain_dice']:.3f}"),
            ("registration: brain in field of view", f"{quality['coverage']:.3f}"),
            ("registration: scale", f"{quality['scale']:.3f}"),
            ("registration: head turned from the template",
             f"{quality.get('rotation', float('nan')):.1f} degrees"),
            ("registration: similarity to the template (Mattes MI)", f"{quality['metric']:.3f}"),
            ("scan grid", " x ".join(map(str, summary["grid"]["shape"])) + " voxels of "
             + " x ".join(f"{s:g}" for s in summary["grid"]["spacing_mm"]) + " mm")]
    figures = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                         for k, v in rows)
    warnings = "".join(f"<p class=warn>&#9888; {html.escape(w)}</p>"
                       for w in summary["warnings"])
    voxels = finding_voxels(numbered, len(table))
    view = viewer({"scan": to_bytes(raw.data, native["brain"])}, numbered,
                  {row["lesion"]: "lesion" for row in table}, raw.affine, native["brain"],
                  [{"label": row["lesion"], "voxel": voxel}
                   for row, voxel in zip(table, voxels, strict=True)], "lesion", full_fov)
    columns = [("volume_ml", "ml"), ("centroid_x_mm", "x mm"), ("centroid_y_mm", "y mm"),
               ("centroid_z_mm", "z mm"), ("mean_score", "mean score"),
               ("max_score", "max score"), ("site", "normal-variant site")]
    panels = _panels(table, "lesion", lambda r: (
        f"lesion {r['lesion']}: {r['volume_ml']:.3f} ml at ({r['centroid_x_mm']:.0f}, "
        f"{r['centroid_y_mm']:.0f}, {r['centroid_z_mm']:.0f}) mm, max score "
        f"{r['max_score']:.1f}" + (f"; at a normal-variant site: {r['site']}"
                                   if r.get("site") else "")),
        [(p, "scan") for p in ("axial", "coronal", "sagittal")])
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: {html.escape(summary['scan'])}</title>
<style>{PAGE_CSS}</style></head>
<body><h1>{html.escape(summary['scan'])}</h1>
<p class=note>{html.escape(summary['input'])}: brainuad {html.escape(summary['brainuad'])}.
For research; not a clinical device.</p>
{warnings}<table>{figures}</table>
<h2>The scan as acquired, the lesions in red</h2>
{view}
<h2>Lesions ({len(table)}), largest first</h2>
{_finding_rows(table, "lesion", columns)}
{panels}
<h2>Registration check</h2>
<p class=note>The scan registered to MNI152, with the template's brain outline (cyan): the
outline should follow the scan's brain. If it does not, the mask above is not to be trusted.</p>
<img alt="the scan registered to MNI152 in three planes, the template's brain outlined"
 src="data:image/png;base64,{_registration_figure(registered, full_fov)}">
</body></html>
"""
    write_text(path, page)


def compare_report(path: Path, summary: dict, table: list[dict],
                   images: dict[str, np.ndarray], numbered: np.ndarray, brain: np.ndarray,
                   affine: np.ndarray, full_fov: bool = False) -> None:
    """report.html of one compared pair: its figures, a slice viewer of both visits on the
    follow-up's grid with the changes (`numbered` as `table`, changes.csv, numbers them; red
    growth, blue shrinkage), the changes' table and a panel per change (baseline | follow-up |
    difference). One file, readable offline."""
    quality = summary["registration"]
    rows = [*((f"{kind} lesions", f"{v['count']} ({v['ml']:.2f} ml)")
              for kind, v in summary["changes"].items()),
            ("detector", json_words(summary.get("detector", {}))),
            ("noise of the difference (white matter)", f"{summary['noise']:.4f}"),
            ("visits' correlation in the brain", f"{quality['visit_correlation']:.3f}"),
            ("follow-up to MNI152: brain overlap, coverage",
             f"{quality['brain_dice']:.3f}, {quality['coverage']:.3f}")]
    figures = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                         for k, v in rows)
    warnings = "".join(f"<p class=warn>&#9888; {html.escape(w)}</p>"
                       for w in summary["warnings"])
    window = brain_window(images["followup"], brain)
    volumes = {"follow-up": to_bytes(images["followup"], brain, window),
               "baseline": to_bytes(images["baseline"], brain, window)}
    voxels = finding_voxels(numbered, len(table))
    kinds = {row["change"]: "shrinkage" if row["type"].startswith("shrinking") else "growth"
             for row in table}
    view = viewer(volumes, numbered, kinds, affine, brain,
                  [{"label": row["change"], "voxel": voxel}
                   for row, voxel in zip(table, voxels, strict=True)], "change", full_fov,
                  difference=("baseline", "follow-up"))
    columns = [("type", "type"), ("volume_ml", "ml"),
               ("baseline_lesion_ml", "lesion ml in it, before"), ("followup_lesion_ml", "after"),
               ("centroid_x_mm", "x mm"), ("centroid_y_mm", "y mm"), ("centroid_z_mm", "z mm"),
               ("max_abs_score", "peak (spreads)")]
    panels = _panels(table, "change", lambda r: (
        f"change {r['change']}, {html.escape(r['type'])}: {r['volume_ml']:.3f} ml at "
        f"({r['centroid_x_mm']:.0f}, {r['centroid_y_mm']:.0f}, {r['centroid_z_mm']:.0f}) mm; "
        "baseline | follow-up | difference"),
        [("axial", "baseline"), ("axial", "follow-up"), ("axial", "difference")])
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: {html.escape(summary['pair'])}</title>
<style>{PAGE_CSS}</style></head>
<body><h1>{html.escape(summary['pair'])}</h1>
<p class=note>{html.escape(summary['baseline'])} &rarr; {html.escape(summary['followup'])}:
brainuad {html.escape(summary['brainuad'])}. For research; not a clinical device.</p>
{warnings}<table>{figures}</table>
<h2>Both visits on the follow-up's grid: growth in red, shrinkage in blue</h2>
{view}
<h2>Changes ({len(table)}), largest first</h2>
{_finding_rows(table, "change", columns)}
{panels}
</body></html>
"""
    write_text(path, page)


def json_words(values: dict) -> str:
    """A summary's dict in a few words (`key value, ...`)."""
    return ", ".join(f"{k} {v}" for k, v in values.items() if k != "chosen")


def _volume_figure(rows: list[dict]) -> str:
    """Lesion volume per subject over its visits in time order (`visit`: 1, 2, ...; one line
    each; subjects whose visits' order is not known are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), facecolor="black")
    ax.set_facecolor("black")
    subjects: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row["visit"] != "n/a":
            subjects.setdefault(row["subject"], []).append((row["visit"],
                                                            row["lesion_volume_ml"]))
    for subject, points in sorted(subjects.items()):
        points.sort()
        ax.plot([v for v, _ in points], [ml for _, ml in points], "o-", label=f"sub-{subject}")
    last = max((v for points in subjects.values() for v, _ in points), default=1)
    ax.set_xticks(range(1, last + 1))
    ax.set_xlabel("visit (each subject's sessions in time order)", color="white")
    ax.set_ylabel("lesion volume (ml)", color="white")
    ax.tick_params(colors="white")
    if 0 < len(subjects) <= 20:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _cohort_figure(rows: list[dict], lesion_volumes: list[float]) -> str:
    """Beside the volumes over visits: every lesion's volume (a histogram, log scale) and the
    new and enlarging lesions of each pair of sessions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2), facecolor="black")
    for ax in (left, right):
        ax.set_facecolor("black")
        ax.tick_params(colors="white")
    volumes = np.asarray([v for v in lesion_volumes if v > 0])
    if volumes.size:
        left.hist(np.log10(volumes), bins=30, color="#8cf")
    left.set_xlabel("lesion volume, log10 ml", color="white")
    left.set_ylabel("lesions", color="white")
    pairs = [r for r in rows if r["new_count"] != "n/a"]
    names = [f"{r['subject']} {r['baseline_session']}>{r['session']}" for r in pairs]
    new = [int(r["new_count"]) for r in pairs]
    enlarging = [int(r["enlarging_count"]) for r in pairs]
    right.bar(range(len(pairs)), new, color="#ff5050", label="new")
    right.bar(range(len(pairs)), enlarging, bottom=new, color="#ffb050", label="enlarging")
    right.set_xticks(range(len(pairs)), names, rotation=60, fontsize=7, color="white")
    right.set_ylabel("lesions per pair", color="white")
    if pairs:
        right.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


SORTABLE = """document.querySelectorAll("table.sortable th").forEach((th, column) => {
  th.addEventListener("click", () => {
    const table = th.closest("table"), rows = [...table.querySelectorAll("tr")].slice(1);
    const down = th.dataset.down = th.dataset.down === "1" ? "" : "1";
    // numbers by value, then text; an empty or "n/a" cell last either way
    const key = (row) => { const text = (row.children[column].dataset.key ??
      row.children[column].textContent).trim(); const n = parseFloat(text);
      return text === "" || text === "n/a" || text === "-" ? null : isNaN(n) ? text : n; };
    const order = (x, y) => (typeof x === typeof y ? (x > y ? 1 : x < y ? -1 : 0)
      : typeof x === "number" ? -1 : 1);
    rows.sort((a, b) => { const x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      return order(x, y) * (down ? -1 : 1); });
    rows.forEach((row) => table.appendChild(row));
  });
});"""


def cohort_index(path: Path, rows: list[dict], lesion_volumes: list[float] | None = None) -> None:
    """index.html of a BIDS study: lesion volume per subject over its visits, the lesions'
    volumes and each pair's new and enlarging lesions; a table a click sorts, a row per scan
    with its figures and its reports linked."""

    def link(target: str, text: str) -> str:
        return "-" if target == "n/a" else f'<a href="{html.escape(target)}">{text}</a>'

    body = "\n".join(
        f"<tr><td>sub-{html.escape(r['subject'])}</td><td>{html.escape(r['session'])}</td>"
        f"<td>{r['visit']}</td><td>{r['lesions']}</td><td>{r['lesion_volume_ml']:.2f}</td>"
        f"<td>{r['new_count']}</td><td>{r['enlarging_count']}</td>"
        f"<td>{r['shrinking_count']}</td>"
        f"<td>{link(r['report'], 'scan')} {link(r['change_report'], 'change')}</td>"
        f"<td class=warn>{html.escape(r['warnings'] if r['warnings'] != 'n/a' else '')}</td>"
        f"</tr>" for r in rows)
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: cohort</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:2em;max-width:1100px}}
th{{text-align:left;color:#aaa;font-weight:normal;padding-right:1.5em;cursor:pointer}}
td{{padding-right:1.5em}} a{{color:#8cf}} img{{width:100%}} .warn{{color:#fc6;font-size:.9em}}
</style></head>
<body><h1>Lesions per scan</h1>
<p>{len(rows)} scans of {len({r['subject'] for r in rows})} subjects. For research; not a
clinical device.</p>
<img alt="lesion volume of each subject over its visits in time order"
 src="data:image/png;base64,{_volume_figure(rows)}">
<img alt="every lesion's volume (histogram) and each pair's new and enlarging lesions"
 src="data:image/png;base64,{_cohort_figure(rows, lesion_volumes or [])}">
<p class=warn>Click a column's title to sort by it.</p>
<table class="sortable"><tr><th>subject</th><th>session</th><th>visit</th><th>lesions</th>
<th>ml</th><th>new</th><th>enlarging</th><th>shrinking</th><th>reports</th><th>warnings</th></tr>
{body}</table>
<script>{SORTABLE}</script></body></html>
"""
    write_text(path, page)
