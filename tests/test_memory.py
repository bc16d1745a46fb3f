"""The scan commands' memory settings (`runtime/memory.py`)."""

import subprocess
import sys

import pytest

#: allocate and free a 200 MB array; print the resident memory (MB) after the free
_FREED = """
import sys
import numpy as np
from brainuad.runtime.memory import reuse_memory
if sys.argv[1] == "reuse":
    print(reuse_memory(), np._core.multiarray._get_madvise_hugepage())
array = np.ones(25_000_000)
del array
with open("/proc/self/statm") as statm:
    print(int(statm.read().split()[1]) * 4096 // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_freed_arrays_stay_in_the_process_for_the_next_one():
    def run(mode: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", _FREED, mode], capture_output=True,
                              text=True, check=True).stdout.split()

    default, reused = run("default"), run("reuse")
    assert reused[:2] == ["True", "False"]  # mallopt took both settings; no huge-page advice
    assert int(reused[2]) - int(default[0]) > 150  # the 200 MB were kept, not unmapped


def test_the_scan_commands_reuse_memory(monkeypatch):
    from brainuad.commands import cli

    called = []
    monkeypatch.setattr(cli, "reuse_memory", lambda: called.append(True))
    monkeypatch.setattr(cli, "app", lambda: None)
    monkeypatch.setattr(cli.gc, "freeze", lambda: None)
    for argv, expected in ((["brainuad", "segment", "x"], [True]), (["brainuad", "train"], [])):
        called.clear()
        monkeypatch.setattr(sys, "argv", argv)
        cli.main()
        assert called == expected
