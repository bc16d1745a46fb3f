"""Preprocessing: from scans to the atlas-space, skull-stripped, [0, 1] volumes the models see.

Scans already on the atlas grid (what `synth` writes) keep their grid: brain mask (given, or
derived from the skull-stripped image), CurvatureFlow denoising (SimpleITK, as in the paper), then
intensities scaled to [0, 1] by robust percentiles inside the brain.

Any other scan (raw, in scanner space, or in another atlas space such as FSL's MNI152) is first
bias corrected (N4) and registered rigid-then-affine to nilearn's MNI152 1 mm template (on a
2 mm grid: `to_template`); the other modalities of the subject are registered rigidly to the
reference one and resampled in one step; the brain mask is the scan's own (deepbet,
`brain_mask.py`; the template's where the two disagree), or the user's mask carried along.
The atlas -> scan transform is saved so `detect` can write its maps on the scan's own grid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from brainuad.errors import BrainUADError, Failed, attempt, raise_failures
from brainuad.io.files import remove_partials, write_text
from brainuad.io.images import Volume, load_binary, load_image, save_volume
from brainuad.io.manifest import Manifest, Subject, read_manifest, shard, write_manifest
from brainuad.io.provenance import changed, record
from brainuad.io.sitk import from_sitk, itk_reason, to_sitk
from brainuad.preprocessing.atlas import atlas, on_template_grid, template, template_affine
from brainuad.preprocessing.bias import head_mask, n4
from brainuad.preprocessing.brain_mask import (
    SOURCES,
    BrainMask,
    extractor,
    own_or_template,
    scan_brain,
)
from brainuad.preprocessing.intensity import denoise, mask_from_skull_stripped, scale_to_unit
from brainuad.preprocessing.morphology import fill_holes
from brainuad.preprocessing.normal_sites import normal_sites
from brainuad.preprocessing.registration import (
    RegistrationConfig,
    register,
    to_template,
    working_template,
)
from brainuad.preprocessing.registration_gate import check_quality
from brainuad.preprocessing.tissues import check_contrast, priors
from brainuad.preprocessing.transforms import affine_transform, matrix, resample, write_transform
from brainuad.runtime.clock import Stopwatch

REGISTER = ("auto", "always", "never")
MASK = "mask.nii.gz"  # a subject's brain mask, written last: its presence marks the subject done
TRANSFORM = "to_native.tfm"  # atlas -> scan transform of a registered subject
QUALITY = "registration.json"  # its plausibility figures (`registration.quality`), for QC
FINGERPRINT = "preprocess.json"  # the settings and input files a subject's outputs come from
#: Rigid registration between two scans of the same head: two coarse levels, sparse sampling.
#: On patient01_study1 (raw MSLUB) T1 and T2 land within 0.7 and 0.2 mm of the full set-up's
#: result in 3 s instead of 9-10 s each; sampling (0.1, 0.02) instead of (0.2, 0.05): 1.6 s
#: instead of 2.4 s, 0.5 mm from it.
SAME_HEAD = RegistrationConfig(shrink=(4, 2), smoothing_mm=(2.0, 1.0), sampling=(0.1, 0.02),
                               learning_rate=2.0)


@dataclass(frozen=True)
class PreprocessConfig:
    curvature_time_step: float = 0.0625  # the stable limit for 3D curvature flow
    curvature_iterations: int = 5
    lower_percentile: float = 0.5  # maps to 0 inside the brain
    upper_percentile: float = 99.5  # maps to 1 inside the brain
    keep_bright: bool = True  # voxels above it keep their brightness (> 1): not clipped
    register: str = "auto"  # auto: every scan not already on the template's grid
    reference: str = "flair"  # the modality N4 and the atlas registration use, if present
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    # The brain mask of a registered scan without a user's mask: "scan" (deepbet's, from the
    # scan itself; the template's where the two disagree) or "template" (the MNI152 mask
    # carried over by the registration). See preprocessing/brain_mask.py.
    brain_mask: str = "scan"

    def __post_init__(self) -> None:
        if self.register not in REGISTER:
            raise BrainUADError(f"--register {self.register!r}: choose one of {REGISTER}")
        if self.brain_mask not in SOURCES:
            raise BrainUADError(f"--brain-mask {self.brain_mask!r}: choose one of {SOURCES}")


def scaled(data: np.ndarray, mask: np.ndarray, cfg: PreprocessConfig, path) -> np.ndarray:
    """CurvatureFlow denoising, then the brain's percentiles mapped to [0, 1] (a bad image is
    an error naming `path`)."""
    try:
        smoothed = denoise(data, cfg.curvature_time_step, cfg.curvature_iterations, mask)
        return scale_to_unit(smoothed, mask, cfg.lower_percentile, cfg.upper_percentile,
                             cfg.keep_bright)
    except ValueError as err:
        raise BrainUADError(f"{path}: {err}") from err


def _finish(volumes: dict[str, np.ndarray], mask: np.ndarray, affine: np.ndarray,
            paths: dict[str, Path], targets: dict[str, Path], cfg: PreprocessConfig) -> None:
    for modality, data in volumes.items():
        save_volume(targets[modality], scaled(data, mask, cfg, paths[modality]), affine,
                    np.float32)


def prepare_scan(volume: Volume, cfg: PreprocessConfig,
                 modality: str = "flair") -> tuple[Volume, Volume, Registered]:
    """One raw scan through the whole preprocessing in memory, as `segment` runs it: N4,
    registration (its plausibility checked), the brain mask (the scan's own or the
    template's), CurvatureFlow and [0, 1] scaling. The preprocessed image and mask (template
    grid) and the registration. The normal-variant sites that `segment` carries to the scan
    are loaded while N4 runs."""
    result = register_volumes({modality: volume}, modality, cfg,
                              warm=(functools.partial(normal_sites, 1),))
    affine = template_affine()
    start = time.perf_counter()
    image = scaled(result.images[modality], result.mask, cfg, volume.path)
    result.seconds["denoising, scaling"] = time.perf_counter() - start
    return Volume(image, affine, volume.path), Volume(result.mask, affine, volume.path), result


def reference_modality(cfg: PreprocessConfig, modalities) -> str:
    """The modality N4 and the atlas registration use: `cfg.reference` if the subject has it."""
    return cfg.reference if cfg.reference in modalities else next(iter(modalities))


@dataclass
class Registered:
    """A subject brought onto the template grid."""

    images: dict[str, np.ndarray]  # (X, Y, Z) per modality, on the template grid
    mask: np.ndarray  # (X, Y, Z) uint8 brain mask on the template grid
    transform: sitk.AffineTransform  # atlas -> reference scan
    quality: dict  # `registration.quality` of the atlas registration
    brain: BrainMask = BrainMask("template")  # which outline `mask` is
    seconds: dict[str, float] = field(default_factory=dict)  # per step, for the speed figures


@contextlib.contextmanager
def _stage(what: str, stage: str):
    """Anything SimpleITK raises inside becomes one line naming the scan and the stage."""
    try:
        yield
    except RuntimeError as err:
        raise BrainUADError(f"{what}: {stage} failed ({itk_reason(err)})") from err


def _warm_up(cfg: PreprocessConfig, also: tuple[Callable, ...] = ()) -> threading.Thread:
    """Load what the stages after N4 read (the template and its working copy, deepbet's
    networks, the tissue atlas, and what `also` loads) in a thread while N4 runs: ITK lets go
    of Python's lock while it computes, and these are file reads, imports and array work
    (docs/speed.md). Each is cached, so the stage that needs one takes it from the cache or
    loads it itself; a failure here is left for that stage to meet and report."""

    def load() -> None:
        with contextlib.suppress(Exception):
            working_template(cfg.registration.working_mm)
            if cfg.brain_mask == "scan":
                extractor()
            atlas(1)
            for loader in also:
                loader()

    thread = threading.Thread(target=load, name="brainuad-warm-up", daemon=True)
    thread.start()
    return thread


def register_volumes(volumes: dict[str, Volume], reference_name: str, cfg: PreprocessConfig,
                     user_mask: Volume | None = None,
                     contrasts: dict[str, str] | None = None,
                     warm: tuple[Callable, ...] = ()) -> Registered:
    """N4 + registration of every modality onto the template grid, the brain mask there (the
    scan's own, the template's, or `user_mask` carried along), and the registration's
    plausibility, checked against `cfg.registration`'s bounds (a clear error below them).
    Each volume's contrast is checked to be its modality's (its key, or `contrasts[key]`):
    a T1 given as a FLAIR is refused whatever its file is called. `warm`: more loaders for
    the thread that loads what follows N4 while it runs (`_warm_up`).
    Its `seconds` per step are for the speed figures. deepbet runs after the registration: in
    a second thread beside N4 and the registration it saved nothing on 2 cores (docs/speed.md)."""
    clock = Stopwatch()
    reg = cfg.registration
    reference = volumes[reference_name]
    what = str(reference.path)
    warming = _warm_up(cfg, warm)
    try:
        with _stage(what, "N4 bias correction"):
            ref = to_sitk(reference.data, reference.affine)
            ref = n4(ref, head_mask(ref), reg)
    finally:  # never a second loader beside this one, nor one left running at exit
        warming.join()
    clock.lap("N4")
    fixed, brain = template()
    to_ref, figures = to_template(ref, reg, what)
    check_quality(figures, reg, what)
    clock.lap("registration")
    with _stage(what, "resampling to MNI152"):
        images = {reference_name: from_sitk(resample(ref, fixed, to_ref))[0]}
    for modality, volume in volumes.items():
        if modality == reference_name:
            continue
        with _stage(str(volume.path), "N4 bias correction"):
            moving = to_sitk(volume.data, volume.affine)
            moving = n4(moving, head_mask(moving), reg)
        ref_to_moving = register(ref, moving, SAME_HEAD, f"{volume.path} to {reference.path}",
                                 affine=False)
        total = affine_transform(matrix(ref_to_moving) @ matrix(to_ref))
        with _stage(str(volume.path), "resampling to MNI152"):
            images[modality] = from_sitk(resample(moving, fixed, total))[0]
    clock.lap("resampling")
    if user_mask is not None:
        carried = resample(to_sitk(user_mask.data, user_mask.affine), fixed, to_ref,
                           nearest=True)
        mask, source = from_sitk(carried)[0] > 0.5, BrainMask("user")
    else:
        mask = from_sitk(brain)[0] > 0
        # A scan that is already skull stripped (zero outside its brain) trims the template's mask.
        if (reference.data <= 0).mean() > 0.3:
            mask &= fill_holes(images[reference_name] > 0)
        source = BrainMask("template")
        if cfg.brain_mask == "scan":
            mask, source = _scan_mask(reference, mask, fixed, to_ref)
    clock.lap("brain mask")
    if not mask.any():
        raise BrainUADError(f"{reference.path}: no brain left after registration to the template")
    tissue = priors(Volume(mask, template_affine()))
    for key, image in images.items():
        check_contrast(image, mask, tissue, np.ones(3), (contrasts or {}).get(key, key),
                       str(volumes[key].path))
    return Registered(images, mask.astype(np.uint8), to_ref, figures, source, clock.stages)


def _scan_mask(reference: Volume, template_mask: np.ndarray, fixed: sitk.Image,
               to_ref: sitk.Transform) -> tuple[np.ndarray, BrainMask]:
    """deepbet's mask of the scan on the template grid, or the template's where deepbet fails
    (e.g. finds no head) or the two disagree (`own_or_template`)."""
    return own_or_template(
        lambda: scan_brain(reference), template_mask,
        lambda own: from_sitk(resample(to_sitk(own, reference.affine), fixed, to_ref,
                                       nearest=True))[0] > 0.5)


def preprocess_subject(subject: Subject, out: Path, cfg: PreprocessConfig,
                       overwrite: bool = False) -> Subject:
    """Write one subject's preprocessed images and brain mask under `out/<subject>/`."""
    folder = out / subject.subject
    targets = {m: folder / f"{m}.nii.gz" for m in subject.images}
    mask_path = folder / MASK
    transform_path = folder / TRANSFORM
    name = reference_modality(cfg, subject.images)
    stamp = fingerprint(subject, cfg)
    # Every file is written atomically and the mask last, so existing means complete; done with
    # other settings or from other input files (the fingerprint differs), it is done again.
    done = mask_path.exists() and all(p.exists() for p in targets.values())
    if overwrite or not done or changed(_read_json(folder / FINGERPRINT), stamp) is not None:
        fresh = not folder.exists()
        remove_partials(folder)  # of a run that was killed while writing this subject
        # redone: the old mask goes first, so a redo that fails is never taken for complete
        mask_path.unlink(missing_ok=True)
        try:
            _preprocess_volumes(subject, folder, cfg, name, targets, stamp)
        except Exception:
            if fresh:  # a subject that failed leaves no folder of half its files
                shutil.rmtree(folder, ignore_errors=True)
            raise
    registered = transform_path.exists()
    extra = dict(subject.extra)
    if (folder / QUALITY).is_file():
        figures = json.loads((folder / QUALITY).read_text())
        extra |= {f"registration_{k}": f"{v:.4g}" for k, v in figures.items()}
    return Subject(subject.subject, subject.split, subject.health, targets, mask_path,
                   subject.label, extra, subject.images[name] if registered else None,
                   transform_path if registered else None)


