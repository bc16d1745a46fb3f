"""What a benchmark's figures were measured with: the git commit (and whether the tree had
uncommitted changes), a hash of the run's own settings, the CPU and the date. Every benchmark
and validation script puts it in its JSON line and results file, so a table in docs/ can be
traced to the code and the settings that made it."""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO,
                              timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def config_hash(config: object) -> str:
    """SHA-256 (first 16 hex digits) of settings as canonical JSON."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def code_hash(*parts: str) -> str:
    """SHA-256 (first 16 hex digits) of the package's source (or of these of its parts,
    folders or files under src/brainuad): what a cache of computed inputs is keyed by, with
    its settings, so a change to the code that made it is never served stale."""
    digest = hashlib.sha256()
    package = REPO / "src" / "brainuad"
    files = sorted(f for part in (parts or ("",)) for f in (
        (package / part).rglob("*.py") if (package / part).is_dir() else [package / part]))
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


#: the tree the benchmark started from (read when it is imported: a commit made while a long
#: run goes on is not the code it runs)
STARTED = {"git_commit": _git("rev-parse", "HEAD") or None,
           "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
           "started": datetime.datetime.now().isoformat(timespec="seconds")}


def run_record(config: object) -> dict:
    """The git commit and dirty flag the run started from, the settings' hash, the CPU, the
    start and end dates."""
    return {**STARTED, "config_sha256": config_hash(config), "cpu": cpu(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}
