from typer.testing import CliRunner

from brainuad.commands.cli import app
from brainuad.io.manifest import read_manifest

runner = CliRunner()


COMMANDS = ("segment", "compare", "bids", "models", "synth", "preprocess", "train", "calibrate",
            "use-epoch", "detect", "evaluate", "benchmark", "demo")


def test_help_lists_every_command_the_users_first_one_line_each():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    listed = [line.split()[1] for line in result.output.splitlines()
              if len(line.split()) > 1 and line.split()[1] in COMMANDS]
    assert listed == list(COMMANDS)  # in this order: what a user runs, then the stages
    for command in COMMANDS:
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_preprocess_command(tmp_path, cohort):
    out = tmp_path / "prep dir é"
    result = runner.invoke(app, ["preprocess", str(cohort), str(out), "--register", "never"])
    assert result.exit_code == 0, result.output
    assert len(read_manifest(out / "manifest.csv").subjects) == 6


def test_bad_input_is_one_line_without_traceback(tmp_path):
    result = runner.invoke(app, ["preprocess", str(tmp_path / "missing.csv"), str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: {tmp_path / 'missing.csv'}: manifest not found"]
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_exception(tmp_path):
    result = runner.invoke(app, ["--debug", "preprocess", str(tmp_path / "x.csv"), str(tmp_path)])
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "BrainUADError"


def test_synth_command(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "c"), "--n-healthy", "1",
                                 "--n-lesioned", "1", "--seed", "5"])
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "c" / "manifest.csv")
    assert [s.health for s in manifest.subjects] == ["healthy", "patient"]


def test_synth_rejects_bad_options(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "c"), "--contrast", "dwi"])
    assert result.exit_code == 1
    assert "--contrast 'dwi'" in result.output


def test_a_command_stamps_its_exit_where_asked(tmp_path):
    """BRAINUAD_STAMPS (benchmarks/segment.py's start-up and exit rows): the process notes the
    moment its command returned, also after a bad-input error; without it, nothing."""
    import os
    import subprocess
    import sys

    stamps = tmp_path / "stamps.txt"
    env = {**os.environ, "BRAINUAD_STAMPS": str(stamps)}
    done = subprocess.run([sys.executable, "-m", "brainuad", "segment", str(tmp_path / "none"),
                           "--out", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "no such file" in done.stderr
    events = [line.split()[0] for line in stamps.read_text().splitlines()]
    assert events == ["work", "exit"]
