import pytest

from brainuad.errors import BrainUADError
from brainuad.io.manifest import read_manifest, write_manifest


def _write(tmp_path, text, name="manifest.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_cohort(cohort):
    manifest = read_manifest(cohort)
    assert len(manifest.subjects) == 6
    assert manifest.modalities == ["flair"]
    assert len(manifest.select(health="healthy")) == 4
    assert len(manifest.select(split="val")) == 1
    first = manifest.subjects[0]
    assert first.images["flair"].is_file() and first.mask.is_file() and first.label.is_file()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("subject,split,flair\na,train,x.nii.gz\n", "missing column(s) health"),
        ("subject,split,health\na,train,healthy\n", "no image column"),
        ("subject,split,health,flair\n", "no subjects"),
        ("", "missing column(s) subject, split, health"),
        ("subject,split,health,flair\na,train,healthy,nowhere.nii.gz\n", "does not exist"),
        ("subject,split,health,flair\na,fold1,healthy,x\n", "split 'fold1'"),
        ("subject,split,health,flair\na,train,sick,x\n", "health 'sick'"),
        ("subject,split,health,flair\na,train,healthy,\n", "has no image path"),
    ],
    ids=["missing-column", "no-image-column", "empty", "blank-file", "path-nowhere", "bad-split",
         "bad-health", "empty-path"],
)
def test_bad_manifests(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(BrainUADError) as info:
        read_manifest(path)
    assert expected in str(info.value) and str(path) in str(info.value)


def test_duplicate_subject(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(b"1")
    path = _write(tmp_path, "subject,split,health,flair\na,train,healthy,x.nii.gz\n"
                            "a,val,healthy,x.nii.gz\n")
    with pytest.raises(BrainUADError, match="line 3: duplicate subject 'a'"):
        read_manifest(path)


def test_directory_where_file_expected(tmp_path):
    (tmp_path / "scan.nii.gz").mkdir()
    path = _write(tmp_path, "subject,split,health,flair\na,train,healthy,scan.nii.gz\n")
    with pytest.raises(BrainUADError, match="is a directory"):
        read_manifest(path)
    with pytest.raises(BrainUADError, match="manifest is a directory"):
        read_manifest(tmp_path)


def test_write_round_trip_relative_paths(cohort, tmp_path):
    manifest = read_manifest(cohort)
    out = tmp_path / "elsewhere ü" / "m.csv"
    write_manifest(out, manifest.subjects)
    again = read_manifest(out)
    assert [s.images for s in again.subjects] == [s.images for s in manifest.subjects]
    assert not any(cell.startswith("/") for cell in out.read_text().split(","))


def test_shards_are_disjoint_and_cover_the_manifest():
    from brainuad.io.manifest import Subject, shard

    subjects = [Subject(f"s{i}", "test", "patient", {}) for i in range(7)]
    parts = [shard(subjects, f"{i}/3") for i in (1, 2, 3)]
    names = [s.subject for part in parts for s in part]
    assert sorted(names) == sorted(s.subject for s in subjects)
    assert len(names) == len(set(names))
    assert shard(subjects, None) is subjects
    for bad in ("0/3", "4/3", "x", "1/0", "2"):
        with pytest.raises(BrainUADError, match="--shard"):
            shard(subjects, bad)
    with pytest.raises(BrainUADError, match="has no subjects"):
        shard(subjects[:1], "2/2")