def fingerprint(subject: Subject, cfg: PreprocessConfig) -> dict:
    """What shapes a subject's outputs (`io/provenance.py`, as segment's and compare's records):
    the settings, and each input file's content hash (not its path or modification time: a
    dataset moved or copied anew is not preprocessed again)."""
    files = {key: Path(path) for key, path in (*subject.images.items(), ("mask", subject.mask))
             if path is not None and Path(path).exists()}
    return record(files, json.loads(json.dumps(dataclasses.asdict(cfg))))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None  # damaged: the subject is done again


def check_inputs(subject: Subject, name: str) -> tuple[dict[str, Volume], Volume | None]:
    """Every file of a subject opened and checked before any slow step: the images (readable,
    3D, finite, not constant), the brain mask and the lesion label (binary, non-empty mask, on
    the reference image's grid). Returns the images and the mask (None: none given)."""
    volumes = {m: load_image(p) for m, p in subject.images.items()}
    reference = volumes[name]
    mask = None
    if subject.mask is not None:
        mask = load_binary(subject.mask, reference, "mask")
        if not mask.data.any():
            raise BrainUADError(f"{subject.mask}: brain mask is empty")
    if subject.label is not None:
        load_binary(subject.label, reference, "label")
    return volumes, mask


def _preprocess_volumes(subject: Subject, folder: Path, cfg: PreprocessConfig, name: str,
                        targets: dict[str, Path], stamp: dict) -> None:
    """Check, (register,) denoise and scale one subject; write its files, its fingerprint,
    and the mask last."""
    volumes, user_mask = check_inputs(subject, name)
    reference = volumes[name]
    registered = cfg.register == "always" or (
        cfg.register == "auto" and not all(on_template_grid(v) for v in volumes.values()))
    if registered:
        result = register_volumes(volumes, name, cfg, user_mask)
        images, mask, affine = result.images, result.mask, template_affine()
        write_transform(folder / TRANSFORM, result.transform)
        write_text(folder / QUALITY, json.dumps(result.quality, indent=2) + "\n")
    else:
        _check_same_grid(volumes)
        images = {m: v.data for m, v in volumes.items()}
        mask = user_mask.data if user_mask is not None else mask_from_skull_stripped(reference)
        affine = reference.affine
        (folder / TRANSFORM).unlink(missing_ok=True)
        (folder / QUALITY).unlink(missing_ok=True)
    _finish(images, mask, affine, subject.images, targets, cfg)
    write_text(folder / FINGERPRINT, json.dumps(stamp, indent=2) + "\n")
    save_volume(folder / MASK, mask, affine, np.uint8)  # last: marks the subject done


