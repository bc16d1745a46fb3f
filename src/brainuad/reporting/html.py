"""The QC page of a segmented scan: one HTML file with its images embedded, readable offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainuad.io.files import write_text
from brainuad.io.sitk import from_sitk
from brainuad.preprocessing.atlas import template
from brainuad.reporting.panels import draw_outline, mosaic_png, slice_rgb


def _png(fig) -> str:
    """A figure as a base64 PNG for an <img> that needs no other file."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, facecolor="black")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _registration_figure(registered: np.ndarray) -> str:
    """The scan as registered to the atlas (before skull stripping), three views, with the
    template's brain outline: a failed registration shows at a glance."""
    brain = from_sitk(template()[1])[0] > 0
    centre = [int(c) for c in np.round(np.argwhere(brain).mean(0))]
    top = float(np.percentile(registered[brain], 99.5)) or 1.0
    views = [(registered[centre[0]], brain[centre[0]], "sagittal"),
             (registered[:, centre[1]], brain[:, centre[1]], "coronal"),
             (registered[:, :, centre[2]], brain[:, :, centre[2]], "axial")]
    return mosaic_png([(draw_outline(slice_rgb(image, 0, top), outline, "#00e5ff"), title)
                       for image, outline, title in views], columns=3)


def _lesion_figure(raw, lesions: np.ndarray, brain: np.ndarray, count: int = 12) -> str:
    """Axial slices of the scan as acquired (shown in radiological RAS order), the lesion
    outline in red and the scored brain's in blue."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(raw.affine)
    image, lesion, scored = (nib.orientations.apply_orientation(v, ornt)
                             for v in (raw.data, lesions, brain))
    with_brain = np.flatnonzero(scored.any(axis=(0, 1)))
    if len(with_brain) == 0:
        with_brain = np.arange(image.shape[2])
    chosen = np.unique(np.linspace(with_brain[0], with_brain[-1], count).round().astype(int))
    top = float(np.percentile(image[scored > 0], 99.5)) if scored.any() else float(image.max())
    # zoomed onto the brain (its bounding box in the slice plane, a little margin)
    inplane = np.argwhere(scored.any(axis=2)) if scored.any() else np.argwhere(
        np.ones(image.shape[:2]))
    lo = np.maximum(inplane.min(0) - 5, 0)
    hi = np.minimum(inplane.max(0) + 6, image.shape[:2])
    crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    tiles = []
    for z in chosen:
        rgb = draw_outline(slice_rgb(image[crop][:, :, z], 0, top or 1.0),
                           scored[crop][:, :, z], "#3d7bff")
        tiles.append((draw_outline(rgb, lesion[crop][:, :, z], "#ff2020"), f"slice {z}"))
    return mosaic_png(tiles, columns=3)


def segment_report(path: Path, summary: dict, raw, native: dict[str, np.ndarray],
                   registered: np.ndarray) -> None:
    """report.html of one segmented scan: its figures, what was found, the registration's
    figures and warnings; one file with its images embedded, readable offline."""
    import html

    quality = summary["registration"]
    rows = [("lesions", summary["lesions"]),
            ("total lesion volume", f"{summary['lesion_volume_ml']:.2f} ml"),
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
    table = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                      for k, v in rows)
    warnings = "".join(f"<p class=warn>&#9888; {html.escape(w)}</p>"
                       for w in summary["warnings"])
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: {html.escape(summary['scan'])}</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:2em;max-width:1100px}}
th{{text-align:left;padding-right:2em;color:#aaa;font-weight:normal}} img{{width:100%}}
.warn{{background:#5a3b00;padding:.5em}} .note{{color:#999;font-size:.9em}}</style></head>
<body><h1>{html.escape(summary['scan'])}</h1>
<p class=note>{html.escape(summary['input'])}: brainuad {html.escape(summary['brainuad'])}.
For research; not a clinical device.</p>
{warnings}<table>{table}</table>
<h2>Lesions (red) over the scan as acquired</h2>
<p class=note>Blue: the brain mask (which outline it is: "brain mask" in the table above); a
band of a few millimetres inside its edge is not scored.</p>
<img alt="lesion outlines" src="data:image/png;base64,{_lesion_figure(raw, native['lesions'],
                                                                      native['brain'])}">
<h2>Registration check</h2>
<p class=note>The scan registered to MNI152, with the template's brain outline (cyan): the
outline should follow the scan's brain. If it does not, the mask above is not to be trusted.</p>
<img alt="registration" src="data:image/png;base64,{_registration_figure(registered)}">
</body></html>
"""
    write_text(path, page)


