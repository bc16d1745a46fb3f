"""The scan commands' memory settings (`runtime/memory.py`)."""

import ctypes
import os
import platform
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from brainuad.commands import use
from brainuad.commands.cli import app
from brainuad.runtime import memory

#: allocate and free a 200 MB array; print what reuse_memory said, numpy's huge-page advice
#: and the resident memory (MB) after the free
_FREED = """
import os, sys
import numpy as np
try:
    from numpy._core.multiarray import _get_madvise_hugepage
except ImportError:
    from numpy.core.multiarray import _get_madvise_hugepage
from brainuad.runtime.memory import reuse_memory
said = reuse_memory() if sys.argv[1] == "reuse" else None
array = np.ones(25_000_000)
del array
with open("/proc/self/statm") as statm:
    pages = int(statm.read().split()[1])
print(said, _get_madvise_hugepage(), pages * os.sysconf("SC_PAGE_SIZE") // 2**20)
"""
GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _run(mode: str, **env: str) -> tuple[str, str, int]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("NUMPY_MADVISE_HUGEPAGE", "GLIBC_TUNABLES", *memory._GLIBC_SETTINGS)}
    said, advice, rss = subprocess.run(
        [sys.executable, "-c", _FREED, mode], capture_output=True, text=True, check=True,
        env={**clean, **env}).stdout.split()
    return said, advice, int(rss)


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt: Linux with glibc")
def test_freed_arrays_stay_in_the_process_for_the_next_one():
    *_, default = _run("default")
    said, advice, reused = _run("reuse")
    assert said == "True" and advice == "False"
    assert reused - default > 150  # the 200 MB were kept, not unmapped
    said, _, own = _run("reuse", MALLOC_TRIM_THRESHOLD_="131072")  # the user's setting wins
    assert said == "False" and own - default < 50
    said, *_ = _run("reuse", GLIBC_TUNABLES="glibc.malloc.trim_threshold=131072")
    assert said == "False"
    said, *_ = _run("reuse", GLIBC_TUNABLES="glibc.cpu.hwcaps=-AVX512F")  # not the allocator's
    assert said == "True"


def test_numpys_huge_page_advice_is_turned_off_unless_the_user_chose(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_numpy_advice_off", lambda: calls.append(True))
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")  # glibc left as it is here
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    memory.reuse_memory()
    monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
    memory.reuse_memory()
    assert calls == [True]


@pytest.mark.parametrize("error", [OSError, TypeError, AttributeError])
def test_a_c_library_without_mallopt_changes_nothing_and_raises_nothing(monkeypatch, error):
    def broken(name):
        raise error("no such library or function")

    monkeypatch.setattr(ctypes, "CDLL", broken)
    monkeypatch.setattr(memory, "_numpy_advice_off", lambda: None)
    for name in (*memory._GLIBC_SETTINGS, "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert memory.reuse_memory() is False


@pytest.mark.parametrize("command", [["segment"], ["compare"],
                                     ["bids", "no-such-study", "out", "participant"]])
def test_the_scan_commands_reuse_memory(monkeypatch, tmp_path, command):
    """(tests/conftest.py makes `reuse_memory` a no-op for every other test)"""
    called = []
    monkeypatch.setattr(use, "reuse_memory", lambda: called.append(True))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, command)
    assert result.exit_code != 0 and called == [True]  # then each refuses what it was given
