from typer.testing import CliRunner

from brainuad.cli import app
from brainuad.manifest import read_manifest

runner = CliRunner()


def test_help_lists_stages():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "preprocess"):
        assert command in result.output


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
