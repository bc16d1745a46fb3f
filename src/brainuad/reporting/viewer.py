"""The reports' slice viewer: the scan as acquired (and, for a pair, both visits), every slice
in three planes, the findings (lesions, changes) overlaid and each one a click away, inside the
one HTML file a person mails, nothing fetched.

A small canvas viewer (`viewer.js`) over 8-bit volumes, gzip-compressed and base64-embedded:
nilearn's `view_img` costs 3-4 s of imports per process (docs/architecture.md) and NiiVue needs
WebGL, which a headless browser may not draw; this one needs a 2D canvas and the browser's own
`DecompressionStream`. The volumes are turned to the closest RAS orientation (shown
radiologically: the patient's right on the left) and cropped to the brain and `MARGIN_MM`
around it unless the whole field of view is asked for: no face in a mailed page by default.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
from importlib.resources import files

import nibabel as nib
import numpy as np

from brainuad.preprocessing.morphology import bounding_box

MARGIN_MM = 10.0  # around the brain, in the cropped view
ZOOM_MM = 20.0  # a finding's panel shows this far around it, each way
#: overlay colours by finding kind
COLOURS = {"lesion": [255, 40, 40], "growth": [255, 40, 40], "shrinkage": [60, 130, 255]}


def _pack(array: np.ndarray, dtype: type) -> str:
    """A volume (i, j, k) as base64 gzip of its bytes, k slowest (viewer.js's layout)."""
    raw = np.ascontiguousarray(np.asarray(array, dtype).transpose(2, 1, 0)).tobytes()
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def to_bytes(volume: np.ndarray, brain: np.ndarray,
             window: tuple[float, float] | None = None) -> np.ndarray:
    """A scan as 0-255: `window`, or its brain's 0.5th to 99.5th percentiles, stretched over
    the range (two visits shown side by side take the same window)."""
    if window is None:
        window = brain_window(volume, brain)
    low, high = window
    scaled = (np.asarray(volume, np.float32) - low) / max(float(high - low), 1e-6)
    return np.clip(scaled * 255, 0, 255).round().astype(np.uint8)


def brain_window(volume: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """The brain's 0.5th and 99.5th percentiles (the whole volume's without a brain)."""
    inside = volume[brain > 0] if brain.any() else volume.ravel()
    low, high = np.percentile(inside, [0.5, 99.5])
    return float(low), float(high)


def viewer(volumes: dict[str, np.ndarray], labels: np.ndarray, kinds: dict[int, str],
           affine: np.ndarray, brain: np.ndarray, findings: list[dict], name: str,
           full_fov: bool = False, difference: tuple[str, str] | None = None) -> str:
    """The viewer's HTML: `volumes` (name -> a scan on one grid, scaled to 0-255 by
    `to_bytes`), `labels` (each finding's number, as its table numbers it) and `kinds` (number
    -> a key of `COLOURS`), on the grid of `affine`; `findings`: dicts with `label` and `voxel`
    (on that grid) to link to; `name`: what a finding is called ("lesion", "change": its panels
    have ids `name-N`); `difference`: (before, after) volumes whose difference it can show."""
    ornt = nib.orientations.io_orientation(affine)
    shape = np.asarray(labels.shape)
    canonical = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    turn = lambda data: nib.orientations.apply_orientation(data, ornt)  # noqa: E731
    turned_brain = turn(brain > 0)
    spacing = np.sqrt((canonical[:3, :3] ** 2).sum(0))
    box = None if full_fov else bounding_box(turned_brain, 0)
    if box is None:
        box = tuple(slice(0, n) for n in turned_brain.shape)
    else:  # the margin in mm on every axis
        box = tuple(slice(max(s.start - int(np.ceil(MARGIN_MM / sp)), 0),
                          min(s.stop + int(np.ceil(MARGIN_MM / sp)), n))
                    for s, sp, n in zip(box, spacing, turned_brain.shape, strict=True))
    offset = np.array([s.start for s in box])
    shift = np.eye(4)
    shift[:3, 3] = offset
    cropped = canonical @ shift
    to_view = np.linalg.inv(cropped) @ affine

    def view_voxel(voxel) -> list[int]:
        point = to_view @ np.array([*voxel, 1.0])
        return [int(np.clip(round(float(v)), 0, n - 1)) for v, n in
                zip(point[:3], [s.stop - s.start for s in box], strict=True)]

    view_shape = [s.stop - s.start for s in box]
    cursor = findings[0]["voxel"] if findings else list(np.array(labels.shape) // 2)
    payload = {
        "name": name, "shape": view_shape, "spacing": spacing.round(4).tolist(),
        "affine": cropped.ravel().round(5).tolist(),
        "volumes": {k: _pack(turn(v)[box], np.uint8) for k, v in volumes.items()},
        "labels": _pack(np.clip(turn(labels)[box], 0, 65535), np.uint16),
        "brain": _pack(turned_brain[box], np.uint8),
        "kinds": {str(k): v for k, v in kinds.items()}, "colours": COLOURS,
        "findings": [{"label": int(f["label"]), "voxel": view_voxel(f["voxel"])}
                     for f in findings],
        "cursor": view_voxel(cursor), "zoom_mm": ZOOM_MM,
        "to_file": np.linalg.inv(to_view).ravel().round(5).tolist(),
        "difference": list(difference) if difference else None,
    }
    choices = [*volumes, *(["difference"] if difference else [])]
    field = ("The whole field of view." if full_fov
             else f"Cropped to the brain and {MARGIN_MM:g} mm around it (no face).")
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>'
                      for v in choices)
    views = "".join(
        f'<div class="view" id="view-{plane}" tabindex="0"><canvas role="img" '
        f'aria-label="{plane} slice of the {choices[0]} with the {name}s overlaid"></canvas>'
        f'<span class="left"></span><span class="right"></span><span class="cross"></span>'
        f'<span class="plane">{plane}</span></div>'
        for plane in ("axial", "coronal", "sagittal"))
    script = (files("brainuad.reporting") / "viewer.js").read_text(encoding="utf-8")
    data = json.dumps(payload).replace("</", "<\\/")
    return f"""<div id="viewer" class="viewer">
<div class="controls"><label>show <select id="viewer-volume">{options}</select></label>
<label>window from <input id="viewer-low" type="range" min="0" max="254" value="0"></label>
<label>to <input id="viewer-high" type="range" min="1" max="255" value="255"></label>
<label><input id="viewer-overlay" type="checkbox" checked> {name}s (o)</label>
<label><input id="viewer-outline" type="checkbox" checked> brain outline</label>
<label>opacity <input id="viewer-opacity" type="range" min="0" max="100" value="50"></label>
</div>
<div class="views">{views}</div>
<p id="viewer-cursor" class="note"></p>
<p class="note">Click a view to move the cursor; the wheel or, with the pointer over the
viewer, the arrow keys go through its slices (page up and down by five; left and right change
the view); o shows or hides the overlay. The cyan line outlines the brain that was looked at.
{field}</p>
</div>
<script type="application/json" id="viewer-data">{data}</script>
<script>{script}</script>"""


VIEWER_CSS = """.viewer .views{display:flex;gap:8px;flex-wrap:wrap;align-items:flex-start}
.viewer .view{position:relative;flex:1 1 300px;max-width:420px;background:#000}
.viewer canvas{width:100%;height:auto;image-rendering:pixelated;display:block;cursor:crosshair}
.viewer .view.active{outline:2px solid #8cf}
.viewer .left,.viewer .right,.viewer .plane{position:absolute;top:4px;color:#ff0;
font:12px sans-serif}
.viewer .left{left:6px}.viewer .right{right:6px}
.viewer .plane{bottom:4px;top:auto;left:6px;color:#aaa}
.viewer .cross{position:absolute;width:9px;height:9px;margin:-5px 0 0 -5px;border:1px solid #0f0;
border-radius:50%;pointer-events:none}
.viewer .controls label{margin-right:1.2em;font-size:.9em}
.panels{display:flex;flex-wrap:wrap;gap:10px}
.panel{background:#1b1b1b;padding:6px;width:330px}
.panel .trio{display:flex;gap:3px;align-items:flex-start}
.panel canvas{width:106px;height:auto;image-rendering:pixelated;background:#000}
.panel p{margin:2px 0 4px;font-size:.85em}
table.findings td,table.findings th{padding:1px 10px 1px 0;font-size:.9em}
"""


def finding_voxels(labels: np.ndarray, count: int) -> list[list[int]]:
    """For each label 1..`count`, its voxel nearest its centroid (voxel coordinates)."""
    where = np.flatnonzero(labels)
    if not where.size:
        return []
    label = labels.ravel()[where]
    coords = np.stack(np.unravel_index(where, labels.shape), axis=1).astype(np.float64)
    sizes = np.bincount(label, minlength=count + 1).astype(float)
    centres = np.stack([np.bincount(label, weights=coords[:, a], minlength=count + 1)
                        for a in range(3)], axis=1) / np.maximum(sizes, 1)[:, None]
    distance = ((coords - centres[label]) ** 2).sum(1)
    order = np.lexsort((distance, label))  # by label, nearest first
    first = order[np.r_[0, np.flatnonzero(np.diff(label[order])) + 1]]
    out = [[0, 0, 0]] * (count + 1)
    for index in first:
        out[int(label[index])] = coords[index].astype(int).tolist()
    return out[1:]