def _check_same_grid(volumes: dict[str, Volume]) -> None:
    reference = next(iter(volumes.values()))
    for volume in volumes.values():
        if volume.shape != reference.shape or not np.allclose(volume.affine, reference.affine,
                                                              atol=1e-3):
            raise BrainUADError(
                f"{volume.path}: not on the grid of {reference.path}; with --register never "
                "the modalities of one subject must be co-registered")


def _one(args: tuple[Subject, Path, PreprocessConfig, bool, bool]) -> Subject | Failed:
    *job, keep_going = args
    return attempt(keep_going, preprocess_subject, *job)


def _one_thread() -> None:
    """A worker of several: ITK's filters and deepbet's networks on one thread each."""
    import SimpleITK

    from brainuad.preprocessing import brain_mask

    SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    brain_mask.THREADS = 1


def preprocess_manifest(manifest_path: str | Path, out: str | Path,
                        cfg: PreprocessConfig | None = None, overwrite: bool = False,
                        progress: Callable | None = None, workers: int = 1,
                        shard_spec: str | None = None, keep_going: bool = False) -> Manifest:
    """Preprocess every subject of a manifest (or of one shard of it, `"i/n"`) and write
    `out/manifest.csv` pointing at the results once every subject of the manifest is done;
    a shard also writes `out/manifest.shard-i-of-n.csv` with its own subjects.

    With `keep_going`, a subject that fails is left out and the others go on; the manifest then
    lists the subjects that are done, and `SubjectsFailed` names the others at the end."""
    cfg = cfg or PreprocessConfig()
    manifest = read_manifest(manifest_path)
    out = Path(out)
    progress = progress or (lambda iterable, total: iterable)
    subjects = shard(manifest.subjects, shard_spec, manifest.path)
    jobs = [(s, out, cfg, overwrite, keep_going) for s in subjects]
    if workers > 1 and len(jobs) > 1:
        with get_context("spawn").Pool(workers, initializer=_one_thread) as pool:
            results = list(progress(pool.imap(_one, jobs), total=len(jobs)))
    else:
        results = [_one(job) for job in progress(jobs, total=len(jobs))]
    done = [r for r in results if not isinstance(r, Failed)]
    if done:
        written = (write_manifest(out / "manifest.csv", done) if shard_spec is None
                   else _write_shard(manifest, out, cfg, shard_spec, done))
    raise_failures([s.subject for s in subjects], results, "preprocess")
    return written


def _write_shard(manifest: Manifest, out: Path, cfg: PreprocessConfig, shard_spec: str,
                 done: list[Subject]) -> Manifest:
    """The shard's own manifest, and the whole one once every shard's subjects are done."""
    i, n = shard_spec.split("/")
    written = write_manifest(out / f"manifest.shard-{i}-of-{n}.csv", done)
    finished = {s.subject: s for s in done}
    for s in manifest.subjects:  # the other shards' subjects, if they are finished
        folder = out / s.subject
        if s.subject not in finished and (folder / MASK).exists():
            finished[s.subject] = preprocess_subject(s, out, cfg)
    if len(finished) == len(manifest.subjects):
        write_manifest(out / "manifest.csv", [finished[s.subject] for s in manifest.subjects])
    return written
