"""The README's report screenshots, taken in a real browser: `brainuad segment --example` and
`brainuad compare --example` into a fresh temporary folder, each report opened in headless Chromium
(Debian's `chromium`) with the network off, saved to docs/segment/report.png and
docs/compare/report.png.

    python scripts/screenshots.py
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shoot(page: Path, target: Path, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
                    "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=8000",
                    f"--window-size=1300,{height}", f"--screenshot={target}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    print(f"{page} -> {target}")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    brainuad = [sys.executable, "-m", "brainuad"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for command in ("segment", "compare"):
            subprocess.run([*brainuad, command, "--example", "--out", str(work / command)],
                           check=True)
        shoot(work / "segment" / "example_flair" / "report.html",
              REPO / "docs" / "segment" / "report.png", 1500)
        shoot(work / "compare" / "baseline-followup" / "report.html",
              REPO / "docs" / "compare" / "report.png", 1500)


if __name__ == "__main__":
    main()
