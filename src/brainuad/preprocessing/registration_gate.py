"""The registration gate: whether an atlas -> scan registration is refused, warned about or
passed (`judge`), its plausibility figures (`registration.quality`) against
`RegistrationConfig`'s bounds."""

from __future__ import annotations

from brainuad.errors import BrainUADError
from brainuad.preprocessing.registration import RegistrationConfig


def judge(figures: dict, cfg: RegistrationConfig) -> tuple[list[str], bool]:
    """Every figure outside its bound, in words, and whether the registration is broken: two
    independent figures out of bound (pathology, thick slices or a cut field of view move one
    figure, not two), or one far out of it (`FAR`: most of the brain outside the field of
    view, a similarity no head reaches)."""
    low, high = cfg.scale_range
    value = {"rotation": 0.0, **figures}
    checks = [
        ("brain_dice", value["brain_dice"] < cfg.min_brain_dice,
         f"brain overlap {value['brain_dice']:.2f} (needs >= {cfg.min_brain_dice})"),
        ("coverage", value["coverage"] < cfg.min_coverage,
         f"brain inside the field of view {value['coverage']:.2f} (needs >= "
         f"{cfg.min_coverage})"),
        ("scale", not low <= value["scale"] <= high,
         f"brain scaled by {value['scale']:.2f} (needs {low}-{high})"),
        ("rotation", value["rotation"] > cfg.max_rotation,
         f"head turned {value['rotation']:.0f} degrees from the template (needs <= "
         f"{cfg.max_rotation:g})"),
        ("metric", value["metric"] > cfg.max_metric,
         f"similarity to the template {value['metric']:.2f} (needs <= {cfg.max_metric})")]
    problems = [text for _, failed, text in checks if failed]
    far = any(FAR[name](value[name]) for name, failed, _ in checks if failed)
    return problems, len(problems) >= 2 or far


#: Beyond these a figure alone says the registration is broken.
FAR = {"brain_dice": lambda v: v < 0.6, "coverage": lambda v: v < 0.5,
       "scale": lambda v: not 0.6 <= v <= 1.6, "rotation": lambda v: v > 60,
       "metric": lambda v: v > -0.25}


def check_quality(figures: dict, cfg: RegistrationConfig, what: str) -> None:
    """A one-line error naming the scan and every figure outside its bound, where the
    registration is broken and `cfg.qc` is `refuse` (a doubtful one is a warning)."""
    problems, broken = judge(figures, cfg)
    if broken and cfg.qc == "refuse":
        raise BrainUADError(f"{what}: registration to MNI152 implausible: "
                            f"{'; '.join(problems)}: not a whole brain scan, or its header's "
                            "orientation is wrong (--qc warn goes on with it)")


def quality_warnings(figures: dict, cfg: RegistrationConfig) -> list[str]:
    """What a person should check before trusting a registration that passed (or that
    `--qc warn` let pass)."""
    problems, broken = judge(figures, cfg)
    warnings = [f"registration {'implausible' if broken else 'doubtful'}: {p} (check the "
                "outline in report.html)" for p in problems]
    if cfg.min_brain_dice <= figures["brain_dice"] < cfg.warn_brain_dice:
        warnings.append(f"registration: brain overlap {figures['brain_dice']:.2f} is low "
                        f"(below {cfg.warn_brain_dice}: check the outline in report.html)")
    if cfg.min_coverage <= figures["coverage"] < cfg.warn_coverage:
        warnings.append(f"registration: {100 * (1 - figures['coverage']):.0f} % of the brain "
                        "lies outside the scan's field of view; lesions there are not found")
    return warnings
