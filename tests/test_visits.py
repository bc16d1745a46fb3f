"""The one rule for the order of a person's visits (io/visits.py), and compare's CSV that uses
it: never text order, never a guess."""

from datetime import datetime

import pytest

from brainuad.commands.compare import read_visits
from brainuad.errors import BrainUADError
from brainuad.io.visits import DATES, NUMBERS, STATED, TIMES, UnorderedVisits, visit_order


@pytest.mark.parametrize(("labels", "earliest_first"), [
    (["10", "2", "1"], ["1", "2", "10"]),
    (["M12", "M06", "M24"], ["M06", "M12", "M24"]),
    (["V10", "V1", "V2"], ["V1", "V2", "V10"]),
    (["02", "1"], ["1", "02"]),
    (["y2w10", "y2w3", "y1w40"], ["y1w40", "y2w3", "y2w10"]),
])
def test_labels_that_differ_only_in_their_numbers_sort_by_them(labels, earliest_first):
    order = visit_order(labels)
    assert order.labels == earliest_first and order.by == NUMBERS
    assert order.pairs() == list(zip(earliest_first, earliest_first[1:], strict=False))


@pytest.mark.parametrize(("labels", "earliest_first"), [
    (["20200105", "20191231"], ["20191231", "20200105"]),
    (["2020-01-05", "2019-12-31T10:00"], ["2019-12-31T10:00", "2020-01-05"]),
])
def test_dates_sort_as_dates(labels, earliest_first):
    order = visit_order(labels)
    assert order.labels == earliest_first and order.by == DATES


def test_acquisition_times_come_before_the_labels():
    times = {"2": datetime(2020, 5, 1), "10": datetime(2019, 1, 1)}
    assert visit_order(["2", "10"], times).labels == ["10", "2"]
    assert visit_order(["2", "10"], times).by == TIMES
    # a time missing, or two equal: the labels decide
    assert visit_order(["2", "10"], {"2": datetime(2020, 5, 1)}).by == NUMBERS
    same = {"2": datetime(2020, 5, 1), "10": datetime(2020, 5, 1)}
    assert visit_order(["2", "10"], same).labels == ["2", "10"]


def test_what_cannot_be_told_is_refused_naming_the_person_and_the_labels():
    for labels in (["pre", "post"], ["baseline", "followup2"], ["12.03.2019", "01.04.2019"],
                   ["A", "B"]):
        with pytest.raises(UnorderedVisits, match="sub-07: the order of the visits") as err:
            visit_order(labels, who="sub-07")
        assert all(label in str(err.value) for label in labels)
        assert "--session-order" in str(err.value)


def test_a_stated_order_decides_where_it_names_every_visit():
    order = visit_order(["pre", "post"], stated=["pre", "post"])
    assert order.labels == ["pre", "post"] and order.by == STATED
    assert visit_order(["post", "pre"], stated=["post", "pre"]).labels == ["post", "pre"]
    with pytest.raises(UnorderedVisits):  # it does not name "mid"
        visit_order(["pre", "mid", "post"], stated=["pre", "post"])
    assert visit_order(["only"]).labels == ["only"]


def _visits_csv(tmp_path, rows: str):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"x")
    table = tmp_path / "visits.csv"
    table.write_text(rows)
    return table


def test_compares_csv_follows_the_rule(tmp_path):
    table = _visits_csv(tmp_path, "subject,visit,flair\nS,2,b.nii.gz\nS,10,c.nii.gz\n"
                                  "S,1,a.nii.gz\n")
    assert [(n, b.name, f.name) for n, b, f in read_visits(table)] == [
        ("S_1-2", "a.nii.gz", "b.nii.gz"), ("S_2-10", "b.nii.gz", "c.nii.gz")]
    timed = _visits_csv(tmp_path, "subject,visit,flair,acq_time\n"
                                  "S,pre,a.nii.gz,2021-03-01T09:00:00\n"
                                  "S,post,b.nii.gz,2020-03-01T09:00:00\n")
    assert [n for n, _, _ in read_visits(timed)] == ["S_post-pre"]
    untimed = _visits_csv(tmp_path, "subject,visit,flair\nS,pre,a.nii.gz\nS,post,b.nii.gz\n")
    with pytest.raises(BrainUADError, match="subject S: the order of the visits post, pre"):
        read_visits(untimed)
    assert [n for n, _, _ in read_visits(untimed, ["pre", "post"])] == ["S_pre-post"]
    twice = _visits_csv(tmp_path, "subject,visit,flair\nS,1,a.nii.gz\nS,1,b.nii.gz\n")
    with pytest.raises(BrainUADError, match="line 3: visit '1' of 'S' twice"):
        read_visits(twice)
    bad = _visits_csv(tmp_path, "subject,visit,flair,acq_time\nS,1,a.nii.gz,yesterday\n")
    with pytest.raises(BrainUADError, match="line 2: acq_time 'yesterday'"):
        read_visits(bad)
