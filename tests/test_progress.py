"""Progress in a log file or a cluster job's output: one plain line per finished item, no
cursor escapes."""

from brainuad.runtime import progress


def test_a_log_gets_one_plain_line_per_item(capsys):
    progress.enable()
    try:
        assert list(progress.track(["a", "b"], "compare", unit="pair")) == ["a", "b"]
        stages = progress.Stages("scan", 2)
        stages.done("read")
    finally:
        progress.enable(False)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "compare: 1/2 pair(s) done", "compare: 2/2 pair(s) done", "  scan: read"]
    assert not any("\x1b" in line for line in lines)