def _change_figure(images: dict[str, np.ndarray], change, count: int = 6) -> str:
    """Per change (the largest `count`), its axial slice: baseline | follow-up | difference,
    the change outlined (red: new or enlarging, blue: shrinking or resolving)."""
    from scipy import ndimage

    chosen = sorted(change.components, key=lambda c: -c["voxels"])[:count]
    if not chosen:
        return ""
    b, f = images["baseline"], images["followup"]
    top = float(np.percentile(f[f > 0], 99.5)) if (f > 0).any() else 1.0
    tiles = []
    for component in chosen:
        part = change.labels == component["label"]
        z = int(round(ndimage.center_of_mass(part)[2]))
        colour = "#3d7bff" if component["type"].startswith("shrinking") else "#ff2020"
        for data, title in ((b, "baseline"), (f, "follow-up"),
                            (change.score, "difference (spreads)")):
            rgb = (slice_rgb(data[:, :, z], -6, 6, "coolwarm") if data is change.score
                   else slice_rgb(data[:, :, z], 0, top))
            tiles.append((draw_outline(rgb, part[:, :, z], colour),
                          f"{title}: {component['type'].split()[0]}"))
    return mosaic_png(tiles, columns=3)


def compare_report(path: Path, summary: dict, table: list[dict],
                   images: dict[str, np.ndarray], change, affine: np.ndarray) -> None:
    """report.html of one compared pair: the changes found, baseline | follow-up | difference
    at each, the registration and noise figures; one file, images embedded."""
    import html

    quality = summary["registration"]
    rows = [*((f"{kind} lesions", f"{v['count']} ({v['ml']:.2f} ml)")
              for kind, v in summary["changes"].items()),
            ("noise of the difference (white matter)", f"{summary['noise']:.4f}"),
            ("settings", ", ".join(f"{k} {v}" for k, v in summary["settings"].items()
                                   if k != "rule")),
            ("visits' correlation in the brain", f"{quality['visit_correlation']:.3f}"),
            ("follow-up to MNI152: brain overlap, coverage",
             f"{quality['brain_dice']:.3f}, {quality['coverage']:.3f}")]
    cells = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                      for k, v in rows)
    changes = "\n".join(f"<tr><td>{r['change']}</td><td>{html.escape(r['type'])}</td>"
                        f"<td>{r['volume_ml']:.3f}</td><td>{r['max_abs_score']:.1f}</td></tr>"
                        for r in table[:50])
    warnings = "".join(f"<p class=warn>&#9888; {html.escape(w)}</p>"
                       for w in summary["warnings"])
    figure = _change_figure(images, change)
    image = (f'<img alt="changes" src="data:image/png;base64,{figure}">' if figure
             else "<p>No change found.</p>")
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: {html.escape(summary['pair'])}</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:2em;max-width:1000px}}
th{{text-align:left;padding-right:2em;color:#aaa;font-weight:normal}} img{{width:100%}}
td{{padding-right:1.5em}} .warn{{background:#5a3b00;padding:.5em}}
.note{{color:#999;font-size:.9em}}</style></head>
<body><h1>{html.escape(summary['pair'])}</h1>
<p class=note>{html.escape(summary['baseline'])} &rarr; {html.escape(summary['followup'])}:
brainuad {html.escape(summary['brainuad'])}. For research; not a clinical device.</p>
{warnings}<table>{cells}</table>
<h2>Changes</h2><table><tr><th>#</th><th>type</th><th>ml</th><th>max |score|</th></tr>
{changes}</table>
<h2>Baseline, follow-up and their difference at each change</h2>
<p class=note>On the atlas grid both visits were resampled onto; red: new or enlarging, blue:
shrinking or resolving.</p>
{image}
</body></html>
"""
    write_text(path, page)


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


def cohort_index(path: Path, rows: list[dict]) -> None:
    """index.html of a BIDS study: a row per scan with its figures and its reports linked, and
    lesion volume per subject over sessions."""
    import html

    def link(target: str, text: str) -> str:
        return "-" if target == "n/a" else f'<a href="{html.escape(target)}">{text}</a>'

    body = "\n".join(
        f"<tr><td>sub-{html.escape(r['subject'])}</td><td>{html.escape(r['session'])}</td>"
        f"<td>{r['lesions']}</td><td>{r['lesion_volume_ml']:.2f}</td>"
        f"<td>{r['new_count']} / {r['enlarging_count']} / {r['shrinking_count']}</td>"
        f"<td>{link(r['report'], 'scan')} {link(r['change_report'], 'change')}</td>"
        f"<td class=warn>{html.escape(r['warnings'] if r['warnings'] != 'n/a' else '')}</td>"
        f"</tr>" for r in rows)
    page = f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>brainuad: cohort</title>
<style>body{{font-family:sans-serif;background:#111;color:#eee;margin:2em;max-width:1100px}}
th{{text-align:left;color:#aaa;font-weight:normal;padding-right:1.5em}} td{{padding-right:1.5em}}
a{{color:#8cf}} img{{width:100%}} .warn{{color:#fc6;font-size:.9em}}</style></head>
<body><h1>Lesions per scan</h1>
<p>{len(rows)} scans of {len({r['subject'] for r in rows})} subjects. For research; not a
clinical device.</p>
<img alt="lesion volume per subject over sessions"
 src="data:image/png;base64,{_volume_figure(rows)}">
<table><tr><th>subject</th><th>session</th><th>lesions</th><th>ml</th>
<th>new / enlarging / shrinking since the previous session</th><th>reports</th>
<th>warnings</th></tr>
{body}</table></body></html>
"""
    write_text(path, page)
